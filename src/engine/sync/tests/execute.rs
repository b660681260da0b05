//! Executing a plan: copies checked before upload, confirmed by listing, manifests last.

use super::*;

#[tokio::test]
async fn sync_repairs_every_kind_of_damage_and_writes_manifests_last() {
    let s = Setup::new();
    s.damage();
    let report = s.sync(&Mode::All, &corrupt_c2()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for m in &s.mems[..3] {
        for (i, data) in SHARDS.iter().enumerate() {
            assert_eq!(
                m.object(&s.shard(i)).unwrap(),
                *data,
                "{} shard {i}",
                m.name()
            );
        }
        assert!(m.object(&path(MANIFEST)).is_some());
    }
    let ops = s.mem("a").ops();
    assert_eq!(
        ops.last().unwrap(),
        &format!("put {}", path(MANIFEST)),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 3, "two shards and the manifest: {ops:?}");
    assert_eq!(s.mem("b").ops(), vec![format!("put {}", s.shard(1))]);
    assert_eq!(report.copied.len(), 5);
    assert_eq!(
        report.bytes,
        4 + 4 + 2 + 2 + s.manifest.to_json().len() as u64
    );
    // Everything whole now: nothing more to do.
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    assert!(surveys.iter().all(|(_, f)| !f.has_gaps()));
    assert!(plan(&catalog, &surveys, &Mode::All).is_empty());
}

#[tokio::test]
async fn a_corrupt_source_is_skipped_and_never_spread() {
    let s = Setup::new();
    // a misses shard 2; b's copy is corrupt (not known: no deep check), c's is good.
    s.mem("a").remove_object(&s.shard(2));
    s.mem("b")
        .set_object(&s.shard(2), Bytes::from_static(b"iX"));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.copied.len(), 1);
    assert_eq!(report.copied[0].from, "c");
    assert_eq!(s.mem("a").object(&s.shard(2)).unwrap(), SHARDS[2]);
}

#[tokio::test]
async fn a_listed_hash_mismatch_is_repaired_by_a_plain_sync_from_a_good_copy() {
    let s = Setup::new();
    // b's shard 1 has the right size but other bytes; no deep check, only listed hashes.
    s.mem("b")
        .set_object(&s.shard(1), Bytes::from_static(b"eXgh"));
    let catalog = Catalog::scan_hashed(&s.providers(), HOST, None).await;
    let surveys = gaps::survey(&s.cfg, &catalog, &Corrupt::new());
    let b = surveys[0].1.provider("b").unwrap();
    assert_eq!(b.corrupt_shards, vec![1], "{b:#?}");
    let p = plan(&catalog, &surveys, &Mode::All);
    let report = execute(
        p,
        &s.providers(),
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.copied.len(),
        1,
        "only that object: {:?}",
        report.copied
    );
    assert_eq!(report.copied[0].to, "b");
    assert_eq!(s.mem("b").object(&s.shard(1)).unwrap(), SHARDS[1]);
    assert!(s.mem("a").ops().iter().all(|o| !o.starts_with("put")));
}

#[tokio::test]
async fn a_shard_bad_everywhere_is_reported_and_not_copied() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(2));
    s.mem("b")
        .set_object(&s.shard(2), Bytes::from_static(b"iX"));
    s.mem("c")
        .set_object(&s.shard(2), Bytes::from_static(b"Xj"));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(s.mem("a").ops().is_empty(), "nothing written to a");
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let f = &report.failed[0];
    assert_eq!(
        (f.to.as_str(), f.object.as_str()),
        ("a", shard_name(2, 8).as_str())
    );
    assert!(
        f.error.contains("corrupt") && f.error.contains("20261121T020000Z-full"),
        "{}",
        f.error
    );
    assert!(s.mem("b").ops().is_empty() && s.mem("c").ops().is_empty());
}

#[tokio::test]
async fn a_failing_server_side_copy_falls_back_to_copying_through() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(0));
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &Mode::All);
    let mut opts = s.options();
    for n in ["a", "b", "c"] {
        opts.remotes.insert(
            n.into(),
            RemoteId {
                backend: Some("same".into()),
                root: format!("root-of-{n}"),
            },
        );
    }
    let report = execute(
        p,
        &s.providers(),
        &opts,
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(!report.copied[0].server_side);
    assert_eq!(s.mem("a").object(&s.shard(0)).unwrap(), SHARDS[0]);
}

#[tokio::test]
async fn a_truncated_upload_is_caught_by_the_listing_and_no_manifest_follows() {
    let s = Setup::new();
    let a = s.mem("a");
    a.remove_object(&s.shard(1));
    a.remove_object(&path(MANIFEST));
    // A provider that stores only part of what it is given, like `rclone rcat` killed mid-way.
    struct Cut(Arc<MemoryProvider>);
    impl Provider for Cut {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn put<'a>(
            &'a self,
            path: &'a str,
            data: Bytes,
            p: Option<ProgressFn>,
        ) -> futures::future::BoxFuture<'a, Result<(), ProviderError>> {
            self.0.put(path, data.slice(..1), p)
        }
        fn get<'a>(
            &'a self,
            path: &'a str,
            limit: u64,
        ) -> futures::future::BoxFuture<'a, Result<Bytes, ProviderError>> {
            self.0.get(path, limit)
        }
        fn list<'a>(
            &'a self,
            dir: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<crate::provider::ObjectInfo>, ProviderError>>
        {
            self.0.list(dir)
        }
        fn delete<'a>(
            &'a self,
            path: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), ProviderError>> {
            self.0.delete(path)
        }
        fn about(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<crate::provider::Usage, ProviderError>> {
            self.0.about()
        }
    }
    let mut providers = s.providers();
    providers[0] = Arc::new(Cut(a.clone()));
    let catalog = Catalog::scan(&providers, HOST, None).await;
    let surveys = gaps::survey(&s.cfg, &catalog, &Corrupt::new());
    let p = plan(&catalog, &surveys, &Mode::All);
    let report = execute(
        p,
        &providers,
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.copied.is_empty(), "{:?}", report.copied);
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert!(report.failed[0].error.contains("holds 1 bytes, not 4"));
    assert!(report.failed[1].error.contains("manifest not written"));
    assert!(a.object(&path(MANIFEST)).is_none());
}

#[tokio::test]
async fn unfinished_backups_get_their_shards_but_no_manifest() {
    let s = Setup::new();
    for m in &s.mems[..3] {
        m.remove_object(&path(MANIFEST));
    }
    s.mem("b").remove_object(&s.shard(0));
    s.mem("c").remove_object(&s.shard(0));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(s.mem("b").object(&s.shard(0)).unwrap(), SHARDS[0]);
    assert_eq!(s.mem("c").object(&s.shard(0)).unwrap(), SHARDS[0]);
    assert!(s.mems.iter().all(|m| m.object(&path(MANIFEST)).is_none()));
}

#[tokio::test]
async fn provider_errors_during_upload_are_failures_not_aborts() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(0));
    s.mem("a").remove_object(&s.shard(1));
    s.mem("a").inject(Fault {
        op: "put",
        path_contains: shard_name(0, 0),
        kind: crate::error::ErrorKind::Permanent,
        times: u32::MAX,
    });
    let report = tokio::time::timeout(Duration::from_secs(10), s.sync(&Mode::All, &Corrupt::new()))
        .await
        .unwrap();
    assert_eq!(report.copied.len(), 1, "shard 1 still arrives");
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].error.contains("injected"));
}

#[tokio::test]
async fn a_source_that_fails_is_dropped_and_the_others_serve_the_rest() {
    let s = Setup::new();
    // c lost everything; a, the first source in priority order, is dead.
    for i in 0..SHARDS.len() {
        s.mem("c").remove_object(&s.shard(i));
    }
    s.mem("a").inject(Fault {
        op: "get",
        path_contains: String::new(),
        kind: crate::error::ErrorKind::Transient,
        times: u32::MAX,
    });
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        report.copied.iter().all(|c| c.from == "b"),
        "{:?}",
        report.copied
    );
    // Copies run two at a time: at most the first two reads hit a before it is dropped.
    let hits = s.mem("a").faulted();
    assert!((1..=2).contains(&hits), "a was tried {hits} times");
}
