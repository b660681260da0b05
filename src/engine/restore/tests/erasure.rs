//! Erasure-coded backups: any `k` pieces of each shard restore it, whichever providers are
//! gone, a corrupt piece is replaced by another, and fewer than `k` good pieces fail naming
//! the shard and the providers, with nothing from that shard on written.

use super::encoded::{codec, encoded, keypair, keys, restore_file, text};
use super::*;
use crate::gaps::fixture;

/// `bytes` in shards of 1000, erasure-coded with `scheme` over `n` providers p1..pn (stored
/// with `c`), on those providers.
fn coded(
    bytes: &[u8],
    scheme: &str,
    n: usize,
    c: &crate::codec::Codec,
) -> (Vec<Arc<MemoryProvider>>, Manifest) {
    let ps = mems(n);
    let (m, objects) = encoded(FULL, bytes, 1000, None, c);
    let stored: Vec<Bytes> = objects.into_iter().map(|(_, b)| b).collect();
    let names: Vec<String> = ps.iter().map(|p| p.name().to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (m, pieces) = fixture::erasure(m, &stored, scheme.parse().unwrap(), &names);
    let on: Vec<(&str, &MemoryProvider)> =
        names.iter().copied().zip(ps.iter().map(|p| &**p)).collect();
    fixture::store_pieces(&on, &m, &pieces);
    (ps, m)
}

/// Removes every piece `p` holds (its manifest stays).
fn lose_pieces(p: &MemoryProvider) {
    for path in p.paths() {
        if !path.ends_with(layout::MANIFEST) {
            p.remove_object(&path);
        }
    }
}

async fn restored(ps: &[Arc<MemoryProvider>]) -> (Vec<u8>, Result<u64>) {
    let link = links(&dyns(ps), Selector::Newest, false)
        .await
        .unwrap()
        .remove(0);
    restore_to_vec(&fetcher(dyns(ps), 3, 2), &link).await
}

#[tokio::test]
async fn any_two_of_three_providers_restore_a_two_plus_one_backup() {
    let bytes = data(5500, 1);
    for gone in [None, Some(0), Some(1), Some(2)] {
        let (ps, _) = coded(&bytes, "2+1", 3, &codec(false, None));
        if let Some(g) = gone {
            lose_pieces(&ps[g]);
        }
        let (out, r) = restored(&ps).await;
        assert_eq!(r.unwrap(), bytes.len() as u64, "gone: {gone:?}");
        assert!(out == bytes, "gone: {gone:?}");
    }
}

#[tokio::test]
async fn a_corrupt_piece_is_replaced_by_another() {
    let bytes = data(3000, 2);
    let (ps, m) = coded(&bytes, "2+1", 3, &codec(false, None));
    // Shard 1's data pieces are on p2 and p3 (placement rotates): corrupt the first.
    let holder = m.erasure.as_ref().unwrap().holder(1, 0);
    let p = ps.iter().find(|p| p.name() == holder).unwrap();
    flip_byte(
        p,
        &format!("{}/{}", dir(FULL), m.piece_object(&m.shards[1], 0)),
    );
    let (out, r) = restored(&ps).await;
    assert_eq!(r.unwrap(), 3000);
    assert!(out == bytes);
}

#[tokio::test]
async fn fewer_than_k_good_pieces_fail_naming_the_shard_and_providers() {
    let bytes = data(3000, 3);
    let (ps, m) = coded(&bytes, "2+1", 3, &codec(false, None));
    // Shard 1 loses one piece and has another corrupted: shard 0 is written, nothing after.
    let e = m.erasure.clone().unwrap();
    let path = |p: usize| format!("{}/{}", dir(FULL), m.piece_object(&m.shards[1], p));
    let holder = |p: usize| ps.iter().find(|x| x.name() == e.holder(1, p)).unwrap();
    holder(0).remove_object(&path(0));
    flip_byte(holder(2), &path(2));
    let (out, r) = restored(&ps).await;
    let err = r.unwrap_err();
    let no = err.downcast_ref::<NoGoodCopy>().expect("NoGoodCopy");
    assert_eq!(no.index, 1);
    let text = err.to_string();
    assert!(text.contains("fewer than 2 of the 3 pieces"), "{text}");
    for piece in [0, 2] {
        assert!(
            text.contains(&format!("provider {}", e.holder(1, piece))),
            "{text}"
        );
    }
    assert!(text.contains("corrupt piece"), "{text}");
    assert_eq!(out, bytes[..1000], "shard 0 only");
}

#[tokio::test]
async fn two_providers_gone_leave_a_two_plus_one_backup_unrestorable_before_anything_is_written() {
    let bytes = data(3000, 4);
    let (ps, _) = coded(&bytes, "2+1", 3, &codec(false, None));
    lose_pieces(&ps[0]);
    lose_pieces(&ps[2]);
    let link = links(&dyns(&ps), Selector::Newest, false)
        .await
        .unwrap()
        .remove(0);
    let names: Vec<String> = ps.iter().map(|p| p.name().to_string()).collect();
    let no = link.unavailable(&names).expect("unavailable");
    assert_eq!(no.index, 0);
    assert!(no.to_string().contains("p1: does not hold"), "{no}");
}

#[tokio::test]
async fn four_plus_two_survives_any_two_lost_and_two_plus_one_rotates_over_four() {
    let bytes = data(6500, 5);
    for gone in [[0, 1], [2, 5], [3, 4], [0, 5]] {
        let (ps, _) = coded(&bytes, "4+2", 6, &codec(false, None));
        gone.iter().for_each(|&g| lose_pieces(&ps[g]));
        let (out, r) = restored(&ps).await;
        assert_eq!(r.unwrap(), 6500, "gone: {gone:?}");
        assert!(out == bytes, "gone: {gone:?}");
    }
    for gone in 0..4 {
        let (ps, _) = coded(&bytes, "2+1", 4, &codec(false, None));
        lose_pieces(&ps[gone]);
        let (out, r) = restored(&ps).await;
        assert_eq!(r.unwrap(), 6500, "gone: p{}", gone + 1);
        assert!(out == bytes);
    }
}

#[tokio::test]
async fn an_encrypted_compressed_erasure_coded_backup_restores_with_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, r) = keypair(tmp.path(), "key.txt");
    let bytes = text(4500, 6);
    let (ps, _) = coded(&bytes, "2+1", 3, &codec(true, Some(&r)));
    lose_pieces(&ps[1]);
    let out = tmp.path().join("out");
    let written = restore_file(&ps, keys(Some(&key)), &out).await.unwrap();
    assert_eq!(written, 4500);
    assert!(std::fs::read(&out).unwrap() == bytes);
}
