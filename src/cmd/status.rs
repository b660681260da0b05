//! `offsite status [DATASET]`: every backup x every provider: complete, missing or bad shards,
//! unexpected objects, or how far an unfinished backup got. One listing per provider.
//!
//! Exit 3 when a provider that should hold a backup misses something or holds it damaged, when
//! a backup is unfinished, when a dataset's newest backup is empty (0 bytes), or when a
//! provider could not be listed. Unexpected objects are shown
//! but are not gaps. Erasure-coded backups also show their shards at full strength, degraded
//! (some piece missing or bad, still restorable: exit 3) and lost (fewer than `k` good pieces:
//! the backup cannot be restored, exit 1 after the table).

use super::table::print_rows;
use super::{Ctx, Outcome};
use crate::engine::stale;
use crate::engine::status::{self, describe, describe_damaged, describe_strength, StatusReport};
use crate::gaps::{self, Corrupt};
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;

pub async fn run(ctx: &Ctx, dataset: Option<&str>) -> Result<Outcome> {
    let providers = ctx.providers_with(&[])?;
    let datasets: Vec<String> = dataset.map(str::to_string).into_iter().collect();
    let catalog = ctx.scan(&providers, &datasets, true).await?;
    let surveys = gaps::survey(&ctx.cfg, &catalog, &Corrupt::new());
    let mut report =
        status::status_report(&catalog, &surveys, "run `offsite sync` to fill the gaps");
    report.stale = stale::stale(&ctx.cfg, &catalog, &datasets, std::time::SystemTime::now());
    report.gaps = stale::add_to(report.gaps.take(), &report.stale);
    ctx.observe(|o| o.surveyed(&surveys));
    let lost = report
        .lost
        .clone()
        .map_or(Ok(()), |why| Err(anyhow::anyhow!(why)));
    output::conclude(ctx.json, &report, lost)
}

impl Report for StatusReport {
    fn render_text(&self) -> std::io::Result<()> {
        if self.backups.is_empty() {
            outln!("no backups of host {:?} on the providers", self.host)?;
            return Ok(());
        }
        let erasure = self.backups.iter().any(|b| b.strength.is_some());
        let header: Vec<String> = ["DATASET", "BACKUP", "STATE"]
            .iter()
            .map(|s| s.to_string())
            .chain(erasure.then(|| "SHARDS".to_string()))
            .chain(self.order.iter().cloned())
            .collect();
        let mut rows = vec![header];
        for b in &self.backups {
            let mut row = vec![
                b.dataset.clone(),
                b.backup_id.clone(),
                b.state.as_str().to_string(),
            ];
            if erasure {
                row.push(b.strength.as_ref().map_or("-".into(), describe_strength));
            }
            row.extend(self.order.iter().map(|name| {
                match b.providers.iter().find(|c| c.findings.provider == *name) {
                    Some(c) if b.error.is_some() => describe_damaged(&c.findings),
                    Some(c) => describe(&c.findings, b.finished),
                    None => "-".into(),
                }
            }));
            rows.push(row);
        }
        print_rows(&rows)?;
        for s in &self.stale {
            outln!("{}", s.describe())?;
        }
        let unexpected =
            |b: &status::BackupStatus| b.providers.iter().any(|c| !c.findings.expected);
        if self.backups.iter().any(unexpected) {
            outln!(
                "(parentheses: the provider holds objects of a backup it is not configured for)"
            )?;
        }
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        match &self.gaps {
            Some(gaps) => Outcome::Gaps(gaps.clone()),
            None => Outcome::Done,
        }
    }
}
