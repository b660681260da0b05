//! The providers the conformance suite runs against, each built fresh for one test, and a
//! loopback WebDAV server (`rclone serve webdav`) that is killed when its test ends, failed
//! or not.

use crate::config::{ListHashes, ProviderConfig, RetryPolicy};
use crate::provider::{DynProvider, Limit, MemoryProvider, RcloneProvider, Retry, Timeout};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A provider under test.
pub struct Subject {
    pub p: DynProvider,
    /// What [`crate::provider::Provider::copy_from`] takes to name `p` itself as the source.
    pub root: String,
    /// Whether `copy_from` replaces an existing object. rclone 1.60's WebDAV backend does not:
    /// the server answers its COPY with 412 Precondition Failed.
    pub copy_replaces: bool,
    /// The temporary directory or server behind `p`, kept until the test ends.
    _keep: Box<dyn Send>,
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(1),
    }
}

pub async fn memory() -> Subject {
    in_memory(Arc::new(MemoryProvider::new("mem")))
}

pub async fn retry_over_memory() -> Subject {
    in_memory(Arc::new(Retry::new(
        MemoryProvider::new("mem"),
        retry_policy(),
    )))
}

pub async fn limit_over_memory() -> Subject {
    in_memory(Arc::new(Limit::new(MemoryProvider::new("mem"), 2)))
}

fn in_memory(p: DynProvider) -> Subject {
    Subject {
        p,
        root: "mem".into(),
        copy_replaces: true,
        _keep: Box::new(()),
    }
}

/// rclone on a local directory, listing hashes (the local backend computes them), driven
/// through its daemon (`rclone rcd`), objects read and written by offsite directly.
pub async fn rclone_local() -> Subject {
    local(|p| p)
}

/// [`rclone_local`] with every object through the daemon: no direct reads or writes.
pub async fn rclone_local_daemon_only() -> Subject {
    local(RcloneProvider::without_direct)
}

/// [`rclone_local`] with one rclone per operation (`$OFFSITE_RCLONE_DAEMON=0`).
pub async fn rclone_local_per_operation() -> Subject {
    local(RcloneProvider::without_daemon)
}

fn local(how: fn(RcloneProvider) -> RcloneProvider) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let p =
        RcloneProvider::from_parts(&rclone(), None, &provider_config(&root, ListHashes::Always));
    let p = how(p);
    Subject {
        p: Arc::new(p),
        root,
        copy_replaces: true,
        _keep: Box::new(dir),
    }
}

/// The stack `provider::from_config` builds (Retry > Limit > Timeout) over rclone on a local
/// directory.
pub async fn stack_over_rclone_local() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let rclone =
        RcloneProvider::from_parts(&rclone(), None, &provider_config(&root, ListHashes::Never));
    let timed = Timeout::new(rclone, Duration::from_secs(60));
    Subject {
        p: Arc::new(Retry::new(Limit::new(timed, 2), retry_policy())),
        root,
        copy_replaces: true,
        _keep: Box::new(dir),
    }
}

/// rclone on a WebDAV server on 127.0.0.1, a backend reached over the network that lists no
/// hashes (`list_hashes = "auto"` finds that out).
pub async fn rclone_webdav() -> Subject {
    webdav(|p| p)
}

/// [`rclone_webdav`] with one rclone per operation (`$OFFSITE_RCLONE_DAEMON=0`).
pub async fn rclone_webdav_per_operation() -> Subject {
    webdav(RcloneProvider::without_daemon)
}

fn webdav(how: fn(RcloneProvider) -> RcloneProvider) -> Subject {
    let server = WebdavServer::start();
    let root = server.remote();
    let p = RcloneProvider::from_parts(&rclone(), None, &provider_config(&root, ListHashes::Auto));
    let p = how(p);
    Subject {
        p: Arc::new(p),
        root,
        copy_replaces: false,
        _keep: Box::new(server),
    }
}

fn rclone() -> PathBuf {
    which::which("rclone").expect("rclone is not installed: run scripts/test.sh, which installs it")
}

fn provider_config(remote: &str, list_hashes: ListHashes) -> ProviderConfig {
    ProviderConfig {
        name: "conformance".into(),
        remote: remote.into(),
        enabled: true,
        priority: 1,
        bwlimit: None,
        flags: vec![],
        list_hashes,
        max_object_size: None,
    }
}

/// `rclone serve webdav` on a port the kernel picks (`--addr 127.0.0.1:0`, read back from the
/// server's "started on" line), in its own process group; `Drop` kills the group and reaps it.
pub struct WebdavServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// How long a starting server gets to say where it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

impl WebdavServer {
    pub fn start() -> WebdavServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(rclone());
        cmd.args(["serve", "webdav"])
            .arg(dir.path())
            .args(["--addr", "127.0.0.1:0"])
            .env("TCELL_MINIMIZE", "1")
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe. The server dies with the thread that started it,
        // should the test process be killed before `Drop` runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start rclone serve webdav");
        let lines = drain_lines(child.stderr.take().expect("stderr is piped"));
        let mut server = WebdavServer {
            child,
            port: 0,
            _dir: dir,
        };
        server.port = wait_for_port(&lines);
        server
    }

    /// An rclone connection string for the server's root, usable as a provider's `remote`.
    pub fn remote(&self) -> String {
        format!(":webdav,url='http://127.0.0.1:{}':", self.port)
    }
}

impl Drop for WebdavServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Reads the server's stderr to its end on a thread (so the server never blocks on a full
/// pipe) and passes each line on.
fn drain_lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The port of the server's "started on http://127.0.0.1:PORT/" line, once a connection to
/// it succeeds; panics with what the server said if that does not happen in time.
fn wait_for_port(lines: &std::sync::mpsc::Receiver<String>) -> u16 {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut said = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let port = line
            .split_once("started on http://127.0.0.1:")
            .and_then(|(_, rest)| rest.trim_end_matches('/').parse::<u16>().ok());
        if let Some(port) = port {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok() {
                return port;
            }
        }
        said.push(line);
    }
    panic!("rclone serve webdav did not start: {}", said.join("\n"));
}
