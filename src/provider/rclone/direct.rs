//! Reads and writes on a local disk without rclone in the way. A provider whose remote is a
//! plain path (`/mnt/usb/offsite`) holds each object as the file of that name below it,
//! exactly as rclone's local backend writes it: offsite then reads the bytes itself, with
//! `pread`, and writes them itself, where the daemon would move every byte over loopback HTTP
//! (two more copies, an HTTP request per piece, and on upload a multipart form rclone reads in
//! 4 KiB steps and hashes with MD5). Measured on 1 GiB from three local folders: a restore to
//! a file spent 2-3x the system time of `rclone cat`, all of it in that detour; a backup in
//! 1 MiB shards spent 1.7x the CPU of one in 64 MiB shards, most of it in rclone.
//!
//! Only where nothing could make rclone see another file than offsite would: a plain path (no
//! connection string, no remote of rclone's config), no `bwlimit`, no flag that changes how
//! the local backend names or follows files (`--local-*`, `--links`, `-L`, `--copy-links`),
//! names offsite itself makes (no character rclone's encoding would rewrite), and the daemon
//! in use (with `OFFSITE_RCLONE_DAEMON=0` every operation is an rclone, which tests rely on to
//! inject faults). Writes go into an unnamed file (`O_TMPFILE`) named only when complete, or
//! where the file system has none into a `.offsite-partial` file renamed when complete.
//! Listings and deletions still go through rclone.

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
        v.starts_with("RCLONE_LOCAL_")
            || [
                "RCLONE_LINKS",
                "RCLONE_COPY_LINKS",
                "RCLONE_DRY_RUN",
                "RCLONE_BWLIMIT",
                "RCLONE_MAX_TRANSFER",
            ]
            .contains(&v)
    };
    plain && bwlimit.is_none() && !flags.iter().any(|f| changes_files(f)) && !env.any(env_changes)
}

/// `--local-...`, `--links`, `--copy-links`, or what changes whether rclone writes at all
/// (`--dry-run`, `--bwlimit`, `--max-transfer`), with a value or not; or a cluster of short
/// flags with `-L`, `-l` or `-n` in it.
fn changes_files(flag: &str) -> bool {
    let name = flag.split('=').next().unwrap_or(flag);
    let writes = ["links", "copy-links", "dry-run", "bwlimit", "max-transfer"];
    match name.strip_prefix("--") {
        Some(long) => long.starts_with("local-") || writes.contains(&long),
        None => name.starts_with('-') && name[1..].contains(['L', 'l', 'n']),
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

/// A provider error for a failed write: what a retry cannot fix (no permission, a read-only
/// or full disk, a quota, a folder or file where the other should be, a name or size the file
/// system refuses) is Permanent, and says where offsite was writing.
fn write_error(provider: &str, path: &str, file: &Path, e: io::Error) -> ProviderError {
    use io::ErrorKind as K;
    let kind = match e.kind() {
        K::PermissionDenied
        | K::ReadOnlyFilesystem
        | K::StorageFull
        | K::QuotaExceeded
        | K::IsADirectory
        | K::NotADirectory
        | K::FileTooLarge
        | K::InvalidFilename => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    };
    let text = format!("writing {}: {e}", file.display());
    ProviderError::new(provider, "upload", path, kind, text)
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
    let mut buf = crate::buffers::take_zeroed(want);
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
    Ok(crate::buffers::bytes(buf))
}

/// Writes `data` as `file` (object `path`), creating its folders. The bytes go into an
/// unnamed file (`O_TMPFILE`) that gets its name only once every byte is in, so a crash or a
/// full disk leaves no partial object behind. Where the file system has no unnamed files
/// (FAT, exFAT, FUSE ones) or `/proc` is missing, into `NAME.PID-N.offsite-partial`, renamed
/// once complete (rclone 1.63 and later do the same with their `.partial` files); a crash of
/// offsite can leave that file. Writes are not cancelled: one the Timeout layer or a signal
/// gave up on finishes (or fails) on its blocking thread. Like rclone's local backend
/// it does not fsync: the manifest, written last, is what makes a backup count. With
/// `behind`, the write yields the CPU on a thread of its own (see `provider::priority`).
pub(super) async fn write(
    provider: &str,
    file: PathBuf,
    path: &str,
    data: Bytes,
    behind: bool,
) -> Result<(), ProviderError> {
    let started = std::time::Instant::now();
    let len = data.len();
    let target = file.clone();
    let write = move || write_now(&file, &data);
    let written = match behind {
        true => crate::provider::priority::on_own_thread(write).await,
        false => tokio::task::spawn_blocking(write)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e))),
    };
    tracing::debug!(
        "provider {provider}: wrote {} ({len} bytes) to the local disk directly{}: {} after {:.2}s",
        crate::redact::text(path),
        match &written {
            Ok(Way::Partial) => " through a .offsite-partial file",
            _ => "",
        },
        if written.is_ok() { "ok" } else { "failed" },
        started.elapsed().as_secs_f64()
    );
    written
        .map(|_| ())
        .map_err(|e| write_error(provider, path, &target, e))
}

/// How a file was written.
enum Way {
    Unnamed,
    Partial,
}

/// Writes go to the page cache 16 KiB at a time, as rclone's do. Measured: with whole
/// 64 MiB shards in one `write`, a restore of those files right after the backup spent twice
/// the system time (kernel 6.18, ext4: page cache folios as large as the writes), the same
/// whichever binary restored them; after `drop_caches`, or with 16 KiB writes, it did not.
const WRITE_CHUNK: usize = 16 << 10;

fn write_now(file: &Path, data: &[u8]) -> io::Result<Way> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let f = match unnamed_file(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            unnamed_file(dir)
        }
        other => other,
    };
    let mut f = match f {
        Err(e) if unsupported(&e) => return write_partial(file, data).map(|()| Way::Partial),
        f => f?,
    };
    write_chunked(&mut f, data)?;
    match name(&f, file) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !proc_fd(&f).exists() => {
            drop(f); // its blocks are freed before the bytes are written again
            write_partial(file, data).map(|()| Way::Partial)
        }
        named => named.map(|()| Way::Unnamed),
    }
}

fn write_chunked(f: &mut std::fs::File, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    data.chunks(WRITE_CHUNK).try_for_each(|c| f.write_all(c))
}

/// An unnamed file in `dir`, mode 0666 less the umask as rclone's.
fn unnamed_file(dir: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// `O_TMPFILE` refused by the file system (old kernels say EISDIR).
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR))
}

/// `/proc/self/fd/N` of `f`: the path through which `linkat` names an unnamed file.
fn proc_fd(f: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Gives the unnamed file `f` the name `file`; over an existing object (a shard uploaded
/// again), through a unique temporary name renamed over it, so the object is never missing.
fn name(f: &std::fs::File, file: &Path) -> io::Result<()> {
    let from = proc_fd(f);
    match link(&from, file) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let tmp = unique_beside(file, "offsite-tmp");
            link(&from, &tmp)?;
            std::fs::rename(&tmp, file).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        }
        other => other,
    }
}

/// Writes `data` into a new `file.PID-N.offsite-partial`, then renames it to `file`; removes
/// it on failure.
fn write_partial(file: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = unique_beside(file, "offsite-partial");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)?;
    let written = write_chunked(&mut f, data).and_then(|()| std::fs::rename(&tmp, file));
    written.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `file.PID-N.suffix`, a name no other write of this process or another uses: a write the
/// Timeout layer gave up on may still run beside its retry.
fn unique_beside(file: &Path, suffix: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{}-{n}.{suffix}", std::process::id()));
    PathBuf::from(name)
}

/// `linkat(2)` following the `/proc/self/fd` link to the open file itself.
fn link(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
            "--dry-run",
            "-n",
            "--bwlimit=1M",
            "--max-transfer=1G",
        ] {
            assert!(!ok("/mnt/usb", None, &[flag.to_string()], &[]), "{flag}");
        }
        for var in [
            "RCLONE_LOCAL_ENCODING",
            "RCLONE_LINKS",
            "RCLONE_COPY_LINKS",
            "RCLONE_DRY_RUN",
            "RCLONE_BWLIMIT",
            "RCLONE_MAX_TRANSFER",
        ] {
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

    #[tokio::test]
    async fn writes_create_folders_replace_objects_and_leave_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // `behind`: on a lowered thread of its own, with the same result.
        let w = |path: &'static str, data: &'static [u8], behind| {
            write(
                "p",
                dir.path().join(path),
                path,
                Bytes::from_static(data),
                behind,
            )
        };
        w("h/d/b/s1", b"first", false).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("h/d/b/s1")).unwrap(),
            b"first"
        );
        w("h/d/b/s1", b"second, longer", true).await.unwrap();
        w("h/d/b/s2", b"", false).await.unwrap();
        let b = dir.path().join("h/d/b");
        let mut names: Vec<_> = std::fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["s1", "s2"], "no temporary file is left");
        assert_eq!(std::fs::read(b.join("s1")).unwrap(), b"second, longer");
        assert_eq!(std::fs::read(b.join("s2")).unwrap(), b"");
        // As rclone's local backend: 0666 less the umask, never executable.
        let mode = std::fs::metadata(b.join("s1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0, "{mode:o}");
        assert_ne!(mode & 0o600, 0, "{mode:o}");
    }

    #[tokio::test]
    async fn a_failed_write_names_the_object_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h"), b"a file where a folder should be").unwrap();
        let path = "h/d/s1";
        let e = write(
            "p",
            dir.path().join(path),
            path,
            Bytes::from_static(b"x"),
            true,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Permanent,
            "a file where a folder should be: {e}"
        );
        let text = e.to_string();
        assert!(text.contains("h/d/s1") && text.contains("p"), "{text}");
        let target = dir.path().join("h/d/s1");
        assert!(
            text.contains(&format!("writing {}", target.display())),
            "{text}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("h")).unwrap(),
            b"a file where a folder should be"
        );
    }

    #[test]
    fn partial_files_replace_the_object_and_leave_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s1");
        write_partial(&file, b"first").unwrap();
        write_partial(&file, b"whole object").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"whole object");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let no_dir = dir.path().join("missing/s2");
        assert!(write_partial(&no_dir, b"x").is_err());
        assert!(!dir.path().join("missing").exists());
    }
}
