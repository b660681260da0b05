//! Compression and encryption of a shard: plaintext -> stored bytes and back.
//!
//! A stored shard is the plaintext compressed as one zstd frame, then encrypted as one age file
//! (X25519 recipients), in that order; either step may be off ([`Encoding`]). The formats are
//! the crates' own (`zstd`, `age`): nothing here frames, derives keys or picks nonces, and each
//! shard is its own age file with a fresh random file key. So `age -d -i KEY s... | zstd -dc`
//! recovers a shard without offsite (README.md, "Recovery without offsite").
//!
//! Everything here is CPU work and synchronous: callers run it on the blocking pool.
//! [`keys`] reads recipients and identities (passphrase-protected ones too) and makes new ones.

pub mod keys;

pub use crate::layout::Encoding;
pub use keys::{Identities, Recipients};

use crate::layout::{Compression as Kind, Encryption};
use bytes::Bytes;
use std::io::{self, Read, Write};

/// The default zstd level (`compression = "zstd"`).
pub const DEFAULT_LEVEL: i32 = 3;

/// How a dataset's shards are compressed: `compression` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// zstd at this level (1-19).
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(DEFAULT_LEVEL)
    }
}

/// What a backup does to each shard before it is hashed and uploaded.
#[derive(Clone, Default)]
pub struct Codec {
    pub compression: Compression,
    /// Encrypt to these recipients; `None`: stored unencrypted.
    pub recipients: Option<Recipients>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("compression", &self.compression)
            .field("recipients", &self.recipients.as_ref().map(|r| r.len()))
            .finish()
    }
}

impl Codec {
    /// Stored bytes are the plaintext, as before round 2.
    pub fn plain() -> Codec {
        Codec {
            compression: Compression::None,
            recipients: None,
        }
    }

    /// What the stored format records about this codec (the object names' suffixes).
    pub fn encoding(&self) -> Encoding {
        Encoding {
            compression: match self.compression {
                Compression::None => None,
                Compression::Zstd(_) => Some(Kind::Zstd),
            },
            encryption: self.recipients.as_ref().map(|_| Encryption::Age),
        }
    }

    /// The stored bytes of one shard: one zstd frame, then one age file with a fresh file key.
    /// A codec that does neither returns `plain` itself (no copy).
    pub fn encode(&self, plain: Bytes) -> io::Result<Bytes> {
        let level = match self.compression {
            Compression::Zstd(level) => Some(level),
            Compression::None => None,
        };
        let out = Vec::with_capacity(stored_bound(plain.len()));
        let out = match (&self.recipients, level) {
            (None, None) => return Ok(plain),
            (None, Some(level)) => compress(&plain, level, out)?,
            (Some(r), None) => {
                let mut w = r.encryptor()?.wrap_output(out)?;
                w.write_all(&plain)?;
                w.finish()?
            }
            (Some(r), Some(level)) => {
                let w = r.encryptor()?.wrap_output(out)?;
                compress(&plain, level, w)?.finish()?
            }
        };
        Ok(Bytes::from(out))
    }
}

/// Room for a shard's stored bytes: zstd's bound for incompressible input plus age's header
/// (about 200 bytes a recipient) and 16 bytes per 64 KiB chunk. Only touched pages count.
fn stored_bound(len: usize) -> usize {
    zstd::zstd_safe::compress_bound(len) + len / 4096 + 64 * 1024
}

/// `plain` as one zstd frame (its size in the frame header) written to `out`. Single-threaded:
/// the cores are used by the shards in flight encoding at once, and zstd's multithreaded
/// encoder would copy each shard into job buffers beyond the memory bound.
fn compress<W: Write>(plain: &[u8], level: i32, out: W) -> io::Result<W> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    enc.set_pledged_src_size(Some(plain.len() as u64))?;
    enc.include_contentsize(true)?;
    enc.write_all(plain)?;
    enc.finish()
}

/// Why stored bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The shard is encrypted and no identity was given.
    #[error("the shard is encrypted and no identity was given")]
    NoIdentity,
    /// None of the identities opens the age file (it was encrypted to other recipients).
    #[error("none of the identities in {0} can decrypt it (it was encrypted to other recipients)")]
    WrongIdentity(String),
    /// The age file or the zstd frame is damaged (or was tampered with).
    #[error("{0}")]
    Damaged(String),
    /// It decoded to another length than the manifest records.
    #[error("it decodes to {found}{} bytes, the manifest says {expected}", if *.found > *.expected { "+" } else { "" })]
    WrongLength { found: u64, expected: u64 },
}

/// The plaintext of a shard stored with `encoding`, which the manifest says is `plain_len`
/// bytes long (never more is decompressed: a shard cannot blow up memory).
pub fn decode(
    encoding: Encoding,
    stored: &[u8],
    plain_len: u64,
    ids: Option<&Identities>,
) -> Result<Bytes, DecodeError> {
    if encoding == Encoding::default() {
        return check_len(Bytes::copy_from_slice(stored), plain_len);
    }
    let reader: Box<dyn Read + '_> = match encoding.encryption {
        None => Box::new(stored),
        Some(Encryption::Age) => {
            let ids = ids.ok_or(DecodeError::NoIdentity)?;
            Box::new(ids.decrypt(stored)?)
        }
    };
    let reader: Box<dyn Read + '_> = match encoding.compression {
        None => reader,
        Some(Kind::Zstd) => Box::new(
            zstd::stream::read::Decoder::new(reader)
                .map_err(|e| DecodeError::Damaged(format!("zstd: {e}")))?,
        ),
    };
    let mut out = Vec::with_capacity(plain_len as usize);
    reader
        .take(plain_len + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Damaged(damage(&encoding, &e)))?;
    check_len(Bytes::from(out), plain_len)
}

fn check_len(data: Bytes, expected: u64) -> Result<Bytes, DecodeError> {
    match data.len() as u64 {
        found if found == expected => Ok(data),
        found => Err(DecodeError::WrongLength { found, expected }),
    }
}

/// What a read error while decoding means: age's authentication failed, or zstd's frame.
fn damage(encoding: &Encoding, e: &io::Error) -> String {
    if encoding.encryption.is_some() && e.kind() == io::ErrorKind::InvalidData {
        format!("age authentication failed (the stored bytes were changed): {e}")
    } else {
        format!("decoding failed: {e}")
    }
}

#[cfg(test)]
mod tests;
