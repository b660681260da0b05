//! What the providers hold: one recursive listing per provider, grouped into backups, plus
//! their manifests. The providers' listings are the truth; nothing here trusts local state.
//!
//! [`group`] is pure (listings in, backups out); [`Catalog::scan`] does the I/O around it.

pub mod ancestors;

use crate::error::ProviderError;
use crate::layout::{self, BackupId};
use crate::manifest::{same_stream, Manifest};
use crate::provider::{DynProvider, ObjectInfo};
use ancestors::{ancestors, Link, WalkEnd};
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;

/// How many manifests are fetched at once.
const MANIFEST_FETCHES: usize = 8;
/// A manifest larger than this is not one of ours (about 300 bytes per shard: 256 MiB is close
/// to a million shards). Checked from the listing before anything is downloaded.
pub const MANIFEST_LIMIT: u64 = 256 << 20;
/// What a manifest may take besides its shard records, and what one shard record may take (a
/// format-2 record is about 300 bytes). A manifest may be at most
/// `MANIFEST_BASE + MANIFEST_PER_SHARD x (shard objects the listings show for its backup)`, so
/// the manifests offsite holds stay proportional to the listings it already holds: a provider
/// cannot make a `status` of small backups hold gigabytes.
const MANIFEST_BASE: u64 = 64 << 10;
const MANIFEST_PER_SHARD: u64 = 1 << 10;

/// The objects one provider holds for one backup: object name to size.
pub type Objects = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupKey {
    pub dataset: String,
    pub id: BackupId,
}

/// The MD5 and SHA-1 (lower-case hex) a provider's listing gave for an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedHashes {
    pub md5: Option<String>,
    pub sha1: Option<String>,
}

/// One backup as seen across providers.
#[derive(Debug, Clone, Default)]
pub struct BackupEntry {
    /// Provider name to the objects it holds for this backup (absent: holds nothing).
    pub objects: BTreeMap<String, Objects>,
    /// Provider name to object name to the hashes its listing gave, for listings asked for
    /// hashes ([`Catalog::scan_hashed`]); objects listed without any hash are absent.
    pub hashes: BTreeMap<String, BTreeMap<String, ListedHashes>>,
    /// Provider name to the manifest it returned (or why it could not be used).
    pub manifests: BTreeMap<String, Result<Manifest, String>>,
}

/// What the manifests of one backup settle on (see [`BackupEntry::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// The manifest to trust and the first provider (in priority order) holding it.
    Trusted(&'a str, &'a Manifest),
    /// No provider lists a manifest: the backup is unfinished.
    Unfinished,
    /// Manifests are listed but none can be trusted: why, naming the providers.
    Damaged(String),
}

impl BackupEntry {
    /// The manifest to trust: see [`BackupEntry::resolve`].
    pub fn manifest<'a>(&'a self, order: &'a [String]) -> Option<(&'a str, &'a Manifest)> {
        match self.resolve(order) {
            Resolution::Trusted(p, m) => Some((p, m)),
            _ => None,
        }
    }

    /// Settles which manifest to trust. When every good manifest describes the same stream,
    /// that one (from the first provider in `order`). When they disagree, priority never
    /// decides: the one version that agrees with the shard objects the listings show is
    /// trusted; if none or several do, the backup is [`Resolution::Damaged`], naming the
    /// providers. Manifests that fail their checksum or do not parse are never candidates.
    pub fn resolve<'a>(&'a self, order: &'a [String]) -> Resolution<'a> {
        let good: Vec<(&str, &Manifest)> = order
            .iter()
            .filter_map(|p| match self.manifests.get(p) {
                Some(Ok(m)) => Some((p.as_str(), m)),
                _ => None,
            })
            .collect();
        let mut versions: Vec<Vec<(&str, &Manifest)>> = Vec::new();
        for (p, m) in good {
            match versions.iter_mut().find(|v| same_stream(v[0].1, m)) {
                Some(v) => v.push((p, m)),
                None => versions.push(vec![(p, m)]),
            }
        }
        let listed = self
            .objects
            .values()
            .any(|o| o.contains_key(layout::MANIFEST));
        match versions.len() {
            0 if self.manifests.is_empty() && !listed => return Resolution::Unfinished,
            0 => {
                let names: Vec<&str> = self.manifests.keys().map(String::as_str).collect();
                let why: Vec<String> = self
                    .manifests
                    .iter()
                    .map(|(p, m)| format!("provider {p}: {}", m.as_ref().err().map_or("?", |e| e)))
                    .collect();
                return Resolution::Damaged(format!(
                    "manifest unreadable or damaged on {} ({})",
                    names.join(", "),
                    why.join("; ")
                ));
            }
            // One version, but a provider lists the shard that would follow its last one: it
            // was cut short (a truncated copy, or the only readable one), so it is not trusted.
            1 if self.lists_shard_after(versions[0][0].1) => {
                let holders: Vec<&str> = versions[0].iter().map(|(p, _)| *p).collect();
                return Resolution::Damaged(format!(
                    "the manifest on {} ends before a shard object the providers list (cut short?); not trusted",
                    holders.join(", ")
                ));
            }
            1 => return Resolution::Trusted(versions[0][0].0, versions[0][0].1),
            _ => {}
        }
        let agreeing: Vec<&Vec<(&str, &Manifest)>> = versions
            .iter()
            .filter(|v| self.agrees_with_listings(v[0].1))
            .collect();
        if let [v] = agreeing[..] {
            return Resolution::Trusted(v[0].0, v[0].1);
        }
        let groups: Vec<String> = versions
            .iter()
            .map(|v| v.iter().map(|(p, _)| *p).collect::<Vec<_>>().join("+"))
            .collect();
        Resolution::Damaged(format!(
            "the providers hold manifests that disagree ({}), and {} agree with the shard objects listed; not settled by priority",
            groups.join(" vs "),
            if agreeing.is_empty() { "none" } else { "several" }
        ))
    }

    /// Whether `m` agrees with the listings: every shard object any provider lists is one of
    /// its shards, and each of its shards is listed somewhere at its length.
    pub fn agrees_with_listings(&self, m: &Manifest) -> bool {
        let names: BTreeMap<String, u64> = m.shards.iter().map(|s| (s.name(), s.length)).collect();
        self.names_every_listed_shard(m)
            && names
                .iter()
                .all(|(n, len)| self.objects.values().any(|objs| objs.get(n) == Some(len)))
    }

    /// Whether a provider lists a shard starting where `m`'s stream ends, with the next index:
    /// the mark of a manifest cut short (a stray object elsewhere is only "unexpected").
    fn lists_shard_after(&self, m: &Manifest) -> bool {
        let next = (m.shards.len() as u64, m.total_bytes);
        self.objects.values().any(|objs| {
            objs.keys()
                .any(|n| layout::parse_shard_name(n) == Some(next))
        })
    }

    /// Whether every shard object any provider lists is one of `m`'s shards.
    fn names_every_listed_shard(&self, m: &Manifest) -> bool {
        let names: std::collections::BTreeSet<String> = m.shards.iter().map(|s| s.name()).collect();
        self.objects.values().all(|objs| {
            objs.keys()
                .filter(|n| layout::parse_shard_name(n).is_some())
                .all(|n| names.contains(n))
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

    /// Providers whose manifest does not parse or is not the trusted one (all of them when
    /// none is trusted).
    pub fn manifest_conflicts(&self, order: &[String]) -> Vec<(String, String)> {
        let trusted = self.manifest(order).map(|(_, m)| m);
        let mut out = Vec::new();
        for (p, m) in &self.manifests {
            match (m, trusted) {
                (Err(e), _) => out.push((p.clone(), e.clone())),
                (Ok(m), Some(t)) if !same_stream(m, t) => out.push((
                    p.clone(),
                    "its manifest disagrees with the other providers' and with the shard objects listed; it is not used".into(),
                )),
                (Ok(_), None) => out.push((
                    p.clone(),
                    "its manifest disagrees with another provider's and neither is trusted".into(),
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
            let entry = out.entry(BackupKey { dataset, id }).or_default();
            entry
                .objects
                .entry(provider.clone())
                .or_default()
                .insert(name.to_string(), o.size);
            if o.md5.is_some() || o.sha1.is_some() {
                let h = ListedHashes {
                    md5: o.md5.clone(),
                    sha1: o.sha1.clone(),
                };
                entry
                    .hashes
                    .entry(provider.clone())
                    .or_default()
                    .insert(name.to_string(), h);
            }
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
        let mut walk = ancestors(id.clone(), |at: &BackupId| {
            let (_, m) = good.iter().find(|(i, _)| *i == at)?;
            let link = match (&m.parent, m.kind) {
                (_, layout::BackupKind::Full) | (None, _) => Link::Root,
                (Some(p), _) => BackupId::parse(&p.backup_id).map_or(Link::Invalid, Link::Parent),
            };
            Some((*m, link))
        });
        let last = walk.by_ref().last();
        match (walk.end()?, last) {
            (WalkEnd::Missing(at), _) => Some(format!(
                "backup {at} of the chain is missing or not restorable"
            )),
            (WalkEnd::Root, Some(m)) if m.kind != layout::BackupKind::Full => Some(format!(
                "incremental backup {} names no parent",
                m.backup_id
            )),
            (WalkEnd::Root, _) => None,
            (WalkEnd::Invalid, m) => Some(format!(
                "backup {} names an invalid parent {:?}",
                m.map_or("?", |m| &m.backup_id),
                m.and_then(|m| m.parent.as_ref())
                    .map_or("", |p| &p.backup_id)
            )),
            (WalkEnd::NotOlder(_), _) => Some(format!(
                "the chain of {id} loops or names a parent not older than its child"
            )),
        }
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
                Ok(objs) => listings.push((
                    name,
                    objs.into_iter()
                        .map(|o| ObjectInfo {
                            path: format!("{prefix}{}", o.path),
                            ..o
                        })
                        .collect(),
                )),
                Err(e) => {
                    unreachable.insert(name, e);
                }
            }
        }
        let mut backups = group(&listings, dataset);
        refuse_oversized_manifests(&mut backups);
        let wanted: Vec<(BackupKey, DynProvider, u64)> = backups
            .iter()
            .flat_map(|(k, e)| {
                let limit = manifest_limit(e);
                providers
                    .iter()
                    .filter(|p| {
                        e.objects
                            .get(p.name())
                            .is_some_and(|o| o.contains_key(layout::MANIFEST))
                            && !e.manifests.contains_key(p.name())
                    })
                    .map(move |p| (k.clone(), p.clone(), limit))
            })
            .collect();
        let fetched: Vec<_> = stream::iter(wanted)
            .map(|(k, p, limit)| async move {
                let path = format!(
                    "{}/{}",
                    layout::backup_dir(host, &k.dataset, &k.id),
                    layout::MANIFEST
                );
                // The per-backup limit, also while downloading: the listed size may lie.
                let m = match p.get(&path, limit).await {
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

    /// Three shards held whole by a and b, each with the same good manifest.
    fn held_by_two() -> (BackupEntry, Manifest) {
        let m = crate::manifest::sample(&[b"abcd", b"efgh", b"ij"]);
        let mut e = BackupEntry::default();
        for p in ["a", "b"] {
            let objs = e.objects.entry(p.into()).or_default();
            for s in &m.shards {
                objs.insert(s.name(), s.length);
            }
            objs.insert(layout::MANIFEST.into(), 100);
            e.manifests.insert(p.into(), Ok(m.clone()));
        }
        (e, m)
    }

    fn order(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_truncated_manifest_loses_to_the_one_the_listings_agree_with_whatever_the_priority() {
        let (mut e, m) = held_by_two();
        let mut short = m.clone();
        short.shards.truncate(2);
        short.total_bytes = 8;
        e.manifests.insert("a".into(), Ok(short));
        let order = order(&["a", "b"]);
        assert_eq!(e.resolve(&order), Resolution::Trusted("b", &m));
        let conflicts = e.manifest_conflicts(&order);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].0, "a");
    }

    #[test]
    fn disagreeing_manifests_the_listings_cannot_tell_apart_are_damaged_naming_both() {
        let (mut e, m) = held_by_two();
        let mut other = m.clone();
        other.shards[1].sha256 = "0".repeat(64);
        e.manifests.insert("b".into(), Ok(other));
        let Resolution::Damaged(why) = e.resolve(&order(&["a", "b"])) else {
            panic!("settled by priority")
        };
        assert!(why.contains("a vs b") && why.contains("disagree"), "{why}");
        assert_eq!(e.manifest(&order(&["a", "b"])), None);
    }

    #[test]
    fn unreadable_manifests_everywhere_are_damaged_not_unfinished() {
        let (mut e, _) = held_by_two();
        for p in ["a", "b"] {
            e.manifests
                .insert(p.into(), Err("checksum does not match".into()));
        }
        let Resolution::Damaged(why) = e.resolve(&order(&["a", "b"])) else {
            panic!("not damaged")
        };
        assert!(why.contains("unreadable or damaged on a, b "), "{why}");
        assert!(why.contains("provider b: checksum does not match"), "{why}");
        e.manifests.clear();
        for objs in e.objects.values_mut() {
            objs.remove(layout::MANIFEST);
        }
        assert_eq!(e.resolve(&order(&["a", "b"])), Resolution::Unfinished);
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
