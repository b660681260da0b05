//! Resuming after damage or changes between runs: deleted or truncated shards, a source that
//! re-sends different bytes, a deleted snapshot. Helpers: see `resume.rs`.

use crate::harness::*;
use crate::resume::MIB;
use crate::resume::*;
use offsite::layout::{shard_name, MANIFEST};
use offsite::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};

// ---- damage and changes between runs ----

#[test]
fn shards_deleted_or_truncated_between_runs_are_uploaded_again() {
    let (env, _, data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *s0000000004-* hang 1\n");
    kill_9_when(
        &env,
        "every shard but 4 everywhere, and 4 on two providers",
        || stuck_on(&env, &names, 4, 1),
    );
    let (u, recorded) = unfinished(&env).unwrap();
    assert_eq!(recorded, SHARDS);
    let dir = remote(&env, "p2").only_backup(DS);
    std::fs::remove_file(dir.join(shard(1))).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(shard(2)))
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);

    let before = snapshot_held(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    out.assert_exit(0);
    assert_complete(&env, &names, &u.backup_id, &data);
    // The listing is the truth: p2 gets back shards 1 and 2 it lost, the laggard shard 4, and
    // each its manifest; nobody gets a shard it holds whole.
    assert_resume_uploads(&env, &before, SHARDS);
    let p2 = uploads(&env)["p2"].clone();
    assert!(p2.contains(&shard(1)) && p2.contains(&shard(2)), "{p2:?}");
}

#[test]
fn a_source_that_differs_on_resume_is_refused_and_restart_starts_afresh() {
    // resume = "always" (the default, "auto", would start afresh: see resume_policy.rs).
    let (mut env, src, mut data) = mocked_env(3);
    env.dataset_set(DS, "resume", "always");
    let names = providers(3);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    kill_9_when(
        &env,
        "every shard but 3 everywhere, and 3 on two providers",
        || stuck_on(&env, &names, 3, 1),
    );
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names);
    data[(MIB + MIB / 2) as usize] ^= 0x01; // one bit in shard 1
    std::fs::write(&src, &data).unwrap();

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in ["differs", "shard 1", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    assert_eq!(
        uploads(&env),
        BTreeMap::new(),
        "the changed stream was uploaded"
    );
    assert!(
        trees(&env, &names) == before,
        "a provider's objects changed"
    );
    assert_eq!(
        unfinished(&env).map(|(u, _)| u.backup_id),
        Some(u.backup_id.clone())
    );

    let out = rerun(&env, &["backup", "--once", "--restart"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        err.contains(&format!("discarding unfinished backup {}", u.backup_id)),
        "{err}"
    );
    for p in &names {
        // The discarded backup's objects were deleted at once: only the fresh backup is left
        // (a local folder may stay, empty: offsite lists objects, not folders).
        assert_no_objects_of(&env, p, &u.backup_id);
        let fresh = backup_id_after(&env, p, &u.backup_id);
        assert_same_bytes(
            &format!("new stream on {p}"),
            &assert_backup(&env, p, &fresh),
            &data,
        );
    }
    let deletes = calls(&env)
        .into_iter()
        .filter(|(s, _, _)| s == "deletefile")
        .count();
    assert_eq!(deletes, 3 * SHARDS as usize - 1, "{:#?}", env.mock_log());
    let status = env.offsite(&["status"]);
    status.assert_exit(0);
    let text = format!("{}{}", status.stdout_text(), status.stderr_text());
    assert!(!text.contains("unfinished"), "{text}");
}

#[test]
fn a_changed_source_is_caught_even_when_no_shard_reached_every_provider() {
    let (mut env, src, mut data) = mocked_env(3);
    env.dataset_set(DS, "resume", "always");
    // p3 never finishes an upload: with two uploads per provider and 4 shards in flight the
    // run is stuck with shards 0-3 read, journaled and on p1 and p2, and nothing on p3.
    let names = providers(3);
    env.mock_rules("rcat *remotes/p3/* hang inf\n");
    kill_9_when(&env, "shards 0-3 journaled and on p1 and p2", || {
        proven(&env) == 4 && names[..2].iter().all(|p| held(&env, p) == (0..4).collect())
    });
    assert_eq!(held(&env, "p3"), BTreeSet::new());
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names[..2]);
    data[(2 * MIB + 7) as usize] ^= 0x80; // one bit in shard 2

    std::fs::write(&src, &data).unwrap();
    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in ["differs", "shard 2", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    // Shards 0 and 1 are re-read unchanged before shard 2 is, and may reach p3 meanwhile
    // (how many depends on timing); nothing from the changed shard on may be uploaded.
    let early = [shard_name(0, 0), shard_name(1, MIB)];
    let uploaded = uploads(&env);
    assert!(
        uploaded
            .iter()
            .all(|(p, objs)| p == "p3" && objs.iter().all(|o| early.contains(o))),
        "the changed stream was uploaded: {uploaded:?}"
    );
    assert!(
        trees(&env, &names[..2]) == before,
        "p1's or p2's objects changed"
    );
}

#[test]
fn a_snapshot_deleted_between_runs_is_reported_with_restart() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let mnt = pool.create_fs("data");
    write_pseudo_random(&mnt.join("big.bin"), 5, 5 * MIB as usize);
    env.zfs_dataset(DS, &pool.fs("data"));
    env.use_mock_rclone().set("compression", "none");
    env.mock_rules("rcat *s0000000002-* hang 1\n");
    let names = providers(2);
    kill_9_when(
        &env,
        "shards 0-1 in place and the upload of shard 2",
        || logged_rcat(&env, &shard(2)) && first_shards_done(&env, &names, 2),
    );
    let (u, _) = unfinished(&env).unwrap();
    let snap = u
        .snapshot
        .clone()
        .expect("a zfs backup records its snapshot");
    run("zfs", &["destroy", &snap]);
    let before = trees(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in [snap.as_str(), "no longer exists", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    assert_eq!(uploads(&env), BTreeMap::new());
    assert!(
        trees(&env, &names) == before,
        "a provider's objects changed"
    );

    let out = rerun(&env, &["backup", "--once", "--restart"]);
    out.assert_exit(0);
    for p in &names {
        assert_no_objects_of(&env, p, &u.backup_id);
    }
    // The one with a manifest: both backups may start in the same second, and the folder of
    // the discarded one (emptied, without a manifest) may sort after the fresh one's.
    let fresh = (remote(&env, "p1").backups(DS).into_iter())
        .rfind(|b| b.join(MANIFEST).exists())
        .expect("the fresh backup's manifest");
    let id = fresh.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(id, u.backup_id);
    let m = Manifest::from_json(&std::fs::read(fresh.join(MANIFEST)).unwrap()).unwrap();
    let new_snap = m.snapshot.expect("the fresh backup records its snapshot");
    // The old snapshot was destroyed, so one by this name in the pool is the fresh backup's
    // own; it may bear the old one's name when both runs started in the same second.
    let now = pool.snapshots();
    assert!(
        now.contains(&new_snap),
        "{new_snap} (the destroyed one: {snap}) not in {now:?}"
    );
    let stream = assert_backup(&env, "p1", &id);
    assert_same_bytes("p1 vs p2", &stream, &assert_backup(&env, "p2", &id));
}
