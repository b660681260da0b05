//! `offsite restore DATASET (--target T [--force] | --output FILE | --stdout)
//! [--backup ID | --snapshot NAME] [--from PROVIDER] [--piece-size SIZE]`.
//!
//! Needs nothing but the config's providers: no state dir (none is created), no source
//! snapshot, and DATASET need not be configured here. Every enabled provider is used, plus
//! `--from` (any configured provider, enabled or not), which is preferred: its manifest is
//! trusted first and it is tried first when a shard must be fetched again.

mod output;

use super::{Ctx, Outcome};
use crate::cli::RestoreArgs;
use crate::config::units::human_bytes;
use crate::engine::chain::Selector;
use crate::engine::restore::{self, Destination, FetchSettings, RestoreReport, RestoreRequest};
use crate::error::ConfigError;
use crate::provider::{self, DynProvider};
use crate::receiver::ReceiverSpec;
use anyhow::Result;

/// The smallest `--piece-size`: below it one rclone call per piece costs more than the bytes.
pub const MIN_PIECE_SIZE: u64 = 256 << 10;

pub async fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<Outcome> {
    check_piece_size(args.piece_size)?;
    // Checked before anything is listed or downloaded: a refused FILE costs nothing.
    let destination = destination(ctx, args)?;
    let to_stdout = destination == Destination::Raw(ReceiverSpec::Stdout);
    let providers = providers(ctx, args.from.as_deref())?;
    // A provider that cannot be listed is warned about and not used (see `restore::chain_links`).
    let catalog = ctx
        .scan(&providers, std::slice::from_ref(&args.dataset), false)
        .await?;
    let request = RestoreRequest {
        host: ctx.cfg.host.clone(),
        dataset: args.dataset.clone(),
        selector: selector(args),
        destination,
        keys: ctx.key_source(args.identity.as_deref()),
    };
    let settings = FetchSettings {
        shards_in_flight: ctx.cfg.shards_in_flight,
        concurrency: ctx.cfg.concurrency,
        piece_size: args.piece_size,
    };
    let report = restore::restore(
        &request,
        providers,
        &catalog,
        settings,
        &ctx.progress,
        &ctx.cancel,
    )
    .await?;
    // The `--json` document; never with `--stdout`, whose stdout is the stream.
    if ctx.json && to_stdout {
        tracing::warn!("--json is ignored with --stdout: stdout carries the stream");
    }
    crate::output::conclude(ctx.json && !to_stdout, &report, Ok(()))
}

/// Restore prints nothing on stdout but its `--json` document: stdout may carry the stream,
/// and the log says what was done.
impl crate::output::Report for RestoreReport {
    fn render_text(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `--target`, `--output FILE` or `--stdout`.
fn destination(ctx: &Ctx, args: &RestoreArgs) -> Result<Destination, ConfigError> {
    if let Some(target) = &args.target {
        // A dataset configured here may add flags (`receive_flags`); it need not be.
        let flags = ctx
            .cfg
            .dataset(&args.dataset)
            .map(|d| d.receive_flags.clone());
        return Ok(Destination::Target {
            target: target.clone(),
            force: args.force,
            flags: flags.unwrap_or_default(),
        });
    }
    Ok(Destination::Raw(match &args.output {
        Some(path) => output::destination(path, args.force)?,
        None if args.stdout => ReceiverSpec::Stdout,
        None => unreachable!("clap requires --target, --output or --stdout"),
    }))
}

fn selector(args: &RestoreArgs) -> Selector {
    match (&args.backup, &args.snapshot) {
        (Some(id), _) => Selector::Backup(id.clone()),
        (None, Some(name)) => Selector::Snapshot(name.clone()),
        (None, None) => Selector::Newest,
    }
}

/// Restore's providers: the planner may start one download beyond `concurrency` as the
/// others end (see [`provider::Stack::overlap`]).
const RESTORE_STACK: provider::Stack = provider::Stack {
    dry_run: false,
    overlap: true,
};

/// `--from` first (any configured provider), then every enabled provider by priority.
fn providers(ctx: &Ctx, from: Option<&str>) -> Result<Vec<DynProvider>, ConfigError> {
    let cfg = &ctx.cfg;
    let mut chosen = Vec::new();
    if let Some(name) = from {
        let Some(p) = cfg.provider(name) else {
            return Err(ConfigError(format!(
                "--from {name:?}: no such provider; the providers are the files in the providers directory: {}",
                cfg.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        };
        chosen.push(p);
    }
    chosen.extend(
        cfg.providers
            .iter()
            .filter(|p| p.enabled && Some(p.name.as_str()) != from),
    );
    if chosen.is_empty() {
        return Err(ConfigError(format!(
            "{}: no enabled provider to restore from; enable one or pass --from NAME",
            cfg.path.display()
        )));
    }
    Ok(chosen
        .into_iter()
        .map(|p| provider::from_config_with(cfg, p, &ctx.cancel, RESTORE_STACK, &ctx.progress))
        .collect())
}

fn check_piece_size(piece_size: Option<u64>) -> Result<(), ConfigError> {
    match piece_size {
        Some(n) if n < MIN_PIECE_SIZE => Err(ConfigError(format!(
            "--piece-size {n}: too small; each piece is one rclone call, so pieces must be at \
             least {} (e.g. --piece-size 8MiB), or leave it out to size them by the providers' rates",
            human_bytes(MIN_PIECE_SIZE)
        ))),
        _ => Ok(()),
    }
}
