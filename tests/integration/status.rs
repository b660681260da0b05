//! `offsite status` end to end: the table and the JSON document for every kind of gap
//! (missing and truncated shards, unexpected objects, a missing manifest), unfinished backups
//! with how far they got, exit codes, and a 100,000-shard backup read in one listing.

use crate::harness::*;
use offsite::layout::{shard_name, BackupKind, MANIFEST};
use offsite::manifest::{hex, Manifest, ShardRecord, FORMAT_VERSION};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

const DS: &str = "media";

fn object(env: &Env, provider: &str, name: &str) -> PathBuf {
    env.remote(provider).only_backup(DS).join(name)
}

/// A shard's object name (new backups are zstd-compressed by default).
fn shard(i: u64) -> String {
    format!("{}.zst", shard_name(i, i * MIB as u64))
}

fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// The table row of `provider`'s column is hard to pick apart; the cell texts are distinct
/// enough to look for in the whole row.
fn row(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with(DS))
        .unwrap_or_else(|| panic!("no row for {DS}:\n{text}"))
}

#[test]
fn status_shows_each_kind_of_gap_and_exits_3_until_sync_fills_them() {
    let env = backed_up(3, DS, 3).0;
    let id = env.remote("p1").manifest(DS).unwrap().backup_id;
    std::fs::remove_file(object(&env, "p1", &shard(0))).unwrap();
    std::fs::remove_file(object(&env, "p1", &shard(2))).unwrap();
    truncate(&object(&env, "p2", &shard(1)), 7);
    std::fs::write(object(&env, "p2", "junk.tmp"), b"x").unwrap();
    std::fs::remove_file(object(&env, "p3", MANIFEST)).unwrap();

    let out = env.offsite(&["status"]);
    let text = out.assert_exit(3).stdout_text();
    let r = row(&text);
    for cell in [
        "incomplete",
        "missing 2 shards",
        "1 truncated, 1 unexpected",
        "no manifest",
    ] {
        assert!(r.contains(cell), "{cell:?} not in {r:?}");
    }
    let err = out.stderr_text();
    assert!(err.contains(&id) && err.contains("offsite sync"), "{err}");

    let json = env.offsite(&["--json", "status"]).assert_exit(3).json();
    assert_eq!(json["host"], HOST);
    let b = &json["backups"][0];
    assert_eq!(b["dataset"], DS);
    assert_eq!(b["backup_id"], id.as_str());
    assert_eq!(b["kind"], "full");
    assert_eq!(b["state"], "incomplete");
    let p: Vec<&serde_json::Value> = b["providers"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = p.iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(names, ["p1", "p2", "p3"]);
    assert_eq!(p[0]["state"], "incomplete");
    assert_eq!(p[0]["missing_shards"], serde_json::json!([0, 2]));
    assert_eq!(p[0]["manifest"], "good");
    assert_eq!(p[1]["truncated_shards"], serde_json::json!([1]));
    assert_eq!(p[1]["unexpected_objects"], serde_json::json!(["junk.tmp"]));
    assert_eq!(p[2]["missing_shards"], serde_json::json!([]));
    assert_eq!(p[2]["manifest"], "missing");

    env.offsite(&["sync"]).assert_exit(0);
    let text = env.offsite(&["status"]).assert_exit(0).stdout_text();
    let r = row(&text);
    assert!(
        r.contains("complete, 1 unexpected"),
        "unexpected objects stay: {r:?}"
    );
    let json = env.offsite(&["--json", "status"]).assert_exit(0).json();
    assert_eq!(json["backups"][0]["state"], "complete");
}

#[test]
fn unfinished_backups_show_how_far_they_got() {
    // Stored as they are: an unfinished backup's bare shard names give their lengths.
    let (mut env, _) = command_env(2, DS, 3);
    env.set("compression", "none");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    for p in ["p1", "p2"] {
        std::fs::remove_file(object(&env, p, MANIFEST)).unwrap();
    }
    let bare = |i: u64| shard_name(i, i * MIB as u64);
    std::fs::remove_file(object(&env, "p2", &bare(3))).unwrap();
    std::fs::remove_file(object(&env, "p2", &bare(2))).unwrap();

    let out = env.offsite(&["status"]);
    let text = out.assert_exit(3).stdout_text();
    let r = row(&text);
    assert!(r.contains("unfinished: 4 shards, 3.5 MiB"), "{r:?}");
    assert!(r.contains("unfinished: 2 shards, 2.0 MiB"), "{r:?}");
    assert!(
        out.stderr_text().contains("unfinished"),
        "{}",
        out.stderr_text()
    );

    let json = env.offsite(&["--json", "status"]).assert_exit(3).json();
    let b = &json["backups"][0];
    assert_eq!(b["state"], "unfinished");
    assert_eq!(b["providers"][0]["held"]["prefix"], 4);
    assert_eq!(b["providers"][1]["held"]["prefix"], 2);
    assert_eq!(b["providers"][1]["missing_shards"], serde_json::json!([2]));
    assert_eq!(b["providers"][1]["manifest"], "missing");

    // sync copies the provable shards of an unfinished backup but invents no manifest.
    env.offsite(&["sync"]).assert_exit(0);
    assert!(object(&env, "p2", &bare(2)).exists());
    assert!(!object(&env, "p2", MANIFEST).exists());
    assert!(!object(&env, "p1", MANIFEST).exists());
}

/// Writes a synthetic backup of `n` one-byte shards (and its manifest) under `root`.
fn synthetic_backup(root: &Path, dataset: &str, n: u64) -> String {
    let id = "20260101T000000Z-full";
    let dir = root.join(HOST).join(dataset).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let sha = hex(&Sha256::digest(b"x"));
    let mut shards = Vec::with_capacity(n as usize);
    for i in 0..n {
        let name = shard_name(i, i);
        std::fs::write(dir.join(&name), b"x").unwrap();
        shards.push(ShardRecord {
            index: i,
            offset: i,
            length: 1,
            sha256: sha.clone(),
            md5: None,
            sha1: None,
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
        });
    }
    let m = Manifest {
        format: FORMAT_VERSION,
        host: HOST.into(),
        dataset: dataset.into(),
        backup_id: id.into(),
        kind: BackupKind::Full,
        source_kind: "command".into(),
        source: "synthetic".into(),
        snapshot: None,
        parent: None,
        created: "2026-01-01T00:00:00Z".into(),
        shard_size: 1 << 20,
        total_bytes: n,
        shards,
        tool: "offsite test".into(),
        encoding: Default::default(),
        recipients: Vec::new(),
        sealed: None,
        erasure: None,
    };
    std::fs::write(dir.join(MANIFEST), m.to_json()).unwrap();
    id.to_string()
}

/// What keeps a large status fast, asserted without a clock: one listing and one manifest read,
/// never a call per shard. The time taken is printed for BENCHMARKS.md, not asserted: a loaded
/// machine would make any bound flaky.
#[test]
fn status_of_a_100k_shard_backup_lists_once_and_reads_one_manifest() {
    const N: u64 = 100_000;
    let mut env = Env::new(1);
    let root = env.path().join("remotes/p1");
    let id = synthetic_backup(&root, "big", N);
    let dir = root.join(HOST).join("big").join(&id);
    std::fs::remove_file(dir.join(shard_name(4242, 4242))).unwrap();
    env.use_mock_rclone();

    let start = Instant::now();
    let json = env.offsite(&["--json", "status"]).assert_exit(3).json();
    let took = start.elapsed();
    eprintln!("status of a {N}-shard backup: {took:?}");
    let p = &json["backups"][0]["providers"][0];
    assert_eq!(
        p["missing_shards"],
        serde_json::json!([4242]),
        "{}",
        json["backups"][0]["state"]
    );
    assert_eq!(p["held"]["shards"], N - 1);
    let log = env.mock_log();
    let listings = log.iter().filter(|l| l.starts_with("lsjson ")).count();
    let reads = log.iter().filter(|l| l.starts_with("cat ")).count();
    assert_eq!(
        (listings, reads),
        (1, 1),
        "one listing and one manifest read: {log:?}"
    );
}

/// One hex digit of one shard's SHA-256 flipped in `provider`'s manifest.
fn flip_a_digit(env: &Env, provider: &str) {
    let path = object(env, provider, MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("\"sha256\": \"").unwrap() + "\"sha256\": \"".len();
    let old = text.as_bytes()[at];
    let new = if old == b'0' { "1" } else { "0" };
    std::fs::write(&path, format!("{}{new}{}", &text[..at], &text[at + 1..])).unwrap();
}

#[test]
fn a_manifest_with_a_flipped_digit_is_reported_never_spread_and_replaced_by_sync() {
    let env = backed_up(2, DS, 3).0;
    let good = std::fs::read(object(&env, "p2", MANIFEST)).unwrap();
    flip_a_digit(&env, "p1");

    let out = env.offsite(&["status"]);
    let r = row(&out.assert_exit(3).stdout_text()).to_string();
    assert!(r.contains("bad manifest"), "{r}");
    let err = out.stderr_text();
    assert!(err.contains("checksum does not match"), "{err}");
    let out = env.offsite(&["verify"]);
    out.assert_exit(3);
    assert!(out.stderr_text().contains("p1"), "{}", out.stderr_text());

    env.offsite(&["sync"]).assert_exit(0);
    assert_eq!(
        std::fs::read(object(&env, "p2", MANIFEST)).unwrap(),
        good,
        "good copy untouched"
    );
    let repaired = std::fs::read(object(&env, "p1", MANIFEST)).unwrap();
    assert!(Manifest::from_json(&repaired).is_ok());
    env.offsite(&["status"]).assert_exit(0);
}

#[test]
fn every_manifest_unreadable_is_an_error_not_an_unfinished_backup() {
    let env = backed_up(2, DS, 3).0;
    flip_a_digit(&env, "p1");
    flip_a_digit(&env, "p2");
    for args in [&["verify", "--deep"][..], &["status"][..], &["verify"][..]] {
        let out = env.offsite(args);
        out.assert_exit(3);
        let err = out.stderr_text();
        assert!(
            err.contains("manifest unreadable or damaged on p1, p2") && !err.contains("resume"),
            "{args:?}: {err}"
        );
    }
    let json = env.offsite(&["--json", "list"]).json();
    assert_eq!(json["backups"][0]["state"], "damaged", "{json}");
}

/// A provider rewrites its manifest to list only the first shard (valid JSON, `total_bytes`
/// adjusted, a valid checksum): restore must never write the short stream and exit 0, and
/// `status` reports the disagreement.
#[test]
fn a_truncated_manifest_on_one_provider_never_yields_a_short_restore() {
    let (env, data) = backed_up(2, DS, 3);
    let path = object(&env, "p1", MANIFEST);
    let mut m = Manifest::from_json(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        m.shards.len() > 1,
        "the test needs a backup of several shards"
    );
    m.shards.truncate(1);
    m.total_bytes = m.shards[0].length;
    std::fs::write(&path, m.to_json()).unwrap();

    // The full manifest on p2 agrees with the shard objects both listings show: it is used.
    let out_file = env.path().join("restored");
    env.offsite(&["restore", DS, "--output", out_file.to_str().unwrap()])
        .assert_exit(0);
    assert!(
        std::fs::read(&out_file).unwrap() == data,
        "restore exited 0 with other bytes than the stream backed up"
    );
    env.offsite(&["status"]).assert_exit(3);
}

#[test]
fn a_dataset_neither_configured_nor_stored_is_a_usage_error_naming_the_datasets() {
    let (env, _) = backed_up(2, DS, 7);
    for cmd in [
        vec!["list", "mdia"],
        vec!["status", "mdia"],
        vec!["verify", "mdia"],
        vec!["restore", "mdia", "--output", "out.bin"],
    ] {
        let out = env.offsite(&cmd);
        let text = out.assert_exit(2).stderr_text();
        assert!(
            text.contains("dataset \"mdia\" is neither in") && text.contains("\"media\""),
            "{cmd:?}: {text}"
        );
    }
    assert!(!env.path().join("out.bin").exists());
    env.offsite(&["list", DS]).assert_exit(0);
}

#[test]
fn a_dataset_older_than_its_max_age_or_never_backed_up_is_stale_exit_3() {
    let (mut env, _) = backed_up(2, DS, 8);
    env.dataset_set(DS, "max_age", "2d");
    env.offsite(&["status"]).assert_exit(0);
    // Three days later (libfaketime moves offsite's clock only).
    let later = format!(
        "@{}",
        chrono_free_date(std::time::SystemTime::now() + std::time::Duration::from_secs(3 * 86_400))
    );
    let vars = [
        (
            "LD_PRELOAD",
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        ),
        ("FAKETIME", later.as_str()),
        ("TZ", "UTC"),
    ];
    for cmd in ["status", "verify"] {
        let out = env.offsite_env(&[cmd], &vars);
        let text = out.assert_exit(3).stdout_text();
        assert!(
            text.contains(&format!("dataset \"{DS}\" is stale")),
            "{cmd}: {text}"
        );
        let j = env
            .offsite_env(&["--json", cmd], &vars)
            .assert_exit(3)
            .json();
        assert_eq!(j["stale"][0]["dataset"], DS, "{cmd}");
        assert_eq!(j["stale"][0]["max_age_secs"], 2 * 86_400, "{cmd}");
    }
    // A dataset with a max_age and no backup at all is stale at once.
    env.command_dataset("never", "printf x")
        .dataset_set("never", "max_age", "1d");
    let out = env.offsite(&["status"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(
        err.contains("\"never\" is stale: it has no complete backup"),
        "{err}"
    );
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of `t`, as libfaketime reads it.
fn chrono_free_date(t: std::time::SystemTime) -> String {
    offsite::layout::rfc3339(t)
        .replace('T', " ")
        .replace('Z', "")
}
