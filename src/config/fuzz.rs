//! Property tests of the config loader ([`Config::load`]): a damaged `offsite.toml` or provider
//! file loads into a config the engine can use, or is refused with an error naming the file, and
//! never panics. Seeds use every key, so mutations reach every validation.

use super::Config;
use crate::mutate;
use proptest::prelude::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

const CONFIG: &str = r#"host = "h"
state_dir = "state"
providers_dir = "providers.d"
rclone = "/bin/sh"
shard_size = "64MiB"
min_providers = 1
shards_in_flight = 4
concurrency = 2
retries = 5
retry_delay = "1s"
timeout = "1h"

[[dataset]]
name = "tank/media"
zfs = "tank/media"
full_every = "28d"
incremental_every = "1d"
keep_chains = 3
providers = ["p1", "p2"]
snapshot_pattern = "autosnap_*_daily"
send_flags = ["-w"]
receive_flags = ["-u"]

[[dataset]]
name = "home"
btrfs = "/home"
snapshot_dir = "/home/.snaps"
incremental_every = "12h"

[[dataset]]
name = "db"
command = "pg_dumpall"
"#;

const PROVIDER: &str = r#"remote = "b2:bucket/offsite"
enabled = true
priority = 1
bwlimit = "20M"
flags = ["--b2-chunk-size", "96M"]
"#;

/// Writes the config (and providers `p1`, `p2`) to a new directory and loads it.
fn load(config: &[u8], provider: &[u8]) -> (tempfile::TempDir, Result<Config, String>) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("providers.d");
    std::fs::create_dir(&pdir).unwrap();
    std::fs::write(dir.path().join("offsite.toml"), config).unwrap();
    std::fs::write(pdir.join("p1.toml"), provider).unwrap();
    std::fs::write(pdir.join("p2.toml"), "remote = \"/mnt/usb\"\n").unwrap();
    let r = Config::load(&dir.path().join("offsite.toml"), None).map_err(|e| e.to_string());
    (dir, r)
}

/// An accepted config can be used: every span fits on a calendar (schedules add them to
/// points in time); a refused one says which file is wrong.
fn check(r: &Result<Config, String>, dir: &Path) -> Result<(), TestCaseError> {
    match r {
        Ok(cfg) => {
            let mut spans = vec![cfg.timeout, cfg.retry.base_delay];
            for d in &cfg.datasets {
                spans.extend(d.full_every.iter().chain(&d.incremental_every));
            }
            for s in spans {
                // A backup id can be dated up to the year 9999.
                let late = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
                prop_assert!(late.checked_add(s).is_some(), "unusable span {s:?}");
            }
        }
        Err(e) => {
            let dir = dir.display().to_string();
            prop_assert!(e.contains(&dir), "the error names no file: {e}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_config_loads_or_is_refused_naming_the_file(
        edits in mutate::edits(),
        in_provider_file in any::<bool>(),
    ) {
        let (config, provider) = if in_provider_file {
            (CONFIG.as_bytes().to_vec(), mutate::apply(PROVIDER.as_bytes(), &edits))
        } else {
            (mutate::apply(CONFIG.as_bytes(), &edits), PROVIDER.as_bytes().to_vec())
        };
        let (dir, r) = load(&config, &provider);
        check(&r, dir.path())?;
    }

    #[test]
    fn any_value_of_a_key_loads_or_is_refused_naming_the_file(
        key in prop::sample::select(vec![
            "shard_size", "min_providers", "shards_in_flight", "concurrency", "retries",
            "retry_delay", "timeout", "host",
        ]),
        value in prop_oneof![
            prop::sample::select(mutate::NASTY_NUMBERS).prop_map(str::to_string),
            (any::<u64>(), prop::sample::select(vec!["", "ms", "s", "h", "d", "w", "MiB", "TiB"]))
                .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
            any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        ],
    ) {
        let config = format!("{key} = {value}\n{}", drop_key(CONFIG, key));
        let (dir, r) = load(config.as_bytes(), PROVIDER.as_bytes());
        check(&r, dir.path())?;
    }
}

/// `text` without the line that sets `key`.
fn drop_key(text: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    text.lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_seeds_load() {
    let (_dir, r) = load(CONFIG.as_bytes(), PROVIDER.as_bytes());
    let cfg = r.unwrap();
    assert_eq!(cfg.datasets.len(), 3);
    assert_eq!(cfg.providers.len(), 2);
}

#[test]
fn a_span_past_the_calendar_is_refused_with_its_line() {
    let config = CONFIG.replace(
        "full_every = \"28d\"",
        "full_every = \"18446744073709551615w\"",
    );
    let (_dir, r) = load(config.as_bytes(), PROVIDER.as_bytes());
    let e = r.unwrap_err();
    assert!(e.contains("offsite.toml") && e.contains("too long"), "{e}");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let config = format!(
        "{}shard_size = {}1{}\n",
        drop_key(CONFIG, "shard_size"),
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (_dir, r) = load(config.as_bytes(), PROVIDER.as_bytes());
    assert!(r.unwrap_err().contains("offsite.toml"));
}

#[test]
fn list_hashes_is_auto_true_or_false() {
    use super::ListHashes;
    for (line, want) in [
        ("", ListHashes::Auto),
        ("list_hashes = \"auto\"\n", ListHashes::Auto),
        ("list_hashes = true\n", ListHashes::Always),
        ("list_hashes = false\n", ListHashes::Never),
    ] {
        let (_dir, r) = load(CONFIG.as_bytes(), format!("{PROVIDER}{line}").as_bytes());
        assert_eq!(r.unwrap().providers[0].list_hashes, want, "{line:?}");
    }
    let (_dir, r) = load(
        CONFIG.as_bytes(),
        format!("{PROVIDER}list_hashes = \"sometimes\"\n").as_bytes(),
    );
    let e = r.unwrap_err();
    assert!(
        e.contains("p1.toml:6:") && e.contains("\"auto\", true or false"),
        "{e}"
    );
}
