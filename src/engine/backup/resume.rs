//! A resumed backup's journaled shard, once its re-read plaintext matched the journal's
//! SHA-256: which stored bytes go where, so that one backup never holds two encodings of one
//! shard (an encryption has a fresh file key each time, so re-encoding gives other bytes).
//!
//! - Every provider still in the run lists its object (the stored shard, or the piece placed
//!   there) at the journaled length: nothing is encoded or sent, the journaled record is the
//!   record.
//! - Some lack it. Unencrypted, the shard is encoded afresh: compression alone is
//!   deterministic (and so is the erasure code), so bytes equal to the journaled ones go to
//!   those lacking it. Otherwise (and always when encrypted: a fresh file key gives other
//!   bytes) the journaled object is read back from a provider that holds it, checked against
//!   the journaled SHA-256, and those bytes go to the ones lacking it (and to a holder whose
//!   copy failed the check); erasure-coded, `k` checked pieces are read back and the missing
//!   ones rebuilt from them.
//! - No provider serves a good copy (or `k` good pieces): every copy is deleted, the shard is
//!   encoded afresh, the fresh encoding is journaled (a later journal line wins) and sent to
//!   every provider, and it is the record.

use super::encode::{encode, Payload};
use super::lanes::{BackupLane, Delivery, Placed, Shipping};
use crate::erasure;
use crate::hashing;
use crate::manifest::ShardRecord;
use anyhow::{Context, Result};
use bytes::Bytes;
use std::collections::BTreeSet;

/// Journaled record `j` with the MD5 and SHA-1 it lacks taken from `again`, the same stored
/// bytes encoded again in this run: a provider of this run may list a hash that none of the
/// interrupted run's did. (A shard every provider already holds is not encoded again, and
/// keeps the hashes it was journaled with.)
fn with_natives_of(mut j: ShardRecord, again: &ShardRecord) -> ShardRecord {
    j.md5 = j.md5.or_else(|| again.md5.clone());
    j.sha1 = j.sha1.or_else(|| again.sha1.clone());
    for (p, q) in j.pieces.iter_mut().zip(&again.pieces) {
        if p.sha256 == q.sha256 {
            p.md5 = p.md5.take().or_else(|| q.md5.clone());
            p.sha1 = p.sha1.take().or_else(|| q.sha1.clone());
        }
    }
    j
}

/// What the upload tasks do with journaled shard `j`, whose plaintext `plain` matched it.
pub(super) async fn delivery(plain: Bytes, j: ShardRecord, s: &Shipping) -> Result<Delivery> {
    let mut lacking: BTreeSet<usize> = live(s)
        .filter(|&i| {
            let lane = &s.lanes[i];
            s.placed(&j, lane.name())
                .is_some_and(|p| lane.present.size(&p.name) != Some(p.length))
        })
        .collect();
    if lacking.is_empty() {
        return Ok(Delivery {
            record: j,
            payload: None,
            send_to: lacking,
        });
    }
    let (index, offset) = (j.index, j.offset);
    let plain_sha = j.plain_sha(s.encoder.codec.encoding()).map(str::to_string);
    let encode_now = |plain| async {
        encode(&s.encoder, index, offset, plain, plain_sha.clone())
            .await
            .with_context(|| format!("encoding shard {index} (byte {offset})"))
    };
    // Compression alone is deterministic: encoding again is cheaper than reading back. An
    // encryption never gives the same bytes twice, so a holder's copy is tried first.
    let mut fresh = None;
    let mut plain = Some(plain);
    if s.encoder.codec.recipients.is_none() {
        let again = encode_now(plain.take().expect("not taken yet")).await?;
        if again.record.sha256 == j.sha256 {
            return Ok(Delivery {
                record: with_natives_of(j, &again.record),
                payload: Some(again.payload),
                send_to: lacking,
            });
        }
        fresh = Some(again);
    }
    if let Some(payload) = read_back(&j, &mut lacking, s).await {
        return Ok(Delivery {
            record: j,
            payload: Some(payload),
            send_to: lacking,
        });
    }
    let fresh = match (fresh, plain) {
        (Some(fresh), _) => fresh,
        (None, Some(plain)) => encode_now(plain).await?,
        (None, None) => unreachable!("the plaintext is encoded at most once"),
    };
    store_afresh(fresh.record, fresh.payload, s).await
}

/// Indexes of the lanes still in the run.
fn live(s: &Shipping) -> impl Iterator<Item = usize> + '_ {
    (0..s.lanes.len()).filter(|&i| !s.lanes[i].is_down())
}

/// The journaled bytes of `j`, read back from the lanes that list their object of it: the
/// stored shard from the first that serves it intact, or every piece rebuilt from `k` intact
/// ones. A holder whose copy fails its check joins `lacking`.
async fn read_back(
    j: &ShardRecord,
    lacking: &mut BTreeSet<usize>,
    s: &Shipping,
) -> Option<Payload> {
    let holders: Vec<usize> = live(s).filter(|i| !lacking.contains(i)).collect();
    let scheme = s.erasure.as_ref().map(|e| e.scheme());
    let mut pieces: Vec<Option<Bytes>> = vec![None; scheme.map_or(0, |e| e.total())];
    for i in holders {
        let lane = &s.lanes[i];
        let Some(placed) = s.placed(j, lane.name()) else {
            continue;
        };
        let want = placed.piece.map_or(&j.sha256, |p| &j.pieces[p].sha256);
        match fetch(lane, s, &placed, want).await {
            Ok(bytes) => match placed.piece {
                None => return Some(Payload::Whole(bytes)),
                Some(p) => pieces[p] = Some(bytes),
            },
            Err(why) => {
                tracing::warn!(
                    "provider {}: {} cannot be reused ({why}); it is sent again",
                    lane.name(),
                    s.path(&placed)
                );
                lacking.insert(i);
            }
        }
        if scheme.is_some_and(|e| pieces.iter().flatten().count() == e.k) {
            break;
        }
    }
    let scheme = scheme?;
    let length = j.length;
    let rebuilt =
        tokio::task::spawn_blocking(move || erasure::rebuild(scheme, length, &pieces)).await;
    match rebuilt {
        Ok(Ok(all)) => Some(Payload::Pieces(all)),
        Ok(Err(e)) => {
            tracing::warn!(
                "shard {} cannot be rebuilt from the pieces held ({e}); it is stored afresh",
                j.index
            );
            None
        }
        Err(_) => None,
    }
}

/// `lane`'s object `placed`, if it is the journaled bytes (SHA-256 `want`).
async fn fetch(
    lane: &BackupLane,
    s: &Shipping,
    placed: &Placed,
    want: &str,
) -> Result<Bytes, String> {
    let path = s.path(placed);
    let stored = tokio::select! {
        biased;
        _ = lane.dropped() => return Err(lane.down_error()),
        r = lane.provider.get(&path, placed.length) => r.map_err(|e| e.to_string())?,
    };
    let sha = hashing::sha256_blocking(stored.clone())
        .await
        .map_err(|e| e.to_string())?;
    if stored.len() as u64 != placed.length || sha != want {
        return Err(format!(
            "it reads back as {} bytes with SHA-256 {}, the journal says {} bytes with {}",
            stored.len(),
            &sha[..12],
            placed.length,
            &want[..12.min(want.len())]
        ));
    }
    Ok(stored)
}

/// No provider serves the journaled bytes: delete every copy (so no provider keeps another
/// encoding at the same length), journal the fresh record, and send it to every lane. A
/// provider that dropped out of the run, or fails the delete, keeps its old copy, which a
/// listing by size would take for the new one: a warning names it.
async fn store_afresh(record: ShardRecord, payload: Payload, s: &Shipping) -> Result<Delivery> {
    let stale = |lane: &BackupLane, path: &str| {
        tracing::warn!(
            "provider {}: its copy of {path} is from before the resume and stays there; once \
             the provider is back, `offsite sync --deep` replaces it",
            lane.name()
        )
    };
    let deletes = s.lanes.iter().filter_map(|lane| {
        let placed = s.placed(&record, lane.name())?;
        lane.present.size(&placed.name)?;
        let path = s.path(&placed);
        Some(async move {
            if lane.is_down() {
                stale(lane, &path);
            } else if let Err(e) = lane.provider.delete(&path).await {
                lane.drop_out(&e);
                stale(lane, &path);
            }
        })
    });
    futures::future::join_all(deletes).await;
    s.journal(&record)?;
    Ok(Delivery {
        record,
        payload: Some(payload),
        send_to: (0..s.lanes.len()).collect(),
    })
}
