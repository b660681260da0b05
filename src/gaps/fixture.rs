//! Test fixture: a backup as an encrypting, compressing backup writes it, built with the real
//! [`Codec`] and [`Manifest::seal`], so that the commands a NAS runs without the identity
//! (status, verify, list, sync, prune) are tested on the stored format itself.

use crate::codec::{keys, Codec, Compression, Recipients};
use crate::manifest::{sample, Manifest};
use bytes::Bytes;

/// `shards` (plaintext) stored as `.zst.age` objects to a fresh recipient: the sealed manifest
/// (as every provider holds it) and each shard's stored bytes.
pub(crate) fn encoded(shards: &[&[u8]]) -> (Manifest, Vec<Bytes>) {
    let recipient = keys::parse_recipient(&keys::generate("test").1).unwrap();
    let recipients = Recipients::new(vec![recipient]).unwrap();
    let codec = Codec {
        compression: Compression::Zstd(3),
        recipients: Some(recipients.clone()),
    };
    let mut m = sample(shards);
    m.encoding = codec.encoding();
    let mut stored = Vec::new();
    for (rec, plain) in m.shards.iter_mut().zip(shards) {
        let bytes = codec.encode(Bytes::copy_from_slice(plain)).unwrap();
        let d = crate::hashing::digests(&bytes);
        rec.plain_length = Some(rec.length);
        rec.plain_sha256 = Some(rec.sha256.clone());
        rec.length = bytes.len() as u64;
        (rec.sha256, rec.md5, rec.sha1) = (d.sha256, Some(d.md5), Some(d.sha1));
        stored.push(bytes);
    }
    let m = m.seal(&recipients).unwrap();
    let m = Manifest::from_json(&m.to_json()).expect("the fixture is a valid manifest");
    assert!(m.is_sealed() && m.source.is_empty());
    (m, stored)
}

/// Puts the backup of `m` on `p`: its stored shards under their encoded names, then the
/// manifest as a provider holds it.
pub(crate) fn store(p: &crate::provider::MemoryProvider, m: &Manifest, stored: &[Bytes]) {
    for (s, bytes) in m.shards.iter().zip(stored) {
        p.set_object(&path(m, &m.object(s)), bytes.clone());
    }
    p.set_object(&path(m, crate::layout::MANIFEST), Bytes::from(m.to_json()));
}

/// The path of object `name` of `m`'s backup on a provider.
pub(crate) fn path(m: &Manifest, name: &str) -> String {
    let id = m.id().expect("a valid backup id");
    format!(
        "{}/{name}",
        crate::layout::backup_dir(&m.host, &m.dataset, &id)
    )
}

/// A loaded config (host "h", no encryption needed: a NAS without the identity) with
/// `providers` and dataset "d" on all of them.
pub(crate) fn config(providers: &[&str]) -> (tempfile::TempDir, crate::config::Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("providers.d")).unwrap();
    for p in providers {
        let file = dir.path().join(format!("providers.d/{p}.toml"));
        std::fs::write(file, format!("remote = \"/r/{p}\"\n")).unwrap();
    }
    let path = dir.path().join("offsite.toml");
    let text =
        "host = \"h\"\nrclone = \"/bin/true\"\n[[dataset]]\nname = \"d\"\ncommand = \"true\"\n";
    std::fs::write(&path, text).unwrap();
    let cfg = crate::config::Config::load(&path, None).unwrap();
    (dir, cfg)
}

/// `m` (mirrored, with its `stored` shards) made erasure-coded with `scheme` over `providers`:
/// the manifest as every provider holds it, and each shard's pieces (data first).
pub(crate) fn erasure(
    mut m: Manifest,
    stored: &[Bytes],
    scheme: crate::erasure::Scheme,
    providers: &[&str],
) -> (Manifest, Vec<Vec<Bytes>>) {
    let mut all = Vec::new();
    for (rec, bytes) in m.shards.iter_mut().zip(stored) {
        let pieces = crate::erasure::split(scheme, bytes).unwrap();
        (rec.md5, rec.sha1) = (None, None);
        rec.pieces = pieces
            .iter()
            .map(|p| {
                let d = crate::hashing::digests(p);
                crate::manifest::PieceRecord {
                    length: p.len() as u64,
                    sha256: d.sha256,
                    md5: Some(d.md5),
                    sha1: Some(d.sha1),
                }
            })
            .collect();
        all.push(pieces);
    }
    m.erasure = Some(crate::manifest::ErasureRecord {
        k: scheme.k,
        m: scheme.m,
        providers: providers.iter().map(|p| p.to_string()).collect(),
        revision: 0,
    });
    let m = Manifest::from_json(&m.to_json()).expect("the fixture is a valid manifest");
    (m, all)
}

/// Puts an erasure-coded backup on `providers` (named as in its manifest): each piece where
/// placement puts it, then the manifest on every one.
pub(crate) fn store_pieces(
    providers: &[(&str, &crate::provider::MemoryProvider)],
    m: &Manifest,
    pieces: &[Vec<Bytes>],
) {
    let e = m.erasure.as_ref().expect("an erasure-coded backup");
    for (s, shard_pieces) in m.shards.iter().zip(pieces) {
        for (p, bytes) in shard_pieces.iter().enumerate() {
            let holder = e.holder(s.index, p);
            let (_, provider) = providers
                .iter()
                .find(|(n, _)| *n == holder)
                .expect("every placed provider is given");
            provider.set_object(&path(m, &m.piece_object(s, p)), bytes.clone());
        }
    }
    for (_, provider) in providers {
        provider.set_object(&path(m, crate::layout::MANIFEST), Bytes::from(m.to_json()));
    }
}
