//! The backup pipeline: a source stream cut into shards, each shard uploaded to every provider
//! in parallel, then a size check from one listing per provider, then the manifests.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` shards are held at once; the reader waits for a free
//!   slot before it reads the next shard (a bounded, `head -c`-style read).
//! - A shard is kept in memory until every provider has it (or gave up), so a retry never
//!   re-reads the source.
//! - A provider whose upload fails after all retries is dropped for the rest of the run; the
//!   others go on. A shard that reaches fewer than `min_providers` providers fails the run.
//! - An object only counts once a listing shows it with the right size: rclone `rcat` reports
//!   success at end of input, so a truncated object is caught here, not trusted.
//! - No manifest is written unless the source exited 0 and every shard is on `min_providers`.
//! - A zfs or btrfs stream of 0 bytes is an error, never a backup (only a command may be empty).
//! - Each shard's SHA-256 goes to the resume journal as soon as it is hashed, whatever the
//!   uploads do: a resume then trusts every provider's object of the right size for it.
//! - On any error the source and every upload are stopped and waited on before returning, and
//!   the first error is the one returned.

use crate::error::{Interrupted, ProviderError, SourceChanged};
use crate::layout::{self, BackupId, BackupKind};
use crate::manifest::{hex, Manifest, ParentRef, ShardRecord, FORMAT_VERSION};
use crate::process::ChildProc;
use crate::progress::Progress;
use crate::provider::{DynProvider, ProgressFn};
use crate::state::Journal;
use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a source gets to exit after SIGTERM before SIGKILL.
const SOURCE_GRACE: Duration = Duration::from_secs(5);

/// [`SOURCE_GRACE`], or `$OFFSITE_SOURCE_GRACE_SECS` (tests use it to hold a clean stop open).
fn source_grace() -> Duration {
    std::env::var("OFFSITE_SOURCE_GRACE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(SOURCE_GRACE, Duration::from_secs)
}

/// Everything the pipeline needs to know about one backup.
pub struct Job {
    pub host: String,
    pub dataset: String,
    pub id: BackupId,
    pub source_kind: String,
    pub source: String,
    /// What the source stream is, for errors: `zfs send tank/a@offsite-...`.
    pub source_desc: String,
    pub snapshot: Option<String>,
    pub parent: Option<ParentRef>,
    pub shard_size: u64,
    pub min_providers: usize,
    pub shards_in_flight: usize,
    pub concurrency: usize,
    pub providers: Vec<DynProvider>,
    /// Expected stream size, for progress.
    pub estimate: Option<u64>,
    /// Resuming: the shards the unfinished backup recorded (a contiguous prefix). Each is
    /// re-hashed from the re-read stream and compared before anything after it is uploaded;
    /// providers whose listing shows it with the right size are not sent it again.
    pub resume: Option<BTreeMap<u64, ShardRecord>>,
    /// Where each newly hashed shard is recorded, for a later resume.
    pub journal: Option<Arc<Journal>>,
}

/// What one provider ended up with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderOutcome {
    pub provider: String,
    /// Indexes of the shards this provider does not hold.
    pub missing_shards: Vec<u64>,
    pub manifest_written: bool,
    /// Why it was dropped from the run, if it was.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub backup_id: BackupId,
    pub total_bytes: u64,
    pub shards: u64,
    pub elapsed: Duration,
    pub providers: Vec<ProviderOutcome>,
}

impl Report {
    /// Every provider holds every shard and the manifest.
    pub fn complete(&self) -> bool {
        self.providers
            .iter()
            .all(|p| p.missing_shards.is_empty() && p.manifest_written)
    }
}

/// One provider's part of the run.
struct Lane {
    provider: DynProvider,
    slots: Arc<Semaphore>,
    down: OnceLock<String>,
    /// Shards whose upload rclone reported as done.
    uploaded: Mutex<BTreeSet<u64>>,
    /// When resuming: the objects the provider already held, name to size.
    present: HashMap<String, u64>,
}

impl Lane {
    fn name(&self) -> &str {
        self.provider.name()
    }

    fn is_down(&self) -> bool {
        self.down.get().is_some()
    }

    fn drop_out(&self, err: &ProviderError) {
        if self.down.set(err.to_string()).is_ok() {
            tracing::warn!(
                "{err}; dropping provider {} for the rest of this run (`offsite sync` fills its gaps later)",
                self.name()
            );
        }
    }
}

/// Runs the pipeline over `source`'s stdout. The caller owns snapshots and locks.
pub async fn run(
    job: Job,
    mut source: ChildProc,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Report> {
    let start = Instant::now();
    let dir = layout::backup_dir(&job.host, &job.dataset, &job.id);
    let lanes: Arc<Vec<Lane>> = Arc::new(make_lanes(&job, &dir, &cancel).await?);
    let names: Vec<String> = lanes.iter().map(|l| l.name().to_string()).collect();
    progress.begin(&format!("backup {}", job.dataset), job.estimate, &names);

    let mut stdout = source.take_stdout().expect("source stdout is piped");
    let mut tasks = JoinSet::new();
    let pumped = pump(
        &job,
        &dir,
        &mut stdout,
        &lanes,
        &mut tasks,
        &progress,
        &cancel,
    )
    .await;
    let records = match pumped {
        Ok(r) => r,
        Err(e) => {
            tasks.shutdown().await;
            source.terminate(source_grace()).await;
            progress.finish();
            return Err(e);
        }
    };
    drop(stdout);
    let finished = tokio::select! {
        r = source.finish() => r,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    if let Err(e) = finished {
        progress.finish();
        return Err(anyhow!(e)).with_context(|| {
            format!(
                "{} failed after {} bytes, so the stream is incomplete and no manifest was written",
                job.source_desc,
                records.iter().map(|r| r.length).sum::<u64>()
            )
        });
    }

    if records.is_empty() && job.source_kind != "command" {
        progress.finish();
        bail!(
            "{} wrote 0 bytes and exited 0, but a {} send stream is never empty, so nothing was recorded as a backup \
             (no manifest; the parent snapshot is kept); check the dataset's send_flags (`-n` is a dry run)",
            job.source_desc,
            job.source_kind
        );
    }
    let confirmed = confirm_sizes(&dir, &records, &lanes, &cancel).await?;
    for r in &records {
        let holders = confirmed
            .values()
            .filter(|set| set.contains(&r.index))
            .count();
        if holders < job.min_providers {
            progress.finish();
            bail!(
                "shard {} of {} is on {holders} provider(s) after checking sizes, fewer than min_providers = {}; no manifest was written (a re-run resumes)",
                r.index,
                job.id,
                job.min_providers
            );
        }
    }

    let manifest = Manifest {
        format: FORMAT_VERSION,
        host: job.host.clone(),
        dataset: job.dataset.clone(),
        backup_id: job.id.to_string(),
        kind: job.id.kind,
        source_kind: job.source_kind.clone(),
        source: job.source.clone(),
        snapshot: job.snapshot.clone(),
        parent: job.parent.clone(),
        created: layout::rfc3339(SystemTime::now()),
        shard_size: job.shard_size,
        total_bytes: records.iter().map(|r| r.length).sum(),
        shards: records,
        tool: format!("offsite {}", env!("CARGO_PKG_VERSION")),
    };
    let written = write_manifests(&dir, &manifest, &lanes, &cancel).await?;
    progress.finish();

    let providers = lanes
        .iter()
        .map(|lane| {
            // A provider dropped from the run was not listed: what rclone reported uploaded is
            // the best knowledge (sync and status check it later).
            let uploaded = lane.uploaded.lock().unwrap().clone();
            let held = confirmed
                .get(lane.name())
                .or(lane.is_down().then_some(&uploaded));
            ProviderOutcome {
                provider: lane.name().to_string(),
                missing_shards: manifest
                    .shards
                    .iter()
                    .map(|s| s.index)
                    .filter(|i| !held.is_some_and(|h| h.contains(i)))
                    .collect(),
                manifest_written: written.contains(lane.name()),
                error: lane.down.get().cloned(),
            }
        })
        .collect();
    debug_assert!(job.id.kind == BackupKind::Full || manifest.parent.is_some());
    Ok(Report {
        backup_id: job.id,
        total_bytes: manifest.total_bytes,
        shards: manifest.shards.len() as u64,
        elapsed: start.elapsed(),
        providers,
    })
}

/// One lane per provider; when resuming, each provider is listed once to see what it holds.
async fn make_lanes(job: &Job, dir: &str, cancel: &CancellationToken) -> Result<Vec<Lane>> {
    let lanes = job.providers.iter().map(|p| async move {
        let lane = Lane {
            provider: p.clone(),
            slots: Arc::new(Semaphore::new(job.concurrency)),
            down: OnceLock::new(),
            uploaded: Mutex::default(),
            present: HashMap::new(),
        };
        if job.resume.is_none() {
            return lane;
        }
        match p.list(dir).await {
            Ok(listing) => Lane {
                present: listing.into_iter().map(|o| (o.path, o.size)).collect(),
                ..lane
            },
            Err(e) => {
                lane.drop_out(&e);
                lane
            }
        }
    });
    tokio::select! {
        lanes = futures::future::join_all(lanes) => Ok(lanes),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

/// Reads shards and hands each to an upload task, until end of stream; returns the shards'
/// records in stream order once every upload has ended.
async fn pump<R: AsyncRead + Unpin>(
    job: &Job,
    dir: &str,
    stdout: &mut R,
    lanes: &Arc<Vec<Lane>>,
    tasks: &mut JoinSet<Result<ShardRecord>>,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<ShardRecord>> {
    let slots = Arc::new(Semaphore::new(job.shards_in_flight));
    let mut records = Vec::new();
    let (mut index, mut offset) = (0u64, 0u64);
    loop {
        let permit = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Interrupted.into()),
                Some(done) = tasks.join_next() => records.push(done??),
                p = slots.clone().acquire_owned() => break p.expect("semaphore is never closed"),
            }
        };
        let data = tokio::select! {
            _ = cancel.cancelled() => return Err(Interrupted.into()),
            r = read_shard(stdout, job.shard_size) => r
                .with_context(|| format!("reading {} at byte {offset}", job.source_desc))?,
        };
        let len = data.len() as u64;
        if len == 0 {
            break;
        }
        progress.advance(len);
        let known = match job.resume.as_ref().and_then(|r| r.get(&index)) {
            Some(rec) => Some(check_recorded(job, rec, &data).await?),
            None => None,
        };
        let shard = Shard {
            index,
            offset,
            data,
            known,
        };
        let (lanes, path, progress) = (
            lanes.clone(),
            format!("{dir}/{}", layout::shard_name(index, offset)),
            progress.clone(),
        );
        let min = job.min_providers;
        let id = job.id.to_string();
        let journal = job.journal.clone();
        tasks.spawn(async move {
            let record = ship(shard, &path, &lanes, min, &progress, journal.as_deref()).await;
            drop(permit);
            record.with_context(|| format!("backup {id}"))
        });
        index += 1;
        offset += len;
        if len < job.shard_size {
            break;
        }
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(Interrupted.into()),
            done = tasks.join_next() => match done {
                Some(done) => records.push(done??),
                None => break,
            },
        }
    }
    records.sort_by_key(|r| r.index);
    if let Some(missing) = job
        .resume
        .as_ref()
        .and_then(|r| r.values().find(|r| r.index >= index))
    {
        return Err(SourceChanged {
            dataset: job.dataset.clone(),
            backup_id: job.id.to_string(),
            index: missing.index,
            offset: missing.offset,
            what: format!("the stream ended after {offset} bytes, before this recorded shard"),
        }
        .into());
    }
    Ok(records)
}

/// Hashes a re-read shard and compares it with what the unfinished backup recorded.
async fn check_recorded(job: &Job, rec: &ShardRecord, data: &Bytes) -> Result<String> {
    let d = data.clone();
    let sha = tokio::task::spawn_blocking(move || hex(&Sha256::digest(&d))).await?;
    if rec.length != data.len() as u64 || rec.sha256 != sha {
        return Err(SourceChanged {
            dataset: job.dataset.clone(),
            backup_id: job.id.to_string(),
            index: rec.index,
            offset: rec.offset,
            what: format!(
                "{} bytes with SHA-256 {} now, {} bytes with SHA-256 {} then",
                data.len(),
                &sha[..12],
                rec.length,
                &rec.sha256[..12]
            ),
        }
        .into());
    }
    Ok(sha)
}

struct Shard {
    index: u64,
    offset: u64,
    data: Bytes,
    /// The SHA-256, when already checked against the journal.
    known: Option<String>,
}

/// Reads up to `size` bytes: fewer only at end of stream.
async fn read_shard<R: AsyncRead + Unpin>(r: &mut R, size: u64) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size as usize);
    while (buf.len() as u64) < size {
        if r.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// Uploads one shard to every provider still in the run that lacks it, hashing it meanwhile.
async fn ship(
    shard: Shard,
    path: &str,
    lanes: &[Lane],
    min_providers: usize,
    progress: &Arc<dyn Progress>,
    journal: Option<&Journal>,
) -> Result<ShardRecord> {
    // SHA-256, MD5 and SHA-1 in one pass (the native hashes go into the manifest, format 2).
    let hash = crate::hashing::digests_blocking(shard.data.clone());
    let name = layout::shard_name(shard.index, shard.offset);
    let uploads = lanes.iter().map(|lane| {
        let data = shard.data.clone();
        let progress = progress.clone();
        let in_place =
            shard.known.is_some() && lane.present.get(&name) == Some(&(data.len() as u64));
        async move {
            if lane.is_down() {
                return Err(lane.down.get().cloned().unwrap_or_default());
            }
            if in_place {
                lane.uploaded.lock().unwrap().insert(shard.index);
                progress.provider(lane.name(), data.len() as u64);
                return Ok(());
            }
            let slot = lane
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            if lane.is_down() {
                return Err(lane.down.get().cloned().unwrap_or_default());
            }
            // The slot is freed as soon as the whole shard is handed to the uploader, so the
            // provider's next upload starts while this one drains rclone's buffers.
            let slot = Arc::new(Mutex::new(Some(slot)));
            let len = data.len() as u64;
            let on_sent = provider_progress(progress, lane.name(), Some((slot.clone(), len)));
            let put = lane.provider.put(path, data, Some(on_sent)).await;
            slot.lock().unwrap().take();
            match put {
                Ok(()) => {
                    lane.uploaded.lock().unwrap().insert(shard.index);
                    Ok(())
                }
                Err(e) => {
                    lane.drop_out(&e);
                    Err(e.to_string())
                }
            }
        }
    });
    // The journal describes the source, not the uploads: a shard is recorded as soon as it is
    // hashed, so a resume trusts a provider's whole object even if a slower provider never got it.
    let journaled = async {
        let digests = hash.await.context("hashing a shard")?;
        let record = ShardRecord {
            index: shard.index,
            offset: shard.offset,
            length: shard.data.len() as u64,
            sha256: digests.sha256,
            md5: Some(digests.md5),
            sha1: Some(digests.sha1),
        };
        if let (Some(j), None) = (journal, &shard.known) {
            j.record(&record).context("writing the resume journal")?;
        }
        anyhow::Ok(record)
    };
    let (record, results) = tokio::join!(journaled, futures::future::join_all(uploads));
    let record = record?;
    let held = results.iter().filter(|r| r.is_ok()).count();
    if held < min_providers {
        let why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        bail!(
            "shard {} (byte {}) reached {held} provider(s), fewer than min_providers = {min_providers}: {}",
            shard.index,
            shard.offset,
            why.join("; ")
        );
    }
    Ok(record)
}

/// Reports an upload's cumulative byte count as increments; a retry's restart from zero does
/// not count twice.
/// `release`, when given, is a provider slot freed once `len` bytes were sent.
fn provider_progress(
    progress: Arc<dyn Progress>,
    name: &str,
    release: Option<(SlotCell, u64)>,
) -> ProgressFn {
    let name = name.to_string();
    let high = AtomicU64::new(0);
    Arc::new(move |sent| {
        let before = high.fetch_max(sent, Ordering::Relaxed);
        if sent > before {
            progress.provider(&name, sent - before);
        }
        if let Some((slot, len)) = &release {
            if sent >= *len {
                slot.lock().unwrap().take();
            }
        }
    })
}

type SlotCell = Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

/// Lists each provider once and keeps the shards whose object has the right size.
async fn confirm_sizes(
    dir: &str,
    records: &[ShardRecord],
    lanes: &[Lane],
    cancel: &CancellationToken,
) -> Result<HashMap<String, BTreeSet<u64>>> {
    let checks = lanes.iter().filter(|l| !l.is_down()).map(|lane| async move {
        let listing = match lane.provider.list(dir).await {
            Ok(l) => l,
            Err(e) => {
                lane.drop_out(&e);
                return (lane.name().to_string(), BTreeSet::new());
            }
        };
        let sizes: HashMap<&str, u64> = listing.iter().map(|o| (o.path.as_str(), o.size)).collect();
        let uploaded = lane.uploaded.lock().unwrap().clone();
        let mut ok = BTreeSet::new();
        for r in records.iter().filter(|r| uploaded.contains(&r.index)) {
            match sizes.get(r.name().as_str()) {
                Some(&size) if size == r.length => {
                    ok.insert(r.index);
                }
                found => tracing::error!(
                    "provider {}: shard {} was reported uploaded but the remote holds {}, not {} bytes; it counts as missing",
                    lane.name(),
                    r.name(),
                    found.map_or("nothing".to_string(), |s| format!("{s} bytes")),
                    r.length
                ),
            }
        }
        (lane.name().to_string(), ok)
    });
    tokio::select! {
        r = futures::future::join_all(checks) => Ok(r.into_iter().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

/// Writes the manifest to every provider still in the run; returns those that took it.
async fn write_manifests(
    dir: &str,
    manifest: &Manifest,
    lanes: &[Lane],
    cancel: &CancellationToken,
) -> Result<BTreeSet<String>> {
    let body = Bytes::from(manifest.to_json());
    let path = format!("{dir}/{}", layout::MANIFEST);
    let writes = lanes.iter().filter(|l| !l.is_down()).map(|lane| {
        let (body, path) = (body.clone(), path.clone());
        async move {
            // A resumed backup's manifest describes the same verified shards: keep it.
            if lane.present.contains_key(layout::MANIFEST) {
                return Some(lane.name().to_string());
            }
            match lane.provider.put(&path, body, None).await {
                Ok(()) => Some(lane.name().to_string()),
                Err(e) => {
                    lane.drop_out(&e);
                    None
                }
            }
        }
    });
    tokio::select! {
        r = futures::future::join_all(writes) => Ok(r.into_iter().flatten().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

#[cfg(test)]
mod tests;
