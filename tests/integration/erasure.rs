//! Erasure coding (`erasure = "k+m"`, issue 12) end to end, through the real binary and real
//! rclone on local directories and loopback WebDAV: what each provider stores, restores with
//! providers gone, status/verify/sync after a provider lost everything or holds a flipped
//! byte, a provider down during the backup, rotation with more providers than pieces,
//! encryption, and the standalone decoder of README.md (`examples/erasure-decode.rs`).

use crate::harness::*;
use offsite::layout::MANIFEST;
use offsite::manifest::{ErasureRecord, Manifest, PieceRecord};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DS: &str = "media";

/// [`command_env`] with `n` providers, `erasure = scheme` and `compression = "none"`.
fn erasure_env(n: usize, scheme: &str, seed: u64) -> (Env, Vec<u8>) {
    let (mut env, data) = command_env(n, DS, seed);
    env.set("erasure", scheme).set("compression", "none");
    (env, data)
}

/// [`erasure_env`], backed up once (exit 0).
fn erasure_backed_up(n: usize, scheme: &str, seed: u64) -> (Env, Vec<u8>) {
    let (env, data) = erasure_env(n, scheme, seed);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_erasure_coded(&env, scheme);
    (env, data)
}

/// The one backup on p1 is erasure-coded with `scheme` (not mirrored).
fn assert_erasure_coded(env: &Env, scheme: &str) {
    let m = manifest(env, &["p1"]);
    let got = m.scheme().map(|s| s.to_string());
    assert_eq!(
        got.as_deref(),
        Some(scheme),
        "the backup is not {scheme}-coded"
    );
}

/// The manifest of the one backup, read from the first provider that holds it.
fn manifest(env: &Env, providers: &[&str]) -> Manifest {
    providers
        .iter()
        .find_map(|p| env.remote(p).manifest(DS))
        .expect("a manifest on some provider")
}

/// Total bytes of the piece objects (not the manifest) under `dir`.
fn piece_bytes(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter(|(p, _)| p.file_name().is_some_and(|n| n != MANIFEST))
        .map(|(_, b)| b.len() as u64)
        .sum()
}

/// `offsite restore` to a new file: exit 0 and the stream equal to `data`.
fn assert_restores(env: &Env, data: &[u8], what: &str) {
    let (out, file) = env.restore_to_file(DS, &[]);
    out.assert_exit(0);
    assert_same_bytes(what, &std::fs::read(&file).unwrap(), data);
    std::fs::remove_file(file).unwrap();
}

/// Moves provider folders away (as if the providers were gone) and back on drop, so a failing
/// test leaves the Env whole for the next step's cleanup.
struct Away(Vec<(PathBuf, PathBuf)>);

impl Away {
    fn providers(env: &Env, names: &[&str]) -> Away {
        let moves = names
            .iter()
            .map(|n| {
                let dir = env.remote(n).root().to_path_buf();
                let away = dir.with_extension("away");
                std::fs::rename(&dir, &away).unwrap();
                (dir, away)
            })
            .collect();
        Away(moves)
    }
}

impl Drop for Away {
    fn drop(&mut self) {
        for (dir, away) in &self.0 {
            let _ = std::fs::rename(away, dir);
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn output_text(out: &Output) -> String {
    format!("{}{}", out.stdout_text(), out.stderr_text())
}

// ---- what each provider stores ----

#[test]
fn two_plus_one_on_three_providers_stores_half_the_stream_on_each() {
    let mut env = Env::new(3);
    let src = env.path().join("src.bin");
    let data = write_pseudo_random(&src, 96, 96 * MIB);
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .set("shard_size", "8MiB")
        .set("erasure", "2+1")
        .set("compression", "none");
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_erasure_coded(&env, "2+1");
    let half = (48 * MIB) as f64;
    for p in ["p1", "p2", "p3"] {
        let held = piece_bytes(&env.remote(p).only_backup(DS)) as f64;
        assert!(
            (held - half).abs() <= 0.06 * half,
            "{p} stores {held} bytes, not 48 MiB +/- 6%"
        );
    }
    assert_restores(&env, &data, "restored 96 MiB");
}

#[test]
fn each_shard_is_k_plus_m_piece_objects_on_distinct_providers_as_the_manifest_says() {
    let (env, _) = erasure_backed_up(3, "2+1", 1);
    let m = manifest(&env, &["p1", "p2", "p3"]);
    let e = m.erasure.clone().expect("the manifest records the code");
    assert_eq!((e.k, e.m, e.providers.len()), (2, 1, 3));
    for s in &m.shards {
        assert_eq!(s.pieces.len(), 3);
        for (p, rec) in s.pieces.iter().enumerate() {
            let name = m.piece_object(s, p);
            assert!(name.ends_with(&format!(".p{}of3", p + 1)), "{name}");
            let holder = e.holder(s.index, p);
            let path = env.remote(holder).only_backup(DS).join(&name);
            let bytes =
                std::fs::read(&path).unwrap_or_else(|err| panic!("{name} not on {holder}: {err}"));
            assert_eq!(bytes.len() as u64, rec.length, "{name}");
            assert_eq!(sha256_hex(&bytes), rec.sha256, "{name}");
        }
    }
}

#[test]
fn fewer_enabled_providers_than_k_plus_m_is_a_configuration_error() {
    let (env, _) = erasure_env(2, "2+1", 2);
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(2);
    assert!(out.stderr_text().contains("2+1"), "{}", out.stderr_text());
    assert!(env.manifests_anywhere().is_empty());
}

// ---- providers gone, damaged, repaired ----

#[test]
fn restore_is_identical_with_each_provider_moved_away_in_turn() {
    let (env, data) = erasure_backed_up(3, "2+1", 3);
    for p in ["p1", "p2", "p3"] {
        let _away = Away::providers(&env, &[p]);
        assert_restores(&env, &data, &format!("restored without {p}"));
    }
}

#[test]
fn a_provider_that_lost_everything_is_degraded_then_rebuilt_by_sync() {
    let (env, data) = erasure_backed_up(3, "2+1", 4);
    std::fs::remove_dir_all(env.remote("p2").root()).unwrap();
    let status = env.offsite(&["status"]);
    status.assert_exit(3);
    assert!(
        output_text(&status).contains("p2"),
        "{}",
        output_text(&status)
    );
    env.offsite(&["sync"]).assert_exit(0);
    env.offsite(&["verify", "--deep"]).assert_exit(0);
    env.offsite(&["status"]).assert_exit(0);
    assert_restores(&env, &data, "restored after sync");
}

#[test]
fn a_flipped_byte_in_one_piece_is_named_by_deep_verify_and_restore_works_around_it() {
    let (env, data) = erasure_backed_up(3, "2+1", 5);
    let m = manifest(&env, &["p1"]);
    let shard = &m.shards[1];
    let holder = m
        .erasure
        .as_ref()
        .unwrap()
        .holder(shard.index, 0)
        .to_string();
    let name = m.piece_object(shard, 0);
    let path = env.remote(&holder).only_backup(DS).join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&path, bytes).unwrap();

    assert_restores(&env, &data, "restored around a corrupt piece");
    let out = env.offsite(&["verify", "--deep"]);
    out.assert_exit(3);
    let text = output_text(&out);
    let stem = m.object(shard);
    assert!(
        text.contains(&holder) && text.contains(&stem),
        "verify --deep does not name {holder} and {name}:\n{text}"
    );
}

#[test]
fn a_webdav_provider_down_during_backup_leaves_gaps_that_sync_fills() {
    let (mut env, data) = erasure_env(2, "2+1", 6);
    let mut server = RcloneServer::webdav(&env.path().join("dav"));
    env.provider("dav", &server.remote())
        .provider_set("dav", "flags", vec!["--low-level-retries", "1"])
        .set("retries", 2);
    server.stop();
    let out = env.offsite(&["backup", "--once"]);
    out.assert_exit(3);
    assert!(out.stderr_text().contains("dav"), "{}", out.stderr_text());
    assert_erasure_coded(&env, "2+1");
    assert_restores(&env, &data, "restored from p1 and p2");

    server.start();
    env.offsite(&["sync"]).assert_exit(0);
    env.offsite(&["status"]).assert_exit(0);
    assert!(RemoteDir::new(server.dir()).manifest(DS).is_some());
    let _away = Away::providers(&env, &["p1"]);
    assert_restores(&env, &data, "restored from p2 and dav after sync");
}

#[test]
fn two_of_three_down_with_two_plus_one_fails_and_writes_no_manifest() {
    let (mut env, _) = erasure_env(1, "2+1", 7);
    let mut servers = Vec::new();
    for name in ["dav1", "dav2"] {
        let mut s = RcloneServer::webdav(&env.path().join(name));
        env.provider(name, &s.remote()).provider_set(
            name,
            "flags",
            vec!["--low-level-retries", "1"],
        );
        s.stop();
        servers.push(s);
    }
    env.set("retries", 2);
    env.offsite(&["backup", "--once"]).assert_exit(1);
    assert!(env.manifests_anywhere().is_empty());
    for s in &servers {
        assert!(files_under(s.dir())
            .iter()
            .all(|(p, _)| p.file_name().is_none_or(|n| n != MANIFEST)));
    }
}

#[test]
fn migrate_moves_one_providers_pieces_and_a_manifest_left_behind_is_outvoted_then_rewritten() {
    let (mut env, data) = erasure_env(2, "2+1", 12);
    let mut server = RcloneServer::webdav(&env.path().join("dav"));
    env.provider("dav", &server.remote())
        .provider_set("dav", "flags", vec!["--low-level-retries", "1"])
        .set("retries", 2);
    env.offsite(&["backup", "--once"]).assert_exit(0);
    let p4 = env.path().join("remotes/p4");
    env.provider("p4", &p4.display().to_string())
        .provider_set("p4", "enabled", false);
    let p1_pieces = piece_bytes(&env.remote("p1").only_backup(DS));

    // dav is down during the migration: it keeps the manifest placing pieces on p1.
    server.stop();
    let out = env.offsite(&["sync", "--migrate", "p1", "--to", "p4", "--remove-source"]);
    assert_eq!(out.code(), 0, "{}", output_text(&out));
    assert!(
        files_under(env.remote("p1").root()).is_empty(),
        "p1 emptied"
    );
    assert_eq!(piece_bytes(&env.remote("p4").only_backup(DS)), p1_pieces);
    let moved = manifest(&env, &["p4"]).erasure.unwrap();
    assert!(moved.providers.contains(&"p4".to_string()) && moved.revision == 1);

    // The dataset now lives on p4, p2 and dav; dav's old manifest is outvoted, named by
    // status, and rewritten by sync.
    env.provider_set("p1", "enabled", false)
        .provider_set("p4", "enabled", true);
    server.start();
    let status = env.offsite(&["--json", "status"]);
    status.assert_exit(3);
    let text = status.stdout_text();
    assert!(text.contains("predates a `sync --migrate`"), "{text}");
    env.offsite(&["sync"]).assert_exit(0);
    env.offsite(&["status"]).assert_exit(0);
    let dav = RemoteDir::new(server.dir()).manifest(DS).unwrap();
    assert_eq!(dav.erasure.unwrap().revision, 1);
    let _away = Away::providers(&env, &["p2"]);
    assert_restores(&env, &data, "restored from p4 and dav");
}

// ---- wider codes and rotation ----

/// Every set of `lose` providers out of `names`, each as a list.
fn subsets<'a>(names: &[&'a str], lose: usize) -> Vec<Vec<&'a str>> {
    if lose == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for (i, first) in names.iter().enumerate() {
        for mut rest in subsets(&names[i + 1..], lose - 1) {
            rest.insert(0, first);
            out.push(rest);
        }
    }
    out
}

#[test]
fn four_plus_two_on_six_providers_restores_with_any_two_lost() {
    let (env, data) = erasure_backed_up(6, "4+2", 8);
    let names = ["p1", "p2", "p3", "p4", "p5", "p6"];
    for lost in subsets(&names, 2) {
        let _away = Away::providers(&env, &lost);
        assert_restores(&env, &data, &format!("restored without {lost:?}"));
    }
}

#[test]
fn two_plus_one_on_four_providers_rotates_placement_and_restores_with_any_one_lost() {
    let (env, data) = erasure_backed_up(4, "2+1", 9);
    let names = ["p1", "p2", "p3", "p4"];
    let m = manifest(&env, &names);
    let e = m.erasure.clone().unwrap();
    assert_eq!(e.providers.len(), 4);
    // Four shards, three pieces each, rotated over four providers: three pieces apiece.
    assert_eq!(m.shards.len(), 4);
    for p in names {
        let held = files_under(&env.remote(p).only_backup(DS))
            .iter()
            .filter(|(f, _)| f.file_name().is_some_and(|n| n != MANIFEST))
            .count();
        assert_eq!(held, 3, "{p} holds {held} pieces");
    }
    for lost in subsets(&names, 1) {
        let _away = Away::providers(&env, &lost);
        assert_restores(&env, &data, &format!("restored without {lost:?}"));
    }
}

#[test]
fn erasure_with_encryption_restores_identical_and_no_piece_holds_plaintext() {
    let mut env = Env::new(3);
    let key = AgeKey::new(env.path(), "offsite.key");
    let marker = "erasure-plaintext-marker-6b1f";
    let data = marker_text(marker, SOURCE_LEN);
    let src = env.path().join("src.txt");
    std::fs::write(&src, &data).unwrap();
    env.command_dataset(DS, &format!("cat {}", src.display()))
        .set("erasure", "2+1")
        .set("compression", "none")
        .encryption(&[&key.recipient], Some(&key.path));
    env.offsite(&["backup", "--once"]).assert_exit(0);
    assert_erasure_coded(&env, "2+1");
    for (path, bytes) in files_under(&env.path().join("remotes")) {
        assert!(
            !contains_bytes(&bytes, marker.as_bytes()),
            "{} holds plaintext",
            path.display()
        );
    }
    let n = manifest(&env, &["p1"]).shards.len();
    let verify = env.offsite(&["verify", "--decrypt"]);
    let text = verify.assert_exit(0).stdout_text();
    let want = format!("{n} shard(s) of compressed or encrypted backups decoded");
    assert!(text.contains(&want), "{text}");
    let _away = Away::providers(&env, &["p1"]);
    assert_restores(&env, &data, "restored encrypted backup without p1");
}

// ---- the standalone decoder of README.md ----

/// `examples/erasure-decode`, built (or found up to date) by cargo.
fn decoder() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(
        &cargo,
        &[
            "build",
            "--release",
            "--offline",
            "--quiet",
            "--manifest-path",
            root.join("Cargo.toml").to_str().unwrap(),
            "--example",
            "erasure-decode",
        ],
    );
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    target.join("release/examples/erasure-decode")
}

/// Runs the decoder on `manifest` and the pieces in `dir`; returns its stdout (the stored
/// stream), failing the test with its stderr unless it exits 0.
fn decode(manifest: &Path, dir: &Path) -> Vec<u8> {
    decode_to(manifest, dir, None)
}

/// [`decode`], with the stored shards written to `out_dir` when given (stdout then empty).
fn decode_to(manifest: &Path, dir: &Path, out_dir: Option<&Path>) -> Vec<u8> {
    let out = Command::new(decoder())
        .arg(manifest)
        .arg(dir)
        .args(out_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run erasure-decode");
    assert!(
        out.status.success(),
        "erasure-decode failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn the_standalone_decoder_rebuilds_a_backup_with_one_provider_deleted() {
    let (env, data) = erasure_backed_up(3, "2+1", 10);
    let manifest_path = env.remote("p1").only_backup(DS).join(MANIFEST);
    std::fs::remove_dir_all(env.remote("p2").root()).unwrap();
    let pieces = env.path().join("pieces");
    std::fs::create_dir(&pieces).unwrap();
    for p in ["p1", "p3"] {
        for (path, bytes) in files_under(&env.remote(p).only_backup(DS)) {
            std::fs::write(pieces.join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    let stream = decode(&manifest_path, &pieces);
    assert_same_bytes("stream from erasure-decode", &stream, &data);
    // Into a folder: each stored shard under its ordinary name (no compression: the stream).
    let shards = env.path().join("shards");
    assert!(decode_to(&manifest_path, &pieces, Some(&shards)).is_empty());
    let m = manifest(&env, &["p1"]);
    let names: Vec<String> = m.shards.iter().map(|s| m.object(s)).collect();
    let written = files_under(&shards);
    let written_names: Vec<String> = written
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written_names, names);
    let joined: Vec<u8> = written.into_iter().flat_map(|(_, b)| b).collect();
    assert_same_bytes("shards from erasure-decode", &joined, &data);
}

/// A mirrored backup's manifest turned into an erasure-coded one by `offsite::erasure::split`
/// on its stored shards; writes the pieces, all but piece `drop` of each shard, to `dir`.
fn cut_with_offsite(m: &mut Manifest, stored: &[Vec<u8>], drop: usize, dir: &Path) {
    let scheme: offsite::erasure::Scheme = "3+2".parse().unwrap();
    m.erasure = Some(ErasureRecord {
        k: 3,
        m: 2,
        providers: (1..=5).map(|i| format!("p{i}")).collect(),
        revision: 0,
    });
    let total = m.shards.len();
    for (i, bytes) in stored.iter().enumerate().take(total) {
        let pieces = offsite::erasure::split(scheme, &bytes::Bytes::from(bytes.clone())).unwrap();
        let shard = &mut m.shards[i];
        (shard.md5, shard.sha1) = (None, None);
        shard.pieces = pieces
            .iter()
            .map(|b| PieceRecord {
                length: b.len() as u64,
                sha256: sha256_hex(b),
                md5: None,
                sha1: None,
            })
            .collect();
        for (p, piece) in pieces.iter().enumerate().filter(|(p, _)| *p != drop) {
            std::fs::write(dir.join(m.piece_object(&m.shards[i], p)), piece).unwrap();
        }
    }
}

#[test]
fn the_standalone_decoder_decodes_pieces_cut_by_offsite_itself() {
    // Runs without the erasure backup engine: a mirrored backup's stored shards cut by
    // `offsite::erasure::split`, data piece 2 of every shard left out.
    let (env, data) = backed_up(1, DS, 12);
    let mut m = env.remote("p1").manifest(DS).unwrap();
    let stored: Vec<Vec<u8>> = env
        .remote("p1")
        .shards(DS)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let pieces = env.path().join("pieces");
    std::fs::create_dir(&pieces).unwrap();
    cut_with_offsite(&mut m, &stored, 1, &pieces);
    let manifest_path = env.path().join("erasure-manifest.json");
    std::fs::write(&manifest_path, m.to_json()).unwrap();
    Manifest::from_json(&m.to_json()).expect("a valid erasure-coded manifest");
    let stream = decode(&manifest_path, &pieces);
    let want: Vec<u8> = stored.concat();
    assert_same_bytes("stored stream from erasure-decode", &stream, &want);
    // The shards were compressed (the default): one zstd frame each, so the stream inflates.
    let plain = zstd::stream::decode_all(&stream[..]).unwrap();
    assert_same_bytes("the stream the stored shards hold", &plain, &data);
}
