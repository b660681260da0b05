//! Repairing an erasure-coded backup: a piece cannot be copied from another provider (each
//! piece lives on one provider only), so a shard's missing or bad pieces are rebuilt from `k`
//! good ones and uploaded to their holders.
//!
//! Guarantees: every downloaded piece is checked by length and SHA-256 before it is used, and
//! every rebuilt piece against the manifest's SHA-256 before it is uploaded; one shard job
//! holds one memory slot (its `k` pieces and the rebuilt ones), so memory stays bounded by
//! `shards_in_flight`; coding runs on the blocking pool. A shard with fewer than `k` good
//! pieces is unfillable (lost): sync cannot rebuild it.

use super::execute::{copied_entry, upload, Run};
use super::{Copied, CopyJob, Failed, SyncPlan, Unfillable};
use crate::catalog::BackupKey;
use crate::erasure::Scheme;
use crate::gaps::BackupFindings;
use crate::manifest::Manifest;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};

/// The missing or bad pieces of one shard, and the good ones to rebuild them from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildJob {
    pub key: BackupKey,
    pub index: u64,
    pub scheme: Scheme,
    /// The whole stored shard's length.
    pub stored_len: u64,
    /// Good pieces to fetch (as many as it takes to get `k`), in piece order.
    pub sources: Vec<PieceAt>,
    /// Pieces to rebuild, each to its holder.
    pub missing: Vec<PieceAt>,
}

/// One piece of a shard on its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceAt {
    pub piece: usize,
    pub name: String,
    pub length: u64,
    pub sha256: String,
    pub provider: String,
}

impl RebuildJob {
    /// What the missing pieces weigh, once per destination.
    pub fn bytes(&self) -> u64 {
        self.missing.iter().map(|p| p.length).sum()
    }

    /// The rebuilt piece `p` as a copy job (for `--dry-run`'s list and the upload).
    pub fn as_copy(&self, p: &PieceAt) -> CopyJob {
        CopyJob {
            key: self.key.clone(),
            index: self.index,
            name: p.name.clone(),
            length: p.length,
            sha256: Some(p.sha256.clone()),
            sources: vec![self.from()],
            dests: vec![p.provider.clone()],
        }
    }

    /// Where the pieces come from, as reports show it: `rebuilt from a+b`.
    pub fn from(&self) -> String {
        let names: Vec<&str> = self.sources.iter().map(|p| p.provider.as_str()).collect();
        format!("rebuilt from {}", names.join("+"))
    }
}

/// Plans the rebuild of every shard of the erasure-coded backup of `m` with a missing or bad
/// piece on one of `dests`.
pub(super) fn plan_rebuilds(
    key: &BackupKey,
    f: &BackupFindings,
    m: &Manifest,
    dests: &[&str],
    out: &mut SyncPlan,
) {
    plan_rebuilds_to(key, f, m, out, |holder, good| {
        (!good && dests.contains(&holder)).then(|| holder.to_string())
    })
}

/// Plans the rebuild of every piece for which `rebuild_to(holder, good)` names a destination:
/// `good` when the holder lists that piece at the right size (and no deep check found it
/// corrupt). The good pieces are the sources.
pub(super) fn plan_rebuilds_to(
    key: &BackupKey,
    f: &BackupFindings,
    m: &Manifest,
    out: &mut SyncPlan,
    rebuild_to: impl Fn(&str, bool) -> Option<String>,
) {
    let Some(e) = m.erasure.as_ref() else { return };
    let bad: HashMap<&str, BTreeSet<u64>> = f
        .providers
        .iter()
        .filter(|p| p.reachable)
        .map(|p| (p.provider.as_str(), p.bad_shards()))
        .collect();
    for s in &m.shards {
        let (mut sources, mut missing) = (Vec::new(), Vec::new());
        for (p, rec) in s.pieces.iter().enumerate() {
            let holder = e.holder(s.index, p);
            let good = bad.get(holder).is_some_and(|b| !b.contains(&s.index));
            let at = |provider: &str| PieceAt {
                piece: p,
                name: m.piece_object(s, p),
                length: rec.length,
                sha256: rec.sha256.clone(),
                provider: provider.to_string(),
            };
            if good {
                sources.push(at(holder));
            }
            if let Some(to) = rebuild_to(holder, good) {
                missing.push(at(&to));
            }
        }
        if missing.is_empty() {
            continue;
        }
        if sources.len() < e.k {
            let reason = format!(
                "only {} good piece(s) of shard {} left, {} needed to rebuild it",
                sources.len(),
                s.index,
                e.k
            );
            out.unfillable
                .extend(missing.into_iter().map(|p| Unfillable {
                    key: key.clone(),
                    object: p.name,
                    dest: p.provider,
                    reason: reason.clone(),
                }));
            continue;
        }
        out.rebuilds.push(RebuildJob {
            key: key.clone(),
            index: s.index,
            scheme: e.scheme(),
            stored_len: s.length,
            sources,
            missing,
        });
    }
}

/// Rebuilds pieces from `given` (`k + m` slots, at least `k` filled) on the blocking pool.
pub(super) async fn rebuild_pieces(
    job: &RebuildJob,
    given: Vec<Option<Bytes>>,
) -> Result<Vec<Bytes>, String> {
    let (scheme, len) = (job.scheme, job.stored_len);
    tokio::task::spawn_blocking(move || crate::erasure::rebuild(scheme, len, &given))
        .await
        .map_err(|e| format!("rebuilding failed: {e}"))?
        .map_err(|e| format!("rebuilding failed: {e}"))
}

/// Rebuilds one shard's missing pieces and uploads each to its holder, holding one memory slot.
pub(super) async fn rebuild_shard(run: &Run<'_>, job: &RebuildJob) -> (Vec<Copied>, Vec<Failed>) {
    let _memory = run
        .memory
        .acquire()
        .await
        .expect("semaphore is never closed");
    let fail = |why: String| {
        let failed = job.missing.iter().map(|p| {
            let why = format!(
                "cannot rebuild piece {} of shard {}: {why}",
                p.name, job.index
            );
            Failed::new(&job.key, &p.name, &p.provider, why)
        });
        (Vec::new(), failed.collect())
    };
    let given = match fetch_k(run, job).await {
        Ok(g) => g,
        Err(why) => return fail(why),
    };
    let pieces = match rebuild_pieces(job, given).await {
        Ok(p) => p,
        Err(why) => return fail(why),
    };
    let (mut copied, mut failed) = (Vec::new(), Vec::new());
    for p in &job.missing {
        let data = pieces[p.piece].clone();
        let digest = crate::hashing::sha256_blocking(data.clone()).await;
        if digest.as_deref().ok() != Some(p.sha256.as_str()) {
            let why = "the rebuilt piece does not match the manifest's SHA-256".to_string();
            failed.push(Failed::new(&job.key, &p.name, &p.provider, why));
            continue;
        }
        let copy = job.as_copy(p);
        match upload(run, &copy, &run.path(&job.key, &p.name), &p.provider, data).await {
            Ok(()) => {
                run.progress.advance(p.length);
                copied.push(copied_entry(&copy, &job.from(), &p.provider, false));
            }
            Err(e) => failed.push(Failed::new(&job.key, &p.name, &p.provider, e)),
        }
    }
    (copied, failed)
}

/// Downloads good pieces until `k` check out by length and SHA-256: `k + m` slots. The first
/// `k` sources are read at once (each from its own provider, so the shard takes as long as the
/// slowest one, not the sum); a source that fails is replaced by the next.
async fn fetch_k(run: &Run<'_>, job: &RebuildJob) -> Result<Vec<Option<Bytes>>, String> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut given: Vec<Option<Bytes>> = vec![None; job.scheme.total()];
    let (mut have, mut tried) = (0, Vec::new());
    let mut next = job.sources.iter();
    let mut reading: FuturesUnordered<_> = next
        .by_ref()
        .take(job.scheme.k)
        .map(|src| fetch_piece(run, job, src))
        .collect();
    while let Some((src, got)) = reading.next().await {
        match got {
            Ok(data) => {
                given[src.piece] = Some(data);
                have += 1;
            }
            Err(why) => {
                tried.push(why);
                reading.extend(next.next().map(|src| fetch_piece(run, job, src)));
            }
        }
    }
    if have < job.scheme.k {
        return Err(format!(
            "{have} good piece(s) of {} needed: {}",
            job.scheme.k,
            tried.join("; ")
        ));
    }
    Ok(given)
}

/// One source piece, checked by length and SHA-256.
async fn fetch_piece<'p>(
    run: &Run<'_>,
    job: &RebuildJob,
    src: &'p PieceAt,
) -> (&'p PieceAt, Result<Bytes, String>) {
    let provider = match run.provider(&src.provider) {
        Ok(p) => p,
        Err(e) => return (src, Err(e)),
    };
    let data = match provider
        .get(&run.path(&job.key, &src.name), src.length)
        .await
    {
        Ok(d) if d.len() as u64 == src.length => d,
        Ok(d) => {
            let why = format!("{} holds {} bytes of {}", src.provider, d.len(), src.name);
            return (src, Err(why));
        }
        Err(e) => return (src, Err(e.to_string())),
    };
    match crate::hashing::sha256_blocking(data.clone()).await {
        Ok(d) if d == src.sha256 => (src, Ok(data)),
        _ => {
            let why = format!("{} holds a corrupt {}", src.provider, src.name);
            (src, Err(why))
        }
    }
}
