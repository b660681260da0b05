//! A layer that retries transient failures with exponential backoff and equal jitter (each
//! delay is uniformly random in [d/2, d]; restic's `backend/retry`). Not-found and permanent
//! errors are returned at once.
//!
//! Every attempt and every backoff sleep is raced against the run's cancellation token: once
//! it fires, the attempt is dropped (which kills its rclone child, see `process`, and gives back
//! a [`super::Limit`] permit) and the call returns an [`ErrorKind::Interrupted`] error at once,
//! so no command waits on a hung provider after Ctrl-C. A retrying call holds no permit of a
//! `Limit` below it while it backs off. The per-attempt deadline is [`super::Timeout`]'s.
//!
//! A retry is reported to the run's progress ([`Retry::report_to`]): the provider's line says
//! `retrying 3/5 in 4s` until the call ends, whichever way (dropping a provider from the run
//! is the engine's decision, and its report).

use super::{Layer, Op, Provider};
use crate::config::RetryPolicy;
use crate::error::{ErrorKind, ProviderError};
use crate::progress::{NoProgress, Progress, ProviderState};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
    cancel: CancellationToken,
    progress: Arc<dyn Progress>,
}

impl<P: Provider> Retry<P> {
    /// A wrapper that is never cancelled; see [`Retry::cancel_on`].
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            policy,
            cancel: CancellationToken::new(),
            progress: Arc::new(NoProgress),
        }
    }

    /// Reports retries to `progress` ([`ProviderState::Retrying`], then `Normal`).
    pub fn report_to(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Ends every call at once, with [`ErrorKind::Interrupted`], when `cancel` fires.
    pub fn cancel_on(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    fn interrupted(&self, op: &Op<'_>) -> ProviderError {
        ProviderError::new(
            self.inner.name(),
            op.verb(),
            op.path(),
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

    async fn run<'a, T>(
        &'a self,
        op: Op<'a>,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let mut attempt = 1;
        let result = loop {
            // Dropping the attempt's future kills its rclone child (see `process`).
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(self.interrupted(&op)),
                r = call() => r,
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    let delay = Self::backoff(self.policy.base_delay, attempt);
                    tracing::warn!(
                        "{e} (attempt {attempt} of {}); retrying in {:.1}s",
                        self.policy.attempts,
                        delay.as_secs_f64()
                    );
                    self.report(ProviderState::Retrying {
                        attempt: attempt + 1,
                        of: self.policy.attempts,
                        at: Instant::now() + delay,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => return Err(self.interrupted(&op)),
                    }
                    attempt += 1;
                }
                Err(mut e) if attempt > 1 => {
                    e.message = format!("{} (after {attempt} attempts)", e.message.trim_end());
                    break Err(e);
                }
                other => break other,
            }
        };
        if attempt > 1 {
            self.report(ProviderState::Normal);
        }
        result
    }

    fn report(&self, state: ProviderState) {
        self.progress.provider_state(self.inner.name(), state);
    }
}

impl<P: Provider> Layer for Retry<P> {
    type Inner = P;

    fn inner(&self) -> &P {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op<'a>,
        call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        Box::pin(self.run(op, call))
    }
}

#[cfg(test)]
mod tests {
    use super::Retry;
    use crate::config::RetryPolicy;
    use crate::error::ErrorKind;
    use crate::provider::{Fault, MemoryProvider, Provider};
    use bytes::Bytes;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

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
        let r = Retry::new(mem, policy());
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
        let r = Retry::new(mem, policy());
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
        let r = Retry::new(mem, policy());
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
    async fn cancellation_ends_a_backoff_sleep_at_once_and_starts_no_attempt() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Transient,
            times: u32::MAX,
        });
        let cancel = CancellationToken::new();
        let r = Retry::new(mem, policy()).cancel_on(cancel.clone());
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
