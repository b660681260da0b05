//! Debugging a run: `-v` shows every rclone command line (secrets masked) with its exit and
//! duration, and every call to a provider's rclone daemon with its outcome and duration; rclone's config-file notice never reaches the user, the final error is printed
//! whatever the log filter, journald gets priorities, `-q` leaves only what `--json` asked
//! for, `hosts` says whose backups the providers hold, and `list` and `status` use one word
//! for one state.

use crate::harness::*;

const DS: &str = "media";

/// The `-v` line of p2's rclone that holds `what`, with p2's `--webdav-pass` flag masked;
/// neither the secret nor rclone's config-file notice is anywhere in `err`.
fn redacted_line<'a>(err: &'a str, what: &str) -> &'a str {
    let line = err
        .lines()
        .find(|l| l.contains("provider p2: rclone") && l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} line for p2:\n{err}"));
    assert!(
        line.contains("--webdav-pass") && line.contains("***"),
        "{line}"
    );
    assert!(!err.contains("PLANTEDSECRET9"), "{err}");
    assert!(!err.contains("NOTICE: Config file"), "{err}");
    line
}

#[test]
fn verbose_shows_each_rclone_command_line_redacted_with_exit_and_duration() {
    let (mut env, _) = command_env(2, DS, 71);
    env.provider_set(
        "p2",
        "flags",
        // A `--local-*` flag: p2's uploads go through rclone, not offsite's direct writes.
        toml::Value::Array(vec![
            "--webdav-pass=PLANTEDSECRET9".into(),
            "--local-no-preallocate".into(),
        ]),
    );
    env.var("RCLONE_CONFIG", "/nonexistent/rclone.conf");
    // One rclone per operation: each command line, with its exit.
    let out = env.offsite_env(
        &["-v", "backup", "--once"],
        &[("OFFSITE_RCLONE_DAEMON", "0")],
    );
    out.assert_exit(0);
    let err = out.stderr_text();
    let line = redacted_line(&err, "rcat --size");
    assert!(line.contains(": exit 0 after "), "{line}");

    // The daemon (the default): its command line once, then each call.
    let out = env.offsite(&["-v", "backup", "--once"]);
    out.assert_exit(0);
    let err = out.stderr_text();
    redacted_line(&err, " rcd: listening after ");
    assert!(
        err.lines().any(
            |l| l.contains("provider p2: rclone rc operations/uploadfile ")
                && l.contains(": ok after ")
        ),
        "{err}"
    );

    // -vv adds rclone's own -v output, still without the notice.
    let out = env.offsite(&["-vv", "status"]);
    out.assert_exit(0);
    let err = out.stderr_text();
    assert!(err.contains("rclone -v") || err.contains(" -v "), "{err}");
    assert!(!err.contains("NOTICE: Config file"), "{err}");
}

#[test]
fn the_final_error_is_printed_whatever_the_log_filter_and_quiet_keeps_only_json() {
    let (env, _) = backed_up(2, DS, 72);
    for (args, vars) in [
        (
            &["restore", "nosuch", "--output", "x"][..],
            &[("RUST_LOG", "off")][..],
        ),
        (&["-q", "restore", "nosuch", "--output", "x"], &[]),
    ] {
        let out = env.offsite_env(args, vars);
        out.assert_exit(2);
        let err = out.stderr_text();
        assert_eq!(err.matches("nosuch").count(), 1, "printed once: {err}");
    }

    let quiet = env.offsite(&["-q", "status"]);
    quiet.assert_exit(0);
    assert_eq!(quiet.stdout_text(), "", "no table under -q");
    assert_eq!(quiet.stderr_text(), "", "nothing on stderr either");
    let json = env.offsite(&["-q", "--json", "status"]);
    json.assert_exit(0);
    assert_eq!(json.json()["version"], 1);
}

#[test]
fn under_journald_log_lines_carry_syslog_priorities() {
    use std::os::unix::fs::MetadataExt;
    let (env, _) = command_env(2, DS, 73);
    let log = env.path().join("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let status = env
        .command(&["backup", "--once"])
        .env("JOURNAL_STREAM", &stream)
        .stderr(file.try_clone().unwrap())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let file = std::fs::File::create(env.path().join("journal2.log")).unwrap();
    let meta = file.metadata().unwrap();
    let status = env
        .command(&["restore", "nosuch", "--output", "x"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(file)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let info = std::fs::read_to_string(&log).unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("<6>") && l.contains("backup")),
        "{info}"
    );
    assert!(
        !info.contains("Z  INFO"),
        "no time stamps: journald adds them\n{info}"
    );
    let err = std::fs::read_to_string(env.path().join("journal2.log")).unwrap();
    assert!(
        err.lines()
            .any(|l| l.starts_with("<3>") && l.contains("nosuch")),
        "{err}"
    );
}

#[test]
fn hosts_and_list_all_hosts_show_whose_backups_each_provider_holds() {
    let (env, _) = backed_up(2, DS, 74);
    // A second machine's backups, on p2 only.
    let theirs = env.remote("p2").root().join("laptop");
    std::fs::create_dir_all(&theirs).unwrap();
    let mine = env.remote("p2").root().join(HOST).join(DS);
    run(
        "cp",
        &["-r", mine.to_str().unwrap(), theirs.to_str().unwrap()],
    );

    for args in [&["hosts"][..], &["list", "--all-hosts"]] {
        let out = env.offsite(args);
        out.assert_exit(0);
        let text = out.stdout_text();
        let laptop = text
            .lines()
            .find(|l| l.starts_with("laptop"))
            .expect("laptop");
        assert!(
            laptop.ends_with("p2") && !laptop.contains("(this host)"),
            "{laptop}"
        );
        let me = text.lines().find(|l| l.starts_with(HOST)).expect(HOST);
        assert!(me.ends_with("p1,p2") && me.contains("(this host)"), "{me}");
        assert!(text.contains("offsite --host"), "{text}");
    }
    let json = env.offsite(&["--json", "hosts"]).assert_exit(0).json();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{json}");
    assert_eq!(json["this_host"], HOST);
    assert_eq!(hosts[0]["host"], "laptop");
    assert_eq!(hosts[0]["datasets"][0], DS);
    assert_eq!(hosts[0]["backups"], 1);
}

#[test]
fn list_and_status_agree_on_a_backup_a_provider_misses_a_shard_of() {
    let (env, _) = backed_up(2, DS, 75);
    let (name, _) = env.remote("p2").shards(DS).remove(0);
    std::fs::remove_file(env.remote("p2").only_backup(DS).join(name)).unwrap();
    let list = env.offsite(&["--json", "list"]).assert_exit(0).json();
    let status = env.offsite(&["--json", "status"]);
    let status = status.assert_exit(3).json();
    assert_eq!(status["backups"][0]["state"], "incomplete", "{status}");
    assert_eq!(list["backups"][0]["state"], status["backups"][0]["state"]);
    let text = env.offsite(&["list"]).assert_exit(0).stdout_text();
    assert!(
        text.contains("incomplete") && !text.contains(" complete "),
        "{text}"
    );
}

/// A provider on a plain local path is read by offsite itself (`-v` says so); one whose flags
/// change how rclone's local backend follows files is read through rclone. Either way the
/// restore is identical.
#[test]
fn verbose_says_which_reads_skip_rclone_on_a_local_disk() {
    let (mut env, data) = backed_up(2, DS, 74);
    env.provider_set("p2", "flags", toml::Value::Array(vec!["--links".into()]));
    let (out, file) = env.restore_to_file(DS, &["-v"]);
    out.assert_exit(0);
    let err = out.stderr_text();
    let direct = |p: &str| {
        err.lines().any(|l| {
            l.contains(&format!("provider {p}: read "))
                && l.contains(" from the local disk directly: ok")
        })
    };
    assert!(direct("p1"), "{err}");
    assert!(!direct("p2"), "{err}");
    assert_eq!(std::fs::read(file).unwrap(), data);
}
