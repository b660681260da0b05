//! Resuming after a provider's server went away mid-backup: the rerun fills that provider's
//! gaps only. Helpers and the meaning of the upload counts: see `resume.rs`.

use crate::harness::*;
use crate::resume::MIB;
use crate::resume::*;
use offsite::layout::MANIFEST;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

// ---- a provider's server goes away mid-backup ----

/// Providers p1, p2 (local) and `dav` (a WebDAV server), and a dataset that cats a FIFO the
/// test feeds, so that the test decides when the stream goes on.
fn fifo_env() -> (Env, PathBuf, Vec<u8>) {
    let mut env = Env::new(2);
    let fifo = env.path().join("source.fifo");
    run("mkfifo", &[fifo.to_str().unwrap()]);
    env.command_dataset(DS, &format!("cat {}", fifo.display()));
    // Stored as they are: the test waits for objects by their bare names and sizes.
    env.use_mock_rclone()
        .set("retries", 2)
        .set("compression", "none");
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
        .stdout_text();
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
