//! The terminal side: logging setup and indicatif progress bars. Only the CLI layer uses this
//! module; the engine reports through `progress::Progress`.
//!
//! Log lines go through [`BarsWriter`], which suspends the bars while a line is printed so that
//! logs never tear them. The bars themselves (`bars.rs`) draw lines that fit 80 columns.

mod bars;

pub use bars::Bars;

use crate::config::units::human_bytes;
use crate::progress::{LogProgress, NoProgress, Progress};
use indicatif::{MultiProgress, ProgressDrawTarget};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static BARS: OnceLock<MultiProgress> = OnceLock::new();

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Sets up tracing: `-q` shows errors only, `-v` debug, `-vv` trace; `RUST_LOG` overrides.
/// Under systemd (stderr is the journal stream `$JOURNAL_STREAM` names) each line starts with
/// its syslog priority (`<3>` error .. `<7>` debug, as sd-daemon(3) describes) and no time
/// stamp, so that `journalctl -p err` finds the errors.
pub fn init_logging(verbose: u8, quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "offsite={level},{}",
            if quiet { "error" } else { "warn" }
        ))
    });
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(tty)
        .with_writer(|| BarsWriter);
    if journal() {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_target(false)
            .with_ansi(false);
        builder.event_format(Journal(format)).init();
    } else if tty {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: commands print no tables or summaries (a `--json` document still goes out).
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// stderr is the journal: `$JOURNAL_STREAM` (`DEVICE:INODE`) names the file stderr is.
fn journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stderr = std::fs::metadata("/proc/self/fd/2").or_else(|_| std::fs::metadata("/dev/stderr"));
    match (stream.to_str().and_then(|s| s.split_once(':')), stderr) {
        (Some((dev, ino)), Ok(m)) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        _ => false,
    }
}

/// A log line's syslog priority: err, warning, info, debug.
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// Formats each event as the wrapped format does, behind its `<N>` priority prefix.
struct Journal<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Journal<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Prints how the run failed: through the log when it shows errors, else straight to stderr
/// (`RUST_LOG=off`, a filter for another crate): the final error is never lost.
pub fn final_error(message: &str) {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{message}");
    } else {
        let prefix = if journal() { "<3>" } else { "" };
        let line = crate::redact::text(&format!("{prefix}offsite: error: {message}\n"));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Writes to stderr with the progress bars suspended. Every log line passes through
/// `redact::text` on its way: no secret reaches the log, whoever wrote the line.
pub struct BarsWriter;

impl Write for BarsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = crate::redact::text(&String::from_utf8_lossy(buf));
        let out = line.as_bytes();
        match BARS.get() {
            Some(mp) => mp.suspend(|| std::io::stderr().write_all(out))?,
            None => std::io::stderr().write_all(out)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The progress reporter for this run: bars on a terminal, a log line every `log_every`
/// elsewhere (see [`LogProgress`]), nothing under `-q`, `--no-progress` or `--json`.
pub fn progress(quiet: bool, no_progress: bool, log_every: Duration) -> Arc<dyn Progress> {
    if quiet || no_progress {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars::new(bars()))
    } else {
        Arc::new(LogProgress::new(Some(log_every)))
    }
}

/// Prints a JSON document on stdout; an error (a closed pipe, say) is returned, not a panic.
pub fn print_json<T: serde::Serialize>(v: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON output always serializes");
    out(format_args!("{text}"))
}

/// Writes one line to stdout: every command's output goes through here (see [`outln!`]), so
/// that a closed stdout (`offsite list | head -1`) is an error that ends the run quietly
/// (`error::is_broken_pipe`), never the panic `println!` makes of it.
pub fn out(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut text = crate::redact::text(&line.to_string());
    text.push('\n');
    out_bytes(text.as_bytes())
}

/// Writes `bytes` to stdout as they are (generated files: completions, the man page; they
/// hold no configuration, so nothing to redact), with [`out`]'s handling of a closed pipe.
pub fn out_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(bytes).and_then(|()| stdout.flush());
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
        }
        _ => e,
    })
}

/// The reader of offsite's report output went away. Only this ends a run quietly: a restore
/// whose `--stdout` stream is cut short has not restored every byte, and fails.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// `println!` that returns `std::io::Result<()>` instead of panicking (see [`out`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ui::out(format_args!($($arg)*))
    };
}

/// `12.3 GiB` or `-` for unknown.
pub fn opt_bytes(v: Option<u64>) -> String {
    v.map(human_bytes).unwrap_or_else(|| "-".into())
}
