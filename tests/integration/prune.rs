//! `offsite prune`: retention on real local providers through real rclone. Backups are made by
//! `backup --once --full` of a command dataset, one full chain per run; kept backups are checked
//! object by object and by `offsite restore`.

use crate::harness::*;
use offsite::layout::{utc_stamp, MANIFEST};
use offsite::manifest::Manifest;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

const DS: &str = "media";
/// A second dataset without `keep_chains`: prune must leave it alone.
const OTHER: &str = "other";

/// Two local providers; `media` backs up `src.bin` with `keep_chains`, `other` a fixed string.
fn env(providers: usize, keep_chains: i64) -> Env {
    let mut env = Env::new(providers);
    let src = env.path().join("src.bin");
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .dataset_set(DS, "keep_chains", keep_chains)
        .command_dataset(OTHER, "printf other-bytes");
    env
}

/// Makes `n` full backups of `media` with fresh source bytes (1.5 shards each); returns each
/// backup's id and source bytes, oldest first. Each run starts in a later second than the one
/// before, so the ids differ.
fn backups(env: &Env, n: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for seed in 0..n {
        let data = write_pseudo_random(&env.path().join("src.bin"), seed + 1, 3 << 19);
        env.offsite(&["backup", "--once", "--full", DS])
            .assert_exit(0);
        let id = ids(env, "p1").pop().expect("a backup of media on p1");
        assert!(out.iter().all(|(old, _)| *old != id), "a new backup id");
        wait_for(
            "the clock to pass the backup's second",
            Duration::from_secs(30),
            || utc_stamp(SystemTime::now()).as_str() > &id[..16],
        );
        out.push((id, data));
    }
    out
}

/// The backup ids of `media` on `provider` that hold at least one object.
fn ids(env: &Env, provider: &str) -> Vec<String> {
    env.remote(provider)
        .backups(DS)
        .iter()
        .filter(|d| !files(d).is_empty())
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn backup_dir(env: &Env, provider: &str, id: &str) -> PathBuf {
    env.remote(provider).dataset_dir(DS).join(id)
}

/// (name, bytes) of the files in a folder, by name; empty if it does not exist.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Bytes a provider holds for one backup.
fn size_of(env: &Env, provider: &str, id: &str) -> u64 {
    files(&backup_dir(env, provider, id))
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum()
}

/// Fails unless `provider` holds backup `id` whole: a manifest for it, and shards that
/// concatenate to `source`.
fn assert_intact(env: &Env, provider: &str, id: &str, source: &[u8]) {
    let objects = files(&backup_dir(env, provider, id));
    let manifest = objects
        .iter()
        .find(|(n, _)| n == MANIFEST)
        .unwrap_or_else(|| panic!("{provider} lost the manifest of kept backup {id}"));
    let m = Manifest::from_json(&manifest.1).unwrap();
    assert_eq!(
        (m.backup_id.as_str(), m.total_bytes),
        (id, source.len() as u64)
    );
    let stream: Vec<u8> = objects
        .iter()
        .filter(|(n, _)| n != MANIFEST)
        .flat_map(|(n, b)| match n.ends_with(".zst") {
            true => zstd::stream::decode_all(&b[..]).unwrap(),
            false => b.clone(),
        })
        .collect();
    assert_same_bytes(&format!("{provider}: backup {id}"), &stream, source);
}

/// Every file under the providers' folders, with its bytes.
fn everything(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![env.path().join("remotes")];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The report of one dataset in `prune --json` output.
fn dataset_report<'a>(j: &'a Value, dataset: &str) -> &'a Value {
    j["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["dataset"] == dataset)
        .unwrap_or_else(|| panic!("no report for {dataset} in {j:#}"))
}

#[test]
fn prune_keeps_the_newest_chains_on_every_provider_and_dry_run_deletes_nothing() {
    let env = env(2, 2);
    env.offsite(&["backup", "--once", OTHER]).assert_exit(0);
    let made = backups(&env, 3);
    let (old, kept) = (&made[0].0, &made[1..]);
    let other_dir = env.remote("p1").dataset_dir(OTHER);
    let of_other = |all: Vec<(PathBuf, Vec<u8>)>| {
        let v: Vec<_> = all
            .into_iter()
            .filter(|(p, _)| p.starts_with(&other_dir))
            .collect();
        assert_eq!(v.len(), 2, "one backup of other: a shard and a manifest");
        v
    };
    let before = everything(&env);
    let other_before = of_other(before.clone());

    let text = env.offsite(&["prune", "--dry-run"]);
    let out = text.assert_exit(0).stdout_text();
    assert!(out.contains(&format!("would delete {old}")), "{out}");
    assert!(
        out.contains("\"other\": left alone: no keep_chains"),
        "{out}"
    );
    assert!(out.contains("nothing was deleted"), "{out}");
    let j = env
        .offsite(&["--json", "prune", "--dry-run"])
        .assert_exit(0)
        .json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(everything(&env), before, "--dry-run deleted something");

    let freed = [
        ("p1", size_of(&env, "p1", old)),
        ("p2", size_of(&env, "p2", old)),
    ];
    assert!(freed.iter().all(|(_, b)| *b > 3 << 19));
    let j = env.offsite(&["--json", "prune"]).assert_exit(0).json();
    let report = dataset_report(&j, DS);
    assert_eq!(report["deleted"], json!([old]));
    assert_eq!(report["kept"], json!([kept[0].0, kept[1].0]));
    assert_eq!(report["debris"], json!([]));
    assert_eq!(j["freed"], json!({"p1": freed[0].1, "p2": freed[1].1}));
    assert_eq!(j["host"], HOST);
    assert!(j["left_alone"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["dataset"] == OTHER));
    for p in ["p1", "p2"] {
        assert_eq!(
            ids(&env, p),
            vec![kept[0].0.clone(), kept[1].0.clone()],
            "{p}"
        );
        for (id, source) in kept {
            assert_intact(&env, p, id, source);
        }
    }
    assert_eq!(
        of_other(everything(&env)),
        other_before,
        "other is left alone"
    );
    for (id, source) in kept {
        let file = env.path().join(format!("{id}.restored"));
        let file_arg = file.display().to_string();
        env.offsite(&["restore", DS, "--backup", id, "--output", &file_arg])
            .assert_exit(0);
        assert_same_bytes(
            &format!("restored {id}"),
            &std::fs::read(&file).unwrap(),
            source,
        );
    }

    let again = env.offsite(&["--json", "prune"]).assert_exit(0).json();
    assert_eq!(dataset_report(&again, DS)["deleted"], json!([]));
    assert_eq!(again["freed"], json!({"p1": 0, "p2": 0}));
}

#[test]
fn prune_removes_abandoned_debris_older_than_the_newest_complete_backup() {
    let mut env = env(2, 3);
    let made = backups(&env, 4);
    let id = |i: usize| made[i].0.clone();
    // Backup 1 and the newest, 3, lose their manifests everywhere: both look unfinished, but
    // only 1 is older than the newest complete backup (2); 3 may still be resumed.
    for p in ["p1", "p2"] {
        for i in [1, 3] {
            std::fs::remove_file(backup_dir(&env, p, &id(i)).join(MANIFEST)).unwrap();
        }
    }
    let newer_before = files(&backup_dir(&env, "p1", &id(3)));
    let j = env.offsite(&["--json", "prune"]).assert_exit(0).json();
    let report = dataset_report(&j, DS);
    assert_eq!(report["debris"], json!([id(1)]));
    assert_eq!(report["deleted"], json!([]));
    assert_eq!(report["kept"], json!([id(0), id(2)]));
    for p in ["p1", "p2"] {
        assert_eq!(ids(&env, p), vec![id(0), id(2), id(3)], "{p}");
        assert_intact(&env, p, &id(0), &made[0].1);
        assert_intact(&env, p, &id(2), &made[2].1);
    }
    assert_eq!(files(&backup_dir(&env, "p1", &id(3))), newer_before);

    // A manifest nobody can read hides its links: the dataset is not pruned, and that fails.
    env.dataset_set(DS, "keep_chains", 1);
    for p in ["p1", "p2"] {
        std::fs::write(backup_dir(&env, p, &id(0)).join(MANIFEST), "{").unwrap();
    }
    let before = everything(&env);
    let err = env.offsite(&["prune"]).assert_exit(1).stderr_text();
    assert!(
        err.contains(&format!("the manifest of backup {} cannot be read", id(0))),
        "{err}"
    );
    assert_eq!(everything(&env), before);
}

#[test]
fn a_failing_provider_is_reported_and_the_rest_are_pruned() {
    let mut env = env(2, 2);
    env.use_mock_rclone();
    env.mock_rules("");
    let made = backups(&env, 3);
    let old = &made[0].0;
    let before = everything(&env);

    // A provider that cannot be listed: nothing is deleted anywhere.
    env.mock_rules("lsjson */remotes/p2* exit:6 inf\n");
    let out = env.offsite(&["prune"]);
    let err = out.assert_exit(1).stderr_text();
    assert!(err.contains("provider p2 could not be listed"), "{err}");
    assert_eq!(
        everything(&env),
        before,
        "deleted although p2 could not be listed"
    );

    // p2 refuses to delete the manifest: p2 keeps that backup whole, p1 is pruned.
    env.mock_rules("deletefile */remotes/p2/*/manifest.json exit:6 inf\n");
    std::fs::write(env.path().join("mock.log"), "").unwrap();
    let out = env.offsite(&["prune"]);
    let err = out.assert_exit(1).stderr_text();
    assert!(
        err.contains("provider p2") && err.contains(&format!("{old}/{MANIFEST}")),
        "the error names provider and object: {err}"
    );
    assert_eq!(ids(&env, "p1"), vec![made[1].0.clone(), made[2].0.clone()]);
    assert_intact(&env, "p2", old, &made[0].1);
    let deleted_on_p2 = env
        .mock_log()
        .iter()
        .filter(|l| l.starts_with("deletefile ") && l.contains("/remotes/p2/"))
        .count();
    assert_eq!(
        deleted_on_p2, 1,
        "no shard of p2 is touched while its manifest stays"
    );

    // Once p2 is back, a re-run finishes the job.
    env.mock_rules("");
    env.offsite(&["prune"]).assert_exit(0);
    assert_eq!(ids(&env, "p2"), vec![made[1].0.clone(), made[2].0.clone()]);
    assert_intact(&env, "p2", &made[1].0, &made[1].1);
}

#[test]
fn keep_chains_zero_is_refused_before_anything_is_touched() {
    let env = env(1, 0);
    let out = env.offsite(&["prune"]);
    let err = out.assert_exit(2).stderr_text();
    assert!(err.contains("keep_chains"), "{err}");
    assert!(!env.state_dir().exists());
}

#[test]
fn prune_of_a_locked_dataset_exits_4_and_a_dry_run_still_reports() {
    let env = env(1, 2);
    let _held = offsite::lock::DatasetLock::acquire(&env.state_dir(), HOST, DS).unwrap();
    let err = env.offsite(&["prune"]).assert_exit(4).stderr_text();
    assert!(
        err.contains(&format!("PID {}", std::process::id())),
        "{err}"
    );
    let j = env
        .offsite(&["--json", "prune", "--dry-run"])
        .assert_exit(0)
        .json();
    assert_eq!(dataset_report(&j, DS)["kept"], json!([]));
}

#[test]
fn a_newest_backup_missing_a_shard_everywhere_does_not_count_and_the_older_one_stays() {
    let env = env(2, 1);
    let made = backups(&env, 2);
    let (old, new) = (&made[0].0, &made[1].0);
    // The newest backup loses its second shard on every provider: it cannot be restored.
    for p in ["p1", "p2"] {
        let dir = backup_dir(&env, p, new);
        let shard = files(&dir)
            .into_iter()
            .map(|(n, _)| n)
            .find(|n| n.starts_with("s0000000001-"))
            .expect("a second shard");
        std::fs::remove_file(dir.join(shard)).unwrap();
    }
    let before = everything(&env);
    let out = env.offsite(&["prune"]).assert_exit(0).stdout_text();
    assert!(out.contains("cannot be restored"), "{out}");
    assert!(out.contains(&format!("unrestorable {new}")), "{out}");
    assert_eq!(everything(&env), before, "prune deleted something");
    let j = env.offsite(&["--json", "prune"]).assert_exit(0).json();
    let report = dataset_report(&j, DS);
    assert_eq!(report["deleted"], json!([]));
    assert_eq!(report["kept"], json!([old, new]));
    assert_eq!(report["unrestorable"], json!([new]));
    for p in ["p1", "p2"] {
        assert_intact(&env, p, old, &made[0].1);
    }
    let file = env.path().join("old.restored");
    env.offsite(&[
        "restore",
        DS,
        "--backup",
        old,
        "--output",
        file.to_str().unwrap(),
    ])
    .assert_exit(0);
    assert_same_bytes("restored old", &std::fs::read(&file).unwrap(), &made[0].1);
}

#[test]
fn sigint_while_deleting_on_the_providers_leaves_local_snapshots_alone() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("data");
    env.zfs_dataset("data", &pool.fs("data"))
        .dataset_set("data", "keep_chains", 1)
        .use_mock_rclone();
    env.mock_rules("");
    for seed in [1, 2] {
        write_pseudo_random(&src.join("f.bin"), seed, 100_000);
        env.offsite(&["backup", "--once", "--full", "data"])
            .assert_exit(0);
    }
    // A snapshot offsite made (its mark, its name) that no kept backup needs: prune's local
    // phase would destroy it.
    let marked = format!("{}@offsite-20200101T000000Z", pool.fs("data"));
    run("zfs", &["snapshot", "-o", "offsite:dataset=data", &marked]);
    env.mock_rules("deletefile * hang inf\n");
    let running = env.spawn_offsite(&["prune"]);
    wait_for(
        "a deletion on the provider to start",
        Duration::from_secs(120),
        || env.mock_log().iter().any(|l| l.starts_with("deletefile ")),
    );
    // SAFETY: signalling the offsite process this test started.
    unsafe {
        libc::kill(running.pid() as i32, libc::SIGINT);
    }
    let out = running.wait();
    assert!(
        pool.snapshots().contains(&marked),
        "an interrupted prune destroyed a local snapshot: {:?}",
        pool.snapshots()
    );
    let err = out.assert_exit(130).stderr_text();
    assert!(err.contains("local snapshots were not touched"), "{err}");
    env.assert_no_leftover_processes();
    // Uninterrupted, the same run destroys it: the snapshot was prune's to delete.
    env.mock_rules("");
    env.offsite(&["prune"]).assert_exit(0);
    assert!(
        !pool.snapshots().contains(&marked),
        "{:?}",
        pool.snapshots()
    );
}

/// libfaketime, which makes offsite (not rclone: Go reads the clock by itself) see another time.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn the_retention_grid_keeps_the_newest_backup_of_each_period_of_backups_made_at_other_dates() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: apt-get install faketime (scripts/test.sh does)"
    );
    let mut env = Env::new(2);
    let src = env.path().join("src.bin");
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .dataset_set(DS, "keep_daily", 2)
        .dataset_set(DS, "keep_weekly", 3)
        .dataset_set(DS, "keep_monthly", 2);
    // 2026-01-01 is a Thursday (ISO week 1), 2026-02-01 a Sunday (week 5).
    let dates = [
        "2026-01-01 02:00:00",
        "2026-01-02 02:00:00",
        "2026-01-02 14:00:00",
        "2026-01-09 02:00:00",
        "2026-02-01 02:00:00",
    ];
    let mut made = Vec::new();
    for (seed, date) in dates.iter().enumerate() {
        let data = write_pseudo_random(&src, seed as u64 + 1, 3 << 19);
        let at = format!("@{date}");
        env.offsite_env(
            &["backup", "--once", "--full", DS],
            &[("LD_PRELOAD", FAKETIME), ("FAKETIME", &at), ("TZ", "UTC")],
        )
        .assert_exit(0);
        let id = ids(&env, "p1").pop().unwrap();
        assert!(
            id.starts_with(&date[..10].replace('-', "")),
            "{id} made at {date}"
        );
        made.push((id, data));
    }
    let j = env
        .offsite(&["--json", "prune", "--dry-run"])
        .assert_exit(0)
        .json();
    let report = dataset_report(&j, DS);
    let id = |i: usize| made[i].0.clone();
    assert_eq!(
        report["keep_grid"],
        "keep_daily = 2, keep_weekly = 3, keep_monthly = 2"
    );
    assert_eq!(report["kept"], json!([id(2), id(3), id(4)]));
    assert_eq!(report["deleted"], json!([id(0), id(1)]));
    let because = &report["kept_because"];
    assert_eq!(
        because[id(4)],
        json!(["daily 2026-02-01", "weekly 2026-W05", "monthly 2026-02"])
    );
    assert_eq!(
        because[id(3)],
        json!(["daily 2026-01-09", "weekly 2026-W02", "monthly 2026-01"])
    );
    assert_eq!(because[id(2)], json!(["weekly 2026-W01"]));
    assert_eq!(ids(&env, "p2").len(), 5, "--dry-run deleted nothing");

    env.offsite(&["prune"]).assert_exit(0);
    for p in ["p1", "p2"] {
        assert_eq!(ids(&env, p), vec![id(2), id(3), id(4)], "{p}");
        for (id, source) in &made[2..] {
            assert_intact(&env, p, id, source);
        }
    }
}
