//! Names on the remotes (INTERFACE.md, "Layout on every provider").
//!
//! ```text
//! <remote>/<host>/<dataset-key>/<backup-id>/manifest.json
//! <remote>/<host>/<dataset-key>/<backup-id>/s<index>-b<offset>
//! ```
//! Every function here is pure; the round trips are unit-tested.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

pub const MANIFEST: &str = "manifest.json";

/// Width of the zero-padded shard index: with shards of at least 1 MiB, 1 PiB is 2^30 shards.
const INDEX_WIDTH: usize = 10;
/// Width of the zero-padded byte offset: 1 PiB is 16 decimal digits.
const OFFSET_WIDTH: usize = 16;

/// Encodes a dataset name as one path segment: bytes outside `[A-Za-z0-9_.-]`, a leading dot and
/// `%` itself become `%XX`, so the encoding is reversible and never collides.
pub fn dataset_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`dataset_key`]; `None` for a segment that no dataset name encodes to.
pub fn dataset_name(key: &str) -> Option<String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = key.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    (dataset_key(&name) == key).then_some(name)
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
}

/// A backup's id: its UTC creation time, kind and a random suffix, e.g.
/// `20261121T020000Z-full-3fa9c2`. Ids sort in creation order (the time stamp comes first); the
/// suffix (6 hex digits) keeps two machines with the same `host` that back up a dataset of the
/// same name in the same second from sharing a folder. Ids written before the suffix existed
/// (`20261121T020000Z-full`) still parse and display unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId {
    stamp: String,
    pub kind: BackupKind,
    /// 6 lowercase hex digits; `None` for an id from before suffixes.
    suffix: Option<String>,
}

/// Hex digits in the random suffix of a new id.
const SUFFIX_LEN: usize = 6;

impl BackupId {
    /// A new id at `time` with a fresh random suffix.
    pub fn new(time: SystemTime, kind: BackupKind) -> Self {
        BackupId {
            stamp: utc_stamp(time),
            kind,
            suffix: Some(format!("{:06x}", fastrand::u32(..1 << 24))),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (stamp, rest) = s.split_once('-')?;
        let (kind, suffix) = match rest.split_once('-') {
            Some((kind, suffix)) => (kind, Some(suffix)),
            None => (rest, None),
        };
        let kind = match kind {
            "full" => BackupKind::Full,
            "incr" => BackupKind::Incremental,
            _ => return None,
        };
        let suffix_ok = suffix.is_none_or(|x| {
            x.len() == SUFFIX_LEN && x.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        let ok = suffix_ok
            && stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp[..8]
                .bytes()
                .chain(stamp[9..15].bytes())
                .all(|b| b.is_ascii_digit());
        ok.then(|| BackupId {
            stamp: stamp.to_string(),
            kind,
            suffix: suffix.map(str::to_string),
        })
    }

    /// A new id at `time`, or one second after `newest` if that is not later: ids never
    /// repeat, even for two backups started in the same second.
    pub fn new_after(time: SystemTime, kind: BackupKind, newest: Option<&BackupId>) -> Self {
        let id = BackupId::new(time, kind);
        match newest {
            Some(n) if n.stamp >= id.stamp => {
                BackupId::new(n.time() + std::time::Duration::from_secs(1), kind)
            }
            _ => id,
        }
    }

    /// When the backup was started.
    pub fn time(&self) -> SystemTime {
        let n = |r: std::ops::Range<usize>| self.stamp[r].parse::<i64>().unwrap_or(0);
        let days = days_from_civil(n(0..4), n(4..6) as u32, n(6..8) as u32);
        let secs = days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15);
        UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64)
    }

    /// The UTC time stamp part, `YYYYMMDDTHHMMSSZ`.
    pub fn stamp(&self) -> &str {
        &self.stamp
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incr",
        };
        write!(f, "{}-{kind}", self.stamp)?;
        match &self.suffix {
            Some(x) => write!(f, "-{x}"),
            None => Ok(()),
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for a point in time.
pub fn utc_stamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// RFC 3339 UTC, for manifests and JSON output.
pub fn rfc3339(time: SystemTime) -> String {
    let s = utc_stamp(time);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01, the inverse of `civil_from_days`.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How a backup's shards are stored: compressed (zstd, one frame), encrypted (age), both (in
/// that order) or neither. Recorded in the manifest (`"compression": "zstd"`,
/// `"encryption": "age"`, each absent when off) and in each object's name (`.zst`, `.age`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Encoding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encryption {
    Age,
}

impl Encoding {
    /// `""`, `.zst`, `.age` or `.zst.age`: the suffix of a stored shard's name.
    pub fn suffix(&self) -> &'static str {
        match (self.compression.is_some(), self.encryption.is_some()) {
            (false, false) => "",
            (true, false) => ".zst",
            (false, true) => ".age",
            (true, true) => ".zst.age",
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    fn from_suffix(suffix: &str) -> Option<Encoding> {
        let (c, e) = match suffix {
            "" => (None, None),
            ".zst" => (Some(Compression::Zstd), None),
            ".age" => (None, Some(Encryption::Age)),
            ".zst.age" => (Some(Compression::Zstd), Some(Encryption::Age)),
            _ => return None,
        };
        Some(Encoding {
            compression: c,
            encryption: e,
        })
    }
}

/// The object name of a shard: index and plaintext byte offset, zero-padded so that name order
/// is stream order, then the suffix of its encoding (`s0000000003-b0000000201326592.zst.age`).
pub fn shard_object(index: u64, offset: u64, encoding: Encoding) -> String {
    format!("{}{}", shard_name(index, offset), encoding.suffix())
}

/// The name of an unencoded shard (the stored format before round 2, and the stem of every
/// shard's name).
pub fn shard_name(index: u64, offset: u64) -> String {
    format!("s{index:0INDEX_WIDTH$}-b{offset:0OFFSET_WIDTH$}")
}

/// One piece of an erasure-coded shard: `number` (1-based; data pieces first, then parity) of
/// `of` (`k + m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PieceName {
    pub number: usize,
    pub of: usize,
}

/// The object name of piece `piece` (0-based) of `total` of a stored shard named `shard`:
/// `s0000000003-b0000000201326592.zst.age.p2of3`.
pub fn piece_object(shard: &str, piece: usize, total: usize) -> String {
    format!("{shard}.p{}of{total}", piece + 1)
}

/// What an object name of a backup's folder says: the shard, its encoding and, for a piece of
/// an erasure-coded shard, which piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectName {
    pub index: u64,
    pub offset: u64,
    pub encoding: Encoding,
    pub piece: Option<PieceName>,
}

/// Parses a shard's or a piece's object name.
pub fn parse_object(name: &str) -> Option<ObjectName> {
    let (shard, piece) = match split_piece(name) {
        Some((shard, piece)) => (shard, Some(piece)),
        None => (name, None),
    };
    let (index, offset, encoding) = parse_shard_object(shard)?;
    Some(ObjectName {
        index,
        offset,
        encoding,
        piece,
    })
}

/// `(shard name, piece)` of a name ending in `.p<number>of<total>` (canonical digits only).
fn split_piece(name: &str) -> Option<(&str, PieceName)> {
    let (shard, tail) = name.rsplit_once(".p")?;
    let (number, of) = tail.split_once("of")?;
    let num = |x: &str| {
        let ok = !x.is_empty() && !x.starts_with('0') && x.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| x.parse::<usize>().ok()).flatten()
    };
    let (number, of) = (num(number)?, num(of)?);
    (number <= of && of <= crate::erasure::MAX_PIECES).then_some((shard, PieceName { number, of }))
}

/// Parses a shard's or a piece's object name back into the shard's (index, offset), whatever
/// its encoding.
pub fn parse_shard_name(name: &str) -> Option<(u64, u64)> {
    parse_object(name).map(|o| (o.index, o.offset))
}

/// Parses a (whole) shard's object name back into (index, offset, encoding); `None` for a
/// piece.
pub fn parse_shard_object(name: &str) -> Option<(u64, u64, Encoding)> {
    let base_len = 1 + INDEX_WIDTH + 2 + OFFSET_WIDTH;
    let (base, suffix) = name.split_at_checked(base_len).unwrap_or((name, ""));
    let encoding = Encoding::from_suffix(suffix)?;
    let (index, offset) = parse_base(base)?;
    Some((index, offset, encoding))
}

/// `s<index>-b<offset>` without a suffix.
fn parse_base(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix('s')?;
    let (idx, off) = rest.split_once("-b")?;
    if idx.len() != INDEX_WIDTH || off.len() != OFFSET_WIDTH {
        return None;
    }
    // `u64::from_str` takes a leading '+': "s+000000001-..." is not the name of shard 1.
    if !idx.bytes().chain(off.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((idx.parse().ok()?, off.parse().ok()?))
}

/// `<host>/<dataset-key>`: the folder holding a dataset's backups.
pub fn dataset_dir(host: &str, dataset: &str) -> String {
    format!("{host}/{}", dataset_key(dataset))
}

/// `<host>/<dataset-key>/<backup-id>`.
pub fn backup_dir(host: &str, dataset: &str, id: &BackupId) -> String {
    format!("{}/{id}", dataset_dir(host, dataset))
}

/// Joins an rclone remote (`b2:bucket/x`, `:local:/mnt`, `/abs/path`) and a relative path.
pub fn join_remote(remote: &str, rel: &str) -> String {
    if rel.is_empty() {
        remote.to_string()
    } else if remote.ends_with(':') || remote.ends_with('/') {
        format!("{remote}{rel}")
    } else {
        format!("{remote}/{rel}")
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dataset_keys_round_trip_and_do_not_collide() {
        for name in [
            "media",
            "tank/media",
            "a%2Fb",
            ".hidden",
            "x y",
            "ünï",
            "a.b",
            "-",
        ] {
            let key = dataset_key(name);
            assert!(!key.contains('/'), "{key}");
            assert!(!key.starts_with('.'), "{key}");
            assert_eq!(dataset_name(&key).as_deref(), Some(name));
        }
        assert_ne!(dataset_key("a/b"), dataset_key("a%2Fb"));
        assert_eq!(dataset_key("media"), "media");
        assert_eq!(dataset_name("%2"), None);
        assert_eq!(
            dataset_name("a%2fb"),
            None,
            "only the canonical spelling decodes"
        );
    }

    #[test]
    fn backup_ids_sort_in_time_and_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_226_400); // 2026-11-21T02:00:00Z
        let id = BackupId::new(t, BackupKind::Full);
        let text = id.to_string();
        assert!(text.starts_with("20261121T020000Z-full-"), "{text}");
        assert_eq!(text.len(), "20261121T020000Z-full-".len() + SUFFIX_LEN);
        assert_eq!(BackupId::parse(&text), Some(id.clone()));
        assert_eq!(id.stamp(), "20261121T020000Z");
        assert_eq!(id.time(), t);
        let leap_id = BackupId::new(
            UNIX_EPOCH + Duration::from_secs(951_825_661),
            BackupKind::Full,
        );
        assert_eq!(
            leap_id.time(),
            UNIX_EPOCH + Duration::from_secs(951_825_661)
        );
        let later = BackupId::new(t + Duration::from_secs(1), BackupKind::Incremental);
        assert!(id < later);
        assert!(id.to_string() < later.to_string());
        assert_eq!(BackupId::parse("20261121T020000Z-weird"), None);
        assert_eq!(BackupId::parse("manifest.json"), None);
        assert_eq!(rfc3339(t), "2026-11-21T02:00:00Z");
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&utc_stamp(leap)[..8], "20000229");
    }

    #[test]
    fn ids_without_a_suffix_from_round_1_still_parse_and_sort() {
        let old = BackupId::parse("20261121T020000Z-full").unwrap();
        assert_eq!(old.to_string(), "20261121T020000Z-full");
        assert_eq!(old.kind, BackupKind::Full);
        let new = BackupId::parse("20261121T020001Z-incr-0a1b2c").unwrap();
        assert_eq!(new.to_string(), "20261121T020001Z-incr-0a1b2c");
        assert_eq!(new.kind, BackupKind::Incremental);
        assert!(old < new && old.to_string() < new.to_string());
        for bad in [
            "20261121T020000Z-full-",
            "20261121T020000Z-full-3FA9C2",
            "20261121T020000Z-full-3fa9c",
            "20261121T020000Z-full-3fa9c2a",
            "20261121T020000Z-full-3fa9cg",
            "20261121T020000Z-full-3fa9c2-x",
        ] {
            assert_eq!(BackupId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_made_in_the_same_second_differ() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_226_400);
        let ids: std::collections::BTreeSet<String> = (0..64)
            .map(|_| BackupId::new(t, BackupKind::Full).to_string())
            .collect();
        // 64 draws from 2^24 suffixes: a repeat has odds of about 1 in 8,000.
        assert!(ids.len() >= 63, "{ids:?}");
    }

    #[test]
    fn ids_never_repeat() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_226_400);
        let first = BackupId::new(t, BackupKind::Full);
        let second = BackupId::new_after(
            t + Duration::from_millis(700),
            BackupKind::Full,
            Some(&first),
        );
        assert!(second > first);
        assert_eq!(second.stamp(), "20261121T020001Z");
        assert_eq!(
            BackupId::new_after(t, BackupKind::Full, None).stamp(),
            first.stamp()
        );
    }

    #[test]
    fn shard_names_sort_in_stream_order_up_to_a_pebibyte() {
        let max_index = (1u64 << 50) / (1 << 20);
        let names = [
            shard_name(0, 0),
            shard_name(9, 9 << 20),
            shard_name(10, 10 << 20),
            shard_name(max_index - 1, (1 << 50) - (1 << 20)),
        ];
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert_eq!(names[0], "s0000000000-b0000000000000000");
        assert_eq!(parse_shard_name(&names[2]), Some((10, 10 << 20)));
        assert_eq!(parse_shard_name("s1-b2"), None);
        assert_eq!(parse_shard_name(MANIFEST), None);
    }

    #[test]
    fn piece_names_round_trip() {
        let shard = shard_object(3, 3 << 26, Encoding::default());
        let name = piece_object(&shard, 1, 3);
        assert_eq!(name, "s0000000003-b0000000201326592.p2of3");
        let parsed = parse_object(&name).unwrap();
        assert_eq!((parsed.index, parsed.offset), (3, 3 << 26));
        assert_eq!(parsed.piece, Some(PieceName { number: 2, of: 3 }));
        assert_eq!(parse_shard_name(&name), Some((3, 3 << 26)));
        assert_eq!(parse_shard_object(&name), None);
        assert_eq!(parse_object(&shard).unwrap().piece, None);
        let enc = Encoding {
            compression: Some(Compression::Zstd),
            encryption: Some(Encryption::Age),
        };
        let parsed = parse_object(&piece_object(&shard_object(0, 0, enc), 5, 6)).unwrap();
        assert_eq!((parsed.encoding, parsed.piece.unwrap().number), (enc, 6));
        for bad in [
            ".p0of3", ".p4of3", ".p01of3", ".p1of", ".pof3", ".p1of65", ".p+1of3",
        ] {
            assert_eq!(parse_object(&format!("{shard}{bad}")), None, "{bad}");
        }
    }

    #[test]
    fn remote_join() {
        assert_eq!(join_remote("b2:bucket/x", "h/d"), "b2:bucket/x/h/d");
        assert_eq!(join_remote("b2:", "h/d"), "b2:h/d");
        assert_eq!(join_remote(":local:/mnt/usb", "h"), ":local:/mnt/usb/h");
        assert_eq!(join_remote("/srv/offsite", "h"), "/srv/offsite/h");
    }
}
