//! Fetching one backup's shards from the providers and writing them, verified and in order, to
//! a sink.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` (at least 2) shards are held at once, counting those
//!   being downloaded, those waiting for their turn and the one being written. The shard is
//!   the unit: one enters the window before any piece of it is fetched and leaves it once it
//!   is written, by a writer that runs alongside the downloads.
//! - Every shard's length and SHA-256 are checked against the manifest before a byte of it is
//!   written; when no provider has a good copy, nothing from that shard on is written and the
//!   error names the shard and every provider with why it could not serve it.
//! - Shards are fetched in pieces spread over every provider that holds them. A piece is sized
//!   to take about [`PIECE_SECS`] at the providers' mean measured rate ([`PIECE_SIZE`] before
//!   anything is measured; a fixed size with [`Fetcher::with_piece_size`]): long against
//!   rclone's start-up, short enough to share a shard out; fast providers get whole shards.
//!   Pieces are planned earliest first, each on the provider expected to finish it first (its
//!   backlog plus the piece, over its measured rate), with `concurrency` downloads per
//!   provider. So every provider stays busy, a fast provider takes more pieces, one shard comes
//!   from several providers at once and the shard the writer waits for is not stuck behind a
//!   slow provider: a restore can beat any single provider. rclone's start-up and request are
//!   hidden behind the transfers: by the other download with `concurrency` 2 (the default), and
//!   by starting a provider's next download [`OVERLAP`](super::lanes::OVERLAP) before its
//!   downloads are expected to end, one beyond `concurrency`.
//! - A piece that cannot be downloaded (missing, short, or failing after its retries) is
//!   fetched from another holder, and that provider is not asked for the shard again. A shard
//!   whose assembled bytes fail the checksum is fetched again whole, from one holder at a time
//!   in preference order, so that each corrupt copy is named.
//! - A provider whose download fails for other reasons than a missing object (after its
//!   retries) is dropped for the rest of the run; the others finish the work. It is still used
//!   for a shard no other provider can serve.
//! - On error or cancellation every download is stopped and waited for before returning.

use super::lanes::{Lane, LaneReport, Plan};
use super::Link;
use crate::error::{Interrupted, ProviderError};
use crate::layout::{self, BackupId};
use crate::manifest::{hex, ShardRecord};
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The size of the pieces a shard is fetched in before the providers' rates are measured.
pub const PIECE_SIZE: u64 = 16 << 20;

/// How long a piece should take at the providers' mean rate.
pub const PIECE_SECS: f64 = 0.3;

/// No good copy of a shard on any provider.
#[derive(Debug, Clone, thiserror::Error)]
pub struct NoGoodCopy {
    pub backup_id: String,
    pub index: u64,
    pub offset: u64,
    pub object: String,
    /// Every provider, with why it could not serve the shard.
    pub tried: Vec<(String, String)>,
}

impl fmt::Display for NoGoodCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no provider has a good copy of shard {} (byte offset {}, object {}) of backup {}: ",
            self.index, self.offset, self.object, self.backup_id
        )?;
        let why: Vec<String> = self
            .tried
            .iter()
            .map(|(p, w)| format!("provider {p}: {w}"))
            .collect();
        write!(
            f,
            "{}; nothing from byte {} on was written",
            why.join("; "),
            self.offset
        )
    }
}

/// Writing to the receiver failed: usually the receiver exited.
#[derive(Debug, thiserror::Error)]
#[error("writing the stream to the receiver failed at byte {offset}: {error}")]
pub struct SinkError {
    pub offset: u64,
    pub error: std::io::Error,
}

/// Fetches shards from a set of providers, shared by every link of a restore.
pub struct Fetcher {
    shared: Arc<Shared>,
    host: String,
    dataset: String,
    shards_in_flight: usize,
    /// A fixed piece size, else sized by the measured rates.
    piece_size: Option<u64>,
    /// The piece size before anything is measured.
    first_piece_size: u64,
}

struct Shared {
    /// Providers in preference order: `--from` first, then priority.
    lanes: Vec<Lane>,
    concurrency: usize,
    progress: Arc<dyn Progress>,
}

impl Fetcher {
    /// `providers` in preference order (`--from` first, then priority).
    pub fn new(
        host: &str,
        dataset: &str,
        providers: Vec<DynProvider>,
        shards_in_flight: usize,
        concurrency: usize,
        progress: Arc<dyn Progress>,
    ) -> Fetcher {
        Fetcher {
            shared: Arc::new(Shared {
                lanes: providers.into_iter().map(Lane::new).collect(),
                concurrency: concurrency.max(1),
                progress,
            }),
            host: host.to_string(),
            dataset: dataset.to_string(),
            shards_in_flight: shards_in_flight.max(2),
            piece_size: None,
            first_piece_size: PIECE_SIZE,
        }
    }

    /// Fetches shards in pieces of `bytes` (at least 1; the last piece of a shard may be
    /// shorter) instead of sizing them by the measured rates.
    pub fn with_piece_size(mut self, bytes: u64) -> Fetcher {
        self.piece_size = Some(bytes.max(1));
        self
    }

    /// Starts with pieces of `bytes` instead of [`PIECE_SIZE`], for simulations in which a
    /// few bytes stand for a MiB.
    #[cfg(test)]
    pub fn with_first_piece_size(mut self, bytes: u64) -> Fetcher {
        self.first_piece_size = bytes.max(1);
        self
    }

    /// The piece size for a shard of `len` bytes: fixed, or `len` cut into pieces of equal
    /// size that take about [`PIECE_SECS`] each at the mean rate of the providers measured.
    fn piece_size(&self, len: u64) -> u64 {
        if let Some(fixed) = self.piece_size {
            return fixed;
        }
        let rates: Vec<f64> = self.shared.lanes.iter().filter_map(Lane::rate).collect();
        let target = match rates.len() {
            0 => self.first_piece_size as f64,
            n => rates.iter().sum::<f64>() / n as f64 * PIECE_SECS,
        };
        let count = (len as f64 / target).round().max(1.0) as u64;
        len.div_ceil(count).max(1)
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.shared
            .lanes
            .iter()
            .map(|l| l.name().to_string())
            .collect()
    }

    /// What each provider did so far.
    pub fn report(&self) -> Vec<LaneReport> {
        self.shared.lanes.iter().map(Lane::report).collect()
    }

    /// Writes the stream of `link` to `sink`, verified shard by shard, in order. Returns the
    /// bytes written. The caller flushes and closes the sink.
    pub async fn stream<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        link: &Link,
        sink: &mut W,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let m = &link.manifest;
        let id = m
            .id()
            .ok_or_else(|| anyhow!("invalid backup id {}", m.backup_id))?;
        let dir = layout::backup_dir(&self.host, &self.dataset, &id);
        let mut run = Run {
            fetcher: self,
            shared: &self.shared,
            link,
            id,
            dir,
            shards: BTreeMap::new(),
            next_admit: 0,
            next_send: 0,
            failed: false,
        };
        let mut tasks = JoinSet::new();
        // Verified shards in order; each holds its window permit until it is written.
        let (tx, rx) = mpsc::channel(self.shards_in_flight);
        let fetch = async {
            let r = run.pump(&mut tasks, tx, cancel).await;
            // Stops every download left (after an error); dropping a task kills its rclone.
            tasks.abort_all();
            r
        };
        let write = write_out(sink, rx, &*self.shared.progress, cancel);
        let (fetched, written) = tokio::join!(fetch, write);
        tasks.shutdown().await;
        let written = written?;
        fetched?;
        Ok(written)
    }

    fn job(&self, link: &Link, id: &BackupId, dir: &str, rec: &ShardRecord) -> Job {
        let object = rec.name();
        let mut candidates = Vec::new();
        let mut not_held = Vec::new();
        for (i, lane) in self.shared.lanes.iter().enumerate() {
            match link.why_not(lane.name(), rec) {
                None => candidates.push(i),
                Some(why) => not_held.push((lane.name().to_string(), why)),
            }
        }
        Job {
            backup_id: id.to_string(),
            path: format!("{dir}/{object}"),
            object,
            rec: rec.clone(),
            candidates,
            not_held,
        }
    }
}

/// A verified shard on its way to the writer.
struct Ready {
    parts: Vec<Bytes>,
    _permit: OwnedSemaphorePermit,
}

/// Writes verified shards as they come; each one's memory is released once it is written.
async fn write_out<W: AsyncWrite + Unpin + ?Sized>(
    sink: &mut W,
    mut rx: mpsc::Receiver<Ready>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<u64> {
    let mut written = 0u64;
    while let Some(ready) = rx.recv().await {
        for part in &ready.parts {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Interrupted.into()),
                r = sink.write_all(part) => r.map_err(|error| SinkError { offset: written, error })?,
            }
            written += part.len() as u64;
            progress.advance(part.len() as u64);
        }
    }
    Ok(written)
}

/// One shard to fetch.
struct Job {
    backup_id: String,
    path: String,
    object: String,
    rec: ShardRecord,
    /// Lanes that list the object with the right size, in preference order.
    candidates: Vec<usize>,
    /// The other providers, with why they cannot serve it.
    not_held: Vec<(String, String)>,
}

/// What a download task reports.
enum Event {
    Piece {
        shard: usize,
        piece: usize,
        lane: usize,
        result: Result<Bytes, ProviderError>,
        took: Duration,
    },
    Hashed {
        shard: usize,
        sum: Result<String, String>,
    },
}

/// The fetching of one link's stream: the shards in the window and their pieces.
struct Run<'a> {
    fetcher: &'a Fetcher,
    shared: &'a Arc<Shared>,
    link: &'a Link,
    id: BackupId,
    dir: String,
    /// Admitted shards not yet handed to the writer, by index.
    shards: BTreeMap<usize, Shard>,
    next_admit: usize,
    next_send: usize,
    /// A shard has no good copy: nothing after it is admitted.
    failed: bool,
}

enum Step {
    Event(Event),
    Admit(OwnedSemaphorePermit),
    /// A provider's downloads are about to end: time to start the next.
    Overlap,
}

impl Run<'_> {
    /// Admits shards into the window, plans their pieces, collects the downloads and hands
    /// verified shards to the writer in order. Returns at the first shard with no good copy
    /// (everything before it handed over), or when the writer is gone (its error says why).
    async fn pump(
        &mut self,
        tasks: &mut JoinSet<Event>,
        tx: mpsc::Sender<Ready>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let count = self.link.manifest.shards.len();
        let window = Arc::new(Semaphore::new(self.fetcher.shards_in_flight));
        loop {
            self.send_ready(&tx).await?;
            if self.next_send == count {
                return Ok(());
            }
            self.schedule(tasks);
            let wake = self
                .shared
                .plans()
                .iter()
                .filter_map(|p| p.wake)
                .reduce(f64::min);
            let overlap = tokio::time::sleep(Duration::from_secs_f64(wake.unwrap_or(0.0)));
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Interrupted.into()),
                _ = tx.closed() => return Ok(()),
                Some(done) = tasks.join_next() => {
                    Step::Event(done.map_err(|e| anyhow!("a download task failed: {e}"))?)
                }
                permit = window.clone().acquire_owned(), if self.next_admit < count && !self.failed => {
                    Step::Admit(permit.expect("the window is never closed"))
                }
                _ = overlap, if wake.is_some() => Step::Overlap,
            };
            match step {
                Step::Admit(permit) => self.admit(permit),
                Step::Overlap => {}
                Step::Event(Event::Piece {
                    shard,
                    piece,
                    lane,
                    result,
                    took,
                }) => {
                    tracing::trace!(
                        "shard {shard} piece {piece}: provider {} done in {:.3}s",
                        self.shared.lanes[lane].name(),
                        took.as_secs_f64()
                    );
                    self.on_piece(tasks, shard, piece, lane, result)
                }
                Step::Event(Event::Hashed { shard, sum }) => {
                    let sum = sum.map_err(|e| anyhow!("hashing a shard failed: {e}"))?;
                    self.on_hashed(shard, sum);
                }
            }
        }
    }

    /// Hands the shards whose turn it is to the writer, up to the first not verified yet; the
    /// error of the first with no good copy.
    async fn send_ready(&mut self, tx: &mpsc::Sender<Ready>) -> Result<()> {
        while let Some(entry) = self.shards.first_entry() {
            match entry.get().state {
                State::Good => {
                    let shard = entry.remove();
                    let parts = shard.pieces.into_iter().map(Piece::into_bytes).collect();
                    let ready = Ready {
                        parts,
                        _permit: shard.permit,
                    };
                    // Never waits: the channel holds as many shards as the window.
                    if tx.send(ready).await.is_err() {
                        return Ok(()); // the writer is gone; `pump` sees it
                    }
                    self.next_send += 1;
                }
                State::Failed(_) => {
                    let State::Failed(e) = entry.remove().state else {
                        unreachable!()
                    };
                    return Err(e.into());
                }
                State::Fetching | State::Hashing => break,
            }
        }
        Ok(())
    }

    fn admit(&mut self, permit: OwnedSemaphorePermit) {
        let i = self.next_admit;
        let rec = &self.link.manifest.shards[i];
        let job = self.fetcher.job(self.link, &self.id, &self.dir, rec);
        let piece_size = self.fetcher.piece_size(rec.length);
        let mut shard = Shard::new(job, permit, piece_size);
        shard.check_left();
        self.failed |= matches!(shard.state, State::Failed(_));
        self.shards.insert(i, shard);
        self.next_admit += 1;
    }

    /// Starts downloads on every free slot. Pending pieces, earliest first, are each planned on
    /// the lane expected to finish them first; a piece planned on a lane with a free slot
    /// starts now, the others wait for a later call (their lane is busy, or it was not expected
    /// to finish them first).
    fn schedule(&mut self, tasks: &mut JoinSet<Event>) {
        let shared = self.shared;
        let mut plans = shared.plans();
        for (&index, shard) in self.shards.iter_mut() {
            if !matches!(shard.state, State::Fetching) {
                continue;
            }
            for piece in 0..shard.pieces.len() {
                if plans.iter().all(|p| p.free == 0) {
                    return;
                }
                if !matches!(shard.pieces[piece], Piece::Pending) {
                    continue;
                }
                let len = shard.range(piece).1;
                let Some(lane) = shard.choose(shared, &plans, len) else {
                    continue;
                };
                plans[lane].at = plans[lane].finish(len);
                if plans[lane].free > 0 {
                    plans[lane].free -= 1;
                    shard.start(shared, tasks, index, piece, lane);
                }
            }
        }
    }

    fn on_piece(
        &mut self,
        tasks: &mut JoinSet<Event>,
        index: usize,
        piece: usize,
        lane: usize,
        result: Result<Bytes, ProviderError>,
    ) {
        let shared = self.shared;
        let Some(shard) = self.shards.get_mut(&index) else {
            unreachable!("a download of a shard not in the window")
        };
        let (offset, len) = shard.range(piece);
        if !matches!(shard.state, State::Fetching) {
            return; // the shard failed meanwhile
        }
        let why = match result {
            Ok(data) if data.len() as u64 == len => {
                shard.pieces[piece] = Piece::Done(data, lane);
                if shard.pieces.iter().all(|p| matches!(p, Piece::Done(..))) {
                    shard.state = State::Hashing;
                    shard.hash(tasks, index);
                }
                return;
            }
            Ok(data) if shard.pieces.len() == 1 => {
                format!("short copy: {} bytes, the manifest says {len}", data.len())
            }
            Ok(data) => format!(
                "short copy: {} of the {len} bytes from byte {offset} of the object",
                data.len()
            ),
            Err(e) => format!("download failed: {}", e.message.trim_end()),
        };
        shard.pieces[piece] = Piece::Pending;
        shard.fail(shared, lane, why);
        self.failed |= matches!(shard.state, State::Failed(_));
    }

    fn on_hashed(&mut self, index: usize, sum: String) {
        let shared = self.shared;
        let Some(shard) = self.shards.get_mut(&index) else {
            unreachable!("a hash of a shard not in the window")
        };
        let mut from: BTreeMap<usize, u64> = BTreeMap::new();
        for p in &shard.pieces {
            if let Piece::Done(data, lane) = p {
                *from.entry(*lane).or_default() += data.len() as u64;
            }
        }
        if sum == shard.job.rec.sha256 {
            for (&lane, &bytes) in &from {
                shared.lanes[lane].delivered(bytes);
                shared.progress.provider(shared.lanes[lane].name(), bytes);
            }
            shard.state = State::Good;
            return;
        }
        shard.state = State::Fetching;
        shard.in_order = true;
        shard.pieces = vec![Piece::Pending];
        let why = format!(
            "corrupt copy: SHA-256 {sum}, the manifest says {}",
            shard.job.rec.sha256
        );
        if let [(&lane, _)] = from.iter().collect::<Vec<_>>()[..] {
            shared.lanes[lane].corrupt();
            shard.fail(shared, lane, why);
        } else {
            let names: Vec<&str> = from.keys().map(|&l| shared.lanes[l].name()).collect();
            tracing::warn!(
                "shard {} of backup {}, read in pieces from providers {}: {why}; fetching it whole from one provider at a time",
                shard.job.object,
                shard.job.backup_id,
                names.join(", ")
            );
        }
        self.failed |= matches!(shard.state, State::Failed(_));
    }
}

/// A shard in the window.
struct Shard {
    job: Job,
    permit: OwnedSemaphorePermit,
    piece_size: u64,
    pieces: Vec<Piece>,
    /// Lanes that may still serve it, in preference order.
    left: Vec<usize>,
    /// Providers that failed it, with why.
    tried: Vec<(String, String)>,
    /// Fetched from one holder at a time in preference order: after a failure of a one-piece
    /// shard, and whole after a checksum mismatch.
    in_order: bool,
    state: State,
}

enum Piece {
    Pending,
    Running,
    Done(Bytes, usize),
}

impl Piece {
    fn into_bytes(self) -> Bytes {
        match self {
            Piece::Done(data, _) => data,
            _ => unreachable!("a verified shard has every piece"),
        }
    }
}

enum State {
    Fetching,
    Hashing,
    Good,
    Failed(NoGoodCopy),
}

impl Shard {
    fn new(job: Job, permit: OwnedSemaphorePermit, piece_size: u64) -> Shard {
        let count = job.rec.length.div_ceil(piece_size).max(1) as usize;
        Shard {
            left: job.candidates.clone(),
            job,
            permit,
            piece_size,
            pieces: (0..count).map(|_| Piece::Pending).collect(),
            tried: Vec::new(),
            in_order: false,
            state: State::Fetching,
        }
    }

    /// Offset and length of a piece.
    fn range(&self, piece: usize) -> (u64, u64) {
        if self.pieces.len() == 1 {
            return (0, self.job.rec.length);
        }
        let offset = piece as u64 * self.piece_size;
        (offset, self.piece_size.min(self.job.rec.length - offset))
    }

    /// The lane for a piece of `len` bytes: in order, the next holder in preference order;
    /// otherwise the holder expected to finish it first. Providers dropped from the run only
    /// when no other holder is left.
    fn choose(&self, shared: &Shared, plans: &[Plan], len: u64) -> Option<usize> {
        let alive: Vec<usize> = self
            .left
            .iter()
            .copied()
            .filter(|&l| !shared.lanes[l].is_down())
            .collect();
        let usable = if alive.is_empty() { &self.left } else { &alive };
        if self.in_order {
            return usable.first().copied();
        }
        usable.iter().copied().min_by(|&a, &b| {
            plans[a]
                .finish(len)
                .total_cmp(&plans[b].finish(len))
                .then(a.cmp(&b))
        })
    }

    fn start(
        &mut self,
        shared: &Arc<Shared>,
        tasks: &mut JoinSet<Event>,
        index: usize,
        piece: usize,
        lane: usize,
    ) {
        let (offset, len) = self.range(piece);
        tracing::trace!(
            "shard {} bytes {offset}+{len}: from provider {}",
            self.job.rec.index,
            shared.lanes[lane].name()
        );
        self.pieces[piece] = Piece::Running;
        let mut slot = Slot::take(shared.clone(), lane, len);
        let provider = shared.lanes[lane].provider.clone();
        let path = self.job.path.clone();
        let whole = self.pieces.len() == 1;
        tasks.spawn(async move {
            let start = std::time::Instant::now();
            let result = if whole {
                provider.get(&path, len).await
            } else {
                provider.get_range(&path, offset, len).await
            };
            match &result {
                Ok(data) => slot.received = data.len() as u64 == len,
                // Before its slot is free, so that no other piece is planned on it.
                Err(e) if !e.is_not_found() => slot.shared.lanes[lane].drop_out(e),
                Err(_) => {}
            }
            drop(slot);
            Event::Piece {
                shard: index,
                piece,
                lane,
                result,
                took: start.elapsed(),
            }
        });
    }

    /// Hashes the assembled shard off the runtime's threads.
    fn hash(&self, tasks: &mut JoinSet<Event>, index: usize) {
        let parts: Vec<Bytes> = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Done(data, _) => data.clone(),
                _ => unreachable!("hashing a shard with missing pieces"),
            })
            .collect();
        tasks.spawn(async move {
            let sum = tokio::task::spawn_blocking(move || {
                let mut h = Sha256::new();
                for p in &parts {
                    h.update(p);
                }
                hex(&h.finalize())
            })
            .await
            .map_err(|e| e.to_string());
            Event::Hashed { shard: index, sum }
        });
    }

    /// `lane` could not serve the shard: it is not asked again, and the shard fails when no
    /// holder is left.
    fn fail(&mut self, shared: &Shared, lane: usize, why: String) {
        if !self.left.contains(&lane) {
            return; // already failed it (another of its pieces)
        }
        tracing::warn!(
            "provider {}: shard {} of backup {}: {why}; trying the next provider that holds it",
            shared.lanes[lane].name(),
            self.job.object,
            self.job.backup_id
        );
        self.left.retain(|&l| l != lane);
        self.tried
            .push((shared.lanes[lane].name().to_string(), why));
        if self.pieces.len() == 1 {
            self.in_order = true;
        }
        self.check_left();
    }

    /// Fails the shard when no holder is left to try.
    fn check_left(&mut self) {
        if !self.left.is_empty() || matches!(self.state, State::Failed(_)) {
            return;
        }
        let mut tried = std::mem::take(&mut self.tried);
        tried.extend(self.job.not_held.iter().cloned());
        for p in &mut self.pieces {
            if matches!(p, Piece::Done(..)) {
                *p = Piece::Pending; // frees its bytes
            }
        }
        self.state = State::Failed(NoGoodCopy {
            backup_id: self.job.backup_id.clone(),
            index: self.job.rec.index,
            offset: self.job.rec.offset,
            object: self.job.object.clone(),
            tried,
        });
    }
}

/// A download in progress on a lane; the lane's accounting follows it even when the download
/// is stopped (its task dropped).
struct Slot {
    shared: Arc<Shared>,
    lane: usize,
    len: u64,
    /// Every byte came.
    received: bool,
}

impl Slot {
    fn take(shared: Arc<Shared>, lane: usize, len: u64) -> Slot {
        shared.lanes[lane].begin(len);
        Slot {
            shared,
            lane,
            len,
            received: false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.lanes[self.lane].end(self.len, self.received);
    }
}

impl Shared {
    /// Every lane as the planner sees it now.
    fn plans(&self) -> Vec<Plan> {
        // A provider not measured yet is assumed as fast as the fastest one, so it gets tried.
        let default_rate = self
            .lanes
            .iter()
            .filter_map(Lane::rate)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
            .unwrap_or(1.0);
        self.lanes
            .iter()
            .map(|l| l.plan(self.concurrency, default_rate))
            .collect()
    }
}
