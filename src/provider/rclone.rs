//! The real provider: one `rclone` child per operation.
//!
//! Uploads use `rclone rcat --size N`, which streams without spooling. rclone 1.60 checks
//! neither size nor hash and treats end of input as success, so callers verify sizes from a
//! listing before they trust a shard (see `engine::backup`).

use super::{ObjectInfo, ProgressFn, Provider, Usage};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much is written to rclone's stdin at a time, which is also the progress granularity.
const WRITE_CHUNK: usize = 1 << 20;

pub struct RcloneProvider {
    name: String,
    remote: String,
    program: PathBuf,
    global_args: Vec<OsString>,
    list_hashes: ListHashes,
    /// For `list_hashes = "auto"`: the hash types the backend lists cheaply, asked once.
    fast_hashes: tokio::sync::OnceCell<Vec<&'static str>>,
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
        Self::from_parts(&cfg.rclone, cfg.rclone_config.as_deref(), p)
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
            fast_hashes: tokio::sync::OnceCell::new(),
        }
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

    fn spawn(
        &self,
        op: &'static str,
        path: &str,
        cmd: &mut Command,
    ) -> Result<ChildProc, ProviderError> {
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let shown = crate::redact::text(&crate::redact::flags(&args).join(" "));
        let log = crate::process::Logged {
            label: format!("provider {}: rclone {shown}", self.name),
            forward: verbose_rclone(),
            noise: is_config_notice,
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
        ProviderError::new(
            &self.name,
            op,
            path,
            kind,
            crate::redact::text(&e.to_string()),
        )
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
        let size = data.len().to_string();
        let target = self.target(path);
        let mut cmd = self.command(&["rcat", "--size", &size, &target]);
        cmd.stdin(Stdio::piped());
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
        let target = self.target(path);
        // One byte more than the limit tells an oversized object from one that fits.
        let buf = self.cat(path, &["cat", &target], limit + 1).await?;
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
        let target = self.target(path);
        let (offset, count) = (offset.to_string(), len.to_string());
        self.cat(
            path,
            &["cat", "--offset", &offset, "--count", &count, &target],
            len,
        )
        .await
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
            ListHashes::Auto => self
                .fast_hashes
                .get_or_init(|| async {
                    let args = ["backend", "features", self.remote.as_str()];
                    match self.output("features", "", &args).await {
                        Ok(out) => parse_fast_hashes(&out),
                        Err(e) => {
                            tracing::debug!("provider {}: no hashes listed: {e}", self.name);
                            Vec::new()
                        }
                    }
                })
                .await
                .clone(),
        }
    }

    /// `rclone lsjson -R`; with `hashes` (rclone's names: MD5, SHA-1), those too (`--hash`).
    async fn list_inner(
        &self,
        dir: &str,
        hashes: &[&str],
    ) -> Result<Vec<ObjectInfo>, ProviderError> {
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

    async fn delete_inner(&self, path: &str) -> Result<(), ProviderError> {
        let target = self.target(path);
        match self.output("delete", path, &["deletefile", &target]).await {
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
        let src = join_remote(src_root, src_path);
        let dst = self.target(path);
        // --ignore-times: a damaged object of the same size and time is replaced too.
        self.output("copy", path, &["copyto", "--ignore-times", &src, &dst])
            .await
            .map(drop)
    }

    async fn about_inner(&self) -> Result<Usage, ProviderError> {
        let out = self
            .output("about", "", &["about", "--json", &self.remote])
            .await?;
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

/// Reads `rclone lsjson` output. A negative size (rclone's -1: unknown) counts as 0 bytes, so
/// such an object never passes for a whole shard.
fn parse_lsjson(out: &[u8]) -> Result<Vec<ObjectInfo>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Path")]
        path: String,
        #[serde(rename = "Size")]
        size: i64,
        #[serde(rename = "Hashes", default)]
        hashes: Option<std::collections::HashMap<String, String>>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(out)?;
    Ok(entries
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
        .collect())
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
