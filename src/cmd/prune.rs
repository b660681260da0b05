//! `offsite prune [--dry-run]`: retention. On the providers, each dataset with `keep_chains`
//! or a retention grid (`keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`) keeps what
//! a rule keeps and loses the rest and the debris of abandoned unfinished backups (see
//! `engine::prune`); datasets without any rule are left alone. Then local snapshots.
//!
//! Nothing is deleted unless every enabled provider was listed and every manifest of the
//! dataset was read: a backup that cannot be seen may need what would otherwise go.

use super::{Ctx, Outcome};
use crate::catalog::Catalog;
use crate::config::units::human_bytes;
use crate::config::Dataset;
use crate::engine::prune::{self, ProviderResult, PrunePlan, Retention, Work};
use crate::error::{ConfigError, Interrupted};
use crate::lock::DatasetLock;
use crate::outln;
use crate::output::{self, Report};
use crate::provider::{DynProvider, Stack};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

/// The datasets to prune, each with its rules.
type Selected<'a> = Vec<(&'a Dataset, Retention)>;

/// What prune did (with --dry-run: would do), per dataset and provider.
#[derive(Debug, serde::Serialize)]
struct PruneReport {
    host: String,
    dry_run: bool,
    datasets: Vec<DatasetReport>,
    /// Datasets on the providers or in the config that were not pruned, and why.
    left_alone: Vec<LeftAlone>,
    /// Provider to bytes freed (with --dry-run: that would be freed).
    freed: BTreeMap<String, u64>,
    /// Deletions that failed, each naming provider and object.
    failed: Vec<String>,
    /// Datasets that could not be pruned safely (also in `left_alone`).
    #[serde(skip)]
    blocked: Vec<String>,
    /// Local snapshots offsite made that were deleted (with --dry-run: would be).
    local_snapshots: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct DatasetReport {
    dataset: String,
    keep_chains: Option<u32>,
    /// The grid's rules, `keep_daily = 7, keep_weekly = 4` (empty without one).
    keep_grid: String,
    kept: Vec<String>,
    /// Each kept backup with the rules that keep it: `keep_chains`, `daily 2026-11-21`,
    /// `weekly 2026-W47`, `monthly 2026-11`, `yearly 2026`, `parent of ID`, or that its chain
    /// cannot be restored.
    kept_because: BTreeMap<String, Vec<String>>,
    deleted: Vec<String>,
    debris: Vec<String>,
    /// Kept backups that cannot be restored (a shard or a link missing on every provider):
    /// not counted toward keep_chains, never deleted, left for `sync` to repair.
    unrestorable: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct LeftAlone {
    dataset: String,
    reason: String,
}

pub async fn run(ctx: &Ctx, dry_run: bool) -> Result<Outcome> {
    let (datasets, mut left_alone) = select(ctx)?;
    let _locks = if dry_run {
        Vec::new()
    } else {
        datasets
            .iter()
            .map(|(d, _)| DatasetLock::acquire(&ctx.cfg.state_dir, &ctx.cfg.host, &d.name))
            .collect::<Result<Vec<_>>>()?
    };
    // A dry run deletes through providers that skip every write: one code path for both.
    let providers = ctx.enabled_providers_in(Stack {
        dry_run,
        ..Stack::default()
    });
    let names: Vec<String> = providers.iter().map(|p| p.name().to_string()).collect();
    crate::engine::preflight::require(&ctx.cfg, &names, &ctx.cancel).await?;
    let catalog = list_all(ctx, &providers).await?;
    let planned = plan_all(&catalog, &datasets, &mut left_alone);
    left_alone.extend(unconfigured(ctx, &catalog));
    let progress = ctx.progress.as_ref();
    let results = prune::execute(&providers, planned.work, progress, &ctx.cancel).await;
    if ctx.cancel.is_cancelled() {
        // Interrupted while deleting on the providers: local snapshots are not touched.
        print_partial(&results);
        return Err(Interrupted.into());
    }
    let (local_snapshots, local_failed) = match prune_local_snapshots(ctx, &catalog, dry_run).await
    {
        Ok(deleted) => (deleted, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let report = PruneReport {
        host: catalog.host.clone(),
        dry_run,
        datasets: planned.reports,
        left_alone,
        freed: freed(&catalog.order, &results),
        failed: results
            .iter()
            .flat_map(|r| &r.errors)
            .map(|e| e.to_string())
            .collect(),
        blocked: planned.blocked,
        local_snapshots,
    };
    let late = match local_failed {
        Some(e) => Err(e),
        None => finish(ctx, &report, &results),
    };
    output::conclude(ctx.json, &report, late)
}

/// Lists every enabled provider; all of them must answer, or nothing is pruned.
async fn list_all(ctx: &Ctx, providers: &[DynProvider]) -> Result<Catalog> {
    let catalog = tokio::select! {
        c = Catalog::scan(providers, &ctx.cfg.host, None) => c,
        _ = ctx.cancel.cancelled() => return Err(Interrupted.into()),
    };
    if let Some((p, e)) = catalog.unreachable.iter().next() {
        bail!(
            "provider {p} could not be listed ({e}); nothing was pruned, because a backup only it \
             shows may need what would be deleted. Fix it, or set `enabled = false` in its file"
        );
    }
    Ok(catalog)
}

/// What the datasets' plans add up to.
struct PlannedDeletions {
    work: Work,
    reports: Vec<DatasetReport>,
    /// Datasets that cannot be pruned safely, and why.
    blocked: Vec<String>,
}

/// Plans every selected dataset. One with a manifest nobody can read is left alone: its links
/// are unknown, so anything might be needed.
fn plan_all(
    catalog: &Catalog,
    datasets: &Selected<'_>,
    left_alone: &mut Vec<LeftAlone>,
) -> PlannedDeletions {
    let mut out = PlannedDeletions {
        work: Work::new(),
        reports: Vec::new(),
        blocked: Vec::new(),
    };
    for (ds, keep) in datasets {
        let view = prune::view(catalog, &ds.name);
        if let Some((id, why)) = view.unreadable.first() {
            let reason = format!(
                "the manifest of backup {id} cannot be read ({why}), so its chain is unknown"
            );
            out.blocked
                .push(format!("dataset {:?} was not pruned: {reason}", ds.name));
            left_alone.push(LeftAlone {
                dataset: ds.name.clone(),
                reason,
            });
            continue;
        }
        let plan = prune::plan_with(&view.seen, keep);
        prune::add_work(catalog, &ds.name, &plan.delete, &mut out.work);
        prune::add_work(catalog, &ds.name, &plan.debris, &mut out.work);
        out.reports.push(dataset_report(&ds.name, keep, &plan));
    }
    out
}

/// The datasets with a retention rule, and a note for those without. `keep_chains = 0` would
/// delete every backup: a usage error, before anything is touched.
fn select(ctx: &Ctx) -> Result<(Selected<'_>, Vec<LeftAlone>), ConfigError> {
    let mut pruned = Vec::new();
    let mut left_alone = Vec::new();
    for d in &ctx.cfg.datasets {
        let rules = Retention {
            chains: d.keep_chains.and_then(NonZeroU32::new),
            grid: d.keep,
        };
        if d.keep_chains == Some(0) {
            return Err(ConfigError(format!(
                "{}: dataset {:?} has keep_chains = 0, which would delete every backup; \
                 set 1 or more, or remove keep_chains to keep everything",
                ctx.cfg.path.display(),
                d.name
            )));
        }
        if rules.is_empty() {
            left_alone.push(LeftAlone {
                dataset: d.name.clone(),
                reason: "no keep_chains or keep_daily/weekly/monthly/yearly in the config".into(),
            });
        } else {
            pruned.push((d, rules));
        }
    }
    Ok((pruned, left_alone))
}

/// Datasets the providers hold for this host that the config does not name.
fn unconfigured(ctx: &Ctx, catalog: &Catalog) -> Vec<LeftAlone> {
    let on_providers: BTreeSet<&String> = catalog.backups.keys().map(|k| &k.dataset).collect();
    on_providers
        .into_iter()
        .filter(|d| ctx.cfg.dataset(d).is_none())
        .map(|d| LeftAlone {
            dataset: d.clone(),
            reason: "not in the config".into(),
        })
        .collect()
}

fn dataset_report(dataset: &str, rules: &Retention, plan: &PrunePlan) -> DatasetReport {
    let strings = |ids: &[crate::layout::BackupId]| ids.iter().map(|i| i.to_string()).collect();
    DatasetReport {
        dataset: dataset.to_string(),
        keep_chains: rules.chains.map(NonZeroU32::get),
        keep_grid: rules.grid.describe(),
        kept_because: plan
            .reasons
            .iter()
            .map(|(id, why)| (id.to_string(), why.clone()))
            .collect(),
        kept: strings(&plan.keep),
        deleted: strings(&plan.delete),
        debris: strings(&plan.debris),
        unrestorable: strings(&plan.unrestorable),
    }
}

/// Bytes freed per provider, every listed provider included.
fn freed(order: &[String], results: &[ProviderResult]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = order.iter().map(|p| (p.clone(), 0)).collect();
    for r in results {
        *out.entry(r.provider.clone()).or_default() += r.freed;
    }
    out
}

/// Local retention: see [`crate::engine::retention::prune_local`].
async fn prune_local_snapshots(ctx: &Ctx, catalog: &Catalog, dry_run: bool) -> Result<Vec<String>> {
    crate::engine::retention::prune_local(&ctx.cfg, catalog, dry_run).await
}

/// What an interrupted run did on the providers, on stderr.
fn print_partial(results: &[ProviderResult]) {
    for r in results {
        tracing::warn!(
            "prune interrupted: {} deleted {} objects ({}), left {} in place; local snapshots \
             were not touched; run `offsite prune` again to finish",
            r.provider,
            r.deleted,
            human_bytes(r.freed),
            r.skipped
        );
    }
}

impl Report for PruneReport {
    fn render_text(&self) -> std::io::Result<()> {
        let (delete, free) = if self.dry_run {
            ("would delete", "would free")
        } else {
            ("deleted", "freed")
        };
        for snap in &self.local_snapshots {
            outln!("local snapshot {delete} {snap}")?;
        }
        for d in &self.datasets {
            d.render_text(delete)?;
        }
        for l in &self.left_alone {
            outln!("dataset {:?}: left alone: {}", l.dataset, l.reason)?;
        }
        let freed: Vec<String> = self
            .freed
            .iter()
            .map(|(p, b)| format!("{p} {}", human_bytes(*b)))
            .collect();
        outln!("{free}: {}", freed.join(", "))?;
        if self.dry_run {
            outln!("dry run: nothing was deleted")?;
        }
        Ok(())
    }
}

impl DatasetReport {
    /// `keep_chains = 2, keep_daily = 7`.
    fn rules(&self) -> String {
        let chains = self.keep_chains.map(|n| format!("keep_chains = {n}"));
        let grid = Some(self.keep_grid.clone()).filter(|g| !g.is_empty());
        chains
            .into_iter()
            .chain(grid)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line of counts, one per backup, and the kept backups that cannot be restored.
    fn render_text(&self, delete: &str) -> std::io::Result<()> {
        outln!(
            "dataset {:?} ({}): keep {}, {delete} {} older and {} abandoned unfinished",
            self.dataset,
            self.rules(),
            self.kept.len(),
            self.deleted.len(),
            self.debris.len()
        )?;
        for id in &self.kept {
            let why = self
                .kept_because
                .get(id)
                .map_or(String::new(), |w| w.join(", "));
            outln!("  {:<12} {id}  ({why})", "keep")?;
        }
        for (what, ids) in [(delete, &self.deleted), ("debris", &self.debris)] {
            for id in ids {
                outln!("  {what:<12} {id}")?;
            }
        }
        if self.unrestorable.is_empty() {
            return Ok(());
        }
        outln!(
            "  {} kept backup(s) cannot be restored (a shard or a backup of the chain is \
             missing on every provider): not counted toward keep_chains and not deleted; \
             see `offsite status`, and `offsite sync` to repair what another copy holds:",
            self.unrestorable.len()
        )?;
        for id in &self.unrestorable {
            outln!("  {:<12} {id}", "unrestorable")?;
        }
        Ok(())
    }
}

/// Exit 130 when interrupted, 1 when a deletion failed or a dataset could not be pruned.
fn finish(ctx: &Ctx, r: &PruneReport, results: &[ProviderResult]) -> Result<()> {
    if ctx.cancel.is_cancelled() {
        return Err(Interrupted.into());
    }
    if let Some(first) = r.failed.first() {
        let skipped: u64 = results.iter().map(|r| r.skipped).sum();
        bail!(
            "{} deletions failed (first: {first}); {skipped} objects were left in place; \
             run `offsite prune` again to finish",
            r.failed.len()
        );
    }
    if let Some(first) = r.blocked.first() {
        bail!("{first}; check `offsite status` and `offsite verify`");
    }
    Ok(())
}
