//! Doing a sync plan: the copies (server-side or through this machine, bounded in memory),
//! then one listing per destination and dataset to confirm sizes, then the manifests.

use super::{Copied, CopyJob, Failed, ManifestJob, Options, SyncPlan, SyncReport};
use crate::catalog::BackupKey;
use crate::engine::confirm::{Listed, Mismatch};
use crate::error::{Interrupted, ProviderError};
use crate::layout::{self, MANIFEST};
use crate::manifest::Manifest;
use crate::progress::{Progress, UploadMeter};
use crate::provider::DynProvider;
use anyhow::Result;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Shared by the copy tasks of one run.
pub(super) struct Run<'a> {
    opts: &'a Options,
    /// Each with its own `Limit` on transfers at once.
    providers: HashMap<String, DynProvider>,
    pub(super) memory: Semaphore,
    pub(super) progress: Arc<dyn Progress>,
    /// Sources dropped from the run after a failed read (retries included), with why: later
    /// shards come from the other sources instead of retrying a dead one each time.
    down: std::sync::Mutex<HashMap<String, String>>,
}

impl<'a> Run<'a> {
    fn new(opts: &'a Options, providers: &[DynProvider], progress: Arc<dyn Progress>) -> Self {
        Run {
            opts,
            providers: providers
                .iter()
                .map(|p| (p.name().to_string(), p.clone()))
                .collect(),
            memory: Semaphore::new(opts.limits.shards_in_flight.max(1)),
            progress,
            down: Default::default(),
        }
    }

    pub(super) fn provider(&self, name: &str) -> Result<&DynProvider, String> {
        self.providers
            .get(name)
            .ok_or_else(|| format!("provider {name} is not configured"))
    }

    /// The path of object `name` of backup `key` on a provider.
    pub(super) fn path(&self, key: &BackupKey, name: &str) -> String {
        let dir = layout::backup_dir(&self.opts.host, &key.dataset, &key.id);
        format!("{dir}/{name}")
    }
}

/// Does the copies of `plan`, then writes its manifests where every shard is in place.
pub async fn execute(
    plan: SyncPlan,
    providers: &[DynProvider],
    opts: &Options,
    progress: Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    report.failed.extend(plan.unfillable.iter().map(|u| {
        let why = format!(
            "{} of shard {} of backup {} of {:?}",
            u.reason, u.object, u.key.id, u.key.dataset
        );
        Failed::new(&u.key, &u.object, &u.dest, why)
    }));
    let dests: BTreeSet<String> = plan
        .copies
        .iter()
        .flat_map(|c| c.dests.iter().cloned())
        .chain(plan.manifests.iter().flat_map(|m| m.dests.iter().cloned()))
        .collect();
    let run = Run::new(opts, providers, progress.clone());
    progress.begin(
        "sync",
        Some(plan.bytes()),
        &dests.iter().cloned().collect::<Vec<_>>(),
    );
    let width = (opts.limits.shards_in_flight + opts.limits.concurrency * dests.len()).max(1);
    let copies = stream::iter(plan.copies.iter())
        .map(|job| copy_shard(&run, job))
        .buffer_unordered(width)
        .collect::<Vec<_>>();
    let results = tokio::select! {
        r = copies => r,
        _ = cancel.cancelled() => {
            progress.finish();
            return Err(Interrupted.into());
        }
    };
    let rebuilds = stream::iter(plan.rebuilds.iter())
        .map(|job| super::rebuild::rebuild_shard(&run, job))
        .buffer_unordered(opts.limits.shards_in_flight.max(1))
        .collect::<Vec<_>>();
    let rebuilt = tokio::select! {
        r = rebuilds => r,
        _ = cancel.cancelled() => {
            progress.finish();
            return Err(Interrupted.into());
        }
    };
    for (copied, failed) in results.into_iter().chain(rebuilt) {
        report.copied.extend(copied);
        report.failed.extend(failed);
    }
    let finishing = confirm_and_write_manifests(&run, &plan.manifests, &mut report);
    tokio::select! {
        r = finishing => r,
        _ = cancel.cancelled() => {
            progress.finish();
            return Err(Interrupted.into());
        }
    }
    progress.finish();
    report.bytes = report.copied.iter().map(|c| c.bytes).sum();
    Ok(report)
}

/// Copies one shard to its destinations: server-side where a route exists, else (or when that
/// fails) through this machine from the first source whose bytes check out.
async fn copy_shard(run: &Run<'_>, job: &CopyJob) -> (Vec<Copied>, Vec<Failed>) {
    let path = format!(
        "{}/{}",
        layout::backup_dir(&run.opts.host, &job.key.dataset, &job.key.id),
        job.name
    );
    let (mut copied, through) = copy_server_side(run, job, &path).await;
    if through.is_empty() {
        return (copied, Vec::new());
    }
    let (more, failed) = copy_through(run, job, &path, &through).await;
    copied.extend(more);
    (copied, failed)
}

/// The server-side copies to every destination that shares a remote with a source; returns
/// them and the destinations left to copy through this machine.
async fn copy_server_side<'j>(
    run: &Run<'_>,
    job: &'j CopyJob,
    path: &str,
) -> (Vec<Copied>, Vec<&'j str>) {
    let server_side = job.dests.iter().map(|d| {
        let route = job
            .sources
            .iter()
            .find_map(|s| run.opts.route(s, d).map(|root| (s, root)));
        async move {
            let (src, root) = route?;
            let dst = run.provider(d).ok()?;
            match dst.copy_from(root, path, path).await {
                Ok(()) => Some(src.clone()),
                Err(e) => {
                    tracing::warn!("{e}; copying through this machine instead");
                    None
                }
            }
        }
    });
    let done = futures::future::join_all(server_side).await;
    let (mut copied, mut through) = (Vec::new(), Vec::new());
    for (d, r) in job.dests.iter().zip(done) {
        match r {
            Some(src) => {
                run.progress.advance(job.length);
                run.progress.provider(d, job.length);
                copied.push(copied_entry(job, &src, d, true));
            }
            None => through.push(d.as_str()),
        }
    }
    (copied, through)
}

/// One download (holding a memory slot) from the first good source, uploaded to `through`.
async fn copy_through(
    run: &Run<'_>,
    job: &CopyJob,
    path: &str,
    through: &[&str],
) -> (Vec<Copied>, Vec<Failed>) {
    let _memory = run
        .memory
        .acquire()
        .await
        .expect("semaphore is never closed");
    let (src, data) = match fetch_good(run, job, path).await {
        Ok(v) => v,
        Err(why) => {
            let failed = through
                .iter()
                .map(|d| Failed::new(&job.key, &job.name, d, why.clone()))
                .collect();
            return (Vec::new(), failed);
        }
    };
    let uploads = through
        .iter()
        .map(|d| upload(run, job, path, d, data.clone()));
    let (mut copied, mut failed) = (Vec::new(), Vec::new());
    for (d, r) in through.iter().zip(futures::future::join_all(uploads).await) {
        match r {
            Ok(()) => {
                run.progress.advance(job.length);
                copied.push(copied_entry(job, &src, d, false));
            }
            Err(e) => failed.push(Failed::new(&job.key, &job.name, d, e.to_string())),
        }
    }
    (copied, failed)
}

pub(super) fn copied_entry(job: &CopyJob, from: &str, to: &str, server_side: bool) -> Copied {
    Copied {
        dataset: job.key.dataset.clone(),
        backup_id: job.key.id.to_string(),
        object: job.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        bytes: job.length,
        server_side,
    }
}

pub(super) async fn upload(
    run: &Run<'_>,
    job: &CopyJob,
    path: &str,
    dest: &str,
    data: Bytes,
) -> Result<(), String> {
    let dst = run.provider(dest)?;
    // Stored bytes count once the upload succeeded; until then they are only `sending`.
    let meter = UploadMeter::new(run.progress.clone(), dest);
    debug_assert_eq!(data.len() as u64, job.length);
    dst.put(path, data, Some(meter.on_sent()))
        .await
        .map_err(|e: ProviderError| e.to_string())?;
    meter.stored(job.length);
    Ok(())
}

/// Downloads the shard from the first source whose bytes have the right length and SHA-256.
async fn fetch_good(run: &Run<'_>, job: &CopyJob, path: &str) -> Result<(String, Bytes), String> {
    let mut tried = Vec::new();
    for s in &job.sources {
        let src = run.provider(s)?;
        if let Some(why) = run.down.lock().unwrap().get(s.as_str()) {
            tried.push(format!("{s} was dropped from this run: {why}"));
            continue;
        }
        let got = src.get(path, job.length).await;
        let data = match got {
            Ok(d) if d.len() as u64 == job.length => d,
            Ok(d) => {
                tried.push(format!("{s} holds {} bytes, not {}", d.len(), job.length));
                continue;
            }
            Err(e) => {
                if !e.is_not_found() {
                    tracing::warn!("{e}; provider {s} is no longer used as a source in this run");
                    run.down.lock().unwrap().insert(s.clone(), e.to_string());
                }
                tried.push(e.to_string());
                continue;
            }
        };
        if let Some(want) = &job.sha256 {
            let digest = crate::hashing::sha256_blocking(data.clone())
                .await
                .map_err(|e| format!("hashing failed: {e}"))?;
            if digest != *want {
                tracing::warn!(
                    "provider {s}: shard {} of backup {} of {:?} is corrupt (SHA-256 {digest}, the manifest says {want}); not copied from there",
                    job.name,
                    job.key.id,
                    job.key.dataset
                );
                tried.push(format!("{s} holds a corrupt copy (SHA-256 mismatch)"));
                continue;
            }
        }
        return Ok((s.clone(), data));
    }
    Err(format!(
        "no good copy of shard {} of backup {} of {:?}: {}",
        job.name,
        job.key.id,
        job.key.dataset,
        tried.join("; ")
    ))
}

/// A destination's listing of one dataset (`<backup-id>/<object>`), or why it failed.
type Listings = HashMap<(String, String), Result<Listed, String>>;

/// Lists each destination once per dataset, turns copies that did not land at the right size
/// into failures, and writes manifests where every shard is in place.
async fn confirm_and_write_manifests(
    run: &Run<'_>,
    manifests: &[ManifestJob],
    report: &mut SyncReport,
) {
    let mut wanted: BTreeSet<(String, String)> = report
        .copied
        .iter()
        .map(|c| (c.to.clone(), c.dataset.clone()))
        .collect();
    for m in manifests {
        let at = m.dests.iter().chain(&m.gate);
        wanted.extend(at.map(|d| (d.clone(), m.key.dataset.clone())));
    }
    let listings = list_destinations(run, wanted).await;
    let copied = std::mem::take(&mut report.copied);
    for c in copied {
        let key = BackupKey {
            dataset: c.dataset.clone(),
            id: layout::BackupId::parse(&c.backup_id).expect("came from a BackupId"),
        };
        let problem = match confirm_at(&listings, &c.to, &key, &c.object, c.bytes) {
            Ok(Ok(())) => None,
            Ok(Err(mismatch)) => Some(format!("after the copy {mismatch}")),
            Err(e) => Some(format!("cannot confirm the copy: {e}")),
        };
        match problem {
            None => report.copied.push(c),
            Some(e) => report.failed.push(Failed::new(&key, &c.object, &c.to, e)),
        }
    }
    for m in manifests {
        for d in &m.dests {
            match manifest_to(run, &listings, m, d).await {
                Ok(bytes) => report.copied.push(Copied {
                    dataset: m.key.dataset.clone(),
                    backup_id: m.key.id.to_string(),
                    object: MANIFEST.into(),
                    from: m.from.clone(),
                    to: d.clone(),
                    bytes,
                    server_side: false,
                }),
                Err(e) => report.failed.push(Failed::new(&m.key, MANIFEST, d, e)),
            }
        }
    }
}

async fn list_destinations(run: &Run<'_>, wanted: BTreeSet<(String, String)>) -> Listings {
    let lists = wanted.into_iter().map(|(dest, dataset)| async move {
        let dir = layout::dataset_dir(&run.opts.host, &dataset);
        let listed = match run.provider(&dest) {
            Ok(p) => p.list(&dir).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        ((dest, dataset), listed.map(Listed::new))
    });
    futures::future::join_all(lists).await.into_iter().collect()
}

/// Whether `dest`'s listing shows `object` of backup `key` at `len` bytes; `Err` when the
/// listing failed.
fn confirm_at(
    listings: &Listings,
    dest: &str,
    key: &BackupKey,
    object: &str,
    len: u64,
) -> Result<Result<(), Mismatch>, String> {
    match &listings[&(dest.to_string(), key.dataset.clone())] {
        Ok(listed) => Ok(listed.confirm(&format!("{}/{object}", key.id), len)),
        Err(e) => Err(e.clone()),
    }
}

/// Writes the manifest to `dest` if the listing shows every shard there at the right size.
async fn manifest_to(
    run: &Run<'_>,
    listings: &Listings,
    m: &ManifestJob,
    dest: &str,
) -> Result<u64, String> {
    for at in std::iter::once(dest).chain(m.gate.as_deref()) {
        let short = placed_on(&m.manifest, at)
            .iter()
            .filter(|(name, len)| confirm_at(listings, at, &m.key, name, *len) != Ok(Ok(())))
            .count();
        if short > 0 {
            return Err(format!(
                "manifest not written: {short} object(s) are still missing or wrong on {at}"
            ));
        }
    }
    write_manifest(run, m, dest).await
}

/// The objects of `m` that `dest` should hold, with their lengths: every shard, or the pieces
/// placement puts there for an erasure-coded backup.
fn placed_on(m: &Manifest, dest: &str) -> Vec<(String, u64)> {
    let Some(e) = m.erasure.as_ref() else {
        return m.shards.iter().map(|s| (m.object(s), s.length)).collect();
    };
    let mut out = Vec::new();
    for s in &m.shards {
        for (p, rec) in s.pieces.iter().enumerate() {
            if e.holder(s.index, p) == dest {
                out.push((m.piece_object(s, p), rec.length));
            }
        }
    }
    out
}

async fn write_manifest(run: &Run<'_>, m: &ManifestJob, dest: &str) -> Result<u64, String> {
    let body = crate::spool::manifest(&m.manifest, run.opts.spool_dir.as_deref()).await;
    let len = body.len() as u64;
    let path = format!(
        "{}/{MANIFEST}",
        layout::backup_dir(&run.opts.host, &m.key.dataset, &m.key.id)
    );
    let dst = run.provider(dest)?;
    dst.put(&path, body, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(len)
}
