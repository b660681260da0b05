//! Unit tests of sync with in-memory providers: one backup of three shards on a, b and c.

mod encoded;
mod erasure;
mod execute;
mod migrate;
mod plan;
mod run;

use super::*;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::verify::Limits;
use crate::error::ProviderError;
use crate::gaps::BackupFindings;
use crate::gaps::{self, Corrupt};
use crate::layout;
use crate::layout::MANIFEST;
use crate::layout::{shard_name, BackupId};
use crate::manifest::sample;
use crate::progress::NoProgress;
use crate::progress::Progress;
use crate::provider::{DynProvider, ProgressFn};
use crate::provider::{Fault, MemoryProvider, Provider};
use bytes::Bytes;
use std::collections::BTreeMap;
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
    /// Each shard's stored bytes (the plaintext unless [`Setup::encoded`]).
    stored: Vec<Bytes>,
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
                m.set_object(
                    &path(&s.name(Default::default())),
                    Bytes::from_static(SHARDS[i]),
                );
            }
            m.set_object(&path(MANIFEST), Bytes::from(manifest.to_json()));
        }
        Setup {
            _dir,
            cfg,
            mems,
            manifest,
            stored: SHARDS.iter().map(|s| Bytes::from_static(s)).collect(),
        }
    }

    /// The same backup compressed and encrypted (`.zst.age`), as a NAS without the identity
    /// finds it.
    fn encoded() -> Setup {
        let (_dir, cfg) = config();
        let (manifest, stored) = crate::gaps::fixture::encoded(&SHARDS);
        let mems: Vec<Arc<MemoryProvider>> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| Arc::new(MemoryProvider::new(n)))
            .collect();
        for m in &mems[..3] {
            crate::gaps::fixture::store(m, &manifest, &stored);
        }
        Setup {
            _dir,
            cfg,
            mems,
            manifest,
            stored,
        }
    }

    fn mem(&self, name: &str) -> &Arc<MemoryProvider> {
        self.mems.iter().find(|m| m.name() == name).unwrap()
    }

    fn providers(&self) -> Vec<DynProvider> {
        self.mems.iter().map(|m| m.clone() as DynProvider).collect()
    }

    fn shard(&self, i: usize) -> String {
        path(&self.manifest.object(&self.manifest.shards[i]))
    }

    async fn scan(&self, corrupt: &Corrupt) -> (Catalog, Vec<(BackupKey, BackupFindings)>) {
        let catalog = Catalog::scan(&self.providers(), HOST, None).await;
        let surveys = gaps::survey(&self.cfg, &catalog, corrupt);
        (catalog, surveys)
    }

    fn options(&self) -> Options {
        Options {
            spool_dir: None,
            host: HOST.into(),
            limits: Limits {
                shards_in_flight: 2,
                concurrency: 2,
            },
            remotes: BTreeMap::new(),
        }
    }

    async fn sync(&self, mode: &Mode, corrupt: &Corrupt) -> SyncReport {
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
