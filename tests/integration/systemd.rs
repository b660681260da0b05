//! The shipped systemd units (`scripts/offsite.service`, `offsite.timer`,
//! `offsite-notify@.service`): `systemd-analyze verify` clean and a security exposure of 4.0
//! or lower (when systemd-analyze exists); the service's backup-prune-sync-status chain run with a
//! stand-in offsite (exit 3 is a failure, sync still runs after it, a stop ends the chain);
//! and `$STATE_DIRECTORY` as the state directory.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = [
    "offsite.service",
    "offsite.timer",
    "offsite-notify@.service",
];

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The units, copied into a fresh directory (systemd-analyze looks for OnFailure='s unit next
/// to the one it verifies).
fn units_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for u in UNITS {
        std::fs::copy(scripts().join(u), dir.path().join(u)).unwrap();
    }
    dir
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = which::which("systemd-analyze").ok();
    if found.is_none() {
        eprintln!("systemd-analyze is not installed: the unit checks are skipped");
    }
    found
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = units_dir();
    // The template is verified as the instance OnFailure= starts.
    let args = [
        "verify",
        UNITS[0],
        UNITS[1],
        "offsite-notify@offsite.service.service",
    ];
    let out = Command::new(analyze)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn the_service_is_hardened_to_an_exposure_of_four_or_lower() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = units_dir();
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "offsite.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for offsite.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 4.0, "exposure {level}:\n{text}");
}

/// The service's `ExecStart=` shell command, as systemd would run it (`$$` is `$`), with
/// `/usr/bin/offsite` replaced by `fake`.
fn exec_start(fake: &Path) -> String {
    let unit = std::fs::read_to_string(scripts().join("offsite.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/bin/sh -c '"))
        .expect("an ExecStart=/bin/sh -c '...' line");
    let script = line
        .strip_suffix('\'')
        .expect("the command ends with a quote");
    script
        .replace("$$", "$")
        .replace("/usr/bin/offsite", &fake.display().to_string())
}

/// Runs the chain with a stand-in offsite that exits with `codes[step]` and logs each step;
/// returns the chain's exit code and the steps run.
fn run_chain(codes: &[(&str, i32)]) -> (i32, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("steps");
    let mut fake = format!(
        "#!/bin/sh\nfor a; do step=$a; done\necho \"$step\" >> {}\n",
        log.display()
    );
    for (step, code) in codes {
        fake.push_str(&format!("[ \"$step\" = {step} ] && exit {code}\n"));
    }
    fake.push_str("exit 0\n");
    let fake_path = dir.path().join("offsite");
    std::fs::write(&fake_path, fake).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("/bin/sh")
        .args(["-c", &exec_start(&fake_path)])
        .status()
        .unwrap();
    let steps = std::fs::read_to_string(&log).unwrap_or_default();
    (
        status.code().unwrap_or(-1),
        steps.lines().map(str::to_string).collect(),
    )
}

#[test]
fn the_service_runs_backup_prune_sync_status_and_fails_on_exit_three() {
    assert_eq!(
        run_chain(&[]),
        (
            0,
            ["backup", "prune", "sync", "status"]
                .map(String::from)
                .to_vec()
        )
    );
    // Gaps: sync still runs (it fills them), and the unit fails so OnFailure= fires.
    let (code, steps) = run_chain(&[("backup", 3)]);
    assert_eq!((code, steps.len()), (3, 4));
    // The first failure decides the exit, whatever follows.
    assert_eq!(run_chain(&[("prune", 2), ("sync", 1)]).0, 2);
    // A stop (SIGTERM: exit 130) ends the chain at once.
    assert_eq!(run_chain(&[("backup", 130)]), (130, vec!["backup".into()]));
}

#[test]
fn state_directory_from_systemd_is_the_default_state_dir() {
    let (mut env, _) = command_env(1, "media", 3);
    env.unset("state_dir");
    let state = env.path().join("var-lib-offsite");
    let out = env.offsite_env(
        &["backup", "--once"],
        &[("STATE_DIRECTORY", state.to_str().unwrap())],
    );
    out.assert_exit(0);
    assert!(
        state.join("locks/testhost/media.lock").exists(),
        "{:?}",
        files_under(&state)
    );
}
