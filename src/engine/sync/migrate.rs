//! A migration's guards and end: refusing `--remove-source` when FROM and TO are one storage
//! under two names, verifying the destination by size and SHA-256 after the copies, and only
//! then (with `--remove-source`) deleting the source's copy.

use super::{Failed, MigrationSummary, SyncContext, SyncReport};
use crate::catalog::{BackupKey, Catalog};
use crate::engine::probe;
use crate::engine::verify::{self, Check, Limits, Verdict};
use crate::error::{ConfigError, Interrupted};
use crate::gaps::{BackupFindings, RefShard};
use crate::layout::{self, MANIFEST};
use crate::manifest::Manifest;
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The outcome of checking a migration's destination.
#[derive(Debug, Default)]
pub struct MigrationCheck {
    /// Backups `to` holds whole, every shard checked by size and SHA-256.
    pub verified: Vec<BackupKey>,
    pub failed: Vec<Failed>,
}

/// `--remove-source` empties FROM: refuse (exit 2) when TO is FROM under another name, as a
/// probe object shows, before anything is copied or deleted.
pub async fn refuse_same_storage(
    from: &DynProvider,
    to: &DynProvider,
    cancel: &CancellationToken,
) -> Result<()> {
    let (f, t) = (from.name(), to.name());
    let same = probe::same_storage(from, to, cancel)
        .await
        .with_context(|| {
            format!("cannot prove that {t} is other storage than {f}, so --remove-source touched nothing")
        })?;
    if same {
        return Err(ConfigError(format!(
            "--migrate {f} --to {t} --remove-source: {f} and {t} are the same storage under two names \
             (a probe object written through one is read back through the other), so removing {f}'s copies \
             would delete {t}'s too; nothing was copied or deleted. Point {t} at other storage"
        ))
        .into());
    }
    Ok(())
}

/// After the copies: verifies TO and, with `remove_source` and nothing failed, deletes FROM's
/// copies. What it found goes into `report` before any error is returned, so a failed removal
/// still reports the copies and the verification.
pub(super) async fn finish(
    cx: &SyncContext<'_>,
    before: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    (from, to): (&DynProvider, &DynProvider),
    remove: bool,
    report: &mut SyncReport,
) -> Result<()> {
    let limits = cx.limits();
    let check = verify_migration(before, surveys, from, to, limits, cx.progress, cx.cancel).await?;
    tracing::info!(
        "{} migrated backup(s) verified at {} by size and SHA-256; {} problem(s)",
        check.verified.len(),
        to.name(),
        check.failed.len()
    );
    report.failed.extend(check.failed);
    let verified_backups = check.verified.len();
    report.migration = Some(MigrationSummary {
        verified_backups,
        removed_objects: None,
    });
    if !remove {
        return Ok(());
    }
    if !report.failed.is_empty() {
        tracing::warn!(
            "{} keeps its copy: not everything was verified at {}",
            from.name(),
            to.name()
        );
        return Ok(());
    }
    let (n, errors) = remove_source(before, from, &check.verified, cx.cancel).await?;
    report.migration = Some(MigrationSummary {
        verified_backups,
        removed_objects: Some(n),
    });
    for e in &errors {
        tracing::error!("removing the source: {e}");
    }
    if !errors.is_empty() {
        bail!(
            "{} object(s) could not be deleted from {}; run the same command again",
            errors.len(),
            from.name()
        );
    }
    tracing::info!("deleted {n} object(s) from {}", from.name());
    Ok(())
}

/// Checks at `to` every backup `from` held: a fresh listing and manifest read of `to`, then a
/// download and SHA-256 of every shard (against the manifest; for an unfinished backup against
/// `from`'s copy, which is downloaded too).
pub async fn verify_migration(
    before: &Catalog,
    surveys: &[(BackupKey, BackupFindings)],
    from: &DynProvider,
    to: &DynProvider,
    limits: Limits,
    progress: &Arc<dyn Progress>,
    cancel: &CancellationToken,
) -> Result<MigrationCheck> {
    let after = Catalog::scan(std::slice::from_ref(to), &before.host, None).await;
    if let Some(e) = after.unreachable.get(to.name()) {
        bail!("cannot list {} to verify the migration: {e}", to.name());
    }
    let mut problems: BTreeMap<BackupKey, Vec<Failed>> = BTreeMap::new();
    let mut checks = Vec::new();
    for (key, f) in surveys {
        if before.backups[key]
            .objects
            .get(from.name())
            .is_none_or(|o| o.is_empty())
        {
            continue;
        }
        let (p, c) = migration_checks(before, &after, key, f, from.name(), to.name());
        problems.entry(key.clone()).or_default().extend(p);
        checks.extend(c);
    }
    let total = checks.iter().map(|c| c.length).sum();
    progress.begin("verify migration", Some(total), &[to.name().to_string()]);
    let pair = [from.clone(), to.clone()];
    let results = verify::run_checks(&pair, checks, limits, progress, cancel).await;
    progress.finish();
    for (key, failed) in compare_with_source(results?, from.name(), to.name()) {
        problems.entry(key).or_default().push(failed);
    }
    let mut out = MigrationCheck::default();
    for (key, p) in problems {
        if p.is_empty() {
            out.verified.push(key);
        } else {
            out.failed.extend(p);
        }
    }
    Ok(out)
}

/// The downloads' verdicts at `to`, each against the manifest or (without a SHA-256 to check)
/// against `from`'s copy: what is wrong, per backup.
fn compare_with_source(
    results: Vec<(Check, Verdict)>,
    from: &str,
    to: &str,
) -> Vec<(BackupKey, Failed)> {
    let (at_from, at_to): (Vec<_>, Vec<_>) =
        results.into_iter().partition(|(c, _)| c.provider == from);
    let source: HashMap<String, Verdict> = at_from.into_iter().map(|(c, v)| (c.path, v)).collect();
    let mut out = Vec::new();
    for (c, v) in at_to {
        let err = match (&v, source.get(&c.path)) {
            (Verdict::Bad(e) | Verdict::Unreadable(e), _) => Some(e.clone()),
            (Verdict::Good(d), Some(Verdict::Good(s))) if s != d => {
                Some(format!("differs from {from}'s copy (SHA-256)"))
            }
            (Verdict::Good(_), Some(Verdict::Bad(e) | Verdict::Unreadable(e))) => {
                Some(format!("cannot be compared with {from}'s copy: {e}"))
            }
            (Verdict::Good(_), _) => None,
        };
        if let Some(e) = err {
            let object = c.path.rsplit('/').next().unwrap_or_default();
            out.push((c.key.clone(), Failed::new(&c.key, object, to, e)));
        }
    }
    out
}

/// For one migrated backup: what is already wrong at `to` by its listing and manifest, and
/// the downloads that check the rest.
fn migration_checks(
    before: &Catalog,
    after: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    from: &str,
    to: &str,
) -> (Vec<Failed>, Vec<Check>) {
    let at_to = after.backups.get(key);
    // A backup whose manifests cannot be trusted is not "verified" by comparing shards: FROM
    // keeps its copy, so `--remove-source` never deletes the only good manifest.
    if let Some(why) = &f.damaged {
        let why = format!("{why}; {from} keeps its copy");
        return (vec![Failed::new(key, MANIFEST, to, why)], Vec::new());
    }
    let mut problems = Vec::new();
    if let Some((_, m)) = before.backups[key].manifest(&before.order) {
        let theirs = at_to
            .and_then(|e| e.manifests.get(to))
            .and_then(|r| r.as_ref().ok());
        // An erasure-coded backup's manifest at TO must also place FROM's pieces on TO.
        let places_to = |t: &Manifest| {
            t.erasure
                .as_ref()
                .is_none_or(|e| e.providers.iter().any(|p| p == to))
        };
        if theirs.is_none_or(|t| t.shards != m.shards || !places_to(t)) {
            let why = "the manifest is missing or differs";
            problems.push(Failed::new(key, MANIFEST, to, why));
        }
    }
    let dir = layout::backup_dir(&before.host, &key.dataset, &key.id);
    let held_at_to = at_to.and_then(|e| e.objects.get(to));
    let mut checks = Vec::new();
    for (index, name, length, sha) in migrated_objects(before, key, f, (from, to)) {
        let size = held_at_to.and_then(|o| o.get(&name));
        if size != Some(&length) {
            let found = size.map_or("nothing".to_string(), |s| format!("{s} bytes"));
            let why = format!("{to} holds {found}, not {length} bytes");
            problems.push(Failed::new(key, &name, to, why));
            continue;
        }
        // Without a SHA-256 to check against, `to`'s copy is compared with `from`'s.
        let providers = if sha.is_some() {
            vec![to]
        } else {
            vec![to, from]
        };
        checks.extend(providers.into_iter().map(|p| Check {
            provider: p.to_string(),
            key: key.clone(),
            index,
            path: format!("{dir}/{name}"),
            length,
            sha256: sha.clone(),
        }));
    }
    (problems, checks)
}

/// The shards a migration moved of one backup, `(index, name, length, sha256)`: the
/// reference's for a finished backup (of an erasure-coded one, the pieces placed on `from`,
/// or on `to` once the manifest is relocated), else whatever `from` held, at its size.
fn migrated_objects(
    before: &Catalog,
    key: &BackupKey,
    f: &BackupFindings,
    (from, to): (&str, &str),
) -> Vec<(u64, String, u64, Option<String>)> {
    if f.is_finished() {
        let moved = |r: &&RefShard| r.holder.as_ref().is_none_or(|h| h == from || h == to);
        return (f.reference.iter().filter(moved))
            .map(|r| (r.index, r.name.clone(), r.length, r.sha256.clone()))
            .collect();
    }
    let held = before.backups[key].objects.get(from).into_iter().flatten();
    held.filter_map(|(n, &s)| layout::parse_shard_name(n).map(|(i, _)| (i, n.clone(), s, None)))
        .collect()
}

/// Deletes from `from` what it held of each verified backup (its shards and manifest; other
/// objects stay), manifests first. Returns how many objects were deleted and the failures.
pub async fn remove_source(
    before: &Catalog,
    from: &DynProvider,
    verified: &[BackupKey],
    cancel: &CancellationToken,
) -> Result<(u64, Vec<String>)> {
    let mut manifests = Vec::new();
    let mut shards = Vec::new();
    for key in verified {
        let dir = layout::backup_dir(&before.host, &key.dataset, &key.id);
        for name in before.backups[key]
            .objects
            .get(from.name())
            .into_iter()
            .flat_map(|o| o.keys())
        {
            if name == MANIFEST {
                manifests.push(format!("{dir}/{name}"));
            } else if layout::parse_shard_name(name).is_some() {
                shards.push(format!("{dir}/{name}"));
            }
        }
    }
    let mut deleted = 0;
    let mut failed = Vec::new();
    // Manifests first: a backup without its manifest on `from` is never taken for whole there.
    for batch in [manifests, shards] {
        // As many at once as `from`'s `Limit` allows.
        let deletes = futures::future::join_all(batch.iter().map(|p| from.delete(p)));
        let results = tokio::select! {
            r = deletes => r,
            _ = cancel.cancelled() => return Err(Interrupted.into()),
        };
        for r in results {
            match r {
                Ok(()) => deleted += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
    }
    Ok((deleted, failed))
}
