//! `offsite backup [DATASET...] [--once] [--full] [--dry-run] [--restart]`.
//!
//! For each dataset: take the lock, resume the unfinished backup if there is one, else decide
//! (schedule, full or incremental), take the snapshot and run the pipeline; afterwards forget
//! the unfinished state and apply local snapshot retention.

use super::{Ctx, Outcome};
use crate::catalog::Catalog;
use crate::cli::BackupArgs;
use crate::config::units::{human_bytes, human_rate};
use crate::config::{Dataset, SourceSpec};
use crate::engine::backup::{self, Job, Report};
use crate::engine::{discard, probe};
use crate::error::{ConfigError, Interrupted};
use crate::layout::{self, BackupId, BackupKind};
use crate::lock::DatasetLock;
use crate::manifest::ParentRef;
use crate::provider::DynProvider;
use crate::schedule::{self, Decision, History, Request, Schedule};
use crate::state::{DatasetState, Unfinished};
use crate::{snapshots, source, ui};
use anyhow::{bail, Result};
use std::sync::Arc;
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
            Err(e) if e.chain().any(|c| c.is::<Interrupted>()) => return Err(e),
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
        }))?;
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

/// What this run will do for a dataset.
struct Plan {
    unfinished: Unfinished,
    /// Shards recorded by the run being resumed; `None` for a new backup.
    resume: Option<std::collections::BTreeMap<u64, crate::manifest::ShardRecord>>,
}

async fn backup_one(ctx: &Ctx, ds: &Dataset, args: &BackupArgs) -> Result<Option<Report>> {
    let cfg = &ctx.cfg;
    let providers = ctx.providers(&ds.providers)?;
    snapshots::check_send_flags(ds).await?;
    let state = DatasetState::new(&cfg.state_dir, &cfg.host, &ds.name);
    if args.dry_run {
        match state.load()? {
            Some((u, r)) if !args.restart => tracing::info!(
                "dry run: would resume unfinished backup {} of {:?} ({} shards recorded)",
                u.backup_id,
                ds.name,
                r.len()
            ),
            _ => match decide(ctx, ds, &providers, args).await? {
                (Decision::NotDue { next_due }, _, _) => not_due(ds, next_due),
                (d, _, _) => tracing::info!(
                    "dry run: would make {} of {:?} to {}",
                    describe(&d),
                    ds.name,
                    ds.providers.join(", ")
                ),
            },
        }
        return Ok(None);
    }
    let _lock = DatasetLock::acquire(&cfg.state_dir, &cfg.host, &ds.name)?;
    if args.restart {
        restart(ctx, ds, &providers, &state).await?;
    }
    let providers = distinct_storage(ctx, providers).await?;
    let Some(plan) = plan(ctx, ds, &providers, args, &state).await? else {
        return Ok(None);
    };
    let u = &plan.unfinished;
    let id = u
        .id()
        .ok_or_else(|| anyhow::anyhow!("unfinished backup has an invalid id {:?}", u.backup_id))?;
    let journal = Arc::new(match plan.resume {
        Some(_) => state.reopen()?,
        None => state.begin(u)?,
    });
    let parent_snap = u.parent.as_ref().and_then(|p| p.snapshot.clone());
    let source_desc = source::describe(&ds.source, u.snapshot.as_deref(), parent_snap.as_deref());
    let estimate =
        snapshots::estimate(&ds.source, u.snapshot.as_deref(), parent_snap.is_some()).await;
    tracing::info!(
        "backing up {:?} as {id}: {source_desc} to {}",
        ds.name,
        ds.providers.join(", ")
    );
    if let SourceSpec::Command { command } = &ds.source {
        // The arguments may hold a password: shown only with -v.
        tracing::debug!("{:?}: command: {command}", ds.name);
    }
    let proc = source::start_send(
        &ds.source,
        &ds.send_flags,
        u.snapshot.as_deref(),
        parent_snap.as_deref(),
    )?;
    let job = Job {
        host: cfg.host.clone(),
        dataset: ds.name.clone(),
        id,
        source_kind: ds.source.kind().to_string(),
        source: source_text(ds),
        source_desc,
        snapshot: u.snapshot.clone(),
        parent: u.parent.clone(),
        shard_size: u.shard_size,
        min_providers: cfg.min_providers,
        shards_in_flight: cfg.shards_in_flight,
        concurrency: cfg.concurrency,
        providers,
        estimate,
        resume: plan.resume,
        journal: Some(journal),
    };
    let report = backup::run(job, proc, ctx.progress.clone(), ctx.cancel.clone()).await?;
    if report.complete() || u.gaps_retry {
        state.clear()?;
    } else {
        state.update(&Unfinished {
            gaps_retry: true,
            ..u.clone()
        })?;
    }
    if ds.snapshot_pattern.is_none() {
        if let Some(snap) = &u.snapshot {
            match snapshots::retain(ds, &[snap.as_str()], false).await {
                Ok(deleted) if !deleted.is_empty() => {
                    tracing::info!("deleted older offsite snapshots: {}", deleted.join(", "))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("local snapshot retention failed: {e:#}"),
            }
        }
    }
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

/// With `min_providers` > 1, two provider files pointing at one storage must not count as two
/// copies: a probe object finds them; all but the first of each storage are left out of the
/// backup (with a warning), and a run that cannot reach `min_providers` distinct storages is
/// refused (exit 2). A probe that fails is a warning: the provider's upload will tell.
async fn distinct_storage(ctx: &Ctx, providers: Vec<DynProvider>) -> Result<Vec<DynProvider>> {
    let min = ctx.cfg.min_providers;
    if min < 2 || providers.len() < 2 {
        return Ok(providers);
    }
    let groups = match probe::storage_groups(&providers, &ctx.cancel).await {
        Ok(g) => g,
        Err(e) if e.is::<Interrupted>() => return Err(e),
        Err(e) => {
            tracing::warn!(
                "{e:#}; could not check that the providers are distinct storage, so each counts as one copy"
            );
            return Ok(providers);
        }
    };
    let files = |g: &[String]| {
        g.iter()
            .map(|n| format!("{n}.toml"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    if groups.len() < min {
        let shared: Vec<String> = groups
            .iter()
            .filter(|g| g.len() > 1)
            .map(|g| files(g))
            .collect();
        return Err(ConfigError(format!(
            "provider files {} in the providers directory point at one storage (a probe object written through one \
             is read back through the other), so they hold one copy, and {} distinct storage(s) cannot meet \
             min_providers = {min}; point them at different storage or lower min_providers",
            shared.join("; "),
            groups.len()
        ))
        .into());
    }
    for g in groups.iter().filter(|g| g.len() > 1) {
        tracing::warn!(
            "provider files {} point at one storage: they count as one copy, and only {} is written to",
            files(g),
            g[0]
        );
    }
    let keep: Vec<&String> = groups.iter().map(|g| &g[0]).collect();
    Ok(providers
        .into_iter()
        .filter(|p| keep.iter().any(|k| *k == p.name()))
        .collect())
}

/// `--restart`: forgets the unfinished backup and removes its objects from the providers at
/// once (best effort), since nothing will resume it. A backup that already has a manifest
/// somewhere (complete, with gaps) is kept: it is a real backup.
async fn restart(
    ctx: &Ctx,
    ds: &Dataset,
    providers: &[DynProvider],
    state: &DatasetState,
) -> Result<()> {
    match state.load() {
        Ok(Some((u, _))) => {
            tracing::warn!(
                "discarding unfinished backup {} of {:?} (--restart)",
                u.backup_id,
                ds.name
            );
            match u.id() {
                Some(id) => {
                    let cfg = &ctx.cfg;
                    let d = discard::discard(
                        providers,
                        &cfg.host,
                        &ds.name,
                        &id,
                        cfg.concurrency,
                        &ctx.cancel,
                    )
                    .await?;
                    if d.deleted > 0 {
                        tracing::info!(
                            "deleted {} objects of discarded backup {id} from the providers",
                            d.deleted
                        );
                    }
                }
                None => tracing::warn!(
                    "unfinished backup id {:?} is not valid; its objects, if any, stay until `offsite prune`",
                    u.backup_id
                ),
            }
        }
        Ok(None) => {}
        // The message of a damaged state file tells the user to use --restart: let it work.
        Err(e) => tracing::warn!("{e:#}; discarding it (--restart)"),
    }
    state.clear()
}

/// Resumes the unfinished backup, or decides on a new one and takes its snapshot. `None` when
/// nothing is due.
async fn plan(
    ctx: &Ctx,
    ds: &Dataset,
    providers: &[DynProvider],
    args: &BackupArgs,
    state: &DatasetState,
) -> Result<Option<Plan>> {
    if let Some((u, recorded)) = state.load()? {
        if let Some(snap) = &u.snapshot {
            if !snapshots::exists(&ds.source, snap).await {
                bail!(
                    "snapshot {snap} of unfinished backup {} no longer exists, so the backup cannot be resumed with the same bytes; \
                     run `offsite backup --restart {}` to start afresh",
                    u.backup_id,
                    ds.name
                );
            }
        }
        let why = if u.gaps_retry {
            " to fill the gaps a provider had"
        } else {
            ""
        };
        tracing::info!(
            "resuming unfinished backup {} of {:?}{why} ({} shards recorded)",
            u.backup_id,
            ds.name,
            recorded.len()
        );
        return Ok(Some(Plan {
            unfinished: u,
            resume: Some(recorded),
        }));
    }
    let (decision, parent, newest) = decide(ctx, ds, providers, args).await?;
    let kind = match &decision {
        Decision::NotDue { next_due } => {
            not_due(ds, *next_due);
            return Ok(None);
        }
        Decision::Full { reason } => {
            tracing::info!("full backup of {:?}: {reason}", ds.name);
            BackupKind::Full
        }
        Decision::Incremental => BackupKind::Incremental,
    };
    let now = SystemTime::now();
    let id = BackupId::new_after(now, kind, newest.as_ref());
    let snapshot = match &ds.snapshot_pattern {
        Some(pattern) => {
            let Some(snap) = snapshots::newest_matching(&ds.source, pattern).await? else {
                bail!("dataset {:?}: no snapshot matches snapshot_pattern {pattern:?}; nothing to back up", ds.name);
            };
            let parent_snap = parent.as_ref().and_then(|p| p.snapshot.as_deref());
            if kind == BackupKind::Incremental && parent_snap == Some(snap.as_str()) {
                tracing::info!("{:?}: no snapshot matching {pattern:?} is newer than {snap}, which is backed up", ds.name);
                return Ok(None);
            }
            Some(snap)
        }
        None => source::take_snapshot(&ds.name, &ds.source, id.stamp()).await?,
    };
    let parent = if kind == BackupKind::Incremental {
        parent
    } else {
        None
    };
    let unfinished = Unfinished {
        backup_id: id.to_string(),
        snapshot,
        parent,
        shard_size: ctx.cfg.shard_size,
        started: layout::rfc3339(now),
        gaps_retry: false,
    };
    Ok(Some(Plan {
        unfinished,
        resume: None,
    }))
}

/// Full, incremental or not due, from the schedule and what the providers hold.
/// Also returns the newest backup id on the providers, which a new id must follow.
async fn decide(
    ctx: &Ctx,
    ds: &Dataset,
    providers: &[DynProvider],
    args: &BackupArgs,
) -> Result<(Decision, Option<ParentRef>, Option<BackupId>)> {
    let catalog = Catalog::scan(providers, &ctx.cfg.host, Some(&ds.name)).await;
    if !providers.is_empty() && catalog.unreachable.len() == providers.len() {
        let why: Vec<String> = catalog
            .unreachable
            .values()
            .map(|e| e.to_string())
            .collect();
        bail!(
            "no provider of {:?} could be listed, so its backup history is unknown: {}",
            ds.name,
            why.join("; ")
        );
    }
    let good = catalog.restorable(&ds.name);
    let made: Vec<schedule::Made> = good
        .iter()
        .map(|(id, m)| schedule::Made {
            id: id.to_string(),
            time: schedule::made_at(id, &m.created),
            full: id.kind == BackupKind::Full,
        })
        .collect();
    let history = History::of(SystemTime::now(), &made);
    for w in history.warnings() {
        tracing::warn!("{:?}: {w}", ds.name);
    }
    let newest_listed = catalog
        .backups
        .keys()
        .filter(|k| k.dataset == ds.name)
        .map(|k| &k.id)
        .max();
    let parent = good.last().map(|(id, m)| ParentRef {
        backup_id: id.to_string(),
        snapshot: m.snapshot.clone(),
    });
    let parent_usable = match (&parent, good.last()) {
        (Some(p), Some((id, _))) => match (&p.snapshot, catalog.broken_link(&ds.name, id)) {
            (_, Some(why)) => Err(format!(
                "the chain of the last backup {id} is broken ({why})"
            )),
            (None, _) => Err(format!("the last backup {id} recorded no snapshot")),
            (Some(snap), None) if !snapshots::exists(&ds.source, snap).await => Err(format!(
                "the parent snapshot {snap} of the last backup {id} no longer exists locally"
            )),
            _ => Ok(()),
        },
        _ => Err("there is no previous backup".into()),
    };
    let request = Request {
        once: args.once,
        force_full: args.full,
        can_incremental: !matches!(ds.source, SourceSpec::Command { .. }),
        parent_usable,
    };
    let sched = Schedule {
        full_every: ds.full_every,
        incremental_every: ds.incremental_every,
    };
    let decision = schedule::decide(SystemTime::now(), sched, &history, &request);
    Ok((decision, parent, newest_listed.cloned()))
}

fn not_due(ds: &Dataset, next_due: SystemTime) {
    tracing::info!(
        "{:?} is not due; its next backup is due at {} (use --once to run now)",
        ds.name,
        layout::rfc3339(next_due)
    );
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Full { reason } => format!("a full backup ({reason})"),
        Decision::Incremental => "an incremental backup".into(),
        Decision::NotDue { .. } => "nothing".into(),
    }
}

fn source_text(ds: &Dataset) -> String {
    match &ds.source {
        SourceSpec::Zfs { dataset } => dataset.clone(),
        SourceSpec::Btrfs { subvolume, .. } => subvolume.display().to_string(),
        SourceSpec::Command { command } => command.clone(),
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
