//! Signals, pipes, PID 1 and child processes, through the real binary: SIGHUP stops cleanly
//! like SIGTERM; a second SIGINT ends the run at once; Ctrl-C reaches hung provider listings
//! and hung local tools; a closed stdout is no error; offsite as PID 1 starts its children;
//! `kill -9` leaves no process of a `command` source behind, grandchildren included, nor a
//! provider's rclone daemon; a daemon that dies mid-run is started again.
//!
//! Every step waits for an observable event (a process appearing or going away, a line in the
//! mock's log), never for the clock.

use crate::harness::*;
use offsite::layout::shard_name;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const DS: &str = "media";
/// How long a test waits for an event of a running offsite.
const WAIT: Duration = Duration::from_secs(60);
/// What tests/mock_rclone's `hang` action runs in place of rclone.
const HUNG_RCLONE: &str = "sleep 100000";

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the offsite process this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// Whether a process of this Env's runs has `needle` in its command line.
fn running(env: &Env, needle: &str) -> bool {
    env.leftover_processes()
        .iter()
        .any(|(_, cmd)| cmd.contains(needle))
}

fn wait_until_running(env: &Env, run: &Running, needle: &str) {
    let ok = poll(WAIT, || running(env, needle) || !is_alive(run.pid()));
    assert!(
        ok && is_alive(run.pid()),
        "offsite ended or {needle:?} never ran"
    );
}

/// Waits (bounded, generously) until no process of this Env's runs is left.
fn assert_nothing_left(env: &Env) {
    let ok = poll(WAIT, || env.leftover_processes().is_empty());
    assert!(ok, "processes left behind: {:?}", env.leftover_processes());
}

/// `n` providers and a command dataset running `command`, where `{src}` is a file of
/// [`SOURCE_LEN`] pseudo-random bytes.
fn command_source(n: usize, seed: u64, command: &str) -> Env {
    let mut env = Env::new(n);
    let src = env.path().join("src.bin");
    write_pseudo_random(&src, seed, SOURCE_LEN);
    env.command_dataset(DS, &command.replace("{src}", &src.display().to_string()));
    env
}

/// A command env behind the mock whose upload of shard 1 hangs.
fn hanging_upload() -> Env {
    let (mut env, _) = command_env(2, DS, 7);
    env.use_mock_rclone();
    env.mock_rules(&format!("rcat *{}* hang inf\n", shard_name(1, MIB as u64)));
    env
}

#[test]
fn sighup_stops_cleanly_like_sigterm() {
    let env = hanging_upload();
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_until_running(&env, &run, HUNG_RCLONE);
    signal(run.pid(), libc::SIGHUP);
    let out = run.wait();
    let err = out.assert_exit(130).stderr_text();
    assert!(err.contains("interrupted"), "{err}");
    assert_nothing_left(&env);
    let lock = std::fs::read_to_string(env.lock_file(DS)).unwrap();
    assert_eq!(lock, "", "the lock file still names a holder");
    let state = offsite::state::DatasetState::new(&env.state_dir(), HOST, DS);
    let kept = state.load().expect("the state dir is readable");
    assert!(kept.is_some(), "the unfinished backup was not kept");
}

#[test]
fn a_second_sigint_ends_the_run_at_once() {
    // The source ignores SIGTERM, so the clean stop waits out its grace period (an hour
    // here): the second signal must not wait for that.
    let mut env = command_source(2, 8, "trap '' TERM; cat {src}; sleep 1000 | cat");
    // The clean stop waits up to an hour for the source, so the second signal always comes
    // while it is still under way, however slow the machine.
    env.var("OFFSITE_SOURCE_GRACE_SECS", "3600");
    env.use_mock_rclone();
    env.mock_rules(&format!("rcat *{}* hang inf\n", shard_name(1, MIB as u64)));
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_until_running(&env, &run, HUNG_RCLONE);
    signal(run.pid(), libc::SIGINT);
    // The clean stop has begun once it ended the hung upload.
    wait_for("the hung upload to be stopped", WAIT, || {
        !running(&env, HUNG_RCLONE)
    });
    signal(run.pid(), libc::SIGINT);
    let out = run.wait();
    let err = out.assert_exit(130).stderr_text();
    assert!(err.contains("SIGINT again: stopping at once"), "{err}");
    assert_nothing_left(&env);
}

#[test]
fn ctrl_c_reaches_hung_provider_listings() {
    let (mut env, _) = backed_up(1, DS, 9);
    env.use_mock_rclone();
    env.mock_rules("* * hang inf\n");
    for args in [
        &["list"][..],
        &["status"],
        &["verify"],
        &["sync"],
        &["providers"],
    ] {
        let run = env.spawn_offsite(args);
        wait_until_running(&env, &run, HUNG_RCLONE);
        signal(run.pid(), libc::SIGINT);
        let out = run.wait();
        let err = out.assert_exit(130).stderr_text();
        assert!(err.contains("interrupted"), "{args:?}: {err}");
        assert_nothing_left(&env);
    }
}

#[test]
fn ctrl_c_reaches_a_hung_zfs_call() {
    let mut env = Env::new(1);
    let bin = env.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let zfs = bin.join("zfs");
    std::fs::write(&zfs, "#!/bin/sh\nexec sleep 100001\n").unwrap();
    std::fs::set_permissions(&zfs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.zfs_dataset(DS, "tank/hung");
    env.var("PATH", &format!("{}:{}", bin.display(), search_path()));
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_until_running(&env, &run, "sleep 100001");
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait();
    out.assert_exit(130);
    assert_nothing_left(&env);
}

/// A pipe whose reading end is already closed: every write to the other end fails (EPIPE).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors, each owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: as above.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let (env, _) = backed_up(1, DS, 10);
    for args in [
        &["list"][..],
        &["--json", "list"],
        &["status"],
        &["providers"],
    ] {
        let mut c = env.command(args);
        c.stdout(closed_pipe()).stderr(Stdio::piped());
        let out = c.output().expect("run offsite");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn offsite_as_pid_1_starts_its_children() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` is not available here");
        return;
    }
    let (env, _) = backed_up(1, DS, 11);
    for args in [&["providers"][..], &["list"]] {
        let inner = env.command(args);
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .current_dir(env.path())
            .env_clear();
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.stdin(Stdio::null());
        let out = c.output().expect("run unshare");
        out.assert_exit(0);
        assert!(out.stdout_text().contains("p1"), "{}", out.stdout_text());
    }
}

#[test]
fn kill_9_leaves_no_process_of_a_command_source() {
    // The shell's children are offsite's grandchildren: PDEATHSIG does not reach them.
    let env = command_source(1, 12, "cat {src}; sleep 1002 | cat; sleep 1003");
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_until_running(&env, &run, "sleep 1002");
    // The provider's rclone daemon answered the listing that opens every backup.
    assert!(running(&env, " rcd "), "{:?}", env.leftover_processes());
    signal(run.pid(), libc::SIGKILL);
    let out = run.wait();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    assert_nothing_left(&env);
}

#[test]
fn a_provider_daemon_killed_mid_run_is_started_again_and_the_backup_completes() {
    let flag = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let go = flag.with_extension("go");
    let env = command_source(
        2,
        13,
        &format!(
            "until [ -e {} ]; do sleep 0.05; done; cat {{src}}",
            go.display()
        ),
    );
    let run = env.spawn_offsite(&["-v", "backup", "--once"]);
    // The source starts after the listing that opens every backup: the daemons answered it.
    wait_until_running(&env, &run, "until [ -e");
    assert!(running(&env, " rcd "), "{:?}", env.leftover_processes());
    for (pid, _) in env
        .leftover_processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" rcd "))
    {
        signal(pid, libc::SIGKILL);
    }
    wait_for("the daemons to end", WAIT, || !running(&env, " rcd "));
    std::fs::write(&go, b"").unwrap();
    let out = run.wait();
    let _ = std::fs::remove_file(&go);
    out.assert_exit(0);
    let err = out.stderr_text();
    let starts = err
        .lines()
        .filter(|l| l.contains(" rcd: listening after "))
        .count();
    assert!(starts >= 4, "each provider's daemon started again:\n{err}");
    let restored = env.path().join("restored.bin");
    env.offsite(&["restore", DS, "--output", restored.to_str().unwrap()])
        .assert_exit(0);
    let src = std::fs::read(env.path().join("src.bin")).unwrap();
    assert_same_bytes("restore", &std::fs::read(&restored).unwrap(), &src);
    assert_nothing_left(&env);
}
