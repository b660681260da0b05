//! `verify --decrypt`: the compressed and encrypted backups among those verified, with their
//! manifests opened ([`Decoding::prepare`]), and the check of one downloaded shard against its
//! plaintext ([`Decoding::verdict`]).
//!
//! Guarantees: the identity is read only when a backup in scope is encrypted, and every
//! encrypted manifest is opened before anything is downloaded (a missing or wrong identity is
//! an [`crate::error::IdentityError`], exit 2). Decoding runs on the blocking pool, inside the
//! memory slot the download holds, so verify's memory stays bounded by `shards_in_flight`.
//! A shard whose stored bytes are right but do not decode to the sealed plaintext hash is a bad
//! copy on that provider, like a corrupt one.

use super::{Check, Limits, Verdict};
use crate::catalog::{BackupKey, Catalog, Resolution};
use crate::codec::Identities;
use crate::engine::restore::decode::{self, Checked, Expected};
use crate::engine::restore::KeySource;
use crate::gaps::BackupFindings;
use crate::manifest::Manifest;
use anyhow::Result;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What `verify --decrypt` decodes shards with.
#[derive(Default)]
pub struct Decoding {
    /// The compressed or encrypted finished backups, manifests opened.
    manifests: BTreeMap<BackupKey, Manifest>,
    ids: Option<Arc<Identities>>,
}

impl Decoding {
    /// The encoded backups among the finished ones of `surveys`, with the manifest `catalog`
    /// trusts for each, opened with `keys` when one is encrypted.
    pub async fn prepare(
        catalog: &Catalog,
        surveys: &[(BackupKey, BackupFindings)],
        keys: &KeySource,
    ) -> Result<Decoding> {
        let mut manifests = BTreeMap::new();
        for (key, _) in surveys.iter().filter(|(_, f)| f.is_finished()) {
            let Some(entry) = catalog.backups.get(key) else {
                continue;
            };
            if let Resolution::Trusted(_, m) = entry.resolve(&catalog.order) {
                if m.encoding != Default::default() {
                    manifests.insert(key.clone(), m.clone());
                }
            }
        }
        let ids = keys.unseal(manifests.values_mut().collect()).await?;
        Ok(Decoding { manifests, ids })
    }

    /// Decodes the backups of `manifests` (opened already) with `ids`.
    #[cfg(test)]
    pub fn from_parts(
        manifests: BTreeMap<BackupKey, Manifest>,
        ids: Option<Arc<Identities>>,
    ) -> Decoding {
        Decoding { manifests, ids }
    }

    /// Whether `c` is a shard this decodes as it is downloaded: one of a mirrored backup this
    /// decodes (an erasure-coded backup's pieces are decoded together, by [`Decoding::join`]).
    pub fn covers(&self, c: &Check) -> bool {
        self.manifests
            .get(&c.key)
            .is_some_and(|m| m.erasure.is_none())
    }

    /// What the shard of `c` must be, when its backup is encoded.
    fn expected(&self, c: &Check) -> Option<Expected> {
        let m = self.manifests.get(&c.key)?;
        let rec = m.shards.get(c.index as usize)?;
        Some(Expected::new(m, rec, self.ids.clone()))
    }

    /// The verdict on `data`, the stored bytes of `c`, after its stored SHA-256, decoding and
    /// plaintext SHA-256 were checked on the blocking pool; `None` when its backup is not
    /// encoded (the caller checks the stored hash alone).
    pub async fn verdict(&self, c: &Check, data: Bytes) -> Option<Verdict> {
        let want = self.expected(c)?;
        let stored = want.sha256.clone();
        let checked = tokio::task::spawn_blocking(move || decode::check(vec![data], &want)).await;
        Some(match checked {
            Ok(Checked::Good(_)) => Verdict::Good(stored),
            Ok(Checked::Corrupt(sum)) => {
                Verdict::Bad(format!("SHA-256 is {sum}, the manifest says {stored}"))
            }
            Ok(Checked::Undecodable(why)) => Verdict::Bad(why),
            Err(e) => Verdict::Unreadable(format!("decoding failed: {e}")),
        })
    }
}

/// What [`Decoding::join`] found.
#[derive(Debug, Default)]
pub struct Joined {
    /// Shards joined from `k` good pieces, decoded and checked by plaintext SHA-256.
    pub decoded: u64,
    /// Shards that did not: backup, shard and why.
    pub failed: Vec<(BackupKey, u64, String)>,
}

/// `k` pieces of one shard that the piece checks found good: (piece, check).
type Pieces = Vec<(usize, Check)>;

impl Decoding {
    /// `--decrypt` of the erasure-coded backups it covers: per shard, `k` of the pieces that
    /// `results` (the piece checks) found good are downloaded again, checked by SHA-256,
    /// joined and decoded on the blocking pool, and the plaintext checked. A shard with fewer
    /// than `k` good pieces is skipped: the piece checks already count it lost. One shard
    /// (its `k` pieces) per memory slot.
    pub async fn join(
        &self,
        results: &[(Check, Verdict)],
        providers: &[crate::provider::DynProvider],
        limits: Limits,
        progress: &std::sync::Arc<dyn crate::progress::Progress>,
    ) -> Joined {
        use futures::stream::{self, StreamExt};
        let jobs = self.shards_to_join(results);
        let outcomes: Vec<_> = stream::iter(jobs)
            .map(|(key, index, pieces)| async move {
                let r = self
                    .join_one(&key, index, &pieces, providers, progress)
                    .await;
                (key, index, r)
            })
            .buffer_unordered(limits.shards_in_flight.max(1))
            .collect()
            .await;
        let mut out = Joined::default();
        for (key, index, r) in outcomes {
            match r {
                Ok(()) => out.decoded += 1,
                Err(why) => out.failed.push((key, index, why)),
            }
        }
        out.failed.sort();
        out
    }

    /// Per shard of each erasure-coded backup covered, `k` pieces the checks found good.
    fn shards_to_join(&self, results: &[(Check, Verdict)]) -> Vec<(BackupKey, u64, Pieces)> {
        let mut good: BTreeMap<(BackupKey, u64), Pieces> = BTreeMap::new();
        for (c, v) in results {
            let Some(e) = self.manifests.get(&c.key).and_then(|m| m.erasure.as_ref()) else {
                continue;
            };
            let name = c.path.rsplit('/').next().unwrap_or_default();
            let piece = crate::layout::parse_object(name).and_then(|o| o.piece);
            if let (Verdict::Good(_), Some(p)) = (v, piece) {
                let slot = good.entry((c.key.clone(), c.index)).or_default();
                if slot.len() < e.k {
                    slot.push((p.number - 1, c.clone()));
                }
            }
        }
        let k = |key: &BackupKey| self.manifests[key].erasure.as_ref().map_or(0, |e| e.k);
        good.into_iter()
            .filter(|((key, _), pieces)| pieces.len() == k(key))
            .map(|((key, index), pieces)| (key, index, pieces))
            .collect()
    }

    async fn join_one(
        &self,
        key: &BackupKey,
        index: u64,
        pieces: &Pieces,
        providers: &[crate::provider::DynProvider],
        progress: &std::sync::Arc<dyn crate::progress::Progress>,
    ) -> Result<(), String> {
        let m = &self.manifests[key];
        let e = m
            .erasure
            .as_ref()
            .expect("only erasure-coded backups are joined");
        let rec = m.shards.get(index as usize).ok_or("no such shard")?;
        let mut given: Vec<Option<Bytes>> = vec![None; e.k + e.m];
        for (p, c) in pieces {
            let provider = providers.iter().find(|x| x.name() == c.provider);
            let provider = provider.ok_or_else(|| format!("provider {} is gone", c.provider))?;
            let data = provider
                .get(&c.path, c.length)
                .await
                .map_err(|e| e.to_string())?;
            progress.advance(data.len() as u64);
            let sum = crate::hashing::sha256_blocking(data.clone()).await;
            if sum.ok() != c.sha256 {
                return Err(format!(
                    "{} changed on {} since it was checked",
                    c.path, c.provider
                ));
            }
            given[*p] = Some(data);
        }
        let want = Expected::new(m, rec, self.ids.clone());
        let (scheme, len) = (e.scheme(), rec.length);
        let checked = tokio::task::spawn_blocking(move || {
            let stored = crate::erasure::join(scheme, len, &given).map_err(|e| e.to_string())?;
            Ok::<_, String>(decode::check(vec![Bytes::from(stored)], &want))
        })
        .await
        .map_err(|e| format!("decoding failed: {e}"))??;
        match checked {
            Checked::Good(_) => Ok(()),
            Checked::Corrupt(sum) => Err(format!(
                "joined from good pieces, the shard's SHA-256 is {sum}, the manifest says {}",
                rec.sha256
            )),
            Checked::Undecodable(why) => Err(why),
        }
    }
}
