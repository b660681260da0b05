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

/// `verify --deep` and `--decrypt` on an encrypted, compressed backup of three shards: on p1
/// shard 0's stored bytes were flipped; on both, shard 2 holds intact stored bytes (the clear
/// manifest's SHA-256 matches) whose plaintext is not the one the sealed part records.
mod decrypt {
    use super::*;
    use crate::codec::keys::{load_identities, Passphrase};
    use crate::engine::restore::tests::encoded::{codec, encoded, keypair, text};
    use crate::manifest::Manifest;

    const FULL: &str = "20261101T020000Z-full";

    fn encrypted_backup(
        dir: &std::path::Path,
    ) -> (
        Manifest,
        Vec<Check>,
        Vec<DynProvider>,
        Arc<crate::codec::Identities>,
    ) {
        let (path, r) = keypair(dir, "key.txt");
        let ids = Arc::new(load_identities(&path, &Passphrase::Given(String::new())).unwrap());
        let bytes = text(3000, 1);
        let (mut m, mut objects) = encoded(FULL, &bytes, 1000, None, &codec(true, Some(&r)));
        let wrong = codec(true, Some(&r))
            .encode(Bytes::from(text(1000, 2)))
            .unwrap();
        m.shards[2].length = wrong.len() as u64;
        m.shards[2].sha256 = crate::hashing::sha256(&wrong);
        objects[2].1 = wrong;
        let key = BackupKey {
            dataset: "tank/data".into(),
            id: BackupId::parse(FULL).unwrap(),
        };
        let (p1, p2) = (MemoryProvider::new("p1"), MemoryProvider::new("p2"));
        let mut checks = Vec::new();
        for (p, name) in [(&p1, "p1"), (&p2, "p2")] {
            for (rec, (object, body)) in m.shards.iter().zip(&objects) {
                let path = format!("b/{object}");
                let mut body = body.to_vec();
                if name == "p1" && rec.index == 0 {
                    body[10] ^= 0xff;
                }
                p.set_object(&path, Bytes::from(body));
                checks.push(Check {
                    provider: name.into(),
                    key: key.clone(),
                    index: rec.index,
                    path,
                    length: rec.length,
                    sha256: Some(rec.sha256.clone()),
                });
            }
        }
        let providers: Vec<DynProvider> = vec![Arc::new(p1), Arc::new(p2)];
        (m, checks, providers, ids)
    }

    fn bad(out: &[(Check, Verdict)]) -> Vec<(String, u64, String)> {
        let mut bad: Vec<(String, u64, String)> = out
            .iter()
            .filter_map(|(c, v)| match v {
                Verdict::Good(_) => None,
                Verdict::Bad(why) | Verdict::Unreadable(why) => {
                    Some((c.provider.clone(), c.index, why.clone()))
                }
            })
            .collect();
        bad.sort();
        bad
    }

    #[tokio::test]
    async fn deep_checks_stored_bytes_and_decrypt_also_the_sealed_plaintext_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, checks, providers, ids) = encrypted_backup(tmp.path());
        let progress: Arc<dyn Progress> = Arc::new(NoProgress);
        let limits = Limits {
            shards_in_flight: 2,
            concurrency: 2,
        };
        let cancel = CancellationToken::new();
        // --deep: no identity; only the flipped stored copy is bad.
        let out = run_checks(&providers, checks.clone(), limits, &progress, &cancel)
            .await
            .unwrap();
        let deep = bad(&out);
        assert_eq!(deep.len(), 1, "{deep:?}");
        assert_eq!((deep[0].0.as_str(), deep[0].1), ("p1", 0));
        assert!(deep[0].2.contains("SHA-256"), "{deep:?}");
        // --decrypt: shard 2 is bad on both providers, by its plaintext hash.
        let mut opened = m.clone();
        opened.unseal(&ids).unwrap();
        let key = checks[0].key.clone();
        let decoding = Decoding::from_parts([(key, opened)].into(), Some(ids));
        let out = run_checks_decoding(&providers, checks, limits, &decoding, &progress, &cancel)
            .await
            .unwrap();
        let found = bad(&out);
        let places: Vec<(&str, u64)> = found.iter().map(|(p, i, _)| (p.as_str(), *i)).collect();
        assert_eq!(places, [("p1", 0), ("p1", 2), ("p2", 2)], "{found:?}");
        assert!(
            found[1].2.contains("decodes to plaintext with SHA-256"),
            "{found:?}"
        );
        assert!(found[0].2.contains("the manifest says"), "{found:?}");
        let good = out
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Good(_)))
            .count();
        assert_eq!(good, 3);
    }
}

/// `verify --deep` of a 2+1 erasure-coded backup of three shards on MemoryProviders a, b, c.
mod erasure {
    use super::*;
    use crate::catalog::Catalog;
    use crate::gaps::fixture::{config, erasure, path, store_pieces};
    use crate::manifest::{sample, Manifest};

    const SHARDS: [&[u8]; 3] = [b"abcdefgh", b"ijklmnop", b"qrs"];
    const NAMES: [&str; 3] = ["a", "b", "c"];

    fn backup() -> (Manifest, [Arc<MemoryProvider>; 3]) {
        let stored: Vec<Bytes> = SHARDS.iter().map(|s| Bytes::from_static(s)).collect();
        let (m, pieces) = erasure(sample(&SHARDS), &stored, "2+1".parse().unwrap(), &NAMES);
        let mems = NAMES.map(|n| Arc::new(MemoryProvider::new(n)));
        let named: Vec<(&str, &MemoryProvider)> =
            NAMES.into_iter().zip(mems.iter().map(|m| &**m)).collect();
        store_pieces(&named, &m, &pieces);
        (m, mems)
    }

    /// The holder of piece `p` of shard `s`, and the piece's path there.
    fn piece(m: &Manifest, s: usize, p: usize) -> (usize, String) {
        let holder = m.erasure.as_ref().unwrap().holder(s as u64, p);
        let i = NAMES.iter().position(|n| *n == holder).unwrap();
        (i, path(m, &m.piece_object(&m.shards[s], p)))
    }

    /// `verify --deep` over the three providers.
    async fn verify(mems: &[Arc<MemoryProvider>; 3], decrypt: bool) -> VerifyReport {
        verify_decoding(mems, decrypt.then(Decoding::default)).await
    }

    /// `verify --deep`, with `--decrypt` decoding as `decoding` says.
    async fn verify_decoding(
        mems: &[Arc<MemoryProvider>; 3],
        decoding: Option<Decoding>,
    ) -> VerifyReport {
        let (_dir, cfg) = config(&NAMES);
        let providers: Vec<DynProvider> = mems.iter().map(|p| p.clone() as DynProvider).collect();
        let catalog = Catalog::scan(&providers, "h", None).await;
        let quick = crate::gaps::survey(&cfg, &catalog, &Default::default());
        let limits = Limits {
            shards_in_flight: 2,
            concurrency: 2,
        };
        let scope = DeepScope {
            only: None,
            decoding: decoding.as_ref(),
        };
        let progress: Arc<dyn Progress> = Arc::new(NoProgress);
        let cancel = CancellationToken::new();
        let deep = deep_check_in("h", &quick, scope, &providers, limits, &progress, &cancel)
            .await
            .unwrap();
        let surveys = crate::gaps::survey(&cfg, &catalog, &deep.corrupt);
        let scope = VerifyScope {
            only: None,
            deep: Some(&deep),
        };
        verify_report(&catalog, &surveys, scope)
    }

    #[tokio::test]
    async fn deep_hashes_each_piece_on_its_holder_once() {
        let (m, mems) = backup();
        let report = verify(&mems, false).await;
        assert_eq!((&report.problems, &report.lost), (&None, &None));
        let pieces: u64 = m
            .shards
            .iter()
            .flat_map(|s| &s.pieces)
            .map(|p| p.length)
            .sum();
        assert_eq!(report.checked_bytes, Some(pieces));
        let VerifiedBackup::Finished(b) = &report.backups[0] else {
            panic!("{report:?}")
        };
        assert_eq!(b.shards, 3);
        for p in &b.providers {
            assert_eq!((p.pieces, p.checked_shards), (Some(3), 3));
            assert_eq!(p.result, "complete, 3 pieces (3 pieces hashed)");
        }
    }

    #[tokio::test]
    async fn a_flipped_byte_in_a_piece_names_provider_shard_and_piece() {
        let (m, mems) = backup();
        let (i, at) = piece(&m, 1, 2);
        let mut body = mems[i].object(&at).unwrap().to_vec();
        body[0] ^= 0xff;
        mems[i].set_object(&at, Bytes::from(body));
        let report = verify(&mems, false).await;
        let problems = report.problems.clone().expect("a corrupt piece: exit 3");
        let object = m.piece_object(&m.shards[1], 2);
        let want = format!(
            "on {}: 1 corrupt (shard 1 piece {object} corrupt)",
            NAMES[i]
        );
        assert!(problems.contains(&want), "{problems}");
        assert_eq!(report.lost, None, "two good pieces remain");
        let VerifiedBackup::Finished(b) = &report.backups[0] else {
            panic!("{report:?}")
        };
        assert_eq!(b.strength.as_ref().map(|s| s.degraded), Some(1));
    }

    fn decoding(m: &Manifest) -> Decoding {
        let key = crate::catalog::BackupKey {
            dataset: m.dataset.clone(),
            id: crate::layout::BackupId::parse(&m.backup_id).unwrap(),
        };
        Decoding::from_parts([(key, m.clone())].into(), None)
    }

    #[tokio::test]
    async fn decrypt_joins_k_good_pieces_of_each_shard_and_checks_the_shard() {
        let (m, mems) = backup();
        let (i, at) = piece(&m, 1, 0);
        mems[i].remove_object(&at);
        let report = verify_decoding(&mems, Some(decoding(&m))).await;
        assert_eq!(report.lost, None);
        assert_eq!(
            report.decrypted,
            Some(3),
            "shard 1 from its two other pieces"
        );
        assert!(report.undecodable.is_empty());
    }

    #[tokio::test]
    async fn a_shard_that_does_not_decode_from_good_pieces_is_lost() {
        let (mut m, mems) = backup();
        // The manifest says zstd, the stored bytes are not a zstd frame.
        m.encoding.compression = Some(crate::layout::Compression::Zstd);
        let report = verify_decoding(&mems, Some(decoding(&m))).await;
        assert_eq!(report.undecodable.len(), 3, "{:?}", report.undecodable);
        let lost = report.lost.expect("exit 1");
        assert!(lost.contains("shard 0 of backup"), "{lost}");
        assert!(lost.contains("does not decode from good pieces"), "{lost}");
    }

    #[tokio::test]
    async fn two_lost_pieces_of_one_shard_lose_the_backup() {
        let (m, mems) = backup();
        for p in [1, 2] {
            let (i, at) = piece(&m, 0, p);
            mems[i].remove_object(&at);
        }
        let report = verify(&mems, false).await;
        let lost = report.lost.expect("exit 1");
        assert!(lost.contains("restore fails from shard 0"), "{lost}");
    }
}
