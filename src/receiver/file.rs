//! A file receiver's files: the hidden temporary file a stream is written to
//! (`.FILE.offsite-<random>.partial`, created fresh, never through a symlink), whose pages are
//! handed to the disk as it grows, and the checks before it is renamed into place.

use anyhow::{bail, Result};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::AsyncWrite;

/// Bytes written to a regular file between two requests to start writing them back to disk.
pub(super) const WRITEBACK: u64 = 32 << 20;
/// An existing path that is neither a regular file nor a directory.
pub(super) fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Suffix of the temporary files a file receiver writes.
pub(super) const PARTIAL_SUFFIX: &str = ".partial";

/// A fresh temporary name beside `path`: `.FILE.offsite-<random>.partial`.
pub(super) fn temp_path(path: &Path) -> PathBuf {
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
pub(super) fn check_rename_target(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is now a symbolic link; not replacing it (offsite never renames over a symlink)",
            path.display()
        ),
        Ok(m) if m.is_dir() => bail!("{} is now a directory; not replacing it", path.display()),
        _ => Ok(()),
    }
}

/// A regular file whose pages are handed to the disk as the stream is written
/// (`sync_file_range`), so that the `fsync` at the end does not find the whole stream still to
/// write.
pub(super) struct RegularFile {
    pub(super) file: tokio::fs::File,
    /// A second handle, for the write-back requests made on the blocking pool.
    pub(super) handle: Arc<std::fs::File>,
    pub(super) written: u64,
    /// Bytes whose write-back was requested.
    pub(super) requested: u64,
    pub(super) request: Option<tokio::task::JoinHandle<()>>,
}

impl RegularFile {
    /// Creates a fresh temporary file beside `path` (never an existing one, never through a
    /// symlink) and returns it with its name.
    pub(super) async fn create_beside(path: &Path) -> std::io::Result<(RegularFile, PathBuf)> {
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

    pub(super) async fn create_new(path: &Path) -> std::io::Result<RegularFile> {
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

    pub(super) fn poll_write(
        &mut self,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
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
