//! The `offsite` binary: everything but the exit code lives in the library.

/// mimalloc, not glibc's allocator: glibc serves every shard-sized buffer (64 MiB by default,
/// above its largest mmap threshold) with its own `mmap` and frees it with `munmap`; mimalloc
/// reuses its address space and only decommits freed pages. Measured, not derived: a zstd+age
/// restore's system time halved (BENCHMARKS.md, "Compression and encryption").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc v3): how long
/// freed memory stays resident before it is returned to the system.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Freed shard buffers go back to the system at once (mimalloc keeps them 1 s by default):
    // the memory bound is shards in flight, not what they were a second ago. A user's own
    // MIMALLOC_PURGE_DELAY wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's options are not thread safe; no other thread exists yet.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
    }
    std::process::exit(offsite::main_with_args(std::env::args_os().collect()));
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc's purge delay: its default is 1000 ms in mimalloc v3.
    #[test]
    fn purge_delay_is_the_option_set() {
        let default = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
