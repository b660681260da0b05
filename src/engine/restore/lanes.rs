//! The providers of a restore as download lanes: what each is doing, how fast it has been, and
//! when it is expected to be free. The fetcher plans pieces on this model.

use crate::engine::lane::Lane;
use crate::error::ProviderError;
use crate::progress::Progress;
use crate::provider::DynProvider;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long before a provider's downloads are expected to end one more may start, beyond
/// `concurrency`: its rclone start-up and request then overlap the end of the transfer instead
/// of leaving the link idle.
pub(super) const OVERLAP: Duration = Duration::from_millis(100);

/// One provider of a restore as a download lane, shared by every link: the shared [`Lane`]
/// (provider, dropped out or not) and the download statistics the planner works from.
pub(super) struct DownloadLane {
    pub lane: Lane,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    active: usize,
    /// Bytes of the downloads in progress.
    queued: u64,
    /// Of those, the bytes estimated still to arrive, as of `backlog_at`.
    backlog: f64,
    backlog_at: Option<Instant>,
    /// Bytes received, and time spent with at least one download running: their ratio is the
    /// measured rate (rclone's start-up included).
    received: u64,
    busy: Duration,
    mark: Option<Instant>,
    /// Verified bytes delivered, shards they belong to, and failed fetches.
    delivered: u64,
    shards: u64,
    failures: u64,
}

impl Stats {
    fn rate(&self) -> Option<f64> {
        let secs = self.busy.as_secs_f64();
        (self.received > 0 && secs > 0.0).then(|| self.received as f64 / secs)
    }

    /// Accounts busy time and the backlog's progress up to `now`.
    fn tick(&mut self, now: Instant) {
        if let Some(m) = self.mark {
            self.busy += now - m;
        }
        self.mark = (self.active > 0).then_some(now);
        if let (Some(at), Some(rate)) = (self.backlog_at, self.rate()) {
            self.backlog = (self.backlog - rate * (now - at).as_secs_f64()).max(0.0);
        }
        self.backlog_at = Some(now);
    }
}

/// A lane as the planner sees it: free download slots, and when the work on it (planned
/// included) is expected to be done, in seconds from now.
#[derive(Debug, Clone, Copy)]
pub(super) struct LaneForecast {
    pub free: usize,
    pub at: f64,
    pub rate: f64,
    /// In how many seconds an [`OVERLAP`] slot opens, if one will.
    pub wake: Option<f64>,
}

impl LaneForecast {
    /// When a download of `len` bytes queued behind the lane's work would end.
    pub fn finish(&self, len: u64) -> f64 {
        self.at + len as f64 / self.rate
    }
}

/// What a provider did in a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LaneReport {
    pub provider: String,
    /// Verified bytes fetched from it.
    pub bytes: u64,
    /// Shards it delivered, whole or in part.
    pub shards: u64,
    /// Failed fetches (missing, short, corrupt or failed downloads).
    pub failures: u64,
    /// Why it was dropped from the run, if it was.
    pub dropped: Option<String>,
}

impl DownloadLane {
    /// A lane whose drop from the run `progress` hears of.
    pub fn new(provider: DynProvider, progress: Arc<dyn Progress>) -> DownloadLane {
        DownloadLane {
            lane: Lane::new(provider).reporting_to(progress),
            stats: Mutex::default(),
        }
    }

    pub fn provider(&self) -> &DynProvider {
        &self.lane.provider
    }

    pub fn name(&self) -> &str {
        self.lane.name()
    }

    pub fn is_down(&self) -> bool {
        self.lane.is_down()
    }

    /// Drops the provider from the run (it stays usable for shards no other provider holds).
    pub fn drop_out(&self, err: &ProviderError) {
        if self.lane.mark_down(err) {
            tracing::warn!(
                "{err}; not using provider {} for the rest of this restore",
                self.name()
            );
        }
    }

    pub fn rate(&self) -> Option<f64> {
        self.stats.lock().unwrap().rate()
    }

    /// A download of `len` bytes starts.
    pub fn begin(&self, len: u64) {
        let mut s = self.stats.lock().unwrap();
        s.tick(Instant::now());
        s.active += 1;
        s.queued += len;
        s.backlog += len as f64;
        s.tick(Instant::now());
    }

    /// A download of `len` bytes ended: `received` when all its bytes came.
    pub fn end(&self, len: u64, received: bool) {
        let mut s = self.stats.lock().unwrap();
        s.tick(Instant::now());
        s.active -= 1;
        s.queued -= len;
        s.backlog = s.backlog.min(s.queued as f64);
        if received {
            s.received += len;
        } else {
            s.failures += 1;
        }
        s.tick(Instant::now());
    }

    /// `bytes` of one shard from this provider were verified.
    pub fn delivered(&self, bytes: u64) {
        let mut s = self.stats.lock().unwrap();
        s.delivered += bytes;
        s.shards += 1;
    }

    /// The copy it delivered failed its checksum.
    pub fn corrupt(&self) {
        self.stats.lock().unwrap().failures += 1;
    }

    /// The lane for planning, with `downloads` at once (one more near their end, see
    /// [`OVERLAP`]); `default_rate` for a provider not measured yet.
    pub fn forecast(&self, downloads: usize, default_rate: f64) -> LaneForecast {
        let mut s = self.stats.lock().unwrap();
        s.tick(Instant::now());
        let rate = s.rate().unwrap_or(default_rate);
        let at = s.backlog / rate;
        let mut free = downloads.saturating_sub(s.active);
        // Whether the lane's downloads can be timed; then one more may start as they end.
        let timed = s.active == downloads && s.rate().is_some();
        let lead = at - OVERLAP.as_secs_f64();
        if timed && lead <= 0.0 {
            free = 1;
        }
        LaneForecast {
            free,
            at,
            rate,
            wake: (timed && lead > 0.0).then_some(lead),
        }
    }

    pub fn report(&self) -> LaneReport {
        let s = self.stats.lock().unwrap();
        LaneReport {
            provider: self.name().to_string(),
            bytes: s.delivered,
            shards: s.shards,
            failures: s.failures,
            dropped: self.lane.down_reason().map(str::to_string),
        }
    }
}
