//! [`ZfsPool`]: a throw-away zfs-fuse pool on a sparse file, destroyed in `Drop`.
//!
//! Pool names are `oit<test pid>x<n>`, so a pool left by a test binary that was killed (no
//! `Drop` ran) is recognised and destroyed by the next one.
//!
//! zfs-fuse deadlocks when several `zfs create`/mounts run at once (seen here: five concurrent
//! creates from three test binaries hung the daemon), so a pool holds an exclusive `flock` on
//! [`LOCK_PATH`] for its whole life: zfs tests run one at a time, across threads and across
//! test binaries, while the other tests run in parallel.

use super::procs::{is_alive, poll};
use super::run;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);
const LOCK_PATH: &str = "/tmp/offsite-tests-zfs.lock";

/// Holds the cross-process zfs test lock until dropped.
struct ZfsLock(std::fs::File);

impl ZfsLock {
    fn acquire() -> ZfsLock {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .expect("open the zfs test lock");
        // SAFETY: flock on a descriptor we own; blocks until the other zfs test is done.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK_PATH}");
        ZfsLock(f)
    }
}
static DAEMON: Mutex<()> = Mutex::new(());

pub struct ZfsPool {
    name: String,
    vdev: PathBuf,
    mountpoint: PathBuf,
    /// Dropped after the pool is destroyed (fields drop after `Drop::drop`).
    _lock: ZfsLock,
}

impl ZfsPool {
    /// Creates a 128 MiB pool backed by a file in `dir`, mounted under `dir/zfs`.
    pub fn new(dir: &Path) -> ZfsPool {
        let lock = ZfsLock::acquire();
        ensure_daemon();
        destroy_stale_pools();
        let name = format!(
            "oit{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let vdev = dir.join(format!("{name}.vdev"));
        let mountpoint = dir.join("zfs");
        run("truncate", &["-s", "128M", path_str(&vdev)]);
        let pool = ZfsPool {
            name,
            vdev,
            mountpoint,
            _lock: lock,
        };
        run(
            "zpool",
            &[
                "create",
                "-m",
                path_str(&pool.mountpoint),
                &pool.name,
                path_str(&pool.vdev),
            ],
        );
        pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `POOL/fs`.
    pub fn fs(&self, fs: &str) -> String {
        format!("{}/{fs}", self.name)
    }

    /// Creates `POOL/fs` and returns its mountpoint.
    pub fn create_fs(&self, fs: &str) -> PathBuf {
        run("zfs", &["create", &self.fs(fs)]);
        self.mountpoint(fs)
    }

    pub fn mountpoint(&self, fs: &str) -> PathBuf {
        self.mountpoint.join(fs)
    }

    /// Every snapshot in the pool (`POOL/fs@name`), sorted.
    pub fn snapshots(&self) -> Vec<String> {
        let out = run(
            "zfs",
            &[
                "list", "-H", "-t", "snapshot", "-o", "name", "-r", &self.name,
            ],
        );
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// `zfs receive POOL/fs` with `stream` on stdin.
    pub fn receive(&self, fs: &str, stream: &[u8]) {
        super::run_with_input("zfs", &["receive", &self.fs(fs)], Some(stream));
    }
}

impl Drop for ZfsPool {
    fn drop(&mut self) {
        // zfs-fuse reports "pool is busy" for a moment after heavy use: retry, bounded.
        let gone = poll(Duration::from_secs(30), || destroy(&self.name));
        if !gone {
            eprintln!("warning: could not destroy zfs pool {}", self.name);
        }
        let _ = std::fs::remove_file(&self.vdev);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn zpool_list_ok() -> bool {
    Command::new("zpool")
        .arg("list")
        .env("PATH", super::search_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the zfs-fuse daemon unless `zpool list` already answers, and waits until it does.
fn ensure_daemon() {
    let _guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    if zpool_list_ok() {
        return;
    }
    // zfs-fuse daemonizes itself; it outlives the tests on purpose (other tests share it).
    let started = Command::new("zfs-fuse")
        .env("PATH", super::search_path())
        .status()
        .expect("zfs-fuse must be installed for the zfs tests");
    assert!(started.success(), "zfs-fuse failed to start: {started}");
    let up = poll(Duration::from_secs(30), zpool_list_ok);
    assert!(up, "zfs-fuse started but `zpool list` does not answer");
}

/// `zpool destroy -f NAME`; true once the pool is gone.
fn destroy(name: &str) -> bool {
    let status = Command::new("zpool")
        .args(["destroy", "-f", name])
        .env("PATH", super::search_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    status.is_ok_and(|s| s.success()) || !pool_exists(name)
}

fn pool_exists(name: &str) -> bool {
    Command::new("zpool")
        .args(["list", name])
        .env("PATH", super::search_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Destroys pools named by a test binary that is no longer running.
fn destroy_stale_pools() {
    let out = run("zpool", &["list", "-H", "-o", "name"]);
    for name in out.lines() {
        let Some(pid) = name
            .strip_prefix("oit")
            .and_then(|r| r.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !is_alive(pid) {
            destroy(name);
        }
    }
}
