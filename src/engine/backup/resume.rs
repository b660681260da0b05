//! A resumed backup's journaled shard, once its re-read plaintext matched the journal's
//! SHA-256: which stored bytes go where, so that one backup never holds two encodings of one
//! shard (an encryption has a fresh file key each time, so re-encoding gives other bytes).
//!
//! - Every provider still in the run lists the object at the journaled stored length: nothing
//!   is encoded or sent, the journaled record is the record.
//! - Some lack it. Unencrypted, the shard is encoded afresh: compression alone is
//!   deterministic, so bytes equal to the journaled ones go to those lacking it. Otherwise (and
//!   always when encrypted: a fresh file key gives other bytes) the journaled object is read
//!   back from a provider that holds it, checked against the journaled SHA-256, and those bytes
//!   go to the ones lacking it (and to a holder whose copy failed the check).
//! - No provider serves a good copy: every copy is deleted, the shard is encoded afresh, the
//!   fresh encoding is journaled (a later journal line wins) and sent to every provider, and
//!   it is the record.

use super::encode::encode;
use super::lanes::{BackupLane, Delivery, Shipping};
use crate::hashing;
use crate::manifest::ShardRecord;
use anyhow::{Context, Result};
use bytes::Bytes;
use std::collections::BTreeSet;

/// What the upload tasks do with journaled shard `j`, whose plaintext `plain` matched it.
pub(super) async fn delivery(plain: Bytes, j: ShardRecord, s: &Shipping) -> Result<Delivery> {
    let name = j.name(s.codec.encoding());
    let live = || s.lanes.iter().enumerate().filter(|(_, l)| !l.is_down());
    let mut lacking: BTreeSet<usize> = live()
        .filter(|(_, l)| l.present.size(&name) != Some(j.length))
        .map(|(i, _)| i)
        .collect();
    if lacking.is_empty() {
        return Ok(Delivery {
            record: j,
            stored: None,
            send_to: lacking,
        });
    }
    let (index, offset) = (j.index, j.offset);
    let plain_sha = j.plain_sha(s.codec.encoding()).map(str::to_string);
    let encode_now = |plain| async {
        encode(&s.codec, index, offset, plain, plain_sha.clone())
            .await
            .with_context(|| format!("encoding shard {index} (byte {offset})"))
    };
    // Compression alone is deterministic: encoding again is cheaper than reading back. An
    // encryption never gives the same bytes twice, so a holder's copy is tried first.
    let mut fresh = None;
    let mut plain = Some(plain);
    if s.codec.recipients.is_none() {
        let again = encode_now(plain.take().expect("not taken yet")).await?;
        if again.record.sha256 == j.sha256 {
            return Ok(Delivery {
                record: j,
                stored: Some(again.stored),
                send_to: lacking,
            });
        }
        fresh = Some(again);
    }
    let path = s.path(&j);
    let holders: Vec<usize> = live()
        .map(|(i, _)| i)
        .filter(|i| !lacking.contains(i))
        .collect();
    for i in holders {
        match fetch(&s.lanes[i], &path, &j).await {
            Ok(stored) => {
                return Ok(Delivery {
                    record: j,
                    stored: Some(stored),
                    send_to: lacking,
                })
            }
            Err(why) => {
                tracing::warn!(
                    "provider {}: {path} cannot be reused ({why}); it is sent again",
                    s.lanes[i].name()
                );
                lacking.insert(i);
            }
        }
    }
    let fresh = match (fresh, plain) {
        (Some(fresh), _) => fresh,
        (None, Some(plain)) => encode_now(plain).await?,
        (None, None) => unreachable!("the plaintext is encoded at most once"),
    };
    store_afresh(&path, fresh.record, fresh.stored, s).await
}

/// The journaled object `j` as `lane` holds it, if it is the journaled bytes.
async fn fetch(lane: &BackupLane, path: &str, j: &ShardRecord) -> Result<Bytes, String> {
    let stored = tokio::select! {
        biased;
        _ = lane.dropped() => return Err(lane.down_error()),
        r = lane.provider.get(path, j.length) => r.map_err(|e| e.to_string())?,
    };
    let sha = hashing::sha256_blocking(stored.clone())
        .await
        .map_err(|e| e.to_string())?;
    if stored.len() as u64 != j.length || sha != j.sha256 {
        return Err(format!(
            "it reads back as {} bytes with SHA-256 {}, the journal says {} bytes with {}",
            stored.len(),
            &sha[..12],
            j.length,
            &j.sha256[..12.min(j.sha256.len())]
        ));
    }
    Ok(stored)
}

/// No provider serves the journaled bytes: delete every copy (so no provider keeps another
/// encoding at the same length), journal the fresh record, and send it to every lane. A
/// provider that dropped out of the run, or fails the delete, keeps its old copy, which a
/// listing by size would take for the new one: a warning names it.
async fn store_afresh(
    path: &str,
    record: ShardRecord,
    stored: Bytes,
    s: &Shipping,
) -> Result<Delivery> {
    let name = record.name(s.codec.encoding());
    let listed = |l: &&BackupLane| l.present.size(&name).is_some();
    let stale = |lane: &BackupLane| {
        tracing::warn!(
            "provider {}: its copy of {path} is from before the resume and stays there; once \
             the provider is back, `offsite sync --deep` replaces it",
            lane.name()
        )
    };
    let deletes = s.lanes.iter().filter(listed).map(|lane| async move {
        if lane.is_down() {
            stale(lane);
        } else if let Err(e) = lane.provider.delete(path).await {
            lane.drop_out(&e);
            stale(lane);
        }
    });
    futures::future::join_all(deletes).await;
    s.journal(&record)?;
    Ok(Delivery {
        record,
        stored: Some(stored),
        send_to: (0..s.lanes.len()).collect(),
    })
}
