use super::*;
use crate::catalog::BackupEntry;
use crate::layout::{shard_name, BackupId};
use crate::manifest::{sample, Manifest, ShardRecord};
use std::time::Instant;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A backup of three shards (4, 4 and 2 bytes) held whole by `holders`.
fn whole(holders: &[&str]) -> (BackupEntry, Manifest) {
    let m = sample(&[b"abcd", b"efgh", b"ij"]);
    let mut e = BackupEntry::default();
    for p in holders {
        let objs = e.objects.entry(p.to_string()).or_default();
        for s in &m.shards {
            objs.insert(s.name(Default::default()), s.length);
        }
        objs.insert(MANIFEST.into(), 100);
        e.manifests.insert(p.to_string(), Ok(m.clone()));
    }
    (e, m)
}

fn run(entry: &BackupEntry, order: &[&str], expected: &[&str]) -> BackupFindings {
    run_with(entry, order, expected, &[], None)
}

fn run_with(
    entry: &BackupEntry,
    order: &[&str],
    expected: &[&str],
    unreachable: &[&str],
    corrupt: Option<&BTreeMap<String, BTreeSet<u64>>>,
) -> BackupFindings {
    let order = names(order);
    let (expected, unreachable) = (set(expected), set(unreachable));
    detect(
        entry,
        &Scope {
            order: &order,
            expected: &expected,
            unreachable: &unreachable,
            corrupt,
        },
    )
}

#[test]
fn a_whole_backup_has_no_gaps() {
    let (e, m) = whole(&["a", "b"]);
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(!f.has_gaps(), "{f:#?}");
    assert_eq!(f.manifest_from.as_deref(), Some("a"));
    assert_eq!(f.reference.len(), 3);
    for p in &f.providers {
        assert!(p.is_whole());
        assert_eq!(p.held.shards, 3);
        assert_eq!(p.held.bytes, m.total_bytes);
        assert_eq!(p.held.prefix, 3);
    }
}

#[test]
fn missing_shards_and_manifest_are_found() {
    let (mut e, m) = whole(&["a", "b"]);
    let objs = e.objects.get_mut("b").unwrap();
    objs.remove(&m.shards[0].name(Default::default()));
    objs.remove(&m.shards[2].name(Default::default()));
    objs.remove(MANIFEST);
    e.manifests.remove("b");
    let f = run(&e, &["a", "b"], &["a", "b"]);
    let b = f.provider("b").unwrap();
    assert_eq!(b.missing_shards, vec![0, 2]);
    assert_eq!(b.manifest, ManifestState::Missing);
    assert_eq!(b.held.prefix, 0);
    assert!(f.has_gaps());
    assert!(f.provider("a").unwrap().is_whole());
}

#[test]
fn a_provider_that_should_hold_it_but_holds_nothing_misses_everything() {
    let (e, _) = whole(&["a"]);
    let f = run(&e, &["a", "b", "c"], &["a", "b"]);
    assert_eq!(
        f.providers.len(),
        2,
        "c neither should hold it nor holds any of it"
    );
    let b = f.provider("b").unwrap();
    assert_eq!(b.missing_shards, vec![0, 1, 2]);
    assert!(b.expected && !b.is_whole());
}

#[test]
fn wrong_sizes_are_wrong_size_shards() {
    let (mut e, m) = whole(&["a", "b"]);
    e.objects
        .get_mut("b")
        .unwrap()
        .insert(m.shards[1].name(Default::default()), 3);
    e.objects
        .get_mut("a")
        .unwrap()
        .insert(m.shards[2].name(Default::default()), 99);
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert_eq!(f.provider("b").unwrap().wrong_size_shards, vec![1]);
    assert_eq!(f.provider("b").unwrap().held.prefix, 1);
    assert_eq!(
        f.provider("a").unwrap().wrong_size_shards,
        vec![2],
        "too long is wrong too"
    );
    assert!(f.provider("b").unwrap().missing_shards.is_empty());
}

#[test]
fn corrupt_shards_come_from_a_deep_check() {
    let (e, _) = whole(&["a", "b"]);
    let corrupt: BTreeMap<String, BTreeSet<u64>> = [("b".to_string(), [2u64].into())].into();
    let f = run_with(&e, &["a", "b"], &["a", "b"], &[], Some(&corrupt));
    let b = f.provider("b").unwrap();
    assert_eq!(b.corrupt_shards, vec![2]);
    assert_eq!(b.bad_shards(), [2].into());
    assert!(!b.is_whole());
    assert!(f.provider("a").unwrap().is_whole());
}

#[test]
fn unexpected_objects_are_listed_but_are_not_gaps() {
    let (mut e, _) = whole(&["a"]);
    let objs = e.objects.get_mut("a").unwrap();
    objs.insert("leftover.tmp".into(), 5);
    objs.insert(shard_name(7, 28), 4);
    let f = run(&e, &["a"], &["a"]);
    let a = f.provider("a").unwrap();
    assert_eq!(
        a.unexpected_objects,
        vec!["leftover.tmp".to_string(), shard_name(7, 28)]
    );
    assert!(!f.has_gaps());
}

#[test]
fn bad_and_disagreeing_manifests_are_found_and_not_trusted() {
    let (mut e, m) = whole(&["a", "b", "c"]);
    e.manifests
        .insert("a".into(), Err("manifest does not parse".into()));
    // c's manifest lists fewer shards than the listings show: the listings side with b.
    let mut other = m.clone();
    other.total_bytes -= other.shards.pop().unwrap().length;
    e.manifests.insert("c".into(), Ok(other));
    let f = run(&e, &["a", "c", "b"], &["a", "b", "c"]);
    assert_eq!(
        f.manifest_from.as_deref(),
        Some("b"),
        "the manifest the listings agree with, not the first in priority order"
    );
    let a = f.provider("a").unwrap();
    assert_eq!(a.manifest, ManifestState::Bad);
    assert!(a.manifest_error.as_deref().unwrap().contains("parse"));
    assert_eq!(f.provider("c").unwrap().manifest, ManifestState::Disagrees);
    assert!(f.provider("b").unwrap().is_whole());
}

#[test]
fn unreachable_providers_are_reported_not_judged() {
    let (e, _) = whole(&["a"]);
    let f = run_with(&e, &["a", "b"], &["a", "b"], &["b"], None);
    let b = f.provider("b").unwrap();
    assert!(!b.reachable && b.missing_shards.is_empty());
    assert!(f.has_gaps());
}

/// An unfinished backup: 1 MiB shards 0..=3 somewhere, no manifest anywhere.
fn unfinished() -> BackupEntry {
    const MIB: u64 = 1 << 20;
    let mut e = BackupEntry::default();
    let a = e.objects.entry("a".into()).or_default();
    for i in 0..3 {
        a.insert(shard_name(i, i * MIB), MIB);
    }
    let b = e.objects.entry("b".into()).or_default();
    b.insert(shard_name(0, 0), MIB);
    b.insert(shard_name(1, MIB), 1000); // cut short
    b.insert(shard_name(3, 3 * MIB), 500); // the stream's end, or cut short: unknown
    e
}

#[test]
fn unfinished_backups_say_how_far_they_got() {
    let e = unfinished();
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert!(!f.is_finished() && f.has_gaps());
    // Shard 2's length is proven by shard 3's offset; shard 3's is not known.
    let idx: Vec<u64> = f.reference.iter().map(|r| r.index).collect();
    assert_eq!(idx, vec![0, 1, 2]);
    let a = f.provider("a").unwrap();
    assert_eq!(
        a.held,
        Holding {
            shards: 3,
            bytes: 3 << 20,
            prefix: 3
        }
    );
    assert!(a.missing_shards.is_empty() && a.unexpected_objects.is_empty());
    let b = f.provider("b").unwrap();
    assert_eq!(b.missing_shards, vec![2]);
    assert_eq!(b.wrong_size_shards, vec![1]);
    assert_eq!(b.held.shards, 2, "shard 0 and the unjudged shard 3");
    assert_eq!(b.held.bytes, (1 << 20) + 500);
    assert_eq!(b.held.prefix, 1);
    assert_eq!(b.manifest, ManifestState::Missing);
}

#[test]
fn a_last_shard_at_full_size_is_trusted() {
    let mut e = unfinished();
    e.objects
        .get_mut("b")
        .unwrap()
        .insert(shard_name(3, 3 << 20), 1 << 20);
    let f = run(&e, &["a", "b"], &["a", "b"]);
    assert_eq!(f.reference.len(), 4);
    assert_eq!(f.provider("a").unwrap().missing_shards, vec![3]);
}

/// A loaded config (through the real loader, so new fields need no change here) with
/// providers a, b, c enabled, d disabled, and dataset "conf" on b and c.
fn test_config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("providers.d")).unwrap();
    for (i, (n, enabled)) in [("a", true), ("b", true), ("c", true), ("d", false)]
        .iter()
        .enumerate()
    {
        std::fs::write(
            dir.path().join(format!("providers.d/{n}.toml")),
            format!("remote = \"/r/{n}\"\npriority = {i}\nenabled = {enabled}\n"),
        )
        .unwrap();
    }
    let path = dir.path().join("offsite.toml");
    std::fs::write(
        &path,
        "host = \"h\"\nrclone = \"/bin/true\"\n[[dataset]]\nname = \"conf\"\ncommand = \"true\"\nproviders = [\"b\", \"c\"]\n",
    )
    .unwrap();
    let cfg = Config::load(&path, None).unwrap();
    (dir, cfg)
}

#[test]
fn expected_holders_follow_the_config_else_who_holds_the_dataset() {
    let (_dir, cfg) = test_config();
    let id = |s: &str| BackupId::parse(s).unwrap();
    let mut backups = BTreeMap::new();
    let (e1, _) = whole(&["a"]);
    let (e2, _) = whole(&["b", "d"]);
    backups.insert(
        BackupKey {
            dataset: "conf".into(),
            id: id("20261121T020000Z-full"),
        },
        e1.clone(),
    );
    backups.insert(
        BackupKey {
            dataset: "other".into(),
            id: id("20261121T020000Z-full"),
        },
        e1,
    );
    backups.insert(
        BackupKey {
            dataset: "other".into(),
            id: id("20261122T020000Z-incr"),
        },
        e2,
    );
    let catalog = Catalog {
        host: "h".into(),
        order: names(&["a", "b", "c", "d"]),
        backups,
        unreachable: BTreeMap::new(),
    };
    assert_eq!(expected_holders(&cfg, &catalog, "conf"), set(&["b", "c"]));
    assert_eq!(
        expected_holders(&cfg, &catalog, "other"),
        set(&["a", "b"]),
        "enabled holders of any backup of the dataset; d is disabled"
    );
    let s = survey(&cfg, &catalog, &Corrupt::new());
    assert_eq!(s.len(), 3);
    let conf = &s[0].1;
    assert!(
        !conf.provider("a").unwrap().expected,
        "a holds it but is not configured"
    );
    assert_eq!(conf.provider("b").unwrap().missing_shards, vec![0, 1, 2]);
    let other_incr = &s[2].1;
    assert_eq!(
        other_incr.provider("a").unwrap().missing_shards,
        vec![0, 1, 2],
        "a lost the whole incremental"
    );
    assert!(!other_incr.provider("d").unwrap().expected);
}

/// 100,000 shards on three providers, with a few gaps on each. Prints the time taken; the
/// point is that it finishes (no per-shard provider calls, no quadratic scans).
#[test]
fn scales_to_100k_shards_on_three_providers() {
    const N: u64 = 100_000;
    let mut m = sample(&[]);
    m.shard_size = 1 << 20;
    m.shards = (0..N)
        .map(|i| ShardRecord {
            index: i,
            offset: i << 20,
            length: 1 << 20,
            sha256: "a".repeat(64),
            md5: None,
            sha1: None,
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
        })
        .collect();
    m.total_bytes = N << 20;
    let mut e = BackupEntry::default();
    for p in ["a", "b", "c"] {
        let objs = e.objects.entry(p.into()).or_default();
        for s in &m.shards {
            objs.insert(s.name(Default::default()), s.length);
        }
        objs.insert(MANIFEST.into(), 1);
        e.manifests.insert(p.into(), Ok(m.clone()));
    }
    let b = e.objects.get_mut("b").unwrap();
    b.remove(&m.shards[500].name(Default::default()));
    b.insert(m.shards[99_999].name(Default::default()), 7);
    e.objects.get_mut("c").unwrap().insert("junk".into(), 1);

    let start = Instant::now();
    let f = run(&e, &["a", "b", "c"], &["a", "b", "c"]);
    let took = start.elapsed();
    eprintln!("gap detection over {N} shards x 3 providers: {took:?}");
    assert_eq!(f.provider("b").unwrap().missing_shards, vec![500]);
    assert_eq!(f.provider("b").unwrap().wrong_size_shards, vec![99_999]);
    assert_eq!(f.provider("c").unwrap().unexpected_objects, vec!["junk"]);
    assert!(f.provider("a").unwrap().is_whole());
    assert_eq!(f.provider("a").unwrap().held.prefix, N);
}

/// `entry` with provider `p`'s listing giving `md5`/`sha1` for shard `i` (others as stored).
fn listed(entry: &mut BackupEntry, m: &Manifest, p: &str, i: usize, md5: &str, sha1: &str) {
    let hashes = entry.hashes.entry(p.to_string()).or_default();
    for s in &m.shards {
        let h = crate::catalog::ListedHashes::new(s.md5.as_deref(), s.sha1.as_deref());
        hashes.insert(s.name(Default::default()), h);
    }
    let h = hashes
        .get_mut(&m.shards[i].name(Default::default()))
        .unwrap();
    *h = crate::catalog::ListedHashes::new(
        Some(md5).filter(|s| !s.is_empty()),
        Some(sha1).filter(|s| !s.is_empty()),
    );
}

#[test]
fn a_right_sized_shard_whose_listed_md5_differs_is_corrupt() {
    let (mut e, m) = whole(&["a", "b"]);
    let sha1 = m.shards[1].sha1.clone().unwrap();
    listed(&mut e, &m, "b", 1, &"0".repeat(32), &sha1);
    listed(&mut e, &m, "a", 0, &m.shards[0].md5.clone().unwrap(), "");
    let f = run(&e, &["a", "b"], &["a", "b"]);
    let b = f.provider("b").unwrap();
    assert_eq!(b.corrupt_shards, vec![1], "{b:#?}");
    assert!(b.wrong_size_shards.is_empty() && b.missing_shards.is_empty());
    assert_eq!((b.held.shards, b.held.prefix), (2, 1));
    assert_eq!(b.bad_shards(), BTreeSet::from([1]));
    assert!(f.has_gaps());
    assert!(
        f.provider("a").unwrap().is_whole(),
        "matching hashes are whole"
    );
}

#[test]
fn a_listed_sha1_alone_or_in_upper_case_is_compared() {
    let (mut e, m) = whole(&["a"]);
    listed(&mut e, &m, "a", 2, "", &"f".repeat(40));
    let f = run(&e, &["a"], &["a"]);
    assert_eq!(f.provider("a").unwrap().corrupt_shards, vec![2]);

    let upper = m.shards[2].md5.clone().unwrap().to_uppercase();
    listed(&mut e, &m, "a", 2, &upper, "");
    assert!(
        !run(&e, &["a"], &["a"]).has_gaps(),
        "hex case does not matter"
    );
}

#[test]
fn listed_hashes_mean_nothing_without_manifest_hashes() {
    // A format 1 manifest records no MD5/SHA-1: nothing to compare, nothing corrupt.
    let (mut e, mut m) = whole(&["a"]);
    listed(&mut e, &m, "a", 0, &"0".repeat(32), &"0".repeat(40));
    for s in &mut m.shards {
        (s.md5, s.sha1) = (None, None);
    }
    e.manifests.insert("a".into(), Ok(m));
    assert!(!run(&e, &["a"], &["a"]).has_gaps());
}

#[test]
fn wrong_size_shards_keep_their_released_json_key() {
    let (mut e, m) = whole(&["a"]);
    e.objects
        .get_mut("a")
        .unwrap()
        .insert(m.shards[1].name(Default::default()), 3);
    let f = run(&e, &["a"], &["a"]);
    let v = serde_json::to_value(f.provider("a").unwrap()).unwrap();
    assert_eq!(v["truncated_shards"], serde_json::json!([1]));
    assert!(v.get("wrong_size_shards").is_none() && v.get("reachable").is_none());
}

mod encoded;
mod erasure;
