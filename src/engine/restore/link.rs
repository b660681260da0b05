//! The backups a restore applies ([`Link`]s), resolved from the providers' catalog alone: the
//! chain up to the chosen backup (see `chain`), each with where its shards are listed and which
//! providers must not serve it (a manifest that does not parse or disagrees, an unreachable
//! provider), so a hopeless restore fails before anything is received.

use super::NoGoodCopy;
use crate::catalog::{BackupEntry, BackupKey, Catalog, Objects, Resolution};
use crate::engine::chain::{self, Found, Selector};
use crate::layout::BackupId;
use crate::manifest::{Manifest, ShardRecord};
use anyhow::Result;
use std::collections::BTreeMap;

/// One backup to apply, with where its shards are.
#[derive(Debug, Clone)]
pub struct Link {
    pub manifest: Manifest,
    /// Provider to the objects it lists for this backup.
    pub objects: BTreeMap<String, Objects>,
    /// Providers not to fetch from, with why (a manifest that does not parse or disagrees, an
    /// unreachable provider).
    pub excluded: BTreeMap<String, String>,
}

impl Link {
    pub fn new(manifest: Manifest, entry: &BackupEntry, order: &[String]) -> Link {
        let excluded = entry.manifest_conflicts(order).into_iter().collect();
        Link {
            manifest,
            objects: entry.objects.clone(),
            excluded,
        }
    }

    /// Why `provider` cannot serve `rec`, or `None` if its listing shows the shard whole.
    pub fn why_not(&self, provider: &str, rec: &ShardRecord) -> Option<String> {
        self.why_not_object(provider, &self.manifest.object(rec), rec.length)
    }

    /// Why `provider` cannot serve piece `piece` of erasure-coded `rec`, or `None` if it is
    /// the piece's holder and lists it whole.
    pub fn why_not_piece(&self, provider: &str, rec: &ShardRecord, piece: usize) -> Option<String> {
        let e = self.manifest.erasure.as_ref()?;
        if e.holder(rec.index, piece) != provider {
            return Some(format!("placement puts piece {} elsewhere", piece + 1));
        }
        let name = self.manifest.piece_object(rec, piece);
        self.why_not_object(provider, &name, rec.pieces[piece].length)
    }

    fn why_not_object(&self, provider: &str, name: &str, length: u64) -> Option<String> {
        if let Some(why) = self.excluded.get(provider) {
            return Some(format!("not used: {why}"));
        }
        match self.objects.get(provider).and_then(|o| o.get(name)) {
            Some(&size) if size == length => None,
            Some(&size) => Some(format!(
                "short or wrong-sized copy of {name}: {size} bytes listed, the manifest says {length}"
            )),
            None => Some(format!("does not hold {name}")),
        }
    }

    /// Why each of `providers` cannot serve `rec`, or `None` when one can (erasure-coded: when
    /// `k` of its pieces are listed whole on their holders).
    fn why_unavailable(
        &self,
        providers: &[String],
        rec: &ShardRecord,
    ) -> Option<Vec<(String, String)>> {
        let Some(e) = &self.manifest.erasure else {
            let why: Vec<(String, String)> = providers
                .iter()
                .map(|p| (p.clone(), self.why_not(p, rec)))
                .map(|(p, w)| w.map(|w| (p, w)))
                .collect::<Option<_>>()?;
            return Some(why);
        };
        let mut why = Vec::new();
        let mut held = 0;
        for piece in 0..e.k + e.m {
            let holder = e.holder(rec.index, piece).to_string();
            let listed = providers.contains(&holder);
            match listed.then(|| self.why_not_piece(&holder, rec, piece)) {
                Some(None) => held += 1,
                Some(Some(w)) => why.push((holder, w)),
                None => why.push((holder, "not among the providers of this restore".into())),
            }
        }
        (held < e.k).then_some(why)
    }

    /// The first shard no provider lists whole (erasure-coded: with fewer than `k` pieces
    /// listed), with why each provider cannot serve it.
    pub fn unavailable(&self, providers: &[String]) -> Option<NoGoodCopy> {
        let (rec, tried) = self
            .manifest
            .shards
            .iter()
            .find_map(|rec| Some((rec, self.why_unavailable(providers, rec)?)))?;
        Some(NoGoodCopy {
            backup_id: self.manifest.backup_id.clone(),
            index: rec.index,
            offset: rec.offset,
            object: self.manifest.object(rec),
            tried,
            erasure: self.manifest.scheme(),
        })
    }
}

/// The links to restore, full backup first. With `whole_chain` false (a raw stream to a file
/// or stdout) only the chosen backup. Providers whose manifest disagrees are named in a warning.
pub fn chain_links(
    catalog: &Catalog,
    dataset: &str,
    sel: &Selector,
    whole_chain: bool,
) -> Result<Vec<Link>> {
    let entries: BTreeMap<&BackupId, &BackupEntry> = catalog
        .backups
        .iter()
        .filter(|(k, _)| k.dataset == dataset)
        .map(|(BackupKey { id, .. }, e)| (id, e))
        .collect();
    let resolved: BTreeMap<&BackupId, Resolution> = entries
        .iter()
        .map(|(id, e)| (*id, e.resolve(&catalog.order)))
        .collect();
    let found: BTreeMap<BackupId, Found> = resolved
        .iter()
        .map(|(id, r)| {
            let f = match r {
                Resolution::Trusted(_, m) => Found::Complete(m),
                Resolution::Damaged(why) => Found::Unusable(why),
                Resolution::Unfinished => Found::Unfinished,
            };
            ((*id).clone(), f)
        })
        .collect();
    let chosen = if whole_chain {
        chain::resolve(&found, sel)?
    } else {
        vec![chain::choose(&found, sel)?]
    };
    let mut links = Vec::new();
    for m in chosen {
        let id = m.id().expect("a complete manifest has a valid id");
        let entry = entries[&id];
        let mut link = Link::new(m.clone(), entry, &catalog.order);
        for (p, why) in &link.excluded {
            tracing::warn!("provider {p}: manifest of backup {id}: {why}; its shards are not used");
        }
        for (p, e) in &catalog.unreachable {
            link.excluded
                .insert(p.clone(), format!("could not be listed ({e})"));
        }
        links.push(link);
    }
    Ok(links)
}
