//! Where backup streams come from: `zfs send`, `btrfs send` or a shell command's stdout, and
//! the snapshots behind the first two.
//!
//! offsite names its own snapshots `offsite-<UTC stamp>` (zfs: `DATASET@offsite-...`; btrfs:
//! `SNAPSHOT_DIR/<dataset-key>.offsite-...`) so that it can tell them from everybody else's.

use crate::config::SourceSpec;
use crate::layout::dataset_key;
use crate::process::{run_to_end, shutdown_token, ChildProc, LOCAL_TOOL_TIMEOUT};
use anyhow::{bail, Context, Result};
use tokio::process::Command;

/// Prefix of every snapshot name offsite creates.
pub const SNAPSHOT_PREFIX: &str = "offsite-";

/// Runs a program to completion and returns its stdout; the error carries its stderr. The
/// call ends early, its process stopped, when offsite is asked to stop or after
/// [`LOCAL_TOOL_TIMEOUT`].
pub async fn run(name: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(crate::process::find_program(name)?);
    cmd.args(args).stdin(std::process::Stdio::null());
    run_to_end(name, &mut cmd, LOCAL_TOOL_TIMEOUT, shutdown_token())
        .await
        .with_context(|| format!("`{name} {}` failed", args.join(" ")))
}

/// Takes the snapshot a backup of `spec` will send, named with `stamp`. `None` for commands.
pub async fn take_snapshot(
    dataset: &str,
    spec: &SourceSpec,
    stamp: &str,
) -> Result<Option<String>> {
    match spec {
        SourceSpec::Command { .. } => Ok(None),
        SourceSpec::Zfs { dataset: fs } => {
            let snap = format!("{fs}@{SNAPSHOT_PREFIX}{stamp}");
            let owner = format!("{}={dataset}", crate::snapshots::ZFS_OWNER);
            run("zfs", &["snapshot", "-o", &owner, &snap])
                .await
                .with_context(|| format!("cannot snapshot zfs dataset {fs}"))?;
            Ok(Some(snap))
        }
        SourceSpec::Btrfs {
            subvolume,
            snapshot_dir,
        } => {
            tokio::fs::create_dir_all(snapshot_dir)
                .await
                .with_context(|| {
                    format!("cannot create snapshot_dir {}", snapshot_dir.display())
                })?;
            let snap =
                snapshot_dir.join(format!("{}.{SNAPSHOT_PREFIX}{stamp}", dataset_key(dataset)));
            let (sub, dst) = (subvolume.display().to_string(), snap.display().to_string());
            run("btrfs", &["subvolume", "snapshot", "-r", &sub, &dst])
                .await
                .with_context(|| format!("cannot snapshot btrfs subvolume {sub}"))?;
            Ok(Some(dst))
        }
    }
}

/// Starts the process whose stdout is the backup stream. `parent` makes an incremental send.
pub fn start_send(
    spec: &SourceSpec,
    flags: &[String],
    snapshot: Option<&str>,
    parent: Option<&str>,
) -> Result<ChildProc> {
    let (name, mut cmd) = match spec {
        SourceSpec::Command { command } => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(command);
            ("command", c)
        }
        SourceSpec::Zfs { .. } => {
            let Some(snap) = snapshot else {
                bail!("zfs send needs a snapshot")
            };
            let mut c = Command::new(crate::process::find_program("zfs")?);
            c.arg("send").args(flags);
            if let Some(p) = parent {
                c.arg("-i").arg(p);
            }
            c.arg(snap);
            ("zfs send", c)
        }
        SourceSpec::Btrfs { .. } => {
            let Some(snap) = snapshot else {
                bail!("btrfs send needs a snapshot")
            };
            let mut c = Command::new(crate::process::find_program("btrfs")?);
            c.arg("send").args(flags);
            if let Some(p) = parent {
                c.arg("-p").arg(p);
            }
            c.arg(snap);
            ("btrfs send", c)
        }
    };
    cmd.stdin(std::process::Stdio::null());
    Ok(match spec {
        // A shell command may start grandchildren: guard its whole process group.
        SourceSpec::Command { .. } => ChildProc::spawn_guarded(name, &mut cmd)?,
        _ => ChildProc::spawn(name, &mut cmd)?,
    })
}

/// A human description of the stream, for logs and errors: `zfs send -i tank/a@x tank/a@y`.
/// A command is named by its program only (`command pg_dump`): its arguments may hold a
/// password, so only `-v` shows them (see [`command_program`]).
pub fn describe(spec: &SourceSpec, snapshot: Option<&str>, parent: Option<&str>) -> String {
    let p = |flag: &str| parent.map(|p| format!("{flag} {p} ")).unwrap_or_default();
    match (spec, snapshot) {
        (SourceSpec::Command { command }, _) => format!("command {}", command_program(command)),
        (SourceSpec::Zfs { .. }, Some(s)) => format!("zfs send {}{s}", p("-i")),
        (SourceSpec::Btrfs { .. }, Some(s)) => format!("btrfs send {}{s}", p("-p")),
        (spec, None) => spec.kind().to_string(),
    }
}

/// The program a shell command runs: its first word after any `VAR=value` assignments
/// (`PGPASSWORD=x pg_dump -U me db` runs `pg_dump`), without the rest of the line.
pub fn command_program(command: &str) -> &str {
    command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or("(empty)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_described_without_its_arguments() {
        let spec = SourceSpec::Command {
            command: "PGPASSWORD=hunter2 pg_dump --password=hunter2 db".into(),
        };
        assert_eq!(describe(&spec, None, None), "command pg_dump");
        assert_eq!(command_program("  cat /x/y "), "cat");
        assert_eq!(command_program(""), "(empty)");
    }
}
