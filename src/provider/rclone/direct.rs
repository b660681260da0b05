//! Reads from a local disk without rclone in the way. A provider whose remote is a plain path
//! (`/mnt/usb/offsite`) holds each object as the file of that name below it, exactly as
//! rclone's local backend wrote it: offsite then reads the bytes itself, with `pread`, where
//! the daemon would read the file and send it over loopback HTTP (two more copies of every
//! byte, and an HTTP request per piece). Measured on 1 GiB from three local folders: a restore
//! to a file spent 2-3x the system time of `rclone cat`, all of it in that detour.
//!
//! Only reads, and only where nothing could make rclone see another file than offsite would:
//! a plain path (no connection string, no remote of rclone's config), no `bwlimit`, no flag
//! that changes how the local backend names or follows files (`--local-*`, `--links`, `-L`,
//! `--copy-links`), names offsite itself makes (no character rclone's encoding would
//! rewrite), and the daemon in use (with `OFFSITE_RCLONE_DAEMON=0` every read is an rclone,
//! which tests rely on to inject faults). Uploads, listings and deletions still go through
//! rclone: written by offsite itself, a local backup measured slower, not faster (more
//! system time than `rcat`, for reasons not found).

use crate::error::{ErrorKind, ProviderError};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The folder to read a provider's objects from directly, if its setup allows it (see the
/// module doc).
pub(super) fn root(remote: &str, bwlimit: Option<&str>, flags: &[String]) -> Option<PathBuf> {
    let changes_files = |f: &String| {
        f.starts_with("--local") || ["-L", "--links", "--copy-links", "-l"].contains(&f.as_str())
    };
    let plain = super::remote_name(remote) == super::RemoteName::Local;
    (plain && bwlimit.is_none() && !flags.iter().any(changes_files)).then(|| PathBuf::from(remote))
}

/// True for a path of names rclone's local backend stores unchanged on Linux.
pub(super) fn stored_as_is(path: &str) -> bool {
    path.split('/').all(|name| {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+%=@,".contains(&b))
    })
}

/// Reads `len` bytes (fewer where the file ends sooner) from byte `offset` of `root/path`,
/// or, with `range` `None`, the whole file, which must not be larger than `limit`.
pub(super) async fn read(
    provider: &str,
    root: &Path,
    path: &str,
    range: Option<(u64, u64)>,
    limit: u64,
) -> Result<Bytes, ProviderError> {
    let file = root.join(path);
    let started = std::time::Instant::now();
    let read = tokio::task::spawn_blocking(move || read_now(&file, range, limit))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    tracing::debug!(
        "provider {provider}: read {} from the local disk directly: {} after {:.2}s",
        crate::redact::text(path),
        if read.is_ok() { "ok" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    read.map_err(|e| error(provider, "download", path, e))
}

/// A provider error for `e`: a missing file is NotFound; what a retry cannot fix (no
/// permission, an oversized object) is Permanent.
fn error(provider: &str, op: &'static str, path: &str, e: io::Error) -> ProviderError {
    use io::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied | K::InvalidData => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    };
    ProviderError::new(provider, op, path, kind, e.to_string())
}

fn read_now(file: &Path, range: Option<(u64, u64)>, limit: u64) -> io::Result<Bytes> {
    let f = File::open(file)?;
    let size = f.metadata()?.len();
    let (offset, len) = match range {
        Some(r) => r,
        None if size > limit => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object is larger than the expected {limit} bytes"),
            ))
        }
        None => (0, size),
    };
    let want = len.min(size.saturating_sub(offset)) as usize;
    let mut buf = vec![0u8; want];
    let mut at = 0;
    while at < want {
        match f.read_at(&mut buf[at..], offset + at as u64) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(at);
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_path_without_flags_that_change_files_is_read_directly() {
        let no: &[String] = &[];
        assert_eq!(root("/mnt/usb", None, no), Some(PathBuf::from("/mnt/usb")));
        let quiet = ["-q".to_string(), "--transfers=4".to_string()];
        assert!(root("/mnt/usb", None, &quiet).is_some());
        assert_eq!(root("/mnt/usb", Some("10M"), no), None);
        for flag in ["--local-encoding=None", "-L", "--links", "--copy-links"] {
            assert_eq!(root("/mnt/usb", None, &[flag.to_string()]), None, "{flag}");
        }
        for remote in [
            "usb:offsite",
            ":local:/mnt/usb",
            ":local,nounc:/x",
            "b2:bucket",
        ] {
            assert_eq!(root(remote, None, no), None, "{remote}");
        }
    }

    #[test]
    fn names_rclone_would_rewrite_are_left_to_rclone() {
        assert!(stored_as_is(
            "nas1/tank%2Fdata/20261121T020000Z-full/s0000000001-b0000000001048576.zst.age"
        ));
        for path in ["a/../b", "a//b", "a/b c", "a/\u{e9}", "a/.", "a/b\\c"] {
            assert!(!stored_as_is(path), "{path}");
        }
    }

    #[tokio::test]
    async fn whole_files_and_ranges_are_read_and_errors_say_what_kind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/obj"), b"0123456789").unwrap();
        let r = |path, range, limit| read("p", dir.path(), path, range, limit);
        assert_eq!(r("d/obj", None, 10).await.unwrap(), &b"0123456789"[..]);
        assert_eq!(r("d/obj", Some((3, 4)), 0).await.unwrap(), &b"3456"[..]);
        assert_eq!(r("d/obj", Some((8, 4)), 0).await.unwrap(), &b"89"[..]);
        assert_eq!(r("d/obj", Some((12, 4)), 0).await.unwrap(), &b""[..]);
        let big = r("d/obj", None, 9).await.unwrap_err();
        assert_eq!(big.kind, ErrorKind::Permanent);
        assert!(
            big.to_string().contains("larger than the expected 9 bytes"),
            "{big}"
        );
        let missing = r("d/none", None, 10).await.unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
    }
}
