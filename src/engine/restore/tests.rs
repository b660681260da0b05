//! The restore engine against in-memory providers: round trips, striping (whole shards and
//! shards read in pieces from several providers), failover, the "no good copy" stop, bounded
//! memory and manifest trouble. The helpers here are shared by the modules under `tests/`.

mod chains;
pub(crate) mod encoded;
mod erasure;
mod failover;
mod plan;
mod window;

use super::*;
use crate::catalog::Catalog;
use crate::engine::chain::{self, Selector};
use crate::error::{ErrorKind, ProviderError};
use crate::layout::{self, BackupId};
use crate::manifest::{hex, ParentRef, FORMAT_VERSION};
use crate::manifest::{Manifest, ShardRecord};
use crate::progress::NoProgress;
use crate::provider::{
    DynProvider, Fault, MemoryProvider, ObjectInfo, ProgressFn, Provider, Usage,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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
            plain_length: None,
            plain_sha256: None,
            pieces: Vec::new(),
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
        encoding: Default::default(),
        recipients: Vec::new(),
        sealed: None,
        erasure: None,
    }
}

fn dir(id: &str) -> String {
    layout::backup_dir(HOST, DATASET, &BackupId::parse(id).unwrap())
}

fn shard_path(id: &str, index: u64, m: &Manifest) -> String {
    format!(
        "{}/{}",
        dir(id),
        m.shards[index as usize].name(Default::default())
    )
}

/// Puts a backup (shards, then manifest) on each of `on`.
fn store(on: &[&MemoryProvider], m: &Manifest, bytes: &[u8]) {
    for p in on {
        for s in &m.shards {
            let body = &bytes[s.offset as usize..(s.offset + s.length) as usize];
            p.set_object(
                &format!("{}/{}", dir(&m.backup_id), s.name(Default::default())),
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
    chain_links(&catalog, DATASET, &sel, whole)
}

async fn restore_to_vec(f: &Fetcher, link: &Link) -> (Vec<u8>, Result<u64>) {
    let mut out = Vec::new();
    let r = f.stream(link, &mut out, &CancellationToken::new()).await;
    (out, r)
}
