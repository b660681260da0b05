//! Checking and decoding one stored shard ([`check`]): its stored SHA-256 first, then, for a
//! compressed or encrypted backup, decryption and decompression with that backup's own
//! encoding, then the plaintext's length and SHA-256. Shared by restore's fetch and
//! `verify --decrypt`.
//!
//! Everything here is CPU work and synchronous: callers run it on the blocking pool, one task
//! per shard, so that several shards decode at once on every core. The stored bytes are
//! dropped as soon as the plaintext exists.

use crate::codec::{self, Encoding, Identities};
use crate::manifest::{Manifest, ShardRecord};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a shard must be, from its backup's (unsealed) manifest.
#[derive(Clone)]
pub struct Expected {
    /// SHA-256 of the stored object.
    pub sha256: String,
    pub encoding: Encoding,
    pub plain_len: u64,
    /// SHA-256 of the plaintext; `None` while the manifest is sealed.
    pub plain_sha256: Option<String>,
    /// The identities of an encrypted backup.
    pub ids: Option<Arc<Identities>>,
}

impl Expected {
    pub fn new(m: &Manifest, rec: &ShardRecord, ids: Option<Arc<Identities>>) -> Expected {
        Expected {
            sha256: rec.sha256.clone(),
            encoding: m.encoding,
            plain_len: rec.plain_len(),
            plain_sha256: rec.plain_sha(m.encoding).map(str::to_string),
            ids,
        }
    }

    /// Whether the stored bytes are not the plaintext.
    pub fn is_encoded(&self) -> bool {
        self.encoding != Encoding::default()
    }
}

/// What a stored shard turned out to be.
#[derive(Debug)]
pub enum Checked {
    /// The plaintext, in parts (an unencoded shard's stored parts themselves).
    Good(Vec<Bytes>),
    /// The stored bytes hash to this, not to the manifest's SHA-256: a corrupt copy (another
    /// provider's may be good).
    Corrupt(String),
    /// The stored bytes are the ones the manifest records, but they do not give the plaintext
    /// it records: why. Every copy is the same, so no other provider can help.
    Undecodable(String),
}

/// Checks the stored bytes `parts` (in order) against `want` and decodes them.
pub fn check(parts: Vec<Bytes>, want: &Expected) -> Checked {
    let mut h = Sha256::new();
    parts.iter().for_each(|p| h.update(p));
    let sum = crate::manifest::hex(&h.finalize());
    if sum != want.sha256 {
        return Checked::Corrupt(sum);
    }
    if !want.is_encoded() {
        return Checked::Good(parts);
    }
    let stored = concat(parts);
    let plain = match codec::decode(want.encoding, stored, want.plain_len, want.ids.as_deref()) {
        Ok(plain) => plain,
        Err(e) => {
            return Checked::Undecodable(format!(
                "the stored bytes match the manifest's SHA-256 but do not decode: {e}"
            ))
        }
    };
    let Some(expected) = &want.plain_sha256 else {
        return Checked::Undecodable(
            "the manifest records no plaintext SHA-256 to check it against".into(),
        );
    };
    let found = crate::hashing::sha256(&plain);
    if found != *expected {
        return Checked::Undecodable(format!(
            "it decodes to plaintext with SHA-256 {found}, the manifest says {expected}"
        ));
    }
    Checked::Good(vec![plain])
}

/// The parts as one buffer (no copy for a single part).
fn concat(mut parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().expect("one part");
    }
    let mut all = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        all.extend_from_slice(&p);
    }
    all.freeze()
}
