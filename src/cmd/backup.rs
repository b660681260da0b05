//! `offsite backup [DATASET...] [--once] [--full] [--dry-run]`.

use super::{Ctx, Outcome};
use crate::cli::BackupArgs;
use crate::config::units::{human_bytes, human_rate};
use crate::config::Dataset;
use crate::engine::backup::{self, Job, Report};
use crate::error::{ConfigError, Interrupted};
use crate::layout::{BackupId, BackupKind};
use crate::lock::DatasetLock;
use crate::source;
use crate::ui;
use anyhow::Result;
use std::time::SystemTime;

pub async fn run(ctx: &Ctx, args: &BackupArgs) -> Result<Outcome> {
    let datasets = ctx.cfg.select_datasets(&args.datasets)?;
    if datasets.is_empty() {
        return Err(ConfigError(format!(
            "{}: no [[dataset]] is configured",
            ctx.cfg.path.display()
        ))
        .into());
    }
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for ds in datasets {
        if ctx.cancel.is_cancelled() {
            return Err(Interrupted.into());
        }
        match backup_one(ctx, ds, args).await {
            Ok(Some(r)) => reports.push((ds.name.clone(), r)),
            Ok(None) => {}
            Err(e) if e.is::<Interrupted>() || e.chain().any(|c| c.is::<Interrupted>()) => {
                return Err(e)
            }
            Err(e) => {
                let e = e.context(format!("backup of dataset {:?} failed", ds.name));
                if !errors.is_empty() {
                    tracing::error!("{e:#}");
                }
                errors.push(e);
            }
        }
    }
    if ctx.json {
        ui::print_json(&serde_json::json!({
            "backups": reports.iter().map(|(d, r)| summary_json(d, r)).collect::<Vec<_>>(),
            "failed": errors.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>(),
        }));
    }
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }
    let gaps: Vec<String> = reports
        .iter()
        .filter(|(_, r)| !r.complete())
        .map(|(d, r)| gap_text(d, r))
        .collect();
    if gaps.is_empty() {
        Ok(Outcome::Done)
    } else {
        Ok(Outcome::Gaps(format!(
            "{}; run `offsite sync` once the provider is back",
            gaps.join("; ")
        )))
    }
}

async fn backup_one(ctx: &Ctx, ds: &Dataset, args: &BackupArgs) -> Result<Option<Report>> {
    let cfg = &ctx.cfg;
    let providers = ctx.providers(&ds.providers)?;
    if args.dry_run {
        tracing::info!(
            "dry run: would make a full backup of {:?} ({}) to {}",
            ds.name,
            ds.source.kind(),
            ds.providers.join(", ")
        );
        return Ok(None);
    }
    let _lock = DatasetLock::acquire(&cfg.state_dir, &cfg.host, &ds.name)?;
    let id = BackupId::new(SystemTime::now(), BackupKind::Full);
    let snapshot = source::take_snapshot(&ds.name, &ds.source, id.stamp()).await?;
    let source_desc = source::describe(&ds.source, snapshot.as_deref());
    tracing::info!(
        "backing up {:?} as {id}: {source_desc} to {}",
        ds.name,
        ds.providers.join(", ")
    );
    let proc = source::start_send(&ds.source, snapshot.as_deref(), None)?;
    let job = Job {
        host: cfg.host.clone(),
        dataset: ds.name.clone(),
        id,
        source_kind: ds.source.kind().to_string(),
        source: source_text(ds),
        source_desc,
        snapshot,
        parent: None,
        shard_size: cfg.shard_size,
        min_providers: cfg.min_providers,
        shards_in_flight: cfg.shards_in_flight,
        concurrency: cfg.concurrency,
        providers,
    };
    let report = backup::run(job, proc, ctx.progress.clone(), ctx.cancel.clone()).await?;
    tracing::info!(
        event = %"backup_metrics",
        dataset = %ds.name,
        backup_id = %report.backup_id,
        total_bytes = report.total_bytes,
        total = %human_bytes(report.total_bytes),
        shards = report.shards,
        elapsed_secs = %format!("{:.2}", report.elapsed.as_secs_f64()),
        throughput = %human_rate(report.total_bytes, report.elapsed),
        "backup finished"
    );
    Ok(Some(report))
}

fn source_text(ds: &Dataset) -> String {
    match &ds.source {
        crate::config::SourceSpec::Zfs { dataset } => dataset.clone(),
        crate::config::SourceSpec::Btrfs { subvolume, .. } => subvolume.display().to_string(),
        crate::config::SourceSpec::Command { command } => command.clone(),
    }
}

fn gap_text(dataset: &str, r: &Report) -> String {
    let parts: Vec<String> = r
        .providers
        .iter()
        .filter(|p| !p.missing_shards.is_empty() || !p.manifest_written)
        .map(|p| {
            let mut s = format!(
                "provider {} misses {} of {} shards{}",
                p.provider,
                p.missing_shards.len(),
                r.shards,
                if p.manifest_written {
                    ""
                } else {
                    " and the manifest"
                }
            );
            if let Some(e) = &p.error {
                s.push_str(&format!(" ({e})"));
            }
            s
        })
        .collect();
    format!(
        "backup {} of {dataset:?} is incomplete: {}",
        r.backup_id,
        parts.join(", ")
    )
}

fn summary_json(dataset: &str, r: &Report) -> serde_json::Value {
    serde_json::json!({
        "dataset": dataset,
        "backup_id": r.backup_id.to_string(),
        "total_bytes": r.total_bytes,
        "shards": r.shards,
        "elapsed_secs": r.elapsed.as_secs_f64(),
        "complete": r.complete(),
        "providers": r.providers,
    })
}
