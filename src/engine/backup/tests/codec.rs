//! The pipeline with compression and encryption: what providers hold, what the manifest shows
//! in the clear, where the CPU work runs, and each branch of a resumed encoded shard.

use super::*;
use crate::codec::keys::{generate, load_identities, parse_recipient, Passphrase};
use crate::codec::{Codec, Compression, Identities, Recipients};
use crate::layout::Encoding;
use age::secrecy::ExposeSecret;
use std::collections::BTreeMap;

const MARKER: &str = "offsite-marker: the secret line\n";

fn keypair(dir: &Path) -> (Identities, Recipients) {
    let (text, recipient) = generate("2026-12-02T00:00:00Z");
    let path = dir.join("key.txt");
    std::fs::write(&path, text.expose_secret()).unwrap();
    let ids = load_identities(&path, &Passphrase::Given(String::new())).unwrap();
    (
        ids,
        Recipients::new(vec![parse_recipient(&recipient).unwrap()]).unwrap(),
    )
}

fn encrypted(r: &Recipients) -> Codec {
    Codec {
        compression: Compression::Zstd(3),
        recipients: Some(r.clone()),
    }
}

fn zstd() -> Codec {
    Codec {
        compression: Compression::Zstd(3),
        recipients: None,
    }
}

/// A text stream of `len` bytes: the marker line over and over.
fn marker_file(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = MARKER.bytes().cycle().take(len).collect();
    let p = dir.join("text");
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

/// The shard objects of the test backup a provider holds, by path.
fn shards_of(p: &MemoryProvider) -> BTreeMap<String, Bytes> {
    p.paths()
        .into_iter()
        .filter(|x| x.starts_with(DIR) && !x.ends_with(layout::MANIFEST))
        .map(|x| (x.clone(), p.object(&x).unwrap()))
        .collect()
}

/// The stream, decoded from `p`'s objects as the manifest `m` (unsealed) describes them.
fn decoded(p: &MemoryProvider, m: &Manifest, ids: Option<&Identities>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in &m.shards {
        let stored = p.object(&format!("{DIR}/{}", m.object(s))).unwrap();
        let plain = crate::codec::decode(m.encoding, stored, s.plain_len(), ids).unwrap();
        assert_eq!(
            crate::hashing::sha256(&plain),
            s.plain_sha256.clone().unwrap()
        );
        out.extend_from_slice(&plain);
    }
    out
}

/// Every provider's object of each shard has the manifest's stored SHA-256.
fn assert_objects_match(m: &[Arc<MemoryProvider>], man: &Manifest) {
    for p in m {
        for s in &man.shards {
            let obj = p.object(&format!("{DIR}/{}", man.object(s))).unwrap();
            assert_eq!(
                crate::hashing::sha256(&obj),
                s.sha256,
                "{} shard {}",
                p.name(),
                s.index
            );
        }
    }
}

#[tokio::test]
async fn an_encrypted_backup_stores_no_plaintext_and_seals_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 3500);
    let (ids, r) = keypair(dir.path());
    let m = mems(2);
    let mut j = job(dyns(&m), 1);
    j.codec = encrypted(&r);
    j.source = "pg_dump --password=hunter2".into();
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    assert_eq!(report.total_bytes, 3500);
    for p in &m {
        let objects = shards_of(p);
        assert_eq!(objects.len(), 4);
        for (path, bytes) in &objects {
            assert!(path.ends_with(".zst.age"), "{path}");
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains("offsite-marker"), "{path} holds plaintext");
        }
        let json = p.object(&format!("{DIR}/{}", layout::MANIFEST)).unwrap();
        let json = String::from_utf8_lossy(&json);
        for secret in ["plain_sha256", "hunter2", "offsite-marker"] {
            assert!(!json.contains(secret), "manifest shows {secret}");
        }
        let mut man = manifest_of(p).unwrap();
        assert_eq!(man.recipients, r.to_strings());
        man.unseal(&ids).unwrap();
        assert_eq!(man.source, "pg_dump --password=hunter2");
        assert_eq!(decoded(p, &man, Some(&ids)), data);
    }
    // The same stored bytes went to every provider.
    assert_eq!(shards_of(&m[0]).values().collect::<Vec<_>>(), {
        shards_of(&m[1])
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    });
}

#[tokio::test]
async fn compressible_text_is_stored_at_under_half_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 9500);
    let m = mems(1);
    let mut j = job(dyns(&m), 1);
    j.codec = zstd();
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert_eq!(report.total_bytes, 9500);
    let stored: usize = shards_of(&m[0]).values().map(|b| b.len()).sum();
    assert!(stored * 2 < data.len(), "{stored} bytes stored");
    let man = manifest_of(&m[0]).unwrap();
    assert!(man.shards.iter().all(|s| s.plain_length.is_some()));
    assert!(shards_of(&m[0]).keys().all(|k| k.ends_with(".zst")));
    assert_eq!(decoded(&m[0], &man, None), data);
}

#[tokio::test]
async fn a_plain_codec_writes_the_old_names_and_no_plaintext_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 2500);
    let m = mems(1);
    let mut j = job(dyns(&m), 1);
    j.codec = Codec::plain();
    run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    let names: Vec<String> = shards_of(&m[0]).into_keys().collect();
    assert_eq!(names[2], format!("{DIR}/{}", layout::shard_name(2, 2000)));
    let json = m[0].object(&format!("{DIR}/{}", layout::MANIFEST)).unwrap();
    let json = String::from_utf8_lossy(&json);
    for field in [
        "plain_length",
        "plain_sha256",
        "compression",
        "encryption",
        "sealed",
    ] {
        assert!(!json.contains(field), "manifest has {field}");
    }
    assert_eq!(stream_of(&m[0]), data);
}

/// On a current-thread runtime the test's thread is the reactor: no shard may be encoded there.
#[tokio::test(flavor = "current_thread")]
async fn shards_are_encoded_off_the_reactor() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = marker_file(dir.path(), 4500);
    let (_, r) = keypair(dir.path());
    let m = mems(1);
    let mut j = job(dyns(&m), 1);
    j.codec = encrypted(&r);
    run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert_eq!(shards_of(&m[0]).len(), 5, "the shards were encoded");
    assert_eq!(super::super::encode::ENCODED_HERE.with(|n| n.get()), 0);
}

/// A first run of `codec` that journals every shard, then the journal.
async fn first_run(
    dir: &Path,
    file: &Path,
    m: &[Arc<MemoryProvider>],
    codec: &Codec,
) -> BTreeMap<u64, ShardRecord> {
    let state = DatasetState::new(dir, "h", "tank/x");
    let u = crate::state::Unfinished {
        encoding: codec.encoding(),
        ..unfinished()
    };
    let mut j = job(dyns(m), 1);
    j.codec = codec.clone();
    j.journal = Some(Arc::new(state.begin(&u).unwrap()));
    run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    state.load().unwrap().unwrap().1
}

/// Resumes the test backup with `codec` over `m`; the journal (after the run) and the report.
async fn resume_run(
    dir: &Path,
    file: &Path,
    m: &[Arc<MemoryProvider>],
    codec: &Codec,
    recorded: BTreeMap<u64, ShardRecord>,
) -> (BTreeMap<u64, ShardRecord>, BackupReport) {
    let state = DatasetState::new(dir, "h", "tank/x");
    let mut j = job(dyns(m), 1);
    j.codec = codec.clone();
    j.resume = Some(recorded);
    j.journal = Some(Arc::new(state.reopen().unwrap()));
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    (state.load().unwrap().unwrap().1, report)
}

fn shard_path(i: u64, enc: Encoding) -> String {
    format!("{DIR}/{}", layout::shard_object(i, i * SHARD, enc))
}

#[tokio::test]
async fn resume_sends_nothing_when_every_provider_holds_the_journaled_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = marker_file(dir.path(), 2500);
    let (_, r) = keypair(dir.path());
    let m = mems(2);
    let codec = encrypted(&r);
    let recorded = first_run(dir.path(), &file, &m, &codec).await;
    let before: Vec<_> = m.iter().map(|p| shards_of(p)).collect();
    let puts = (m[0].puts(), m[1].puts());
    let (_, report) = resume_run(dir.path(), &file, &m, &codec, recorded.clone()).await;
    assert!(report.complete());
    assert_eq!((m[0].puts(), m[1].puts()), puts, "nothing was sent");
    let after: Vec<_> = m.iter().map(|p| shards_of(p)).collect();
    assert_eq!(before, after);
    let man = manifest_of(&m[0]).unwrap();
    assert_eq!(man.shards[1].sha256, recorded[&1].sha256);
}

#[tokio::test]
async fn resume_sends_a_deterministic_compression_again_to_those_lacking_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 2500);
    let m = mems(2);
    let recorded = first_run(dir.path(), &file, &m, &zstd()).await;
    let enc = zstd().encoding();
    m[1].remove_object(&shard_path(1, enc));
    m[1].remove_object(&format!("{DIR}/{}", layout::MANIFEST));
    let puts = m[0].puts();
    let (journal, report) = resume_run(dir.path(), &file, &m, &zstd(), recorded.clone()).await;
    assert!(report.complete());
    assert_eq!(m[0].puts(), puts, "the holder is not sent it again");
    assert_eq!(journal, recorded);
    let man = manifest_of(&m[1]).unwrap();
    assert_objects_match(&m, &man);
    assert_eq!(decoded(&m[1], &man, None), data);
}

#[tokio::test]
async fn resume_copies_a_holders_encryption_to_those_lacking_it() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 2500);
    let (ids, r) = keypair(dir.path());
    let m = mems(3);
    let codec = encrypted(&r);
    let recorded = first_run(dir.path(), &file, &m, &codec).await;
    let enc = codec.encoding();
    m[1].remove_object(&shard_path(2, enc));
    // p0, read first, holds shard 2 at the right length but not the journaled bytes: p2's
    // copy is used, and p0 gets it too.
    let mut bad = m[0].object(&shard_path(2, enc)).unwrap().to_vec();
    bad[40] ^= 1;
    m[0].set_object(&shard_path(2, enc), Bytes::from(bad));
    let (journal, report) = resume_run(dir.path(), &file, &m, &codec, recorded.clone()).await;
    assert!(report.complete());
    assert_eq!(journal, recorded, "the journaled encryption is kept");
    let mut man = manifest_of(&m[0]).unwrap();
    assert_eq!(man.shards[2].sha256, recorded[&2].sha256);
    assert_objects_match(&m, &man);
    man.unseal(&ids).unwrap();
    assert_eq!(decoded(&m[1], &man, Some(&ids)), data);
}

#[tokio::test]
async fn resume_stores_afresh_everywhere_when_no_provider_holds_a_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 2500);
    let (ids, r) = keypair(dir.path());
    let m = mems(2);
    let codec = encrypted(&r);
    let recorded = first_run(dir.path(), &file, &m, &codec).await;
    let enc = codec.encoding();
    m[0].remove_object(&shard_path(0, enc));
    let mut bad = m[1].object(&shard_path(0, enc)).unwrap().to_vec();
    bad[40] ^= 1;
    m[1].set_object(&shard_path(0, enc), Bytes::from(bad));
    let (journal, report) = resume_run(dir.path(), &file, &m, &codec, recorded.clone()).await;
    assert!(report.complete());
    assert_ne!(journal[&0].sha256, recorded[&0].sha256, "a new encryption");
    assert_eq!(journal[&1], recorded[&1]);
    // The manifests already written named the old bytes: they are rewritten.
    for p in &m {
        let mut man = manifest_of(p).unwrap();
        assert_eq!(man.shards[0].sha256, journal[&0].sha256);
        assert_objects_match(&m, &man);
        man.unseal(&ids).unwrap();
        assert_eq!(decoded(p, &man, Some(&ids)), data);
    }
}

#[tokio::test]
async fn a_resume_refuses_a_stream_whose_plaintext_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = marker_file(dir.path(), 2500);
    let (_, r) = keypair(dir.path());
    let m = mems(1);
    let codec = encrypted(&r);
    let recorded = first_run(dir.path(), &file, &m, &codec).await;
    let mut changed = data.clone();
    changed[1500] ^= 1;
    std::fs::write(&file, &changed).unwrap();
    let puts = m[0].puts();
    let mut j = job(dyns(&m), 1);
    j.codec = codec;
    j.resume = Some(recorded);
    let err = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap_err();
    assert!(err.chain().any(|c| c.is::<SourceChanged>()), "{err:#}");
    assert!(
        format!("{err:#}").contains("shard 1 (byte 1000)"),
        "{err:#}"
    );
    assert_eq!(m[0].puts(), puts);
}
