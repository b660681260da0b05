//! Fetching one link: round trips, shards read in pieces from several providers, and failover
//! from corrupt, short, missing and dropped copies to good ones, or the "no good copy" stop.

use super::*;

#[tokio::test]
async fn round_trip_spread_over_every_provider() {
    let ps = mems(3);
    let bytes = data(40 * 1000 + 17, 1);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 6, 2);
    let (out, r) = restore_to_vec(&f, &link).await;
    assert_eq!(r.unwrap(), bytes.len() as u64);
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    assert_eq!(report.iter().map(|l| l.shards).sum::<u64>(), 41);
    for l in &report {
        assert!(l.shards > 0, "{} served no shard: {report:?}", l.provider);
    }
}

#[tokio::test]
async fn shards_are_read_in_pieces_from_several_providers_at_once() {
    let ps = mems(3);
    let bytes = data(40 * 1000 + 17, 1);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    assert_eq!(r.unwrap(), bytes.len() as u64);
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    assert_eq!(
        report.iter().map(|l| l.bytes).sum::<u64>(),
        bytes.len() as u64,
        "{report:?}"
    );
    // A shard counts once for every provider that delivered a piece of it.
    assert!(
        report.iter().map(|l| l.shards).sum::<u64>() > 41,
        "no shard came from two providers: {report:?}"
    );
    for l in &report {
        assert!(l.bytes > 0 && l.failures == 0, "{report:?}");
    }
}

/// Pieces 0 and 3 of a lone shard go to p1, piece 1 to p2 and piece 2 to p3 (nothing is
/// measured yet, so the plan goes round in preference order). Every piece is corrupt on p1 and
/// p2, so the assembled shard fails its checksum, is fetched whole from p1, p2 (both named
/// corrupt) and then p3.
#[tokio::test]
async fn a_shard_assembled_from_a_corrupt_piece_is_fetched_whole_one_provider_at_a_time() {
    let ps = mems(3);
    let bytes = data(1000, 16);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let path = shard_path(FULL, 0, &m);
    for p in [&ps[0], &ps[1]] {
        let mut v = p.object(&path).unwrap().to_vec();
        for i in (0..v.len()).step_by(PIECE as usize) {
            v[i] ^= 0xff;
        }
        p.set_object(&path, Bytes::from(v));
    }
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    let failures: Vec<u64> = report.iter().map(|l| l.failures).collect();
    assert_eq!(failures, [1, 1, 0], "{report:?}");
    assert_eq!(report[2].bytes, 1000, "{report:?}");
    assert!(report.iter().all(|l| l.dropped.is_none()), "{report:?}");

    // No good copy anywhere: each provider is named, nothing is written.
    flip_byte(&ps[2], &path);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    let text = r.unwrap_err().to_string();
    for p in ["p1", "p2", "p3"] {
        assert!(
            text.contains(&format!("provider {p}: corrupt copy")),
            "{p} not named corrupt in: {text}"
        );
    }
    assert!(out.is_empty());
}

/// As above, p2 serves piece 1 and p3 piece 2 of a lone shard: p2's copy turned short and p3's
/// disappeared after the listing, so both pieces come from p1.
#[tokio::test]
async fn a_piece_missing_or_short_on_one_provider_comes_from_another() {
    let ps = mems(3);
    let bytes = data(1000, 17);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let path = shard_path(FULL, 0, &m);
    let cut = |p: &MemoryProvider| p.set_object(&path, p.object(&path).unwrap().slice(..450));
    cut(&ps[1]);
    ps[2].remove_object(&path);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    let failures: Vec<u64> = report.iter().map(|l| l.failures).collect();
    assert_eq!(failures, [0, 1, 1], "{report:?}");
    assert_eq!(report[0].bytes, 1000, "{report:?}");
    assert!(report.iter().all(|l| l.dropped.is_none()), "{report:?}");

    cut(&ps[0]);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    let text = r.unwrap_err().to_string();
    for needle in [
        "provider p1: short copy",
        "provider p2: short copy: 150 of the 300 bytes from byte 300",
        "provider p3: download failed",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
    assert!(out.is_empty());
}

#[tokio::test]
async fn corrupt_missing_and_short_copies_fail_over_to_good_ones() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(10 * 1000, 2);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        // Shard 1: corrupt on p1 and p2. Shard 4: gone from p1 after listing. Shard 6: p1 and p3
        // hold a short copy (caught by the listing, so never fetched).
        flip_byte(&ps[0], &shard_path(FULL, 1, &m));
        flip_byte(&ps[1], &shard_path(FULL, 1, &m));
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        ps[0].remove_object(&shard_path(FULL, 4, &m));
        for p in [&ps[0], &ps[2]] {
            p.set_object(&shard_path(FULL, 6, &m), Bytes::from_static(b"short"));
        }
        let link6 = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        assert!(link6
            .why_not("p1", &m.shards[6])
            .unwrap()
            .contains("5 bytes listed"));
        // Listings from before the removal, but the short copies' listing for shard 6.
        let mut link = link;
        link.objects = link6.objects.clone();
        link.objects
            .get_mut("p1")
            .unwrap()
            .insert(m.shards[4].name(Default::default()), m.shards[4].length);
        let f = fetcher(dyns(&ps), 4, 1).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes, "restored bytes differ");
        assert_eq!(
            f.report()
                .iter()
                .map(|l| l.dropped.is_some() as u32)
                .sum::<u32>(),
            0
        );
    }
}

#[tokio::test]
async fn no_good_copy_stops_before_the_bad_shard_and_names_everything() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(6 * 1000, 3);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        flip_byte(&ps[0], &shard_path(FULL, 3, &m));
        flip_byte(&ps[1], &shard_path(FULL, 3, &m));
        ps[2].inject(Fault {
            op: "get",
            path_contains: m.shards[3].name(Default::default()),
            kind: ErrorKind::NotFound,
            times: u32::MAX,
        });
        let f = fetcher(dyns(&ps), 4, 2).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        let e = r.unwrap_err();
        let ngc = e.downcast_ref::<NoGoodCopy>().expect("a NoGoodCopy error");
        assert_eq!((ngc.index, ngc.offset), (3, 3000));
        let text = e.to_string();
        for needle in [
            "shard 3",
            "byte offset 3000",
            FULL,
            "provider p1: corrupt",
            "provider p2: corrupt",
            "provider p3: download failed",
        ] {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }
        assert!(
            out == bytes[..3000],
            "wrote {} bytes, want exactly the 3000 before shard 3",
            out.len()
        );
    }
}

#[tokio::test]
async fn a_provider_that_goes_down_is_dropped_and_the_others_finish() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(30 * 1000, 4);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        ps[1].inject(Fault {
            op: "get",
            path_contains: String::new(),
            kind: ErrorKind::Transient,
            times: u32::MAX,
        });
        let f = fetcher(dyns(&ps), 4, 2).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes, "restored bytes differ");
        let report = f.report();
        assert!(
            report[1].dropped.is_some() && report[1].shards == 0,
            "{report:?}"
        );
        // Dropped after its first failures, not retried for every shard.
        assert!(report[1].failures <= 2, "{report:?}");
    }
}

#[tokio::test]
async fn a_shard_only_a_dropped_provider_holds_is_still_tried_there() {
    for piece in PIECE_SIZES {
        let ps = mems(2);
        let bytes = data(4 * 1000, 5);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1]], &m, &bytes);
        ps[1].remove_object(&shard_path(FULL, 3, &m));
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        // p1 fails shard 0 (and is dropped; p2 serves it), then answers again.
        ps[0].inject(Fault {
            op: "get",
            path_contains: m.shards[0].name(Default::default()),
            kind: ErrorKind::Transient,
            times: 1,
        });
        let f = fetcher(dyns(&ps), 2, 1).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes);
        let report = f.report();
        assert!(
            report[0].dropped.is_some() && report[0].shards >= 1,
            "{report:?}"
        );
    }
}
