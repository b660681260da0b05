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
    /// A codec that does neither returns `plain` itself (no copy). At most two copies of the
    /// shard are held at once: the plaintext is dropped once compressed, the frame once
    /// encrypted.
    pub fn encode(&self, plain: Bytes) -> io::Result<Bytes> {
        let compressed = match self.compression {
            Compression::Zstd(level) => {
                let frame = compress(&plain, level)?;
                drop(plain);
                Bytes::from(frame)
            }
            Compression::None => plain,
        };
        match &self.recipients {
            None => Ok(compressed),
            Some(r) => Ok(Bytes::from(encrypt(r, &compressed)?)),
        }
    }
}

/// `plain` as one zstd frame, its size in the frame header. One call over the whole shard
/// (`ZSTD_compress2`): zstd's streaming encoder copies its input through a window buffer and
/// takes the slower external-dictionary match finder (a 1 GiB tar backed up to three
/// directories: 27.7 CPU-s streaming, 21.5 one-shot).
/// Single-threaded: the cores are used by the shards in flight encoding at once, and zstd's
/// multithreaded encoder would copy each shard into job buffers beyond the memory bound.
fn compress(plain: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut zstd = zstd::bulk::Compressor::new(level)?;
    zstd.include_contentsize(true)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(plain.len()));
    zstd.compress_to_buffer(plain, &mut out)?;
    Ok(out)
}

/// `data` as one age file to `r`, with a fresh file key.
fn encrypt(r: &Recipients, data: &[u8]) -> io::Result<Vec<u8>> {
    // age adds a header (about 200 bytes a recipient) and 16 bytes per 64 KiB chunk.
    let room = data.len() + data.len() / 4096 + 64 * 1024;
    let mut w = r.encryptor()?.wrap_output(Vec::with_capacity(room))?;
    w.write_all(data)?;
    w.finish()
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
    #[error("it decodes to {found} bytes, the manifest says {expected}")]
    WrongLength { found: u64, expected: u64 },
}

/// The plaintext of a shard stored with `encoding`, which the manifest says is `plain_len`
/// bytes long (never more is decompressed: a shard cannot blow up memory). Each step works on
/// the whole buffer and drops its input: at most two copies of the shard are held at once.
pub fn decode(
    encoding: Encoding,
    stored: Bytes,
    plain_len: u64,
    ids: Option<&Identities>,
) -> Result<Bytes, DecodeError> {
    let compressed = match encoding.encryption {
        None => stored,
        Some(Encryption::Age) => decrypt(ids.ok_or(DecodeError::NoIdentity)?, stored)?,
    };
    match encoding.compression {
        None => check_len(compressed, plain_len),
        Some(Kind::Zstd) => decompress(&compressed, plain_len),
    }
}

/// The plaintext of one age file (never longer than the file itself).
fn decrypt(ids: &Identities, stored: Bytes) -> Result<Bytes, DecodeError> {
    let mut out = Vec::with_capacity(stored.len());
    ids.decrypt(&stored)?
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Damaged(damage(&e)))?;
    Ok(Bytes::from(out))
}

/// One zstd frame of `plain_len` bytes, decompressed in one call into a buffer of that size.
fn decompress(frame: &[u8], plain_len: u64) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    out.try_reserve_exact(plain_len as usize).map_err(|_| {
        DecodeError::Damaged(format!(
            "no memory for the {plain_len} bytes the manifest records"
        ))
    })?;
    let done =
        zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress_to_buffer(frame, &mut out));
    match done {
        Ok(_) => check_len(Bytes::from(out), plain_len),
        Err(e) => match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(found)) if found != plain_len => Err(DecodeError::WrongLength {
                found,
                expected: plain_len,
            }),
            _ => Err(DecodeError::Damaged(format!(
                "the zstd frame is damaged or cut: {e}"
            ))),
        },
    }
}

fn check_len(data: Bytes, expected: u64) -> Result<Bytes, DecodeError> {
    match data.len() as u64 {
        found if found == expected => Ok(data),
        found => Err(DecodeError::WrongLength { found, expected }),
    }
}

/// What a read error while decrypting means: age's authentication failed, or the file is cut.
fn damage(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::InvalidData {
        format!("age authentication failed (the stored bytes were changed): {e}")
    } else {
        format!("decrypting failed: {e}")
    }
}

#[cfg(test)]
mod tests;
