//! Removes the objects of an unfinished backup that will never be resumed (`backup --restart`),
//! so that providers do not keep shards nothing refers to and `status` does not go on calling
//! it "unfinished; run offsite backup again to resume".
//!
//! Guarantees:
//! - Best effort: a provider that cannot be listed or refuses a delete is a warning, never an
//!   error; what is left behind is debris that `offsite prune` removes later.
//! - A backup that any provider holds a manifest of was written (the run stopped while writing
//!   manifests, or it is complete with gaps): it is a real backup and nothing of it is deleted.

use crate::error::Interrupted;
use crate::layout::{self, BackupId};
use crate::provider::{DynProvider, ObjectInfo};
use anyhow::Result;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// What the discard found and did, over every provider.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Objects deleted.
    pub deleted: usize,
    /// The backup has a manifest somewhere, so it was kept.
    pub kept_written: bool,
}

/// Deletes every object of backup `id` of `dataset` on every provider (see the module doc).
pub async fn discard(
    providers: &[DynProvider],
    host: &str,
    dataset: &str,
    id: &BackupId,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<Discarded> {
    let dir = layout::backup_dir(host, dataset, id);
    // A provider that cannot be listed may hold the backup's only manifest: then it was
    // written, and deleting the other providers' shards would break it. Delete nothing.
    let Some(listings) = list_all(providers, &dir, id, cancel).await? else {
        return Ok(Discarded {
            deleted: 0,
            kept_written: false,
        });
    };
    if let Some((p, _)) = listings
        .iter()
        .find(|(_, l)| l.iter().any(|o| o.path == layout::MANIFEST))
    {
        tracing::warn!(
            "backup {id} of {dataset:?} has a manifest on provider {}, so it was written: keeping it (`offsite sync` fills its gaps)",
            p.name()
        );
        return Ok(Discarded {
            deleted: 0,
            kept_written: true,
        });
    }
    let deleted = delete_all(&listings, &dir, concurrency, cancel).await?;
    Ok(Discarded {
        deleted,
        kept_written: false,
    })
}

/// Each provider's listing of `dir`; `None` when some provider could not be listed.
async fn list_all(
    providers: &[DynProvider],
    dir: &str,
    id: &BackupId,
    cancel: &CancellationToken,
) -> Result<Option<Vec<(DynProvider, Vec<ObjectInfo>)>>> {
    let listings = futures::future::join_all(providers.iter().map(|p| async {
        match p.list(dir).await {
            Ok(l) => Some((p.clone(), l)),
            Err(e) => {
                tracing::warn!("{e}: provider {} cannot be listed, so no object of discarded backup {id} is deleted anywhere (one may hold its manifest); `offsite prune` removes them later", p.name());
                None
            }
        }
    }));
    let listings: Vec<Option<_>> = tokio::select! {
        l = listings => l,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    Ok(listings.into_iter().collect())
}

/// Deletes every listed object (a failed delete is a warning); returns how many went.
async fn delete_all(
    listings: &[(DynProvider, Vec<ObjectInfo>)],
    dir: &str,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<usize> {
    let deletes = listings.iter().flat_map(|(p, l)| {
        l.iter().map(move |o| {
            let path = format!("{dir}/{}", o.path);
            async move {
                match p.delete(&path).await {
                    Ok(()) => 1,
                    Err(e) => {
                        tracing::warn!("{e}; it stays until `offsite prune` removes it");
                        0
                    }
                }
            }
        })
    });
    let deleted = futures::stream::iter(deletes)
        .buffer_unordered(concurrency.max(1))
        .fold(0, |n, d| async move { n + d });
    tokio::select! {
        n = deleted => Ok(n),
        _ = cancel.cancelled() => Err(Interrupted.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::provider::{Fault, MemoryProvider};
    use bytes::Bytes;
    use std::sync::Arc;

    const ID: &str = "20261121T020000Z-full-0a1b2c";

    fn put(p: &MemoryProvider, id: &str, name: &str) {
        let dir = layout::backup_dir("h", "tank/x", &BackupId::parse(id).unwrap());
        p.set_object(&format!("{dir}/{name}"), Bytes::from_static(b"x"));
    }

    async fn run(ps: &[Arc<MemoryProvider>]) -> Discarded {
        let dyns: Vec<DynProvider> = ps.iter().map(|p| p.clone() as DynProvider).collect();
        let id = BackupId::parse(ID).unwrap();
        discard(&dyns, "h", "tank/x", &id, 2, &CancellationToken::new())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_object_of_the_backup_goes_and_nothing_else() {
        let ps = [MemoryProvider::new("a"), MemoryProvider::new("b")].map(Arc::new);
        for p in &ps {
            put(p, ID, &layout::shard_name(0, 0));
            put(p, ID, &layout::shard_name(1, 10));
            put(p, "20261120T020000Z-full", &layout::shard_name(0, 0));
        }
        assert_eq!(run(&ps).await.deleted, 4);
        for p in &ps {
            assert_eq!(p.paths().len(), 1, "{:?}", p.paths());
            assert!(p.paths()[0].contains("20261120T020000Z-full/"));
        }
    }

    #[tokio::test]
    async fn a_backup_with_a_manifest_anywhere_is_kept() {
        let ps = [MemoryProvider::new("a"), MemoryProvider::new("b")].map(Arc::new);
        put(&ps[0], ID, &layout::shard_name(0, 0));
        put(&ps[1], ID, &layout::shard_name(0, 0));
        put(&ps[1], ID, layout::MANIFEST);
        let d = run(&ps).await;
        assert!(d.kept_written && d.deleted == 0);
        assert_eq!(ps[0].paths().len() + ps[1].paths().len(), 3);
    }

    #[tokio::test]
    async fn a_provider_that_cannot_be_listed_keeps_every_copy() {
        let ps = [MemoryProvider::new("a"), MemoryProvider::new("b")].map(Arc::new);
        for p in &ps {
            put(p, ID, &layout::shard_name(0, 0));
        }
        ps[0].inject(Fault {
            op: "list",
            path_contains: "".into(),
            kind: ErrorKind::Permanent,
            times: u32::MAX,
        });
        // It might hold the only manifest: nothing is deleted anywhere.
        assert_eq!(run(&ps).await.deleted, 0);
        assert_eq!((ps[0].paths().len(), ps[1].paths().len()), (1, 1));
    }
}
