//! The first hour: `--help` says the exit codes, `offsite init` writes a config that works and
//! never overwrites one, completions and the man page come from the binary, and
//! `scripts/package.sh` builds a Debian package holding all of it.

use crate::harness::*;
use std::path::Path;
use std::process::Command;

fn offsite(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_offsite"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_ends_with_exit_codes_and_examples() {
    let out = offsite(&["--help"]);
    out.assert_exit(0);
    let help = out.stdout_text();
    let tail = &help[help.find("Exit codes:").expect("exit codes in --help")..];
    for needle in ["130", "Examples:", "offsite backup --once", "restore"] {
        assert!(tail.contains(needle), "{needle} in:\n{help}");
    }
}

#[test]
fn completions_and_man_page_are_generated_without_a_config() {
    let bash = offsite(&["--config", "/nonexistent.toml", "completions", "bash"]);
    bash.assert_exit(0);
    let text = bash.stdout_text();
    assert!(
        text.contains("complete -F") && text.contains("restore"),
        "{text}"
    );
    for shell in ["zsh", "fish"] {
        let out = offsite(&["completions", shell]);
        out.assert_exit(0);
        assert!(out.stdout_text().contains("repair-provider"), "{shell}");
    }
    let man = offsite(&["man"]);
    man.assert_exit(0);
    let page = man.stdout_text();
    assert!(
        page.starts_with(".ie") || page.contains(".TH offsite"),
        "{page}"
    );
    assert!(
        page.contains("OFFSITE RESTORE") && page.contains("piece\\-size"),
        "{page}"
    );
}

#[test]
fn init_writes_a_config_that_checks_and_never_overwrites_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/offsite.toml");
    let c = config.to_str().unwrap();
    let out = offsite(&["--config", c, "init"]);
    out.assert_exit(0);
    assert!(out.stdout_text().contains("offsite check"), "next steps");
    let provider = dir.path().join("etc/providers.d/usb.toml");

    // Pointed at a real folder, the example passes `offsite check` as written.
    let remote = dir.path().join("usb");
    let text = std::fs::read_to_string(&provider).unwrap();
    let text = text.replace(":local:/mnt/usb/offsite", remote.to_str().unwrap());
    std::fs::write(&provider, &text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_offsite"))
        .args(["--config", c, "check"])
        .env("RCLONE_CONFIG", "/nonexistent")
        .env("PATH", search_path())
        .output()
        .unwrap();
    check.assert_exit(0);

    let before = (
        std::fs::read(&config).unwrap(),
        std::fs::read(&provider).unwrap(),
    );
    let again = offsite(&["--config", c, "init"]);
    again.assert_exit(2);
    assert!(
        again.stderr_text().contains("never overwrites") && again.stderr_text().contains(c),
        "{}",
        again.stderr_text()
    );
    let after = (
        std::fs::read(&config).unwrap(),
        std::fs::read(&provider).unwrap(),
    );
    assert_eq!(before, after, "init left both files as they were");
}

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the package with scripts/package.sh (cargo-deb, installed by scripts/test.sh) and
/// reads it back with dpkg-deb. Skipped, saying so, where dpkg-deb does not exist.
#[test]
fn the_debian_package_holds_binary_completions_man_page_units_and_docs() {
    if !has("dpkg-deb") {
        eprintln!("SKIPPED: dpkg-deb is not installed");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(repo.join("scripts/package.sh"))
        .output()
        .unwrap();
    out.assert_exit(0);
    let deb = repo.join(out.stdout_text().trim());
    let list = run("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    for path in [
        "./usr/bin/offsite",
        "./usr/share/bash-completion/completions/offsite",
        "./usr/share/zsh/vendor-completions/_offsite",
        "./usr/share/fish/vendor_completions.d/offsite.fish",
        "./usr/share/man/man1/offsite.1.gz",
        "./lib/systemd/system/offsite.service",
        "./lib/systemd/system/offsite.timer",
        "./lib/systemd/system/offsite-notify@.service",
        "./usr/share/doc/offsite/examples/offsite.toml",
        "./usr/share/doc/offsite/examples/providers.d/b2.toml",
        "./usr/share/doc/offsite/README.md",
        "./usr/share/doc/offsite/docs/commands.md",
        "./usr/share/doc/offsite/docs/json.md",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(path)),
            "{path} in the package:\n{list}"
        );
    }
    let info = run("dpkg-deb", &["-f", deb.to_str().unwrap(), "Depends"]);
    assert!(info.contains("rclone"), "Depends: {info}");

    // The packaged binary carries no debug info.
    let dir = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    let bin = dir.path().join("usr/bin/offsite");
    let sections = run("readelf", &["-S", "--wide", bin.to_str().unwrap()]);
    assert!(!sections.contains(".debug_info"), "{sections}");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    version.assert_exit(0);
}
