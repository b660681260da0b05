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
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const MIB: u64 = 1 << 20;
/// 7.5 MiB: seven full 1 MiB shards and a half one.
const LEN: u64 = 7 * MIB + MIB / 2;
const SHARDS: u64 = 8;
const DS: &str = "vault";
/// How long a test waits for an event of a running backup.
const WAIT: Duration = Duration::from_secs(60);

fn shard(i: u64) -> String {
    shard_name(i, i * MIB)
}

fn shard_len(i: u64) -> u64 {
    MIB.min(LEN - i * MIB)
}

fn providers(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("p{i}")).collect()
}

/// `n` local providers behind the mock, and a command dataset `cat source.bin` (7.5 MiB).
fn mocked_env(n: usize) -> (Env, PathBuf, Vec<u8>) {
    let mut env = Env::new(n);
    let src = env.path().join("source.bin");
    let data = write_pseudo_random(&src, 0x5eed, LEN as usize);
    env.command_dataset(DS, &format!("cat {}", src.display()));
    env.use_mock_rclone();
    (env, src, data)
}

// ---- what the state dir, the providers and the mock's log show ----

/// The unfinished backup in the state dir and how many shards it has proven.
fn unfinished(env: &Env) -> Option<(Unfinished, u64)> {
    let state = DatasetState::new(&env.state_dir(), HOST, DS);
    let loaded = state.load().expect("the state dir is readable");
    loaded.map(|(u, records)| (u, records.len() as u64))
}

fn proven(env: &Env) -> u64 {
    unfinished(env).map_or(0, |(_, n)| n)
}

/// The folder behind a provider: `dav` is the directory an [`RcloneServer`] serves.
fn remote(env: &Env, provider: &str) -> RemoteDir {
    match provider {
        "dav" => RemoteDir::new(env.path().join("dav")),
        p => env.remote(p),
    }
}

/// The objects of the one backup of `DS` on `provider`, name to size (none before it exists).
fn objects(env: &Env, provider: &str) -> BTreeMap<String, u64> {
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
fn held(env: &Env, provider: &str) -> BTreeSet<u64> {
    let objects = objects(env, provider);
    (0..SHARDS)
        .filter(|&i| objects.get(&shard(i)) == Some(&shard_len(i)))
        .collect()
}

/// Every provider holds shards `0..n` whole (1 MiB each), and the journal has proven them.
fn first_shards_done(env: &Env, names: &[String], n: u64) -> bool {
    let whole = |p: &String| {
        let objects = objects(env, p);
        (0..n).all(|i| objects.get(&shard(i)) == Some(&MIB))
    };
    names.iter().all(whole) && proven(env) >= n
}

/// The provider a mock-log target belongs to.
fn provider_of(target: &str) -> String {
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
fn calls(env: &Env) -> Vec<(String, String, String)> {
    let lines = env.mock_log();
    let parse = |l: &String| {
        let (sub, target) = l.split_once(' ').unwrap_or((l, ""));
        let name = target.rsplit('/').next().unwrap_or("").to_string();
        (sub.to_string(), provider_of(target), name)
    };
    // Probe objects (written when min_providers > 1 to tell storages apart) are not backups.
    lines
        .iter()
        .filter(|l| !l.starts_with("version"))
        .map(parse)
        .filter(|(_, _, name)| !name.contains(".offsite-probe-"))
        .collect()
}

/// Objects uploaded (`rcat`) per provider, sorted, repeats kept.
fn uploads(env: &Env) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (sub, provider, name) in calls(env) {
        if sub == "rcat" {
            out.entry(provider).or_default().push(name);
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn logged_rcat(env: &Env, name: &str) -> bool {
    env.mock_log()
        .iter()
        .any(|l| l.starts_with("rcat ") && l.ends_with(name))
}

/// The run is stuck for good on uploads of shard `hung`: every shard is journaled, and every
/// provider holds every other shard whole; `laggards` providers lack `hung`, the others hold it.
fn stuck_on(env: &Env, names: &[String], hung: u64, laggards: usize) -> bool {
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
fn expected_uploads(held: &BTreeSet<u64>, proven: u64) -> Vec<String> {
    let mut v: Vec<String> = (0..SHARDS)
        .filter(|&i| i >= proven || !held.contains(&i))
        .map(shard)
        .collect();
    v.push(MANIFEST.to_string());
    v.sort();
    v
}

fn shard_list(range: std::ops::Range<u64>) -> Vec<String> {
    let mut v: Vec<String> = range.map(shard).chain([MANIFEST.to_string()]).collect();
    v.sort();
    v
}

/// Asserts the uploads of the last run: exactly [`expected_uploads`] for each provider, and
/// each provider listed at most twice (gap detection, then the size check), never per shard.
fn assert_resume_uploads(env: &Env, before: &BTreeMap<String, BTreeSet<u64>>, proven: u64) {
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
fn assert_backup(env: &Env, provider: &str, id: &str) -> Vec<u8> {
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
    let recorded: Vec<String> = m.shards.iter().map(|r| r.name()).collect();
    assert_eq!(names, recorded, "objects on {provider} vs its manifest");
    let mut stream = Vec::new();
    for r in &m.shards {
        let b = std::fs::read(dir.join(r.name())).unwrap();
        assert_eq!(b.len() as u64, r.length, "{} on {provider}", r.name());
        assert_eq!(
            hex(&Sha256::digest(&b)),
            r.sha256,
            "{} on {provider}",
            r.name()
        );
        stream.extend(b);
    }
    assert_eq!(m.total_bytes, stream.len() as u64, "{provider}");
    stream
}

/// The name of the one backup folder of `DS` on `provider`.
fn backup_id_on(env: &Env, provider: &str) -> String {
    let dir = remote(env, provider).only_backup(DS);
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The folder of backup `id` on `provider` is gone or holds no object.
fn assert_no_objects_of(env: &Env, provider: &str, id: &str) {
    let dir = remote(env, provider).dataset_dir(DS).join(id);
    let left: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().collect();
    assert!(left.is_empty(), "{provider}: {id} still holds {left:?}");
}

/// The backup on `provider` that is not `old`.
fn backup_id_after(env: &Env, provider: &str, old: &str) -> String {
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
fn assert_complete(env: &Env, names: &[String], id: &str, data: &[u8]) {
    for p in names {
        let stream = assert_backup(env, p, id);
        assert_same_bytes(&format!("stream on {p}"), &stream, data);
        assert_eq!(remote(env, p).backups(DS).len(), 1, "backups on {p}");
    }
}

/// Every file under each provider's folder with its bytes.
fn trees(env: &Env, names: &[String]) -> BTreeMap<PathBuf, Vec<u8>> {
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
fn kill_9_when(env: &Env, what: &str, mut ready: impl FnMut() -> bool) -> u32 {
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

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the offsite process this test started and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// Empties the mock's rules and log, so that the log shows the next run only.
fn reset_mock(env: &Env) {
    env.mock_rules("");
    std::fs::write(env.path().join("mock.log"), "").unwrap();
}

/// [`reset_mock`], then runs `offsite ARGS` to its end.
fn rerun(env: &Env, args: &[&str]) -> Output {
    reset_mock(env);
    env.offsite(args)
}

fn snapshot_held(env: &Env, names: &[String]) -> BTreeMap<String, BTreeSet<u64>> {
    names.iter().map(|p| (p.clone(), held(env, p))).collect()
}

/// kill -9 once `ready`, with `proven` shards proven by then; the re-run must complete the
/// same backup, uploading exactly what [`expected_uploads`] says.
fn kill_9_then_resume(rule: &str, what: &str, ready: impl Fn(&Env) -> bool, proven: u64) {
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
fn kill_9_while_the_first_shard_hangs_everywhere_then_the_rerun_sends_only_it() {
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
fn kill_9_while_one_provider_lags_then_the_rerun_sends_the_fast_ones_nothing_they_hold() {
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
fn kill_9_before_the_manifests_then_the_rerun_writes_only_the_manifests() {
    // Every shard is proven and whole everywhere before the first manifest is written: the
    // re-run uploads no shard at all, only the 3 manifests.
    kill_9_then_resume(
        "rcat *manifest.json hang 1\n",
        "the first manifest upload",
        |env| logged_rcat(env, MANIFEST),
        SHARDS,
    );
}

// ---- a provider's server goes away mid-backup ----

/// Providers p1, p2 (local) and `dav` (a WebDAV server), and a dataset that cats a FIFO the
/// test feeds, so that the test decides when the stream goes on.
fn fifo_env() -> (Env, PathBuf, Vec<u8>) {
    let mut env = Env::new(2);
    let fifo = env.path().join("source.fifo");
    run("mkfifo", &[fifo.to_str().unwrap()]);
    env.command_dataset(DS, &format!("cat {}", fifo.display()));
    env.use_mock_rclone().set("retries", 2);
    (env, fifo, pseudo_random(0xda7a, LEN as usize))
}

/// Points provider `dav` at `server`; rclone's own low-level retries would spend ~5 s per
/// call on a refused connection.
fn add_dav(env: &mut Env, server: &RcloneServer) {
    env.provider("dav", &server.remote()).provider_set(
        "dav",
        "flags",
        vec!["--low-level-retries", "1"],
    );
}

/// Writes a stream into the FIFO a backup's source reads: the first `split` bytes at once,
/// the rest on [`Feeder::rest`].
struct Feeder {
    go: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(fifo: &Path, data: Vec<u8>, split: usize) -> Feeder {
        let mut file = open_fifo_writer(fifo);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        // A failed write means the reader went away; offsite's exit code tells the test why.
        let thread = std::thread::spawn(move || {
            if file.write_all(&data[..split]).is_ok() && wait.recv().is_ok() {
                let _ = file.write_all(&data[split..]);
            }
        });
        Feeder {
            go: Some(go),
            thread: Some(thread),
        }
    }

    /// Sends the rest of the stream and closes the FIFO; returns once it was all written
    /// (or the reader went away).
    fn rest(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Some process below `pid` is an `rclone rcat` (or the mock standing in for it).
fn uploading(pid: u32) -> bool {
    descendants_of(pid).into_iter().any(|p| {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        cmdline.split(|&b| b == 0).any(|arg| arg == b"rcat")
    })
}

/// Opens `path` for writing once a reader has it open (polled: ENXIO before), then makes the
/// descriptor blocking.
fn open_fifo_writer(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = None;
    wait_for("the source to open the FIFO", WAIT, || {
        let mut o = std::fs::OpenOptions::new();
        file = o.write(true).custom_flags(libc::O_NONBLOCK).open(path).ok();
        file.is_some()
    });
    let file = file.unwrap();
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    file
}

/// Starts a backup of the FIFO stream, lets shards 0-2 reach every provider, stops `server`,
/// sends the rest of the stream and returns how the run ended.
fn backup_while_dav_goes_down(
    env: &Env,
    fifo: &Path,
    data: &[u8],
    server: &mut RcloneServer,
) -> Output {
    let names = ["p1", "p2", "dav"].map(String::from);
    let run = env.spawn_offsite(&["backup", "--once"]);
    let mut feeder = Feeder::start(fifo, data.to_vec(), 3 * MIB as usize);
    // Whole on disk is not done: rclone may still wait for the server's answer.
    wait_for(
        "shards 0-2 on every provider, and no upload running",
        WAIT,
        || first_shards_done(env, &names, 3) && !uploading(run.pid()),
    );
    // The reader now waits for shard 3 on the FIFO: no upload is in flight.
    server.stop();
    feeder.rest();
    run.wait()
}

#[test]
fn provider_down_mid_backup_leaves_gaps_that_the_rerun_fills_for_that_provider_only() {
    let (mut env, fifo, data) = fifo_env();
    let mut server = RcloneServer::webdav(&env.path().join("dav"));
    add_dav(&mut env, &server);
    let out = backup_while_dav_goes_down(&env, &fifo, &data, &mut server);
    let err = out.assert_exit(3).stderr_text();
    assert!(
        err.contains("provider dav misses 5 of 8 shards and the manifest"),
        "{err}"
    );
    assert!(
        !err.contains("provider p1 misses") && !err.contains("provider p2 misses"),
        "{err}"
    );
    assert!(err.contains("offsite sync"), "{err}");
    let id = backup_id_on(&env, "p1");
    assert_complete(&env, &providers(2), &id, &data);
    assert_eq!(
        held(&env, "dav"),
        (0..3).collect(),
        "{:?}",
        objects(&env, "dav")
    );

    // Exit 3 means done with gaps. The unfinished state is kept once, so the re-run of
    // `backup` resumes the same backup: the source is streamed again, and only dav, which
    // misses shards 3-7 and the manifest, is written to.
    assert!(unfinished(&env).is_some_and(|(u, _)| u.gaps_retry));
    let dry = env
        .offsite(&["backup", "--dry-run"])
        .assert_exit(0)
        .stderr_text();
    assert!(
        dry.contains(&format!("would resume unfinished backup {id}")),
        "{dry}"
    );
    server.start();
    reset_mock(&env);
    let run = env.spawn_offsite(&["backup"]);
    Feeder::start(&fifo, data.clone(), data.len()).rest();
    run.wait().assert_exit(0);
    let writes: Vec<_> = calls(&env)
        .into_iter()
        .filter(|(s, _, _)| s == "rcat" || s == "copyto")
        .collect();
    assert!(writes.iter().all(|(_, p, _)| p == "dav"), "{writes:?}");
    assert_eq!(
        uploads(&env).get("dav").cloned().unwrap_or_default(),
        shard_list(3..SHARDS)
    );
    let names = ["p1", "p2", "dav"].map(String::from);
    assert_complete(&env, &names, &id, &data);
    assert!(unfinished(&env).is_none(), "a complete backup is forgotten");
    // Nothing is left for sync to do.
    rerun(&env, &["sync"]).assert_exit(0);
    assert!(uploads(&env).is_empty(), "{:?}", uploads(&env));
}

#[test]
fn provider_down_below_min_providers_fails_and_the_rerun_fills_its_gaps() {
    let (mut env, fifo, data) = fifo_env();
    env.set("min_providers", 3);
    let mut server = RcloneServer::webdav(&env.path().join("dav"));
    add_dav(&mut env, &server);
    let out = backup_while_dav_goes_down(&env, &fifo, &data, &mut server);
    let err = out.assert_exit(1).stderr_text();
    assert!(
        err.contains("min_providers = 3") && err.contains("provider dav"),
        "{err}"
    );
    // Shards 0-3 are journaled for sure (shard 3 is hashed before its upload to dav fails);
    // 4-7 are too if they were read before that failure ended the run.
    let (u, recorded) = unfinished(&env).expect("a failed backup stays unfinished");
    assert!(
        (4..=SHARDS).contains(&recorded),
        "{recorded} shards journaled"
    );
    let names = ["p1", "p2", "dav"].map(String::from);
    assert!(names
        .iter()
        .all(|p| !objects(&env, p).contains_key(MANIFEST)));

    server.start();
    let before = snapshot_held(&env, &names);
    assert_eq!(before["dav"], (0..3).collect());
    reset_mock(&env);
    let run = env.spawn_offsite(&["backup", "--once"]);
    Feeder::start(&fifo, data.clone(), data.len()).rest();
    let err = run.wait().assert_exit(0).stderr_text();
    assert!(
        err.contains(&format!("resuming unfinished backup {}", u.backup_id)),
        "{err}"
    );
    assert_complete(&env, &names, &u.backup_id, &data);
    // dav gets exactly its gaps (shards 3-7) and its manifest. p1 and p2 get the journaled
    // shards they lack whole (an upload cut short when the run failed) and every unjournaled
    // one (see the module doc).
    assert_resume_uploads(&env, &before, recorded);
    assert_eq!(uploads(&env)["dav"], shard_list(3..SHARDS));
}

// ---- damage and changes between runs ----

#[test]
fn shards_deleted_or_truncated_between_runs_are_uploaded_again() {
    let (env, _, data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *s0000000004-* hang 1\n");
    kill_9_when(
        &env,
        "every shard but 4 everywhere, and 4 on two providers",
        || stuck_on(&env, &names, 4, 1),
    );
    let (u, recorded) = unfinished(&env).unwrap();
    assert_eq!(recorded, SHARDS);
    let dir = remote(&env, "p2").only_backup(DS);
    std::fs::remove_file(dir.join(shard(1))).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(shard(2)))
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);

    let before = snapshot_held(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    out.assert_exit(0);
    assert_complete(&env, &names, &u.backup_id, &data);
    // The listing is the truth: p2 gets back shards 1 and 2 it lost, the laggard shard 4, and
    // each its manifest; nobody gets a shard it holds whole.
    assert_resume_uploads(&env, &before, SHARDS);
    let p2 = uploads(&env)["p2"].clone();
    assert!(p2.contains(&shard(1)) && p2.contains(&shard(2)), "{p2:?}");
}

#[test]
fn a_source_that_differs_on_resume_is_refused_and_restart_starts_afresh() {
    let (env, src, mut data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    kill_9_when(
        &env,
        "every shard but 3 everywhere, and 3 on two providers",
        || stuck_on(&env, &names, 3, 1),
    );
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names);
    data[(MIB + MIB / 2) as usize] ^= 0x01; // one bit in shard 1
    std::fs::write(&src, &data).unwrap();

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in ["differs", "shard 1", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    assert_eq!(
        uploads(&env),
        BTreeMap::new(),
        "the changed stream was uploaded"
    );
    assert!(
        trees(&env, &names) == before,
        "a provider's objects changed"
    );
    assert_eq!(
        unfinished(&env).map(|(u, _)| u.backup_id),
        Some(u.backup_id.clone())
    );

    let out = rerun(&env, &["backup", "--once", "--restart"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        err.contains(&format!("discarding unfinished backup {}", u.backup_id)),
        "{err}"
    );
    for p in &names {
        // The discarded backup's objects were deleted at once: only the fresh backup is left
        // (a local folder may stay, empty: offsite lists objects, not folders).
        assert_no_objects_of(&env, p, &u.backup_id);
        let fresh = backup_id_after(&env, p, &u.backup_id);
        assert_same_bytes(
            &format!("new stream on {p}"),
            &assert_backup(&env, p, &fresh),
            &data,
        );
    }
    let deletes = calls(&env)
        .into_iter()
        .filter(|(s, _, _)| s == "deletefile")
        .count();
    assert_eq!(deletes, 3 * SHARDS as usize - 1, "{:#?}", env.mock_log());
    let status = env.offsite(&["status"]);
    status.assert_exit(0);
    let text = format!("{}{}", status.stdout_text(), status.stderr_text());
    assert!(!text.contains("unfinished"), "{text}");
}

#[test]
fn a_changed_source_is_caught_even_when_no_shard_reached_every_provider() {
    // p3 never finishes an upload: with two uploads per provider and 4 shards in flight the
    // run is stuck with shards 0-3 read, journaled and on p1 and p2, and nothing on p3.
    let (env, src, mut data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *remotes/p3/* hang inf\n");
    kill_9_when(&env, "shards 0-3 journaled and on p1 and p2", || {
        proven(&env) == 4 && names[..2].iter().all(|p| held(&env, p) == (0..4).collect())
    });
    assert_eq!(held(&env, "p3"), BTreeSet::new());
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names[..2]);
    data[(2 * MIB + 7) as usize] ^= 0x80; // one bit in shard 2

    std::fs::write(&src, &data).unwrap();
    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in ["differs", "shard 2", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    // Shards 0 and 1 are re-read unchanged before shard 2 is, and may reach p3 meanwhile
    // (how many depends on timing); nothing from the changed shard on may be uploaded.
    let early = [shard_name(0, 0), shard_name(1, MIB)];
    let uploaded = uploads(&env);
    assert!(
        uploaded
            .iter()
            .all(|(p, objs)| p == "p3" && objs.iter().all(|o| early.contains(o))),
        "the changed stream was uploaded: {uploaded:?}"
    );
    assert!(
        trees(&env, &names[..2]) == before,
        "p1's or p2's objects changed"
    );
}

#[test]
fn a_snapshot_deleted_between_runs_is_reported_with_restart() {
    let mut env = Env::new(2);
    let pool = ZfsPool::new(env.path());
    let mnt = pool.create_fs("data");
    write_pseudo_random(&mnt.join("big.bin"), 5, 5 * MIB as usize);
    env.zfs_dataset(DS, &pool.fs("data"));
    env.use_mock_rclone();
    env.mock_rules("rcat *s0000000002-* hang 1\n");
    let names = providers(2);
    kill_9_when(
        &env,
        "shards 0-1 in place and the upload of shard 2",
        || logged_rcat(&env, &shard(2)) && first_shards_done(&env, &names, 2),
    );
    let (u, _) = unfinished(&env).unwrap();
    let snap = u
        .snapshot
        .clone()
        .expect("a zfs backup records its snapshot");
    run("zfs", &["destroy", &snap]);
    let before = trees(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(1).stderr_text();
    for word in [snap.as_str(), "no longer exists", &u.backup_id, "--restart"] {
        assert!(err.contains(word), "{word:?} not in:\n{err}");
    }
    assert_eq!(uploads(&env), BTreeMap::new());
    assert!(
        trees(&env, &names) == before,
        "a provider's objects changed"
    );

    let out = rerun(&env, &["backup", "--once", "--restart"]);
    out.assert_exit(0);
    for p in &names {
        assert_no_objects_of(&env, p, &u.backup_id);
    }
    let fresh = remote(&env, "p1").backups(DS).last().unwrap().clone();
    let id = fresh.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(id, u.backup_id);
    let m = Manifest::from_json(&std::fs::read(fresh.join(MANIFEST)).unwrap()).unwrap();
    let new_snap = m.snapshot.expect("the fresh backup records its snapshot");
    assert!(
        new_snap != snap && pool.snapshots().contains(&new_snap),
        "{new_snap}"
    );
    let stream = assert_backup(&env, "p1", &id);
    assert_same_bytes("p1 vs p2", &stream, &assert_backup(&env, "p2", &id));
}

// ---- signals, locks, dry run ----

#[test]
fn sigterm_stops_cleanly_releases_the_lock_and_the_rerun_resumes() {
    let (env, _, data) = mocked_env(3);
    let names = providers(3);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    let run = env.spawn_offsite(&["backup", "--once"]);
    wait_for(
        "every shard but 3 everywhere, and 3 on two providers",
        WAIT,
        || stuck_on(&env, &names, 3, 1),
    );
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait();
    let err = out.assert_exit(130).stderr_text();
    assert!(err.contains("interrupted"), "{err}");
    env.assert_no_leftover_processes();
    let lock = std::fs::read_to_string(env.lock_file(DS)).unwrap();
    assert_eq!(lock, "", "the lock file still names a holder");
    let (u, recorded) = unfinished(&env).expect("progress is kept");
    assert_eq!(recorded, SHARDS);
    let before = snapshot_held(&env, &names);

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    assert!(
        !err.contains("taking it over"),
        "a clean stop left a stale lock:\n{err}"
    );
    assert!(
        err.contains(&format!("resuming unfinished backup {}", u.backup_id)),
        "{err}"
    );
    assert_complete(&env, &names, &u.backup_id, &data);
    // Shard 3 to the laggard and the 3 manifests.
    assert_resume_uploads(&env, &before, SHARDS);
    assert_eq!(uploads(&env).values().map(Vec::len).sum::<usize>(), 4);
}

#[test]
fn the_stale_lock_of_a_killed_run_is_taken_over_with_a_warning() {
    let (env, _, data) = mocked_env(2);
    let names = providers(2);
    env.mock_rules("rcat *s0000000001-* hang 1\n");
    let pid = kill_9_when(&env, "the upload of shard 1", || {
        logged_rcat(&env, &shard(1))
    });
    let lock = std::fs::read_to_string(env.lock_file(DS)).unwrap();
    assert_eq!(
        lock.trim(),
        pid.to_string(),
        "the lock file names the killed run"
    );

    let out = rerun(&env, &["backup", "--once"]);
    let err = out.assert_exit(0).stderr_text();
    let warning = err
        .lines()
        .find(|l| l.contains("taking it over"))
        .unwrap_or_else(|| panic!("no warning about the stale lock:\n{err}"));
    assert!(
        warning.contains("WARN") && warning.contains(&format!("PID {pid}")),
        "{warning}"
    );
    assert!(warning.contains(DS), "{warning}");
    let id = backup_id_on(&env, "p1");
    assert_complete(&env, &names, &id, &data);
    assert_eq!(std::fs::read_to_string(env.lock_file(DS)).unwrap(), "");
}

#[test]
fn dry_run_says_it_would_resume_the_unfinished_backup_and_touches_nothing() {
    let (env, _, _) = mocked_env(2);
    let names = providers(2);
    env.mock_rules("rcat *s0000000003-* hang 1\n");
    kill_9_when(&env, "every shard but 3 on both, and 3 on one", || {
        stuck_on(&env, &names, 3, 1)
    });
    let (u, _) = unfinished(&env).unwrap();
    let before = trees(&env, &names);

    let out = rerun(&env, &["backup", "--dry-run"]);
    let err = out.assert_exit(0).stderr_text();
    let said = format!(
        "would resume unfinished backup {} of \"{DS}\" (8 shards recorded)",
        u.backup_id
    );
    assert!(err.contains(&said), "{said:?} not in:\n{err}");
    let writes: Vec<_> = calls(&env)
        .into_iter()
        .filter(|(s, _, _)| s != "lsjson")
        .collect();
    assert_eq!(writes, vec![], "a dry run called rclone to write");
    assert!(trees(&env, &names) == before);
    assert_eq!(
        unfinished(&env).map(|(u, n)| (u.backup_id, n)),
        Some((u.backup_id, SHARDS))
    );
}
