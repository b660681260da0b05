//! Sync and `--migrate` on a compressed and encrypted backup, without any identity: stored
//! bytes are copied as they are, checked against the manifest's SHA-256 of the stored object.

use super::*;

/// `stored` is whole on `m`: the bytes the backup wrote, whose SHA-256 the manifest records.
fn assert_stored(s: &Setup, m: &MemoryProvider) {
    for (i, rec) in s.manifest.shards.iter().enumerate() {
        let got = m
            .object(&s.shard(i))
            .unwrap_or_else(|| panic!("{} shard {i}", m.name()));
        assert_eq!(got, s.stored[i], "{} shard {i}", m.name());
        assert_eq!(crate::hashing::sha256(&got), rec.sha256);
    }
    let manifest = m.object(&path(MANIFEST)).unwrap();
    let manifest = crate::manifest::Manifest::from_json(&manifest).unwrap();
    assert!(manifest.is_sealed() && manifest.source.is_empty());
}

#[tokio::test]
async fn sync_copies_encrypted_shards_as_they_are_stored() {
    let s = Setup::encoded();
    assert!(s.shard(0).ends_with(".zst.age"));
    let a = s.mem("a");
    a.remove_object(&s.shard(0));
    a.remove_object(&path(MANIFEST));
    let cut = s.stored[1].slice(..10);
    s.mem("b").set_object(&s.shard(1), cut);
    let mut flipped = s.stored[2].to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    s.mem("c").set_object(&s.shard(2), Bytes::from(flipped));

    let report = s.sync(&Mode::All, &corrupt_c2()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for m in &s.mems[..3] {
        assert_stored(&s, m);
    }
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    assert!(surveys.iter().all(|(_, f)| !f.has_gaps()));
    assert!(plan(&catalog, &surveys, &Mode::All).is_empty());
}

#[tokio::test]
async fn a_migration_moves_encrypted_shards_byte_for_byte() {
    let s = Setup::encoded();
    let providers = s.providers();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let cancel = CancellationToken::new();
    let cx = SyncContext {
        cfg: &s.cfg,
        providers: &providers,
        progress: &progress,
        cancel: &cancel,
    };
    let req = SyncRequest {
        mode: Mode::Migrate {
            from: "a".into(),
            to: "d".into(),
        },
        datasets: &[],
        deep: false,
        dry_run: false,
        remove_source: true,
    };
    let SyncRun::Done(report, late) = run(&cx, &req).await.unwrap() else {
        panic!("not a dry run");
    };
    late.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.migration.unwrap().removed_objects, Some(4));
    assert!(s.mem("a").paths().is_empty(), "{:?}", s.mem("a").paths());
    assert_stored(&s, s.mem("d"));
}
