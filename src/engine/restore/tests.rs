//! The restore engine against in-memory providers: round trips, striping (whole shards and
//! shards read in pieces from several providers), failover, the "no good copy" stop, bounded
//! memory and manifest trouble.

use super::*;
use crate::error::{ErrorKind, ProviderError};
use crate::layout;
use crate::manifest::{hex, ParentRef, FORMAT_VERSION};
use crate::progress::NoProgress;
use crate::provider::{
    DynProvider, Fault, MemoryProvider, ObjectInfo, ProgressFn, Provider, Usage,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const HOST: &str = "h";
const DATASET: &str = "tank/data";
const FULL: &str = "20261101T020000Z-full";

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 8) as u8)
        })
        .collect()
}

fn manifest_for(id: &str, bytes: &[u8], shard: usize, parent: Option<&str>) -> Manifest {
    let mut shards = Vec::new();
    for (i, chunk) in bytes.chunks(shard).enumerate() {
        shards.push(ShardRecord {
            index: i as u64,
            offset: (i * shard) as u64,
            length: chunk.len() as u64,
            sha256: hex(&Sha256::digest(chunk)),
            md5: None,
            sha1: None,
        });
    }
    Manifest {
        format: FORMAT_VERSION,
        host: HOST.into(),
        dataset: DATASET.into(),
        backup_id: id.into(),
        kind: BackupId::parse(id).unwrap().kind,
        source_kind: "zfs".into(),
        source: "tank/data".into(),
        snapshot: Some(format!("tank/data@offsite-{id}")),
        parent: parent.map(|p| ParentRef {
            backup_id: p.into(),
            snapshot: None,
        }),
        created: "2026-11-01T02:00:00Z".into(),
        shard_size: shard as u64,
        total_bytes: bytes.len() as u64,
        shards,
        tool: "test".into(),
    }
}

fn dir(id: &str) -> String {
    layout::backup_dir(HOST, DATASET, &BackupId::parse(id).unwrap())
}

fn shard_path(id: &str, index: u64, m: &Manifest) -> String {
    format!("{}/{}", dir(id), m.shards[index as usize].name())
}

/// Puts a backup (shards, then manifest) on each of `on`.
fn store(on: &[&MemoryProvider], m: &Manifest, bytes: &[u8]) {
    for p in on {
        for s in &m.shards {
            let body = &bytes[s.offset as usize..(s.offset + s.length) as usize];
            p.set_object(
                &format!("{}/{}", dir(&m.backup_id), s.name()),
                Bytes::copy_from_slice(body),
            );
        }
        p.set_object(
            &format!("{}/{}", dir(&m.backup_id), layout::MANIFEST),
            Bytes::from(m.to_json()),
        );
    }
}

fn flip_byte(p: &MemoryProvider, path: &str) {
    let mut v = p.object(path).unwrap().to_vec();
    let mid = v.len() / 2;
    v[mid] ^= 0xff;
    p.set_object(path, Bytes::from(v));
}

fn mems(n: usize) -> Vec<Arc<MemoryProvider>> {
    (1..=n)
        .map(|i| Arc::new(MemoryProvider::new(&format!("p{i}"))))
        .collect()
}

fn dyns(ps: &[Arc<MemoryProvider>]) -> Vec<DynProvider> {
    ps.iter().map(|p| p.clone() as DynProvider).collect()
}

fn fetcher(ps: Vec<DynProvider>, in_flight: usize, concurrency: usize) -> Fetcher {
    Fetcher::new(
        HOST,
        DATASET,
        ps,
        in_flight,
        concurrency,
        Arc::new(NoProgress),
    )
}

/// Shards of 1000 bytes are read whole with the default piece size, and in four pieces (300,
/// 300, 300, 100) with this one.
const PIECE: u64 = 300;

/// The piece sizes the failover tests run with: whole shards, and pieces.
const PIECE_SIZES: [u64; 2] = [crate::engine::restore::PIECE_SIZE, PIECE];

async fn links(ps: &[DynProvider], sel: Selector, whole: bool) -> Result<Vec<Link>> {
    let catalog = Catalog::scan(ps, HOST, Some(DATASET)).await;
    plan(&catalog, DATASET, &sel, whole)
}

async fn restore_to_vec(f: &Fetcher, link: &Link) -> (Vec<u8>, Result<u64>) {
    let mut out = Vec::new();
    let r = f.stream(link, &mut out, &CancellationToken::new()).await;
    (out, r)
}

#[tokio::test]
async fn round_trip_spread_over_every_provider() {
    let ps = mems(3);
    let bytes = data(40 * 1000 + 17, 1);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 6, 2);
    let (out, r) = restore_to_vec(&f, &link).await;
    assert_eq!(r.unwrap(), bytes.len() as u64);
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    assert_eq!(report.iter().map(|l| l.shards).sum::<u64>(), 41);
    for l in &report {
        assert!(l.shards > 0, "{} served no shard: {report:?}", l.provider);
    }
}

#[tokio::test]
async fn shards_are_read_in_pieces_from_several_providers_at_once() {
    let ps = mems(3);
    let bytes = data(40 * 1000 + 17, 1);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    assert_eq!(r.unwrap(), bytes.len() as u64);
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    assert_eq!(
        report.iter().map(|l| l.bytes).sum::<u64>(),
        bytes.len() as u64,
        "{report:?}"
    );
    // A shard counts once for every provider that delivered a piece of it.
    assert!(
        report.iter().map(|l| l.shards).sum::<u64>() > 41,
        "no shard came from two providers: {report:?}"
    );
    for l in &report {
        assert!(l.bytes > 0 && l.failures == 0, "{report:?}");
    }
}

/// Pieces 0 and 3 of a lone shard go to p1, piece 1 to p2 and piece 2 to p3 (nothing is
/// measured yet, so the plan goes round in preference order). Every piece is corrupt on p1 and
/// p2, so the assembled shard fails its checksum, is fetched whole from p1, p2 (both named
/// corrupt) and then p3.
#[tokio::test]
async fn a_shard_assembled_from_a_corrupt_piece_is_fetched_whole_one_provider_at_a_time() {
    let ps = mems(3);
    let bytes = data(1000, 16);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let path = shard_path(FULL, 0, &m);
    for p in [&ps[0], &ps[1]] {
        let mut v = p.object(&path).unwrap().to_vec();
        for i in (0..v.len()).step_by(PIECE as usize) {
            v[i] ^= 0xff;
        }
        p.set_object(&path, Bytes::from(v));
    }
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    let failures: Vec<u64> = report.iter().map(|l| l.failures).collect();
    assert_eq!(failures, [1, 1, 0], "{report:?}");
    assert_eq!(report[2].bytes, 1000, "{report:?}");
    assert!(report.iter().all(|l| l.dropped.is_none()), "{report:?}");

    // No good copy anywhere: each provider is named, nothing is written.
    flip_byte(&ps[2], &path);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    let text = r.unwrap_err().to_string();
    for p in ["p1", "p2", "p3"] {
        assert!(
            text.contains(&format!("provider {p}: corrupt copy")),
            "{p} not named corrupt in: {text}"
        );
    }
    assert!(out.is_empty());
}

/// As above, p2 serves piece 1 and p3 piece 2 of a lone shard: p2's copy turned short and p3's
/// disappeared after the listing, so both pieces come from p1.
#[tokio::test]
async fn a_piece_missing_or_short_on_one_provider_comes_from_another() {
    let ps = mems(3);
    let bytes = data(1000, 17);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let path = shard_path(FULL, 0, &m);
    let cut = |p: &MemoryProvider| p.set_object(&path, p.object(&path).unwrap().slice(..450));
    cut(&ps[1]);
    ps[2].remove_object(&path);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes, "restored bytes differ");
    let report = f.report();
    let failures: Vec<u64> = report.iter().map(|l| l.failures).collect();
    assert_eq!(failures, [0, 1, 1], "{report:?}");
    assert_eq!(report[0].bytes, 1000, "{report:?}");
    assert!(report.iter().all(|l| l.dropped.is_none()), "{report:?}");

    cut(&ps[0]);
    let f = fetcher(dyns(&ps), 4, 2).with_piece_size(PIECE);
    let (out, r) = restore_to_vec(&f, &link).await;
    let text = r.unwrap_err().to_string();
    for needle in [
        "provider p1: short copy",
        "provider p2: short copy: 150 of the 300 bytes from byte 300",
        "provider p3: download failed",
    ] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
    assert!(out.is_empty());
}

#[tokio::test]
async fn corrupt_missing_and_short_copies_fail_over_to_good_ones() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(10 * 1000, 2);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        // Shard 1: corrupt on p1 and p2. Shard 4: gone from p1 after listing. Shard 6: p1 and p3
        // hold a short copy (caught by the listing, so never fetched).
        flip_byte(&ps[0], &shard_path(FULL, 1, &m));
        flip_byte(&ps[1], &shard_path(FULL, 1, &m));
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        ps[0].remove_object(&shard_path(FULL, 4, &m));
        for p in [&ps[0], &ps[2]] {
            p.set_object(&shard_path(FULL, 6, &m), Bytes::from_static(b"short"));
        }
        let link6 = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        assert!(link6
            .why_not("p1", &m.shards[6])
            .unwrap()
            .contains("5 bytes listed"));
        // Listings from before the removal, but the short copies' listing for shard 6.
        let mut link = link;
        link.objects = link6.objects.clone();
        link.objects
            .get_mut("p1")
            .unwrap()
            .insert(m.shards[4].name(), m.shards[4].length);
        let f = fetcher(dyns(&ps), 4, 1).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes, "restored bytes differ");
        assert_eq!(
            f.report()
                .iter()
                .map(|l| l.dropped.is_some() as u32)
                .sum::<u32>(),
            0
        );
    }
}

#[tokio::test]
async fn no_good_copy_stops_before_the_bad_shard_and_names_everything() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(6 * 1000, 3);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        flip_byte(&ps[0], &shard_path(FULL, 3, &m));
        flip_byte(&ps[1], &shard_path(FULL, 3, &m));
        ps[2].inject(Fault {
            op: "get",
            path_contains: m.shards[3].name(),
            kind: ErrorKind::NotFound,
            times: u32::MAX,
        });
        let f = fetcher(dyns(&ps), 4, 2).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        let e = r.unwrap_err();
        let ngc = e.downcast_ref::<NoGoodCopy>().expect("a NoGoodCopy error");
        assert_eq!((ngc.index, ngc.offset), (3, 3000));
        let text = e.to_string();
        for needle in [
            "shard 3",
            "byte offset 3000",
            FULL,
            "provider p1: corrupt",
            "provider p2: corrupt",
            "provider p3: download failed",
        ] {
            assert!(text.contains(needle), "{needle:?} not in: {text}");
        }
        assert!(
            out == bytes[..3000],
            "wrote {} bytes, want exactly the 3000 before shard 3",
            out.len()
        );
    }
}

#[tokio::test]
async fn a_provider_that_goes_down_is_dropped_and_the_others_finish() {
    for piece in PIECE_SIZES {
        let ps = mems(3);
        let bytes = data(30 * 1000, 4);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        ps[1].inject(Fault {
            op: "get",
            path_contains: String::new(),
            kind: ErrorKind::Transient,
            times: u32::MAX,
        });
        let f = fetcher(dyns(&ps), 4, 2).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes, "restored bytes differ");
        let report = f.report();
        assert!(
            report[1].dropped.is_some() && report[1].shards == 0,
            "{report:?}"
        );
        // Dropped after its first failures, not retried for every shard.
        assert!(report[1].failures <= 2, "{report:?}");
    }
}

#[tokio::test]
async fn a_shard_only_a_dropped_provider_holds_is_still_tried_there() {
    for piece in PIECE_SIZES {
        let ps = mems(2);
        let bytes = data(4 * 1000, 5);
        let m = manifest_for(FULL, &bytes, 1000, None);
        store(&[&ps[0], &ps[1]], &m, &bytes);
        ps[1].remove_object(&shard_path(FULL, 3, &m));
        let link = links(&dyns(&ps), Selector::Newest, true)
            .await
            .unwrap()
            .remove(0);
        // p1 fails shard 0 (and is dropped; p2 serves it), then answers again.
        ps[0].inject(Fault {
            op: "get",
            path_contains: m.shards[0].name(),
            kind: ErrorKind::Transient,
            times: 1,
        });
        let f = fetcher(dyns(&ps), 2, 1).with_piece_size(piece);
        let (out, r) = restore_to_vec(&f, &link).await;
        r.unwrap();
        assert!(out == bytes);
        let report = f.report();
        assert!(
            report[0].dropped.is_some() && report[0].shards >= 1,
            "{report:?}"
        );
    }
}

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

#[tokio::test]
async fn plan_walks_the_chain_and_fails_on_a_missing_link_before_receiving() {
    let ps = mems(2);
    let (f, i1, i2) = (data(3000, 8), data(1500, 9), data(500, 10));
    let (i1_id, i2_id) = ("20261102T020000Z-incr", "20261103T020000Z-incr");
    let mf = manifest_for(FULL, &f, 1000, None);
    let m1 = manifest_for(i1_id, &i1, 1000, Some(FULL));
    let m2 = manifest_for(i2_id, &i2, 1000, Some(i1_id));
    for (m, b) in [(&mf, &f), (&m1, &i1), (&m2, &i2)] {
        store(&[&ps[0], &ps[1]], m, b);
    }
    let chain = links(&dyns(&ps), Selector::Newest, true).await.unwrap();
    let ids: Vec<&str> = chain
        .iter()
        .map(|l| l.manifest.backup_id.as_str())
        .collect();
    assert_eq!(ids, [FULL, i1_id, i2_id]);
    let raw = links(&dyns(&ps), Selector::Backup(i1_id.into()), false)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].manifest.backup_id, i1_id);
    for p in &ps {
        for path in p.paths() {
            if path.contains(i1_id) {
                p.remove_object(&path);
            }
        }
    }
    let e = links(&dyns(&ps), Selector::Newest, true).await.unwrap_err();
    let e = e
        .downcast_ref::<chain::ChainError>()
        .expect("a chain error")
        .clone();
    assert!(
        matches!(e, chain::ChainError::MissingLink { ref missing, .. } if missing == i1_id),
        "{e}"
    );
}

#[tokio::test]
async fn a_disagreeing_or_broken_manifest_excludes_only_that_provider() {
    let ps = mems(3);
    let bytes = data(5000, 11);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1], &ps[2]], &m, &bytes);
    // p2 claims fewer shards than the listings show; p3's manifest does not parse.
    let mut other = m.clone();
    other.total_bytes -= other.shards.pop().unwrap().length;
    ps[1].set_object(
        &format!("{}/{}", dir(FULL), layout::MANIFEST),
        Bytes::from(other.to_json()),
    );
    ps[2].set_object(
        &format!("{}/{}", dir(FULL), layout::MANIFEST),
        Bytes::from_static(b"{"),
    );
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    assert!(
        link.excluded["p2"].contains("disagrees"),
        "{:?}",
        link.excluded
    );
    assert!(
        link.excluded["p3"].contains("does not parse"),
        "{:?}",
        link.excluded
    );
    let f = fetcher(dyns(&ps), 4, 2);
    let (out, r) = restore_to_vec(&f, &link).await;
    r.unwrap();
    assert!(out == bytes);
    let report = f.report();
    assert_eq!((report[1].shards, report[2].shards), (0, 0), "{report:?}");
}

#[tokio::test]
async fn an_unusable_newest_manifest_is_an_error_naming_the_provider() {
    let ps = mems(1);
    let (a, b) = (data(1000, 12), data(1000, 13));
    let newer = "20261102T020000Z-full";
    store(&[&ps[0]], &manifest_for(FULL, &a, 1000, None), &a);
    store(&[&ps[0]], &manifest_for(newer, &b, 1000, None), &b);
    ps[0].set_object(
        &format!("{}/{}", dir(newer), layout::MANIFEST),
        Bytes::from_static(b"not json"),
    );
    let e = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(newer) && e.contains("provider p1") && e.contains("does not parse"),
        "{e}"
    );
    let older = links(&dyns(&ps), Selector::Backup(FULL.into()), true)
        .await
        .unwrap();
    assert_eq!(older[0].manifest.backup_id, FULL);
}

#[tokio::test]
async fn run_writes_a_file_only_when_every_byte_is_good() {
    let ps = mems(2);
    let bytes = data(5000, 14);
    let m = manifest_for(FULL, &bytes, 1000, None);
    store(&[&ps[0], &ps[1]], &m, &bytes);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("restored.bin");
    let dest = ReceiverSpec::File(out.clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let cancel = CancellationToken::new();

    let chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
    let f = fetcher(dyns(&ps), 4, 2);
    let report = run(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(report.total_bytes, 5000);
    assert!(std::fs::read(&out).unwrap() == bytes);
    std::fs::remove_file(&out).unwrap();

    for p in &ps {
        flip_byte(p, &shard_path(FULL, 2, &m));
    }
    let e = run(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("shard 2"), "{e:#}");
    assert!(!out.exists() && crate::receiver::leftover_partials(&out).is_empty());

    // A shard nobody lists fails before a receiver is even started.
    for p in &ps {
        p.remove_object(&shard_path(FULL, 4, &m));
    }
    let chain = links(&dyns(&ps), Selector::Newest, false).await.unwrap();
    let e = run(&f, &chain, &dest, "restore", &progress, &cancel)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("provider p1: does not hold it"),
        "{e}"
    );
    assert!(crate::receiver::leftover_partials(&out).is_empty());
}

#[tokio::test]
async fn cancellation_stops_with_interrupted() {
    let ps = mems(1);
    let bytes = data(5000, 15);
    store(&[&ps[0]], &manifest_for(FULL, &bytes, 1000, None), &bytes);
    let link = links(&dyns(&ps), Selector::Newest, true)
        .await
        .unwrap()
        .remove(0);
    let f = fetcher(dyns(&ps), 2, 1);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let mut out = Vec::new();
    let e = f.stream(&link, &mut out, &cancel).await.unwrap_err();
    assert!(e.is::<Interrupted>(), "{e}");
    assert!(out.is_empty());
}

#[test]
fn a_restore_that_wrote_less_than_the_stream_never_succeeds() {
    let m = manifest_for(FULL, b"abcdefghij", 4, None);
    assert!(crate::engine::restore::covers_stream(&m, 10).is_ok());
    let e = crate::engine::restore::covers_stream(&m, 8).unwrap_err();
    assert!(format!("{e:#}").contains("incomplete"), "{e:#}");
    let mut short = m.clone();
    short.total_bytes = 12;
    assert!(crate::engine::restore::covers_stream(&short, 12).is_err());
    let mut gap = m.clone();
    gap.shards[1].offset = 5;
    assert!(crate::engine::restore::covers_stream(&gap, 10).is_err());
}
