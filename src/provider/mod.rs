//! Storage providers: one small trait, implemented by [`RcloneProvider`] (the real thing) and
//! [`MemoryProvider`] (an in-memory fake for tests), and wrapped by layers (STYLE.md §3). Paths
//! are relative to the provider's root and use `/`.
//!
//! [`from_config`] builds every configured provider as one stack, outermost first:
//!
//! - [`DryRun`] (only with `Stack { dry_run: true }`): reads pass, writes are recorded and
//!   skipped;
//! - [`Retry`]: transient failures are retried with backoff, and reported to the run's
//!   progress; every call and every backoff ends at once when the run is cancelled;
//! - [`Limit`]: at most `concurrency` calls on the provider at once, the only place that key is
//!   enforced; a call holds its permit while it runs, not while [`Retry`] backs off;
//! - [`Timeout`]: each attempt ends after the `timeout` key (time spent waiting for a permit
//!   does not count);
//! - [`RcloneProvider`].
//!
//! A wrapper implements [`Layer`] (see `layer.rs`): it overrides [`Layer::around`] to act on
//! every call, or only the one method it changes (a test wrapper that truncates uploads
//! overrides `put`), and the blanket `impl<L: Layer> Provider for L` forwards the rest. Build a
//! test stack from the same pieces: `Limit::new(MemoryProvider::new("a"), 2)`.

mod dry_run;
mod layer;
mod limit;
mod memory;
pub mod priority;
mod rclone;
mod retry;
mod timeout;

pub use dry_run::DryRun;
pub use layer::{Layer, Op};
pub use limit::Limit;
pub use memory::{Fault, MemoryProvider};
pub use rclone::RcloneProvider;
pub use retry::Retry;
pub use timeout::Timeout;

use crate::error::ProviderError;
pub use crate::hashing::NativeHashes;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;

/// One object in a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the listed directory.
    pub path: String,
    pub size: u64,
    /// The backend's MD5 and SHA-1 of the object, lower-case hex, when the listing was asked
    /// for hashes ([`Provider::list_hashed`]) and the backend has them.
    pub md5: Option<String>,
    pub sha1: Option<String>,
}

/// Space on a provider, where the backend can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub total: Option<u64>,
    pub used: Option<u64>,
    pub free: Option<u64>,
}

/// Called with the number of bytes sent so far during an upload.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

pub trait Provider: Send + Sync {
    fn name(&self) -> &str;

    /// Stores `data` at `path`, replacing what was there.
    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Reads the object at `path` whole. `limit` bounds what is read: a larger object is an error.
    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>>;

    /// Reads `len` bytes of the object at `path` from byte `offset` on; fewer when the object
    /// ends sooner (the caller checks the length). Restore uses it to fetch one shard in pieces
    /// from several providers at once. The default reads the whole object and slices it;
    /// providers that can read a range (rclone: `cat --offset --count`) override it.
    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(async move {
            let all = self.get(path, u64::MAX).await?;
            Ok(slice_range(&all, offset, len))
        })
    }

    /// Lists every object below `dir`, recursively. A missing directory is an empty listing.
    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>>;

    /// Like [`Provider::list`], with the backend's MD5 and SHA-1 where it lists them cheaply
    /// (rclone: only when the provider's `list_hashes` key allows it). `status` and plain
    /// `sync` use it to catch corrupt shards without reading them; the default lists no hashes.
    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.list(dir)
    }

    /// At least the hashes this provider's [`Provider::list_hashed`] carries: what a backup
    /// records next to SHA-256 for it. Never fails: a provider that cannot tell answers
    /// [`NativeHashes::ALL`], so no hash it lists is missing from the manifest. The default
    /// is all (the in-memory provider lists both).
    fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
        Box::pin(async { NativeHashes::ALL })
    }

    /// Deletes the object at `path`; deleting a missing object is not an error.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Total, used and free space.
    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>>;

    /// Copies the object at `src_path` below `src_root` to `path` here without the bytes
    /// passing through offsite (`rclone copyto`; server-side where the backend allows).
    /// `src_root` is another provider's remote on the *same* rclone remote and config; the
    /// caller decides that (`engine::sync`). Like `put`, the size is not checked: list after.
    /// Providers that cannot do this return a permanent error, and the caller copies through
    /// this machine instead.
    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let _ = (src_root, src_path);
        Box::pin(async move {
            Err(ProviderError::new(
                self.name(),
                "copy",
                path,
                crate::error::ErrorKind::Permanent,
                "this provider cannot copy from another one",
            ))
        })
    }
}

pub type DynProvider = Arc<dyn Provider>;

/// The part of `data` that [`Provider::get_range`] returns.
pub(crate) fn slice_range(data: &Bytes, offset: u64, len: u64) -> Bytes {
    let end = offset.saturating_add(len).min(data.len() as u64) as usize;
    let start = (offset.min(data.len() as u64)) as usize;
    data.slice(start..end)
}

/// Which optional layers [`from_config_with`] adds to a provider's stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stack {
    /// Writes are recorded and skipped ([`DryRun`]).
    pub dry_run: bool,
    /// [`Limit`] lets one call beyond `concurrency` run. Restore asks for it: its planner
    /// starts a provider's next download just before the running ones are expected to end
    /// (`engine::restore`'s `OVERLAP`), so that rclone's start-up overlaps the transfer; the
    /// planner, not the limit, keeps that extra download to the end of the others.
    pub overlap: bool,
}

/// Builds the provider stack for a configured provider (see the module doc): rclone, with
/// timeout, concurrency limit and retry, every call ending at once when `cancel` fires.
pub fn from_config(
    cfg: &crate::config::Config,
    p: &crate::config::ProviderConfig,
    cancel: &tokio_util::sync::CancellationToken,
) -> DynProvider {
    let quiet: Arc<dyn crate::progress::Progress> = Arc::new(crate::progress::NoProgress);
    from_config_with(cfg, p, cancel, Stack::default(), &quiet)
}

/// [`from_config`], with the optional layers `stack` asks for, reporting retries to
/// `progress` (the provider's line then says `retrying 3/5 in 4s`).
pub fn from_config_with(
    cfg: &crate::config::Config,
    p: &crate::config::ProviderConfig,
    cancel: &tokio_util::sync::CancellationToken,
    stack: Stack,
    progress: &Arc<dyn crate::progress::Progress>,
) -> DynProvider {
    let rclone = Timeout::new(RcloneProvider::new(cfg, p), cfg.timeout);
    let retry = Retry::new(
        Limit::new(rclone, cfg.concurrency + usize::from(stack.overlap)),
        cfg.retry,
    )
    .cancel_on(cancel.clone())
    .report_to(progress.clone());
    if stack.dry_run {
        Arc::new(DryRun::new(retry))
    } else {
        Arc::new(retry)
    }
}

#[cfg(test)]
mod conformance;
