//! `offsite restore` end to end, through the real binary and real rclone: raw streams compared
//! byte for byte, zfs and btrfs chains (full plus two incrementals) received into new targets
//! and compared file by file at every snapshot, restores on a "new machine" (no state dir,
//! another host name), and the faults: a provider down, corrupt copies, a receiver that
//! refuses the stream, and SIGINT.

use crate::harness::*;
use offsite::layout::utc_stamp;
use offsite::receiver::leftover_partials;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const DS: &str = "media";

fn out_path(env: &Env) -> PathBuf {
    env.path().join("restored.bin")
}

fn restore_output(env: &Env, extra: &[&str]) -> std::process::Output {
    let out = out_path(env);
    let mut args = vec!["restore", DS, "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.offsite(&args)
}

/// The path of shard `index` of the one backup of `DS` on `provider`.
fn shard_file(env: &Env, provider: &str, index: u64) -> PathBuf {
    let remote = env.remote(provider);
    let m = remote.manifest(DS).expect("a manifest");
    let rec = &m.shards[index as usize];
    remote.only_backup(DS).join(m.object(rec))
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn command_backup_restored_to_a_file_and_stdout_is_identical() {
    let (env, data) = backed_up(3, DS, 42);
    let err = restore_output(&env, &[]).assert_exit(0).stderr_text();
    assert_same_bytes("--output", &std::fs::read(out_path(&env)).unwrap(), &data);
    assert!(leftover_partials(&out_path(&env)).is_empty());
    assert!(
        err.contains("event=restore_metrics") && err.contains("total_bytes=3670016"),
        "{err}"
    );

    let out = env
        .offsite(&["restore", DS, "--stdout"])
        .assert_exit(0)
        .stdout
        .clone();
    assert_same_bytes("--stdout", &out, &data);

    let out = env.path().join("again.bin");
    let json = env
        .offsite(&["--json", "restore", DS, "--output", out.to_str().unwrap()])
        .assert_exit(0)
        .json();
    assert_eq!(json["total_bytes"], SOURCE_LEN as u64, "{json}");
    assert_eq!(json["applied"].as_array().unwrap().len(), 1, "{json}");
    let fetched: u64 = json["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    // What was fetched is what is stored: the compressed shards.
    let m = env.remote("p1").manifest(DS).expect("a manifest");
    let stored: u64 = m.shards.iter().map(|s| s.length).sum();
    assert_eq!(fetched, stored, "{json}");
}

#[test]
fn a_new_machine_restores_another_hosts_backup_without_state_or_dataset_config() {
    let (mut env, data) = backed_up(2, DS, 42);
    std::fs::remove_dir_all(env.state_dir()).ok();
    // The new machine: another host name and state dir, no [[dataset]] at all, and only a
    // disabled provider (usable with --from).
    env.set("host", "newbox")
        .set("state_dir", "fresh-state")
        .remove_provider("p2")
        .provider_set("p1", "enabled", false);
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let mut doc: toml::Table = config.parse().unwrap();
    doc.remove("dataset");
    env.write_file("offsite.toml", &toml::to_string(&doc).unwrap());

    // Without --host, "media" is neither configured nor stored for host newbox: a usage error
    // that points at --host.
    let err = restore_output(&env, &["--from", "p1"])
        .assert_exit(2)
        .stderr_text();
    assert!(
        err.contains("is neither in") && err.contains("--host"),
        "{err}"
    );
    let other_host = |extra: &[&str]| {
        let out = out_path(&env);
        let mut args = vec![
            "--host",
            HOST,
            "restore",
            DS,
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        env.offsite(&args)
    };
    let err = other_host(&[]).assert_exit(2).stderr_text();
    assert!(err.contains("no enabled provider"), "{err}");
    other_host(&["--from", "p1"]).assert_exit(0);
    assert_same_bytes("restored", &std::fs::read(out_path(&env)).unwrap(), &data);
    assert!(!env.state_dir().exists() && !env.path().join("fresh-state").exists());
}

#[test]
fn a_provider_down_for_the_whole_restore_is_dropped_and_the_others_finish() {
    let (mut env, data) = backed_up(3, DS, 42);
    env.use_mock_rclone().set("retries", 2);
    // Listing and manifest work; every shard download fails: it goes down after planning.
    env.mock_rules("cat */remotes/p1/*/s0* down inf\n");
    let err = restore_output(&env, &[]).assert_exit(0).stderr_text();
    assert_same_bytes("restored", &std::fs::read(out_path(&env)).unwrap(), &data);
    // p1 comes first, so the first shard was asked of it: the failover really happened.
    let p1_cats = env
        .mock_log()
        .iter()
        .filter(|l| l.starts_with("cat ") && l.contains("/remotes/p1/"))
        .count();
    assert!(p1_cats >= 1, "{:?}", env.mock_log());
    assert!(err.contains("not using provider p1"), "{err}");
}

#[test]
fn a_corrupt_copy_fails_over_to_a_good_one() {
    let (env, data) = backed_up(2, DS, 42);
    // Shard 0 goes to the first provider first (nothing is measured yet).
    flip_byte(&shard_file(&env, "p1", 0));
    flip_byte(&shard_file(&env, "p2", 2));
    let err = restore_output(&env, &[]).assert_exit(0).stderr_text();
    assert_same_bytes("restored", &std::fs::read(out_path(&env)).unwrap(), &data);
    assert!(
        err.contains("provider p1") && err.contains("corrupt copy"),
        "{err}"
    );
}

/// Shards read in 256 KiB pieces, through rclone's ranged reads. Shard 0 is planned before
/// anything is measured: pieces 0 and 3 from p1, piece 1 from p2 and piece 2 from p3. Every
/// piece of it is corrupt on p1 and p2, so the assembled shard fails its checksum and is
/// fetched whole from one provider at a time: p1 and p2 are named, p3 serves it.
#[test]
fn shards_read_in_pieces_from_several_providers_and_a_corrupt_piece_is_traced() {
    const PIECE: usize = 256 << 10;
    let (env, data) = backed_up(3, DS, 42);
    for p in ["p1", "p2"] {
        let path = shard_file(&env, p, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        for i in (PIECE / 2..bytes.len()).step_by(PIECE) {
            bytes[i] ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    let out = out_path(&env);
    let run = env.offsite(&[
        "--json",
        "restore",
        DS,
        "--output",
        out.to_str().unwrap(),
        "--piece-size",
        "256KiB",
    ]);
    let err = run.assert_exit(0).stderr_text();
    assert_same_bytes("restored", &std::fs::read(&out).unwrap(), &data);
    assert!(
        err.contains("read in pieces from providers p1, p2, p3"),
        "{err}"
    );
    let corrupt = |p: &str| {
        err.lines().any(|l| {
            l.contains(&format!("provider {p}: shard s0000000000")) && l.contains("corrupt copy")
        })
    };
    assert!(corrupt("p1") && corrupt("p2") && !corrupt("p3"), "{err}");
    let json = run.json();
    let providers = json["providers"].as_array().unwrap();
    let field =
        |k: &str| -> Vec<u64> { providers.iter().map(|p| p[k].as_u64().unwrap()).collect() };
    assert_eq!(field("failures"), [1, 1, 0], "{json}");
    let m = env.remote("p3").manifest(DS).expect("a manifest");
    assert_eq!(
        field("bytes").iter().sum::<u64>(),
        m.shards.iter().map(|s| s.length).sum::<u64>(),
        "{json}"
    );
    // A shard counts once for every provider that delivered a piece of it: 4 shards, split.
    assert!(field("shards").iter().sum::<u64>() > 4, "{json}");
}

#[test]
fn no_good_copy_anywhere_fails_naming_the_shard_and_every_provider_and_writes_nothing() {
    let (env, _) = backed_up(3, DS, 42);
    for p in ["p1", "p2", "p3"] {
        flip_byte(&shard_file(&env, p, 1));
    }
    let err = restore_output(&env, &[]).assert_exit(1).stderr_text();
    for needle in [
        "shard 1 (byte offset 1048576",
        "provider p1: corrupt copy",
        "provider p2: corrupt copy",
        "provider p3: corrupt copy",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!out_path(&env).exists() && leftover_partials(&out_path(&env)).is_empty());
    env.assert_no_leftover_processes();
}

#[test]
fn sigint_during_a_restore_stops_cleanly_with_130() {
    let (mut env, _) = backed_up(2, DS, 42);
    env.use_mock_rclone();
    env.mock_rules("cat *s0000000002-* hang inf\n");
    let running = env.spawn_offsite(&["restore", DS, "--output", out_path(&env).to_str().unwrap()]);
    wait_for(
        "a download of shard 2 to start",
        Duration::from_secs(60),
        || {
            env.mock_log()
                .iter()
                .any(|l| l.starts_with("cat ") && l.contains("s0000000002-"))
        },
    );
    // SAFETY: signalling the offsite process this test started.
    unsafe {
        libc::kill(running.pid() as i32, libc::SIGINT);
    }
    let out = running.wait();
    out.assert_exit(130);
    env.assert_no_leftover_processes();
    assert!(!out_path(&env).exists() && leftover_partials(&out_path(&env)).is_empty());
}

/// Waits until the clock is past the second of the newest backup, so the next id differs.
fn next_second(env: &Env, dataset: &str) {
    let newest = env.remote("p1").backups(dataset).pop().expect("a backup");
    let id = newest.file_name().unwrap().to_string_lossy().into_owned();
    wait_for(
        "the clock to pass the backup's second",
        Duration::from_secs(30),
        || utc_stamp(SystemTime::now()).as_str() > &id[..16],
    );
}

/// Copies the tree at `src` to `dst` (a record of what a snapshot holds).
fn keep_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    run(
        "cp",
        &["-a", &format!("{}/.", src.display()), dst.to_str().unwrap()],
    );
}

/// Three states of a tree: a full backup and two incrementals, each recorded in `kept/N`.
fn three_backups(env: &Env, dataset: &str, root: &Path, kept: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for stage in 0..3u64 {
        match stage {
            0 => {
                write_pseudo_random(&root.join("big.bin"), 1, 2 * MIB + 4321);
                std::fs::create_dir_all(root.join("sub")).unwrap();
                std::fs::write(root.join("sub/notes.txt"), "first\n").unwrap();
            }
            1 => {
                write_pseudo_random(&root.join("second.bin"), 2, MIB + 99);
                std::fs::write(root.join("sub/notes.txt"), "second\n").unwrap();
            }
            _ => {
                std::fs::remove_file(root.join("big.bin")).unwrap();
                std::fs::write(root.join("sub/third.txt"), "third\n").unwrap();
            }
        }
        if stage > 0 {
            next_second(env, dataset);
        }
        env.offsite(&["backup", "--once", dataset]).assert_exit(0);
        keep_copy(root, &kept.join(stage.to_string()));
        let newest = env.remote("p1").backups(dataset).pop().unwrap();
        ids.push(newest.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(ids[0].contains("-full"), "{ids:?}");
    assert!(
        ids[1].contains("-incr") && ids[2].contains("-incr"),
        "{ids:?}"
    );
    ids
}

#[test]
fn zfs_full_and_two_incrementals_restore_into_new_datasets_at_every_snapshot() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("src");
    env.zfs_dataset("tank", &pool.fs("src"));
    let kept = env.path().join("kept");
    let ids = three_backups(&env, "tank", &src, &kept);

    for (stage, id) in ids.iter().enumerate() {
        let target = pool.fs(&format!("r{stage}"));
        let json = env
            .offsite(&[
                "--json", "restore", "tank", "--backup", id, "--target", &target,
            ])
            .assert_exit(0)
            .json();
        assert_eq!(
            json["applied"].as_array().unwrap().len(),
            stage + 1,
            "{json}"
        );
        assert_same_tree(
            &kept.join(stage.to_string()),
            &pool.mountpoint(&format!("r{stage}")),
        );
    }
    // By snapshot name: the chain up to the second backup (r1's newest snapshot).
    let snap = pool
        .snapshots()
        .into_iter()
        .filter(|s| s.starts_with(&format!("{}@", pool.fs("r1"))))
        .max()
        .unwrap();
    let name = snap.split_once('@').unwrap().1.to_string();
    let target = pool.fs("bysnap");
    env.offsite(&["restore", "tank", "--snapshot", &name, "--target", &target])
        .assert_exit(0);
    // Onto a target holding the first two snapshots, only the third backup is applied.
    let json = env
        .offsite(&["--json", "restore", "tank", "--target", &target])
        .assert_exit(0)
        .json();
    assert_eq!(json["skipped"], serde_json::json!(ids[..2]), "{json}");
    assert_eq!(json["applied"], serde_json::json!(ids[2..]), "{json}");
    assert_same_tree(&kept.join("2"), &pool.mountpoint("bysnap"));
    env.assert_no_leftover_processes();

    // Without the middle link the chain is broken: nothing is received.
    for p in ["p1", "p2"] {
        std::fs::remove_dir_all(env.remote(p).dataset_dir("tank").join(&ids[1])).unwrap();
    }
    let err = env
        .offsite(&["restore", "tank", "--target", &pool.fs("broken")])
        .assert_exit(1)
        .stderr_text();
    assert!(
        err.contains(&format!("needs its parent {}", ids[1])),
        "{err}"
    );
    assert!(!pool.snapshots().iter().any(|s| s.contains("/broken")));
}

#[test]
fn zfs_receive_onto_an_existing_target_fails_with_its_error_unless_forced() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("src");
    write_pseudo_random(&src.join("big.bin"), 5, SOURCE_LEN);
    env.zfs_dataset("tank", &pool.fs("src"));
    env.offsite(&["backup", "--once"]).assert_exit(0);
    // Not mounted: zfs-fuse's `receive -F` over a mounted dataset fails with "I/O error" now
    // and then while other pools are busy (reproducible with plain zfs commands).
    run(
        "zfs",
        &["create", "-o", "mountpoint=none", &pool.fs("existing")],
    );

    // Later shards never arrive: the restore must stop them rather than wait.
    env.use_mock_rclone();
    env.mock_rules("cat *s0000000003-* hang inf\n");
    let target = pool.fs("existing");
    let err = env
        .offsite(&["restore", "tank", "--target", &target])
        .assert_exit(1)
        .stderr_text();
    assert!(
        err.contains("must specify -F"),
        "zfs receive's stderr is missing:\n{err}"
    );
    assert!(err.contains(&format!("zfs receive {target}")), "{err}");
    env.assert_no_leftover_processes();

    // --force is `zfs receive -F`; the dataset's receive_flags go to zfs receive too.
    env.mock_rules("");
    env.dataset_set("tank", "receive_flags", vec!["-v"]);
    let err = env
        .offsite(&["-v", "restore", "tank", "--target", &target, "--force"])
        .assert_exit(0)
        .stderr_text();
    assert!(
        err.contains(&format!("zfs receive -F -v {target}")),
        "{err}"
    );
    assert!(
        err.contains("receiving full stream"),
        "zfs receive -v output missing:\n{err}"
    );
    let mnt = pool.mountpoint("existing");
    run(
        "zfs",
        &["set", &format!("mountpoint={}", mnt.display()), &target],
    );
    assert_same_tree(&src, &mnt);
}

#[test]
fn btrfs_full_and_two_incrementals_restore_at_every_snapshot() {
    let mut env = Env::new(2);
    let fs = BtrfsMount::new(env.path());
    let vol = fs.subvolume("vol");
    let snaps = fs.path().join("snaps");
    env.btrfs_dataset("home", &vol, Some(&snaps));
    let kept = env.path().join("kept");
    let ids = three_backups(&env, "home", &vol, &kept);

    let target = fs.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    let json = env
        .offsite(&[
            "--json",
            "restore",
            "home",
            "--target",
            target.to_str().unwrap(),
        ])
        .assert_exit(0)
        .json();
    assert_eq!(json["applied"], serde_json::json!(ids), "{json}");
    let mut received: Vec<PathBuf> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    received.sort();
    assert_eq!(received.len(), 3, "{received:?}");
    for (stage, snap) in received.iter().enumerate() {
        assert_same_tree(&kept.join(stage.to_string()), snap);
    }
    // Run again: every snapshot is there, nothing is applied.
    let json = env
        .offsite(&[
            "--json",
            "restore",
            "home",
            "--target",
            target.to_str().unwrap(),
        ])
        .assert_exit(0)
        .json();
    assert_eq!(json["applied"], serde_json::json!([]), "{json}");
    assert_eq!(json["skipped"], serde_json::json!(ids), "{json}");
}

#[test]
fn usage_errors_exit_2() {
    let (env, _) = backed_up(1, DS, 42);
    let err = env
        .offsite(&["restore", DS, "--target", "pool/x"])
        .assert_exit(2)
        .stderr_text();
    assert!(err.contains("--output FILE or --stdout"), "{err}");
    let err = env
        .offsite(&["restore", DS, "--from", "nope", "--stdout"])
        .assert_exit(2)
        .stderr_text();
    assert!(err.contains("--from \"nope\": no such provider"), "{err}");
}
