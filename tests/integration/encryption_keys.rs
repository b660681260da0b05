//! Who needs which key: a NAS holding only the recipients backs up, checks, syncs and prunes
//! but cannot restore; a wrong identity is refused before anything is written; a
//! passphrase-protected identity is read with `$OFFSITE_PASSPHRASE_FILE`; `verify --decrypt`
//! needs the identity; `offsite keygen` writes a key the `age` CLI uses. Helpers:
//! `encryption.rs`.

use crate::encryption::*;
use crate::harness::*;
use offsite::layout::utc_stamp;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The backup folders of `DS` on `provider` that hold at least one object.
fn backups_with_objects(env: &Env, provider: &str) -> Vec<String> {
    env.remote(provider)
        .backups(DS)
        .iter()
        .filter(|d| !files_under(d).is_empty())
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A restore that must fail with exit 2 before writing anything; returns its stderr.
fn assert_refused(env: &Env, args: &[&str]) -> String {
    let (out, file) = env.restore_to_file(DS, args);
    let err = out.assert_exit(2).stderr_text();
    assert!(!file.exists(), "a refused restore wrote {}", file.display());
    let partials = offsite::receiver::leftover_partials(&file);
    assert!(partials.is_empty(), "left behind: {partials:?}");
    err
}

#[test]
fn recipients_only_backs_up_verifies_syncs_and_prunes_but_cannot_restore() {
    let data = pseudo_random(21, SOURCE_LEN);
    let (mut env, _key) = encrypted_env(2, &data, false);
    env.dataset_set(DS, "keep_chains", 1);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let first = env.remote("p1").only_backup(DS);
    for args in [&["status"][..], &["verify"], &["verify", "--deep"]] {
        env.offsite(args).assert_exit(0);
    }

    // sync copies the stored bytes as they are: no key, no re-encryption.
    let (name, _) = stored_shards(&first)[1].clone();
    let lost = env.remote("p2").only_backup(DS).join(&name);
    std::fs::remove_file(&lost).unwrap();
    env.offsite(&["status"]).assert_exit(3);
    env.offsite(&["sync"]).assert_exit(0);
    let good = std::fs::read(first.join(&name)).unwrap();
    assert_same_bytes(&name, &std::fs::read(&lost).unwrap(), &good);

    // A second full chain, then prune keeps only it.
    let first_id = first.file_name().unwrap().to_string_lossy().into_owned();
    wait_for(
        "the clock to pass the first backup's second",
        Duration::from_secs(30),
        || utc_stamp(SystemTime::now()).as_str() > &first_id[..16],
    );
    env.offsite(&["backup", "--once", "--full"]).assert_exit(0);
    env.offsite(&["prune"]).assert_exit(0);
    for p in ["p1", "p2"] {
        let left = backups_with_objects(&env, p);
        assert!(
            left.len() == 1 && left[0] != first_id,
            "{p} after prune: {left:?}"
        );
    }
    env.offsite(&["verify", "--deep"]).assert_exit(0);

    let err = assert_refused(&env, &[]);
    assert!(
        err.contains("--identity") || err.contains("identity_file"),
        "the error does not say how to give the identity:\n{err}"
    );
}

#[test]
fn a_wrong_identity_is_refused_naming_the_file_and_nothing_is_written() {
    let data = pseudo_random(22, SOURCE_LEN);
    let (env, key) = encrypted_env(2, &data, false);
    let wrong = AgeKey::new(env.path(), "wrong.key");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let err = assert_refused(&env, &["--identity", wrong.path_str()]);
    assert!(
        err.contains(wrong.path_str()),
        "the file is not named:\n{err}"
    );
    // The right one still works after the refusal.
    assert_restores(&env, &["--identity", key.path_str()], &data);
}

#[test]
fn a_passphrase_protected_identity_is_read_with_offsite_passphrase_file() {
    let data = pseudo_random(23, SOURCE_LEN);
    let mut env = Env::new(2);
    let key = AgeKey::protected(env.path(), "protected.key", "correct horse battery");
    let src = env.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .encryption(&[&key.recipient], Some(&key.path));
    env.offsite(&["backup", "--once"]).assert_exit(0);

    let pass = env.write_file("pass.txt", "correct horse battery\n");
    env.var("OFFSITE_PASSPHRASE_FILE", pass.to_str().unwrap());
    assert_restores(&env, &[], &data);

    env.write_file("pass.txt", "wrong horse\n");
    let err = assert_refused(&env, &[]);
    assert!(
        err.contains("passphrase") && err.contains(key.path_str()),
        "{err}"
    );
}

#[test]
fn verify_decrypt_checks_plaintext_hashes_and_needs_the_identity() {
    let data = pseudo_random(24, SOURCE_LEN);
    let (env, key) = encrypted_env(2, &data, false);
    env.offsite(&["backup", "--once"]).assert_exit(0);

    let out = env.offsite(&["verify", "--decrypt"]);
    let err = out.assert_exit(2).stderr_text();
    assert!(
        err.contains("--identity") || err.contains("identity_file"),
        "the error does not say how to give the identity:\n{err}"
    );
    env.offsite(&["verify", "--decrypt", "--identity", key.path_str()])
        .assert_exit(0);
    let json = env
        .offsite(&[
            "--json",
            "verify",
            "--decrypt",
            "--identity",
            key.path_str(),
        ])
        .assert_exit(0)
        .json();
    assert_eq!(json["backups"][0]["state"], "complete", "{json}");
}

#[test]
fn keygen_writes_a_0600_key_the_age_cli_uses_and_never_overwrites_one() {
    let env = Env::new(1);
    let file = env.path().join("new.key");
    let f = file.to_str().unwrap();
    let err = env
        .offsite(&["keygen", "--output", f])
        .assert_exit(0)
        .stderr_text();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let recipient = err
        .split_whitespace()
        .find(|w| w.starts_with("age1"))
        .unwrap_or_else(|| panic!("no age1... recipient printed:\n{err}"))
        .to_string();

    let before = std::fs::read(&file).unwrap();
    let again = env.offsite(&["keygen", "--output", f]);
    let err = again.assert_exit(2).stderr_text();
    assert!(err.contains(f), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before, "the key was changed");

    // The recipient and the identity work with the age CLI.
    let plain = pseudo_random(25, 100_000);
    let enc = age_cli(env.path(), &["-r", &recipient], &plain);
    assert_ne!(enc, plain);
    let dec = age_cli(env.path(), &["-d", "-i", f], &enc);
    assert_same_bytes("age -d -i", &dec, &plain);
}

/// `age ARGS` with `input` on stdin; its stdout (fails the test unless it exits 0).
fn age_cli(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    let in_file = dir.join("age-in");
    let out_file = dir.join("age-out");
    std::fs::write(&in_file, input).unwrap();
    let _ = std::fs::remove_file(&out_file);
    let mut all = args.to_vec();
    all.extend(["-o", out_file.to_str().unwrap(), in_file.to_str().unwrap()]);
    run("age", &all);
    std::fs::read(&out_file).unwrap()
}
