//! `offsite list [DATASET]`: the backups the providers hold, read from their manifests.

use super::{Ctx, Outcome};
use crate::catalog::{Catalog, Resolution};
use crate::config::units::human_bytes;
use crate::error::Interrupted;
use crate::layout::{self, BackupKind};
use crate::outln;
use crate::ui;
use anyhow::{bail, Result};

pub async fn run(ctx: &Ctx, dataset: Option<&str>) -> Result<Outcome> {
    let providers = ctx.enabled_providers();
    let catalog = tokio::select! {
        // Cancelled providers end at once too: report the stop, not them.
        biased;
        _ = ctx.cancel.cancelled() => return Err(Interrupted.into()),
        c = Catalog::scan(&providers, &ctx.cfg.host, dataset) => c,
    };
    for (p, e) in &catalog.unreachable {
        tracing::warn!("provider {p} could not be listed: {e}");
    }
    if !providers.is_empty() && catalog.unreachable.len() == providers.len() {
        bail!("no provider could be listed; check the network and `offsite providers`");
    }
    let mut rows = Vec::new();
    for (key, entry) in &catalog.backups {
        let with_manifest: Vec<&String> = entry
            .manifests
            .iter()
            .filter(|(_, m)| m.is_ok())
            .map(|(p, _)| p)
            .collect();
        let holders: Vec<&String> = entry.objects.keys().collect();
        let row = match entry.manifest(&catalog.order) {
            Some((_, m)) => serde_json::json!({
                "dataset": key.dataset,
                "backup_id": key.id.to_string(),
                "kind": m.kind,
                "state": "complete",
                "created": m.created,
                "snapshot": m.snapshot,
                "parent": m.parent.as_ref().map(|p| &p.backup_id),
                "total_bytes": m.total_bytes,
                "shards": m.shards.len(),
                "providers": with_manifest,
            }),
            None => serde_json::json!({
                "dataset": key.dataset,
                "backup_id": key.id.to_string(),
                "kind": key.id.kind,
                // Manifests that cannot be trusted make a damaged backup, never an unfinished one.
                "state": match entry.resolve(&catalog.order) {
                    Resolution::Damaged(_) => "damaged",
                    _ => "unfinished",
                },
                "created": null,
                "snapshot": null,
                "parent": null,
                "total_bytes": null,
                "shards": entry.objects.values().map(|o| o.keys().filter(|n| layout::parse_shard_name(n).is_some()).count()).max(),
                "providers": holders,
            }),
        };
        rows.push(row);
    }
    if ctx.json {
        ui::print_json(&serde_json::json!({
            "host": catalog.host,
            "backups": rows,
            "unreachable": catalog.unreachable.keys().collect::<Vec<_>>(),
        }))?;
        return Ok(Outcome::Done);
    }
    if rows.is_empty() {
        outln!("no backups of host {:?} on the providers", catalog.host)?;
        return Ok(Outcome::Done);
    }
    outln!(
        "{:<20} {:<22} {:<11} {:>10} {:>7}  PROVIDERS",
        "DATASET",
        "BACKUP",
        "STATE",
        "SIZE",
        "SHARDS"
    )?;
    for r in &rows {
        let kind_state = match (r["state"].as_str(), &r["kind"]) {
            (Some("complete"), k) if *k == serde_json::json!(BackupKind::Incremental) => {
                "incremental"
            }
            (Some("complete"), _) => "full",
            _ => "unfinished",
        };
        outln!(
            "{:<20} {:<22} {:<11} {:>10} {:>7}  {}",
            r["dataset"].as_str().unwrap_or_default(),
            r["backup_id"].as_str().unwrap_or_default(),
            kind_state,
            r["total_bytes"]
                .as_u64()
                .map(human_bytes)
                .unwrap_or_else(|| "-".into()),
            r["shards"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            r["providers"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
        )?;
    }
    Ok(Outcome::Done)
}
