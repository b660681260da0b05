//! The disk spool (`spool_dir`, `spool_size`): bytes that a slow or retrying provider still
//! needs, moved out of offsite's memory into an unlinked file and read back through a
//! read-only mapping.
//!
//! - A spooled object is [`Bytes`] like any other: providers, retries and hashing read it
//!   without knowing. Its pages are the kernel's page cache of that file, which the kernel
//!   writes to disk and drops under memory pressure; they are not offsite's heap.
//! - Files are created unlinked (`O_TMPFILE` where the file system has it): a crash or a
//!   `kill -9` leaves nothing behind, and a file's space is freed when the last clone of its
//!   bytes is dropped, i.e. when the last provider that needed it has it (or gave up).
//! - [`Spool::keep`] waits while the spool holds `spool_size` bytes: the spool is bounded
//!   like memory is, only larger.

use crate::manifest::Manifest;
use bytes::Bytes;
use memmap2::Mmap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The spool's room is counted in units of this many bytes (a `u32` of them is 256 TiB).
const UNIT: u64 = 64 << 10;

/// At most this many spool files are mapped at once, whatever `spool_size`: each is one
/// mapping, and Linux allows a process 65,530 (`vm.max_map_count`), which the allocator and
/// thread stacks need too.
const MAX_FILES: usize = 8192;

/// A file's contents as [`Bytes`], through a read-only mapping, valid as long as any clone of
/// them lives (the file may be unlinked and closed).
pub fn map(file: &File) -> io::Result<Bytes> {
    map_holding(file, ())
}

/// [`map`], keeping `hold` alive as long as the mapping.
fn map_holding<T: Send + 'static>(file: &File, hold: T) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: a mapping is undefined behaviour if the file shrinks while mapped. The files
    // mapped here are offsite's own, created unlinked: nothing else can open or truncate them.
    let map = unsafe { Mmap::map(file)? };
    Ok(Bytes::from_owner(Mapped { map, _hold: hold }))
}

/// A mapping and what must live as long as it (the spool room it takes).
struct Mapped<T> {
    map: Mmap,
    _hold: T,
}

impl<T> AsRef<[u8]> for Mapped<T> {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

/// Room for `spool_size` bytes in `spool_dir`.
pub struct Spool {
    dir: PathBuf,
    room: Arc<Semaphore>,
    units: u32,
    /// Mapped files: see [`MAX_FILES`].
    files: Arc<Semaphore>,
    /// A failed write is logged once per run, not once per shard.
    warned: AtomicBool,
    /// Calls of [`Spool::keep`] waiting for room.
    waiting: AtomicUsize,
    /// Calls of [`Spool::keep`] that succeeded.
    kept: AtomicUsize,
}

/// Counts one waiting call for as long as it lives (a dropped call included).
struct Waiting<'a>(&'a AtomicUsize);

impl Waiting<'_> {
    fn on(count: &AtomicUsize) -> Waiting<'_> {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spool {
    /// A spool of `size` bytes in `dir`, once a file could be created there.
    pub fn open(dir: &Path, size: u64) -> io::Result<Spool> {
        tempfile::tempfile_in(dir)?;
        let units = (size / UNIT).clamp(1, u32::MAX as u64) as u32;
        Ok(Spool {
            dir: dir.to_path_buf(),
            room: Arc::new(Semaphore::new(units as usize)),
            units,
            files: Arc::new(Semaphore::new(MAX_FILES)),
            warned: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the spool holds now (rounded up to its unit).
    pub fn used(&self) -> u64 {
        (self.units as u64 - self.room.available_permits() as u64) * UNIT
    }

    /// How many shards (or other sets of objects) were written to the spool so far.
    pub fn kept(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// Whether a shard waits for room (or a file) in the spool, or a write to it failed this
    /// run (shards then stay in memory): either way the source waits for the slowest provider,
    /// as it would without a spool.
    pub fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0 || self.warned.load(Ordering::Relaxed)
    }

    /// Copies `parts` into one spool file, once the spool has room for them (an object larger
    /// than the whole spool waits for an empty one, and then takes it all), and returns them
    /// as mapped bytes of the same lengths. The room is given back when the last clone of
    /// every part is dropped. The file is synced before it is mapped: a disk that fails or
    /// fills up fails this call (and the caller keeps the bytes in memory), never a read of
    /// the mapping later (SIGBUS, or other bytes than were hashed).
    pub async fn keep(&self, parts: &[Bytes]) -> io::Result<Vec<Bytes>> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let want = total.div_ceil(UNIT).clamp(1, self.units as u64) as u32;
        let file_slot = self.acquire(&self.files, 1).await;
        let room = self.acquire(&self.room, want).await;
        let (dir, parts) = (self.dir.clone(), parts.to_vec());
        let kept = tokio::task::spawn_blocking(move || {
            let mut file = tempfile::tempfile_in(&dir)?;
            for p in &parts {
                file.write_all(p)?;
            }
            file.sync_data()?;
            let all = map_holding(&file, (room, file_slot))?;
            let mut at = 0;
            Ok(parts
                .iter()
                .map(|p| {
                    at += p.len();
                    all.slice(at - p.len()..at)
                })
                .collect())
        })
        .await
        .map_err(io::Error::other)?;
        if kept.is_ok() {
            self.kept.fetch_add(1, Ordering::Relaxed);
        }
        kept
    }

    /// `n` permits of `semaphore`, counted in [`Spool::is_full`] while they are waited for.
    async fn acquire(&self, semaphore: &Arc<Semaphore>, n: u32) -> OwnedSemaphorePermit {
        if let Ok(permits) = semaphore.clone().try_acquire_many_owned(n) {
            return permits;
        }
        let _waiting = Waiting::on(&self.waiting);
        let permits = semaphore.clone().acquire_many_owned(n).await;
        permits.expect("the spool's semaphores are never closed")
    }

    /// True the first time it is called: whether to log a failed write.
    pub fn first_failure(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// The manifest as sent to a provider: serialized straight into an unlinked file (in `dir`,
/// else the system's temp folder) and read back through a mapping ([`map`]), so
/// a large manifest (43 MiB for 10 TiB) is never one more buffer on offsite's heap; in memory
/// when no such file can be made.
pub async fn manifest(m: &Arc<Manifest>, dir: Option<&Path>) -> Bytes {
    let job = {
        let (m, dir) = (m.clone(), dir.map(Path::to_path_buf));
        tokio::task::spawn_blocking(move || spool_manifest(&m, dir.as_deref()))
    };
    let failed = match job.await {
        Ok(Ok(body)) => return body,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::debug!(
        "manifest of {} kept in memory: no file for it ({failed})",
        m.backup_id
    );
    Bytes::from(m.to_json())
}

fn spool_manifest(m: &Manifest, dir: Option<&Path>) -> std::io::Result<Bytes> {
    let file = match dir {
        Some(d) => tempfile::tempfile_in(d)?,
        None => tempfile::tempfile()?,
    };
    let mut w = std::io::BufWriter::new(file);
    m.write_json(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    map(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_spool_is_full_while_a_shard_waits_for_room_or_after_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), UNIT).unwrap();
        let part = [Bytes::from(vec![7u8; UNIT as usize])];
        let held = spool.keep(&part).await.unwrap();
        assert!(!spool.is_full(), "room was taken without waiting");
        let mut waiting = Box::pin(spool.keep(&part));
        assert!(futures::poll!(&mut waiting).is_pending());
        assert!(spool.is_full());
        drop(waiting);
        assert!(!spool.is_full(), "a dropped call waits no more");
        drop(held);
        assert!(spool.first_failure());
        assert!(
            spool.is_full(),
            "after a failed write shards stay in memory"
        );
    }

    #[tokio::test]
    async fn kept_parts_read_back_and_free_their_room_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 4 * UNIT).unwrap();
        let parts = vec![
            Bytes::from(vec![1u8; UNIT as usize + 1]),
            Bytes::new(),
            Bytes::from_static(b"tail"),
        ];
        let kept = spool.keep(&parts).await.unwrap();
        assert_eq!(kept, parts);
        assert_eq!(spool.kept(), 1);
        assert_eq!(spool.used(), 2 * UNIT);
        // Nothing is visible in the folder: the file is unlinked.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let one = kept[2].clone();
        drop(kept);
        assert_eq!(spool.used(), 2 * UNIT, "a live slice keeps its file");
        drop(one);
        assert_eq!(spool.used(), 0);
    }

    #[tokio::test]
    async fn an_oversized_object_takes_the_whole_spool_and_the_next_gets_room_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 2 * UNIT).unwrap());
        let big = spool
            .keep(&[Bytes::from(vec![7u8; 3 * UNIT as usize])])
            .await
            .unwrap();
        assert_eq!(spool.used(), 2 * UNIT);
        let waiting = tokio::spawn({
            let spool = spool.clone();
            async move { spool.keep(&[Bytes::from_static(b"x")]).await }
        });
        drop(big);
        assert_eq!(&waiting.await.unwrap().unwrap()[0][..], b"x");
    }

    #[test]
    fn a_missing_folder_is_refused_when_opened() {
        let e = Spool::open(Path::new("/nonexistent/spool"), UNIT)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
