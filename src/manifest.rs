//! `manifest.json`: what a backup is, written to each provider after its shards.
//!
//! A manifest is the only thing a restore needs besides the shards. [`Manifest::from_json`]
//! checks that the shard list describes one contiguous stream, so later code can trust offsets
//! and lengths.
//!
//! Format 2 carries a `checksum` of its own content: the hex SHA-256 of the manifest parsed as
//! a JSON value, with the `checksum` key removed, re-serialized compactly (keys sorted, so the
//! form is canonical and survives fields a later offsite adds). A format 2 manifest that fails
//! it is damaged and never used. Format 1 (no checksum) is still read. The checksum catches
//! accidents, not attacks: anyone who can write a manifest can recompute it (README.md, "What a
//! hostile or broken provider can and cannot do").

use crate::layout::{self, BackupId, BackupKind, Encoding};
use serde::{Deserialize, Serialize};

/// The format this offsite writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this offsite reads (no checksum, no native hashes).
pub const OLDEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub host: String,
    pub dataset: String,
    pub backup_id: String,
    pub kind: BackupKind,
    /// `zfs`, `btrfs` or `command`.
    pub source_kind: String,
    /// The zfs dataset, btrfs subvolume or shell command.
    pub source: String,
    /// The snapshot sent (`pool/fs@offsite-...`, a btrfs snapshot path), if any.
    pub snapshot: Option<String>,
    pub parent: Option<ParentRef>,
    pub created: String,
    pub shard_size: u64,
    pub total_bytes: u64,
    pub shards: Vec<ShardRecord>,
    pub tool: String,
    /// How the shards are stored (`"compression"`, `"encryption"`; absent: plaintext objects).
    #[serde(flatten)]
    pub encoding: Encoding,
    /// Encrypted backups: the recipients (`age1...`), so that a restore can say which
    /// identity it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Encrypted backups: the source command and every shard's plaintext SHA-256, as one
    /// ASCII-armored age file to `recipients` ([`Manifest::seal`]). In the clear, `source` is
    /// then empty and no shard has a `plain_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// Erasure-coded backups: the code and the providers the pieces were placed on
    /// ([`crate::erasure::placement`]); absent: every provider holds every shard whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureRecord>,
    // Format 2's `checksum` is not a field: [`Manifest::to_json`] adds it and
    // [`Manifest::from_json`] checks and drops it.
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub backup_id: String,
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: u64,
    /// Where the shard starts in the stream (plaintext bytes).
    pub offset: u64,
    /// The stored object's length: the plaintext's unless the backup is compressed or
    /// encrypted.
    pub length: u64,
    /// SHA-256 of the stored object.
    pub sha256: String,
    /// Format 2: MD5 of the stored object, which many backends report in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Format 2: SHA-1 of the stored object (B2, Drive, ... report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// Compressed or encrypted backups: the plaintext's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_length: Option<u64>,
    /// Compressed or encrypted backups: the plaintext's SHA-256. An encrypted backup keeps it in
    /// its sealed part, never in the clear; it is here once [`Manifest::unseal`] opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_sha256: Option<String>,
    /// Erasure-coded backups: the shard's `k + m` pieces, data first, each one object of
    /// [`crate::erasure::Scheme::piece_len`] bytes. `length` and `sha256` above are then the
    /// whole stored shard's (checked after decoding) and no object has `md5`/`sha1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceRecord>,
}

/// How an erasure-coded backup was cut and placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRecord {
    /// Data pieces per shard.
    pub k: usize,
    /// Parity pieces per shard.
    pub m: usize,
    /// The dataset's providers at backup time, in the order placement counts them: piece `p`
    /// (0-based) of shard `s` went to `providers[(s + p) % providers.len()]`.
    pub providers: Vec<String>,
    /// Raised by each `sync --migrate` that put another provider in one slot of `providers`
    /// (absent: 0). Of two manifests that differ only in placement and both agree with the
    /// listings, the one with the higher revision is trusted: the other predates a migration.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ErasureRecord {
    pub fn scheme(&self) -> crate::erasure::Scheme {
        crate::erasure::Scheme {
            k: self.k,
            m: self.m,
        }
    }

    /// The provider that should hold piece `piece` (0-based) of shard `shard`.
    pub fn holder(&self, shard: u64, piece: usize) -> &str {
        &self.providers[crate::erasure::placement(shard, piece, self.providers.len())]
    }

    /// The piece (0-based) of shard `shard` that `provider` should hold, if any: a provider
    /// not in the list, or one of more than `k + m`, holds none of some shards.
    pub fn piece_on(&self, shard: u64, provider: &str) -> Option<usize> {
        let slot = self.providers.iter().position(|p| p == provider)?;
        let piece = crate::erasure::piece_at(shard, slot, self.providers.len());
        (piece < self.k + self.m).then_some(piece)
    }
}

/// One piece of an erasure-coded shard, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRecord {
    pub length: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
}

impl ShardRecord {
    /// The object's name in a backup stored with `encoding`.
    pub fn name(&self, encoding: Encoding) -> String {
        layout::shard_object(self.index, self.offset, encoding)
    }

    /// The shard's plaintext length (what it adds to the stream).
    pub fn plain_len(&self) -> u64 {
        self.plain_length.unwrap_or(self.length)
    }

    /// The plaintext's SHA-256, when known: the object's own for an unencoded backup.
    pub fn plain_sha(&self, encoding: Encoding) -> Option<&str> {
        match (&self.plain_sha256, encoding == Encoding::default()) {
            (Some(p), _) => Some(p),
            (None, true) => Some(&self.sha256),
            (None, false) => None,
        }
    }
}

/// What [`Manifest::seal`] hides: the source command and the plaintext hashes.
#[derive(Serialize, Deserialize)]
struct Sealed {
    source: String,
    plain_sha256: Vec<String>,
}

impl Manifest {
    pub fn id(&self) -> Option<BackupId> {
        BackupId::parse(&self.backup_id)
    }

    /// The object name of `shard` in this backup (of the whole shard: an erasure-coded one is
    /// stored as [`Manifest::piece_object`]s).
    pub fn object(&self, shard: &ShardRecord) -> String {
        shard.name(self.encoding)
    }

    /// The object name of piece `piece` (0-based) of `shard` in an erasure-coded backup.
    pub fn piece_object(&self, shard: &ShardRecord, piece: usize) -> String {
        let total = self.erasure.as_ref().map_or(0, |e| e.k + e.m);
        layout::piece_object(&self.object(shard), piece, total)
    }

    /// What `sync --migrate from --to to` writes for an erasure-coded backup: `to` takes
    /// `from`'s slot in the placement, so it holds exactly the pieces `from` held, and the
    /// revision is raised so this manifest wins over copies written before the migration.
    /// `None` when the backup is not erasure-coded or places no piece on `from`.
    pub fn relocated(&self, from: &str, to: &str) -> Option<Manifest> {
        let e = self.erasure.as_ref()?;
        let slot = e.providers.iter().position(|p| p == from)?;
        let mut out = self.clone();
        let moved = out.erasure.as_mut().expect("checked above");
        moved.providers[slot] = to.to_string();
        moved.revision += 1;
        Some(out)
    }

    /// The objects that store `shard`, with their lengths: the stored shard itself, or its
    /// `k + m` pieces in piece order.
    pub fn objects_of(&self, shard: &ShardRecord) -> Vec<(String, u64)> {
        match &self.erasure {
            None => vec![(self.object(shard), shard.length)],
            Some(_) => (0..shard.pieces.len())
                .map(|p| (self.piece_object(shard, p), shard.pieces[p].length))
                .collect(),
        }
    }

    /// The code of an erasure-coded backup.
    pub fn scheme(&self) -> Option<crate::erasure::Scheme> {
        self.erasure.as_ref().map(ErasureRecord::scheme)
    }

    /// Whether the sealed part still has to be opened ([`Manifest::unseal`]) before the
    /// plaintext hashes and the source are known.
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some() && self.shards.iter().any(|s| s.plain_sha256.is_none())
    }

    /// Encrypts the source and the plaintext hashes into `sealed`, to `recipients`, and takes
    /// them out of the clear.
    pub fn seal(mut self, recipients: &crate::codec::Recipients) -> std::io::Result<Manifest> {
        let secrets = Sealed {
            source: std::mem::take(&mut self.source),
            plain_sha256: self
                .shards
                .iter_mut()
                .map(|s| s.plain_sha256.take().unwrap_or_default())
                .collect(),
        };
        let json = serde_json::to_vec(&secrets).expect("sealed part always serializes");
        self.sealed = Some(recipients.encrypt_armored(&json)?);
        self.recipients = recipients.to_strings();
        Ok(self)
    }

    /// Opens the sealed part with `ids`: the source and every shard's plaintext SHA-256 are
    /// known again. A manifest without one is left as it is.
    pub fn unseal(
        &mut self,
        ids: &crate::codec::Identities,
    ) -> Result<(), crate::codec::DecodeError> {
        use crate::codec::DecodeError;
        let Some(text) = &self.sealed else {
            return Ok(());
        };
        let plain = ids.decrypt_armored(text.as_bytes())?;
        let secrets: Sealed = serde_json::from_slice(&plain)
            .map_err(|e| DecodeError::Damaged(format!("the sealed part does not parse: {e}")))?;
        if secrets.plain_sha256.len() != self.shards.len()
            || !secrets.plain_sha256.iter().all(|h| is_hex(h, 64))
        {
            return Err(DecodeError::Damaged(
                "the sealed part does not list one plaintext SHA-256 per shard".into(),
            ));
        }
        self.source = secrets.source;
        for (s, h) in self.shards.iter_mut().zip(secrets.plain_sha256) {
            s.plain_sha256 = Some(h);
        }
        Ok(())
    }

    /// What may be written to a provider: an encrypted backup's secrets only in its sealed part,
    /// even after [`Manifest::unseal`].
    fn in_the_clear(&self) -> std::borrow::Cow<'_, Manifest> {
        let secret =
            !self.source.is_empty() || self.shards.iter().any(|s| s.plain_sha256.is_some());
        if self.sealed.is_none() || !secret {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut clear = self.clone();
        clear.source.clear();
        clear.shards.iter_mut().for_each(|s| s.plain_sha256 = None);
        std::borrow::Cow::Owned(clear)
    }

    /// An encrypted backup keeps its secrets sealed; an unencoded one has no plaintext fields.
    fn check_encoding(&self) -> Result<(), String> {
        let plain_fields = self
            .shards
            .iter()
            .any(|s| s.plain_length.is_some() || s.plain_sha256.is_some());
        if self.encoding == Encoding::default() && (plain_fields || self.sealed.is_some()) {
            return Err(
                "manifest has plaintext fields but its shards are stored as they are".into(),
            );
        }
        if !self.encoding.is_encrypted() {
            return Ok(());
        }
        if self.sealed.is_none() {
            return Err("manifest of an encrypted backup has no sealed part".into());
        }
        if !self.source.is_empty() || self.shards.iter().any(|s| s.plain_sha256.is_some()) {
            return Err(
                "manifest of an encrypted backup shows its source or plaintext hashes in the clear"
                    .into(),
            );
        }
        Ok(())
    }

    /// An erasure-coded backup names a usable code and at least `k + m` distinct providers, and
    /// every shard has `k + m` pieces of the right length; a mirrored one has no pieces.
    fn check_erasure(&self) -> Result<(), String> {
        let Some(e) = &self.erasure else {
            return match self.shards.iter().position(|s| !s.pieces.is_empty()) {
                Some(i) => Err(format!(
                    "manifest shard {i} lists erasure-coded pieces but the backup names no code"
                )),
                None => Ok(()),
            };
        };
        let scheme: crate::erasure::Scheme = format!("{}+{}", e.k, e.m).parse()?;
        let distinct: std::collections::BTreeSet<&String> = e.providers.iter().collect();
        if e.providers.len() < scheme.total()
            || distinct.len() != e.providers.len()
            || e.providers.iter().any(|p| p.is_empty())
        {
            return Err(format!(
                "manifest of a {scheme} erasure-coded backup does not list {} distinct providers",
                scheme.total()
            ));
        }
        for (i, s) in self.shards.iter().enumerate() {
            let want = scheme.piece_len(s.length);
            let bad = s.pieces.len() != scheme.total()
                || s.pieces.iter().any(|p| {
                    p.length != want
                        || !is_hex(&p.sha256, 64)
                        || p.md5.as_ref().is_some_and(|h| !is_hex(h, 32))
                        || p.sha1.as_ref().is_some_and(|h| !is_hex(h, 40))
                });
            if bad {
                return Err(format!(
                    "manifest shard {i} does not list {} well-formed pieces of {want} bytes",
                    scheme.total()
                ));
            }
        }
        Ok(())
    }

    /// Shards numbered from 0 and back to back, each well-formed and nameable, adding up to
    /// `total_bytes`.
    fn check_shards(&self) -> Result<(), String> {
        let mut offset = 0u64;
        for (i, s) in self.shards.iter().enumerate() {
            if s.index != i as u64 || s.offset != offset {
                return Err(format!(
                    "manifest shard list is not contiguous at shard {i} (index {}, offset {}, expected offset {offset})",
                    s.index, s.offset
                ));
            }
            if s.plain_len() == 0
                || s.plain_len() > self.shard_size
                || s.length == 0
                || s.length > stored_bound(self.shard_size)
                || !is_hex(&s.sha256, 64)
                || s.plain_sha256.as_ref().is_some_and(|h| !is_hex(h, 64))
                || s.md5.as_ref().is_some_and(|h| !is_hex(h, 32))
                || s.sha1.as_ref().is_some_and(|h| !is_hex(h, 40))
            {
                return Err(format!(
                    "manifest shard {i} has an invalid length or checksum"
                ));
            }
            if layout::parse_shard_name(&s.name(self.encoding)) != Some((s.index, s.offset)) {
                return Err(format!(
                    "manifest shard {i} lies beyond the largest stream offsite can name (offset {})",
                    s.offset
                ));
            }
            // A hostile provider can pick lengths that add up to total_bytes modulo 2^64.
            offset = offset.checked_add(s.plain_len()).ok_or_else(|| {
                format!("manifest shard {i} ends past 2^64 bytes: its length is not believable")
            })?;
        }
        if offset != self.total_bytes {
            return Err(format!(
                "manifest shards add up to {offset} bytes but total_bytes is {}",
                self.total_bytes
            ));
        }
        Ok(())
    }
}

/// The largest stored object a shard of `shard_size` plaintext bytes can become: zstd's worst
/// case on incompressible data plus age's header and per-chunk tags, with room to spare.
pub fn stored_bound(shard_size: u64) -> u64 {
    shard_size
        .saturating_add(shard_size / 64)
        .saturating_add(1 << 20)
}

/// What two manifests say about the stream: equal when they describe the same backup with the
/// same shards, stored with the same encoding to the same recipients (their checksums,
/// `created` and `tool` may differ, and so may the sealed part: each sealing is a fresh age
/// file).
pub fn same_stream(a: &Manifest, b: &Manifest) -> bool {
    a.erasure == b.erasure && same_but_placement(a, b)
}

/// Whether `a` and `b` describe the same stream, cut by the same code, and differ at most in
/// where the pieces are placed (before and after a `sync --migrate`).
pub fn same_but_placement(a: &Manifest, b: &Manifest) -> bool {
    if std::ptr::eq(a, b) {
        return true; // providers that returned the same bytes share one manifest
    }
    let scheme = |m: &Manifest| m.erasure.as_ref().map(|e| e.scheme());
    let same_key = (a.backup_id == b.backup_id && a.kind == b.kind && a.parent == b.parent)
        && (a.snapshot == b.snapshot && a.total_bytes == b.total_bytes)
        && (a.encoding == b.encoding && a.recipients == b.recipients && scheme(a) == scheme(b));
    let same_shard = |x: &ShardRecord, y: &ShardRecord| {
        (x.index, x.offset, x.length, &x.sha256, x.plain_length)
            == (y.index, y.offset, y.length, &y.sha256, y.plain_length)
            && x.pieces.len() == y.pieces.len()
            && (x.pieces.iter().zip(&y.pieces))
                .all(|(p, q)| p.length == q.length && p.sha256 == q.sha256)
    };
    same_key
        && a.shards.len() == b.shards.len()
        && a.shards.iter().zip(&b.shards).all(|(x, y)| {
            same_shard(x, y)
                && (x.md5.is_none() || y.md5.is_none() || x.md5 == y.md5)
                && (x.sha1.is_none() || y.sha1.is_none() || x.sha1 == y.sha1)
        })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
pub(crate) fn sample(shards: &[&[u8]]) -> Manifest {
    let mut offset = 0;
    let mut recs = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        let d = crate::hashing::digests(s);
        recs.push(ShardRecord {
            index: i as u64,
            offset,
            length: s.len() as u64,
            sha256: d.sha256,
            md5: Some(d.md5),
            sha1: Some(d.sha1),
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
        });
        offset += s.len() as u64;
    }
    Manifest {
        format: FORMAT_VERSION,
        host: "h".into(),
        dataset: "d".into(),
        backup_id: "20261121T020000Z-full".into(),
        kind: BackupKind::Full,
        source_kind: "command".into(),
        source: "cat".into(),
        snapshot: None,
        parent: None,
        created: "2026-11-21T02:00:00Z".into(),
        shard_size: shards.iter().map(|s| s.len() as u64).max().unwrap_or(1),
        total_bytes: offset,
        shards: recs,
        tool: "offsite test".into(),
        encoding: Encoding::default(),
        recipients: Vec::new(),
        sealed: None,
        erasure: None,
    }
}

mod json;
#[cfg(test)]
use json::checksum_of;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
