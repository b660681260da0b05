//! Reading the source: one shard at a time, each handed to an upload task, never more than
//! `shards_in_flight` in memory (each holding at most its plaintext and its stored bytes).
//! When resuming, each recorded shard's plaintext is re-hashed and compared with the journal
//! before anything after it is uploaded.

use super::lanes::{ship, Shard, Shipping};
use super::BackupJob;
use crate::error::{Interrupted, SourceChanged};
use crate::manifest::ShardRecord;
use anyhow::{Context, Result};
use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Uploads = JoinSet<Result<ShardRecord>>;

/// Reads shards and hands each to an upload task, until end of stream; returns the shards'
/// records in stream order once every upload has ended.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    job: &BackupJob,
    stdout: &mut R,
    shipping: &Arc<Shipping>,
    tasks: &mut Uploads,
    cancel: &CancellationToken,
) -> Result<Vec<ShardRecord>> {
    let memory = Arc::new(Semaphore::new(job.shards_in_flight));
    let mut records = Vec::new();
    let (mut index, mut offset) = (0u64, 0u64);
    loop {
        let permit = room_for_a_shard(&memory, tasks, &mut records, cancel).await?;
        let data = tokio::select! {
            _ = cancel.cancelled() => return Err(Interrupted.into()),
            r = read_shard(stdout, job.shard_size) => r
                .with_context(|| format!("reading {} at byte {offset}", job.source_desc))?,
        };
        let len = data.len() as u64;
        if len == 0 {
            break;
        }
        let journaled = match job.resume.as_ref().and_then(|r| r.get(&index)) {
            Some(rec) => Some(check_recorded(job, rec, &data).await?),
            None => None,
        };
        let shard = Shard {
            index,
            offset,
            data,
            journaled,
        };
        spawn_ship(job, shard, shipping, tasks, permit);
        index += 1;
        offset += len;
        if len < job.shard_size {
            break;
        }
    }
    drain(tasks, &mut records, cancel).await?;
    records.sort_by_key(|r| r.index);
    check_nothing_recorded_after(job, index, offset)?;
    Ok(records)
}

/// Waits for a free place in memory, collecting finished uploads meanwhile.
async fn room_for_a_shard(
    memory: &Arc<Semaphore>,
    tasks: &mut Uploads,
    records: &mut Vec<ShardRecord>,
    cancel: &CancellationToken,
) -> Result<OwnedSemaphorePermit> {
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Interrupted.into()),
            Some(done) = tasks.join_next() => records.push(done??),
            p = memory.clone().acquire_owned() => return Ok(p.expect("semaphore is never closed")),
        }
    }
}

/// Starts the upload of `shard`; its place in memory is freed when the upload task ends, or
/// earlier with a spool (see `lanes::ship`).
fn spawn_ship(
    job: &BackupJob,
    shard: Shard,
    shipping: &Arc<Shipping>,
    tasks: &mut Uploads,
    permit: OwnedSemaphorePermit,
) {
    let shipping = shipping.clone();
    let id = job.id.to_string();
    tasks.spawn(async move {
        ship(shard, permit, &shipping)
            .await
            .with_context(|| format!("backup {id}"))
    });
}

/// Waits for every upload still running.
async fn drain(
    tasks: &mut Uploads,
    records: &mut Vec<ShardRecord>,
    cancel: &CancellationToken,
) -> Result<()> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(Interrupted.into()),
            done = tasks.join_next() => match done {
                Some(done) => records.push(done??),
                None => return Ok(()),
            },
        }
    }
}

/// A resumed stream must reach every shard the unfinished backup recorded.
fn check_nothing_recorded_after(job: &BackupJob, index: u64, offset: u64) -> Result<()> {
    let Some(missing) = job
        .resume
        .as_ref()
        .and_then(|r| r.values().find(|r| r.index >= index))
    else {
        return Ok(());
    };
    Err(SourceChanged {
        dataset: job.dataset.clone(),
        backup_id: job.id.to_string(),
        index: missing.index,
        offset: missing.offset,
        what: format!("the stream ended after {offset} bytes, before this recorded shard"),
    }
    .into())
}

/// Hashes a re-read shard's plaintext and compares it with what the unfinished backup
/// journaled; returns the journaled record.
async fn check_recorded(job: &BackupJob, rec: &ShardRecord, data: &Bytes) -> Result<ShardRecord> {
    let sha = crate::hashing::sha256_blocking(data.clone()).await?;
    let journaled = rec.plain_sha(job.codec.encoding()).unwrap_or("(none)");
    if rec.plain_len() != data.len() as u64 || journaled != sha {
        return Err(SourceChanged {
            dataset: job.dataset.clone(),
            backup_id: job.id.to_string(),
            index: rec.index,
            offset: rec.offset,
            what: format!(
                "{} bytes with SHA-256 {} now, {} bytes with SHA-256 {} then",
                data.len(),
                &sha[..12],
                rec.plain_len(),
                &journaled[..12.min(journaled.len())]
            ),
        }
        .into());
    }
    Ok(rec.clone())
}

/// Reads up to `size` bytes: fewer only at end of stream.
async fn read_shard<R: AsyncRead + Unpin>(r: &mut R, size: u64) -> std::io::Result<Bytes> {
    let mut buf = crate::buffers::take(size as usize);
    while (buf.len() as u64) < size {
        // A reused buffer can hold more than `size`: never read past the shard.
        let room = size as usize - buf.len();
        if r.read_buf(&mut bytes::BufMut::limit(&mut buf, room))
            .await?
            == 0
        {
            break;
        }
    }
    Ok(crate::buffers::bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::read_shard;

    #[tokio::test]
    async fn a_shard_is_never_longer_than_asked_whatever_the_buffer() {
        // A kept buffer larger than the shard (a resumed backup's stored shards go back to
        // the pool) must not let one read run past the shard's end.
        drop(crate::buffers::bytes(Vec::with_capacity(96 << 10)));
        let data = vec![7u8; 300 << 10];
        let mut r = &data[..];
        for want in [64 << 10; 5] {
            let shard = read_shard(&mut r, want).await.unwrap();
            assert!(shard.len() as u64 <= want, "{} > {want}", shard.len());
            drop(shard);
        }
        let mut r = &data[..];
        assert_eq!(read_shard(&mut r, 50 << 10).await.unwrap().len(), 50 << 10);
        assert_eq!(read_shard(&mut r, 50 << 10).await.unwrap().len(), 50 << 10);
    }
}
