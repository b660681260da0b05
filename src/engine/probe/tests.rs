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

fn named(names: &[&str]) -> Vec<DynProvider> {
    names
        .iter()
        .map(|n| Arc::new(MemoryProvider::new(n)) as DynProvider)
        .collect()
}

fn groups(g: &[&[&str]]) -> Vec<Vec<String>> {
    g.iter()
        .map(|g| g.iter().map(|n| n.to_string()).collect())
        .collect()
}

#[test]
fn only_the_first_provider_of_each_storage_is_written_to() {
    let kept = one_per_storage(
        named(&["a", "b", "c"]),
        &groups(&[&["a", "b"], &["c"]]),
        2,
        "min_providers = 2",
    )
    .unwrap();
    let names: Vec<&str> = kept.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["a", "c"]);
}

#[test]
fn too_few_distinct_storages_for_min_providers_is_a_config_error_naming_the_files() {
    let Err(err) = one_per_storage(
        named(&["a", "b"]),
        &groups(&[&["a", "b"]]),
        2,
        "min_providers = 2",
    ) else {
        panic!("one storage met min_providers = 2");
    };
    let text = err.to_string();
    assert!(
        text.starts_with(
            "provider files a.toml and b.toml in the providers directory point at one storage"
        ),
        "{text}"
    );
    assert!(
        text.contains("1 distinct storage(s) cannot meet min_providers = 2"),
        "{text}"
    );
}

#[tokio::test]
async fn with_min_providers_of_one_no_probe_is_written() {
    let m: Vec<Arc<MemoryProvider>> = (0..2)
        .map(|i| Arc::new(MemoryProvider::new(&format!("p{i}"))))
        .collect();
    let providers: Vec<DynProvider> = m.iter().map(|p| p.clone() as DynProvider).collect();
    let kept = distinct_storage(providers, 1, "min_providers = 1", &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(m[0].puts() + m[1].puts(), 0);
}
