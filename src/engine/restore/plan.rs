//! What a restore will do, decided before anything is downloaded ([`RestorePlan`]): the chain of
//! backups up to the chosen one, the receiver the stream goes to, and, for a zfs or btrfs
//! target, which of the chain's snapshots the target already holds. Those links are skipped:
//! only the later backups are applied.

use super::link::{chain_links, Link};
use crate::catalog::Catalog;
use crate::engine::chain::{self, Selector, TargetKind};
use crate::error::ConfigError;
use crate::manifest::Manifest;
use crate::receiver::{self, ReceiverSpec};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the restored stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `--target`: a zfs dataset or btrfs receive directory, chosen by the backups' source
    /// kind; the whole chain is applied, less what the target already holds.
    Target {
        target: String,
        force: bool,
        /// `receive_flags` of the dataset, when it is configured here.
        flags: Vec<String>,
    },
    /// The chosen backup's raw stream, into a file or stdout.
    Raw(ReceiverSpec),
}

/// A restore, decided.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The backups to apply, in order; empty when the target holds them all.
    pub links: Vec<Link>,
    /// The backup chosen (the last of the chain).
    pub chosen: String,
    pub receiver: ReceiverSpec,
    /// Backups of the chain the target already holds, in order.
    pub skipped: Vec<String>,
}

/// Resolves `sel` among the backups of `dataset` in `catalog` and inspects the target.
pub async fn plan(
    catalog: &Catalog,
    host: &str,
    dataset: &str,
    sel: &Selector,
    dest: &Destination,
) -> Result<RestorePlan> {
    let whole_chain = matches!(dest, Destination::Target { .. });
    let mut links = chain_links(catalog, dataset, sel, whole_chain)
        .with_context(|| format!("cannot restore dataset {dataset:?} of host {host:?}"))?;
    let chosen = links
        .last()
        .expect("a plan has a link")
        .manifest
        .backup_id
        .clone();
    let (receiver, skipped) = match dest {
        Destination::Raw(spec) => (spec.clone(), Vec::new()),
        Destination::Target {
            target,
            force,
            flags,
        } => {
            let held = TargetHolds::inspect(target, *force, flags.clone(), &links).await?;
            let skipped = held.trim(target, &mut links);
            (held.receiver, skipped)
        }
    };
    Ok(RestorePlan {
        links,
        chosen,
        receiver,
        skipped,
    })
}

/// A zfs or btrfs target: its receiver, and the snapshot names it already holds.
#[derive(Debug)]
pub(super) struct TargetHolds {
    pub receiver: ReceiverSpec,
    pub kind: TargetKind,
    pub present: BTreeSet<String>,
}

impl TargetHolds {
    /// The receiver for `--target t`, chosen by the source kind of the chain's last backup,
    /// and what `t` holds.
    async fn inspect(t: &str, force: bool, flags: Vec<String>, links: &[Link]) -> Result<Self> {
        let last = &links.last().expect("a plan has a link").manifest;
        match last.source_kind.as_str() {
            "zfs" => Ok(TargetHolds {
                present: receiver::zfs_snapshots(t).await?,
                receiver: ReceiverSpec::Zfs {
                    target: t.to_string(),
                    force,
                    flags,
                },
                kind: TargetKind::Zfs,
            }),
            "btrfs" => {
                let dir = btrfs_dir(t, force)?;
                let names: Vec<&str> = links
                    .iter()
                    .filter_map(|l| chain::snapshot_name(&l.manifest, TargetKind::Btrfs))
                    .collect();
                Ok(TargetHolds {
                    present: receiver::btrfs_received(&dir, &names).await?,
                    receiver: ReceiverSpec::Btrfs { dir, flags },
                    kind: TargetKind::Btrfs,
                })
            }
            other => Err(not_a_snapshot_stream(last, other).into()),
        }
    }

    /// Removes from `links` the leading ones the target holds; returns their backup ids.
    pub fn trim(&self, t: &str, links: &mut Vec<Link>) -> Vec<String> {
        let manifests: Vec<&Manifest> = links.iter().map(|l| &l.manifest).collect();
        let held = chain::applied_links(&manifests, &self.present, self.kind);
        let skipped: Vec<String> = links.drain(..held).map(|l| l.manifest.backup_id).collect();
        if !skipped.is_empty() {
            tracing::info!(
                "{t} already holds the snapshots of {}; applying only the later backups",
                skipped.join(", ")
            );
        }
        skipped
    }
}

/// A btrfs receive directory, which must exist.
fn btrfs_dir(t: &str, force: bool) -> Result<PathBuf, ConfigError> {
    let dir = PathBuf::from(t);
    if !dir.is_dir() {
        return Err(ConfigError(format!(
            "--target {t}: not a directory; btrfs receive needs an existing directory on a btrfs filesystem"
        )));
    }
    if force {
        tracing::warn!("--force has no effect on btrfs receive");
    }
    Ok(dir)
}

fn not_a_snapshot_stream(last: &Manifest, kind: &str) -> ConfigError {
    ConfigError(format!(
        "backup {} is the output of a {kind} source, not a zfs or btrfs stream; restore it with --output FILE or --stdout",
        last.backup_id
    ))
}
