use super::*;
use crate::error::ErrorKind;
use crate::layout::{shard_name, BackupKind};
use crate::manifest::{sample, ParentRef};
use crate::progress::NoProgress;
use crate::provider::{Fault, MemoryProvider, Provider};
use bytes::Bytes;
use std::sync::Arc;

/// `20260101T0000{n:02}Z-full` or `-incr`: ids that sort by `n`.
fn id(n: u32, kind: BackupKind) -> BackupId {
    let k = if kind == BackupKind::Full {
        "full"
    } else {
        "incr"
    };
    BackupId::parse(&format!("20260101T0000{n:02}Z-{k}")).unwrap()
}

fn full(n: u32) -> Seen {
    Seen::Complete {
        id: id(n, BackupKind::Full),
        parent: None,
        restorable: true,
    }
}

/// An incremental made at `n` whose parent is the backup made at `parent`.
fn incr(n: u32, parent: BackupId) -> Seen {
    Seen::Complete {
        id: id(n, BackupKind::Incremental),
        parent: Some(parent),
        restorable: true,
    }
}

/// `s` with a shard missing on every provider.
fn damaged(s: Seen) -> Seen {
    match s {
        Seen::Complete { id, parent, .. } => Seen::Complete {
            id,
            parent,
            restorable: false,
        },
        other => other,
    }
}

fn ids(seen: &[&Seen]) -> Vec<BackupId> {
    let mut v: Vec<BackupId> = seen
        .iter()
        .map(|s| match s {
            Seen::Complete { id, .. } | Seen::Unfinished(id) => id.clone(),
        })
        .collect();
    v.sort();
    v
}

fn n(k: u32) -> NonZeroU32 {
    NonZeroU32::new(k).unwrap()
}

#[test]
fn three_chains_keep_two_removes_exactly_the_oldest_chain() {
    let (a, b, c) = (full(1), full(4), full(7));
    let a1 = incr(2, id(1, BackupKind::Full));
    let a2 = incr(3, id(2, BackupKind::Incremental));
    let b1 = incr(5, id(4, BackupKind::Full));
    let c1 = incr(8, id(7, BackupKind::Full));
    let all = [&c1, &a2, &b, &a, &c, &b1, &a1];
    let p = plan(&all.map(Clone::clone), n(2));
    assert_eq!(p.delete, ids(&[&a, &a1, &a2]));
    assert_eq!(p.keep, ids(&[&b, &b1, &c, &c1]));
    assert!(p.debris.is_empty());
}

#[test]
fn fewer_chains_than_kept_deletes_nothing() {
    let seen = [full(1), incr(2, id(1, BackupKind::Full)), full(3)];
    let p = plan(&seen, n(2));
    assert!(p.delete.is_empty() && p.debris.is_empty(), "{p:?}");
    assert_eq!(p.keep.len(), 3);
    let p = plan(&seen, n(5));
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(plan(&[], n(1)), PrunePlan::default());
}

#[test]
fn an_incremental_after_the_boundary_keeps_the_older_chain_it_links_to() {
    // A(1) <- A1(2); B(3) full; C(4) is an incremental on A1, made after B; D(5) full.
    // By time, C would belong to B's chain and A's chain would go; by links it needs A and A1.
    let (a, a1, b) = (full(1), incr(2, id(1, BackupKind::Full)), full(3));
    let c = incr(4, id(2, BackupKind::Incremental));
    let d = full(5);
    let p = plan(
        &[a.clone(), a1.clone(), b.clone(), c.clone(), d.clone()],
        n(2),
    );
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(p.keep, ids(&[&a, &a1, &b, &c, &d]));
    // With one chain kept the boundary is D, and C is older than D: A's chain and B's go.
    let p = plan(
        &[a.clone(), a1.clone(), b.clone(), c.clone(), d.clone()],
        n(1),
    );
    assert_eq!(p.delete, ids(&[&a, &a1, &b, &c]));
    assert_eq!(p.keep, ids(&[&d]));
}

#[test]
fn a_whole_chain_is_kept_when_any_member_is_kept() {
    // A(1); B(2) full; A1(3) incremental on A made after B. Keep 1: boundary B; A1 is newer
    // than B, so A's chain stays, and no chain is removed although A is the oldest full.
    let (a, b) = (full(1), full(2));
    let a1 = incr(3, id(1, BackupKind::Full));
    let p = plan(&[a.clone(), b.clone(), a1.clone()], n(1));
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(p.keep, ids(&[&a, &b, &a1]));
    // A third, newer full moves the boundary past A1: then A's chain goes, B's too.
    let c = full(4);
    let p = plan(&[a.clone(), b.clone(), a1.clone(), c.clone()], n(1));
    assert_eq!(p.delete, ids(&[&a, &b, &a1]));
}

#[test]
fn unfinished_debris_only_when_older_than_the_newest_complete_backup() {
    let old = Seen::Unfinished(id(2, BackupKind::Full));
    let newer = Seen::Unfinished(id(9, BackupKind::Full));
    let seen = [full(1), old.clone(), full(3), newer.clone()];
    let p = plan(&seen, n(2));
    assert_eq!(p.debris, ids(&[&old]));
    assert!(p.delete.is_empty());
    // Nothing complete at all: nothing is debris, every unfinished backup may be resumed.
    let p = plan(&[old.clone(), newer.clone()], n(1));
    assert_eq!(p, PrunePlan::default());
}

#[test]
fn an_unfinished_backup_a_kept_backup_links_to_is_not_debris() {
    // B1 links to U, whose manifest is gone everywhere: B1 cannot be restored, but U is what it
    // needs, so U stays while B1 does.
    let u = Seen::Unfinished(id(2, BackupKind::Full));
    let b1 = incr(4, id(2, BackupKind::Full));
    let p = plan(&[full(1), u.clone(), full(3), b1.clone()], n(2));
    assert!(p.debris.is_empty(), "{p:?}");
    assert!(p.keep.contains(&id(4, BackupKind::Incremental)));
}

#[test]
fn a_broken_chain_is_neither_counted_nor_deleted() {
    // X(2) links to a backup that is on no provider at all: it cannot be restored, so it does
    // not count as a chain, and it stays (before and after the boundary) for a person to judge.
    let x = incr(2, id(0, BackupKind::Full));
    let p = plan(&[full(1), x.clone(), full(3), full(4)], n(2));
    assert_eq!(p.delete, ids(&[&full(1)]));
    assert_eq!(p.unrestorable, ids(&[&x]));
    let y = incr(5, id(0, BackupKind::Full));
    let p = plan(&[full(1), full(3), full(4), y.clone()], n(2));
    assert!(p.keep.contains(&id(5, BackupKind::Incremental)));
    assert_eq!(p.delete, ids(&[&full(1)]));
    assert_eq!(p.unrestorable, ids(&[&y]));
}

#[test]
fn a_newest_backup_missing_a_shard_everywhere_does_not_count_and_the_older_chain_stays() {
    // The bug: A(1) complete, B(2) lost a shard on every provider; keep_chains = 1 kept B and
    // deleted A, leaving nothing restorable.
    let (a, b) = (full(1), damaged(full(2)));
    let p = plan(&[a.clone(), b.clone()], n(1));
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(p.keep, ids(&[&a, &b]));
    assert_eq!(p.unrestorable, ids(&[&b]));
    // A newer restorable chain C(3): it is the one counted; A goes, damaged B stays for sync.
    let c = full(3);
    let p = plan(&[a.clone(), b.clone(), c.clone()], n(1));
    assert_eq!(p.delete, ids(&[&a]));
    assert_eq!(p.keep, ids(&[&b, &c]));
    assert_eq!(p.unrestorable, ids(&[&b]));
}

#[test]
fn a_damaged_incremental_is_unrestorable_with_everything_after_it() {
    // A(1) <- A1(2, damaged) <- A2(3); B(4) full. keep 1 counts B; A's chain is restorable (A is)
    // and older than the boundary, so it goes whole. keep 2: A's chain stays, A1 and A2 listed.
    let a = full(1);
    let a1 = damaged(incr(2, id(1, BackupKind::Full)));
    let a2 = incr(3, id(2, BackupKind::Incremental));
    let b = full(4);
    let seen = [a.clone(), a1.clone(), a2.clone(), b.clone()];
    let p = plan(&seen, n(1));
    assert_eq!(p.delete, ids(&[&a, &a1, &a2]));
    assert!(p.unrestorable.is_empty(), "{p:?}");
    let p = plan(&seen, n(2));
    assert!(p.delete.is_empty(), "{p:?}");
    assert_eq!(p.unrestorable, ids(&[&a1, &a2]));
}

#[test]
fn a_parent_cycle_does_not_hang_and_keeps_what_is_linked() {
    let x = incr(5, id(6, BackupKind::Incremental));
    let y = incr(6, id(5, BackupKind::Incremental));
    let p = plan(&[full(1), full(2), x, y], n(1));
    assert_eq!(p.delete, vec![id(1, BackupKind::Full)]);
    assert_eq!(p.keep.len(), 3);
}

// --- the executor, on in-memory providers ---

const HOST: &str = "h";
const DS: &str = "d";

/// Stores a complete backup (two shards and a manifest) on `p`.
fn store(p: &MemoryProvider, backup: &BackupId, parent: Option<&BackupId>) {
    let dir = layout::backup_dir(HOST, DS, backup);
    let shards: [&[u8]; 2] = [b"abcd", b"ef"];
    let mut m = sample(&shards);
    m.backup_id = backup.to_string();
    m.kind = backup.kind;
    m.parent = parent.map(|p| ParentRef {
        backup_id: p.to_string(),
        snapshot: None,
    });
    for r in &m.shards {
        let data = shards[r.index as usize];
        p.set_object(
            &format!("{dir}/{}", r.name(Default::default())),
            Bytes::copy_from_slice(data),
        );
    }
    p.set_object(
        &format!("{dir}/{}", layout::MANIFEST),
        Bytes::from(m.to_json()),
    );
}

fn providers(n: usize) -> (Vec<Arc<MemoryProvider>>, Vec<DynProvider>) {
    let mem: Vec<Arc<MemoryProvider>> = (0..n)
        .map(|i| Arc::new(MemoryProvider::new(&format!("p{i}"))))
        .collect();
    let dynp = mem.iter().map(|m| m.clone() as DynProvider).collect();
    (mem, dynp)
}

async fn prune_plan(dynp: &[DynProvider], keep: u32) -> (PrunePlan, Work) {
    let catalog = Catalog::scan(dynp, HOST, None).await;
    let v = view(&catalog, DS);
    assert!(v.unreadable.is_empty(), "{:?}", v.unreadable);
    let p = plan(&v.seen, n(keep));
    let mut work = Work::new();
    add_work(&catalog, DS, &p.delete, &mut work);
    add_work(&catalog, DS, &p.debris, &mut work);
    (p, work)
}

#[tokio::test]
async fn manifests_are_deleted_before_their_shards_on_every_provider() {
    let (mem, dynp) = providers(2);
    let (a, b, c) = (
        id(1, BackupKind::Full),
        id(3, BackupKind::Full),
        id(5, BackupKind::Full),
    );
    let a1 = id(2, BackupKind::Incremental);
    for m in &mem {
        for x in [&a, &b, &c] {
            store(m, x, None);
        }
        store(m, &a1, Some(&a));
    }
    let (p, work) = prune_plan(&dynp, 2).await;
    assert_eq!(p.delete, vec![a.clone(), a1.clone()]);
    let doomed_dirs = [&a, &a1].map(|x| layout::backup_dir(HOST, DS, x));
    let expected: BTreeMap<String, u64> = mem
        .iter()
        .map(|m| {
            let bytes = m
                .paths()
                .iter()
                .filter(|p| doomed_dirs.iter().any(|d| p.starts_with(d.as_str())))
                .map(|p| m.object(p).unwrap().len() as u64)
                .sum();
            (m.name().to_string(), bytes)
        })
        .collect();
    let results = execute(&dynp, work, &NoProgress, &CancellationToken::new()).await;
    assert_eq!(results.len(), 2);
    for (m, r) in mem.iter().zip(&results) {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.deleted, 6);
        let ops = m.ops();
        for x in [&a, &a1] {
            let dir = layout::backup_dir(HOST, DS, x);
            let pos = |name: &str| {
                ops.iter()
                    .position(|o| *o == format!("delete {dir}/{name}"))
            };
            let manifest = pos(layout::MANIFEST).expect("manifest deleted");
            for shard in [shard_name(0, 0), shard_name(1, 4)] {
                assert!(pos(&shard).expect("shard deleted") > manifest, "{ops:?}");
            }
        }
        let left: BTreeSet<String> = m
            .paths()
            .iter()
            .map(|p| p.split('/').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(
            left,
            [b.to_string(), c.to_string()].into(),
            "kept backups stay whole"
        );
        assert_eq!(m.paths().len(), 6);
        assert_eq!(
            r.freed, expected[&r.provider],
            "freed counts every deleted byte"
        );
    }
}

#[tokio::test]
async fn a_failed_manifest_delete_keeps_that_backups_shards_and_the_others_go_on() {
    let (mem, dynp) = providers(2);
    let (a, b, c) = (
        id(1, BackupKind::Full),
        id(3, BackupKind::Full),
        id(5, BackupKind::Full),
    );
    for m in &mem {
        for x in [&a, &b, &c] {
            store(m, x, None);
        }
    }
    let doomed_dir = layout::backup_dir(HOST, DS, &a);
    mem[0].inject(Fault {
        op: "delete",
        path_contains: format!("{doomed_dir}/{}", layout::MANIFEST),
        kind: ErrorKind::Permanent,
        times: u32::MAX,
    });
    let (_, work) = prune_plan(&dynp, 2).await;
    let results = execute(&dynp, work, &NoProgress, &CancellationToken::new()).await;
    let (bad, good) = (&results[0], &results[1]);
    assert_eq!(bad.provider, "p0");
    assert_eq!(bad.errors.len(), 1);
    let msg = bad.errors[0].to_string();
    assert!(
        msg.contains("p0") && msg.contains(&format!("{doomed_dir}/manifest.json")),
        "{msg}"
    );
    assert_eq!((bad.deleted, bad.skipped, bad.freed), (0, 2, 0));
    assert!(mem[0]
        .paths()
        .iter()
        .any(|p| p.starts_with(&doomed_dir) && p.ends_with("b0000000000000000")));
    assert!(good.errors.is_empty());
    assert_eq!(good.deleted, 3);
    assert!(!mem[1].paths().iter().any(|p| p.starts_with(&doomed_dir)));
}

#[tokio::test]
async fn a_cancelled_run_deletes_nothing_more() {
    let (mem, dynp) = providers(1);
    for x in [1, 3, 5] {
        store(&mem[0], &id(x, BackupKind::Full), None);
    }
    let (_, work) = prune_plan(&dynp, 1).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let results = execute(&dynp, work, &NoProgress, &cancel).await;
    assert_eq!((results[0].deleted, results[0].skipped), (0, 6));
    assert_eq!(mem[0].paths().len(), 9);
}

#[tokio::test]
async fn view_reads_links_unfinished_and_unreadable_backups() {
    let (mem, dynp) = providers(2);
    let (a, a1) = (id(1, BackupKind::Full), id(2, BackupKind::Incremental));
    store(&mem[0], &a, None);
    store(&mem[1], &a1, Some(&a));
    // Only shards: unfinished.
    let u = id(3, BackupKind::Full);
    mem[1].set_object(
        &format!("{}/{}", layout::backup_dir(HOST, DS, &u), shard_name(0, 0)),
        Bytes::from_static(b"x"),
    );
    // A manifest that does not parse: its links are unknown.
    let bad = id(4, BackupKind::Full);
    mem[0].set_object(
        &format!(
            "{}/{}",
            layout::backup_dir(HOST, DS, &bad),
            layout::MANIFEST
        ),
        Bytes::from_static(b"{"),
    );
    let catalog = Catalog::scan(&dynp, HOST, None).await;
    let v = view(&catalog, DS);
    assert_eq!(
        v.seen,
        vec![
            Seen::Complete {
                id: a.clone(),
                parent: None,
                restorable: true,
            },
            Seen::Complete {
                id: a1,
                parent: Some(a),
                restorable: true,
            },
            Seen::Unfinished(u),
        ]
    );
    assert_eq!(v.unreadable.len(), 1);
    assert_eq!(v.unreadable[0].0, bad);
    assert!(v.unreadable[0].1.contains("p0"), "{:?}", v.unreadable);
    assert!(view(&catalog, "other").seen.is_empty());
}

#[tokio::test]
async fn view_marks_a_backup_with_a_shard_missing_everywhere_unrestorable() {
    let (mem, dynp) = providers(2);
    let (a, b) = (id(1, BackupKind::Full), id(2, BackupKind::Full));
    for m in &mem {
        store(m, &a, None);
        store(m, &b, None);
    }
    // Shard 1 of B is gone from one provider: still restorable from the other.
    let lost = format!("{}/{}", layout::backup_dir(HOST, DS, &b), shard_name(1, 4));
    mem[0].remove_object(&lost);
    let (p, work) = prune_plan(&dynp, 1).await;
    assert_eq!(
        p.delete,
        vec![a.clone()],
        "B counts while one copy is whole"
    );
    assert!(p.unrestorable.is_empty());
    assert!(!work.is_empty());
    // Gone from both: B no longer counts, and A, the newest restorable chain, stays.
    mem[1].remove_object(&lost);
    let (p, work) = prune_plan(&dynp, 1).await;
    assert!(p.delete.is_empty() && work.is_empty(), "{p:?}");
    assert_eq!(p.unrestorable, vec![b]);
}

mod encoded;
mod grid;
