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
//! disk as it grows, so the `fsync` at the end is short (`file`). What a zfs or btrfs target
//! already holds is read by `targets`.

mod file;
mod targets;

pub use file::leftover_partials;
pub use targets::{btrfs_entries, btrfs_received, zfs_snapshots};

use crate::process::ChildProc;
use anyhow::{anyhow, Context, Result};
use file::{check_rename_target, is_special, RegularFile};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
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
