//! One shard in a link's fetch window: where it can come from ([`WantedShard`]), its pieces
//! and their downloads, the lane chosen for each piece, failover when a holder cannot serve it,
//! and the check and decoding of the assembled bytes (see `decode`). A [`Slot`] keeps a lane's accounting true even when
//! a download is stopped.

use super::{NoGoodCopy, Shared};
use crate::engine::restore::decode::{self, Checked, Expected};
use crate::engine::restore::lanes::LaneForecast;
use crate::manifest::ShardRecord;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

/// One shard to fetch.
pub(super) struct WantedShard {
    pub(super) backup_id: String,
    pub(super) path: String,
    pub(super) object: String,
    pub(super) rec: ShardRecord,
    /// Lanes that list the object with the right size, in preference order.
    pub(super) candidates: Vec<usize>,
    /// The other providers, with why they cannot serve it (erasure-coded: why a piece's
    /// holder cannot serve it).
    pub(super) not_held: Vec<(String, String)>,
    /// Erasure-coded: the code and where each piece is.
    pub(super) erasure: Option<ErasureWant>,
}

/// An erasure-coded shard: any `k` of its pieces, each from its one holder.
pub(super) struct ErasureWant {
    pub(super) scheme: crate::erasure::Scheme,
    /// Piece `p` (0-based, data first).
    pub(super) parts: Vec<PartWant>,
}

/// One piece of an erasure-coded shard.
pub(super) struct PartWant {
    pub(super) path: String,
    pub(super) length: u64,
    pub(super) sha256: String,
    /// The lane of its holder, when that provider is in the restore and lists it whole.
    pub(super) lane: Option<usize>,
}

/// What a download task reports.
pub(super) enum Event {
    Piece {
        shard: usize,
        piece: usize,
        lane: usize,
        /// The bytes, or why they are not the piece (a failed download, a corrupt piece).
        result: Result<Bytes, String>,
        took: Duration,
    },
    /// The assembled shard was checked and decoded.
    Checked {
        shard: usize,
        checked: std::io::Result<Checked>,
    },
}

/// A shard in the window.
pub(super) struct Shard {
    pub(super) job: WantedShard,
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) piece_size: u64,
    pub(super) pieces: Vec<Piece>,
    /// Lanes that may still serve it, in preference order.
    pub(super) left: Vec<usize>,
    /// Providers that failed it, with why.
    pub(super) tried: Vec<(String, String)>,
    /// Fetched from one holder at a time in preference order: after a failure of a one-piece
    /// shard, and whole after a checksum mismatch.
    pub(super) in_order: bool,
    pub(super) state: State,
}

pub(super) enum Piece {
    Pending,
    Running,
    Done(Bytes, usize),
    /// Erasure-coded: a piece that cannot be had (its holder lacks it or failed it).
    Lost,
}

pub(super) enum State {
    Fetching,
    /// Being checked and decoded; the bytes each lane delivered.
    Checking(BTreeMap<usize, u64>),
    /// Verified: its plaintext.
    Good(Vec<Bytes>),
    Failed(NoGoodCopy),
}

impl Shard {
    pub(super) fn new(job: WantedShard, permit: OwnedSemaphorePermit, piece_size: u64) -> Shard {
        let count = job.rec.length.div_ceil(piece_size).max(1) as usize;
        let pieces = match &job.erasure {
            None => (0..count).map(|_| Piece::Pending).collect(),
            Some(e) => e
                .parts
                .iter()
                .map(|p| match p.lane {
                    Some(_) => Piece::Pending,
                    None => Piece::Lost,
                })
                .collect(),
        };
        Shard {
            left: job.candidates.clone(),
            job,
            permit,
            piece_size,
            pieces,
            tried: Vec::new(),
            in_order: false,
            state: State::Fetching,
        }
    }

    /// Offset and length of a piece.
    pub(super) fn range(&self, piece: usize) -> (u64, u64) {
        if let Some(e) = &self.job.erasure {
            return (0, e.parts[piece].length);
        }
        if self.pieces.len() == 1 {
            return (0, self.job.rec.length);
        }
        let offset = piece as u64 * self.piece_size;
        (offset, self.piece_size.min(self.job.rec.length - offset))
    }

    /// The lane for a piece of `len` bytes: in order, the next holder in preference order;
    /// otherwise the holder expected to finish it first. Providers dropped from the run only
    /// when no other holder is left.
    pub(super) fn choose(
        &self,
        shared: &Shared,
        plans: &[LaneForecast],
        len: u64,
    ) -> Option<usize> {
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

    pub(super) fn start(
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
        let provider = shared.lanes[lane].provider().clone();
        let part = self.job.erasure.as_ref().map(|e| &e.parts[piece]);
        let path = part.map_or(&self.job.path, |p| &p.path).clone();
        let sha256 = part.map(|p| p.sha256.clone());
        let whole = self.pieces.len() == 1 || part.is_some();
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
            let result = match (result, sha256) {
                (Ok(data), Some(want)) => checked_piece(data, &want).await,
                (Ok(data), None) => Ok(data),
                (Err(e), _) => Err(format!("download failed: {}", e.message.trim_end())),
            };
            Event::Piece {
                shard: index,
                piece,
                lane,
                result,
                took: start.elapsed(),
            }
        });
    }

    /// Checks and decodes the assembled shard off the runtime's threads. Its pieces are moved
    /// into the task, so the stored bytes are freed once the plaintext exists.
    pub(super) fn check(&mut self, tasks: &mut JoinSet<Event>, index: usize, want: Expected) {
        let mut from: BTreeMap<usize, u64> = BTreeMap::new();
        let mut parts = Vec::with_capacity(self.pieces.len());
        for p in &mut self.pieces {
            match std::mem::replace(p, Piece::Pending) {
                Piece::Done(data, lane) => {
                    *from.entry(lane).or_default() += data.len() as u64;
                    parts.push(data);
                }
                _ => unreachable!("checking a shard with missing pieces"),
            }
        }
        self.state = State::Checking(from);
        tasks.spawn(async move {
            let checked = tokio::task::spawn_blocking(move || decode::check(parts, &want))
                .await
                .map_err(std::io::Error::other);
            Event::Checked {
                shard: index,
                checked,
            }
        });
    }

    /// The stored bytes are the manifest's but do not give its plaintext: every copy is the
    /// same, so the shard fails, naming the providers it came from.
    pub(super) fn undecodable(
        &mut self,
        shared: &Shared,
        from: &BTreeMap<usize, u64>,
        why: String,
    ) {
        self.left.clear();
        self.state = State::Failed(NoGoodCopy {
            backup_id: self.job.backup_id.clone(),
            index: self.job.rec.index,
            offset: self.job.rec.offset,
            object: self.job.object.clone(),
            erasure: self.job.erasure.as_ref().map(|e| e.scheme),
            tried: from
                .keys()
                .map(|&l| (shared.lanes[l].name().to_string(), why.clone()))
                .collect(),
        });
    }

    /// `lane` could not serve the shard: it is not asked again, and the shard fails when no
    /// holder is left.
    pub(super) fn fail(&mut self, shared: &Shared, lane: usize, why: String) {
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

    /// Fails the shard when no holder is left to try (erasure-coded: when fewer than `k`
    /// pieces are fetched or can still be).
    pub(super) fn check_left(&mut self) {
        let viable = match &self.job.erasure {
            None => !self.left.is_empty(),
            Some(e) => {
                self.pieces
                    .iter()
                    .filter(|p| !matches!(p, Piece::Lost))
                    .count()
                    >= e.scheme.k
            }
        };
        if viable || matches!(self.state, State::Failed(_)) {
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
            erasure: self.job.erasure.as_ref().map(|e| e.scheme),
            tried,
        });
    }
}

impl Shard {
    /// Erasure-coded: starts the downloads the shard still needs to have `k` pieces fetched or
    /// underway, choosing the pieces whose holders are expected to finish first (data pieces
    /// first on a tie: joining them needs no decoding). A holder dropped from the run is used
    /// only when too few others are left.
    pub(super) fn schedule_erasure(
        &mut self,
        shared: &Arc<Shared>,
        plans: &mut [LaneForecast],
        tasks: &mut JoinSet<Event>,
        index: usize,
    ) {
        let Some(e) = &self.job.erasure else {
            return;
        };
        let underway = self
            .pieces
            .iter()
            .filter(|p| matches!(p, Piece::Running | Piece::Done(..)))
            .count();
        let wanted = e.scheme.k.saturating_sub(underway);
        let pending = |alive: bool| -> Vec<(usize, usize)> {
            (0..self.pieces.len())
                .filter(|&p| matches!(self.pieces[p], Piece::Pending))
                .filter_map(|p| Some((p, e.parts[p].lane?)))
                .filter(|&(_, lane)| !alive || !shared.lanes[lane].is_down())
                .collect()
        };
        let lens: Vec<u64> = e.parts.iter().map(|p| p.length).collect();
        let by_finish = |v: &mut Vec<(usize, usize)>| {
            v.sort_by(|&(a, la), &(b, lb)| {
                plans[la]
                    .finish(lens[a])
                    .total_cmp(&plans[lb].finish(lens[b]))
                    .then(a.cmp(&b))
            })
        };
        let mut choice = pending(true);
        by_finish(&mut choice);
        if choice.len() < wanted {
            let mut dropped: Vec<(usize, usize)> = pending(false)
                .into_iter()
                .filter(|c| !choice.contains(c))
                .collect();
            by_finish(&mut dropped);
            choice.extend(dropped);
        }
        for (p, lane) in choice.into_iter().take(wanted) {
            plans[lane].at = plans[lane].finish(lens[p]);
            if plans[lane].free > 0 {
                plans[lane].free -= 1;
                self.start(shared, tasks, index, p, lane);
            }
        }
    }

    /// Erasure-coded: piece `piece` from `lane` is not to be had; the shard fails when fewer
    /// than `k` pieces are left.
    pub(super) fn lose(&mut self, shared: &Shared, piece: usize, lane: usize, why: String) {
        let name = shared.lanes[lane].name();
        tracing::warn!(
            "provider {name}: piece {} of shard {} of backup {}: {why}; trying another piece",
            piece + 1,
            self.job.object,
            self.job.backup_id
        );
        if why.starts_with("corrupt") {
            shared.lanes[lane].corrupt();
        }
        self.pieces[piece] = Piece::Lost;
        self.tried.push((name.to_string(), why));
        self.check_left();
    }

    /// Erasure-coded: joins the `k` fetched pieces, then checks and decodes the shard, off
    /// the runtime's threads. The pieces are moved into the task and freed once joined.
    pub(super) fn check_erasure(
        &mut self,
        tasks: &mut JoinSet<Event>,
        index: usize,
        want: Expected,
    ) {
        let scheme = self.job.erasure.as_ref().expect("erasure-coded").scheme;
        let length = self.job.rec.length;
        let mut from: BTreeMap<usize, u64> = BTreeMap::new();
        let mut pieces: Vec<Option<Bytes>> = Vec::with_capacity(self.pieces.len());
        for p in &mut self.pieces {
            match std::mem::replace(p, Piece::Lost) {
                Piece::Done(data, lane) => {
                    *from.entry(lane).or_default() += data.len() as u64;
                    pieces.push(Some(data));
                }
                other => {
                    *p = other;
                    pieces.push(None);
                }
            }
        }
        self.state = State::Checking(from);
        tasks.spawn(async move {
            let checked = tokio::task::spawn_blocking(move || {
                match crate::erasure::join(scheme, length, &pieces) {
                    Ok(stored) => decode::check(vec![Bytes::from(stored)], &want),
                    Err(e) => Checked::Undecodable(format!("the pieces do not join: {e}")),
                }
            })
            .await
            .map_err(std::io::Error::other);
            Event::Checked {
                shard: index,
                checked,
            }
        });
    }
}

/// An erasure-coded piece, if its SHA-256 is `want` (hashed on the blocking pool).
async fn checked_piece(data: Bytes, want: &str) -> Result<Bytes, String> {
    let sum = crate::hashing::sha256_blocking(data.clone())
        .await
        .map_err(|e| format!("hashing the piece failed: {e}"))?;
    match sum == want {
        true => Ok(data),
        false => Err(format!(
            "corrupt piece: SHA-256 {sum}, the manifest says {want}"
        )),
    }
}

/// A download in progress on a lane; the lane's accounting follows it even when the download
/// is stopped (its task dropped).
pub(super) struct Slot {
    pub(super) shared: Arc<Shared>,
    pub(super) lane: usize,
    pub(super) len: u64,
    /// Every byte came.
    pub(super) received: bool,
}

impl Slot {
    pub(super) fn take(shared: Arc<Shared>, lane: usize, len: u64) -> Slot {
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
