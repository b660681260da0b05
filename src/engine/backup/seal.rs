//! The end of a backup: what each provider holds (by one listing each: the encoded names, or
//! the pieces placed there, at the recorded stored lengths), whether every shard is on
//! `min_providers` (erasure-coded: has `k` pieces stored), the manifests, and each provider's
//! outcome.

use super::lanes::{BackupLane, Shipping};
use super::ProviderOutcome;
use crate::engine::confirm::Listed;
use crate::error::Interrupted;
use crate::layout;
use crate::manifest::{Manifest, ShardRecord};
use anyhow::{bail, Result};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use tokio_util::sync::CancellationToken;

/// Shards each provider was confirmed to hold, by provider name.
pub(super) type Confirmed = HashMap<String, BTreeSet<u64>>;

/// Lists each provider once and keeps the shards whose object has the right size.
pub(super) async fn confirm_sizes(
    s: &Shipping,
    records: &[ShardRecord],
    cancel: &CancellationToken,
) -> Result<Confirmed> {
    let checks = s
        .lanes
        .iter()
        .filter(|l| !l.is_down())
        .map(|lane| async move {
            let listed = match lane.provider.list(&s.dir).await {
                Ok(l) => Listed::new(l),
                Err(e) => {
                    lane.drop_out(&e);
                    return (lane.name().to_string(), BTreeSet::new());
                }
            };
            let held = held(s, lane, &listed, records);
            (lane.name().to_string(), held)
        });
    tokio::select! {
        r = futures::future::join_all(checks) => Ok(r.into_iter().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

/// The shards `lane` reported uploaded (or held) whose object there (the stored shard, or
/// its piece) `listed` shows at its recorded length.
fn held(
    s: &Shipping,
    lane: &BackupLane,
    listed: &Listed,
    records: &[ShardRecord],
) -> BTreeSet<u64> {
    let uploaded = lane.uploaded.lock().unwrap().clone();
    let mut ok = BTreeSet::new();
    for r in records.iter().filter(|r| uploaded.contains(&r.index)) {
        let Some(placed) = s.placed(r, lane.name()) else {
            continue;
        };
        let name = placed.name;
        match listed.confirm(&name, placed.length) {
            Ok(()) => {
                ok.insert(r.index);
            }
            Err(m) => tracing::error!(
                "provider {}: shard {} was reported uploaded but the remote holds {}, not {} bytes; it counts as missing",
                lane.name(),
                name,
                m.found.map_or("nothing".to_string(), |s| format!("{s} bytes")),
                m.expected
            ),
        }
    }
    ok
}

/// Fails unless every shard is confirmed on `min_providers` providers (erasure-coded: `k` of
/// its pieces).
pub(super) fn check_min_providers(
    s: &Shipping,
    records: &[ShardRecord],
    confirmed: &Confirmed,
) -> Result<()> {
    for r in records {
        let holders = confirmed
            .values()
            .filter(|set| set.contains(&r.index))
            .count();
        if holders < s.needed() {
            bail!(
                "{} after checking sizes; no manifest was written (a re-run resumes)",
                super::lanes::too_few(s, r.index, r.offset, holders)
            );
        }
    }
    Ok(())
}

/// Writes the manifest (`body`, its stored bytes) to every provider still in the run; returns
/// those that took it. A resumed backup's manifest already in place is kept unless `rewrite`
/// (a shard was stored afresh, so the old manifest names other bytes).
pub(super) async fn write_manifests(
    dir: &str,
    body: Bytes,
    lanes: &[BackupLane],
    rewrite: bool,
    cancel: &CancellationToken,
) -> Result<BTreeSet<String>> {
    let path = format!("{dir}/{}", layout::MANIFEST);
    let writes = lanes.iter().filter(|l| !l.is_down()).map(|lane| {
        let (body, path) = (body.clone(), path.clone());
        async move {
            // A resumed backup's manifest describes the same verified shards: keep it.
            if !rewrite && lane.present.size(layout::MANIFEST).is_some() {
                return Some(lane.name().to_string());
            }
            match lane.provider.put(&path, body, None).await {
                Ok(()) => Some(lane.name().to_string()),
                Err(e) => {
                    lane.drop_out(&e);
                    None
                }
            }
        }
    });
    tokio::select! {
        r = futures::future::join_all(writes) => Ok(r.into_iter().flatten().collect()),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

/// What each provider ended up with.
pub(super) fn outcomes(
    lanes: &[BackupLane],
    manifest: &Manifest,
    confirmed: &Confirmed,
    written: &BTreeSet<String>,
) -> Vec<ProviderOutcome> {
    lanes
        .iter()
        .map(|lane| {
            // A provider dropped from the run was not listed: what rclone reported uploaded is
            // the best knowledge (sync and status check it later).
            let uploaded = lane.uploaded.lock().unwrap().clone();
            let held = confirmed
                .get(lane.name())
                .or(lane.is_down().then_some(&uploaded));
            // Erasure-coded: only the shards placement puts a piece of there.
            let placed: Vec<u64> = manifest
                .shards
                .iter()
                .map(|s| s.index)
                .filter(|&i| {
                    manifest
                        .erasure
                        .as_ref()
                        .is_none_or(|e| e.piece_on(i, lane.name()).is_some())
                })
                .collect();
            ProviderOutcome {
                provider: lane.name().to_string(),
                pieces: manifest.erasure.is_some().then_some(placed.len() as u64),
                missing_shards: placed
                    .into_iter()
                    .filter(|i| !held.is_some_and(|h| h.contains(i)))
                    .collect(),
                manifest_written: written.contains(lane.name()),
                error: lane.down_reason().map(str::to_string),
            }
        })
        .collect()
}
