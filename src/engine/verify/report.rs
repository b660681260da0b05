//! `verify`'s typed report: every finished backup (and every damaged one) on each provider in
//! scope, with what a deep check could not read, the unfinished backups it skipped, and the
//! exit-3 summary of what it found. Built from the gap findings and the deep check; no I/O.

use super::DeepReport;
use crate::catalog::{BackupKey, Catalog};
use crate::engine::status::{
    describe, describe_damaged, lost_summary, provider_state, shard_count, CopyState,
};
use crate::gaps::{BackupFindings, ManifestState, ProviderFindings, Strength};
use crate::layout::BackupKind;
use serde::Serialize;

/// `offsite verify`.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub host: String,
    pub deep: bool,
    pub backups: Vec<VerifiedBackup>,
    /// Backups with no manifest yet: not verified.
    pub unfinished: Vec<UnfinishedBackup>,
    /// Providers that could not be listed.
    pub unreachable: Vec<String>,
    /// Bytes a deep check hashed; `None` without `--deep`.
    pub checked_bytes: Option<u64>,
    /// Shards of compressed or encrypted backups decoded and checked by plaintext SHA-256;
    /// `None` without `--decrypt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decrypted: Option<u64>,
    /// Shards of erasure-coded backups that `--decrypt` could not join and decode from `k`
    /// good pieces (a restore would fail on them: exit 1).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecodable: Vec<UndecodableShard>,
    /// Datasets whose newest complete backup is older than their `max_age`, or that have none.
    pub stale: Vec<crate::engine::stale::Stale>,
    /// What verify found wrong and what to do (exit 3); `None` when nothing.
    #[serde(skip)]
    pub problems: Option<String>,
    /// Erasure-coded backups that cannot be restored and what to do (exit 1).
    #[serde(skip)]
    pub lost: Option<String>,
}

/// A finished backup, or one whose manifests cannot be trusted.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum VerifiedBackup {
    Finished(FinishedBackup),
    Damaged(DamagedBackup),
}

#[derive(Debug, Serialize)]
pub struct FinishedBackup {
    pub dataset: String,
    pub backup_id: String,
    pub kind: BackupKind,
    /// Complete when every copy in scope is.
    pub state: CopyState,
    pub shards: usize,
    /// Erasure-coded backups: shards at full strength, degraded and lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<Strength>,
    pub providers: Vec<VerifiedCopy>,
}

/// One provider's copy of a finished backup.
#[derive(Debug, Serialize)]
pub struct VerifiedCopy {
    pub provider: String,
    pub state: CopyState,
    /// Erasure-coded backups: the pieces placement puts on this provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<u64>,
    /// Shards (pieces, for an erasure-coded backup) a deep check hashed good.
    pub checked_shards: u64,
    pub missing_shards: Vec<u64>,
    #[serde(rename = "truncated_shards")]
    pub wrong_size_shards: Vec<u64>,
    pub corrupt_shards: Vec<u64>,
    /// Shards a deep check could not download.
    pub unreadable_shards: Vec<u64>,
    pub unexpected_objects: Vec<String>,
    pub manifest: ManifestState,
    /// The copy in a few words, for the text table.
    #[serde(skip)]
    pub result: String,
}

#[derive(Debug, Serialize)]
pub struct DamagedBackup {
    pub dataset: String,
    pub backup_id: String,
    pub kind: BackupKind,
    /// Always [`CopyState::Damaged`].
    pub state: CopyState,
    /// Why no manifest can be trusted.
    pub error: String,
    pub providers: Vec<DamagedCopy>,
}

/// One provider's copy of a damaged backup.
#[derive(Debug, Serialize)]
pub struct DamagedCopy {
    pub provider: String,
    /// Always [`CopyState::Damaged`].
    pub state: CopyState,
    pub manifest: ManifestState,
    pub manifest_error: Option<String>,
    /// The copy in a few words, for the text table.
    #[serde(skip)]
    pub result: String,
}

#[derive(Debug, Serialize)]
pub struct UnfinishedBackup {
    pub dataset: String,
    pub backup_id: String,
}

/// Which providers' copies a verify looks at.
#[derive(Debug, Clone, Copy)]
pub struct VerifyScope<'a> {
    /// `--provider`: this one only (configured for the backup or not); else every provider
    /// expected to hold a backup.
    pub only: Option<&'a str>,
    /// The deep check's findings, with `--deep`.
    pub deep: Option<&'a DeepReport>,
}

impl VerifyScope<'_> {
    fn covers(&self, p: &ProviderFindings) -> bool {
        self.only.map_or(p.expected, |o| p.provider == o)
    }
}

/// What verify found in `surveys` (findings after the deep check, if any).
pub fn verify_report(
    catalog: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    scope: VerifyScope,
) -> VerifyReport {
    let mut problems = Vec::new();
    let mut backups = Vec::new();
    let undecodable: Vec<UndecodableShard> = (scope.deep.into_iter())
        .flat_map(|d| &d.undecodable)
        .map(|(k, shard, error)| UndecodableShard {
            dataset: k.dataset.clone(),
            backup_id: k.id.to_string(),
            shard: *shard,
            error: error.clone(),
        })
        .collect();
    for (key, f) in surveys.iter().filter(|(_, f)| f.is_finished()) {
        backups.push(finished_backup(key, f, scope, &mut problems));
    }
    for (key, f) in surveys.iter().filter(|(_, f)| !f.is_finished()) {
        let Some(why) = &f.damaged else { continue };
        problems.push(format!("backup {} of {:?}: {why}", key.id, key.dataset));
        backups.push(damaged_backup(key, f, why, scope));
    }
    for p in catalog.unreachable.keys() {
        if scope.only.is_none_or(|o| o == p) {
            problems.push(format!("provider {p} could not be listed"));
        }
    }
    VerifyReport {
        host: catalog.host.clone(),
        deep: scope.deep.is_some(),
        backups,
        unfinished: surveys
            .iter()
            .filter(|(_, f)| f.is_unfinished())
            .map(|(k, _)| UnfinishedBackup {
                dataset: k.dataset.clone(),
                backup_id: k.id.to_string(),
            })
            .collect(),
        unreachable: catalog.unreachable.keys().cloned().collect(),
        checked_bytes: scope.deep.map(|d| d.bytes),
        decrypted: scope.deep.and_then(|d| d.decoded),
        undecodable: undecodable.clone(),
        stale: Vec::new(),
        problems: summary(problems),
        lost: add_undecodable(lost_summary(surveys), &undecodable),
    }
}

/// A shard of an erasure-coded backup that did not decode from `k` good pieces.
#[derive(Debug, Clone, Serialize)]
pub struct UndecodableShard {
    pub dataset: String,
    pub backup_id: String,
    pub shard: u64,
    pub error: String,
}

fn add_undecodable(lost: Option<String>, shards: &[UndecodableShard]) -> Option<String> {
    let more = shards.iter().map(|u| {
        format!(
            "shard {} of backup {} of {:?} does not decode from good pieces ({}): a restore fails \
             on it; run `offsite backup` of {:?} again",
            u.shard, u.backup_id, u.dataset, u.error, u.dataset
        )
    });
    let all: Vec<String> = lost.into_iter().chain(more).collect();
    (!all.is_empty()).then(|| all.join("; "))
}

fn finished_backup(
    key: &BackupKey,
    f: &BackupFindings,
    scope: VerifyScope,
    problems: &mut Vec<String>,
) -> VerifiedBackup {
    let mut providers = Vec::new();
    for p in f.providers.iter().filter(|p| scope.covers(p)) {
        let copy = verified_copy(key, p, scope.deep);
        if !p.is_whole() || !copy.unreadable_shards.is_empty() {
            problems.push(format!(
                "backup {} of {:?} on {}: {}{}",
                key.id,
                key.dataset,
                p.provider,
                describe(p, true),
                bad_pieces(f, p)
            ));
        }
        providers.push(copy);
    }
    let whole = providers.iter().all(|p| p.state == CopyState::Complete);
    VerifiedBackup::Finished(FinishedBackup {
        dataset: key.dataset.clone(),
        backup_id: key.id.to_string(),
        kind: key.id.kind,
        state: if whole {
            CopyState::Complete
        } else {
            CopyState::Incomplete
        },
        shards: shard_count(f),
        strength: f.strength.clone(),
        providers,
    })
}

/// For an erasure-coded backup, the pieces on `p` that are there but bad, by shard and object
/// name (` (shard 1 s000001-....p2of3 corrupt)`); empty otherwise.
fn bad_pieces(f: &BackupFindings, p: &ProviderFindings) -> String {
    if p.pieces.is_none() {
        return String::new();
    }
    let named = |what: &'static str| {
        move |&i: &u64| {
            let name = p.object(f, i).map_or("?", |r| r.name.as_str());
            format!("shard {i} piece {name} {what}")
        }
    };
    let bad: Vec<String> = (p.corrupt_shards.iter().map(named("corrupt")))
        .chain(p.wrong_size_shards.iter().map(named("truncated")))
        .take(5)
        .collect();
    match bad.is_empty() {
        true => String::new(),
        false => format!(" ({})", bad.join(", ")),
    }
}

fn verified_copy(key: &BackupKey, p: &ProviderFindings, deep: Option<&DeepReport>) -> VerifiedCopy {
    let unreadable: Vec<u64> = deep
        .and_then(|d| d.unreadable.get(key))
        .and_then(|m| m.get(&p.provider))
        .map(|v| v.iter().map(|(i, _)| *i).collect())
        .unwrap_or_default();
    let checked = deep
        .and_then(|d| d.good.get(key))
        .and_then(|m| m.get(&p.provider))
        .copied()
        .unwrap_or(0);
    let mut result = describe(p, true);
    if !unreadable.is_empty() {
        result.push_str(&format!(", {} unreadable", unreadable.len()));
    }
    if deep.is_some() && p.reachable {
        let unit = if p.pieces.is_some() {
            "pieces"
        } else {
            "shards"
        };
        result.push_str(&format!(" ({checked} {unit} hashed)"));
    }
    VerifiedCopy {
        provider: p.provider.clone(),
        state: match provider_state(p, true) {
            CopyState::Complete if !unreadable.is_empty() => CopyState::Unverified,
            s => s,
        },
        pieces: p.pieces,
        checked_shards: checked,
        missing_shards: p.missing_shards.clone(),
        wrong_size_shards: p.wrong_size_shards.clone(),
        corrupt_shards: p.corrupt_shards.clone(),
        unreadable_shards: unreadable,
        unexpected_objects: p.unexpected_objects.clone(),
        manifest: p.manifest,
        result,
    }
}

fn damaged_backup(
    key: &BackupKey,
    f: &BackupFindings,
    why: &str,
    scope: VerifyScope,
) -> VerifiedBackup {
    let copy = |p: &ProviderFindings| DamagedCopy {
        provider: p.provider.clone(),
        state: CopyState::Damaged,
        manifest: p.manifest,
        manifest_error: p.manifest_error.clone(),
        result: describe_damaged(p),
    };
    VerifiedBackup::Damaged(DamagedBackup {
        dataset: key.dataset.clone(),
        backup_id: key.id.to_string(),
        kind: key.id.kind,
        state: CopyState::Damaged,
        error: why.to_string(),
        providers: f
            .providers
            .iter()
            .filter(|p| scope.covers(p))
            .map(copy)
            .collect(),
    })
}

/// The exit-3 message: the first ten problems and what to do; `None` when there are none.
fn summary(problems: Vec<String>) -> Option<String> {
    if problems.is_empty() {
        return None;
    }
    let n = problems.len();
    let mut shown: Vec<String> = problems.into_iter().take(10).collect();
    if n > 10 {
        shown.push(format!("and {} more", n - 10));
    }
    Some(format!(
        "verify found problems: {}; run `offsite sync` (with --deep for corrupt shards) to repair them",
        shown.join("; ")
    ))
}
