//! `offsite sync` and `offsite verify` end to end, through the real binary and real rclone on
//! local providers: damage of every kind repaired from the good copies and a clean deep verify
//! afterwards, `--repair-provider` writing to one provider only (the mock_rclone log shows every
//! write), `--migrate` to a new provider and a restore from it alone, a shard bad everywhere
//! reported and not spread, `--dry-run`, and server-side copies within one rclone remote.

use crate::harness::*;
use offsite::layout::{shard_name, MANIFEST};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DS: &str = "media";

/// A shard's object name (new backups are zstd-compressed by default).
fn shard(i: u64) -> String {
    format!("{}.zst", shard_name(i, i * MIB as u64))
}

/// The path of an object of the one backup of `DS` on `provider`.
fn object(env: &Env, provider: &str, name: &str) -> PathBuf {
    env.remote(provider).only_backup(DS).join(name)
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Every object of every backup under a provider's folder with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Asserts that `provider` holds the whole backup: the manifest and a stream equal to `data`.
fn assert_whole(env: &Env, provider: &str, data: &[u8]) {
    let remote = env.remote(provider);
    assert!(remote.manifest(DS).is_some(), "no manifest on {provider}");
    assert_same_bytes(&format!("stream on {provider}"), &remote.stream(DS), data);
}

/// Mock log lines that write (upload, server-side copy, delete).
fn writes(env: &Env) -> Vec<String> {
    env.mock_log()
        .into_iter()
        .filter(|l| {
            l.starts_with("rcat ") || l.starts_with("copyto ") || l.starts_with("deletefile ")
        })
        .collect()
}

#[test]
fn deep_sync_repairs_missing_truncated_and_corrupt_shards_and_deep_verify_is_clean() {
    let (env, data) = backed_up(3, DS, 11);
    // p1: two shards and the manifest deleted; p2: a shard cut short; p3: a byte flipped.
    std::fs::remove_file(object(&env, "p1", &shard(0))).unwrap();
    std::fs::remove_file(object(&env, "p1", &shard(2))).unwrap();
    std::fs::remove_file(object(&env, "p1", MANIFEST)).unwrap();
    truncate(&object(&env, "p2", &shard(1)), 1000);
    flip_byte(&object(&env, "p3", &shard(3)));

    let out = env.offsite(&["verify", "--deep"]);
    let text = out.assert_exit(3).stdout_text();
    for want in ["missing 2 shards, no manifest", "1 truncated", "1 corrupt"] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let quick = env.offsite(&["verify"]);
    let text = quick.assert_exit(3).stdout_text();
    assert!(
        !text.contains("corrupt"),
        "a quick verify checks sizes only:\n{text}"
    );

    let err = env
        .offsite(&["sync", "--deep"])
        .assert_exit(0)
        .stderr_text();
    assert!(err.contains("sync finished"), "{err}");
    for p in ["p1", "p2", "p3"] {
        assert_whole(&env, p, &data);
    }
    let json = env
        .offsite(&["--json", "verify", "--deep"])
        .assert_exit(0)
        .json();
    let b = &json["backups"][0];
    assert_eq!(b["state"], "complete", "{json}");
    for p in b["providers"].as_array().unwrap() {
        assert_eq!(p["checked_shards"], 4, "{p}");
        assert_eq!(p["state"], "complete", "{p}");
    }
}

#[test]
fn sync_copies_exactly_the_missing_objects_and_status_goes_from_3_to_0() {
    let (mut env, data) = backed_up(3, DS, 11);
    env.use_mock_rclone();
    std::fs::remove_file(object(&env, "p2", &shard(1))).unwrap();
    std::fs::remove_file(object(&env, "p3", MANIFEST)).unwrap();
    truncate(&object(&env, "p3", &shard(3)), 10);

    let out = env.offsite(&["status"]);
    let text = out.assert_exit(3).stdout_text();
    assert!(text.contains("missing 1 shard"), "{text}");
    assert!(text.contains("1 truncated, no manifest"), "{text}");
    assert!(
        out.stderr_text().contains("run `offsite sync`"),
        "{}",
        out.stderr_text()
    );

    // The seed tool's spelling.
    env.offsite(&["--sync-providers"]).assert_exit(0);
    let w = writes(&env);
    assert_eq!(
        w.len(),
        3,
        "one shard to p2, one shard and the manifest to p3: {w:?}"
    );
    assert!(w
        .iter()
        .any(|l| l.contains("/remotes/p2/") && l.ends_with(&shard(1))));
    assert!(w
        .iter()
        .any(|l| l.contains("/remotes/p3/") && l.ends_with(&shard(3))));
    assert!(w.last().unwrap().contains("/remotes/p3/") && w.last().unwrap().ends_with(MANIFEST));
    for p in ["p1", "p2", "p3"] {
        assert_whole(&env, p, &data);
    }
    let text = env.offsite(&["status"]).assert_exit(0).stdout_text();
    assert_eq!(text.matches("complete").count(), 4, "{text}");

    // Nothing left to do: a second sync writes nothing.
    env.offsite(&["sync"]).assert_exit(0);
    assert_eq!(writes(&env).len(), 3);
}

/// The `md5` and `sha1` the manifest `provider` holds records for each shard.
fn recorded_hashes(env: &Env, provider: &str) -> Vec<(serde_json::Value, serde_json::Value)> {
    let text = std::fs::read(object(env, provider, MANIFEST)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let shards = m["shards"].as_array().unwrap();
    assert!(shards.iter().all(|s| s["sha256"].is_string()), "{m}");
    (shards.iter())
        .map(|s| (s["md5"].clone(), s["sha1"].clone()))
        .collect()
}

#[test]
fn a_backup_records_md5_and_sha1_only_where_a_provider_lists_them() {
    // Local directories list no hashes by default ("auto": rclone would read every object),
    // and offsite, writing plain paths itself, knows that without asking rclone.
    let (env, _) = backed_up(2, DS, 11);
    let recorded = recorded_hashes(&env, "p1");
    assert_eq!(recorded.len(), 4);
    let none = (serde_json::Value::Null, serde_json::Value::Null);
    assert!(recorded.iter().all(|h| *h == none), "{recorded:?}");
}

#[test]
fn listed_hashes_let_status_and_plain_sync_catch_and_replace_a_corrupt_shard() {
    let (mut env, data) = command_env(2, DS, 11);
    // A backup records MD5 and SHA-1 where a provider of the run lists them.
    env.provider_set("p1", "list_hashes", true)
        .provider_set("p2", "list_hashes", true);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let recorded = recorded_hashes(&env, "p2");
    assert!(
        recorded
            .iter()
            .all(|(md5, sha1)| md5.is_string() && sha1.is_string()),
        "{recorded:?}"
    );
    env.provider_set("p1", "list_hashes", "auto")
        .provider_set("p2", "list_hashes", "auto");
    env.use_mock_rclone();
    let bad = object(&env, "p2", &shard(1));
    flip_byte(&bad);
    // The default, "auto": local directories report SlowHash (rclone would read every
    // object), so no hashes are listed and a quick status sees sizes only.
    env.offsite(&["status"]).assert_exit(0);
    let features = env
        .mock_log()
        .iter()
        .filter(|l| l.starts_with("- "))
        .count();
    assert_eq!(
        features,
        2,
        "one `backend features` per provider: {:?}",
        env.mock_log()
    );

    env.provider_set("p1", "list_hashes", true)
        .provider_set("p2", "list_hashes", true);

    let out = env.offsite(&["status"]);
    let text = out.assert_exit(3).stdout_text();
    assert!(text.contains("1 corrupt"), "{text}");
    let json = env.offsite(&["--json", "status"]).assert_exit(3).json();
    let p = &json["backups"][0]["providers"];
    assert_eq!(p[1]["provider"], "p2", "{json}");
    assert_eq!(p[1]["corrupt_shards"], serde_json::json!([1]), "{json}");
    assert_eq!(p[0]["corrupt_shards"], serde_json::json!([]), "{json}");

    env.offsite(&["sync"]).assert_exit(0);
    let w = writes(&env);
    assert_eq!(w.len(), 1, "only the corrupt object is rewritten: {w:?}");
    assert!(
        w[0].contains("/remotes/p2/") && w[0].ends_with(&shard(1)),
        "{w:?}"
    );
    env.offsite(&["status"]).assert_exit(0);
    let good = std::fs::read(object(&env, "p1", &shard(1))).unwrap();
    assert_same_bytes("the replaced shard", &std::fs::read(&bad).unwrap(), &good);
    assert_whole(&env, "p2", &data);
}

#[test]
fn repair_provider_writes_to_that_provider_only() {
    let (mut env, data) = backed_up(3, DS, 11);
    env.use_mock_rclone();
    std::fs::remove_file(object(&env, "p1", &shard(0))).unwrap();
    std::fs::remove_file(object(&env, "p2", &shard(0))).unwrap();
    std::fs::remove_file(object(&env, "p2", MANIFEST)).unwrap();
    truncate(&object(&env, "p2", &shard(2)), 5);

    env.offsite(&["--repair-provider", "p2"]).assert_exit(0);
    let w = writes(&env);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().all(|l| l.contains("/remotes/p2/")), "{w:?}");
    assert_whole(&env, "p2", &data);
    assert!(
        !object(&env, "p1", &shard(0)).exists(),
        "p1 was not repaired"
    );
    env.offsite(&["status"]).assert_exit(3);
}

#[test]
fn migrate_to_a_new_provider_verifies_it_and_a_restore_from_it_alone_is_identical() {
    let (mut env, data) = backed_up(2, DS, 11);
    // A brand-new provider file, in no dataset and not even enabled.
    let d_dir = env.path().join("remotes/d");
    env.provider("d", &d_dir.display().to_string())
        .provider_set("d", "enabled", false)
        .use_mock_rclone();
    let p1_before = snapshot(&env.remote("p1").dataset_dir(DS));

    let out = env.offsite(&["--migrate", "p1", "--to", "d"]);
    let text = out.assert_exit(0).stdout_text();
    assert!(text.contains("1 backup(s) verified"), "{text}");
    assert_eq!(
        snapshot(&env.remote("p1").dataset_dir(DS)),
        p1_before,
        "p1 untouched"
    );
    let w = writes(&env);
    assert_eq!(w.len(), 5, "four shards and the manifest: {w:?}");
    assert!(w.iter().all(|l| l.contains("/remotes/d/")), "{w:?}");
    let downloads_from_d = env
        .mock_log()
        .iter()
        .filter(|l| l.starts_with("cat ") && l.contains("/remotes/d/") && !l.ends_with(MANIFEST))
        .count();
    assert_eq!(
        downloads_from_d, 4,
        "every shard read back from d and hashed"
    );
    assert_whole(&env, "d", &data);

    // Restore from d alone: a setup that knows no other provider and no dataset.
    let mut alone = Env::new(0);
    alone.provider("d", &d_dir.display().to_string());
    let out_file = alone.path().join("restored.bin");
    alone
        .offsite(&["restore", DS, "--output", out_file.to_str().unwrap()])
        .assert_exit(0);
    assert_same_bytes("restored from d", &std::fs::read(&out_file).unwrap(), &data);

    // Now move it for good: the source copy is deleted once d is verified.
    let json = env
        .offsite(&[
            "--json",
            "sync",
            "--migrate",
            "p1",
            "--to",
            "d",
            "--remove-source",
        ])
        .assert_exit(0)
        .json();
    assert_eq!(json["copied"].as_array().unwrap().len(), 0, "{json}");
    assert_eq!(json["migration"]["verified_backups"], 1, "{json}");
    assert_eq!(json["migration"]["removed_objects"], 5, "{json}");
    assert!(snapshot(&env.remote("p1").dataset_dir(DS)).is_empty());
    assert_whole(&env, "p2", &data);
}

#[test]
fn migrate_keeps_the_source_when_the_destination_does_not_verify() {
    let (mut env, _data) = backed_up(1, DS, 11);
    let d_dir = env.path().join("remotes/d");
    env.provider("d", &d_dir.display().to_string())
        .provider_set("d", "enabled", false)
        .use_mock_rclone();
    // Every upload of shard 2 to d is stored with a flipped first byte (same size).
    env.mock_rules(&format!("rcat */remotes/d/*{} corrupt inf\n", shard(2)));
    let before = snapshot(&env.remote("p1").dataset_dir(DS));
    let out = env.offsite(&["sync", "--migrate", "p1", "--to", "d", "--remove-source"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(err.contains(&shard(2)) && err.contains("SHA-256"), "{err}");
    assert!(err.contains("keeps its copy"), "{err}");
    assert_eq!(snapshot(&env.remote("p1").dataset_dir(DS)), before);
}

#[test]
fn a_shard_bad_on_every_provider_is_reported_and_not_spread() {
    let (env, _data) = backed_up(3, DS, 11);
    let id = env.remote("p1").manifest(DS).unwrap().backup_id;
    std::fs::remove_file(object(&env, "p1", &shard(1))).unwrap();
    flip_byte(&object(&env, "p2", &shard(1)));
    flip_byte(&object(&env, "p3", &shard(1)));

    for args in [&["sync"][..], &["sync", "--deep"][..]] {
        let out = env.offsite(args);
        let err = out.assert_exit(3).stderr_text();
        assert!(
            err.contains(&id) && err.contains(&shard(1)),
            "{args:?}: {err}"
        );
        assert!(
            !object(&env, "p1", &shard(1)).exists(),
            "{args:?}: a corrupt copy was spread to p1"
        );
    }
}

#[test]
fn dry_run_lists_the_copies_and_copies_nothing() {
    let (env, _data) = backed_up(2, DS, 11);
    std::fs::remove_file(object(&env, "p2", &shard(3))).unwrap();
    std::fs::remove_file(object(&env, "p2", MANIFEST)).unwrap();
    let before = snapshot(&env.path().join("remotes"));
    let text = env
        .offsite(&["sync", "--dry-run"])
        .assert_exit(0)
        .stdout_text();
    assert!(
        text.contains("would copy 1 shard(s)") && text.contains("to p2 from p1"),
        "{text}"
    );
    assert!(text.contains("would write the manifest"), "{text}");
    let json = env
        .offsite(&["--json", "sync", "--dry-run"])
        .assert_exit(0)
        .json();
    let planned = json["planned"].as_array().unwrap();
    assert_eq!(planned.len(), 2, "{json}");
    assert_eq!(planned[0]["object"], shard(3));
    assert_eq!(planned[1]["object"], MANIFEST);
    assert_eq!(snapshot(&env.path().join("remotes")), before);
}

#[test]
fn providers_on_one_rclone_remote_copy_server_side() {
    let mut env = Env::new(0);
    let conf = env.write_file("rclone.conf", "[disk]\ntype = local\n");
    env.set("rclone_config", conf.display().to_string());
    for p in ["a", "b"] {
        let dir = env.path().join(format!("remotes/{p}"));
        env.provider(p, &format!("disk:{}", dir.display()));
    }
    let src = env.path().join("src.bin");
    let data = write_pseudo_random(&src, 5, SOURCE_LEN);
    env.command_dataset(DS, &format!("cat {}", src.display()));
    env.offsite(&["backup", "--once"]).assert_exit(0);
    env.use_mock_rclone();
    let b = RemoteDir::new(env.path().join("remotes/b"));
    std::fs::remove_file(b.only_backup(DS).join(shard(2))).unwrap();

    let json = env.offsite(&["--json", "sync"]).assert_exit(0).json();
    assert_eq!(json["copied"][0]["server_side"], true, "{json}");
    let w = writes(&env);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("copyto ") && w[0].ends_with(&shard(2)),
        "{w:?}"
    );
    assert_same_bytes("stream on b", &b.stream(DS), &data);
}

#[test]
fn usage_errors_exit_2() {
    let (env, _data) = backed_up(1, DS, 11);
    let out = env.offsite(&["sync", "--migrate", "p1", "--to", "p1"]);
    assert!(out
        .assert_exit(2)
        .stderr_text()
        .contains("the same provider"));
    let out = env.offsite(&["sync", "--repair-provider", "nope"]);
    assert!(out
        .assert_exit(2)
        .stderr_text()
        .contains("unknown provider"));
    env.offsite(&["verify", "--provider", "nope"])
        .assert_exit(2);
}

#[test]
fn sigterm_during_a_sync_stops_cleanly_with_130() {
    let (mut env, _data) = backed_up(2, DS, 11);
    env.use_mock_rclone();
    std::fs::remove_file(object(&env, "p2", &shard(1))).unwrap();
    std::fs::remove_file(object(&env, "p2", MANIFEST)).unwrap();
    env.mock_rules("rcat */remotes/p2/* hang inf\n");
    let running = env.spawn_offsite(&["sync"]);
    wait_for(
        "the upload to p2 to start",
        std::time::Duration::from_secs(60),
        || env.mock_log().iter().any(|l| l.starts_with("rcat ")),
    );
    // SAFETY: signalling the offsite process this test started.
    unsafe {
        libc::kill(running.pid() as i32, libc::SIGTERM);
    }
    running.wait().assert_exit(130);
    env.assert_no_leftover_processes();
    assert!(
        !object(&env, "p2", MANIFEST).exists(),
        "no manifest before its shards"
    );
}

#[test]
fn migrate_remove_source_to_the_same_storage_under_another_name_is_refused() {
    let (mut env, data) = backed_up(1, DS, 12);
    // p1 again, through a symlink: another name, the same storage.
    let link = env.path().join("p1-link");
    std::os::unix::fs::symlink(env.remote("p1").root(), &link).unwrap();
    env.provider("again", &link.display().to_string())
        .provider_set("again", "enabled", false);
    let before = snapshot(env.remote("p1").root());

    let out = env.offsite(&[
        "sync",
        "--migrate",
        "p1",
        "--to",
        "again",
        "--remove-source",
    ]);
    let err = out.assert_exit(2).stderr_text();
    assert!(
        err.contains("same storage")
            && err.contains("again")
            && err.contains("nothing was copied or deleted"),
        "{err}"
    );
    // Nothing deleted, nothing copied, and no probe object left behind.
    assert_eq!(snapshot(env.remote("p1").root()), before);
    assert_whole(&env, "p1", &data);
}
