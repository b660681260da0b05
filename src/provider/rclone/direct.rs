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
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Whether a provider's objects may be read directly (see the module doc): `env` is the
/// process's environment, where rclone's `RCLONE_*` settings live too.
pub(super) fn allowed<'a>(
    remote: &str,
    bwlimit: Option<&str>,
    flags: &[String],
    mut env: impl Iterator<Item = &'a str>,
) -> bool {
    let plain = super::remote_name(remote) == super::RemoteName::Local;
    let env_changes = |v: &str| {
        v.starts_with("RCLONE_LOCAL_") || ["RCLONE_LINKS", "RCLONE_COPY_LINKS"].contains(&v)
    };
    plain && bwlimit.is_none() && !flags.iter().any(|f| changes_files(f)) && !env.any(env_changes)
}

/// `--local-...`, `--links`, `--copy-links` (with a value or not), or a cluster of short
/// flags with `-L` or `-l` in it.
fn changes_files(flag: &str) -> bool {
    let name = flag.split('=').next().unwrap_or(flag);
    match name.strip_prefix("--") {
        Some(long) => long.starts_with("local-") || ["links", "copy-links"].contains(&long),
        None => name.starts_with('-') && name[1..].contains(['L', 'l']),
    }
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

/// Reads `len` bytes (fewer where the file ends sooner) from byte `offset` of `file` (object
/// `path`),
/// or, with `range` `None`, the whole file, which must not be larger than `limit`.
pub(super) async fn read(
    provider: &str,
    file: PathBuf,
    path: &str,
    range: Option<(u64, u64)>,
    limit: u64,
) -> Result<Bytes, ProviderError> {
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
        // A symlink: rclone's local backend without `--links` does not see it either.
        _ if e.raw_os_error() == Some(libc::ELOOP) => ErrorKind::NotFound,
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied | K::InvalidData => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    };
    ProviderError::new(provider, op, path, kind, e.to_string())
}

fn read_now(file: &Path, range: Option<(u64, u64)>, limit: u64) -> io::Result<Bytes> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)?;
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
        let ok = |remote, bw, flags: &[String], env: &[&str]| {
            allowed(remote, bw, flags, env.iter().copied())
        };
        assert!(ok("/mnt/usb", None, no, &["HOME", "RCLONE_CONFIG"]));
        assert!(ok("", None, no, &[]), "remote = \"/\" is kept as \"\"");
        let quiet = [
            "-q".to_string(),
            "--transfers=4".to_string(),
            "-vP".to_string(),
        ];
        assert!(ok("/mnt/usb", None, &quiet, &[]));
        assert!(!ok("/mnt/usb", Some("10M"), no, &[]));
        for flag in [
            "--local-encoding=None",
            "-L",
            "--links",
            "--copy-links=true",
            "-vL",
            "-l",
        ] {
            assert!(!ok("/mnt/usb", None, &[flag.to_string()], &[]), "{flag}");
        }
        for var in ["RCLONE_LOCAL_ENCODING", "RCLONE_LINKS", "RCLONE_COPY_LINKS"] {
            assert!(!ok("/mnt/usb", None, no, &[var]), "{var}");
        }
        for remote in [
            "usb:offsite",
            ":local:/mnt/usb",
            ":local,nounc:/x",
            "b2:bucket",
        ] {
            assert!(!ok(remote, None, no, &[]), "{remote}");
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
        let r =
            |path: &'static str, range, limit| read("p", dir.path().join(path), path, range, limit);
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
        std::os::unix::fs::symlink(dir.path().join("d/obj"), dir.path().join("d/link")).unwrap();
        let link = r("d/link", None, 10).await.unwrap_err();
        assert_eq!(link.kind, ErrorKind::NotFound, "{link}");
    }
}
