//! The real provider: one long-lived `rclone rcd` per provider (see `rclone/daemon.rs`) for
//! listings, ranged reads, deletes, copies and, where rclone streams them, uploads; a spawned
//! `rclone` per operation for the rest, or for everything with `$OFFSITE_RCLONE_DAEMON=0`.
//!
//! Uploads go through the daemon (`operations/uploadfile`) on backends where rclone streams
//! an upload of unknown size without spooling it to disk or buffering large chunks (local,
//! sftp, s3, and webdav where it can stream), and through `rclone rcat --size N` elsewhere,
//! which streams without spooling. rclone 1.60's `rcat --size` checks neither size nor hash
//! and treats end of input as success, so callers verify sizes from a listing before they
//! trust a shard (see `engine::backup`). On a plain local path offsite reads and writes the
//! files itself (`rclone/direct.rs`).

use super::{NativeHashes, ObjectInfo, ProgressFn, Provider, Usage};
use crate::config::{Config, ListHashes, ProviderConfig};
use crate::error::{ErrorKind, ProviderError};
use crate::layout::join_remote;
use crate::process::{ChildError, ChildProc};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

mod daemon;
mod direct;
use daemon::{Daemon, RcError, TARGET};

/// How much is written to rclone's stdin at a time, which is also the progress granularity.
const WRITE_CHUNK: usize = 1 << 20;

pub struct RcloneProvider {
    name: String,
    remote: String,
    program: PathBuf,
    global_args: Vec<OsString>,
    list_hashes: ListHashes,
    /// What the backend can do, asked once (`operations/fsinfo`).
    info: tokio::sync::OnceCell<Backend>,
    /// The provider's `rclone rcd`, started on first use and again if it died; `None` inside
    /// when offsite runs one rclone per operation.
    daemon: Option<tokio::sync::Mutex<Option<Arc<Daemon>>>>,
    /// The `timeout` key: no read or write on the daemon's connection waits longer, so a
    /// call the Timeout layer gave up on does not hold its thread beyond it.
    timeout: std::time::Duration,
    /// A plain local path whose objects offsite reads and writes itself (`direct`); else
    /// they go through rclone.
    direct: bool,
}

/// What a backend can do, as far as offsite cares.
#[derive(Debug, Clone, Default)]
struct Backend {
    /// Hash types it lists without reading the objects (for `list_hashes = "auto"`).
    fast_hashes: Vec<&'static str>,
    /// Its hashes are computed by reading the object back (local, sftp).
    slow_hash: bool,
    /// rclone streams an upload of unknown size to it without spooling or large buffers.
    streams_uploads: bool,
    /// A local disk (rclone's `IsLocal`).
    local: bool,
}

/// From this size on, an upload to a local disk runs as its own `rcat --size`: there the cost
/// per byte rules, and rclone reads an rc upload (a multipart form) in 4 KiB steps, 3.4x the
/// CPU of `rcat` (1 GiB: 1.86 s against 0.55 s). Below it, and on network backends, where a
/// spawned rclone's start-up and fresh connection cost more than that, uploads go through
/// the daemon.
const LOCAL_RCAT_FROM: usize = 32 << 20;

/// Below this size (rclone's default `--streaming-upload-cutoff`) rclone reads an rc upload
/// into memory and sends it with its size known, on every backend: manifests and probes go
/// through the daemon even where shards cannot.
const SMALL_UPLOAD: usize = 100 << 10;

/// The backends whose streaming upload (`PutStream`) neither spools to disk nor holds large
/// chunks in memory: local and sftp write as they read, s3 buffers one 5 MiB part per upload
/// thread, webdav streams where rclone says it can. Others (b2 buffers 96 MiB parts) use
/// `rcat --size`.
const STREAMING_BACKENDS: [&str; 4] = ["local", "sftp", "s3", "webdav"];

/// `$OFFSITE_RCLONE_DAEMON=0`: one rclone per operation, as before the daemon.
fn daemon_wanted() -> bool {
    std::env::var("OFFSITE_RCLONE_DAEMON").map_or(true, |v| v != "0")
}

/// `-vv`: rclone runs with its own `-v`, and its stderr is logged line by line.
fn verbose_rclone() -> bool {
    tracing::enabled!(tracing::Level::TRACE)
}

/// rclone 1.60 says `NOTICE: Config file "..." not found - using defaults` on every run
/// without a config file, which is normal for local and connection-string remotes: not an
/// error, never shown.
fn is_config_notice(line: &str) -> bool {
    line.contains("NOTICE: Config file") && line.contains("not found - using defaults")
}

impl RcloneProvider {
    pub fn new(cfg: &Config, p: &ProviderConfig) -> Self {
        let mut r = Self::from_parts(&cfg.rclone, cfg.rclone_config.as_deref(), p);
        r.timeout = cfg.timeout;
        r
    }

    pub fn from_parts(
        program: &std::path::Path,
        rclone_config: Option<&std::path::Path>,
        p: &ProviderConfig,
    ) -> Self {
        let mut global_args: Vec<OsString> = Vec::new();
        if let Some(c) = rclone_config {
            global_args.push("--config".into());
            global_args.push(c.into());
        }
        if let Some(b) = &p.bwlimit {
            global_args.push("--bwlimit".into());
            global_args.push(b.into());
        }
        // offsite retries itself, per shard and with the data in memory.
        global_args.push("--retries".into());
        global_args.push("1".into());
        global_args.extend(p.flags.iter().map(OsString::from));
        crate::redact::register(&p.remote, &p.flags);
        RcloneProvider {
            name: p.name.clone(),
            remote: p.remote.clone(),
            program: program.to_path_buf(),
            global_args,
            list_hashes: p.list_hashes,
            info: tokio::sync::OnceCell::new(),
            daemon: daemon_wanted().then(|| tokio::sync::Mutex::new(None)),
            timeout: crate::config::DEFAULT_TIMEOUT,
            direct: daemon_wanted() && direct_allowed(p),
        }
    }

    /// Every object through rclone, read and written by the daemon (as on a remote that is
    /// not a plain path).
    pub fn without_direct(mut self) -> Self {
        self.direct = false;
        self
    }

    /// One rclone per operation, as with `$OFFSITE_RCLONE_DAEMON=0`.
    pub fn without_daemon(mut self) -> Self {
        self.daemon = None;
        self.direct = false;
        self
    }

    /// The provider's running daemon (`None`: one rclone per operation), started if needed.
    async fn daemon(
        &self,
        op: &'static str,
        path: &str,
    ) -> Result<Option<Arc<Daemon>>, ProviderError> {
        let Some(slot) = &self.daemon else {
            return Ok(None);
        };
        let mut slot = slot.lock().await;
        if let Some(d) = slot.as_ref().filter(|d| d.alive()) {
            return Ok(Some(d.clone()));
        }
        let verbose = verbose_rclone().then_some(std::ffi::OsStr::new("-v"));
        let rcd = std::ffi::OsStr::new("rcd");
        let args = self.global_args.iter().map(OsString::as_os_str);
        let label = self.label(args.chain(verbose).chain([rcd]));
        let started = std::time::Instant::now();
        let d = Daemon::start(
            &self.program,
            &self.remote,
            &self.global_args,
            verbose_rclone(),
            label.clone(),
            self.timeout,
        )
        .await
        .map_err(|e| {
            // A program that is not there, or flags rclone refuses, will not start next time.
            let kind = if e.contains("could not start") || permanent_complaint(&e).is_some() {
                ErrorKind::Permanent
            } else {
                ErrorKind::Transient
            };
            self.failed(op, path, kind, &e)
        })?;
        tracing::debug!(
            "{label}: listening after {:.2}s",
            started.elapsed().as_secs_f64()
        );
        let d = Arc::new(d);
        *slot = Some(d.clone());
        Ok(Some(d))
    }

    /// Classifies a failed rc call like a failed rclone: not found, permanent by rclone's
    /// words, else worth another attempt.
    fn rc_error(&self, op: &'static str, path: &str, e: RcError) -> ProviderError {
        let kind = match &e {
            RcError::Status(404, _) => ErrorKind::NotFound,
            RcError::Status(_, m) if m.contains("object not found") => ErrorKind::NotFound,
            RcError::Status(_, m) if permanent_complaint(m).is_some() => ErrorKind::Permanent,
            // A plain 404 from --rc-serve is any failure to open the object.
            RcError::Status(..) | RcError::Plain(..) | RcError::Transport(_) => {
                ErrorKind::Transient
            }
        };
        self.failed(op, path, kind, &e.to_string())
    }

    /// A provider error with rclone's words `what` (which may quote the remote or a flag)
    /// passed through `redact`.
    fn failed(&self, op: &'static str, path: &str, kind: ErrorKind, what: &str) -> ProviderError {
        ProviderError::new(&self.name, op, path, kind, crate::redact::text(what))
    }

    /// Calls rc `method` on the daemon, logged like a spawned rclone at `-v`.
    async fn rc(
        &self,
        d: &Daemon,
        op: &'static str,
        path: &str,
        method: &str,
        params: serde_json::Value,
    ) -> Result<Vec<u8>, ProviderError> {
        let call = d.call(method, params);
        self.logged(op, path, method, call).await
    }

    /// Awaits `call` to the daemon, logs it at `-v` (what, outcome, duration) like a spawned
    /// rclone, and classifies its failure.
    async fn logged<T>(
        &self,
        op: &'static str,
        path: &str,
        what: &str,
        call: impl std::future::Future<Output = Result<T, RcError>>,
    ) -> Result<T, ProviderError> {
        let started = std::time::Instant::now();
        let r = call.await;
        tracing::debug!(
            "provider {}: rclone rc {what} {}: {} after {:.2}s",
            self.name,
            crate::redact::text(path),
            if r.is_ok() { "ok" } else { "failed" },
            started.elapsed().as_secs_f64()
        );
        r.map_err(|e| self.rc_error(op, path, e))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.global_args);
        if verbose_rclone() {
            c.arg("-v");
        }
        c.args(args).stdin(Stdio::null());
        // rclone 1.60 builds a terminal lookup table at start-up (tcell's init): a third of the
        // CPU a short rclone run costs, for a UI it never shows here.
        c.env("TCELL_MINIMIZE", "1");
        c
    }

    fn target(&self, path: &str) -> String {
        join_remote(&self.remote, path)
    }

    /// How an rclone with `args` is named in the log: the provider, and the command line with
    /// its secrets masked.
    fn label<'a>(&self, args: impl Iterator<Item = &'a std::ffi::OsStr>) -> String {
        let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        let shown = crate::redact::text(&crate::redact::flags(&args).join(" "));
        format!("provider {}: rclone {shown}", self.name)
    }

    fn spawn(
        &self,
        op: &'static str,
        path: &str,
        cmd: &mut Command,
    ) -> Result<ChildProc, ProviderError> {
        let log = crate::process::Logged {
            label: self.label(cmd.as_std().get_args()),
            forward: verbose_rclone(),
            noise: is_config_notice,
            tap: None,
        };
        tracing::trace!("{}: started", log.label);
        ChildProc::spawn_logged("rclone", cmd, log).map_err(|e| self.error(op, path, e))
    }

    /// Classifies a failed rclone by its documented exit codes: 3 and 4 are not-found, 6 and 7
    /// are no-retry and fatal, and everything else (5 included) is worth another attempt.
    /// rclone's stderr may quote the remote or a flag: it passes through `redact` first.
    fn error(&self, op: &'static str, path: &str, e: ChildError) -> ProviderError {
        let kind = match e.status {
            Some(3) | Some(4) => ErrorKind::NotFound,
            Some(6) | Some(7) => ErrorKind::Permanent,
            _ if e.not_started() => ErrorKind::Permanent,
            _ if permanent_complaint(&e.stderr).is_some() => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
        self.failed(op, path, kind, &e.to_string())
    }

    /// `rclone listremotes` run with this provider's flags: the remotes its rclone config
    /// defines (`name:` each), or rclone's complaint about the flags (an unknown flag, a bad
    /// `--bwlimit`). One short rclone run, nothing touched on the remote.
    pub async fn list_remotes(&self) -> Result<Vec<String>, ProviderError> {
        let out = self.output("check", "", &["listremotes"]).await?;
        let text = String::from_utf8_lossy(&out);
        Ok(text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// The remote path this provider writes under.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    async fn put_inner(
        &self,
        path: &str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> Result<(), ProviderError> {
        let behind = super::priority::now();
        if behind {
            tracing::debug!(
                "provider {}: uploading {} at a lower CPU priority: others are ahead",
                self.name,
                crate::redact::text(path)
            );
        }
        if let Some(file) = self.direct_file(path) {
            let len = data.len() as u64;
            direct::write(&self.name, file, path, data, behind).await?;
            if let Some(p) = &progress {
                p(len);
            }
            return Ok(());
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if simple_name(name) {
            if let Some(d) = self.daemon("upload", path).await? {
                let backend = self.backend().await;
                let big_local = backend.local && data.len() >= LOCAL_RCAT_FROM;
                if data.len() < SMALL_UPLOAD || (backend.streams_uploads && !big_local) {
                    // Where hashes cost a read-back (local, sftp), rclone skips its own
                    // compare: offsite checks the size from a listing, the hash on restore.
                    let config = serde_json::json!({ "IgnoreChecksum": backend.slow_hash });
                    d.yield_cpu(behind);
                    let call = d.upload(dir, name, data, config, progress);
                    let what = "operations/uploadfile";
                    return self.logged("upload", path, what, call).await;
                }
            }
        }
        let size = data.len().to_string();
        let target = self.target(path);
        let mut cmd = self.command(&["rcat", "--size", &size, &target]);
        cmd.stdin(Stdio::piped());
        if behind {
            super::priority::start_lowered(&mut cmd);
        }
        let mut child = self.spawn("upload", path, &mut cmd)?;
        let mut stdin = child.take_stdin().expect("stdin is piped");
        let mut sent = 0usize;
        let mut write_err = None;
        for chunk in data.chunks(WRITE_CHUNK) {
            if let Err(e) = stdin.write_all(chunk).await {
                write_err = Some(e);
                break;
            }
            sent += chunk.len();
            if let Some(p) = &progress {
                p(sent as u64);
            }
        }
        drop(stdin);
        // rclone's own error explains a broken pipe better than the pipe does.
        child
            .finish()
            .await
            .map_err(|e| self.error("upload", path, e))?;
        match write_err {
            Some(e) => Err(ProviderError::new(
                &self.name,
                "upload",
                path,
                ErrorKind::Transient,
                format!("writing to rclone: {e}"),
            )),
            None => Ok(()),
        }
    }

    async fn get_inner(&self, path: &str, limit: u64) -> Result<Bytes, ProviderError> {
        if let Some(file) = self.direct_file(path) {
            return direct::read(&self.name, file, path, None, limit).await;
        }
        let target = self.target(path);
        // One byte more than the limit tells an oversized object from one that fits.
        let max = limit.saturating_add(1);
        let buf = match self.daemon("download", path).await? {
            Some(d) => self.read(&d, path, None, max).await?,
            None => self.cat(path, &["cat", &target], max).await?,
        };
        if buf.len() as u64 > limit {
            return Err(ProviderError::new(
                &self.name,
                "download",
                path,
                ErrorKind::Permanent,
                format!("object is larger than the expected {limit} bytes"),
            ));
        }
        Ok(buf)
    }

    /// `rclone cat --offset --count`: a ranged read (an HTTP range request where the backend
    /// has them).
    async fn get_range_inner(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, ProviderError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        if let Some(file) = self.direct_file(path) {
            return direct::read(&self.name, file, path, Some((offset, len)), 0).await;
        }
        if let Some(d) = self.daemon("download", path).await? {
            return self.read(&d, path, Some((offset, len)), len).await;
        }
        let target = self.target(path);
        let (offset, count) = (offset.to_string(), len.to_string());
        self.cat(
            path,
            &["cat", "--offset", &offset, "--count", &count, &target],
            len,
        )
        .await
    }

    /// The file to read object `path` from directly (the path rclone's local backend uses),
    /// where `direct` allows it.
    fn direct_file(&self, path: &str) -> Option<PathBuf> {
        (self.direct && direct::stored_as_is(path)).then(|| PathBuf::from(self.target(path)))
    }

    /// A read through the daemon's `--rc-serve`, logged like a spawned rclone at `-v`.
    async fn read(
        &self,
        d: &Daemon,
        path: &str,
        range: Option<(u64, u64)>,
        max: u64,
    ) -> Result<Bytes, ProviderError> {
        let what = match range {
            Some((offset, len)) => format!("GET bytes {offset}+{len}"),
            None => "GET".to_string(),
        };
        let call = d.read(path, range, max);
        self.logged("download", path, &what, call).await
    }

    /// Runs `rclone ARGS` (a `cat`) for `path` and reads at most `max` bytes of its output. The
    /// pipe is closed before waiting, so an rclone with more to say gets EPIPE, not a hang.
    async fn cat(&self, path: &str, args: &[&str], max: u64) -> Result<Bytes, ProviderError> {
        let mut child = self.spawn("download", path, &mut self.command(args))?;
        let mut stdout = child.take_stdout().expect("stdout is piped").take(max);
        let mut buf = bytes::BytesMut::with_capacity(max.min(1 << 30) as usize);
        // Not one more read once `max` bytes are in: `read_buf` on a full BytesMut reserves
        // room first, which moves the whole buffer into one twice its size (measured: a
        // third of a local restore's CPU went to zeroing the pages of those copies).
        let read = async {
            while (buf.len() as u64) < max && stdout.read_buf(&mut buf).await? > 0 {}
            std::io::Result::Ok(())
        }
        .await;
        drop(stdout);
        child
            .finish()
            .await
            .map_err(|e| self.error("download", path, e))?;
        read.map_err(|e| {
            ProviderError::new(
                &self.name,
                "download",
                path,
                ErrorKind::Transient,
                e.to_string(),
            )
        })?;
        Ok(buf.freeze())
    }

    async fn output(
        &self,
        op: &'static str,
        path: &str,
        args: &[&str],
    ) -> Result<Vec<u8>, ProviderError> {
        let mut child = self.spawn(op, path, &mut self.command(args))?;
        let mut stdout = child.take_stdout().expect("stdout is piped");
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out).await;
        child.finish().await.map_err(|e| self.error(op, path, e))?;
        read.map_err(|e| {
            ProviderError::new(&self.name, op, path, ErrorKind::Transient, e.to_string())
        })?;
        Ok(out)
    }

    /// The hash types a hashed listing asks for, per the `list_hashes` key.
    async fn hash_types(&self) -> Vec<&'static str> {
        match self.list_hashes {
            ListHashes::Never => Vec::new(),
            ListHashes::Always => vec!["MD5", "SHA-1"],
            ListHashes::Auto => self.backend().await.fast_hashes,
        }
    }

    /// The hashes [`Self::hash_types`] lists, found the same way; [`NativeHashes::ALL`] while
    /// the backend's features are unknown (asking failed: a provider down now may answer later).
    async fn native(&self) -> NativeHashes {
        let types = match self.list_hashes {
            ListHashes::Never => return NativeHashes::NONE,
            ListHashes::Always => return NativeHashes::ALL,
            // A plain local path: rclone's local backend computes its hashes by reading.
            ListHashes::Auto if self.direct => return NativeHashes::NONE,
            ListHashes::Auto => match self.try_backend().await {
                Ok(b) => b.fast_hashes,
                Err(e) => {
                    tracing::debug!(
                        "provider {}: backend features unknown, so a backup records MD5 and SHA-1: {e}",
                        self.name
                    );
                    return NativeHashes::ALL;
                }
            },
        };
        NativeHashes {
            md5: types.contains(&"MD5"),
            sha1: types.contains(&"SHA-1"),
        }
    }

    /// What the backend can do: asked once, and again on the next call if asking failed (a
    /// provider down now may answer later; meanwhile it lists no hashes and uploads by rcat).
    async fn backend(&self) -> Backend {
        self.try_backend().await.unwrap_or_else(|e| {
            tracing::debug!("provider {}: backend features unknown: {e}", self.name);
            Backend::default()
        })
    }

    /// [`Self::backend`], or why asking failed.
    async fn try_backend(&self) -> Result<Backend, ProviderError> {
        self.info
            .get_or_try_init(|| async {
                let (out, kind) = match self.daemon("features", "").await? {
                    Some(d) => {
                        let params = serde_json::json!({ "fs": TARGET });
                        let out = self
                            .rc(&d, "features", "", "operations/fsinfo", params)
                            .await?;
                        (out, self.backend_type(&d).await?)
                    }
                    None => {
                        let args = ["backend", "features", self.remote.as_str()];
                        (self.output("features", "", &args).await?, String::new())
                    }
                };
                Ok::<_, ProviderError>(parse_backend(&out, &kind))
            })
            .await
            .cloned()
    }

    /// The backend's type (`local`, `s3`, ...): from a connection string (`:s3,...:`) or a
    /// path as written, else from rclone's config (`config/get`).
    async fn backend_type(&self, d: &Daemon) -> Result<String, ProviderError> {
        match remote_name(&self.remote) {
            RemoteName::Type(t) => Ok(t.to_string()),
            RemoteName::Local => Ok("local".to_string()),
            RemoteName::Named(name) => {
                let params = serde_json::json!({ "name": name });
                let out = self.rc(d, "features", "", "config/get", params).await?;
                #[derive(Deserialize)]
                struct Section {
                    #[serde(default)]
                    r#type: String,
                }
                Ok(serde_json::from_slice::<Section>(&out)
                    .map(|s| s.r#type)
                    .unwrap_or_default())
            }
        }
    }

    /// `rclone lsjson -R`; with `hashes` (rclone's names: MD5, SHA-1), those too (`--hash`).
    async fn list_inner(
        &self,
        dir: &str,
        hashes: &[&str],
    ) -> Result<Vec<ObjectInfo>, ProviderError> {
        if let Some(d) = self.daemon("list", dir).await? {
            return self.list_rc(&d, dir, hashes).await;
        }
        let target = self.target(dir);
        let mut args = vec![
            "lsjson",
            "-R",
            "--files-only",
            "--no-mimetype",
            "--no-modtime",
        ];
        if !hashes.is_empty() {
            args.push("--hash");
        }
        for h in hashes {
            args.extend(["--hash-type", h]);
        }
        args.push(&target);
        let out = match self.output("list", dir, &args).await {
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            other => other?,
        };
        parse_lsjson(&out).map_err(|e| {
            ProviderError::new(
                &self.name,
                "list",
                dir,
                ErrorKind::Transient,
                format!("rclone lsjson output does not parse: {e}"),
            )
        })
    }

    /// `operations/list`, recursive, files only: what `lsjson -R` prints, inside `{"list"}`.
    async fn list_rc(
        &self,
        d: &Daemon,
        dir: &str,
        hashes: &[&str],
    ) -> Result<Vec<ObjectInfo>, ProviderError> {
        let params = serde_json::json!({
            "fs": TARGET,
            "remote": dir,
            "opt": {
                "recurse": true,
                "filesOnly": true,
                "noMimeType": true,
                "noModTime": true,
                "showHash": !hashes.is_empty(),
                "hashTypes": hashes,
            },
        });
        let out = match self.rc(d, "list", dir, "operations/list", params).await {
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            other => other?,
        };
        #[derive(Deserialize)]
        struct Listing {
            list: Vec<LsEntry>,
        }
        // rc lists paths from the remote's root; `lsjson DIR` from DIR.
        let prefix = format!("{}/", dir.trim_matches('/'));
        let relative = |mut e: LsEntry| {
            if prefix != "/" {
                if let Some(rest) = e.path.strip_prefix(&prefix) {
                    e.path = rest.to_string();
                }
            }
            e
        };
        serde_json::from_slice::<Listing>(&out)
            .map(|l| objects(l.list.into_iter().map(relative).collect()))
            .map_err(|e| {
                ProviderError::new(
                    &self.name,
                    "list",
                    dir,
                    ErrorKind::Transient,
                    format!("rclone's listing does not parse: {e}"),
                )
            })
    }

    async fn delete_inner(&self, path: &str) -> Result<(), ProviderError> {
        let target = self.target(path);
        let deleted = match self.daemon("delete", path).await? {
            Some(d) => {
                let params = serde_json::json!({ "fs": TARGET, "remote": path });
                let r = self.rc(&d, "delete", path, "operations/deletefile", params);
                r.await.map(drop)
            }
            None => self
                .output("delete", path, &["deletefile", &target])
                .await
                .map(drop),
        };
        match deleted {
            // rclone 1.60 exits 1 (not 4) for a missing object on some backends.
            Err(e)
                if e.is_not_found()
                    || e.message.contains("doesn't exist")
                    || e.message.contains("not found") =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    async fn copy_inner(
        &self,
        src_root: &str,
        src_path: &str,
        path: &str,
    ) -> Result<(), ProviderError> {
        if let Some(d) = self.daemon("copy", path).await? {
            let params = serde_json::json!({
                "srcFs": src_root,
                "srcRemote": src_path,
                "dstFs": TARGET,
                "dstRemote": path,
                "_config": { "IgnoreTimes": true },
            });
            let r = self.rc(&d, "copy", path, "operations/copyfile", params);
            return r.await.map(drop);
        }
        let src = join_remote(src_root, src_path);
        let dst = self.target(path);
        // --ignore-times: a damaged object of the same size and time is replaced too.
        self.output("copy", path, &["copyto", "--ignore-times", &src, &dst])
            .await
            .map(drop)
    }

    async fn about_inner(&self) -> Result<Usage, ProviderError> {
        let out = match self.daemon("about", "").await? {
            Some(d) => {
                let params = serde_json::json!({ "fs": TARGET });
                self.rc(&d, "about", "", "operations/about", params).await?
            }
            None => {
                self.output("about", "", &["about", "--json", &self.remote])
                    .await?
            }
        };
        serde_json::from_slice::<Usage>(&out).map_err(|e| {
            ProviderError::new(
                &self.name,
                "about",
                "",
                ErrorKind::Permanent,
                format!("rclone about output does not parse: {e}"),
            )
        })
    }
}

/// One entry of `rclone lsjson` (or rc `operations/list`) output.
#[derive(Deserialize)]
struct LsEntry {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Size")]
    size: i64,
    #[serde(rename = "Hashes", default)]
    hashes: Option<std::collections::HashMap<String, String>>,
}

/// Reads `rclone lsjson` output.
fn parse_lsjson(out: &[u8]) -> Result<Vec<ObjectInfo>, serde_json::Error> {
    serde_json::from_slice(out).map(objects)
}

/// A negative size (rclone's -1: unknown) counts as 0 bytes, so such an object never passes
/// for a whole shard.
fn objects(entries: Vec<LsEntry>) -> Vec<ObjectInfo> {
    entries
        .into_iter()
        .map(|mut e| {
            // rclone lists an empty string for a hash the backend does not have.
            let mut hash = |k: &str| {
                e.hashes
                    .as_mut()
                    .and_then(|m| m.remove(k))
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_ascii_lowercase())
            };
            let (md5, sha1) = (hash("md5"), hash("sha1"));
            ObjectInfo {
                path: e.path,
                size: e.size.max(0) as u64,
                md5,
                sha1,
            }
        })
        .collect()
}

/// Of `rclone backend features` (or rc `operations/fsinfo`) output, what offsite uses; the
/// backend's type `kind` decides whether uploads stream through the daemon.
fn parse_backend(out: &[u8], kind: &str) -> Backend {
    #[derive(Deserialize)]
    struct Features {
        #[serde(rename = "Features", default)]
        features: std::collections::HashMap<String, serde_json::Value>,
    }
    let feature = |name: &str| {
        serde_json::from_slice::<Features>(out)
            .is_ok_and(|f| f.features.get(name) == Some(&serde_json::Value::Bool(true)))
    };
    Backend {
        fast_hashes: parse_fast_hashes(out),
        slow_hash: feature("SlowHash"),
        streams_uploads: feature("PutStream") && STREAMING_BACKENDS.contains(&kind),
        local: feature("IsLocal"),
    }
}

/// Whether provider `p`'s objects may be read without rclone (`direct`), given this
/// process's environment.
fn direct_allowed(p: &ProviderConfig) -> bool {
    let vars: Vec<String> = (std::env::vars_os())
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let vars = vars.iter().map(String::as_str);
    direct::allowed(&p.remote, p.bwlimit.as_deref(), &p.flags, vars)
}

/// How a remote names its backend.
#[derive(Debug, PartialEq, Eq)]
enum RemoteName<'a> {
    /// A connection string, `:TYPE,opts:path`.
    Type(&'a str),
    /// A local path.
    Local,
    /// A remote of rclone's config, `NAME:path` or `NAME,opts:path`.
    Named(&'a str),
}

fn remote_name(remote: &str) -> RemoteName<'_> {
    let head = |s: &str| s.find([',', ':']).map_or(s.len(), |i| i);
    if let Some(rest) = remote.strip_prefix(':') {
        return RemoteName::Type(&rest[..head(rest)]);
    }
    match remote.find(':') {
        Some(colon) if !remote[..colon].contains('/') => RemoteName::Named(&remote[..head(remote)]),
        _ => RemoteName::Local,
    }
}

/// A file name rclone's `uploadfile` takes as it is (it keeps only a multipart file name's
/// last component, and a quote would end the header's value).
fn simple_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
}

/// Of `rclone backend features` output, the hash types offsite compares that the backend lists
/// without reading the objects: none when it reports SlowHash (local, sftp) or does not parse.
fn parse_fast_hashes(out: &[u8]) -> Vec<&'static str> {
    #[derive(Deserialize)]
    struct Features {
        #[serde(rename = "Hashes", default)]
        hashes: Vec<String>,
        #[serde(rename = "Features", default)]
        features: std::collections::HashMap<String, serde_json::Value>,
    }
    let Ok(f) = serde_json::from_slice::<Features>(out) else {
        return Vec::new();
    };
    if f.features.get("SlowHash") == Some(&serde_json::Value::Bool(true)) {
        return Vec::new();
    }
    [("md5", "MD5"), ("sha1", "SHA-1")]
        .into_iter()
        .filter(|(k, _)| f.hashes.iter().any(|h| h == k))
        .map(|(_, t)| t)
        .collect()
}

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            total: Option<u64>,
            used: Option<u64>,
            free: Option<u64>,
        }
        let r = Raw::deserialize(d)?;
        Ok(Usage {
            total: r.total,
            used: r.used,
            free: r.free,
        })
    }
}

impl Provider for RcloneProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.put_inner(path, data, progress))
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(self.get_inner(path, limit))
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(self.get_range_inner(path, offset, len))
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(self.list_inner(dir, &[]))
    }

    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(async move {
            let hashes = self.hash_types().await;
            self.list_inner(dir, &hashes).await
        })
    }

    fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
        Box::pin(self.native())
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.delete_inner(path))
    }

    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        Box::pin(self.about_inner())
    }

    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.copy_inner(src_root, src_path, path))
    }
}

#[cfg(test)]
mod fuzz;

/// What rclone's stderr says when retrying cannot help: its configuration or the account is
/// wrong (an unknown remote or flag, a refused login, no permission, no space). `None` for
/// anything else, which is worth another attempt.
pub fn permanent_complaint(stderr: &str) -> Option<&'static str> {
    const PERMANENT: [(&str, &str); 16] = [
        (
            "didn't find section in config file",
            "the remote is not in rclone's config",
        ),
        (
            "didn't find backend called",
            "the remote's type in rclone's config is not a backend this rclone has",
        ),
        ("unknown flag", "rclone does not know a flag"),
        ("invalid argument \"", "rclone refuses a flag's value"),
        (
            "unknown command",
            "rclone does not understand its command line",
        ),
        ("unknown shorthand flag", "rclone does not know a flag"),
        ("permission denied", "permission denied"),
        ("unable to authenticate", "the login is refused"),
        ("accessdenied", "access denied"),
        (
            "invalidaccesskeyid",
            "the access key is not known to the provider",
        ),
        ("signaturedoesnotmatch", "the secret key is wrong"),
        (
            "invalid_grant",
            "the OAuth token is revoked or expired: run `rclone config reconnect`",
        ),
        ("nosuchbucket", "the bucket does not exist"),
        ("quotaexceeded", "the account's storage quota is used up"),
        ("insufficient storage", "the provider has no space left"),
        ("no space left on device", "no space left on the device"),
    ];
    let lower = stderr.to_ascii_lowercase();
    PERMANENT
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod complaint_tests {
    use super::permanent_complaint;

    /// rclone 1.60's own words (captured from this machine) are permanent; a dropped
    /// connection is not.
    #[test]
    fn configuration_and_account_errors_are_permanent_and_network_errors_are_not() {
        let permanent = [
            "Failed to create file system for \"nosuch:x\": didn't find section in config file",
            "Fatal error: unknown flag: --nosuchflag",
            "Fatal error: invalid argument \"xyz\" for \"--bwlimit\" flag: bad suffix 'z'",
            "Failed to copy: open /mnt/x: permission denied",
            "googleapi: Error 403: The user's Drive storage quota has been exceeded., storageQuotaExceeded",
            "couldn't fetch token: invalid_grant: maybe token expired?",
        ];
        for p in permanent {
            assert!(permanent_complaint(p).is_some(), "{p}");
        }
        let transient = [
            "Failed to copy: Put \"http://127.0.0.1:8080/x\": dial tcp 127.0.0.1:8080: connect: connection refused",
            "googleapi: Error 403: Rate Limit Exceeded, rateLimitExceeded",
            "read: connection reset by peer",
        ];
        for t in transient {
            assert_eq!(permanent_complaint(t), None, "{t}");
        }
    }
}

#[cfg(test)]
mod daemon_tests {
    use super::*;

    fn config(remote: &str, flags: &[&str], list_hashes: ListHashes) -> ProviderConfig {
        ProviderConfig {
            name: "d".into(),
            remote: remote.into(),
            enabled: true,
            priority: 1,
            bwlimit: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            list_hashes,
            max_object_size: None,
        }
    }

    fn rclone() -> std::path::PathBuf {
        which::which("rclone").expect("rclone is installed by scripts/test.sh")
    }

    fn provider(root: &std::path::Path, flags: &[&str]) -> RcloneProvider {
        let p = config(&root.display().to_string(), flags, ListHashes::Never);
        RcloneProvider::from_parts(&rclone(), None, &p)
    }

    /// The daemon is found ready whatever the provider's flags do to rclone's log: silenced
    /// (`-q`), or moved to a file (`--log-file`, which also takes rclone's stderr).
    #[tokio::test]
    async fn the_daemon_answers_with_its_log_silenced_or_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rclone.log");
        let log = log.to_str().unwrap();
        for flags in [&["-q"][..], &["--log-file", log]] {
            let root = tempfile::tempdir().unwrap();
            let p = provider(root.path(), flags);
            p.put("a/b", Bytes::from_static(b"hello"), None)
                .await
                .unwrap();
            let listed = p.list("a").await.unwrap();
            assert_eq!(listed.len(), 1, "{flags:?}: {listed:?}");
            assert_eq!(p.get("a/b", 5).await.unwrap(), &b"hello"[..], "{flags:?}");
        }
    }

    /// A backup records the hashes `list_hashes` lists: by the key, else (`"auto"`) what the
    /// backend lists without reading its objects; all while that is unknown.
    #[tokio::test]
    async fn native_hashes_follow_list_hashes_and_the_backend() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().display().to_string();
        let native = |program: &std::path::Path, remote: &str, list_hashes| {
            let p = RcloneProvider::from_parts(program, None, &config(remote, &[], list_hashes));
            async move { p.native().await }
        };
        let md5 = NativeHashes {
            md5: true,
            sha1: false,
        };
        let local = format!(":local:{path}");
        for (remote, list_hashes, want) in [
            (path.as_str(), ListHashes::Auto, NativeHashes::NONE),
            (local.as_str(), ListHashes::Auto, NativeHashes::NONE),
            (":memory:", ListHashes::Auto, md5),
            (path.as_str(), ListHashes::Always, NativeHashes::ALL),
            (":memory:", ListHashes::Never, NativeHashes::NONE),
        ] {
            let got = native(&rclone(), remote, list_hashes).await;
            assert_eq!(got, want, "{remote} {list_hashes:?}");
        }
        let missing = root.path().join("no-rclone-here");
        let got = native(&missing, ":memory:", ListHashes::Auto).await;
        assert_eq!(got, NativeHashes::ALL, "features unknown");
    }

    /// A flag rclone refuses stops the daemon at start: a permanent error (no retries) with
    /// rclone's words, not a provider that is down.
    #[tokio::test]
    async fn a_flag_rclone_refuses_is_a_permanent_error_with_its_words() {
        let root = tempfile::tempdir().unwrap();
        let p = provider(root.path(), &["--no-such-flag"]);
        let e = p.list("a").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        assert!(e.message.contains("unknown flag"), "{e}");
    }

    /// rclone's JSON 404 means the object is not there; `--rc-serve`'s plain-text 404 is any
    /// failure to open it (a network error, a refused token): worth another attempt.
    #[test]
    fn only_rclone_s_own_404_means_not_found() {
        let root = tempfile::tempdir().unwrap();
        let p = provider(root.path(), &[]);
        let kind = |e| p.rc_error("download", "x", e).kind;
        assert_eq!(
            kind(RcError::Status(404, "object not found".into())),
            ErrorKind::NotFound
        );
        assert_eq!(
            kind(RcError::Plain(404, "Not Found\n".into())),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(RcError::Status(500, "AccessDenied: no".into())),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind(RcError::Transport("reset".into())),
            ErrorKind::Transient
        );
    }
}
