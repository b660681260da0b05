//! Buffers of shard-sized reads, kept for the next one. Reading a 1 MiB shard into fresh
//! memory costs 256 page faults and as many zeroed pages (offsite's allocator hands freed
//! memory back to the system at once, and only large buffers get huge pages): a 1 GiB
//! restore in 1 MiB shards from local disks spent twice the system time of one in 64 MiB
//! shards. Buffers up to [`POOLED`] bytes are kept, at most [`KEPT`] bytes in all, and one
//! is only reused for a read of at least half its size.

use bytes::Bytes;
use std::sync::Mutex;

/// Larger buffers are not kept (they get huge pages, and would hold too much).
const POOLED: usize = 4 << 20;
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

    /// Keeps `buf` if it is small enough and there is room.
    fn give(&self, buf: Vec<u8>) {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if buf.capacity() <= POOLED && (free.len() + 1) * POOLED <= KEPT {
            free.push(buf);
        }
    }
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
    if buf.capacity() > POOLED {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Returned(buf))
}

struct Returned(Vec<u8>);

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        POOL.give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_reused_only_for_a_read_of_at_least_half_its_size() {
        let pool = Pool::new();
        let mut buf = pool.take(1000);
        assert!(buf.is_empty() && buf.capacity() >= 1000);
        buf.extend_from_slice(b"abc");
        let at = buf.as_ptr();
        pool.give(buf);
        let small = pool.take(100);
        assert_ne!(small.as_ptr(), at, "a 1000-byte buffer for 100 bytes");
        let again = pool.take(600);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty(), "no stale bytes");
    }

    #[test]
    fn large_buffers_are_not_kept_and_the_pool_is_bounded() {
        let pool = Pool::new();
        pool.give(Vec::with_capacity(POOLED + 1));
        assert!(pool.0.lock().unwrap().is_empty());
        for _ in 0..10 {
            pool.give(Vec::with_capacity(POOLED));
        }
        assert_eq!(pool.0.lock().unwrap().len(), KEPT / POOLED);
    }

    #[test]
    fn bytes_give_the_buffer_back_when_the_last_clone_drops() {
        let b = bytes(b"xyz".to_vec());
        let clone = b.clone();
        drop(b);
        assert_eq!(&clone[..], b"xyz");
    }
}
