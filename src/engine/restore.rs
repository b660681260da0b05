//! The restore pipeline: from the providers' catalog to a chain of verified streams, each fed
//! to its own receiver. [`restore`] is the entry point: plan, fetch, report.
//!
//! [`plan`] resolves what to restore from the catalog alone (see `chain` and `link`), warns
//! about manifests that do not parse or disagree (naming the provider, whose shards are then
//! not used), and for a zfs or btrfs target skips the backups it already holds. Before anything
//! is received, every shard of every link must be listed by some provider with the right size,
//! so a hopeless restore fails first. [`stream_links`] streams the links in order through
//! [`Fetcher`] (bounded memory; shards read in pieces from several providers at once, planned
//! on each provider's measured rate in `lanes`; verified, with failover) into a fresh
//! [`Receiver`] per link.
//!
//! On failure, the receiver is stopped and waited for, every download is stopped, and the
//! error says what failed: a receiver that refused the stream leads with its stderr.

pub mod decode;
mod fetch;
mod lanes;
mod link;
mod plan;
mod report;
mod unseal;

pub use fetch::{Fetcher, NoGoodCopy, SinkError, PIECE_SECS, PIECE_SIZE};
pub use lanes::LaneReport;
pub use link::{chain_links, Link};
pub use plan::{plan, Destination, RestorePlan};
pub use report::{RestoreReport, Restored, Streamed};
pub use unseal::KeySource;

use crate::catalog::Catalog;
use crate::engine::chain::Selector;
use crate::error::Interrupted;
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::provider::DynProvider;
use crate::receiver::{Receiver, ReceiverSpec};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to restore, and where to.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub host: String,
    pub dataset: String,
    pub selector: Selector,
    pub destination: Destination,
    /// The identity for encrypted backups.
    pub keys: KeySource,
}

/// How the shards are fetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// Shards held in memory at once (at least 2).
    pub shards_in_flight: usize,
    /// Downloads at once per provider.
    pub concurrency: usize,
    /// A fixed piece size (`--piece-size`), else sized by the providers' measured rates.
    pub piece_size: Option<u64>,
}

/// Restores `req` from `providers` (in preference order), whose listing is `catalog`: plans
/// the chain, skips what a target already holds, streams the rest and reports it.
pub async fn restore(
    req: &RestoreRequest,
    providers: Vec<DynProvider>,
    catalog: &Catalog,
    settings: FetchSettings,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<RestoreReport> {
    let (host, dataset) = (req.host.as_str(), req.dataset.as_str());
    let mut p = plan(catalog, host, dataset, &req.selector, &req.destination).await?;
    // Before any receiver starts: a missing or wrong identity costs nothing.
    let manifests = p.links.iter_mut().map(|l| &mut l.manifest).collect();
    let ids = req.keys.unseal(manifests).await?;
    let what = Restored {
        host,
        dataset,
        backup_id: &p.chosen,
        destination: p.receiver.describe(),
        skipped: p.skipped.clone(),
    };
    if p.links.is_empty() {
        tracing::info!(
            "{} already holds every snapshot up to backup {}; nothing to restore",
            what.destination,
            p.chosen
        );
        return Ok(RestoreReport::new(what, Streamed::default()));
    }
    let mut fetcher = Fetcher::new(
        host,
        dataset,
        providers,
        settings.shards_in_flight,
        settings.concurrency,
        progress.clone(),
    )
    .with_identities(ids);
    if let Some(bytes) = settings.piece_size {
        fetcher = fetcher.with_piece_size(bytes);
    }
    let title = format!("restore {dataset}");
    let streamed = stream_links(&fetcher, &p.links, &p.receiver, &title, progress, cancel)
        .await
        .with_context(|| {
            format!(
                "restore of dataset {dataset:?} (backup {}) into {} failed",
                p.chosen, what.destination
            )
        })?;
    let report = RestoreReport::new(what, streamed);
    report.log_metrics();
    Ok(report)
}

/// Streams `links` in order, each into a new receiver made from `dest`.
pub async fn stream_links(
    fetcher: &Fetcher,
    links: &[Link],
    dest: &ReceiverSpec,
    what: &str,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<Streamed> {
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
    Ok(Streamed {
        applied,
        total_bytes: total,
        elapsed: start.elapsed(),
        providers: fetcher.report(),
    })
}

/// Checks that the shards applied cover the whole stream the backup recorded: contiguous from
/// byte 0, as many as the manifest lists, adding up to its `total_bytes`, and that exactly that
/// many bytes were written (plaintext lengths: a shard's stored length may differ). A restore that wrote less never succeeds.
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
        end += s.plain_len();
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
