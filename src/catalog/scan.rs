//! [`Catalog::scan`]: the I/O around [`group`]. Lists every provider once, refuses manifests
//! the listings show too large, then fetches the others (at most [`MANIFEST_FETCHES`] at
//! once) and checks each is its backup's.

use super::{
    group, BackupEntry, BackupKey, Catalog, MANIFEST_BASE, MANIFEST_FETCHES, MANIFEST_LIMIT,
    MANIFEST_PER_SHARD,
};
use crate::error::ProviderError;
use crate::layout;
use crate::manifest::Manifest;
use crate::provider::{DynProvider, ObjectInfo};
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;

/// Every provider's listing: provider name and its objects.
type Listings = Vec<(String, Vec<ObjectInfo>)>;

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
        let mut backups = group(&listings, dataset);
        refuse_oversized_manifests(&mut backups);
        let wanted = manifests_to_fetch(&backups, providers);
        let fetched: Vec<_> = stream::iter(wanted)
            .map(|(k, p, limit)| async move {
                let m = fetch_manifest(host, &k, &p, limit).await;
                (k, p.name().to_string(), m)
            })
            .buffer_unordered(MANIFEST_FETCHES)
            .collect()
            .await;
        for (k, p, m) in fetched {
            if let Err(e) = &m {
                tracing::warn!("provider {p}: manifest of {}/{}: {e}", k.dataset, k.id);
            }
            backups
                .get_mut(&k)
                .expect("key came from backups")
                .manifests
                .insert(p, m);
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

/// Each (backup, provider listing its manifest, size limit) whose manifest is not yet
/// settled (refused as oversized).
fn manifests_to_fetch(
    backups: &BTreeMap<BackupKey, BackupEntry>,
    providers: &[DynProvider],
) -> Vec<(BackupKey, DynProvider, u64)> {
    let mut wanted = Vec::new();
    for (k, e) in backups {
        let limit = manifest_limit(e);
        for p in providers {
            let listed = e
                .objects
                .get(p.name())
                .is_some_and(|o| o.contains_key(layout::MANIFEST));
            if listed && !e.manifests.contains_key(p.name()) {
                wanted.push((k.clone(), p.clone(), limit));
            }
        }
    }
    wanted
}

/// Downloads and parses backup `k`'s manifest from `p`, at most `limit` bytes (the listed
/// size may lie), and checks it is this backup's.
async fn fetch_manifest(
    host: &str,
    k: &BackupKey,
    p: &DynProvider,
    limit: u64,
) -> Result<Manifest, String> {
    let path = format!(
        "{}/{}",
        layout::backup_dir(host, &k.dataset, &k.id),
        layout::MANIFEST
    );
    let bytes = p.get(&path, limit).await.map_err(|e| e.to_string())?;
    let m = Manifest::from_json(&bytes)?;
    if m.backup_id != k.id.to_string() || m.dataset != k.dataset {
        return Err(format!(
            "manifest is for {}/{}, not this backup",
            m.dataset, m.backup_id
        ));
    }
    Ok(m)
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

    #[test]
    fn an_oversized_manifest_is_refused_from_the_listing() {
        let listings = vec![(
            "a".to_string(),
            vec![obj(
                "tank%2Fx/20261121T020000Z-full/manifest.json",
                MANIFEST_LIMIT + 1,
            )],
        )];
        let mut g = group(&listings, None);
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
            let mut g = group(&[("a".to_string(), objs)], None);
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
