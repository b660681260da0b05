//! `manifest.json`: what a backup is, written to each provider after its shards.
//!
//! A manifest is the only thing a restore needs besides the shards. [`Manifest::from_json`]
//! checks that the shard list describes one contiguous stream, so later code can trust offsets
//! and lengths.

use crate::layout::{self, BackupId, BackupKind};
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub backup_id: String,
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub index: u64,
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

impl ShardRecord {
    pub fn name(&self) -> String {
        layout::shard_name(self.index, self.offset)
    }
}

impl Manifest {
    pub fn id(&self) -> Option<BackupId> {
        BackupId::parse(&self.backup_id)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest: known format, a valid id, contiguous shards.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest does not parse: {e}"))?;
        if m.format != FORMAT_VERSION {
            return Err(format!(
                "manifest format {} is not supported by this offsite (knows {FORMAT_VERSION}); upgrade offsite",
                m.format
            ));
        }
        if m.id().is_none() {
            return Err(format!(
                "manifest has an invalid backup_id {:?}",
                m.backup_id
            ));
        }
        let mut offset = 0u64;
        for (i, s) in m.shards.iter().enumerate() {
            if s.index != i as u64 || s.offset != offset {
                return Err(format!(
                    "manifest shard list is not contiguous at shard {i} (index {}, offset {}, expected offset {offset})",
                    s.index, s.offset
                ));
            }
            if s.length == 0 || s.length > m.shard_size || s.sha256.len() != 64 {
                return Err(format!(
                    "manifest shard {i} has an invalid length or checksum"
                ));
            }
            if layout::parse_shard_name(&s.name()) != Some((s.index, s.offset)) {
                return Err(format!(
                    "manifest shard {i} lies beyond the largest stream offsite can name (offset {})",
                    s.offset
                ));
            }
            // A hostile provider can pick lengths that add up to total_bytes modulo 2^64.
            offset = offset.checked_add(s.length).ok_or_else(|| {
                format!("manifest shard {i} ends past 2^64 bytes: its length is not believable")
            })?;
        }
        if offset != m.total_bytes {
            return Err(format!(
                "manifest shards add up to {offset} bytes but total_bytes is {}",
                m.total_bytes
            ));
        }
        Ok(m)
    }
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
    use sha2::{Digest, Sha256};
    let mut offset = 0;
    let mut recs = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        recs.push(ShardRecord {
            index: i as u64,
            offset,
            length: s.len() as u64,
            sha256: hex(&Sha256::digest(s)),
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
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = sample(&[b"abcd", b"ef"]);
        assert_eq!(Manifest::from_json(&m.to_json()), Ok(m));
    }

    #[test]
    fn rejects_gaps_and_bad_totals() {
        let mut m = sample(&[b"abcd", b"ef"]);
        m.shards[1].offset = 5;
        assert!(Manifest::from_json(&m.to_json())
            .unwrap_err()
            .contains("not contiguous"));
        let mut m = sample(&[b"abcd"]);
        m.total_bytes = 9;
        assert!(Manifest::from_json(&m.to_json())
            .unwrap_err()
            .contains("add up"));
        assert!(Manifest::from_json(b"{")
            .unwrap_err()
            .contains("does not parse"));
    }
}
