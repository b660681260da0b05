//! Migrations: copy, verify at the destination, and only then empty the source.

use super::*;

#[tokio::test]
async fn migration_copies_verifies_and_only_then_removes_the_source() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(1)); // a lacks one: d gets it from b
    let mode = Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    };
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &mode);
    assert!(p.copies.iter().all(|c| c.dests == vec!["d".to_string()]));
    assert_eq!(p.copies[0].sources[0], "a", "the source comes first");
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
    assert!(
        s.mems[..3].iter().all(|m| m.ops().is_empty()),
        "only d is written to"
    );
    let (a, d): (DynProvider, DynProvider) = (s.mem("a").clone(), s.mem("d").clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let limits = s.options().limits;
    let cancel = CancellationToken::new();
    let check = verify_migration(&catalog, &surveys, &a, &d, limits, &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(check.verified, vec![key()]);
    assert!(check.failed.is_empty());
    for (i, data) in SHARDS.iter().enumerate() {
        assert_eq!(s.mem("d").object(&s.shard(i)).unwrap(), *data);
    }

    // Damage at the destination is caught by the hash check.
    s.mem("d")
        .set_object(&s.shard(0), Bytes::from_static(b"abcX"));
    let check = verify_migration(&catalog, &surveys, &a, &d, limits, &progress, &cancel)
        .await
        .unwrap();
    assert!(check.verified.is_empty());
    assert!(
        check.failed[0].error.contains("SHA-256"),
        "{:?}",
        check.failed
    );

    let (n, errors) = remove_source(&catalog, &a, &[key()], &cancel)
        .await
        .unwrap();
    assert!(errors.is_empty());
    assert_eq!(n, 3, "a's two shards and its manifest");
    let ops = s.mem("a").ops();
    assert_eq!(
        ops[0],
        format!("delete {}", path(MANIFEST)),
        "manifest first: {ops:?}"
    );
    assert!(s.mem("a").paths().is_empty());
}

#[tokio::test]
async fn migration_of_an_unfinished_backup_takes_every_shard_and_compares_with_the_source() {
    let s = Setup::new();
    for m in &s.mems[..3] {
        m.remove_object(&path(MANIFEST));
    }
    let mode = Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    };
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &mode);
    // The last shard (2 bytes, shorter than the 4-byte shard size) has no provable length but
    // a migration takes it anyway.
    assert_eq!(p.copies.len(), 3, "{:?}", p.copies);
    assert!(p.manifests.is_empty());
    execute(
        p,
        &s.providers(),
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let (a, d): (DynProvider, DynProvider) = (s.mem("a").clone(), s.mem("d").clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let check = verify_migration(
        &catalog,
        &surveys,
        &a,
        &d,
        s.options().limits,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(check.verified, vec![key()], "{:?}", check.failed);
}
