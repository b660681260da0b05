//! Progress reporting behind a small interface (STYLE.md §8).
//!
//! The engine reports bytes; how they are shown is the caller's choice: [`NoProgress`] for
//! `-q` and tests, [`LogProgress`] for a log line every few seconds when stderr is not a
//! terminal, and the indicatif bars of `ui` on a terminal.

use crate::config::units::{human_bytes, human_rate};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub trait Progress: Send + Sync {
    /// Starts a phase: `what` for people, `total` bytes if known, one lane per provider.
    fn begin(&self, what: &str, total: Option<u64>, providers: &[String]);
    /// Bytes of the stream done (read from the source, or written to the receiver).
    fn advance(&self, bytes: u64);
    /// Bytes moved to or from one provider.
    fn provider(&self, provider: &str, bytes: u64);
    /// Ends the phase.
    fn finish(&self);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: Option<u64>, _: &[String]) {}
    fn advance(&self, _: u64) {}
    fn provider(&self, _: &str, _: u64) {}
    fn finish(&self) {}
}

/// Logs a progress line every `every` while a phase runs.
pub struct LogProgress {
    every: Duration,
    state: Arc<LogState>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct LogState {
    what: Mutex<String>,
    total: Mutex<Option<u64>>,
    done: AtomicU64,
    providers: Mutex<BTreeMap<String, u64>>,
    start: Mutex<Option<Instant>>,
}

impl LogProgress {
    pub fn new(every: Duration) -> Self {
        LogProgress {
            every,
            state: Arc::default(),
            ticker: Mutex::new(None),
        }
    }
}

impl LogState {
    fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self
            .start
            .lock()
            .unwrap()
            .map(|s| s.elapsed())
            .unwrap_or_default();
        let mut line = format!(
            "{}: {} at {}",
            self.what.lock().unwrap(),
            human_bytes(done),
            human_rate(done, elapsed)
        );
        if let Some(total) = *self.total.lock().unwrap() {
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            line.push_str(&format!(" of ~{} ({pct:.0}%)", human_bytes(total)));
        }
        for (name, bytes) in self.providers.lock().unwrap().iter() {
            line.push_str(&format!("; {name} {}", human_bytes(*bytes)));
        }
        line
    }
}

impl Progress for LogProgress {
    fn begin(&self, what: &str, total: Option<u64>, providers: &[String]) {
        *self.state.what.lock().unwrap() = what.to_string();
        *self.state.total.lock().unwrap() = total;
        self.state.done.store(0, Ordering::Relaxed);
        *self.state.providers.lock().unwrap() = providers.iter().map(|p| (p.clone(), 0)).collect();
        *self.state.start.lock().unwrap() = Some(Instant::now());
        let state = self.state.clone();
        let every = self.every;
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!("{}", state.line());
            }
        });
        if let Some(old) = self.ticker.lock().unwrap().replace(handle) {
            old.abort();
        }
    }

    fn advance(&self, bytes: u64) {
        self.state.done.fetch_add(bytes, Ordering::Relaxed);
    }

    fn provider(&self, provider: &str, bytes: u64) {
        if let Some(v) = self.state.providers.lock().unwrap().get_mut(provider) {
            *v += bytes;
        }
    }

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

    #[tokio::test]
    async fn log_line_sums_what_was_reported() {
        let p = LogProgress::new(Duration::from_secs(3600));
        p.begin("backup media", Some(4 << 20), &["a".into(), "b".into()]);
        p.advance(1 << 20);
        p.advance(1 << 20);
        p.provider("a", 1 << 20);
        let line = p.state.line();
        assert!(line.starts_with("backup media: 2.0 MiB at"), "{line}");
        assert!(
            line.contains("(50%)") && line.contains("; a 1.0 MiB; b 0 B"),
            "{line}"
        );
        p.finish();
    }
}
