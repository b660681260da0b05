//! Invalid configurations: exit 2, a message naming the file, the line and what to change, and
//! nothing touched (no state directory, no remote folder, not one rclone call). Also: every
//! example provider file shipped in the repository's `providers.d/` is a valid provider.

use crate::harness::*;
use std::path::{Path, PathBuf};

/// An Env with two providers, a command dataset "d" and the mock rclone (to see that no rclone
/// runs at all).
fn valid_env() -> Env {
    let mut env = Env::new(2);
    env.command_dataset("d", "echo hello").use_mock_rclone();
    env
}

/// Runs `backup --once` and checks the rejection: exit 2; stderr names `file` and `line` (as
/// `FILE:LINE:` or, from the TOML parser, `FILE: TOML parse error at line LINE`) and holds
/// every hint; nothing was created and rclone never ran.
fn assert_rejected(env: &Env, file: &Path, line: usize, hints: &[&str]) {
    let out = env.offsite(&["backup", "--once"]);
    let err = out.assert_exit(2).stderr_text();
    let f = file.display();
    let located = err.contains(&format!("{f}:{line}:"))
        || err.contains(&format!("{f}: TOML parse error at line {line},"));
    assert!(located, "expected {f} line {line} in:\n{err}");
    for h in hints {
        assert!(err.contains(h), "expected {h:?} in:\n{err}");
    }
    assert!(!env.state_dir().exists(), "a state dir was created");
    assert!(!env.path().join("remotes").exists(), "a remote was touched");
    assert_eq!(env.mock_log(), Vec::<String>::new(), "rclone ran");
}

#[test]
fn the_valid_env_is_accepted() {
    // The baseline every rejection below differs from by one key.
    let env = valid_env();
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_eq!(env.remote("p1").stream("d"), b"hello\n");
}

#[test]
fn unknown_top_level_key() {
    let mut env = valid_env();
    env.set("colour", "blue");
    let line = line_of(&env.config_path(), "colour");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["unknown field `colour`", "shard_size"],
    );
}

#[test]
fn unknown_key_in_a_dataset() {
    let mut env = valid_env();
    env.dataset_set("d", "compresion", "zstd");
    let line = line_of(&env.config_path(), "compresion");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["unknown field `compresion`"],
    );
}

#[test]
fn unknown_key_in_a_provider_file() {
    let mut env = valid_env();
    env.provider_set("p2", "bandwidth", "10M");
    let file = env.providers_dir().join("p2.toml");
    let line = line_of(&file, "bandwidth");
    assert_rejected(&env, &file, line, &["unknown field `bandwidth`", "bwlimit"]);
}

#[test]
fn shard_size_zero() {
    let mut env = valid_env();
    env.set("shard_size", 0);
    let line = line_of(&env.config_path(), "shard_size");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["shard_size", "use 1MiB to 4GiB"],
    );
}

#[test]
fn shard_size_too_large() {
    let mut env = valid_env();
    env.set("shard_size", "100TiB");
    let line = line_of(&env.config_path(), "shard_size");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["shard_size", "use 1MiB to 4GiB"],
    );
}

#[test]
fn dataset_with_both_zfs_and_command() {
    let mut env = valid_env();
    env.dataset_set("d", "zfs", "tank/d");
    // The whole table is at fault: the message points at its `[[dataset]]` header.
    let line = line_of(&env.config_path(), "[[dataset]]");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["\"d\"", "keep exactly one"],
    );
}

#[test]
fn unknown_provider_in_a_dataset() {
    let mut env = valid_env();
    env.dataset_set("d", "providers", vec!["p1", "nope"]);
    let line = line_of(&env.config_path(), "providers = ");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["unknown provider \"nope\"", "p1, p2"],
    );
}

#[test]
fn missing_rclone_binary() {
    let mut env = valid_env();
    env.set("rclone", "/nonexistent/rclone");
    let line = line_of(&env.config_path(), "rclone = ");
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["/nonexistent/rclone does not exist", "install rclone"],
    );
}

#[test]
fn provider_file_that_does_not_parse() {
    let env = valid_env();
    let file = env.write_file(
        "providers.d/p2.toml",
        "remote = \"/srv/x\"\npriority = = 3\n",
    );
    assert_rejected(&env, &file, 2, &["p2.toml"]);
}

#[test]
fn every_example_provider_file_in_the_repository_parses() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers.d");
    let mut expected: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert!(
        !expected.is_empty(),
        "no example providers in {}",
        repo.display()
    );

    let mut env = Env::new(0);
    env.set("providers_dir", repo.display().to_string());
    let cfg =
        offsite::config::Config::load(&env.config_path(), None).unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
    names.sort();
    assert_eq!(names, expected);
    for p in &cfg.providers {
        assert!(p.remote.contains(':'), "{}: remote {:?}", p.name, p.remote);
    }
    let unused: PathBuf = env.state_dir();
    assert!(
        !unused.exists(),
        "loading a config must not create the state dir"
    );
}

#[test]
fn dataset_name_too_long_once_encoded() {
    // 100 characters, but each '/' is stored as %2F: a 300-byte folder name on every provider.
    let mut env = valid_env();
    let long = format!("d{}", "/".repeat(99));
    env.command_dataset(&long, "echo long");
    let line = line_of(&env.config_path(), &format!("name = \"{long}\""));
    assert_rejected(
        &env,
        &env.config_path(),
        line,
        &["is too long", "298 bytes", "choose a shorter dataset name"],
    );
}

#[test]
fn a_max_object_size_that_does_not_parse_is_refused_with_its_line() {
    let mut env = valid_env();
    env.provider_set("p2", "max_object_size", "lots");
    let file = env.providers_dir().join("p2.toml");
    let line = line_of(&file, "max_object_size");
    assert_rejected(&env, &file, line, &["max_object_size", "64MiB"]);
}

/// A provider whose `max_object_size` is below the dataset's largest stored object refuses
/// the backup before anything is read or uploaded, naming the provider and what to change;
/// `--dry-run` says the same. Erasure pieces (a shard / k) are what must fit, so 2+1 fits
/// where mirroring does not.
#[test]
fn a_shard_larger_than_a_provider_takes_is_refused_before_the_backup() {
    let mut env = valid_env();
    // 1 MiB shards, stored plain: the largest object is 1 MiB.
    env.set("compression", "none");
    env.provider_set("p2", "max_object_size", "768KiB");
    for args in [
        &["backup", "--once"][..],
        &["backup", "--once", "--dry-run"],
    ] {
        let err = env.offsite(args).assert_exit(2).stderr_text();
        let file = env.providers_dir().join("p2.toml");
        for hint in [
            &file.display().to_string()[..],
            "its max_object_size takes objects up to 768.0 KiB",
            "dataset \"d\" stores objects of up to 1.0 MiB",
            "lower shard_size",
        ] {
            assert!(err.contains(hint), "expected {hint:?} in:\n{err}");
        }
        assert!(!env.path().join("remotes").exists(), "a remote was touched");
    }

    let mut env = Env::new(3);
    env.command_dataset("d", "echo hello");
    env.set("compression", "none").set("erasure", "2+1");
    env.provider_set("p2", "max_object_size", "768KiB");
    env.offsite(&["backup", "--once"]).assert_exit(0);
}

/// A `spool_dir` that does not exist is refused before a snapshot is taken or a shard read,
/// naming the folder and what to do.
#[test]
fn a_spool_dir_that_does_not_exist_is_refused_before_the_backup() {
    let mut env = valid_env();
    let missing = env.path().join("no-such-spool");
    env.set("spool_dir", missing.to_str().unwrap())
        .set("spool_size", "8MiB");
    let err = env
        .offsite(&["backup", "--once"])
        .assert_exit(2)
        .stderr_text();
    for hint in [
        &format!(
            "spool_dir {}: cannot create a file there",
            missing.display()
        )[..],
        "create that folder",
        "remove spool_dir",
    ] {
        assert!(err.contains(hint), "expected {hint:?} in:\n{err}");
    }
    assert!(!env.path().join("remotes").exists(), "a remote was touched");
}
