//! A layer that bounds how many calls run on one provider at once: each call holds one of
//! `concurrency` permits of a semaphore for as long as it runs (restic's `backend/sema`). It is
//! the only place the `concurrency` key is enforced. Waiting callers are served in order.
//!
//! Below [`super::Retry`], a retrying call gives its permit back while it backs off, and a
//! call dropped on cancellation gives it back at once.

use super::{Layer, Op, Provider};
use crate::error::ProviderError;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

pub struct Limit<P> {
    inner: P,
    permits: Semaphore,
}

impl<P: Provider> Limit<P> {
    /// At most `concurrency` calls at once (at least one).
    pub fn new(inner: P, concurrency: usize) -> Self {
        Limit {
            inner,
            permits: Semaphore::new(concurrency.max(1)),
        }
    }

    /// Permits not held by a running call.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl<P: Provider> Layer for Limit<P> {
    type Inner = P;

    fn inner(&self) -> &P {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op<'a>,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        let _ = op;
        Box::pin(async move {
            let _permit = self
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            call().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Limit;
    use crate::config::RetryPolicy;
    use crate::error::{ErrorKind, ProviderError};
    use crate::provider::{DynProvider, Fault, Layer, MemoryProvider, Op, Retry};
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::{mpsc, Semaphore};
    use tokio_util::sync::CancellationToken;

    /// Counts the calls running at once; each one says it started and then waits for the
    /// test to open the gate.
    struct Gauge {
        inner: MemoryProvider,
        now: AtomicUsize,
        peak: AtomicUsize,
        started: mpsc::UnboundedSender<()>,
        gate: Semaphore,
    }

    impl Gauge {
        fn new() -> (Gauge, mpsc::UnboundedReceiver<()>) {
            let (started, rx) = mpsc::unbounded_channel();
            let gauge = Gauge {
                inner: MemoryProvider::new("g"),
                now: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                started,
                gate: Semaphore::new(0),
            };
            (gauge, rx)
        }
    }

    impl Layer for Gauge {
        type Inner = MemoryProvider;
        fn inner(&self) -> &MemoryProvider {
            &self.inner
        }
        fn around<'a, T: Send + 'a>(
            &'a self,
            _: Op<'a>,
            mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
        ) -> BoxFuture<'a, Result<T, ProviderError>> {
            Box::pin(async move {
                let n = self.now.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(n, SeqCst);
                self.started.send(()).unwrap();
                self.gate.acquire().await.unwrap().forget();
                let r = call().await;
                self.now.fetch_sub(1, SeqCst);
                r
            })
        }
    }

    /// Lets every spawned task run until it waits on something.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn never_more_than_the_limit_run_at_once() {
        let (gauge, mut started) = Gauge::new();
        let limit = Arc::new(Limit::new(gauge, 3));
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let p: DynProvider = limit.clone();
                tokio::spawn(async move { p.put(&format!("o{i}"), Bytes::new(), None).await })
            })
            .collect();
        for _ in 0..3 {
            started.recv().await.unwrap();
        }
        settle().await;
        assert!(started.try_recv().is_err(), "a fourth call started");
        assert_eq!(limit.available(), 0);
        limit.inner().gate.add_permits(10);
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(limit.inner().peak.load(SeqCst), 3);
        assert_eq!(limit.inner().inner.puts(), 10);
        assert_eq!(limit.available(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retrying_call_holds_no_permit_while_it_backs_off() {
        let mem = MemoryProvider::new("m");
        mem.inject(Fault {
            op: "put",
            path_contains: "".into(),
            kind: ErrorKind::Transient,
            times: 1,
        });
        let policy = RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_secs(10),
        };
        let r = Arc::new(Retry::new(Limit::new(mem, 1), policy));
        let p: DynProvider = r.clone();
        let call = tokio::spawn(async move { p.put("x", Bytes::new(), None).await });
        settle().await;
        assert_eq!(r.inner().inner().faulted(), 1, "the first attempt failed");
        assert_eq!(
            r.inner().available(),
            1,
            "the permit is back during the backoff"
        );
        call.await.unwrap().unwrap();
        assert_eq!(r.inner().inner().puts(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_call_gives_its_permit_back() {
        let (gauge, mut started) = Gauge::new();
        let cancel = CancellationToken::new();
        let policy = RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_secs(1),
        };
        let r = Arc::new(Retry::new(Limit::new(gauge, 1), policy).cancel_on(cancel.clone()));
        // One call runs (and hangs at the gate); the second waits for the permit.
        let calls: Vec<_> = (0..2)
            .map(|i| {
                let p: DynProvider = r.clone();
                tokio::spawn(async move { p.put(&format!("o{i}"), Bytes::new(), None).await })
            })
            .collect();
        started.recv().await.unwrap();
        settle().await;
        assert_eq!(r.inner().available(), 0);
        cancel.cancel();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap_err().kind, ErrorKind::Interrupted);
        }
        assert_eq!(r.inner().available(), 1);
        assert_eq!(
            r.inner().inner().now.load(SeqCst),
            1,
            "the hung call was dropped mid-way"
        );
    }
}
