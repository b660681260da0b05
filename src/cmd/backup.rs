//! `offsite backup [DATASET...] [--once] [--full] [--dry-run] [--restart]`.
//!
//! Backs up each selected dataset through the engine ([`crate::engine::backup::back_up_dataset`]:
//! resume or plan, snapshot, pipeline, local retention), keeps going past a dataset that
//! fails, and reports what each backup wrote. `--dry-run` reports each dataset's plan instead
//! (engine::backup::dry_run), from the providers' listings, making nothing.

use super::{Ctx, Outcome};
use crate::cli::BackupArgs;
use crate::config::Dataset;
use crate::engine::backup::{
    self as engine, BackupReport, BackupRequest, DatasetRun, ProviderOutcome,
};
use crate::error::{ConfigError, Interrupted};
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;
use serde::Serialize;

/// What `offsite backup` did: the backups made, and the datasets that failed.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub backups: Vec<DatasetBackup>,
    /// Each failed dataset's error.
    pub failed: Vec<String>,
}

/// One backup made, as `--json` shows it.
#[derive(Debug, Serialize)]
pub struct DatasetBackup {
    pub dataset: String,
    pub backup_id: String,
    pub total_bytes: u64,
    pub shards: u64,
    pub elapsed_secs: f64,
    pub complete: bool,
    /// The source sent 0 bytes: stored, but flagged (exit 3).
    pub empty: bool,
    /// The unfinished backup discarded first because its command's stream changed.
    pub discarded: Option<String>,
    pub providers: Vec<ProviderOutcome>,
}

impl DatasetBackup {
    fn new(dataset: &str, r: &BackupReport) -> DatasetBackup {
        DatasetBackup {
            dataset: dataset.to_string(),
            backup_id: r.backup_id.to_string(),
            total_bytes: r.total_bytes,
            shards: r.shards,
            elapsed_secs: r.elapsed.as_secs_f64(),
            complete: r.complete(),
            empty: r.empty(),
            discarded: r.discarded.clone(),
            providers: r.providers.clone(),
        }
    }

    /// `backup ID of "DATASET" is incomplete: provider P misses N of M shards ...`.
    fn gap_text(&self) -> String {
        let parts: Vec<String> = self
            .providers
            .iter()
            .filter(|p| !p.missing_shards.is_empty() || !p.manifest_written)
            .map(|p| {
                let of = match p.pieces {
                    Some(n) => format!("its {n} pieces"),
                    None => format!("{} shards", self.shards),
                };
                let mut s = format!(
                    "provider {} misses {} of {of}{}",
                    p.provider,
                    p.missing_shards.len(),
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
            "backup {} of {:?} is incomplete: {}",
            self.backup_id,
            self.dataset,
            parts.join(", ")
        )
    }
}

impl output::Report for BackupSummary {
    /// Backups say what they did on stderr as they go; stdout stays empty.
    fn render_text(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        let gaps: Vec<String> = self
            .backups
            .iter()
            .filter(|b| !b.complete)
            .map(DatasetBackup::gap_text)
            .collect();
        let mut problems: Vec<String> = self
            .backups
            .iter()
            .filter(|b| b.empty)
            .map(|b| {
                format!(
                    "backup {} of {:?} is empty: its command printed nothing and exited 0; check the command",
                    b.backup_id, b.dataset
                )
            })
            .collect();
        if !gaps.is_empty() {
            problems.push(format!(
                "{}; run `offsite sync` once the provider is back",
                gaps.join("; ")
            ));
        }
        match problems.is_empty() {
            true => Outcome::Done,
            false => Outcome::Gaps(problems.join("; ")),
        }
    }
}

pub async fn run(ctx: &Ctx, args: &BackupArgs) -> Result<Outcome> {
    let datasets = ctx.cfg.select_datasets(&args.datasets)?;
    if datasets.is_empty() {
        return Err(ConfigError(format!(
            "{}: no [[dataset]] is configured",
            ctx.cfg.path.display()
        ))
        .into());
    }
    let mut names: Vec<String> = datasets.iter().flat_map(|d| d.providers.clone()).collect();
    names.sort();
    names.dedup();
    crate::engine::preflight::require(&ctx.cfg, &names, &ctx.cancel).await?;
    let req = BackupRequest {
        once: args.once,
        full: args.full,
        dry_run: args.dry_run,
        restart: args.restart,
    };
    if args.dry_run {
        return dry_run(ctx, &datasets, req).await;
    }
    let mut summary = BackupSummary {
        backups: Vec::new(),
        failed: Vec::new(),
    };
    let mut errors = Vec::new();
    for ds in datasets {
        if ctx.cancel.is_cancelled() {
            return Err(Interrupted.into());
        }
        match back_up(ctx, ds, req).await {
            Ok(Some(r)) => {
                ctx.observe(|o| o.backed_up(&ds.name, &r));
                summary.backups.push(DatasetBackup::new(&ds.name, &r))
            }
            Ok(None) => ctx.observe(|o| {
                o.dataset_exit
                    .insert(ds.name.clone(), crate::error::code::OK);
            }),
            Err(e) if e.chain().any(|c| c.is::<Interrupted>()) => return Err(e),
            Err(e) => {
                let exit = crate::error::exit_code(&e);
                ctx.observe(|o| {
                    o.dataset_exit.insert(ds.name.clone(), exit);
                });
                let e = e.context(format!("backup of dataset {:?} failed", ds.name));
                if !errors.is_empty() {
                    tracing::error!("{e:#}");
                }
                errors.push(e);
            }
        }
    }
    summary.failed = errors.iter().map(|e| format!("{e:#}")).collect();
    let late = errors.into_iter().next().map_or(Ok(()), Err);
    output::conclude(ctx.json, &summary, late)
}

/// `backup --dry-run`: each dataset's plan, from the providers' listings; nothing is made.
async fn dry_run(ctx: &Ctx, datasets: &[&Dataset], req: BackupRequest) -> Result<Outcome> {
    let mut plans = Vec::new();
    for ds in datasets {
        let run = DatasetRun {
            cfg: &ctx.cfg,
            dataset: ds,
            providers: ctx.providers(&ds.providers)?,
            progress: ctx.progress.clone(),
            cancel: &ctx.cancel,
        };
        let plan = engine::dry_run::plan_dataset(run, req).await;
        plans.push(plan.map_err(|e| e.context(format!("dataset {:?}", ds.name)))?);
    }
    let report = BackupDryRun {
        dry_run: true,
        datasets: plans,
    };
    output::conclude(ctx.json, &report, Ok(()))
}

/// `backup --dry-run`'s report.
#[derive(Debug, Serialize)]
pub struct BackupDryRun {
    pub dry_run: bool,
    pub datasets: Vec<engine::dry_run::DatasetPlan>,
}

impl Report for BackupDryRun {
    fn render_text(&self) -> std::io::Result<()> {
        for d in &self.datasets {
            outln!("dry run: {}", d.describe())?;
        }
        Ok(())
    }
}

/// One dataset's backup with its providers; `None` when nothing was due.
async fn back_up(ctx: &Ctx, ds: &Dataset, req: BackupRequest) -> Result<Option<BackupReport>> {
    let run = DatasetRun {
        cfg: &ctx.cfg,
        dataset: ds,
        providers: ctx.providers(&ds.providers)?,
        progress: ctx.progress.clone(),
        cancel: &ctx.cancel,
    };
    engine::back_up_dataset(run, req).await
}
