//! Resuming after SIGTERM, taking over a killed run's stale lock, and `backup --dry-run` of
//! an unfinished backup. Helpers: see `resume.rs`.

use crate::harness::*;
use crate::resume::*;

// ---- signals, locks, dry run ----

#[test]
fn sigterm_stops_cleanly_releases_the_lock_and_the_rerun_resumes() {
    let (env, _, data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_for(
        "every shard but 3 everywhere, and 3 on two providers",
        WAIT,
        || stuck_on(&env, &names, 3, 1),
    );
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait();
    let err = out.assert_exit(130).stderr_text();
    assert!(err.contains("interrupted"), "{err}");
    env.assert_no_leftover_processes();
    let lock = std::fs::read_to_string(env.lock_file(DS)).unwrap();
    assert_eq!(lock, "", "the lock file still names a holder");
    let (u, recorded) = unfinished(&env).expect("progress is kept");
    assert_eq!(recorded, SHARDS);
    let before = snapshot_held(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        !err.contains("taking it over"),
        "a clean stop left a stale lock:\n{err}"
    );
    assert!(
        err.contains(&format!("resuming unfinished backup {}", u.backup_id)),
        "{err}"
    );
    assert_complete(&env, &names, &u.backup_id, &data);
    // Shard 3 to the laggard and the 3 manifests.
    assert_resume_uploads(&env, &before, SHARDS);
    assert_eq!(uploads(&env).values().map(Vec::len).sum::<usize>(), 4);
}

#[test]
fn the_stale_lock_of_a_killed_run_is_taken_over_with_a_warning() {
    let (env, _, data) = mocked_env(2);
    let names = providers(2);
    env.mock_rules("rcat *s0000000001-* hang 1\n");
    let pid = kill_9_when(&env, "the upload of shard 1", || {
        logged_rcat(&env, &shard(1))
    });
    let lock = std::fs::read_to_string(env.lock_file(DS)).unwrap();
    assert_eq!(
        lock.trim(),
        pid.to_string(),
        "the lock file names the killed run"
    );

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    let warning = err
        .lines()
        .find(|l| l.contains("taking it over"))
        .unwrap_or_else(|| panic!("no warning about the stale lock:\n{err}"));
    assert!(
        warning.contains("WARN") && warning.contains(&format!("PID {pid}")),
        "{warning}"
    );
    assert!(warning.contains(DS), "{warning}");
    let id = backup_id_on(&env, "p1");
    assert_complete(&env, &names, &id, &data);
    assert_eq!(std::fs::read_to_string(env.lock_file(DS)).unwrap(), "");
}

#[test]
fn dry_run_says_it_would_resume_the_unfinished_backup_and_touches_nothing() {
    let (env, _, _) = mocked_env(2);
    let names = providers(2);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    kill_9_when(&env, "every shard but 3 on both, and 3 on one", || {
        stuck_on(&env, &names, 3, 1)
    });
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names);

    let out = rerun(&env, &["backup", "--dry-run"]);
    let err = out.assert_exit(0).stdout_text();
    let said = format!(
        "would resume unfinished backup {} of \"{DS}\" (8 shards recorded)",
        u.backup_id
    );
    assert!(err.contains(&said), "{said:?} not in:\n{err}");
    let writes: Vec<_> = calls(&env)
        .into_iter()
        .filter(|(s, _, _)| s != "lsjson")
        .collect();
    assert_eq!(writes, vec![], "a dry run called rclone to write");
    assert!(trees(&env, &names) == before);
    assert_eq!(
        unfinished(&env).map(|(u, n)| (u.backup_id, n)),
        Some((u.backup_id, SHARDS))
    );
}
