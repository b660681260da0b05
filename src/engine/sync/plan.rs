//! Planning a sync, a pure function (STYLE.md §10): the gap findings of every backup in, the
//! copies, manifest writes and unfillable gaps out. Unreachable providers are neither sources
//! nor destinations.

use super::{CopyJob, ManifestJob, Mode, SyncPlan, Unfillable};
use crate::catalog::{BackupKey, Catalog};
use crate::gaps::{BackupFindings, ManifestState};
use crate::layout;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Decides what to copy where.
pub fn plan(catalog: &Catalog, surveys: &[(BackupKey, BackupFindings)], mode: &Mode) -> SyncPlan {
    let mut out = SyncPlan::default();
    for (key, f) in surveys {
        let dests = destinations(catalog, key, f, mode);
        if dests.is_empty() {
            continue;
        }
        let trusted = catalog.backups[key].manifest(&catalog.order);
        if let Some((src, m)) = trusted.filter(|(_, m)| m.erasure.is_some()) {
            if let Mode::Migrate { from, to } = mode {
                super::relocate::plan(catalog, key, f, (src, m), (from, to), &mut out);
            } else {
                super::rebuild::plan_rebuilds(key, f, m, &dests, &mut out);
                plan_manifest(catalog, key, f, &dests, &mut out);
            }
            continue;
        }
        if is_erasure_unfinished(catalog, key) {
            refuse_migrate(key, mode, &mut out);
            continue;
        }
        plan_shards(key, f, &dests, mode, &mut out);
        if let Mode::Migrate { from, to } = mode {
            plan_migrate_tail(catalog, key, f, from, to, &mut out);
        }
        plan_manifest(catalog, key, f, &dests, &mut out);
    }
    out
}

/// An unfinished erasure-coded backup is not migrated (its placement is in the backup host's
/// state, which a migration cannot change): a failure, so that `--remove-source` keeps the
/// source's pieces.
fn refuse_migrate(key: &BackupKey, mode: &Mode, out: &mut SyncPlan) {
    let Mode::Migrate { to, .. } = mode else {
        return;
    };
    out.unfillable.push(Unfillable {
        key: key.clone(),
        object: layout::MANIFEST.into(),
        dest: to.clone(),
        reason: "an unfinished erasure-coded backup is not migrated: finish it first (`offsite backup` resumes it) or discard it (`offsite backup --restart`)".into(),
    });
}

/// An erasure-coded backup with no trusted manifest: its pieces are held, never copied (no
/// provider holds another's piece, and nothing says how long a shard is yet).
fn is_erasure_unfinished(catalog: &Catalog, key: &BackupKey) -> bool {
    let entry = &catalog.backups[key];
    entry.manifest(&catalog.order).is_none()
        && entry.objects.values().flat_map(|o| o.keys()).any(|n| {
            layout::parse_shard_name(n).is_some() && layout::parse_shard_object(n).is_none()
        })
}

/// The providers `mode` brings one backup up to date on.
fn destinations<'a>(
    catalog: &Catalog,
    key: &BackupKey,
    f: &'a BackupFindings,
    mode: &'a Mode,
) -> Vec<&'a str> {
    let wanted = |p: &&crate::gaps::ProviderFindings| p.expected && p.reachable;
    match mode {
        Mode::All => f
            .providers
            .iter()
            .filter(wanted)
            .map(|p| p.provider.as_str())
            .collect(),
        Mode::Repair(name) => f
            .providers
            .iter()
            .filter(|p| wanted(p) && p.provider == *name)
            .map(|p| p.provider.as_str())
            .collect(),
        Mode::Migrate { from, to } => {
            let holds = catalog.backups[key]
                .objects
                .get(from)
                .is_some_and(|o| !o.is_empty());
            if holds && f.provider(to).is_none_or(|p| p.reachable) {
                vec![to.as_str()]
            } else {
                vec![]
            }
        }
    }
}

/// Every shard of the backup's reference that a destination lacks, from the providers that
/// hold it good (a migration's source first); unfillable when none does.
fn plan_shards(
    key: &BackupKey,
    f: &BackupFindings,
    dests: &[&str],
    mode: &Mode,
    out: &mut SyncPlan,
) {
    let bad: HashMap<&str, BTreeSet<u64>> = f
        .providers
        .iter()
        .filter(|p| p.reachable)
        .map(|p| (p.provider.as_str(), p.bad_shards()))
        .collect();
    let mut sources: Vec<&str> = bad.keys().copied().collect();
    sources.sort_by_key(|s| f.providers.iter().position(|p| p.provider == *s));
    if let Mode::Migrate { from, .. } = mode {
        sources.sort_by_key(|s| *s != from.as_str());
    }
    // A destination not in the findings holds nothing of this backup.
    let needs = |d: &str, i: u64| bad.get(d).is_none_or(|b| b.contains(&i));
    for r in &f.reference {
        let ds: Vec<String> = dests
            .iter()
            .filter(|d| needs(d, r.index))
            .map(|d| d.to_string())
            .collect();
        if ds.is_empty() {
            continue;
        }
        let srcs: Vec<String> = sources
            .iter()
            .filter(|s| !bad[**s].contains(&r.index))
            .map(|s| s.to_string())
            .collect();
        if srcs.is_empty() {
            out.unfillable.extend(ds.into_iter().map(|dest| Unfillable {
                key: key.clone(),
                object: r.name.clone(),
                dest,
                reason: "no provider holds a good copy".into(),
            }));
            continue;
        }
        out.copies.push(CopyJob {
            key: key.clone(),
            index: r.index,
            name: r.name.clone(),
            length: r.length,
            sha256: r.sha256.clone(),
            sources: srcs,
            dests: ds,
        });
    }
}

/// The trusted manifest, to every destination without a good one.
pub(super) fn plan_manifest(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    dests: &[&str],
    out: &mut SyncPlan,
) {
    let Some((from, m)) = catalog.backups[key].manifest(&catalog.order) else {
        return;
    };
    let ds: Vec<String> = dests
        .iter()
        .filter(|d| {
            f.provider(d)
                .is_none_or(|p| p.manifest != ManifestState::Good)
        })
        .map(|d| d.to_string())
        .collect();
    if !ds.is_empty() {
        out.manifests.push(ManifestJob {
            key: key.clone(),
            manifest: Arc::new(m.clone()),
            from: from.to_string(),
            dests: ds,
            gate: None,
        });
    }
}

/// A migration copies everything `from` holds: for an unfinished backup that includes shards
/// whose length the names cannot prove yet (taken at `from`'s size; checked at `to` against
/// `from`'s content).
fn plan_migrate_tail(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    from: &str,
    to: &str,
    out: &mut SyncPlan,
) {
    if f.is_finished() {
        return;
    }
    let known: HashSet<&str> = f.reference.iter().map(|r| r.name.as_str()).collect();
    let entry = &catalog.backups[key];
    let at_to = entry.objects.get(to);
    for (name, &size) in entry.objects.get(from).into_iter().flatten() {
        let Some((index, _)) = layout::parse_shard_name(name) else {
            continue;
        };
        if known.contains(name.as_str()) || at_to.and_then(|o| o.get(name)) == Some(&size) {
            continue;
        }
        out.copies.push(CopyJob {
            key: key.clone(),
            index,
            name: name.clone(),
            length: size,
            sha256: None,
            sources: vec![from.to_string()],
            dests: vec![to.to_string()],
        });
    }
}
