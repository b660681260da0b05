//! Gap detection: a pure function from what the providers hold (one [`BackupEntry`] of the
//! catalog) to findings per provider. `status`, `verify` and `sync` all read these findings;
//! `sync` copies what they name.
//!
//! The reference for a backup with a good manifest is that manifest (the first good one in
//! provider priority order). A backup with no good manifest anywhere is *unfinished*: its
//! reference is the set of shard names the providers hold, with lengths taken from the offsets
//! in the names (shard `i` is `offset(i+1) - offset(i)` long; a last shard is trusted only at
//! the full shard size, which the offsets also give). A shard whose length cannot be known is
//! counted as held but never copied.
//!
//! Guarantees: no I/O; every lookup is a map or set lookup, so 100,000 shards on three providers
//! take milliseconds (see the test at the bottom).

use crate::catalog::{BackupEntry, BackupKey, Catalog, ListedHashes, Resolution};
use crate::config::Config;
use crate::layout::{self, MANIFEST};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Shards a deep check found corrupt: backup -> provider -> shard indexes.
pub type Corrupt = BTreeMap<BackupKey, BTreeMap<String, BTreeSet<u64>>>;

/// A provider's manifest of one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestState {
    Good,
    Missing,
    /// Present but unreadable or not parseable.
    Bad,
    /// Parses, but describes other shards than the trusted manifest.
    Disagrees,
}

/// One shard a backup should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefShard {
    pub index: u64,
    pub name: String,
    pub length: u64,
    /// Known for backups with a manifest.
    pub sha256: Option<String>,
    /// The backend hashes the manifest recorded (format 2 on), compared with listed ones.
    pub md5: Option<String>,
    pub sha1: Option<String>,
    /// Erasure-coded backups: which piece (0-based) of shard `index` this is; `name`, `length`
    /// and the hashes are then the piece object's.
    pub piece: Option<usize>,
    /// Erasure-coded backups: the one provider the piece is placed on.
    pub holder: Option<String>,
}

impl RefShard {
    /// Whether `provider` should hold this object: every expected provider holds every
    /// shard of a mirrored backup, one provider each piece of an erasure-coded one.
    pub fn placed_on(&self, provider: &str) -> bool {
        self.holder.as_deref().is_none_or(|h| h == provider)
    }
}

/// How much of a backup a provider holds (good-sized shards only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Holding {
    pub shards: u64,
    pub bytes: u64,
    /// Shards 0..prefix are all held: the stream a restore could read so far.
    pub prefix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderFindings {
    pub provider: String,
    /// The provider should hold this backup (see [`expected_holders`]).
    pub expected: bool,
    /// Its listing succeeded; when false nothing else here is known. Not serialized: reports
    /// say it with their `state`.
    #[serde(skip_serializing)]
    pub reachable: bool,
    pub manifest: ManifestState,
    pub manifest_error: Option<String>,
    pub missing_shards: Vec<u64>,
    /// Present with the wrong size: shorter (truncated) or longer than the reference says.
    /// JSON keeps the key it was released with.
    #[serde(rename = "truncated_shards")]
    pub wrong_size_shards: Vec<u64>,
    /// Right size, wrong content: SHA-256 from a deep check, or an MD5/SHA-1 the listing gave
    /// that differs from the manifest's.
    pub corrupt_shards: Vec<u64>,
    /// Objects that are neither a reference shard nor `manifest.json`.
    pub unexpected_objects: Vec<String>,
    /// Erasure-coded backups: how many pieces placement puts on this provider (`held.shards`
    /// then counts the pieces it holds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<u64>,
    pub held: Holding,
}

impl ProviderFindings {
    /// Holds every reference shard, intact, and (for a finished backup) a good manifest.
    pub fn is_whole(&self) -> bool {
        self.reachable
            && self.manifest == ManifestState::Good
            && self.missing_shards.is_empty()
            && self.wrong_size_shards.is_empty()
            && self.corrupt_shards.is_empty()
    }

    /// The object of shard `index` this provider should hold (the shard, or its piece here).
    pub fn object<'a>(&self, f: &'a BackupFindings, index: u64) -> Option<&'a RefShard> {
        f.reference
            .iter()
            .find(|r| r.index == index && r.placed_on(&self.provider))
    }

    /// Indexes of the reference shards this provider lacks or holds badly.
    pub fn bad_shards(&self) -> BTreeSet<u64> {
        self.missing_shards
            .iter()
            .chain(&self.wrong_size_shards)
            .chain(&self.corrupt_shards)
            .copied()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFindings {
    /// The provider whose manifest is trusted; `None` for an unfinished or damaged backup.
    pub manifest_from: Option<String>,
    /// Manifests are listed but none can be trusted (unreadable, failing their checksum, or
    /// disagreeing without one that matches the listings): why, naming the providers. Such a
    /// backup is an error, not unfinished.
    pub damaged: Option<String>,
    pub reference: Vec<RefShard>,
    /// The plaintext stream's length, from the trusted manifest (the reference's lengths are
    /// the stored objects', smaller when compressed).
    pub total_bytes: Option<u64>,
    /// Every provider that should hold the backup or holds any of it, in priority order.
    pub providers: Vec<ProviderFindings>,
    /// Erasure-coded backups with a trusted manifest: how many shards keep all their pieces.
    pub strength: Option<Strength>,
}

impl BackupFindings {
    pub fn is_finished(&self) -> bool {
        self.manifest_from.is_some()
    }

    /// No manifest was ever written: a re-run of the backup resumes it.
    pub fn is_unfinished(&self) -> bool {
        self.manifest_from.is_none() && self.damaged.is_none()
    }

    /// Something is missing or bad on a provider that should hold the backup, or the backup
    /// is unfinished.
    pub fn has_gaps(&self) -> bool {
        !self.is_finished()
            || self.providers.iter().any(|p| p.expected && !p.is_whole())
            || self.is_weakened()
    }

    /// An erasure-coded shard misses a good piece (e.g. its holder is no longer configured).
    pub fn is_weakened(&self) -> bool {
        self.strength
            .as_ref()
            .is_some_and(|s| s.degraded + s.lost > 0)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderFindings> {
        self.providers.iter().find(|p| p.provider == name)
    }

    /// An erasure-coded shard has fewer than `k` good pieces: the backup cannot be restored.
    pub fn is_lost(&self) -> bool {
        self.strength.as_ref().is_some_and(|s| s.lost > 0)
    }
}

/// What [`detect`] needs besides the backup itself.
pub struct Scope<'a> {
    /// Every provider in priority order, reachable or not.
    pub order: &'a [String],
    /// Providers that should hold the backup.
    pub expected: &'a BTreeSet<String>,
    /// Providers whose listing failed.
    pub unreachable: &'a BTreeSet<String>,
    /// Provider -> shards a deep check found corrupt.
    pub corrupt: Option<&'a BTreeMap<String, BTreeSet<u64>>>,
}

/// Findings for one backup on every provider that should hold it or holds any of it.
pub fn detect(entry: &BackupEntry, scope: &Scope) -> BackupFindings {
    let (trusted, damaged) = match entry.resolve(scope.order) {
        Resolution::Trusted(p, m) => (Some((p, m)), None),
        Resolution::Damaged(why) => (None, Some(why)),
        Resolution::Unfinished => (None, None),
    };
    let shards = match trusted {
        Some((_, m)) if m.erasure.is_some() => pieces::reference(m),
        Some((_, m)) => trusted_reference(m),
        None => unfinished_reference(entry),
    };
    // An erasure-coded backup is expected where its manifest placed it.
    let placed: Option<BTreeSet<String>> = trusted
        .and_then(|(_, m)| m.erasure.as_ref())
        .map(|e| e.providers.iter().cloned().collect());
    let scope = &Scope {
        expected: placed.as_ref().unwrap_or(scope.expected),
        ..*scope
    };
    let reference = Reference {
        by_name: shards.iter().map(|r| (r.name.as_str(), r)).collect(),
        shards: &shards,
        trusted: trusted.map(|(_, m)| m),
        damaged: damaged.is_some(),
    };
    let providers = scope
        .order
        .iter()
        .filter(|p| scope.expected.contains(*p) || entry.objects.contains_key(*p))
        .map(|p| provider_findings(p, entry, scope, &reference))
        .collect::<Vec<_>>();
    let strength = trusted.and_then(|(_, m)| pieces::strength(m, &providers));
    BackupFindings {
        manifest_from: trusted.map(|(p, _)| p.to_string()),
        damaged,
        reference: shards,
        total_bytes: trusted.map(|(_, m)| m.total_bytes),
        providers,
        strength,
    }
}

/// What a backup's providers are compared with.
struct Reference<'a> {
    shards: &'a [RefShard],
    by_name: HashMap<&'a str, &'a RefShard>,
    /// The manifest to trust, for a finished backup.
    trusted: Option<&'a crate::manifest::Manifest>,
    /// Manifests are listed but none can be trusted.
    damaged: bool,
}

/// The reference shards of a finished backup: its trusted manifest's.
fn trusted_reference(m: &crate::manifest::Manifest) -> Vec<RefShard> {
    m.shards
        .iter()
        .map(|s| RefShard {
            index: s.index,
            name: m.object(s),
            length: s.length,
            sha256: Some(s.sha256.clone()),
            md5: s.md5.clone(),
            sha1: s.sha1.clone(),
            piece: None,
            holder: None,
        })
        .collect()
}

/// One provider's findings for the backup of `entry`.
fn provider_findings(
    p: &str,
    entry: &BackupEntry,
    scope: &Scope,
    reference: &Reference,
) -> ProviderFindings {
    let expected = scope.expected.contains(p);
    if scope.unreachable.contains(p) {
        return unreachable(p, expected);
    }
    let empty = BTreeMap::new();
    let no_corrupt = BTreeSet::new();
    let objects = entry.objects.get(p).unwrap_or(&empty);
    let corrupt = scope.corrupt.and_then(|c| c.get(p)).unwrap_or(&no_corrupt);
    let listed = entry.hashes.get(p);
    let mut f = compare(p, objects, reference, corrupt, listed);
    f.expected = expected;
    (f.manifest, f.manifest_error) = manifest_state(entry, p, reference.trusted);
    if reference.damaged && f.manifest == ManifestState::Good {
        f.manifest = ManifestState::Disagrees;
        f.manifest_error = Some("disagrees with another provider's manifest".into());
    }
    f
}

fn unreachable(provider: &str, expected: bool) -> ProviderFindings {
    ProviderFindings {
        expected,
        reachable: false,
        manifest_error: Some("the provider could not be listed".into()),
        ..blank(provider)
    }
}

fn blank(provider: &str) -> ProviderFindings {
    ProviderFindings {
        provider: provider.to_string(),
        expected: false,
        reachable: true,
        manifest: ManifestState::Missing,
        manifest_error: None,
        missing_shards: Vec::new(),
        wrong_size_shards: Vec::new(),
        corrupt_shards: Vec::new(),
        unexpected_objects: Vec::new(),
        pieces: None,
        held: Holding::default(),
    }
}

/// One provider's objects against the reference shards.
fn compare(
    provider: &str,
    objects: &BTreeMap<String, u64>,
    reference: &Reference,
    corrupt: &BTreeSet<u64>,
    listed: Option<&BTreeMap<String, ListedHashes>>,
) -> ProviderFindings {
    let (by_name, finished) = (&reference.by_name, reference.trusted.is_some());
    let erasure = reference.trusted.is_some_and(|m| m.erasure.is_some());
    let reference = reference.shards;
    let mut f = blank(provider);
    if erasure {
        f.pieces = Some(reference.iter().filter(|r| r.placed_on(provider)).count() as u64);
    }
    let mut good: HashSet<u64> = HashSet::with_capacity(reference.len());
    // Shards with an object placed elsewhere only (erasure): no gap in this provider's prefix.
    let mut elsewhere: HashSet<u64> = HashSet::new();
    for r in reference {
        if !r.placed_on(provider) {
            elsewhere.insert(r.index);
            continue;
        }
        match objects.get(&r.name) {
            None => f.missing_shards.push(r.index),
            Some(&size) if size != r.length => f.wrong_size_shards.push(r.index),
            Some(_) if corrupt.contains(&r.index) || listed_differs(r, listed) => {
                f.corrupt_shards.push(r.index)
            }
            Some(&size) => {
                good.insert(r.index);
                f.held.shards += 1;
                f.held.bytes += size;
            }
        }
    }
    for (name, &size) in objects {
        if name == MANIFEST
            || by_name
                .get(name.as_str())
                .is_some_and(|r| r.placed_on(provider))
        {
            continue;
        }
        match layout::parse_shard_name(name) {
            // A shard of an unfinished backup whose length cannot be known yet: held, not judged.
            Some((index, _)) if !finished => {
                good.insert(index);
                f.held.shards += 1;
                f.held.bytes += size;
            }
            _ => f.unexpected_objects.push(name.clone()),
        }
    }
    for r in reference.iter().filter(|r| r.placed_on(provider)) {
        elsewhere.remove(&r.index);
    }
    f.held.prefix = (0..)
        .take_while(|i| good.contains(i) || elsewhere.contains(i))
        .count() as u64;
    f
}

/// Whether the listing gave an MD5 or SHA-1 for `r` that differs from the reference's: the
/// object has the right size but other bytes.
fn listed_differs(r: &RefShard, listed: Option<&BTreeMap<String, ListedHashes>>) -> bool {
    let Some(h) = listed.and_then(|l| l.get(&r.name)) else {
        return false;
    };
    let md5 = matches!((&r.md5, h.md5), (Some(w), Some(g)) if !g.matches(w));
    let sha1 = matches!((&r.sha1, h.sha1), (Some(w), Some(g)) if !g.matches(w));
    md5 || sha1
}

fn manifest_state(
    entry: &BackupEntry,
    provider: &str,
    trusted: Option<&crate::manifest::Manifest>,
) -> (ManifestState, Option<String>) {
    match (entry.manifests.get(provider), trusted) {
        (None, _) => (ManifestState::Missing, None),
        (Some(Err(e)), _) => (ManifestState::Bad, Some(e.clone())),
        (Some(Ok(m)), Some(t)) if BackupEntry::predates_migration(m, t) => (
            ManifestState::Disagrees,
            Some(crate::catalog::STALE_PLACEMENT.into()),
        ),
        (Some(Ok(m)), Some(t)) if !crate::manifest::same_stream(m, t) => (
            ManifestState::Disagrees,
            Some("describes other shards than the trusted manifest".into()),
        ),
        (Some(Ok(_)), _) => (ManifestState::Good, None),
    }
}

/// The shards of an unfinished backup whose length the names prove: a shard with a known
/// successor, or one as long as the shard size the offsets give. Offsets are plaintext, so
/// only a shard stored as it is (no `.zst`/`.age`) has a length the names prove.
fn unfinished_reference(entry: &BackupEntry) -> Vec<RefShard> {
    let mut offsets: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    for objects in entry.objects.values() {
        for name in objects.keys() {
            if let Some((index, offset)) = layout::parse_shard_name(name) {
                offsets.entry(index).or_insert((offset, name));
            }
        }
    }
    let shard_size = offsets
        .iter()
        .next_back()
        .filter(|(&i, &(o, _))| i > 0 && o % i == 0)
        .map(|(&i, &(o, _))| o / i);
    let mut out = Vec::new();
    for (&index, &(offset, name)) in &offsets {
        let length = match offsets.get(&(index + 1)) {
            Some(&(next, _)) if next > offset => Some(next - offset),
            Some(_) => None,
            None => shard_size.filter(|&s| {
                entry
                    .objects
                    .values()
                    .any(|o| o.get(name).is_some_and(|&size| size == s))
            }),
        };
        let bare =
            layout::parse_shard_object(name).is_some_and(|(_, _, e)| e == Default::default());
        if let Some(length) = length.filter(|_| bare) {
            out.push(RefShard {
                index,
                name: name.to_string(),
                length,
                sha256: None,
                md5: None,
                sha1: None,
                piece: None,
                holder: None,
            });
        }
    }
    out
}

/// Providers that should hold the backups of `dataset`: the dataset's providers when it is
/// configured; otherwise every enabled provider that holds any object of any of its backups
/// (a provider that lost one whole backup of an unconfigured dataset still counts).
pub fn expected_holders(cfg: &Config, catalog: &Catalog, dataset: &str) -> BTreeSet<String> {
    if let Some(ds) = cfg.dataset(dataset) {
        return ds.providers.iter().cloned().collect();
    }
    let enabled: BTreeSet<&str> = cfg
        .providers
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.as_str())
        .collect();
    catalog
        .backups
        .iter()
        .filter(|(k, _)| k.dataset == dataset)
        .flat_map(|(_, e)| e.objects.keys())
        .filter(|p| enabled.contains(p.as_str()))
        .cloned()
        .collect()
}

/// Findings for every backup of the catalog, in catalog order (dataset, then time).
pub fn survey(
    cfg: &Config,
    catalog: &Catalog,
    corrupt: &Corrupt,
) -> Vec<(BackupKey, BackupFindings)> {
    let unreachable: BTreeSet<String> = catalog.unreachable.keys().cloned().collect();
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    catalog
        .backups
        .iter()
        .map(|(key, entry)| {
            let exp = expected
                .entry(key.dataset.as_str())
                .or_insert_with(|| expected_holders(cfg, catalog, &key.dataset));
            let scope = Scope {
                order: &catalog.order,
                expected: exp,
                unreachable: &unreachable,
                corrupt: corrupt.get(key),
            };
            (key.clone(), detect(entry, &scope))
        })
        .collect()
}

mod pieces;
pub use pieces::Strength;

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
