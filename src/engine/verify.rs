//! Deep checks: download objects and compare their length and SHA-256 with what is expected.
//! Used by `verify --deep`, `sync --deep` and the verification step of `sync --migrate`.
//!
//! Guarantees:
//! - Memory: at most `shards_in_flight` downloaded objects are held at once (a semaphore is
//!   taken before each download and released after hashing).
//! - Providers are checked in parallel; each provider's own `concurrency` bound is enforced by
//!   the provider itself ([`crate::provider::Limit`]), not here.
//! - Partial failure is a result: an object that cannot be read is reported as unreadable and
//!   the check goes on. Only cancellation stops it (and its rclone children with it).

use crate::catalog::BackupKey;
use crate::error::Interrupted;
use crate::gaps::{BackupFindings, Corrupt};
use crate::layout;
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::Result;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod report;
pub use report::{
    verify_report, DamagedBackup, DamagedCopy, FinishedBackup, UnfinishedBackup, VerifiedBackup,
    VerifiedCopy, VerifyReport, VerifyScope,
};

/// One object to download and check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub provider: String,
    pub key: BackupKey,
    pub index: u64,
    /// Path on the provider.
    pub path: String,
    pub length: u64,
    /// What the content must hash to, when known.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right length and, when known, the right SHA-256; holds the digest.
    Good(String),
    /// Wrong length or wrong SHA-256 (or gone since the listing): why.
    Bad(String),
    /// Could not be downloaded, even after retries: the error.
    Unreadable(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub shards_in_flight: usize,
    /// How many checks of one provider are scheduled at once: a scheduling width, so that one
    /// slow provider's queued checks cannot hold every memory slot while they wait for its
    /// [`crate::provider::Limit`] (which enforces the same number).
    pub concurrency: usize,
}

/// Downloads and hashes every check; returns each with its verdict (in no particular order).
pub async fn run_checks(
    providers: &[DynProvider],
    checks: Vec<Check>,
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<(Check, Verdict)>> {
    let memory = Arc::new(Semaphore::new(limits.shards_in_flight.max(1)));
    let mut by_provider: BTreeMap<String, Vec<Check>> = BTreeMap::new();
    for c in checks {
        by_provider.entry(c.provider.clone()).or_default().push(c);
    }
    let lanes = by_provider.into_iter().map(|(name, checks)| {
        let provider = providers.iter().find(|p| p.name() == name).cloned();
        let memory = memory.clone();
        async move {
            let Some(provider) = provider else {
                let why = format!("provider {name} is not configured");
                return checks
                    .into_iter()
                    .map(|c| (c, Verdict::Unreadable(why.clone())))
                    .collect::<Vec<_>>();
            };
            stream::iter(checks)
                .map(|c| {
                    let (provider, memory) = (provider.clone(), memory.clone());
                    async move {
                        let v = check_one(&provider, &c, &memory, progress).await;
                        (c, v)
                    }
                })
                .buffer_unordered(limits.concurrency.max(1))
                .collect::<Vec<_>>()
                .await
        }
    });
    tokio::select! {
        r = futures::future::join_all(lanes) => Ok(r.into_iter().flatten().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

async fn check_one(
    provider: &DynProvider,
    c: &Check,
    memory: &Semaphore,
    progress: &Arc<dyn Progress>,
) -> Verdict {
    let _slot = memory.acquire().await.expect("semaphore is never closed");
    let data = match provider.get(&c.path, c.length).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Verdict::Bad("the object is gone".into()),
        Err(e) => return Verdict::Unreadable(e.to_string()),
    };
    progress.provider(provider.name(), data.len() as u64);
    progress.advance(data.len() as u64);
    if data.len() as u64 != c.length {
        return Verdict::Bad(format!("{} bytes, not {}", data.len(), c.length));
    }
    let digest = match crate::hashing::sha256_blocking(data).await {
        Ok(d) => d,
        Err(e) => return Verdict::Unreadable(format!("hashing failed: {e}")),
    };
    match &c.sha256 {
        Some(want) if *want != digest => {
            Verdict::Bad(format!("SHA-256 is {digest}, the manifest says {want}"))
        }
        _ => Verdict::Good(digest),
    }
}

/// The checks of a deep verify: every shard of every finished backup that each provider in
/// scope holds at the right size (missing and wrong-size shards are known without a download).
pub fn shard_checks(
    host: &str,
    surveys: &[(BackupKey, BackupFindings)],
    only: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for (key, f) in surveys.iter().filter(|(_, f)| f.is_finished()) {
        let dir = layout::backup_dir(host, &key.dataset, &key.id);
        for p in &f.providers {
            if !p.reachable || only.is_some_and(|o| o != p.provider) {
                continue;
            }
            let absent: HashSet<u64> = p
                .missing_shards
                .iter()
                .chain(&p.wrong_size_shards)
                .copied()
                .collect();
            out.extend(
                f.reference
                    .iter()
                    .filter(|r| !absent.contains(&r.index))
                    .map(|r| Check {
                        provider: p.provider.clone(),
                        key: key.clone(),
                        index: r.index,
                        path: format!("{dir}/{}", r.name),
                        length: r.length,
                        sha256: r.sha256.clone(),
                    }),
            );
        }
    }
    out
}

/// What a deep check found, per backup and provider.
#[derive(Debug, Default)]
pub struct DeepReport {
    pub corrupt: Corrupt,
    /// backup -> provider -> (shard, error).
    pub unreadable: BTreeMap<BackupKey, BTreeMap<String, Vec<(u64, String)>>>,
    /// backup -> provider -> shards checked good.
    pub good: BTreeMap<BackupKey, BTreeMap<String, u64>>,
    pub bytes: u64,
}

/// Runs [`shard_checks`] and sorts the verdicts into a [`DeepReport`].
pub async fn deep_check(
    host: &str,
    surveys: &[(BackupKey, BackupFindings)],
    only: Option<&str>,
    providers: &[DynProvider],
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<DeepReport> {
    let checks = shard_checks(host, surveys, only);
    let total: u64 = checks.iter().map(|c| c.length).sum();
    let names: BTreeSet<&str> = checks.iter().map(|c| c.provider.as_str()).collect();
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    progress.begin("deep check", Some(total), &names);
    let results = run_checks(providers, checks, limits, progress, cancel).await;
    progress.finish();
    let mut report = DeepReport::default();
    for (c, v) in results? {
        match v {
            Verdict::Good(_) => {
                report.bytes += c.length;
                *report
                    .good
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default() += 1;
            }
            Verdict::Bad(why) => {
                tracing::warn!("provider {}: {}: {why}", c.provider, c.path);
                report
                    .corrupt
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default()
                    .insert(c.index);
            }
            Verdict::Unreadable(why) => {
                tracing::warn!("could not check {}: {why}", c.path);
                report
                    .unreadable
                    .entry(c.key)
                    .or_default()
                    .entry(c.provider)
                    .or_default()
                    .push((c.index, why));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
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
}
