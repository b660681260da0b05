//! [`Tally`]: what a phase has done so far, per provider too, and what it reads as at a given
//! moment ([`Snapshot`]: rates, ETA, states). The log lines and the bars both render a
//! snapshot, so they never disagree.

use super::ProviderState;
use crate::config::units::human_bytes;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The counts of the current phase; [`Tally::begin`] starts a new one.
#[derive(Default)]
pub struct Tally(Mutex<Phase>);

#[derive(Default)]
struct Phase {
    what: String,
    total: Option<u64>,
    start: Option<Instant>,
    done: u64,
    /// Of `done`, what was found done rather than moved.
    found: u64,
    lanes: Vec<Lane>,
}

#[derive(Default)]
struct Lane {
    name: String,
    bytes: u64,
    found: u64,
    sending: i64,
    state: ProviderState,
}

/// A phase as of one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub what: String,
    /// Expected bytes, if known.
    pub total: Option<u64>,
    pub done: u64,
    pub elapsed: Duration,
    /// Bytes per second moved by this run; `None` until something moved.
    pub rate: Option<f64>,
    /// Time left at `rate`; `None` without a rate or a total, or once past the total.
    pub eta: Option<Duration>,
    pub lanes: Vec<LaneView>,
    pub now: Instant,
}

/// One provider in a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct LaneView {
    pub name: String,
    /// Stored on (or received from) the provider.
    pub bytes: u64,
    /// Handed to uploads still running, not stored yet.
    pub sending: u64,
    pub rate: Option<f64>,
    pub state: ProviderState,
}

impl Tally {
    pub fn begin(&self, what: &str, total: Option<u64>, providers: &[String]) {
        let lanes = providers
            .iter()
            .map(|p| Lane {
                name: p.clone(),
                ..Lane::default()
            })
            .collect();
        *self.0.lock().unwrap() = Phase {
            what: what.to_string(),
            total,
            start: Some(Instant::now()),
            lanes,
            ..Phase::default()
        };
    }

    pub fn advance(&self, bytes: u64) {
        self.0.lock().unwrap().done += bytes;
    }

    pub fn already_done(&self, provider: Option<&str>, bytes: u64) {
        let mut p = self.0.lock().unwrap();
        match provider {
            None => {
                p.done += bytes;
                p.found += bytes;
            }
            Some(name) => {
                if let Some(l) = p.lane(name) {
                    l.bytes += bytes;
                    l.found += bytes;
                }
            }
        }
    }

    pub fn provider(&self, name: &str, bytes: u64) {
        if let Some(l) = self.0.lock().unwrap().lane(name) {
            l.bytes += bytes;
        }
    }

    pub fn sending(&self, name: &str, delta: i64) {
        if let Some(l) = self.0.lock().unwrap().lane(name) {
            l.sending += delta;
        }
    }

    /// A provider's state; `Down` stays for the rest of the phase.
    pub fn state(&self, name: &str, state: ProviderState) {
        if let Some(l) = self.0.lock().unwrap().lane(name) {
            if l.state != ProviderState::Down {
                l.state = state;
            }
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let p = self.0.lock().unwrap();
        let elapsed = p
            .start
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let phase_rate = rate(p.done - p.found, elapsed);
        let eta = match (p.total, phase_rate) {
            (Some(total), Some(r)) if total > p.done => {
                Some(Duration::from_secs_f64((total - p.done) as f64 / r))
            }
            _ => None,
        };
        Snapshot {
            what: p.what.clone(),
            total: p.total,
            done: p.done,
            elapsed,
            rate: phase_rate,
            eta,
            lanes: p
                .lanes
                .iter()
                .map(|l| LaneView {
                    name: l.name.clone(),
                    bytes: l.bytes,
                    sending: l.sending.max(0) as u64,
                    rate: rate(l.bytes - l.found, elapsed),
                    state: l.state,
                })
                .collect(),
            now,
        }
    }
}

impl Phase {
    fn lane(&mut self, name: &str) -> Option<&mut Lane> {
        self.lanes.iter_mut().find(|l| l.name == name)
    }
}

/// Bytes per second, once something moved.
fn rate(moved: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (moved > 0 && secs > 0.0).then(|| moved as f64 / secs)
}

/// `87.3 MiB/s`.
pub fn per_second(bytes_per_sec: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_sec as u64))
}

/// A duration for a progress line, rounded up: `4s`, `12m05s`, `3h07m`, `2d04h`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl Snapshot {
    /// `8.0 MiB of ~40.0 MiB (20%)`, or `8.0 MiB` without a total.
    pub fn amount(&self) -> String {
        match self.total {
            Some(total) => {
                let pct = match total {
                    0 => 100.0,
                    t => (self.done as f64 * 100.0 / t as f64).min(100.0),
                };
                format!(
                    "{} of ~{} ({pct:.0}%)",
                    human_bytes(self.done),
                    human_bytes(total)
                )
            }
            None => human_bytes(self.done),
        }
    }

    /// The log line: `backup d: 8.0 MiB of ~40.0 MiB (20%) at 4.0 MiB/s, ETA 8s; dav 6.0 MiB
    /// at 3.0 MiB/s, sending 2.0 MiB; usb DOWN`.
    pub fn log_line(&self) -> String {
        let mut line = format!("{}: {}", self.what, self.amount());
        if let Some(r) = self.rate {
            line.push_str(&format!(" at {}", per_second(r)));
        }
        if let Some(eta) = self.eta {
            line.push_str(&format!(", ETA {}", short_duration(eta)));
        }
        for l in &self.lanes {
            line.push_str(&format!("; {} {}", l.name, human_bytes(l.bytes)));
            if let Some(r) = l.rate {
                line.push_str(&format!(" at {}", per_second(r)));
            }
            match l.state.label(self.now) {
                Some(state) => line.push_str(&format!(", {state}")),
                None if l.sending > 0 => {
                    line.push_str(&format!(", sending {}", human_bytes(l.sending)))
                }
                None => {}
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rates_count_moved_bytes_only_and_eta_needs_a_rate() {
        let t = Tally::default();
        t.begin("backup media", Some(40 * MIB), &["a".into(), "b".into()]);
        let start = Instant::now();
        let s = t.snapshot(start + Duration::from_secs(10));
        assert_eq!(
            (s.rate, s.eta),
            (None, None),
            "nothing moved: no rate, no ETA"
        );
        assert!(s.lanes.iter().all(|l| l.rate.is_none()));
        t.already_done(None, 20 * MIB);
        t.already_done(Some("a"), 20 * MIB);
        let s = t.snapshot(start + Duration::from_secs(10));
        assert_eq!((s.done, s.rate, s.eta), (20 * MIB, None, None));
        assert_eq!((s.lanes[0].bytes, s.lanes[0].rate), (20 * MIB, None));
        t.advance(10 * MIB);
        t.provider("a", 10 * MIB);
        let start = t.0.lock().unwrap().start.unwrap();
        let s = t.snapshot(start + Duration::from_secs(10));
        assert_eq!(s.rate, Some(MIB as f64));
        assert_eq!(s.eta, Some(Duration::from_secs(10)));
        assert_eq!(s.lanes[0].rate, Some(MIB as f64));
        assert_eq!(s.lanes[1].rate, None);
    }

    #[test]
    fn down_stays_down_for_the_phase_and_unknown_providers_are_ignored() {
        let t = Tally::default();
        t.begin("backup", None, &["a".into()]);
        t.state("a", ProviderState::Down);
        t.state("a", ProviderState::Normal);
        t.state("zz", ProviderState::Down);
        t.provider("zz", 5);
        let s = t.snapshot(Instant::now());
        assert_eq!(s.lanes.len(), 1);
        assert_eq!(s.lanes[0].state, ProviderState::Down);
        t.begin("backup", None, &["a".into()]);
        assert_eq!(
            t.snapshot(Instant::now()).lanes[0].state,
            ProviderState::Normal
        );
    }

    #[test]
    fn log_line_says_amounts_rates_and_states() {
        let t = Tally::default();
        t.begin("backup media", Some(4 * MIB), &["a".into(), "b".into()]);
        t.advance(2 * MIB);
        t.provider("a", MIB);
        t.sending("a", MIB as i64);
        t.state("b", ProviderState::Down);
        let start = t.0.lock().unwrap().start.unwrap();
        let line = t.snapshot(start + Duration::from_secs(2)).log_line();
        assert_eq!(
            line,
            "backup media: 2.0 MiB of ~4.0 MiB (50%) at 1.0 MiB/s, ETA 2s; \
             a 1.0 MiB at 512.0 KiB/s, sending 1.0 MiB; b 0 B, DOWN"
        );
    }

    #[test]
    fn durations_round_up_and_stay_short() {
        assert_eq!(short_duration(Duration::from_millis(100)), "1s");
        assert_eq!(short_duration(Duration::from_secs(725)), "12m05s");
        assert_eq!(short_duration(Duration::from_secs(3 * 3600 + 420)), "3h07m");
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2d04h"
        );
    }
}
