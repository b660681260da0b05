//! One test per rule of the round-2 keys: `compression` (top level and per dataset) and the
//! `[encryption]` table, with the error's text and `file:line`; then the defaults and what a
//! dataset's own keys override.

use super::{dataset, err, load, setup, TWO};
use crate::codec::Compression;
use crate::config::Config;

/// A valid age recipient (the one in age's own README).
const R1: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn recipient_2() -> String {
    crate::codec::keys::generate("test").1
}

const BAD_COMPRESSION: &str =
    "is not one of \"zstd\" (level 3), \"zstd:1\" .. \"zstd:19\", \"none\"";

#[test]
fn a_bad_top_level_compression_is_refused_with_its_line() {
    for bad in ["gzip", "zstd:20", "zstd:0", "ZSTD"] {
        let e = err(&format!("\ncompression = {bad:?}\n"));
        assert_eq!(
            e,
            format!("DIR/offsite.toml:4: compression = {bad:?} {BAD_COMPRESSION}")
        );
    }
}

#[test]
fn a_bad_dataset_compression_is_refused_with_its_line() {
    let e = err(&dataset("command = \"x\"\ncompression = \"zstd:20\"\n"));
    assert_eq!(
        e,
        format!("DIR/offsite.toml:6: compression = \"zstd:20\" {BAD_COMPRESSION}")
    );
}

const NO_RECIPIENTS: &str = "[encryption] has no recipients: add `recipients = [\"age1...\"]` \
     (from `offsite keygen`) or a recipients_file, or remove the table to store shards unencrypted";

#[test]
fn encryption_without_recipients_is_refused() {
    for table in [
        "[encryption]\nidentity_file = \"k\"\n",
        "[encryption]\nrecipients = []\n",
    ] {
        let e = err(&format!("\n{table}"));
        assert!(e.starts_with("DIR/offsite.toml:"), "{e}");
        assert!(e.ends_with(NO_RECIPIENTS), "{e}");
    }
}

#[test]
fn a_recipient_that_is_not_age1_is_refused_with_its_line() {
    let e = err(&format!(
        "[encryption]\nrecipients = [\n  {R1:?},\n  \"ssh-ed25519 AAAA\",\n]\n"
    ));
    assert!(
        e.starts_with(
            "DIR/offsite.toml:6: \"ssh-ed25519 AAAA\" is not an age X25519 recipient (age1...): "
        ),
        "{e}"
    );
}

#[test]
fn a_bad_line_in_recipients_file_names_that_file_and_line() {
    let dir = setup("[encryption]\nrecipients_file = \"recipients.txt\"\n", TWO);
    let text = format!("# the NAS key\n{R1}\n\nage1nope\n");
    std::fs::write(dir.path().join("recipients.txt"), text).unwrap();
    let e = load_dir(&dir).unwrap_err();
    assert!(
        e.starts_with(
            "DIR/offsite.toml:4: DIR/recipients.txt line 4: \"age1nope\" is not an age X25519 \
             recipient (age1...): "
        ),
        "{e}"
    );
}

#[test]
fn a_missing_recipients_file_is_named() {
    let e = err("[encryption]\nrecipients_file = \"nowhere.txt\"\n");
    assert!(
        e.starts_with("DIR/offsite.toml:4: cannot read recipients_file DIR/nowhere.txt: "),
        "{e}"
    );
}

#[test]
fn encrypt_true_without_an_encryption_table_is_refused() {
    let e = err(&dataset("command = \"x\"\nencrypt = true\n"));
    assert_eq!(
        e,
        "DIR/offsite.toml:6: dataset \"d\" sets encrypt = true but there is no [encryption] \
         table with recipients; add one (run `offsite keygen` for a key) or remove encrypt"
    );
}

#[test]
fn an_unknown_key_in_encryption_is_a_parse_error_with_its_line() {
    let e = err(&format!(
        "[encryption]\nrecipients = [{R1:?}]\npassphrase = \"x\"\n"
    ));
    assert!(
        e.starts_with("DIR/offsite.toml: TOML parse error at line 5"),
        "{e}"
    );
    assert!(e.contains("unknown field `passphrase`"), "{e}");
}

#[test]
fn compression_defaults_to_zstd_level_3_without_encryption() {
    let cfg = load(&dataset("command = \"x\"\n"), TWO).unwrap();
    assert!(cfg.encryption.is_none());
    let ds = &cfg.datasets[0];
    assert_eq!((ds.compression, ds.encrypt), (Compression::Zstd(3), false));
    let codec = cfg.codec(ds);
    assert!(codec.recipients.is_none());
    assert_eq!(codec.encoding().suffix(), ".zst");
}

#[test]
fn encrypt_defaults_to_true_with_an_encryption_table() {
    let body = format!(
        "compression = \"zstd:19\"\n[encryption]\nrecipients = [{R1:?}]\n{}",
        dataset("command = \"x\"\n")
    );
    let cfg = load(&body, TWO).unwrap();
    let ds = &cfg.datasets[0];
    assert_eq!((ds.compression, ds.encrypt), (Compression::Zstd(19), true));
    let codec = cfg.codec(ds);
    assert_eq!(codec.recipients.unwrap().to_strings(), [R1]);
    assert_eq!(cfg.codec(ds).encoding().suffix(), ".zst.age");
}

#[test]
fn a_datasets_encrypt_false_and_compression_none_win() {
    let body = format!(
        "compression = \"zstd:9\"\n[encryption]\nrecipients = [{R1:?}]\n{}{}",
        dataset("command = \"x\"\nencrypt = false\ncompression = \"none\"\n"),
        "[[dataset]]\nname = \"e\"\ncommand = \"y\"\ncompression = \"zstd:1\"\n",
    );
    let cfg = load(&body, TWO).unwrap();
    let d = cfg.dataset("d").unwrap();
    assert_eq!((d.compression, d.encrypt), (Compression::None, false));
    assert_eq!(cfg.codec(d).encoding().suffix(), "");
    assert!(cfg.codec(d).recipients.is_none());
    let e = cfg.dataset("e").unwrap();
    assert_eq!((e.compression, e.encrypt), (Compression::Zstd(1), true));
    assert_eq!(cfg.codec(e).encoding().suffix(), ".zst.age");
}

#[test]
fn relative_key_files_are_relative_to_the_config_file() {
    let two = recipient_2();
    let dir = setup(
        &format!(
            "[encryption]\nrecipients = [{R1:?}]\nrecipients_file = \"keys/recipients.txt\"\n\
             identity_file = \"keys/offsite.key\"\n"
        ),
        TWO,
    );
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/recipients.txt"), format!("{two}\n")).unwrap();
    let cfg = Config::load(&dir.path().join("offsite.toml"), None).unwrap();
    let enc = cfg.encryption.unwrap();
    assert_eq!(enc.recipients.to_strings(), [R1.to_string(), two]);
    assert_eq!(
        enc.identity_file.unwrap(),
        dir.path().join("keys/offsite.key")
    );
}

fn load_dir(dir: &tempfile::TempDir) -> Result<Config, String> {
    Config::load(&dir.path().join("offsite.toml"), None).map_err(|e| {
        e.to_string()
            .replace(&dir.path().display().to_string(), "DIR")
    })
}

#[test]
fn the_readme_encryption_example_loads() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Encryption and compression")
        .nth(1)
        .expect("README has the section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the section has a toml example");
    let dir = setup(&example.replace("\"age1...\"", &format!("{R1:?}")), TWO);
    std::fs::write(dir.path().join("recipients.txt"), recipient_2()).unwrap();
    let cfg = load_dir(&dir).unwrap();
    let enc = cfg.encryption.as_ref().unwrap();
    assert_eq!(enc.recipients.len(), 2);
    let photos = cfg.dataset("photos").unwrap();
    assert_eq!(cfg.codec(photos).encoding().suffix(), ".age");
    let scratch = cfg.dataset("scratch").unwrap();
    assert_eq!(cfg.codec(scratch).encoding().suffix(), ".zst");
}

const THREE: &[(&str, &str)] = &[
    ("a", "remote = \"/mnt/a\"\n"),
    ("b", "remote = \"b2:bkt\"\n"),
    ("c", "remote = \"/mnt/c\"\n"),
];

#[test]
fn erasure_is_inherited_and_overridden_per_dataset() {
    let body = format!(
        "erasure = \"2+1\"\n{}{}",
        dataset("command = \"x\"\n"),
        dataset("command = \"y\"\nerasure = \"1+2\"\n").replace("\"d\"", "\"e\"")
    );
    let cfg = load(&body, THREE).unwrap();
    let schemes: Vec<String> = cfg
        .datasets
        .iter()
        .map(|d| d.erasure.unwrap().to_string())
        .collect();
    assert_eq!(schemes, ["2+1", "1+2"]);
    let cfg = load(&dataset("command = \"x\"\n"), THREE).unwrap();
    assert_eq!(cfg.datasets[0].erasure, None, "absent: mirrored");
}

#[test]
fn a_bad_erasure_is_refused_with_its_line() {
    let e = err(&dataset("command = \"x\"\nerasure = \"2:1\"\n"));
    assert!(
        e.starts_with("DIR/offsite.toml:6: erasure = \"2:1\" is not \"k+m\""),
        "{e}"
    );
    let e = err("\nerasure = \"0+1\"\n");
    assert!(
        e.starts_with("DIR/offsite.toml:4: erasure = \"0+1\""),
        "{e}"
    );
}

#[test]
fn erasure_needs_k_plus_m_providers_to_back_up() {
    let body = format!("erasure = \"2+1\"\n{}", dataset("command = \"x\"\n"));
    let cfg = load(&body, TWO).expect("a restore with a provider disabled still loads");
    let e = cfg.check_erasure(&cfg.datasets[0]).unwrap_err().to_string();
    let dir = cfg.providers_dir.parent().unwrap().display().to_string();
    let e = e.replace(&dir, "DIR");
    assert!(
        e.starts_with("DIR/offsite.toml: dataset \"d\" has erasure"),
        "{e}"
    );
    assert!(
        e.contains("erasure = \"2+1\", which puts each shard's 3 pieces on 3 different providers, but it has 2 enabled provider(s); add or enable providers in DIR/providers.d"),
        "{e}"
    );
}
