//! Local snapshots: whether one still exists, which ones offsite made, retention, the newest
//! snapshot matching a user's `snapshot_pattern`, send-flag validation and size estimates.
//!
//! Retention only ever deletes snapshots offsite made for that very dataset (see [`owned`]):
//! the exact name offsite gives (`offsite-<UTC stamp>`, see `source::SNAPSHOT_PREFIX`), of
//! exactly the configured zfs dataset or btrfs subvolume, and marked as offsite's: on zfs by
//! the user property [`ZFS_OWNER`] naming the dataset, on btrfs by being a read-only snapshot
//! of the configured subvolume. Snapshots made by anybody else are never touched.

use crate::config::{Dataset, SourceSpec};
use crate::error::ConfigError;
use crate::layout::{dataset_key, utc_stamp, BackupId};
use crate::source::{run, SNAPSHOT_PREFIX};
use anyhow::{Context, Result};
use std::path::Path;

/// Whether `snapshot` (a zfs `fs@name` or a btrfs path) still exists.
pub async fn exists(spec: &SourceSpec, snapshot: &str) -> bool {
    match spec {
        SourceSpec::Zfs { .. } => run(
            "zfs",
            &["list", "-H", "-o", "name", "-t", "snapshot", snapshot],
        )
        .await
        .is_ok(),
        SourceSpec::Btrfs { .. } => Path::new(snapshot).is_dir(),
        SourceSpec::Command { .. } => true,
    }
}

/// Every snapshot of the dataset, oldest first (zfs: `fs@name`; btrfs: paths in snapshot_dir).
pub async fn list_all(spec: &SourceSpec) -> Result<Vec<String>> {
    match spec {
        SourceSpec::Zfs { dataset } => {
            let out = run(
                "zfs",
                &[
                    "list", "-H", "-o", "name", "-t", "snapshot", "-s", "creation", "-r", dataset,
                ],
            )
            .await?;
            let prefix = format!("{dataset}@");
            Ok(out
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .map(str::to_string)
                .collect())
        }
        SourceSpec::Btrfs { snapshot_dir, .. } => {
            let mut entries: Vec<(std::time::SystemTime, String)> = Vec::new();
            let rd = match std::fs::read_dir(snapshot_dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read {}", snapshot_dir.display()))
                }
            };
            for e in rd.flatten() {
                let meta = e.metadata()?;
                if meta.is_dir() {
                    let t = meta
                        .created()
                        .or_else(|_| meta.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((t, e.path().display().to_string()));
                }
            }
            entries.sort();
            Ok(entries.into_iter().map(|(_, p)| p).collect())
        }
        SourceSpec::Command { .. } => Ok(vec![]),
    }
}

/// The short name of a snapshot: after `@` on zfs, the last path component on btrfs.
pub fn short_name(snapshot: &str) -> &str {
    snapshot.rsplit(['@', '/']).next().unwrap_or(snapshot)
}

/// The zfs user property offsite sets on each snapshot it makes: the name of the dataset (in
/// offsite's config) the snapshot was made for.
pub const ZFS_OWNER: &str = "offsite:dataset";

/// Whether `snapshot` has exactly the name offsite gives the snapshots of this dataset:
/// `fs@offsite-<stamp>` of the configured zfs dataset, or `<snapshot_dir>/<key>.offsite-<stamp>`.
pub fn is_ours(dataset: &str, spec: &SourceSpec, snapshot: &str) -> bool {
    let stamp = match spec {
        SourceSpec::Zfs { dataset: fs } => snapshot
            .strip_prefix(fs.as_str())
            .and_then(|s| s.strip_prefix('@'))
            .and_then(|s| s.strip_prefix(SNAPSHOT_PREFIX)),
        SourceSpec::Btrfs { snapshot_dir, .. } => {
            let own = format!("{}.{SNAPSHOT_PREFIX}", dataset_key(dataset));
            let path = Path::new(snapshot);
            match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
                (Some(dir), Some(name)) if dir == snapshot_dir => name.strip_prefix(own.as_str()),
                _ => None,
            }
        }
        SourceSpec::Command { .. } => None,
    };
    stamp.is_some_and(|s| {
        BackupId::parse(&format!("{s}-full")).is_some_and(|id| utc_stamp(id.time()) == s)
    })
}

/// The snapshots offsite made of this dataset, oldest first: named as [`is_ours`] says, and on
/// zfs carrying [`ZFS_OWNER`] = the dataset's name, on btrfs read-only snapshots of exactly
/// the configured subvolume.
pub async fn owned(ds: &Dataset) -> Result<Vec<String>> {
    match &ds.source {
        SourceSpec::Zfs { dataset: fs } => {
            let props = format!("name,{ZFS_OWNER}");
            let out = run(
                "zfs",
                &[
                    "list", "-H", "-o", &props, "-t", "snapshot", "-s", "creation", "-r", fs,
                ],
            )
            .await?;
            Ok(out
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(name, owner)| *owner == ds.name && is_ours(&ds.name, &ds.source, name))
                .map(|(name, _)| name.to_string())
                .collect())
        }
        SourceSpec::Btrfs { subvolume, .. } => {
            let source = btrfs_show(&subvolume.display().to_string())
                .await
                .with_context(|| format!("cannot read btrfs subvolume {}", subvolume.display()))?;
            let mut out = Vec::new();
            for snap in list_all(&ds.source).await? {
                if !is_ours(&ds.name, &ds.source, &snap) {
                    continue;
                }
                let Ok(info) = btrfs_show(&snap).await else {
                    continue; // not a subvolume: not a snapshot offsite made
                };
                if info.readonly && info.parent_uuid.is_some() && info.parent_uuid == source.uuid {
                    out.push(snap);
                }
            }
            Ok(out)
        }
        SourceSpec::Command { .. } => Ok(vec![]),
    }
}

/// What `btrfs subvolume show` says of a subvolume that matters to ownership.
#[derive(Debug, Default, PartialEq, Eq)]
struct BtrfsInfo {
    uuid: Option<String>,
    parent_uuid: Option<String>,
    readonly: bool,
}

async fn btrfs_show(path: &str) -> Result<BtrfsInfo> {
    Ok(parse_btrfs_show(
        &run("btrfs", &["subvolume", "show", path]).await?,
    ))
}

fn parse_btrfs_show(text: &str) -> BtrfsInfo {
    let mut info = BtrfsInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let uuid = (value != "-" && !value.is_empty()).then(|| value.to_string());
        match key.trim() {
            "UUID" => info.uuid = uuid,
            "Parent UUID" => info.parent_uuid = uuid,
            "Flags" => {
                info.readonly = value
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .any(|f| f == "readonly")
            }
            _ => {}
        }
    }
    info
}

/// Deletes offsite's own snapshots of the dataset (see [`owned`]) except those in `keep`;
/// returns the deleted (with `dry_run`, those that would be deleted).
pub async fn retain(ds: &Dataset, keep: &[&str], dry_run: bool) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for snap in owned(ds).await? {
        if keep.contains(&snap.as_str()) {
            continue;
        }
        if dry_run {
            deleted.push(snap);
            continue;
        }
        match &ds.source {
            SourceSpec::Zfs { .. } => run("zfs", &["destroy", &snap]).await?,
            SourceSpec::Btrfs { .. } => run("btrfs", &["subvolume", "delete", &snap]).await?,
            SourceSpec::Command { .. } => continue,
        };
        deleted.push(snap);
    }
    Ok(deleted)
}

/// The newest existing snapshot whose short name matches the glob `pattern`.
pub async fn newest_matching(spec: &SourceSpec, pattern: &str) -> Result<Option<String>> {
    Ok(list_all(spec)
        .await?
        .into_iter()
        .rev()
        .find(|s| glob_match(pattern, short_name(s))))
}

/// Shell-style glob with `*` and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Checks `send_flags` against the installed tool's usage text, where it can be read.
pub async fn check_send_flags(ds: &Dataset) -> Result<(), ConfigError> {
    if ds.send_flags.is_empty() {
        return Ok(());
    }
    let usage = match &ds.source {
        SourceSpec::Zfs { .. } => usage_text("zfs", &["send"]).await,
        SourceSpec::Btrfs { .. } => usage_text("btrfs", &["send", "--help"]).await,
        SourceSpec::Command { .. } => {
            return Err(ConfigError(format!(
                "dataset {:?}: send_flags apply to zfs and btrfs datasets only",
                ds.name
            )))
        }
    };
    let Some(usage) = usage else { return Ok(()) };
    for flag in &ds.send_flags {
        if !flag_in_usage(flag, &usage) {
            return Err(ConfigError(format!(
                "dataset {:?}: send flag {flag:?} is not accepted by the installed `{} send`; its usage reads:\n{}",
                ds.name,
                ds.source.kind(),
                usage.trim()
            )));
        }
    }
    Ok(())
}

async fn usage_text(program: &str, args: &[&str]) -> Option<String> {
    let path = which::which(program).ok()?;
    let out = tokio::process::Command::new(path)
        .args(args)
        .output()
        .await
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("send").then_some(text)
}

/// Whether a flag (`-w`, `-Lce`, `--raw`; values after `=` ignored) appears in a usage text.
pub fn flag_in_usage(flag: &str, usage: &str) -> bool {
    if let Some(long) = flag.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        return usage.contains(&format!("--{name}"));
    }
    let Some(short) = flag.strip_prefix('-') else {
        return true;
    }; // a value, not a flag
    let letters: std::collections::HashSet<char> = usage
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '|' || c == ',')
        .filter_map(|t| t.strip_prefix('-'))
        .filter(|t| !t.starts_with('-'))
        .flat_map(|t| t.chars().take_while(|c| c.is_ascii_alphanumeric()))
        .collect();
    !short.is_empty() && short.chars().all(|c| letters.contains(&c))
}

/// The expected size of a zfs send, for progress: `zfs send -nP [-i PARENT] SNAP` where
/// supported; else, for a full send, the dataset's `referenced` property. An incremental
/// without `-nP` has no estimate (its full size would make the ETA a lie).
pub async fn estimate(
    spec: &SourceSpec,
    snapshot: Option<&str>,
    parent: Option<&str>,
) -> Option<u64> {
    let SourceSpec::Zfs { dataset } = spec else {
        return None;
    };
    if let Some(snap) = snapshot {
        if let Ok(out) = run("zfs", &dry_run_args(snap, parent)).await {
            if let Some(n) = parse_dry_run_size(&out) {
                return Some(n);
            }
        }
    }
    if parent.is_some() {
        return None;
    }
    run("zfs", &["get", "-Hp", "-o", "value", "referenced", dataset])
        .await
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `zfs send -nP [-i PARENT] SNAP`: what the send would be, without sending.
fn dry_run_args<'a>(snap: &'a str, parent: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["send", "-nP"];
    if let Some(p) = parent {
        args.extend(["-i", p]);
    }
    args.push(snap);
    args
}

/// The `size` line of `zfs send -nP`'s output (`size\t12345`).
fn parse_dry_run_size(out: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("size")).then(|| words.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incremental_estimate_asks_for_the_increment() {
        assert_eq!(
            dry_run_args("tank/d@b", Some("tank/d@a")),
            ["send", "-nP", "-i", "tank/d@a", "tank/d@b"]
        );
        assert_eq!(dry_run_args("tank/d@a", None), ["send", "-nP", "tank/d@a"]);
        let out = "incremental\ttank/d@a\ttank/d@b\t1234\nsize\t1234\n";
        assert_eq!(parse_dry_run_size(out), Some(1234));
        assert_eq!(
            parse_dry_run_size("full\ttank/d@a\t99\nsize 99\n"),
            Some(99)
        );
        assert_eq!(parse_dry_run_size("sizeable 3\n"), None);
        assert_eq!(parse_dry_run_size(""), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "autosnap_*_daily",
            "autosnap_2026-11-21_00:00:01_daily"
        ));
        assert!(!glob_match(
            "autosnap_*_daily",
            "autosnap_2026-11-21_00:00:01_hourly"
        ));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("x", "xy"));
    }

    #[test]
    fn ours_and_short_names() {
        let zfs = SourceSpec::Zfs {
            dataset: "tank/a".into(),
        };
        assert!(is_ours("a", &zfs, "tank/a@offsite-20261121T020000Z"));
        assert!(!is_ours("a", &zfs, "tank/a@autosnap_2026_daily"));
        // Hand-made look-alikes, another dataset, a child dataset.
        for other in [
            "tank/a@offsite-manual",
            "tank/a@offsite-2020",
            "tank/a@offsite-20261121T020000Z-keep",
            "tank/a@offsite-20261341T020000Z",
            "tank/ab@offsite-20261121T020000Z",
            "tank/a/child@offsite-20261121T020000Z",
        ] {
            assert!(!is_ours("a", &zfs, other), "{other}");
        }
        let b = SourceSpec::Btrfs {
            subvolume: "/v".into(),
            snapshot_dir: "/s".into(),
        };
        assert!(is_ours(
            "my/vol",
            &b,
            "/s/my%2Fvol.offsite-20261121T020000Z"
        ));
        assert!(!is_ours(
            "other",
            &b,
            "/s/my%2Fvol.offsite-20261121T020000Z"
        ));
        assert!(!is_ours("my/vol", &b, "/s/my%2Fvol.offsite-manual"));
        assert!(!is_ours(
            "my/vol",
            &b,
            "/elsewhere/my%2Fvol.offsite-20261121T020000Z"
        ));
        assert!(!is_ours(
            "my/vol",
            &b,
            "/s/sub/my%2Fvol.offsite-20261121T020000Z"
        ));
        assert_eq!(short_name("/s/x.offsite-1"), "x.offsite-1");
        assert_eq!(short_name("tank/a@snap"), "snap");
    }

    #[test]
    fn btrfs_show_is_read_for_uuids_and_the_readonly_flag() {
        let snap = "snaps/x\n\tName: \t\t\tx\n\tUUID: \t\t\t82ef\n\tParent UUID: \t\tcce2\n\
                    \tReceived UUID: \t\t-\n\tFlags: \t\t\treadonly\n\tSnapshot(s):\n";
        assert_eq!(
            parse_btrfs_show(snap),
            BtrfsInfo {
                uuid: Some("82ef".into()),
                parent_uuid: Some("cce2".into()),
                readonly: true
            }
        );
        let vol = "vol\n\tUUID: \t\t\tcce2\n\tParent UUID: \t\t-\n\tFlags: \t\t\t-\n";
        assert_eq!(
            parse_btrfs_show(vol),
            BtrfsInfo {
                uuid: Some("cce2".into()),
                parent_uuid: None,
                readonly: false
            }
        );
    }

    #[test]
    fn flags_against_usage() {
        let zfs_fuse = "usage:\n\tsend [-vR] [-[iI] snapshot] <snapshot>\n";
        assert!(flag_in_usage("-R", zfs_fuse));
        assert!(flag_in_usage("-v", zfs_fuse));
        assert!(!flag_in_usage("-w", zfs_fuse));
        let openzfs = "\tsend [-DLPbcehnpsvw] [-R [-X dataset[,dataset]...]] [[-I|-i] snapshot] snapshot\n\t--raw";
        assert!(flag_in_usage("-w", openzfs));
        assert!(flag_in_usage("-Lce", openzfs));
        assert!(flag_in_usage("--raw", openzfs));
        assert!(!flag_in_usage("--nope", openzfs));
    }
}
