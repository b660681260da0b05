//! `offsite hosts` and `offsite list --all-hosts`: the hosts whose backups the providers hold.

use super::table::print_rows;
use super::{Ctx, Outcome};
use crate::engine::hosts::{self, HostsReport};
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;

pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    // Disabled providers too: on a new machine any copy will do (`restore --from` takes them).
    let names: Vec<String> = ctx.cfg.providers.iter().map(|p| p.name.clone()).collect();
    let providers = ctx.providers(&names)?;
    let report = hosts::hosts(&providers, &ctx.cfg.host).await;
    if !providers.is_empty() && report.unreachable.len() == providers.len() {
        anyhow::bail!(
            "no provider could be listed ({}): check the network and `offsite check`",
            report.unreachable.join(", ")
        );
    }
    output::conclude(ctx.json, &report, Ok(()))
}

impl Report for HostsReport {
    fn render_text(&self) -> std::io::Result<()> {
        if self.hosts.is_empty() {
            return outln!("no offsite backups on the providers");
        }
        let mut rows = vec![["HOST", "DATASETS", "BACKUPS", "NEWEST", "PROVIDERS"]
            .map(String::from)
            .to_vec()];
        for h in &self.hosts {
            let newest = h
                .newest_time
                .as_deref()
                .map(|t| t.replacen('T', " ", 1))
                .unwrap_or_else(|| "-".into());
            let host = match h.host == self.this_host {
                true => format!("{} (this host)", h.host),
                false => h.host.clone(),
            };
            let (datasets, backups) = (h.datasets.len().to_string(), h.backups.to_string());
            rows.push(vec![host, datasets, backups, newest, h.providers.join(",")]);
        }
        print_rows(&rows)?;
        let example = &self.hosts[0];
        outln!(
            "\nrestore with: offsite --host {} list, then offsite --host {} restore {} \
             --target ... (or --output FILE)",
            example.host,
            example.host,
            example
                .datasets
                .first()
                .map(String::as_str)
                .unwrap_or("DATASET")
        )
    }
}
