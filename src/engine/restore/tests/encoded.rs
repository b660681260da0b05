//! Compressed and encrypted backups: every encoding restores identically, a chain may mix
//! them, a missing or wrong identity fails before anything is written, a tampered stored copy
//! is replaced by the next provider's, and stored bytes that are right but decode to the wrong
//! plaintext fail, naming the shard.

use super::*;
use crate::codec::keys::{generate, load_identities, parse_recipient, Passphrase};
use crate::codec::{Codec, Compression, Identities, Recipients};
use crate::error::IdentityError;
use crate::receiver::ReceiverSpec;
use age::secrecy::ExposeSecret;
use std::path::{Path, PathBuf};

/// A new identity in `dir/name`: its path and its recipients.
pub(crate) fn keypair(dir: &Path, name: &str) -> (PathBuf, Recipients) {
    let (text, recipient) = generate("2026-12-02T00:00:00Z");
    let path = dir.join(name);
    std::fs::write(&path, text.expose_secret()).unwrap();
    let r = Recipients::new(vec![parse_recipient(&recipient).unwrap()]).unwrap();
    (path, r)
}

pub(crate) fn ids(path: &Path) -> Arc<Identities> {
    Arc::new(load_identities(path, &Passphrase::Given(String::new())).unwrap())
}

pub(crate) fn codec(zstd: bool, r: Option<&Recipients>) -> Codec {
    Codec {
        compression: if zstd {
            Compression::Zstd(3)
        } else {
            Compression::None
        },
        recipients: r.cloned(),
    }
}

/// Compressible bytes, so that zstd shrinks them.
pub(crate) fn text(len: usize, seed: u8) -> Vec<u8> {
    let line = format!("offsite marker line {seed}: the quick brown fox jumps over the lazy dog\n");
    line.bytes().cycle().take(len).collect()
}

/// The manifest of `bytes` stored with `codec` (sealed when it encrypts), and its objects by
/// name.
pub(crate) fn encoded(
    id: &str,
    bytes: &[u8],
    shard: usize,
    parent: Option<&str>,
    codec: &Codec,
) -> (Manifest, Vec<(String, Bytes)>) {
    let mut m = manifest_for(id, bytes, shard, parent);
    m.encoding = codec.encoding();
    let mut objects = Vec::new();
    for rec in &mut m.shards {
        let plain = &bytes[rec.offset as usize..(rec.offset + rec.length) as usize];
        let stored = codec.encode(Bytes::copy_from_slice(plain)).unwrap();
        if codec.encoding() != Default::default() {
            rec.plain_length = Some(plain.len() as u64);
            rec.plain_sha256 = Some(crate::hashing::sha256(plain));
        }
        rec.length = stored.len() as u64;
        rec.sha256 = crate::hashing::sha256(&stored);
        objects.push((rec.name(m.encoding), stored));
    }
    if let Some(r) = &codec.recipients {
        m = m.seal(r).unwrap();
    }
    // What a provider holds: the manifest as written, parsed back.
    let m = Manifest::from_json(&m.to_json()).unwrap();
    (m, objects)
}

pub(crate) fn store_encoded(on: &[&MemoryProvider], m: &Manifest, objects: &[(String, Bytes)]) {
    for p in on {
        for (name, body) in objects {
            p.set_object(&format!("{}/{name}", dir(&m.backup_id)), body.clone());
        }
        p.set_object(
            &format!("{}/{}", dir(&m.backup_id), layout::MANIFEST),
            Bytes::from(m.to_json()),
        );
    }
}

pub(crate) fn keys(identity: Option<&Path>) -> KeySource {
    KeySource {
        identity: identity.map(Path::to_path_buf),
        config: PathBuf::from("/etc/offsite/offsite.toml"),
        passphrase: Passphrase::Given(String::new()),
    }
}

/// `restore` of the newest backup into `out` (a file that must not exist before).
pub(crate) async fn restore_file(
    ps: &[Arc<MemoryProvider>],
    keys: KeySource,
    out: &Path,
) -> Result<u64> {
    let req = RestoreRequest {
        host: HOST.into(),
        dataset: DATASET.into(),
        selector: Selector::Newest,
        destination: Destination::Raw(ReceiverSpec::File(out.to_path_buf())),
        keys,
    };
    let settings = FetchSettings {
        shards_in_flight: 3,
        concurrency: 2,
        piece_size: None,
    };
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let c = Catalog::scan(&dyns(ps), HOST, Some(DATASET)).await;
    let r = restore(
        &req,
        dyns(ps),
        &c,
        settings,
        &progress,
        &CancellationToken::new(),
    )
    .await?;
    Ok(r.total_bytes)
}

#[tokio::test]
async fn every_encoding_restores_identically_whole_and_in_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, r) = keypair(tmp.path(), "key.txt");
    let mut bytes = text(3000, 1);
    bytes.extend(data(2500, 2)); // a shard that does not shrink
    for (zstd, enc) in [(false, false), (true, false), (true, true), (false, true)] {
        let ps = mems(2);
        let (m, objects) = encoded(FULL, &bytes, 1000, None, &codec(zstd, enc.then_some(&r)));
        store_encoded(&[&ps[0], &ps[1]], &m, &objects);
        for piece in PIECE_SIZES {
            let out = tmp.path().join(format!("out-{zstd}-{enc}-{piece}"));
            let identity = enc.then_some(key.as_path());
            let written = restore_file(&ps, keys(identity), &out).await.unwrap();
            assert_eq!(written, bytes.len() as u64);
            assert!(
                std::fs::read(&out).unwrap() == bytes,
                "{zstd} {enc} {piece}"
            );
        }
    }
}

#[tokio::test]
async fn a_chain_mixing_plain_compressed_and_encrypted_backups_restores_each_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, r) = keypair(tmp.path(), "key.txt");
    let ps = mems(2);
    let (i1, i2) = ("20261102T020000Z-incr", "20261103T020000Z-incr");
    let (f, b1, b2) = (data(2500, 3), text(1800, 4), text(2200, 5));
    store(&[&ps[0], &ps[1]], &manifest_for(FULL, &f, 1000, None), &f);
    let (m1, o1) = encoded(i1, &b1, 1000, Some(FULL), &codec(true, None));
    store_encoded(&[&ps[0], &ps[1]], &m1, &o1);
    let (m2, o2) = encoded(i2, &b2, 1000, Some(i1), &codec(true, Some(&r)));
    store_encoded(&[&ps[0], &ps[1]], &m2, &o2);
    let mut chain = links(&dyns(&ps), Selector::Newest, true).await.unwrap();
    let manifests = chain.iter_mut().map(|l| &mut l.manifest).collect();
    let got = keys(Some(&key)).unseal(manifests).await.unwrap();
    let fetcher = fetcher(dyns(&ps), 3, 2).with_identities(got);
    for (link, want) in chain.iter().zip([&f, &b1, &b2]) {
        let (out, written) = restore_to_vec(&fetcher, link).await;
        assert_eq!(written.unwrap(), want.len() as u64);
        assert!(out == *want, "backup {}", link.manifest.backup_id);
        covers_stream(&link.manifest, want.len() as u64).unwrap();
    }
}

#[tokio::test]
async fn a_missing_or_wrong_identity_fails_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, r) = keypair(tmp.path(), "key.txt");
    let (other, _) = keypair(tmp.path(), "other.txt");
    let ps = mems(2);
    let bytes = text(2500, 6);
    let (m, objects) = encoded(FULL, &bytes, 1000, None, &codec(true, Some(&r)));
    store_encoded(&[&ps[0], &ps[1]], &m, &objects);
    let recipient = r.to_strings()[0].clone();

    let out = tmp.path().join("missing.bin");
    let e = restore_file(&ps, keys(None), &out).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        matches!(e.downcast_ref(), Some(IdentityError::Missing { .. })),
        "{msg}"
    );
    assert_eq!(crate::error::exit_code(&e), crate::error::code::USAGE);
    assert!(
        msg.contains(&format!("backup {FULL} is encrypted (to {recipient})")),
        "{msg}"
    );
    assert!(msg.contains("pass --identity FILE or set identity_file in [encryption] of /etc/offsite/offsite.toml"), "{msg}");
    assert!(!out.exists(), "nothing written, no receiver started");

    let out = tmp.path().join("wrong.bin");
    let e = restore_file(&ps, keys(Some(&other)), &out)
        .await
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        matches!(e.downcast_ref(), Some(IdentityError::Wrong { .. })),
        "{msg}"
    );
    assert_eq!(crate::error::exit_code(&e), crate::error::code::USAGE);
    assert!(
        msg.contains(&ids(&other).describe()),
        "names the identity tried: {msg}"
    );
    assert!(
        msg.contains(&recipient),
        "names the backup's recipients: {msg}"
    );
    assert!(!out.exists(), "nothing written, no receiver started");

    let out = tmp.path().join("unreadable.bin");
    let gone = tmp.path().join("gone.txt");
    let e = restore_file(&ps, keys(Some(&gone)), &out)
        .await
        .unwrap_err();
    assert!(
        matches!(e.downcast_ref(), Some(IdentityError::Unreadable(_))),
        "{e:#}"
    );
    assert!(
        format!("{e:#}").contains("cannot read the identity file"),
        "{e:#}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn plain_backups_need_no_identity_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ps = mems(1);
    let bytes = text(2500, 7);
    let (m, objects) = encoded(FULL, &bytes, 1000, None, &codec(true, None));
    store_encoded(&[&ps[0]], &m, &objects);
    // An identity file that does not exist is never read.
    let gone = tmp.path().join("gone.txt");
    let out = tmp.path().join("out.bin");
    restore_file(&ps, keys(Some(&gone)), &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);
}

#[tokio::test]
async fn a_tampered_stored_copy_is_replaced_by_the_next_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, r) = keypair(tmp.path(), "key.txt");
    let bytes = text(3000, 8);
    for piece in PIECE_SIZES {
        let ps = mems(2);
        let (m, objects) = encoded(FULL, &bytes, 1000, None, &codec(true, Some(&r)));
        store_encoded(&[&ps[0], &ps[1]], &m, &objects);
        flip_byte(&ps[0], &format!("{}/{}", dir(FULL), m.object(&m.shards[1])));
        let mut chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
        let manifests = chain.iter_mut().map(|l| &mut l.manifest).collect();
        let got = keys(Some(&key)).unseal(manifests).await.unwrap();
        let f = fetcher(dyns(&ps), 3, 2)
            .with_piece_size(piece)
            .with_identities(got);
        let (out, written) = restore_to_vec(&f, &chain[0]).await;
        assert_eq!(written.unwrap(), bytes.len() as u64, "piece {piece}");
        assert!(out == bytes);
    }
}

#[tokio::test]
async fn right_stored_bytes_that_decode_to_the_wrong_plaintext_fail_naming_the_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, r) = keypair(tmp.path(), "key.txt");
    let ps = mems(2);
    let bytes = text(3000, 9);
    let (m, mut objects) = encoded(FULL, &bytes, 1000, None, &codec(true, Some(&r)));
    // Shard 1 holds other plaintext, and the manifest records the stored bytes' hash: only
    // the sealed plaintext hash can tell.
    let (m, objects) = {
        let mut m = m;
        let wrong = codec(true, Some(&r))
            .encode(Bytes::from(text(1000, 10)))
            .unwrap();
        m.shards[1].length = wrong.len() as u64;
        m.shards[1].sha256 = crate::hashing::sha256(&wrong);
        objects[1].1 = wrong;
        (m, objects)
    };
    store_encoded(&[&ps[0], &ps[1]], &m, &objects);
    let mut chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
    let manifests = chain.iter_mut().map(|l| &mut l.manifest).collect();
    let got = keys(Some(&key)).unseal(manifests).await.unwrap();
    let f = fetcher(dyns(&ps), 3, 2).with_identities(got);
    let (out, written) = restore_to_vec(&f, &chain[0]).await;
    let e = written.unwrap_err();
    let no = e.downcast_ref::<NoGoodCopy>().expect("a NoGoodCopy");
    assert_eq!(no.index, 1);
    let msg = e.to_string();
    assert!(msg.contains(&m.object(&m.shards[1])), "{msg}");
    assert!(msg.contains("decodes to plaintext with SHA-256"), "{msg}");
    assert!(
        msg.contains("nothing from byte 1000 on was written"),
        "{msg}"
    );
    assert!(out == bytes[..1000], "only the shard before it");
}
