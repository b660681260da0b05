//! What local retention keeps, from hand-built catalogs (no zfs, no btrfs).

use super::*;
use crate::catalog::{BackupEntry, BackupKey};
use crate::layout::BackupId;
use crate::manifest::sample;
use std::collections::BTreeMap;
use std::convert::Infallible;

fn zfs() -> Dataset {
    Dataset {
        name: "d".into(),
        source: SourceSpec::Zfs {
            dataset: "tank/d".into(),
        },
        full_every: None,
        incremental_every: None,
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

/// Backups of "d" on provider `p`: id, snapshot, whether every shard is listed.
fn catalog(stored: &[(&str, &str, bool)]) -> Catalog {
    let mut backups = BTreeMap::new();
    for (id, snap, restorable) in stored {
        let mut m = sample(if *restorable { &[] } else { &[b"lost"] });
        m.dataset = "d".into();
        m.backup_id = id.to_string();
        m.snapshot = Some(snap.to_string());
        let entry = BackupEntry {
            objects: [("p".to_string(), BTreeMap::new())].into(),
            manifests: [("p".to_string(), Ok(m))].into(),
            ..Default::default()
        };
        let key = BackupKey {
            dataset: "d".into(),
            id: BackupId::parse(id).unwrap(),
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

fn unfinished(snapshot: &str) -> Unfinished {
    Unfinished {
        backup_id: "20261123T020000Z-full".into(),
        snapshot: Some(snapshot.into()),
        parent: None,
        shard_size: 1,
        started: String::new(),
        gaps_retry: false,
        encoding: Default::default(),
        recipients: Vec::new(),
        erasure: None,
        previous_bytes: None,
    }
}

fn none() -> Result<Option<Unfinished>, Infallible> {
    Ok(None)
}

#[test]
fn prune_keeps_the_newest_restorable_backups_snapshot_and_the_unfinished_ones() {
    let c = catalog(&[
        ("20261121T020000Z-full", "tank/d@a", true),
        ("20261122T020000Z-full", "tank/d@b", true),
        // Not restorable: a later incremental cannot follow it.
        ("20261123T020000Z-full", "tank/d@c", false),
    ]);
    let kept = kept_by_prune(&c, &zfs(), none).unwrap();
    assert_eq!(kept, Some(vec!["tank/d@b".to_string()]));
    let with_unfinished = || Ok::<_, Infallible>(Some(unfinished("tank/d@u")));
    let kept = kept_by_prune(&c, &zfs(), with_unfinished).unwrap();
    assert_eq!(
        kept,
        Some(vec!["tank/d@b".to_string(), "tank/d@u".to_string()])
    );
}

#[test]
fn prune_leaves_alone_a_dataset_with_no_restorable_backup_without_reading_its_state() {
    let c = catalog(&[("20261121T020000Z-full", "tank/d@a", false)]);
    let state = || -> Result<Option<Unfinished>, &str> { Err("the state was read") };
    assert_eq!(kept_by_prune(&c, &zfs(), state), Ok(None));
}

#[test]
fn prune_leaves_alone_pattern_and_command_datasets() {
    let c = catalog(&[("20261121T020000Z-full", "tank/d@a", true)]);
    let mut patterned = zfs();
    patterned.snapshot_pattern = Some("tank/d@daily-*".into());
    assert_eq!(kept_by_prune(&c, &patterned, none).unwrap(), None);
    let mut command = zfs();
    command.source = SourceSpec::Command {
        command: "cat /etc/hosts".into(),
    };
    assert_eq!(kept_by_prune(&c, &command, none).unwrap(), None);
    assert!(!managed(&command) && !managed(&patterned) && managed(&zfs()));
}
