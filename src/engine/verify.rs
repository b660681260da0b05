//! Deep checks: download objects and compare their length and SHA-256 with what is expected;
//! with `verify --decrypt` ([`Decoding`]) also decode the shards of compressed and encrypted
//! backups and check their plaintext SHA-256. Used by `verify --deep`, `sync --deep` and the
//! verification step of `sync --migrate`.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` downloaded objects are held at once (a semaphore is
//!   taken before each download and released after hashing and decoding, which run on the
//!   blocking pool).
//! - Providers are checked in parallel; each provider's own `concurrency` bound is enforced by
//!   the provider itself ([`crate::provider::Limit`]), not here.
//! - Partial failure is a result: an object that cannot be read is reported as unreadable and
//!   the check goes on. Only cancellation stops it (and its rclone children with it).

use crate::catalog::BackupKey;
use crate::error::Interrupted;
use crate::gaps::{BackupFindings, Corrupt};
use crate::layout;
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::Result;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod decrypt;
mod report;
pub use decrypt::Decoding;
pub use report::{
    verify_report, DamagedBackup, DamagedCopy, FinishedBackup, UnfinishedBackup, VerifiedBackup,
    VerifiedCopy, VerifyReport, VerifyScope,
};

/// One object to download and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub provider: String,
    pub key: BackupKey,
    pub index: u64,
    /// Path on the provider.
    pub path: String,
    pub length: u64,
    /// What the content must hash to, when known.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right length and, when known, the right SHA-256; holds the digest.
    Good(String),
    /// Wrong length or wrong SHA-256 (or gone since the listing): why.
    Bad(String),
    /// Could not be downloaded, even after retries: the error.
    Unreadable(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub shards_in_flight: usize,
    /// How many checks of one provider are scheduled at once: a scheduling width, so that one
    /// slow provider's queued checks cannot hold every memory slot while they wait for its
    /// [`crate::provider::Limit`] (which enforces the same number).
    pub concurrency: usize,
}

/// Downloads and hashes every check; returns each with its verdict (in no particular order).
pub async fn run_checks(
    providers: &[DynProvider],
    checks: Vec<Check>,
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<(Check, Verdict)>> {
    let none = Decoding::default();
    run_checks_decoding(providers, checks, limits, &none, progress, cancel).await
}

/// [`run_checks`], decoding the shards of the backups `decoding` covers.
pub async fn run_checks_decoding(
    providers: &[DynProvider],
    checks: Vec<Check>,
    limits: Limits,
    decoding: &Decoding,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<(Check, Verdict)>> {
    let memory = Arc::new(Semaphore::new(limits.shards_in_flight.max(1)));
    let mut by_provider: BTreeMap<String, Vec<Check>> = BTreeMap::new();
    for c in checks {
        by_provider.entry(c.provider.clone()).or_default().push(c);
    }
    let lanes = by_provider.into_iter().map(|(name, checks)| {
        let provider = providers.iter().find(|p| p.name() == name).cloned();
        let memory = memory.clone();
        async move {
            let Some(provider) = provider else {
                let why = format!("provider {name} is not configured");
                return checks
                    .into_iter()
                    .map(|c| (c, Verdict::Unreadable(why.clone())))
                    .collect::<Vec<_>>();
            };
            stream::iter(checks)
                .map(|c| {
                    let (provider, memory) = (provider.clone(), memory.clone());
                    async move {
                        let v = check_one(&provider, &c, &memory, decoding, progress).await;
                        (c, v)
                    }
                })
                .buffer_unordered(limits.concurrency.max(1))
                .collect::<Vec<_>>()
                .await
        }
    });
    tokio::select! {
        r = futures::future::join_all(lanes) => Ok(r.into_iter().flatten().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

async fn check_one(
    provider: &DynProvider,
    c: &Check,
    memory: &Semaphore,
    decoding: &Decoding,
    progress: &Arc<dyn Progress>,
) -> Verdict {
    let _slot = memory.acquire().await.expect("semaphore is never closed");
    let data = match provider.get(&c.path, c.length).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Verdict::Bad("the object is gone".into()),
        Err(e) => return Verdict::Unreadable(e.to_string()),
    };
    progress.provider(provider.name(), data.len() as u64);
    progress.advance(data.len() as u64);
    if data.len() as u64 != c.length {
        return Verdict::Bad(format!("{} bytes, not {}", data.len(), c.length));
    }
    if decoding.covers(c) {
        if let Some(v) = decoding.verdict(c, data.clone()).await {
            return v;
        }
    }
    let digest = match crate::hashing::sha256_blocking(data).await {
        Ok(d) => d,
        Err(e) => return Verdict::Unreadable(format!("hashing failed: {e}")),
    };
    match &c.sha256 {
        Some(want) if *want != digest => {
            Verdict::Bad(format!("SHA-256 is {digest}, the manifest says {want}"))
        }
        _ => Verdict::Good(digest),
    }
}

/// The checks of a deep verify: every shard (every piece placed there, for an erasure-coded
/// backup) of every finished backup that each provider in scope holds at the right size
/// (missing and wrong-size ones are known without a download).
pub fn shard_checks(
    host: &str,
    surveys: &[(BackupKey, BackupFindings)],
    only: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for (key, f) in surveys.iter().filter(|(_, f)| f.is_finished()) {
        let dir = layout::backup_dir(host, &key.dataset, &key.id);
        for p in &f.providers {
            if !p.reachable || only.is_some_and(|o| o != p.provider) {
                continue;
            }
            let absent: HashSet<u64> = p
                .missing_shards
                .iter()
                .chain(&p.wrong_size_shards)
                .copied()
                .collect();
            out.extend(
                f.reference
                    .iter()
                    .filter(|r| r.placed_on(&p.provider) && !absent.contains(&r.index))
                    .map(|r| Check {
                        provider: p.provider.clone(),
                        key: key.clone(),
                        index: r.index,
                        path: format!("{dir}/{}", r.name),
                        length: r.length,
                        sha256: r.sha256.clone(),
                    }),
            );
        }
    }
    out
}

/// What a deep check found, per backup and provider.
#[derive(Debug, Default)]
pub struct DeepReport {
    pub corrupt: Corrupt,
    /// backup -> provider -> (shard, error).
    pub unreadable: BTreeMap<BackupKey, BTreeMap<String, Vec<(u64, String)>>>,
    /// backup -> provider -> shards checked good.
    pub good: BTreeMap<BackupKey, BTreeMap<String, u64>>,
    pub bytes: u64,
    /// Shards of compressed or encrypted backups decoded and checked by plaintext SHA-256;
    /// `None` when the check did not decode (`verify --deep` without `--decrypt`).
    pub decoded: Option<u64>,
    /// Shards of erasure-coded backups that `--decrypt` could not join and decode from `k`
    /// good pieces: backup, shard, why. A restore would fail on them.
    pub undecodable: Vec<(BackupKey, u64, String)>,
}

/// Which shards a deep check downloads, and what it decodes.
#[derive(Clone, Copy)]
pub struct DeepScope<'a> {
    /// `--provider`: this one only.
    pub only: Option<&'a str>,
    /// `--decrypt`: the backups to decode; `None`: stored SHA-256 only.
    pub decoding: Option<&'a Decoding>,
}

/// Runs [`shard_checks`] and sorts the verdicts into a [`DeepReport`].
pub async fn deep_check(
    host: &str,
    surveys: &[(BackupKey, BackupFindings)],
    only: Option<&str>,
    providers: &[DynProvider],
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<DeepReport> {
    let scope = DeepScope {
        only,
        decoding: None,
    };
    deep_check_in(host, surveys, scope, providers, limits, progress, cancel).await
}

/// [`deep_check`] of `scope`: with a [`Decoding`], shards of encoded backups are decoded too.
pub async fn deep_check_in(
    host: &str,
    surveys: &[(BackupKey, BackupFindings)],
    scope: DeepScope<'_>,
    providers: &[DynProvider],
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<DeepReport> {
    let checks = shard_checks(host, surveys, scope.only);
    let total: u64 = checks.iter().map(|c| c.length).sum();
    let names: BTreeSet<&str> = checks.iter().map(|c| c.provider.as_str()).collect();
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    progress.begin("deep check", Some(total), &names);
    let none = Decoding::default();
    let decoding = scope.decoding.unwrap_or(&none);
    let results =
        run_checks_decoding(providers, checks, limits, decoding, progress, cancel).await?;
    progress.finish();
    let mut report = DeepReport {
        decoded: scope.decoding.map(|_| 0),
        ..DeepReport::default()
    };
    if let Some(d) = scope.decoding {
        let joined = join_pieces(d, &results, providers, limits, progress, cancel).await?;
        report.decoded = Some(joined.decoded);
        report.undecodable = joined.failed;
    }
    for (c, v) in results {
        match v {
            Verdict::Good(_) => {
                report.bytes += c.length;
                if let Some(n) = report.decoded.as_mut().filter(|_| decoding.covers(&c)) {
                    *n += 1;
                }
                *report
                    .good
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default() += 1;
            }
            Verdict::Bad(why) => {
                tracing::warn!("provider {}: {}: {why}", c.provider, c.path);
                report
                    .corrupt
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default()
                    .insert(c.index);
            }
            Verdict::Unreadable(why) => {
                tracing::warn!("could not check {}: {why}", c.path);
                report
                    .unreadable
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default()
                    .push((c.index, why));
            }
        }
    }
    Ok(report)
}

/// `--decrypt` of the erasure-coded backups `decoding` covers: their shards joined from the
/// pieces `results` found good, decoded and checked.
async fn join_pieces(
    decoding: &Decoding,
    results: &[(Check, Verdict)],
    providers: &[DynProvider],
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<decrypt::Joined> {
    progress.begin("decode pieces", None, &[]);
    let joined = tokio::select! {
        j = decoding.join(results, providers, limits, progress) => j,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    progress.finish();
    Ok(joined)
}

#[cfg(test)]
mod tests;
