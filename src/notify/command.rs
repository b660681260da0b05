//! `notify_command`: run through `sh -c` with the `OFFSITE_*` variables, its output (stdout and
//! stderr together) copied into the log, killed after [`TIMEOUT`]; a failure is a warning.

use std::time::Duration;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How long the hook may run before its process group is killed.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `line` with `env`; never fails the run.
pub async fn run(line: &str, env: &[(&'static str, String)]) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1\n{line}"))
        .stdin(std::process::Stdio::null())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    // Its own token: a run stopped by a signal still reports how it ended.
    let never = CancellationToken::new();
    match crate::process::run_to_end("notify_command", &mut cmd, TIMEOUT, &never).await {
        Ok(out) => {
            for l in out.lines() {
                tracing::info!("notify_command: {l}");
            }
        }
        Err(e) => tracing::warn!("notify_command failed (the run's exit code is unchanged): {e}"),
    }
}
