use super::*;

fn stream(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn schemes_parse_and_print() {
    assert_eq!("2+1".parse(), Ok(Scheme { k: 2, m: 1 }));
    assert_eq!("4+2".parse::<Scheme>().unwrap().to_string(), "4+2");
    for bad in [
        "", "2", "2+", "+1", "0+1", "2+0", "2+-1", "a+b", " 2+1", "+2+1", "40+30",
    ] {
        let e = bad.parse::<Scheme>().unwrap_err();
        assert!(e.contains("\"k+m\""), "{bad}: {e}");
    }
}

#[test]
fn piece_lengths_are_even_and_cover_the_shard() {
    let s = Scheme { k: 3, m: 2 };
    for len in [1u64, 2, 3, 5, 6, 7, 64 << 20, (64 << 20) + 1] {
        let p = s.piece_len(len);
        assert_eq!(p % 2, 0, "{len}");
        assert!(p * 3 >= len && (p - 2) * 3 < len.max(4), "{len}: {p}");
    }
}

#[test]
fn any_k_pieces_give_the_shard_back() {
    for (scheme, len) in [
        (Scheme { k: 2, m: 1 }, 1001),
        (Scheme { k: 4, m: 2 }, 65_536),
        (Scheme { k: 3, m: 2 }, 3),
        (Scheme { k: 1, m: 2 }, 10),
    ] {
        let data = stream(len);
        let pieces = split(scheme, &data).unwrap();
        assert_eq!(pieces.len(), scheme.total());
        assert!(pieces
            .iter()
            .all(|p| p.len() as u64 == scheme.piece_len(len as u64)));
        // Every subset of exactly k pieces.
        for mask in 0u32..1 << scheme.total() {
            if mask.count_ones() as usize != scheme.k {
                continue;
            }
            let some: Vec<Option<Bytes>> = (0..scheme.total())
                .map(|i| (mask >> i & 1 == 1).then(|| pieces[i].clone()))
                .collect();
            assert_eq!(
                join(scheme, len as u64, &some).unwrap(),
                data,
                "{scheme} {mask:b}"
            );
            assert_eq!(rebuild(scheme, len as u64, &some).unwrap(), pieces);
        }
    }
}

#[test]
fn data_pieces_are_the_shard_itself() {
    let data = stream(9);
    let pieces = split(Scheme { k: 2, m: 1 }, &data).unwrap();
    assert_eq!(&pieces[0][..], &data[..6]);
    assert_eq!(&pieces[1][..], &[&data[6..], &[0, 0, 0][..]].concat()[..]);
}

#[test]
fn too_few_or_wrong_pieces_are_errors() {
    let s = Scheme { k: 2, m: 1 };
    let pieces = split(s, &stream(100)).unwrap();
    let one = vec![Some(pieces[0].clone()), None, None];
    assert_eq!(
        join(s, 100, &one),
        Err(ErasureError::TooFew { have: 1, need: 2 })
    );
    let short = vec![Some(pieces[0].slice(1..)), Some(pieces[1].clone()), None];
    assert!(matches!(
        join(s, 100, &short),
        Err(ErasureError::WrongLength { piece: 1, .. })
    ));
}

/// The code is pinned: a crate upgrade that changed the parity would make old backups
/// undecodable by README.md's description, so it must fail here first.
#[test]
fn parity_is_pinned() {
    let pieces = split(
        Scheme { k: 2, m: 1 },
        &Bytes::from_static(b"offsite erasure"),
    )
    .unwrap();
    assert_eq!(
        crate::hashing::sha256(&pieces[2]),
        "d9c647cb0b43b10171135f579c27b4f82c315c80a2eeb7ce4edbc6dab0bf61cb"
    );
}

#[test]
fn placement_rotates_and_never_repeats_within_a_shard() {
    assert_eq!(
        (0..3).map(|p| placement(0, p, 3)).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        (0..3).map(|p| placement(1, p, 4)).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        (0..3).map(|p| placement(3, p, 4)).collect::<Vec<_>>(),
        [3, 0, 1]
    );
    let mut load = [0; 4];
    for s in 0..400 {
        let held: std::collections::BTreeSet<usize> = (0..3).map(|p| placement(s, p, 4)).collect();
        assert_eq!(held.len(), 3);
        held.iter().for_each(|&i| load[i] += 1);
    }
    assert_eq!(load, [300; 4]);
    assert_eq!(placement(u64::MAX, 2, 5), ((u64::MAX % 5) as usize + 2) % 5);
}

#[test]
fn piece_at_is_the_inverse_of_placement() {
    for n in 3..=7 {
        for shard in [0u64, 1, 2, 5, 11, u64::MAX] {
            for piece in 0..n {
                assert_eq!(piece_at(shard, placement(shard, piece, n), n), piece);
            }
        }
    }
}

#[test]
fn coding_in_stripes_gives_the_parity_of_coding_whole_pieces() {
    // Pieces of 2 MiB + 130 bytes: two whole stripes and a short one.
    let scheme = Scheme { k: 3, m: 2 };
    let len = 3 * ((2 << 20) + 130);
    let shard: Bytes = (0..len)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect::<Vec<u8>>()
        .into();
    let pieces = split(scheme, &shard).unwrap();
    let whole = reed_solomon_simd::encode(3, 2, &pieces[..3]).unwrap();
    assert!(pieces[3] == whole[0] && pieces[4] == whole[1]);
    let some = vec![
        None,
        Some(pieces[1].clone()),
        None,
        Some(pieces[3].clone()),
        Some(pieces[4].clone()),
    ];
    assert!(join(scheme, len as u64, &some).unwrap() == shard);
}
