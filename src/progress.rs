//! Progress reporting behind a small interface (STYLE.md §8).
//!
//! The engine reports what happened; how it is shown is the caller's choice: [`NoProgress`]
//! for `-q` and tests, [`LogProgress`] for a log line every minute (`--progress-interval`)
//! when stderr is not a terminal, and the bars of `ui` on a terminal. Both of the latter keep
//! their numbers in a [`Tally`], so they say the same thing.
//!
//! What the numbers mean, and why they can be trusted:
//! - A provider's bytes are bytes it *stored* (an upload that ended in success) or *sent* (a
//!   download received and checked). Bytes handed to a running upload are only `sending`,
//!   shown apart, and vanish when the upload ends ([`UploadMeter`]): rclone takes tens of
//!   MiB into its buffers long before the remote has them, and a failed upload stores nothing.
//! - Rates are averages since the phase began, over bytes moved in this run (bytes found
//!   already in place, [`Progress::already_done`], count as done but not in a rate). Since
//!   stored bytes cannot arrive faster than the link, a provider capped at N MiB/s never
//!   shows more than N.
//! - No rate until something moved, and no ETA without a rate and an expected total.
//! - A provider that is retrying or was dropped from the run says so ([`ProviderState`]).

/// The [`Progress`] methods that only record figures, for a renderer holding a [`Tally`] in
/// its field `tally`: the log lines and the bars differ only in `begin` and `finish`.
#[macro_export]
#[doc(hidden)]
macro_rules! figures_go_to_the_tally {
    () => {
        fn advance(&self, bytes: u64) {
            self.tally.advance(bytes);
        }

        fn already_done(&self, provider: Option<&str>, bytes: u64) {
            self.tally.already_done(provider, bytes);
        }

        fn provider(&self, provider: &str, bytes: u64) {
            self.tally.provider(provider, bytes);
        }

        fn sending(&self, provider: &str, delta: i64) {
            self.tally.sending(provider, delta);
        }

        fn provider_state(&self, provider: &str, state: $crate::progress::ProviderState) {
            self.tally.state(provider, state);
        }
    };
}

mod log;
mod tally;

pub use log::{parse_interval, LogProgress, DEFAULT_LOG_INTERVAL};
pub use tally::{per_second, short_duration, LaneView, Snapshot, Tally};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub trait Progress: Send + Sync {
    /// Starts a phase: `what` for people, `total` bytes if known, one lane per provider.
    fn begin(&self, what: &str, total: Option<u64>, providers: &[String]);
    /// Bytes of the phase done: for a backup, stream bytes every provider still in the run
    /// has ended its upload of; for a restore, bytes written to the receiver.
    fn advance(&self, bytes: u64);
    /// Bytes found already done (a resumed backup's shards the providers hold): done, but
    /// not moved by this run, so not in any rate. `provider`: one provider's, else the phase's.
    fn already_done(&self, provider: Option<&str>, bytes: u64) {
        match provider {
            Some(p) => self.provider(p, bytes),
            None => self.advance(bytes),
        }
    }
    /// Bytes moved to or from one provider for good: stored by an upload that succeeded, or
    /// received by a download.
    fn provider(&self, provider: &str, bytes: u64);
    /// Bytes handed to a provider by uploads still running: `+n` as they are handed over,
    /// `-n` once the upload ends (then counted by [`Progress::provider`] if it succeeded).
    fn sending(&self, provider: &str, delta: i64) {
        let _ = (provider, delta);
    }
    /// A provider is retrying, dropped from the run, or working normally again.
    fn provider_state(&self, provider: &str, state: ProviderState) {
        let _ = (provider, state);
    }
    /// Ends the phase.
    fn finish(&self);
}

/// How a provider is doing, as its progress line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderState {
    /// Working (also after a retried call ended, whichever way).
    #[default]
    Normal,
    /// A call failed; attempt `attempt` of `of` starts at `at`.
    Retrying { attempt: u32, of: u32, at: Instant },
    /// Dropped from the run: no more work goes there. It stays so until the phase ends.
    Down,
}

impl ProviderState {
    /// `retrying 3/5 in 4s`, `retrying 3/5` (the attempt runs), `DOWN`; `None` when normal.
    pub fn label(&self, now: Instant) -> Option<String> {
        match *self {
            ProviderState::Normal => None,
            ProviderState::Down => Some("DOWN".into()),
            ProviderState::Retrying { attempt, of, at } => {
                let wait = at.saturating_duration_since(now);
                Some(if wait.is_zero() {
                    format!("retrying {attempt}/{of}")
                } else {
                    format!("retrying {attempt}/{of} in {}", short_duration(wait))
                })
            }
        }
    }
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>, _: &[String]) {}
    fn advance(&self, _: u64) {}
    fn provider(&self, _: &str, _: u64) {}
    fn finish(&self) {}
}

/// One upload's part in its provider's progress: the bytes handed over count as `sending`
/// while it runs; [`UploadMeter::stored`] counts its length as stored once it succeeded. An
/// upload that fails or is dropped (cancelled, or its provider left the run) counts nowhere.
pub struct UploadMeter {
    progress: Arc<dyn Progress>,
    provider: String,
    /// The most bytes any attempt has handed over (a retry starts again from zero).
    sent: Arc<AtomicU64>,
}

impl UploadMeter {
    pub fn new(progress: Arc<dyn Progress>, provider: &str) -> UploadMeter {
        UploadMeter {
            progress,
            provider: provider.to_string(),
            sent: Arc::default(),
        }
    }

    /// The callback for `Provider::put`: its cumulative count, reported as `sending`; a
    /// retry's restart from zero does not count twice.
    pub fn on_sent(&self) -> Arc<dyn Fn(u64) + Send + Sync> {
        let (progress, provider, high) = (
            self.progress.clone(),
            self.provider.clone(),
            self.sent.clone(),
        );
        Arc::new(move |sent| {
            let before = high.fetch_max(sent, Ordering::Relaxed);
            if sent > before {
                progress.sending(&provider, (sent - before) as i64);
            }
        })
    }

    /// The upload succeeded: `length` bytes are stored.
    pub fn stored(self, length: u64) {
        self.retract();
        self.progress.provider(&self.provider, length);
    }

    fn retract(&self) {
        let sent = self.sent.swap(0, Ordering::Relaxed);
        if sent > 0 {
            self.progress.sending(&self.provider, -(sent as i64));
        }
    }
}

impl Drop for UploadMeter {
    fn drop(&mut self) {
        self.retract();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_upload_counts_as_stored_only_once_it_succeeded() {
        let tally = Arc::new(TallyProgress::default());
        tally.0.begin("backup", None, &["a".into(), "b".into()]);
        let ok = UploadMeter::new(tally.clone(), "a");
        let failed = UploadMeter::new(tally.clone(), "b");
        let (on_ok, on_failed) = (ok.on_sent(), failed.on_sent());
        on_ok(3 << 20);
        on_failed(5 << 20);
        on_failed(1 << 20); // a retry starts again
        on_failed(6 << 20);
        let s = tally.0.snapshot(Instant::now());
        assert_eq!((s.lanes[0].bytes, s.lanes[0].sending), (0, 3 << 20));
        assert_eq!((s.lanes[1].bytes, s.lanes[1].sending), (0, 6 << 20));
        ok.stored(4 << 20);
        drop(failed);
        let s = tally.0.snapshot(Instant::now());
        assert_eq!((s.lanes[0].bytes, s.lanes[0].sending), (4 << 20, 0));
        assert_eq!((s.lanes[1].bytes, s.lanes[1].sending), (0, 0));
    }

    #[test]
    fn states_read_as_their_line_shows_them() {
        let now = Instant::now();
        let retrying = ProviderState::Retrying {
            attempt: 3,
            of: 5,
            at: now + Duration::from_millis(3200),
        };
        assert_eq!(retrying.label(now).unwrap(), "retrying 3/5 in 4s");
        assert_eq!(
            retrying.label(now + Duration::from_secs(5)).unwrap(),
            "retrying 3/5"
        );
        assert_eq!(ProviderState::Down.label(now).unwrap(), "DOWN");
        assert_eq!(ProviderState::Normal.label(now), None);
    }

    /// A [`Progress`] that only keeps the tally, for tests.
    #[derive(Default)]
    struct TallyProgress(Tally);

    impl Progress for TallyProgress {
        fn begin(&self, what: &str, total: Option<u64>, providers: &[String]) {
            self.0.begin(what, total, providers)
        }
        fn advance(&self, bytes: u64) {
            self.0.advance(bytes)
        }
        fn provider(&self, provider: &str, bytes: u64) {
            self.0.provider(provider, bytes)
        }
        fn sending(&self, provider: &str, delta: i64) {
            self.0.sending(provider, delta)
        }
        fn finish(&self) {}
    }
}
