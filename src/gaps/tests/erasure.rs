//! Gap detection on an erasure-coded backup: each piece is expected on its holder only, and
//! the backup's strength counts shards at full strength, degraded and lost.

use super::*;
use crate::gaps::fixture::erasure;
use bytes::Bytes;

const SHARDS: [&[u8]; 3] = [b"abcdefgh", b"ijklmnop", b"qrs"];

/// A 2+1 (or `scheme`) backup of three shards placed on `placed`, every piece and manifest
/// where it belongs.
fn whole_erasure(scheme: &str, placed: &[&str]) -> (BackupEntry, Manifest) {
    let stored: Vec<Bytes> = SHARDS.iter().map(|s| Bytes::from_static(s)).collect();
    let (m, pieces) = erasure(sample(&SHARDS), &stored, scheme.parse().unwrap(), placed);
    let mut e = BackupEntry::default();
    let ec = m.erasure.clone().unwrap();
    for (s, shard_pieces) in m.shards.iter().zip(&pieces) {
        for (p, bytes) in shard_pieces.iter().enumerate() {
            let objs = e
                .objects
                .entry(ec.holder(s.index, p).to_string())
                .or_default();
            objs.insert(m.piece_object(s, p), bytes.len() as u64);
        }
    }
    for p in placed {
        e.objects
            .entry(p.to_string())
            .or_default()
            .insert(MANIFEST.into(), 100);
        e.manifests.insert(p.to_string(), Ok(m.clone()));
    }
    (e, m)
}

fn strength(full: u64, degraded: u64, lost: u64, first_lost: Option<u64>) -> Option<Strength> {
    Some(Strength {
        full,
        degraded,
        lost,
        first_lost,
    })
}

/// The object name of piece `p` of shard `s` and its holder.
fn piece(m: &Manifest, s: usize, p: usize) -> (String, String) {
    let holder = m.erasure.as_ref().unwrap().holder(s as u64, p).to_string();
    (m.piece_object(&m.shards[s], p), holder)
}

#[test]
fn a_whole_erasure_backup_has_no_gaps_and_full_strength() {
    let (e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    assert!(!f.has_gaps() && !f.is_lost(), "{f:#?}");
    assert_eq!(f.strength, strength(3, 0, 0, None));
    assert_eq!(f.reference.len(), 9, "three pieces of three shards");
    for p in &f.providers {
        assert!(p.is_whole() && p.unexpected_objects.is_empty(), "{p:#?}");
        assert_eq!(p.held.shards, 3, "one piece of each shard");
        assert_eq!(p.held.prefix, 3);
    }
    let piece_len = m.shards[0].pieces[0].length;
    assert_eq!(f.provider("a").unwrap().held.bytes, 2 * piece_len + 2);
}

#[test]
fn a_missing_piece_is_a_missing_shard_of_its_holder_and_degrades_the_shard() {
    let (mut e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    let (name, holder) = piece(&m, 1, 0);
    e.objects.get_mut(&holder).unwrap().remove(&name);
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    assert!(f.has_gaps() && !f.is_lost());
    assert_eq!(f.strength, strength(2, 1, 0, None));
    for p in &f.providers {
        let want: Vec<u64> = if p.provider == holder {
            vec![1]
        } else {
            vec![]
        };
        assert_eq!(p.missing_shards, want, "{}", p.provider);
    }
}

#[test]
fn fewer_than_k_good_pieces_is_a_lost_shard() {
    let (mut e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    for p in [0, 2] {
        let (name, holder) = piece(&m, 2, p);
        e.objects.get_mut(&holder).unwrap().remove(&name);
    }
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    assert!(f.is_lost());
    assert_eq!(f.strength, strength(2, 0, 1, Some(2)));
}

#[test]
fn an_unreachable_provider_holds_no_good_piece() {
    let (e, _) = whole_erasure("2+1", &["a", "b", "c"]);
    let f = run_with(&e, &["a", "b", "c"], &["a", "b", "c"], &["b"], None);
    assert_eq!(f.strength, strength(0, 3, 0, None));
    let f = run_with(&e, &["a", "b", "c"], &["a", "b", "c"], &["b", "c"], None);
    assert_eq!(f.strength, strength(0, 0, 3, Some(0)));
}

#[test]
fn a_wrong_size_or_corrupt_piece_is_not_good() {
    let (mut e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    let (name, holder) = piece(&m, 0, 1);
    *e.objects.get_mut(&holder).unwrap().get_mut(&name).unwrap() -= 1;
    let (_, other) = piece(&m, 1, 2);
    let corrupt = BTreeMap::from([(other.clone(), BTreeSet::from([1]))]);
    let f = run_with(&e, &["a", "b", "c"], &["a", "b", "c"], &[], Some(&corrupt));
    assert_eq!(f.provider(&holder).unwrap().wrong_size_shards, vec![0]);
    assert_eq!(f.provider(&other).unwrap().corrupt_shards, vec![1]);
    assert_eq!(f.strength, strength(1, 2, 0, None));
}

#[test]
fn a_listed_md5_other_than_the_pieces_is_corrupt() {
    let (mut e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    let (name, holder) = piece(&m, 2, 0);
    let hashes = ListedHashes::new(Some(&"00".repeat(16)), None);
    e.hashes
        .insert(holder.clone(), BTreeMap::from([(name, hashes)]));
    let (good, good_holder) = piece(&m, 1, 1);
    let piece = &m.shards[1].pieces[1];
    let hashes = ListedHashes::new(piece.md5.as_deref(), piece.sha1.as_deref());
    e.hashes
        .entry(good_holder.clone())
        .or_default()
        .insert(good, hashes);
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    assert_eq!(f.provider(&holder).unwrap().corrupt_shards, vec![2]);
    assert_eq!(f.strength, strength(2, 1, 0, None));
}

#[test]
fn a_piece_on_another_provider_than_its_holder_is_unexpected_there() {
    let (mut e, m) = whole_erasure("2+1", &["a", "b", "c"]);
    let (name, holder) = piece(&m, 0, 0);
    let other = ["a", "b", "c"].into_iter().find(|p| *p != holder).unwrap();
    let size = e.objects[&holder][&name];
    e.objects.get_mut(other).unwrap().insert(name.clone(), size);
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    let o = f.provider(other).unwrap();
    assert_eq!(o.unexpected_objects, vec![name]);
    assert!(o.is_whole(), "{o:#?}");
    assert_eq!(f.strength, strength(3, 0, 0, None));
}

#[test]
fn rotation_over_four_providers_expects_each_piece_on_its_holder_only() {
    let (e, _) = whole_erasure("2+1", &["a", "b", "c", "d"]);
    // The config names other providers now: the manifest's placement is what counts.
    let f = run(&e, &["a", "b", "c", "d", "x"], &["a", "b", "x"]);
    assert!(!f.has_gaps(), "{f:#?}");
    let names: Vec<&str> = f.providers.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b", "c", "d"],
        "x holds nothing and is not placed"
    );
    assert!(f.providers.iter().all(|p| p.expected));
    // Placement (s + p) % 4: shard 0 on a,b,c; shard 1 on b,c,d; shard 2 on c,d,a.
    let held: Vec<u64> = f.providers.iter().map(|p| p.held.shards).collect();
    assert_eq!(held, [2, 2, 3, 2]);
    assert_eq!(
        f.provider("d").unwrap().held.prefix,
        3,
        "d holds no piece of shard 0"
    );
    assert_eq!(f.strength, strength(3, 0, 0, None));
}

#[test]
fn a_placed_provider_that_lost_everything_is_expected_and_missing_its_pieces() {
    let (mut e, _) = whole_erasure("2+1", &["a", "b", "c", "d"]);
    e.objects.remove("d");
    e.manifests.remove("d");
    let f = run(&e, &["a", "b", "c", "d"], &["a", "b", "c"]);
    let d = f.provider("d").expect("d is placed, so expected");
    assert!(d.expected);
    assert_eq!(d.missing_shards, vec![1, 2]);
    assert_eq!(d.manifest, ManifestState::Missing);
    assert_eq!(f.strength, strength(1, 2, 0, None));
}

#[test]
fn pieces_of_an_unfinished_erasure_backup_are_held_never_judged() {
    let (mut e, _) = whole_erasure("2+1", &["a", "b", "c"]);
    e.manifests.clear();
    for objs in e.objects.values_mut() {
        objs.remove(MANIFEST);
    }
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    assert!(f.is_unfinished() && f.strength.is_none());
    assert!(f.reference.is_empty(), "{:#?}", f.reference);
    for p in &f.providers {
        assert!(p.unexpected_objects.is_empty() && p.missing_shards.is_empty());
        assert_eq!(p.held.shards, 3, "{p:#?}");
    }
}

#[test]
fn pieces_on_a_provider_no_longer_configured_weaken_the_backup() {
    let (e, _) = whole_erasure("2+1", &["a", "b", "c"]);
    // c is gone from the config: its listing is not in the order at all.
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(f.providers.iter().all(|p| p.is_whole()), "{f:#?}");
    assert_eq!(f.strength, strength(0, 3, 0, None));
    assert!(f.is_weakened() && f.has_gaps());
}
