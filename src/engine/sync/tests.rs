use super::*;
use crate::config::Config;
use crate::engine::verify::Limits;
use crate::error::ProviderError;
use crate::gaps::{self, Corrupt};
use crate::layout::MANIFEST;
use crate::layout::{shard_name, BackupId};
use crate::manifest::sample;
use crate::progress::NoProgress;
use crate::progress::Progress;
use crate::provider::{DynProvider, ProgressFn};
use crate::provider::{Fault, MemoryProvider, Provider};
use bytes::Bytes;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HOST: &str = "h";
const SHARDS: [&[u8]; 3] = [b"abcd", b"efgh", b"ij"];

/// Providers a, b, c (enabled) and d (disabled, in no dataset); dataset "d" on a, b and c.
fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("providers.d")).unwrap();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("providers.d/{n}.toml")),
            format!(
                "remote = \"/r/{n}\"\npriority = {i}\nenabled = {}\n",
                *n != "d"
            ),
        )
        .unwrap();
    }
    let path = dir.path().join("offsite.toml");
    std::fs::write(
        &path,
        "host = \"h\"\nrclone = \"/bin/true\"\n[[dataset]]\nname = \"d\"\ncommand = \"true\"\nproviders = [\"a\", \"b\", \"c\"]\n",
    )
    .unwrap();
    let cfg = Config::load(&path, None).unwrap();
    (dir, cfg)
}

struct Setup {
    _dir: tempfile::TempDir,
    cfg: Config,
    mems: Vec<Arc<MemoryProvider>>,
    manifest: crate::manifest::Manifest,
}

impl Setup {
    /// One backup of [`SHARDS`] whole on a, b and c; d empty.
    fn new() -> Setup {
        let (_dir, cfg) = config();
        let manifest = sample(&SHARDS);
        let mems: Vec<Arc<MemoryProvider>> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| Arc::new(MemoryProvider::new(n)))
            .collect();
        for m in &mems[..3] {
            for (i, s) in manifest.shards.iter().enumerate() {
                m.set_object(&path(&s.name()), Bytes::from_static(SHARDS[i]));
            }
            m.set_object(&path(MANIFEST), Bytes::from(manifest.to_json()));
        }
        Setup {
            _dir,
            cfg,
            mems,
            manifest,
        }
    }

    fn mem(&self, name: &str) -> &Arc<MemoryProvider> {
        self.mems.iter().find(|m| m.name() == name).unwrap()
    }

    fn providers(&self) -> Vec<DynProvider> {
        self.mems.iter().map(|m| m.clone() as DynProvider).collect()
    }

    fn shard(&self, i: usize) -> String {
        path(&self.manifest.shards[i].name())
    }

    async fn scan(&self, corrupt: &Corrupt) -> (Catalog, Vec<(BackupKey, BackupFindings)>) {
        let catalog = Catalog::scan(&self.providers(), HOST, None).await;
        let surveys = gaps::survey(&self.cfg, &catalog, corrupt);
        (catalog, surveys)
    }

    fn options(&self) -> Options {
        Options {
            host: HOST.into(),
            limits: Limits {
                shards_in_flight: 2,
                concurrency: 2,
            },
            remotes: BTreeMap::new(),
        }
    }

    async fn sync(&self, mode: &Mode, corrupt: &Corrupt) -> Report {
        let (catalog, surveys) = self.scan(corrupt).await;
        let p = plan(&catalog, &surveys, mode);
        execute(
            p,
            &self.providers(),
            &self.options(),
            Arc::new(NoProgress),
            &CancellationToken::new(),
        )
        .await
        .unwrap()
    }

    /// Damage of one kind per provider: a loses shards 0 and 2 and its manifest, b's shard 1
    /// is cut short, c's shard 2 has a flipped byte (same size).
    fn damage(&self) {
        let a = self.mem("a");
        a.remove_object(&self.shard(0));
        a.remove_object(&self.shard(2));
        a.remove_object(&path(MANIFEST));
        self.mem("b")
            .set_object(&self.shard(1), Bytes::from_static(b"ef"));
        self.mem("c")
            .set_object(&self.shard(2), Bytes::from_static(b"iX"));
    }
}

fn key() -> BackupKey {
    BackupKey {
        dataset: "d".into(),
        id: BackupId::parse("20261121T020000Z-full").unwrap(),
    }
}

fn path(name: &str) -> String {
    format!("{}/{name}", layout::backup_dir(HOST, "d", &key().id))
}

fn corrupt_c2() -> Corrupt {
    [(key(), [("c".to_string(), [2u64].into())].into())].into()
}

#[tokio::test]
async fn plan_names_each_gap_with_good_sources_only() {
    let s = Setup::new();
    s.damage();
    let (catalog, surveys) = s.scan(&corrupt_c2()).await;
    let p = plan(&catalog, &surveys, &Mode::All);
    let summary: Vec<(u64, Vec<String>, Vec<String>)> = p
        .copies
        .iter()
        .map(|c| (c.index, c.sources.clone(), c.dests.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, vec!["b".into(), "c".into()], vec!["a".into()]),
            (1, vec!["a".into(), "c".into()], vec!["b".into()]),
            (2, vec!["b".into()], vec!["a".into(), "c".into()]),
        ]
    );
    assert_eq!(p.manifests.len(), 1);
    assert_eq!(p.manifests[0].dests, vec!["a".to_string()]);
    assert!(p.unfillable.is_empty());
    assert_eq!(p.bytes(), 4 + 4 + 2 * 2);
}

#[tokio::test]
async fn repair_plans_for_the_named_provider_only() {
    let s = Setup::new();
    s.damage();
    let (catalog, surveys) = s.scan(&corrupt_c2()).await;
    let p = plan(&catalog, &surveys, &Mode::Repair("c".into()));
    assert_eq!(p.copies.len(), 1);
    assert_eq!(p.copies[0].dests, vec!["c".to_string()]);
    assert!(p.manifests.is_empty(), "c's manifest is fine");
}

#[tokio::test]
async fn sync_repairs_every_kind_of_damage_and_writes_manifests_last() {
    let s = Setup::new();
    s.damage();
    let report = s.sync(&Mode::All, &corrupt_c2()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for m in &s.mems[..3] {
        for (i, data) in SHARDS.iter().enumerate() {
            assert_eq!(
                m.object(&s.shard(i)).unwrap(),
                *data,
                "{} shard {i}",
                m.name()
            );
        }
        assert!(m.object(&path(MANIFEST)).is_some());
    }
    let ops = s.mem("a").ops();
    assert_eq!(
        ops.last().unwrap(),
        &format!("put {}", path(MANIFEST)),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 3, "two shards and the manifest: {ops:?}");
    assert_eq!(s.mem("b").ops(), vec![format!("put {}", s.shard(1))]);
    assert_eq!(report.copied.len(), 5);
    assert_eq!(
        report.bytes,
        4 + 4 + 2 + 2 + s.manifest.to_json().len() as u64
    );
    // Everything whole now: nothing more to do.
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    assert!(surveys.iter().all(|(_, f)| !f.has_gaps()));
    assert!(plan(&catalog, &surveys, &Mode::All).is_empty());
}

#[tokio::test]
async fn a_corrupt_source_is_skipped_and_never_spread() {
    let s = Setup::new();
    // a misses shard 2; b's copy is corrupt (not known: no deep check), c's is good.
    s.mem("a").remove_object(&s.shard(2));
    s.mem("b")
        .set_object(&s.shard(2), Bytes::from_static(b"iX"));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.copied.len(), 1);
    assert_eq!(report.copied[0].from, "c");
    assert_eq!(s.mem("a").object(&s.shard(2)).unwrap(), SHARDS[2]);
}

#[tokio::test]
async fn a_listed_hash_mismatch_is_repaired_by_a_plain_sync_from_a_good_copy() {
    let s = Setup::new();
    // b's shard 1 has the right size but other bytes; no deep check, only listed hashes.
    s.mem("b")
        .set_object(&s.shard(1), Bytes::from_static(b"eXgh"));
    let catalog = Catalog::scan_hashed(&s.providers(), HOST, None).await;
    let surveys = gaps::survey(&s.cfg, &catalog, &Corrupt::new());
    let b = surveys[0].1.provider("b").unwrap();
    assert_eq!(b.corrupt_shards, vec![1], "{b:#?}");
    let p = plan(&catalog, &surveys, &Mode::All);
    let report = execute(
        p,
        &s.providers(),
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.copied.len(),
        1,
        "only that object: {:?}",
        report.copied
    );
    assert_eq!(report.copied[0].to, "b");
    assert_eq!(s.mem("b").object(&s.shard(1)).unwrap(), SHARDS[1]);
    assert!(s.mem("a").ops().iter().all(|o| !o.starts_with("put")));
}

#[tokio::test]
async fn a_shard_bad_everywhere_is_reported_and_not_copied() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(2));
    s.mem("b")
        .set_object(&s.shard(2), Bytes::from_static(b"iX"));
    s.mem("c")
        .set_object(&s.shard(2), Bytes::from_static(b"Xj"));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(s.mem("a").ops().is_empty(), "nothing written to a");
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    let f = &report.failed[0];
    assert_eq!(
        (f.to.as_str(), f.object.as_str()),
        ("a", shard_name(2, 8).as_str())
    );
    assert!(
        f.error.contains("corrupt") && f.error.contains("20261121T020000Z-full"),
        "{}",
        f.error
    );
    assert!(s.mem("b").ops().is_empty() && s.mem("c").ops().is_empty());
}

#[tokio::test]
async fn known_corrupt_everywhere_is_unfillable() {
    let s = Setup::new();
    let corrupt: Corrupt = [(
        key(),
        ["a", "b", "c"]
            .iter()
            .map(|p| (p.to_string(), [1u64].into()))
            .collect(),
    )]
    .into();
    let report = s.sync(&Mode::All, &corrupt).await;
    assert_eq!(report.failed.len(), 3);
    assert!(report.failed[0]
        .error
        .contains("no provider holds a good copy"));
    assert!(report.failed[0].error.contains(&shard_name(1, 4)));
    assert!(s.mems.iter().all(|m| m.ops().is_empty()));
}

#[tokio::test]
async fn a_failing_server_side_copy_falls_back_to_copying_through() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(0));
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &Mode::All);
    let mut opts = s.options();
    for n in ["a", "b", "c"] {
        opts.remotes.insert(
            n.into(),
            RemoteId {
                backend: Some("same".into()),
                root: format!("root-of-{n}"),
            },
        );
    }
    let report = execute(
        p,
        &s.providers(),
        &opts,
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(!report.copied[0].server_side);
    assert_eq!(s.mem("a").object(&s.shard(0)).unwrap(), SHARDS[0]);
}

#[tokio::test]
async fn a_truncated_upload_is_caught_by_the_listing_and_no_manifest_follows() {
    let s = Setup::new();
    let a = s.mem("a");
    a.remove_object(&s.shard(1));
    a.remove_object(&path(MANIFEST));
    // A provider that stores only part of what it is given, like `rclone rcat` killed mid-way.
    struct Cut(Arc<MemoryProvider>);
    impl Provider for Cut {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn put<'a>(
            &'a self,
            path: &'a str,
            data: Bytes,
            p: Option<ProgressFn>,
        ) -> futures::future::BoxFuture<'a, Result<(), ProviderError>> {
            self.0.put(path, data.slice(..1), p)
        }
        fn get<'a>(
            &'a self,
            path: &'a str,
            limit: u64,
        ) -> futures::future::BoxFuture<'a, Result<Bytes, ProviderError>> {
            self.0.get(path, limit)
        }
        fn list<'a>(
            &'a self,
            dir: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<crate::provider::ObjectInfo>, ProviderError>>
        {
            self.0.list(dir)
        }
        fn delete<'a>(
            &'a self,
            path: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), ProviderError>> {
            self.0.delete(path)
        }
        fn about(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<crate::provider::Usage, ProviderError>> {
            self.0.about()
        }
    }
    let mut providers = s.providers();
    providers[0] = Arc::new(Cut(a.clone()));
    let catalog = Catalog::scan(&providers, HOST, None).await;
    let surveys = gaps::survey(&s.cfg, &catalog, &Corrupt::new());
    let p = plan(&catalog, &surveys, &Mode::All);
    let report = execute(
        p,
        &providers,
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.copied.is_empty(), "{:?}", report.copied);
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert!(report.failed[0].error.contains("holds 1 bytes, not 4"));
    assert!(report.failed[1].error.contains("manifest not written"));
    assert!(a.object(&path(MANIFEST)).is_none());
}

#[tokio::test]
async fn unfinished_backups_get_their_shards_but_no_manifest() {
    let s = Setup::new();
    for m in &s.mems[..3] {
        m.remove_object(&path(MANIFEST));
    }
    s.mem("b").remove_object(&s.shard(0));
    s.mem("c").remove_object(&s.shard(0));
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(s.mem("b").object(&s.shard(0)).unwrap(), SHARDS[0]);
    assert_eq!(s.mem("c").object(&s.shard(0)).unwrap(), SHARDS[0]);
    assert!(s.mems.iter().all(|m| m.object(&path(MANIFEST)).is_none()));
}

#[tokio::test]
async fn migration_copies_verifies_and_only_then_removes_the_source() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(1)); // a lacks one: d gets it from b
    let mode = Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    };
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &mode);
    assert!(p.copies.iter().all(|c| c.dests == vec!["d".to_string()]));
    assert_eq!(p.copies[0].sources[0], "a", "the source comes first");
    let report = execute(
        p,
        &s.providers(),
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        s.mems[..3].iter().all(|m| m.ops().is_empty()),
        "only d is written to"
    );
    let (a, d): (DynProvider, DynProvider) = (s.mem("a").clone(), s.mem("d").clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let limits = s.options().limits;
    let cancel = CancellationToken::new();
    let check = verify_migration(&catalog, &surveys, &a, &d, limits, &progress, &cancel)
        .await
        .unwrap();
    assert_eq!(check.verified, vec![key()]);
    assert!(check.failed.is_empty());
    for (i, data) in SHARDS.iter().enumerate() {
        assert_eq!(s.mem("d").object(&s.shard(i)).unwrap(), *data);
    }

    // Damage at the destination is caught by the hash check.
    s.mem("d")
        .set_object(&s.shard(0), Bytes::from_static(b"abcX"));
    let check = verify_migration(&catalog, &surveys, &a, &d, limits, &progress, &cancel)
        .await
        .unwrap();
    assert!(check.verified.is_empty());
    assert!(
        check.failed[0].error.contains("SHA-256"),
        "{:?}",
        check.failed
    );

    let (n, errors) = remove_source(&catalog, &a, &[key()], 2, &cancel)
        .await
        .unwrap();
    assert!(errors.is_empty());
    assert_eq!(n, 3, "a's two shards and its manifest");
    let ops = s.mem("a").ops();
    assert_eq!(
        ops[0],
        format!("delete {}", path(MANIFEST)),
        "manifest first: {ops:?}"
    );
    assert!(s.mem("a").paths().is_empty());
}

#[tokio::test]
async fn migration_of_an_unfinished_backup_takes_every_shard_and_compares_with_the_source() {
    let s = Setup::new();
    for m in &s.mems[..3] {
        m.remove_object(&path(MANIFEST));
    }
    let mode = Mode::Migrate {
        from: "a".into(),
        to: "d".into(),
    };
    let (catalog, surveys) = s.scan(&Corrupt::new()).await;
    let p = plan(&catalog, &surveys, &mode);
    // The last shard (2 bytes, shorter than the 4-byte shard size) has no provable length but
    // a migration takes it anyway.
    assert_eq!(p.copies.len(), 3, "{:?}", p.copies);
    assert!(p.manifests.is_empty());
    execute(
        p,
        &s.providers(),
        &s.options(),
        Arc::new(NoProgress),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let (a, d): (DynProvider, DynProvider) = (s.mem("a").clone(), s.mem("d").clone());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let check = verify_migration(
        &catalog,
        &surveys,
        &a,
        &d,
        s.options().limits,
        &progress,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(check.verified, vec![key()], "{:?}", check.failed);
}

#[test]
fn remote_names_decide_server_side_copies() {
    assert_eq!(remote_name("b2:bucket/x").as_deref(), Some("b2"));
    assert_eq!(remote_name("b2:").as_deref(), Some("b2"));
    assert_eq!(
        remote_name(":webdav,url='http://127.0.0.1:8080':").as_deref(),
        Some(":webdav,url='http://127.0.0.1:8080'")
    );
    assert_eq!(
        remote_name(":s3,provider=AWS:bucket/x").as_deref(),
        Some(":s3,provider=AWS")
    );
    assert_eq!(remote_name("/srv/offsite"), None);
    assert_eq!(remote_name("/srv/a:b"), None);
    assert_eq!(remote_name(":local:/mnt/usb"), None);
    assert_eq!(remote_name("relative/dir"), None);

    let pc = |name: &str, remote: &str, flags: &[&str]| crate::config::ProviderConfig {
        name: name.into(),
        remote: remote.into(),
        enabled: true,
        priority: 1,
        bwlimit: None,
        flags: flags.iter().map(|s| s.to_string()).collect(),
        list_hashes: crate::config::ListHashes::Never,
    };
    let opts = Options {
        host: HOST.into(),
        limits: Limits {
            shards_in_flight: 1,
            concurrency: 1,
        },
        remotes: [
            pc("x", "s3:bucket/x", &[]),
            pc("y", "s3:bucket/y", &[]),
            pc("z", "s3:bucket/z", &["--s3-acl", "private"]),
            pc("l1", "/mnt/a", &[]),
            pc("l2", "/mnt/b", &[]),
        ]
        .iter()
        .map(|p| (p.name.clone(), RemoteId::of(p)))
        .collect(),
    };
    assert_eq!(opts.route("x", "y"), Some("s3:bucket/x"));
    assert_eq!(opts.route("x", "z"), None, "different flags");
    assert_eq!(
        opts.route("l1", "l2"),
        None,
        "local disks copy through memory"
    );
    assert_eq!(opts.route("x", "unknown"), None);
}

#[tokio::test]
async fn provider_errors_during_upload_are_failures_not_aborts() {
    let s = Setup::new();
    s.mem("a").remove_object(&s.shard(0));
    s.mem("a").remove_object(&s.shard(1));
    s.mem("a").inject(Fault {
        op: "put",
        path_contains: shard_name(0, 0),
        kind: crate::error::ErrorKind::Permanent,
        times: u32::MAX,
    });
    let report = tokio::time::timeout(Duration::from_secs(10), s.sync(&Mode::All, &Corrupt::new()))
        .await
        .unwrap();
    assert_eq!(report.copied.len(), 1, "shard 1 still arrives");
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].error.contains("injected"));
}

#[tokio::test]
async fn a_source_that_fails_is_dropped_and_the_others_serve_the_rest() {
    let s = Setup::new();
    // c lost everything; a, the first source in priority order, is dead.
    for i in 0..SHARDS.len() {
        s.mem("c").remove_object(&s.shard(i));
    }
    s.mem("a").inject(Fault {
        op: "get",
        path_contains: String::new(),
        kind: crate::error::ErrorKind::Transient,
        times: u32::MAX,
    });
    let report = s.sync(&Mode::All, &Corrupt::new()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        report.copied.iter().all(|c| c.from == "b"),
        "{:?}",
        report.copied
    );
    // Copies run two at a time: at most the first two reads hit a before it is dropped.
    let hits = s.mem("a").faulted();
    assert!((1..=2).contains(&hits), "a was tried {hits} times");
}
