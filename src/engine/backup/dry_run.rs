//! `backup --dry-run`: what a backup of one dataset would do, from the providers' listings and
//! the local state, with nothing snapshotted, uploaded or recorded. The same checks as a real
//! run come first (send flags, erasure code), so a dry run fails where the run would.

use super::dataset::{decide, DatasetRun};
use super::plan::{Action, BackupRequest};
use crate::layout;
use crate::schedule::Decision;
use crate::snapshots;
use crate::state::DatasetState;
use anyhow::Result;
use serde::Serialize;

/// What a backup of one dataset would do.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetPlan {
    pub dataset: String,
    /// `resume`, `full`, `incremental` or `not_due`.
    pub action: &'static str,
    /// The backup resumed or made; absent when nothing is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Why a full backup (or nothing) was chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The parent backup of an incremental.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Not due: when it is (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due: Option<String>,
    /// Resuming: the shards its journal records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards_recorded: Option<usize>,
    /// The providers it would write to, in priority order.
    pub providers: Vec<String>,
    /// `"k+m"` when erasure-coded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<String>,
}

impl DatasetPlan {
    /// The plan in one sentence, for the log and the text output.
    pub fn describe(&self) -> String {
        let name = &self.dataset;
        let to = self.providers.join(", ");
        let code = (self.erasure.as_ref()).map_or(String::new(), |e| {
            format!(" (erasure = \"{e}\": each shard cut into pieces, one per provider)")
        });
        let id = self.backup_id.as_deref().unwrap_or("?");
        match self.action {
            "not_due" => format!(
                "{name:?} is not due; its next backup is due at {} (use --once to run now)",
                self.next_due.as_deref().unwrap_or("?")
            ),
            "resume" => format!(
                "would resume unfinished backup {id} of {name:?} ({} shards recorded)",
                self.shards_recorded.unwrap_or(0)
            ),
            "incremental" => format!(
                "would make an incremental backup {id} of {name:?} on {} to {to}{code}",
                self.parent.as_deref().unwrap_or("?")
            ),
            kind => format!(
                "would make a {kind} backup {id} ({}) of {name:?} to {to}{code}",
                self.reason.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Plans one dataset's backup without making it: lists the providers, reads the local state.
pub async fn plan_dataset(run: DatasetRun<'_>, req: BackupRequest) -> Result<DatasetPlan> {
    let (cfg, ds) = (run.cfg, run.dataset);
    snapshots::check_send_flags(ds).await?;
    cfg.check_erasure(ds)?;
    super::limits::check(cfg, ds)?;
    let mut out = DatasetPlan {
        dataset: ds.name.clone(),
        action: "not_due",
        backup_id: None,
        reason: None,
        parent: None,
        next_due: None,
        shards_recorded: None,
        providers: run.providers.iter().map(|p| p.name().to_string()).collect(),
        erasure: ds.erasure.map(|e| e.to_string()),
    };
    let state = DatasetState::new(&cfg.state_dir, &cfg.host, &ds.name);
    match state.load()? {
        Some((u, recorded)) if !req.restart && ds.resume != crate::config::Resume::Never => {
            out.action = "resume";
            out.backup_id = Some(u.backup_id.clone());
            out.shards_recorded = Some(recorded.len());
        }
        _ => match decide(&run, &req).await?.action {
            Action::NotDue { next_due } => out.next_due = Some(layout::rfc3339(next_due)),
            Action::Make(new) => {
                out.backup_id = Some(new.id.to_string());
                out.parent = new.parent.map(|p| p.backup_id);
                (out.action, out.reason) = match new.decision {
                    Decision::Full { reason } => ("full", Some(reason)),
                    Decision::Incremental => ("incremental", None),
                    Decision::NotDue { .. } => ("not_due", None),
                };
            }
        },
    }
    Ok(out)
}
