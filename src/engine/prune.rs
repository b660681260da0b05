//! Retention on the providers: which backups to delete ([`plan`], pure) and deleting them
//! ([`execute`]).
//!
//! Guarantees:
//! - Chains are resolved by the manifests' parent links, never by time. A chain is kept whole,
//!   and every backup a kept backup needs (its ancestors, complete or not) is kept.
//! - Only restorable chains (a full backup with every shard on some provider at its size) count
//!   toward `keep_chains`, so the newest restorable chain is never deleted. A chain that cannot
//!   be restored is never deleted either: `sync` may still repair it.
//! - Unfinished backups (objects but no manifest anywhere) are debris only when older than the
//!   newest complete backup of their dataset; a newer one may still be resumed.
//! - On each provider, a backup's manifest is deleted before its shards, and its shards are left
//!   alone if the manifest delete failed, so a half-pruned backup never looks restorable.
//! - Providers are worked on in parallel (each provider's `Limit` bounds its deletions at
//!   once); a failing provider is reported and the others go on.

mod grid;

pub use grid::Grid;

use crate::catalog::ancestors::{ancestors, Ancestors, Link, Lookup, WalkEnd};
use crate::catalog::{Catalog, Objects};
use crate::error::ProviderError;
use crate::layout::{self, BackupId};
use crate::progress::Progress;
use crate::provider::DynProvider;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use tokio_util::sync::CancellationToken;

/// One backup of a dataset as the providers show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A good manifest on some provider, with its parent link (`None` for a full backup).
    Complete {
        id: BackupId,
        parent: Option<BackupId>,
        /// Every shard its manifest lists is on some provider at its size.
        restorable: bool,
    },
    /// Objects, but no provider lists a manifest.
    Unfinished(BackupId),
}

/// What retention decided for one dataset. Every list is sorted oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Complete backups that stay.
    pub keep: Vec<BackupId>,
    /// Complete backups of chains older than the kept ones.
    pub delete: Vec<BackupId>,
    /// Unfinished backups older than the newest complete one and needed by no kept backup.
    pub debris: Vec<BackupId>,
    /// Kept backups that cannot be restored: a shard, or a backup of their chain, is missing
    /// on every provider. Not counted toward `keep_chains`; left for `sync` to repair.
    pub unrestorable: Vec<BackupId>,
    /// Why each kept backup stays: `keep_chains`, `daily 2026-11-21`, `parent of ID`, ...
    pub reasons: BTreeMap<BackupId, Vec<String>>,
}

/// A dataset's retention rules: `keep_chains` and the grid; a backup any rule keeps stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub chains: Option<NonZeroU32>,
    pub grid: Grid,
}

impl Retention {
    /// No rule: `prune` leaves the dataset alone.
    pub fn is_empty(&self) -> bool {
        self.chains.is_none() && self.grid.is_empty()
    }
}

/// Decides what to keep of one dataset's backups with `keep_chains` full chains.
pub fn plan(seen: &[Seen], keep_chains: NonZeroU32) -> PrunePlan {
    plan_with(
        seen,
        &Retention {
            chains: Some(keep_chains),
            grid: Grid::default(),
        },
    )
}

/// Decides what to keep of one dataset's backups under `rules`.
///
/// `keep_chains`: the `keep_chains` newest restorable full backups and every backup made since
/// the oldest of them, each with its whole chain (by parent links), so an incremental made
/// after the boundary keeps the older chain it depends on. Fewer restorable full chains than
/// `keep_chains`: every complete backup is kept. The grid ([`grid::kept`]) picks among the
/// backups whose whole chain is restorable. Never deleted (left for `sync`): a chain whose
/// first backup is not a restorable full, and, with a grid, an unrestorable backup newer than
/// every restorable one. An unrestorable backup on a good full's chain that no rule keeps and
/// no kept backup needs is deleted, as `keep_chains` deletes an older chain. Every backup a
/// kept one needs is kept.
pub fn plan_with(seen: &[Seen], rules: &Retention) -> PrunePlan {
    let Indexed {
        parents,
        intact,
        unfinished,
    } = index(seen);
    let mut why: BTreeMap<&BackupId, Vec<String>> = BTreeMap::new();
    if let Some(n) = rules.chains {
        for id in by_chains(&parents, &intact, n) {
            why.entry(id).or_default().push("keep_chains".into());
        }
    }
    let candidates: Vec<&BackupId> = parents
        .keys()
        .filter(|id| restorable_chain(&parents, &intact, id))
        .copied()
        .collect();
    for (id, rules) in grid::kept(&candidates, &rules.grid) {
        why.entry(id).or_default().extend(rules);
    }
    // Never deleted: a chain without a restorable full backup at its start, and (with a grid)
    // an unrestorable backup newer than every restorable one.
    let good_root = |id: &BackupId| parents.get(id) == Some(&None) && intact.contains(id);
    let newest_good = candidates.last();
    for id in parents.keys().filter(|id| !candidates.contains(id)) {
        let newer = !rules.grid.is_empty() && newest_good.is_none_or(|n| *id > n);
        if newer || !good_root(top(&parents, id)) {
            let rule = "its chain cannot be restored: left for `offsite sync` to repair";
            why.entry(id).or_default().push(rule.into());
        }
    }
    let mut keep: BTreeSet<&BackupId> = why.keys().copied().collect();
    let needed = close_over_ancestors(&parents, &mut keep);
    for (child, parent) in &parents {
        match parent {
            Some(p) if keep.contains(child) && keep.contains(p) && !why.contains_key(p) => {
                why.entry(p).or_default().push(format!("parent of {child}"));
            }
            _ => {}
        }
    }
    let newest = parents.keys().next_back();
    PrunePlan {
        unrestorable: keep
            .iter()
            .filter(|id| !restorable_chain(&parents, &intact, id))
            .map(|id| (*id).clone())
            .collect(),
        delete: parents
            .keys()
            .filter(|id| !keep.contains(*id))
            .map(|id| (*id).clone())
            .collect(),
        debris: unfinished
            .iter()
            .filter(|id| newest.is_some_and(|n| **id < *n) && !needed.contains(**id))
            .map(|id| (*id).clone())
            .collect(),
        keep: keep.into_iter().cloned().collect(),
        reasons: why.into_iter().map(|(id, r)| (id.clone(), r)).collect(),
    }
}

/// What `keep_chains = n` keeps: the `n` newest restorable full chains and everything made
/// since the oldest of them (each with its chain); everything when there are not more than `n`.
/// Chains whose first backup is not a restorable full are left to the caller.
fn by_chains<'a>(
    parents: &BTreeMap<&'a BackupId, Option<&'a BackupId>>,
    intact: &BTreeSet<&'a BackupId>,
    n: NonZeroU32,
) -> BTreeSet<&'a BackupId> {
    let good_root = |id: &BackupId| parents.get(id) == Some(&None) && intact.contains(id);
    let mut roots: Vec<&BackupId> = parents.keys().filter(|id| good_root(id)).copied().collect();
    roots.sort_unstable_by(|a, b| b.cmp(a));
    match roots.get(n.get() as usize - 1) {
        Some(boundary) if roots.len() > n.get() as usize => {
            let kept_tops: BTreeSet<&BackupId> = parents
                .keys()
                .filter(|id| **id >= *boundary)
                .map(|id| top(parents, id))
                .collect();
            parents
                .keys()
                .filter(|id| kept_tops.contains(top(parents, id)))
                .copied()
                .collect()
        }
        _ => parents.keys().copied().collect(),
    }
}

/// The walk up `id`'s chain through the complete backups in `parents`.
fn chain_of<'m, 'a>(
    parents: &'m BTreeMap<&'a BackupId, Option<&'a BackupId>>,
    id: &'a BackupId,
) -> Ancestors<&'a BackupId, &'a BackupId, impl Lookup<&'a BackupId, &'a BackupId> + 'm> {
    ancestors(id, move |at: &&'a BackupId| {
        let (&at, parent) = parents.get_key_value(at)?;
        Some((at, parent.map_or(Link::Root, Link::Parent)))
    })
}

/// One dataset's backups, indexed for [`plan`].
struct Indexed<'a> {
    /// Complete backups to their parent links.
    parents: BTreeMap<&'a BackupId, Option<&'a BackupId>>,
    /// Complete backups with every shard on some provider.
    intact: BTreeSet<&'a BackupId>,
    unfinished: BTreeSet<&'a BackupId>,
}

fn index(seen: &[Seen]) -> Indexed<'_> {
    let mut out = Indexed {
        parents: BTreeMap::new(),
        intact: BTreeSet::new(),
        unfinished: BTreeSet::new(),
    };
    for s in seen {
        match s {
            Seen::Complete {
                id,
                parent,
                restorable,
            } => {
                out.parents.insert(id, parent.as_ref());
                if *restorable {
                    out.intact.insert(id);
                }
            }
            Seen::Unfinished(id) => {
                out.unfinished.insert(id);
            }
        }
    }
    out
}

/// The oldest ancestor of `id` that is complete: its full backup, or for a broken chain the
/// backup whose parent is missing (or not older than it).
fn top<'a>(
    parents: &BTreeMap<&'a BackupId, Option<&'a BackupId>>,
    id: &'a BackupId,
) -> &'a BackupId {
    chain_of(parents, id).last().unwrap_or(id)
}

/// Whether `id` and every backup up its chain to a full one are restorable.
fn restorable_chain(
    parents: &BTreeMap<&BackupId, Option<&BackupId>>,
    intact: &BTreeSet<&BackupId>,
    id: &BackupId,
) -> bool {
    let mut walk = chain_of(parents, id);
    walk.by_ref().all(|at| intact.contains(at)) && walk.end() == Some(&WalkEnd::Root)
}

/// Adds every complete ancestor of a kept backup to `keep`; returns every id a kept backup
/// links to, complete or not.
fn close_over_ancestors<'a>(
    parents: &BTreeMap<&'a BackupId, Option<&'a BackupId>>,
    keep: &mut BTreeSet<&'a BackupId>,
) -> BTreeSet<&'a BackupId> {
    let mut needed = BTreeSet::new();
    let mut todo: Vec<&BackupId> = keep.iter().copied().collect();
    while let Some(id) = todo.pop() {
        let mut walk = chain_of(parents, id);
        for at in walk.by_ref() {
            // A kept backup met on the way is walked (or will be) from its own start.
            if at != id && !keep.insert(at) {
                break;
            }
            needed.extend(parents.get(at).copied().flatten());
        }
        // A parent not older than its child is still needed by it: keep it and its chain.
        if let Some(&WalkEnd::NotOlder(p)) = walk.end() {
            if keep.insert(p) {
                todo.push(p);
            }
        }
    }
    needed
}

/// One dataset's backups read from a catalog.
#[derive(Debug, Default)]
pub struct DatasetView {
    pub seen: Vec<Seen>,
    /// Backups with a manifest that no provider could give us readable: their links are
    /// unknown, so nothing of the dataset may be pruned. (id, why)
    pub unreadable: Vec<(BackupId, String)>,
}

/// Reads one dataset's backups out of `catalog`.
pub fn view(catalog: &Catalog, dataset: &str) -> DatasetView {
    let mut out = DatasetView::default();
    for (key, entry) in catalog.backups.iter().filter(|(k, _)| k.dataset == dataset) {
        let id = key.id.clone();
        if let Some((_, m)) = entry.manifest(&catalog.order) {
            match m.parent.as_ref().map(|p| BackupId::parse(&p.backup_id)) {
                Some(None) => out
                    .unreadable
                    .push((id, "its manifest's parent backup id is invalid".into())),
                parent => out.seen.push(Seen::Complete {
                    id,
                    parent: parent.flatten(),
                    restorable: entry.restorable(m),
                }),
            }
        } else if entry.manifests.is_empty() {
            out.seen.push(Seen::Unfinished(id));
        } else {
            let why = entry
                .manifests
                .iter()
                .filter_map(|(p, m)| m.as_ref().err().map(|e| format!("{p}: {e}")))
                .collect::<Vec<_>>()
                .join("; ");
            out.unreadable.push((id, why));
        }
    }
    out
}

/// What one provider deletes of one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// `<host>/<dataset-key>/<backup-id>`.
    pub dir: String,
    /// Size of its manifest, if the provider holds one.
    pub manifest: Option<u64>,
    /// Every other object: name and size.
    pub others: Vec<(String, u64)>,
}

impl Doomed {
    pub fn bytes(&self) -> u64 {
        self.manifest.unwrap_or(0) + self.others.iter().map(|(_, s)| s).sum::<u64>()
    }
}

/// Provider name to what it deletes.
pub type Work = BTreeMap<String, Vec<Doomed>>;

/// Adds the objects of `ids` (backups of `dataset`) to `work`, per provider that holds them.
pub fn add_work(catalog: &Catalog, dataset: &str, ids: &[BackupId], work: &mut Work) {
    for id in ids {
        let key = crate::catalog::BackupKey {
            dataset: dataset.to_string(),
            id: id.clone(),
        };
        let Some(entry) = catalog.backups.get(&key) else {
            continue;
        };
        for (provider, objects) in &entry.objects {
            work.entry(provider.clone())
                .or_default()
                .push(doomed(&catalog.host, &key, objects));
        }
    }
}

fn doomed(host: &str, key: &crate::catalog::BackupKey, objects: &Objects) -> Doomed {
    Doomed {
        dir: layout::backup_dir(host, &key.dataset, &key.id),
        manifest: objects.get(layout::MANIFEST).copied(),
        others: objects
            .iter()
            .filter(|(n, _)| n.as_str() != layout::MANIFEST)
            .map(|(n, s)| (n.clone(), *s))
            .collect(),
    }
}

/// What one provider's deletions came to.
#[derive(Debug, Clone, Default)]
pub struct ProviderResult {
    pub provider: String,
    /// Bytes of the objects deleted (from the listing).
    pub freed: u64,
    pub deleted: u64,
    /// Objects left in place: their manifest could not be deleted, or the run was interrupted.
    pub skipped: u64,
    pub errors: Vec<ProviderError>,
}

/// Deletes `work`: every provider in parallel, as many deletions at once as each provider's
/// `Limit` allows. Stops starting deletions once `cancel` fires.
pub async fn execute(
    providers: &[DynProvider],
    work: Work,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Vec<ProviderResult> {
    let names: Vec<String> = work.keys().cloned().collect();
    let total = work.values().flatten().map(Doomed::bytes).sum();
    progress.begin("pruning", Some(total), &names);
    let runs = work.into_iter().filter_map(|(name, doomed)| {
        let p = providers.iter().find(|p| p.name() == name)?.clone();
        Some(async move { prune_provider(&p, doomed, progress, cancel).await })
    });
    let results = futures::future::join_all(runs).await;
    progress.finish();
    results
}

/// One provider: manifests first, then the shards of the backups whose manifest is gone.
async fn prune_provider(
    p: &DynProvider,
    doomed: Vec<Doomed>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> ProviderResult {
    let mut result = ProviderResult {
        provider: p.name().to_string(),
        ..Default::default()
    };
    let manifests = doomed.iter().enumerate().filter_map(|(i, d)| {
        d.manifest
            .map(|size| (i, format!("{}/{}", d.dir, layout::MANIFEST), size))
    });
    let gone: BTreeSet<usize> = delete_all(p, manifests, progress, cancel, &mut result)
        .await
        .into_iter()
        .collect();
    let others = doomed.iter().enumerate().flat_map(|(i, d)| {
        d.others
            .iter()
            .map(move |(name, size)| (i, format!("{}/{name}", d.dir), *size))
    });
    let (ready, blocked): (Vec<_>, Vec<_>) =
        others.partition(|(i, _, _)| doomed[*i].manifest.is_none() || gone.contains(i));
    result.skipped += blocked.len() as u64;
    delete_all(p, ready.into_iter(), progress, cancel, &mut result).await;
    result
}

/// Deletes `(tag, path, size)` objects (as many at once as `p`'s `Limit` allows); returns the
/// tags of the objects deleted and records sizes, counts and errors in `result`.
async fn delete_all(
    p: &DynProvider,
    objects: impl Iterator<Item = (usize, String, u64)>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    result: &mut ProviderResult,
) -> Vec<usize> {
    let deletes = objects.map(|(tag, path, size)| async move {
        if cancel.is_cancelled() {
            return (tag, size, None);
        }
        let r = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            r = p.delete(&path) => Some(r),
        };
        (tag, size, r)
    });
    let outcomes = futures::future::join_all(deletes).await;
    let mut done = Vec::new();
    for (tag, size, r) in outcomes {
        match r {
            Some(Ok(())) => {
                result.freed += size;
                result.deleted += 1;
                progress.provider(p.name(), size);
                progress.advance(size);
                done.push(tag);
            }
            Some(Err(e)) => result.errors.push(e),
            None => result.skipped += 1,
        }
    }
    done
}

#[cfg(test)]
mod tests;
