//! One long-lived `rclone rcd` per provider, driven over HTTP on a loopback port.
//!
//! A spawned rclone costs 47-230 ms and a fresh login; an rc call on a running one costs about
//! 1-12 ms and shares one connection pool and one OAuth token (refreshed once, by one
//! process). The daemon listens on a free `127.0.0.1` port offsite picks (rclone 1.60 has no
//! unix socket for rc; its log line naming the port may go elsewhere or be silenced by the
//! provider's `flags`), with a user and a random password passed in its environment (not on
//! its command line, which other users can read), and `--rc-serve` for ranged reads
//! (`GET /[remote]/path` with a `Range` header). It is ready when it says so on stderr or
//! answers an authenticated no-op, whichever comes first.
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
//! between chunks, so the transfer stops within one chunk, except in an upload's first
//! [`UPLOAD_CUTOFF`] bytes (see there); every read and write on the connection also ends
//! after the provider's `timeout`, so no thread waits on a stuck rclone for longer.

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

/// rclone's `--streaming-upload-cutoff` (100 KiB): an rc upload whose body ends before this
/// many bytes, even by a dropped connection, is stored as a whole small file (1.60's `Rcat`
/// takes the short read for the end of a small file). So an upload is never broken off
/// before it has sent more than this: a small one is sent whole, and a larger one then fails
/// inside rclone's streaming upload, which removes what it wrote.
pub const UPLOAD_CUTOFF: u64 = 100 << 10;

/// How often a starting daemon is asked whether it is ready, when its log does not say so.
const READY_POLL: Duration = Duration::from_millis(50);

/// The alias remote that stands for the provider's remote inside the daemon: a name no one
/// gives a remote of their own (one of that name in rclone's config is shadowed).
pub const TARGET: &str = "offsiteprovidertarget:";

/// Why an rc call failed.
#[derive(Debug)]
pub enum RcError {
    /// rclone answered with this HTTP status and its JSON error (404: it looked for the object
    /// or directory and it is not there).
    Status(u16, String),
    /// rclone answered with this status and a plain-text body: `--rc-serve` answers every
    /// failure to open an object (a network error, a refused token) with `404 Not Found`, so
    /// such a 404 says nothing about whether the object exists.
    Plain(u16, String),
    /// The daemon did not answer, or the connection broke.
    Transport(String),
}

impl std::fmt::Display for RcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RcError::Status(code, msg) => write!(f, "rclone rc answered {code}: {msg}"),
            RcError::Plain(code, msg) => write!(
                f,
                "rclone answered {code} ({}) without saying why; `-vv` logs its reason",
                msg.trim()
            ),
            RcError::Transport(msg) => write!(f, "rclone rc did not answer: {msg}"),
        }
    }
}

pub struct Daemon {
    base: String,
    auth: String,
    agent: ureq::Agent,
    proc: std::sync::Mutex<ChildProc>,
    /// Runs at `provider::priority`'s lower priority.
    yielding: AtomicBool,
}

impl Daemon {
    /// Starts `program rcd` with `global_args` (the provider's flags) and [`TARGET`] standing
    /// for `remote`, and waits until it answers. `label` names it in the log; every read and
    /// write of a call ends after `timeout`. A port taken by another process between
    /// [`free_port`] and rclone's start is given up for another one, twice at most.
    pub async fn start(
        program: &Path,
        remote: &str,
        global_args: &[OsString],
        verbose: bool,
        label: String,
        timeout: Duration,
    ) -> Result<Daemon, String> {
        let mut tries = 0;
        loop {
            let port = free_port()?;
            let label = label.clone();
            let started =
                Self::start_on(port, program, remote, global_args, verbose, label, timeout);
            match started.await {
                Err(e) if e.contains("address already in use") && tries < 2 => tries += 1,
                other => return other,
            }
        }
    }

    async fn start_on(
        port: u16,
        program: &Path,
        remote: &str,
        global_args: &[OsString],
        verbose: bool,
        label: String,
        timeout: Duration,
    ) -> Result<Daemon, String> {
        let pass = password()?;
        let mut cmd = Command::new(program);
        cmd.args(global_args);
        if verbose {
            cmd.arg("-v");
        }
        cmd.args([
            "rcd",
            "--rc-addr",
            &format!("127.0.0.1:{port}"),
            "--rc-serve",
        ])
        .env("RCLONE_RC_USER", "offsite")
        .env("RCLONE_RC_PASS", &pass)
        .env("RCLONE_CONFIG_OFFSITEPROVIDERTARGET_TYPE", "alias")
        .env("RCLONE_CONFIG_OFFSITEPROVIDERTARGET_REMOTE", remote)
        .env("TCELL_MINIMIZE", "1")
        .stdin(std::process::Stdio::null());
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let log = Logged {
            label,
            forward: verbose,
            noise: super::is_config_notice,
            tap: Some(tx),
        };
        let proc = ChildProc::spawn_logged("rclone", &mut cmd, log).map_err(|e| e.to_string())?;
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("offsite:{pass}"));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(timeout)
            .timeout_write(timeout)
            .max_idle_connections_per_host(64)
            .build();
        let daemon = Daemon {
            base: format!("http://127.0.0.1:{port}"),
            auth: format!("Basic {token}"),
            agent,
            proc: std::sync::Mutex::new(proc),
            yielding: AtomicBool::new(false),
        };
        let ready = tokio::time::timeout(START_TIMEOUT, daemon.ready(lines)).await;
        match ready {
            Ok(true) => Ok(daemon),
            Ok(false) => {
                let mut proc = daemon.proc.into_inner().expect("daemon lock");
                let why = proc.stderr_tail().await;
                let why = Some(why.trim()).filter(|w| !w.is_empty());
                Err(format!(
                    "rclone rcd ended at start: {}",
                    why.unwrap_or("(no error output)")
                ))
            }
            Err(_) => Err(format!(
                "rclone rcd did not answer within {}s",
                START_TIMEOUT.as_secs()
            )),
        }
    }

    /// Waits until the daemon says on stderr that it serves, or answers an authenticated
    /// no-op; `false` when it exits first. (With `--log-file` in the flags, rclone moves its
    /// stderr to the file: then only the no-op tells.)
    async fn ready(&self, mut lines: tokio::sync::mpsc::UnboundedReceiver<String>) -> bool {
        let mut log_open = true;
        loop {
            tokio::select! {
                line = lines.recv(), if log_open => match line {
                    Some(l) if l.contains("Serving remote control on") => return true,
                    Some(_) => {}
                    None => log_open = false,
                },
                _ = tokio::time::sleep(READY_POLL) => {
                    if self.call("rc/noopauth", serde_json::json!({})).await.is_ok() {
                        return true;
                    }
                    if !self.alive() {
                        return false;
                    }
                }
            }
        }
    }

    /// Lowers the daemon's CPU priority for an upload its provider is behind on, and raises it
    /// again for one it is not; nothing where offsite could not raise it again
    /// (`provider::priority::can_raise`).
    pub fn yield_cpu(&self, behind: bool) {
        use crate::provider::priority;
        // Most uploads change nothing: no lock for them.
        if self.yielding.load(Ordering::Relaxed) == behind || behind && !priority::can_raise() {
            return;
        }
        let proc = self.proc.lock().expect("daemon lock");
        if self.yielding.load(Ordering::Relaxed) == behind {
            return;
        }
        let nice = match behind {
            true => priority::yielding_nice(),
            false => priority::own_nice(),
        };
        match proc.set_nice(nice) {
            Ok(()) => self.yielding.store(behind, Ordering::Relaxed),
            Err(e) => tracing::debug!("rclone rcd: cannot set its nice value to {nice}: {e}"),
        }
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
        // Not a secret: it only must not occur in the data, which 128 random bits do not.
        let boundary = format!("offsite-{:032x}", fastrand::u128(..));
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
                reported: 0,
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

/// A multipart upload body: head, data, tail, read in chunks (ureq asks for 8 KiB at a
/// time), with progress on the data every [`CHUNK`] and at its end.
struct Body {
    parts: [Bytes; 3],
    at: usize,
    payload: u64,
    reported: u64,
    progress: Option<super::super::ProgressFn>,
    stop: Arc<AtomicBool>,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Not before rclone is past its small-file read (see UPLOAD_CUTOFF).
        if self.payload > UPLOAD_CUTOFF && self.stop.load(Ordering::Relaxed) {
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
            let end = part.is_empty();
            if let Some(p) = self
                .progress
                .as_ref()
                .filter(|_| end || self.payload - self.reported >= CHUNK as u64)
            {
                p(self.payload);
                self.reported = self.payload;
            }
        }
        Ok(n)
    }
}

fn rc_error(e: ureq::Error) -> RcError {
    match e {
        ureq::Error::Status(code, resp) => {
            let text = resp.into_string().unwrap_or_default();
            let said = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_string));
            match said {
                Some(msg) => RcError::Status(code, msg),
                None => RcError::Plain(code, text),
            }
        }
        ureq::Error::Transport(t) => RcError::Transport(t.to_string()),
    }
}

/// A port on 127.0.0.1 that nothing listens on now. Another process could take it before
/// rclone does; rclone then exits at start, and the call's retry starts a daemon on another.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1 for rclone rcd: {e}"))
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

/// The daemon's rc password: 128 bits from the kernel's random source.
fn password() -> Result<String, String> {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_body_is_head_data_tail_with_progress_every_mib_and_at_the_end() {
        let data = Bytes::from(vec![7u8; 3 * CHUNK + 5]);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let mut body = Body {
            parts: [Bytes::from("head"), data.clone(), Bytes::from("tail")],
            at: 0,
            payload: 0,
            reported: 0,
            progress: Some(Arc::new(move |n| record.lock().unwrap().push(n))),
            stop: Arc::new(AtomicBool::new(false)),
        };
        // As ureq reads it: 8 KiB at a time.
        let (mut out, mut buf) = (Vec::new(), [0u8; 8192]);
        loop {
            match body.read(&mut buf).unwrap() {
                0 => break,
                n => out.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(&out[..4], b"head");
        assert_eq!(&out[4..4 + data.len()], &data[..]);
        assert_eq!(&out[4 + data.len()..], b"tail");
        let seen = seen.lock().unwrap().clone();
        let mib = CHUNK as u64;
        assert_eq!(seen, vec![mib, 2 * mib, 3 * mib, data.len() as u64]);
    }

    #[test]
    fn a_dropped_call_stops_its_body_at_the_next_read_past_the_small_file_cutoff() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut body = Body {
            parts: [
                Bytes::new(),
                Bytes::from(vec![0u8; 4 * CHUNK]),
                Bytes::new(),
            ],
            at: 0,
            payload: 0,
            reported: 0,
            progress: None,
            stop: stop.clone(),
        };
        // Within rclone's small-file read, the body goes on: a break there would be stored.
        stop.store(true, Ordering::Relaxed);
        let mut buf = vec![0u8; UPLOAD_CUTOFF as usize];
        assert_eq!(body.read(&mut buf).unwrap(), UPLOAD_CUTOFF as usize);
        assert_eq!(body.read(&mut buf[..1]).unwrap(), 1);
        assert!(body.read(&mut buf).is_err());
    }

    #[test]
    fn serve_paths_name_the_target_and_encode_the_object() {
        assert_eq!(
            serve_path("nas/a b/s000001.bin"),
            "[offsiteprovidertarget:]/nas/a%20b/s000001.bin"
        );
    }
}
