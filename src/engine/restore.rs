//! The restore pipeline: from the providers' catalog to a chain of verified streams, each fed
//! to its own receiver.
//!
//! [`plan`] resolves what to restore from the catalog alone (see `chain`), warns about
//! manifests that do not parse or disagree (naming the provider, whose shards are then not
//! used), and checks that every shard of every link is listed by some provider with the right
//! size, so a hopeless restore fails before anything is received. [`run`] streams the links in
//! order through [`Fetcher`] (bounded memory; shards read in pieces from several providers at
//! once, planned on each provider's measured rate in `lanes`; verified, with failover) into a
//! fresh [`Receiver`] per link.
//!
//! On failure, the receiver is stopped and waited for, every download is stopped, and the
//! error says what failed: a receiver that refused the stream leads with its stderr.

mod fetch;
mod lanes;

pub use fetch::{Fetcher, NoGoodCopy, SinkError, PIECE_SECS, PIECE_SIZE};
pub use lanes::LaneReport;

use crate::catalog::{BackupEntry, BackupKey, Catalog, Objects, Resolution};
use crate::engine::chain::{self, Found, Selector};
use crate::error::Interrupted;
use crate::layout::BackupId;
use crate::manifest::{Manifest, ShardRecord};
use crate::progress::Progress;
use crate::receiver::{Receiver, ReceiverSpec};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
        match self.objects.get(provider).and_then(|o| o.get(&rec.name())) {
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
            object: rec.name(),
            tried: providers
                .iter()
                .map(|p| (p.clone(), self.why_not(p, rec).unwrap_or_default()))
                .collect(),
        })
    }
}

/// The links to restore, full backup first. With `whole_chain` false (a raw stream to a file
/// or stdout) only the chosen backup. Providers whose manifest disagrees are named in a warning.
pub fn plan(
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

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backup ids applied, in order.
    pub applied: Vec<String>,
    pub total_bytes: u64,
    pub elapsed: Duration,
    pub providers: Vec<LaneReport>,
}

/// Streams `links` in order, each into a new receiver made from `dest`.
pub async fn run(
    fetcher: &Fetcher,
    links: &[Link],
    dest: &ReceiverSpec,
    what: &str,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Report> {
    let names = fetcher.provider_names();
    for link in links {
        if let Some(e) = link.unavailable(&names) {
            bail!(e);
        }
    }
    let start = Instant::now();
    let total: u64 = links.iter().map(|l| l.manifest.total_bytes).sum();
    progress.begin(what, Some(total), &names);
    let mut applied = Vec::new();
    let mut result = Ok(());
    for link in links {
        if cancel.is_cancelled() {
            result = Err(Interrupted.into());
            break;
        }
        tracing::info!(
            "applying backup {} ({} bytes) with {}",
            link.manifest.backup_id,
            link.manifest.total_bytes,
            dest.describe()
        );
        result = apply(fetcher, link, dest, cancel).await;
        if result.is_err() {
            break;
        }
        applied.push(link.manifest.backup_id.clone());
    }
    progress.finish();
    result?;
    Ok(Report {
        applied,
        total_bytes: total,
        elapsed: start.elapsed(),
        providers: fetcher.report(),
    })
}

/// Checks that the shards applied cover the whole stream the backup recorded: contiguous from
/// byte 0, as many as the manifest lists, adding up to its `total_bytes`, and that exactly that
/// many bytes were written. A restore that wrote less never succeeds.
pub fn covers_stream(m: &Manifest, written: u64) -> Result<()> {
    let mut end = 0u64;
    for (i, s) in m.shards.iter().enumerate() {
        if s.index != i as u64 || s.offset != end {
            bail!(
                "backup {}: shard {i} does not follow the one before (offset {}, expected {end}); nothing restored can be trusted",
                m.backup_id,
                s.offset
            );
        }
        end += s.length;
    }
    if end != m.total_bytes || written != m.total_bytes {
        bail!(
            "backup {}: the restore wrote {written} bytes from {} shards covering {end} bytes, but the backup recorded a stream of {} bytes; the output is incomplete",
            m.backup_id,
            m.shards.len(),
            m.total_bytes
        );
    }
    Ok(())
}

/// One link into one receiver.
async fn apply(
    fetcher: &Fetcher,
    link: &Link,
    dest: &ReceiverSpec,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut rx = Receiver::start(dest).await?;
    let streamed = fetcher.stream(link, rx.sink(), cancel).await;
    let id = &link.manifest.backup_id;
    match streamed.and_then(|written| covers_stream(&link.manifest, written)) {
        Ok(()) => {
            let finished = tokio::select! {
                r = rx.finish() => r,
                _ = cancel.cancelled() => Err(Interrupted.into()),
            };
            finished.map_err(|e| e.context(format!("restoring backup {id}")))
        }
        Err(e) if e.is::<SinkError>() => {
            let SinkError { offset, error } = e.downcast::<SinkError>().expect("checked above");
            Err(rx
                .fail(offset, error)
                .await
                .context(format!("restoring backup {id}")))
        }
        Err(e) => {
            let stderr = rx.abort().await;
            if !stderr.trim().is_empty() {
                tracing::info!("{} said: {}", dest.describe(), stderr.trim());
            }
            Err(e.context(format!("restoring backup {id}")))
        }
    }
}

#[cfg(test)]
mod tests;
