//! A wrapper that gives any provider a per-attempt timeout and retries transient failures with
//! exponential backoff and full jitter (restic's `backend/retry`). Not-found and permanent
//! errors are returned at once.
//!
//! Every attempt and every backoff sleep is raced against the run's cancellation token: once
//! it fires, the attempt is dropped (which kills its rclone child, see `process`) and the call
//! returns an [`ErrorKind::Interrupted`] error at once, so no command waits on a hung provider
//! after Ctrl-C.

use super::{ObjectInfo, ProgressFn, Provider, Usage};
use crate::config::RetryPolicy;
use crate::error::{ErrorKind, ProviderError};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
    timeout: Duration,
    cancel: CancellationToken,
}

impl<P: Provider> Retry<P> {
    /// A wrapper that is never cancelled; see [`Retry::cancel_on`].
    pub fn new(inner: P, policy: RetryPolicy, timeout: Duration) -> Self {
        Retry {
            inner,
            policy,
            timeout,
            cancel: CancellationToken::new(),
        }
    }

    /// Ends every call at once, with [`ErrorKind::Interrupted`], when `cancel` fires.
    pub fn cancel_on(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    fn interrupted(&self, op: &'static str, path: &str) -> ProviderError {
        ProviderError::new(
            self.inner.name(),
            op,
            path,
            ErrorKind::Interrupted,
            "interrupted: offsite was asked to stop",
        )
    }

    /// The delay before attempt `n` (n >= 1): uniformly random in [d/2, d] with
    /// d = base * 2^(n-1), capped at 5 minutes.
    pub fn backoff(base: Duration, n: u32) -> Duration {
        let d = base
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(Duration::from_secs(300));
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    async fn run<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        path: &'a str,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 1;
        loop {
            let attempt_run = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(self.interrupted(op, path)),
                r = tokio::time::timeout(self.timeout, f()) => r,
            };
            let result = match attempt_run {
                Ok(r) => r,
                // Dropping the attempt's future kills its rclone child (see `process`).
                Err(_) => Err(ProviderError::new(
                    self.inner.name(),
                    op,
                    path,
                    ErrorKind::Transient,
                    format!("timed out after {:?}", self.timeout),
                )),
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    let delay = Self::backoff(self.policy.base_delay, attempt);
                    tracing::warn!(
                        "{e} (attempt {attempt} of {}); retrying in {:.1}s",
                        self.policy.attempts,
                        delay.as_secs_f64()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return Err(self.interrupted(op, path)),
                    }
                    attempt += 1;
                }
                Err(mut e) if attempt > 1 => {
                    e.message = format!("{} (after {attempt} attempts)", e.message.trim_end());
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

impl<P: Provider> Provider for Retry<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.run("upload", path, move || {
            self.inner.put(path, data.clone(), progress.clone())
        }))
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(self.run("download", path, move || self.inner.get(path, limit)))
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(self.run("download", path, move || {
            self.inner.get_range(path, offset, len)
        }))
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(self.run("list", dir, move || self.inner.list(dir)))
    }

    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(self.run("list", dir, move || self.inner.list_hashed(dir)))
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.run("delete", path, move || self.inner.delete(path)))
    }

    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        Box::pin(self.run("about", "", move || self.inner.about()))
    }

    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.run("copy", path, move || {
            self.inner.copy_from(src_root, src_path, path)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Fault, MemoryProvider};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_growing_backoff() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "x".into(),
            kind: ErrorKind::Transient,
            times: 4,
        });
        let r = Retry::new(mem, policy(), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        r.put("x", Bytes::from_static(b"data"), None).await.unwrap();
        let waited = start.elapsed();
        // Four backoffs of at least 0.5, 1, 2 and 4 seconds, at most 1+2+4+8.
        assert!(
            waited >= Duration::from_millis(7500) && waited <= Duration::from_secs(15),
            "{waited:?}"
        );
        assert_eq!(r.inner.object("x").as_deref(), Some(&b"data"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt_and_says_so() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Transient,
            times: u32::MAX,
        });
        let r = Retry::new(mem, policy(), Duration::from_secs(60));
        let e = r.put("x", Bytes::new(), None).await.unwrap_err();
        assert!(e.to_string().contains("after 5 attempts"), "{e}");
        assert_eq!(r.inner.puts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_and_not_found_are_not_retried() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Permanent,
            times: 1,
        });
        let r = Retry::new(mem, policy(), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        assert_eq!(
            r.put("x", Bytes::new(), None).await.unwrap_err().kind,
            ErrorKind::Permanent
        );
        assert_eq!(
            r.get("nope", 10).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_times_out_and_is_retried() {
        struct Hang;
        impl Provider for Hang {
            fn name(&self) -> &str {
                "hang"
            }
            fn put<'a>(
                &'a self,
                _: &'a str,
                _: Bytes,
                _: Option<ProgressFn>,
            ) -> BoxFuture<'a, Result<(), ProviderError>> {
                Box::pin(futures::future::pending())
            }
            fn get<'a>(
                &'a self,
                _: &'a str,
                _: u64,
            ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
                unimplemented!()
            }
            fn list<'a>(
                &'a self,
                _: &'a str,
            ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
                unimplemented!()
            }
            fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
                unimplemented!()
            }
            fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
                unimplemented!()
            }
        }
        let r = Retry::new(
            Hang,
            RetryPolicy {
                attempts: 2,
                base_delay: Duration::from_secs(1),
            },
            Duration::from_secs(30),
        );
        let e = r.put("x", Bytes::new(), None).await.unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(e.to_string().contains("after 2 attempts"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_backoff_sleep_at_once_and_starts_no_attempt() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Transient,
            times: u32::MAX,
        });
        let cancel = CancellationToken::new();
        let r = Retry::new(mem, policy(), Duration::from_secs(60)).cancel_on(cancel.clone());
        let start = tokio::time::Instant::now();
        let stop = cancel.clone();
        // The first attempt fails at once; the run then sleeps at least 0.5 s before the next.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
        });
        let e = r.put("x", Bytes::new(), None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted, "{e}");
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // Already cancelled: nothing more is attempted.
        let e = r.get("x", 10).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Interrupted, "{e}");
    }
}
