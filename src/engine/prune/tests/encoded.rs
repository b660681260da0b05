//! Prune on compressed and encrypted backups, without any identity: what is deleted is what
//! the listings name (`.zst.age` objects and manifests), and links come from the clear part
//! of the manifests.

use super::*;
use crate::gaps::fixture::{encoded, store as store_encoded};

#[tokio::test]
async fn prune_deletes_every_object_of_an_encrypted_chain() {
    let (mem, dynp) = providers(2);
    let (old, new) = (id(1, BackupKind::Full), id(3, BackupKind::Full));
    let old_incr = id(2, BackupKind::Incremental);
    for (backup, parent) in [(&old, None), (&old_incr, Some(&old)), (&new, None)] {
        let (mut m, stored) = encoded(&[b"abcd", b"ef"]);
        m.backup_id = backup.to_string();
        m.kind = backup.kind;
        m.parent = parent.map(|p: &BackupId| ParentRef {
            backup_id: p.to_string(),
            snapshot: None,
        });
        mem.iter().for_each(|p| store_encoded(p, &m, &stored));
    }
    let (p, work) = prune_plan(&dynp, 1).await;
    assert_eq!(p.delete, vec![old.clone(), old_incr.clone()]);
    let results = execute(&dynp, work, &NoProgress, &CancellationToken::new()).await;
    for (m, r) in mem.iter().zip(&results) {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(
            (r.deleted, r.skipped),
            (6, 0),
            "two shards and a manifest each"
        );
        let left = m.paths();
        assert_eq!(left.len(), 3, "{left:?}");
        let kept = layout::backup_dir(HOST, DS, &new);
        assert!(left.iter().all(|p| p.starts_with(&kept)), "{left:?}");
        assert_eq!(
            left.iter().filter(|p| p.ends_with(".zst.age")).count(),
            2,
            "{left:?}"
        );
    }
}
