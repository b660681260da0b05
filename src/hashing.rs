//! Hashing of shard bytes, in one place: the SHA-256 offsite checks everything against, and
//! the MD5 and SHA-1 that storage backends compute natively and report in listings
//! (`rclone lsjson --hash`), so that a corrupt object can be caught without downloading it.
//!
//! Hashing is CPU work: [`digests_blocking`] and [`sha256_blocking`] run it on tokio's blocking
//! pool, one pass over the bytes for all three digests.

use crate::manifest::hex;
use bytes::Bytes;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The digests of one object's bytes, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
}

/// SHA-256, MD5 and SHA-1 of `data`, in one pass over it (1 MiB at a time, so each chunk is
/// hashed three times while it is in the CPU cache).
pub fn digests(data: &[u8]) -> Digests {
    let (mut s256, mut m5, mut s1) = (Sha256::new(), Md5::new(), Sha1::new());
    for chunk in data.chunks(1 << 20) {
        s256.update(chunk);
        m5.update(chunk);
        s1.update(chunk);
    }
    Digests {
        sha256: hex(&s256.finalize()),
        md5: hex(&m5.finalize()),
        sha1: hex(&s1.finalize()),
    }
}

/// [`digests`] on two threads: SHA-256 on the caller's, MD5 and SHA-1 on a scoped one, so on
/// two cores the native hashes add no wall time. For callers already on the blocking pool
/// (the backup's per-shard task: hash, encode, hash the stored bytes).
pub fn digests_two_threads(data: &[u8]) -> Digests {
    let (sha256, (md5, sha1)) = std::thread::scope(|s| {
        let native = s.spawn(|| {
            let (mut m5, mut s1) = (Md5::new(), Sha1::new());
            for chunk in data.chunks(1 << 20) {
                m5.update(chunk);
                s1.update(chunk);
            }
            (hex(&m5.finalize()), hex(&s1.finalize()))
        });
        let sha256 = hex(&Sha256::digest(data));
        (sha256, native.join().expect("hashing never panics"))
    });
    Digests { sha256, md5, sha1 }
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// SHA-256 of whatever is written into it, for bytes produced piece by piece (a manifest's
/// canonical form, serialized straight into the hash instead of into a buffer).
#[derive(Default)]
pub struct Sha256Writer(Sha256);

impl Sha256Writer {
    /// The digest of everything written, lower-case hex.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

impl std::io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`digests`] on the blocking pool.
pub async fn digests_blocking(data: Bytes) -> std::io::Result<Digests> {
    // SHA-256 on one blocking thread, MD5 and SHA-1 on another: on two cores the native
    // hashes then add no wall time to a shard's hashing.
    let d = data.clone();
    let sha256 = tokio::task::spawn_blocking(move || hex(&Sha256::digest(&d)));
    let native = tokio::task::spawn_blocking(move || {
        let (mut m5, mut s1) = (Md5::new(), Sha1::new());
        for chunk in data.chunks(1 << 20) {
            m5.update(chunk);
            s1.update(chunk);
        }
        (hex(&m5.finalize()), hex(&s1.finalize()))
    });
    let (sha256, native) = tokio::join!(sha256, native);
    let (md5, sha1) = native.map_err(std::io::Error::other)?;
    Ok(Digests {
        sha256: sha256.map_err(std::io::Error::other)?,
        md5,
        sha1,
    })
}

/// [`sha256`] on the blocking pool.
pub async fn sha256_blocking(data: Bytes) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || sha256(&data))
        .await
        .map_err(std::io::Error::other)
}

/// SHA-256 of `parts` one after the other (a shard read in pieces), on the blocking pool.
pub async fn sha256_chunks_blocking(parts: Vec<Bytes>) -> std::io::Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        for p in &parts {
            h.update(p);
        }
        hex(&h.finalize())
    })
    .await
    .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let d = digests(b"abc");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(d.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha256(b"abc"), d.sha256);
        assert_eq!(digests_two_threads(b"abc"), d);
    }

    #[tokio::test]
    async fn blocking_pool_gives_the_same() {
        let d = digests_blocking(Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(d, digests(b"abc"));
        let parts = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        assert_eq!(sha256_chunks_blocking(parts).await.unwrap(), d.sha256);
    }
}
