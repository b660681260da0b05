//! The backup pipeline: a source stream cut into shards, each shard compressed and encrypted
//! once (the job's [`Codec`]) and the same stored bytes uploaded to every provider in
//! parallel, then a size check from one listing per provider, then the manifests.
//! Erasure-coded (`erasure = "k+m"`), each stored shard is cut into `k + m` pieces and each
//! provider gets only the piece placement puts there (`ErasureRecord::piece_on`).
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` shards are held at once, each as its plaintext and its
//!   stored bytes at most (the plaintext is dropped once encoded; erasure-coded, the stored
//!   bytes are dropped once cut, and the padded data pieces and the parity stay); the reader waits for a free
//!   slot before it reads the next shard (a bounded, `head -c`-style read). How many uploads
//!   run on one provider at once is the provider's own limit (`provider::Limit`), not this
//!   pipeline's.
//! - A shard is kept in memory until every provider has it (or gave up), so a retry never
//!   re-reads the source. With a spool (`spool_dir`), it is kept there instead once encoded
//!   and hashed, and its place in memory freed: a slow provider then holds up the reader (and
//!   the fast providers) only once `spool_size` bytes wait for it.
//! - A provider whose upload fails after all retries is dropped for the rest of the run; the
//!   others go on. A shard that reaches fewer than `min_providers` providers (erasure-coded:
//!   fewer than `k` of its pieces stored) fails the run.
//! - An object only counts once a listing shows it with the right size: rclone `rcat` reports
//!   success at end of input, so a truncated object is caught here, not trusted.
//! - No manifest is written unless the source exited 0 and every shard is on `min_providers`.
//! - A zfs or btrfs stream of 0 bytes is an error, never a backup (only a command may be empty).
//! - Compression, encryption and hashing run on the blocking pool, one task per shard
//!   (`encode`), never on the async reactor.
//! - Each shard's record (stored and plaintext hashes) goes to the resume journal as soon as it
//!   is encoded, whatever the uploads do: a resume then trusts every provider's object of the
//!   right stored size for it, and never mixes two encodings of one shard (`resume`).
//! - An encrypted backup's manifest is sealed ([`Manifest::seal`]): its source and plaintext
//!   hashes are only in the part encrypted to the recipients.
//! - On any error the source and every upload are stopped and waited on before returning, and
//!   the first error is the one returned. The progress display is finished on every path.
//!
//! The rooms: [`plan`] decides what a run does (pure), [`dataset`] is the one entry point a
//! command calls per dataset (lock, resume or new, snapshot, pipeline, local retention);
//! `lanes`, `pump` and `seal` are the pipeline's stages.

pub mod dataset;
pub mod dry_run;
mod encode;
mod lanes;
pub mod limits;
mod native;
pub mod plan;
mod pump;
mod resume;
mod seal;

pub use dataset::{back_up_dataset, DatasetRun};
pub use plan::BackupRequest;

use crate::codec::Codec;
use crate::error::Interrupted;
use crate::layout::{self, BackupId, BackupKind};
use crate::manifest::{ErasureRecord, Manifest, ParentRef, ShardRecord, FORMAT_VERSION};
use crate::process::ChildProc;
use crate::progress::Progress;
use crate::provider::DynProvider;
use crate::spool::Spool;
use crate::state::Journal;
use anyhow::{anyhow, bail, Context, Result};
use lanes::{BackupLane, Lag, Shipping};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
pub struct BackupJob {
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
    /// The memory bound: shards read but not yet on every provider.
    pub shards_in_flight: usize,
    /// Uploads at once per provider (`concurrency`): with a spool, how far a provider may
    /// trail the others before it yields (`lanes::Lag`).
    pub concurrency: usize,
    pub providers: Vec<DynProvider>,
    /// Expected stream size, for progress.
    pub estimate: Option<u64>,
    /// Resuming: the shards the unfinished backup recorded (a contiguous prefix). Each one's
    /// plaintext is re-hashed from the re-read stream and compared before anything after it is
    /// uploaded; providers whose listing shows it at the right stored size are not sent it
    /// again.
    pub resume: Option<BTreeMap<u64, ShardRecord>>,
    /// Where each newly encoded shard is recorded, for a later resume.
    pub journal: Option<Arc<Journal>>,
    /// How each shard is stored: compressed, encrypted, both or neither.
    pub codec: Codec,
    /// Erasure-coded: the code and the providers placement counts (in this order); `None`
    /// mirrors every shard to every provider.
    pub erasure: Option<ErasureRecord>,
    /// `spool_dir`: where a shard goes once encoded and hashed, so that its place in memory is
    /// free for the next one while slow providers still upload it. `None`: shards stay in
    /// memory until every provider has them.
    pub spool: Option<Arc<Spool>>,
}

/// What one provider ended up with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderOutcome {
    pub provider: String,
    /// Erasure-coded: how many pieces (one per shard at most) placement puts here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<u64>,
    /// Indexes of the shards this provider does not hold (erasure-coded: whose piece it
    /// should hold but does not).
    pub missing_shards: Vec<u64>,
    pub manifest_written: bool,
    /// Why it was dropped from the run, if it was.
    pub error: Option<String>,
}

/// What one backup wrote, per provider.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub backup_id: BackupId,
    pub total_bytes: u64,
    pub shards: u64,
    pub elapsed: Duration,
    pub providers: Vec<ProviderOutcome>,
    /// The unfinished backup this run discarded because its command's stream changed
    /// (`resume = "auto"`), if it did.
    pub discarded: Option<String>,
}

impl BackupReport {
    /// The source sent 0 bytes (a command that printed nothing and exited 0).
    pub fn empty(&self) -> bool {
        self.total_bytes == 0
    }

    /// Every provider holds every shard and the manifest.
    pub fn complete(&self) -> bool {
        self.providers
            .iter()
            .all(|p| p.missing_shards.is_empty() && p.manifest_written)
    }
}

/// Finishes the progress display when dropped, so no early return leaves it running.
struct FinishProgress(Arc<dyn Progress>);

impl Drop for FinishProgress {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Runs the pipeline over `source`'s stdout. The caller owns snapshots and locks.
pub async fn run(
    job: BackupJob,
    source: ChildProc,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<BackupReport> {
    let start = Instant::now();
    let dir = layout::backup_dir(&job.host, &job.dataset, &job.id);
    let names: Vec<String> = job.providers.iter().map(|p| p.name().to_string()).collect();
    progress.begin(&format!("backup {}", job.dataset), job.estimate, &names);
    let finish = FinishProgress(progress.clone());
    // Asked while the lanes list (resuming) and the first shards are read; see `native`.
    let (natives, asking) = native::Natives::ask(&job.providers);
    let lanes = lanes::make_lanes(&job, &dir, &progress, &cancel).await?;
    let lanes: Arc<Vec<BackupLane>> = Arc::new(lanes);

    let shipping = Arc::new(Shipping {
        dir: dir.clone(),
        lanes: lanes.clone(),
        encoder: encode::Encoder {
            codec: job.codec.clone(),
            erasure: job.erasure.as_ref().map(ErasureRecord::scheme),
            natives,
        },
        erasure: job.erasure.clone(),
        min_providers: job.min_providers,
        progress: progress.clone(),
        journal: job.journal.clone(),
        spool: job.spool.clone(),
        lag: Arc::new(Lag::new(lanes.len(), job.concurrency, job.shards_in_flight)),
    });
    let records = stream(&job, source, &shipping, &cancel).await?;
    // Every shard is hashed: an answer still to come no longer matters.
    drop(asking);
    if records.is_empty() && job.source_kind != "command" {
        bail!(
            "{} wrote 0 bytes and exited 0, but a {} send stream is never empty, so nothing was recorded as a backup \
             (no manifest; the parent snapshot is kept); check the dataset's send_flags (`-n` is a dry run)",
            job.source_desc,
            job.source_kind
        );
    }
    if records.is_empty() {
        tracing::warn!(
            "{:?}: {} printed nothing and exited 0: backup {} is empty (0 bytes); check the command",
            job.dataset,
            job.source_desc,
            job.id
        );
    }
    let confirmed = seal::confirm_sizes(&shipping, &records, &cancel).await?;
    seal::check_min_providers(&shipping, &records, &confirmed)?;
    let rewrite = restored_afresh(&job, &records);
    let manifest = Arc::new(manifest(&job, records).await?);
    let spool_dir = job.spool.as_ref().map(|s| s.dir());
    let body = crate::spool::manifest(&manifest, spool_dir).await;
    let written = seal::write_manifests(&dir, body, &lanes, rewrite, &cancel).await?;
    drop(finish);

    let providers = seal::outcomes(&lanes, &manifest, &confirmed, &written);
    debug_assert!(job.id.kind == BackupKind::Full || manifest.parent.is_some());
    Ok(BackupReport {
        backup_id: job.id,
        total_bytes: manifest.total_bytes,
        shards: manifest.shards.len() as u64,
        elapsed: start.elapsed(),
        providers,
        discarded: None,
    })
}

/// Pumps the whole stream through the uploads and waits for the source to exit 0; returns the
/// shards' records in stream order. On error the uploads and the source are stopped first.
async fn stream(
    job: &BackupJob,
    mut source: ChildProc,
    shipping: &Arc<Shipping>,
    cancel: &CancellationToken,
) -> Result<Vec<ShardRecord>> {
    let mut stdout = source.take_stdout().expect("source stdout is piped");
    let mut tasks = JoinSet::new();
    let pumped = pump::pump(job, &mut stdout, shipping, &mut tasks, cancel).await;
    let records = match pumped {
        Ok(r) => r,
        Err(e) => {
            tasks.shutdown().await;
            source.terminate(source_grace()).await;
            return Err(e);
        }
    };
    drop(stdout);
    let finished = tokio::select! {
        r = source.finish() => r,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    finished.map_err(|e| anyhow!(e)).with_context(|| {
        format!(
            "{} failed after {} bytes, so the stream is incomplete and no manifest was written",
            job.source_desc,
            records.iter().map(|r| r.plain_len()).sum::<u64>()
        )
    })?;
    Ok(records)
}

/// Whether a resumed shard had to be stored afresh (no provider held its journaled bytes), so
/// a manifest already written by the run being resumed describes other bytes.
fn restored_afresh(job: &BackupJob, records: &[ShardRecord]) -> bool {
    let Some(resume) = &job.resume else {
        return false;
    };
    records
        .iter()
        .any(|r| resume.get(&r.index).is_some_and(|j| j.sha256 != r.sha256))
}

/// The manifest of a backup whose every shard is on `min_providers`; an encrypted backup's is
/// sealed (on the blocking pool: it is an age encryption).
async fn manifest(job: &BackupJob, records: Vec<ShardRecord>) -> Result<Manifest> {
    let m = Manifest {
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
        total_bytes: records.iter().map(|r| r.plain_len()).sum(),
        shards: records,
        tool: format!("offsite {}", env!("CARGO_PKG_VERSION")),
        encoding: job.codec.encoding(),
        recipients: Vec::new(),
        sealed: None,
        erasure: job.erasure.clone(),
    };
    let Some(recipients) = job.codec.recipients.clone() else {
        return Ok(m);
    };
    tokio::task::spawn_blocking(move || m.seal(&recipients))
        .await?
        .context("sealing the manifest's source and plaintext hashes")
}

#[cfg(test)]
mod tests;
