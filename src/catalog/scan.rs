//! [`Catalog::scan`]: the I/O around [`group`]. Lists every provider once, refuses manifests
//! the listings show too large, then fetches the others (the manifests of at most
//! [`MANIFEST_FETCHES`] backups at once, each backup's from its providers in turn, identical
//! copies parsed once) and checks each is its backup's.

use super::{
    group, BackupEntry, BackupKey, Catalog, Listings, MANIFEST_BASE, MANIFEST_FETCHES,
    MANIFEST_LIMIT, MANIFEST_PER_SHARD,
};
use crate::error::ProviderError;
use crate::layout;
use crate::manifest::Manifest;
use crate::provider::{DynProvider, ObjectInfo};
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Catalog {
    /// Lists every provider once (in parallel) and fetches the manifests found.
    pub async fn scan(providers: &[DynProvider], host: &str, dataset: Option<&str>) -> Catalog {
        Self::scan_with(providers, host, dataset, false).await
    }

    /// Like [`Catalog::scan`], with the hashes the providers list cheaply
    /// ([`crate::provider::Provider::list_hashed`]), so gap detection can tell corrupt shards.
    pub async fn scan_hashed(
        providers: &[DynProvider],
        host: &str,
        dataset: Option<&str>,
    ) -> Catalog {
        Self::scan_with(providers, host, dataset, true).await
    }

    async fn scan_with(
        providers: &[DynProvider],
        host: &str,
        dataset: Option<&str>,
        hashes: bool,
    ) -> Catalog {
        let (listings, unreachable) = list_all(providers, host, dataset, hashes).await;
        let mut backups = group(listings, dataset);
        refuse_oversized_manifests(&mut backups);
        let wanted = manifests_to_fetch(&backups, providers);
        let fetched: Vec<_> = stream::iter(wanted)
            .map(|(k, ps, limit)| async move {
                let found = fetch_manifests(host, &k, &ps, limit).await;
                (k, found)
            })
            .buffer_unordered(MANIFEST_FETCHES)
            .collect()
            .await;
        for (k, found) in fetched {
            let entry = backups.get_mut(&k).expect("key came from backups");
            for (p, m) in found {
                if let Err(e) = &m {
                    tracing::warn!("provider {p}: manifest of {}/{}: {e}", k.dataset, k.id);
                }
                entry.manifests.insert_shared(p, m);
            }
        }
        Catalog {
            host: host.to_string(),
            order: providers.iter().map(|p| p.name().to_string()).collect(),
            backups,
            unreachable,
        }
    }
}

/// Lists every provider once, in parallel: the host's folder, or one dataset's. Paths come
/// back relative to the host folder (`<dataset-key>/<backup-id>/<object>`), as [`group`]
/// reads them; failed listings come back apart.
async fn list_all(
    providers: &[DynProvider],
    host: &str,
    dataset: Option<&str>,
    hashes: bool,
) -> (Listings, BTreeMap<String, ProviderError>) {
    let (dir, prefix) = match dataset {
        Some(d) => (
            layout::dataset_dir(host, d),
            format!("{}/", layout::dataset_key(d)),
        ),
        None => (host.to_string(), String::new()),
    };
    let listed = futures::future::join_all(providers.iter().map(|p| {
        let dir = dir.clone();
        async move {
            let listed = if hashes {
                p.list_hashed(&dir).await
            } else {
                p.list(&dir).await
            };
            (p.name().to_string(), listed)
        }
    }))
    .await;
    let mut listings = Vec::new();
    let mut unreachable = BTreeMap::new();
    for (name, r) in listed {
        match r {
            Ok(objs) => {
                let objs = objs
                    .into_iter()
                    .map(|o| ObjectInfo {
                        path: format!("{prefix}{}", o.path),
                        ..o
                    })
                    .collect();
                listings.push((name, objs));
            }
            Err(e) => {
                unreachable.insert(name, e);
            }
        }
    }
    (listings, unreachable)
}

/// Each backup whose manifest some providers list and is not yet settled (refused as
/// oversized): those providers, and the size limit.
fn manifests_to_fetch(
    backups: &BTreeMap<BackupKey, BackupEntry>,
    providers: &[DynProvider],
) -> Vec<(BackupKey, Vec<DynProvider>, u64)> {
    let mut wanted = Vec::new();
    for (k, e) in backups {
        let listing: Vec<DynProvider> = (providers.iter())
            .filter(|p| {
                let listed = e.objects.get(p.name());
                listed.is_some_and(|o| o.contains_key(layout::MANIFEST))
                    && !e.manifests.contains_key(p.name())
            })
            .cloned()
            .collect();
        if !listing.is_empty() {
            wanted.push((k.clone(), listing, manifest_limit(e)));
        }
    }
    wanted
}

/// A manifest as each provider returned it.
type Fetched = Vec<(String, Result<Arc<Manifest>, String>)>;

/// Backup `k`'s manifest from each of `providers` in turn. Bytes another provider returned
/// already (compared by SHA-256) are not parsed again: both share one manifest, so a backup
/// of any size costs one parsed manifest and one download in flight, not one per provider.
async fn fetch_manifests(
    host: &str,
    k: &BackupKey,
    providers: &[DynProvider],
    limit: u64,
) -> Fetched {
    let mut seen: Vec<(String, Result<Arc<Manifest>, String>)> = Vec::new();
    let mut out = Vec::new();
    for p in providers {
        let parsed = match fetch_manifest(host, k, p, limit).await {
            Err(e) => Err(e),
            Ok(bytes) => {
                let digest = crate::hashing::sha256(&bytes);
                match seen.iter().find(|(d, _)| *d == digest) {
                    Some((_, m)) => m.clone(),
                    None => {
                        let m = parse_manifest(k, bytes).await;
                        seen.push((digest, m.clone()));
                        m
                    }
                }
            }
        };
        out.push((p.name().to_string(), parsed));
    }
    out
}

/// Downloads backup `k`'s manifest from `p`, at most `limit` bytes (the listed size may lie).
async fn fetch_manifest(
    host: &str,
    k: &BackupKey,
    p: &DynProvider,
    limit: u64,
) -> Result<bytes::Bytes, String> {
    let path = format!(
        "{}/{}",
        layout::backup_dir(host, &k.dataset, &k.id),
        layout::MANIFEST
    );
    p.get(&path, limit).await.map_err(|e| e.to_string())
}

/// Parses a manifest (on the blocking pool: a large one takes a while) and checks it is
/// backup `k`'s.
async fn parse_manifest(k: &BackupKey, bytes: bytes::Bytes) -> Result<Arc<Manifest>, String> {
    let m = tokio::task::spawn_blocking(move || Manifest::from_json(&bytes))
        .await
        .map_err(|e| format!("manifest does not parse: {e}"))??;
    if m.backup_id != k.id.to_string() || m.dataset != k.dataset {
        return Err(format!(
            "manifest is for {}/{}, not this backup",
            m.dataset, m.backup_id
        ));
    }
    Ok(Arc::new(m))
}

/// The largest manifest this backup's listings justify (see [`MANIFEST_BASE`]): by the shard
/// objects the provider listing the most of them shows, never over [`MANIFEST_LIMIT`].
fn manifest_limit(e: &BackupEntry) -> u64 {
    let shards = e
        .objects
        .values()
        .map(|o| {
            o.keys()
                .filter(|n| layout::parse_shard_name(n).is_some())
                .count() as u64
        })
        .max()
        .unwrap_or(0);
    (MANIFEST_BASE + MANIFEST_PER_SHARD * shards).min(MANIFEST_LIMIT)
}

/// Marks manifests the listings show larger than their backup's [`manifest_limit`] as
/// unusable, so they are never downloaded.
fn refuse_oversized_manifests(backups: &mut BTreeMap<BackupKey, BackupEntry>) {
    for e in backups.values_mut() {
        let limit = manifest_limit(e);
        let oversized: Vec<(String, u64)> = e
            .objects
            .iter()
            .filter_map(|(p, o)| o.get(layout::MANIFEST).map(|&s| (p.clone(), s)))
            .filter(|(_, s)| *s > limit)
            .collect();
        for (p, size) in oversized {
            e.manifests.insert(
                p,
                Err(format!(
                    "manifest is {size} bytes, more than the {limit} bytes a manifest of the {} shard objects listed may be; not downloaded (remove it, then run `offsite sync`)",
                    (limit - MANIFEST_BASE) / MANIFEST_PER_SHARD
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::shard_name;

    fn obj(path: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            path: path.into(),
            size,
            ..ObjectInfo::default()
        }
    }

    #[tokio::test]
    async fn providers_holding_the_same_manifest_share_one_parsed_copy() {
        use crate::gaps::fixture::{encoded, path, store};
        use crate::provider::MemoryProvider;
        let (m, stored) = encoded(&[b"abcd", b"ef"]);
        let mem: Vec<MemoryProvider> = ["a", "b", "c"].map(MemoryProvider::new).into();
        for p in &mem {
            store(p, &m, &stored);
        }
        // c's copy was written by another run: the same stream, other bytes.
        let mut later = m.clone();
        later.created = "2026-12-01T00:00:00Z".into();
        let later = bytes::Bytes::from(later.to_json());
        mem[2].set_object(&path(&m, layout::MANIFEST), later);
        let providers: Vec<DynProvider> = mem.into_iter().map(|p| Arc::new(p) as _).collect();
        let c = Catalog::scan(&providers, &m.host, None).await;
        let e = c.backups.values().next().unwrap();
        let got = |p: &str| e.manifests[p].clone().unwrap();
        assert!(
            Arc::ptr_eq(&got("a"), &got("b")),
            "a and b hold the same bytes"
        );
        assert!(!Arc::ptr_eq(&got("a"), &got("c")));
        assert_eq!(got("c").created, "2026-12-01T00:00:00Z");
        assert_eq!(e.manifest(&c.order).unwrap().1, &*got("a"));
    }

    #[test]
    fn an_oversized_manifest_is_refused_from_the_listing() {
        let listings = vec![(
            "a".to_string(),
            vec![obj(
                "tank%2Fx/20261121T020000Z-full/manifest.json",
                MANIFEST_LIMIT + 1,
            )],
        )];
        let mut g = group(listings, None);
        refuse_oversized_manifests(&mut g);
        let e = g.values().next().unwrap();
        let err = e.manifests["a"].as_ref().unwrap_err();
        assert!(err.contains("not downloaded"), "{err}");
    }

    #[test]
    fn a_manifest_may_grow_with_the_shards_listed_and_no_further() {
        let dir = "tank%2Fx/20261121T020000Z-full";
        let with = |manifest: u64, shards: u64| {
            let mut objs: Vec<ObjectInfo> = (0..shards)
                .map(|i| obj(&format!("{dir}/{}", shard_name(i, i << 26)), 1 << 26))
                .collect();
            objs.push(obj(&format!("{dir}/manifest.json"), manifest));
            let mut g = group(vec![("a".to_string(), objs)], None);
            refuse_oversized_manifests(&mut g);
            g.into_values().next().unwrap().manifests.remove("a")
        };
        // A two-shard backup's manifest of a few KiB is fetched; one of 1 MiB is not.
        assert!(with(4 << 10, 2).is_none());
        let err = with(1 << 20, 2).unwrap().unwrap_err();
        assert!(err.contains("2 shard objects listed"), "{err}");
        // A thousand shards justify a manifest of a few hundred KiB.
        assert!(with(400 << 10, 1000).is_none());
    }
}
