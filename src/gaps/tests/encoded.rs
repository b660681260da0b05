//! Gap detection on a compressed and encrypted backup, without any identity: the reference is
//! the manifest's stored names (`.zst.age`), lengths and hashes.

use super::*;
use crate::gaps::fixture::encoded;

/// An encrypted backup of three shards held whole by `holders`.
fn whole_encoded(holders: &[&str]) -> (BackupEntry, Manifest) {
    let (m, stored) = encoded(&[b"abcd", b"efgh", b"ij"]);
    let mut e = BackupEntry::default();
    for p in holders {
        let objs = e.objects.entry(p.to_string()).or_default();
        for (s, bytes) in m.shards.iter().zip(&stored) {
            objs.insert(m.object(s), bytes.len() as u64);
        }
        objs.insert(MANIFEST.into(), 100);
        e.manifests.insert(p.to_string(), Ok(m.clone()));
    }
    (e, m)
}

#[test]
fn a_whole_encrypted_backup_has_no_gaps() {
    let (e, m) = whole_encoded(&["a", "b"]);
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(!f.has_gaps(), "{f:#?}");
    assert!(f.reference.iter().all(|r| r.name.ends_with(".zst.age")));
    let stored: u64 = m.shards.iter().map(|s| s.length).sum();
    assert_eq!(f.total_bytes, Some(10), "the plaintext stream's length");
    for p in &f.providers {
        assert!(p.is_whole() && p.unexpected_objects.is_empty());
        assert_eq!(p.held.bytes, stored, "what the provider stores");
    }
}

#[test]
fn a_missing_encoded_object_is_a_missing_shard() {
    let (mut e, m) = whole_encoded(&["a", "b"]);
    e.objects
        .get_mut("b")
        .unwrap()
        .remove(&m.object(&m.shards[1]));
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(f.has_gaps());
    assert_eq!(f.provider("b").unwrap().missing_shards, vec![1]);
    assert!(f.provider("a").unwrap().is_whole());
}

#[test]
fn a_bare_named_shard_next_to_encoded_ones_is_unexpected_not_a_shard() {
    let (mut e, m) = whole_encoded(&["a"]);
    let bare = shard_name(1, 4);
    e.objects.get_mut("a").unwrap().insert(bare.clone(), 4);
    let f = run(&e, &["a"], &["a"]);
    let a = f.provider("a").unwrap();
    assert!(a.is_whole() && !f.has_gaps(), "{a:#?}");
    assert_eq!(a.unexpected_objects, vec![bare]);
    assert_eq!(a.held.shards, m.shards.len() as u64);
}

#[test]
fn a_stored_object_of_the_plaintexts_length_is_wrong_size() {
    let (mut e, m) = whole_encoded(&["a"]);
    let name = m.object(&m.shards[0]);
    e.objects.get_mut("a").unwrap().insert(name, 4);
    let f = run(&e, &["a"], &["a"]);
    assert_eq!(f.provider("a").unwrap().wrong_size_shards, vec![0]);
}

#[test]
fn an_unfinished_encrypted_backup_is_not_judged_by_plaintext_offsets() {
    // Offsets are plaintext; stored lengths are not: no shard of an unfinished encoded backup
    // can be called truncated, so all are held and none is copied until a manifest says more.
    let (mut e, m) = whole_encoded(&["a", "b"]);
    e.manifests.clear();
    for objs in e.objects.values_mut() {
        objs.remove(MANIFEST);
    }
    e.objects
        .get_mut("b")
        .unwrap()
        .remove(&m.object(&m.shards[2]));
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(f.is_unfinished() && f.total_bytes.is_none());
    assert!(f.reference.is_empty(), "{:?}", f.reference);
    let (a, b) = (f.provider("a").unwrap(), f.provider("b").unwrap());
    assert!(a.wrong_size_shards.is_empty() && b.wrong_size_shards.is_empty());
    assert_eq!((a.held.shards, a.held.prefix), (3, 3));
    assert_eq!((b.held.shards, b.held.prefix), (2, 2));
}
