//! Planning decisions from hand-built catalogs and an injected clock: no provider, no rclone.

use super::*;
use crate::catalog::{BackupEntry, BackupKey};
use crate::manifest::sample;
use std::collections::BTreeMap;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

fn id(s: &str) -> BackupId {
    BackupId::parse(s).unwrap()
}

/// 2026-11-21 02:00 UTC plus `days`.
fn at(days: f64) -> SystemTime {
    id("20261121T020000Z-full").time() + DAY.mul_f64(days)
}

fn zfs() -> Dataset {
    Dataset {
        name: "d".into(),
        source: SourceSpec::Zfs {
            dataset: "tank/d".into(),
        },
        full_every: Some(30 * DAY),
        incremental_every: Some(DAY),
        keep: Default::default(),
        max_age: None,
        notify_url: None,
        keep_chains: None,
        providers: vec!["p".into()],
        snapshot_pattern: None,
        send_flags: vec![],
        receive_flags: vec![],
        compression: Default::default(),
        encrypt: false,
        erasure: None,
        resume: Default::default(),
    }
}

/// A backup on provider `p`: its id, its parent's id, its snapshot, and whether every shard
/// is listed (restorable).
struct Stored<'a>(&'a str, Option<&'a str>, Option<&'a str>, bool);

fn catalog(stored: &[Stored]) -> Catalog {
    let mut backups = BTreeMap::new();
    for Stored(bid, parent, snap, restorable) in stored {
        let backup_id = id(bid);
        let mut m = sample(if *restorable { &[] } else { &[b"lost"] });
        m.dataset = "d".into();
        m.backup_id = bid.to_string();
        m.kind = backup_id.kind;
        m.created = String::new(); // the schedule then reads the time in the id
        m.snapshot = snap.map(str::to_string);
        m.parent = parent.map(|p| ParentRef {
            backup_id: p.to_string(),
            snapshot: None,
        });
        let entry = BackupEntry {
            objects: [("p".to_string(), BTreeMap::new())].into(),
            manifests: [("p".to_string(), Ok(m))].into(),
            ..Default::default()
        };
        let key = BackupKey {
            dataset: "d".into(),
            id: backup_id,
        };
        backups.insert(key, entry);
    }
    Catalog {
        host: "h".into(),
        order: vec!["p".into()],
        backups,
        unreachable: BTreeMap::new(),
    }
}

fn scheduled() -> BackupRequest {
    BackupRequest::default()
}

fn made(p: BackupPlan) -> NewBackup {
    match p.action {
        Action::Make(new) => new,
        Action::NotDue { next_due } => panic!("not due until {next_due:?}"),
    }
}

fn full_reason(new: &NewBackup) -> &str {
    match &new.decision {
        Decision::Full { reason } => reason,
        d => panic!("not a full backup: {d:?}"),
    }
}

#[test]
fn a_dataset_with_no_backup_gets_a_full_one_with_no_parent() {
    let new = made(plan(at(0.0), &zfs(), &catalog(&[]), &scheduled(), true));
    assert_eq!(
        full_reason(&new),
        "there is no previous full backup on the providers"
    );
    assert_eq!(new.id.kind, BackupKind::Full);
    assert!(new.parent.is_none());
    assert_eq!(new.id.time(), at(0.0));
}

#[test]
fn a_due_incremental_follows_the_newest_restorable_backup() {
    let c = catalog(&[
        Stored("20261121T020000Z-full", None, Some("tank/d@a"), true),
        Stored(
            "20261122T020000Z-incr",
            Some("20261121T020000Z-full"),
            Some("tank/d@b"),
            true,
        ),
    ]);
    let last = LastBackup::of(&c, "d").unwrap();
    assert_eq!(last.snapshot_to_check(), Some("tank/d@b"));
    let new = made(plan(at(2.5), &zfs(), &c, &scheduled(), true));
    assert_eq!(new.decision, Decision::Incremental);
    assert_eq!(new.id.kind, BackupKind::Incremental);
    let parent = new.parent.clone().unwrap();
    assert_eq!(
        (parent.backup_id.as_str(), parent.snapshot.as_deref()),
        ("20261122T020000Z-incr", Some("tank/d@b"))
    );
    assert!(
        !new.is_new("tank/d@b"),
        "the parent's snapshot is backed up"
    );
    assert!(new.is_new("tank/d@c"));
}

#[test]
fn a_parent_whose_snapshot_is_gone_locally_makes_a_full_backup() {
    let c = catalog(&[Stored(
        "20261121T020000Z-full",
        None,
        Some("tank/d@a"),
        true,
    )]);
    let new = made(plan(at(1.5), &zfs(), &c, &scheduled(), false));
    assert_eq!(
        full_reason(&new),
        "the parent snapshot tank/d@a of the last backup 20261121T020000Z-full no longer exists locally"
    );
    assert!(new.parent.is_none(), "a full backup has no parent");
    assert!(
        new.is_new("tank/d@a"),
        "a full backup may send any snapshot"
    );
}

#[test]
fn a_broken_chain_makes_a_full_backup_without_looking_at_local_snapshots() {
    // The incremental's parent is not on the providers.
    let c = catalog(&[Stored(
        "20261122T020000Z-incr",
        Some("20261121T020000Z-full"),
        Some("tank/d@b"),
        true,
    )]);
    let last = LastBackup::of(&c, "d").unwrap();
    assert_eq!(last.snapshot_to_check(), None);
    // With no full backup on record the schedule asks for one before looking at the chain:
    // give it an older full, so the broken chain is what decides.
    let c = catalog(&[
        Stored("20261120T020000Z-full", None, Some("tank/d@0"), true),
        Stored(
            "20261122T020000Z-incr",
            Some("20261121T020000Z-full"),
            Some("tank/d@b"),
            true,
        ),
    ]);
    let new = made(plan(at(2.5), &zfs(), &c, &scheduled(), true));
    assert!(
        full_reason(&new)
            .starts_with("the chain of the last backup 20261122T020000Z-incr is broken"),
        "{}",
        full_reason(&new)
    );
}

#[test]
fn nothing_is_due_before_incremental_every_unless_once_is_given() {
    let c = catalog(&[Stored(
        "20261121T020000Z-full",
        None,
        Some("tank/d@a"),
        true,
    )]);
    let p = plan(at(0.5), &zfs(), &c, &scheduled(), true);
    assert!(
        matches!(p.action, Action::NotDue { next_due } if next_due == at(1.0)),
        "{:?}",
        p.action
    );
    let once = BackupRequest {
        once: true,
        ..scheduled()
    };
    let new = made(plan(at(0.5), &zfs(), &c, &once, true));
    assert_eq!(new.decision, Decision::Incremental);
    let full = BackupRequest {
        full: true,
        ..scheduled()
    };
    let new = made(plan(at(0.5), &zfs(), &c, &full, true));
    assert_eq!(full_reason(&new), "--full was given");
}

#[test]
fn a_command_dataset_is_always_backed_up_in_full() {
    let mut ds = zfs();
    ds.source = SourceSpec::Command {
        command: "cat /etc/hosts".into(),
    };
    let c = catalog(&[Stored("20261121T020000Z-full", None, None, true)]);
    let new = made(plan(at(1.5), &ds, &c, &scheduled(), true));
    assert_eq!(
        full_reason(&new),
        "command sources are always backed up in full"
    );
}

#[test]
fn a_new_id_sorts_after_every_backup_listed_even_an_unrestorable_one() {
    let c = catalog(&[
        Stored("20261121T020000Z-full", None, Some("tank/d@a"), true),
        // Unrestorable, and (the clock was stepped back) dated after now.
        Stored(
            "20261121T030000Z-incr",
            Some("20261121T020000Z-full"),
            None,
            false,
        ),
    ]);
    let new = made(plan(
        at(1.0 / 48.0),
        &zfs(),
        &c,
        &BackupRequest {
            once: true,
            ..scheduled()
        },
        true,
    ));
    assert!(new.id > id("20261121T030000Z-incr"), "{}", new.id);
    // The parent is the newest *restorable* backup.
    assert_eq!(
        new.parent.unwrap().backup_id,
        "20261121T020000Z-full",
        "the unrestorable backup is no parent"
    );
}

#[test]
fn backups_dated_in_the_future_are_warned_about() {
    let c = catalog(&[Stored(
        "20261130T020000Z-full",
        None,
        Some("tank/d@a"),
        true,
    )]);
    let p = plan(at(0.0), &zfs(), &c, &scheduled(), true);
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains("20261130T020000Z-full"),
        "{:?}",
        p.warnings
    );
}

#[test]
fn the_unfinished_state_names_the_backup_its_snapshot_and_parent() {
    let c = catalog(&[Stored(
        "20261121T020000Z-full",
        None,
        Some("tank/d@a"),
        true,
    )]);
    let new = made(plan(at(1.5), &zfs(), &c, &scheduled(), true));
    let u = new.unfinished(
        Some("tank/d@b".into()),
        4096,
        at(1.5),
        &crate::codec::Codec::plain(),
    );
    assert_eq!(u.id(), Some(new.id.clone()));
    assert_eq!(u.snapshot.as_deref(), Some("tank/d@b"));
    assert_eq!(u.parent, new.parent);
    assert_eq!((u.shard_size, u.gaps_retry), (4096, false));
    assert_eq!(u.started, layout::rfc3339(at(1.5)));
}
