//! Migrating an erasure-coded backup (`sync --migrate FROM --to TO`). Each piece lives on one
//! provider, so TO takes FROM's slot in the placement ([`Manifest::relocated`]): FROM's good
//! pieces are copied to TO, its missing or bad ones rebuilt there from `k` others, and the
//! relocated manifest (placement revision raised) goes to every holder, but only once every
//! piece TO should hold is confirmed by its listing. FROM keeps its pieces and its old
//! manifest; `--remove-source` deletes them after the check at TO (see `migrate`).
//!
//! A holder that cannot be reached keeps the old manifest: both agree with the listings, and
//! the catalog trusts the higher revision (`catalog::entry`), so restore reads TO's pieces;
//! the next `sync` rewrites the stale copy.

use super::plan::plan_manifest;
use super::rebuild::{plan_rebuilds, plan_rebuilds_to};
use super::{CopyJob, ManifestJob, SyncPlan, Unfillable};
use crate::catalog::{BackupKey, Catalog};
use crate::gaps::BackupFindings;
use crate::layout;
use crate::manifest::Manifest;
use std::sync::Arc;

/// Plans the migration of one erasure-coded backup whose trusted manifest `m` came from `src`.
pub(super) fn plan(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    (src, m): (&str, &Manifest),
    (from, to): (&str, &str),
    out: &mut SyncPlan,
) {
    let holders = &m
        .erasure
        .as_ref()
        .expect("an erasure-coded backup")
        .providers;
    let holds = |p: &str| holders.iter().any(|h| h == p);
    match (holds(from), holds(to)) {
        (true, false) => relocate(catalog, key, f, (src, m), (from, to), out),
        // Migrated before (FROM only keeps what `--remove-source` did not delete yet): bring
        // TO's pieces and manifest up to date, as a repair of TO would.
        (false, true) => {
            plan_rebuilds(key, f, m, &[to], out);
            plan_manifest(catalog, key, f, &[to], out);
        }
        (both, _) => out.unfillable.push(Unfillable {
            key: key.clone(),
            object: layout::MANIFEST.into(),
            dest: to.to_string(),
            reason: if both {
                format!("{to} already holds pieces of this erasure-coded backup")
            } else {
                format!(
                    "its manifest places no piece on {from}: what {from} holds of it is not part of it"
                )
            },
        }),
    }
}

/// FROM's slot goes to TO: copies of FROM's good pieces, rebuilds of its bad ones, and the
/// relocated manifest to every holder that was listed, gated on TO.
fn relocate(
    catalog: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    (src, m): (&str, &Manifest),
    (from, to): (&str, &str),
    out: &mut SyncPlan,
) {
    let bad = f.provider(from).map(|p| p.bad_shards()).unwrap_or_default();
    let on_from = f
        .reference
        .iter()
        .filter(|r| r.holder.as_deref() == Some(from));
    // Copied even when TO lists it already: a size says nothing of a piece left by an
    // interrupted run, and the check after the copies reads every piece at TO.
    for r in on_from.filter(|r| !bad.contains(&r.index)) {
        out.copies.push(CopyJob {
            key: key.clone(),
            index: r.index,
            name: r.name.clone(),
            length: r.length,
            sha256: r.sha256.clone(),
            sources: vec![from.to_string()],
            dests: vec![to.to_string()],
        });
    }
    plan_rebuilds_to(key, f, m, out, |holder, good| {
        (holder == from && !good).then(|| to.to_string())
    });
    let moved = m.relocated(from, to).expect("FROM is a holder");
    let listed = |p: &&String| catalog.order.contains(p) && !catalog.unreachable.contains_key(*p);
    let holders = &moved
        .erasure
        .as_ref()
        .expect("still erasure-coded")
        .providers;
    out.manifests.push(ManifestJob {
        key: key.clone(),
        dests: holders.iter().filter(listed).cloned().collect(),
        manifest: Arc::new(moved),
        from: src.to_string(),
        gate: Some(to.to_string()),
    });
}
