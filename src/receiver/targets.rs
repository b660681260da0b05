//! What a zfs or btrfs target already holds, so that a restore applies only the backups it
//! lacks: the snapshots of a zfs dataset, and the whole received snapshots in a btrfs receive
//! directory (anything else under a snapshot's name is refused with guidance).

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// The snapshot names (the part after `@`) a zfs dataset holds; empty if it does not exist.
pub async fn zfs_snapshots(target: &str) -> Result<BTreeSet<String>> {
    // zfs-fuse refuses `-t snapshot` on a named dataset without `-r`; filter the children out.
    let out = match crate::source::run(
        "zfs",
        &["list", "-H", "-t", "snapshot", "-o", "name", "-r", target],
    )
    .await
    {
        Ok(out) => out,
        Err(e) if format!("{e:#}").contains("does not exist") => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.context(format!("cannot list the snapshots of {target}"))),
    };
    let prefix = format!("{target}@");
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(str::to_string)
        .collect())
}

/// The names in a btrfs receive directory, which must exist.
pub fn btrfs_entries(dir: &Path) -> Result<BTreeSet<String>> {
    if !dir.is_dir() {
        bail!(
            "target {} is not a directory; btrfs receive needs an existing directory on a btrfs filesystem",
            dir.display()
        );
    }
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        out.insert(e?.file_name().to_string_lossy().into_owned());
    }
    Ok(out)
}

/// Of the `names` present in a btrfs receive directory, those that hold a whole received
/// snapshot: a read-only subvolume with a received UUID. Anything else under such a name (the
/// writable subvolume an interrupted `btrfs receive` leaves, or a plain directory) is refused
/// with guidance: offsite cannot be certain it made it, so it neither deletes it nor takes it
/// for the snapshot.
pub async fn btrfs_received(dir: &Path, names: &[&str]) -> Result<BTreeSet<String>> {
    let present = btrfs_entries(dir)?;
    let mut held = BTreeSet::new();
    for name in names.iter().filter(|n| present.contains(**n)) {
        let path = dir.join(name);
        let shown = path.display().to_string();
        let show = crate::source::run("btrfs", &["subvolume", "show", &shown]).await;
        let why =
            match show.as_deref().map(subvolume_state) {
                Ok((true, true)) => {
                    held.insert(name.to_string());
                    continue;
                }
                Ok((received, _)) => format!(
                "is a {} subvolume{}: the remains of an interrupted restore, or not a restored \
                 snapshot at all",
                if received { "writable" } else { "partial" },
                if received { "" } else { " without a received UUID" }
            ),
                Err(_) => "exists but is not a btrfs subvolume".to_string(),
            };
        return Err(crate::error::ConfigError(format!(
            "{shown} {why}; offsite will not delete it or take it for snapshot {name}. Check it, \
             remove it (`btrfs subvolume delete {shown}`, or rename it), and run restore again"
        ))
        .into());
    }
    Ok(held)
}

/// `(has a received UUID, is read-only)` from `btrfs subvolume show` output.
pub(super) fn subvolume_state(show: &str) -> (bool, bool) {
    let field = |key: &str| {
        show.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
            .next()
    };
    let received = field("Received UUID:").is_some_and(|v| !v.is_empty() && v != "-");
    let readonly = field("Flags:").is_some_and(|v| v.contains("readonly"));
    (received, readonly)
}
