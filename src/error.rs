//! Error types that callers branch on, and the exit codes of INTERFACE.md.
//!
//! Everything else travels as `anyhow::Error` with context; [`exit_code`] looks through the
//! chain for one of the typed errors below to pick the process exit code.

use std::fmt;

/// Process exit codes (INTERFACE.md, "Exit codes").
pub mod code {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const GAPS: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const INTERRUPTED: i32 = 130;
}

/// Bad usage or an invalid configuration: nothing was touched (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Another offsite holds the lock for a dataset (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("dataset {dataset:?} is locked by another offsite (PID {pid}); wait for it to finish or stop it first")]
pub struct LockHeld {
    pub dataset: String,
    pub pid: u32,
}

/// The run was stopped by SIGINT/SIGTERM after a clean stop (exit 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted: children stopped, progress kept; run the same command again to resume")]
pub struct Interrupted;

/// Not one provider could be listed, so what is stored is unknown (exit 1).
#[derive(Debug, thiserror::Error)]
#[error(
    "no provider{} could be listed, so what is stored is unknown: {}; check the network and `offsite providers`",
    match dataset { Some(d) => format!(" of {d:?}"), None => String::new() },
    reasons.join("; ")
)]
pub struct NothingListable {
    pub dataset: Option<String>,
    /// Each provider's error, `provider: reason`.
    pub reasons: Vec<String>,
}

/// A resumed backup's source did not re-send the bytes recorded for it (exit 1).
#[derive(Debug, thiserror::Error)]
#[error(
    "the source stream differs from what unfinished backup {backup_id} recorded at shard {index} (byte {offset}): {what}; \
     nothing from the new stream was uploaded. Run `offsite backup --restart {dataset}` to discard the unfinished backup and start afresh"
)]
pub struct SourceChanged {
    pub dataset: String,
    pub backup_id: String,
    pub index: u64,
    pub offset: u64,
    pub what: String,
}

/// An encrypted backup cannot be opened with the identity at hand (exit 2): none was given,
/// it is not one of the backup's recipients, or its file cannot be read. Raised before anything
/// is written or a receiver started.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "backup {backup_id} is encrypted (to {}); pass --identity FILE or set identity_file in [encryption] of {}",
        recipients.join(", "), config.display()
    )]
    Missing {
        backup_id: String,
        recipients: Vec<String>,
        config: std::path::PathBuf,
    },
    #[error(
        "backup {backup_id} is encrypted to {}, and the identity {tried} is not one of them; pass --identity FILE with the identity of one of these recipients",
        recipients.join(", ")
    )]
    Wrong {
        backup_id: String,
        /// `Identities::describe()`: "FILE (age1...)".
        tried: String,
        recipients: Vec<String>,
    },
    /// The identity file cannot be read, holds no identity, or its passphrase is wrong: the
    /// keys module's message.
    #[error("{0}")]
    Unreadable(String),
}

/// How a provider operation failed, which decides whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying: network trouble, rclone exit 5, a timeout.
    Transient,
    /// Retrying will not help: bad remote, quota, rclone exit 6/7.
    Permanent,
    /// The object or directory does not exist.
    NotFound,
    /// The run was asked to stop (SIGINT/SIGTERM/SIGHUP) before the operation ended.
    Interrupted,
}

/// A failed operation on one provider.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProviderError {
    pub provider: String,
    pub op: &'static str,
    pub path: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl ProviderError {
    pub fn new(
        provider: &str,
        op: &'static str,
        path: &str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        ProviderError {
            provider: provider.to_string(),
            op,
            path: path.to_string(),
            kind,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider {}: {} {}: {}",
            self.provider,
            self.op,
            self.path,
            self.message.trim_end()
        )
    }
}

/// Maps an error chain to the exit code INTERFACE.md gives for it.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<ConfigError>() || cause.is::<IdentityError>() {
            return code::USAGE;
        }
        if cause.is::<LockHeld>() {
            return code::LOCKED;
        }
        if cause.is::<Interrupted>() {
            return code::INTERRUPTED;
        }
        if let Some(p) = cause.downcast_ref::<ProviderError>() {
            if p.kind == ErrorKind::Interrupted {
                return code::INTERRUPTED;
            }
        }
    }
    code::FAILED
}

/// Whether the error comes from writing a report to a closed stdout (`offsite list | head -1`,
/// see `ui::out`): the reader has all it wanted, so this ends the run quietly, as ripgrep does.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<crate::ui::StdoutClosed>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_looks_through_context() {
        let e = anyhow::Error::new(LockHeld {
            dataset: "d".into(),
            pid: 7,
        })
        .context("backup of d");
        assert_eq!(exit_code(&e), code::LOCKED);
        let e: anyhow::Result<()> = Err(ConfigError("x".into())).context("loading");
        assert_eq!(exit_code(&e.unwrap_err()), code::USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("boom")), code::FAILED);
    }

    #[test]
    fn broken_pipe_is_found_through_context_and_interrupted_providers_exit_130() {
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, crate::ui::StdoutClosed);
        let e: anyhow::Result<()> = Err(closed).context("printing the table");
        assert!(is_broken_pipe(&e.unwrap_err()));
        assert!(!is_broken_pipe(&anyhow::anyhow!("boom")));
        // A restore stream cut short is a failure, not a quiet end.
        let stream = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(!is_broken_pipe(&stream));
        let p = ProviderError::new("p", "list", "", ErrorKind::Interrupted, "interrupted");
        assert_eq!(
            exit_code(&anyhow::Error::new(p).context("status")),
            code::INTERRUPTED
        );
    }
}
