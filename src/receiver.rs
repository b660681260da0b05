//! Where a restored stream goes: `zfs receive`, `btrfs receive`, a file or stdout.
//!
//! A [`Receiver`] owns its child process (through [`ChildProc`]) and exposes one writable sink.
//! [`Receiver::finish`] closes the sink and checks that the receiver accepted the stream (its
//! stderr goes into the error); [`Receiver::fail`] is for a sink that stopped taking bytes, and
//! waits for the receiver to say why; [`Receiver::abort`] stops it when the stream cannot be
//! completed. A file is written under a fresh name of its own in the same directory
//! (`.FILE.offsite-<random>.partial`, created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so a planted
//! symlink is never followed) and renamed only once complete, so a half stream never sits under
//! the final name; the rename is refused if FILE has become a symlink or a directory meanwhile.
//! A device or FIFO such as `/dev/null` is written in place. A file's pages are handed to the
//! disk as it grows, so the `fsync` at the end is short.

use crate::process::ChildProc;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};

/// How long a receiver gets to exit after its input ends badly, before SIGTERM/SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverSpec {
    /// `zfs receive [-F] [FLAGS...] TARGET`.
    Zfs {
        target: String,
        force: bool,
        flags: Vec<String>,
    },
    /// `btrfs receive [FLAGS...] DIR`.
    Btrfs { dir: PathBuf, flags: Vec<String> },
    /// The raw stream into a file.
    File(PathBuf),
    /// The raw stream on stdout.
    Stdout,
}

impl ReceiverSpec {
    pub fn describe(&self) -> String {
        match self {
            ReceiverSpec::Zfs {
                target,
                force,
                flags,
            } => {
                let force = if *force { "-F " } else { "" };
                format!("zfs receive {force}{}{target}", joined(flags))
            }
            ReceiverSpec::Btrfs { dir, flags } => {
                format!("btrfs receive {}{}", joined(flags), dir.display())
            }
            ReceiverSpec::File(p) => format!("file {}", p.display()),
            ReceiverSpec::Stdout => "stdout".into(),
        }
    }
}

/// Bytes written to a regular file between two requests to start writing them back to disk.
const WRITEBACK: u64 = 32 << 20;

enum Sink {
    Child(ChildStdin),
    File(RegularFile),
    Special(tokio::fs::File),
    Stdout(tokio::io::Stdout),
    Closed,
}

/// A running receiver of one stream.
pub struct Receiver {
    what: String,
    sink: Sink,
    child: Option<ChildProc>,
    /// `(temporary file, FILE)` for a file receiver.
    rename: Option<(PathBuf, PathBuf)>,
}

impl Receiver {
    /// Starts the receiver; for a file, creates its temporary file.
    pub async fn start(spec: &ReceiverSpec) -> Result<Receiver> {
        let what = spec.describe();
        let (sink, child, rename) = match spec {
            ReceiverSpec::Zfs {
                target,
                force,
                flags,
            } => {
                let mut cmd = Command::new(crate::process::find_program("zfs")?);
                cmd.arg("receive");
                if *force {
                    cmd.arg("-F");
                }
                cmd.args(flags).arg(target);
                let (stdin, child) = spawn("zfs receive", cmd)?;
                (Sink::Child(stdin), Some(child), None)
            }
            ReceiverSpec::Btrfs { dir, flags } => {
                let mut cmd = Command::new(crate::process::find_program("btrfs")?);
                cmd.arg("receive").args(flags).arg(dir);
                let (stdin, child) = spawn("btrfs receive", cmd)?;
                (Sink::Child(stdin), Some(child), None)
            }
            ReceiverSpec::File(path) if is_special(path) => {
                // A device or FIFO (`/dev/null`, a pipe): written in place, nothing to rename.
                let file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                (Sink::Special(file), None, None)
            }
            ReceiverSpec::File(path) => {
                let (file, partial) =
                    RegularFile::create_beside(path).await.with_context(|| {
                        format!("cannot create a temporary file beside {}", path.display())
                    })?;
                (Sink::File(file), None, Some((partial, path.clone())))
            }
            ReceiverSpec::Stdout => (Sink::Stdout(tokio::io::stdout()), None, None),
        };
        Ok(Receiver {
            what,
            sink,
            child,
            rename,
        })
    }

    /// The receiver's input.
    pub fn sink(&mut self) -> &mut (dyn AsyncWrite + Unpin + Send) {
        &mut self.sink
    }

    /// Ends the stream and checks that the receiver took it: waits for the process, or syncs
    /// and renames the file into place.
    pub async fn finish(mut self) -> Result<()> {
        self.sink
            .flush()
            .await
            .with_context(|| format!("writing to {}", self.what))?;
        if let Sink::File(f) = &self.sink {
            f.file
                .sync_all()
                .await
                .with_context(|| format!("writing to {}", self.what))?;
        }
        self.sink = Sink::Closed;
        if let Some(child) = self.child.take() {
            child
                .finish()
                .await
                .map_err(|e| anyhow!(e))
                .with_context(|| format!("{} did not accept the stream", self.what))?;
        }
        if let Some((partial, path)) = self.rename.take() {
            if let Err(e) = check_rename_target(&path) {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
            tokio::fs::rename(&partial, &path).await.with_context(|| {
                format!("cannot rename {} to {}", partial.display(), path.display())
            })?;
        }
        Ok(())
    }

    /// The sink stopped taking bytes at `offset`: closes it, waits (a while) for the receiver
    /// to exit, and returns its failure with its stderr.
    pub async fn fail(mut self, offset: u64, write_error: std::io::Error) -> anyhow::Error {
        self.sink = Sink::Closed;
        self.remove_partial().await;
        let what = &self.what;
        let Some(child) = self.child.take() else {
            return anyhow!(write_error)
                .context(format!("writing to {what} failed at byte {offset}"));
        };
        tracing::debug!("writing to {what} failed at byte {offset}: {write_error}");
        // On timeout the future, and with it the child, is dropped: that kills and reaps it.
        match tokio::time::timeout(GRACE, child.finish()).await {
            Ok(Err(e)) => anyhow!(e).context(format!("{what} refused the stream at byte {offset}")),
            Ok(Ok(())) => anyhow!(write_error).context(format!(
                "{what} exited (status 0) before the end of the stream, at byte {offset}"
            )),
            Err(_) => anyhow!(write_error).context(format!(
                "{what} stopped reading its input at byte {offset} and did not exit; it was killed"
            )),
        }
    }

    /// The stream cannot be completed: stops the receiver (SIGTERM, then SIGKILL) so it does
    /// not take a truncated stream for a whole one, and removes a partial file. Returns the
    /// receiver's stderr, if any, for the log.
    pub async fn abort(mut self) -> String {
        self.sink = Sink::Closed;
        self.remove_partial().await;
        match self.child.take() {
            Some(mut child) => {
                child.terminate(GRACE).await;
                child.stderr_tail().await
            }
            None => String::new(),
        }
    }

    async fn remove_partial(&mut self) {
        if let Some((partial, _)) = self.rename.take() {
            if let Err(e) = tokio::fs::remove_file(&partial).await {
                tracing::warn!("cannot remove {}: {e}", partial.display());
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some((partial, _)) = self.rename.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// `"-a -b "` for flags `-a -b`, empty for none.
fn joined(flags: &[String]) -> String {
    flags.iter().map(|f| format!("{f} ")).collect()
}

/// Spawns a receiver with piped stdin; its stdout is drained into the debug log.
fn spawn(name: &str, mut cmd: Command) -> Result<(ChildStdin, ChildProc)> {
    cmd.stdin(Stdio::piped());
    let mut child = ChildProc::spawn(name, &mut cmd)?;
    let stdin = child.take_stdin().expect("stdin is piped");
    if let Some(out) = child.take_stdout() {
        let name = name.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!("{name}: {line}");
            }
        });
    }
    Ok((stdin, child))
}

/// An existing path that is neither a regular file nor a directory.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Suffix of the temporary files a file receiver writes.
const PARTIAL_SUFFIX: &str = ".partial";

/// A fresh temporary name beside `path`: `.FILE.offsite-<random>.partial`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".offsite-{:016x}{PARTIAL_SUFFIX}",
        fastrand::u64(..)
    ));
    path.with_file_name(name)
}

/// The temporary files of a file receiver for `path` that are still there (none once a
/// restore ended, whether it succeeded or not).
pub fn leftover_partials(path: &Path) -> Vec<PathBuf> {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".offsite-");
    let (prefix, dir) = (prefix.to_string_lossy().into_owned(), path.parent());
    let dir = dir
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(PARTIAL_SUFFIX)
        })
        .collect()
}

/// Refuses to rename over a symlink or a directory (checked right before the rename).
fn check_rename_target(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is now a symbolic link; not replacing it (offsite never renames over a symlink)",
            path.display()
        ),
        Ok(m) if m.is_dir() => bail!("{} is now a directory; not replacing it", path.display()),
        _ => Ok(()),
    }
}

/// The snapshot names (the part after `@`) a zfs dataset holds; empty if it does not exist.
pub async fn zfs_snapshots(target: &str) -> Result<BTreeSet<String>> {
    // zfs-fuse refuses `-t snapshot` on a named dataset without `-r`; filter the children out.
    let out = match crate::source::run(
        "zfs",
        &["list", "-H", "-t", "snapshot", "-o", "name", "-r", target],
    )
    .await
    {
        Ok(out) => out,
        Err(e) if format!("{e:#}").contains("does not exist") => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.context(format!("cannot list the snapshots of {target}"))),
    };
    let prefix = format!("{target}@");
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(str::to_string)
        .collect())
}

/// The names in a btrfs receive directory, which must exist.
pub fn btrfs_entries(dir: &Path) -> Result<BTreeSet<String>> {
    if !dir.is_dir() {
        bail!(
            "target {} is not a directory; btrfs receive needs an existing directory on a btrfs filesystem",
            dir.display()
        );
    }
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Of the `names` present in a btrfs receive directory, those that hold a whole received
/// snapshot: a read-only subvolume with a received UUID. Anything else under such a name (the
/// writable subvolume an interrupted `btrfs receive` leaves, or a plain directory) is refused
/// with guidance: offsite cannot be certain it made it, so it neither deletes it nor takes it
/// for the snapshot.
pub async fn btrfs_received(dir: &Path, names: &[&str]) -> Result<BTreeSet<String>> {
    let present = btrfs_entries(dir)?;
    let mut held = BTreeSet::new();
    for name in names.iter().filter(|n| present.contains(**n)) {
        let path = dir.join(name);
        let shown = path.display().to_string();
        let show = crate::source::run("btrfs", &["subvolume", "show", &shown]).await;
        let why =
            match show.as_deref().map(subvolume_state) {
                Ok((true, true)) => {
                    held.insert(name.to_string());
                    continue;
                }
                Ok((received, _)) => format!(
                "is a {} subvolume{}: the remains of an interrupted restore, or not a restored \
                 snapshot at all",
                if received { "writable" } else { "partial" },
                if received { "" } else { " without a received UUID" }
            ),
                Err(_) => "exists but is not a btrfs subvolume".to_string(),
            };
        return Err(crate::error::ConfigError(format!(
            "{shown} {why}; offsite will not delete it or take it for snapshot {name}. Check it, \
             remove it (`btrfs subvolume delete {shown}`, or rename it), and run restore again"
        ))
        .into());
    }
    Ok(held)
}

/// `(has a received UUID, is read-only)` from `btrfs subvolume show` output.
fn subvolume_state(show: &str) -> (bool, bool) {
    let field = |key: &str| {
        show.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
            .next()
    };
    let received = field("Received UUID:").is_some_and(|v| !v.is_empty() && v != "-");
    let readonly = field("Flags:").is_some_and(|v| v.contains("readonly"));
    (received, readonly)
}

/// A regular file whose pages are handed to the disk as the stream is written
/// (`sync_file_range`), so that the `fsync` at the end does not find the whole stream still to
/// write.
struct RegularFile {
    file: tokio::fs::File,
    /// A second handle, for the write-back requests made on the blocking pool.
    handle: Arc<std::fs::File>,
    written: u64,
    /// Bytes whose write-back was requested.
    requested: u64,
    request: Option<tokio::task::JoinHandle<()>>,
}

impl RegularFile {
    /// Creates a fresh temporary file beside `path` (never an existing one, never through a
    /// symlink) and returns it with its name.
    async fn create_beside(path: &Path) -> std::io::Result<(RegularFile, PathBuf)> {
        let mut tries = 0;
        loop {
            let temp = temp_path(path);
            match RegularFile::create_new(&temp).await {
                Ok(f) => return Ok((f, temp)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn create_new(path: &Path) -> std::io::Result<RegularFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        let path = path.to_path_buf();
        let std_file = tokio::task::spawn_blocking(move || opts.open(path))
            .await
            .map_err(std::io::Error::other)??;
        let file = tokio::fs::File::from_std(std_file);
        let handle = Arc::new(file.try_clone().await?.into_std().await);
        Ok(RegularFile {
            file,
            handle,
            written: 0,
            requested: 0,
            request: None,
        })
    }

    fn poll_write(&mut self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let n = std::task::ready!(Pin::new(&mut self.file).poll_write(cx, buf))?;
        // tokio's file takes new bytes only once the previous write is done: everything
        // before these is in the page cache.
        let done = self.written;
        self.written += n as u64;
        let idle = self.request.as_ref().is_none_or(|r| r.is_finished());
        if done - self.requested >= WRITEBACK && idle {
            let (handle, from, len) = (self.handle.clone(), self.requested, done - self.requested);
            self.request = Some(tokio::task::spawn_blocking(move || {
                // Advisory: a failure shows in the final fsync.
                // SAFETY: a plain syscall on a file descriptor `handle` keeps open.
                unsafe {
                    libc::sync_file_range(
                        handle.as_raw_fd(),
                        from as libc::off64_t,
                        len as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }));
            self.requested = done;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Child(w) => Pin::new(w).poll_write(cx, buf),
            Sink::File(w) => w.poll_write(cx, buf),
            Sink::Special(w) => Pin::new(w).poll_write(cx, buf),
            Sink::Stdout(w) => Pin::new(w).poll_write(cx, buf),
            Sink::Closed => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Child(w) => Pin::new(w).poll_flush(cx),
            Sink::File(w) => Pin::new(&mut w.file).poll_flush(cx),
            Sink::Special(w) => Pin::new(w).poll_flush(cx),
            Sink::Stdout(w) => Pin::new(w).poll_flush(cx),
            Sink::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Child(w) => Pin::new(w).poll_shutdown(cx),
            Sink::File(w) => Pin::new(&mut w.file).poll_shutdown(cx),
            Sink::Special(w) => Pin::new(w).poll_shutdown(cx),
            Sink::Stdout(w) => Pin::new(w).poll_shutdown(cx),
            Sink::Closed => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests;
