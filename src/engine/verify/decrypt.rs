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

use super::{Check, Verdict};
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
                // An erasure-coded backup's pieces are checked by their own SHA-256 only:
                // decoding needs k pieces joined, which is restore's work.
                if m.encoding != Default::default() && m.erasure.is_none() {
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

    /// Whether `c` is a shard of a backup this decodes.
    pub fn covers(&self, c: &Check) -> bool {
        self.manifests.contains_key(&c.key)
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
