//! Fetching one backup's shards from the providers and writing them, verified and in order, to
//! a sink.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` (at least 2) shards are held at once, counting those
//!   being downloaded, those waiting for their turn and the one being written.
//! - Every shard's length and SHA-256 are checked against the manifest before a byte of it is
//!   written; when no provider has a good copy, nothing from that shard on is written and the
//!   error names the shard and every provider with why it could not serve it.
//! - Shards are spread over every provider that holds them: each goes to the provider expected
//!   to deliver it first (its queued bytes over its measured rate), at most `concurrency`
//!   downloads per provider; so a fast provider takes more shards and a restore can beat any
//!   single provider. A failed shard is fetched from the next holder in preference order.
//! - A provider whose download fails for other reasons than a missing or bad object (after its
//!   retries) is dropped for the rest of the run; the others finish the work.
//! - On error or cancellation every download is stopped and waited for before returning.

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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

/// What a provider did in a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LaneReport {
    pub provider: String,
    /// Verified bytes fetched from it.
    pub bytes: u64,
    pub shards: u64,
    /// Failed fetches (missing, short, corrupt or failed downloads).
    pub failures: u64,
    /// Why it was dropped from the run, if it was.
    pub dropped: Option<String>,
}

/// Fetches shards from a set of providers, shared by every link of a restore.
pub struct Fetcher {
    shared: Arc<Shared>,
    host: String,
    dataset: String,
    shards_in_flight: usize,
}

struct Shared {
    /// Providers in preference order: `--from` first, then priority.
    lanes: Vec<Lane>,
    concurrency: usize,
    /// Signalled whenever a download ends, so waiters look for a free provider again.
    freed: Notify,
    progress: Arc<dyn Progress>,
}

struct Lane {
    provider: DynProvider,
    down: OnceLock<String>,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    active: usize,
    /// Bytes of the downloads in progress.
    queued: u64,
    /// Verified bytes delivered, and time spent with at least one download running until the
    /// last delivery: their ratio is the provider's measured rate.
    delivered: u64,
    busy: Duration,
    mark: Option<Instant>,
    shards: u64,
    failures: u64,
}

impl Stats {
    fn rate(&self) -> Option<f64> {
        let secs = self.busy.as_secs_f64();
        (self.delivered > 0 && secs > 0.0).then(|| self.delivered as f64 / secs)
    }

    /// Accounts busy time up to now.
    fn tick(&mut self, now: Instant) {
        if let Some(m) = self.mark {
            self.busy += now - m;
        }
        self.mark = (self.active > 0).then_some(now);
    }
}

/// One download slot held on a lane; releasing it (also on drop) frees the slot.
struct Slot<'a> {
    shared: &'a Shared,
    lane: usize,
    len: u64,
    delivered: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.shared.lanes[self.lane].stats.lock().unwrap();
        s.tick(Instant::now());
        s.active -= 1;
        s.queued -= self.len;
        if self.delivered {
            s.delivered += self.len;
            s.shards += 1;
        } else {
            s.failures += 1;
        }
        s.tick(Instant::now());
        drop(s);
        self.shared.freed.notify_waiters();
    }
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
        let lanes = providers
            .into_iter()
            .map(|provider| Lane {
                provider,
                down: OnceLock::new(),
                stats: Mutex::default(),
            })
            .collect();
        Fetcher {
            shared: Arc::new(Shared {
                lanes,
                concurrency: concurrency.max(1),
                freed: Notify::new(),
                progress,
            }),
            host: host.to_string(),
            dataset: dataset.to_string(),
            shards_in_flight: shards_in_flight.max(2),
        }
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
        self.shared
            .lanes
            .iter()
            .map(|l| {
                let s = l.stats.lock().unwrap();
                LaneReport {
                    provider: l.name().to_string(),
                    bytes: s.delivered,
                    shards: s.shards,
                    failures: s.failures,
                    dropped: l.down.get().cloned(),
                }
            })
            .collect()
    }

    /// Writes the stream of `link` to `sink`, verified shard by shard, in order. Returns the
    /// bytes written. The caller flushes and closes the sink.
    pub async fn stream<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        link: &Link,
        sink: &mut W,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let mut tasks = JoinSet::new();
        let r = self.pump(link, sink, &mut tasks, cancel).await;
        if r.is_err() {
            // Stops every download: dropping a task's future kills its rclone child.
            tasks.shutdown().await;
        }
        r
    }

    async fn pump<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        link: &Link,
        sink: &mut W,
        tasks: &mut JoinSet<(usize, Result<Bytes, NoGoodCopy>, OwnedSemaphorePermit)>,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let m = &link.manifest;
        let id = m
            .id()
            .ok_or_else(|| anyhow!("invalid backup id {}", m.backup_id))?;
        let dir = layout::backup_dir(&self.host, &self.dataset, &id);
        let window = Arc::new(Semaphore::new(self.shards_in_flight));
        // Fetched shards waiting for their turn; a failed one stops the stream when its turn
        // comes, so everything before it is written and nothing after it.
        let mut ready: BTreeMap<usize, Result<(Bytes, OwnedSemaphorePermit), NoGoodCopy>> =
            BTreeMap::new();
        let (mut next_fetch, mut next_write, mut written) = (0, 0, 0u64);
        let mut failed = false;
        while next_write < m.shards.len() {
            if let Some(r) = ready.remove(&next_write) {
                let (data, permit) = r?;
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Interrupted.into()),
                    r = sink.write_all(&data) => r.map_err(|error| SinkError { offset: written, error })?,
                }
                written += data.len() as u64;
                self.shared.progress.advance(data.len() as u64);
                drop(permit);
                next_write += 1;
                continue;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Interrupted.into()),
                Some(done) = tasks.join_next() => {
                    let (i, r, permit) = done.map_err(|e| anyhow!("a download task failed: {e}"))?;
                    failed |= r.is_err();
                    ready.insert(i, r.map(|data| (data, permit)));
                }
                permit = window.clone().acquire_owned(), if next_fetch < m.shards.len() && !failed => {
                    let permit = permit.expect("the window is never closed");
                    let job = self.job(link, &id, &dir, &m.shards[next_fetch]);
                    let shared = self.shared.clone();
                    let i = next_fetch;
                    tasks.spawn(async move { (i, fetch(&shared, job).await, permit) });
                    next_fetch += 1;
                }
            }
        }
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

impl Lane {
    fn name(&self) -> &str {
        self.provider.name()
    }

    fn drop_out(&self, err: &ProviderError) {
        if self.down.set(err.to_string()).is_ok() {
            tracing::warn!(
                "{err}; not using provider {} for the rest of this restore",
                self.name()
            );
        }
    }
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

/// Fetches one shard from the holder expected to deliver it first; after a failure, from the
/// next holder in preference order. Verified bytes, or why no provider could deliver them.
async fn fetch(shared: &Shared, job: Job) -> Result<Bytes, NoGoodCopy> {
    let mut left = job.candidates.clone();
    let mut tried: Vec<(String, String)> = Vec::new();
    loop {
        let choice = if tried.is_empty() {
            left.clone()
        } else {
            shared.next_in_order(&left).into_iter().collect()
        };
        let Some(mut slot) = shared.acquire(&choice, job.rec.length).await else {
            break;
        };
        left.retain(|&l| l != slot.lane);
        let lane = &shared.lanes[slot.lane];
        match get_verified(lane, &job).await {
            Ok(data) => {
                slot.delivered = true;
                shared.progress.provider(lane.name(), data.len() as u64);
                return Ok(data);
            }
            Err(why) => {
                tracing::warn!(
                    "provider {}: shard {} of backup {}: {why}; trying the next provider that holds it",
                    lane.name(),
                    job.object,
                    job.backup_id
                );
                tried.push((lane.name().to_string(), why));
            }
        }
    }
    tried.extend(job.not_held);
    Err(NoGoodCopy {
        backup_id: job.backup_id,
        index: job.rec.index,
        offset: job.rec.offset,
        object: job.object,
        tried,
    })
}

/// Downloads and checks one shard; the error says what was wrong with this copy.
async fn get_verified(lane: &Lane, job: &Job) -> Result<Bytes, String> {
    let data = match lane.provider.get(&job.path, job.rec.length).await {
        Ok(d) => d,
        Err(e) => {
            if !e.is_not_found() {
                lane.drop_out(&e);
            }
            return Err(format!("download failed: {}", e.message.trim_end()));
        }
    };
    if data.len() as u64 != job.rec.length {
        return Err(format!(
            "short copy: {} bytes, the manifest says {}",
            data.len(),
            job.rec.length
        ));
    }
    let hashed = data.clone();
    let sum = tokio::task::spawn_blocking(move || hex(&Sha256::digest(&hashed)))
        .await
        .map_err(|e| format!("hashing failed: {e}"))?;
    if sum != job.rec.sha256 {
        return Err(format!(
            "corrupt copy: SHA-256 {sum}, the manifest says {}",
            job.rec.sha256
        ));
    }
    Ok(data)
}

impl Shared {
    /// The first of `candidates` still in the run, else the first at all.
    fn next_in_order(&self, candidates: &[usize]) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .find(|&l| self.lanes[l].down.get().is_none())
            .or_else(|| candidates.first().copied())
    }

    /// Takes a download slot on the lane among `candidates` expected to deliver `len` bytes
    /// first, waiting while all of them are busy. Providers dropped from the run are used only
    /// when no other candidate is left. `None` when there is no candidate.
    async fn acquire(&self, candidates: &[usize], len: u64) -> Option<Slot<'_>> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.pick(candidates, len) {
                Pick::Got(lane) => {
                    return Some(Slot {
                        shared: self,
                        lane,
                        len,
                        delivered: false,
                    })
                }
                Pick::NoCandidate => return None,
                Pick::AllBusy => freed.await,
            }
        }
    }

    fn pick(&self, candidates: &[usize], len: u64) -> Pick {
        let mut alive: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&l| self.lanes[l].down.get().is_none())
            .collect();
        if alive.is_empty() {
            alive = candidates.to_vec();
        }
        if alive.is_empty() {
            return Pick::NoCandidate;
        }
        let mut stats: Vec<_> = alive
            .iter()
            .map(|&l| (l, self.lanes[l].stats.lock().unwrap()))
            .collect();
        // A provider not measured yet is assumed as fast as the fastest one, so it gets tried.
        let best_rate = stats
            .iter()
            .filter_map(|(_, s)| s.rate())
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
            .unwrap_or(1.0);
        let chosen = stats
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| s.active < self.concurrency)
            .map(|(k, (_, s))| (k, (s.queued + len) as f64 / s.rate().unwrap_or(best_rate)))
            .fold(None, |best: Option<(usize, f64)>, (k, eta)| match best {
                Some((_, b)) if b <= eta => best,
                _ => Some((k, eta)),
            });
        let Some((k, _)) = chosen else {
            return Pick::AllBusy;
        };
        let (lane, s) = &mut stats[k];
        s.tick(Instant::now());
        s.active += 1;
        s.queued += len;
        s.tick(Instant::now());
        Pick::Got(*lane)
    }
}

enum Pick {
    Got(usize),
    AllBusy,
    NoCandidate,
}
