//! What the providers hold: one recursive listing per provider, grouped into backups, plus
//! their manifests. The providers' listings are the truth; nothing here trusts local state.
//!
//! [`group`] is pure (listings in, backups out); [`Catalog::scan`] does the I/O around it.

use crate::error::ProviderError;
use crate::layout::{self, BackupId};
use crate::manifest::Manifest;
use crate::provider::{DynProvider, ObjectInfo};
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;

/// How many manifests are fetched at once.
const MANIFEST_FETCHES: usize = 8;
/// A manifest larger than this is not one of ours.
pub const MANIFEST_LIMIT: u64 = 256 << 20;

/// The objects one provider holds for one backup: object name to size.
pub type Objects = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupKey {
    pub dataset: String,
    pub id: BackupId,
}

/// One backup as seen across providers.
#[derive(Debug, Clone, Default)]
pub struct BackupEntry {
    /// Provider name to the objects it holds for this backup (absent: holds nothing).
    pub objects: BTreeMap<String, Objects>,
    /// Provider name to the manifest it returned (or why it could not be used).
    pub manifests: BTreeMap<String, Result<Manifest, String>>,
}

impl BackupEntry {
    /// The manifest to trust: the first good one in provider order. Disagreeing manifests are
    /// reported by [`BackupEntry::manifest_conflicts`].
    pub fn manifest<'a>(&'a self, order: &'a [String]) -> Option<(&'a str, &'a Manifest)> {
        order.iter().find_map(|p| match self.manifests.get(p) {
            Some(Ok(m)) => Some((p.as_str(), m)),
            _ => None,
        })
    }

    /// Whether every shard of `m` is on at least one provider with the right size, so that a
    /// restore can find each of them somewhere.
    pub fn restorable(&self, m: &Manifest) -> bool {
        m.shards.iter().all(|s| {
            let name = s.name();
            self.objects
                .values()
                .any(|objs| objs.get(&name) == Some(&s.length))
        })
    }

    /// Providers whose manifest does not parse or disagrees with the trusted one.
    pub fn manifest_conflicts(&self, order: &[String]) -> Vec<(String, String)> {
        let trusted = self.manifest(order).map(|(_, m)| m);
        let mut out = Vec::new();
        for (p, m) in &self.manifests {
            match (m, trusted) {
                (Err(e), _) => out.push((p.clone(), e.clone())),
                (Ok(m), Some(t)) if m.shards != t.shards || m.total_bytes != t.total_bytes => out.push((
                    p.clone(),
                    "its manifest disagrees with the other providers' (different shards); it is not used".into(),
                )),
                _ => {}
            }
        }
        out
    }
}

/// Groups `<dataset-key>/<backup-id>/<object>` listings into backups. Objects that do not fit
/// the layout are ignored.
pub fn group(
    listings: &[(String, Vec<ObjectInfo>)],
    dataset_filter: Option<&str>,
) -> BTreeMap<BackupKey, BackupEntry> {
    let mut out: BTreeMap<BackupKey, BackupEntry> = BTreeMap::new();
    for (provider, objects) in listings {
        for o in objects {
            let mut parts = o.path.splitn(3, '/');
            let (Some(key), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Some(dataset), Some(id)) = (layout::dataset_name(key), BackupId::parse(id)) else {
                continue;
            };
            if dataset_filter.is_some_and(|d| d != dataset) {
                continue;
            }
            out.entry(BackupKey { dataset, id })
                .or_default()
                .objects
                .entry(provider.clone())
                .or_default()
                .insert(name.to_string(), o.size);
        }
    }
    out
}

impl Catalog {
    /// The restorable backups of `dataset` with their trusted manifests, oldest first.
    pub fn restorable(&self, dataset: &str) -> Vec<(&BackupId, &Manifest)> {
        self.backups
            .iter()
            .filter(|(k, _)| k.dataset == dataset)
            .filter_map(|(k, e)| {
                e.manifest(&self.order)
                    .filter(|(_, m)| e.restorable(m))
                    .map(|(_, m)| (&k.id, m))
            })
            .collect()
    }

    /// Why the chain ending at `id` does not resolve to a full backup, if it does not.
    pub fn broken_link(&self, dataset: &str, id: &BackupId) -> Option<String> {
        let good = self.restorable(dataset);
        let mut cur = id.clone();
        for _ in 0..=good.len() {
            let Some((_, m)) = good.iter().find(|(i, _)| **i == cur) else {
                return Some(format!(
                    "backup {cur} of the chain is missing or not restorable"
                ));
            };
            match (&m.parent, m.kind) {
                (_, crate::layout::BackupKind::Full) => return None,
                (Some(p), _) => match BackupId::parse(&p.backup_id) {
                    Some(pid) => cur = pid,
                    None => {
                        return Some(format!(
                            "backup {cur} names an invalid parent {:?}",
                            p.backup_id
                        ))
                    }
                },
                (None, _) => return Some(format!("incremental backup {cur} names no parent")),
            }
        }
        Some(format!("the chain of {id} loops"))
    }
}

pub struct Catalog {
    pub host: String,
    /// Providers in priority order.
    pub order: Vec<String>,
    pub backups: BTreeMap<BackupKey, BackupEntry>,
    /// Providers whose listing failed.
    pub unreachable: BTreeMap<String, ProviderError>,
}

impl Catalog {
    /// Lists every provider once (in parallel) and fetches the manifests found.
    pub async fn scan(providers: &[DynProvider], host: &str, dataset: Option<&str>) -> Catalog {
        let dir = match dataset {
            Some(d) => layout::dataset_dir(host, d),
            None => host.to_string(),
        };
        let prefix = match dataset {
            Some(d) => format!("{}/", layout::dataset_key(d)),
            None => String::new(),
        };
        let listed = futures::future::join_all(providers.iter().map(|p| {
            let dir = dir.clone();
            async move { (p.name().to_string(), p.list(&dir).await) }
        }))
        .await;
        let mut listings = Vec::new();
        let mut unreachable = BTreeMap::new();
        for (name, r) in listed {
            match r {
                Ok(objs) => listings.push((
                    name,
                    objs.into_iter()
                        .map(|o| ObjectInfo {
                            path: format!("{prefix}{}", o.path),
                            size: o.size,
                        })
                        .collect(),
                )),
                Err(e) => {
                    unreachable.insert(name, e);
                }
            }
        }
        let mut backups = group(&listings, dataset);
        let wanted: Vec<(BackupKey, DynProvider)> = backups
            .iter()
            .flat_map(|(k, e)| {
                providers
                    .iter()
                    .filter(|p| {
                        e.objects
                            .get(p.name())
                            .is_some_and(|o| o.contains_key(layout::MANIFEST))
                    })
                    .map(move |p| (k.clone(), p.clone()))
            })
            .collect();
        let fetched: Vec<_> = stream::iter(wanted)
            .map(|(k, p)| async move {
                let path = format!(
                    "{}/{}",
                    layout::backup_dir(host, &k.dataset, &k.id),
                    layout::MANIFEST
                );
                let m = match p.get(&path, MANIFEST_LIMIT).await {
                    Ok(bytes) => Manifest::from_json(&bytes).and_then(|m| {
                        if m.backup_id != k.id.to_string() || m.dataset != k.dataset {
                            Err(format!(
                                "manifest is for {}/{}, not this backup",
                                m.dataset, m.backup_id
                            ))
                        } else {
                            Ok(m)
                        }
                    }),
                    Err(e) => Err(e.to_string()),
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::shard_name;

    fn obj(path: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            path: path.into(),
            size,
        }
    }

    #[test]
    fn groups_by_dataset_and_backup_and_ignores_strangers() {
        let s0 = shard_name(0, 0);
        let listings = vec![
            (
                "a".to_string(),
                vec![
                    obj(&format!("tank%2Fx/20261121T020000Z-full/{s0}"), 10),
                    obj("tank%2Fx/20261121T020000Z-full/manifest.json", 5),
                    obj("tank%2Fx/not-a-backup/whatever", 1),
                    obj("stray-file", 1),
                ],
            ),
            (
                "b".to_string(),
                vec![obj(&format!("other/20261122T020000Z-incr/{s0}"), 3)],
            ),
        ];
        let g = group(&listings, None);
        assert_eq!(g.len(), 2);
        let tank = g.keys().find(|k| k.dataset == "tank/x").unwrap();
        assert_eq!(tank.id.to_string(), "20261121T020000Z-full");
        assert_eq!(g[tank].objects["a"].len(), 2);
        assert_eq!(group(&listings, Some("other")).len(), 1);
    }
}
