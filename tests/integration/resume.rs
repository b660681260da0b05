//! Resuming an interrupted backup, end to end: the real binary, real rclone behind
//! `tests/mock_rclone` (whose log shows every upload), and a real source (a command that cats
//! a file of pseudo-random bytes, or a zfs dataset). Covered: kill -9 during the first shard,
//! mid-stream and before the manifests; SIGTERM; a provider's server stopped mid-backup; shards
//! deleted and truncated between runs; a source that re-sends different bytes; a deleted
//! snapshot; the stale lock of a killed run; `backup --dry-run` of an unfinished backup.
//!
//! What "only the missing shards" means, as the upload counts below assert it: offsite
//! journals a shard's SHA-256 as soon as it is hashed (the journal describes the source, not
//! the uploads), and a resumed run trusts the contiguous prefix of that journal (the *proven*
//! shards). A proven shard is re-read and re-hashed, and uploaded only to the providers whose
//! listing lacks it at the right size, so a provider that lagged behind costs the fast ones
//! nothing. Every shard from the first unproven one on goes to every provider again: its bytes
//! were never recorded, so a copy already there cannot be told apart from another stream's.
//!
//! Every interruption is timed by an observable event (a line in the mock's log, a shard on a
//! provider's disk at its full size, a journal record), never by a sleep. The kill -9 tests
//! wait until the run is stuck for good on the faulted upload (every shard journaled, every
//! other upload done), so the counts they assert are exact.

use crate::harness::*;
use offsite::layout::{shard_name, MANIFEST};
use offsite::manifest::{hex, Manifest};
use offsite::state::{DatasetState, Unfinished};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

pub(crate) const MIB: u64 = 1 << 20;
/// 7.5 MiB: seven full 1 MiB shards and a half one.
pub(crate) const LEN: u64 = 7 * MIB + MIB / 2;
pub(crate) const SHARDS: u64 = 8;
pub(crate) const DS: &str = "vault";
/// How long a test waits for an event of a running backup.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn shard(i: u64) -> String {
    shard_name(i, i * MIB)
}

pub(crate) fn shard_len(i: u64) -> u64 {
    MIB.min(LEN - i * MIB)
}

pub(crate) fn providers(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("p{i}")).collect()
}

/// `n` local providers behind the mock, and a command dataset `cat source.bin` (7.5 MiB),
/// stored uncompressed: these tests are about which objects a resume sends, by name and size.
pub(crate) fn mocked_env(n: usize) -> (Env, PathBuf, Vec<u8>) {
    let mut env = Env::new(n);
    env.set("compression", "none");
    let src = env.path().join("source.bin");
    let data = write_pseudo_random(&src, 0x5eed, LEN as usize);
    env.command_dataset(DS, &format!("cat {}", src.display()));
    env.use_mock_rclone();
    (env, src, data)
}

// ---- what the state dir, the providers and the mock's log show ----

/// The unfinished backup in the state dir and how many shards it has proven.
pub(crate) fn unfinished(env: &Env) -> Option<(Unfinished, u64)> {
    let state = DatasetState::new(&env.state_dir(), HOST, DS);
    let loaded = state.load().expect("the state dir is readable");
    loaded.map(|(u, records)| (u, records.len() as u64))
}

pub(crate) fn proven(env: &Env) -> u64 {
    unfinished(env).map_or(0, |(_, n)| n)
}

/// The folder behind a provider: `dav` is the directory an [`RcloneServer`] serves.
pub(crate) fn remote(env: &Env, provider: &str) -> RemoteDir {
    match provider {
        "dav" => RemoteDir::new(env.path().join("dav")),
        p => env.remote(p),
    }
}

/// The objects of the one backup of `DS` on `provider`, name to size (none before it exists).
pub(crate) fn objects(env: &Env, provider: &str) -> BTreeMap<String, u64> {
    let backups = remote(env, provider).backups(DS);
    assert!(backups.len() <= 1, "{provider}: {backups:?}");
    let Some(dir) = backups.first() else {
        return BTreeMap::new();
    };
    let entries = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap());
    entries
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

/// The shards `provider` holds at their right size.
pub(crate) fn held(env: &Env, provider: &str) -> BTreeSet<u64> {
    let objects = objects(env, provider);
    (0..SHARDS)
        .filter(|&i| objects.get(&shard(i)) == Some(&shard_len(i)))
        .collect()
}

/// Every provider holds shards `0..n` whole (1 MiB each), and the journal has proven them.
pub(crate) fn first_shards_done(env: &Env, names: &[String], n: u64) -> bool {
    let whole = |p: &String| {
        let objects = objects(env, p);
        (0..n).all(|i| objects.get(&shard(i)) == Some(&MIB))
    };
    names.iter().all(whole) && proven(env) >= n
}

/// The provider a mock-log target belongs to.
pub(crate) fn provider_of(target: &str) -> String {
    if let Some((_, rest)) = target.split_once("/remotes/") {
        return rest.split('/').next().unwrap().to_string();
    }
    assert!(
        target.starts_with(":webdav"),
        "unknown rclone target {target:?}"
    );
    "dav".into()
}

/// (subcommand, provider, object name) of every rclone call in the mock's log.
pub(crate) fn calls(env: &Env) -> Vec<(String, String, String)> {
    let lines = env.mock_log();
    let parse = |l: &String| {
        let (sub, target) = l.split_once(' ').unwrap_or((l, ""));
        let name = target.rsplit('/').next().unwrap_or("").to_string();
        (sub.to_string(), provider_of(target), name)
    };
    // Probe objects (written when min_providers > 1 to tell storages apart) are not backups.
    lines
        .iter()
        .filter(|l| !l.starts_with("version") && !l.starts_with("listremotes"))
        .map(parse)
        .filter(|(_, _, name)| !name.contains(".offsite-probe-"))
        .collect()
}

/// Objects uploaded (`rcat`) per provider, sorted, repeats kept.
pub(crate) fn uploads(env: &Env) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (sub, provider, name) in calls(env) {
        if sub == "rcat" {
            out.entry(provider).or_default().push(name);
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

pub(crate) fn logged_rcat(env: &Env, name: &str) -> bool {
    env.mock_log()
        .iter()
        .any(|l| l.starts_with("rcat ") && l.ends_with(name))
}

/// The run is stuck for good on uploads of shard `hung`: every shard is journaled, and every
/// provider holds every other shard whole; `laggards` providers lack `hung`, the others hold it.
pub(crate) fn stuck_on(env: &Env, names: &[String], hung: u64, laggards: usize) -> bool {
    let all: BTreeSet<u64> = (0..SHARDS).collect();
    let mut but_hung = all.clone();
    but_hung.remove(&hung);
    let held: Vec<BTreeSet<u64>> = names.iter().map(|p| held(env, p)).collect();
    proven(env) == SHARDS
        && held.iter().all(|h| *h == all || *h == but_hung)
        && held.iter().filter(|h| **h == but_hung).count() == laggards
}

/// What a resumed run uploads to a provider that held `held` when `proven` shards were
/// proven (see the module doc): the proven shards it lacks, every later shard, the manifest.
pub(crate) fn expected_uploads(held: &BTreeSet<u64>, proven: u64) -> Vec<String> {
    let mut v: Vec<String> = (0..SHARDS)
        .filter(|&i| i >= proven || !held.contains(&i))
        .map(shard)
        .collect();
    v.push(MANIFEST.to_string());
    v.sort();
    v
}

pub(crate) fn shard_list(range: std::ops::Range<u64>) -> Vec<String> {
    let mut v: Vec<String> = range.map(shard).chain([MANIFEST.to_string()]).collect();
    v.sort();
    v
}

/// Asserts the uploads of the last run: exactly [`expected_uploads`] for each provider, and
/// each provider listed at most twice (gap detection, then the size check), never per shard.
pub(crate) fn assert_resume_uploads(
    env: &Env,
    before: &BTreeMap<String, BTreeSet<u64>>,
    proven: u64,
) {
    let up = uploads(env);
    for (p, held) in before {
        let got = up.get(p).cloned().unwrap_or_default();
        let why = format!("uploads to {p}, which held shards {held:?} with {proven} proven");
        assert_eq!(got, expected_uploads(held, proven), "{why}");
    }
    assert!(up.keys().all(|p| before.contains_key(p)), "{up:?}");
    for p in before.keys() {
        let lists = calls(env)
            .iter()
            .filter(|(s, q, _)| s == "lsjson" && q == p)
            .count();
        assert!(
            lists <= 2,
            "{p} was listed {lists} times: {:#?}",
            env.mock_log()
        );
    }
}

/// Asserts that `provider` holds backup `id` whole: a valid manifest naming it, exactly the
/// shards it records, each of its length and SHA-256; returns the concatenated stream.
pub(crate) fn assert_backup(env: &Env, provider: &str, id: &str) -> Vec<u8> {
    let dir = remote(env, provider).dataset_dir(DS).join(id);
    let bytes = std::fs::read(dir.join(MANIFEST))
        .unwrap_or_else(|e| panic!("{provider}: no manifest in {}: {e}", dir.display()));
    let m = Manifest::from_json(&bytes).unwrap_or_else(|e| panic!("{provider}: {e}"));
    assert_eq!(m.backup_id, id, "{provider}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != MANIFEST)
        .collect();
    names.sort();
    let recorded: Vec<String> = m.shards.iter().map(|r| m.object(r)).collect();
    assert_eq!(names, recorded, "objects on {provider} vs its manifest");
    let mut stream = Vec::new();
    for r in &m.shards {
        let b = std::fs::read(dir.join(m.object(r))).unwrap();
        assert_eq!(b.len() as u64, r.length, "{} on {provider}", m.object(r));
        assert_eq!(
            hex(&Sha256::digest(&b)),
            r.sha256,
            "{} on {provider}",
            m.object(r)
        );
        stream.extend(b);
    }
    assert_eq!(m.total_bytes, stream.len() as u64, "{provider}");
    stream
}

/// The name of the one backup folder of `DS` on `provider`.
pub(crate) fn backup_id_on(env: &Env, provider: &str) -> String {
    let dir = remote(env, provider).only_backup(DS);
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The folder of backup `id` on `provider` is gone or holds no object.
pub(crate) fn assert_no_objects_of(env: &Env, provider: &str, id: &str) {
    let dir = remote(env, provider).dataset_dir(DS).join(id);
    let left: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().collect();
    assert!(left.is_empty(), "{provider}: {id} still holds {left:?}");
}

/// The backup on `provider` that is not `old`.
pub(crate) fn backup_id_after(env: &Env, provider: &str, old: &str) -> String {
    let backups = remote(env, provider).backups(DS);
    let names: Vec<String> = backups
        .iter()
        .map(|b| b.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != old)
        .collect();
    assert_eq!(names.len(), 1, "{provider}: {backups:?}");
    names[0].clone()
}

/// [`assert_backup`] on each provider, its stream equal to `data`, and no other backup there.
pub(crate) fn assert_complete(env: &Env, names: &[String], id: &str, data: &[u8]) {
    for p in names {
        let stream = assert_backup(env, p, id);
        assert_same_bytes(&format!("stream on {p}"), &stream, data);
        assert_eq!(remote(env, p).backups(DS).len(), 1, "backups on {p}");
    }
}

/// Every file under each provider's folder with its bytes.
pub(crate) fn trees(env: &Env, names: &[String]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for p in names {
        let mut stack = vec![remote(env, p).root().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
    }
    out
}

// ---- driving runs ----

/// Starts `offsite backup --once`, waits until `ready`, SIGKILLs it, and checks that nothing
/// it started outlives it (its children die with it by PDEATHSIG). Returns its PID.
pub(crate) fn kill_9_when(env: &Env, what: &str, mut ready: impl FnMut() -> bool) -> u32 {
    let run = env.spawn_offsite(&["backup", "--once"]);
    let pid = run.pid();
    assert!(
        poll(WAIT, || ready() || !is_alive(pid)),
        "timed out waiting for {what}"
    );
    if !is_alive(pid) {
        let out = run.wait();
        panic!(
            "offsite exited ({}) before {what}:\n{}",
            out.status,
            out.stderr_text()
        );
    }
    signal(pid, libc::SIGKILL);
    let out = run.wait();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{}",
        out.stderr_text()
    );
    env.assert_no_leftover_processes();
    pid
}

pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the offsite process this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// Empties the mock's rules and log, so that the log shows the next run only.
pub(crate) fn reset_mock(env: &Env) {
    env.mock_rules("");
    std::fs::write(env.path().join("mock.log"), "").unwrap();
}

/// [`reset_mock`], then runs `offsite ARGS` to its end.
pub(crate) fn rerun(env: &Env, args: &[&str]) -> Output {
    reset_mock(env);
    env.offsite(args)
}

pub(crate) fn snapshot_held(env: &Env, names: &[String]) -> BTreeMap<String, BTreeSet<u64>> {
    names.iter().map(|p| (p.clone(), held(env, p))).collect()
}

/// kill -9 once `ready`, with `proven` shards proven by then; the re-run must complete the
/// same backup, uploading exactly what [`expected_uploads`] says.
pub(crate) fn kill_9_then_resume(
    rule: &str,
    what: &str,
    ready: impl Fn(&Env) -> bool,
    proven: u64,
) {
    let (env, _, data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules(rule);
    kill_9_when(&env, what, || ready(&env));
    let (u, recorded) = unfinished(&env).expect("the killed run left its unfinished backup");
    assert_eq!(recorded, proven, "shards proven when killed at {what}");
    let before = snapshot_held(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        err.contains(&format!("resuming unfinished backup {}", u.backup_id)),
        "{err}"
    );
    assert_complete(&env, &names, &u.backup_id, &data);
    assert_resume_uploads(&env, &before, proven);
    assert!(
        unfinished(&env).is_none(),
        "the completed backup is still recorded as unfinished"
    );
    env.assert_no_leftover_processes();
}

// ---- kill -9 at three points ----

#[test]
pub(crate) fn kill_9_while_the_first_shard_hangs_everywhere_then_the_rerun_sends_only_it() {
    // Shard 0 hangs on every provider; the others pass it (each provider uploads two objects
    // at a time), so all 8 shards are journaled and shards 1-7 are whole everywhere. The
    // re-run sends shard 0 to each of the 3 providers and 3 manifests: 6 uploads, where
    // round 1 (journaling a shard only once every provider had it) sent all 27.
    kill_9_then_resume(
        "rcat *s0000000000-* hang inf\n",
        "shards 1-7 everywhere and shard 0 stuck",
        |env| stuck_on(env, &providers(3), 0, 3),
        SHARDS,
    );
}

#[test]
pub(crate) fn kill_9_while_one_provider_lags_then_the_rerun_sends_the_fast_ones_nothing_they_hold()
{
    // Shard 3 hangs on one provider (the laggard); the two fast providers hold all 8 shards
    // and every shard is journaled. The re-run re-reads and re-hashes all 8 but uploads only
    // shard 3 to the laggard and the 3 manifests: 4 uploads, where round 1 sent 18 (shards 3-7
    // to everyone, since only shards every provider held were journaled).
    kill_9_then_resume(
        "rcat *s0000000003-* hang 1\n",
        "every shard but 3 everywhere, and 3 on two providers",
        |env| stuck_on(env, &providers(3), 3, 1),
        SHARDS,
    );
}

#[test]
pub(crate) fn kill_9_before_the_manifests_then_the_rerun_writes_only_the_manifests() {
    // Every shard is proven and whole everywhere before the first manifest is written: the
    // re-run uploads no shard at all, only the 3 manifests.
    kill_9_then_resume(
        "rcat *manifest.json hang 1\n",
        "the first manifest upload",
        |env| logged_rcat(env, MANIFEST),
        SHARDS,
    );
}
