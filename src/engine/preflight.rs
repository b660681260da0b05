//! Is each provider's rclone setup right? The cheap part of `offsite check`, which backup, sync
//! and prune run before anything is uploaded or deleted: per provider, one `rclone
//! listremotes` with the provider's flags and `bwlimit` (rclone refuses an unknown flag or a bad
//! value there), and its remote's name looked up in what that lists. A wrong setup is a
//! configuration error (exit 2) naming the provider's file, never a provider that is "down".
//!
//! Nothing is sent to any remote. A provider whose remote is a local path and that has no flags
//! and no `bwlimit` has nothing to check and costs no rclone run.

use crate::config::{Config, ProviderConfig};
use crate::error::{ConfigError, Interrupted};
use crate::provider::RcloneProvider;
use anyhow::Result;
use tokio_util::sync::CancellationToken;

/// One provider whose rclone setup is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupProblem {
    pub provider: String,
    /// The provider's file (`providers.d/NAME.toml`).
    pub file: String,
    /// What is wrong and what to change.
    pub problem: String,
}

impl SetupProblem {
    pub fn describe(&self) -> String {
        format!("{}: {}", self.file, self.problem)
    }
}

/// The problems of the named providers' rclone setups, in priority order.
pub async fn rclone_setup(
    cfg: &Config,
    names: &[String],
    cancel: &CancellationToken,
) -> Result<Vec<SetupProblem>> {
    let checks = (cfg.providers.iter())
        .filter(|p| names.contains(&p.name) && worth_checking(p))
        .map(|p| check_one(cfg, p));
    let found = tokio::select! {
        r = futures::future::join_all(checks) => r,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    Ok(found.into_iter().flatten().collect())
}

/// [`rclone_setup`], as a configuration error (exit 2) listing every problem.
pub async fn require(cfg: &Config, names: &[String], cancel: &CancellationToken) -> Result<()> {
    let problems = rclone_setup(cfg, names, cancel).await?;
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems.iter().map(SetupProblem::describe).collect();
    Err(ConfigError(format!(
        "rclone cannot use {} provider(s) as configured, so nothing was uploaded or deleted:\n  {}",
        problems.len(),
        lines.join("\n  ")
    ))
    .into())
}

/// Whether rclone could refuse `p`: it names an rclone remote, or passes flags.
fn worth_checking(p: &ProviderConfig) -> bool {
    config_remote(&p.remote).is_some() || !p.flags.is_empty() || p.bwlimit.is_some()
}

/// The remote's name in rclone's config (`b2` of `b2:bucket`, `gd` of `gd,shared=true:x`);
/// `None` for a local path or an on-the-fly backend (`:s3,provider=AWS:bucket`).
pub fn config_remote(remote: &str) -> Option<String> {
    let name = crate::engine::sync::remote_name(remote)?;
    if name.starts_with(':') {
        return None;
    }
    Some(name.split(',').next().unwrap_or_default().to_string())
}

async fn check_one(cfg: &Config, p: &ProviderConfig) -> Option<SetupProblem> {
    let problem = |what: String| SetupProblem {
        provider: p.name.clone(),
        file: cfg
            .providers_dir
            .join(format!("{}.toml", p.name))
            .display()
            .to_string(),
        problem: what,
    };
    let remotes = match RcloneProvider::new(cfg, p).list_remotes().await {
        Ok(r) => r,
        Err(e) => {
            return Some(problem(format!(
            "rclone refuses this provider's settings (`flags`, `bwlimit`, or its config file): {}",
            rclone_says(&e.message)
        )))
        }
    };
    let name = config_remote(&p.remote)?;
    let known = remotes.iter().any(|r| r.trim_end_matches(':') == name)
        || std::env::var_os(format!("RCLONE_CONFIG_{}_TYPE", name.to_uppercase())).is_some();
    (!known).then(|| {
        let listed = if remotes.is_empty() {
            // Most often the wrong (or a missing) config file: another user's, or $HOME
            // not set under a service manager.
            let file = match &cfg.rclone_config {
                Some(c) => format!("{} (`rclone_config`)", c.display()),
                None => "rclone's default (`rclone config file` shows which)".to_string(),
            };
            format!("none, so its config file may be missing or not the one you meant: {file}")
        } else {
            remotes.join(" ")
        };
        problem(format!(
            "remote {:?} names {name:?}, which is not in rclone's config (remotes there: {listed}); \
             fix `remote`, or add it with `rclone config`{}",
            p.remote,
            cfg.rclone_config
                .as_ref()
                .map(|c| format!(" --config {}", c.display()))
                .unwrap_or_default()
        ))
    })
}

/// The line of rclone's complaint that says what is wrong (its usage text around it is noise):
/// the last one that mentions an error, else the last one.
fn rclone_says(message: &str) -> &str {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let last_error = lines
        .clone()
        .rev()
        .find(|l| l.to_lowercase().contains("error"));
    last_error.or(lines.next_back()).unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_remote_is_the_name_before_the_colon_without_options() {
        assert_eq!(config_remote("b2:bucket/x").as_deref(), Some("b2"));
        assert_eq!(
            config_remote("gd,shared_with_me=true:x").as_deref(),
            Some("gd")
        );
        assert_eq!(config_remote(":s3,provider=AWS:bucket"), None);
        assert_eq!(config_remote("/mnt/usb/offsite"), None);
        assert_eq!(config_remote("./rel:ative"), None);
    }

    #[test]
    fn rclone_says_picks_the_fatal_line_out_of_its_usage_text() {
        let msg = "rclone failed (exit 1): Error: unknown flag: --nosuch\nUsage:\n  rclone [flags]\n\nUse \"rclone help\"\n2026/12/03 Fatal error: unknown flag: --nosuch";
        assert_eq!(
            rclone_says(msg),
            "2026/12/03 Fatal error: unknown flag: --nosuch"
        );
        assert_eq!(rclone_says("just this"), "just this");
    }
}
