//! `offsite init`: a commented `offsite.toml` and one example provider in the config
//! directory, so that a first configuration starts from a file that loads, not from snippets.
//!
//! Never overwrites: if either file exists, nothing is written and the run exits 2.

use super::Outcome;
use crate::error::ConfigError;
use crate::output::{self, Report};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The commented configuration `init` writes (also shipped as an example in the package).
pub const CONFIG_TEMPLATE: &str = include_str!("../../examples/offsite.toml");
/// The example provider: a local disk, which needs no rclone remote configured.
pub const PROVIDER_TEMPLATE: &str = include_str!("../../providers.d/usb.toml");

#[derive(serde::Serialize)]
pub struct InitReport {
    /// The configuration file written.
    pub config: String,
    /// The example provider file written.
    pub provider: String,
}

impl Report for InitReport {
    fn render_text(&self) -> std::io::Result<()> {
        crate::outln!("wrote {}", self.config)?;
        crate::outln!("wrote {}", self.provider)?;
        crate::outln!("next:")?;
        crate::outln!("  1. edit both files: your datasets, and where the usb provider writes")?;
        crate::outln!("  2. offsite check              the config and every provider's setup")?;
        crate::outln!("  3. offsite backup --dry-run   what a backup would do")?;
        crate::outln!("  4. offsite backup --once      the first backup")
    }
}

pub fn run(explicit: Option<&Path>, json: bool) -> Result<Outcome> {
    let config = target(explicit)?;
    let dir = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let provider = dir.join("providers.d").join("usb.toml");
    for f in [&config, &provider] {
        if f.exists() || f.is_symlink() {
            return Err(ConfigError(format!(
                "{} exists: offsite init never overwrites a file. Edit it, or move it away and \
                 run offsite init again (--config PATH writes elsewhere)",
                f.display()
            ))
            .into());
        }
    }
    write_new(&config, CONFIG_TEMPLATE)?;
    write_new(&provider, PROVIDER_TEMPLATE)?;
    let report = InitReport {
        config: config.display().to_string(),
        provider: provider.display().to_string(),
    };
    output::conclude(json, &report, Ok(()))
}

/// Where the configuration goes: `--config`, else `$OFFSITE_CONFIG`, else the first place
/// offsite looks for it (`/etc/offsite` as root, `~/.config/offsite` for anyone else).
fn target(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("OFFSITE_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/etc/offsite/offsite.toml"));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        ConfigError("HOME is not set: pass --config PATH to say where the config goes".into())
    })?;
    Ok(PathBuf::from(home).join(".config/offsite/offsite.toml"))
}

/// Creates `path` (and its directory) with `text`; fails if it appeared meanwhile.
fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template loads with offsite's own config loader, as `init` writes it.
    #[test]
    fn the_written_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("offsite.toml");
        run(Some(&config), true).unwrap();
        let cfg = crate::config::Config::load(&config, None).unwrap();
        assert_eq!(cfg.providers.len(), 1);
        assert_eq!(cfg.providers[0].name, "usb");
        assert!(cfg.dataset("example").is_some());
    }

    #[test]
    fn a_second_init_refuses_and_leaves_the_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("offsite.toml");
        run(Some(&config), true).unwrap();
        std::fs::write(&config, "mine").unwrap();
        let e = run(Some(&config), true).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::code::USAGE);
        assert!(e.to_string().contains("never overwrites"), "{e}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "mine");
    }
}
