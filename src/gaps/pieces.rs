//! Gap detection for an erasure-coded backup: its reference is the pieces, each on the one
//! provider placement puts it on, and its strength is how many good pieces each shard keeps.

use super::{ProviderFindings, RefShard};
use crate::manifest::Manifest;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// How many shards of an erasure-coded backup keep all `k + m` good pieces (`full`), fewer but
/// at least `k` (`degraded`: still restorable), or fewer than `k` (`lost`: a restore fails).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Strength {
    pub full: u64,
    pub degraded: u64,
    pub lost: u64,
    /// The first lost shard: where a restore fails.
    pub first_lost: Option<u64>,
}

/// The reference objects of an erasure-coded backup: every piece of every shard, named and
/// sized as the manifest records it, placed on its holder.
pub(super) fn reference(m: &Manifest) -> Vec<RefShard> {
    let Some(e) = m.erasure.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(m.shards.len() * e.scheme().total());
    for s in &m.shards {
        for (p, piece) in s.pieces.iter().enumerate() {
            out.push(RefShard {
                index: s.index,
                name: m.piece_object(s, p),
                length: piece.length,
                sha256: Some(piece.sha256.clone()),
                md5: piece.md5.clone(),
                sha1: piece.sha1.clone(),
                piece: Some(p),
                holder: Some(e.holder(s.index, p).to_string()),
            });
        }
    }
    out
}

/// The strength of the erasure-coded backup of `m` from its providers' findings. A piece is
/// good when its holder was listed and holds it at the right size with no wrong hash; an
/// unreachable provider's pieces are not good.
pub(super) fn strength(m: &Manifest, providers: &[ProviderFindings]) -> Option<Strength> {
    let e = m.erasure.as_ref()?;
    let bad: HashMap<&str, BTreeSet<u64>> = providers
        .iter()
        .filter(|f| f.reachable)
        .map(|f| (f.provider.as_str(), f.bad_shards()))
        .collect();
    let mut out = Strength::default();
    for s in &m.shards {
        let good = (0..s.pieces.len())
            .filter(|&p| {
                bad.get(e.holder(s.index, p))
                    .is_some_and(|b| !b.contains(&s.index))
            })
            .count();
        if good >= e.scheme().total() {
            out.full += 1;
        } else if good >= e.k {
            out.degraded += 1;
        } else {
            out.lost += 1;
            out.first_lost.get_or_insert(s.index);
        }
    }
    Some(out)
}
