//! `offsite sync [--dry-run] [--deep] [DATASET...]`, `sync --repair-provider NAME` and
//! `sync --migrate FROM --to TO [--remove-source]` (aliases: `--sync-providers`,
//! `--repair-provider`, `--migrate`).
//!
//! One listing per provider, gap detection (`gaps`), optionally a deep check of every shard
//! (`--deep`), then the copies of `engine::sync`. A migration is then verified at TO by
//! downloading and hashing every shard; FROM is touched only with `--remove-source`, and only
//! once everything migrated was verified. Exit 3 when a gap could not be filled.

use super::{Ctx, Outcome};
use crate::catalog::{BackupKey, Catalog};
use crate::cli::SyncArgs;
use crate::config::units::{human_bytes, human_rate};
use crate::engine::probe;
use crate::engine::sync::{self, Failed, Mode, Options, Plan, RemoteId, Report};
use crate::engine::verify::{self, Limits};
use crate::error::ConfigError;
use crate::gaps::{self, BackupFindings, Corrupt};
use crate::outln;
use crate::provider::DynProvider;
use crate::ui;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

pub async fn run(ctx: &Ctx, args: &SyncArgs) -> Result<Outcome> {
    let start = Instant::now();
    let mode = mode(args)?;
    let named: Vec<&str> = match &mode {
        Mode::All => vec![],
        Mode::Repair(n) => vec![n],
        Mode::Migrate { from, to } => vec![from, to],
    };
    let providers = ctx.providers_with(&named)?;
    if let (Mode::Migrate { from, to }, true, false) = (&mode, args.remove_source, args.dry_run) {
        refuse_same_storage(ctx, &find(&providers, from), &find(&providers, to)).await?;
    }
    let catalog = ctx.scan(&providers, &args.datasets, !args.deep).await?;
    if let Some(n) = named.iter().find(|n| catalog.unreachable.contains_key(**n)) {
        bail!(
            "provider {n} could not be listed ({}), so nothing was copied",
            catalog.unreachable[*n]
        );
    }
    let limits = Limits {
        shards_in_flight: ctx.cfg.shards_in_flight,
        concurrency: ctx.cfg.concurrency,
    };
    let corrupt = if args.deep {
        deep_corrupt(ctx, &catalog, &providers, limits).await?
    } else {
        Corrupt::new()
    };
    let surveys = gaps::survey(&ctx.cfg, &catalog, &corrupt);
    let plan = sync::plan(&catalog, &surveys, &mode);
    if let Mode::Repair(name) = &mode {
        warn_if_not_expected(name, &surveys);
    }
    if args.dry_run {
        print_plan(ctx, &plan)?;
        return Ok(dry_run_outcome(&plan));
    }
    let opts = Options {
        host: catalog.host.clone(),
        limits,
        remotes: ctx
            .cfg
            .providers
            .iter()
            .map(|p| (p.name.clone(), RemoteId::of(p)))
            .collect(),
    };
    let mut report =
        sync::execute(plan, &providers, &opts, ctx.progress.clone(), &ctx.cancel).await?;
    log_metrics(&report, start.elapsed());
    let migration = match &mode {
        Mode::Migrate { from, to } => {
            let from_to = (find(&providers, from), find(&providers, to));
            Some(migrate_finish(ctx, args, &catalog, &surveys, from_to, limits, &mut report).await?)
        }
        _ => None,
    };
    print_summary(ctx, &report, migration.as_ref())?;
    let mut unreachable: Vec<String> = catalog.unreachable.keys().cloned().collect();
    if !matches!(mode, Mode::All) {
        unreachable.clear(); // only the named providers matter, and they were listed
    }
    Ok(outcome(&report.failed, &unreachable))
}

/// `--deep`: every shard of every finished backup on every provider downloaded and hashed.
async fn deep_corrupt(
    ctx: &Ctx,
    catalog: &Catalog,
    providers: &[DynProvider],
    limits: Limits,
) -> Result<Corrupt> {
    let quick = gaps::survey(&ctx.cfg, catalog, &Corrupt::new());
    let (host, progress, cancel) = (&catalog.host, &ctx.progress, &ctx.cancel);
    let report =
        verify::deep_check(host, &quick, None, providers, limits, progress, cancel).await?;
    Ok(report.corrupt)
}

fn warn_if_not_expected(name: &str, surveys: &[(BackupKey, BackupFindings)]) {
    let expected = surveys
        .iter()
        .any(|(_, f)| f.provider(name).is_some_and(|p| p.expected));
    if !expected {
        tracing::warn!(
            "provider {name} should hold none of the backups found (it is disabled or in no dataset's providers); nothing to repair. To copy everything to it, use --migrate FROM --to {name}"
        );
    }
}

fn log_metrics(report: &Report, elapsed: std::time::Duration) {
    tracing::info!(
        event = %"sync_metrics",
        copied = report.copied.len(),
        server_side = report.copied.iter().filter(|c| c.server_side).count(),
        failed = report.failed.len(),
        bytes = report.bytes,
        elapsed_secs = %format!("{:.2}", elapsed.as_secs_f64()),
        throughput = %human_rate(report.bytes, elapsed),
        "sync finished"
    );
}

fn mode(args: &SyncArgs) -> Result<Mode, ConfigError> {
    match (&args.repair_provider, &args.migrate, &args.to) {
        (Some(n), _, _) => Ok(Mode::Repair(n.clone())),
        (None, Some(from), Some(to)) if from == to => Err(ConfigError(format!(
            "--migrate {from} --to {to}: source and destination are the same provider"
        ))),
        (None, Some(from), Some(to)) => Ok(Mode::Migrate {
            from: from.clone(),
            to: to.clone(),
        }),
        _ => Ok(Mode::All),
    }
}

fn find(providers: &[DynProvider], name: &str) -> DynProvider {
    providers
        .iter()
        .find(|p| p.name() == name)
        .cloned()
        .expect("named providers were added to the list")
}

/// `--remove-source` empties FROM: refuse (exit 2) when TO is FROM under another name, as a
/// probe object shows, before anything is copied or deleted.
async fn refuse_same_storage(ctx: &Ctx, from: &DynProvider, to: &DynProvider) -> Result<()> {
    let (f, t) = (from.name(), to.name());
    let same = probe::same_storage(from, to, &ctx.cancel)
        .await
        .with_context(|| {
            format!("cannot prove that {t} is other storage than {f}, so --remove-source touched nothing")
        })?;
    if same {
        return Err(ConfigError(format!(
            "--migrate {f} --to {t} --remove-source: {f} and {t} are the same storage under two names \
             (a probe object written through one is read back through the other), so removing {f}'s copies \
             would delete {t}'s too; nothing was copied or deleted. Point {t} at other storage"
        ))
        .into());
    }
    Ok(())
}

/// What a migration did after its copies.
struct Migration {
    verified: usize,
    removed: Option<u64>,
}

/// Verifies TO and, with `--remove-source` and nothing failed, deletes FROM's copies.
async fn migrate_finish(
    ctx: &Ctx,
    args: &SyncArgs,
    catalog: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    (from, to): (DynProvider, DynProvider),
    limits: Limits,
    report: &mut Report,
) -> Result<Migration> {
    let check = sync::verify_migration(
        catalog,
        surveys,
        &from,
        &to,
        limits,
        &ctx.progress,
        &ctx.cancel,
    )
    .await?;
    tracing::info!(
        "{} migrated backup(s) verified at {} by size and SHA-256; {} problem(s)",
        check.verified.len(),
        to.name(),
        check.failed.len()
    );
    report.failed.extend(check.failed);
    let removed = match (args.remove_source, report.failed.is_empty()) {
        (true, true) => Some(remove(ctx, catalog, &from, &check.verified, limits).await?),
        (true, false) => {
            tracing::warn!(
                "{} keeps its copy: not everything was verified at {}",
                from.name(),
                to.name()
            );
            None
        }
        (false, _) => None,
    };
    Ok(Migration {
        verified: check.verified.len(),
        removed,
    })
}

/// `--remove-source`, once everything was verified at the destination.
async fn remove(
    ctx: &Ctx,
    catalog: &Catalog,
    from: &DynProvider,
    verified: &[BackupKey],
    limits: Limits,
) -> Result<u64> {
    let (n, errors) =
        sync::remove_source(catalog, from, verified, limits.concurrency, &ctx.cancel).await?;
    for e in &errors {
        tracing::error!("removing the source: {e}");
    }
    if !errors.is_empty() {
        bail!(
            "{} object(s) could not be deleted from {}; run the same command again",
            errors.len(),
            from.name()
        );
    }
    tracing::info!("deleted {n} object(s) from {}", from.name());
    Ok(n)
}

fn outcome(failed: &[Failed], unreachable: &[String]) -> Outcome {
    if failed.is_empty() && unreachable.is_empty() {
        return Outcome::Done;
    }
    let mut parts: Vec<String> = unreachable
        .iter()
        .map(|p| format!("provider {p} could not be listed, so its gaps were not filled"))
        .collect();
    parts.extend(failed.iter().take(10).map(|f| {
        format!(
            "{} of backup {} of {:?} on {}: {}",
            f.object, f.backup_id, f.dataset, f.to, f.error
        )
    }));
    if failed.len() > 10 {
        parts.push(format!("and {} more", failed.len() - 10));
    }
    Outcome::Gaps(format!(
        "{} gap(s) could not be filled: {}",
        failed.len() + unreachable.len(),
        parts.join("; ")
    ))
}

fn dry_run_outcome(plan: &Plan) -> Outcome {
    let failed: Vec<Failed> = plan
        .unfillable
        .iter()
        .map(|u| Failed {
            dataset: u.key.dataset.clone(),
            backup_id: u.key.id.to_string(),
            object: u.object.clone(),
            to: u.dest.clone(),
            error: u.reason.clone(),
        })
        .collect();
    outcome(&failed, &[])
}

/// `--dry-run`: one line per backup and destination (or one JSON document).
fn print_plan(ctx: &Ctx, plan: &Plan) -> std::io::Result<()> {
    if ctx.json {
        let mut planned: Vec<serde_json::Value> = plan
            .copies
            .iter()
            .flat_map(|c| {
                c.dests.iter().map(move |d| {
                    json!({"dataset": c.key.dataset, "backup_id": c.key.id.to_string(),
                           "object": c.name, "from": c.sources[0], "to": d, "bytes": c.length})
                })
            })
            .collect();
        planned.extend(plan.manifests.iter().flat_map(|m| {
            m.dests.iter().map(move |d| {
                json!({"dataset": m.key.dataset, "backup_id": m.key.id.to_string(),
                       "object": crate::layout::MANIFEST, "from": m.from, "to": d, "bytes": null})
            })
        }));
        let failed: Vec<_> = plan
            .unfillable
            .iter()
            .map(|u| {
                json!({"dataset": u.key.dataset,
            "backup_id": u.key.id.to_string(), "object": u.object, "to": u.dest, "error": u.reason})
            })
            .collect();
        ui::print_json(
            &json!({"dry_run": true, "planned": planned, "copied": [], "failed": failed, "bytes": plan.bytes()}),
        )?;
        return Ok(());
    }
    #[derive(Default)]
    struct Group {
        shards: u64,
        bytes: u64,
        from: Vec<String>,
    }
    let mut groups: BTreeMap<(&str, String, &str), Group> = BTreeMap::new();
    for c in &plan.copies {
        for d in &c.dests {
            let g = groups
                .entry((&c.key.dataset, c.key.id.to_string(), d))
                .or_default();
            g.shards += 1;
            g.bytes += c.length;
            if !g.from.contains(&c.sources[0]) {
                g.from.push(c.sources[0].clone());
            }
        }
    }
    for ((dataset, id, dest), g) in &groups {
        outln!(
            "would copy {} shard(s) ({}) of {dataset:?} {id} to {dest} from {}",
            g.shards,
            human_bytes(g.bytes),
            g.from.join(", ")
        )?;
    }
    for m in &plan.manifests {
        for d in &m.dests {
            outln!(
                "would write the manifest of {:?} {} to {d}",
                m.key.dataset,
                m.key.id
            )?;
        }
    }
    for u in &plan.unfillable {
        outln!(
            "cannot fill: {} of backup {} of {:?} on {}: {}",
            u.object,
            u.key.id,
            u.key.dataset,
            u.dest,
            u.reason
        )?;
    }
    if plan.is_empty() && plan.unfillable.is_empty() {
        outln!("nothing to copy: every provider holds what it should")?;
    }
    Ok(())
}

fn print_summary(ctx: &Ctx, report: &Report, migration: Option<&Migration>) -> std::io::Result<()> {
    if ctx.json {
        ui::print_json(&json!({
            "dry_run": false,
            "copied": report.copied,
            "failed": report.failed,
            "bytes": report.bytes,
            "migration": migration.map(|m| json!({
                "verified_backups": m.verified,
                "removed_objects": m.removed,
            })),
        }))?;
        return Ok(());
    }
    let mut per_dest: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for c in &report.copied {
        let e = per_dest.entry(&c.to).or_default();
        e.0 += 1;
        e.1 += c.bytes;
        e.2 += u64::from(c.server_side);
    }
    if per_dest.is_empty() && report.failed.is_empty() {
        outln!("nothing to copy: every provider holds what it should")?;
    }
    for (dest, (n, bytes, server)) in &per_dest {
        outln!(
            "{dest}: copied {n} object(s), {}{}",
            human_bytes(*bytes),
            if *server > 0 {
                format!(" ({server} server-side)")
            } else {
                String::new()
            }
        )?;
    }
    for f in &report.failed {
        outln!(
            "FAILED {} of backup {} of {:?} on {}: {}",
            f.object,
            f.backup_id,
            f.dataset,
            f.to,
            f.error
        )?;
    }
    if let Some(m) = migration {
        outln!("{} backup(s) verified at the destination", m.verified)?;
        if let Some(n) = m.removed {
            outln!("{n} object(s) removed from the source")?;
        }
    }
    Ok(())
}
