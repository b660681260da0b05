//! Encrypted backups under damage and interruption: a flipped byte in one provider's stored
//! shard (restore fails over, `verify --deep` names it), kill -9 mid-backup and a resume that
//! keeps one encryption of each shard, and a chain that turns encryption on between backups
//! (a command dataset, and a zfs full + incremental). Helpers: `encryption.rs`, `resume.rs`.

use crate::encryption::*;
use crate::harness::*;
use crate::resume::{kill_9_when, mocked_env, rerun};
use offsite::layout::{utc_stamp, MANIFEST};
use offsite::manifest::{hex, Manifest};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, SystemTime};

#[test]
fn a_flipped_byte_in_one_copy_is_restored_around_and_named_by_verify_deep() {
    let data = mixed_stream(31);
    let (env, key) = encrypted_env(2, &data, true);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let m = assert_encrypted_manifest(&env, "p1", &key.recipient);
    let object = m.object(&m.shards[0]);
    // Shard 0 is fetched from the first provider first (nothing is measured yet).
    flip_byte(&env.remote("p1").only_backup(DS).join(&object));

    let (out, file) = env.restore_to_file(DS, &[]);
    let err = out.assert_exit(0).stderr_text();
    assert_same_bytes("restored", &std::fs::read(&file).unwrap(), &data);
    assert!(
        err.contains("provider p1") && err.contains("s0000000000"),
        "the damaged copy is not named:\n{err}"
    );

    let out = env.offsite(&["verify", "--deep"]);
    out.assert_exit(3);
    let (text, err) = (out.stdout_text(), out.stderr_text());
    let row = text
        .lines()
        .find(|l| l.contains("p1"))
        .unwrap_or_else(|| panic!("no row for p1:\n{text}"));
    assert!(row.contains("1 corrupt"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("p2") && l.contains("corrupt")),
        "{text}"
    );
    assert!(
        err.contains("p1") && err.contains(&object),
        "the corrupt shard is not named:\n{err}"
    );
}

/// Every provider's copy of every shard of backup `id` has the manifest's stored length and
/// SHA-256 (so all providers hold the same encryption), and the manifests agree.
fn assert_one_encryption_per_shard(env: &Env, providers: &[&str], id: &str) {
    let mut reference: Option<Manifest> = None;
    for p in providers {
        let dir = env.remote(p).dataset_dir(DS).join(id);
        let bytes = std::fs::read(dir.join(MANIFEST))
            .unwrap_or_else(|e| panic!("{p}: no manifest in {}: {e}", dir.display()));
        let m = Manifest::from_json(&bytes).unwrap_or_else(|e| panic!("{p}: {e}"));
        let names: Vec<String> = stored_shards(&dir).into_iter().map(|(n, _)| n).collect();
        let recorded: Vec<String> = m.shards.iter().map(|r| m.object(r)).collect();
        assert_eq!(names, recorded, "objects on {p} vs its manifest");
        for r in &m.shards {
            let b = std::fs::read(dir.join(m.object(r))).unwrap();
            let what = format!("{} on {p}", m.object(r));
            assert_eq!(b.len() as u64, r.length, "{what}");
            assert_eq!(hex(&Sha256::digest(&b)), r.sha256, "{what}");
        }
        match &reference {
            None => reference = Some(m),
            Some(first) => {
                let sha = |m: &Manifest| m.shards.iter().map(|r| r.sha256.clone()).collect();
                let (a, b): (Vec<String>, Vec<String>) = (sha(first), sha(&m));
                assert_eq!(a, b, "{p}'s manifest records other stored shards than p1's");
            }
        }
    }
}

#[test]
fn kill_9_during_an_encrypted_backup_then_resume_keeps_one_encryption_per_shard() {
    let (mut env, _, data) = mocked_env(3);
    let key = AgeKey::new(env.path(), "offsite.key");
    // resume.rs stores uncompressed; the default (zstd) is what an encrypted backup uses.
    env.unset("compression")
        .encryption(&[&key.recipient], Some(&key.path));
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    let hung = |env: &Env| {
        env.mock_log()
            .iter()
            .any(|l| l.starts_with("rcat ") && l.contains("/s0000000003-"))
    };
    kill_9_when(&env, "the upload of shard 3", || hung(&env));

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(err.contains("resuming unfinished backup"), "{err}");
    assert_encrypted_manifest(&env, "p1", &key.recipient);
    let id = env.remote("p1").only_backup(DS);
    let id = id.file_name().unwrap().to_string_lossy().into_owned();
    assert_one_encryption_per_shard(&env, &["p1", "p2", "p3"], &id);
    assert_restores(&env, &[], &data);
}

/// Waits until a new backup of `dataset` would get a later id than `id` (ids have seconds).
fn next_second(id: &str) {
    wait_for(
        "the clock to pass the backup's second",
        Duration::from_secs(30),
        || utc_stamp(SystemTime::now()).as_str() > &id[..16],
    );
}

fn newest_id(env: &Env, dataset: &str) -> String {
    let newest = env.remote("p1").backups(dataset).pop().expect("a backup");
    newest.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_plain_backup_then_encryption_turned_on_both_restore_identically() {
    let mut env = Env::new(2);
    let key = AgeKey::new(env.path(), "offsite.key");
    let src = env.path().join("src.bin");
    let plain = write_pseudo_random(&src, 41, SOURCE_LEN);
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .set("compression", "none");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let first = newest_id(&env, DS);
    let dir = env.remote("p1").dataset_dir(DS).join(&first);
    assert!(
        stored_shards(&dir).iter().all(|(n, _)| !n.contains('.')),
        "the first backup is not stored as plain shards: {:?}",
        stored_shards(&dir)
    );

    next_second(&first);
    let encrypted = mixed_stream(42);
    std::fs::write(&src, &encrypted).unwrap();
    env.unset("compression")
        .encryption(&[&key.recipient], Some(&key.path));
    env.offsite(&["backup", "--once", "--full"]).assert_exit(0);
    let second = newest_id(&env, DS);
    assert_ne!(first, second);
    let dir = env.remote("p1").dataset_dir(DS).join(&second);
    assert!(
        stored_shards(&dir)
            .iter()
            .all(|(n, _)| n.ends_with(".zst.age")),
        "{:?}",
        stored_shards(&dir)
    );

    for args in [&["status"][..], &["verify", "--deep"]] {
        env.offsite(args).assert_exit(0);
    }
    assert_restores(&env, &["--backup", &first], &plain);
    assert_restores(&env, &["--backup", &second], &encrypted);
    // The plain backup needs no identity.
    env.encryption(&[&key.recipient], None);
    assert_restores(&env, &["--backup", &first], &plain);
}

/// Writes a stage of the zfs tree: files that compress and files that do not.
fn zfs_stage(root: &Path, stage: u64) {
    if stage == 0 {
        write_pseudo_random(&root.join("random.bin"), 51, MIB + 777);
        std::fs::write(root.join("text.txt"), marker_text("zfs-stage-0", MIB)).unwrap();
    } else {
        std::fs::write(root.join("text.txt"), marker_text("zfs-stage-1", MIB / 2)).unwrap();
        write_pseudo_random(&root.join("second.bin"), 52, MIB / 3);
    }
}

#[test]
fn a_zfs_chain_of_a_plain_full_and_an_encrypted_incremental_restores_at_both_snapshots() {
    let mut env = Env::new(2);
    let key = AgeKey::new(env.path(), "offsite.key");
    let pool = ZfsPool::new(env.path());
    let src = pool.create_fs("src");
    env.zfs_dataset("tank", &pool.fs("src"))
        .set("compression", "none");
    let kept = env.path().join("kept");
    let mut ids: Vec<String> = Vec::new();
    for stage in 0..2u64 {
        zfs_stage(&src, stage);
        if stage == 1 {
            next_second(&ids[0]);
            env.unset("compression")
                .encryption(&[&key.recipient], Some(&key.path));
        }
        env.offsite(&["backup", "--once", "tank"]).assert_exit(0);
        let copy = kept.join(stage.to_string());
        std::fs::create_dir_all(&copy).unwrap();
        let from = format!("{}/.", src.display());
        run("cp", &["-a", &from, copy.to_str().unwrap()]);
        ids.push(newest_id(&env, "tank"));
    }
    assert!(
        ids[0].contains("-full") && ids[1].contains("-incr"),
        "{ids:?}"
    );
    let names = |id: &str| stored_shards(&env.remote("p1").dataset_dir("tank").join(id));
    assert!(
        names(&ids[0]).iter().all(|(n, _)| !n.contains('.')),
        "{:?}",
        names(&ids[0])
    );
    let encrypted = names(&ids[1]);
    assert!(
        encrypted.iter().all(|(n, _)| n.ends_with(".zst.age")),
        "{encrypted:?}"
    );
    for (stage, id) in ids.iter().enumerate() {
        let target = pool.fs(&format!("r{stage}"));
        env.offsite(&["restore", "tank", "--backup", id, "--target", &target])
            .assert_exit(0);
        assert_same_tree(
            &kept.join(stage.to_string()),
            &pool.mountpoint(&format!("r{stage}")),
        );
    }
    env.assert_no_leftover_processes();
}
