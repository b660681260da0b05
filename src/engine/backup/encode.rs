//! A shard's CPU work, in one task on tokio's blocking pool, never on the reactor: the
//! plaintext's SHA-256, compression and encryption ([`Codec::encode`]), then the stored bytes'
//! SHA-256, and their MD5 and SHA-1 where a provider of the run lists them (`native`). The
//! plaintext is dropped as soon as it is encoded, so a shard in flight holds at most its
//! plaintext and its stored bytes at once.
//!
//! A plain codec stores the plaintext itself: the record then has no plaintext fields and is
//! byte for byte the record of a backup made before encodings existed.
//!
//! An erasure-coded backup then cuts the stored bytes into `k + m` pieces ([`erasure::split`])
//! in the same task and hashes each piece. The data pieces are slices of the stored bytes (a
//! piece that needs padding is a copy), so what stays in flight until the last upload ends is
//! the stored shard plus its parity.

use super::native::Natives;
use crate::codec::{Codec, Encoding};
use crate::erasure::{self, Scheme};
use crate::hashing;
use crate::hashing::NativeHashes;
use crate::manifest::{PieceRecord, ShardRecord};
use bytes::Bytes;
use std::io;
use std::sync::Arc;

/// A shard's stored bytes (what every provider gets) and its record.
pub(super) struct Encoded {
    pub record: ShardRecord,
    pub payload: Payload,
}

/// What the providers get of one shard.
#[derive(Clone)]
pub(super) enum Payload {
    /// Mirrored: the same stored bytes to every provider.
    Whole(Bytes),
    /// Erasure-coded: piece `p` (0-based, data first) to the provider placement names.
    Pieces(Vec<Bytes>),
}

impl Payload {
    /// The bytes of the object `piece` names (`None`: the whole stored shard).
    pub fn part(&self, piece: Option<usize>) -> Bytes {
        match (self, piece) {
            (Payload::Whole(b), None) => b.clone(),
            (Payload::Pieces(p), Some(i)) => p[i].clone(),
            _ => unreachable!("a shard's placement and its payload agree on erasure coding"),
        }
    }

    /// Every object, in piece order.
    pub fn parts(&self) -> &[Bytes] {
        match self {
            Payload::Whole(b) => std::slice::from_ref(b),
            Payload::Pieces(p) => p,
        }
    }

    /// The same kind of payload made of `parts` (the same objects, stored elsewhere).
    pub fn with_parts(&self, mut parts: Vec<Bytes>) -> Payload {
        match self {
            Payload::Whole(_) => Payload::Whole(parts.remove(0)),
            Payload::Pieces(_) => Payload::Pieces(parts),
        }
    }
}

/// How one shard is encoded: the job's codec, and its erasure code if any.
#[derive(Clone)]
pub(super) struct Encoder {
    pub codec: Codec,
    pub erasure: Option<Scheme>,
    /// The native hashes the run's providers list.
    pub natives: Arc<Natives>,
}

/// Encodes one shard on the blocking pool, hashes included. `plain_sha` is the plaintext's
/// SHA-256 when already known (a resumed shard checked against the journal), so it is not
/// hashed twice.
pub(super) async fn encode(
    encoder: &Encoder,
    index: u64,
    offset: u64,
    plain: Bytes,
    plain_sha: Option<String>,
) -> io::Result<Encoded> {
    encode_unhashed(encoder, index, offset, plain, plain_sha)
        .await?
        .hashed()
        .await
}

/// An encoded shard whose stored objects are not hashed yet: its payload can go out while
/// [`Unhashed::hashed`] runs (uploads need only the lengths), which takes the hashing of a
/// shard off the path from reading it to its first upload.
pub(super) struct Unhashed {
    /// The record with every length; the stored objects' hashes are empty.
    pub record: ShardRecord,
    pub payload: Payload,
    /// Erasure-coded: the whole stored shard, hashed for the record (its data pieces are
    /// slices of it, so keeping it costs nothing).
    stored: Option<Bytes>,
    /// Which native hashes to record, asked when the shard is hashed.
    natives: Arc<Natives>,
}

impl Unhashed {
    /// The record with the stored objects' SHA-256 (and the MD5, SHA-1 a provider of the run
    /// lists), hashed on the blocking pool.
    pub async fn record(&self) -> io::Result<ShardRecord> {
        let (mut record, payload, stored) = (
            self.record.clone(),
            self.payload.clone(),
            self.stored.clone(),
        );
        let natives = self.natives.wanted();
        tokio::task::spawn_blocking(move || {
            hash_objects(&mut record, &payload, stored.as_deref(), natives);
            record
        })
        .await
        .map_err(io::Error::other)
    }

    /// This shard with its record hashed.
    pub async fn hashed(self) -> io::Result<Encoded> {
        let record = self.record().await?;
        Ok(Encoded {
            record,
            payload: self.payload,
        })
    }
}

/// Fills in the hashes of the objects that store a shard: the stored bytes' SHA-256, and the
/// MD5 and SHA-1 `natives` asks for; erasure-coded, the whole stored shard's SHA-256 (checked
/// after a restore joins the pieces) and each piece's hashes, and no MD5/SHA-1 of the shard,
/// which no provider holds whole.
fn hash_objects(
    record: &mut ShardRecord,
    payload: &Payload,
    stored: Option<&[u8]>,
    natives: NativeHashes,
) {
    match (payload, stored) {
        (Payload::Whole(b), _) => {
            let d = hashing::recorded_digests(b, natives);
            (record.sha256, record.md5, record.sha1) = (d.sha256, d.md5, d.sha1);
        }
        (Payload::Pieces(pieces), Some(stored)) => {
            record.sha256 = hashing::sha256(stored);
            for (rec, p) in record.pieces.iter_mut().zip(pieces) {
                let d = hashing::recorded_digests(p, natives);
                (rec.sha256, rec.md5, rec.sha1) = (d.sha256, d.md5, d.sha1);
            }
        }
        (Payload::Pieces(_), None) => unreachable!("pieces are cut from a stored shard"),
    }
}

/// [`encode`] without the hashes of the stored objects, on the blocking pool.
pub(super) async fn encode_unhashed(
    encoder: &Encoder,
    index: u64,
    offset: u64,
    plain: Bytes,
    plain_sha: Option<String>,
) -> io::Result<Unhashed> {
    let encoder = encoder.clone();
    tokio::task::spawn_blocking(move || encode_now(&encoder, index, offset, plain, plain_sha))
        .await
        .map_err(io::Error::other)?
}

/// [`encode_unhashed`], on the calling thread.
fn encode_now(
    encoder: &Encoder,
    index: u64,
    offset: u64,
    plain: Bytes,
    plain_sha: Option<String>,
) -> io::Result<Unhashed> {
    #[cfg(test)]
    ENCODED_HERE.with(|n| n.set(n.get() + 1));
    let codec = &encoder.codec;
    let plain_len = plain.len() as u64;
    let encoded = codec.encoding() != Encoding::default();
    let plain_sha = match encoded {
        true => Some(plain_sha.unwrap_or_else(|| hashing::sha256(&plain))),
        false => None,
    };
    // `encode` consumes the plaintext: once it returns, only the stored bytes are held.
    let stored = codec.encode(plain)?;
    let mut record = ShardRecord {
        index,
        offset,
        length: stored.len() as u64,
        sha256: String::new(),
        md5: None,
        sha1: None,
        plain_length: encoded.then_some(plain_len),
        plain_sha256: plain_sha,
        pieces: Vec::new(),
    };
    let Some(scheme) = encoder.erasure else {
        let payload = Payload::Whole(stored);
        return Ok(Unhashed {
            record,
            payload,
            stored: None,
            natives: encoder.natives.clone(),
        });
    };
    let pieces = erasure::split(scheme, &stored).map_err(io::Error::other)?;
    record.pieces = (pieces.iter())
        .map(|p| PieceRecord {
            length: p.len() as u64,
            sha256: String::new(),
            md5: None,
            sha1: None,
        })
        .collect();
    Ok(Unhashed {
        record,
        payload: Payload::Pieces(pieces),
        stored: Some(stored),
        natives: encoder.natives.clone(),
    })
}

#[cfg(test)]
thread_local! {
    /// How many shards were encoded on this thread: a test running the pipeline on a
    /// current-thread runtime checks that none were encoded on the reactor's thread.
    pub(super) static ENCODED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
