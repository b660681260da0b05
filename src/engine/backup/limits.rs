//! Will every object a backup stores fit its provider? A provider may cap an object's size: a
//! plan's upload limit (Box: 250 MB on a free account), declared as `max_object_size`, or a
//! FAT file system under a local path (4 GiB - 1 B), found with `statfs`. A dataset whose
//! stored shards (or, erasure-coded, pieces) could be larger is refused before anything is
//! read, with what to change (exit 2), instead of failing at the first large shard hours in.

use crate::config::units::human_bytes;
use crate::config::{Config, Dataset, ProviderConfig};
use crate::error::ConfigError;

/// The largest file a FAT (vfat, msdos) file system holds.
pub const FAT_LIMIT: u64 = (4 << 30) - 1;

/// The largest object a backup of `ds` stores on one provider: a shard as stored (its plain
/// size, or the bound for a compressed or encrypted one), or one erasure piece of it.
pub fn largest_object(cfg: &Config, ds: &Dataset) -> u64 {
    let stored = if stores_plain(cfg, ds) {
        cfg.shard_size
    } else {
        crate::manifest::stored_bound(cfg.shard_size)
    };
    ds.erasure.map_or(stored, |e| e.piece_len(stored))
}

/// Whether `ds`'s shards are stored as they are read: no compression, no encryption.
fn stores_plain(cfg: &Config, ds: &Dataset) -> bool {
    cfg.codec(ds).encoding() == crate::codec::Codec::plain().encoding()
}

/// Refuses `ds` when one of its providers cannot take its largest object.
pub fn check(cfg: &Config, ds: &Dataset) -> Result<(), ConfigError> {
    let largest = largest_object(cfg, ds);
    let refusals: Vec<String> = (cfg.providers.iter())
        .filter(|p| ds.providers.contains(&p.name))
        .filter_map(|p| {
            let (limit, why) = limit(p)?;
            (largest > limit).then(|| {
                format!(
                    "{}: {why} takes objects up to {}, but dataset {:?} stores objects of up to {} \
                     ({})",
                    cfg.providers_dir.join(format!("{}.toml", p.name)).display(),
                    human_bytes(limit),
                    ds.name,
                    human_bytes(largest),
                    what_makes(cfg, ds)
                )
            })
        })
        .collect();
    if refusals.is_empty() {
        return Ok(());
    }
    Err(ConfigError(format!(
        "{}; lower shard_size in {} (or use erasure coding, whose pieces are shard_size / k), \
         or back this dataset up elsewhere",
        refusals.join("; "),
        cfg.path.display()
    )))
}

/// What sets a dataset's largest object, for the error message.
fn what_makes(cfg: &Config, ds: &Dataset) -> String {
    let mut s = format!("shard_size {}", human_bytes(cfg.shard_size));
    if !stores_plain(cfg, ds) {
        s.push_str(", plus compression and encryption overhead");
    }
    if let Some(e) = ds.erasure {
        s.push_str(&format!(", cut into {} pieces by erasure = \"{e}\"", e.k));
    }
    s
}

/// The provider's object size limit and who sets it: its `max_object_size`, else a FAT file
/// system under a local path.
fn limit(p: &ProviderConfig) -> Option<(u64, String)> {
    if let Some(max) = p.max_object_size {
        return Some((max, "its max_object_size".to_string()));
    }
    let path = local_path(&p.remote)?;
    is_fat(path).then(|| (FAT_LIMIT, format!("{path} is a FAT file system, which")))
}

/// The directory of a local remote (`/mnt/usb/offsite`, `:local:/mnt/usb`,
/// `:local,opts:/mnt/usb`). A remote of rclone's config whose type is local is not looked up.
fn local_path(remote: &str) -> Option<&str> {
    let path = match remote.strip_prefix(":local") {
        Some(rest) if rest.starts_with([':', ',']) => &rest[rest.find(':')? + 1..],
        _ => remote,
    };
    path.starts_with('/').then_some(path)
}

/// Whether `path`, or the nearest directory above it that exists, is on a FAT file system.
fn is_fat(path: &str) -> bool {
    const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
    fs_type_near(std::path::Path::new(path)) == Some(MSDOS_SUPER_MAGIC)
}

/// The file system type of `path`, or of the nearest directory above it that exists (a
/// provider's folder is made by its first upload).
fn fs_type_near(path: &std::path::Path) -> Option<i64> {
    path.ancestors().find_map(fs_type)
}

fn fs_type(dir: &std::path::Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) on a NUL-terminated path, writing into a zeroed struct we own.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_found_in_plain_and_local_remotes_only() {
        assert_eq!(local_path("/mnt/usb/offsite"), Some("/mnt/usb/offsite"));
        assert_eq!(local_path(":local:/mnt/usb"), Some("/mnt/usb"));
        assert_eq!(local_path(":local,nounc=true:/mnt/usb"), Some("/mnt/usb"));
        assert_eq!(local_path(":localx:/mnt/usb"), None);
        assert_eq!(local_path("b2:bucket/offsite"), None);
        assert_eq!(local_path(":sftp,host=x:/srv"), None);
    }

    #[test]
    fn a_missing_directory_is_judged_by_the_nearest_one_above_it() {
        // Two file systems that differ on every Linux machine: /proc and the root.
        let proc = fs_type(std::path::Path::new("/proc")).expect("statfs /proc");
        let root = fs_type(std::path::Path::new("/")).expect("statfs /");
        assert_ne!(proc, root);
        let missing = std::path::Path::new("/proc/offsite-no-such-dir/below/it");
        assert_eq!(fs_type_near(missing), Some(proc));
        assert!(!is_fat("/proc/offsite-no-such-dir"));
    }
}
