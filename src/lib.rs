//! offsite: offsite copies of ZFS and btrfs datasets, and of any command's output, on several
//! rclone remotes at once.
//!
//! The binary (`main.rs`) only parses arguments and maps errors to exit codes; everything else
//! lives here. Layers, top down: `cmd` (one file per command), `engine` (the pipelines),
//! `catalog` (what the providers hold), `provider` (storage behind one small trait), and the
//! leaves `config`, `layout`, `manifest`, `source`, `process`, `lock`, `progress`.

pub mod buffers;
pub mod catalog;
pub mod cli;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod engine;
pub mod erasure;
pub mod error;
pub mod gaps;
pub mod hashing;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod notify;
pub mod output;
pub mod process;
pub mod progress;
pub mod provider;
pub mod receiver;
pub mod redact;
pub mod schedule;
pub mod snapshots;
pub mod source;
pub mod spool;
pub mod state;
pub mod ui;

#[cfg(test)]
mod mutate;

use error::code;
use tokio_util::sync::CancellationToken;

/// Runs the command line and returns the process exit code.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> i32 {
    // Shard buffers (1 MiB and up) must go back to the system when freed, or peak memory
    // exceeds shards_in_flight x shard_size: glibc raises its mmap threshold after each freed
    // mapping (up to 32 MiB) and then keeps such buffers in the heap.
    // SAFETY: mallopt only tunes the allocator; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = match <cli::Cli as clap::Parser>::try_parse_from(cli::rewrite_aliases(args)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            };
        }
    };
    ui::init_logging(cli.verbose, cli.quiet);
    let progress = ui::progress(
        cli.quiet,
        cli.no_progress || cli.json,
        cli.progress_interval,
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("offsite: cannot start the async runtime: {e}");
            return code::FAILED;
        }
    };
    let cancel = process::shutdown_token().clone();
    let result = runtime.block_on(async {
        // Installed before the command starts, so a signal at any point is caught.
        tokio::spawn(stop_on_signals(Signals::install(), cancel.clone()));
        cmd::run(cli, progress, cancel.clone()).await
    });
    // Waits for blocking tasks; every child was already reaped by its owner.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    exit_code_of(result, cancel.is_cancelled())
}

/// The exit code for a command's result, logging what went wrong. A run that was asked to
/// stop and did not finish its work is interrupted (130), whatever error the stop caused; a
/// closed stdout (`offsite list | head -1`) is no error at all.
fn exit_code_of(result: anyhow::Result<cmd::Outcome>, cancelled: bool) -> i32 {
    let result = match result {
        Err(e) if error::is_broken_pipe(&e) => return code::OK,
        Ok(cmd::Outcome::Done) => return code::OK,
        Err(e) if cancelled && error::exit_code(&e) != code::INTERRUPTED => {
            tracing::debug!("after the stop signal: {e:#}");
            Err(error::Interrupted.into())
        }
        Ok(cmd::Outcome::Gaps(_)) if cancelled => Err(error::Interrupted.into()),
        other => other,
    };
    match result {
        Ok(cmd::Outcome::Gaps(msg)) => {
            tracing::warn!("{msg}");
            code::GAPS
        }
        Err(e) => {
            ui::final_error(&format!("{e:#}"));
            error::exit_code(&e)
        }
        Ok(cmd::Outcome::Done) => code::OK,
    }
}

/// The signals that stop a run, installed by [`Signals::install`].
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; `None` if the system refuses one. Needs the runtime's context.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Signals {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
        })
    }
}

/// Cancels `token` on the first SIGINT, SIGTERM or SIGHUP (a closed terminal): the work then
/// stops cleanly. A second one ends the process at once with exit 130; the kernel releases the
/// locks, and children die with it (`process` gives each a death signal or a guard).
async fn stop_on_signals(signals: Option<Signals>, token: CancellationToken) {
    let Some(Signals {
        mut int,
        mut term,
        mut hup,
    }) = signals
    else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not stop cleanly");
        return;
    };
    for n in 0.. {
        let sig = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        };
        if n > 0 {
            tracing::error!(
                "{sig} again: stopping at once; a re-run resumes from the last progress kept"
            );
            break;
        }
        tracing::warn!(
            "{sig}: stopping, ending uploads and child processes, keeping progress \
             (signal again to stop at once)"
        );
        token.cancel();
    }
    std::process::exit(code::INTERRUPTED);
}
