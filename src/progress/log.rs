//! [`LogProgress`]: progress as a log line every so often, for a stderr that is not a
//! terminal (a cron mail, the journal). One line a minute by default, so that a six-hour
//! backup writes a few hundred lines, not thousands; `--progress-interval` (or
//! `$OFFSITE_PROGRESS_INTERVAL`) changes it, and `0` leaves only what the commands log
//! themselves (their closing summary stays either way).

use super::{Progress, Tally};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a progress line is logged off a terminal, unless told otherwise.
pub const DEFAULT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Logs a progress line every `every` while a phase runs (never with `None`).
pub struct LogProgress {
    every: Option<Duration>,
    tally: Arc<Tally>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LogProgress {
    pub fn new(every: Option<Duration>) -> Self {
        LogProgress {
            every: every.filter(|d| !d.is_zero()),
            tally: Arc::default(),
            ticker: Mutex::new(None),
        }
    }

    /// The line a tick would log now.
    pub fn line(&self) -> String {
        self.tally.snapshot(Instant::now()).log_line()
    }
}

/// `--progress-interval`'s value: seconds (`60`), or a duration (`30s`, `5m`); `0` for none.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => crate::config::units::parse_duration(s),
    }
}

impl Progress for LogProgress {
    fn begin(&self, what: &str, total: Option<u64>, providers: &[String]) {
        self.tally.begin(what, total, providers);
        let Some(every) = self.every else {
            return;
        };
        let tally = self.tally.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!("{}", tally.snapshot(Instant::now()).log_line());
            }
        });
        if let Some(old) = self.ticker.lock().unwrap().replace(handle) {
            old.abort();
        }
    }

    crate::figures_go_to_the_tally!();

    fn finish(&self) {
        if let Some(h) = self.ticker.lock().unwrap().take() {
            h.abort();
        }
    }
}

impl Drop for LogProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_seconds_or_a_duration() {
        assert_eq!(parse_interval("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert!(parse_interval("soon").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_starts_no_ticker() {
        let p = LogProgress::new(Some(Duration::ZERO));
        p.begin("backup media", None, &["a".into()]);
        assert!(p.ticker.lock().unwrap().is_none());
        let p = LogProgress::new(Some(DEFAULT_LOG_INTERVAL));
        p.begin("backup media", None, &["a".into()]);
        assert!(p.ticker.lock().unwrap().is_some());
        p.provider("a", 1 << 20);
        assert!(
            p.line().starts_with("backup media: 0 B; a 1.0 MiB"),
            "{}",
            p.line()
        );
        p.finish();
        assert!(p.ticker.lock().unwrap().is_none());
    }
}
