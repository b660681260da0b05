//! The fetch window and the lanes' planning: memory bounded by `shards_in_flight`, and a
//! simulated WAN restore striped over providers of different rates.

use super::*;

/// Counts the bytes downloads ask for; the sink is a pipe nobody reads yet.
#[tokio::test(start_paused = true)]
async fn memory_is_bounded_by_shards_in_flight() {
    struct Counting {
        inner: MemoryProvider,
        requested: AtomicU64,
    }
    impl Provider for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn put<'a>(
            &'a self,
            p: &'a str,
            d: Bytes,
            f: Option<ProgressFn>,
        ) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.inner.put(p, d, f)
        }
        fn get<'a>(&'a self, p: &'a str, l: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
            self.requested.fetch_add(l, Ordering::SeqCst);
            self.inner.get(p, l)
        }
        fn get_range<'a>(
            &'a self,
            p: &'a str,
            offset: u64,
            len: u64,
        ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
            self.requested.fetch_add(len, Ordering::SeqCst);
            self.inner.get_range(p, offset, len)
        }
        fn list<'a>(&'a self, d: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
            self.inner.list(d)
        }
        fn delete<'a>(&'a self, p: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.inner.delete(p)
        }
        fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
            self.inner.about()
        }
    }
    for piece in PIECE_SIZES {
        let p = Arc::new(Counting {
            inner: MemoryProvider::new("p1"),
            requested: AtomicU64::new(0),
        });
        let bytes = data(20 * 1000, 6);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&p.inner], &m, &bytes);
        let ps: Vec<DynProvider> = vec![p.clone()];
        let link = links(&ps, Selector::Newest, true).await.unwrap().remove(0);
        p.requested.store(0, Ordering::SeqCst); // the catalog fetched the manifest
        let f = fetcher(ps, 3, 8).with_piece_size(piece);
        let (mut tx, mut rx) = tokio::io::duplex(10);
        let cancel = CancellationToken::new();
        let restore = f.stream(&link, &mut tx, &cancel);
        let check = async {
            // Paused time: this sleep returns only once every task is idle (all blocked).
            tokio::time::sleep(Duration::from_secs(60)).await;
            let requested = p.requested.load(Ordering::SeqCst);
            let mut out = Vec::new();
            let mut buf = vec![0; 4096];
            while out.len() < bytes.len() {
                let n = tokio::io::AsyncReadExt::read(&mut rx, &mut buf)
                    .await
                    .unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            (requested, out)
        };
        let (r, (requested, out)) = tokio::join!(restore, check);
        r.unwrap();
        assert_eq!(
            requested, 3000,
            "piece size {piece}: with the writer blocked, only shards_in_flight shards may be fetched"
        );
        assert!(out == bytes);
    }
}

/// A provider behind a link of fixed bandwidth (paused time): each request waits `latency`
/// (rclone's start-up and the request), then its bytes queue for the link behind those of the
/// requests before it, so concurrent downloads share the bandwidth.
struct Throttled {
    inner: MemoryProvider,
    bytes_per_sec: f64,
    latency: Duration,
    free_at: Mutex<tokio::time::Instant>,
}

impl Throttled {
    async fn transfer(&self, data: Bytes) -> Bytes {
        tokio::time::sleep(self.latency).await;
        let done = {
            let mut free = self.free_at.lock().unwrap();
            let start = (*free).max(tokio::time::Instant::now());
            *free = start + Duration::from_secs_f64(data.len() as f64 / self.bytes_per_sec);
            *free
        };
        tokio::time::sleep_until(done).await;
        data
    }
}

impl Provider for Throttled {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn put<'a>(
        &'a self,
        p: &'a str,
        d: Bytes,
        f: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.put(p, d, f)
    }
    fn get<'a>(&'a self, p: &'a str, l: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(async move {
            let data = self.inner.get(p, l).await?;
            Ok(self.transfer(data).await)
        })
    }
    fn get_range<'a>(
        &'a self,
        p: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(async move {
            let data = self.inner.get_range(p, offset, len).await?;
            Ok(self.transfer(data).await)
        })
    }
    fn list<'a>(&'a self, d: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.inner.list(d)
    }
    fn delete<'a>(&'a self, p: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.inner.delete(p)
    }
    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        self.inner.about()
    }
}

/// The benchmark's WAN setup, simulated: 16 shards of "64 MiB" (4096 bytes: 64 bytes stand for
/// a MiB) from providers at `rates` "MiB/s", each holding every shard, with 50 ms per request.
/// Pieces of `piece` bytes, or sized by the measured rates. Returns the restore's duration in
/// seconds.
async fn wan_restore_time(
    in_flight: usize,
    concurrency: usize,
    piece: Option<u64>,
    rates: &[f64],
) -> f64 {
    const SHARD: usize = 4096;
    let bytes = data(16 * SHARD, 7);
    let m = manifest_for(FULL, &bytes, SHARD, None);
    let ps: Vec<Arc<Throttled>> = rates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let inner = MemoryProvider::new(&format!("p{}", i + 1));
            store(&[&inner], &m, &bytes);
            Arc::new(Throttled {
                inner,
                bytes_per_sec: r * SHARD as f64 / 64.0,
                latency: Duration::from_millis(50),
                free_at: Mutex::new(tokio::time::Instant::now()),
            })
        })
        .collect();
    let dyns: Vec<DynProvider> = ps.iter().map(|p| p.clone() as DynProvider).collect();
    let link = links(&dyns, Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    // Before anything is measured, pieces of "16 MiB" as for real shards of 64 MiB.
    let mut f = fetcher(dyns, in_flight, concurrency).with_first_piece_size(1024);
    if let Some(piece) = piece {
        f = f.with_piece_size(piece);
    }
    let start = tokio::time::Instant::now();
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes);
    start.elapsed().as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn striping_beats_the_fastest_single_provider() {
    // 16 shards of "64 MiB" at 40+60+80 "MiB/s": the striped limit is 16*64/180 s.
    let limit = 16.0 * 64.0 / 180.0;
    let single = 16.0 * 64.0 / 80.0;
    let rates = [40.0, 60.0, 80.0];
    for (in_flight, concurrency) in [(4, 2), (8, 2), (4, 1), (2, 2), (8, 1)] {
        // Pieces sized by the measured rates.
        let t = wan_restore_time(in_flight, concurrency, None, &rates).await;
        eprintln!(
            "shards_in_flight {in_flight}, concurrency {concurrency}: {t:.2}s, striped limit {limit:.2}s, single {single:.2}s"
        );
        assert!(
            t <= 1.1 * limit,
            "shards_in_flight {in_flight}, concurrency {concurrency}: {t:.2}s > 1.1 x {limit:.2}s"
        );
    }
    // Whole shards cannot be split evenly: 16 over 40:60:80 leaves a provider idle at the end.
    let whole = wan_restore_time(4, 2, Some(4096), &rates).await;
    let pieces = wan_restore_time(4, 2, Some(1024), &rates).await;
    eprintln!("whole shards {whole:.2}s, \"16 MiB\" pieces {pieces:.2}s");
    assert!(
        pieces < 0.95 * whole,
        "pieces {pieces:.2}s, whole shards {whole:.2}s"
    );
    let t = wan_restore_time(4, 2, None, &[80.0]).await;
    assert!((t - single).abs() < 0.5, "{t}");
}
