//! One sync, start to end, the entry point `offsite sync` calls: the migration guard, one
//! listing per provider, an optional deep check, the plan, then either the plan (`--dry-run`)
//! or the copies and a migration's end. Errors before any copy end the run; a failure after
//! the copies comes back next to their report ([`SyncRun::Done`]).

use super::{execute, migrate, plan, Mode, Options, RemoteId, SyncDryRun, SyncReport};
use crate::catalog::{BackupKey, Catalog};
use crate::config::units::human_rate;
use crate::config::Config;
use crate::engine::scan::{self, Scope};
use crate::engine::verify::{self, Limits};
use crate::gaps::{self, BackupFindings, Corrupt};
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a sync works with.
pub struct SyncContext<'a> {
    pub cfg: &'a Config,
    /// Every provider to list: the enabled ones and those the mode names.
    pub providers: &'a [DynProvider],
    pub progress: &'a Arc<dyn Progress>,
    pub cancel: &'a CancellationToken,
}

impl SyncContext<'_> {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            shards_in_flight: self.cfg.shards_in_flight,
            concurrency: self.cfg.concurrency,
        }
    }

    fn provider(&self, name: &str) -> &DynProvider {
        self.providers
            .iter()
            .find(|p| p.name() == name)
            .expect("named providers were added to the list")
    }
}

/// What the command line asks of a sync.
#[derive(Debug, Clone)]
pub struct SyncRequest<'a> {
    pub mode: Mode,
    /// The datasets to sync; all when empty.
    pub datasets: &'a [String],
    /// Download and hash every shard first (`--deep`).
    pub deep: bool,
    pub dry_run: bool,
    /// A migration deletes the source's copy once the destination is verified.
    pub remove_source: bool,
}

/// How a sync ended.
#[derive(Debug)]
pub enum SyncRun {
    /// `--dry-run`: what would be copied; nothing was.
    Planned(SyncDryRun),
    /// The copies done, and the error of a step after them (a migration's check or removal).
    Done(SyncReport, Result<()>),
}

/// Runs one sync.
pub async fn run(cx: &SyncContext<'_>, req: &SyncRequest<'_>) -> Result<SyncRun> {
    let start = Instant::now();
    if let (Mode::Migrate { from, to }, true, false) = (&req.mode, req.remove_source, req.dry_run) {
        migrate::refuse_same_storage(cx.provider(from), cx.provider(to), cx.cancel).await?;
    }
    let catalog = list(cx, req).await?;
    let corrupt = if req.deep {
        deep_corrupt(cx, &catalog).await?
    } else {
        Corrupt::new()
    };
    refuse_erasure_target(&catalog, &req.mode)?;
    let surveys = gaps::survey(cx.cfg, &catalog, &corrupt);
    let plan = plan(&catalog, &surveys, &req.mode);
    if let Mode::Repair(name) = &req.mode {
        warn_if_not_expected(name, &surveys);
    }
    if req.dry_run {
        return Ok(SyncRun::Planned(plan.dry_run()));
    }
    let opts = Options {
        host: catalog.host.clone(),
        limits: cx.limits(),
        remotes: cx
            .cfg
            .providers
            .iter()
            .map(|p| (p.name.clone(), RemoteId::of(p)))
            .collect(),
        spool_dir: cx.cfg.spool.as_ref().map(|s| s.dir.clone()),
    };
    let mut report = execute(plan, cx.providers, &opts, cx.progress.clone(), cx.cancel).await?;
    log_metrics(&report, start.elapsed());
    if req.mode == Mode::All {
        // A repair or migration needs only its named providers, and they were listed.
        report.unreachable = catalog.unreachable.keys().cloned().collect();
    }
    let late = match &req.mode {
        Mode::Migrate { from, to } => {
            let from_to = (cx.provider(from), cx.provider(to));
            let remove = req.remove_source;
            migrate::finish(cx, &catalog, &surveys, from_to, remove, &mut report).await
        }
        _ => Ok(()),
    };
    Ok(SyncRun::Done(report, late))
}

/// `--migrate FROM --to TO` where both hold pieces of one erasure-coded backup: moving FROM's
/// pieces to TO would put two pieces of a shard on one provider. A usage error (exit 2)
/// before anything is copied.
pub(super) fn refuse_erasure_target(catalog: &Catalog, mode: &Mode) -> Result<()> {
    let Mode::Migrate { from, to } = mode else {
        return Ok(());
    };
    for (key, entry) in &catalog.backups {
        let Some((_, m)) = entry.manifest(&catalog.order) else {
            continue;
        };
        let Some(e) = m.erasure.as_ref() else {
            continue;
        };
        if e.providers.contains(from) && e.providers.contains(to) {
            return Err(crate::error::ConfigError(format!(
                "cannot migrate {from} to {to}: backup {} of {:?} is erasure-coded over {}, so \
                 {to} already holds pieces of the shards whose pieces {from} holds, and one \
                 provider never holds two pieces of a shard; nothing was copied. Migrate to a \
                 provider outside that list",
                key.id,
                key.dataset,
                e.providers.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// One listing per provider; a provider the mode names must be among the listed.
async fn list(cx: &SyncContext<'_>, req: &SyncRequest<'_>) -> Result<Catalog> {
    let scope = Scope {
        host: &cx.cfg.host,
        datasets: req.datasets,
        hashes: !req.deep,
    };
    let catalog = scan::scan(cx.providers, scope, cx.cancel).await?;
    let named = req.mode.named();
    if let Some(n) = named.iter().find(|n| catalog.unreachable.contains_key(**n)) {
        bail!(
            "provider {n} could not be listed ({}), so nothing was copied",
            catalog.unreachable[*n]
        );
    }
    Ok(catalog)
}

/// `--deep`: every shard of every finished backup on every provider downloaded and hashed.
async fn deep_corrupt(cx: &SyncContext<'_>, catalog: &Catalog) -> Result<Corrupt> {
    let quick = gaps::survey(cx.cfg, catalog, &Corrupt::new());
    let (host, limits) = (&catalog.host, cx.limits());
    let report = verify::deep_check(
        host,
        &quick,
        None,
        cx.providers,
        limits,
        cx.progress,
        cx.cancel,
    )
    .await?;
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

fn log_metrics(report: &SyncReport, elapsed: std::time::Duration) {
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
