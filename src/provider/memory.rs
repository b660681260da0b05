//! An in-memory provider for tests, with injectable faults.

use super::{ObjectInfo, ProgressFn, Provider, Usage};
use crate::error::{ErrorKind, ProviderError};
use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A fault to inject into the next matching operations.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `put`, `get` (whole and ranged reads), `list`, `delete`, `copy` or `*`.
    pub op: &'static str,
    /// Substring the path must contain.
    pub path_contains: String,
    pub kind: ErrorKind,
    /// How many times it fires; `u32::MAX` for "stays down".
    pub times: u32,
}

#[derive(Default)]
pub struct MemoryProvider {
    name: String,
    objects: Mutex<BTreeMap<String, Bytes>>,
    faults: Mutex<Vec<Fault>>,
    puts: AtomicU64,
    ops: Mutex<Vec<String>>,
    /// Operations an injected fault failed.
    faulted: AtomicU64,
}

impl MemoryProvider {
    pub fn new(name: &str) -> Self {
        MemoryProvider {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    /// Number of successful `put`s so far.
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::SeqCst)
    }

    pub fn object(&self, path: &str) -> Option<Bytes> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn set_object(&self, path: &str, data: Bytes) {
        self.objects.lock().unwrap().insert(path.to_string(), data);
    }

    pub fn remove_object(&self, path: &str) {
        self.objects.lock().unwrap().remove(path);
    }

    /// Successful `put`s, `delete`s and `copy_from`s so far, in order: `"put PATH"`, ...
    /// How many operations an injected fault has failed so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn ops(&self) -> Vec<String> {
        self.ops.lock().unwrap().clone()
    }

    fn record(&self, op: &str, path: &str) {
        self.ops.lock().unwrap().push(format!("{op} {path}"));
    }

    pub fn paths(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }

    /// A `get`: injected faults first, then the object or not-found.
    fn fetch(&self, path: &str) -> Result<Bytes, ProviderError> {
        self.check("get", path)?;
        self.object(path).ok_or_else(|| {
            ProviderError::new(
                &self.name,
                "get",
                path,
                ErrorKind::NotFound,
                "object not found",
            )
        })
    }

    fn check(&self, op: &'static str, path: &str) -> Result<(), ProviderError> {
        let mut faults = self.faults.lock().unwrap();
        if let Some(f) = faults
            .iter_mut()
            .find(|f| (f.op == op || f.op == "*") && path.contains(&f.path_contains) && f.times > 0)
        {
            if f.times != u32::MAX {
                f.times -= 1;
            }
            self.faulted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ProviderError::new(
                &self.name,
                op,
                path,
                f.kind,
                "injected fault",
            ));
        }
        Ok(())
    }
}

impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.check("put", path)?;
            if let Some(p) = progress {
                p(data.len() as u64);
            }
            // A copy, as a real provider stores one: holding the caller's buffer would keep a
            // spooled shard's file (and its room in the spool) alive for the whole test.
            let data = Bytes::copy_from_slice(&data);
            self.objects.lock().unwrap().insert(path.to_string(), data);
            self.puts.fetch_add(1, Ordering::SeqCst);
            self.record("put", path);
            Ok(())
        })
    }

    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(async move {
            let data = self.fetch(path)?;
            if data.len() as u64 > limit {
                return Err(ProviderError::new(
                    &self.name,
                    "get",
                    path,
                    ErrorKind::Permanent,
                    "object is larger than expected",
                ));
            }
            Ok(data)
        })
    }

    /// Faults injected for `get` apply to ranged reads too.
    fn get_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(async move { Ok(super::slice_range(&self.fetch(path)?, offset, len)) })
    }

    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(async move {
            self.check("list", dir)?;
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{}/", dir.trim_end_matches('/'))
            };
            Ok(self
                .objects
                .lock()
                .unwrap()
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix).map(|rel| ObjectInfo {
                        path: rel.to_string(),
                        size: v.len() as u64,
                        ..ObjectInfo::default()
                    })
                })
                .collect())
        })
    }

    /// Computes MD5 and SHA-1 of every object, as a backend with native hashes lists them.
    fn list_hashed<'a>(
        &'a self,
        dir: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        Box::pin(async move {
            let mut out = self.list(dir).await?;
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{}/", dir.trim_end_matches('/'))
            };
            let objects = self.objects.lock().unwrap();
            for o in &mut out {
                if let Some(data) = objects.get(&format!("{prefix}{}", o.path)) {
                    let d = crate::hashing::digests(data);
                    (o.md5, o.sha1) = (Some(d.md5), Some(d.sha1));
                }
            }
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.check("delete", path)?;
            self.remove_object(path);
            self.record("delete", path);
            Ok(())
        })
    }

    /// Copies within this provider only: `src_root` must be its name (its "remote").
    fn copy_from<'a>(
        &'a self,
        src_root: &'a str,
        src_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.check("copy", path)?;
            if src_root != self.name {
                return Err(ProviderError::new(
                    &self.name,
                    "copy",
                    path,
                    ErrorKind::Permanent,
                    format!("cannot copy from {src_root:?}: not this memory provider"),
                ));
            }
            let data = self.object(src_path).ok_or_else(|| {
                ProviderError::new(
                    &self.name,
                    "copy",
                    src_path,
                    ErrorKind::NotFound,
                    "object not found",
                )
            })?;
            self.objects.lock().unwrap().insert(path.to_string(), data);
            self.record("copy", path);
            Ok(())
        })
    }

    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        Box::pin(async move {
            let used = self
                .objects
                .lock()
                .unwrap()
                .values()
                .map(|v| v.len() as u64)
                .sum();
            Ok(Usage {
                total: None,
                used: Some(used),
                free: None,
            })
        })
    }
}
