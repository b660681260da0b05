//! Which backups a restore applies, decided from the providers' manifests alone.
//!
//! [`resolve`] picks the backup to restore (the newest complete one, or the one named by
//! `--backup` / `--snapshot`) and walks its `parent` links back to a full backup. A missing or
//! unusable link is an error naming that backup, so a broken chain fails before anything is
//! received. [`applied_links`] says how much of a chain a receiving target already holds.
//! Everything here is pure.

use crate::catalog::ancestors::{ancestors, Link, WalkEnd};
use crate::layout::{BackupId, BackupKind};
use crate::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the providers hold for one backup id.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    /// A good manifest (the trusted one, see `catalog::BackupEntry::manifest`).
    Complete(&'a Manifest),
    /// Shards but no manifest: an interrupted backup, which a re-run of `backup` resumes.
    Unfinished,
    /// Manifests exist but none is usable; the text says why, per provider.
    Unusable(&'a str),
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Newest,
    /// `--backup ID`.
    Backup(String),
    /// `--snapshot NAME`: a manifest whose snapshot is NAME, ends with `@NAME`, or whose path's
    /// last component is NAME.
    Snapshot(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("no complete backup is on the providers (unfinished ones: {unfinished})")]
    NoBackups { unfinished: usize },
    #[error("no backup {id} on the providers; complete backups: {available}")]
    NoSuchBackup { id: String, available: String },
    #[error("no backup of a snapshot named {name:?}; backed-up snapshots: {available}")]
    NoSuchSnapshot { name: String, available: String },
    #[error("backup {id} is unfinished (no provider holds its manifest); run `offsite backup` to resume it, or pick another with --backup")]
    Unfinished { id: String },
    #[error("backup {id} has no usable manifest: {why}; pick another with --backup")]
    Unusable { id: String, why: String },
    #[error("the chain of backup {needed_by} is broken: it needs its parent {missing}, {why}; nothing was received")]
    MissingLink {
        missing: String,
        needed_by: String,
        why: String,
    },
    #[error("backup {id} is incremental but names no parent; its chain cannot be rebuilt")]
    NoParent { id: String },
}

/// The chain to restore, full backup first and the chosen backup last.
pub fn resolve<'a>(
    backups: &BTreeMap<BackupId, Found<'a>>,
    sel: &Selector,
) -> Result<Vec<&'a Manifest>, ChainError> {
    let chosen = choose(backups, sel)?;
    // Keyed by the ids as the manifests write them, so a parent id that does not parse is
    // a missing link like any other.
    let mut walk = ancestors(
        chosen.backup_id.clone(),
        |id: &String| match BackupId::parse(id).and_then(|id| backups.get(&id)) {
            Some(Found::Complete(m)) => Some((*m, link_of(m))),
            _ => None,
        },
    );
    let mut chain: Vec<&Manifest> = walk.by_ref().collect();
    let link = *chain.last().unwrap_or(&chosen);
    let missing = |why: String| ChainError::MissingLink {
        missing: link
            .parent
            .as_ref()
            .map_or_else(String::new, |p| p.backup_id.clone()),
        needed_by: link.backup_id.clone(),
        why,
    };
    match walk.end() {
        Some(WalkEnd::Root) | None => {}
        Some(WalkEnd::Missing(id)) => return Err(missing(why_missing(backups, id))),
        // Ids sort in time, so a parent is always older: this also rules out cycles.
        Some(WalkEnd::NotOlder(_)) => {
            return Err(missing("which is not older than its child".into()))
        }
        Some(WalkEnd::Invalid) => unreachable!("link_of never says Invalid"),
    }
    if link.kind != BackupKind::Full {
        return Err(ChainError::NoParent {
            id: link.backup_id.clone(),
        });
    }
    chain.reverse();
    Ok(chain)
}

/// A manifest's parent link as restore follows it: any manifest naming no parent ends the
/// chain (whether it is a full backup is checked after the walk).
fn link_of(m: &Manifest) -> Link<String> {
    match &m.parent {
        Some(p) => Link::Parent(p.backup_id.clone()),
        None => Link::Root,
    }
}

/// Why the parent `id` cannot be applied.
fn why_missing(backups: &BTreeMap<BackupId, Found>, id: &str) -> String {
    match BackupId::parse(id).and_then(|id| backups.get(&id)) {
        Some(Found::Unfinished) => "which is unfinished (no provider holds its manifest)".into(),
        Some(Found::Unusable(why)) => format!("whose manifest is unusable: {why}"),
        Some(Found::Complete(_)) | None => "which no provider holds".into(),
    }
}

/// Picks the backup `sel` names, without walking its chain.
pub fn choose<'a>(
    backups: &BTreeMap<BackupId, Found<'a>>,
    sel: &Selector,
) -> Result<&'a Manifest, ChainError> {
    match sel {
        Selector::Newest => newest(backups),
        Selector::Backup(id) => match BackupId::parse(id).and_then(|k| backups.get(&k)) {
            Some(Found::Complete(m)) => Ok(*m),
            Some(Found::Unfinished) => Err(ChainError::Unfinished { id: id.clone() }),
            Some(Found::Unusable(why)) => Err(ChainError::Unusable {
                id: id.clone(),
                why: why.to_string(),
            }),
            None => {
                let ids: Vec<&str> = complete(backups).map(|m| m.backup_id.as_str()).collect();
                Err(ChainError::NoSuchBackup {
                    id: id.clone(),
                    available: none_or_joined(&ids),
                })
            }
        },
        Selector::Snapshot(name) => by_snapshot(backups, name),
    }
}

/// The complete backups, oldest first.
fn complete<'a, 'm>(
    backups: &'m BTreeMap<BackupId, Found<'a>>,
) -> impl DoubleEndedIterator<Item = &'a Manifest> + 'm {
    backups.values().filter_map(|f| match f {
        Found::Complete(m) => Some(*m),
        _ => None,
    })
}

fn none_or_joined(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The newest backup that is not unfinished; an error if it is unusable (never skipped).
fn newest<'a>(backups: &BTreeMap<BackupId, Found<'a>>) -> Result<&'a Manifest, ChainError> {
    match backups
        .iter()
        .rev()
        .find(|(_, f)| !matches!(f, Found::Unfinished))
    {
        Some((_, Found::Complete(m))) => Ok(*m),
        Some((id, Found::Unusable(why))) => Err(ChainError::Unusable {
            id: id.to_string(),
            why: why.to_string(),
        }),
        _ => Err(ChainError::NoBackups {
            unfinished: backups.len(),
        }),
    }
}

/// The newest complete backup of the snapshot `name` (see [`Selector::Snapshot`]).
fn by_snapshot<'a>(
    backups: &BTreeMap<BackupId, Found<'a>>,
    name: &str,
) -> Result<&'a Manifest, ChainError> {
    complete(backups)
        .rfind(|m| {
            m.snapshot
                .as_deref()
                .is_some_and(|s| snapshot_matches(s, name))
        })
        .ok_or_else(|| {
            let snaps: Vec<&str> = complete(backups)
                .filter_map(|m| m.snapshot.as_deref())
                .collect();
            ChainError::NoSuchSnapshot {
                name: name.to_string(),
                available: none_or_joined(&snaps),
            }
        })
}

fn snapshot_matches(snapshot: &str, name: &str) -> bool {
    snapshot == name
        || snapshot
            .strip_suffix(name)
            .is_some_and(|s| s.ends_with('@'))
        || Path::new(snapshot).file_name().is_some_and(|f| f == name)
}

/// How a receiving target names the snapshot a backup carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The part after `@` (`tank/a@offsite-X` is `offsite-X`).
    Zfs,
    /// The snapshot path's last component.
    Btrfs,
}

/// The name `kind` gives the snapshot of `m`, if it has one.
pub fn snapshot_name(m: &Manifest, kind: TargetKind) -> Option<&str> {
    let s = m.snapshot.as_deref()?;
    match kind {
        TargetKind::Zfs => s.rsplit_once('@').map(|(_, n)| n),
        TargetKind::Btrfs => Path::new(s).file_name().and_then(|f| f.to_str()),
    }
}

/// How many leading links of `chain` the target already holds: up to and including the newest
/// link whose snapshot is among `present`. Only the links after it need to be received.
pub fn applied_links(chain: &[&Manifest], present: &BTreeSet<String>, kind: TargetKind) -> usize {
    chain
        .iter()
        .rposition(|m| snapshot_name(m, kind).is_some_and(|n| present.contains(n)))
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{sample, ParentRef};

    fn backup(id: &str, parent: Option<&str>, snap: &str) -> Manifest {
        let mut m = sample(&[b"data"]);
        m.backup_id = id.into();
        m.kind = BackupId::parse(id).unwrap().kind;
        m.snapshot = Some(snap.into());
        m.parent = parent.map(|p| ParentRef {
            backup_id: p.into(),
            snapshot: None,
        });
        m
    }

    const F1: &str = "20261101T020000Z-full";
    const I1: &str = "20261102T020000Z-incr";
    const I2: &str = "20261103T020000Z-incr";
    const U: &str = "20261104T020000Z-incr";

    fn fixtures() -> Vec<Manifest> {
        vec![
            backup(F1, None, "tank/a@offsite-1"),
            backup(I1, Some(F1), "tank/a@offsite-2"),
            backup(I2, Some(I1), "tank/a@offsite-3"),
        ]
    }

    fn map(ms: &[Manifest]) -> BTreeMap<BackupId, Found<'_>> {
        let mut out: BTreeMap<_, _> = ms
            .iter()
            .map(|m| (m.id().unwrap(), Found::Complete(m)))
            .collect();
        out.insert(BackupId::parse(U).unwrap(), Found::Unfinished);
        out
    }

    fn ids(chain: &[&Manifest]) -> Vec<String> {
        chain.iter().map(|m| m.backup_id.clone()).collect()
    }

    #[test]
    fn newest_complete_backup_with_its_whole_chain() {
        let ms = fixtures();
        let chain = resolve(&map(&ms), &Selector::Newest).unwrap();
        assert_eq!(ids(&chain), [F1, I1, I2]);
    }

    #[test]
    fn backup_and_snapshot_selectors() {
        let ms = fixtures();
        let m = map(&ms);
        assert_eq!(
            ids(&resolve(&m, &Selector::Backup(I1.into())).unwrap()),
            [F1, I1]
        );
        assert_eq!(
            ids(&resolve(&m, &Selector::Backup(F1.into())).unwrap()),
            [F1]
        );
        for name in ["offsite-2", "tank/a@offsite-2"] {
            let chain = resolve(&m, &Selector::Snapshot(name.into())).unwrap();
            assert_eq!(ids(&chain), [F1, I1], "{name}");
        }
        let e = resolve(&m, &Selector::Backup(U.into())).unwrap_err();
        assert_eq!(e, ChainError::Unfinished { id: U.into() });
        let e = resolve(&m, &Selector::Backup("20250101T000000Z-full".into())).unwrap_err();
        assert!(e.to_string().contains(&format!("{F1}, {I1}, {I2}")), "{e}");
        let e = resolve(&m, &Selector::Snapshot("offsite-9".into())).unwrap_err();
        assert!(e.to_string().contains("tank/a@offsite-3"), "{e}");
        // A suffix that is not a whole name does not match.
        assert!(resolve(&m, &Selector::Snapshot("site-2".into())).is_err());
    }

    #[test]
    fn btrfs_snapshot_paths_match_by_last_component() {
        let ms = vec![backup(F1, None, "/mnt/p/.snaps/data.offsite-1")];
        let m = map(&ms);
        let chain = resolve(&m, &Selector::Snapshot("data.offsite-1".into())).unwrap();
        assert_eq!(ids(&chain), [F1]);
    }

    #[test]
    fn a_missing_link_is_named() {
        let ms = fixtures();
        let mut m = map(&ms);
        m.remove(&BackupId::parse(I1).unwrap());
        let e = resolve(&m, &Selector::Newest).unwrap_err();
        assert_eq!(
            e,
            ChainError::MissingLink {
                missing: I1.into(),
                needed_by: I2.into(),
                why: "which no provider holds".into()
            }
        );
        assert!(e.to_string().contains(I1) && e.to_string().contains("nothing was received"));
        m.insert(
            BackupId::parse(I1).unwrap(),
            Found::Unusable("provider a: bad json"),
        );
        let e = resolve(&m, &Selector::Newest).unwrap_err().to_string();
        assert!(e.contains(I1) && e.contains("provider a: bad json"), "{e}");
        m.insert(BackupId::parse(I1).unwrap(), Found::Unfinished);
        let e = resolve(&m, &Selector::Newest).unwrap_err().to_string();
        assert!(e.contains(I1) && e.contains("unfinished"), "{e}");
    }

    #[test]
    fn an_unusable_newest_backup_is_an_error_not_skipped() {
        let ms = fixtures();
        let mut m = map(&ms);
        m.insert(
            BackupId::parse(U).unwrap(),
            Found::Unusable("provider b: truncated"),
        );
        let e = resolve(&m, &Selector::Newest).unwrap_err();
        assert!(
            matches!(e, ChainError::Unusable { ref id, .. } if id == U),
            "{e}"
        );
        let e = resolve(&BTreeMap::new(), &Selector::Newest).unwrap_err();
        assert_eq!(e, ChainError::NoBackups { unfinished: 0 });
    }

    #[test]
    fn incremental_without_parent_or_with_a_newer_parent_is_broken() {
        let orphan = vec![backup(I1, None, "t@x")];
        let e = resolve(&map(&orphan), &Selector::Newest).unwrap_err();
        assert_eq!(e, ChainError::NoParent { id: I1.into() });
        let cycle = vec![backup(I1, Some(I2), "t@1"), backup(I2, Some(I1), "t@2")];
        let e = resolve(&map(&cycle), &Selector::Backup(I1.into())).unwrap_err();
        assert!(matches!(e, ChainError::MissingLink { .. }), "{e}");
    }

    #[test]
    fn links_the_target_holds_are_skipped() {
        let ms = fixtures();
        let chain: Vec<&Manifest> = ms.iter().collect();
        let present = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        assert_eq!(applied_links(&chain, &present(&[]), TargetKind::Zfs), 0);
        assert_eq!(
            applied_links(&chain, &present(&["offsite-1"]), TargetKind::Zfs),
            1
        );
        assert_eq!(
            applied_links(
                &chain,
                &present(&["offsite-1", "offsite-2", "other"]),
                TargetKind::Zfs
            ),
            2
        );
        assert_eq!(
            applied_links(&chain, &present(&["offsite-3"]), TargetKind::Zfs),
            3
        );
        assert_eq!(
            applied_links(&chain, &present(&["tank/a@offsite-1"]), TargetKind::Zfs),
            0
        );
        let b = [backup(F1, None, "/s/.snaps/d.offsite-1")];
        let chain: Vec<&Manifest> = b.iter().collect();
        assert_eq!(
            applied_links(&chain, &present(&["d.offsite-1"]), TargetKind::Btrfs),
            1
        );
    }
}
