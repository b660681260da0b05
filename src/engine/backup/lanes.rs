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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// How far behind the others each provider is.
    pub lag: Arc<Lag>,
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

    /// With a spool: which lanes still in the run that need an object of shard `d` get it from
    /// the spool ([`Lag::late`]), the others from memory. Those take one of the run's memory
    /// uploads ([`Lag::memory_upload`]); when none is free, every lane gets the shard from the
    /// spool (so when the providers are slower than the source, it reads ahead there).
    fn route(&self, d: &Delivery) -> Route {
        let lanes = self.lanes.iter().enumerate();
        let wanting: BTreeSet<usize> = (lanes.filter(|(i, _)| d.send_to.contains(i)))
            .filter(|(_, lane)| !lane.is_down() && self.placed(&d.record, lane.name()).is_some())
            .map(|(i, _)| i)
            .collect();
        let late = self.lag.late(&self.lanes, &wanting);
        if late.len() == wanting.len() {
            return Route {
                late,
                memory_upload: None,
            };
        }
        match self.lag.memory_upload() {
            Some(slot) => Route {
                late,
                memory_upload: Some(slot),
            },
            None => Route {
                late: wanting,
                memory_upload: None,
            },
        }
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
#[derive(Clone)]
pub(super) struct Delivery {
    pub record: ShardRecord,
    pub payload: Option<Payload>,
    pub send_to: BTreeSet<usize>,
}

/// Encodes one shard (on the blocking pool) and uploads the same stored bytes (or each its
/// piece) to every provider still in the run that lacks them. A fresh shard's objects are
/// hashed while they upload (uploads need only their lengths), and journaled once hashed.
/// `memory` is the shard's place in memory, freed once nothing of the shard is left in memory.
///
/// With a spool, the shard is routed first ([`Shipping::route`]): a provider that trails the
/// others gets it from the spool, where a copy is written (hashed as it is written, see
/// [`spool_out`]), and the shard's place in memory is freed once it is there and the other
/// providers, uploading from memory meanwhile, have it. When no provider trails, nothing is
/// written to the spool.
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
    let moved =
        delivery.payload.is_some() && delivery.send_to.iter().any(|&i| !s.lanes[i].is_down());
    let route = match (&s.spool, &delivery.payload) {
        (Some(_), Some(_)) => s.route(&delivery),
        _ => Route::default(),
    };
    (0..s.lanes.len()).for_each(|i| s.lag.begin(i, index));
    let (record, results) = match &s.spool {
        Some(spool) if !route.late.is_empty() => {
            send_spooling(delivery, unhashed, memory, route, spool, s).await?
        }
        _ => send(delivery, unhashed, memory, route.memory_upload, s).await?,
    };
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

/// Where a shard's uploads read it from ([`Shipping::route`]).
#[derive(Default)]
struct Route {
    /// The lanes that get it from the spool; the others, from memory.
    late: BTreeSet<usize>,
    /// Held while the others upload it from memory.
    memory_upload: Option<OwnedSemaphorePermit>,
}

/// Every lane's upload result of one shard, `Err` why it does not hold its object.
type Results = Vec<Result<bool, String>>;

/// Uploads a shard from memory to every lane, hashing (and journaling) a fresh one meanwhile.
/// `memory_upload` is freed once every lane has ended its upload, `memory` once the shard is
/// hashed too.
async fn send(
    d: Delivery,
    unhashed: Option<Unhashed>,
    memory: OwnedSemaphorePermit,
    memory_upload: Option<OwnedSemaphorePermit>,
    s: &Shipping,
) -> Result<(ShardRecord, Results)> {
    let index = d.record.index;
    let record = async {
        match &unhashed {
            Some(enc) => hash(enc, index, s).await,
            None => Ok(d.record.clone()),
        }
    };
    let uploads = async {
        let results = upload_to(s, &d, 0..s.lanes.len()).await;
        drop(memory_upload);
        results
    };
    let (record, results) = futures::future::join(record, uploads).await;
    drop((d, unhashed));
    drop(memory);
    Ok((record?, results))
}

/// Uploads a shard from memory to the lanes not `route.late` while a copy is spooled for those
/// that are, which upload it from there. The place in memory is freed once the copy is spooled
/// and the lanes not late have the shard (or gave up); if the spool cannot take it, once every
/// lane has.
async fn send_spooling(
    d: Delivery,
    unhashed: Option<Unhashed>,
    memory: OwnedSemaphorePermit,
    route: Route,
    spool: &Spool,
    s: &Shipping,
) -> Result<(ShardRecord, Results)> {
    let (index, late, copy) = (d.record.index, &route.late, d.clone());
    let memory = Arc::new(memory);
    let early = {
        let held = (memory.clone(), route.memory_upload);
        async move {
            let lanes = (0..s.lanes.len()).filter(|i| !late.contains(i));
            let results = upload_to(s, &d, lanes).await;
            drop(d);
            drop(held);
            results
        }
    };
    let spooled = async {
        let (copy, on_disk) = match spool_out(copy, unhashed, spool, s).await {
            Ok(spooled) => spooled,
            Err(e) => {
                late.iter().for_each(|&i| s.lag.end(i, index));
                return Err(e);
            }
        };
        let held = (!on_disk).then_some(memory);
        let results = upload_to(s, &copy, late.iter().copied()).await;
        let Delivery { record, .. } = copy;
        drop(held);
        Ok((record, results))
    };
    let (early, spooled) = futures::future::join(early, spooled).await;
    let (record, mut results) = spooled?;
    results.extend(early);
    Ok((record, results))
}

/// Uploads `d` to each of `lanes` (see [`upload`]), each under [`settle`].
async fn upload_to(s: &Shipping, d: &Delivery, lanes: impl Iterator<Item = usize>) -> Results {
    let index = d.record.index;
    let uploads = lanes.map(|i| {
        let send = d.send_to.contains(&i);
        settle(s, i, index, upload(&s.lanes[i], s, d, send))
    });
    futures::future::join_all(uploads).await
}

/// Runs lane `i`'s upload of shard `index`, begun in [`Lag`] by [`ship`], and ends it there.
/// With a spool, the upload yields the CPU to the other providers while this one is behind
/// them ([`Lag::is_behind`], asked as the transfer starts; see `provider::priority`).
async fn settle<T>(s: &Shipping, i: usize, index: u64, upload: impl Future<Output = T>) -> T {
    let ended = match &s.spool {
        Some(spool) => {
            let (lanes, lag, spool) = (s.lanes.clone(), s.lag.clone(), spool.clone());
            let behind = move || lag.is_behind(&lanes, i, spool.is_full());
            priority::when(Arc::new(behind), upload).await
        }
        None => upload.await,
    };
    s.lag.end(i, index);
    ended
}

/// How far behind the others each provider of a run is, by the oldest shard whose upload to
/// it has begun and not ended (its frontier). Counting finished uploads instead would take a
/// provider that holds no piece of some shards (erasure coding), or whose uploads end later
/// than they start (rclone still writing), for one behind.
pub(super) struct Lag {
    /// Per lane: the shards whose upload has begun and not ended.
    pending: Vec<Mutex<BTreeSet<u64>>>,
    /// One past the newest shard whose uploads have begun: the frontier of a provider with
    /// nothing pending.
    next: AtomicU64,
    /// How many shards a provider's frontier must trail every other provider's for it to be
    /// behind: more than a provider's uploads at once (`concurrency`), so that two that keep up
    /// are never behind each other.
    lead: u64,
    /// How many shards a provider's frontier must trail the leading provider's for it to get
    /// the next shard from the spool ([`Lag::late`]): `concurrency`, at most half of
    /// `shards_in_flight`, so that a slow provider soon stops holding places in memory.
    spool_lead: u64,
    /// With a spool: shards some lane uploads from memory, one permit each, all but one of
    /// `shards_in_flight`. Any such upload may stop answering and hold its shard's place in
    /// memory until the provider is dropped; the last place is the source's, its shards
    /// spooled for every lane.
    memory_uploads: Arc<Semaphore>,
}

impl Lag {
    pub fn new(lanes: usize, concurrency: usize, shards_in_flight: usize) -> Lag {
        Lag {
            pending: (0..lanes).map(|_| Mutex::default()).collect(),
            next: AtomicU64::new(0),
            lead: concurrency as u64 + 1,
            spool_lead: concurrency.min(shards_in_flight / 2) as u64,
            memory_uploads: Arc::new(Semaphore::new(shards_in_flight.saturating_sub(1))),
        }
    }

    fn begin(&self, lane: usize, index: u64) {
        self.pending[lane].lock().unwrap().insert(index);
        self.next.fetch_max(index + 1, Ordering::Relaxed);
    }

    fn end(&self, lane: usize, index: u64) {
        self.pending[lane].lock().unwrap().remove(&index);
    }

    fn frontier(&self, lane: usize) -> u64 {
        let oldest = self.pending[lane].lock().unwrap().first().copied();
        oldest.unwrap_or_else(|| self.next.load(Ordering::Relaxed))
    }

    /// Whether lane `i` is behind: its frontier trails every other provider's still in the
    /// run by `lead` shards or more, and the spool is not full (when it is, the source waits
    /// for the slowest provider, which then goes at full priority). Once behind, a provider
    /// that yields stays so, out of the way, until the others are through or the spool fills.
    pub fn is_behind(&self, lanes: &[BackupLane], i: usize, spool_full: bool) -> bool {
        let others = (0..lanes.len()).filter(|&j| j != i && !lanes[j].is_down());
        let least_of_others = others.map(|j| self.frontier(j)).min();
        let mine = self.frontier(i);
        !spool_full && least_of_others.is_some_and(|least| mine + self.lead <= least)
    }

    /// A memory upload ([`Lag::memory_uploads`]), if one is free.
    fn memory_upload(&self) -> Option<OwnedSemaphorePermit> {
        self.memory_uploads.clone().try_acquire_owned().ok()
    }

    /// The lanes of `send_to` still in the run whose frontier trails the leading one's by
    /// `spool_lead` shards or more: those that get the next shard from the spool. With a
    /// `spool_lead` of 0 (`shards_in_flight` 1), every lane.
    pub fn late(&self, lanes: &[BackupLane], send_to: &BTreeSet<usize>) -> BTreeSet<usize> {
        let up: Vec<usize> = (send_to.iter().copied())
            .filter(|&i| !lanes[i].is_down())
            .collect();
        let frontiers: Vec<u64> = up.iter().map(|&i| self.frontier(i)).collect();
        let lead = frontiers.iter().copied().max().unwrap_or(0);
        let trails = |&(_, f): &(&usize, &u64)| f + self.spool_lead <= lead;
        up.iter()
            .zip(&frontiers)
            .filter(trails)
            .map(|(&i, _)| i)
            .collect()
    }
}

/// With a spool: hashes a fresh shard while it copies its stored objects into the spool
/// (waiting for room there), then journals it. Returns the delivery, hashed, its payload read
/// from the spool, and `true`; or, when the spool cannot take the shard (disk full, I/O error,
/// one warning per run), its payload still in memory and `false`.
async fn spool_out(
    mut d: Delivery,
    unhashed: Option<Unhashed>,
    spool: &Spool,
    s: &Shipping,
) -> Result<(Delivery, bool)> {
    let index = d.record.index;
    let Some(payload) = d.payload.take() else {
        debug_assert!(unhashed.is_none(), "a fresh shard always has a payload");
        return Ok((d, false));
    };
    // Both read the same bytes in memory: hashing and the copy (a write and an fsync) overlap.
    let hashed = async {
        match &unhashed {
            Some(enc) => hash(enc, index, s).await.map(Some),
            None => Ok(None),
        }
    };
    let (hashed, kept) = futures::future::join(hashed, spool.keep(payload.parts())).await;
    drop(unhashed);
    if let Some(record) = hashed? {
        d.record = record;
    }
    match kept {
        Ok(parts) => {
            d.payload = Some(payload.with_parts(parts));
            tracing::debug!(
                "shard {index} spooled to {} (the spool holds {})",
                spool.dir().display(),
                human_bytes(spool.used())
            );
            Ok((d, true))
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
            Ok((d, false))
        }
    }
}

/// The record of fresh shard `index`, once hashed, journaled. The journal describes the
/// source, not the uploads: a shard is recorded as soon as it is encoded, so a resume trusts a
/// provider's whole object even if a slower provider never got it.
async fn hash(enc: &Unhashed, index: u64, s: &Shipping) -> Result<ShardRecord> {
    let record = enc
        .record()
        .await
        .with_context(|| format!("hashing shard {index}"))?;
    s.journal(&record)?;
    Ok(record)
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

    fn lanes(n: usize) -> Vec<BackupLane> {
        let lane = |i| BackupLane {
            lane: Lane::new(Arc::new(MemoryProvider::new(&format!("p{i}")))),
            uploaded: Mutex::default(),
            present: Listed::default(),
        };
        (0..n).map(lane).collect()
    }

    /// The error that drops a provider out of the run.
    fn gone(provider: &str) -> crate::error::ProviderError {
        use crate::error::{ErrorKind, ProviderError};
        ProviderError::new(provider, "put", "x", ErrorKind::Permanent, "gone")
    }

    /// A lag of lead 4 where lane `i` has the shards `pending[i]` begun and not ended, and
    /// shards up to 19 have begun.
    fn lag(pending: &[&[u64]]) -> Lag {
        let lag = Lag::new(pending.len(), 3, 8);
        for (lane, shards) in pending.iter().enumerate() {
            shards.iter().for_each(|&s| lag.begin(lane, s));
        }
        lag.next.fetch_max(20, Ordering::Relaxed);
        lag
    }

    #[test]
    fn a_provider_is_behind_when_its_oldest_unfinished_shard_trails_every_other_ones() {
        let l = lanes(3);
        let lag = lag(&[&[19], &[16, 17], &[12, 18]]);
        assert!(!lag.is_behind(&l, 0, false), "the one ahead");
        assert!(!lag.is_behind(&l, 1, false), "p2 trails it");
        assert!(lag.is_behind(&l, 2, false), "shard 12 is 4 older than 16");
        assert!(
            !lag.is_behind(&l, 2, true),
            "the spool is full: the run waits for it"
        );
        lag.end(2, 12);
        assert!(!lag.is_behind(&l, 2, false), "caught up to shard 18");
        let level = self::lag(&[&[], &[]]);
        assert!(
            !level.is_behind(&lanes(2), 1, false),
            "nothing pending anywhere"
        );
        assert!(!self::lag(&[&[3]]).is_behind(&lanes(1), 0, false), "alone");
    }

    #[test]
    fn a_provider_with_nothing_pending_is_at_the_newest_shard_and_one_dropped_counts_for_none() {
        let l = lanes(3);
        let lag = lag(&[&[], &[15], &[19]]);
        assert!(
            lag.is_behind(&l, 1, false),
            "15 trails 19 and 20 (nothing pending)"
        );
        let err = gone("p2");
        l[2].drop_out(&err);
        assert!(lag.is_behind(&l, 1, false));
        l[0].drop_out(&err);
        assert!(
            !lag.is_behind(&l, 1, false),
            "no provider left to be behind"
        );
    }

    #[test]
    fn a_provider_trailing_the_leading_one_by_the_spool_lead_gets_the_next_shard_from_the_spool() {
        let l = lanes(3);
        let all = BTreeSet::from([0, 1, 2]);
        // Spool lead 3: concurrency 3, half of 8 shards in flight is more.
        let lag = lag(&[&[], &[18], &[17, 19]]);
        assert_eq!(lag.late(&l, &all), BTreeSet::from([2]), "17 is 3 behind 20");
        assert_eq!(lag.late(&l, &BTreeSet::from([0, 1])), BTreeSet::new());
        let err = gone("p0");
        l[0].drop_out(&err);
        assert_eq!(lag.late(&l, &all), BTreeSet::new(), "p1, at 18, leads now");
        let one_in_flight = Lag::new(2, 2, 1);
        assert_eq!(
            one_in_flight.late(&lanes(2), &BTreeSet::from([0, 1])),
            BTreeSet::from([0, 1]),
            "with one shard in memory, every provider takes every shard from the spool"
        );
    }

    #[test]
    fn all_but_one_of_the_shards_in_flight_may_be_uploaded_from_memory() {
        let lag = Lag::new(3, 2, 3);
        let (a, b) = (lag.memory_upload(), lag.memory_upload());
        assert!(a.is_some() && b.is_some());
        assert!(
            lag.memory_upload().is_none(),
            "the last place is the source's"
        );
        drop(a);
        assert!(lag.memory_upload().is_some());
        assert!(Lag::new(3, 2, 1).memory_upload().is_none());
    }

    #[test]
    fn the_spool_lead_is_concurrency_at_most_half_the_shards_in_flight() {
        assert_eq!(Lag::new(2, 2, 4).spool_lead, 2);
        assert_eq!(Lag::new(2, 8, 6).spool_lead, 3);
        assert_eq!(Lag::new(2, 2, 1).spool_lead, 0);
    }

    #[test]
    fn the_lead_is_more_than_a_providers_uploads_at_once() {
        assert_eq!(Lag::new(2, 2, 4).lead, 3);
        assert_eq!(Lag::new(2, 8, 4).lead, 9);
    }
}
