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
        if let Some(why) = self.excluded.get(provider) {
            return Some(format!("not used: {why}"));
        }
        match self
            .objects
            .get(provider)
            .and_then(|o| o.get(&self.manifest.object(rec)))
        {
            Some(&size) if size == rec.length => None,
            Some(&size) => Some(format!(
                "short or wrong-sized copy: {size} bytes listed, the manifest says {}",
                rec.length
            )),
            None => Some("does not hold it".into()),
        }
    }

    /// The first shard no provider lists whole, with why each provider cannot serve it.
    pub fn unavailable(&self, providers: &[String]) -> Option<NoGoodCopy> {
        let rec = self
            .manifest
            .shards
            .iter()
            .find(|rec| providers.iter().all(|p| self.why_not(p, rec).is_some()))?;
        Some(NoGoodCopy {
            backup_id: self.manifest.backup_id.clone(),
            index: rec.index,
            offset: rec.offset,
            object: self.manifest.object(rec),
            tried: providers
                .iter()
                .map(|p| (p.clone(), self.why_not(p, rec).unwrap_or_default()))
                .collect(),
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
