//! Local state of an unfinished backup, so that a re-run resumes it: the same backup id, the
//! same snapshot, and the SHA-256 of every shard already read from the source.
//!
//! ```text
//! STATE_DIR/<host>/<dataset-key>/unfinished.json   what the backup is (written atomically)
//! STATE_DIR/<host>/<dataset-key>/journal           one line per hashed shard: "<crc32> <json>"
//! ```
//! The journal is append-only; each line carries a CRC-32 of its JSON so that a line torn by a
//! crash is recognised and ignored (its shard is simply uploaded again). The providers'
//! listings, not this state, say which shards are in place; the journal only says what the
//! source's bytes were, so a re-sent stream can be checked against them.
//!
//! A journal line is the shard's whole record: the stored object's length and hashes and,
//! for a compressed or encrypted backup, the plaintext's length and SHA-256 (this state is
//! local, so the plaintext hash is never sent anywhere). A later line for the same shard wins:
//! a resume that had to store a shard afresh records it again. `unfinished.json` records how
//! the shards are stored (`encoding`, and the recipients of an encrypted backup), so a resumed
//! backup keeps the encoding it started with; state files written before that field existed
//! load as plaintext backups, which is what they were.

use crate::layout::{dataset_key, BackupId, Encoding};
use crate::manifest::{ParentRef, ShardRecord};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unfinished {
    pub backup_id: String,
    pub snapshot: Option<String>,
    pub parent: Option<ParentRef>,
    pub shard_size: u64,
    pub started: String,
    /// The backup was written (manifest included) but some provider missed shards; the next
    /// run resumes it once to fill those gaps from the re-read source, then leaves the rest to
    /// `offsite sync`, so a provider that stays down cannot hold up the next backups.
    #[serde(default)]
    pub gaps_retry: bool,
    /// How the backup's shards are stored (absent in older state files: as plaintext).
    #[serde(default)]
    pub encoding: Encoding,
    /// An encrypted backup's recipients (`age1...`): a resume encrypts to the same ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// An erasure-coded backup's code and placement: a resume keeps both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure: Option<crate::manifest::ErasureRecord>,
    /// The size of the dataset's newest backup when this one started: what a command's
    /// stream is expected to be, for progress (a resume keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_bytes: Option<u64>,
}

impl Unfinished {
    pub fn id(&self) -> Option<BackupId> {
        BackupId::parse(&self.backup_id)
    }
}

/// The state folder of one dataset.
pub struct DatasetState {
    dir: PathBuf,
}

impl DatasetState {
    pub fn new(state_dir: &Path, host: &str, dataset: &str) -> Self {
        DatasetState {
            dir: state_dir.join(host).join(dataset_key(dataset)),
        }
    }

    fn unfinished_path(&self) -> PathBuf {
        self.dir.join("unfinished.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("journal")
    }

    /// Whether a run left an unfinished backup (its file may be damaged).
    pub fn exists(&self) -> bool {
        self.unfinished_path().exists()
    }

    /// The unfinished backup and the shard records journaled for it, if there is one.
    pub fn load(&self) -> Result<Option<(Unfinished, BTreeMap<u64, ShardRecord>)>> {
        let path = self.unfinished_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let u: Unfinished = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is damaged; delete it (or run with --restart) to start afresh",
                path.display()
            )
        })?;
        let journal = std::fs::read_to_string(self.journal_path()).unwrap_or_default();
        let mut records = BTreeMap::new();
        for line in journal.lines() {
            match parse_line(line) {
                // A later line for the same shard replaces the earlier one.
                Some(r) => {
                    records.insert(r.index, r);
                }
                None => tracing::debug!(
                    "ignoring a torn journal line in {}",
                    self.journal_path().display()
                ),
            }
        }
        // Records are appended as hashes complete, which can be out of order; only the
        // contiguous prefix is trusted, the rest is simply read and uploaded again.
        let prefix = records
            .keys()
            .enumerate()
            .take_while(|(i, k)| *i as u64 == **k)
            .count();
        let records = records.into_iter().take(prefix).collect();
        Ok(Some((u, records)))
    }

    /// Records a new unfinished backup (replacing any other) and opens an empty journal.
    pub fn begin(&self, u: &Unfinished) -> Result<Journal> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create state dir {}", self.dir.display()))?;
        let journal = File::create(self.journal_path())
            .with_context(|| format!("cannot create {}", self.journal_path().display()))?;
        let tmp = self.dir.join("unfinished.json.tmp");
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(u)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.unfinished_path())?;
        Ok(Journal {
            file: Mutex::new(journal),
        })
    }

    /// Rewrites `unfinished.json` (atomically), keeping the journal.
    pub fn update(&self, u: &Unfinished) -> Result<()> {
        let tmp = self.dir.join("unfinished.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(u)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, self.unfinished_path())?;
        Ok(())
    }

    /// Opens the journal of the recorded unfinished backup for appending.
    /// A line torn by a crash is closed first, so new records start on a line of their own.
    pub fn reopen(&self) -> Result<Journal> {
        let path = self.journal_path();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let torn = std::fs::read(&path)
            .map(|b| b.last().is_some_and(|&c| c != b'\n'))
            .unwrap_or(false);
        if torn {
            file.write_all(b"\n")?;
        }
        Ok(Journal {
            file: Mutex::new(file),
        })
    }

    /// Forgets the unfinished backup (it completed, or the user asked to start afresh).
    pub fn clear(&self) -> Result<()> {
        for p in [self.unfinished_path(), self.journal_path()] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Appends shard records; shared by the upload tasks.
pub struct Journal {
    file: Mutex<File>,
}

impl Journal {
    pub fn record(&self, r: &ShardRecord) -> std::io::Result<()> {
        let json = serde_json::to_string(r).expect("a shard record always serializes");
        let line = format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()));
        self.file.lock().unwrap().write_all(line.as_bytes())
    }
}

fn parse_line(line: &str) -> Option<ShardRecord> {
    let (crc, json) = line.split_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(json.as_bytes()) {
        return None;
    }
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> ShardRecord {
        ShardRecord {
            index: i,
            offset: i * 10,
            length: 10,
            sha256: "a".repeat(64),
            md5: None,
            sha1: None,
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
        }
    }

    #[test]
    fn journal_survives_a_torn_last_line_and_clear_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let st = DatasetState::new(dir.path(), "h", "tank/x");
        assert!(st.load().unwrap().is_none());
        let u = Unfinished {
            backup_id: "20261121T020000Z-full".into(),
            snapshot: Some("tank/x@offsite-20261121T020000Z".into()),
            parent: None,
            shard_size: 10,
            started: "2026-11-21T02:00:00Z".into(),
            gaps_retry: false,
            encoding: Encoding::default(),
            recipients: Vec::new(),
            erasure: None,
            previous_bytes: None,
        };
        let j = st.begin(&u).unwrap();
        j.record(&rec(0)).unwrap();
        j.record(&rec(1)).unwrap();
        drop(j);
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(st.journal_path())
            .unwrap();
        f.write_all(b"deadbeef {\"index\":2,\"off").unwrap();
        let (loaded, records) = st.load().unwrap().unwrap();
        assert_eq!(loaded, u);
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        let j = st.reopen().unwrap();
        j.record(&rec(3)).unwrap();
        // Only the contiguous prefix is trusted: 3 waits until 2 is recorded again.
        let (_, records) = st.load().unwrap().unwrap();
        assert_eq!(records.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        j.record(&rec(2)).unwrap();
        let (_, records) = st.load().unwrap().unwrap();
        assert_eq!(
            records.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        st.clear().unwrap();
        assert!(st.load().unwrap().is_none());
    }

    #[test]
    fn a_flipped_bit_is_not_trusted() {
        let json = serde_json::to_string(&rec(5)).unwrap();
        let good = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
        assert_eq!(parse_line(&good), Some(rec(5)));
        assert_eq!(
            parse_line(&good.replace("\"length\":10", "\"length\":11")),
            None
        );
    }

    #[test]
    fn a_later_record_of_a_shard_wins_and_keeps_its_plain_fields() {
        let dir = tempfile::tempdir().unwrap();
        let st = DatasetState::new(dir.path(), "h", "tank/x");
        let u = Unfinished {
            backup_id: "20261121T020000Z-full".into(),
            snapshot: None,
            parent: None,
            shard_size: 10,
            started: "2026-11-21T02:00:00Z".into(),
            gaps_retry: false,
            encoding: Encoding {
                compression: Some(crate::layout::Compression::Zstd),
                encryption: Some(crate::layout::Encryption::Age),
            },
            recipients: vec!["age1xyz".into()],
            erasure: None,
            previous_bytes: None,
        };
        let j = st.begin(&u).unwrap();
        let first = ShardRecord {
            plain_length: Some(10),
            plain_sha256: Some("b".repeat(64)),
            ..rec(0)
        };
        let again = ShardRecord {
            length: 12,
            sha256: "c".repeat(64),
            ..first.clone()
        };
        j.record(&first).unwrap();
        j.record(&again).unwrap();
        let (loaded, records) = st.load().unwrap().unwrap();
        assert_eq!(loaded, u);
        assert_eq!(records[&0], again);
    }

    #[test]
    fn a_state_file_from_before_encodings_loads_as_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let st = DatasetState::new(dir.path(), "h", "tank/x");
        std::fs::create_dir_all(&st.dir).unwrap();
        let old = r#"{"backup_id":"20261121T020000Z-full","snapshot":null,"parent":null,
            "shard_size":10,"started":"x","gaps_retry":false}"#;
        std::fs::write(st.unfinished_path(), old).unwrap();
        let (u, _) = st.load().unwrap().unwrap();
        assert_eq!(u.encoding, Encoding::default());
        assert!(u.recipients.is_empty());
    }
}
