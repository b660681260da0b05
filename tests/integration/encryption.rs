//! Encryption and compression (issue 11), end to end through the real binary, real rclone
//! (local folders and the loopback WebDAV server) and the real `age` and `zstd` CLIs: nothing
//! readable reaches a provider, a restore with the identity gives the stream back, the stream
//! comes back without offsite too, and compression pays off on text without costing on random
//! bytes. Keys, verify --decrypt and keygen: `encryption_keys.rs`; damage, kill -9 and a
//! chain that turns encryption on: `encryption_faults.rs`.

use crate::harness::*;
use offsite::layout::{Compression, Encoding, Encryption, MANIFEST};
use offsite::manifest::Manifest;
use std::path::Path;

pub(crate) const DS: &str = "vault";

/// A line of the source stream that must never be found on a provider.
const MARKER: &str = "OFFSITE-PLAINTEXT-MARKER-7f3a";
/// A secret in the dataset's command (as a user would put a database password there).
const PASSWORD: &str = "Hunter2-Sup3r-S3cret";

/// An Env with `n` local providers, a new key (`offsite.key`, set as `identity_file` when
/// `identity_in_config`) and a command dataset `DS` that cats `src.bin`, which holds `data`.
pub(crate) fn encrypted_env(n: usize, data: &[u8], identity_in_config: bool) -> (Env, AgeKey) {
    let mut env = Env::new(n);
    let key = AgeKey::new(env.path(), "offsite.key");
    let src = env.path().join("src.bin");
    std::fs::write(&src, data).unwrap();
    env.command_dataset(DS, &format!("cat {}", src.display()));
    let identity = identity_in_config.then_some(key.path.as_path());
    env.encryption(&[&key.recipient], identity);
    (env, key)
}

/// Text that zstd shrinks well, then pseudo-random bytes that it cannot: 3.5 MiB, 4 shards.
pub(crate) fn mixed_stream(seed: u64) -> Vec<u8> {
    let mut data = marker_text(MARKER, 2 * MIB);
    data.extend(pseudo_random(seed, SOURCE_LEN - 2 * MIB));
    data
}

/// Restores the newest backup of `DS` to a new file with `args`: exit 0 and identical bytes.
pub(crate) fn assert_restores(env: &Env, args: &[&str], data: &[u8]) {
    let (out, file) = env.restore_to_file(DS, args);
    out.assert_exit(0);
    let got = std::fs::read(&file).unwrap();
    assert_same_bytes(&format!("restore {args:?}"), &got, data);
}

/// The manifest of the one backup of `DS` on `provider`: encrypted, compressed, sealed.
pub(crate) fn assert_encrypted_manifest(env: &Env, provider: &str, recipient: &str) -> Manifest {
    let m = env
        .remote(provider)
        .manifest(DS)
        .unwrap_or_else(|| panic!("{provider}: no manifest"));
    let want = Encoding {
        compression: Some(Compression::Zstd),
        encryption: Some(Encryption::Age),
    };
    assert_eq!(m.encoding, want, "{provider}");
    assert!(m.is_sealed(), "{provider}: the manifest is not sealed");
    assert_eq!(
        m.source, "",
        "{provider}: the source command is in the clear"
    );
    assert_eq!(m.recipients, vec![recipient.to_string()], "{provider}");
    m
}

#[test]
fn no_plaintext_and_no_command_text_on_any_provider() {
    let mut env = Env::new(2);
    let key = AgeKey::new(env.path(), "offsite.key");
    let dav = RcloneServer::webdav(&env.path().join("dav"));
    let src = env.path().join("src.txt");
    let data = marker_text(MARKER, SOURCE_LEN);
    std::fs::write(&src, &data).unwrap();
    let command = format!("cat {} && : --password={PASSWORD}", src.display());
    env.command_dataset(DS, &command)
        .provider("dav", &dav.remote())
        .encryption(&[&key.recipient], Some(&key.path));
    env.offsite(&["backup", "--once"]).assert_exit(0);

    let roots = [
        ("p1", env.remote("p1").root().to_path_buf()),
        ("p2", env.remote("p2").root().to_path_buf()),
        ("dav", dav.dir().to_path_buf()),
    ];
    let mut first: Option<Vec<(String, Vec<u8>)>> = None;
    for (p, root) in &roots {
        let files = files_under(root);
        let shards = files.iter().filter(|(f, _)| !f.ends_with(MANIFEST)).count();
        assert_eq!(shards, 4, "{p} holds {files:?}");
        for (f, bytes) in &files {
            for secret in [MARKER, PASSWORD] {
                let found = contains_bytes(bytes, secret.as_bytes());
                assert!(!found, "{secret:?} is readable in {}", f.display());
            }
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name == MANIFEST || name.ends_with(".zst.age"),
                "{p}: {name} is not a compressed and encrypted shard"
            );
        }
        // The same stored bytes went to every provider: a shard is encrypted once.
        let named = files
            .into_iter()
            .map(|(f, b)| (f.file_name().unwrap().to_string_lossy().into_owned(), b))
            .filter(|(n, _)| n != MANIFEST)
            .collect::<Vec<_>>();
        match &first {
            None => first = Some(named),
            Some(f) => assert!(*f == named, "{p} holds other stored bytes than p1"),
        }
    }
    assert_encrypted_manifest(&env, "p1", &key.recipient);
    assert_restores(&env, &[], &data);
}

#[test]
fn restore_is_identical_with_identity_file_and_with_the_identity_flag() {
    let data = mixed_stream(3);
    let (mut env, key) = encrypted_env(2, &data, true);
    let other = AgeKey::new(env.path(), "other.key");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_encrypted_manifest(&env, "p1", &key.recipient);

    assert_restores(&env, &[], &data);
    // --identity overrides a wrong identity_file...
    env.encryption(&[&key.recipient], Some(&other.path));
    assert_restores(&env, &["--identity", key.path_str()], &data);
    // ... and is all a restore needs when the config has none.
    env.encryption(&[&key.recipient], None);
    assert_restores(&env, &["--identity", key.path_str()], &data);
}

#[test]
fn the_stream_comes_back_with_the_age_and_zstd_command_line_tools() {
    let data = mixed_stream(4);
    let (env, key) = encrypted_env(2, &data, false);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let backup = env.remote("p1").only_backup(DS);
    let scratch = env.path().join("no-offsite");
    let stream = recover_with_age_and_zstd(&backup, &key.path, &scratch);
    assert_same_bytes("age -d | zstd -dc", &stream, &data);
}

/// Sum of the stored shard sizes of the one backup of `dataset` on `provider`.
fn stored_bytes(env: &Env, provider: &str, dataset: &str) -> u64 {
    let dir = env.remote(provider).only_backup(dataset);
    stored_shards(&dir).iter().map(|(_, len)| len).sum()
}

#[test]
fn text_is_stored_at_under_half_its_size_and_random_bytes_at_most_one_percent_more() {
    const LEN: usize = 4 * MIB;
    let mut env = Env::new(2);
    let key = AgeKey::new(env.path(), "offsite.key");
    let text = env.path().join("text.txt");
    std::fs::write(&text, marker_text(MARKER, LEN)).unwrap();
    let random = env.path().join("random.bin");
    write_pseudo_random(&random, 5, LEN);
    env.command_dataset("text", &format!("cat {}", text.display()))
        .command_dataset("random", &format!("cat {}", random.display()))
        .encryption(&[&key.recipient], Some(&key.path));
    env.offsite(&["backup", "--once"]).assert_exit(0);

    for p in ["p1", "p2"] {
        let t = stored_bytes(&env, p, "text");
        assert!(
            t < LEN as u64 / 2,
            "{p}: {LEN} bytes of text stored as {t} bytes"
        );
        let r = stored_bytes(&env, p, "random");
        assert!(
            r <= LEN as u64 * 101 / 100,
            "{p}: {LEN} random bytes stored as {r} bytes (more than 101%)"
        );
        for ds in ["text", "random"] {
            let m = env.remote(p).manifest(ds).expect("a manifest");
            assert_eq!(m.total_bytes, LEN as u64, "{p} {ds}: plaintext length");
        }
    }
}

/// Flips one byte in the middle of `path`.
pub(crate) fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}
