//! `offsite backup` end to end: what lands on each provider (shard names, manifests, bytes that
//! concatenate back to the source), zfs and btrfs sources received back with their own tools,
//! providers that fail in the ways rclone can (via `tests/mock_rclone`), a failing source, and
//! the per-dataset lock.

use crate::harness::*;
use offsite::layout::{shard_object, MANIFEST};
use offsite::manifest::{hex, Manifest};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Checks one backup of `dataset` on `remote`: shards named by index and plaintext offset (and
/// their encoding's suffix) in stream order, a manifest whose records match them (stored length
/// and SHA-256). Returns the manifest and the stream (decompressed; plaintext unless encrypted).
pub(crate) fn assert_consistent(remote: &RemoteDir, dataset: &str) -> (Manifest, Vec<u8>) {
    let at = remote.root().display().to_string();
    let m = remote
        .manifest(dataset)
        .unwrap_or_else(|| panic!("no manifest for {dataset:?} in {at}"));
    let shards = remote.shards(dataset);
    let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<String> = m.shards.iter().map(|r| m.object(r)).collect();
    assert_eq!(names, expected, "shards on {at} vs its manifest");
    let mut offset = 0;
    let mut stream = Vec::new();
    for (rec, (name, bytes)) in m.shards.iter().zip(&shards) {
        assert_eq!(
            name,
            &shard_object(rec.index, offset, m.encoding),
            "on {at}"
        );
        assert_eq!(rec.length, bytes.len() as u64, "{name} on {at}");
        assert_eq!(rec.sha256, hex(&Sha256::digest(bytes)), "{name} on {at}");
        offset += rec.plain_len();
        if !m.encoding.is_encrypted() {
            let plain =
                offsite::codec::decode(m.encoding, bytes.clone().into(), rec.plain_len(), None)
                    .unwrap();
            stream.extend_from_slice(&plain);
        }
    }
    assert_eq!(m.total_bytes, offset, "on {at}");
    let backup = remote.only_backup(dataset);
    assert_eq!(
        backup.file_name().unwrap().to_str(),
        Some(m.backup_id.as_str())
    );
    (m, stream)
}

/// [`assert_consistent`] plus: the stream is `source`, cut in 1 MiB shards.
pub(crate) fn assert_holds(remote: &RemoteDir, dataset: &str, source: &[u8]) -> Manifest {
    let (m, stream) = assert_consistent(remote, dataset);
    assert_same_bytes(
        &format!("stream on {}", remote.root().display()),
        &stream,
        source,
    );
    assert_eq!(m.shards.len(), source.len().div_ceil(MIB));
    assert_eq!(m.shard_size, MIB as u64);
    m
}

/// Lines of the mock log for uploads of shard `index` to `provider`.
pub(crate) fn upload_attempts(env: &Env, provider: &str, index: u64) -> usize {
    let shard = format!("/s{index:010}-");
    let remote = format!("/remotes/{provider}/");
    env.mock_log()
        .iter()
        .filter(|l| l.starts_with("rcat ") && l.contains(&remote) && l.contains(&shard))
        .count()
}

#[test]
pub(crate) fn command_backup_puts_named_shards_and_manifest_on_every_provider() {
    let (env, data) = command_env(3, "tank/data", 7);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    for p in ["p1", "p2", "p3"] {
        let remote = env.remote(p);
        assert_eq!(
            remote.objects("tank/data"),
            [
                "manifest.json",
                "s0000000000-b0000000000000000.zst",
                "s0000000001-b0000000001048576.zst",
                "s0000000002-b0000000002097152.zst",
                "s0000000003-b0000000003145728.zst",
            ],
            "objects on {p}"
        );
        let m = assert_holds(&remote, "tank/data", &data);
        assert_eq!((m.host.as_str(), m.dataset.as_str()), (HOST, "tank/data"));
        assert_eq!(m.source_kind, "command");
        assert_eq!(m.snapshot, None);
        assert!(m.backup_id.contains("-full"), "{}", m.backup_id);
    }
}

#[test]
pub(crate) fn list_and_providers_show_the_backup() {
    let (env, data) = command_env(3, "tank/data", 7);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let id = env.remote("p1").manifest("tank/data").unwrap().backup_id;

    let out = env.offsite(&["list"]);
    let text = out.assert_exit(0).stdout_text();
    let row = text
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("backup {id} not listed:\n{text}"));
    for word in ["tank/data", "full", "4", "p1,p2,p3"] {
        assert!(
            row.split_whitespace().any(|w| w == word),
            "{word:?} not in {row:?}"
        );
    }

    let json = env.offsite(&["--json", "list"]).assert_exit(0).json();
    let backups = json["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{json}");
    let b = &backups[0];
    assert_eq!(b["backup_id"], id.as_str());
    assert_eq!(b["dataset"], "tank/data");
    assert_eq!(b["state"], "complete");
    assert_eq!(b["kind"], "full");
    assert_eq!(b["total_bytes"], data.len() as u64);
    assert_eq!(b["shards"], 4);
    assert_eq!(b["providers"], serde_json::json!(["p1", "p2", "p3"]));

    let manifest_len = std::fs::metadata(env.remote("p1").only_backup("tank/data").join(MANIFEST))
        .unwrap()
        .len();
    let text = env.offsite(&["providers"]).assert_exit(0).stdout_text();
    for p in ["p1", "p2", "p3"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("{p} not in:\n{text}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["ok", "5"], "{row:?}");
    }
    let json = env.offsite(&["--json", "providers"]).assert_exit(0).json();
    let rows = json["providers"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{json}");
    for r in rows {
        assert_eq!(r["reachable"], true, "{r}");
        assert_eq!(r["objects"], 5, "{r}");
        // A provider holds the stored (compressed) shards and the manifest.
        let m = env.remote("p1").manifest("tank/data").unwrap();
        let stored: u64 = m.shards.iter().map(|s| s.length).sum();
        assert_eq!(r["bytes"], stored + manifest_len, "{r}");
    }
}

#[test]
pub(crate) fn webdav_provider_gets_identical_bytes() {
    let (mut env, data) = command_env(1, "web", 7);
    let server = RcloneServer::webdav(&env.path().join("dav"));
    env.provider("dav", &server.remote());
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_holds(&env.remote("p1"), "web", &data);
    assert_holds(&RemoteDir::new(server.dir()), "web", &data);
}

#[test]
pub(crate) fn unreachable_webdav_provider_leaves_a_gap_until_it_is_back() {
    let (mut env, data) = command_env(1, "web", 7);
    let mut server = RcloneServer::webdav(&env.path().join("dav"));
    // rclone's own low-level retries would spend ~5 s per call on a refused connection.
    env.provider("dav", &server.remote())
        .provider_set("dav", "flags", vec!["--low-level-retries", "1"])
        .set("retries", 2);
    server.stop();
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(err.contains("provider dav misses 4 of 4 shards"), "{err}");
    assert_holds(&env.remote("p1"), "web", &data);

    server.start();
    let json = env.offsite(&["--json", "providers"]).assert_exit(0).json();
    let dav = json["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider"] == "dav")
        .cloned()
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(dav["reachable"], true, "{dav}");
    assert_eq!(dav["objects"], 0, "{dav}");
}

#[test]
pub(crate) fn zfs_dataset_backup_receives_back_identical() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let mnt = pool.create_fs("data");
    write_pseudo_random(&mnt.join("big.bin"), 1, 2 * MIB + 12345);
    std::fs::create_dir(mnt.join("sub")).unwrap();
    std::fs::write(mnt.join("sub/notes.txt"), "offsite zfs test\n").unwrap();
    env.zfs_dataset("tank", &pool.fs("data"));

    env.offsite(&["backup", "--once"]).assert_exit(0);

    let snaps = pool.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let prefix = format!("{}@offsite-", pool.fs("data"));
    assert!(snaps[0].starts_with(&prefix), "{snaps:?}");
    let (m, stream) = assert_consistent(&env.remote("p1"), "tank");
    assert_eq!(m.source_kind, "zfs");
    assert_eq!(m.snapshot.as_deref(), Some(snaps[0].as_str()));
    assert!(
        m.shards.len() >= 3,
        "a 2 MiB file makes at least 3 shards: {m:?}"
    );
    let (_, stream2) = assert_consistent(&env.remote("p2"), "tank");
    assert_same_bytes("p1 vs p2", &stream, &stream2);

    pool.receive("restored", &stream);
    assert_same_tree(&mnt, &pool.mountpoint("restored"));
}

#[test]
pub(crate) fn a_zfs_send_that_writes_nothing_is_never_recorded_as_a_backup() {
    let mut env = Env::new(1);
    let pool = ZfsPool::new(env.path());
    let mnt = pool.create_fs("data");
    write_pseudo_random(&mnt.join("a.bin"), 3, 100_000);
    env.zfs_dataset("tank", &pool.fs("data"));
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let parent = pool.snapshots();
    assert_eq!(parent.len(), 1, "{parent:?}");

    // A `zfs` whose send writes 0 bytes and exits 0, as `zfs send -n` does (zfs-fuse has no -n).
    let real = search_path()
        .split(':')
        .map(|d| Path::new(d).join("zfs"))
        .find(|p| p.exists())
        .expect("zfs is installed");
    let bin = env.path().join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = send ] && exit 0\nexec {} \"$@\"\n",
        real.display()
    );
    std::fs::write(bin.join("zfs"), script).unwrap();
    run("chmod", &["+x", bin.join("zfs").to_str().unwrap()]);
    env.var("PATH", &format!("{}:{}", bin.display(), search_path()));

    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    assert!(
        err.contains("wrote 0 bytes") && err.contains("send_flags"),
        "{err}"
    );
    let p1 = env.remote("p1");
    let with_manifest: Vec<_> = p1
        .backups("tank")
        .into_iter()
        .filter(|b| b.join(MANIFEST).exists())
        .collect();
    assert_eq!(with_manifest.len(), 1, "{with_manifest:?}");
    assert!(
        pool.snapshots().contains(&parent[0]),
        "the parent snapshot {} was destroyed: {:?}",
        parent[0],
        pool.snapshots()
    );
}

#[test]
pub(crate) fn btrfs_subvolume_backup_receives_back_identical() {
    let mut env = Env::new(2);
    let fs = BtrfsMount::new(env.path());
    let vol = fs.subvolume("vol");
    write_pseudo_random(&vol.join("big.bin"), 2, 2 * MIB + 777);
    std::fs::create_dir(vol.join("sub")).unwrap();
    std::fs::write(vol.join("sub/notes.txt"), "offsite btrfs test\n").unwrap();
    let snaps = fs.path().join("snaps");
    env.btrfs_dataset("home", &vol, Some(&snaps));

    env.offsite(&["backup", "--once"]).assert_exit(0);

    let taken: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let snap = &taken[0];
    let snap_name = snap.file_name().unwrap().to_str().unwrap();
    assert!(snap_name.starts_with("home.offsite-"), "{snap_name}");
    assert!(
        BtrfsMount::is_readonly(snap),
        "{} is writable",
        snap.display()
    );
    let (m, stream) = assert_consistent(&env.remote("p1"), "home");
    assert_eq!(m.source_kind, "btrfs");
    assert_eq!(m.snapshot.as_deref(), snap.to_str());
    let (_, stream2) = assert_consistent(&env.remote("p2"), "home");
    assert_same_bytes("p1 vs p2", &stream, &stream2);

    let restored = fs.path().join("restored");
    fs.receive(&restored, &stream);
    assert_same_tree(&vol, &restored.join(snap_name));
}

#[test]
pub(crate) fn transient_upload_failure_is_retried() {
    let (mut env, data) = command_env(3, "d", 7);
    env.use_mock_rclone();
    env.mock_rules("rcat */remotes/p2/*/s0000000001-* exit:5 2\n");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    for p in ["p1", "p2", "p3"] {
        assert_holds(&env.remote(p), "d", &data);
    }
    assert_eq!(upload_attempts(&env, "p2", 1), 3, "{:#?}", env.mock_log());
    assert_eq!(upload_attempts(&env, "p1", 1), 1);
    assert_eq!(upload_attempts(&env, "p2", 2), 1);
}

#[test]
pub(crate) fn provider_down_leaves_a_gap_and_exit_3() {
    let (mut env, data) = command_env(3, "d", 7);
    env.use_mock_rclone().set("retries", 2);
    env.mock_rules("* */remotes/p2* down inf\n");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(err.contains("provider p2 misses 4 of 4 shards"), "{err}");
    assert!(
        !err.contains("provider p1 misses") && !err.contains("provider p3 misses"),
        "{err}"
    );
    assert_holds(&env.remote("p1"), "d", &data);
    assert_holds(&env.remote("p3"), "d", &data);
    assert!(env.remote("p2").backups("d").is_empty());
}

#[test]
pub(crate) fn provider_down_below_min_providers_fails_without_a_manifest() {
    let (mut env, _) = command_env(2, "d", 7);
    env.use_mock_rclone()
        .set("retries", 2)
        .set("min_providers", 2);
    env.mock_rules("* */remotes/p2* down inf\n");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    assert!(err.contains("min_providers = 2"), "{err}");
    assert!(err.contains("p2"), "{err}");
    assert_eq!(env.manifests_anywhere(), Vec::<std::path::PathBuf>::new());
}

#[test]
pub(crate) fn truncated_upload_is_caught_by_the_size_check() {
    let (mut env, data) = command_env(3, "d", 7);
    env.set("compression", "none"); // the test names the bare shard object
    env.use_mock_rclone();
    env.mock_rules("rcat */remotes/p2/*/s0000000001-* truncate:100 1\n");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(err.contains("provider p2 misses 1 of 4 shards"), "{err}");
    assert!(err.contains("s0000000001-b0000000001048576"), "{err}");
    let held = std::fs::metadata(
        env.remote("p2")
            .only_backup("d")
            .join("s0000000001-b0000000001048576"),
    )
    .unwrap()
    .len();
    assert_eq!(held, 100, "the mock should have stored 100 bytes");
    assert_holds(&env.remote("p1"), "d", &data);
    assert_holds(&env.remote("p3"), "d", &data);
}

/// Through the spool, with erasure coding and a provider that fails the first upload of every
/// shard: the backup completes, restores identical, and leaves nothing in the spool folder.
/// With one shard in memory (`shards_in_flight = 1`), every shard goes through the spool;
/// with more, only those a provider trails on (the unit tests of `engine::backup` count them).
#[test]
fn a_backup_through_the_spool_restores_identical_and_leaves_the_folder_empty() {
    let (mut env, data) = command_env(3, "d", 41);
    let spool = env.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    env.set("spool_dir", spool.to_str().unwrap())
        .set("spool_size", "2MiB")
        .set("shards_in_flight", 1)
        .set("erasure", "2+1")
        .use_mock_rclone();
    env.mock_rules("rcat */remotes/p3/*/s0000000000-* exit:5 1\nrcat */remotes/p3/*/s0000000001-* exit:5 1\nrcat */remotes/p3/*/s0000000002-* exit:5 1\nrcat */remotes/p3/*/s0000000003-* exit:5 1\n");
    let out = env.offsite(&["-v", "backup", "--once"]);
    out.assert_exit(0);
    let err = out.stderr_text();
    for i in 0..4 {
        assert!(
            err.contains(&format!("shard {i} spooled to {}", spool.display())),
            "{err}"
        );
    }
    assert!(upload_attempts(&env, "p3", 3) >= 2, "{:?}", env.mock_log());
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    let (out, file) = env.restore_to_file("d", &[]);
    out.assert_exit(0);
    assert_eq!(std::fs::read(file).unwrap(), data);
}

/// A provider on a local disk is written by offsite itself: into unnamed files, or on a file
/// system without them (`O_TMPFILE`: FAT, exFAT, FUSE ones such as zfs-fuse here) through a
/// `.offsite-partial` file renamed when complete. Both restore identical and keep nothing else.
#[test]
fn a_provider_without_unnamed_files_is_written_through_partial_files() {
    let (mut env, data) = command_env(2, "d", 47);
    let pool = ZfsPool::new(env.path());
    let on_fuse = pool.create_fs("offsite");
    env.provider("p2", on_fuse.to_str().unwrap());
    let out = env.offsite(&["-v", "backup", "--once"]);
    out.assert_exit(0);
    let err = out.stderr_text();
    let wrote = |p: &str, how: &str| {
        let shards = err
            .lines()
            .filter(|l| l.contains(&format!("provider {p}: wrote")) && l.contains("/s00000000"));
        shards.filter(|l| l.contains(how)).count()
    };
    assert_eq!(wrote("p1", "to the local disk directly: ok"), 4, "{err}");
    assert_eq!(
        wrote("p2", "directly through a .offsite-partial file: ok"),
        4,
        "{err}"
    );
    assert_holds(&env.remote("p1"), "d", &data);
    let on_p2 = RemoteDir::new(&on_fuse);
    assert_holds(&on_p2, "d", &data);
    assert_eq!(on_p2.objects("d").len(), 5, "{:?}", on_p2.objects("d"));
    env.remove_provider("p1");
    let (out, file) = env.restore_to_file("d", &[]);
    out.assert_exit(0);
    assert_eq!(std::fs::read(file).unwrap(), data);
}
