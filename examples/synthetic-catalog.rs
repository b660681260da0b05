//! A synthetic catalog for `scripts/bench-scale.sh`: one full backup of SHARDS shards of 64 MiB
//! (160,000 is a 10 TiB stream) of dataset DATASET on host HOST, as a provider would show it.
//! Nothing of the stream exists: the hashes are made up, and only the manifest and the
//! listings are written, so that a mock rclone can serve them.
//!
//!     cargo run --release --example synthetic-catalog OUT SHARDS HOST DATASET
//!
//! Writes into OUT:
//! - `BACKUP_ID/manifest.json`: a valid format-2 manifest, written by `offsite::manifest`
//!   itself (so it cannot drift from the format), with MD5 and SHA-1 per shard;
//! - `host.json`, `dataset.json`: what `rclone lsjson -R --files-only` prints for the host's
//!   folder and for the dataset's folder (the shards and the manifest);
//! - `host-hashed.json`, `dataset-hashed.json`: the same with `--hash` (MD5 and SHA-1, as S3
//!   or B2 list them), matching the manifest, so nothing looks corrupt.
//!
//! Prints the backup id on stdout.

use offsite::layout::{self, BackupId, BackupKind, Encoding};
use offsite::manifest::{Manifest, ShardRecord, FORMAT_VERSION};
use std::io::{BufWriter, Write};
use std::path::Path;

const SHARD: u64 = 64 << 20;
const BACKUP_ID: &str = "20260101T020000Z-full";

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, shards, host, dataset] = &args[..] else {
        eprintln!("usage: synthetic-catalog OUT SHARDS HOST DATASET");
        std::process::exit(2);
    };
    let shards: u64 = shards.parse().expect("SHARDS is a number");
    let out = Path::new(out);
    let manifest = manifest(host, dataset, shards);
    let dir = out.join(BACKUP_ID);
    std::fs::create_dir_all(&dir)?;
    let mut f = BufWriter::new(std::fs::File::create(dir.join(layout::MANIFEST))?);
    f.write_all(&manifest.to_json())?;
    f.flush()?;
    let manifest_len = std::fs::metadata(dir.join(layout::MANIFEST))?.len();
    let key = layout::dataset_key(dataset);
    for hashed in [false, true] {
        let suffix = if hashed { "-hashed" } else { "" };
        let host_prefix = format!("{key}/{BACKUP_ID}/");
        let file = out.join(format!("host{suffix}.json"));
        listing(&file, &manifest, manifest_len, &host_prefix, hashed)?;
        let file = out.join(format!("dataset{suffix}.json"));
        listing(
            &file,
            &manifest,
            manifest_len,
            &format!("{BACKUP_ID}/"),
            hashed,
        )?;
    }
    println!("{BACKUP_ID}");
    Ok(())
}

/// A full backup of `shards` shards of [`SHARD`] bytes, stored as they are, with made-up but
/// well-formed hashes (a deterministic generator: the same catalog on every run).
fn manifest(host: &str, dataset: &str, shards: u64) -> Manifest {
    let mut rng = fastrand::Rng::with_seed(15);
    let mut hex = |len: usize| -> String {
        (0..len)
            .map(|_| char::from_digit(rng.u32(..16), 16).expect("below 16"))
            .collect()
    };
    let records = (0..shards)
        .map(|i| ShardRecord {
            index: i,
            offset: i * SHARD,
            length: SHARD,
            sha256: hex(64),
            md5: Some(hex(32)),
            sha1: Some(hex(40)),
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
        })
        .collect();
    let id = BackupId::parse(BACKUP_ID).expect("a valid id");
    Manifest {
        format: FORMAT_VERSION,
        host: host.to_string(),
        dataset: dataset.to_string(),
        backup_id: id.to_string(),
        kind: BackupKind::Full,
        source_kind: "command".into(),
        source: "cat /dev/null".into(),
        snapshot: None,
        parent: None,
        created: "2026-01-01T02:00:00Z".into(),
        shard_size: SHARD,
        total_bytes: shards * SHARD,
        shards: records,
        tool: "offsite synthetic-catalog".into(),
        encoding: Encoding::default(),
        recipients: Vec::new(),
        sealed: None,
        erasure: None,
    }
}

/// `rclone lsjson -R --files-only --no-mimetype --no-modtime [--hash]` of a folder holding the
/// backup, its paths starting with `prefix`, one entry per line as rclone prints them.
fn listing(
    file: &Path,
    m: &Manifest,
    manifest_len: u64,
    prefix: &str,
    hashed: bool,
) -> std::io::Result<()> {
    let mut f = BufWriter::new(std::fs::File::create(file)?);
    writeln!(f, "[")?;
    for s in &m.shards {
        let name = m.object(s);
        let hashes = match hashed {
            true => format!(
                ",\"Hashes\":{{\"md5\":\"{}\",\"sha1\":\"{}\"}}",
                s.md5.as_deref().unwrap_or_default(),
                s.sha1.as_deref().unwrap_or_default()
            ),
            false => String::new(),
        };
        writeln!(
            f,
            "{{\"Path\":\"{prefix}{name}\",\"Name\":\"{name}\",\"Size\":{},\"IsDir\":false{hashes}}},",
            s.length
        )?;
    }
    let name = layout::MANIFEST;
    writeln!(
        f,
        "{{\"Path\":\"{prefix}{name}\",\"Name\":\"{name}\",\"Size\":{manifest_len},\"IsDir\":false}}"
    )?;
    writeln!(f, "]")?;
    f.flush()
}
