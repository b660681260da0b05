//! Local snapshot retention: which snapshots offsite made of a zfs/btrfs dataset are kept on
//! this machine. The one rule, used after each backup and by `offsite prune`: keep the
//! snapshot the next incremental needs (that of the newest backup) and that of an unfinished
//! backup (a re-run resumes from it); delete the other snapshots offsite made. Datasets with a
//! `snapshot_pattern` (their snapshots are not offsite's) and command datasets are left alone.

use crate::catalog::Catalog;
use crate::config::{Config, Dataset, SourceSpec};
use crate::snapshots;
use crate::state::{DatasetState, Unfinished};
use anyhow::Result;

/// Whether offsite manages `ds`'s local snapshots at all.
fn managed(ds: &Dataset) -> bool {
    ds.snapshot_pattern.is_none() && !matches!(ds.source, SourceSpec::Command { .. })
}

/// The snapshots of `ds` that `offsite prune` keeps: that of its newest restorable backup on
/// the providers and that of the unfinished backup (`unfinished` reads it, only when needed).
/// `None` when prune leaves the dataset's snapshots alone: not managed, or no restorable backup
/// (then every snapshot may still be needed).
pub fn kept_by_prune<E>(
    catalog: &Catalog,
    ds: &Dataset,
    unfinished: impl FnOnce() -> Result<Option<Unfinished>, E>,
) -> Result<Option<Vec<String>>, E> {
    if !managed(ds) {
        return Ok(None);
    }
    let Some((_, newest)) = catalog.restorable(&ds.name).into_iter().last() else {
        return Ok(None);
    };
    let mut keep: Vec<String> = newest.snapshot.iter().cloned().collect();
    keep.extend(unfinished()?.and_then(|u| u.snapshot));
    Ok(Some(keep))
}

/// `offsite prune`'s local step: deletes (or with `dry_run` lists) the snapshots of every
/// configured dataset that [`kept_by_prune`] does not keep. Skipped under `--host`: another
/// machine's backups have no snapshots here.
pub async fn prune_local(cfg: &Config, catalog: &Catalog, dry_run: bool) -> Result<Vec<String>> {
    if cfg.foreign_host {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for ds in &cfg.datasets {
        let state = DatasetState::new(&cfg.state_dir, &cfg.host, &ds.name);
        let unfinished = || Ok::<_, anyhow::Error>(state.load()?.map(|(u, _)| u));
        let Some(keep) = kept_by_prune(catalog, ds, unfinished)? else {
            continue;
        };
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        out.extend(snapshots::retain(ds, &keep, dry_run).await?);
    }
    Ok(out)
}

/// After a backup of `ds` from `snapshot` (one offsite took): deletes the older snapshots
/// offsite made of it. A failure is a warning: the backup is made.
pub async fn after_backup(ds: &Dataset, snapshot: &str) {
    if !managed(ds) {
        return;
    }
    match snapshots::retain(ds, &[snapshot], false).await {
        Ok(deleted) if !deleted.is_empty() => {
            tracing::info!("deleted older offsite snapshots: {}", deleted.join(", "))
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("local snapshot retention failed: {e:#}"),
    }
}

#[cfg(test)]
mod tests;
