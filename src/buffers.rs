//! Buffers of shard-sized reads, kept for the next one. Reading a 1 MiB shard into fresh
//! memory costs 256 page faults and as many zeroed pages (offsite's allocator hands freed
//! memory back to the system at once, and only large buffers get huge pages): a 1 GiB
//! restore in 1 MiB shards from local disks spent twice the system time of one in 64 MiB
//! shards. Buffers of [`MIN_POOLED`] to [`POOLED`] bytes are kept, at most [`KEPT`] bytes in
//! all, and one is only reused for a read of at least half its size.

use bytes::Bytes;
use std::sync::Mutex;

/// Larger buffers are not kept (they get huge pages, and would hold too much).
const POOLED: usize = 4 << 20;
/// Smaller ones are not either: their page faults cost little, and a manifest's or a probe's
/// buffer would take the place of a shard's.
const MIN_POOLED: usize = 64 << 10;
/// The most bytes kept in all.
const KEPT: usize = 16 << 20;

/// Freed buffers. One static instance serves the process; tests make their own.
struct Pool(Mutex<Vec<Vec<u8>>>);

static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    /// An empty buffer with room for `len` bytes: a kept one of at most twice that, else new.
    fn take(&self, len: usize) -> Vec<u8> {
        let fits = |v: &Vec<u8>| v.capacity() >= len && v.capacity() <= len.saturating_mul(2);
        let kept = if len <= POOLED {
            let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
            free.iter().position(fits).map(|i| free.swap_remove(i))
        } else {
            None
        };
        let mut buf = kept.unwrap_or_default();
        buf.clear();
        buf.reserve_exact(len);
        buf
    }

    /// Keeps `buf` if it is of a size worth keeping and there is room.
    fn give(&self, buf: Vec<u8>) {
        if !worth_keeping(&buf) {
            return;
        }
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = free.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= KEPT {
            free.push(buf);
        }
    }

    /// `buf` as `Bytes` that give it back to this pool when the last clone is dropped.
    fn bytes(&'static self, buf: Vec<u8>) -> Bytes {
        if !worth_keeping(&buf) {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Returned(buf, self))
    }
}

fn worth_keeping(buf: &Vec<u8>) -> bool {
    (MIN_POOLED..=POOLED).contains(&buf.capacity())
}

/// An empty buffer with room for `len` bytes (and possibly more: read into it with a limit).
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// A buffer of `len` zeroes: a kept one zeroed again, or fresh memory the allocator knows is
/// zero (no write to every page of a large buffer before it is read into).
pub fn take_zeroed(len: usize) -> Vec<u8> {
    if len > POOLED {
        return vec![0; len];
    }
    let mut buf = take(len);
    buf.resize(len, 0);
    buf
}

/// `buf` as `Bytes` that give it back for [`take`] when the last clone is dropped.
pub fn bytes(buf: Vec<u8>) -> Bytes {
    POOL.bytes(buf)
}

struct Returned(Vec<u8>, &'static Pool);

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        self.1.give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_pool() -> &'static Pool {
        Box::leak(Box::new(Pool::new()))
    }

    fn held(pool: &Pool) -> Vec<usize> {
        pool.0.lock().unwrap().iter().map(Vec::capacity).collect()
    }

    #[test]
    fn a_kept_buffer_is_reused_only_for_a_read_of_at_least_half_its_size() {
        let pool = Pool::new();
        let mut buf = pool.take(100_000);
        assert!(buf.is_empty() && buf.capacity() >= 100_000);
        buf.extend_from_slice(b"abc");
        let at = buf.as_ptr();
        pool.give(buf);
        let small = pool.take(10_000);
        assert_ne!(small.as_ptr(), at, "a 100 kB buffer for 10 kB");
        let again = pool.take(60_000);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty(), "no stale bytes");
    }

    #[test]
    fn only_buffers_worth_keeping_are_kept_and_the_pool_is_bounded_in_bytes() {
        let pool = Pool::new();
        pool.give(Vec::with_capacity(POOLED + 1));
        pool.give(Vec::with_capacity(MIN_POOLED - 1));
        assert!(held(&pool).is_empty());
        for _ in 0..10 {
            pool.give(Vec::with_capacity(POOLED));
        }
        assert_eq!(held(&pool).len(), KEPT / POOLED);
        let pool = Pool::new();
        for _ in 0..(KEPT / MIN_POOLED + 5) {
            pool.give(Vec::with_capacity(MIN_POOLED));
        }
        assert_eq!(
            held(&pool).len(),
            KEPT / MIN_POOLED,
            "small buffers count by size"
        );
    }

    #[test]
    fn bytes_give_the_buffer_back_when_the_last_clone_drops() {
        let pool = own_pool();
        let mut buf = Vec::with_capacity(MIN_POOLED);
        buf.extend_from_slice(b"xyz");
        let b = pool.bytes(buf);
        let clone = b.clone();
        drop(b);
        assert!(held(pool).is_empty(), "a clone still reads it");
        assert_eq!(&clone[..], b"xyz");
        drop(clone);
        assert_eq!(held(pool), [MIN_POOLED]);
        drop(pool.bytes(b"tiny".to_vec()));
        assert_eq!(held(pool), [MIN_POOLED], "a tiny buffer is not kept");
    }
}
