//! [`RcloneServer`]: `rclone serve webdav DIR` on a free loopback port, to test a provider that
//! is reached over the network (and one that goes away and comes back).
//!
//! The server runs in its own process group with `PR_SET_PDEATHSIG`; [`RcloneServer::stop`] and
//! `Drop` kill the group and reap it.

use super::procs::poll;
use super::real_rclone;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a starting server gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub struct RcloneServer {
    dir: PathBuf,
    port: u16,
    bwlimit: Option<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl RcloneServer {
    /// Serves `dir` (created if missing) over WebDAV on 127.0.0.1.
    pub fn webdav(dir: &Path) -> RcloneServer {
        Self::start_new(dir, None)
    }

    /// [`RcloneServer::webdav`] with rclone's `--bwlimit` (e.g. "1M").
    pub fn webdav_with_bwlimit(dir: &Path, bwlimit: &str) -> RcloneServer {
        Self::start_new(dir, Some(bwlimit.to_string()))
    }

    fn start_new(dir: &Path, bwlimit: Option<String>) -> RcloneServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut log = dir.as_os_str().to_owned();
        log.push(".serve.log");
        let mut s = RcloneServer {
            dir: dir.to_path_buf(),
            port,
            bwlimit,
            log: log.into(),
            child: None,
        };
        s.start();
        s
    }

    /// The served directory: what a provider using [`RcloneServer::remote`] holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An rclone connection string for the server's root, usable as a provider's `remote`.
    pub fn remote(&self) -> String {
        format!(":webdav,url='http://127.0.0.1:{}':", self.port)
    }

    /// Starts the server (again, on the same port and directory) and waits until it accepts
    /// connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = Command::new(real_rclone());
        c.args(["serve", "webdav"])
            .arg(&self.dir)
            .arg("--addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        if let Some(b) = &self.bwlimit {
            c.arg("--bwlimit").arg(b);
        }
        // SAFETY: prctl is async-signal-safe. The server dies with the thread that started it.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(c.spawn().expect("start rclone serve"));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let ready = poll(READY_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("rclone serve exited with {status}: {}", self.log_text());
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            ready,
            "rclone serve did not listen on {addr}: {}",
            self.log_text()
        );
    }

    /// Kills the server (its whole process group) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group of our own child.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RcloneServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on right now: bind port 0, read it, let it go.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().unwrap().port()
}
