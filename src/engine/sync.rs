//! Sync: fill every provider's gaps from providers that hold a good copy, repair one provider,
//! or migrate everything one provider holds to another.
//!
//! [`plan`] is pure (findings in, copies out, STYLE.md §10); [`execute`] does the copies and
//! [`verify_migration`] checks a migration's destination. Guarantees:
//! - Only the destinations a plan names are written to; sources are only read.
//! - A source is a provider whose object has the right size and was not found corrupt. When
//!   the bytes pass through this machine they are checked against the manifest's SHA-256
//!   before any upload, so a bad copy is never spread; the next source is tried instead.
//! - Server-side copies (`rclone copyto`) are used when source and destination live on the same
//!   rclone remote ([`RemoteId`]). They check sizes only (afterwards, from a listing); run
//!   `sync --deep` to hash-check the sources first.
//! - Memory: at most `shards_in_flight` shards are held at once, one buffer per shard however
//!   many destinations it goes to; at most `concurrency` transfers per provider.
//! - Manifests last: a manifest is written to a provider only after one listing shows that it
//!   holds every shard at the right size. Unfinished backups get their shards, never a manifest.

mod execute;
mod migrate;

pub use execute::execute;
pub use migrate::{remove_source, verify_migration, MigrationCheck};

use super::verify::Limits;
use crate::catalog::{BackupKey, Catalog};
use crate::config::ProviderConfig;
use crate::gaps::{BackupFindings, ManifestState};
use crate::layout;
use crate::manifest::Manifest;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
}

/// A gap no provider can fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfillable {
    pub key: BackupKey,
    pub object: String,
    pub dest: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub copies: Vec<CopyJob>,
    pub manifests: Vec<ManifestJob>,
    pub unfillable: Vec<Unfillable>,
}

impl Plan {
    /// Bytes to move: each shard once per destination.
    pub fn bytes(&self) -> u64 {
        self.copies
            .iter()
            .map(|c| c.length * c.dests.len() as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty() && self.manifests.is_empty()
    }
}

/// Decides what to copy where. Unreachable providers are neither sources nor destinations.
pub fn plan(catalog: &Catalog, surveys: &[(BackupKey, BackupFindings)], mode: &Mode) -> Plan {
    let mut out = Plan::default();
    for (key, f) in surveys {
        let dests: Vec<&str> = match mode {
            Mode::All => f
                .providers
                .iter()
                .filter(|p| p.expected && p.reachable)
                .map(|p| p.provider.as_str())
                .collect(),
            Mode::Repair(name) => f
                .providers
                .iter()
                .filter(|p| p.expected && p.reachable && p.provider == *name)
                .map(|p| p.provider.as_str())
                .collect(),
            Mode::Migrate { from, to } => {
                let holds = catalog.backups[key]
                    .objects
                    .get(from)
                    .is_some_and(|o| !o.is_empty());
                if holds && f.provider(to).is_none_or(|p| p.reachable) {
                    vec![to.as_str()]
                } else {
                    vec![]
                }
            }
        };
        if dests.is_empty() {
            continue;
        }
        plan_backup(catalog, key, f, &dests, mode, &mut out);
    }
    out
}

fn plan_backup(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    dests: &[&str],
    mode: &Mode,
    out: &mut Plan,
) {
    let bad: HashMap<&str, BTreeSet<u64>> = f
        .providers
        .iter()
        .filter(|p| p.reachable)
        .map(|p| (p.provider.as_str(), p.bad_shards()))
        .collect();
    let mut sources: Vec<&str> = bad.keys().copied().collect();
    sources.sort_by_key(|s| f.providers.iter().position(|p| p.provider == *s));
    if let Mode::Migrate { from, .. } = mode {
        sources.sort_by_key(|s| *s != from.as_str());
    }
    // A destination not in the findings holds nothing of this backup.
    let needs = |d: &str, i: u64| bad.get(d).is_none_or(|b| b.contains(&i));
    for r in &f.reference {
        let ds: Vec<String> = dests
            .iter()
            .filter(|d| needs(d, r.index))
            .map(|d| d.to_string())
            .collect();
        if ds.is_empty() {
            continue;
        }
        let srcs: Vec<String> = sources
            .iter()
            .filter(|s| !bad[**s].contains(&r.index))
            .map(|s| s.to_string())
            .collect();
        if srcs.is_empty() {
            out.unfillable.extend(ds.into_iter().map(|dest| Unfillable {
                key: key.clone(),
                object: r.name.clone(),
                dest,
                reason: "no provider holds a good copy".into(),
            }));
            continue;
        }
        out.copies.push(CopyJob {
            key: key.clone(),
            index: r.index,
            name: r.name.clone(),
            length: r.length,
            sha256: r.sha256.clone(),
            sources: srcs,
            dests: ds,
        });
    }
    if let Mode::Migrate { from, to } = mode {
        plan_migrate_tail(catalog, key, f, from, to, out);
    }
    let entry = &catalog.backups[key];
    let Some((from, m)) = entry.manifest(&catalog.order) else {
        return;
    };
    let ds: Vec<String> = dests
        .iter()
        .filter(|d| {
            f.provider(d)
                .is_none_or(|p| p.manifest != ManifestState::Good)
        })
        .map(|d| d.to_string())
        .collect();
    if !ds.is_empty() {
        out.manifests.push(ManifestJob {
            key: key.clone(),
            manifest: Arc::new(m.clone()),
            from: from.to_string(),
            dests: ds,
        });
    }
}

/// A migration copies everything `from` holds: for an unfinished backup that includes shards
/// whose length the names cannot prove yet (taken at `from`'s size; checked at `to` against
/// `from`'s content).
fn plan_migrate_tail(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    from: &str,
    to: &str,
    out: &mut Plan,
) {
    if f.is_finished() {
        return;
    }
    let known: HashSet<&str> = f.reference.iter().map(|r| r.name.as_str()).collect();
    let entry = &catalog.backups[key];
    let at_to = entry.objects.get(to);
    for (name, &size) in entry.objects.get(from).into_iter().flatten() {
        let Some((index, _)) = layout::parse_shard_name(name) else {
            continue;
        };
        if known.contains(name.as_str()) || at_to.and_then(|o| o.get(name)) == Some(&size) {
            continue;
        }
        out.copies.push(CopyJob {
            key: key.clone(),
            index,
            name: name.clone(),
            length: size,
            sha256: None,
            sources: vec![from.to_string()],
            dests: vec![to.to_string()],
        });
    }
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

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub copied: Vec<Copied>,
    pub failed: Vec<Failed>,
    /// Bytes written to destinations (server-side copies included).
    pub bytes: u64,
}

#[cfg(test)]
mod tests;
