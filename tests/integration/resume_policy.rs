//! A dataset's `resume` policy after a stopped run, end to end: under `auto` (the default) a
//! command whose stream changed is discarded and backed up afresh in the same run (exit 0);
//! under `never` an unfinished backup is never resumed. An empty command stream is a stored
//! backup flagged `empty` (backup and status exit 3). Helpers: see `resume.rs`.

use crate::harness::*;
use crate::resume::MIB;
use crate::resume::*;

/// A run killed with shard 3 stuck on one provider; returns the env, the source file, its
/// bytes and the unfinished backup's id.
fn interrupted(policy: Option<&str>) -> (Env, std::path::PathBuf, Vec<u8>, String) {
    let (mut env, src, data) = mocked_env(3);
    if let Some(p) = policy {
        env.dataset_set(DS, "resume", p);
    }
    let names = providers(3);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    kill_9_when(
        &env,
        "every shard but 3 everywhere, and 3 on two providers",
        || stuck_on(&env, &names, 3, 1),
    );
    let (u, _) = unfinished(&env).unwrap();
    (env, src, data, u.backup_id)
}

/// The old backup's objects are gone and the one fresh backup holds `data`, on every provider.
fn assert_fresh(env: &Env, old: &str, data: &[u8]) {
    for p in &providers(3) {
        assert_no_objects_of(env, p, old);
        let fresh = backup_id_after(env, p, old);
        assert_same_bytes(
            &format!("fresh stream on {p}"),
            &assert_backup(env, p, &fresh),
            data,
        );
    }
    assert!(unfinished(env).is_none(), "still unfinished");
}

#[test]
fn under_auto_a_changed_command_stream_is_discarded_and_backed_up_afresh() {
    let (env, src, mut data, old) = interrupted(None);
    data[(MIB + 5) as usize] ^= 0x01; // one bit in shard 1
    std::fs::write(&src, &data).unwrap();

    let out = rerun(&env, &["backup", "--once", "--json"]);
    let err = out.assert_exit(0).stderr_text();
    for word in ["differs", &old, "resume = \"auto\"", "discarding"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    assert_fresh(&env, &old, &data);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["backups"][0]["discarded"], old.as_str());
}

#[test]
fn under_never_an_unfinished_backup_is_not_resumed() {
    let (env, _, data, old) = interrupted(Some("never"));
    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        err.contains(&format!("discarding unfinished backup {old}"))
            && err.contains("resume = \"never\""),
        "{err}"
    );
    assert!(!err.contains("resuming"), "{err}");
    assert_fresh(&env, &old, &data);
}

#[test]
fn an_empty_command_stream_is_stored_flagged_empty_and_exits_3() {
    let mut env = Env::new(2);
    env.command_dataset("pg", "true");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(
        err.contains("printed nothing") && err.contains("empty"),
        "{err}"
    );

    let list = env.offsite(&["list"]);
    let text = list.assert_exit(0).stdout_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("pg") && l.contains("empty")),
        "{text}"
    );
    let json = env.offsite(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.assert_exit(0).stdout).unwrap();
    assert_eq!(v["backups"][0]["state"], "empty");

    let status = env.offsite(&["status", "--json"]);
    let err = status.assert_exit(3).stderr_text();
    assert!(err.contains("is empty"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["backups"][0]["state"], "empty");
}
