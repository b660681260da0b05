//! Uploads a provider is behind on yield the CPU to the providers that keep up.
//!
//! With a spool (`spool_dir`), a backup lets a slow or retrying provider fall behind the
//! others: the shards it still needs wait on disk, not in memory. Its catch-up uploads would
//! still compete for the CPU (and through it for the disk) with the providers that keep up,
//! and on a small machine hold them back about as much as the memory did. So they run at a
//! lower CPU priority, [`YIELD`] steps above offsite's own nice value. That matters only when
//! the CPU is short: on an idle machine they run at full speed.
//!
//! The engine decides which uploads those are and runs them inside [`when`]; the provider
//! asks [`now`] as a transfer starts (after its concurrency permit, and again on each retry)
//! and lowers what does the work: a spawned rclone from its start ([`start_lowered`]), a
//! thread of its own for a direct write ([`on_own_thread`]), or the provider's daemon, whose
//! whole process group is lowered and raised again as uploads ask
//! ([`crate::process::ChildProc::set_nice`]), but only where offsite may raise it
//! ([`can_raise`]: root, or `RLIMIT_NICE`): a daemon lowered for good would slow every later
//! call of its provider, the ones that the run then waits for included.

use std::future::Future;
use std::sync::{Arc, OnceLock};

/// How many nice steps work that yields goes below offsite's own priority. Linux gives a
/// thread at nice 19 about 1.5% of a CPU next to one at 0, and lets it have all of an idle one.
pub const YIELD: i32 = 19;

/// Whether the upload running in this task is one its provider is behind on, asked when the
/// transfer starts.
pub type Behind = Arc<dyn Fn() -> bool + Send + Sync>;

tokio::task_local! {
    static BEHIND: Behind;
}

/// Runs `upload` with `behind` as the answer of [`now`] inside it.
pub async fn when<F: Future>(behind: Behind, upload: F) -> F::Output {
    BEHIND.scope(behind, upload).await
}

/// Whether the upload running in this task should yield the CPU: false outside [`when`].
pub fn now() -> bool {
    BEHIND.try_with(|behind| behind()).unwrap_or(false)
}

/// offsite's own nice value, as its threads had it when first asked (never asked from a
/// thread that lowered itself).
pub fn own_nice() -> i32 {
    static OWN: OnceLock<i32> = OnceLock::new();
    // SAFETY: getpriority has no memory effects. -1 is also its error value; taken as the
    // nice value it only makes work that yields yield one step less.
    *OWN.get_or_init(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
}

/// The nice value of work that yields: [`YIELD`] above offsite's own, at most 19.
pub fn yielding_nice() -> i32 {
    (own_nice() + YIELD).min(19)
}

/// Makes `cmd` start at [`yielding_nice`]: set in the child before it execs, so neither its
/// start-up nor any thread it starts runs higher.
pub fn start_lowered(cmd: &mut tokio::process::Command) {
    let nice = yielding_nice();
    // SAFETY: the closure runs in the forked child before exec: setpriority is
    // async-signal-safe, and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            Ok(())
        });
    }
}

/// Whether offsite may raise work it lowered back to its own priority: as root with
/// `CAP_SYS_NICE`, or where `RLIMIT_NICE` allows. Probed once, on a thread of its own.
pub fn can_raise() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        let (lower, own) = (yielding_nice(), own_nice());
        let probe = std::thread::spawn(move || {
            // SAFETY: setpriority on this thread only; no memory effects.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, lower);
                libc::setpriority(libc::PRIO_PROCESS, 0, own) == 0
            }
        });
        probe.join().unwrap_or(false)
    })
}

/// Runs `work` on a new thread at [`yielding_nice`] (a thread of tokio's blocking pool, once
/// lowered, could not always be raised again), joined from the blocking pool, so that a
/// runtime shutting down waits for it as for any blocking work. A thread that cannot start is
/// an error.
pub async fn on_own_thread<T, F>(work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let lowered = move || {
        // SAFETY: setpriority has no memory effects; `0` is the calling thread on Linux.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, yielding_nice()) };
        work()
    };
    let joined = tokio::task::spawn_blocking(move || {
        let thread = std::thread::Builder::new().name("offsite-yield".into());
        let panicked = |_| Err(std::io::Error::other("the writing thread panicked"));
        thread.spawn(lowered)?.join().unwrap_or_else(panicked)
    });
    joined
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The nice value of process `pid` (field 19 of `/proc/PID/stat`, after the command name).
#[cfg(test)]
pub(crate) fn nice_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(16).unwrap().parse().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's nice value.
    fn nice_here() -> i32 {
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[tokio::test]
    async fn only_uploads_run_inside_when_ask_and_get_its_answer() {
        assert!(!now());
        assert!(when(Arc::new(|| true), async { now() }).await);
        assert!(!when(Arc::new(|| false), async { now() }).await);
        assert!(!now());
    }

    #[tokio::test]
    async fn work_on_its_own_thread_runs_lowered_and_leaves_the_callers_thread_as_it_was() {
        let before = nice_here();
        if before == 19 {
            eprintln!("skipped: the tests run at nice 19, below which nothing can go");
            return;
        }
        let (nice, result) = on_own_thread(|| Ok((nice_here(), 7))).await.unwrap();
        assert_eq!(result, 7);
        assert_eq!(nice, yielding_nice());
        assert!(nice > before, "{nice} is not below {before}");
        assert_eq!(nice_here(), before);
        let failed = on_own_thread(|| Err::<(), _>(std::io::Error::other("disk"))).await;
        assert_eq!(failed.unwrap_err().to_string(), "disk");
    }

    #[tokio::test]
    async fn a_command_started_lowered_runs_lowered_from_its_start() {
        if nice_here() == 19 {
            eprintln!("skipped: the tests run at nice 19, below which nothing can go");
            return;
        }
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("1000").kill_on_drop(true);
        start_lowered(&mut cmd);
        let child = cmd.spawn().unwrap();
        assert_eq!(nice_of(child.id().unwrap()), yielding_nice());
    }
}
