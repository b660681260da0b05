//! A provider's part of a backup run: its [`Lane`] (dropped out or not), what it has been sent,
//! and, when resuming, what it already held. [`ship`] encodes one shard once and uploads the
//! same stored bytes to every lane, or, erasure-coded, each lane the piece placed on it.
//!
//! Progress tells the truth about each provider: an object counts as stored when its upload
//! succeeded (bytes handed to rclone before that are only `sending`, see
//! `progress::UploadMeter`), a failed one never; a shard counts as done for the backup once
//! every provider still in the run has ended its upload, so the main rate is the upload rate
//! of the slowest provider, not the source's read rate. Objects a resumed backup finds in
//! place count as done, not in any rate.

use super::encode::{encode_unhashed, Encoder, Payload, Unhashed};
use super::BackupJob;
use crate::config::units::human_bytes;
use crate::engine::confirm::Listed;
use crate::engine::lane::Lane;
use crate::error::Interrupted;
use crate::layout;
use crate::manifest::{ErasureRecord, ShardRecord};
use crate::progress::{Progress, UploadMeter};
use crate::provider::priority;
use crate::spool::Spool;
use crate::state::Journal;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// One provider's part of the run.
pub(super) struct BackupLane {
    pub lane: Lane,
    /// Shards whose upload rclone reported as done.
    pub uploaded: Mutex<BTreeSet<u64>>,
    /// When resuming: the objects the provider already held.
    pub present: Listed,
    /// Shards whose upload to this provider has ended (stored, failed, or nothing to send).
    pub settled: AtomicU64,
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

/// One lane per provider, its drop reported to `progress`; when resuming, each provider is
/// listed once to see what it holds.
pub(super) async fn make_lanes(
    job: &BackupJob,
    dir: &str,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<BackupLane>> {
    let lanes = job.providers.iter().map(|p| async move {
        let lane = BackupLane {
            lane: Lane::new(p.clone()).reporting_to(progress.clone()),
            uploaded: Mutex::default(),
            present: Listed::default(),
            settled: AtomicU64::new(0),
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
    pub encoder: Encoder,
    /// Erasure-coded: the code and the providers placement counts.
    pub erasure: Option<ErasureRecord>,
    pub min_providers: usize,
    pub progress: Arc<dyn Progress>,
    pub journal: Option<Arc<Journal>>,
    /// `spool_dir`: see [`spool_out`].
    pub spool: Option<Arc<Spool>>,
}

/// The object a provider holds of one shard.
pub(super) struct Placed {
    /// Its name in the backup's folder.
    pub name: String,
    pub length: u64,
    /// Erasure-coded: which piece (0-based).
    pub piece: Option<usize>,
}

impl Shipping {
    /// What `provider` holds of shard `rec`: the whole stored shard, or the piece placement
    /// puts there; `None` when it holds no piece of this shard.
    pub fn placed(&self, rec: &ShardRecord, provider: &str) -> Option<Placed> {
        let name = rec.name(self.encoder.codec.encoding());
        let Some(e) = &self.erasure else {
            let length = rec.length;
            return Some(Placed {
                name,
                length,
                piece: None,
            });
        };
        let piece = e.piece_on(rec.index, provider)?;
        Some(Placed {
            name: layout::piece_object(&name, piece, e.k + e.m),
            length: rec.pieces.get(piece)?.length,
            piece: Some(piece),
        })
    }

    /// The path of an object in the backup's folder.
    pub fn path(&self, placed: &Placed) -> String {
        format!("{}/{}", self.dir, placed.name)
    }

    /// How many providers (mirrored) or pieces (erasure-coded) must hold a shard.
    pub fn needed(&self) -> usize {
        self.erasure.as_ref().map_or(self.min_providers, |e| e.k)
    }

    /// Records `rec` in the resume journal, if there is one.
    pub fn journal(&self, rec: &ShardRecord) -> Result<()> {
        match &self.journal {
            Some(j) => j.record(rec).context("writing the resume journal"),
            None => Ok(()),
        }
    }
}

/// What a shard's upload tasks do: the record the manifest gets, the stored bytes (or pieces),
/// and the lanes to send them to. A lane up and not in `send_to` already holds its object whole.
pub(super) struct Delivery {
    pub record: ShardRecord,
    pub payload: Option<Payload>,
    pub send_to: BTreeSet<usize>,
}

/// Encodes one shard (on the blocking pool) and uploads the same stored bytes (or each its
/// piece) to every provider still in the run that lacks them. A fresh shard's objects are
/// hashed while they upload (uploads need only their lengths), and journaled once hashed;
/// with a spool, they are hashed while they are spooled (see [`spool_out`]). `memory` is the
/// shard's place in memory, freed once nothing of the shard is left in memory.
pub(super) async fn ship(
    shard: Shard,
    memory: OwnedSemaphorePermit,
    s: &Shipping,
) -> Result<ShardRecord> {
    let (index, offset) = (shard.index, shard.offset);
    let (delivery, unhashed) = match shard.journaled {
        Some(j) => (super::resume::delivery(shard.data, j, s).await?, None),
        None => {
            let enc = encode_unhashed(&s.encoder, index, offset, shard.data, None)
                .await
                .with_context(|| format!("encoding shard {index} (byte {offset})"))?;
            let delivery = Delivery {
                record: enc.record.clone(),
                payload: Some(enc.payload.clone()),
                send_to: (0..s.lanes.len()).collect(),
            };
            (delivery, Some(enc))
        }
    };
    let (delivery, unhashed, _memory) = match &s.spool {
        Some(spool) => {
            let (delivery, memory) = spool_out(delivery, unhashed, memory, spool, s).await?;
            (delivery, None, memory)
        }
        None => (delivery, unhashed, Some(memory)),
    };
    let moved =
        delivery.payload.is_some() && delivery.send_to.iter().any(|&i| !s.lanes[i].is_down());
    let uploads = s.lanes.iter().enumerate().map(|(i, lane)| {
        let send = delivery.send_to.contains(&i);
        settle(s, i, upload(lane, s, &delivery, send))
    });
    let record = async {
        let Some(enc) = &unhashed else {
            return Ok(delivery.record.clone());
        };
        let record = enc
            .record()
            .await
            .with_context(|| format!("hashing shard {index}"))?;
        // The journal describes the source, not the uploads: a shard is recorded as soon as
        // it is encoded, so a resume trusts a provider's whole object even if a slower
        // provider never got it.
        s.journal(&record)?;
        anyhow::Ok(record)
    };
    let (record, results) = futures::future::join(record, futures::future::join_all(uploads)).await;
    let record = record?;
    let held = results.iter().filter(|r| matches!(r, Ok(true))).count();
    if held < s.needed() {
        let why: Vec<String> = results.into_iter().filter_map(|r| r.err()).collect();
        bail!("{}: {}", too_few(s, index, offset, held), why.join("; "));
    }
    match moved {
        true => s.progress.advance(record.plain_len()),
        false => s.progress.already_done(None, record.plain_len()),
    }
    Ok(record)
}

/// Runs lane `i`'s upload of a shard, and counts the shard as settled for the lane once it
/// ends. With a spool, the upload yields the CPU to the other providers while this one is
/// behind them ([`is_behind`], asked as the transfer starts; see `provider::priority`).
async fn settle<T>(s: &Shipping, i: usize, upload: impl Future<Output = T>) -> T {
    let ended = match &s.spool {
        Some(spool) => {
            let (lanes, spool) = (s.lanes.clone(), spool.clone());
            let behind = move || is_behind(&lanes, i, spool.is_full());
            priority::when(Arc::new(behind), upload).await
        }
        None => upload.await,
    };
    s.lanes[i].settled.fetch_add(1, Ordering::Relaxed);
    ended
}

/// Whether lane `i` is behind: it has settled fewer shards than every other provider still in
/// the run, and the spool is not full (when it is, the source waits for the slowest
/// provider, which then goes at full priority). Only the last provider yields, so two that
/// keep up never slow each other down, and one that fell behind stays so, out of the way,
/// until the others are through or the spool is full.
fn is_behind(lanes: &[BackupLane], i: usize, spool_full: bool) -> bool {
    let settled = |l: &BackupLane| l.settled.load(Ordering::Relaxed);
    let others = lanes
        .iter()
        .enumerate()
        .filter(|(j, l)| *j != i && !l.is_down());
    let least_of_others = others.map(|(_, l)| settled(l)).min();
    !spool_full && least_of_others.is_some_and(|least| settled(&lanes[i]) < least)
}

/// With a spool: hashes a fresh shard while it copies its stored objects into the spool
/// (waiting for room there), then journals it and frees its place in memory, so the source is
/// read on while slow providers still upload it. A shard the spool cannot take (disk full, I/O
/// error) stays in memory, with one warning per run. Returns the delivery, hashed, and the
/// place in memory if still held.
async fn spool_out(
    mut d: Delivery,
    unhashed: Option<Unhashed>,
    memory: OwnedSemaphorePermit,
    spool: &Spool,
    s: &Shipping,
) -> Result<(Delivery, Option<OwnedSemaphorePermit>)> {
    let index = d.record.index;
    let Some(payload) = d.payload.take() else {
        debug_assert!(unhashed.is_none(), "a fresh shard always has a payload");
        return Ok((d, Some(memory)));
    };
    // Both read the same bytes in memory: hashing and the copy (a write and an fsync) overlap.
    let hashed = async {
        match &unhashed {
            Some(enc) => enc.record().await.map(Some),
            None => Ok(None),
        }
    };
    let (hashed, kept) = futures::future::join(hashed, spool.keep(payload.parts())).await;
    drop(unhashed);
    if let Some(record) = hashed.with_context(|| format!("hashing shard {index}"))? {
        s.journal(&record)?;
        d.record = record;
    }
    match kept {
        Ok(parts) => {
            d.payload = Some(payload.with_parts(parts));
            drop(payload);
            tracing::debug!(
                "shard {index} spooled to {} (the spool holds {})",
                spool.dir().display(),
                human_bytes(spool.used())
            );
            Ok((d, None))
        }
        Err(e) => {
            if spool.first_failure() {
                tracing::warn!(
                    "spool_dir {}: cannot write shard {index} there ({e}); shards stay in memory \
                     until every provider has them, so a slow provider may hold up the others",
                    spool.dir().display()
                );
            }
            d.payload = Some(payload);
            Ok((d, Some(memory)))
        }
    }
}

/// Why a shard that reached only `held` providers (or pieces) fails the backup.
pub(super) fn too_few(s: &Shipping, index: u64, offset: u64, held: usize) -> String {
    match &s.erasure {
        None => format!(
            "shard {index} (byte {offset}) reached {held} provider(s), fewer than min_providers = {}",
            s.min_providers
        ),
        Some(e) => format!(
            "shard {index} (byte {offset}): {held} of its {} pieces are stored, fewer than the {} \
             any restore needs (erasure = \"{}\")",
            e.k + e.m,
            e.k,
            e.scheme()
        ),
    }
}

/// Sends one lane its object of the shard when `send`; else the lane already holds it.
/// `Ok(false)`: placement puts no piece of this shard there. `Err` is why the lane does not
/// hold its object.
async fn upload(lane: &BackupLane, s: &Shipping, d: &Delivery, send: bool) -> Result<bool, String> {
    let Some(placed) = s.placed(&d.record, lane.name()) else {
        return Ok(false);
    };
    if lane.is_down() {
        return Err(lane.down_error());
    }
    let index = d.record.index;
    let bytes = match (&d.payload, send) {
        (Some(payload), true) => payload.part(placed.piece),
        _ => {
            lane.uploaded.lock().unwrap().insert(index);
            s.progress.already_done(Some(lane.name()), placed.length);
            return Ok(true);
        }
    };
    // How many uploads run on one provider at once is the provider's own limit
    // (`provider::Limit`); the memory bound is `shards_in_flight`, held by the caller.
    // An upload waiting for its turn (or retrying) ends when another shard's upload drops the
    // provider: it would only spend its own retries on a provider that is gone.
    let meter = UploadMeter::new(s.progress.clone(), lane.name());
    let (path, length) = (s.path(&placed), bytes.len() as u64);
    let put = tokio::select! {
        biased;
        _ = lane.dropped() => return Err(lane.down_error()),
        r = lane.provider.put(&path, bytes, Some(meter.on_sent())) => r,
    };
    match put {
        Ok(()) => {
            lane.uploaded.lock().unwrap().insert(index);
            meter.stored(length);
            Ok(true)
        }
        Err(e) => {
            lane.drop_out(&e);
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MemoryProvider;

    fn lanes(settled: &[u64]) -> Vec<BackupLane> {
        let lane = |(i, n): (usize, &u64)| BackupLane {
            lane: Lane::new(Arc::new(MemoryProvider::new(&format!("p{i}")))),
            uploaded: Mutex::default(),
            present: Listed::default(),
            settled: AtomicU64::new(*n),
        };
        settled.iter().enumerate().map(lane).collect()
    }

    #[test]
    fn only_the_provider_behind_every_other_is_behind_while_the_spool_has_room() {
        let l = lanes(&[10, 7, 6]);
        assert!(!is_behind(&l, 0, false), "the one ahead");
        assert!(!is_behind(&l, 1, false), "one is behind it");
        assert!(is_behind(&l, 2, false));
        assert!(
            !is_behind(&l, 2, true),
            "the spool is full: the run waits for it"
        );
        assert!(!is_behind(&lanes(&[6, 6]), 1, false), "level");
        assert!(!is_behind(&lanes(&[6]), 0, false), "alone");
        let err = crate::error::ProviderError::new(
            "p0",
            "put",
            "x",
            crate::error::ErrorKind::Permanent,
            "gone",
        );
        let l = lanes(&[5, 7, 6]);
        l[0].drop_out(&err);
        assert!(
            is_behind(&l, 2, false),
            "a provider dropped from the run is behind no one"
        );
    }
}
