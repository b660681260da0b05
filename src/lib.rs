//! offsite: offsite copies of ZFS and btrfs datasets, and of any command's output, on several
//! rclone remotes at once.
//!
//! The binary (`main.rs`) only parses arguments and maps errors to exit codes; everything else
//! lives here. Layers, top down: `cmd` (one file per command), `engine` (the pipelines),
//! `catalog` (what the providers hold), `provider` (storage behind one small trait), and the
//! leaves `config`, `layout`, `manifest`, `source`, `process`, `lock`, `progress`.

pub mod catalog;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod error;
pub mod gaps;
pub mod hashing;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod process;
pub mod progress;
pub mod provider;
pub mod receiver;
pub mod redact;
pub mod schedule;
pub mod snapshots;
pub mod source;
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
    let progress = ui::progress(cli.quiet, cli.no_progress || cli.json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("offsite: cannot start the async runtime: {e}");
            return code::FAILED;
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signals(cancel.clone()));
        cmd::run(cli, progress, cancel).await
    });
    // Waits for blocking tasks; every child was already reaped by its owner.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(cmd::Outcome::Done) => code::OK,
        Ok(cmd::Outcome::Gaps(msg)) => {
            tracing::warn!("{msg}");
            code::GAPS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            error::exit_code(&e)
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM; the work then stops cleanly.
async fn stop_on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not stop cleanly");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::warn!("stopping: ending uploads and child processes, keeping progress");
    token.cancel();
}
