//! A shard's CPU work, in one task on tokio's blocking pool, never on the reactor: the
//! plaintext's SHA-256, compression and encryption ([`Codec::encode`]), then the stored bytes'
//! SHA-256, MD5 and SHA-1. The plaintext is dropped as soon as it is encoded, so a shard in
//! flight holds at most its plaintext and its stored bytes at once.
//!
//! A plain codec stores the plaintext itself: the record then has no plaintext fields and is
//! byte for byte the record of a backup made before encodings existed.

use crate::codec::{Codec, Encoding};
use crate::hashing;
use crate::manifest::ShardRecord;
use bytes::Bytes;
use std::io;

/// A shard's stored bytes (what every provider gets) and its record.
pub(super) struct Encoded {
    pub record: ShardRecord,
    pub stored: Bytes,
}

/// Encodes one shard on the blocking pool. `plain_sha` is the plaintext's SHA-256 when already
/// known (a resumed shard checked against the journal), so it is not hashed twice.
pub(super) async fn encode(
    codec: &Codec,
    index: u64,
    offset: u64,
    plain: Bytes,
    plain_sha: Option<String>,
) -> io::Result<Encoded> {
    let codec = codec.clone();
    tokio::task::spawn_blocking(move || encode_now(&codec, index, offset, plain, plain_sha))
        .await
        .map_err(io::Error::other)?
}

/// [`encode`], on the calling thread.
fn encode_now(
    codec: &Codec,
    index: u64,
    offset: u64,
    plain: Bytes,
    plain_sha: Option<String>,
) -> io::Result<Encoded> {
    #[cfg(test)]
    ENCODED_HERE.with(|n| n.set(n.get() + 1));
    let plain_len = plain.len() as u64;
    let encoded = codec.encoding() != Encoding::default();
    let plain_sha = match encoded {
        true => Some(plain_sha.unwrap_or_else(|| hashing::sha256(&plain))),
        false => None,
    };
    // `encode` consumes the plaintext: once it returns, only the stored bytes are held.
    let stored = codec.encode(plain)?;
    let d = hashing::digests_two_threads(&stored);
    let record = ShardRecord {
        index,
        offset,
        length: stored.len() as u64,
        sha256: d.sha256,
        md5: Some(d.md5),
        sha1: Some(d.sha1),
        plain_length: encoded.then_some(plain_len),
        plain_sha256: plain_sha,
        pieces: Vec::new(),
    };
    Ok(Encoded { record, stored })
}

#[cfg(test)]
thread_local! {
    /// How many shards were encoded on this thread: a test running the pipeline on a
    /// current-thread runtime checks that none were encoded on the reactor's thread.
    pub(super) static ENCODED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
