//! Encryption fixtures: age identities as `offsite keygen` writes them (plain, or protected by
//! a passphrase as `age -p` writes them), an `[encryption]` table for an [`Env`], readers of
//! every stored byte under a folder, and the recovery procedure with the real `age` and `zstd`
//! command-line tools.
//!
//! Identities are made with the `age` crate (the one offsite links), so a test needs no
//! terminal; the CLIs are only used where a test is about them.

use super::{remote, search_path, Env};
use offsite::layout::MANIFEST;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An age identity file and its recipient (`age1...`).
pub struct AgeKey {
    pub path: PathBuf,
    pub recipient: String,
}

impl AgeKey {
    /// A new identity in `dir/name`, mode 0600, as `offsite keygen` writes it.
    pub fn new(dir: &Path, name: &str) -> AgeKey {
        use age::secrecy::ExposeSecret;
        let (text, recipient) = offsite::codec::keys::generate("2026-01-01T00:00:00Z");
        let path = dir.join(name);
        write_0600(&path, text.expose_secret().as_bytes());
        AgeKey { path, recipient }
    }

    /// A new identity in `dir/name`, encrypted to `passphrase` as `age -p` does (binary age
    /// file, scrypt; a low work factor keeps the test fast on a busy machine).
    pub fn protected(dir: &Path, name: &str, passphrase: &str) -> AgeKey {
        use age::secrecy::{ExposeSecret, SecretString};
        let (text, recipient) = offsite::codec::keys::generate("2026-01-01T00:00:00Z");
        let mut r = age::scrypt::Recipient::new(SecretString::from(passphrase.to_string()));
        r.set_work_factor(10);
        let e = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
            .expect("an scrypt encryptor");
        let mut out = Vec::new();
        let mut w = e.wrap_output(&mut out).unwrap();
        w.write_all(text.expose_secret().as_bytes()).unwrap();
        w.finish().unwrap();
        let path = dir.join(name);
        write_0600(&path, &out);
        AgeKey { path, recipient }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("test paths are UTF-8")
    }
}

fn write_0600(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
}

impl Env {
    /// Sets `[encryption]`: `recipients` and, if given, `identity_file`.
    pub fn encryption(&mut self, recipients: &[&str], identity: Option<&Path>) -> &mut Self {
        let mut t = toml::Table::new();
        let list = recipients.iter().map(|r| toml::Value::from(*r)).collect();
        t.insert("recipients".into(), toml::Value::Array(list));
        if let Some(p) = identity {
            t.insert("identity_file".into(), p.display().to_string().into());
        }
        self.set("encryption", t)
    }

    /// `offsite restore DATASET --output restored-N.bin ARGS`: the run, and the file it was
    /// told to write (which must not exist before; N counts the calls per Env).
    pub fn restore_to_file(&self, dataset: &str, args: &[&str]) -> (std::process::Output, PathBuf) {
        let mut n = 0;
        let out = loop {
            let p = self.path().join(format!("restored-{n}.bin"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let mut all = vec!["restore", dataset, "--output", out.to_str().unwrap()];
        all.extend_from_slice(args);
        (self.offsite(&all), out)
    }
}

/// Every file under `dir` (recursively, sorted by path) with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    remote::walk(dir, &mut |p| {
        out.push((p.to_path_buf(), std::fs::read(p).unwrap()))
    });
    out
}

/// `needle` occurs somewhere in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The shard objects (not the manifest) of the backup folder `dir`: name and size.
pub fn stored_shards(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != MANIFEST)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, e.metadata().unwrap().len())
        })
        .collect();
    v.sort();
    v
}

/// The recovery procedure of README.md with the real CLIs, run in a copy of the backup folder
/// `backup_dir` (made under `scratch`): the loop, verbatim, writing the stream next to
/// the copy (inside it, `ls` would list the stream itself). Returns the rebuilt stream.
pub fn recover_with_age_and_zstd(backup_dir: &Path, key: &Path, scratch: &Path) -> Vec<u8> {
    let copy = scratch.join("recovery");
    std::fs::create_dir_all(&copy).unwrap();
    for (p, bytes) in files_under(backup_dir) {
        std::fs::write(copy.join(p.file_name().unwrap()), bytes).unwrap();
    }
    let script = format!(
        "for f in $(ls | grep '^s' | sort); do age -d -i {} \"$f\" | zstd -dc; done > ../stream",
        key.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&copy)
        .env("PATH", search_path())
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "the age | zstd recovery failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(scratch.join("stream")).unwrap()
}

/// `len` bytes of text: numbered lines, each holding `marker`.
pub fn marker_text(marker: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut n = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{n:08} {marker} the same line again\n").as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}
