//! Misconfiguration is not an outage: `offsite check` and the preflight of backup, sync and
//! prune turn an rclone remote that rclone's config lacks, a flag rclone does not know or a bad
//! `bwlimit` into exit 2 naming the provider's file, before anything is uploaded; and a dataset
//! name that exists nowhere is exit 2 for `sync` too.

use crate::harness::*;

const DS: &str = "media";

/// Two good local providers and one more, `bad`, set up by `setup`.
fn env_with_bad(setup: impl FnOnce(&mut Env)) -> Env {
    let (mut env, _) = command_env(2, DS, 21);
    env.provider("bad", &env.path().join("remotes/bad").display().to_string());
    setup(&mut env);
    env
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", out.stdout_text(), out.stderr_text())
}

#[test]
fn check_passes_a_good_config_and_writes_nothing_that_stays() {
    let (env, _) = command_env(2, DS, 20);
    let out = env.offsite(&["check"]);
    let t = text(&out);
    out.assert_exit(0);
    assert!(
        t.contains("ok") && t.contains("p1") && t.contains("p2"),
        "{t}"
    );
    for p in ["p1", "p2"] {
        assert!(
            files_under(env.remote(p).root()).is_empty(),
            "the probe was deleted"
        );
    }
}

#[test]
fn an_unknown_rclone_remote_is_exit_two_naming_the_file_and_nothing_is_uploaded() {
    let mut env = env_with_bad(|env| {
        env.provider("bad", "nosuchremote:bucket/offsite");
    });
    let no_config = env.path().join("no-rclone.conf");
    env.var("RCLONE_CONFIG", &no_config.display().to_string());
    let out = env.offsite(&["check"]);
    out.assert_exit(2);
    let t = text(&out);
    assert!(
        t.contains("bad.toml") && t.contains("not in rclone's config"),
        "{t}"
    );
    // rclone listing no remote at all points at its config file.
    assert!(t.contains("config file may be missing"), "{t}");

    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(2);
    let t = out.stderr_text();
    assert!(t.contains("bad.toml") && t.contains("nosuchremote"), "{t}");
    for p in ["p1", "p2"] {
        assert!(
            files_under(env.remote(p).root()).is_empty(),
            "nothing on {p}"
        );
    }
    env.offsite(&["sync"]).assert_exit(2);
    env.offsite(&["prune"]).assert_exit(2);
}

#[test]
fn an_unknown_rclone_flag_or_a_bad_bwlimit_is_exit_two_before_any_upload() {
    for (key, value) in [
        ("flags", toml::Value::from(vec!["--no-such-flag"])),
        ("bwlimit", toml::Value::from("10Q")),
    ] {
        let env = env_with_bad(|env| {
            env.provider_set("bad", key, value.clone());
        });
        let out = env.offsite(&["check"]);
        out.assert_exit(2);
        let t = text(&out);
        assert!(
            t.contains("bad.toml") && t.contains("rclone refuses"),
            "{key}: {t}"
        );
        let out = env.offsite(&["backup", "--once"]);
        out.assert_exit(2);
        assert!(
            out.stderr_text().contains("bad.toml"),
            "{}",
            out.stderr_text()
        );
        for p in ["p1", "p2", "bad"] {
            assert!(
                files_under(env.remote(p).root()).is_empty(),
                "{key}: nothing on {p}"
            );
        }
    }
}

#[test]
fn sync_of_a_dataset_that_exists_nowhere_is_exit_two_naming_those_that_do() {
    let (env, _) = backed_up(2, DS, 22);
    let out = env.offsite(&["sync", "mediaa"]);
    out.assert_exit(2);
    let t = out.stderr_text();
    assert!(t.contains("\"mediaa\"") && t.contains("\"media\""), "{t}");
}

#[test]
fn backup_dry_run_plans_from_the_providers_in_json_and_makes_nothing() {
    let (env, _) = backed_up(2, DS, 23);
    let before: Vec<_> = files_under(env.remote("p1").root());
    let json = env
        .offsite(&["--json", "backup", "--dry-run", "--once"])
        .assert_exit(0)
        .json();
    assert_eq!(json["dry_run"], true, "{json}");
    let plan = &json["datasets"][0];
    assert_eq!(
        (plan["dataset"].as_str(), plan["action"].as_str()),
        (Some(DS), Some("full")),
        "{json}"
    );
    assert_eq!(plan["providers"], serde_json::json!(["p1", "p2"]), "{json}");
    assert!(
        plan["backup_id"]
            .as_str()
            .is_some_and(|id| id.ends_with("-full") || id.contains("-full-")),
        "{json}"
    );
    assert_eq!(
        files_under(env.remote("p1").root()).len(),
        before.len(),
        "nothing written"
    );
}
