//! `offsite sync [--dry-run] [--deep] [DATASET...]`, `sync --repair-provider NAME` and
//! `sync --migrate FROM --to TO [--remove-source]` (aliases: `--sync-providers`,
//! `--repair-provider`, `--migrate`).
//!
//! Parses the arguments, runs `engine::sync` (one listing per provider, gap detection, an
//! optional deep check, the copies, and a migration's verification and removal of the source)
//! and prints its report: the plan with `--dry-run`, else what was copied, also when a late step
//! failed. Exit 3 when a gap could not be filled.

use super::{Ctx, Outcome};
use crate::cli::SyncArgs;
use crate::config::units::human_bytes;
use crate::engine::sync::SyncRun;
use crate::engine::sync::{self, Failed, Mode, SyncContext, SyncDryRun, SyncReport, SyncRequest};
use crate::error::ConfigError;
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;
use std::collections::BTreeMap;

pub async fn run(ctx: &Ctx, args: &SyncArgs) -> Result<Outcome> {
    let mode = mode(args)?;
    let providers = ctx.providers_with(&mode.named())?;
    let names: Vec<String> = providers.iter().map(|p| p.name().to_string()).collect();
    crate::engine::preflight::require(&ctx.cfg, &names, &ctx.cancel).await?;
    if args.datasets.iter().any(|d| ctx.cfg.dataset(d).is_none()) {
        // A name that is not configured may still be on the providers; else exit 2.
        ctx.scan(&providers, &args.datasets, false).await?;
    }
    let cx = SyncContext {
        cfg: &ctx.cfg,
        providers: &providers,
        progress: &ctx.progress,
        cancel: &ctx.cancel,
    };
    let request = SyncRequest {
        mode,
        datasets: &args.datasets,
        deep: args.deep,
        dry_run: args.dry_run,
        remove_source: args.remove_source,
    };
    match sync::run(&cx, &request).await? {
        SyncRun::Planned(plan) => output::conclude(ctx.json, &plan, Ok(())),
        SyncRun::Done(report, late) => {
            ctx.observe(|o| {
                for name in &names {
                    let up = !report.unreachable.contains(name);
                    o.provider_up.insert(name.clone(), up);
                }
            });
            output::conclude(ctx.json, &report, late)
        }
    }
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

/// Exit 3 naming what could not be filled (the first ten failures), else done.
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

/// Shards a dry run would copy of one backup to one destination.
#[derive(Default)]
struct PlannedGroup<'a> {
    shards: u64,
    bytes: u64,
    from: Vec<&'a str>,
}

/// `--dry-run`: one line per backup and destination.
impl Report for SyncDryRun {
    fn render_text(&self) -> std::io::Result<()> {
        let mut groups: BTreeMap<(&str, &str, &str), PlannedGroup> = BTreeMap::new();
        for p in &self.planned {
            let Some(bytes) = p.bytes else { continue };
            let g = groups.entry((&p.dataset, &p.backup_id, &p.to)).or_default();
            g.shards += 1;
            g.bytes += bytes;
            if !g.from.contains(&p.from.as_str()) {
                g.from.push(&p.from);
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
        for m in self.planned.iter().filter(|p| p.bytes.is_none()) {
            outln!(
                "would write the manifest of {:?} {} to {}",
                m.dataset,
                m.backup_id,
                m.to
            )?;
        }
        for u in &self.failed {
            outln!(
                "cannot fill: {} of backup {} of {:?} on {}: {}",
                u.object,
                u.backup_id,
                u.dataset,
                u.to,
                u.error
            )?;
        }
        if self.planned.is_empty() && self.failed.is_empty() {
            outln!("nothing to copy: every provider holds what it should")?;
        }
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        outcome(&self.failed, &[])
    }
}

/// Objects, bytes and server-side copies per destination, then each failure.
impl Report for SyncReport {
    fn render_text(&self) -> std::io::Result<()> {
        let mut per_dest: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for c in &self.copied {
            let e = per_dest.entry(&c.to).or_default();
            e.0 += 1;
            e.1 += c.bytes;
            e.2 += u64::from(c.server_side);
        }
        if per_dest.is_empty() && self.failed.is_empty() {
            outln!("nothing to copy: every provider holds what it should")?;
        }
        for (dest, (n, bytes, server)) in &per_dest {
            let server = match server {
                0 => String::new(),
                n => format!(" ({n} server-side)"),
            };
            outln!(
                "{dest}: copied {n} object(s), {}{server}",
                human_bytes(*bytes)
            )?;
        }
        for f in &self.failed {
            outln!(
                "FAILED {} of backup {} of {:?} on {}: {}",
                f.object,
                f.backup_id,
                f.dataset,
                f.to,
                f.error
            )?;
        }
        if let Some(m) = &self.migration {
            outln!(
                "{} backup(s) verified at the destination",
                m.verified_backups
            )?;
            if let Some(n) = m.removed_objects {
                outln!("{n} object(s) removed from the source")?;
            }
        }
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        outcome(&self.failed, &self.unreachable)
    }
}
