//! The one forwarding mechanism for provider wrappers: a type that implements [`Layer`] is a
//! [`Provider`] (one blanket impl), and every method it does not override goes to
//! [`Layer::inner`] through [`Layer::around`].
//!
//! A decorator ([`super::Retry`], [`super::Limit`], [`super::Timeout`]) overrides only
//! `around`, which sees every call as an [`Op`] and decides how to run it; [`super::DryRun`]
//! overrides `skip_write`. A test wrapper that changes one method's arguments or result
//! overrides that method alone, e.g. a provider that stores half of every upload:
//!
//! ```ignore
//! struct Truncating(MemoryProvider);
//! impl Layer for Truncating {
//!     type Inner = MemoryProvider;
//!     fn inner(&self) -> &MemoryProvider { &self.0 }
//!     fn put<'a>(&'a self, path: &'a str, data: Bytes, p: Option<ProgressFn>)
//!         -> BoxFuture<'a, Result<(), ProviderError>> {
//!         self.0.put(path, data.slice(..data.len() / 2), p)
//!     }
//! }
//! ```
//!
//! Every method is forwarded to the same method of the inner provider (a `get_range` stays a
//! `get_range`), so a layer sees each call once. The methods of `Layer` share their names with
//! those of `Provider`: where both traits are imported, call a concrete layer through
//! `Provider::put(&layer, ..)` or hold it as a [`super::DynProvider`].

use super::{NativeHashes, ObjectInfo, ProgressFn, Provider, Usage};
use crate::error::ProviderError;
use bytes::Bytes;
use futures::future::BoxFuture;

/// One provider call, as a layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Put {
        path: &'a str,
        len: u64,
    },
    Get {
        path: &'a str,
        limit: u64,
    },
    GetRange {
        path: &'a str,
        offset: u64,
        len: u64,
    },
    List {
        dir: &'a str,
    },
    ListHashed {
        dir: &'a str,
    },
    Delete {
        path: &'a str,
    },
    About,
    CopyFrom {
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    },
}

impl<'a> Op<'a> {
    /// The word a [`ProviderError`] uses for the operation: upload, download, list, delete,
    /// about or copy.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Put { .. } => "upload",
            Op::Get { .. } | Op::GetRange { .. } => "download",
            Op::List { .. } | Op::ListHashed { .. } => "list",
            Op::Delete { .. } => "delete",
            Op::About => "about",
            Op::CopyFrom { .. } => "copy",
        }
    }

    /// The object or directory the call is about (empty for `about`).
    pub fn path(&self) -> &'a str {
        match *self {
            Op::Put { path, .. }
            | Op::Get { path, .. }
            | Op::GetRange { path, .. }
            | Op::Delete { path }
            | Op::CopyFrom { path, .. } => path,
            Op::List { dir } | Op::ListHashed { dir } => dir,
            Op::About => "",
        }
    }

    /// `put`, `delete` and `copy_from`: the calls that change what a provider stores.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. } | Op::Delete { .. } | Op::CopyFrom { .. }
        )
    }

    /// `"put PATH"`, `"delete PATH"`, `"copy PATH"`, ...: as [`super::MemoryProvider::ops`]
    /// records its writes.
    pub fn describe(&self) -> String {
        let name = match self {
            Op::Put { .. } => "put",
            Op::Get { .. } => "get",
            Op::GetRange { .. } => "get_range",
            Op::List { .. } => "list",
            Op::ListHashed { .. } => "list_hashed",
            Op::Delete { .. } => "delete",
            Op::About => "about",
            Op::CopyFrom { .. } => "copy",
        };
        format!("{name} {}", self.path())
    }
}

/// A provider that wraps another; see the module doc. Implementing it makes the type a
/// [`Provider`].
pub trait Layer: Send + Sync {
    type Inner: Provider + ?Sized;

    fn inner(&self) -> &Self::Inner;

    /// Runs one call: `call` starts the inner provider's operation (again, each time it is
    /// called). The default runs it once.
    fn around<'a, T: Send + 'a>(
        &'a self,
        op: Op<'a>,
        mut call: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        let _ = op;
        call()
    }

    /// True when the write `op` is not to reach the inner provider: it then returns `Ok(())`
    /// at once. The default passes every write on.
    fn skip_write(&self, op: &Op<'_>) -> bool {
        let _ = op;
        false
    }

    fn name(&self) -> &str {
        self.inner().name()
    }

    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let op = Op::Put {
            path,
            len: data.len() as u64,
        };
        write(self, op, move || {
            self.inner().put(path, data.clone(), progress.clone())
        })
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        self.around(Op::Get { path, limit }, move || {
            self.inner().get(path, limit)
        })
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        let op = Op::GetRange { path, offset, len };
        self.around(op, move || self.inner().get_range(path, offset, len))
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.around(Op::List { dir }, move || self.inner().list(dir))
    }

    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.around(Op::ListHashed { dir }, move || {
            self.inner().list_hashed(dir)
        })
    }

    /// Passed on as it is, outside `around`: it never fails, so there is nothing to retry,
    /// and no caller waits on it (a backup takes the answer whenever it comes; rclone's own
    /// connection timeout bounds its question).
    fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
        self.inner().native_hashes()
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        write(self, Op::Delete { path }, move || self.inner().delete(path))
    }

    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        self.around(Op::About, move || self.inner().about())
    }

    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        let op = Op::CopyFrom {
            src_root,
            src_path,
            path,
        };
        write(self, op, move || {
            self.inner().copy_from(src_root, src_path, path)
        })
    }
}

/// A write: skipped (and `Ok`) when the layer says so, else run through `around`.
fn write<'a, L: Layer + ?Sized>(
    layer: &'a L,
    op: Op<'a>,
    call: impl FnMut() -> BoxFuture<'a, Result<(), ProviderError>> + Send + 'a,
) -> BoxFuture<'a, Result<(), ProviderError>> {
    if layer.skip_write(&op) {
        return Box::pin(async { Ok(()) });
    }
    layer.around(op, call)
}

impl<L: Layer> Provider for L {
    fn name(&self) -> &str {
        Layer::name(self)
    }

    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Layer::put(self, path, data, progress)
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Layer::get(self, path, limit)
    }

    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Layer::get_range(self, path, offset, len)
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Layer::list(self, dir)
    }

    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Layer::list_hashed(self, dir)
    }

    fn native_hashes(&self) -> BoxFuture<'_, NativeHashes> {
        Layer::native_hashes(self)
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Layer::delete(self, path)
    }

    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        Layer::about(self)
    }

    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Layer::copy_from(self, src_root, src_path, path)
    }
}
