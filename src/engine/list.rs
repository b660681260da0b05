//! `list`'s typed report: the backups the providers hold, read from their manifests. A backup
//! with a trusted manifest is described by it; one without is unfinished (no manifest listed)
//! or damaged (manifests listed, none trusted), with the shards the fullest provider holds.
//! No I/O: built from a [`Catalog`].

use crate::catalog::{BackupEntry, BackupKey, Catalog, Resolution};
use crate::engine::status::CopyState;
use crate::layout::{self, BackupKind};
use crate::manifest::Manifest;
use serde::Serialize;

/// `offsite list`.
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub host: String,
    /// In catalog order: dataset, then time.
    pub backups: Vec<ListedBackup>,
    /// Providers that could not be listed.
    pub unreachable: Vec<String>,
}

/// One backup as the providers hold it. The fields from the manifest are `None` without one.
#[derive(Debug, Serialize)]
pub struct ListedBackup {
    pub dataset: String,
    pub backup_id: String,
    pub kind: BackupKind,
    /// Complete (a manifest is trusted), unfinished or damaged.
    pub state: CopyState,
    pub created: Option<String>,
    pub snapshot: Option<String>,
    /// The parent's backup id, for an incremental backup.
    pub parent: Option<String>,
    /// The stream's length (plaintext).
    pub total_bytes: Option<u64>,
    /// What one whole copy stores: `total_bytes` after compression and encryption (equal
    /// without either).
    pub stored_bytes: Option<u64>,
    /// The manifest's shard count, or the most shards one provider holds.
    pub shards: Option<usize>,
    /// The providers holding a good manifest, or (without one) any object of the backup.
    pub providers: Vec<String>,
    /// Erasure-coded backups: the code, `"2+1"` (each shard cut into 3 pieces on 3 providers,
    /// any 2 restore it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<String>,
}

/// Every backup of `catalog`.
pub fn list_report(catalog: &Catalog) -> ListReport {
    ListReport {
        host: catalog.host.clone(),
        backups: catalog
            .backups
            .iter()
            .map(|(key, entry)| match entry.manifest(&catalog.order) {
                Some((_, m)) => finished(key, entry, m),
                None => unfinished(key, entry, &catalog.order),
            })
            .collect(),
        unreachable: catalog.unreachable.keys().cloned().collect(),
    }
}

/// Gives every backup of `report` the state `status` gives it from the same listings
/// (`surveys`, from `gaps::survey`): one vocabulary across commands, so `list` says
/// `complete` only where every provider that should hold the backup holds all of it.
pub fn judge(report: &mut ListReport, surveys: &[(BackupKey, crate::gaps::BackupFindings)]) {
    for b in &mut report.backups {
        let found = surveys
            .iter()
            .find(|(k, _)| k.dataset == b.dataset && k.id.to_string() == b.backup_id);
        if let Some((_, f)) = found {
            b.state = crate::engine::status::backup_word(f);
        }
    }
}

fn finished(key: &BackupKey, entry: &BackupEntry, m: &Manifest) -> ListedBackup {
    ListedBackup {
        dataset: key.dataset.clone(),
        backup_id: key.id.to_string(),
        kind: m.kind,
        state: match m.total_bytes {
            0 => CopyState::Empty,
            _ => CopyState::Complete,
        },
        created: Some(m.created.clone()),
        snapshot: m.snapshot.clone(),
        parent: m.parent.as_ref().map(|p| p.backup_id.clone()),
        total_bytes: Some(m.total_bytes),
        stored_bytes: Some(m.shards.iter().map(|s| s.length).sum()),
        shards: Some(m.shards.len()),
        providers: entry
            .manifests
            .iter()
            .filter(|(_, m)| m.is_ok())
            .map(|(p, _)| p.clone())
            .collect(),
        erasure: m.scheme().map(|e| e.to_string()),
    }
}

fn unfinished(key: &BackupKey, entry: &BackupEntry, order: &[String]) -> ListedBackup {
    let shards = |objects: &crate::catalog::Objects| {
        let names = objects.keys();
        names
            .filter(|n| layout::parse_shard_name(n).is_some())
            .count()
    };
    ListedBackup {
        dataset: key.dataset.clone(),
        backup_id: key.id.to_string(),
        kind: key.id.kind,
        // Manifests that cannot be trusted make a damaged backup, never an unfinished one.
        state: match entry.resolve(order) {
            Resolution::Damaged(_) => CopyState::Damaged,
            _ => CopyState::Unfinished,
        },
        created: None,
        snapshot: None,
        parent: None,
        total_bytes: None,
        stored_bytes: None,
        shards: entry.objects.values().map(shards).max(),
        providers: entry.objects.keys().cloned().collect(),
        erasure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::BackupId;
    use crate::manifest::sample;

    fn key(id: &str) -> BackupKey {
        BackupKey {
            dataset: "d".into(),
            id: BackupId::parse(id).unwrap(),
        }
    }

    #[test]
    fn finished_backups_come_from_their_manifest_and_the_rest_from_their_shards() {
        let m = sample(&[b"abcd", b"efgh", b"ij"]);
        let mut done = BackupEntry::default();
        done.manifests.insert("a".into(), Ok(m.clone()));
        done.manifests.insert("b".into(), Err("unreadable".into()));
        let mut half = BackupEntry::default();
        let shard = m.shards[0].name(Default::default());
        half.objects.entry("b".into()).or_default().insert(shard, 4);
        half.objects
            .entry("b".into())
            .or_default()
            .insert("x.tmp".into(), 1);
        let catalog = Catalog {
            host: "h".into(),
            order: vec!["a".into(), "b".into()],
            backups: [
                (key("20261121T020000Z-full"), done),
                (key("20261122T020000Z-full"), half),
            ]
            .into(),
            unreachable: Default::default(),
        };
        let v = serde_json::to_value(list_report(&catalog)).unwrap();
        let (done, half) = (&v["backups"][0], &v["backups"][1]);
        assert_eq!(done["state"], "complete");
        assert_eq!(done["created"], "2026-11-21T02:00:00Z");
        assert_eq!(done["total_bytes"], 10);
        assert_eq!(done["stored_bytes"], 10, "stored as it is");
        assert_eq!(done["shards"], 3);
        assert_eq!(done["providers"], serde_json::json!(["a"]));
        assert_eq!(half["state"], "unfinished");
        assert_eq!(half["shards"], 1);
        assert_eq!(half["providers"], serde_json::json!(["b"]));
        assert!(half["created"].is_null() && half["total_bytes"].is_null());
        assert!(half["stored_bytes"].is_null());
        assert_eq!(v["unreachable"], serde_json::json!([]));
    }

    #[test]
    fn an_encrypted_backup_lists_its_plaintext_and_stored_sizes_without_a_key() {
        let text = b"the same line again and again\n".repeat(200);
        let (m, stored) = crate::gaps::fixture::encoded(&[&text, b"tail"]);
        let mut done = BackupEntry::default();
        done.manifests.insert("a".into(), Ok(m));
        let catalog = Catalog {
            host: "h".into(),
            order: vec!["a".into()],
            backups: [(key("20261121T020000Z-full"), done)].into(),
            unreachable: Default::default(),
        };
        let v = serde_json::to_value(list_report(&catalog)).unwrap();
        let b = &v["backups"][0];
        assert_eq!(b["state"], "complete");
        assert_eq!(b["total_bytes"], text.len() as u64 + 4);
        let on_disk: usize = stored.iter().map(|s| s.len()).sum();
        assert_eq!(b["stored_bytes"], on_disk as u64);
        assert!(on_disk < text.len() / 2, "compressed: {on_disk}");
    }
}
