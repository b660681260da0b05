//! `offsite backup` when things go wrong: hanging uploads and providers, a source failing
//! mid-stream, a failed upload stopping the source, the per-dataset lock, and two provider
//! files for one storage. Helpers: see `backup.rs`.

use crate::backup::*;
use crate::harness::*;
use std::path::Path;
use std::time::Duration;

/// The per-attempt `timeout` of the hanging-upload tests. Only the object a mock rule names
/// hangs; every other transfer (1 MiB shards to a local directory, listings, manifests) must
/// finish within this, so it leaves a wide margin for a loaded machine, at the price of this
/// much wall time per hung attempt (not CPU).
const HANG_TIMEOUT: &str = "15s";

#[test]
fn hanging_upload_times_out_and_the_retry_completes() {
    let (mut env, data) = command_env(2, "d", 7);
    env.use_mock_rclone()
        .set("timeout", HANG_TIMEOUT)
        .set("retries", 2);
    env.mock_rules("rcat */remotes/p2/*/s0000000000-* hang 1\n");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_eq!(upload_attempts(&env, "p2", 0), 2, "{:#?}", env.mock_log());
    assert_holds(&env.remote("p1"), "d", &data);
    assert_holds(&env.remote("p2"), "d", &data);
    env.assert_no_leftover_processes();
}

#[test]
fn hanging_provider_is_dropped_after_its_retries_and_nothing_is_left_running() {
    let (mut env, data) = command_env(2, "d", 7);
    env.use_mock_rclone()
        .set("timeout", HANG_TIMEOUT)
        .set("retries", 2);
    env.mock_rules("rcat */remotes/p2/*/s0000000000-* hang inf\n");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(3).stderr_text();
    assert!(err.contains("provider p2 misses"), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert_eq!(upload_attempts(&env, "p2", 0), 2, "{:#?}", env.mock_log());
    assert_holds(&env.remote("p1"), "d", &data);
    env.assert_no_leftover_processes();
}

#[test]
fn source_failing_midstream_fails_without_a_manifest() {
    let mut env = Env::new(2);
    env.command_dataset("d", "head -c 3000000 /dev/urandom; echo boom >&2; exit 7");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    assert!(err.contains("boom"), "{err}");
    assert_eq!(env.manifests_anywhere(), Vec::<std::path::PathBuf>::new());
    env.assert_no_leftover_processes();
}

#[test]
fn failed_upload_stops_a_long_running_source_and_reports_the_provider_error() {
    let mut env = Env::new(2);
    let pidfile = env.path().join("source.pid");
    env.command_dataset(
        "d",
        &format!("echo $$ > {}; exec cat /dev/zero", pidfile.display()),
    );
    env.use_mock_rclone()
        .set("retries", 2)
        .set("min_providers", 2);
    env.mock_rules("* */remotes/p2* down inf\n");
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();

    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the source wrote its pid")
        .trim()
        .parse()
        .unwrap();
    assert!(
        !is_alive(pid),
        "the source (cat /dev/zero, pid {pid}) outlived offsite"
    );
    env.assert_no_leftover_processes();
    let error = err
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{err}"));
    assert!(error.contains("provider p2"), "{error}");
    assert!(error.contains("connection refused"), "{error}");
    assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
    assert!(
        !err.contains("failed after"),
        "the source's end was reported: {err}"
    );
    assert_eq!(env.manifests_anywhere(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn second_backup_of_a_locked_dataset_exits_4_naming_the_pid() {
    let mut env = Env::new(1);
    let gate = env.path().join("gate");
    run("mkfifo", &[gate.to_str().unwrap()]);
    env.command_dataset("d", &format!("cat {}", gate.display()));
    let first = env.spawn_offsite(&["backup", "--once"]);
    // The source starts after the lock is taken; it then blocks on the FIFO until we write.
    wait_for(
        "the first backup's source to start",
        Duration::from_secs(30),
        || {
            env.leftover_processes()
                .iter()
                .any(|(_, cmd)| cmd.starts_with("cat "))
        },
    );

    let second = env.offsite(&["backup", "--once"]);
    let err = second.assert_exit(4).stderr_text();
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");

    let data = pseudo_random(3, 5000);
    open_fifo_writer(&gate).write_all_and_close(&data);
    first.wait().assert_exit(0);
    let remote = env.remote("p1");
    assert_eq!(remote.backups("d").len(), 1);
    assert_holds(&remote, "d", &data);
}

/// The writing end of a FIFO whose reader is already open.
struct FifoWriter(std::fs::File);

impl FifoWriter {
    fn write_all_and_close(mut self, data: &[u8]) {
        std::io::Write::write_all(&mut self.0, data).unwrap();
    }
}

/// Opens `path` for writing without blocking: polls until a reader has it open (ENXIO before).
fn open_fifo_writer(path: &Path) -> FifoWriter {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = None;
    wait_for("a reader on the FIFO", Duration::from_secs(30), || {
        file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok();
        file.is_some()
    });
    FifoWriter(file.unwrap())
}

#[test]
fn two_provider_files_for_one_storage_count_as_one_copy() {
    let (mut env, data) = command_env(2, "d", 8);
    env.set("min_providers", 2);
    // p1 again, through a symlink: with p1 and p2 there are still 2 distinct storages.
    let link = env.path().join("p1-link");
    std::os::unix::fs::symlink(env.remote("p1").root(), &link).unwrap();
    env.provider("p1again", &link.display().to_string());
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        err.contains("p1.toml and p1again.toml point at one storage")
            && err.contains("count as one copy"),
        "{err}"
    );
    assert_holds(&env.remote("p1"), "d", &data);
    assert_holds(&env.remote("p2"), "d", &data);

    // Without p2, one storage cannot meet min_providers = 2: refused before any upload.
    env.provider_set("p2", "enabled", false);
    let before = std::fs::read_dir(env.remote("p1").dataset_dir("d"))
        .unwrap()
        .count();
    let out = env.offsite(&["backup", "--once", "--full"]);
    let err = out.assert_exit(2).stderr_text();
    assert!(
        err.contains("p1.toml and p1again.toml") && err.contains("min_providers = 2"),
        "{err}"
    );
    let after = std::fs::read_dir(env.remote("p1").dataset_dir("d"))
        .unwrap()
        .count();
    assert_eq!(before, after, "a backup was started");
    let probes: Vec<_> = std::fs::read_dir(env.remote("p1").root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".offsite-probe-"))
        .collect();
    assert!(probes.is_empty(), "{probes:?}");
}
