//! Secrets are never printed: a provider whose remote is a connection string with planted
//! secrets, and whose flags hold a password, fails on every command; no output, log line, JSON
//! document, state file or manifest may contain the planted strings.

use crate::harness::*;
use std::path::Path;

const DS: &str = "media";

/// Every planted secret; each appears once in the providers' files and nowhere else.
const PLANTED: [&str; 7] = [
    "SECRETPLANT1",
    "SECRETPLANT2",
    "SECRETPLANT3",
    "SECRETPLANT4",
    "SECRETPLANT5",
    "SECRETPLANT6",
    "SECRETPLANT7",
];

/// Every file under `dir` whose bytes contain a planted secret.
fn files_with_secrets(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    remote_walk(dir, &mut |p| {
        let bytes = std::fs::read(p).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        if PLANTED.iter().any(|s| text.contains(s)) {
            found.push(p.display().to_string());
        }
    });
    found
}

fn remote_walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            remote_walk(&p, f);
        } else {
            f(&p);
        }
    }
}

#[test]
fn no_command_prints_a_secret_of_a_failing_provider() {
    let (mut env, _) = backed_up(1, DS, 7);
    env.provider(
        "sftpbox",
        ":sftp,host=127.0.0.1,port=1,user=SECRETPLANT1,pass=SECRETPLANT2:offsite",
    )
    .provider_set("sftpbox", "priority", 2)
    .provider_set(
        "sftpbox",
        "flags",
        toml::Value::Array(vec!["--sftp-key-file-pass".into(), "SECRETPLANT3".into()]),
    )
    .provider(
        "davbox",
        ":webdav,url='http://bob:SECRETPLANT4@127.0.0.1:1/x',bearer_token='SECRETPLANT5':",
    )
    .provider_set("davbox", "priority", 3)
    .provider_set(
        "davbox",
        "flags",
        toml::Value::Array(vec![
            "--webdav-pass=SECRETPLANT6".into(),
            "--s3-secret-access-key".into(),
            "SECRETPLANT7".into(),
        ]),
    );
    let out = env.path().join("restored.bin");
    let out = out.to_str().unwrap();
    let commands: [&[&str]; 10] = [
        &["backup", "--once"],
        &["list"],
        &["status"],
        &["verify"],
        &["verify", "--deep"],
        &["sync"],
        &["restore", DS, "--output", out, "--force"],
        &["providers"],
        &["prune", "--dry-run"],
        &["prune"],
    ];
    let mut runs = 0;
    for cmd in commands {
        for extra in [&[][..], &["--json"], &["-v"], &["-vv"]] {
            let args: Vec<&str> = extra.iter().chain(cmd.iter()).copied().collect();
            let run = env.offsite(&args);
            runs += 1;
            assert_ne!(
                run.code(),
                101,
                "offsite {args:?} panicked: {}",
                run.stderr_text()
            );
            for text in [run.stdout_text(), run.stderr_text()] {
                for s in PLANTED {
                    assert!(!text.contains(s), "offsite {args:?} printed {s}:\n{text}");
                }
            }
        }
    }
    // The redaction did not hide everything: the failing providers are named, and DOWN.
    let table = env.offsite(&["providers"]).stdout_text();
    assert!(
        table.contains("sftpbox") && table.contains("DOWN"),
        "{table}"
    );
    assert!(
        table.contains(":sftp,host=127.0.0.1,port=1,user=***,pass=***:offsite"),
        "{table}"
    );
    assert_eq!(runs, 40);
    assert_eq!(files_with_secrets(&env.state_dir()), Vec::<String>::new());
    assert_eq!(
        files_with_secrets(&env.path().join("remotes")),
        Vec::<String>::new()
    );
}
