//! What a run saw of the providers and the backups, for the metrics file: which providers
//! answered, how many objects each should hold and does not, and how many bytes a backup
//! streamed. Commands record into [`crate::cmd::Ctx::observed`] from their typed reports;
//! [`super::Watch::ended`] writes it out. Only what a run actually looked at is recorded, so a
//! `backup` of one dataset leaves the other datasets' series as the last `status` wrote them.

use crate::catalog::{BackupKey, Catalog};
use crate::engine::backup::BackupReport;
use crate::error::code;
use crate::gaps::{BackupFindings, ManifestState};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Provider name → it answered (listing or upload) during the run.
    pub provider_up: BTreeMap<String, bool>,
    /// (dataset, provider) → objects of the dataset's finished backups the provider should
    /// hold and does not (missing, wrong size, corrupt, or its manifest).
    pub missing_objects: BTreeMap<(String, String), u64>,
    /// Dataset → stream bytes of the backup this run made.
    pub backup_bytes: BTreeMap<String, u64>,
    /// Dataset → how its backup in this run ended, as an exit code (0 also when none was due).
    pub dataset_exit: BTreeMap<String, i32>,
}

impl Observed {
    /// After a listing: every provider listed is up, every one that failed is down.
    pub fn listed(&mut self, catalog: &Catalog, providers: impl IntoIterator<Item = String>) {
        for name in providers {
            let up = !catalog.unreachable.contains_key(&name);
            self.provider_up.insert(name, up);
        }
    }

    /// After a survey (status, verify): the missing objects per dataset and provider that
    /// should hold its backups. A provider that could not be listed is left out: unknown.
    pub fn surveyed(&mut self, surveys: &[(BackupKey, BackupFindings)]) {
        for (key, f) in surveys.iter().filter(|(_, f)| f.is_finished()) {
            for p in f.providers.iter().filter(|p| p.expected && p.reachable) {
                let manifest = u64::from(p.manifest != ManifestState::Good);
                let objects =
                    p.missing_shards.len() + p.wrong_size_shards.len() + p.corrupt_shards.len();
                *self
                    .missing_objects
                    .entry((key.dataset.clone(), p.provider.clone()))
                    .or_default() += objects as u64 + manifest;
            }
        }
    }

    /// After a backup of `dataset`: its bytes, which providers took it, and how it ended.
    pub fn backed_up(&mut self, dataset: &str, report: &BackupReport) {
        self.backup_bytes
            .insert(dataset.to_string(), report.total_bytes);
        let exit = match report.complete() && !report.empty() {
            true => code::OK,
            false => code::GAPS,
        };
        self.dataset_exit.insert(dataset.to_string(), exit);
        for p in &report.providers {
            let up = p.error.is_none();
            let was = self.provider_up.entry(p.provider.clone()).or_insert(up);
            *was &= up;
        }
    }

    /// How the datasets' backups ended: the first non-zero exit among them, 0 when all were
    /// 0, `None` when one of them was not recorded (the run stopped before it).
    pub fn exit_of(&self, datasets: &[String]) -> Option<i32> {
        let exits: Option<Vec<i32>> = datasets
            .iter()
            .map(|d| self.dataset_exit.get(d).copied())
            .collect();
        exits.map(|e| e.into_iter().find(|&c| c != code::OK).unwrap_or(code::OK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup::ProviderOutcome;

    fn outcome(name: &str, missing: Vec<u64>, error: Option<&str>) -> ProviderOutcome {
        ProviderOutcome {
            provider: name.into(),
            pieces: None,
            missing_shards: missing,
            manifest_written: error.is_none(),
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn a_provider_dropped_in_any_backup_of_the_run_is_down() {
        let mut o = Observed::default();
        let mut report = BackupReport {
            backup_id: crate::layout::BackupId::parse("20261203T020000Z-full").unwrap(),
            total_bytes: 42,
            shards: 1,
            elapsed: std::time::Duration::ZERO,
            providers: vec![outcome("a", vec![], None), outcome("b", vec![0], Some("x"))],
            discarded: None,
        };
        o.backed_up("db", &report);
        report.providers = vec![outcome("a", vec![], None), outcome("b", vec![], None)];
        o.backed_up("home", &report);
        assert!(o.provider_up["a"]);
        assert!(!o.provider_up["b"], "down once in the run is down");
        assert_eq!(o.backup_bytes["db"], 42);
        assert_eq!(o.exit_of(&["home".into()]), Some(code::OK));
        assert_eq!(o.exit_of(&["home".into(), "db".into()]), Some(code::GAPS));
        o.dataset_exit.insert("web".into(), 1);
        assert_eq!(o.exit_of(&["web".into(), "db".into()]), Some(1));
        assert_eq!(o.exit_of(&["db".into(), "mail".into()]), None);
    }
}
