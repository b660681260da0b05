//! `offsite verify [DATASET] [--deep] [--provider NAME]`: do the providers hold what the
//! manifests say? The quick check compares one listing per provider with the manifests (sizes
//! only); `--deep` also downloads every shard and checks its SHA-256 (engine::verify).
//! Only finished backups are verified; `status` shows unfinished ones.
//!
//! Exit 3 on any missing, truncated, corrupt or unreadable shard, missing or bad manifest, or
//! provider in scope that could not be listed.

use super::status::{self, cell, print_rows};
use super::{Ctx, Outcome};
use crate::catalog::BackupKey;
use crate::cli::VerifyArgs;
use crate::config::units::human_bytes;
use crate::engine::verify::{self, DeepReport, Limits};
use crate::gaps::{self, BackupFindings, Corrupt, ProviderFindings};
use crate::outln;
use crate::ui;
use anyhow::Result;
use serde_json::{json, Value};

pub async fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<Outcome> {
    let only = args.provider.as_deref();
    let providers = ctx.providers_with(&only.into_iter().collect::<Vec<_>>())?;
    let datasets: Vec<String> = args.dataset.iter().cloned().collect();
    let catalog = ctx.scan(&providers, &datasets, false).await?;
    let quick = gaps::survey(&ctx.cfg, &catalog, &Corrupt::new());
    let deep = if args.deep {
        let limits = Limits {
            shards_in_flight: ctx.cfg.shards_in_flight,
            concurrency: ctx.cfg.concurrency,
        };
        let report = verify::deep_check(
            &catalog.host,
            &quick,
            only,
            &providers,
            limits,
            &ctx.progress,
            &ctx.cancel,
        )
        .await?;
        Some(report)
    } else {
        None
    };
    let surveys = match &deep {
        Some(d) => gaps::survey(&ctx.cfg, &catalog, &d.corrupt),
        None => quick,
    };
    let in_scope = |p: &ProviderFindings| only.map_or(p.expected, |o| p.provider == o);
    let mut rows = vec![vec![
        "DATASET".to_string(),
        "BACKUP".into(),
        "PROVIDER".into(),
        "RESULT".into(),
    ]];
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (key, f) in surveys.iter().filter(|(_, f)| f.is_finished()) {
        let mut provs = Vec::new();
        for p in f.providers.iter().filter(|p| in_scope(p)) {
            let unreadable = unreadable(deep.as_ref(), key, &p.provider);
            let checked = checked(deep.as_ref(), key, &p.provider);
            let mut text = cell(p, true);
            if !unreadable.is_empty() {
                text.push_str(&format!(", {} unreadable", unreadable.len()));
            }
            if deep.is_some() && p.reachable {
                text.push_str(&format!(" ({checked} shards hashed)"));
            }
            if !p.is_whole() || !unreadable.is_empty() {
                problems.push(format!(
                    "backup {} of {:?} on {}: {}",
                    key.id,
                    key.dataset,
                    p.provider,
                    cell(p, true)
                ));
            }
            rows.push(vec![
                key.dataset.clone(),
                key.id.to_string(),
                p.provider.clone(),
                text,
            ]);
            provs.push(provider_json(p, checked, &unreadable));
        }
        docs.push(backup_json(key, f, provs));
    }
    for (key, f) in surveys.iter().filter(|(_, f)| !f.is_finished()) {
        let Some(why) = &f.damaged else { continue };
        problems.push(format!("backup {} of {:?}: {why}", key.id, key.dataset));
        for p in f.providers.iter().filter(|p| in_scope(p)) {
            let text = status::damaged_cell(p);
            rows.push(vec![
                key.dataset.clone(),
                key.id.to_string(),
                p.provider.clone(),
                text,
            ]);
        }
        docs.push(json!({
            "dataset": key.dataset,
            "backup_id": key.id.to_string(),
            "kind": key.id.kind,
            "state": "damaged",
            "error": why,
            "providers": f.providers.iter().filter(|p| in_scope(p)).map(|p| json!({
                "provider": p.provider,
                "state": "damaged",
                "manifest": p.manifest,
                "manifest_error": p.manifest_error,
            })).collect::<Vec<_>>(),
        }));
    }
    let unfinished: Vec<Value> = surveys
        .iter()
        .filter(|(_, f)| f.is_unfinished())
        .map(|(k, _)| json!({"dataset": k.dataset, "backup_id": k.id.to_string()}))
        .collect();
    if ctx.json {
        ui::print_json(&json!({
            "host": catalog.host,
            "deep": args.deep,
            "backups": docs,
            "unfinished": unfinished,
            "unreachable": catalog.unreachable.keys().collect::<Vec<_>>(),
            "checked_bytes": deep.as_ref().map(|d| d.bytes),
        }))?;
    } else {
        print_rows(&rows)?;
        if !unfinished.is_empty() {
            outln!(
                "{} unfinished backup(s) not verified; see `offsite status`",
                unfinished.len()
            )?;
        }
        if let Some(d) = &deep {
            outln!("{} checked by SHA-256", human_bytes(d.bytes))?;
        }
    }
    for p in catalog.unreachable.keys() {
        if only.is_none_or(|o| o == p) {
            problems.push(format!("provider {p} could not be listed"));
        }
    }
    Ok(outcome(problems))
}

fn outcome(problems: Vec<String>) -> Outcome {
    if problems.is_empty() {
        return Outcome::Done;
    }
    let n = problems.len();
    let mut shown: Vec<String> = problems.into_iter().take(10).collect();
    if n > 10 {
        shown.push(format!("and {} more", n - 10));
    }
    Outcome::Gaps(format!(
        "verify found problems: {}; run `offsite sync` (with --deep for corrupt shards) to repair them",
        shown.join("; ")
    ))
}

fn unreadable(deep: Option<&DeepReport>, key: &BackupKey, provider: &str) -> Vec<u64> {
    deep.and_then(|d| d.unreadable.get(key))
        .and_then(|m| m.get(provider))
        .map(|v| v.iter().map(|(i, _)| *i).collect())
        .unwrap_or_default()
}

fn checked(deep: Option<&DeepReport>, key: &BackupKey, provider: &str) -> u64 {
    deep.and_then(|d| d.good.get(key))
        .and_then(|m| m.get(provider))
        .copied()
        .unwrap_or(0)
}

fn provider_json(p: &ProviderFindings, checked: u64, unreadable: &[u64]) -> Value {
    let state = match status::provider_state(p, true) {
        "complete" if !unreadable.is_empty() => "unverified",
        s => s,
    };
    json!({
        "provider": p.provider,
        "state": state,
        "checked_shards": checked,
        "missing_shards": p.missing_shards,
        "truncated_shards": p.wrong_size_shards,
        "corrupt_shards": p.corrupt_shards,
        "unreadable_shards": unreadable,
        "unexpected_objects": p.unexpected_objects,
        "manifest": p.manifest,
    })
}

fn backup_json(key: &BackupKey, f: &BackupFindings, providers: Vec<Value>) -> Value {
    let ok = providers
        .iter()
        .all(|p| p["state"].as_str() == Some("complete"));
    json!({
        "dataset": key.dataset,
        "backup_id": key.id.to_string(),
        "kind": key.id.kind,
        "state": if ok { "complete" } else { "incomplete" },
        "shards": f.reference.len(),
        "providers": providers,
    })
}
