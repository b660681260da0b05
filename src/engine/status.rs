//! The survey `status` and `verify` share, read from the gap findings ([`crate::gaps`]): each
//! backup's and each provider copy's state in one word, a copy described in a few words (the
//! table cells and the exit-3 message use the same words), and `status`'s typed report with its
//! exit-3 summary. No I/O.

use crate::catalog::{BackupKey, Catalog};
use crate::config::units::human_bytes;
use crate::gaps::{BackupFindings, ManifestState, ProviderFindings, Strength};
use crate::layout::BackupKind;
use serde::Serialize;

/// A backup's, or one provider's copy of it, state in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    Complete,
    Incomplete,
    Unfinished,
    Unreachable,
    Damaged,
    /// Looks complete, but a deep check could not read some shards.
    Unverified,
    /// Complete, but its stream had 0 bytes (a command that printed nothing and exited 0).
    Empty,
}

impl CopyState {
    /// The word, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Complete => "complete",
            CopyState::Incomplete => "incomplete",
            CopyState::Unfinished => "unfinished",
            CopyState::Unreachable => "unreachable",
            CopyState::Damaged => "damaged",
            CopyState::Unverified => "unverified",
            CopyState::Empty => "empty",
        }
    }
}

/// A provider's copy of a backup (`finished`: it has a trusted manifest).
pub fn provider_state(p: &ProviderFindings, finished: bool) -> CopyState {
    match (p.reachable, finished, p.is_whole()) {
        (false, _, _) => CopyState::Unreachable,
        (true, false, _) => CopyState::Unfinished,
        (true, true, true) => CopyState::Complete,
        (true, true, false) => CopyState::Incomplete,
    }
}

/// A backup, over every provider.
pub fn backup_state(f: &BackupFindings) -> CopyState {
    if f.damaged.is_some() {
        return CopyState::Damaged;
    }
    match (f.is_finished(), f.has_gaps()) {
        (false, _) => CopyState::Unfinished,
        (true, false) => CopyState::Complete,
        (true, true) => CopyState::Incomplete,
    }
}

/// The state a backup is shown with, in `status` and `list` alike: [`backup_state`], and
/// `empty` for a complete backup of a 0-byte stream.
pub fn backup_word(f: &BackupFindings) -> CopyState {
    match backup_state(f) {
        CopyState::Complete if f.total_bytes == Some(0) => CopyState::Empty,
        state => state,
    }
}

/// What one provider's copy of a backup is, in a few words (`complete`, `missing 2 shards,
/// 1 truncated`, ...); in parentheses when the provider is not expected to hold it.
pub fn describe(p: &ProviderFindings, finished: bool) -> String {
    if !p.reachable {
        return "unreachable".into();
    }
    let mut parts = Vec::new();
    if !finished {
        parts.push(format!(
            "unfinished: {} shards, {}",
            p.held.shards,
            human_bytes(p.held.bytes)
        ));
    } else if !p.missing_shards.is_empty() {
        let n = p.missing_shards.len();
        parts.push(match p.pieces {
            Some(of) => format!("missing {n} of {of} pieces"),
            None => format!("missing {n} shard{}", if n == 1 { "" } else { "s" }),
        });
    }
    for (n, what) in [
        (p.wrong_size_shards.len(), "truncated"),
        (p.corrupt_shards.len(), "corrupt"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if finished {
        parts.extend(manifest_words(p.manifest));
        if parts.is_empty() {
            parts.push(match p.pieces {
                Some(n) => format!("complete, {n} pieces"),
                None => "complete".into(),
            });
        }
    }
    if !p.unexpected_objects.is_empty() {
        parts.push(format!("{} unexpected", p.unexpected_objects.len()));
    }
    let text = parts.join(", ");
    if p.expected {
        text
    } else {
        format!("({text})")
    }
}

fn manifest_words(m: ManifestState) -> Option<String> {
    match m {
        ManifestState::Good => None,
        ManifestState::Missing => Some("no manifest".into()),
        ManifestState::Bad => Some("bad manifest".into()),
        ManifestState::Disagrees => Some("conflicting manifest".into()),
    }
}

/// What one provider's copy of a backup whose manifests cannot be trusted is.
pub fn describe_damaged(p: &ProviderFindings) -> String {
    match (p.reachable, p.manifest) {
        (false, _) => "unreachable",
        (true, ManifestState::Bad) => "damaged manifest",
        (true, ManifestState::Disagrees | ManifestState::Good) => "disputed manifest",
        (true, ManifestState::Missing) => "no manifest",
    }
    .into()
}

/// `offsite status`: every backup x every provider.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub host: String,
    pub backups: Vec<BackupStatus>,
    /// Providers that could not be listed.
    pub unreachable: Vec<String>,
    /// Every provider in priority order.
    #[serde(skip)]
    pub order: Vec<String>,
    /// Datasets whose newest complete backup is older than their `max_age`, or that have none.
    pub stale: Vec<crate::engine::stale::Stale>,
    /// What has gaps and what to do (exit 3); `None` when nothing has.
    #[serde(skip)]
    pub gaps: Option<String>,
    /// Erasure-coded backups that cannot be restored and what to do (exit 1).
    #[serde(skip)]
    pub lost: Option<String>,
}

/// One backup on every provider that should hold it or holds any of it.
#[derive(Debug, Serialize)]
pub struct BackupStatus {
    pub dataset: String,
    pub backup_id: String,
    pub kind: BackupKind,
    pub state: CopyState,
    /// Why the backup is damaged.
    pub error: Option<String>,
    /// Known for a finished backup only.
    pub shards: Option<usize>,
    /// The stream's length (plaintext), known for a finished backup only.
    pub total_bytes: Option<u64>,
    /// What one whole copy stores: `total_bytes` after compression and encryption (equal
    /// without either). Known for a finished backup only.
    pub stored_bytes: Option<u64>,
    pub providers: Vec<CopyStatus>,
    /// Erasure-coded backups: shards at full strength, degraded and lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<Strength>,
    /// It has a trusted manifest.
    #[serde(skip)]
    pub finished: bool,
}

/// One provider's copy of one backup.
#[derive(Debug, Serialize)]
pub struct CopyStatus {
    pub state: CopyState,
    #[serde(flatten)]
    pub findings: ProviderFindings,
}

/// The status of every surveyed backup, with `advice` closing the exit-3 message when a copy
/// has gaps or a provider could not be listed.
pub fn status_report(
    catalog: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    advice: &str,
) -> StatusReport {
    let backups: Vec<BackupStatus> = surveys.iter().map(|(k, f)| backup_status(k, f)).collect();
    let gaps = gaps_summary(catalog, surveys, advice);
    let gaps = match (gaps, empty_summary(&backups)) {
        (Some(g), Some(e)) => Some(format!("{g}; {e}")),
        (g, e) => g.or(e),
    };
    StatusReport {
        host: catalog.host.clone(),
        backups,
        unreachable: catalog.unreachable.keys().cloned().collect(),
        order: catalog.order.clone(),
        stale: Vec::new(),
        gaps,
        lost: lost_summary(surveys),
    }
}

/// The exit-3 message for the datasets whose newest finished backup is empty (0 bytes): it
/// counts as a backup (for `max_age` too), but a dump that printed nothing needs a look.
/// `None` when no dataset's is.
pub fn empty_summary(backups: &[BackupStatus]) -> Option<String> {
    let mut newest: std::collections::BTreeMap<&str, &BackupStatus> = Default::default();
    for b in backups.iter().filter(|b| b.finished) {
        newest.insert(&b.dataset, b); // in catalog order: the last one is the newest
    }
    let empty: Vec<String> = newest
        .values()
        .filter(|b| b.state == CopyState::Empty)
        .map(|b| {
            format!(
                "the newest backup of {:?}, {}, is empty (its source sent 0 bytes); check its command",
                b.dataset, b.backup_id
            )
        })
        .collect();
    (!empty.is_empty()).then(|| empty.join("; "))
}

fn backup_status(k: &BackupKey, f: &BackupFindings) -> BackupStatus {
    let finished = f.is_finished();
    let copy = |p: &ProviderFindings| CopyStatus {
        state: match f.damaged.is_some() && p.reachable {
            true => CopyState::Damaged,
            false => provider_state(p, finished),
        },
        findings: p.clone(),
    };
    BackupStatus {
        dataset: k.dataset.clone(),
        backup_id: k.id.to_string(),
        kind: k.id.kind,
        state: backup_word(f),
        error: f.damaged.clone(),
        shards: finished.then_some(shard_count(f)),
        total_bytes: f.total_bytes.filter(|_| finished),
        stored_bytes: finished.then(|| f.reference.iter().map(|r| r.length).sum()),
        providers: f.providers.iter().map(copy).collect(),
        strength: f.strength.clone(),
        finished,
    }
}

/// The exit-3 message: the unlistable providers and the first five backups with gaps, then
/// what to do (`advice`, or resuming the backup when every gap is an unfinished backup).
/// `None` when nothing has gaps.
pub fn gaps_summary(
    catalog: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    advice: &str,
) -> Option<String> {
    let mut problems: Vec<String> = catalog
        .unreachable
        .keys()
        .map(|p| format!("provider {p} could not be listed"))
        .collect();
    let gaps: Vec<&(BackupKey, BackupFindings)> =
        surveys.iter().filter(|(_, f)| f.has_gaps()).collect();
    for (k, f) in gaps.iter().take(5) {
        problems.push(gap_summary(k, f));
    }
    if gaps.len() > 5 {
        problems.push(format!("and {} more backups", gaps.len() - 5));
    }
    if problems.is_empty() {
        None
    } else if gaps.iter().all(|(_, f)| f.is_unfinished()) && catalog.unreachable.is_empty() {
        Some(format!(
            "{}; run `offsite backup` again to resume",
            problems.join("; ")
        ))
    } else {
        Some(format!("{}; {advice}", problems.join("; ")))
    }
}

fn gap_summary(k: &BackupKey, f: &BackupFindings) -> String {
    if let Some(why) = &f.damaged {
        return format!("backup {} of {:?}: {why}", k.id, k.dataset);
    }
    if !f.is_finished() {
        return format!("backup {} of {:?} is unfinished", k.id, k.dataset);
    }
    let bad: Vec<String> = f
        .providers
        .iter()
        .filter(|p| p.expected && !p.is_whole())
        .map(|p| format!("{}: {}", p.provider, describe(p, true)))
        .collect();
    if bad.is_empty() && f.is_weakened() {
        let why = "shards degraded: some pieces are placed on providers no longer configured \
                   (configure them again to restore their pieces)";
        return format!("backup {} of {:?}: {why}", k.id, k.dataset);
    }
    let strength = f
        .strength
        .as_ref()
        .map(|s| format!(" (shards: {})", describe_strength(s)))
        .unwrap_or_default();
    format!(
        "backup {} of {:?}: {}{strength}",
        k.id,
        k.dataset,
        bad.join(", ")
    )
}

/// How many shards a finished backup has (its reference counts pieces when erasure-coded).
pub fn shard_count(f: &BackupFindings) -> usize {
    match &f.strength {
        Some(s) => (s.full + s.degraded + s.lost) as usize,
        None => f.reference.len(),
    }
}

/// A strength in a few words: `3 full`, `2 full, 1 degraded, 1 lost`.
pub fn describe_strength(s: &Strength) -> String {
    let parts: Vec<String> = [(s.full, "full"), (s.degraded, "degraded"), (s.lost, "lost")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    match parts.is_empty() {
        true => "no shards".into(),
        false => parts.join(", "),
    }
}

/// The exit-1 message: the erasure-coded backups with a shard that has fewer than `k` good
/// pieces, where their restore fails and what to do. `None` when no shard is lost.
pub fn lost_summary(surveys: &[(BackupKey, BackupFindings)]) -> Option<String> {
    let lost: Vec<String> = surveys
        .iter()
        .filter_map(|(k, f)| {
            let s = f.strength.as_ref().filter(|s| s.lost > 0)?;
            let first = s.first_lost.unwrap_or_default();
            Some(format!(
                "backup {} of {:?} has {} lost shard{} (fewer good pieces than a restore needs): \
                 restore fails from shard {first}; sync cannot rebuild it, run `offsite backup` \
                 of {:?} again for a restorable backup",
                k.id,
                k.dataset,
                s.lost,
                if s.lost == 1 { "" } else { "s" },
                k.dataset,
            ))
        })
        .collect();
    (!lost.is_empty()).then(|| lost.join("; "))
}

#[cfg(test)]
mod tests;
