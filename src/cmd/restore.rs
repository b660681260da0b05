//! `offsite restore DATASET (--target T [--force] | --output FILE | --stdout)
//! [--backup ID | --snapshot NAME] [--from PROVIDER] [--piece-size SIZE]`.
//!
//! Needs nothing but the config's providers: no state dir (none is created), no source
//! snapshot, and DATASET need not be configured here. Every enabled provider is used, plus
//! `--from` (any configured provider, enabled or not), which is preferred: its manifest is
//! trusted first and it is tried first when a shard must be fetched again.

mod output;

use super::{Ctx, Outcome};
use crate::catalog::Catalog;
use crate::cli::RestoreArgs;
use crate::config::units::{human_bytes, human_rate};
use crate::engine::chain::{self, Selector, TargetKind};
use crate::engine::restore::{self, Fetcher, Link, Report};
use crate::error::{ConfigError, Interrupted};
use crate::provider::{self, DynProvider};
use crate::receiver::{self, ReceiverSpec};
use crate::ui;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The smallest `--piece-size`: below it one rclone call per piece costs more than the bytes.
pub const MIN_PIECE_SIZE: u64 = 256 << 10;

pub async fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<Outcome> {
    check_piece_size(args.piece_size)?;
    // Checked before anything is listed or downloaded: a refused FILE costs nothing.
    let raw_dest = match &args.output {
        Some(path) => Some(output::destination(path, args.force)?),
        None if args.stdout => Some(ReceiverSpec::Stdout),
        None => None,
    };
    let providers = providers(ctx, args.from.as_deref())?;
    let (host, dataset) = (ctx.cfg.host.as_str(), args.dataset.as_str());
    let catalog = tokio::select! {
        c = Catalog::scan(&providers, host, Some(dataset)) => c,
        _ = ctx.cancel.cancelled() => return Err(Interrupted.into()),
    };
    for (p, e) in &catalog.unreachable {
        tracing::warn!("provider {p} could not be listed and is not used: {e}");
    }
    if catalog.unreachable.len() == providers.len() {
        bail!("no provider could be listed; check the network and `offsite providers`");
    }
    let sel = match (&args.backup, &args.snapshot) {
        (Some(id), _) => Selector::Backup(id.clone()),
        (None, Some(name)) => Selector::Snapshot(name.clone()),
        (None, None) => Selector::Newest,
    };
    let whole_chain = args.target.is_some();
    let mut links = restore::plan(&catalog, dataset, &sel, whole_chain)
        .with_context(|| format!("cannot restore dataset {dataset:?} of host {host:?}"))?;
    let chosen = links
        .last()
        .expect("a plan has a link")
        .manifest
        .backup_id
        .clone();
    let (dest, skipped) = match &args.target {
        Some(t) => {
            // A dataset configured here may add flags (`receive_flags`); it need not be.
            let flags = ctx.cfg.dataset(dataset).map(|d| d.receive_flags.clone());
            target(t, args.force, flags.unwrap_or_default(), &mut links).await?
        }
        None => (raw_dest.expect("--output or --stdout"), Vec::new()),
    };
    if links.is_empty() {
        tracing::info!(
            "{} already holds every snapshot up to backup {chosen}; nothing to restore",
            dest.describe()
        );
        summary(ctx, dataset, &chosen, &dest, &skipped, None)?;
        return Ok(Outcome::Done);
    }
    let mut fetcher = Fetcher::new(
        host,
        dataset,
        providers,
        ctx.cfg.shards_in_flight,
        ctx.cfg.concurrency,
        ctx.progress.clone(),
    );
    if let Some(bytes) = args.piece_size {
        fetcher = fetcher.with_piece_size(bytes);
    }
    let what = format!("restore {dataset}");
    let report = restore::run(&fetcher, &links, &dest, &what, &ctx.progress, &ctx.cancel)
        .await
        .with_context(|| {
            format!(
                "restore of dataset {dataset:?} (backup {chosen}) into {} failed",
                dest.describe()
            )
        })?;
    log_metrics(dataset, &chosen, &report);
    summary(ctx, dataset, &chosen, &dest, &skipped, Some(&report))?;
    Ok(Outcome::Done)
}

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
        .map(|p| provider::from_config(cfg, p, &ctx.cancel))
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

/// The receiver for `--target`, chosen by the backups' source kind, and the links the target
/// already holds (removed from `links`).
async fn target(
    t: &str,
    force: bool,
    flags: Vec<String>,
    links: &mut Vec<Link>,
) -> Result<(ReceiverSpec, Vec<String>)> {
    let last = &links.last().expect("a plan has a link").manifest;
    let (spec, present, kind) = match last.source_kind.as_str() {
        "zfs" => {
            let present = receiver::zfs_snapshots(t).await?;
            (ReceiverSpec::Zfs { target: t.to_string(), force, flags }, present, TargetKind::Zfs)
        }
        "btrfs" => {
            let dir = PathBuf::from(t);
            if !dir.is_dir() {
                return Err(ConfigError(format!(
                    "--target {t}: not a directory; btrfs receive needs an existing directory on a btrfs filesystem"
                ))
                .into());
            }
            if force {
                tracing::warn!("--force has no effect on btrfs receive");
            }
            let names: Vec<&str> = links
                .iter()
                .filter_map(|l| chain::snapshot_name(&l.manifest, TargetKind::Btrfs))
                .collect();
            let present = receiver::btrfs_received(&dir, &names).await?;
            (ReceiverSpec::Btrfs { dir, flags }, present, TargetKind::Btrfs)
        }
        other => {
            return Err(ConfigError(format!(
                "backup {} is the output of a {other} source, not a zfs or btrfs stream; restore it with --output FILE or --stdout",
                last.backup_id
            ))
            .into())
        }
    };
    let manifests: Vec<&crate::manifest::Manifest> = links.iter().map(|l| &l.manifest).collect();
    let held = chain::applied_links(&manifests, &present, kind);
    let skipped: Vec<String> = links.drain(..held).map(|l| l.manifest.backup_id).collect();
    if !skipped.is_empty() {
        tracing::info!(
            "{t} already holds the snapshots of {}; applying only the later backups",
            skipped.join(", ")
        );
    }
    Ok((spec, skipped))
}

fn log_metrics(dataset: &str, chosen: &str, r: &Report) {
    let per_provider: Vec<String> = r
        .providers
        .iter()
        .map(|p| format!("{}={}", p.provider, human_bytes(p.bytes)))
        .collect();
    tracing::info!(
        event = %"restore_metrics",
        dataset = %dataset,
        backup_id = %chosen,
        links = r.applied.len(),
        total_bytes = r.total_bytes,
        total = %human_bytes(r.total_bytes),
        elapsed_secs = %format!("{:.2}", r.elapsed.as_secs_f64()),
        throughput = %human_rate(r.total_bytes, r.elapsed),
        providers = %per_provider.join(","),
        "restore finished"
    );
}

/// The `--json` document; never with `--stdout`, whose stdout is the stream.
fn summary(
    ctx: &Ctx,
    dataset: &str,
    chosen: &str,
    dest: &ReceiverSpec,
    skipped: &[String],
    report: Option<&Report>,
) -> std::io::Result<()> {
    if !ctx.json {
        return Ok(());
    }
    if *dest == ReceiverSpec::Stdout {
        tracing::warn!("--json is ignored with --stdout: stdout carries the stream");
        return Ok(());
    }
    let secs = report.map_or(0.0, |r| r.elapsed.as_secs_f64());
    let bytes = report.map_or(0, |r| r.total_bytes);
    ui::print_json(&serde_json::json!({
        "host": ctx.cfg.host,
        "dataset": dataset,
        "backup_id": chosen,
        "destination": dest.describe(),
        "applied": report.map(|r| r.applied.clone()).unwrap_or_default(),
        "skipped": skipped,
        "total_bytes": bytes,
        "elapsed_secs": secs,
        "throughput_bytes_per_sec": if secs > 0.0 { (bytes as f64 / secs) as u64 } else { 0 },
        "providers": report.map(|r| r.providers.clone()).unwrap_or_default(),
    }))?;
    Ok(())
}
