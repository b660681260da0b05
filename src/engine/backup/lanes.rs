//! A provider's part of a backup run: its [`Lane`] (dropped out or not), what it has been sent,
//! and, when resuming, what it already held. [`ship`] encodes one shard once and uploads the
//! same stored bytes to every lane.

use super::encode::encode;
use super::BackupJob;
use crate::codec::Codec;
use crate::engine::confirm::Listed;
use crate::engine::lane::Lane;
use crate::error::Interrupted;
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
    pub fn down_error(&self) -> String {
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
    /// The plaintext.
    pub data: Bytes,
    /// Resuming: the journaled record, whose plaintext SHA-256 the re-read bytes matched.
    pub journaled: Option<ShardRecord>,
}

/// What every upload task of a run shares.
pub(super) struct Shipping {
    /// The backup's folder on every provider.
    pub dir: String,
    pub lanes: Arc<Vec<BackupLane>>,
    pub codec: Codec,
    pub min_providers: usize,
    pub progress: Arc<dyn Progress>,
    pub journal: Option<Arc<Journal>>,
}

impl Shipping {
    /// The path of `rec`'s stored object on every provider.
    pub fn path(&self, rec: &ShardRecord) -> String {
        format!("{}/{}", self.dir, rec.name(self.codec.encoding()))
    }

    /// Records `rec` in the resume journal, if there is one.
    pub fn journal(&self, rec: &ShardRecord) -> Result<()> {
        match &self.journal {
            Some(j) => j.record(rec).context("writing the resume journal"),
            None => Ok(()),
        }
    }
}

/// What a shard's upload tasks do: the record the manifest gets, the stored bytes, and the
/// lanes to send them to. A lane up and not in `send_to` already holds the object whole.
pub(super) struct Delivery {
    pub record: ShardRecord,
    pub stored: Option<Bytes>,
    pub send_to: BTreeSet<usize>,
}

/// Encodes one shard (on the blocking pool) and uploads the same stored bytes to every
/// provider still in the run that lacks them.
pub(super) async fn ship(shard: Shard, s: &Shipping) -> Result<ShardRecord> {
    let (index, offset) = (shard.index, shard.offset);
    let delivery = match shard.journaled {
        Some(j) => super::resume::delivery(shard.data, j, s).await?,
        None => {
            let enc = encode(&s.codec, index, offset, shard.data, None)
                .await
                .with_context(|| format!("encoding shard {index} (byte {offset})"))?;
            // The journal describes the source, not the uploads: a shard is recorded as soon
            // as it is encoded, so a resume trusts a provider's whole object even if a slower
            // provider never got it.
            s.journal(&enc.record)?;
            Delivery {
                record: enc.record,
                stored: Some(enc.stored),
                send_to: (0..s.lanes.len()).collect(),
            }
        }
    };
    let path = s.path(&delivery.record);
    let uploads = s.lanes.iter().enumerate().map(|(i, lane)| {
        let send = delivery.send_to.contains(&i);
        upload(lane, &delivery, send, &path, s.progress.clone())
    });
    let results = futures::future::join_all(uploads).await;
    let held = results.iter().filter(|r| r.is_ok()).count();
    if held < s.min_providers {
        let why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        bail!(
            "shard {index} (byte {offset}) reached {held} provider(s), fewer than min_providers = {}: {}",
            s.min_providers,
            why.join("; ")
        );
    }
    Ok(delivery.record)
}

/// Sends the stored bytes to one lane when `send`; else the lane already holds them. `Err` is
/// why the lane does not hold the shard.
async fn upload(
    lane: &BackupLane,
    d: &Delivery,
    send: bool,
    path: &str,
    progress: Arc<dyn Progress>,
) -> Result<(), String> {
    if lane.is_down() {
        return Err(lane.down_error());
    }
    let index = d.record.index;
    let stored = match (&d.stored, send) {
        (Some(stored), true) => stored.clone(),
        _ => {
            lane.uploaded.lock().unwrap().insert(index);
            progress.provider(lane.name(), d.record.length);
            return Ok(());
        }
    };
    // How many uploads run on one provider at once is the provider's own limit
    // (`provider::Limit`); the memory bound is `shards_in_flight`, held by the caller.
    // An upload waiting for its turn (or retrying) ends when another shard's upload drops the
    // provider: it would only spend its own retries on a provider that is gone.
    let on_sent = provider_progress(progress, lane.name());
    let put = tokio::select! {
        biased;
        _ = lane.dropped() => return Err(lane.down_error()),
        r = lane.provider.put(path, stored, Some(on_sent)) => r,
    };
    match put {
        Ok(()) => {
            lane.uploaded.lock().unwrap().insert(index);
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
