//! One long-lived `rclone rcd` per provider, driven over HTTP on a loopback port.
//!
//! A spawned rclone costs 47-230 ms and a fresh login; an rc call on a running one costs about
//! 1-12 ms and shares one connection pool and one OAuth token (refreshed once, by one
//! process). The daemon listens on `127.0.0.1` on a port the kernel picks, with a user and a
//! random password passed in its environment (not on its command line, which other users
//! can read), and `--rc-serve` for ranged reads (`GET /[remote]/path` with a `Range` header).
//!
//! The provider's remote is given to the daemon as an alias remote, [`TARGET`], defined in its
//! environment: every call names `TARGET` and never the remote itself, which may be a
//! connection string with a URL in it (`:webdav,url='http://...':`), and a `//` in a served
//! path makes Go's HTTP server redirect the request without its credentials.
//!
//! It is a [`ChildProc`]: its own process group, `PR_SET_PDEATHSIG`, killed when dropped, so
//! it dies with offsite. The death signal follows the *thread* that spawned it: [`Daemon::start`]
//! runs on a runtime thread (never a `spawn_blocking` one, which may exit when idle).
//!
//! HTTP calls are blocking `ureq` calls on tokio's blocking pool. A call whose future is
//! dropped (a timeout, a cancelled run) sets a flag that the body reader and writer check
//! between chunks, so the transfer stops within one chunk.

use crate::process::{ChildProc, Logged};
use bytes::Bytes;
use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// How long rclone may take to start listening. It starts in well under a second; a busy
/// machine or a slow config decryption may take longer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The read and write unit of a transfer, and so how soon a dropped call stops.
const CHUNK: usize = 1 << 20;

/// The alias remote that stands for the provider's remote inside the daemon: a name no one
/// gives a remote of their own (one of that name in rclone's config is shadowed).
pub const TARGET: &str = "offsiteprovidertarget:";

/// Why an rc call failed.
#[derive(Debug)]
pub enum RcError {
    /// rclone answered with this HTTP status and message (404: no such object or directory).
    Status(u16, String),
    /// The daemon did not answer, or the connection broke.
    Transport(String),
}

impl std::fmt::Display for RcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RcError::Status(code, msg) => write!(f, "rclone rc answered {code}: {msg}"),
            RcError::Transport(msg) => write!(f, "rclone rc did not answer: {msg}"),
        }
    }
}

pub struct Daemon {
    base: String,
    auth: String,
    agent: ureq::Agent,
    proc: std::sync::Mutex<ChildProc>,
}

impl Daemon {
    /// Starts `program rcd` with `global_args` (the provider's flags) and [`TARGET`] standing
    /// for `remote`, and waits until it listens. `label` names it in the log.
    pub async fn start(
        program: &Path,
        remote: &str,
        global_args: &[OsString],
        verbose: bool,
        label: String,
    ) -> Result<Daemon, String> {
        let pass = random_hex(16)?;
        let mut cmd = Command::new(program);
        cmd.args(global_args);
        if verbose {
            cmd.arg("-v");
        }
        cmd.args(["rcd", "--rc-addr", "127.0.0.1:0", "--rc-serve"])
            .env("RCLONE_RC_USER", "offsite")
            .env("RCLONE_RC_PASS", &pass)
            .env("RCLONE_CONFIG_OFFSITEPROVIDERTARGET_TYPE", "alias")
            .env("RCLONE_CONFIG_OFFSITEPROVIDERTARGET_REMOTE", remote)
            .env("TCELL_MINIMIZE", "1")
            .stdin(std::process::Stdio::null());
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let log = Logged {
            label,
            forward: verbose,
            noise: |l| l.contains("NOTICE: Config file") && l.contains("not found"),
            tap: Some(tx),
        };
        let mut proc =
            ChildProc::spawn_logged("rclone", &mut cmd, log).map_err(|e| e.to_string())?;
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.recv().await {
                if let Some(addr) = listening_address(&line) {
                    return Some(addr);
                }
            }
            None
        })
        .await;
        drop(lines);
        let base = match found {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                let why = proc.stderr_tail().await;
                return Err(format!("rclone rcd ended at start: {}", why.trim()));
            }
            Err(_) => {
                return Err(format!(
                    "rclone rcd did not listen within {}s",
                    START_TIMEOUT.as_secs()
                ))
            }
        };
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("offsite:{pass}"));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .max_idle_connections_per_host(64)
            .build();
        Ok(Daemon {
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Basic {token}"),
            agent,
            proc: std::sync::Mutex::new(proc),
        })
    }

    /// Whether the daemon still runs (one that crashed is replaced by the caller).
    pub fn alive(&self) -> bool {
        !self.proc.lock().expect("daemon lock").has_exited()
    }

    /// Calls rc method `method` (`operations/list`, ...) with JSON `params`.
    pub async fn call(&self, method: &str, params: serde_json::Value) -> Result<Vec<u8>, RcError> {
        let req = self
            .agent
            .post(&format!("{}/{method}", self.base))
            .set("Authorization", &self.auth)
            .set("Content-Type", "application/json");
        blocking(move |_| {
            let resp = req.send_string(&params.to_string()).map_err(rc_error)?;
            let mut out = Vec::new();
            resp.into_reader()
                .read_to_end(&mut out)
                .map_err(|e| RcError::Transport(format!("reading the answer: {e}")))?;
            Ok(out)
        })
        .await
    }

    /// Reads `object` (a path below [`TARGET`]): `len` bytes from `offset`, or with `range`
    /// `None` the whole object up to `max` bytes (one more tells the caller it is larger).
    pub async fn read(
        &self,
        object: &str,
        range: Option<(u64, u64)>,
        max: u64,
    ) -> Result<Bytes, RcError> {
        let mut req = self
            .agent
            .get(&format!("{}/{}", self.base, serve_path(object)))
            .set("Authorization", &self.auth);
        if let Some((offset, len)) = range {
            req = req.set("Range", &format!("bytes={offset}-{}", offset + len - 1));
        }
        blocking(move |stop| {
            let resp = req.call().map_err(rc_error)?;
            let size: Option<u64> = resp.header("Content-Length").and_then(|l| l.parse().ok());
            let mut body = Stoppable {
                inner: resp.into_reader().take(max),
                stop,
            };
            // Sized up front: no reallocation, and so no copy, of a large piece.
            let want = size.map_or(max, |s| s.saturating_add(1).min(max));
            let mut buf = Vec::with_capacity(want.min(1 << 30) as usize);
            body.read_to_end(&mut buf)
                .map_err(|e| RcError::Transport(format!("reading the object: {e}")))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// Uploads `data` as `dir/name` below [`TARGET`] (`operations/uploadfile`: rclone streams
    /// it to the backend as it arrives). `progress` is called with the bytes sent so far.
    /// `config` overrides rclone options for this call (`_config`).
    pub async fn upload(
        &self,
        dir: &str,
        name: &str,
        data: Bytes,
        config: serde_json::Value,
        progress: Option<super::super::ProgressFn>,
    ) -> Result<(), RcError> {
        let boundary = format!("offsite-{}", random_hex(12).map_err(RcError::Transport)?);
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let total = head.len() + data.len() + tail.len();
        let url = format!(
            "{}/operations/uploadfile?fs={}&remote={}&_config={}",
            self.base,
            query(TARGET),
            query(dir),
            query(&config.to_string())
        );
        let req = self
            .agent
            .post(&url)
            .set("Authorization", &self.auth)
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .set("Content-Length", &total.to_string());
        blocking(move |stop| {
            let body = Body {
                parts: [Bytes::from(head), data, Bytes::from(tail)],
                at: 0,
                payload: 0,
                progress,
                stop,
            };
            req.send(body).map_err(rc_error)?;
            Ok(())
        })
        .await
    }
}

/// Runs `f` on the blocking pool with a flag that is set when the returned future is dropped.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce(Arc<AtomicBool>) -> Result<T, RcError> + Send + 'static,
) -> Result<T, RcError> {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = SetOnDrop(stop.clone());
    tokio::task::spawn_blocking(move || f(stop))
        .await
        .map_err(|e| RcError::Transport(format!("the call's thread failed: {e}")))?
}

/// A response body that stops when the call is dropped.
struct Stoppable<R> {
    inner: R,
    stop: Arc<AtomicBool>,
}

impl<R: Read> Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the call was dropped"));
        }
        let n = buf.len().min(CHUNK);
        self.inner.read(&mut buf[..n])
    }
}

/// A multipart upload body: head, data, tail, read in chunks, with progress on the data.
struct Body {
    parts: [Bytes; 3],
    at: usize,
    payload: u64,
    progress: Option<super::super::ProgressFn>,
    stop: Arc<AtomicBool>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the call was dropped"));
        }
        while self.at < 3 && self.parts[self.at].is_empty() {
            self.at += 1;
        }
        if self.at == 3 {
            return Ok(0);
        }
        let part = &mut self.parts[self.at];
        let n = buf.len().min(part.len()).min(CHUNK);
        buf[..n].copy_from_slice(&part.split_to(n));
        if self.at == 1 {
            self.payload += n as u64;
            if let Some(p) = &self.progress {
                p(self.payload);
            }
        }
        Ok(n)
    }
}

fn rc_error(e: ureq::Error) -> RcError {
    match e {
        ureq::Error::Status(code, resp) => {
            let text = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or(text);
            RcError::Status(code, msg)
        }
        ureq::Error::Transport(t) => RcError::Transport(t.to_string()),
    }
}

/// `http://127.0.0.1:PORT/` out of rclone's `Serving remote control on ...` line.
fn listening_address(line: &str) -> Option<String> {
    let rest = &line[line.find("Serving remote control on ")? + 26..];
    let addr = rest.split_whitespace().next()?;
    addr.starts_with("http://").then(|| addr.to_string())
}

/// The `--rc-serve` path of `object` below [`TARGET`], percent-encoded.
fn serve_path(object: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    format!(
        "[{TARGET}]/{}",
        utf8_percent_encode(object.trim_start_matches('/'), KEEP)
    )
}

fn query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let line = "2026/12/04 05:05:38 NOTICE: Serving remote control on http://127.0.0.1:43905/";
        assert_eq!(
            listening_address(line).as_deref(),
            Some("http://127.0.0.1:43905/")
        );
        assert_eq!(listening_address("NOTICE: something else"), None);
    }

    #[test]
    fn serve_paths_name_the_target_and_encode_the_object() {
        assert_eq!(
            serve_path("nas/a b/s000001.bin"),
            "[offsiteprovidertarget:]/nas/a%20b/s000001.bin"
        );
    }
}
