//! Issue 6 end to end: incremental chains on real zfs-fuse and btrfs, the schedule, parents
//! that disappear, snapshots offsite did not make, `snapshot_pattern`, `send_flags`, and prune
//! over real chains. Every chain is restored with `offsite restore` and compared file by file.

use crate::harness::*;
use std::path::{Path, PathBuf};

/// Copies a tree (`cp -a`), to remember what a dataset held at a snapshot.
fn remember(src: &Path, dst: &Path) {
    run(
        "cp",
        &["-a", &src.display().to_string(), &dst.display().to_string()],
    );
}

/// The backup ids of a dataset on a provider, oldest first: folders holding objects (a local
/// remote keeps the empty folder of a pruned backup; listings ignore it).
fn ids(env: &Env, provider: &str, dataset: &str) -> Vec<String> {
    env.remote(provider)
        .backups(dataset)
        .iter()
        .filter(|p| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

fn change(dir: &Path, seed: u64) {
    write_pseudo_random(
        &dir.join(format!("file{seed}.bin")),
        seed,
        300_000 + seed as usize,
    );
    std::fs::write(dir.join("notes.txt"), format!("version {seed}\n")).unwrap();
}

#[test]
fn zfs_full_then_two_incrementals_restore_identically_at_each_snapshot() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    let refs = env.path().join("refs");
    std::fs::create_dir(&refs).unwrap();
    for (i, seed) in [1u64, 2, 3].into_iter().enumerate() {
        change(&src, seed);
        env.offsite(&["backup", "--once"]).assert_exit(0);
        remember(&src, &refs.join(i.to_string()));
    }
    let backups = ids(&env, "p1", "data");
    assert_eq!(backups.len(), 3, "{backups:?}");
    assert!(
        backups[0].contains("-full")
            && backups[1].contains("-incr")
            && backups[2].contains("-incr")
    );
    let m = env.remote("p1").manifest_of("data", &backups[2]);
    assert_eq!(
        m.parent.as_ref().map(|p| p.backup_id.as_str()),
        Some(backups[1].as_str())
    );
    // Local retention: only the newest offsite snapshot is left, as the next parent.
    let snaps = pool.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].contains("@offsite-"));

    for (i, id) in backups.iter().enumerate() {
        let target = format!("r{i}");
        env.offsite(&[
            "restore",
            "data",
            "--backup",
            id,
            "--target",
            &pool.fs(&target),
        ])
        .assert_exit(0);
        assert_same_tree(&refs.join(i.to_string()), &pool.mountpoint(&target));
    }
}

#[test]
fn btrfs_full_then_two_incrementals_restore_identically_at_each_snapshot() {
    let mut env = Env::new(2);
    let fs = BtrfsMount::new(env.path());
    let vol = fs.subvolume("vol");
    let snaps = fs.path().join("snaps");
    env.btrfs_dataset("home", &vol, Some(&snaps));
    let refs = env.path().join("refs");
    std::fs::create_dir(&refs).unwrap();
    let mut names = Vec::new();
    for (i, seed) in [1u64, 2, 3].into_iter().enumerate() {
        change(&vol, seed);
        env.offsite(&["backup", "--once"]).assert_exit(0);
        remember(&vol, &refs.join(i.to_string()));
        let m = env
            .remote("p2")
            .manifest_of("home", ids(&env, "p2", "home").last().unwrap());
        names.push(
            PathBuf::from(m.snapshot.unwrap())
                .file_name()
                .unwrap()
                .to_owned(),
        );
    }
    let backups = ids(&env, "p2", "home");
    assert!(
        backups[1].contains("-incr") && backups[2].contains("-incr"),
        "{backups:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&snaps).unwrap().collect();
    assert_eq!(left.len(), 1, "only the newest snapshot is kept locally");

    let target = fs.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    env.offsite(&["restore", "home", "--target", &target.display().to_string()])
        .assert_exit(0);
    // btrfs receive recreates every snapshot of the chain: each must match its moment.
    for (i, name) in names.iter().enumerate() {
        assert_same_tree(&refs.join(i.to_string()), &target.join(name));
    }
}

#[test]
fn a_destroyed_parent_snapshot_makes_the_next_backup_full_and_the_chain_restorable() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    change(&src, 1);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    for s in pool.snapshots() {
        run("zfs", &["destroy", &s]);
    }
    change(&src, 2);
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(0);
    assert!(
        out.stderr_text().contains("no longer exists locally"),
        "{}",
        out.stderr_text()
    );
    let backups = ids(&env, "p1", "data");
    assert!(backups[1].contains("-full"), "{backups:?}");
    env.offsite(&["restore", "data", "--target", &pool.fs("back")])
        .assert_exit(0);
    assert_same_tree(&src, &pool.mountpoint("back"));
}

#[test]
fn snapshots_offsite_did_not_make_survive_every_run() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    let mine = format!("{}@mine", pool.fs("data"));
    run("zfs", &["snapshot", &mine]);
    for seed in 1..=3 {
        change(&src, seed);
        env.offsite(&["backup", "--once"]).assert_exit(0);
        env.offsite(&["prune"]).assert_exit(0);
        assert!(pool.snapshots().contains(&mine), "{:?}", pool.snapshots());
    }
    let ours = pool
        .snapshots()
        .iter()
        .filter(|s| s.contains("@offsite-"))
        .count();
    assert_eq!(ours, 1);
}

#[test]
fn a_dataset_that_is_not_due_is_skipped_with_the_next_due_time() {
    let mut env = Env::new(1);
    let data = env.path().join("data.bin");
    write_pseudo_random(&data, 9, 100_000);
    env.command_dataset("d", &format!("cat {}", data.display()));
    env.dataset_set("d", "incremental_every", "7d");
    env.dataset_set("d", "full_every", "26w");
    env.offsite(&["backup"]).assert_exit(0);
    let out = env.offsite(&["backup"]);
    out.assert_exit(0);
    assert!(
        out.stderr_text().contains("is not due"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(ids(&env, "p1", "d").len(), 1);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_eq!(
        ids(&env, "p1", "d").len(),
        2,
        "--once runs whether due or not"
    );
}

#[test]
fn snapshot_pattern_backs_up_the_newest_matching_snapshot_and_makes_none() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    env.dataset_set("data", "snapshot_pattern", "autosnap_*_daily");
    change(&src, 1);
    run(
        "zfs",
        &["snapshot", &format!("{}@autosnap_1_daily", pool.fs("data"))],
    );
    run(
        "zfs",
        &[
            "snapshot",
            &format!("{}@autosnap_1_hourly", pool.fs("data")),
        ],
    );
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(0);
    assert!(
        out.stderr_text().contains("is backed up"),
        "{}",
        out.stderr_text()
    );
    change(&src, 2);
    run(
        "zfs",
        &["snapshot", &format!("{}@autosnap_2_daily", pool.fs("data"))],
    );
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let backups = ids(&env, "p1", "data");
    assert_eq!(backups.len(), 2, "{backups:?}");
    let m = env.remote("p1").manifest_of("data", &backups[1]);
    assert!(m.snapshot.unwrap().ends_with("@autosnap_2_daily"));
    assert!(m
        .parent
        .unwrap()
        .snapshot
        .unwrap()
        .ends_with("@autosnap_1_daily"));
    assert!(
        pool.snapshots().iter().all(|s| !s.contains("@offsite-")),
        "{:?}",
        pool.snapshots()
    );
    env.offsite(&["restore", "data", "--target", &pool.fs("back")])
        .assert_exit(0);
    assert_same_tree(&src, &pool.mountpoint("back"));
}

#[test]
fn a_send_flag_the_installed_zfs_does_not_know_is_a_config_error() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    env.dataset_set("data", "send_flags", vec!["-Z"]);
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(2);
    assert!(
        out.stderr_text().contains("send flag \"-Z\""),
        "{}",
        out.stderr_text()
    );
    assert!(pool.snapshots().is_empty(), "nothing was touched");
}

#[test]
fn prune_removes_exactly_the_oldest_chain_and_the_kept_chains_restore() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"));
    env.dataset_set("data", "keep_chains", 2);
    // Chains: [full, incr], [full, incr], [full].
    for (seed, full) in [(1, false), (2, false), (3, true), (4, false), (5, true)] {
        change(&src, seed);
        let args: &[&str] = if full {
            &["backup", "--once", "--full"]
        } else {
            &["backup", "--once"]
        };
        env.offsite(args).assert_exit(0);
    }
    let before = ids(&env, "p1", "data");
    assert_eq!(before.len(), 5);
    env.offsite(&["prune"]).assert_exit(0);
    for p in ["p1", "p2"] {
        assert_eq!(ids(&env, p, "data"), before[2..].to_vec(), "provider {p}");
    }
    env.offsite(&[
        "restore",
        "data",
        "--backup",
        &before[3],
        "--target",
        &pool.fs("mid"),
    ])
    .assert_exit(0);
    env.offsite(&["restore", "data", "--target", &pool.fs("last")])
        .assert_exit(0);
    assert_same_tree(&src, &pool.mountpoint("last"));
}

#[test]
fn zfs_snapshots_that_only_look_like_offsite_ones_survive_backup_and_prune() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    pool.create_fs("data/child");
    env.zfs_dataset("data", &pool.fs("data"));
    env.dataset_set("data", "keep_chains", 1);
    let data = pool.fs("data");
    let foreign = [
        // Made by hand with offsite's prefix, or its exact pattern but not by offsite.
        (format!("{data}@offsite-manual"), None),
        (format!("{data}@offsite-20200101T000000Z"), None),
        // Offsite's mark, but for another dataset of the config.
        (format!("{data}@offsite-20200102T000000Z"), Some("other")),
        // A child dataset's, even marked for "data".
        (
            format!("{}@offsite-20200103T000000Z", pool.fs("data/child")),
            Some("data"),
        ),
    ];
    for (snap, owner) in &foreign {
        match owner {
            Some(o) => run(
                "zfs",
                &["snapshot", "-o", &format!("offsite:dataset={o}"), snap],
            ),
            None => run("zfs", &["snapshot", snap]),
        };
    }
    for (seed, full) in [(1, false), (2, false), (3, true)] {
        change(&src, seed);
        let args: &[&str] = if full {
            &["backup", "--once", "--full"]
        } else {
            &["backup", "--once"]
        };
        env.offsite(args).assert_exit(0);
        env.offsite(&["prune"]).assert_exit(0);
        let snaps = pool.snapshots();
        for (snap, _) in &foreign {
            assert!(snaps.contains(snap), "{snap} was destroyed: {snaps:?}");
        }
    }
    let ours: Vec<String> = pool
        .snapshots()
        .into_iter()
        .filter(|s| s.starts_with(&format!("{data}@offsite-")))
        .filter(|s| !foreign.iter().any(|(f, _)| f == s))
        .collect();
    assert_eq!(ours.len(), 1, "offsite's own older snapshots go: {ours:?}");
}

#[test]
fn btrfs_snapshots_that_only_look_like_offsite_ones_survive_backup_and_prune() {
    let mut env = Env::new(1);
    let fs = BtrfsMount::new(env.path());
    let vol = fs.subvolume("vol");
    let other = fs.subvolume("other");
    let snaps = fs.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    env.btrfs_dataset("home", &vol, Some(&snaps));
    env.dataset_set("home", "keep_chains", 1);
    // offsite's exact name, but a snapshot of another subvolume, a writable snapshot of the
    // configured one, and a plain folder.
    let foreign = [
        snaps.join("home.offsite-20200101T000000Z"),
        snaps.join("home.offsite-20200102T000000Z"),
        snaps.join("home.offsite-20200103T000000Z"),
    ];
    let path = |p: &Path| p.display().to_string();
    run(
        "btrfs",
        &[
            "subvolume",
            "snapshot",
            "-r",
            &path(&other),
            &path(&foreign[0]),
        ],
    );
    run(
        "btrfs",
        &["subvolume", "snapshot", &path(&vol), &path(&foreign[1])],
    );
    std::fs::create_dir(&foreign[2]).unwrap();
    for seed in 1..=3 {
        change(&vol, seed);
        env.offsite(&["backup", "--once", "--full"]).assert_exit(0);
        env.offsite(&["prune"]).assert_exit(0);
        for f in &foreign {
            assert!(f.exists(), "{} was deleted", f.display());
        }
    }
    let ours = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !foreign.contains(p))
        .count();
    assert_eq!(ours, 1, "offsite's own older snapshots go");
}
