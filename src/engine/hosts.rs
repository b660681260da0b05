//! `offsite hosts` (also `offsite list --all-hosts`): which hosts' backups each provider
//! holds, from one listing of each provider's whole remote. No manifest is read. This is what
//! a user restoring on a new machine needs first: the `--host` to restore from.

use crate::layout::{self, BackupId};
use crate::provider::{DynProvider, ObjectInfo};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Every host folder found on the providers.
#[derive(Debug, Serialize)]
pub struct HostsReport {
    /// The `host` of this machine's config (`--host` included).
    pub this_host: String,
    /// By host name.
    pub hosts: Vec<HostSummary>,
    /// Providers that could not be listed.
    pub unreachable: Vec<String>,
}

/// One host's backups, as the providers' listings show them.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostSummary {
    pub host: String,
    /// Dataset names (decoded from their folder names).
    pub datasets: Vec<String>,
    /// Backup folders of all datasets, finished or not.
    pub backups: usize,
    /// The newest backup's id, and when it was made (RFC 3339, from the id).
    pub newest: Option<String>,
    pub newest_time: Option<String>,
    /// The providers holding any of it.
    pub providers: Vec<String>,
}

/// Lists every provider's whole remote (in parallel) and summarizes it per host.
pub async fn hosts(providers: &[DynProvider], this_host: &str) -> HostsReport {
    let listings = futures::future::join_all(
        providers
            .iter()
            .map(|p| async move { (p.name().to_string(), p.list("").await) }),
    )
    .await;
    let mut unreachable = Vec::new();
    let mut ok = Vec::new();
    for (name, listing) in listings {
        match listing {
            Ok(objects) => ok.push((name, objects)),
            Err(e) => {
                tracing::warn!("provider {name} could not be listed: {e}");
                unreachable.push(name);
            }
        }
    }
    HostsReport {
        this_host: this_host.to_string(),
        hosts: summarize(&ok),
        unreachable,
    }
}

/// Per host: its datasets, backups, newest backup and providers. Only paths shaped
/// `HOST/DATASET-KEY/BACKUP-ID/OBJECT` count (probe objects and foreign files do not).
pub fn summarize(listings: &[(String, Vec<ObjectInfo>)]) -> Vec<HostSummary> {
    #[derive(Default)]
    struct Acc {
        datasets: BTreeSet<String>,
        backups: BTreeSet<(String, String)>,
        newest: Option<BackupId>,
        providers: BTreeSet<String>,
    }
    let mut hosts: BTreeMap<String, Acc> = BTreeMap::new();
    for (provider, objects) in listings {
        for o in objects {
            let mut parts = o.path.splitn(4, '/');
            let (Some(host), Some(key), Some(id), Some(_)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Some(dataset), Some(id)) = (layout::dataset_name(key), BackupId::parse(id)) else {
                continue;
            };
            if host.starts_with('.') {
                continue;
            }
            let acc = hosts.entry(host.to_string()).or_default();
            acc.datasets.insert(dataset.clone());
            acc.backups.insert((dataset, id.to_string()));
            acc.providers.insert(provider.clone());
            if acc.newest.as_ref().is_none_or(|n| id.time() > n.time()) {
                acc.newest = Some(id);
            }
        }
    }
    hosts
        .into_iter()
        .map(|(host, a)| HostSummary {
            host,
            datasets: a.datasets.into_iter().collect(),
            backups: a.backups.len(),
            newest_time: a.newest.as_ref().map(|n| layout::rfc3339(n.time())),
            newest: a.newest.map(|n| n.to_string()),
            providers: a.providers.into_iter().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(path: &str) -> ObjectInfo {
        ObjectInfo {
            path: path.into(),
            size: 1,
            md5: None,
            sha1: None,
        }
    }

    #[test]
    fn hosts_are_summarized_across_providers_and_debris_is_ignored() {
        let a = vec![
            obj("nas1/media/20261201T020000Z-full-aaaaaa/manifest.json"),
            obj("nas1/tank%2Fhome/20261202T020000Z-incr-bbbbbb/s0000000000-b0000000000000000"),
            obj(".offsite-probe-123"),
            obj("nas1/notes.txt"),
            obj("nas1/media/not-an-id/manifest.json"),
        ];
        let b = vec![
            obj("nas1/media/20261201T020000Z-full-aaaaaa/manifest.json"),
            obj("laptop/docs/20261130T020000Z-full-cccccc/manifest.json"),
        ];
        let hosts = summarize(&[("p1".into(), a), ("p2".into(), b)]);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].host, "laptop");
        assert_eq!(hosts[0].providers, vec!["p2"]);
        let nas = &hosts[1];
        assert_eq!(nas.datasets, vec!["media", "tank/home"]);
        assert_eq!(nas.backups, 2);
        assert_eq!(nas.newest.as_deref(), Some("20261202T020000Z-incr-bbbbbb"));
        assert_eq!(nas.newest_time.as_deref(), Some("2026-12-02T02:00:00Z"));
        assert_eq!(nas.providers, vec!["p1", "p2"]);
    }
}
