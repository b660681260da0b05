//! Which codec a resumed backup runs with, from its unfinished state and today's config.

use super::*;
use crate::layout::{Compression as Zstd, Encoding, Encryption};

/// A loaded config with one provider and dataset "d"; `extra` goes at the top level.
fn config(extra: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("providers.d")).unwrap();
    std::fs::write(dir.path().join("providers.d/a.toml"), "remote = \"/r/a\"\n").unwrap();
    let path = dir.path().join("offsite.toml");
    let text = format!(
        "host = \"h\"\nrclone = \"/bin/true\"\n{extra}\n[[dataset]]\nname = \"d\"\ncommand = \"true\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path, None).unwrap();
    (dir, cfg)
}

fn recipient() -> String {
    crate::codec::keys::generate("now").1
}

fn encrypted_config(r: &str, compression: &str) -> (tempfile::TempDir, Config) {
    config(&format!(
        "compression = \"{compression}\"\n[encryption]\nrecipients = [\"{r}\"]\n"
    ))
}

fn unfinished(encoding: Encoding, recipients: Vec<String>) -> Unfinished {
    Unfinished {
        backup_id: "20261121T020000Z-full".into(),
        snapshot: None,
        parent: None,
        shard_size: 1 << 20,
        started: "x".into(),
        gaps_retry: false,
        encoding,
        recipients,
        erasure: None,
        previous_bytes: None,
    }
}

const ZSTD_AGE: Encoding = Encoding {
    compression: Some(Zstd::Zstd),
    encryption: Some(Encryption::Age),
};

fn refused(cfg: &Config, u: &Unfinished) -> String {
    let err = codec_for(cfg, &cfg.datasets[0], u).unwrap_err();
    assert_eq!(crate::error::exit_code(&err), 2, "{err:#}");
    format!("{err:#}")
}

#[test]
fn a_resume_keeps_its_encryption_and_compression_when_the_recipients_are_the_same() {
    let r = recipient();
    let (_d, cfg) = encrypted_config(&r, "none");
    let u = unfinished(ZSTD_AGE, vec![r.clone()]);
    let codec = codec_for(&cfg, &cfg.datasets[0], &u).unwrap();
    assert_eq!(codec.encoding(), ZSTD_AGE, "compressed as it started");
    assert_eq!(codec.recipients.unwrap().to_strings(), vec![r]);
}

#[test]
fn a_resume_refuses_an_encryption_change_and_asks_for_restart() {
    let (r1, r2) = (recipient(), recipient());
    let (_d, cfg) = encrypted_config(&r2, "zstd");
    let text = refused(&cfg, &unfinished(ZSTD_AGE, vec![r1.clone()]));
    assert!(text.contains("--restart d") && text.contains(&r1), "{text}");
    let text = refused(&cfg, &unfinished(Encoding::default(), vec![]));
    assert!(text.contains("started unencrypted"), "{text}");
    let (_d, plain) = config("");
    let text = refused(&plain, &unfinished(ZSTD_AGE, vec![r1]));
    assert!(text.contains("now says unencrypted"), "{text}");
}

#[test]
fn an_old_unfinished_backup_resumes_uncompressed() {
    let (_d, cfg) = config("");
    let codec = codec_for(
        &cfg,
        &cfg.datasets[0],
        &unfinished(Encoding::default(), vec![]),
    );
    assert_eq!(codec.unwrap().encoding(), Encoding::default());
}
