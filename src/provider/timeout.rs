//! A layer that gives every call of the provider below it a deadline: a call that runs longer
//! is dropped (which kills its rclone child, see `process`) and fails as a transient error,
//! which [`super::Retry`] retries. It sits below [`super::Limit`], so the time a call waits
//! for a permit does not count.

use super::{Layer, Op, Provider};
use crate::error::{ErrorKind, ProviderError};
use futures::future::BoxFuture;
use std::time::Duration;

pub struct Timeout<P> {
    inner: P,
    limit: Duration,
}

impl<P: Provider> Timeout<P> {
    pub fn new(inner: P, limit: Duration) -> Self {
        Timeout { inner, limit }
    }
}

impl<P: Provider> Layer for Timeout<P> {
    type Inner = P;

    fn inner(&self) -> &P {
        &self.inner
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op<'a>,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.limit, call()).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::new(
                    self.inner.name(),
                    op.verb(),
                    op.path(),
                    ErrorKind::Transient,
                    format!("timed out after {:?}", self.limit),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Timeout;
    use crate::config::RetryPolicy;
    use crate::error::ProviderError;
    use crate::provider::{
        DynProvider, Layer, Limit, MemoryProvider, ObjectInfo, Op, ProgressFn, Provider, Retry,
        Usage,
    };
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use std::sync::Arc;
    use std::time::Duration;

    /// A provider whose uploads never end.
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
        fn get<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
            unimplemented!()
        }
        fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
            unimplemented!()
        }
        fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
            unimplemented!()
        }
        fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
            unimplemented!()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let policy = RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_secs(1),
        };
        let r = Retry::new(Timeout::new(Hang, Duration::from_secs(30)), policy);
        let start = tokio::time::Instant::now();
        let e = Provider::put(&r, "x", Bytes::new(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("timed out after 30s"), "{e}");
        assert!(e.to_string().contains("after 2 attempts"), "{e}");
        assert_eq!(e.op, "upload");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(60_500), "{waited:?}");
        assert!(waited <= Duration::from_secs(61), "{waited:?}");
    }

    /// Every call takes 4 s (of paused time) before it reaches the memory provider.
    struct Slow(MemoryProvider);
    impl Layer for Slow {
        type Inner = MemoryProvider;
        fn inner(&self) -> &MemoryProvider {
            &self.0
        }
        fn around<'a, T: Send + 'a>(
            &'a self,
            _: Op<'a>,
            mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
        ) -> BoxFuture<'a, Result<T, ProviderError>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(4)).await;
                call().await
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_permit_does_not_count_against_the_deadline() {
        let slow = Slow(MemoryProvider::new("m"));
        slow.0.set_object("x", Bytes::from_static(b"1"));
        let p: DynProvider = Arc::new(Limit::new(Timeout::new(slow, Duration::from_secs(5)), 1));
        let start = tokio::time::Instant::now();
        // The second read waits 4 s for the permit, then runs 4 s: 8 s in all, each part
        // within the 5 s deadline.
        let (a, b) = tokio::join!(p.get("x", 10), p.get("x", 10));
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            (Bytes::from("1"), Bytes::from("1"))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(8));
    }
}
