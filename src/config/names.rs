//! Length limits on the names a dataset becomes: its encoded key is a folder on every provider
//! and in the state directory, a lock file, and part of the local snapshots offsite makes. A
//! name too long for any of them is rejected when the config is loaded, not at backup time
//! after the other datasets ran.
//!
//! Every limit is the common 255-byte limit on one path component (ext4, btrfs, xfs, most
//! object stores' folder names) or zfs's 255-byte limit on a whole snapshot name.

use super::SourceSpec;
use crate::layout::dataset_key;
use crate::source::SNAPSHOT_PREFIX;

/// Longest file or folder name, in bytes.
pub const MAX_COMPONENT: usize = 255;
/// Longest zfs snapshot name (`pool/fs@snap`), in bytes: ZFS_MAX_DATASET_NAME_LEN less its NUL.
pub const MAX_ZFS_NAME: usize = 255;
/// Length of a snapshot time stamp, `YYYYMMDDTHHMMSSZ`.
const STAMP_LEN: usize = 16;
/// The lock file's suffix after the dataset key.
const LOCK_SUFFIX: &str = ".lock";

/// Why `name` (with `source`) makes a name too long for a file system or for zfs, if it does.
pub fn too_long(name: &str, source: &SourceSpec) -> Option<String> {
    let key = dataset_key(name).len();
    let hint = "letters, digits, '_', '-' and '.' take one byte each, any other byte three; \
                choose a shorter dataset name";
    let lock_max = MAX_COMPONENT - LOCK_SUFFIX.len();
    if key > lock_max {
        return Some(format!(
            "dataset name {name:?} is too long: it is encoded as {key} bytes on the providers \
             and in the state directory, at most {lock_max} fit in one file name ({hint})"
        ));
    }
    match source {
        SourceSpec::Btrfs { .. } => {
            let snap = key + 1 + SNAPSHOT_PREFIX.len() + STAMP_LEN;
            let max = MAX_COMPONENT - (snap - key);
            (snap > MAX_COMPONENT).then(|| {
                format!(
                    "dataset name {name:?} is too long for a btrfs dataset: its snapshots would \
                     be named with {snap} bytes, over the {MAX_COMPONENT}-byte limit; its \
                     encoded name may be at most {max} bytes ({hint})"
                )
            })
        }
        SourceSpec::Zfs { dataset } => {
            let snap = dataset.len() + 1 + SNAPSHOT_PREFIX.len() + STAMP_LEN;
            (snap > MAX_ZFS_NAME).then(|| {
                format!(
                    "zfs = {dataset:?} is too long: its snapshots would be named with {snap} \
                     bytes, over zfs's {MAX_ZFS_NAME}-byte limit"
                )
            })
        }
        SourceSpec::Command { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{shard_name, BackupId, BackupKind, MANIFEST};
    use std::time::{Duration, SystemTime};

    fn cmd() -> SourceSpec {
        SourceSpec::Command {
            command: "true".into(),
        }
    }

    #[test]
    fn an_encoded_key_over_the_limit_is_rejected_by_its_encoded_length() {
        assert_eq!(too_long(&"a".repeat(250), &cmd()), None);
        let why = too_long(&"a".repeat(251), &cmd()).expect("251 bytes do not fit");
        assert!(
            why.contains("251 bytes") && why.contains("at most 250"),
            "{why}"
        );
        // 100 characters, but '/' encodes as %2F: 300 bytes.
        let slashes = "/".repeat(100);
        assert_eq!(slashes.len(), 100);
        let why = too_long(&slashes, &cmd()).expect("300 encoded bytes do not fit");
        assert!(why.contains("300 bytes"), "{why}");
    }

    #[test]
    fn snapshot_names_must_fit_too() {
        let btrfs = SourceSpec::Btrfs {
            subvolume: "/v".into(),
            snapshot_dir: "/s".into(),
        };
        assert_eq!(too_long(&"b".repeat(230), &btrfs), None);
        let why = too_long(&"b".repeat(231), &btrfs).expect("snapshot name too long");
        assert!(
            why.contains("btrfs") && why.contains("at most 230"),
            "{why}"
        );
        let zfs = |fs: String| SourceSpec::Zfs { dataset: fs };
        assert_eq!(too_long("short", &zfs("p/".repeat(115))), None);
        let why = too_long("short", &zfs(format!("p/{}", "f".repeat(229)))).expect("too long");
        assert!(why.contains("256 bytes"), "{why}");
    }

    #[test]
    fn the_fixed_parts_of_an_object_path_fit_in_one_component() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31
        for kind in [BackupKind::Full, BackupKind::Incremental] {
            assert!(BackupId::new(far, kind).to_string().len() <= MAX_COMPONENT);
        }
        assert!(shard_name(u64::MAX, u64::MAX).len() <= MAX_COMPONENT);
        assert!(MANIFEST.len() <= MAX_COMPONENT);
    }
}
