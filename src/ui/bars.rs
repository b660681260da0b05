//! The progress bars on a terminal: one line for the phase, one per provider, each drawn by
//! indicatif from a [`Tally`] snapshot at every tick. The lines are built here, not by
//! indicatif templates, so that each fits the terminal (at most 80 columns) whatever the
//! names and numbers: the bar shrinks first, then the line is cut.
//!
//! ```text
//! backup media [=========>               ] 1.2 GiB/~4.0 GiB 5.0 MiB/s ETA 9m12s
//!   b2       1.2 GiB   5.0 MiB/s  sending 16.0 MiB
//!   usb      0 B                  retrying 3/5 in 4s
//! ```

use crate::config::units::human_bytes;
use crate::progress::{per_second, short_duration, LaneView, Progress, Snapshot, Tally};
use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The widest line drawn, whatever the terminal.
pub const MAX_WIDTH: usize = 80;
/// Provider names longer than this are cut on their line.
const NAME_WIDTH: usize = 14;

/// indicatif bars over a [`Tally`].
pub struct Bars {
    multi: &'static MultiProgress,
    tally: Arc<Tally>,
    bars: Mutex<Vec<ProgressBar>>,
}

impl Bars {
    pub fn new(multi: &'static MultiProgress) -> Bars {
        Bars {
            multi,
            tally: Arc::default(),
            bars: Mutex::default(),
        }
    }

    /// A bar whose one line is `render` of the tally's snapshot, redrawn every tick.
    fn bar(
        &self,
        render: impl Fn(&Snapshot, usize) -> String + Send + Sync + 'static,
    ) -> ProgressBar {
        let (tally, render) = (self.tally.clone(), Arc::new(render));
        let line = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&render(&tally.snapshot(Instant::now()), width()));
        };
        let style = ProgressStyle::with_template("{line}")
            .expect("valid template")
            .with_key("line", line);
        let bar = self.multi.add(ProgressBar::no_length().with_style(style));
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }
}

impl Progress for Bars {
    fn begin(&self, what: &str, total: Option<u64>, providers: &[String]) {
        self.finish();
        self.tally.begin(what, total, providers);
        let names = providers
            .iter()
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(0);
        let names = names.min(NAME_WIDTH);
        let mut bars = vec![self.bar(main_line)];
        for i in 0..providers.len() {
            bars.push(self.bar(move |s, width| match s.lanes.get(i) {
                Some(l) => lane_line(l, names, s.now, width),
                None => String::new(),
            }));
        }
        *self.bars.lock().unwrap() = bars;
    }

    crate::figures_go_to_the_tally!();

    fn finish(&self) {
        for b in self.bars.lock().unwrap().drain(..) {
            b.finish_and_clear();
        }
    }
}

/// The terminal's width, at most [`MAX_WIDTH`] (80 when it cannot be told).
fn width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize; stderr is only read.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    match ws.ws_col as usize {
        cols if ok && cols > 0 => cols.min(MAX_WIDTH),
        _ => MAX_WIDTH,
    }
}

/// The phase's line: what, a bar when the total is known (a spinner else), bytes, rate, ETA.
pub fn main_line(s: &Snapshot, width: usize) -> String {
    let mut right = match s.total {
        Some(total) => format!("{}/~{}", human_bytes(s.done), human_bytes(total)),
        None => human_bytes(s.done),
    };
    if let Some(r) = s.rate {
        right.push_str(&format!(" {}", per_second(r)));
    }
    match s.eta {
        Some(eta) => right.push_str(&format!(" ETA {}", short_duration(eta))),
        None => right.push_str(&format!(" {}", short_duration(s.elapsed))),
    }
    let what = s.what.as_str();
    let line = match s.total {
        Some(total) => {
            let room = width.saturating_sub(what.chars().count() + right.len() + 4);
            match room.min(40) {
                w if w >= 10 => format!("{what} [{}] {right}", bar(s.done, total, w)),
                _ => format!("{what} {right}"),
            }
        }
        None => {
            const SPIN: [char; 4] = ['|', '/', '-', '\\'];
            let spin = SPIN[(s.elapsed.as_millis() / 250 % 4) as usize];
            format!("{spin} {what} {right}")
        }
    };
    cut(line, width)
}

/// `=====>    `, `w` wide.
fn bar(done: u64, total: u64, w: usize) -> String {
    let frac = match total {
        0 => 1.0,
        t => (done as f64 / t as f64).min(1.0),
    };
    let full = (frac * w as f64) as usize;
    let mut s = "=".repeat(full);
    if full < w {
        s.push('>');
        s.push_str(&" ".repeat(w - full - 1));
    }
    s
}

/// A provider's line: name, bytes stored (or received), rate, then its state or what is
/// being sent to it.
pub fn lane_line(l: &LaneView, names: usize, now: Instant, width: usize) -> String {
    let name: String = l.name.chars().take(names).collect();
    let rate = l.rate.map(per_second).unwrap_or_default();
    let extra = match l.state.label(now) {
        Some(state) => state,
        None if l.sending > 0 => format!("sending {}", human_bytes(l.sending)),
        None => String::new(),
    };
    let line = format!(
        "  {name:<names$} {:>10} {rate:>12}  {extra}",
        human_bytes(l.bytes)
    );
    cut(line.trim_end().to_string(), width)
}

/// `line` cut to `width` characters.
fn cut(line: String, width: usize) -> String {
    match line.char_indices().nth(width) {
        Some((at, _)) => line[..at].to_string(),
        None => line,
    }
}

#[cfg(test)]
mod tests;
