//! A provider's part of a backup run: its [`Lane`] (dropped out or not), what it has been sent,
//! and, when resuming, what it already held. [`ship`] uploads one shard to every lane.

use super::BackupJob;
use crate::engine::confirm::Listed;
use crate::engine::lane::Lane;
use crate::error::Interrupted;
use crate::layout;
use crate::manifest::ShardRecord;
use crate::progress::Progress;
use crate::provider::ProgressFn;
use crate::state::Journal;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One provider's part of the run.
pub(super) struct BackupLane {
    pub lane: Lane,
    /// Shards whose upload rclone reported as done.
    pub uploaded: Mutex<BTreeSet<u64>>,
    /// When resuming: the objects the provider already held.
    pub present: Listed,
}

impl std::ops::Deref for BackupLane {
    type Target = Lane;

    fn deref(&self) -> &Lane {
        &self.lane
    }
}

impl BackupLane {
    /// Why the lane is down, as an upload's error.
    fn down_error(&self) -> String {
        self.down_reason().unwrap_or_default().to_string()
    }
}

/// One lane per provider; when resuming, each provider is listed once to see what it holds.
pub(super) async fn make_lanes(
    job: &BackupJob,
    dir: &str,
    cancel: &CancellationToken,
) -> Result<Vec<BackupLane>> {
    let lanes = job.providers.iter().map(|p| async move {
        let lane = BackupLane {
            lane: Lane::new(p.clone()),
            uploaded: Mutex::default(),
            present: Listed::default(),
        };
        if job.resume.is_none() {
            return lane;
        }
        match p.list(dir).await {
            Ok(listing) => BackupLane {
                present: Listed::new(listing),
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

/// A shard read from the source.
pub(super) struct Shard {
    pub index: u64,
    pub offset: u64,
    pub data: Bytes,
    /// The SHA-256, when already checked against the journal.
    pub known: Option<String>,
}

/// Uploads one shard to every provider still in the run that lacks it, hashing it meanwhile.
pub(super) async fn ship(
    shard: Shard,
    path: &str,
    lanes: &[BackupLane],
    min_providers: usize,
    progress: &Arc<dyn Progress>,
    journal: Option<&Journal>,
) -> Result<ShardRecord> {
    let uploads = lanes
        .iter()
        .map(|lane| upload(lane, &shard, path, progress.clone()));
    // The journal describes the source, not the uploads: a shard is recorded as soon as it is
    // hashed, so a resume trusts a provider's whole object even if a slower provider never got it.
    let journaled = hash_and_journal(&shard, journal);
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

/// Hashes a shard (SHA-256, MD5 and SHA-1 in one pass: the native hashes go into the manifest,
/// format 2) and records it in the journal unless it was recorded before.
async fn hash_and_journal(shard: &Shard, journal: Option<&Journal>) -> Result<ShardRecord> {
    let digests = crate::hashing::digests_blocking(shard.data.clone())
        .await
        .context("hashing a shard")?;
    let record = ShardRecord {
        index: shard.index,
        offset: shard.offset,
        length: shard.data.len() as u64,
        sha256: digests.sha256,
        md5: Some(digests.md5),
        sha1: Some(digests.sha1),
        plain_length: None,
        plain_sha256: None,
    };
    if let (Some(j), None) = (journal, &shard.known) {
        j.record(&record).context("writing the resume journal")?;
    }
    Ok(record)
}

/// Sends `shard` to one lane, unless the lane is down or (resuming) already holds it whole.
/// `Err` is why the lane does not hold it.
async fn upload(
    lane: &BackupLane,
    shard: &Shard,
    path: &str,
    progress: Arc<dyn Progress>,
) -> Result<(), String> {
    if lane.is_down() {
        return Err(lane.down_error());
    }
    let len = shard.data.len() as u64;
    let name = layout::shard_name(shard.index, shard.offset);
    if shard.known.is_some() && lane.present.size(&name) == Some(len) {
        lane.uploaded.lock().unwrap().insert(shard.index);
        progress.provider(lane.name(), len);
        return Ok(());
    }
    // How many uploads run on one provider at once is the provider's own limit
    // (`provider::Limit`); the memory bound is `shards_in_flight`, held by the caller.
    // An upload waiting for its turn (or retrying) ends when another shard's upload drops the
    // provider: it would only spend its own retries on a provider that is gone.
    let on_sent = provider_progress(progress, lane.name());
    let put = tokio::select! {
        biased;
        _ = lane.dropped() => return Err(lane.down_error()),
        r = lane.provider.put(path, shard.data.clone(), Some(on_sent)) => r,
    };
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

/// Reports an upload's cumulative byte count as increments; a retry's restart from zero does
/// not count twice.
fn provider_progress(progress: Arc<dyn Progress>, name: &str) -> ProgressFn {
    let name = name.to_string();
    let high = AtomicU64::new(0);
    Arc::new(move |sent| {
        let before = high.fetch_max(sent, Ordering::Relaxed);
        if sent > before {
            progress.provider(&name, sent - before);
        }
    })
}
