//! A layer for dry runs (rustic's `DryRunBackend`): reads pass to the provider below, writes
//! (`put`, `delete`, `copy_from`) are recorded and skipped, and report success, so a command
//! runs the same code with and without `--dry-run` and nothing is changed. A skipped `put`
//! reports no progress.

use super::{Layer, Op, Provider};
use std::sync::Mutex;

pub struct DryRun<P> {
    inner: P,
    skipped: Mutex<Vec<String>>,
}

impl<P: Provider> DryRun<P> {
    pub fn new(inner: P) -> Self {
        DryRun {
            inner,
            skipped: Mutex::new(Vec::new()),
        }
    }

    /// The writes skipped so far, in order: `"put PATH"`, `"delete PATH"`, `"copy PATH"`.
    pub fn skipped(&self) -> Vec<String> {
        self.skipped.lock().unwrap().clone()
    }
}

impl<P: Provider> Layer for DryRun<P> {
    type Inner = P;

    fn inner(&self) -> &P {
        &self.inner
    }

    fn skip_write(&self, op: &Op<'_>) -> bool {
        self.skipped.lock().unwrap().push(op.describe());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::DryRun;
    use crate::provider::{MemoryProvider, Provider};
    use bytes::Bytes;

    #[tokio::test]
    async fn reads_pass_and_writes_are_recorded_not_done() {
        let mem = MemoryProvider::new("m");
        mem.set_object("d/a", Bytes::from_static(b"abc"));
        let p = DryRun::new(mem);
        assert_eq!(p.get("d/a", 10).await.unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(
            p.get_range("d/a", 1, 1).await.unwrap(),
            Bytes::from_static(b"b")
        );
        assert_eq!(p.list("d").await.unwrap().len(), 1);
        assert_eq!(p.list_hashed("d").await.unwrap().len(), 1);
        p.about().await.unwrap();

        p.put("d/b", Bytes::from_static(b"x"), None).await.unwrap();
        p.delete("d/a").await.unwrap();
        p.copy_from("m", "d/a", "d/c").await.unwrap();
        assert_eq!(p.skipped(), vec!["put d/b", "delete d/a", "copy d/c"]);
        assert!(p.inner.ops().is_empty(), "{:?}", p.inner.ops());
        assert_eq!(p.inner.paths(), vec!["d/a"]);
        assert_eq!(p.name(), "m");
    }
}
