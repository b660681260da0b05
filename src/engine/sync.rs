//! Sync: fill every provider's gaps from providers that hold a good copy, repair one provider,
//! or migrate everything one provider holds to another.
//!
//! [`run`] is the one entry point: it lists the providers, plans ([`plan`], pure, findings in,
//! copies out, STYLE.md §10), and either hands back the plan (`--dry-run`) or does the copies
//! ([`execute`]) and, for a migration, verifies the destination and removes the source
//! (`migrate`). Guarantees:
//! - Only the destinations a plan names are written to; sources are only read, and a
//!   migration's source is deleted from only with `--remove-source`, once everything migrated
//!   was verified at the destination, and never when the two are the same storage.
//! - A source is a provider whose object has the right size and was not found corrupt. When
//!   the bytes pass through this machine they are checked against the manifest's SHA-256
//!   before any upload, so a bad copy is never spread; the next source is tried instead.
//! - Server-side copies (`rclone copyto`) are used when source and destination live on the same
//!   rclone remote ([`RemoteId`]). They check sizes only (afterwards, from a listing); run
//!   `sync --deep` to hash-check the sources first.
//! - Memory: at most `shards_in_flight` shards are held at once, one buffer per shard however
//!   many destinations it goes to. Transfers per provider are bounded by its `Limit` layer.
//! - Manifests last: a manifest is written to a provider only after one listing shows that it
//!   holds every shard at the right size. Unfinished backups get their shards, never a manifest.
//! - A late step's failure (checking or emptying a migration's source) comes back next to the
//!   report of the copies already done ([`SyncRun::Done`]), so that report is never lost.

mod execute;
mod migrate;
mod plan;
mod rebuild;
mod relocate;
mod run;

pub use execute::execute;
pub use migrate::{remove_source, verify_migration, MigrationCheck};
pub use plan::plan;
pub use rebuild::{PieceAt, RebuildJob};
pub use run::{run, SyncContext, SyncRequest, SyncRun};

use super::verify::Limits;
use crate::catalog::BackupKey;
use crate::config::ProviderConfig;
use crate::manifest::Manifest;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a sync run brings up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Every provider that should hold a backup.
    All,
    /// Only this provider.
    Repair(String),
    /// Everything `from` holds goes to `to`, whether `to` is listed by a dataset or not.
    Migrate { from: String, to: String },
}

impl Mode {
    /// The providers this mode names on the command line.
    pub fn named(&self) -> Vec<&str> {
        match self {
            Mode::All => vec![],
            Mode::Repair(n) => vec![n],
            Mode::Migrate { from, to } => vec![from, to],
        }
    }
}

/// One shard to copy to one or more destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    pub key: BackupKey,
    pub index: u64,
    pub name: String,
    pub length: u64,
    pub sha256: Option<String>,
    /// Providers with a copy of the right size, in the order to try them.
    pub sources: Vec<String>,
    pub dests: Vec<String>,
}

/// A manifest to write once its shards are in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestJob {
    pub key: BackupKey,
    pub manifest: Arc<Manifest>,
    /// The provider the trusted manifest came from.
    pub from: String,
    pub dests: Vec<String>,
    /// A migration's destination: the manifest is written nowhere until every object it
    /// places there is confirmed by its listing (the relocated manifest names it as a holder).
    pub gate: Option<String>,
}

/// A gap no provider can fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfillable {
    pub key: BackupKey,
    pub object: String,
    pub dest: String,
    pub reason: String,
}

/// What a sync would copy: [`plan`]'s result, [`execute`]'s input.
#[derive(Debug, Default)]
pub struct SyncPlan {
    pub copies: Vec<CopyJob>,
    /// Erasure-coded shards whose missing pieces are rebuilt from `k` others.
    pub rebuilds: Vec<RebuildJob>,
    pub manifests: Vec<ManifestJob>,
    pub unfillable: Vec<Unfillable>,
}

impl SyncPlan {
    /// Bytes to move: each shard once per destination.
    pub fn bytes(&self) -> u64 {
        self.copies
            .iter()
            .map(|c| c.length * c.dests.len() as u64)
            .sum::<u64>()
            + self.rebuilds.iter().map(RebuildJob::bytes).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.rebuilds.is_empty() && self.manifests.is_empty()
    }

    /// The plan as `--dry-run` reports it: one entry per object and destination.
    pub fn dry_run(&self) -> SyncDryRun {
        let rebuilt: Vec<CopyJob> = (self.rebuilds.iter())
            .flat_map(|r| r.missing.iter().map(|p| r.as_copy(p)))
            .collect();
        let shards = self.copies.iter().chain(&rebuilt).flat_map(|c| {
            c.dests.iter().map(|d| PlannedCopy {
                dataset: c.key.dataset.clone(),
                backup_id: c.key.id.to_string(),
                object: c.name.clone(),
                from: c.sources[0].clone(),
                to: d.clone(),
                bytes: Some(c.length),
            })
        });
        let manifests = self.manifests.iter().flat_map(|m| {
            m.dests.iter().map(|d| PlannedCopy {
                dataset: m.key.dataset.clone(),
                backup_id: m.key.id.to_string(),
                object: crate::layout::MANIFEST.to_string(),
                from: m.from.clone(),
                to: d.clone(),
                bytes: None,
            })
        });
        let failed = self.unfillable.iter();
        SyncDryRun {
            dry_run: true,
            planned: shards.chain(manifests).collect(),
            copied: Vec::new(),
            failed: failed
                .map(|u| Failed::new(&u.key, &u.object, &u.dest, u.reason.clone()))
                .collect(),
            bytes: self.bytes(),
        }
    }
}

/// `--dry-run`'s report: what would be copied, and the gaps no provider can fill.
#[derive(Debug, Serialize)]
pub struct SyncDryRun {
    /// Always true.
    pub dry_run: bool,
    /// Shards first, then manifests (`bytes` null).
    pub planned: Vec<PlannedCopy>,
    /// Always empty: nothing is copied.
    pub copied: Vec<Copied>,
    pub failed: Vec<Failed>,
    /// Bytes that would be written: each shard once per destination.
    pub bytes: u64,
}

/// One object a dry run would copy to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedCopy {
    pub dataset: String,
    pub backup_id: String,
    pub object: String,
    /// The first source to try.
    pub from: String,
    pub to: String,
    /// The shard's length; `None` for a manifest.
    pub bytes: Option<u64>,
}

/// Where a provider lives, to decide whether two providers can copy server-side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteId {
    /// The rclone remote (config name or connection string) and the provider's extra flags;
    /// `None` for this machine's own disks, where copying through memory costs the same and
    /// checks the hash too.
    pub backend: Option<String>,
    /// The provider's remote root, what `rclone copyto` is given as the source.
    pub root: String,
}

impl RemoteId {
    pub fn of(p: &ProviderConfig) -> RemoteId {
        RemoteId {
            backend: remote_name(&p.remote).map(|n| format!("{n}\u{0} {}", p.flags.join(" "))),
            root: p.remote.clone(),
        }
    }
}

/// The rclone remote of a remote path: `b2` for `b2:bucket/x`, the connection string's
/// backend part for `:s3,provider=AWS:bucket` (quotes respected, as rclone does); `None` for a
/// plain local path or `:local:`.
pub fn remote_name(remote: &str) -> Option<String> {
    let mut quote = None;
    for (i, c) in remote.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, ':') if i > 0 => {
                let name = &remote[..i];
                let local = name == ":local" || name.starts_with(":local,");
                return (!local).then(|| name.to_string());
            }
            (None, '/') => return None,
            _ => {}
        }
    }
    None
}

/// How [`execute`] runs.
pub struct Options {
    pub host: String,
    pub limits: Limits,
    /// Provider name to where it lives; providers missing here never copy server-side.
    pub remotes: BTreeMap<String, RemoteId>,
    /// Where a manifest waits while it is written (`spool_dir`; `None`: the system's temp
    /// folder).
    pub spool_dir: Option<std::path::PathBuf>,
}

impl Options {
    /// The source root for a server-side copy from `src` to `dst`, if they share a remote.
    fn route(&self, src: &str, dst: &str) -> Option<&str> {
        let (s, d) = (self.remotes.get(src)?, self.remotes.get(dst)?);
        (s.backend.is_some() && s.backend == d.backend).then_some(s.root.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub dataset: String,
    pub backup_id: String,
    pub object: String,
    pub from: String,
    pub to: String,
    pub bytes: u64,
    pub server_side: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failed {
    pub dataset: String,
    pub backup_id: String,
    pub object: String,
    pub to: String,
    pub error: String,
}

impl Failed {
    fn new(key: &BackupKey, object: &str, to: &str, error: impl Into<String>) -> Failed {
        Failed {
            dataset: key.dataset.clone(),
            backup_id: key.id.to_string(),
            object: object.to_string(),
            to: to.to_string(),
            error: error.into(),
        }
    }
}

/// What a sync did.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    /// Always false: a dry run reports a [`SyncDryRun`].
    pub dry_run: bool,
    pub copied: Vec<Copied>,
    pub failed: Vec<Failed>,
    /// Bytes written to destinations (server-side copies included).
    pub bytes: u64,
    /// A migration's end; `None` for other syncs, and when the destination could not be checked.
    pub migration: Option<MigrationSummary>,
    /// Providers that could not be listed, so their gaps were not filled (a sync of every
    /// provider only: a repair or migration needs its named providers listed).
    #[serde(skip)]
    pub unreachable: Vec<String>,
}

/// What a migration did after its copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationSummary {
    /// Backups checked whole at the destination, every shard by size and SHA-256.
    pub verified_backups: usize,
    /// Objects deleted from the source (`--remove-source`).
    pub removed_objects: Option<u64>,
}

#[cfg(test)]
mod tests;
