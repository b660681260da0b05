//! Erasure coding: a stored shard (after compression and encryption) cut into `k` data pieces
//! plus `m` parity pieces, any `k` of which give the shard back; and which provider holds which
//! piece. Pure and synchronous: callers run [`split`] and [`join`] on the blocking pool.
//!
//! The layout (README.md, "Erasure coding: the piece layout", is the user's copy of this):
//! - `piece_len = ceil(stored_len / k)`, rounded up to an even number (at least 2): the crate
//!   works on 16-bit symbols.
//! - The stored shard followed by `k * piece_len - stored_len` zero bytes, cut in `k` runs of
//!   `piece_len` bytes, is data pieces 1..=k; the parity pieces k+1..=k+m are
//!   `reed_solomon_simd::encode(k, m, data pieces)` (reed-solomon-simd 3.x: Leopard-RS, an
//!   FFT-based code over GF(2^16)), in the order it returns them. Every piece object is
//!   `piece_len` bytes long.
//! - Piece `p` (0-based) of shard `s` goes to `providers[(s + p) % providers.len()]`, the
//!   providers listed in the manifest's `erasure.providers`: with more providers than `k + m`
//!   the placement rotates shard by shard.
//!
//! No Galois-field arithmetic here: that is the crate's.

use bytes::Bytes;
use std::fmt;
use std::str::FromStr;

/// The most pieces a shard may be cut into (`k + m`): far more providers than anyone runs.
pub const MAX_PIECES: usize = 64;

/// `k` data pieces plus `m` parity pieces per shard (`erasure = "k+m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheme {
    pub k: usize,
    pub m: usize,
}

impl Scheme {
    /// Pieces per shard, `k + m`: also the fewest providers a backup needs.
    pub fn total(&self) -> usize {
        self.k + self.m
    }

    /// The length of every piece of a stored shard of `stored_len` bytes.
    pub fn piece_len(&self, stored_len: u64) -> u64 {
        let per = stored_len.div_ceil(self.k as u64).max(1);
        per + per % 2
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl FromStr for Scheme {
    type Err = String;

    /// `"k+m"` with k >= 1, m >= 1 and k + m <= [`MAX_PIECES`].
    fn from_str(s: &str) -> Result<Scheme, String> {
        let bad = || {
            format!(
                "erasure = {s:?} is not \"k+m\" (k data and m parity pieces per shard, each at least 1, \
                 k + m at most {MAX_PIECES}), e.g. \"2+1\" or \"4+2\""
            )
        };
        let (k, m) = s.split_once('+').ok_or_else(bad)?;
        let num = |x: &str| {
            (!x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                .then(|| x.parse::<usize>().ok())
                .flatten()
        };
        let (k, m) = (num(k).ok_or_else(bad)?, num(m).ok_or_else(bad)?);
        if k == 0 || m == 0 || k + m > MAX_PIECES {
            return Err(bad());
        }
        Ok(Scheme { k, m })
    }
}

impl serde::Serialize for Scheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Scheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scheme, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why pieces do not give a shard back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("only {have} of the {need} pieces needed to rebuild the shard")]
    TooFew { have: usize, need: usize },
    #[error("piece {piece} is {len} bytes, not {want}")]
    WrongLength { piece: usize, len: usize, want: u64 },
    #[error("the Reed-Solomon code failed: {0}")]
    Code(String),
}

/// The provider index (into the manifest's `erasure.providers`, `n` of them) of piece `piece`
/// (0-based) of shard `shard`.
pub fn placement(shard: u64, piece: usize, n: usize) -> usize {
    ((shard % n as u64) as usize + piece) % n
}

/// The piece (0-based, `n` or more: none of this shard's) that the provider at index `slot`
/// of `n` holds of shard `shard`: the inverse of [`placement`].
pub fn piece_at(shard: u64, slot: usize, n: usize) -> usize {
    (slot + n - (shard % n as u64) as usize) % n
}

/// Cuts a stored shard into `k + m` pieces of [`Scheme::piece_len`] bytes: data pieces first
/// (zero-padded at the end), then parity. Runs the code on the calling thread. A whole data
/// piece is a slice of `stored`, not a copy: only a piece that needs padding is copied, so a
/// shard being cut holds its stored bytes and its parity.
pub fn split(scheme: Scheme, stored: &Bytes) -> Result<Vec<Bytes>, ErasureError> {
    let len = scheme.piece_len(stored.len() as u64) as usize;
    let data: Vec<Bytes> = (0..scheme.k)
        .map(|i| {
            let (start, end) = (
                (i * len).min(stored.len()),
                ((i + 1) * len).min(stored.len()),
            );
            if end - start == len {
                return stored.slice(start..end);
            }
            let mut padded = Vec::with_capacity(len);
            padded.extend_from_slice(&stored[start..end]);
            padded.resize(len, 0);
            Bytes::from(padded)
        })
        .collect();
    let parity = parity(scheme, &data, len)?;
    Ok(data
        .into_iter()
        .chain(parity.into_iter().map(Bytes::from))
        .collect())
}

/// The stored shard of `stored_len` bytes from any `k` of its pieces (`pieces[p]` is piece `p`,
/// 0-based, or `None`). Each piece given must already be checked against its SHA-256: the code
/// cannot tell a wrong piece from a right one.
pub fn join(
    scheme: Scheme,
    stored_len: u64,
    pieces: &[Option<Bytes>],
) -> Result<Vec<u8>, ErasureError> {
    let want = scheme.piece_len(stored_len);
    check_pieces(scheme, want, pieces)?;
    let data_held = pieces[..scheme.k].iter().all(Option::is_some);
    let mut restored = if data_held {
        Default::default()
    } else {
        decode(scheme, pieces)?
    };
    let mut out = Vec::with_capacity(want as usize * scheme.k);
    for (i, piece) in pieces[..scheme.k].iter().enumerate() {
        match piece {
            Some(p) => out.extend_from_slice(p),
            None => out.extend_from_slice(&restored.remove(&i).ok_or_else(|| {
                ErasureError::Code(format!("the decoder did not restore data piece {}", i + 1))
            })?),
        }
    }
    out.truncate(stored_len as usize);
    Ok(out)
}

/// Every piece of the shard again, from any `k` of them: what `sync` uploads to a provider that
/// lost its pieces. The code is deterministic, so rebuilt pieces equal the originals.
pub fn rebuild(
    scheme: Scheme,
    stored_len: u64,
    pieces: &[Option<Bytes>],
) -> Result<Vec<Bytes>, ErasureError> {
    let stored = join(scheme, stored_len, pieces)?;
    split(scheme, &Bytes::from(stored))
}

/// Pieces are coded in stripes of this many bytes (a multiple of the crate's 64-byte blocks).
/// The code works position by position, so the parity is the same as coding whole pieces at
/// once (a test checks it), and the crate's work memory is a few stripes, not a few shards.
const STRIPE: usize = 1 << 20;

/// The `m` parity pieces of `data` (`k` pieces of `len` bytes), stripe by stripe.
fn parity(scheme: Scheme, data: &[Bytes], len: usize) -> Result<Vec<Vec<u8>>, ErasureError> {
    let mut parity = vec![Vec::with_capacity(len); scheme.m];
    for at in (0..len).step_by(STRIPE) {
        let end = (at + STRIPE).min(len);
        let stripe = data.iter().map(|d| &d[at..end]);
        let coded = reed_solomon_simd::encode(scheme.k, scheme.m, stripe)
            .map_err(|e| ErasureError::Code(e.to_string()))?;
        for (p, c) in parity.iter_mut().zip(coded) {
            p.extend_from_slice(&c);
        }
    }
    Ok(parity)
}

/// `k + m` slots, at least `k` pieces given, each `want` bytes long.
fn check_pieces(scheme: Scheme, want: u64, pieces: &[Option<Bytes>]) -> Result<(), ErasureError> {
    if pieces.len() != scheme.total() {
        return Err(ErasureError::Code(format!(
            "{} piece slots for a {scheme} code",
            pieces.len()
        )));
    }
    let have = pieces.iter().flatten().count();
    if have < scheme.k {
        return Err(ErasureError::TooFew {
            have,
            need: scheme.k,
        });
    }
    match pieces
        .iter()
        .enumerate()
        .find(|(_, p)| p.as_ref().is_some_and(|p| p.len() as u64 != want))
    {
        Some((piece, p)) => Err(ErasureError::WrongLength {
            piece: piece + 1,
            len: p.as_ref().map_or(0, |p| p.len()),
            want,
        }),
        None => Ok(()),
    }
}

/// The data pieces missing from `pieces` (all of one length), restored by the crate's
/// decoder stripe by stripe (see [`STRIPE`]).
fn decode(
    scheme: Scheme,
    pieces: &[Option<Bytes>],
) -> Result<std::collections::BTreeMap<usize, Vec<u8>>, ErasureError> {
    let (data, parity) = pieces.split_at(scheme.k);
    let len = pieces.iter().flatten().next().map_or(0, |p| p.len());
    let mut out: std::collections::BTreeMap<usize, Vec<u8>> = std::collections::BTreeMap::new();
    for at in (0..len).step_by(STRIPE) {
        let end = (at + STRIPE).min(len);
        let held = |v: &[Option<Bytes>]| -> Vec<(usize, Bytes)> {
            v.iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.slice(at..end))))
                .collect()
        };
        let restored = reed_solomon_simd::decode(scheme.k, scheme.m, held(data), held(parity))
            .map_err(|e| ErasureError::Code(e.to_string()))?;
        for (i, piece) in restored {
            out.entry(i)
                .or_insert_with(|| Vec::with_capacity(len))
                .extend_from_slice(&piece);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
