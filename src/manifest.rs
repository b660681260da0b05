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

use crate::layout::{self, BackupId, BackupKind};
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
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
    /// Format 2: MD5 of the stored object, which many backends report in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Format 2: SHA-1 of the stored object (B2, Drive, ... report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
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

    /// The manifest as written to providers; format 2 and later with a fresh checksum.
    pub fn to_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a manifest always serializes");
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("checksum");
            if self.format >= 2 {
                let sum = checksum_of(map);
                map.insert("checksum".into(), sum.into());
            }
        }
        let mut v = serde_json::to_vec_pretty(&value).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks a manifest: known format, its checksum (format 2), a valid id,
    /// contiguous shards.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest does not parse: {e}"))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err("manifest does not parse: not a JSON object".into());
        };
        let format = check_format(&map)?;
        let stored = map.remove("checksum");
        if format != 1 {
            check_checksum(&map, stored.as_ref())?;
        }
        let m: Manifest = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("manifest does not parse: {e}"))?;
        if m.id().is_none() {
            return Err(format!(
                "manifest has an invalid backup_id {:?}",
                m.backup_id
            ));
        }
        m.check_shards()?;
        Ok(m)
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
            if s.length == 0
                || s.length > self.shard_size
                || !is_hex(&s.sha256, 64)
                || s.md5.as_ref().is_some_and(|h| !is_hex(h, 32))
                || s.sha1.as_ref().is_some_and(|h| !is_hex(h, 40))
            {
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
        if offset != self.total_bytes {
            return Err(format!(
                "manifest shards add up to {offset} bytes but total_bytes is {}",
                self.total_bytes
            ));
        }
        Ok(())
    }
}

/// The manifest's `format`, when this offsite reads it.
fn check_format(map: &serde_json::Map<String, serde_json::Value>) -> Result<u64, String> {
    match map.get("format").and_then(|f| f.as_u64()) {
        Some(f) if (OLDEST_FORMAT as u64..=FORMAT_VERSION as u64).contains(&f) => Ok(f),
        _ => Err(format!(
            "manifest format {} is not supported by this offsite (reads {OLDEST_FORMAT} to {FORMAT_VERSION}); upgrade offsite",
            map.get("format").map_or("(none)".to_string(), |f| f.to_string())
        )),
    }
}

/// A format-2 manifest's `checksum` (taken out of `map`) matches the rest of it.
fn check_checksum(
    map: &serde_json::Map<String, serde_json::Value>,
    stored: Option<&serde_json::Value>,
) -> Result<(), String> {
    match stored.and_then(|c| c.as_str()) {
        Some(c) if c == checksum_of(map) => Ok(()),
        Some(_) => Err("manifest is damaged: its checksum does not match its content".into()),
        None => Err("manifest is damaged: format 2 but no checksum".into()),
    }
}

/// What two manifests say about the stream: equal when they describe the same backup with the
/// same shards (their checksums, `created` and `tool` may differ).
pub fn same_stream(a: &Manifest, b: &Manifest) -> bool {
    let key = |m: &Manifest| {
        (
            m.backup_id.clone(),
            m.kind,
            m.parent.clone(),
            m.snapshot.clone(),
            m.total_bytes,
        )
    };
    let shard = |s: &ShardRecord| (s.index, s.offset, s.length, s.sha256.clone());
    key(a) == key(b)
        && a.shards.len() == b.shards.len()
        && a.shards.iter().zip(&b.shards).all(|(x, y)| {
            shard(x) == shard(y)
                && (x.md5.is_none() || y.md5.is_none() || x.md5 == y.md5)
                && (x.sha1.is_none() || y.sha1.is_none() || x.sha1 == y.sha1)
        })
}

/// The checksum of a manifest's JSON object without its `checksum` key: SHA-256 of its compact
/// form with every object's keys sorted.
fn checksum_of(map: &serde_json::Map<String, serde_json::Value>) -> String {
    let canonical = serde_json::Value::Object(sorted(map));
    let bytes = serde_json::to_vec(&canonical).expect("a JSON value always serializes");
    crate::hashing::sha256(&bytes)
}

/// `map` with its keys (and those of nested objects) in sorted order, whatever order the map
/// type keeps (serde_json's `preserve_order` feature may be on through another crate).
fn sorted(
    map: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    fn canon(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(sorted(m)),
            Value::Array(a) => Value::Array(a.iter().map(canon).collect()),
            other => other.clone(),
        }
    }
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| (k.clone(), canon(&map[k])))
        .collect()
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
    fn format_2_carries_a_checksum_that_catches_one_flipped_digit() {
        let m = sample(&[b"abcd", b"ef"]);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(text.contains("\"checksum\""), "{text}");
        let sha = &m.shards[1].sha256;
        let flipped_char = if sha.starts_with('0') { "1" } else { "0" };
        let flipped = text.replacen(sha.as_str(), &format!("{flipped_char}{}", &sha[1..]), 1);
        let err = Manifest::from_json(flipped.as_bytes()).unwrap_err();
        assert!(err.contains("checksum does not match"), "{err}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("checksum");
        let err = Manifest::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("no checksum"), "{err}");
    }

    #[test]
    fn checksum_is_canonical_and_survives_unknown_fields_and_layout() {
        let m = sample(&[b"abcd", b"ef"]);
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let map = v.as_object_mut().unwrap();
        map.remove("checksum");
        map.insert("zz_future".into(), serde_json::json!({"b": 1, "a": [2]}));
        let sum = checksum_of(map);
        map.insert("checksum".into(), sum.into());
        // Compact, differently ordered text of the same value still checks.
        let compact = serde_json::to_vec(&v).unwrap();
        assert_eq!(Manifest::from_json(&compact), Ok(m));
    }

    #[test]
    fn format_1_without_checksum_is_still_read() {
        let mut m = sample(&[b"abcd", b"ef"]);
        m.format = 1;
        for s in &mut m.shards {
            (s.md5, s.sha1) = (None, None);
        }
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(
            !text.contains("checksum") && !text.contains("md5"),
            "{text}"
        );
        assert_eq!(Manifest::from_json(text.as_bytes()), Ok(m));
        let err = Manifest::from_json(br#"{"format": 3}"#).unwrap_err();
        assert!(err.contains("upgrade offsite"), "{err}");
    }

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
