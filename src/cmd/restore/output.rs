//! What `restore --output FILE` may write to, decided before anything is downloaded.
//!
//! Guarantees: `-`, `/dev/stdout`, `/dev/fd/1` and `/proc/self/fd/1` mean `--stdout` (the
//! stream goes to the inherited stdout, never through a path that a rename could replace); an
//! existing regular FILE is refused unless `--force`; a directory, or a symbolic link to
//! anything but a device or FIFO, is refused always (exit 2). Devices and FIFOs (`/dev/null`, a
//! named pipe, `/dev/stderr` on a terminal) are written in place.

use crate::error::ConfigError;
use crate::receiver::ReceiverSpec;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Names of this process's stdout.
const STDOUT_NAMES: [&str; 4] = ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"];

/// The receiver for `--output path`, or why it is refused.
pub fn destination(path: &Path, force: bool) -> Result<ReceiverSpec, ConfigError> {
    if STDOUT_NAMES.iter().any(|n| path == Path::new(n)) {
        return Ok(ReceiverSpec::Stdout);
    }
    let shown = path.display();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return new_file(path);
        }
        Err(e) => {
            return Err(ConfigError(format!(
                "--output {shown}: cannot inspect it: {e}"
            )))
        }
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(ConfigError(format!(
            "--output {shown} is a directory; give the name of the file to write, e.g. {}",
            path.join("restored.stream").display()
        )));
    }
    if kind.is_symlink() {
        return match std::fs::metadata(path) {
            Ok(m) if is_special(&m.file_type()) => Ok(ReceiverSpec::File(path.to_path_buf())),
            _ => Err(ConfigError(format!(
                "--output {shown} is a symbolic link; offsite neither follows nor replaces it: \
                 give the path it should write to"
            ))),
        };
    }
    if is_special(&kind) {
        return Ok(ReceiverSpec::File(path.to_path_buf()));
    }
    if !force {
        return Err(ConfigError(format!(
            "--output {shown} already exists; pass --force to replace it, or choose another name"
        )));
    }
    Ok(ReceiverSpec::File(path.to_path_buf()))
}

/// A file to create: its directory must exist.
fn new_file(path: &Path) -> Result<ReceiverSpec, ConfigError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(ConfigError(format!(
            "--output {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(ReceiverSpec::File(path.to_path_buf()))
}

fn is_special(kind: &std::fs::FileType) -> bool {
    kind.is_char_device() || kind.is_block_device() || kind.is_fifo() || kind.is_socket()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn refused(path: &Path, force: bool) -> String {
        destination(path, force).unwrap_err().0
    }

    #[test]
    fn stdout_names_mean_stdout() {
        for n in STDOUT_NAMES {
            assert_eq!(
                destination(Path::new(n), false).unwrap(),
                ReceiverSpec::Stdout
            );
        }
    }

    #[test]
    fn an_existing_file_needs_force_and_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("out");
        assert_eq!(
            destination(&f, false).unwrap(),
            ReceiverSpec::File(f.clone())
        );
        std::fs::write(&f, b"keep me").unwrap();
        assert!(refused(&f, false).contains("already exists; pass --force"));
        assert_eq!(
            destination(&f, true).unwrap(),
            ReceiverSpec::File(f.clone())
        );
        assert!(refused(dir.path(), true).contains("is a directory"));
        let missing = dir.path().join("no/such/dir/out");
        assert!(refused(&missing, false).contains("does not exist"));
    }

    #[test]
    fn devices_are_fine_and_symlinks_to_files_are_refused() {
        let null = PathBuf::from("/dev/null");
        assert_eq!(destination(&null, false).unwrap(), ReceiverSpec::File(null));
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(refused(&link, true).contains("symbolic link"));
        let dev = dir.path().join("dev");
        std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
        assert_eq!(destination(&dev, false).unwrap(), ReceiverSpec::File(dev));
    }
}
