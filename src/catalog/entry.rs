//! One backup as seen across providers ([`BackupEntry`]) and which of its manifests to
//! trust ([`BackupEntry::resolve`]): the listings decide, never provider priority. Pure.

use super::{ListedHashes, Objects};
use crate::layout;
use crate::manifest::{same_but_placement, same_stream, Manifest};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Why a provider's manifest of an erasure-coded backup is not used after a migration.
pub const STALE_PLACEMENT: &str =
    "its manifest predates a `sync --migrate` (an older placement of the pieces); `offsite sync` rewrites it";

/// Providers holding the same version of a manifest, in priority order.
type Holders<'a> = Vec<(&'a str, &'a Manifest)>;

/// One backup as seen across providers.
#[derive(Debug, Clone, Default)]
pub struct BackupEntry {
    /// Provider name to the objects it holds for this backup (absent: holds nothing).
    pub objects: BTreeMap<String, Objects>,
    /// Provider name to object name to the hashes its listing gave, for listings asked for
    /// hashes ([`super::Catalog::scan_hashed`]); objects listed without any hash are absent.
    pub hashes: BTreeMap<String, BTreeMap<String, ListedHashes>>,
    /// Provider name to the manifest it returned (or why it could not be used).
    pub manifests: Manifests,
}

/// Provider name to the manifest it returned, or why it could not be used. Providers that
/// returned the same bytes share one parsed manifest (a 10 TiB backup's takes 50 MB).
#[derive(Debug, Clone, Default)]
pub struct Manifests(BTreeMap<String, Result<Arc<Manifest>, String>>);

impl Manifests {
    /// Records what provider `p` returned.
    pub fn insert(&mut self, p: String, m: Result<Manifest, String>) {
        self.0.insert(p, m.map(Arc::new));
    }

    /// Records what provider `p` returned, a manifest maybe shared with other providers.
    pub fn insert_shared(&mut self, p: String, m: Result<Arc<Manifest>, String>) {
        self.0.insert(p, m);
    }
}

impl std::ops::Deref for Manifests {
    type Target = BTreeMap<String, Result<Arc<Manifest>, String>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Manifests {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Manifests {
    type Item = (&'a String, &'a Result<Arc<Manifest>, String>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Result<Arc<Manifest>, String>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<const N: usize> From<[(String, Result<Manifest, String>); N]> for Manifests {
    fn from(each: [(String, Result<Manifest, String>); N]) -> Self {
        let mut out = Manifests::default();
        for (p, m) in each {
            out.insert(p, m);
        }
        out
    }
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
        let versions = self.versions(order);
        match versions.len() {
            0 => self.without_good_manifest(),
            1 => self.one_version(&versions[0]),
            _ => self.settle_disagreement(&versions),
        }
    }

    /// The good manifests in `order`, grouped by the stream they describe.
    fn versions<'a>(&'a self, order: &'a [String]) -> Vec<Holders<'a>> {
        let mut versions: Vec<Holders> = Vec::new();
        for p in order {
            let Some(Ok(m)) = self.manifests.get(p) else {
                continue;
            };
            match versions.iter_mut().find(|v| same_stream(v[0].1, m)) {
                Some(v) => v.push((p.as_str(), m)),
                None => versions.push(vec![(p.as_str(), m)]),
            }
        }
        versions
    }

    /// No good manifest: unfinished when none is listed, else damaged naming each provider.
    fn without_good_manifest(&self) -> Resolution<'_> {
        let listed = self
            .objects
            .values()
            .any(|o| o.contains_key(layout::MANIFEST));
        if self.manifests.is_empty() && !listed {
            return Resolution::Unfinished;
        }
        let names: Vec<&str> = self.manifests.keys().map(String::as_str).collect();
        let why: Vec<String> = self
            .manifests
            .iter()
            .map(|(p, m)| format!("provider {p}: {}", m.as_ref().err().map_or("?", |e| e)))
            .collect();
        Resolution::Damaged(format!(
            "manifest unreadable or damaged on {} ({})",
            names.join(", "),
            why.join("; ")
        ))
    }

    /// Every good manifest agrees: trusted, unless a provider lists the shard that would
    /// follow its last one. Then it was cut short (a truncated copy, or the only readable
    /// one), so it is not trusted.
    fn one_version<'a>(&self, holders: &Holders<'a>) -> Resolution<'a> {
        let (first, m) = holders[0];
        if !self.lists_shard_after(m) {
            return Resolution::Trusted(first, m);
        }
        let names: Vec<&str> = holders.iter().map(|(p, _)| *p).collect();
        Resolution::Damaged(format!(
            "the manifest on {} ends before a shard object the providers list (cut short?); not trusted",
            names.join(", ")
        ))
    }

    /// Manifests disagree: the one version the listings agree with, never priority.
    fn settle_disagreement<'a>(&self, versions: &[Holders<'a>]) -> Resolution<'a> {
        let agreeing: Vec<&Holders> = versions
            .iter()
            .filter(|v| self.agrees_with_listings(v[0].1))
            .collect();
        if let [v] = agreeing[..] {
            return Resolution::Trusted(v[0].0, v[0].1);
        }
        if let Some(v) = newest_placement(&agreeing) {
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

    /// Whether `m` is an erasure-coded manifest that a migration replaced: the trusted one is
    /// the same stream under a higher revision.
    pub fn predates_migration(m: &Manifest, trusted: &Manifest) -> bool {
        let revision = |m: &Manifest| m.erasure.as_ref().map(|e| e.revision);
        same_but_placement(m, trusted) && revision(m) < revision(trusted)
    }

    /// Whether `m` agrees with the listings: every shard object any provider lists is one of
    /// its objects, and each of its shards is restorable from what is listed.
    pub fn agrees_with_listings(&self, m: &Manifest) -> bool {
        self.names_every_listed_shard(m) && self.restorable(m)
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

    /// Whether every shard object (or piece) any provider lists is one of `m`'s.
    fn names_every_listed_shard(&self, m: &Manifest) -> bool {
        let names: BTreeSet<String> = m
            .shards
            .iter()
            .flat_map(|s| m.objects_of(s))
            .map(|(name, _)| name)
            .collect();
        self.objects.values().all(|objs| {
            objs.keys()
                .filter(|n| layout::parse_shard_name(n).is_some())
                .all(|n| names.contains(n))
        })
    }

    /// Whether every shard of `m` can be read from what the providers list at the right size:
    /// one copy somewhere, or `k` of its pieces, each on the provider placement puts it on
    /// (where restore reads it).
    pub fn restorable(&self, m: &Manifest) -> bool {
        let listed_on = |p: &str, name: &str, len: u64| {
            self.objects.get(p).and_then(|o| o.get(name)) == Some(&len)
        };
        let listed = |(name, len): &(String, u64)| {
            self.objects
                .values()
                .any(|objs| objs.get(name) == Some(len))
        };
        m.shards.iter().all(|s| match &m.erasure {
            None => m.objects_of(s).iter().any(listed),
            Some(e) => {
                let objects = m.objects_of(s);
                let held = objects
                    .iter()
                    .enumerate()
                    .filter(|(p, (name, len))| listed_on(e.holder(s.index, *p), name, *len));
                held.count() >= e.k
            }
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
                (Ok(m), Some(t)) if Self::predates_migration(m, t) => out.push((
                    p.clone(),
                    STALE_PLACEMENT.into(),
                )),
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

/// Of several manifest versions that all agree with the listings: the one with the highest
/// placement revision, when they differ only in placement (a migration that could not
/// rewrite every copy) and that revision is not shared. Anything else stays unsettled.
fn newest_placement<'v, 'a>(agreeing: &[&'v Holders<'a>]) -> Option<&'v Holders<'a>> {
    let revision = |v: &Holders| v[0].1.erasure.as_ref().map(|e| e.revision);
    let newest = *agreeing.iter().max_by_key(|v| revision(v))?;
    let alike = agreeing
        .iter()
        .all(|v| same_but_placement(v[0].1, newest[0].1));
    let unique = agreeing
        .iter()
        .filter(|v| revision(v) == revision(newest))
        .count()
        == 1;
    (alike && unique).then_some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three shards held whole by a and b, each with the same good manifest.
    fn held_by_two() -> (BackupEntry, Manifest) {
        let m = crate::manifest::sample(&[b"abcd", b"efgh", b"ij"]);
        let mut e = BackupEntry::default();
        for p in ["a", "b"] {
            let objs = e.objects.entry(p.into()).or_default();
            for s in &m.shards {
                objs.insert(s.name(Default::default()), s.length);
            }
            objs.insert(layout::MANIFEST.into(), 100);
            e.manifests.insert(p.into(), Ok(m.clone()));
        }
        (e, m)
    }

    /// A 2+1 erasure-coded backup of three shards on a, b and c: each piece where placement
    /// puts it, and the manifest everywhere.
    fn coded() -> (BackupEntry, Manifest) {
        let data: [&[u8]; 3] = [b"abcdefgh", b"ijklmnop", b"qrs"];
        let stored: Vec<bytes::Bytes> = data
            .iter()
            .map(|d| bytes::Bytes::from(d.to_vec()))
            .collect();
        let (m, _) = crate::gaps::fixture::erasure(
            crate::manifest::sample(&data),
            &stored,
            "2+1".parse().unwrap(),
            &["a", "b", "c"],
        );
        let mut e = BackupEntry::default();
        for s in &m.shards {
            for (p, (name, len)) in m.objects_of(s).into_iter().enumerate() {
                let holder = m.erasure.as_ref().unwrap().holder(s.index, p);
                e.objects
                    .entry(holder.into())
                    .or_default()
                    .insert(name, len);
            }
        }
        for p in ["a", "b", "c"] {
            e.objects
                .get_mut(p)
                .unwrap()
                .insert(layout::MANIFEST.into(), 100);
            e.manifests.insert(p.into(), Ok(m.clone()));
        }
        (e, m)
    }

    #[test]
    fn an_erasure_coded_backup_is_restorable_while_k_pieces_of_each_shard_are_listed() {
        let (mut e, m) = coded();
        assert!(e.restorable(&m) && e.agrees_with_listings(&m));
        e.objects.remove("c");
        assert!(e.restorable(&m), "two pieces of each shard are left");
        let (name, _) = m.objects_of(&m.shards[1]).remove(0);
        for objs in e.objects.values_mut() {
            objs.remove(&name);
        }
        assert!(!e.restorable(&m), "shard 1 has one piece left");
        // A copy of the lost piece on a provider placement does not name does not count:
        // restore reads a piece from its holder only.
        let (piece0, len) = m.objects_of(&m.shards[1]).remove(0);
        let holder = m.erasure.as_ref().unwrap().holder(1, 0);
        let elsewhere = ["a", "b"].into_iter().find(|p| *p != holder).unwrap();
        e.objects.get_mut(elsewhere).unwrap().insert(piece0, len);
        assert!(!e.restorable(&m), "a piece off its holder");
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

    /// `coded()` after `sync --migrate c --to d` without `--remove-source`: d holds copies of
    /// c's pieces, a, b and d the relocated manifest, c still its pieces and the old one.
    fn migrated() -> (BackupEntry, Manifest, Manifest) {
        let (mut e, old) = coded();
        let new = old.relocated("c", "d").expect("c holds pieces");
        let at_c = e.objects["c"].clone();
        e.objects.insert("d".into(), at_c);
        for p in ["a", "b", "d"] {
            e.manifests.insert(p.into(), Ok(new.clone()));
        }
        (e, old, new)
    }

    #[test]
    fn a_migrated_manifest_wins_over_the_copy_written_before_the_migration_whatever_the_order() {
        let (e, old, new) = migrated();
        assert!(e.agrees_with_listings(&old) && e.agrees_with_listings(&new));
        for o in [["c", "a", "b", "d"], ["a", "b", "c", "d"]] {
            assert_eq!(e.resolve(&order(&o)), Resolution::Trusted("a", &new));
        }
        let conflicts = e.manifest_conflicts(&order(&["c", "a", "b", "d"]));
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].0, "c");
        assert!(
            conflicts[0].1.contains("predates a `sync --migrate`"),
            "{conflicts:?}"
        );
    }

    #[test]
    fn placements_of_the_same_revision_are_not_settled() {
        let (mut e, old, mut new) = migrated();
        new.erasure.as_mut().unwrap().revision = 0;
        for p in ["a", "b", "d"] {
            e.manifests.insert(p.into(), Ok(new.clone()));
        }
        assert!(matches!(
            e.resolve(&order(&["a", "c"])),
            Resolution::Damaged(_)
        ));
        // Nor is a newer placement of another stream.
        let mut other = old.relocated("c", "d").unwrap();
        other.shards[0].sha256 = "0".repeat(64);
        e.manifests.insert("a".into(), Ok(other));
        assert!(matches!(
            e.resolve(&order(&["a", "c"])),
            Resolution::Damaged(_)
        ));
    }
}
