//! Child processes owned by a type (STYLE.md §4).
//!
//! [`ChildProc`] starts a program in its own process group with `PR_SET_PDEATHSIG`, so that
//! neither a Ctrl-C on the terminal nor the death of offsite (even `kill -9`) leaves it running.
//! Its stderr is drained concurrently into a bounded tail that goes into the error message.
//! [`ChildProc::finish`] waits and checks the exit status; dropping an unfinished `ChildProc`
//! kills its whole process group and reaps the child, without panicking.

use std::os::fd::AsFd;
use std::process::{ExitStatus, Stdio};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

/// How much of a child's stderr is kept for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// A child process that failed, with the tail of its stderr.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{program} {}: {}", describe(.status), tail_or_none(.stderr))]
pub struct ChildError {
    pub program: String,
    /// Exit code, or `None` when killed by a signal or not started.
    pub status: Option<i32>,
    pub stderr: String,
}

fn describe(status: &Option<i32>) -> String {
    match status {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
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
    done: bool,
}

impl ChildProc {
    /// Spawns `cmd` with piped stdout and stderr, and stdin as the caller set it (default null).
    pub fn spawn(program: &str, cmd: &mut Command) -> Result<ChildProc, ChildError> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("parent already exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| ChildError {
            program: program.to_string(),
            status: None,
            stderr: format!("cannot start: {e}"),
        })?;
        // Shards move through these pipes; 1 MiB buffers (the default pipe-max-size) cut the
        // number of reads, writes and wake-ups sixteenfold over the 64 KiB default.
        if let Some(p) = &child.stdin {
            grow_pipe(p.as_fd());
        }
        if let Some(p) = &child.stdout {
            grow_pipe(p.as_fd());
        }
        let stderr = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                let start = tail.len().saturating_sub(STDERR_TAIL);
                String::from_utf8_lossy(&tail[start..]).into_owned()
            })
        });
        Ok(ChildProc {
            program: program.to_string(),
            child,
            stderr,
            done: false,
        })
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
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
            Ok(s) => Err(ChildError {
                program: self.program.clone(),
                status: s.code(),
                stderr,
            }),
            Err(e) => Err(ChildError {
                program: self.program.clone(),
                status: None,
                stderr: format!("wait failed: {e}; {stderr}"),
            }),
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
    }

    /// The stderr collected so far (waits for the stream to close).
    pub async fn stderr_tail(&mut self) -> String {
        match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let s = self.child.wait().await;
        self.done = true;
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

fn grow_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; failure (an old kernel, a lower limit) is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
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
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn failure_carries_stderr_tail() {
        let p = ChildProc::spawn("sh", &mut sh("echo oops >&2; exit 3")).unwrap();
        let e = p.finish().await.unwrap_err();
        assert_eq!(e.status, Some(3));
        assert!(e.to_string().contains("oops"), "{e}");
    }

    #[tokio::test]
    async fn drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let mut p = ChildProc::spawn("sh", &mut sh(&script)).unwrap();
        let mut out = p.take_stdout().unwrap();
        // The grandchild's pid is written before `wait`; poll the file, not the clock.
        let gpid = loop {
            if let Ok(s) = std::fs::read_to_string(&pidfile) {
                if s.ends_with('\n') {
                    break s.trim().parse::<i32>().unwrap();
                }
            }
            tokio::task::yield_now().await;
        };
        drop(p);
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink).await;
        // Reaped or at least dead: signal 0 fails once the process is gone (it is not our child).
        let mut alive = true;
        for _ in 0..1000 {
            // SAFETY: probing a pid with signal 0.
            alive = unsafe { libc::kill(gpid, 0) } == 0;
            if !alive {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!alive, "grandchild {gpid} survived the drop");
    }
}
