//! [`RcloneServer`]: `rclone serve webdav DIR` on a free loopback port, to test a provider that
//! is reached over the network (and one that goes away and comes back).
//!
//! The server runs in its own process group with `PR_SET_PDEATHSIG`; [`RcloneServer::stop`] and
//! `Drop` kill the group and reap it. Its port is checked free, then bound by rclone: a port
//! someone takes in between is detected (rclone's "address already in use", or no "started on"
//! line for our address) and another one is tried, so parallel tests and suites do not clash.

use super::procs::poll;
use super::real_rclone;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
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
        Self::start_on_ports(dir, bwlimit, std::iter::repeat_with(free_port))
    }

    /// Starts on the first of `ports` that the server can bind: a port taken between our check
    /// and rclone's bind ("address already in use") is released and the next one tried.
    fn start_on_ports(
        dir: &Path,
        bwlimit: Option<String>,
        ports: impl IntoIterator<Item = u16>,
    ) -> RcloneServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut log = dir.as_os_str().to_owned();
        log.push(".serve.log");
        let mut s = RcloneServer {
            dir: dir.to_path_buf(),
            port: 0,
            bwlimit,
            log: log.into(),
            child: None,
        };
        let mut tried = Vec::new();
        for port in ports.into_iter().take(PORT_ATTEMPTS) {
            s.port = port;
            match s.try_start() {
                Ok(()) => return s,
                Err(Clash) => {
                    release(port);
                    tried.push(port);
                }
            }
        }
        panic!(
            "rclone serve found every port taken ({tried:?}): {}",
            s.log_text()
        );
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
        if self.try_start().is_err() {
            panic!(
                "rclone serve could not take its port {} again (another process holds it): {}",
                self.port,
                self.log_text()
            );
        }
    }

    /// Starts rclone serve on `self.port` and waits until *it* listens there: its log says it
    /// started on that address (a connection alone could reach someone else's listener).
    /// `Err(Clash)` if the port was taken (rclone then exits with "address already in use").
    fn try_start(&mut self) -> Result<(), Clash> {
        assert!(self.child.is_none(), "server already running");
        let log_start = std::fs::metadata(&self.log).map_or(0, |m| m.len() as usize);
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
        let listening = format!("started on http://{addr}/");
        let mut clash = false;
        let ready = poll(READY_TIMEOUT, || {
            let new = self
                .log_text()
                .get(log_start..)
                .unwrap_or_default()
                .to_string();
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                clash = new.contains("address already in use");
                assert!(clash, "rclone serve exited with {status}: {new}");
                return true;
            }
            new.contains(&listening)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if clash {
            self.stop();
            return Err(Clash);
        }
        assert!(
            ready,
            "rclone serve did not listen on {addr}: {}",
            self.log_text()
        );
        Ok(())
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
        release(self.port);
    }
}

/// rclone serve could not bind its port: someone else took it.
struct Clash;

/// Ports tried before a server start gives up.
const PORT_ATTEMPTS: usize = 8;

/// Ports handed to a server of this test process and not yet released, so that two tests
/// never get the same one, even while one's server is stopped to be started again.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port nobody listens on right now and no other server of this process holds, below the
/// kernel's ephemeral range: bind(0) and outgoing connections never pick it, so only another
/// process choosing the same way can take it before rclone binds it (which
/// [`RcloneServer::start_on_ports`] detects and retries).
fn free_port() -> u16 {
    let top = ephemeral_start().clamp(2048, 65535);
    let bottom = top.saturating_sub(20_000).max(1024);
    for _ in 0..10_000 {
        let port = fastrand::u16(bottom..top);
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {bottom}..{top}");
}

fn release(port: u16) {
    TAKEN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&port);
}

/// The first port of `net.ipv4.ip_local_port_range` (32768 unless configured otherwise).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

#[test]
fn a_port_taken_before_rclone_binds_it_is_given_up_for_another() {
    let dir = tempfile::tempdir().unwrap();
    // Someone else listens on the first port offered, as if it took it after our check.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let ports = std::iter::once(taken).chain(std::iter::repeat_with(free_port));
    let server = RcloneServer::start_on_ports(&dir.path().join("dav"), None, ports);
    assert_ne!(server.port(), taken);
    std::fs::write(server.dir().join("hello"), "hi").unwrap();
    let out = Command::new(real_rclone())
        .args(["lsf", &server.remote()])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
