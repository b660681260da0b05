//! Probes against in-memory providers, two of which are one storage under two names.

use super::*;
use crate::provider::{Fault, MemoryProvider, ObjectInfo, ProgressFn, Provider, Usage};
use futures::future::BoxFuture;
use std::sync::Arc;

/// Another name for the storage of a [`MemoryProvider`], as a renamed rclone remote is.
struct Alias(&'static str, Arc<MemoryProvider>);

impl Provider for Alias {
    fn name(&self) -> &str {
        self.0
    }
    fn put<'a>(
        &'a self,
        path: &'a str,
        data: Bytes,
        progress: Option<ProgressFn>,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.1.put(path, data, progress)
    }
    fn get<'a>(&'a self, path: &'a str, limit: u64) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        self.1.get(path, limit)
    }
    fn list<'a>(&'a self, dir: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, ProviderError>> {
        self.1.list(dir)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.1.delete(path)
    }
    fn about(&self) -> BoxFuture<'_, Result<Usage, ProviderError>> {
        self.1.about()
    }
}

fn setup() -> (Vec<Arc<MemoryProvider>>, Vec<DynProvider>) {
    let m: Vec<Arc<MemoryProvider>> = ["a", "b", "c"]
        .iter()
        .map(|n| Arc::new(MemoryProvider::new(n)))
        .collect();
    let dyns: Vec<DynProvider> = vec![
        m[0].clone(),
        m[1].clone(),
        Arc::new(Alias("a-again", m[0].clone())),
        m[2].clone(),
    ];
    (m, dyns)
}

#[tokio::test]
async fn two_names_for_one_storage_share_a_group_and_no_probe_is_left() {
    let (m, dyns) = setup();
    let groups = storage_groups(&dyns, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(groups, vec![vec!["a", "a-again"], vec!["b"], vec!["c"]]);
    assert!(m.iter().all(|p| p.paths().is_empty()), "a probe was left");
    let cancel = CancellationToken::new();
    assert!(same_storage(&dyns[0], &dyns[2], &cancel).await.unwrap());
    assert!(!same_storage(&dyns[0], &dyns[1], &cancel).await.unwrap());
    assert!(m.iter().all(|p| p.paths().is_empty()), "a probe was left");
}

#[tokio::test]
async fn a_provider_that_cannot_be_read_is_an_error_not_distinct_and_probes_go() {
    let (m, dyns) = setup();
    m[1].inject(Fault {
        op: "get",
        path_contains: PROBE_PREFIX.into(),
        kind: ErrorKind::Permanent,
        times: u32::MAX,
    });
    let err = same_storage(&dyns[0], &dyns[1], &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("probe"), "{err:#}");
    assert!(m.iter().all(|p| p.paths().is_empty()), "a probe was left");
}

#[test]
fn groups_join_transitively() {
    let (_, dyns) = setup();
    let g = group(&dyns, &[(3, 1), (1, 0)]);
    assert_eq!(g, vec![vec!["a", "b", "c"], vec!["a-again"]]);
}
