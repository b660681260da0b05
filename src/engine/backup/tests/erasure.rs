//! The pipeline with `erasure = "k+m"`: which piece each provider gets, what the manifest
//! records, what fails the backup and what leaves gaps, and a resume that lacks pieces.

use super::*;
use crate::codec::keys::{generate, parse_recipient};
use crate::codec::{Codec, Compression, Recipients};
use crate::erasure::{self, Scheme};
use crate::manifest::ErasureRecord;

fn coded(j: &mut BackupJob, scheme: &str) {
    let s: Scheme = scheme.parse().unwrap();
    j.erasure = Some(ErasureRecord {
        k: s.k,
        m: s.m,
        providers: j.providers.iter().map(|p| p.name().to_string()).collect(),
        revision: 0,
    });
}

/// Piece `p` of shard `s` as `provider` holds it.
fn piece(provider: &MemoryProvider, man: &Manifest, s: usize, p: usize) -> Option<Bytes> {
    provider.object(&format!("{DIR}/{}", man.piece_object(&man.shards[s], p)))
}

/// The stream joined from the pieces the providers hold, leaving out those of `without`.
fn joined(m: &[Arc<MemoryProvider>], man: &Manifest, without: &[usize]) -> Vec<u8> {
    let e = man.erasure.as_ref().unwrap();
    let mut out = Vec::new();
    for (i, s) in man.shards.iter().enumerate() {
        let pieces: Vec<Option<Bytes>> = (0..e.k + e.m)
            .map(|p| {
                let holder = m
                    .iter()
                    .position(|x| x.name() == e.holder(s.index, p))
                    .unwrap();
                if without.contains(&holder) {
                    return None;
                }
                let bytes = piece(&m[holder], man, i, p).unwrap();
                assert_eq!(crate::hashing::sha256(&bytes), s.pieces[p].sha256);
                Some(bytes)
            })
            .collect();
        let stored = erasure::join(e.scheme(), s.length, &pieces).unwrap();
        assert_eq!(crate::hashing::sha256(&stored), s.sha256);
        out.extend_from_slice(&stored);
    }
    out
}

async fn backup(m: &[Arc<MemoryProvider>], scheme: &str, file: &Path) -> Result<BackupReport> {
    let mut j = job(dyns(m), 1);
    coded(&mut j, scheme);
    run_job(j, sh(&format!("cat {}", file.display()))).await
}

#[tokio::test]
async fn two_plus_one_puts_one_piece_of_each_shard_on_each_provider() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let m = mems(3);
    let report = backup(&m, "2+1", &file).await.unwrap();
    assert!(report.complete(), "{:?}", report.providers);
    let man = manifest_of(&m[0]).unwrap();
    let e = man.erasure.clone().unwrap();
    assert_eq!(
        (e.k, e.m, e.providers),
        (2, 1, vec!["p0".into(), "p1".into(), "p2".into()])
    );
    for p in &m {
        assert_eq!(manifest_of(p).unwrap(), man);
        // One piece per shard, half a shard each: 500 + 500 + 500 + 250 bytes.
        assert_eq!(p.paths().len(), 5, "{:?}", p.paths());
        assert_eq!(stream_of(p).len(), 1750);
    }
    assert_eq!(man.shards[3].pieces.len(), 3);
    assert!(man
        .shards
        .iter()
        .all(|s| s.md5.is_none() && s.sha1.is_none()));
    for lost in 0..3 {
        assert_eq!(joined(&m, &man, &[lost]), data, "without p{lost}");
    }
    assert!(report.providers.iter().all(|p| p.pieces == Some(4)));
}

#[tokio::test]
async fn more_providers_than_pieces_rotate_the_placement() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 4000);
    let m = mems(4);
    let report = backup(&m, "2+1", &file).await.unwrap();
    assert!(report.complete());
    let man = manifest_of(&m[0]).unwrap();
    // Shard s's pieces on providers s, s+1, s+2 (mod 4): each holds three of the four shards.
    for (i, p) in m.iter().enumerate() {
        assert_eq!(p.paths().len(), 4, "p{i}: {:?}", p.paths());
        let skipped = (i + 1) % 4;
        assert!(piece(p, &man, skipped, 0).is_none());
    }
    assert!(report.providers.iter().all(|p| p.pieces == Some(3)));
    for lost in 0..4 {
        assert_eq!(joined(&m, &man, &[lost]), data, "without p{lost}");
    }
}

#[tokio::test]
async fn a_provider_down_leaves_gaps_naming_its_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let m = mems(3);
    m[2].inject(Fault {
        op: "put",
        path_contains: "".into(),
        kind: ErrorKind::Permanent,
        times: u32::MAX,
    });
    let report = backup(&m, "2+1", &file).await.unwrap();
    assert!(!report.complete());
    let down = &report.providers[2];
    assert_eq!((down.pieces, down.missing_shards.len()), (Some(4), 4));
    assert!(report.providers[..2]
        .iter()
        .all(|p| p.missing_shards.is_empty()));
    let man = manifest_of(&m[0]).unwrap();
    assert_eq!(joined(&m, &man, &[2]), data);
}

#[tokio::test]
async fn fewer_than_k_pieces_fail_the_backup_without_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = data_file(dir.path(), 3500);
    let m = mems(3);
    for p in &m[1..] {
        p.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Permanent,
            times: u32::MAX,
        });
    }
    let err = backup(&m, "2+1", &file).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("1 of its 3 pieces are stored, fewer than the 2"),
        "{text}"
    );
    assert!(m.iter().all(|p| manifest_of(p).is_none()));
}

/// A first erasure-coded run of `codec` that journals every shard, then a resume after `lose`
/// took objects away; the journal after the first run and the manifest after the resume.
async fn lose_and_resume(
    codec: Codec,
    lose: impl Fn(&[Arc<MemoryProvider>], &Manifest),
) -> (
    Vec<Arc<MemoryProvider>>,
    Vec<u8>,
    Manifest,
    Manifest,
    [u64; 3],
) {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let m = mems(3);
    let state = DatasetState::new(dir.path(), "h", "tank/x");
    let mut j = job(dyns(&m), 1);
    coded(&mut j, "2+1");
    j.codec = codec.clone();
    let u = crate::state::Unfinished {
        gaps_retry: true,
        encoding: codec.encoding(),
        erasure: j.erasure.clone(),
        ..unfinished()
    };
    j.journal = Some(Arc::new(state.begin(&u).unwrap()));
    let erasure_record = j.erasure.clone();
    run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    let first = manifest_of(&m[0]).unwrap();
    lose(&m, &first);
    let puts = [m[0].puts(), m[1].puts(), m[2].puts()];
    let mut j = job(dyns(&m), 1);
    j.codec = codec;
    j.erasure = erasure_record;
    j.resume = Some(state.load().unwrap().unwrap().1);
    j.journal = Some(Arc::new(state.reopen().unwrap()));
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete(), "{:?}", report.providers);
    let sent = [0, 1, 2].map(|i| m[i].puts() - puts[i]);
    let after = manifest_of(&m[0]).unwrap();
    (m, data, first, after, sent)
}

fn remove_piece(p: &MemoryProvider, man: &Manifest, s: usize, piece: usize) {
    let path = format!("{DIR}/{}", man.piece_object(&man.shards[s], piece));
    assert!(p.object(&path).is_some(), "{} holds no {path}", p.name());
    p.remove_object(&path);
}

#[tokio::test]
async fn a_resume_sends_a_lost_piece_again_and_only_that() {
    let (m, data, first, after, sent) = lose_and_resume(Codec::plain(), |m, man| {
        // Shard 1's piece 0 is on p1.
        remove_piece(&m[1], man, 1, 0);
    })
    .await;
    assert_eq!(sent, [0, 1, 0]);
    assert_eq!(first, after);
    assert_eq!(joined(&m, &after, &[2]), data);
}

#[tokio::test]
async fn an_encrypted_resume_rebuilds_a_lost_piece_from_the_others() {
    let recipient = parse_recipient(&generate("t").1).unwrap();
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(Recipients::new(vec![recipient]).unwrap()),
    };
    let (m, _, first, after, sent) = lose_and_resume(codec, |m, man| {
        remove_piece(&m[2], man, 0, 2);
    })
    .await;
    assert_eq!(
        sent,
        [0, 0, 1],
        "only the lost piece, rebuilt, not a fresh encryption"
    );
    assert_eq!(first.shards, after.shards);
    let parity = piece(&m[2], &after, 0, 2).unwrap();
    assert_eq!(
        crate::hashing::sha256(&parity),
        after.shards[0].pieces[2].sha256
    );
}
