//! A provider's lane in a run: the provider, and whether it has been dropped from the run.
//! Backup (uploads) and restore (downloads) keep their own bookkeeping next to this; the rule
//! is shared: after a provider fails for good (retries spent), it takes no more work in this
//! run, and the first reason is kept for the report. Calls already waiting on the provider
//! (queued behind its `concurrency` limit, or retrying) can race [`Lane::dropped`] and end as
//! soon as it fires, instead of each spending its own retries on a provider that is gone.
//! The run's progress hears of the drop: the provider's line says `DOWN`.

use crate::error::ProviderError;
use crate::progress::{NoProgress, Progress, ProviderState};
use crate::provider::DynProvider;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

pub struct Lane {
    pub provider: DynProvider,
    /// Why it was dropped from the run, once it was.
    down: OnceLock<String>,
    /// Fired when it is dropped.
    gone: CancellationToken,
    progress: Arc<dyn Progress>,
}

impl Lane {
    pub fn new(provider: DynProvider) -> Lane {
        Lane {
            provider,
            down: OnceLock::new(),
            gone: CancellationToken::new(),
            progress: Arc::new(NoProgress),
        }
    }

    /// Reports the provider's drop from the run to `progress`.
    pub fn reporting_to(self, progress: Arc<dyn Progress>) -> Lane {
        Lane { progress, ..self }
    }

    /// Ends once the provider has been dropped from the run.
    pub async fn dropped(&self) {
        self.gone.cancelled().await
    }

    pub fn name(&self) -> &str {
        self.provider.name()
    }

    pub fn is_down(&self) -> bool {
        self.down.get().is_some()
    }

    /// Why the provider was dropped, if it was.
    pub fn down_reason(&self) -> Option<&str> {
        self.down.get().map(String::as_str)
    }

    /// Drops the provider from the rest of the run; the first reason is kept and logged once.
    pub fn drop_out(&self, err: &ProviderError) {
        if self.mark_down(err) {
            tracing::warn!(
                "{err}; dropping provider {} for the rest of this run (`offsite sync` fills its gaps later)",
                self.name()
            );
        }
    }

    /// Drops the provider without logging, for a caller that says it in its own words; true
    /// the first time (the reason kept).
    pub fn mark_down(&self, err: &ProviderError) -> bool {
        let first = self.down.set(err.to_string()).is_ok();
        self.gone.cancel();
        if first {
            self.progress
                .provider_state(self.name(), ProviderState::Down);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::provider::MemoryProvider;
    use std::sync::Arc;

    #[test]
    fn the_first_reason_a_provider_dropped_out_is_the_one_kept() {
        let lane = Lane::new(Arc::new(MemoryProvider::new("p1")));
        assert!(!lane.is_down());
        let err = |what| ProviderError::new("p1", "put", "x", ErrorKind::Permanent, what);
        lane.drop_out(&err("quota"));
        lane.drop_out(&err("later"));
        assert!(lane.is_down());
        assert!(lane.down_reason().unwrap().contains("quota"));
    }

    #[tokio::test]
    async fn waiting_calls_learn_that_the_provider_dropped_out() {
        let lane = Arc::new(Lane::new(Arc::new(MemoryProvider::new("p1"))));
        let waiter = tokio::spawn({
            let lane = lane.clone();
            async move { lane.dropped().await }
        });
        lane.drop_out(&ProviderError::new(
            "p1",
            "put",
            "x",
            ErrorKind::Permanent,
            "gone",
        ));
        waiter.await.unwrap();
        lane.dropped().await;
    }
}
