//! Pipeline behaviour against in-memory providers and real child processes.

use super::*;
use crate::error::{ErrorKind, ProviderError, SourceChanged};
use crate::progress::NoProgress;
use crate::provider::{
    Fault, MemoryProvider, NativeHashes, ObjectInfo, ProgressFn, Provider, Usage,
};
use crate::state::DatasetState;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::path::Path;
mod codec;
mod erasure;

const SHARD: u64 = 1000;

fn sh(script: &str) -> ChildProc {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(script);
    ChildProc::spawn("sh", &mut c).unwrap()
}

fn data_file(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let p = dir.join("stream");
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn job(providers: Vec<DynProvider>, min: usize) -> BackupJob {
    BackupJob {
        host: "h".into(),
        dataset: "tank/x".into(),
        id: BackupId::parse("20261121T020000Z-full").unwrap(),
        source_kind: "command".into(),
        source: "cat".into(),
        source_desc: "command `cat`".into(),
        snapshot: None,
        parent: None,
        shard_size: SHARD,
        min_providers: min,
        shards_in_flight: 3,
        concurrency: 2,
        providers,
        estimate: None,
        resume: None,
        journal: None,
        codec: crate::codec::Codec::plain(),
        erasure: None,
        spool: None,
    }
}

const DIR: &str = "h/tank%2Fx/20261121T020000Z-full";

fn mems(n: usize) -> Vec<Arc<MemoryProvider>> {
    (0..n)
        .map(|i| Arc::new(MemoryProvider::new(&format!("p{i}"))))
        .collect()
}

fn dyns(m: &[Arc<MemoryProvider>]) -> Vec<DynProvider> {
    m.iter().map(|p| p.clone() as DynProvider).collect()
}

/// The shards a provider holds for the test backup, concatenated in name order.
fn stream_of(p: &MemoryProvider) -> Vec<u8> {
    let mut out = Vec::new();
    for path in p
        .paths()
        .iter()
        .filter(|p| p.starts_with(DIR) && !p.ends_with(layout::MANIFEST))
    {
        out.extend_from_slice(&p.object(path).unwrap());
    }
    out
}

fn manifest_of(p: &MemoryProvider) -> Option<Manifest> {
    p.object(&format!("{DIR}/{}", layout::MANIFEST))
        .map(|b| Manifest::from_json(&b).unwrap())
}

async fn run_job(j: BackupJob, src: ChildProc) -> Result<BackupReport> {
    run(j, src, Arc::new(NoProgress), CancellationToken::new()).await
}

#[tokio::test]
async fn every_provider_gets_every_shard_and_a_matching_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let m = mems(3);
    let report = run_job(job(dyns(&m), 1), sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    assert_eq!((report.shards, report.total_bytes), (4, 3500));
    for p in &m {
        assert_eq!(stream_of(p), data);
        let man = manifest_of(p).unwrap();
        assert_eq!(
            man.shards[3].name(Default::default()),
            "s0000000003-b0000000000003000"
        );
        assert_eq!(man.shards[3].length, 500);
        assert_eq!(
            man.shards[1].sha256,
            crate::hashing::sha256(&data[1000..2000])
        );
    }
}

#[tokio::test]
async fn an_empty_command_stream_is_a_backup_of_zero_shards() {
    let m = mems(1);
    let report = run_job(job(dyns(&m), 1), sh("true")).await.unwrap();
    assert_eq!(report.shards, 0);
    assert_eq!(manifest_of(&m[0]).unwrap().total_bytes, 0);
}

#[tokio::test]
async fn an_empty_zfs_or_btrfs_stream_is_an_error_and_writes_no_manifest() {
    for kind in ["zfs", "btrfs"] {
        let m = mems(1);
        let mut j = job(dyns(&m), 1);
        j.source_kind = kind.into();
        j.source_desc = format!("{kind} send x@offsite-1");
        let err = run_job(j, sh("true")).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("wrote 0 bytes") && text.contains("send_flags"),
            "{text}"
        );
        assert!(
            manifest_of(&m[0]).is_none(),
            "{kind}: a manifest was written"
        );
    }
}

#[tokio::test]
async fn a_provider_that_stays_down_is_dropped_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 5000);
    let m = mems(3);
    m[1].inject(Fault {
        op: "put",
        path_contains: "s000".into(),
        kind: ErrorKind::Transient,
        times: u32::MAX,
    });
    let report = run_job(job(dyns(&m), 1), sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(!report.complete());
    let down = &report.providers[1];
    assert_eq!(down.missing_shards, vec![0, 1, 2, 3, 4]);
    assert!(!down.manifest_written && down.error.as_deref().unwrap().contains("injected"));
    for i in [0, 2] {
        assert_eq!(stream_of(&m[i]), data);
        assert!(manifest_of(&m[i]).is_some());
    }
    assert!(m[1].puts() == 0, "a dropped provider is not tried again");
}

#[tokio::test]
async fn fewer_than_min_providers_fails_without_manifest_and_stops_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let m = mems(2);
    m[0].inject(Fault {
        op: "put",
        path_contains: "".into(),
        kind: ErrorKind::Permanent,
        times: u32::MAX,
    });
    let src = sh(&format!(
        "echo $$ > {}; exec cat /dev/zero",
        pidfile.display()
    ));
    let err = run_job(job(dyns(&m), 2), src).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("fewer than min_providers = 2") && msg.contains("injected fault"),
        "{msg}"
    );
    assert!(manifest_of(&m[1]).is_none());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: probing a pid with signal 0. The source was waited on, so it is gone.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "source {pid} survived");
}

#[tokio::test]
async fn a_source_that_fails_mid_stream_writes_no_manifest_and_reports_its_stderr() {
    let m = mems(2);
    let src = sh("head -c 2500 /dev/zero; echo boom >&2; exit 7");
    let err = run_job(job(dyns(&m), 1), src).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("boom") && msg.contains("status 7") && msg.contains("no manifest"),
        "{msg}"
    );
    assert!(m.iter().all(|p| manifest_of(p).is_none()));
}

/// Stores only half of every shard but reports success, as `rclone rcat` does on a cut input.
struct Truncating(MemoryProvider);

impl Provider for Truncating {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        p: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let keep = if path.ends_with(layout::MANIFEST) {
            data.len()
        } else {
            data.len() / 2
        };
        self.0.put(path, data.slice(..keep), p)
    }
    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        self.0.get(path, limit)
    }
    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.0.list(dir)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.0.delete(path)
    }
    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        self.0.about()
    }
}

#[tokio::test]
async fn a_truncated_object_is_not_taken_for_a_good_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = data_file(dir.path(), 2000);
    let good = Arc::new(MemoryProvider::new("good"));
    let bad: DynProvider = Arc::new(Truncating(MemoryProvider::new("bad")));
    let report = run_job(
        job(vec![good.clone(), bad], 1),
        sh(&format!("cat {}", file.display())),
    )
    .await
    .unwrap();
    assert!(!report.complete());
    assert_eq!(report.providers[1].missing_shards, vec![0, 1]);
    assert!(report.providers[0].missing_shards.is_empty());
}

/// The journal's header for the test backup, plain and mirrored.
fn unfinished() -> crate::state::Unfinished {
    crate::state::Unfinished {
        backup_id: "20261121T020000Z-full".into(),
        snapshot: None,
        parent: None,
        shard_size: SHARD,
        started: "x".into(),
        gaps_retry: false,
        encoding: Default::default(),
        recipients: Vec::new(),
        erasure: None,
        previous_bytes: None,
    }
}

#[tokio::test]
async fn resume_uploads_only_what_is_missing_and_checks_the_recorded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 4500);
    let m = mems(2);
    let state = DatasetState::new(dir.path(), "h", "tank/x");
    let mut j = job(dyns(&m), 1);
    j.journal = Some(Arc::new(state.begin(&unfinished()).unwrap()));
    run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    // An interrupted run: p1 lost shard 2 and has shard 4 truncated, p0 lost its manifest.
    let (_, recorded) = state.load().unwrap().unwrap();
    assert_eq!(recorded.len(), 5);
    m[1].remove_object(&format!("{DIR}/{}", layout::shard_name(2, 2000)));
    m[1].set_object(
        &format!("{DIR}/{}", layout::shard_name(4, 4000)),
        Bytes::from_static(b"trunc"),
    );
    m[0].remove_object(&format!("{DIR}/{}", layout::MANIFEST));
    let before = (m[0].puts(), m[1].puts());
    let mut j = job(dyns(&m), 1);
    j.resume = Some(recorded.clone());
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    // p0: only its lost manifest; p1: the two damaged shards (its manifest is kept).
    assert_eq!((m[0].puts() - before.0, m[1].puts() - before.1), (1, 2));
    assert_eq!(stream_of(&m[1]), data);

    // A source that re-sends different bytes is refused before anything is uploaded.
    let mut changed = data.clone();
    changed[2500] ^= 1;
    std::fs::write(&file, &changed).unwrap();
    let before = (m[0].puts(), m[1].puts());
    let mut j = job(dyns(&m), 1);
    j.resume = Some(recorded);
    let err = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap_err();
    assert!(err.chain().any(|c| c.is::<SourceChanged>()), "{err:#}");
    assert!(
        format!("{err:#}").contains("shard 2 (byte 2000)"),
        "{err:#}"
    );
    assert_eq!(
        (m[0].puts(), m[1].puts()),
        before,
        "nothing from the new stream was uploaded"
    );
    assert_eq!(stream_of(&m[1]), data);
}

/// A provider whose uploads never finish (a lagging one, frozen), and whose listing is empty.
struct Stuck;
impl Provider for Stuck {
    fn name(&self) -> &str {
        "stuck"
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
        Box::pin(futures::future::pending())
    }
    fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn delete<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async { Ok(()) })
    }
    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        Box::pin(async { Ok(Usage::default()) })
    }
}

#[tokio::test]
async fn cancellation_stops_the_source_and_reports_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let m = mems(1);
    // A provider that never finishes keeps the pipeline busy until it is cancelled.
    m[0].inject(Fault {
        op: "put",
        path_contains: "".into(),
        kind: ErrorKind::Transient,
        times: 0,
    });
    let cancel = CancellationToken::new();
    let src = sh(&format!(
        "echo $$ > {}; exec cat /dev/zero",
        pidfile.display()
    ));
    let handle = tokio::spawn(run(
        job(vec![Arc::new(Stuck)], 1),
        src,
        Arc::new(NoProgress),
        cancel.clone(),
    ));
    // Cancel once the source is running (its pid file is complete).
    while !std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n')) {
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let err = handle.await.unwrap().unwrap_err();
    assert!(err.is::<Interrupted>(), "{err:#}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: probing a pid with signal 0.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "source {pid} survived");
}

#[tokio::test]
async fn shards_are_journaled_when_hashed_so_a_lagging_provider_costs_the_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 2500);
    let m = mems(1);
    let state = DatasetState::new(dir.path(), "h", "tank/x");
    let u = unfinished();
    // p0 takes every shard; `stuck` never finishes one, as a provider that lags behind.
    let mut j = job(vec![m[0].clone() as DynProvider, Arc::new(Stuck)], 1);
    j.journal = Some(Arc::new(state.begin(&u).unwrap()));
    let cancel = CancellationToken::new();
    let src = sh(&format!("cat {}", file.display()));
    let handle = tokio::spawn(run(j, src, Arc::new(NoProgress), cancel.clone()));
    let journaled = || state.load().unwrap().map_or(0, |(_, r)| r.len());
    while journaled() < 3 || m[0].puts() < 3 {
        tokio::task::yield_now().await;
    }
    cancel.cancel();
    let err = handle.await.unwrap().unwrap_err();
    assert!(err.is::<Interrupted>(), "{err:#}");

    // The resumed run trusts p0's whole objects for the recorded shards: it only writes the
    // manifest there, and sends every shard to the provider that had none.
    let (_, recorded) = state.load().unwrap().unwrap();
    assert_eq!(recorded.len(), 3);
    let fresh = Arc::new(MemoryProvider::new("p1"));
    let before = m[0].puts();
    let mut j = job(vec![m[0].clone() as DynProvider, fresh.clone()], 1);
    j.resume = Some(recorded);
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    assert_eq!((m[0].puts() - before, fresh.puts()), (1, 4));
    assert_eq!(stream_of(&fresh), data);
}

/// Every upload but the first shard's hangs, as on a provider whose connection is gone; the
/// first shard's fails for good once two others hang.
struct FailsThenHangs {
    inner: MemoryProvider,
    hanging: tokio::sync::Semaphore,
}

impl crate::provider::Layer for FailsThenHangs {
    type Inner = MemoryProvider;
    fn inner(&self) -> &MemoryProvider {
        &self.inner
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        _: Bytes,
        _: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            if !path.ends_with(&format!("/{}", crate::layout::shard_name(0, 0))) {
                self.hanging.add_permits(1);
                return futures::future::pending().await;
            }
            self.hanging.acquire_many(2).await.unwrap().forget();
            Err(ProviderError::new(
                "p1",
                "upload",
                path,
                ErrorKind::Permanent,
                "quota",
            ))
        })
    }
}

#[tokio::test]
async fn uploads_waiting_on_a_provider_end_when_it_drops_out() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 8000);
    let good = Arc::new(MemoryProvider::new("p0"));
    let failing = Arc::new(FailsThenHangs {
        inner: MemoryProvider::new("p1"),
        hanging: tokio::sync::Semaphore::new(0),
    });
    let providers: Vec<DynProvider> = vec![good.clone(), failing];
    // Without the drop ending them, the hanging uploads would hold every shard slot forever.
    let run = run_job(job(providers, 1), sh(&format!("cat {}", file.display())));
    let report = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the backup ended")
        .unwrap();
    assert!(!report.complete());
    assert_eq!(stream_of(&good), data);
    let p1 = report
        .providers
        .iter()
        .find(|p| p.provider == "p1")
        .unwrap();
    assert_eq!(p1.missing_shards.len() as u64, report.shards);
}

/// A provider whose uploads wait until the test opens its gate: a slow one, or one that stops
/// answering after as many uploads as its gate lets through at first. It notes whether
/// each upload, once through the gate, was asked to yield the CPU (`provider::priority`).
struct Gated {
    inner: MemoryProvider,
    gate: tokio::sync::Semaphore,
    behind: std::sync::Mutex<Vec<bool>>,
}

impl Gated {
    fn new(name: &str, open: usize) -> Arc<Gated> {
        Arc::new(Gated {
            inner: MemoryProvider::new(name),
            gate: tokio::sync::Semaphore::new(open),
            behind: Default::default(),
        })
    }
}

impl crate::provider::Layer for Gated {
    type Inner = MemoryProvider;
    fn inner(&self) -> &MemoryProvider {
        &self.inner
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        p: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.gate.acquire().await.unwrap().forget();
            let behind = crate::provider::priority::now();
            self.behind.lock().unwrap().push(behind);
            self.inner.put(path, data, p).await
        })
    }
}

/// Yields until `done`; panics with `what` after 120 s, a guard against a hang, never a timing
/// the test relies on.
async fn until(done: impl Fn() -> bool, what: &str) {
    let wait = async {
        while !done() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), wait)
        .await
        .expect(what);
}

/// Three providers, the last one gated shut, and a spool of 1 MiB in `dir`.
fn spooled_job(dir: &Path) -> (BackupJob, Vec<Arc<MemoryProvider>>, Arc<Gated>) {
    let spool = Arc::new(crate::spool::Spool::open(dir, 1 << 20).unwrap());
    let healthy = mems(2);
    let slow = Gated::new("slow", 0);
    let mut providers = dyns(&healthy);
    providers.push(slow.clone());
    let mut j = job(providers, 1);
    (j.shards_in_flight, j.spool) = (1, Some(spool));
    (j, healthy, slow)
}

/// Healthy providers get every shard of a backup with `shards_in_flight` places in memory
/// while a slow one, gated shut, takes none: the shards wait in the spool for it. Returns how
/// many shards were spooled.
async fn healthy_providers_get_every_shard_while_a_slow_one_holds_none(
    shards_in_flight: usize,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 8000);
    let spool_dir = tempfile::tempdir().unwrap();
    let (mut j, healthy, slow) = spooled_job(spool_dir.path());
    j.shards_in_flight = shards_in_flight;
    let spool = j.spool.clone().unwrap();
    let handle = tokio::spawn(run_job(j, sh(&format!("cat {}", file.display()))));
    until(
        || healthy.iter().all(|p| p.puts() >= 8),
        "the healthy providers got every shard while the slow one took none",
    )
    .await;
    assert_eq!(slow.inner.puts(), 0);
    assert!(spool.used() > 0, "the slow provider's shards are spooled");
    slow.gate.add_permits(1000);
    let report = handle.await.unwrap().unwrap();
    assert!(report.complete());
    for p in healthy.iter().map(|p| &**p).chain([&slow.inner]) {
        assert_eq!(stream_of(p), data, "{}", p.name());
        assert_eq!(manifest_of(p).unwrap().shards.len(), 8);
    }
    assert_eq!(spool.used(), 0, "every spooled shard was freed");
    spool.kept()
}

#[tokio::test]
async fn with_a_spool_healthy_providers_get_every_shard_while_a_slow_one_holds_none() {
    // One shard's place in memory: every shard goes to the spool.
    let spooled = healthy_providers_get_every_shard_while_a_slow_one_holds_none(1).await;
    assert_eq!(spooled, 8);
}

#[tokio::test]
async fn with_a_spool_a_provider_that_stops_answering_holds_at_most_half_the_shards_in_memory() {
    // Four places: the slow provider gets its first shards from memory, and holds their
    // places until it is two shards behind (the spool lead: concurrency 2, half of 4); the
    // source reads on with the other two, and the slow one gets later shards from the spool.
    let spooled = healthy_providers_get_every_shard_while_a_slow_one_holds_none(4).await;
    assert_eq!(spooled, 6, "the slow provider took two shards from memory");
}

#[tokio::test]
async fn with_a_spool_providers_that_stop_answering_in_turn_leave_the_source_a_place() {
    // p1 stops answering at once and p2 after two shards, each before it is behind: alone,
    // each would hold two shards' places in memory. The source keeps one of its four places
    // and spools every later shard for every provider, so p0 still gets every shard.
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 8000);
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(crate::spool::Spool::open(spool_dir.path(), 1 << 20).unwrap());
    let healthy = Arc::new(MemoryProvider::new("p0"));
    let (first, second) = (Gated::new("p1", 0), Gated::new("p2", 2));
    let providers: Vec<DynProvider> = vec![healthy.clone(), first.clone(), second.clone()];
    let mut j = job(providers, 1);
    (j.shards_in_flight, j.spool) = (4, Some(spool.clone()));
    let handle = tokio::spawn(run_job(j, sh(&format!("cat {}", file.display()))));
    until(
        || healthy.puts() >= 8,
        "p0 got every shard while p1 and p2 hung",
    )
    .await;
    first.gate.add_permits(1000);
    second.gate.add_permits(1000);
    let report = handle.await.unwrap().unwrap();
    assert!(report.complete());
    for p in [&*healthy, &first.inner, &second.inner] {
        assert_eq!(stream_of(p), data, "{}", p.name());
    }
}

#[tokio::test]
async fn with_a_spool_and_providers_that_keep_up_nothing_is_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 8000);
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(crate::spool::Spool::open(spool_dir.path(), 1 << 20).unwrap());
    let providers = mems(3);
    let mut j = job(dyns(&providers), 3);
    (j.shards_in_flight, j.spool) = (4, Some(spool.clone()));
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    for p in &providers {
        assert_eq!(stream_of(p), data, "{}", p.name());
    }
    assert_eq!(
        spool.kept(),
        0,
        "every provider took every shard from memory"
    );
}

#[tokio::test]
async fn a_spool_that_cannot_be_written_keeps_shards_in_memory_and_the_backup_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let spool_dir = tempfile::tempdir().unwrap();
    let (j, healthy, slow) = spooled_job(spool_dir.path());
    // The folder goes away after the spool was opened, as a disk unmounted mid-run.
    std::fs::remove_dir(spool_dir.path()).unwrap();
    slow.gate.add_permits(1000);
    let report = run_job(j, sh(&format!("cat {}", file.display())))
        .await
        .unwrap();
    assert!(report.complete());
    for p in healthy.iter().map(|p| &**p).chain([&slow.inner]) {
        assert_eq!(stream_of(p), data, "{}", p.name());
    }
}

#[tokio::test]
async fn with_a_spool_a_provider_that_fell_behind_uploads_yielding_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 8000);
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(crate::spool::Spool::open(spool_dir.path(), 1 << 20).unwrap());
    let (fast, slow) = (Gated::new("fast", 1000), Gated::new("slow", 0));
    let mut j = job(vec![fast.clone(), slow.clone()], 1);
    (j.shards_in_flight, j.spool) = (1, Some(spool));
    let handle = tokio::spawn(run_job(j, sh(&format!("cat {}", file.display()))));
    until(
        || fast.inner.puts() >= 8,
        "the fast provider got every shard while the slow one took none",
    )
    .await;
    slow.gate.add_permits(1000);
    let report = handle.await.unwrap().unwrap();
    assert!(report.complete());
    assert_eq!(stream_of(&slow.inner), data);
    // The fast provider is through (its frontier is shard 8) and the spool has room: the
    // slow one's upload of shard k, its frontier k or older, yields for every k up to
    // 8 - lead (lead 3: concurrency 2 + 1); its manifest, written after them, does not. None
    // of the fast one's did.
    let behind = slow.behind.lock().unwrap().clone();
    assert_eq!(behind.len(), 9, "8 shards and the manifest");
    assert!(
        behind[..8].iter().filter(|b| **b).count() >= 6,
        "{behind:?}"
    );
    assert!(!behind[8]);
    assert!(fast.behind.lock().unwrap().iter().all(|b| !b));
}

#[tokio::test]
async fn without_a_spool_no_upload_yields_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = data_file(dir.path(), 8000);
    let (fast, slow) = (Gated::new("fast", 1000), Gated::new("slow", 1000));
    let report = run_job(
        job(vec![fast.clone(), slow.clone()], 1),
        sh(&format!("cat {}", file.display())),
    )
    .await
    .unwrap();
    assert!(report.complete());
    for p in [&fast, &slow] {
        let behind = p.behind.lock().unwrap();
        assert!(behind.len() >= 8 && behind.iter().all(|b| !b), "{behind:?}");
    }
}

/// A provider whose listings carry `lists` of the native hashes (`None`: it never says).
struct Listing(Arc<MemoryProvider>, Option<NativeHashes>);

impl crate::provider::Layer for Listing {
    type Inner = MemoryProvider;

    fn inner(&self) -> &MemoryProvider {
        &self.0
    }

    fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
        match self.1 {
            Some(lists) => Box::pin(async move { lists }),
            None => Box::pin(futures::future::pending()),
        }
    }
}

#[tokio::test]
async fn md5_and_sha1_are_recorded_where_a_provider_lists_them_or_has_not_said() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let (all, none) = (Some(NativeHashes::ALL), Some(NativeHashes::NONE));
    let md5 = NativeHashes {
        md5: true,
        sha1: false,
    };
    for (lists, want) in [
        ([none, none], NativeHashes::NONE),
        ([none, Some(md5)], md5),
        ([Some(md5), all], NativeHashes::ALL),
        ([none, None], NativeHashes::ALL),
    ] {
        let m = mems(2);
        let providers = (m.iter().zip(lists))
            .map(|(p, l)| Arc::new(Listing(p.clone(), l)) as DynProvider)
            .collect();
        let cat = sh(&format!("cat {}", file.display()));
        assert!(run_job(job(providers, 1), cat).await.unwrap().complete());
        let man = manifest_of(&m[0]).unwrap();
        assert_eq!(man.shards.len(), 4);
        for s in &man.shards {
            let at = s.offset as usize;
            let d = crate::hashing::digests(&data[at..at + s.length as usize]);
            assert_eq!(s.sha256, d.sha256);
            assert_eq!(
                s.md5,
                want.md5.then_some(d.md5),
                "{lists:?}: shard {}",
                s.index
            );
            assert_eq!(
                s.sha1,
                want.sha1.then_some(d.sha1),
                "{lists:?}: shard {}",
                s.index
            );
        }
    }
}

#[tokio::test]
async fn a_resumed_shard_uploaded_again_gains_the_hashes_a_new_provider_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = data_file(dir.path(), 3500);
    let m = mems(2);
    let listing = |lists: [NativeHashes; 2]| -> Vec<DynProvider> {
        (m.iter().zip(lists))
            .map(|(p, l)| Arc::new(Listing(p.clone(), Some(l))) as DynProvider)
            .collect()
    };
    let cat = || sh(&format!("cat {}", file.display()));
    let none = NativeHashes::NONE;
    let state = DatasetState::new(dir.path(), "h", "tank/x");
    let mut j = job(listing([none, none]), 1);
    j.journal = Some(Arc::new(state.begin(&unfinished()).unwrap()));
    run_job(j, cat()).await.unwrap();
    let (_, recorded) = state.load().unwrap().unwrap();
    assert!(recorded
        .values()
        .all(|r| r.md5.is_none() && r.sha1.is_none()));
    // Interrupted before the manifests, and resumed with p1 now listing both: the shard it
    // lost is encoded and uploaded again.
    m[1].remove_object(&format!("{DIR}/{}", layout::shard_name(2, 2000)));
    for p in &m {
        p.remove_object(&format!("{DIR}/{}", layout::MANIFEST));
    }
    let mut j = job(listing([none, NativeHashes::ALL]), 1);
    j.resume = Some(recorded);
    assert!(run_job(j, cat()).await.unwrap().complete());
    let man = manifest_of(&m[1]).unwrap();
    let d = crate::hashing::digests(&data[2000..3000]);
    assert_eq!(
        (&man.shards[2].md5, &man.shards[2].sha1),
        (&Some(d.md5), &Some(d.sha1))
    );
    assert_eq!(man.shards[1].md5, None, "held by both: not encoded again");
}
