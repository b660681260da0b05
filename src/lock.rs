//! One offsite at a time per dataset: an `flock` on `STATE_DIR/locks/<host>/<dataset-key>.lock`
//! holding the owner's PID.
//!
//! The kernel drops an `flock` when its holder dies, so a crash never leaves a lock that blocks
//! the next run. A PID left in the file by a holder that did not release cleanly is reported as
//! a stale lock being taken over.

use crate::error::LockHeld;
use crate::layout::dataset_key;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub struct DatasetLock {
    file: File,
    path: PathBuf,
}

impl DatasetLock {
    pub fn acquire(state_dir: &Path, host: &str, dataset: &str) -> Result<DatasetLock> {
        let dir = state_dir.join("locks").join(host);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create lock directory {}", dir.display()))?;
        let path = dir.join(format!("{}.lock", dataset_key(dataset)));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let previous: Option<u32> = previous.trim().parse().ok();
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockHeld {
                    dataset: dataset.to_string(),
                    pid: previous.unwrap_or(0),
                }
                .into());
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        if let Some(pid) = previous {
            tracing::warn!(
                "dataset {dataset:?}: the previous offsite (PID {pid}) ended without releasing its lock; taking it over"
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_data()?;
        Ok(DatasetLock { file, path })
    }
}

impl Drop for DatasetLock {
    fn drop(&mut self) {
        // An empty file says the lock was released cleanly; the flock goes with the descriptor.
        if let Err(e) = self.file.set_len(0) {
            tracing::debug!("cannot clear lock file {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = DatasetLock::acquire(dir.path(), "h", "tank/a").unwrap();
        // flock locks are per open file description, so a second open in this process conflicts.
        let e = DatasetLock::acquire(dir.path(), "h", "tank/a")
            .err()
            .unwrap();
        assert_eq!(exit_code(&e), 4);
        assert!(
            e.to_string()
                .contains(&format!("PID {}", std::process::id())),
            "{e}"
        );
        DatasetLock::acquire(dir.path(), "h", "other").unwrap();
        drop(a);
        DatasetLock::acquire(dir.path(), "h", "tank/a").unwrap();
    }

    #[test]
    fn a_stale_pid_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/h");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("d.lock"), "999999\n").unwrap();
        let _l = DatasetLock::acquire(dir.path(), "h", "d").unwrap();
        let pid: u32 = std::fs::read_to_string(path.join("d.lock"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
    }
}
