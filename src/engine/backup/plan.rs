//! Backup planning: what a run makes for a dataset with no unfinished backup (nothing, a full
//! or an incremental backup, and on which parent), as a pure function of the dataset's
//! config, the catalog of what the providers hold, one local fact (whether the parent's
//! snapshot still exists) and the clock. Taking snapshots and running the pipeline are the
//! caller's ([`super::dataset`]); every decision here is unit-tested without rclone.

use crate::catalog::Catalog;
use crate::codec::Codec;
use crate::config::{Dataset, SourceSpec};
use crate::layout::{self, BackupId, BackupKind};
use crate::manifest::ParentRef;
use crate::schedule::{self, Decision, History, Request, Schedule};
use crate::state::Unfinished;
use std::time::SystemTime;

/// What `offsite backup` asks for one dataset.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupRequest {
    /// `--once`: run now whether due or not.
    pub once: bool,
    /// `--full`.
    pub full: bool,
    /// `--dry-run`: say what would be done.
    pub dry_run: bool,
    /// `--restart`: discard the unfinished backup first.
    pub restart: bool,
}

/// The newest restorable backup of a dataset: the parent a new incremental would have.
#[derive(Debug, Clone)]
pub struct LastBackup {
    pub id: BackupId,
    pub parent: ParentRef,
    /// Why its chain does not resolve to a full backup, if it does not.
    pub broken: Option<String>,
}

impl LastBackup {
    pub fn of(catalog: &Catalog, dataset: &str) -> Option<LastBackup> {
        let (id, m) = catalog.restorable(dataset).into_iter().last()?;
        Some(LastBackup {
            id: id.clone(),
            parent: ParentRef {
                backup_id: id.to_string(),
                snapshot: m.snapshot.clone(),
            },
            broken: catalog.broken_link(dataset, id),
        })
    }

    /// The local snapshot whose existence decides whether this backup can be a parent; `None`
    /// when nothing local is needed to decide.
    pub fn snapshot_to_check(&self) -> Option<&str> {
        match &self.broken {
            Some(_) => None,
            None => self.parent.snapshot.as_deref(),
        }
    }

    /// `Err(why)` when it cannot be a parent; `snapshot_present` answers
    /// [`LastBackup::snapshot_to_check`].
    fn usable(&self, snapshot_present: bool) -> Result<(), String> {
        let id = &self.id;
        match (&self.parent.snapshot, &self.broken) {
            (_, Some(why)) => Err(format!(
                "the chain of the last backup {id} is broken ({why})"
            )),
            (None, _) => Err(format!("the last backup {id} recorded no snapshot")),
            (Some(snap), None) if !snapshot_present => Err(format!(
                "the parent snapshot {snap} of the last backup {id} no longer exists locally"
            )),
            _ => Ok(()),
        }
    }
}

/// What the catalog and the clock say a dataset's run makes.
#[derive(Debug, Clone)]
pub struct BackupPlan {
    pub action: Action,
    /// Things worth a warning, such as backups dated in the future.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Nothing is due yet.
    NotDue {
        next_due: SystemTime,
    },
    Make(NewBackup),
}

/// A backup to make.
#[derive(Debug, Clone)]
pub struct NewBackup {
    /// A full backup's reason, or `Incremental`.
    pub decision: Decision,
    /// Its id: after every backup listed, so it sorts last.
    pub id: BackupId,
    /// The parent of an incremental; `None` for a full backup.
    pub parent: Option<ParentRef>,
    /// The stream size of the dataset's newest restorable backup, if any.
    pub previous_bytes: Option<u64>,
}

/// Plans the run of `ds` at `now` from what `catalog` lists. `snapshot_present` answers
/// [`LastBackup::snapshot_to_check`] for `LastBackup::of(catalog, ..)` (true when it asks
/// nothing).
pub fn plan(
    now: SystemTime,
    ds: &Dataset,
    catalog: &Catalog,
    req: &BackupRequest,
    snapshot_present: bool,
) -> BackupPlan {
    let made: Vec<schedule::Made> = catalog
        .restorable(&ds.name)
        .iter()
        .map(|(id, m)| schedule::Made {
            id: id.to_string(),
            time: schedule::made_at(id, &m.created),
            full: id.kind == BackupKind::Full,
        })
        .collect();
    let history = History::of(now, &made);
    let last = LastBackup::of(catalog, &ds.name);
    let request = Request {
        once: req.once,
        force_full: req.full,
        can_incremental: !matches!(ds.source, SourceSpec::Command { .. }),
        parent_usable: match &last {
            Some(last) => last.usable(snapshot_present),
            None => Err("there is no previous backup".into()),
        },
    };
    let sched = Schedule {
        full_every: ds.full_every,
        incremental_every: ds.incremental_every,
    };
    let decision = schedule::decide(now, sched, &history, &request);
    let action = match decision {
        Decision::NotDue { next_due } => Action::NotDue { next_due },
        decision => Action::Make(new_backup(now, catalog, &ds.name, decision, last)),
    };
    BackupPlan {
        action,
        warnings: history.warnings(),
    }
}

fn new_backup(
    now: SystemTime,
    catalog: &Catalog,
    dataset: &str,
    decision: Decision,
    last: Option<LastBackup>,
) -> NewBackup {
    let kind = match decision {
        Decision::Incremental => BackupKind::Incremental,
        _ => BackupKind::Full,
    };
    let previous_bytes = catalog
        .restorable(dataset)
        .last()
        .map(|(_, m)| m.total_bytes);
    let newest_listed = catalog
        .backups
        .keys()
        .filter(|k| k.dataset == dataset)
        .map(|k| &k.id)
        .max();
    NewBackup {
        id: BackupId::new_after(now, kind, newest_listed),
        parent: last
            .filter(|_| kind == BackupKind::Incremental)
            .map(|l| l.parent),
        decision,
        previous_bytes,
    }
}

impl NewBackup {
    /// Whether `snapshot` (the newest matching `snapshot_pattern`) is worth a backup: not when
    /// it is the snapshot this incremental would follow.
    pub fn is_new(&self, snapshot: &str) -> bool {
        let parent_snap = self.parent.as_ref().and_then(|p| p.snapshot.as_deref());
        parent_snap != Some(snapshot)
    }

    /// The unfinished-backup state a run of this backup records before its first shard; its
    /// shards are stored as `codec` says.
    pub fn unfinished(
        &self,
        snapshot: Option<String>,
        shard_size: u64,
        now: SystemTime,
        codec: &Codec,
    ) -> Unfinished {
        Unfinished {
            backup_id: self.id.to_string(),
            snapshot,
            parent: self.parent.clone(),
            shard_size,
            started: layout::rfc3339(now),
            gaps_retry: false,
            encoding: codec.encoding(),
            recipients: codec
                .recipients
                .as_ref()
                .map_or_else(Vec::new, |r| r.to_strings()),
            erasure: None,
            previous_bytes: self.previous_bytes,
        }
    }
}

/// How a dry run names a decision: `a full backup (why)`, `an incremental backup`.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Full { reason } => format!("a full backup ({reason})"),
        Decision::Incremental => "an incremental backup".into(),
        Decision::NotDue { .. } => "nothing".into(),
    }
}

#[cfg(test)]
mod tests;
