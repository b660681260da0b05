//! What a restore did ([`RestoreReport`]): the backups applied and skipped, the bytes and time,
//! and what each provider delivered; also logged as one `restore_metrics` event.

use super::LaneReport;
use crate::config::units::{human_bytes, human_rate};
use serde::Serialize;
use std::time::Duration;

/// What a restore did; the `--json` document of `offsite restore`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub host: String,
    pub dataset: String,
    /// The backup chosen.
    pub backup_id: String,
    /// The receiver, as `ReceiverSpec::describe` says it.
    pub destination: String,
    /// Backup ids applied, in order.
    pub applied: Vec<String>,
    /// Backups the target already held, in order.
    pub skipped: Vec<String>,
    pub total_bytes: u64,
    pub elapsed_secs: f64,
    pub throughput_bytes_per_sec: u64,
    pub providers: Vec<LaneReport>,
}

/// What streaming the links did, before it is put in a [`RestoreReport`].
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// Backup ids applied, in order.
    pub applied: Vec<String>,
    pub total_bytes: u64,
    pub elapsed: Duration,
    pub providers: Vec<LaneReport>,
}

/// Who restored what where; the rest of a [`RestoreReport`].
pub struct Restored<'a> {
    pub host: &'a str,
    pub dataset: &'a str,
    pub backup_id: &'a str,
    pub destination: String,
    pub skipped: Vec<String>,
}

impl RestoreReport {
    /// The report of `what` with `streamed` (empty when nothing had to be applied).
    pub fn new(what: Restored<'_>, streamed: Streamed) -> RestoreReport {
        let secs = streamed.elapsed.as_secs_f64();
        let bytes = streamed.total_bytes;
        RestoreReport {
            host: what.host.to_string(),
            dataset: what.dataset.to_string(),
            backup_id: what.backup_id.to_string(),
            destination: what.destination,
            applied: streamed.applied,
            skipped: what.skipped,
            total_bytes: bytes,
            elapsed_secs: secs,
            throughput_bytes_per_sec: if secs > 0.0 {
                (bytes as f64 / secs) as u64
            } else {
                0
            },
            providers: streamed.providers,
        }
    }

    /// Logs the `restore_metrics` event.
    pub fn log_metrics(&self) {
        let per_provider: Vec<String> = self
            .providers
            .iter()
            .map(|p| format!("{}={}", p.provider, human_bytes(p.bytes)))
            .collect();
        let elapsed = Duration::from_secs_f64(self.elapsed_secs);
        tracing::info!(
            event = %"restore_metrics",
            dataset = %self.dataset,
            backup_id = %self.backup_id,
            links = self.applied.len(),
            total_bytes = self.total_bytes,
            total = %human_bytes(self.total_bytes),
            elapsed_secs = %format!("{:.2}", elapsed.as_secs_f64()),
            throughput = %human_rate(self.total_bytes, elapsed),
            providers = %per_provider.join(","),
            "restore finished"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_keys_are_those_restore_always_printed() {
        let what = Restored {
            host: "h",
            dataset: "d",
            backup_id: "b",
            destination: "stdout".into(),
            skipped: vec!["a".into()],
        };
        let streamed = Streamed {
            applied: vec!["b".into()],
            total_bytes: 100,
            elapsed: Duration::from_secs(2),
            providers: Vec::new(),
        };
        let v = serde_json::to_value(RestoreReport::new(what, streamed)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut expected = vec![
            "host",
            "dataset",
            "backup_id",
            "destination",
            "applied",
            "skipped",
            "total_bytes",
            "elapsed_secs",
            "throughput_bytes_per_sec",
            "providers",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(v["throughput_bytes_per_sec"], 50);
        assert_eq!(v["elapsed_secs"], 2.0);
    }
}
