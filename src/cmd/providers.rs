//! `offsite providers`: each provider reachable? free space? how many objects offsite keeps.
//! Exit 1 after the table when an enabled provider could not be listed.

use super::{Ctx, Outcome};
use crate::engine::providers::{self, ProvidersReport};
use crate::outln;
use crate::output::{self, Report};
use crate::ui::opt_bytes;
use anyhow::{anyhow, Result};

pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let report = providers::check(&ctx.cfg, &ctx.cancel).await?;
    let down = report.down();
    let late = match down.is_empty() {
        true => Ok(()),
        false => Err(anyhow!("provider(s) not reachable: {}", down.join(", "))),
    };
    output::conclude(ctx.json, &report, late)
}

impl Report for ProvidersReport {
    fn render_text(&self) -> std::io::Result<()> {
        outln!(
            "{:<12} {:<9} {:>8} {:>10} {:>10}  REMOTE",
            "PROVIDER",
            "STATE",
            "OBJECTS",
            "STORED",
            "FREE"
        )?;
        for p in &self.providers {
            let state = match (p.enabled, p.reachable) {
                (false, _) => "disabled",
                (true, true) => "ok",
                (true, false) => "DOWN",
            };
            outln!(
                "{:<12} {:<9} {:>8} {:>10} {:>10}  {}",
                p.provider,
                state,
                p.objects
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                opt_bytes(p.bytes),
                opt_bytes(p.free),
                p.remote,
            )?;
            if let Some(e) = &p.error {
                outln!("             {e}")?;
            }
        }
        Ok(())
    }
}
