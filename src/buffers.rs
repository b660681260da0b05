//! Buffers of shard-sized reads, kept for the next one. Reading a 1 MiB shard into fresh
//! memory costs 256 page faults and as many zeroed pages (offsite's allocator hands freed
//! memory back to the system at once, and only large buffers get huge pages): a 1 GiB
//! restore in 1 MiB shards from local disks spent twice the system time of one in 64 MiB
//! shards. Buffers up to [`POOLED`] bytes are kept, at most [`KEPT`] bytes in all.

use bytes::Bytes;
use std::sync::Mutex;

/// Larger buffers are not kept (they get huge pages, and would hold too much).
const POOLED: usize = 4 << 20;
/// The most bytes kept in all.
const KEPT: usize = 16 << 20;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes, reused where one is free.
pub fn take(len: usize) -> Vec<u8> {
    let kept = if len <= POOLED {
        FREE.lock().unwrap_or_else(|e| e.into_inner()).pop()
    } else {
        None
    };
    let mut buf = kept.unwrap_or_default();
    buf.clear();
    buf.reserve_exact(len);
    buf
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
        let buf = std::mem::take(&mut self.0);
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if (free.len() + 1) * POOLED <= KEPT {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_and_large_ones_are_not_kept() {
        let buf = take(1000);
        assert!(buf.is_empty() && buf.capacity() >= 1000);
        let mut filled = buf;
        filled.extend_from_slice(b"abc");
        let at = filled.as_ptr();
        let b = bytes(filled);
        let clone = b.clone();
        assert_eq!(&clone[..], b"abc");
        drop(b);
        drop(clone);
        // Other tests share the pool: the buffer is in it, not necessarily on top.
        let free = FREE.lock().unwrap();
        assert!(free.iter().any(|v| v.as_ptr() == at));
        assert!(free.iter().all(|v| v.capacity() <= POOLED));
        assert!(free.len() * POOLED <= KEPT);
        drop(free);
        let big = bytes(Vec::with_capacity(POOLED + 1));
        drop(big);
        assert!(FREE.lock().unwrap().iter().all(|v| v.capacity() <= POOLED));
    }
}
