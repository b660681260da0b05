//! Local snapshots: whether one still exists, which ones offsite made, retention, the newest
//! snapshot matching a user's `snapshot_pattern`, send-flag validation and size estimates.
//!
//! Retention only ever deletes snapshots whose name carries offsite's own prefix (see
//! `source::SNAPSHOT_PREFIX`); snapshots made by anybody else are never touched.

use crate::config::{Dataset, SourceSpec};
use crate::error::ConfigError;
use crate::layout::dataset_key;
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

/// Whether offsite made this snapshot of this dataset.
pub fn is_ours(dataset: &str, spec: &SourceSpec, snapshot: &str) -> bool {
    let name = short_name(snapshot);
    match spec {
        SourceSpec::Zfs { .. } => name.starts_with(SNAPSHOT_PREFIX),
        SourceSpec::Btrfs { .. } => {
            name.starts_with(&format!("{}.{SNAPSHOT_PREFIX}", dataset_key(dataset)))
        }
        SourceSpec::Command { .. } => false,
    }
}

/// Deletes offsite's own snapshots of the dataset except those in `keep`; returns the deleted
/// (with `dry_run`, those that would be deleted).
pub async fn retain(ds: &Dataset, keep: &[&str], dry_run: bool) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for snap in list_all(&ds.source).await? {
        if !is_ours(&ds.name, &ds.source, &snap) || keep.contains(&snap.as_str()) {
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

/// The expected size of a full send, for progress: `zfs send -nP` where supported, else the
/// dataset's `referenced` property.
pub async fn estimate(spec: &SourceSpec, snapshot: Option<&str>, incremental: bool) -> Option<u64> {
    let SourceSpec::Zfs { dataset } = spec else {
        return None;
    };
    if let Some(snap) = snapshot {
        if let Ok(out) = run("zfs", &["send", "-nP", snap]).await {
            if let Some(n) = out
                .lines()
                .find_map(|l| l.strip_prefix("size").map(|v| v.trim().parse().ok()))
            {
                return n;
            }
        }
    }
    if incremental {
        return None;
    }
    run("zfs", &["get", "-Hp", "-o", "value", "referenced", dataset])
        .await
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(short_name("/s/x.offsite-1"), "x.offsite-1");
        assert_eq!(short_name("tank/a@snap"), "snap");
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
