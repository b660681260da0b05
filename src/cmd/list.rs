//! `offsite list [DATASET]`: the backups the providers hold, read from their manifests.

use super::{Ctx, Outcome};
use crate::config::units::human_bytes;
use crate::engine::list::{self, ListReport, ListedBackup};
use crate::layout::BackupKind;
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;

pub async fn run(ctx: &Ctx, dataset: Option<&str>) -> Result<Outcome> {
    let providers = ctx.providers_with(&[])?;
    let datasets: Vec<String> = dataset.map(str::to_string).into_iter().collect();
    // Hashes too, as `status` lists them: the same listings give the same verdicts.
    let catalog = ctx.scan(&providers, &datasets, true).await?;
    let mut report = list::list_report(&catalog);
    let surveys = crate::gaps::survey(&ctx.cfg, &catalog, &crate::gaps::Corrupt::new());
    list::judge(&mut report, &surveys);
    output::conclude(ctx.json, &report, Ok(()))
}

impl Report for ListReport {
    fn render_text(&self) -> std::io::Result<()> {
        if self.backups.is_empty() {
            outln!("no backups of host {:?} on the providers", self.host)?;
            return Ok(());
        }
        outln!(
            "{:<20} {:<28} {:<5} {:<11} {:>10} {:>10} {:>7}  PROVIDERS",
            "DATASET",
            "BACKUP",
            "KIND",
            "STATE",
            "SIZE",
            "STORED",
            "SHARDS"
        )?;
        let size = |n: Option<u64>| n.map(human_bytes).unwrap_or_else(|| "-".into());
        for b in &self.backups {
            outln!(
                "{:<20} {:<28} {:<5} {:<11} {:>10} {:>10} {:>7}  {}",
                b.dataset,
                b.backup_id,
                match b.kind {
                    BackupKind::Full => "full",
                    BackupKind::Incremental => "incr",
                },
                b.state.as_str(),
                size(b.total_bytes),
                size(b.stored_bytes),
                b.shards
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                providers(b),
            )?;
        }
        Ok(())
    }
}

/// The PROVIDERS column: `a,b,c`, and the code of an erasure-coded backup: `a,b,c (2+1)`.
fn providers(b: &ListedBackup) -> String {
    match &b.erasure {
        Some(e) => format!("{} (erasure {e})", b.providers.join(",")),
        None => b.providers.join(","),
    }
}
