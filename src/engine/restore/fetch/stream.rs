//! The fetching of one link's stream ([`LinkFetch`]): admits shards into the window, plans
//! their pieces on the lanes, collects the downloads and the checks (stored SHA-256, decoding,
//! plaintext SHA-256), and hands verified plaintext to the writer in order.

use super::shard::{Event, Piece, Shard, State};
use super::{Fetcher, Ready, Shared};
use crate::engine::restore::decode::{Checked, Expected};
use crate::engine::restore::Link;
use crate::error::Interrupted;
use crate::layout::BackupId;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The fetching of one link's stream: the shards in the window and their pieces.
pub(super) struct LinkFetch<'a> {
    pub(super) fetcher: &'a Fetcher,
    pub(super) shared: &'a Arc<Shared>,
    pub(super) link: &'a Link,
    pub(super) id: BackupId,
    pub(super) dir: String,
    /// Admitted shards not yet handed to the writer, by index.
    pub(super) shards: BTreeMap<usize, Shard>,
    /// Stored bytes of the shards not admitted yet.
    pub(super) left: u64,
    pub(super) next_admit: usize,
    pub(super) next_send: usize,
    /// A shard has no good copy: nothing after it is admitted.
    pub(super) failed: bool,
}

pub(super) enum Step {
    Event(Event),
    Admit(OwnedSemaphorePermit),
    /// A provider's downloads are about to end: time to start the next.
    Overlap,
}

impl LinkFetch<'_> {
    /// Admits shards into the window, plans their pieces, collects the downloads and hands
    /// verified shards to the writer in order. Returns at the first shard with no good copy
    /// (everything before it handed over), or when the writer is gone (its error says why).
    pub(super) async fn pump(
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
                .forecasts()
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
                Step::Event(Event::Checked { shard, checked }) => {
                    let checked = checked.map_err(|e| anyhow!("checking a shard failed: {e}"))?;
                    self.on_checked(shard, checked);
                }
            }
        }
    }

    /// Hands the shards whose turn it is to the writer, up to the first not verified yet; the
    /// error of the first with no good copy.
    pub(super) async fn send_ready(&mut self, tx: &mpsc::Sender<Ready>) -> Result<()> {
        while let Some(entry) = self.shards.first_entry() {
            match entry.get().state {
                State::Good(_) => {
                    let shard = entry.remove();
                    let State::Good(parts) = shard.state else {
                        unreachable!()
                    };
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
                State::Fetching | State::Checking(_) => break,
            }
        }
        Ok(())
    }

    pub(super) fn admit(&mut self, permit: OwnedSemaphorePermit) {
        let i = self.next_admit;
        let rec = &self.link.manifest.shards[i];
        let job = self.fetcher.wanted(self.link, &self.id, &self.dir, rec);
        let piece_size = self.fetcher.piece_size(rec.length, self.left);
        self.left = self.left.saturating_sub(rec.length);
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
    pub(super) fn schedule(&mut self, tasks: &mut JoinSet<Event>) {
        let shared = self.shared;
        let mut plans = shared.forecasts();
        for (&index, shard) in self.shards.iter_mut() {
            if !matches!(shard.state, State::Fetching) {
                continue;
            }
            if shard.job.erasure.is_some() {
                shard.schedule_erasure(shared, &mut plans, tasks, index);
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

    pub(super) fn on_piece(
        &mut self,
        tasks: &mut JoinSet<Event>,
        index: usize,
        piece: usize,
        lane: usize,
        result: Result<Bytes, String>,
    ) {
        let shared = self.shared;
        let Some(shard) = self.shards.get_mut(&index) else {
            unreachable!("a download of a shard not in the window")
        };
        let (offset, len) = shard.range(piece);
        if !matches!(shard.state, State::Fetching) {
            return; // the shard failed meanwhile
        }
        if shard.job.erasure.is_some() {
            self.on_erasure_piece(tasks, index, piece, lane, result);
            return;
        }
        let why = match result {
            Ok(data) if data.len() as u64 == len => {
                shard.pieces[piece] = Piece::Done(data, lane);
                if shard.pieces.iter().all(|p| matches!(p, Piece::Done(..))) {
                    let rec = &shard.job.rec;
                    let want = Expected::new(&self.link.manifest, rec, self.fetcher.ids.clone());
                    shard.check(tasks, index, want);
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
            Err(why) => why,
        };
        shard.pieces[piece] = Piece::Pending;
        shard.fail(shared, lane, why);
        self.failed |= matches!(shard.state, State::Failed(_));
    }

    /// Erasure-coded: a piece came (checked by its SHA-256) or failed; with `k` pieces the
    /// shard is joined and checked.
    fn on_erasure_piece(
        &mut self,
        tasks: &mut JoinSet<Event>,
        index: usize,
        piece: usize,
        lane: usize,
        result: Result<Bytes, String>,
    ) {
        let shard = self.shards.get_mut(&index).expect("a shard in the window");
        let len = shard.range(piece).1;
        match result {
            Ok(data) if data.len() as u64 == len => {
                shard.pieces[piece] = Piece::Done(data, lane);
                let done = shard
                    .pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Done(..)))
                    .count();
                let k = shard.job.erasure.as_ref().map_or(1, |e| e.scheme.k);
                if done == k {
                    let want = Expected::new(
                        &self.link.manifest,
                        &shard.job.rec,
                        self.fetcher.ids.clone(),
                    );
                    shard.check_erasure(tasks, index, want);
                }
            }
            Ok(data) => {
                let why = format!("short piece: {} bytes, the manifest says {len}", data.len());
                shard.lose(self.shared, piece, lane, why);
            }
            Err(why) => shard.lose(self.shared, piece, lane, why),
        }
        self.failed |= matches!(shard.state, State::Failed(_));
    }

    pub(super) fn on_checked(&mut self, index: usize, checked: Checked) {
        let shared = self.shared;
        let Some(shard) = self.shards.get_mut(&index) else {
            unreachable!("a check of a shard not in the window")
        };
        let State::Checking(from) = std::mem::replace(&mut shard.state, State::Fetching) else {
            unreachable!("a check of a shard not being checked")
        };
        let sum = match checked {
            Checked::Good(plain) => {
                for (&lane, &bytes) in &from {
                    shared.lanes[lane].delivered(bytes);
                    shared.progress.provider(shared.lanes[lane].name(), bytes);
                }
                shard.state = State::Good(plain);
                return;
            }
            Checked::Undecodable(why) => {
                tracing::warn!(
                    "shard {} of backup {}: {why}",
                    shard.job.object,
                    shard.job.backup_id
                );
                shard.undecodable(shared, &from, why);
                self.failed = true;
                return;
            }
            Checked::Corrupt(sum) if shard.job.erasure.is_some() => {
                // Every piece matched its own SHA-256: the manifest itself disagrees.
                let why = format!(
                    "its pieces match their SHA-256 but join to a shard with SHA-256 {sum}, the manifest says {}",
                    shard.job.rec.sha256
                );
                shard.undecodable(shared, &from, why);
                self.failed = true;
                return;
            }
            Checked::Corrupt(sum) => sum,
        };
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
