//! Decodes an erasure-coded offsite backup without offsite: written from README.md ("Decoding
//! pieces without offsite") alone, using only the crates `reed-solomon-simd`, `serde_json` and
//! `sha2`, so it proves that description is enough. A test runs it on a real backup.
//!
//!     cargo run --release --example erasure-decode -- MANIFEST PIECES_DIR [OUT_DIR]
//!
//! `MANIFEST` is the backup's `manifest.json`; `PIECES_DIR` holds the piece objects of the
//! backup gathered from the providers (any k good pieces of each shard are enough). Without
//! `OUT_DIR` the stored shards are written to stdout one after the other (the stored stream);
//! with it, each stored shard becomes `OUT_DIR/<shard object name>`, ready for the usual
//! `age -d | zstd -dc` recovery loop. Every piece's length and SHA-256, and every rebuilt
//! shard's length and SHA-256, are checked against the manifest; a bad piece is skipped like
//! a missing one. Exit 1, naming the shard, when a shard has fewer than k good pieces.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What the manifest says about the code: `erasure.k`, `erasure.m`, and the object suffix.
struct Code {
    k: usize,
    m: usize,
    suffix: &'static str,
}

/// One shard of the manifest: its object name and the stored shard's length and SHA-256.
struct Shard {
    name: String,
    length: u64,
    sha256: String,
    pieces: Vec<(u64, String)>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(2..=3).contains(&args.len()) {
        eprintln!("usage: erasure-decode MANIFEST PIECES_DIR [OUT_DIR]");
        return ExitCode::from(2);
    }
    match run(
        Path::new(&args[0]),
        Path::new(&args[1]),
        args.get(2).map(PathBuf::from),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erasure-decode: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(manifest: &Path, pieces: &Path, out_dir: Option<PathBuf>) -> Result<(), String> {
    let text = std::fs::read(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| format!("manifest: {e}"))?;
    let code = code(&json)?;
    let shards = shards(&json, &code)?;
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for shard in &shards {
        let stored = decode_shard(&code, shard, pieces)?;
        match &out_dir {
            Some(d) => std::fs::write(d.join(&shard.name), &stored),
            None => stdout.write_all(&stored),
        }
        .map_err(|e| format!("writing shard {}: {e}", shard.name))?;
    }
    stdout.flush().map_err(|e| format!("stdout: {e}"))
}

/// `erasure.k`, `erasure.m`, and the suffix the manifest's encoding gives every shard object.
fn code(json: &Value) -> Result<Code, String> {
    let e = json
        .get("erasure")
        .ok_or("the manifest has no \"erasure\": not an erasure-coded backup")?;
    let num = |key: &str| {
        e.get(key)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or(format!("manifest: erasure.{key} is not a number"))
    };
    let compressed = json.get("compression").and_then(Value::as_str) == Some("zstd");
    let encrypted = json.get("encryption").and_then(Value::as_str) == Some("age");
    let suffix = match (compressed, encrypted) {
        (false, false) => "",
        (true, false) => ".zst",
        (false, true) => ".age",
        (true, true) => ".zst.age",
    };
    Ok(Code {
        k: num("k")?,
        m: num("m")?,
        suffix,
    })
}

/// Every shard of the manifest, in stream order, with its object name
/// `s<index, 10 digits>-b<offset, 16 digits><suffix>`.
fn shards(json: &Value, code: &Code) -> Result<Vec<Shard>, String> {
    let list = json
        .get("shards")
        .and_then(Value::as_array)
        .ok_or("manifest: no shards")?;
    let mut out = Vec::new();
    for s in list {
        let u = |key: &str| s.get(key).and_then(Value::as_u64).ok_or(key.to_string());
        let t = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let bad = |what: String| format!("manifest: a shard lacks {what}");
        let (index, offset, length) = (u("index"), u("offset"), u("length"));
        let (index, offset, length) = (
            index.map_err(bad)?,
            offset.map_err(bad)?,
            length.map_err(bad)?,
        );
        let pieces = s
            .get("pieces")
            .and_then(Value::as_array)
            .ok_or(format!("manifest: shard {index} has no pieces"))?
            .iter()
            .map(|p| Some((p.get("length")?.as_u64()?, t(p, "sha256")?)))
            .collect::<Option<Vec<_>>>()
            .ok_or(format!("manifest: shard {index} has a malformed piece"))?;
        if pieces.len() != code.k + code.m {
            return Err(format!("manifest: shard {index} does not list k+m pieces"));
        }
        out.push(Shard {
            name: format!("s{index:010}-b{offset:016}{}", code.suffix),
            length,
            sha256: t(s, "sha256").ok_or(format!("manifest: shard {index} has no sha256"))?,
            pieces,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The stored shard from the pieces in `dir` (`<shard>.p<i>of<k+m>`), checked.
fn decode_shard(code: &Code, shard: &Shard, dir: &Path) -> Result<Vec<u8>, String> {
    let n = code.k + code.m;
    let piece_len = piece_len(shard.length, code.k);
    let mut good: Vec<Option<Vec<u8>>> = vec![None; n];
    for (i, (length, sha)) in shard.pieces.iter().enumerate() {
        let name = format!("{}.p{}of{n}", shard.name, i + 1);
        let Ok(bytes) = std::fs::read(dir.join(&name)) else {
            continue;
        };
        if bytes.len() as u64 != *length || *length != piece_len || hex_sha256(&bytes) != *sha {
            eprintln!("erasure-decode: {name} is damaged (length or SHA-256 differs): skipped");
            continue;
        }
        good[i] = Some(bytes);
    }
    let have = good.iter().flatten().count();
    if have < code.k {
        return Err(format!(
            "shard {} has only {have} good pieces in {}, {} needed",
            shard.name,
            dir.display(),
            code.k
        ));
    }
    let stored = join(code, &good, shard.length)?;
    if hex_sha256(&stored) != shard.sha256 {
        return Err(format!("shard {} does not match its SHA-256", shard.name));
    }
    Ok(stored)
}

/// ceil(length / k), rounded up to an even number, at least 2.
fn piece_len(length: u64, k: usize) -> u64 {
    let per = length.div_ceil(k as u64).max(1);
    per + per % 2
}

/// Data pieces 1..=k, the missing ones restored by `reed_solomon_simd::decode` from the others
/// and the parity pieces, concatenated and cut to the shard's length (the zero padding dropped).
fn join(code: &Code, good: &[Option<Vec<u8>>], length: u64) -> Result<Vec<u8>, String> {
    let (data, parity) = good.split_at(code.k);
    let mut restored = Default::default();
    if data.iter().any(Option::is_none) {
        let originals = data
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_ref()?)));
        let recovery = parity
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_ref()?)));
        restored = reed_solomon_simd::decode(code.k, code.m, originals, recovery)
            .map_err(|e| format!("Reed-Solomon decoding failed: {e}"))?;
    }
    let mut out = Vec::new();
    for (i, piece) in data.iter().enumerate() {
        match piece.as_ref().or_else(|| restored.get(&i)) {
            Some(p) => out.extend_from_slice(p),
            None => return Err(format!("the decoder did not restore data piece {}", i + 1)),
        }
    }
    out.truncate(length as usize);
    Ok(out)
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
