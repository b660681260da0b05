//! One test per validation rule of [`Config::load`]: each writes a config to a temp dir and
//! asserts the error's text, with the file and line where the rule has one.

use super::{Config, ListHashes, SourceSpec};
use std::path::Path;

/// The first lines of every config below: the dataset tables start on line 3.
const HEAD: &str = "host = \"h\"\nrclone = \"/bin/sh\"\n";

/// A temp dir holding `offsite.toml` (`HEAD` + `body`) and `providers.d` with `providers`.
fn setup(body: &str, providers: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("providers.d");
    std::fs::create_dir(&pdir).unwrap();
    std::fs::write(dir.path().join("offsite.toml"), format!("{HEAD}{body}")).unwrap();
    for (name, text) in providers {
        std::fs::write(pdir.join(format!("{name}.toml")), text).unwrap();
    }
    dir
}

const TWO: &[(&str, &str)] = &[
    ("a", "remote = \"/mnt/a\"\n"),
    ("b", "remote = \"b2:bkt\"\n"),
];

fn load(body: &str, providers: &[(&str, &str)]) -> Result<Config, String> {
    let dir = setup(body, providers);
    Config::load(&dir.path().join("offsite.toml"), None).map_err(|e| {
        // Paths in messages are the temp dir's: keep them out of the assertions.
        e.to_string()
            .replace(&dir.path().display().to_string(), "DIR")
    })
}

fn err(body: &str) -> String {
    load(body, TWO).expect_err("the config was accepted")
}

fn dataset(lines: &str) -> String {
    format!("[[dataset]]\nname = \"d\"\n{lines}")
}

#[test]
fn a_valid_config_loads_with_its_defaults() {
    let cfg = load(&dataset("command = \"pg_dumpall\"\n"), TWO).unwrap();
    assert_eq!(cfg.host, "h");
    assert_eq!(cfg.shard_size, 64 << 20);
    assert_eq!(
        (cfg.min_providers, cfg.shards_in_flight, cfg.concurrency),
        (1, 4, 2)
    );
    assert_eq!(cfg.retry.attempts, 5);
    assert_eq!(cfg.timeout.as_secs(), 3600);
    assert_eq!(cfg.datasets[0].providers, ["a", "b"]);
    assert_eq!(cfg.providers[1].list_hashes, ListHashes::Auto);
}

#[test]
fn a_missing_config_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/offsite.toml"), None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read config /nonexistent/offsite.toml: "),
        "{e}"
    );
}

#[test]
fn an_unknown_key_is_a_parse_error_with_file_and_line() {
    let e = err("colour = \"blue\"\n");
    assert!(
        e.starts_with("DIR/offsite.toml: TOML parse error at line 3"),
        "{e}"
    );
    assert!(e.contains("unknown field `colour`"), "{e}");
}

#[test]
fn a_malformed_size_or_duration_is_a_parse_error_with_its_line() {
    let e = err("shard_size = \"12 parsecs\"\n");
    assert!(
        e.contains("line 3") && e.contains("invalid size unit"),
        "{e}"
    );
    let e = err(&dataset("command = \"x\"\nfull_every = \"7 fortnights\"\n"));
    assert!(
        e.contains("line 6") && e.contains("invalid duration unit"),
        "{e}"
    );
}

#[test]
fn a_providers_dir_that_cannot_be_read_names_the_config_that_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("offsite.toml");
    std::fs::write(&config, format!("providers_dir = \"/bin/sh\"\n{HEAD}")).unwrap();
    let e = Config::load(&config, None).unwrap_err().to_string();
    let named = format!(
        "{}: providers_dir: cannot read providers directory /bin/sh",
        config.display()
    );
    assert!(e.contains(&named), "{e}");
    assert!(e.contains("or fix providers_dir"), "{e}");
}

#[test]
fn a_missing_providers_directory_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("offsite.toml"), HEAD).unwrap();
    let e = Config::load(&dir.path().join("offsite.toml"), None).unwrap_err();
    assert!(
        e.to_string().contains("cannot read providers directory"),
        "{e}"
    );
    assert!(e.to_string().contains("one NAME.toml per provider"), "{e}");
}

#[test]
fn a_provider_file_with_an_unknown_key_is_named() {
    let e = load("", &[("a", "remote = \"/x\"\nspeed = 3\n")]).unwrap_err();
    assert!(
        e.starts_with("DIR/providers.d/a.toml: TOML parse error at line 2"),
        "{e}"
    );
}

#[test]
fn an_empty_remote_is_refused_with_its_line() {
    let e = load("", &[("a", "enabled = true\nremote = \" \"\n")]).unwrap_err();
    assert_eq!(
        e,
        "DIR/providers.d/a.toml:2: remote is empty: set e.g. remote = \"b2:bucket/offsite\""
    );
}

#[test]
fn a_remote_neither_rclone_nor_absolute_is_refused() {
    let e = load("", &[("a", "remote = \"relative/dir\"\n")]).unwrap_err();
    assert_eq!(
        e,
        "DIR/providers.d/a.toml:1: remote \"relative/dir\" is neither an rclone remote \
         (name:path) nor an absolute path"
    );
}

#[test]
fn a_bad_list_hashes_is_refused_with_its_line() {
    let e = load("", &[("a", "remote = \"/a\"\nlist_hashes = 3\n")]).unwrap_err();
    assert_eq!(
        e,
        "DIR/providers.d/a.toml:2: list_hashes is 3: set \"auto\", true or false"
    );
}

#[test]
fn providers_are_ordered_by_priority_then_name() {
    let cfg = load(
        "",
        &[
            ("z", "remote = \"/z\"\npriority = 1\n"),
            ("b", "remote = \"/b/\"\n"),
            ("a", "remote = \"/a\"\nenabled = false\n"),
        ],
    )
    .unwrap();
    let names: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["z", "a", "b"]);
    assert_eq!(cfg.providers[2].remote, "/b", "trailing slash dropped");
}

#[test]
fn a_missing_rclone_is_refused_with_its_line() {
    let dir = setup("", TWO);
    let text = "host = \"h\"\n\nrclone = \"bin/no-such-rclone\"\n";
    std::fs::write(dir.path().join("offsite.toml"), text).unwrap();
    let e = Config::load(&dir.path().join("offsite.toml"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("offsite.toml:3: rclone: "), "{e}");
    assert!(
        e.ends_with(
            "bin/no-such-rclone does not exist; install rclone (apt-get install rclone) or \
             set `rclone = \"/path/to/rclone\"`"
        ),
        "{e}"
    );
}

#[test]
fn shard_size_out_of_range_is_refused_with_its_line() {
    for size in ["\"512KiB\"", "\"5GiB\""] {
        let e = err(&format!("\nshard_size = {size}\n"));
        assert!(e.starts_with("DIR/offsite.toml:4: shard_size "), "{e}");
        assert!(e.ends_with("is out of range: use 1MiB to 4GiB (64MiB is a good default)"));
    }
    assert!(load("shard_size = \"1MiB\"\n", TWO).is_ok());
}

#[test]
fn counts_out_of_range_are_refused_with_their_line() {
    for (key, bad, max) in [
        ("min_providers", 0, 1000),
        ("shards_in_flight", 1025, 1024),
        ("concurrency", -1, 64),
        ("retries", 101, 100),
    ] {
        let e = err(&format!("{key} = {bad}\n"));
        assert_eq!(
            e,
            format!("DIR/offsite.toml:3: {key} = {bad} is out of range: use 1 to {max}")
        );
    }
}

#[test]
fn a_zero_timeout_is_refused() {
    assert_eq!(
        err("timeout = \"0s\"\n"),
        "DIR/offsite.toml:3: timeout must be above zero"
    );
}

#[test]
fn an_unusable_host_is_refused() {
    let long = "h".repeat(256);
    for host in ["", "a/b", ".hidden", long.as_str()] {
        let dir = setup("", TWO);
        let text = format!("host = {host:?}\nrclone = \"/bin/sh\"\n");
        std::fs::write(dir.path().join("offsite.toml"), text).unwrap();
        let e = Config::load(&dir.path().join("offsite.toml"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(&format!(
                "offsite.toml: host {host:?} is not usable as a folder name on the remotes; \
                 set `host = \"name\"`"
            )),
            "{e}"
        );
    }
}

#[test]
fn host_override_wins_and_is_checked_too() {
    let dir = setup("", TWO);
    let path = dir.path().join("offsite.toml");
    let cfg = Config::load(&path, Some("other")).unwrap();
    assert_eq!((cfg.host.as_str(), cfg.foreign_host), ("other", true));
    let cfg = Config::load(&path, Some("h")).unwrap();
    assert!(!cfg.foreign_host);
    let e = Config::load(&path, Some("x/y")).unwrap_err().to_string();
    assert!(e.contains("host \"x/y\" is not usable"), "{e}");
}

#[test]
fn an_empty_or_unprintable_dataset_name_is_refused_with_its_line() {
    for name in ["", "a\tb"] {
        let e = err(&format!("[[dataset]]\ncommand = \"x\"\nname = {name:?}\n"));
        assert_eq!(
            e,
            format!("DIR/offsite.toml:5: dataset name {name:?} must be non-empty printable text")
        );
    }
}

#[test]
fn snapshot_keys_on_a_command_dataset_are_refused() {
    for key in [
        "snapshot_pattern = \"x\"",
        "send_flags = []",
        "receive_flags = []",
    ] {
        let e = err(&dataset(&format!("command = \"x\"\n{key}\n")));
        assert_eq!(
            e,
            "DIR/offsite.toml:3: dataset \"d\": snapshot_pattern, send_flags and receive_flags \
             apply to zfs and btrfs datasets only"
        );
    }
}

#[test]
fn a_bad_snapshot_pattern_is_refused() {
    for pattern in ["", "tank/a@x", "a/b"] {
        let e = err(&dataset(&format!(
            "zfs = \"tank/a\"\nsnapshot_pattern = {pattern:?}\n"
        )));
        assert_eq!(
            e,
            format!(
                "DIR/offsite.toml:3: dataset \"d\": snapshot_pattern {pattern:?} must match a \
                 snapshot's short name (no '@' or '/'), e.g. \"autosnap_*_daily\""
            )
        );
    }
    let cfg = load(
        &dataset("zfs = \"t/a\"\nsnapshot_pattern = \"auto_*\"\n"),
        TWO,
    )
    .unwrap();
    assert_eq!(cfg.datasets[0].snapshot_pattern.as_deref(), Some("auto_*"));
}

#[test]
fn snapshot_dir_outside_btrfs_is_refused() {
    let e = err(&dataset("zfs = \"tank/a\"\nsnapshot_dir = \"/s\"\n"));
    assert_eq!(
        e,
        "DIR/offsite.toml:3: dataset \"d\": snapshot_dir applies to btrfs datasets only"
    );
    let cfg = load(&dataset("btrfs = \"/v\"\n"), TWO).unwrap();
    let SourceSpec::Btrfs { snapshot_dir, .. } = &cfg.datasets[0].source else {
        panic!("not btrfs")
    };
    assert_eq!(snapshot_dir, Path::new("/v/.offsite-snapshots"));
}

#[test]
fn a_zfs_source_must_name_a_dataset_without_snapshot() {
    for fs in ["", "tank/a@snap"] {
        let e = err(&dataset(&format!("zfs = {fs:?}\n")));
        assert_eq!(
            e,
            format!(
                "DIR/offsite.toml:3: dataset \"d\": zfs = {fs:?} must name a dataset (pool/fs), \
                 without @snapshot"
            )
        );
    }
}

#[test]
fn an_empty_command_is_refused() {
    let e = err(&dataset("command = \"  \"\n"));
    assert_eq!(e, "DIR/offsite.toml:3: dataset \"d\": command is empty");
}

#[test]
fn a_dataset_needs_exactly_one_source() {
    let e = err(&dataset(""));
    assert!(
        e.starts_with("DIR/offsite.toml:3: dataset \"d\" has no source: set exactly one of"),
        "{e}"
    );
    let e = err(&dataset("zfs = \"t/a\"\ncommand = \"x\"\n"));
    assert_eq!(
        e,
        "DIR/offsite.toml:3: dataset \"d\" sets more than one of zfs, btrfs and command: keep \
         exactly one"
    );
}

#[test]
fn a_name_too_long_for_the_providers_is_refused_with_its_line() {
    let e = err(&format!(
        "[[dataset]]\ncommand = \"x\"\nname = \"{}\"\n",
        "n".repeat(251)
    ));
    assert!(
        e.starts_with("DIR/offsite.toml:5: dataset name \"nnn"),
        "{e}"
    );
    assert!(e.contains("encoded as 251 bytes"), "{e}");
}

#[test]
fn an_unknown_provider_is_refused_naming_the_known_ones() {
    let e = err(&dataset("command = \"x\"\nproviders = [\"a\", \"c\"]\n"));
    assert_eq!(
        e,
        "DIR/offsite.toml:6: dataset \"d\": unknown provider \"c\"; known: a, b"
    );
}

#[test]
fn disabled_and_repeated_providers_are_left_out() {
    let providers = &[
        ("a", "remote = \"/a\"\n"),
        ("b", "remote = \"/b\"\nenabled = false\n"),
    ];
    let cfg = load(
        &dataset("command = \"x\"\nproviders = [\"a\", \"b\", \"a\"]\n"),
        providers,
    )
    .unwrap();
    assert_eq!(cfg.datasets[0].providers, ["a"]);
    let cfg = load(&dataset("command = \"x\"\n"), providers).unwrap();
    assert_eq!(
        cfg.datasets[0].providers,
        ["a"],
        "the default is the enabled ones"
    );
}

#[test]
fn keep_chains_zero_is_refused() {
    let e = err(&dataset("command = \"x\"\nkeep_chains = 0\n"));
    assert!(
        e.starts_with(
            "DIR/offsite.toml:3: dataset \"d\": keep_chains = 0 would delete every backup"
        ),
        "{e}"
    );
}

#[test]
fn duplicate_dataset_names_are_refused_at_the_second() {
    let one = dataset("command = \"x\"\n");
    let e = err(&format!("{one}{one}"));
    assert_eq!(
        e,
        "DIR/offsite.toml:6: dataset \"d\" is defined twice; names must be unique"
    );
}

#[test]
fn min_providers_above_a_datasets_providers_is_refused() {
    let e = err(&format!(
        "min_providers = 2\n{}",
        dataset("command = \"x\"\nproviders = [\"a\"]\n")
    ));
    assert_eq!(
        e,
        "DIR/offsite.toml:4: dataset \"d\" has 1 enabled provider(s) but min_providers = 2; \
         add or enable providers in DIR/providers.d"
    );
    assert!(load(
        &format!("min_providers = 2\n{}", dataset("command = \"x\"\n")),
        TWO
    )
    .is_ok());
}

mod encryption;

#[test]
fn resume_is_auto_by_default_and_takes_always_or_never() {
    use super::Resume;
    let cfg = load(&dataset("command = \"pg_dumpall\"\n"), TWO).unwrap();
    assert_eq!(cfg.datasets[0].resume, Resume::Auto);
    for (text, want) in [("always", Resume::Always), ("never", Resume::Never)] {
        let body = dataset(&format!("command = \"x\"\nresume = \"{text}\"\n"));
        assert_eq!(load(&body, TWO).unwrap().datasets[0].resume, want);
    }
    let e = err(&dataset("command = \"x\"\nresume = \"sometimes\"\n"));
    assert!(
        e.contains("offsite.toml:6:") && e.contains("\"never\""),
        "{e}"
    );
}

#[test]
fn the_state_dir_is_state_directory_then_xdg_then_home() {
    use std::ffi::OsString;
    let env = |vars: &'static [(&str, &str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let all = &[
        ("STATE_DIRECTORY", "/var/lib/offsite:/var/lib/other"),
        ("XDG_STATE_HOME", "/x"),
        ("HOME", "/home/u"),
    ];
    assert_eq!(
        super::state_dir_from(env(all)),
        Path::new("/var/lib/offsite")
    );
    let xdg = &[("STATE_DIRECTORY", ""), ("XDG_STATE_HOME", "/x")];
    assert_eq!(super::state_dir_from(env(xdg)), Path::new("/x/offsite"));
    let home = &[("HOME", "/home/u")];
    assert_eq!(
        super::state_dir_from(env(home)),
        Path::new("/home/u/.local/state/offsite")
    );
}

#[test]
fn spool_dir_and_spool_size_come_together_and_hold_a_shard() {
    let cfg = load("spool_dir = \"spool\"\nspool_size = \"2GiB\"\n", TWO).unwrap();
    let spool = cfg.spool.unwrap();
    assert!(spool.dir.ends_with("spool") && spool.dir.is_absolute() == cfg.path.is_absolute());
    assert_eq!(spool.size, 2 << 30);
    assert!(load("", TWO).unwrap().spool.is_none());
    let e = err("spool_dir = \"/var/spool/offsite\"\n");
    assert_eq!(
        e,
        "DIR/offsite.toml:3: spool_dir is set without spool_size; add e.g. \
         `spool_size = \"20GiB\"` (the most disk the spool may take)"
    );
    let e = err("spool_size = \"2GiB\"\n");
    assert!(
        e.starts_with("DIR/offsite.toml:3: spool_size is set without spool_dir"),
        "{e}"
    );
    let e = err("spool_dir = \"s\"\nspool_size = \"32MiB\"\n");
    assert!(
        e.starts_with("DIR/offsite.toml:4: spool_size 32.0 MiB is smaller than one shard (shard_size 64.0 MiB)"),
        "{e}"
    );
}
