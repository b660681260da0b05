//! Deep checks against in-memory providers: verdicts, memory and concurrency bounds, a hung
//! provider, and `--decrypt`.

use super::*;
use crate::error::ProviderError;
use crate::layout::BackupId;
use crate::progress::NoProgress;
use crate::provider::{Fault, Layer, Limit, MemoryProvider, Op};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

fn key() -> BackupKey {
    BackupKey {
        dataset: "d".into(),
        id: BackupId::parse("20261121T020000Z-full").unwrap(),
    }
}

fn check(provider: &str, path: &str, data: &[u8]) -> Check {
    Check {
        provider: provider.into(),
        key: key(),
        index: 0,
        path: path.into(),
        length: data.len() as u64,
        sha256: Some(crate::hashing::sha256(data)),
    }
}

#[tokio::test]
async fn good_bad_and_unreadable_objects_are_told_apart() {
    let a = Arc::new(MemoryProvider::new("a"));
    a.set_object("x/good", Bytes::from_static(b"hello"));
    a.set_object("x/flipped", Bytes::from_static(b"jello"));
    a.set_object("x/short", Bytes::from_static(b"hell"));
    a.set_object("x/flaky", Bytes::from_static(b"hello"));
    a.inject(Fault {
        op: "get",
        path_contains: "flaky".into(),
        kind: crate::error::ErrorKind::Permanent,
        times: 1,
    });
    let providers: Vec<DynProvider> = vec![a.clone()];
    let checks = ["good", "flipped", "short", "gone", "flaky"]
        .iter()
        .map(|n| check("a", &format!("x/{n}"), b"hello"))
        .collect();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let limits = Limits {
        shards_in_flight: 2,
        concurrency: 2,
    };
    let mut out = run_checks(
        &providers,
        checks,
        limits,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let verdicts: Vec<(&str, &Verdict)> = out.iter().map(|(c, v)| (&c.path[2..], v)).collect();
    assert!(matches!(verdicts[0], ("flaky", Verdict::Unreadable(_))));
    assert!(matches!(verdicts[1], ("flipped", Verdict::Bad(w)) if w.contains("SHA-256")));
    assert!(matches!(verdicts[2], ("gone", Verdict::Bad(_))));
    assert_eq!(
        verdicts[3],
        ("good", &Verdict::Good(crate::hashing::sha256(b"hello")))
    );
    assert!(matches!(verdicts[4], ("short", Verdict::Bad(w)) if w.contains("4 bytes")));
}

/// A provider that counts how many downloads overlap.
struct Gauge {
    inner: MemoryProvider,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Layer for Gauge {
    type Inner = MemoryProvider;
    fn inner(&self) -> &MemoryProvider {
        &self.inner
    }
    fn around<'a, T: Send + 'a>(
        &'a self,
        _op: Op<'a>,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        Box::pin(async move {
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            tokio::task::yield_now().await;
            let r = call().await;
            self.now.fetch_sub(1, SeqCst);
            r
        })
    }
}

#[tokio::test]
async fn downloads_are_bounded_per_provider() {
    assert_eq!(peak_downloads(8, 3).await, 3);
}

#[tokio::test]
async fn downloads_held_in_memory_are_bounded() {
    assert_eq!(peak_downloads(2, 8).await, 2);
}

/// The most downloads in progress at once over 40 objects on one provider.
async fn peak_downloads(shards_in_flight: usize, concurrency: usize) -> usize {
    let (inner, peak) = (MemoryProvider::new("g"), Arc::new(AtomicUsize::new(0)));
    let mut checks = Vec::new();
    for i in 0..40 {
        let path = format!("x/{i}");
        inner.set_object(&path, Bytes::from_static(b"data"));
        checks.push(check("g", &path, b"data"));
    }
    let g = Gauge {
        inner,
        now: Arc::default(),
        peak: peak.clone(),
    };
    let providers: Vec<DynProvider> = vec![Arc::new(Limit::new(g, concurrency))];
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let limits = Limits {
        shards_in_flight,
        concurrency,
    };
    let out = run_checks(
        &providers,
        checks,
        limits,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out.len(), 40);
    assert!(out.iter().all(|(_, v)| matches!(v, Verdict::Good(_))));
    peak.load(SeqCst)
}

/// Downloads that never end, as from a provider whose transfers hang.
struct Hangs(MemoryProvider);

impl crate::provider::Layer for Hangs {
    type Inner = MemoryProvider;
    fn inner(&self) -> &MemoryProvider {
        &self.0
    }
    fn get<'a>(
        &'a self,
        _: &'a str,
        _: u64,
    ) -> futures::future::BoxFuture<'a, Result<Bytes, crate::error::ProviderError>> {
        Box::pin(futures::future::pending())
    }
}

/// Counts the downloads that ended.
struct Counted(MemoryProvider, AtomicUsize);

impl crate::provider::Layer for Counted {
    type Inner = MemoryProvider;
    fn inner(&self) -> &MemoryProvider {
        &self.0
    }
    fn get<'a>(
        &'a self,
        path: &'a str,
        limit: u64,
    ) -> futures::future::BoxFuture<'a, Result<Bytes, crate::error::ProviderError>> {
        Box::pin(async move {
            let got = crate::provider::Provider::get(&self.0, path, limit).await;
            self.1.fetch_add(1, SeqCst);
            got
        })
    }
}

#[tokio::test]
async fn a_hung_provider_does_not_stall_the_others() {
    let (good, mut checks) = (MemoryProvider::new("b"), Vec::new());
    for i in 0..10 {
        let path = format!("x/{i}");
        good.set_object(&path, Bytes::from_static(b"data"));
        checks.push(check("a", &path, b"data"));
        checks.push(check("b", &path, b"data"));
    }
    let good = Arc::new(Limit::new(Counted(good, AtomicUsize::new(0)), 2));
    let hung = Limit::new(Hangs(MemoryProvider::new("a")), 2);
    let providers: Vec<DynProvider> = vec![Arc::new(hung), good.clone()];
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let limits = Limits {
        shards_in_flight: 4,
        concurrency: 2,
    };
    let cancel = CancellationToken::new();
    let run = run_checks(&providers, checks, limits, &progress, &cancel);
    let fetched = async {
        while good.inner().1.load(SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
    };
    let (out, ()) = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        tokio::join!(run, fetched)
    })
    .await
    .expect("the healthy provider's checks all ran while the other hung");
    assert!(out.is_err(), "the run was stopped while a provider hung");
}
