//! What the providers hold: one recursive listing per provider, grouped into backups, plus
//! their manifests. The providers' listings are the truth; nothing here trusts local state.
//!
//! [`group`] is pure (listings in, backups out); [`Catalog::scan`] does the I/O around it.

pub mod ancestors;
mod entry;
mod scan;

pub use entry::{BackupEntry, Manifests, Resolution, STALE_PLACEMENT};

use crate::error::ProviderError;
use crate::layout::{self, BackupId};
use crate::manifest::Manifest;
use crate::provider::ObjectInfo;
use ancestors::{ancestors, Link, WalkEnd};
use std::collections::BTreeMap;

/// How many backups' manifests are fetched at once (each backup's from its providers in turn).
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

/// Every provider's listing: provider name and its objects.
pub type Listings = Vec<(String, Vec<ObjectInfo>)>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupKey {
    pub dataset: String,
    pub id: BackupId,
}

/// The MD5 and SHA-1 a provider's listing gave for an object, as bytes: a listing of 160,000
/// objects would otherwise hold 320,000 hex strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListedHashes {
    pub md5: Option<Listed<16>>,
    pub sha1: Option<Listed<20>>,
}

impl ListedHashes {
    /// From the hex the listing gave (any case).
    pub fn new(md5: Option<&str>, sha1: Option<&str>) -> Self {
        ListedHashes {
            md5: md5.map(Listed::parse),
            sha1: sha1.map(Listed::parse),
        }
    }
}

/// A hash a listing gave: its `N` bytes, or `Garbled` when it was not `2N` hex digits (then
/// it matches no manifest's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed<const N: usize> {
    Digest([u8; N]),
    Garbled,
}

impl<const N: usize> Listed<N> {
    pub fn parse(hex: &str) -> Self {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; N];
        if hex.len() != 2 * N {
            return Listed::Garbled;
        }
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => return Listed::Garbled,
            }
        }
        Listed::Digest(out)
    }

    /// Whether `hex` (a manifest's, any case) is this digest.
    pub fn matches(&self, hex: &str) -> bool {
        matches!((self, Listed::<N>::parse(hex)), (Listed::Digest(a), Listed::Digest(b)) if *a == b)
    }
}

/// Groups `<dataset-key>/<backup-id>/<object>` listings into backups, each listing dropped once
/// grouped. Objects that do not fit the layout are ignored.
pub fn group(listings: Listings, dataset_filter: Option<&str>) -> BTreeMap<BackupKey, BackupEntry> {
    let mut out: BTreeMap<BackupKey, BackupEntry> = BTreeMap::new();
    for (provider, objects) in listings {
        // Collected first, then built at once: a map built from a sorted run packs its nodes.
        let mut found: BTreeMap<BackupKey, Vec<(String, u64, ListedHashes)>> = BTreeMap::new();
        // The folder of the object before: a backup's objects come one after another.
        let mut last: Option<(String, Option<BackupKey>)> = None;
        for o in objects {
            let mut parts = o.path.splitn(3, '/');
            let (Some(key), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let folder = &o.path[..key.len() + 1 + id.len()];
            if last.as_ref().is_none_or(|(f, _)| f != folder) {
                last = Some((folder.to_string(), backup_key(folder, dataset_filter)));
            }
            let Some((_, Some(key))) = &last else {
                continue;
            };
            let h = ListedHashes::new(o.md5.as_deref(), o.sha1.as_deref());
            if !found.contains_key(key) {
                found.insert(key.clone(), Vec::new());
            }
            let objs = found.get_mut(key).expect("inserted above");
            objs.push((name.to_string(), o.size, h));
        }
        for (key, objs) in found {
            let entry = out.entry(key).or_default();
            let hashed = (objs.iter())
                .filter(|(_, _, h)| *h != ListedHashes::default())
                .map(|(n, _, h)| (n.clone(), *h))
                .collect::<BTreeMap<_, _>>();
            if !hashed.is_empty() {
                entry.hashes.insert(provider.clone(), hashed);
            }
            let sizes = objs.into_iter().map(|(n, size, _)| (n, size)).collect();
            entry.objects.insert(provider.clone(), sizes);
        }
    }
    out
}

/// The backup a `<dataset-key>/<backup-id>` folder holds, if it is one (of `dataset_filter`).
fn backup_key(folder: &str, dataset_filter: Option<&str>) -> Option<BackupKey> {
    let (key, id) = folder.split_once('/')?;
    let (dataset, id) = (layout::dataset_name(key)?, BackupId::parse(id)?);
    if dataset_filter.is_some_and(|d| d != dataset) {
        return None;
    }
    Some(BackupKey { dataset, id })
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
    fn a_listed_hash_matches_its_hex_in_any_case_and_a_garbled_one_matches_nothing() {
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        let h = ListedHashes::new(Some(&md5.to_uppercase()), Some("not hex"));
        assert!(h.md5.unwrap().matches(md5));
        assert!(!h.md5.unwrap().matches(&md5.replace('9', "8")));
        assert_eq!(h.sha1, Some(Listed::Garbled));
        assert!(!Listed::<20>::Garbled.matches("not hex"));
        assert_eq!(Listed::<16>::parse(&md5[2..]), Listed::Garbled, "too short");
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
        let g = group(listings.clone(), None);
        assert_eq!(g.len(), 2);
        let tank = g.keys().find(|k| k.dataset == "tank/x").unwrap();
        assert_eq!(tank.id.to_string(), "20261121T020000Z-full");
        assert_eq!(g[tank].objects["a"].len(), 2);
        assert_eq!(group(listings, Some("other")).len(), 1);
    }
}
