//! Hashing of shard bytes, in one place: the SHA-256 offsite checks everything against, and
//! the MD5 and SHA-1 that storage backends compute natively and report in listings
//! (`rclone lsjson --hash`), so that a corrupt object can be caught without downloading it.
//!
//! Hashing is CPU work: callers run it on tokio's blocking pool ([`sha256_blocking`], or from a
//! task already there). A backup computes MD5 and SHA-1 only where a provider lists them
//! ([`NativeHashes`]).

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

/// Which of the hashes backends compute natively a backup records next to SHA-256: the ones
/// some provider of the run lists without reading its objects. MD5 costs more CPU than SHA-256
/// on a CPU with SHA instructions, so a hash that no listing carries is not computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NativeHashes {
    pub md5: bool,
    pub sha1: bool,
}

impl NativeHashes {
    pub const ALL: NativeHashes = NativeHashes {
        md5: true,
        sha1: true,
    };
    pub const NONE: NativeHashes = NativeHashes {
        md5: false,
        sha1: false,
    };

    /// The hashes either wants.
    pub fn union(self, other: NativeHashes) -> NativeHashes {
        NativeHashes {
            md5: self.md5 || other.md5,
            sha1: self.sha1 || other.sha1,
        }
    }
}

/// What a backup records of one stored object: its SHA-256, and the native hashes asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub sha256: String,
    pub md5: Option<String>,
    pub sha1: Option<String>,
}

/// SHA-256 of `data` on the caller's thread and, on a scoped one, the native hashes `native`
/// asks for, so on two cores they add no wall time. For callers already on the blocking pool
/// (the backup's per-shard task: hash, encode, hash the stored bytes).
pub fn recorded_digests(data: &[u8], native: NativeHashes) -> Recorded {
    if native == NativeHashes::NONE {
        return Recorded {
            sha256: sha256(data),
            md5: None,
            sha1: None,
        };
    }
    let (sha256, (md5, sha1)) = std::thread::scope(|s| {
        let natives = s.spawn(|| {
            let mut m5 = native.md5.then(Md5::new);
            let mut s1 = native.sha1.then(Sha1::new);
            for chunk in data.chunks(1 << 20) {
                m5.iter_mut().for_each(|h| h.update(chunk));
                s1.iter_mut().for_each(|h| h.update(chunk));
            }
            (
                m5.map(|h| hex(&h.finalize())),
                s1.map(|h| hex(&h.finalize())),
            )
        });
        let sha256 = sha256(data);
        (sha256, natives.join().expect("hashing never panics"))
    });
    Recorded { sha256, md5, sha1 }
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
    }

    #[test]
    fn recorded_digests_are_the_ones_asked_for() {
        let d = digests(b"abc");
        let all = recorded_digests(b"abc", NativeHashes::ALL);
        assert_eq!(all.sha256, d.sha256);
        assert_eq!(all.md5.as_deref(), Some(d.md5.as_str()));
        assert_eq!(all.sha1.as_deref(), Some(d.sha1.as_str()));
        let none = recorded_digests(b"abc", NativeHashes::NONE);
        assert_eq!(
            (none.sha256, none.md5, none.sha1),
            (d.sha256.clone(), None, None)
        );
        let md5 = NativeHashes::NONE.union(NativeHashes {
            md5: true,
            sha1: false,
        });
        let only = recorded_digests(b"abc", md5);
        assert_eq!((only.md5, only.sha1), (Some(d.md5), None));
    }

    #[tokio::test]
    async fn blocking_pool_gives_the_same() {
        let d = digests(b"abc");
        let parts = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        assert_eq!(sha256_chunks_blocking(parts).await.unwrap(), d.sha256);
    }
}
