//! Chains and links: walking the chain, manifests that disagree or do not parse, streaming
//! links into a file receiver, cancellation, and the check that a stream is whole.

use super::*;

#[tokio::test]
async fn plan_walks_the_chain_and_fails_on_a_missing_link_before_receiving() {
    let ps = mems(2);
    let (f, i1, i2) = (data(3000, 8), data(1500, 9), data(500, 10));
    let (i1_id, i2_id) = ("20261102T020000Z-incr", "20261103T020000Z-incr");
    let mf = manifest_for(FULL, &f, 1000, None);
    let m1 = manifest_for(i1_id, &i1, 1000, Some(FULL));
    let m2 = manifest_for(i2_id, &i2, 1000, Some(i1_id));
    for (m, b) in [(&mf, &f), (&m1, &i1), (&m2, &i2)] {
        store(&[&ps[0], &ps[1]], m, b);
    }
    let chain = links(&dyns(&ps), Selector::Newest, true).await.unwrap();
    let ids: Vec<&str> = chain
        .iter()
        .map(|l| l.manifest.backup_id.as_str())
        .collect();
    assert_eq!(ids, [FULL, i1_id, i2_id]);
    let raw = links(&dyns(&ps), Selector::Backup(i1_id.into()), false)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].manifest.backup_id, i1_id);
    for p in &ps {
        for path in p.paths() {
            if path.contains(i1_id) {
                p.remove_object(&path);
            }
        }
    }
    let e = links(&dyns(&ps), Selector::Newest, true).await.unwrap_err();
    let e = e
        .downcast_ref::<chain::ChainError>()
        .expect("a chain error")
        .clone();
    assert!(
        matches!(e, chain::ChainError::MissingLink { ref missing, .. } if missing == i1_id),
        "{e}"
    );
}

#[tokio::test]
async fn a_disagreeing_or_broken_manifest_excludes_only_that_provider() {
    let ps = mems(3);
    let bytes = data(5000, 11);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    // p2 claims fewer shards than the listings show; p3's manifest does not parse.
    let mut other = m.clone();
    other.total_bytes -= other.shards.pop().unwrap().length;
    ps[1].set_object(
        &format!("{}/{}", dir(FULL), layout::MANIFEST),
        Bytes::from(other.to_json()),
    );
    ps[2].set_object(
        &format!("{}/{}", dir(FULL), layout::MANIFEST),
        Bytes::from_static(b"{"),
    );
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    assert!(
        link.excluded["p2"].contains("disagrees"),
        "{:?}",
        link.excluded
    );
    assert!(
        link.excluded["p3"].contains("does not parse"),
        "{:?}",
        link.excluded
    );
    let f = fetcher(dyns(&ps), 4, 2);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes);
    let report = f.report();
    assert_eq!((report[1].shards, report[2].shards), (0, 0), "{report:?}");
}

#[tokio::test]
async fn an_unusable_newest_manifest_is_an_error_naming_the_provider() {
    let ps = mems(1);
    let (a, b) = (data(1000, 12), data(1000, 13));
    let newer = "20261102T020000Z-full";
    store(&[&ps[0]], &manifest_for(FULL, &a, 1000, None), &a);
    store(&[&ps[0]], &manifest_for(newer, &b, 1000, None), &b);
    ps[0].set_object(
        &format!("{}/{}", dir(newer), layout::MANIFEST),
        Bytes::from_static(b"not json"),
    );
    let e = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(newer) && e.contains("provider p1") && e.contains("does not parse"),
        "{e}"
    );
    let older = links(&dyns(&ps), Selector::Backup(FULL.into()), true)
        .await
        .unwrap();
    assert_eq!(older[0].manifest.backup_id, FULL);
}

#[tokio::test]
async fn run_writes_a_file_only_when_every_byte_is_good() {
    let ps = mems(2);
    let bytes = data(5000, 14);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1]], &m, &bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("restored.bin");
    let dest = ReceiverSpec::File(out.clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let cancel = CancellationToken::new();

    let chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
    let f = fetcher(dyns(&ps), 4, 2);
    let report = stream_links(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(report.total_bytes, 5000);
    assert!(std::fs::read(&out).unwrap() == bytes);
    std::fs::remove_file(&out).unwrap();

    for p in &ps {
        flip_byte(p, &shard_path(FULL, 2, &m));
    }
    let e = stream_links(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("shard 2"), "{e:#}");
    assert!(!out.exists() && crate::receiver::leftover_partials(&out).is_empty());

    // A shard nobody lists fails before a receiver is even started.
    for p in &ps {
        p.remove_object(&shard_path(FULL, 4, &m));
    }
    let chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
    let e = stream_links(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("provider p1: does not hold s0000000004-b0000000000004000"),
        "{e}"
    );
    assert!(crate::receiver::leftover_partials(&out).is_empty());
}

#[tokio::test]
async fn cancellation_stops_with_interrupted() {
    let ps = mems(1);
    let bytes = data(5000, 15);
    store(&[&ps[0]], &manifest_for(FULL, &bytes, 1000, None), &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 2, 1);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let mut out = Vec::new();
    let e = f.stream(&link, &mut out, &cancel).await.unwrap_err();
    assert!(e.is::<Interrupted>(), "{e}");
    assert!(out.is_empty());
}

#[test]
fn a_restore_that_wrote_less_than_the_stream_never_succeeds() {
    let m = manifest_for(FULL, b"abcdefghij", 4, None);
    assert!(crate::engine::restore::covers_stream(&m, 10).is_ok());
    let e = crate::engine::restore::covers_stream(&m, 8).unwrap_err();
    assert!(format!("{e:#}").contains("incomplete"), "{e:#}");
    let mut short = m.clone();
    short.total_bytes = 12;
    assert!(crate::engine::restore::covers_stream(&short, 12).is_err());
    let mut gap = m.clone();
    gap.shards[1].offset = 5;
    assert!(crate::engine::restore::covers_stream(&gap, 10).is_err());
}
