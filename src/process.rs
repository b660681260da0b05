//! Child processes owned by a type (STYLE.md §4).
//!
//! [`ChildProc`] starts a program in its own process group with `PR_SET_PDEATHSIG`, so that
//! neither a Ctrl-C on the terminal nor the death of offsite (even `kill -9`) leaves it running.
//! Its stderr is drained concurrently into a bounded tail that goes into the error message.
//! [`ChildProc::finish`] waits and checks the exit status; dropping an unfinished `ChildProc`
//! kills its whole process group and reaps the child, without panicking.
//!
//! `PR_SET_PDEATHSIG` reaches only the direct child. A `command` source is a shell that may
//! start grandchildren (`sh -c 'tar ... | gzip'`), so [`ChildProc::spawn_guarded`] adds a guard:
//! a tiny `/bin/sh` outside the child's group (and without a death signal) whose stdin is a pipe
//! only offsite holds. When offsite ends for any reason, `kill -9` included, the kernel closes
//! that pipe; the guard reads end-of-file and kills the child's whole group. offsite closes the
//! pipe itself once it has reaped the child, so nothing of the group outlives the child either.
//! (`PR_SET_CHILD_SUBREAPER` would not help: the subreaper is offsite, which is the one dying.)
//!
//! The death signal is armed in `pre_exec`, which then checks that the parent did not die
//! before it was armed by comparing `getppid()` with offsite's pid captured before the fork
//! (never with 1: offsite may itself be PID 1, a container's entrypoint).
//!
//! [`shutdown_token`] is cancelled on the first SIGINT/SIGTERM/SIGHUP (see `lib.rs`);
//! [`run_to_end`] races short-lived local tools (zfs, btrfs) against it and a timeout.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// A child process that failed, with the tail of its stderr.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{program} {}: {}", describe(.status, .ended), tail_or_none(.stderr))]
pub struct ChildError {
    pub program: String,
    /// Exit code, or `None` when killed by a signal or not started.
    pub status: Option<i32>,
    /// How the child ended (or why it never ran).
    pub ended: Ended,
    /// The tail of its stderr; for [`Ended::NotStarted`], the OS error.
    pub stderr: String,
}

/// How a failed child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this non-zero status.
    Exited(i32),
    /// A signal ended it.
    Signal(i32),
    /// It could not be started (no such program, not executable, no memory, ...).
    NotStarted,
    /// offsite could not wait for it, or stopped it (a timeout).
    Lost,
}

impl ChildError {
    fn new(program: &str, ended: Ended, stderr: String) -> ChildError {
        let status = match ended {
            Ended::Exited(c) => Some(c),
            _ => None,
        };
        ChildError {
            program: program.to_string(),
            status,
            ended,
            stderr,
        }
    }

    /// The program never ran: retrying will not help.
    pub fn not_started(&self) -> bool {
        self.ended == Ended::NotStarted
    }
}

fn describe(status: &Option<i32>, ended: &Ended) -> String {
    match (ended, status) {
        (Ended::NotStarted, _) => "could not start".to_string(),
        (Ended::Signal(sig), _) => format!("was killed by signal {sig}"),
        (_, Some(c)) => format!("exited with status {c}"),
        (Ended::Lost, None) | (Ended::Exited(_), None) => "did not finish".to_string(),
    }
}

fn tail_or_none(s: &str) -> &str {
    let t = s.trim();
    if t.is_empty() {
        "(no error output)"
    } else {
        t
    }
}

pub struct ChildProc {
    program: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
    guard: Option<Guard>,
    done: bool,
    /// Set by [`ChildProc::spawn_logged`]: how the child is named in the log, and since when
    /// it runs.
    logged: Option<(std::sync::Arc<str>, std::time::Instant)>,
}

/// How [`ChildProc::spawn_logged`] logs a child: `label` (a redacted command line) with its
/// exit and duration at debug level when it ends; with `forward`, each stderr line as it
/// comes, at debug level; lines `noise` matches are neither forwarded nor kept for errors.
pub struct Logged {
    pub label: String,
    pub forward: bool,
    pub noise: fn(&str) -> bool,
    /// Every stderr line is also sent here while someone listens (a daemon's start-up line
    /// names its address); lines sent after the receiver is dropped are only logged.
    pub tap: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// The guard of a child's process group (see the module doc): a shell that kills the group
/// when its stdin closes.
struct Guard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guard {
    fn spawn(pgid: u32) -> std::io::Result<Guard> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"trap '' HUP INT; while read -r _; do :; done; kill -KILL "-$1" 2>/dev/null"#)
            .arg("offsite-guard")
            .arg(pgid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        Ok(Guard { child, stdin })
    }

    /// Lets the guard kill the group and exit; it is reaped in the background (tokio reaps
    /// dropped children) or by [`Guard::release_and_wait`].
    fn release(&mut self) {
        self.stdin.take();
    }

    async fn release_and_wait(mut self) {
        self.release();
        let _ = self.child.wait().await;
    }
}

impl ChildProc {
    /// Spawns `cmd` with piped stdout and stderr, and stdin as the caller set it (default null).
    pub fn spawn(program: &str, cmd: &mut Command) -> Result<ChildProc, ChildError> {
        Self::spawn_with(program, cmd, None)
    }

    /// [`ChildProc::spawn`], logged as `log` says.
    pub fn spawn_logged(
        program: &str,
        cmd: &mut Command,
        log: Logged,
    ) -> Result<ChildProc, ChildError> {
        Self::spawn_with(program, cmd, Some(log))
    }

    fn spawn_with(
        program: &str,
        cmd: &mut Command,
        log: Option<Logged>,
    ) -> Result<ChildProc, ChildError> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec, where another thread of
        // offsite may have held a lock (malloc's among them) at the fork: it may only make
        // async-signal-safe calls and must not allocate. prctl and getppid are such calls,
        // `parent` is a copied integer, and the error is built from an errno without
        // allocating. (The old note said nothing was allocated while `Error::other` did.)
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    // offsite exited before the child started: no one reads this error.
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ChildError::new(program, Ended::NotStarted, e.to_string()))?;
        // Shards move through these pipes; 1 MiB buffers (the default pipe-max-size) cut the
        // number of reads, writes and wake-ups sixteenfold over the 64 KiB default.
        if let Some(p) = &child.stdin {
            grow_pipe(p.as_fd());
        }
        if let Some(p) = &child.stdout {
            grow_pipe(p.as_fd());
        }
        let label: Option<std::sync::Arc<str>> = log.as_ref().map(|l| l.label.as_str().into());
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(drain_stderr(err, log, label.clone())));
        Ok(ChildProc {
            program: program.to_string(),
            child,
            stderr,
            guard: None,
            done: false,
            logged: label.map(|l| (l, std::time::Instant::now())),
        })
    }

    /// [`ChildProc::spawn`], plus a guard that kills the child's whole process group (its
    /// grandchildren too) once offsite is gone or has reaped the child (see the module doc).
    pub fn spawn_guarded(program: &str, cmd: &mut Command) -> Result<ChildProc, ChildError> {
        let mut child = Self::spawn(program, cmd)?;
        let pgid = child.pid().expect("a child just spawned has a pid");
        let guard = Guard::spawn(pgid).map_err(|e| {
            ChildError::new(
                program,
                Ended::NotStarted,
                format!("its process guard (/bin/sh) did not start: {e}"),
            )
        })?;
        child.guard = Some(guard);
        Ok(child)
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sets the nice value of every thread of every process in the child's group (a thread
    /// started later takes its creator's); nothing once the child is reaped. Raising it needs
    /// `CAP_SYS_NICE` or a high enough `RLIMIT_NICE` (`provider::priority::can_raise`).
    pub fn set_nice(&self, nice: i32) -> std::io::Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        // SAFETY: setpriority(2) on our own child's process group; no memory effects.
        match unsafe { libc::setpriority(libc::PRIO_PGRP, pid as libc::id_t, nice) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether the child has ended (it is then reaped).
    pub fn has_exited(&mut self) -> bool {
        self.done || matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Waits for the child and its stderr; an error unless it exited with status 0.
    pub async fn finish(mut self) -> Result<(), ChildError> {
        let status = self.wait().await;
        let stderr = self.stderr_tail().await;
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => {
                let ended = match (s.code(), s.signal()) {
                    (Some(c), _) => Ended::Exited(c),
                    (None, Some(sig)) => Ended::Signal(sig),
                    (None, None) => Ended::Lost,
                };
                Err(ChildError::new(&self.program, ended, stderr))
            }
            Err(e) => Err(ChildError::new(
                &self.program,
                Ended::Lost,
                format!("wait failed: {e}; {stderr}"),
            )),
        }
    }

    /// Stops the child's process group (SIGTERM, then SIGKILL after `grace`) and reaps it.
    pub async fn terminate(&mut self, grace: std::time::Duration) {
        if self.done {
            return;
        }
        self.signal_group(libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        self.done = true;
        if let Some((label, started)) = &self.logged {
            tracing::debug!(
                "{label}: stopped after {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(g) = self.guard.take() {
            g.release_and_wait().await;
        }
    }

    /// The stderr collected so far (waits for the stream to close).
    pub async fn stderr_tail(&mut self) -> String {
        match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Waits for the child, then lets its guard clear the rest of its group, so that no
    /// grandchild holding stderr open keeps [`ChildProc::stderr_tail`] waiting.
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let s = self.child.wait().await;
        self.done = true;
        if let Some((label, started)) = &self.logged {
            let how = match &s {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("signal {sig}"),
                    _ => "ended".to_string(),
                },
                Err(e) => format!("wait failed: {e}"),
            };
            tracing::debug!(
                "{label}: {how} after {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
        if let Some(g) = self.guard.take() {
            g.release_and_wait().await;
        }
        s
    }

    fn signal_group(&self, sig: i32) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's process group.
            unsafe {
                libc::kill(-(pid as i32), sig);
            }
        }
    }
}

/// Reads a child's stderr to its end and returns the last [`STDERR_TAIL`] bytes of it, minus
/// the lines `log` calls noise; with `log.forward`, logs each line (at debug level, named
/// by `label`) as it comes. A line longer than the tail is cut, so memory stays bounded
/// whatever the child writes.
async fn drain_stderr(
    mut err: tokio::process::ChildStderr,
    log: Option<Logged>,
    label: Option<std::sync::Arc<str>>,
) -> String {
    let mut tail = Vec::new();
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    let keep = |line: &mut Vec<u8>, tail: &mut Vec<u8>| {
        let text = String::from_utf8_lossy(line);
        if let Some(tap) = log.as_ref().and_then(|l| l.tap.as_ref()) {
            let _ = tap.send(text.trim_end().to_string());
        }
        let noise = log.as_ref().is_some_and(|l| (l.noise)(&text));
        if !noise {
            if let (Some(l), Some(label)) = (&log, &label) {
                if l.forward {
                    tracing::debug!("{label}: {}", text.trim_end());
                }
            }
            tail.extend_from_slice(line);
            if tail.len() > 2 * STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        line.clear();
    };
    while let Ok(n) = err.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            line.push(b);
            if b == b'\n' || line.len() >= STDERR_TAIL {
                keep(&mut line, &mut tail);
            }
        }
    }
    if !line.is_empty() {
        keep(&mut line, &mut tail);
    }
    let start = tail.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&tail[start..]).into_owned()
}

/// The token cancelled when offsite is asked to stop (first SIGINT/SIGTERM/SIGHUP). Commands
/// get it passed down as `Ctx::cancel`; short local tool calls deep in the call tree race
/// against it through [`run_to_end`] instead of taking it as an argument.
pub fn shutdown_token() -> &'static CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

/// Where `name` is on PATH; the error says to install it.
pub fn find_program(name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    which::which(name).with_context(|| format!("{name} not found on PATH; is it installed?"))
}

/// How long a local tool call (`zfs snapshot`, `zfs destroy`, `btrfs subvolume delete`, ...)
/// may take before offsite stops it: generous, as destroying a large snapshot takes a while,
/// but a hung pool or a stuck fuse daemon must not hang a nightly run forever.
pub const LOCAL_TOOL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Why [`run_to_end`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Failed(#[from] ChildError),
    #[error("{program} did not finish within {timeout:?} and was stopped")]
    TimedOut { program: String, timeout: Duration },
    #[error(transparent)]
    Interrupted(#[from] crate::error::Interrupted),
}

/// Runs `cmd` to its end and returns its stdout (lossy UTF-8). Stopped (its whole group, and
/// reaped) when `cancel` fires or after `timeout`.
pub async fn run_to_end(
    program: &str,
    cmd: &mut Command,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<String, RunError> {
    let mut child = ChildProc::spawn(program, cmd)?;
    let mut stdout = child.take_stdout().expect("stdout is piped");
    // Owns the child: dropped unfinished (cancel, timeout), it kills its group and reaps it.
    let work = async move {
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out).await;
        drop(stdout);
        child.finish().await?;
        read.map_err(|e| {
            ChildError::new(program, Ended::Lost, format!("reading its output: {e}"))
        })?;
        Ok::<_, ChildError>(out)
    };
    let out = tokio::select! {
        r = work => r?,
        _ = cancel.cancelled() => return Err(crate::error::Interrupted.into()),
        _ = tokio::time::sleep(timeout) => {
            return Err(RunError::TimedOut { program: program.to_string(), timeout })
        }
    };
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn grow_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; failure (an old kernel, a lower limit) is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Whatever happens below, the guard then clears the group and exits.
        if let Some(g) = &mut self.guard {
            g.release();
        }
        if self.done {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        tracing::debug!(program = %self.program, pid = ?self.child.id(), "killing unfinished child");
        self.signal_group(libc::SIGKILL);
        // The group is gone; reap the direct child now so no zombie outlives us.
        let _ = self.child.start_kill();
        if let Some(pid) = self.child.id() {
            let mut status = 0;
            // SAFETY: waitpid on our own child; SIGKILL was sent, so this returns promptly.
            unsafe {
                libc::waitpid(pid as i32, &mut status, 0);
            }
        }
        if let Some(h) = self.stderr.take() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests;
