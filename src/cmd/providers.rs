//! `offsite providers`: each provider reachable? free space? how many objects offsite keeps.

use super::{Ctx, Outcome};
use crate::error::Interrupted;
use crate::outln;
use crate::provider;
use crate::redact;
use crate::ui::{self, opt_bytes};
use anyhow::{bail, Result};

pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let host = &ctx.cfg.host;
    let checks = ctx.cfg.providers.iter().map(|pc| async move {
        let p = provider::from_config(&ctx.cfg, pc, &ctx.cancel);
        let (listing, about) = tokio::join!(p.list(host), p.about());
        let (reachable, objects, bytes, error) = match listing {
            Ok(l) => (
                true,
                Some(l.len()),
                Some(l.iter().map(|o| o.size).sum::<u64>()),
                None,
            ),
            Err(e) => (false, None, None, Some(redact::text(&e.to_string()))),
        };
        let usage = about.ok();
        serde_json::json!({
            "provider": pc.name,
            "remote": redact::remote(&pc.remote),
            "enabled": pc.enabled,
            "priority": pc.priority,
            "reachable": reachable,
            "objects": objects,
            "bytes": bytes,
            "free": usage.as_ref().and_then(|u| u.free),
            "total": usage.as_ref().and_then(|u| u.total),
            "error": error,
        })
    });
    let rows = tokio::select! {
        // Cancelled providers end at once too: report the stop, not them.
        biased;
        _ = ctx.cancel.cancelled() => return Err(Interrupted.into()),
        r = futures::future::join_all(checks) => r,
    };
    if ctx.json {
        ui::print_json(&serde_json::json!({ "host": host, "providers": rows }))?;
    } else {
        outln!(
            "{:<12} {:<9} {:>8} {:>10} {:>10}  REMOTE",
            "PROVIDER",
            "STATE",
            "OBJECTS",
            "STORED",
            "FREE"
        )?;
        for r in &rows {
            let state = match (r["enabled"].as_bool(), r["reachable"].as_bool()) {
                (Some(false), _) => "disabled",
                (_, Some(true)) => "ok",
                _ => "DOWN",
            };
            outln!(
                "{:<12} {:<9} {:>8} {:>10} {:>10}  {}",
                r["provider"].as_str().unwrap_or_default(),
                state,
                r["objects"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                opt_bytes(r["bytes"].as_u64()),
                opt_bytes(r["free"].as_u64()),
                r["remote"].as_str().unwrap_or_default(),
            )?;
            if let Some(e) = r["error"].as_str() {
                outln!("             {e}")?;
            }
        }
    }
    let down: Vec<&str> = rows
        .iter()
        .filter(|r| r["enabled"].as_bool() == Some(true) && r["reachable"].as_bool() != Some(true))
        .filter_map(|r| r["provider"].as_str())
        .collect();
    if !down.is_empty() {
        bail!("provider(s) not reachable: {}", down.join(", "));
    }
    Ok(Outcome::Done)
}
