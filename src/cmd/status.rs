//! `offsite status [DATASET]`: every backup x every provider: complete, missing or bad shards,
//! unexpected objects, or how far an unfinished backup got. One listing per provider.
//!
//! Exit 3 when a provider that should hold a backup misses something or holds it damaged, when
//! a backup is unfinished, or when a provider could not be listed. Unexpected objects are shown
//! but are not gaps.

use super::{Ctx, Outcome};
use crate::catalog::{BackupKey, Catalog};
use crate::config::units::human_bytes;
use crate::gaps::{self, BackupFindings, Corrupt, ManifestState, ProviderFindings};
use crate::outln;
use crate::ui;
use anyhow::Result;
use serde_json::{json, Value};

pub async fn run(ctx: &Ctx, dataset: Option<&str>) -> Result<Outcome> {
    let providers = ctx.providers_with(&[])?;
    let datasets: Vec<String> = dataset.map(str::to_string).into_iter().collect();
    let catalog = ctx.scan(&providers, &datasets, true).await?;
    let surveys = gaps::survey(&ctx.cfg, &catalog, &Corrupt::new());
    if ctx.json {
        ui::print_json(&json!({
            "host": catalog.host,
            "backups": surveys.iter().map(|(k, f)| backup_json(k, f)).collect::<Vec<_>>(),
            "unreachable": catalog.unreachable.keys().collect::<Vec<_>>(),
        }))?;
    } else {
        print_table(&catalog, &surveys)?;
    }
    Ok(outcome(
        &catalog,
        &surveys,
        "run `offsite sync` to fill the gaps",
    ))
}

/// Exit 3 with a summary when any backup has gaps or a provider was unreachable.
pub(super) fn outcome(
    catalog: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    advice: &str,
) -> Outcome {
    let mut problems: Vec<String> = catalog
        .unreachable
        .keys()
        .map(|p| format!("provider {p} could not be listed"))
        .collect();
    let gaps: Vec<&(BackupKey, BackupFindings)> =
        surveys.iter().filter(|(_, f)| f.has_gaps()).collect();
    for (k, f) in gaps.iter().take(5) {
        problems.push(gap_summary(k, f));
    }
    if gaps.len() > 5 {
        problems.push(format!("and {} more backups", gaps.len() - 5));
    }
    if problems.is_empty() {
        Outcome::Done
    } else if gaps.iter().all(|(_, f)| f.is_unfinished()) && catalog.unreachable.is_empty() {
        Outcome::Gaps(format!(
            "{}; run `offsite backup` again to resume",
            problems.join("; ")
        ))
    } else {
        Outcome::Gaps(format!("{}; {advice}", problems.join("; ")))
    }
}

fn gap_summary(k: &BackupKey, f: &BackupFindings) -> String {
    if let Some(why) = &f.damaged {
        return format!("backup {} of {:?}: {why}", k.id, k.dataset);
    }
    if !f.is_finished() {
        return format!("backup {} of {:?} is unfinished", k.id, k.dataset);
    }
    let bad: Vec<String> = f
        .providers
        .iter()
        .filter(|p| p.expected && !p.is_whole())
        .map(|p| format!("{}: {}", p.provider, cell(p, true)))
        .collect();
    format!("backup {} of {:?}: {}", k.id, k.dataset, bad.join(", "))
}

/// A provider's state in one word, for JSON.
pub(super) fn provider_state(p: &ProviderFindings, finished: bool) -> &'static str {
    match (p.reachable, finished, p.is_whole()) {
        (false, _, _) => "unreachable",
        (true, false, _) => "unfinished",
        (true, true, true) => "complete",
        (true, true, false) => "incomplete",
    }
}

/// A backup's state in one word.
pub(super) fn backup_state(f: &BackupFindings) -> &'static str {
    if f.damaged.is_some() {
        return "damaged";
    }
    match (f.is_finished(), f.has_gaps()) {
        (false, _) => "unfinished",
        (true, false) => "complete",
        (true, true) => "incomplete",
    }
}

pub(super) fn backup_json(k: &BackupKey, f: &BackupFindings) -> Value {
    json!({
        "dataset": k.dataset,
        "backup_id": k.id.to_string(),
        "kind": k.id.kind,
        "state": backup_state(f),
        "error": f.damaged,
        "shards": f.is_finished().then_some(f.reference.len()),
        "total_bytes": f.is_finished().then(|| f.reference.iter().map(|r| r.length).sum::<u64>()),
        "providers": f.providers.iter().map(|p| json!({
            "provider": p.provider,
            "state": if f.damaged.is_some() && p.reachable { "damaged" } else { provider_state(p, f.is_finished()) },
            "expected": p.expected,
            "missing_shards": p.missing_shards,
            "truncated_shards": p.wrong_size_shards,
            "corrupt_shards": p.corrupt_shards,
            "unexpected_objects": p.unexpected_objects,
            "manifest": p.manifest,
            "manifest_error": p.manifest_error,
            "held": p.held,
        })).collect::<Vec<_>>(),
    })
}

/// What a table cell says about one provider's copy of one backup.
pub(super) fn cell(p: &ProviderFindings, finished: bool) -> String {
    if !p.reachable {
        return "unreachable".into();
    }
    let mut parts = Vec::new();
    if !finished {
        parts.push(format!(
            "unfinished: {} shards, {}",
            p.held.shards,
            human_bytes(p.held.bytes)
        ));
    } else if !p.missing_shards.is_empty() {
        let n = p.missing_shards.len();
        parts.push(format!(
            "missing {n} shard{}",
            if n == 1 { "" } else { "s" }
        ));
    }
    for (n, what) in [
        (p.wrong_size_shards.len(), "truncated"),
        (p.corrupt_shards.len(), "corrupt"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if finished {
        match p.manifest {
            ManifestState::Good => {}
            ManifestState::Missing => parts.push("no manifest".into()),
            ManifestState::Bad => parts.push("bad manifest".into()),
            ManifestState::Disagrees => parts.push("conflicting manifest".into()),
        }
        if parts.is_empty() {
            parts.push("complete".into());
        }
    }
    if !p.unexpected_objects.is_empty() {
        parts.push(format!("{} unexpected", p.unexpected_objects.len()));
    }
    let text = parts.join(", ");
    if p.expected {
        text
    } else {
        format!("({text})")
    }
}

/// A provider's cell for a backup whose manifests cannot be trusted.
pub(super) fn damaged_cell(p: &ProviderFindings) -> String {
    match (p.reachable, p.manifest) {
        (false, _) => "unreachable",
        (true, ManifestState::Bad) => "damaged manifest",
        (true, ManifestState::Disagrees | ManifestState::Good) => "disputed manifest",
        (true, ManifestState::Missing) => "no manifest",
    }
    .into()
}

fn print_table(catalog: &Catalog, surveys: &[(BackupKey, BackupFindings)]) -> std::io::Result<()> {
    if surveys.is_empty() {
        outln!("no backups of host {:?} on the providers", catalog.host)?;
        return Ok(());
    }
    let header: Vec<String> = ["DATASET", "BACKUP", "STATE"]
        .iter()
        .map(|s| s.to_string())
        .chain(catalog.order.iter().cloned())
        .collect();
    let mut rows = vec![header];
    for (k, f) in surveys {
        let mut row = vec![
            k.dataset.clone(),
            k.id.to_string(),
            backup_state(f).to_string(),
        ];
        row.extend(catalog.order.iter().map(|name| match f.provider(name) {
            Some(p) if f.damaged.is_some() => damaged_cell(p),
            Some(p) => cell(p, f.is_finished()),
            None => "-".into(),
        }));
        rows.push(row);
    }
    print_rows(&rows)?;
    if surveys
        .iter()
        .any(|(_, f)| f.providers.iter().any(|p| !p.expected))
    {
        outln!("(parentheses: the provider holds objects of a backup it is not configured for)")?;
    }
    Ok(())
}

/// Prints rows as left-aligned columns.
pub(super) fn print_rows(rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
