//! The shipped systemd units (`scripts/offsite.service`, `offsite.timer`,
//! `offsite-notify@.service`): `systemd-analyze verify` is clean, with the service's
//! `ExecStart=` pointed at the built binary (verify wants it to exist). Skipped, with a note,
//! where systemd-analyze is not installed.

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = [
    "offsite.service",
    "offsite.timer",
    "offsite-notify@.service",
];

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: systemd-analyze is not installed; the units were not verified");
        return;
    }
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = std::fs::read_to_string(scripts.join(unit)).unwrap();
        let text = text.replace("/usr/local/bin/offsite", env!("CARGO_BIN_EXE_offsite"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let service = std::fs::read_to_string(scripts.join("offsite.service")).unwrap();
    assert!(
        !service.contains("SuccessExitStatus"),
        "exit 3 must fail the unit"
    );
    assert!(service.contains("OnFailure=offsite-notify@%n.service"));
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(UNITS.map(|u| dir.path().join(u)))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about our own files count (the host's other units are not ours).
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("offsite")).collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}
