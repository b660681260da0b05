//! One dataset's backup: the engine entry point `offsite backup` calls per dataset. It takes
//! the dataset's lock, resumes the unfinished backup if there is one (or, with `--restart`,
//! discards it), else plans a new one ([`super::plan`]) and takes its snapshot, runs the
//! pipeline, then records or forgets the unfinished state and applies local snapshot
//! retention. A dry run only says what it would do. A new backup stores its shards as the
//! configuration says (`Config::codec`); a resumed one as it started (`codec_for`).

use super::plan::{self, Action, BackupRequest, LastBackup, NewBackup};
use super::{BackupJob, BackupReport};
use crate::catalog::Catalog;
use crate::codec::{Codec, Compression};
use crate::config::units::{human_bytes, human_rate};
use crate::config::{Config, Dataset, Resume, SourceSpec};
use crate::engine::{discard, probe, retention, scan};
use crate::error::{ConfigError, SourceChanged};
use crate::layout;
use crate::lock::DatasetLock;
use crate::manifest::{ErasureRecord, ShardRecord};
use crate::progress::Progress;
use crate::provider::DynProvider;
use crate::schedule::Decision;
use crate::spool::Spool;
use crate::state::{DatasetState, Unfinished};
use crate::{snapshots, source};
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// What one dataset's backup runs with.
pub struct DatasetRun<'a> {
    pub cfg: &'a Config,
    pub dataset: &'a Dataset,
    /// The dataset's providers, in priority order.
    pub providers: Vec<DynProvider>,
    pub progress: Arc<dyn Progress>,
    pub cancel: &'a CancellationToken,
}

/// The backup a run goes on with: an unfinished one resumed, or a new one just recorded.
struct Started {
    unfinished: Unfinished,
    /// Shards recorded by the run being resumed; `None` for a new backup.
    resume: Option<BTreeMap<u64, ShardRecord>>,
}

/// Backs up `run.dataset`; `None` when nothing was due (or on a dry run).
pub async fn back_up_dataset(
    run: DatasetRun<'_>,
    req: BackupRequest,
) -> Result<Option<BackupReport>> {
    if req.dry_run {
        let plan = super::dry_run::plan_dataset(run, req).await?;
        tracing::info!("dry run: {}", plan.describe());
        return Ok(None);
    }
    let (cfg, ds) = (run.cfg, run.dataset);
    snapshots::check_send_flags(ds).await?;
    cfg.check_erasure(ds)?;
    super::limits::check(cfg, ds)?;
    let spool = open_spool(cfg)?;
    let state = DatasetState::new(&cfg.state_dir, &cfg.host, &ds.name);
    let _lock = DatasetLock::acquire(&cfg.state_dir, &cfg.host, &ds.name)?;
    if req.restart {
        restart(&run, &state, "--restart").await?;
    } else if ds.resume == Resume::Never && state.exists() {
        restart(&run, &state, "resume = \"never\"").await?;
    }
    // Two provider files on one storage must not hold two pieces of a shard either.
    let (distinct, rule) = match ds.erasure.filter(|e| e.total() > cfg.min_providers) {
        Some(e) => (e.total(), format!("erasure = \"{e}\"")),
        None => (
            cfg.min_providers,
            format!("min_providers = {}", cfg.min_providers),
        ),
    };
    let providers = probe::distinct_storage(run.providers, distinct, &rule, run.cancel).await?;
    let run = DatasetRun { providers, ..run };
    let Some(started) = start(&run, &req, &state).await? else {
        return Ok(None);
    };
    let Some((unfinished, report)) = run_started(&run, &req, &state, started, &spool).await? else {
        return Ok(None);
    };
    let u = &unfinished;
    if report.complete() || u.gaps_retry {
        state.clear()?;
    } else {
        state.update(&Unfinished {
            gaps_retry: true,
            ..u.clone()
        })?;
    }
    if ds.snapshot_pattern.is_none() {
        if let Some(snap) = &u.snapshot {
            retention::after_backup(ds, snap).await;
        }
    }
    log_metrics(ds, &report);
    Ok(Some(report))
}

/// Runs the pipeline for `started`. Under `resume = "auto"`, a resumed command source whose
/// stream differs from what was recorded is discarded and a fresh backup is made at once,
/// with a warning: a pg_dump is rarely the same twice, and no night may block the next.
async fn run_started(
    run: &DatasetRun<'_>,
    req: &BackupRequest,
    state: &DatasetState,
    started: Started,
    spool: &Option<Arc<Spool>>,
) -> Result<Option<(Unfinished, BackupReport)>> {
    let Started { unfinished, resume } = started;
    let resumed = resume.is_some();
    let err = match pipeline(run, state, &unfinished, resume, spool).await {
        Ok(report) => return Ok(Some((unfinished, report))),
        Err(e) => e,
    };
    let ds = run.dataset;
    let changed = err.chain().find_map(|c| c.downcast_ref::<SourceChanged>());
    let auto = ds.resume == Resume::Auto && matches!(ds.source, SourceSpec::Command { .. });
    let Some(changed) = changed.filter(|_| auto && resumed) else {
        return Err(err);
    };
    tracing::warn!(
        "{:?}: the command's stream differs from what unfinished backup {} recorded at shard {} ({}); \
         resume = \"auto\": discarding it and starting a fresh backup now",
        ds.name,
        changed.backup_id,
        changed.index,
        changed.what
    );
    let old = changed.backup_id.clone();
    restart(run, state, "resume = \"auto\", the stream changed").await?;
    let Some(started) = start(run, req, state).await? else {
        return Ok(None);
    };
    let report = pipeline(run, state, &started.unfinished, started.resume, spool).await?;
    Ok(Some((
        started.unfinished,
        BackupReport {
            discarded: Some(old),
            ..report
        },
    )))
}

/// `--restart` (or `resume` deciding not to resume, `why`): forgets the unfinished backup and
/// removes its objects from the providers at once (best effort), since nothing will resume it.
/// A backup that already has a manifest somewhere (complete, with gaps) is kept: it is a real
/// backup.
async fn restart(run: &DatasetRun<'_>, state: &DatasetState, why: &str) -> Result<()> {
    let (cfg, ds) = (run.cfg, run.dataset);
    match state.load() {
        Ok(Some((u, _))) => {
            tracing::warn!(
                "discarding unfinished backup {} of {:?} ({why})",
                u.backup_id,
                ds.name
            );
            let Some(id) = u.id() else {
                tracing::warn!(
                    "unfinished backup id {:?} is not valid; its objects, if any, stay until `offsite prune`",
                    u.backup_id
                );
                return state.clear();
            };
            let d = discard::discard(
                &run.providers,
                &cfg.host,
                &ds.name,
                &id,
                cfg.concurrency,
                run.cancel,
            )
            .await?;
            if d.deleted > 0 {
                tracing::info!(
                    "deleted {} objects of discarded backup {id} from the providers",
                    d.deleted
                );
            }
        }
        Ok(None) => {}
        // The message of a damaged state file tells the user to use --restart: let it work.
        Err(e) => tracing::warn!("{e:#}; discarding it ({why})"),
    }
    state.clear()
}

/// Resumes the unfinished backup, or plans a new one and takes its snapshot. `None` when
/// nothing is due.
async fn start(
    run: &DatasetRun<'_>,
    req: &BackupRequest,
    state: &DatasetState,
) -> Result<Option<Started>> {
    if let Some((u, recorded)) = state.load()? {
        return resume(run.dataset, u, recorded).await.map(Some);
    }
    let new = match decide(run, req).await?.action {
        Action::NotDue { next_due } => {
            not_due(run.dataset, next_due);
            return Ok(None);
        }
        Action::Make(new) => new,
    };
    if let Decision::Full { reason } = &new.decision {
        tracing::info!("full backup of {:?}: {reason}", run.dataset.name);
    }
    let now = SystemTime::now();
    let ToSend::Snapshot(snapshot) = snapshot_for(run.dataset, &new).await? else {
        return Ok(None);
    };
    let unfinished = new.unfinished(
        snapshot,
        run.cfg.shard_size,
        now,
        &run.cfg.codec(run.dataset),
    );
    Ok(Some(Started {
        unfinished: Unfinished {
            erasure: erasure_record(run)?,
            ..unfinished
        },
        resume: None,
    }))
}

/// A new backup's erasure code and placement: the dataset's code over the providers of this
/// run, in priority order (a resume keeps both, from its unfinished state).
fn erasure_record(run: &DatasetRun<'_>) -> Result<Option<ErasureRecord>, ConfigError> {
    let Some(scheme) = run.dataset.erasure else {
        return Ok(None);
    };
    let providers: Vec<String> = run.providers.iter().map(|p| p.name().to_string()).collect();
    if providers.len() < scheme.total() {
        return Err(ConfigError(format!(
            "dataset {:?} has erasure = \"{scheme}\" but only {} distinct provider(s) ({}) are left for this backup; \
             each of a shard's {} pieces needs its own provider",
            run.dataset.name,
            providers.len(),
            providers.join(", "),
            scheme.total()
        )));
    }
    Ok(Some(ErasureRecord {
        k: scheme.k,
        m: scheme.m,
        providers,
        revision: 0,
    }))
}

/// Goes on with the unfinished backup `u`, if its snapshot still exists.
async fn resume(
    ds: &Dataset,
    u: Unfinished,
    recorded: BTreeMap<u64, ShardRecord>,
) -> Result<Started> {
    if let Some(snap) = &u.snapshot {
        if !snapshots::exists(&ds.source, snap).await {
            bail!(
                "snapshot {snap} of unfinished backup {} no longer exists, so the backup cannot be resumed with the same bytes; \
                 run `offsite backup --restart {}` to start afresh",
                u.backup_id,
                ds.name
            );
        }
    }
    let why = if u.gaps_retry {
        " to fill the gaps a provider had"
    } else {
        ""
    };
    tracing::info!(
        "resuming unfinished backup {} of {:?}{why} ({} shards recorded)",
        u.backup_id,
        ds.name,
        recorded.len()
    );
    let started = u.erasure.as_ref().map(ErasureRecord::scheme);
    if started != ds.erasure {
        let text = |e: Option<crate::erasure::Scheme>| {
            e.map_or("mirrored".to_string(), |e| format!("erasure = \"{e}\""))
        };
        tracing::warn!(
            "unfinished backup {} of {:?} is resumed {}, as it started; the configured {} applies from the next backup",
            u.backup_id,
            ds.name,
            text(started),
            text(ds.erasure)
        );
    }
    Ok(Started {
        unfinished: u,
        resume: Some(recorded),
    })
}

/// Lists the providers and plans the run from what they hold (see [`plan::plan`]).
pub(super) async fn decide(run: &DatasetRun<'_>, req: &BackupRequest) -> Result<plan::BackupPlan> {
    let ds = run.dataset;
    let catalog = scan_dataset(run).await?;
    let snapshot_present = match LastBackup::of(&catalog, &ds.name) {
        Some(last) => match last.snapshot_to_check() {
            Some(snap) => snapshots::exists(&ds.source, snap).await,
            None => true,
        },
        None => true,
    };
    let planned = plan::plan(SystemTime::now(), ds, &catalog, req, snapshot_present);
    for w in &planned.warnings {
        tracing::warn!("{:?}: {w}", ds.name);
    }
    Ok(planned)
}

/// What the providers hold of the dataset; an error when none could be listed, since its
/// backup history is then unknown.
async fn scan_dataset(run: &DatasetRun<'_>) -> Result<Catalog> {
    let scope = scan::Scope {
        host: &run.cfg.host,
        datasets: std::slice::from_ref(&run.dataset.name),
        hashes: false,
    };
    scan::scan(&run.providers, scope, run.cancel).await
}

/// What a new backup sends.
enum ToSend {
    /// The snapshot (`None` for a command).
    Snapshot(Option<String>),
    /// The newest snapshot matching `snapshot_pattern` is the one already backed up.
    NothingNew,
}

/// The newest snapshot matching `snapshot_pattern`, or one taken now.
async fn snapshot_for(ds: &Dataset, new: &NewBackup) -> Result<ToSend> {
    let Some(pattern) = &ds.snapshot_pattern else {
        let taken = source::take_snapshot(&ds.name, &ds.source, new.id.stamp()).await?;
        return Ok(ToSend::Snapshot(taken));
    };
    let Some(snap) = snapshots::newest_matching(&ds.source, pattern).await? else {
        bail!(
            "dataset {:?}: no snapshot matches snapshot_pattern {pattern:?}; nothing to back up",
            ds.name
        );
    };
    if !new.is_new(&snap) {
        tracing::info!(
            "{:?}: no snapshot matching {pattern:?} is newer than {snap}, which is backed up",
            ds.name
        );
        return Ok(ToSend::NothingNew);
    }
    Ok(ToSend::Snapshot(Some(snap)))
}

/// The run's spool (`spool_dir`, `spool_size`), once a file could be created there: a folder
/// that is missing or not writable is a configuration error before any snapshot is taken.
fn open_spool(cfg: &Config) -> Result<Option<Arc<Spool>>, ConfigError> {
    let Some(c) = &cfg.spool else {
        return Ok(None);
    };
    match Spool::open(&c.dir, c.size) {
        Ok(s) => Ok(Some(Arc::new(s))),
        Err(e) => Err(ConfigError(format!(
            "{}: spool_dir {}: cannot create a file there ({e}); create that folder, writable by \
             the user offsite runs as, or remove spool_dir to keep shards in memory only",
            cfg.path.display(),
            c.dir.display()
        ))),
    }
}

/// Starts the source's send stream and runs the pipeline over it.
async fn pipeline(
    run: &DatasetRun<'_>,
    state: &DatasetState,
    u: &Unfinished,
    resume: Option<BTreeMap<u64, ShardRecord>>,
    spool: &Option<Arc<Spool>>,
) -> Result<BackupReport> {
    let (cfg, ds) = (run.cfg, run.dataset);
    let id = u
        .id()
        .ok_or_else(|| anyhow!("unfinished backup has an invalid id {:?}", u.backup_id))?;
    let codec = codec_for(cfg, ds, u)?;
    let journal = Arc::new(match &resume {
        Some(_) => state.reopen()?,
        None => state.begin(u)?,
    });
    let parent_snap = u.parent.as_ref().and_then(|p| p.snapshot.clone());
    let source_desc = source::describe(&ds.source, u.snapshot.as_deref(), parent_snap.as_deref());
    let estimate = match &ds.source {
        // A command's stream is expected to be about as big as its previous one.
        SourceSpec::Command { .. } => u.previous_bytes,
        _ => snapshots::estimate(&ds.source, u.snapshot.as_deref(), parent_snap.as_deref()).await,
    };
    tracing::info!(
        "backing up {:?} as {id}: {source_desc} to {}",
        ds.name,
        ds.providers.join(", ")
    );
    if let SourceSpec::Command { command } = &ds.source {
        // The arguments may hold a password: shown only with -v.
        tracing::debug!("{:?}: command: {command}", ds.name);
    }
    let proc = source::start_send(
        &ds.source,
        &ds.send_flags,
        u.snapshot.as_deref(),
        parent_snap.as_deref(),
    )?;
    let job = BackupJob {
        host: cfg.host.clone(),
        dataset: ds.name.clone(),
        id,
        source_kind: ds.source.kind().to_string(),
        source: source_text(ds),
        source_desc,
        snapshot: u.snapshot.clone(),
        parent: u.parent.clone(),
        shard_size: u.shard_size,
        min_providers: cfg.min_providers,
        shards_in_flight: cfg.shards_in_flight,
        concurrency: cfg.concurrency,
        providers: run.providers.clone(),
        estimate,
        resume,
        journal: Some(journal),
        codec,
        erasure: u.erasure.clone(),
        spool: spool.clone(),
    };
    super::run(job, proc, run.progress.clone(), run.cancel.clone()).await
}

/// How the shards of `u` are stored: as the configuration says for a new backup; a resumed
/// backup keeps the encoding it started with, so its manifest never mixes two. A compression
/// change waits for the next backup (a warning); an encryption change (turned on or off, other
/// recipients) cannot, since the journaled objects are encrypted to the old recipients or not
/// at all: that is a configuration error (exit 2) asking for `--restart`.
fn codec_for(cfg: &Config, ds: &Dataset, u: &Unfinished) -> Result<Codec> {
    let configured = cfg.codec(ds);
    let now = configured
        .recipients
        .as_ref()
        .map_or_else(Vec::new, |r| r.to_strings());
    let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    if u.encoding.is_encrypted() != configured.recipients.is_some()
        || sorted(&u.recipients) != sorted(&now)
    {
        return Err(ConfigError(format!(
            "unfinished backup {} of {:?} was started {}, but the configuration now says {}; a resumed backup keeps              the encryption it started with, so run `offsite backup --restart {}` to discard it and start afresh              (or put the previous [encryption] settings back to resume it)",
            u.backup_id,
            ds.name,
            encryption_text(u.encoding.is_encrypted(), &u.recipients),
            encryption_text(!now.is_empty(), &now),
            ds.name
        ))
        .into());
    }
    let compression = match (u.encoding.compression, configured.compression) {
        (Some(_), c @ Compression::Zstd(_)) | (None, c @ Compression::None) => c,
        (was, _) => {
            tracing::warn!(
                "unfinished backup {} of {:?} is resumed {}, as it started; the new compression setting applies from the next backup",
                u.backup_id,
                ds.name,
                if was.is_some() { "compressed" } else { "uncompressed" }
            );
            match was {
                Some(_) => Compression::default(),
                None => Compression::None,
            }
        }
    };
    Ok(Codec {
        compression,
        recipients: configured.recipients,
    })
}

/// `unencrypted`, `encrypted to age1...`.
fn encryption_text(encrypted: bool, recipients: &[String]) -> String {
    match encrypted {
        false => "unencrypted".into(),
        true => format!("encrypted to {}", recipients.join(", ")),
    }
}

fn not_due(ds: &Dataset, next_due: SystemTime) {
    tracing::info!(
        "{:?} is not due; its next backup is due at {} (use --once to run now)",
        ds.name,
        layout::rfc3339(next_due)
    );
}

/// What the manifest names as the source.
fn source_text(ds: &Dataset) -> String {
    match &ds.source {
        SourceSpec::Zfs { dataset } => dataset.clone(),
        SourceSpec::Btrfs { subvolume, .. } => subvolume.display().to_string(),
        SourceSpec::Command { command } => command.clone(),
    }
}

fn log_metrics(ds: &Dataset, report: &BackupReport) {
    tracing::info!(
        event = %"backup_metrics",
        dataset = %ds.name,
        backup_id = %report.backup_id,
        total_bytes = report.total_bytes,
        total = %human_bytes(report.total_bytes),
        shards = report.shards,
        elapsed_secs = %format!("{:.2}", report.elapsed.as_secs_f64()),
        throughput = %human_rate(report.total_bytes, report.elapsed),
        "backup finished"
    );
}

#[cfg(test)]
mod tests;
