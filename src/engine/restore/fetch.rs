//! Fetching one backup's shards from the providers and writing them, verified and in order, to
//! a sink.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` (at least 2) shards are held at once, counting those
//!   being downloaded, those waiting for their turn and the one being written. The shard is
//!   the unit: one enters the window before any piece of it is fetched and leaves it once it
//!   is written, by a writer that runs alongside the downloads.
//! - Every shard's stored length and SHA-256 are checked against the manifest before a byte of
//!   it is written; then, on the blocking pool (one task per shard, so several decode at once),
//!   a compressed or encrypted shard is decoded with its own backup's encoding and its
//!   plaintext length and SHA-256 checked; only the plaintext is handed to the writer, and the
//!   stored bytes are freed once it exists. When no provider has a good copy, or the stored
//!   bytes are right but do not decode to the recorded plaintext, nothing from that shard on is
//!   written and the error names the shard and every provider with why it could not serve it.
//! - Shards are fetched in pieces spread over every provider that holds them. A piece is sized
//!   to take up to [`PIECE_SECS_MAX`] at the providers' mean measured rate while much of the
//!   stream is left, shrinking to [`PIECE_SECS`] near its end ([`PIECE_SIZE`] before anything
//!   is measured; a fixed size with [`Fetcher::with_piece_size`]): long against rclone's
//!   start-up, short enough at the end to keep every provider busy; fast providers (local
//!   disks) get whole shards.
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
//! - Erasure-coded backups (`erasure = "k+m"`): each shard is fetched as any `k` of its
//!   pieces, each whole from the one provider placement puts it on, the `k` chosen by the same
//!   forecasts (the holders expected to finish first; data pieces first on a tie), so across
//!   shards every provider stays busy. Each piece's SHA-256 is checked as it arrives (on the
//!   blocking pool); a missing, short, failing or corrupt piece is replaced by another piece of
//!   the shard. The `k` pieces are joined on the blocking pool (`erasure::join`), then the
//!   shard is checked and decoded as a mirrored one. Fewer than `k` good pieces fail the shard,
//!   naming every provider and why.
//! - On error or cancellation every download is stopped and waited for before returning.

mod shard;
mod stream;

use super::lanes::{DownloadLane, LaneForecast, LaneReport};
use super::Link;
use crate::codec::Identities;
use crate::error::Interrupted;
use crate::layout::{self, BackupId};
use crate::manifest::ShardRecord;
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use shard::{ErasureWant, PartWant, WantedShard};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use stream::LinkFetch;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The size of the pieces a shard is fetched in before the providers' rates are measured.
pub const PIECE_SIZE: u64 = 16 << 20;

/// How long a piece should take at the providers' mean rate, at the end of a stream.
pub const PIECE_SECS: f64 = 0.3;

/// How long a piece may take while much of the stream is left (see [`Fetcher::piece_size`]).
pub const PIECE_SECS_MAX: f64 = 1.0;

/// Pieces are cut so that what is left takes about this many pieces' time.
const PIECES_LEFT: f64 = 4.0;

/// No piece is cut smaller than this (a smaller shard is one piece): below it a ranged read's
/// fixed cost outweighs what striping gains. With 1 MiB shards, three pieces each cost a
/// restore 1.9x the time of 64 MiB shards.
const MIN_PIECE: u64 = 1 << 20;

/// No good copy of a shard on any provider.
#[derive(Debug, Clone, thiserror::Error)]
pub struct NoGoodCopy {
    pub backup_id: String,
    pub index: u64,
    pub offset: u64,
    pub object: String,
    /// Every provider, with why it could not serve the shard (erasure-coded: its piece).
    pub tried: Vec<(String, String)>,
    /// Erasure-coded: the code, of which fewer than `k` pieces could be read.
    pub erasure: Option<crate::erasure::Scheme>,
}

impl fmt::Display for NoGoodCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.erasure {
            None => write!(f, "no provider has a good copy of shard ")?,
            Some(e) => write!(
                f,
                "fewer than {} of the {} pieces (erasure = \"{e}\") can be read of shard ",
                e.k,
                e.total()
            )?,
        }
        write!(
            f,
            "{} (byte offset {}, object {}) of backup {}: ",
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
    /// [`MIN_PIECE`], scaled down with the rest in simulations.
    min_piece: u64,
    /// What encrypted shards are decrypted with.
    ids: Option<Arc<Identities>>,
}

struct Shared {
    /// Providers in preference order: `--from` first, then priority.
    lanes: Vec<DownloadLane>,
    /// How many downloads the planner runs at once on each provider.
    downloads_per_provider: usize,
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
                lanes: providers
                    .into_iter()
                    .map(|p| DownloadLane::new(p, progress.clone()))
                    .collect(),
                downloads_per_provider: concurrency.max(1),
                progress,
            }),
            host: host.to_string(),
            dataset: dataset.to_string(),
            shards_in_flight: shards_in_flight.max(2),
            piece_size: None,
            first_piece_size: PIECE_SIZE,
            min_piece: MIN_PIECE,
            ids: None,
        }
    }

    /// Decrypts encrypted shards with `ids` (see [`super::KeySource::unseal`]).
    pub fn with_identities(mut self, ids: Option<Arc<Identities>>) -> Fetcher {
        self.ids = ids;
        self
    }

    /// Fetches shards in pieces of `bytes` (at least 1; the last piece of a shard may be
    /// shorter) instead of sizing them by the measured rates.
    pub fn with_piece_size(mut self, bytes: u64) -> Fetcher {
        self.piece_size = Some(bytes.max(1));
        self
    }

    /// Starts with pieces of `bytes` instead of [`PIECE_SIZE`], and scales [`MIN_PIECE`] down
    /// alike, for simulations in which a few bytes stand for a MiB.
    #[cfg(test)]
    pub fn with_first_piece_size(mut self, bytes: u64) -> Fetcher {
        self.first_piece_size = bytes.max(1);
        self.min_piece = (bytes / 16).max(1);
        self
    }

    /// The piece size for a shard of `len` bytes, `left` bytes of the stream (this shard's
    /// included) still to be admitted: fixed, or `len` cut into pieces of equal size that take
    /// about [`PIECE_SECS`] each at the providers' mean rate near the end of the stream, and up
    /// to [`PIECE_SECS_MAX`] while much is left, and none below [`MIN_PIECE`]. Every piece
    /// costs a call to the provider's rclone (1-12 ms through its daemon, an rclone start of
    /// 50-230 ms without); small pieces pay off only at the end, where they keep every
    /// provider busy until the last byte.
    fn piece_size(&self, len: u64, left: u64) -> u64 {
        if let Some(fixed) = self.piece_size {
            return fixed;
        }
        let rates: Vec<f64> = self
            .shared
            .lanes
            .iter()
            .filter_map(DownloadLane::rate)
            .collect();
        let target = match rates.len() {
            0 => self.first_piece_size as f64,
            n => {
                let total: f64 = rates.iter().sum();
                let secs = (left as f64 / total / PIECES_LEFT).clamp(PIECE_SECS, PIECE_SECS_MAX);
                total / n as f64 * secs
            }
        };
        // Enough pieces in the window of shards for every download slot to have one.
        let slots = (self.shared.lanes.len() * self.shared.downloads_per_provider) as u64;
        let least = slots.div_ceil(self.shards_in_flight.max(1) as u64);
        let count = ((len as f64 / target).round() as u64).max(least);
        let count = count.min(len / self.min_piece).max(1);
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
        self.shared.lanes.iter().map(DownloadLane::report).collect()
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
        let mut run = LinkFetch {
            fetcher: self,
            shared: &self.shared,
            link,
            id,
            dir,
            shards: BTreeMap::new(),
            left: link.manifest.shards.iter().map(|s| s.length).sum(),
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

    fn wanted(&self, link: &Link, id: &BackupId, dir: &str, rec: &ShardRecord) -> WantedShard {
        let object = link.manifest.object(rec);
        let mut candidates = Vec::new();
        let mut not_held = Vec::new();
        let erasure = link.manifest.scheme().map(|scheme| ErasureWant {
            scheme,
            parts: (0..scheme.total())
                .map(|p| self.wanted_piece(link, dir, rec, p, &mut not_held))
                .collect(),
        });
        for (i, lane) in self.shared.lanes.iter().enumerate() {
            match (&erasure, link.why_not(lane.name(), rec)) {
                (Some(e), _) if e.parts.iter().any(|p| p.lane == Some(i)) => candidates.push(i),
                (Some(_), _) => {}
                (None, None) => candidates.push(i),
                (None, Some(why)) => not_held.push((lane.name().to_string(), why)),
            }
        }
        WantedShard {
            backup_id: id.to_string(),
            path: format!("{dir}/{object}"),
            object,
            rec: rec.clone(),
            candidates,
            not_held,
            erasure,
        }
    }

    /// Piece `p` of erasure-coded `rec`: its holder's lane when the holder is in this restore
    /// and lists it whole; otherwise why not goes to `not_held`.
    fn wanted_piece(
        &self,
        link: &Link,
        dir: &str,
        rec: &ShardRecord,
        p: usize,
        not_held: &mut Vec<(String, String)>,
    ) -> PartWant {
        let m = &link.manifest;
        let holder = m
            .erasure
            .as_ref()
            .expect("erasure-coded")
            .holder(rec.index, p);
        let lane = self.shared.lanes.iter().position(|l| l.name() == holder);
        let why = match lane {
            None => Some("not among the providers of this restore".to_string()),
            Some(_) => link.why_not_piece(holder, rec, p),
        };
        if let Some(why) = &why {
            not_held.push((holder.to_string(), why.clone()));
        }
        PartWant {
            path: format!("{dir}/{}", m.piece_object(rec, p)),
            length: rec.pieces[p].length,
            sha256: rec.pieces[p].sha256.clone(),
            lane: lane.filter(|_| why.is_none()),
        }
    }
}

/// A verified shard's plaintext on its way to the writer.
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

impl Shared {
    /// Every lane as the planner sees it now.
    fn forecasts(&self) -> Vec<LaneForecast> {
        // A provider not measured yet is assumed as fast as the fastest one, so it gets tried.
        let default_rate = self
            .lanes
            .iter()
            .filter_map(DownloadLane::rate)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
            .unwrap_or(1.0);
        self.lanes
            .iter()
            .map(|l| l.forecast(self.downloads_per_provider, default_rate))
            .collect()
    }
}
