//! `offsite keygen [--output FILE]`: a new age identity for `[encryption]`.
//!
//! The identity file is written as `age-keygen` writes one (so the `age` CLI reads it), mode
//! 0600, never over an existing file. Without `--output` it goes to stdout, as `age-keygen`
//! does. The recipient (the public key a backup needs) is printed to stderr either way, and in
//! `--json` as `{"version":1,"recipient":...}` on stdout when the identity went to a file.

use super::Outcome;
use crate::codec::keys::generate;
use crate::error::ConfigError;
use crate::output::{self, Report};
use age::secrecy::ExposeSecret;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

#[derive(serde::Serialize)]
pub struct KeygenReport {
    /// `age1...`: goes into `[encryption] recipients`.
    pub recipient: String,
    /// Where the identity was written (`null`: stdout).
    pub identity_file: Option<String>,
}

impl Report for KeygenReport {
    fn render_text(&self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn run(output: Option<&Path>, json: bool) -> Result<Outcome> {
    let created = crate::layout::rfc3339(std::time::SystemTime::now());
    let (identity, recipient) = generate(&created);
    let report = KeygenReport {
        recipient: recipient.clone(),
        identity_file: output.map(|p| p.display().to_string()),
    };
    match output {
        None => {
            crate::outln!("{}", identity.expose_secret().trim_end())?;
            eprintln!("Public key: {recipient}");
            Ok(Outcome::Done)
        }
        Some(path) => {
            write_new(path, identity.expose_secret().as_bytes())?;
            eprintln!(
                "Wrote a new identity to {} (mode 0600): keep a copy away from this machine; \
                 a restore needs it.\nPublic key: {recipient}\nPut the public key in \
                 [encryption] recipients of offsite.toml.",
                path.display()
            );
            output::conclude(json, &report, Ok(()))
        }
    }
}

/// Creates `path` with mode 0600 and writes `bytes`, refusing an existing file.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::Error::new(ConfigError(format!(
                "{} exists; offsite keygen never overwrites a key: choose another --output",
                path.display()
            ))),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
