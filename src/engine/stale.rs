//! `max_age`: a dataset whose newest complete backup is older, or that has none, is stale.
//! `status` and `verify` report it (exit 3). Pure: the clock is an argument.

use crate::catalog::Catalog;
use crate::config::Config;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// A stale dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stale {
    pub dataset: String,
    pub max_age_secs: u64,
    /// Its newest complete (restorable) backup, if it has one.
    pub newest: Option<String>,
    /// How old that backup is.
    pub age_secs: Option<u64>,
}

impl Stale {
    /// `dataset "media" is stale: its newest complete backup, ID, is 3d 4h old (max_age 2d)`.
    pub fn describe(&self) -> String {
        let max = span(self.max_age_secs);
        match (&self.newest, self.age_secs) {
            (Some(id), Some(age)) => format!(
                "dataset {:?} is stale: its newest complete backup, {id}, is {} old (max_age {max})",
                self.dataset,
                span(age)
            ),
            _ => format!(
                "dataset {:?} is stale: it has no complete backup on the providers (max_age {max})",
                self.dataset
            ),
        }
    }
}

/// `problems` (what else a command found wrong) with every stale dataset added, and what to do.
pub fn add_to(problems: Option<String>, stale: &[Stale]) -> Option<String> {
    if stale.is_empty() {
        return problems;
    }
    let said: Vec<String> = stale.iter().map(Stale::describe).collect();
    let stale = format!(
        "{}; check that `offsite backup` runs (its timer and its log)",
        said.join("; ")
    );
    Some(match problems {
        Some(p) => format!("{p}; {stale}"),
        None => stale,
    })
}

/// `3d 4h`, `5h 2m`, `40s`.
fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// The configured datasets with a `max_age` (those of `only`, when not empty) that are stale
/// at `now`.
pub fn stale(cfg: &Config, catalog: &Catalog, only: &[String], now: SystemTime) -> Vec<Stale> {
    cfg.datasets
        .iter()
        .filter(|d| only.is_empty() || only.contains(&d.name))
        .filter_map(|d| {
            let max_age = d.max_age?;
            let newest = catalog
                .restorable(&d.name)
                .into_iter()
                .map(|(id, _)| id)
                .max();
            let age = newest.map(|id| now.duration_since(id.time()).unwrap_or(Duration::ZERO));
            if age.is_some_and(|a| a <= max_age) {
                return None;
            }
            Some(Stale {
                dataset: d.name.clone(),
                max_age_secs: max_age.as_secs(),
                newest: newest.map(|id| id.to_string()),
                age_secs: age.map(|a| a.as_secs()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::BackupId;

    #[test]
    fn a_dataset_is_stale_past_max_age_or_without_a_complete_backup() {
        let (_dir, mut cfg) = crate::gaps::fixture::config(&["a"]);
        cfg.datasets[0].max_age = Some(Duration::from_secs(2 * 86_400));
        let mut catalog = Catalog {
            host: "h".into(),
            order: vec!["a".into()],
            backups: Default::default(),
            unreachable: Default::default(),
        };
        let id = BackupId::parse("20261201T020000Z-full").unwrap();
        let at = |s: &str| BackupId::parse(&format!("{s}-full")).unwrap().time();
        let none = stale(&cfg, &catalog, &[], at("20261201T020000Z"));
        assert_eq!(none[0].newest, None);
        assert!(
            none[0].describe().contains("has no complete backup"),
            "{}",
            none[0].describe()
        );

        let m = crate::manifest::sample(&[b"abcd"]);
        let mut entry = crate::catalog::BackupEntry::default();
        let objects = entry.objects.entry("a".into()).or_default();
        objects.insert(m.object(&m.shards[0]), 4);
        entry.manifests.insert("a".into(), Ok(m));
        let key = crate::catalog::BackupKey {
            dataset: cfg.datasets[0].name.clone(),
            id: id.clone(),
        };
        catalog.backups.insert(key, entry);
        assert!(
            stale(&cfg, &catalog, &[], at("20261203T020000Z")).is_empty(),
            "exactly 2d"
        );
        let late = stale(&cfg, &catalog, &[], at("20261204T060000Z"));
        assert_eq!(late[0].age_secs, Some(3 * 86_400 + 4 * 3600));
        assert!(
            late[0].describe().contains("is 3d 4h old (max_age 2d 0h)"),
            "{}",
            late[0].describe()
        );
        assert!(stale(&cfg, &catalog, &["other".into()], at("20261209T000000Z")).is_empty());
    }
}
