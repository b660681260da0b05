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
//! and lowers what does the work: a spawned rclone's process group
//! ([`crate::process::ChildProc::set_nice`]), the provider's daemon, or a thread of its own
//! for a direct write ([`on_own_thread`]). Raising a priority again needs root
//! (`CAP_SYS_NICE`): run unprivileged, a daemon once lowered stays so for the rest of the run.

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

/// Runs `work` on a new thread at [`yielding_nice`]: a thread of tokio's blocking pool, once
/// lowered, could not be raised again without root. A thread that cannot start is an error.
pub async fn on_own_thread<T, F>(work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("offsite-yield".into())
        .spawn(move || {
            // SAFETY: setpriority has no memory effects; `0` is the calling thread on Linux.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, yielding_nice()) };
            let _ = tx.send(work());
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked")))
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
        let (nice, result) = on_own_thread(|| Ok((nice_here(), 7))).await.unwrap();
        assert_eq!(result, 7);
        assert_eq!(nice, yielding_nice());
        assert!(
            nice > before || before == 19,
            "{nice} is not below {before}"
        );
        assert_eq!(nice_here(), before);
        let failed = on_own_thread(|| Err::<(), _>(std::io::Error::other("disk"))).await;
        assert_eq!(failed.unwrap_err().to_string(), "disk");
    }
}
