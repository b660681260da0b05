//! The end of a migration: verifying the destination by size and SHA-256, and only then (with
//! `--remove-source`) deleting the source's copy.

use super::Failed;
use crate::catalog::{BackupKey, Catalog};
use crate::engine::verify::{self, Check, Limits, Verdict};
use crate::error::Interrupted;
use crate::gaps::BackupFindings;
use crate::layout::{self, MANIFEST};
use crate::progress::Progress;
use crate::provider::DynProvider;
use anyhow::Result;
use futures::stream::{self, StreamExt};
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
        anyhow::bail!("cannot list {} to verify the migration: {e}", to.name());
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
    let results = verify::run_checks(
        &[from.clone(), to.clone()],
        checks,
        limits,
        progress,
        cancel,
    )
    .await;
    progress.finish();
    let (at_from, at_to): (Vec<_>, Vec<_>) = results?
        .into_iter()
        .partition(|(c, _)| c.provider == from.name());
    let source: HashMap<String, Verdict> = at_from.into_iter().map(|(c, v)| (c.path, v)).collect();
    for (c, v) in at_to {
        let err = match (&v, source.get(&c.path)) {
            (Verdict::Bad(e) | Verdict::Unreadable(e), _) => Some(e.clone()),
            (Verdict::Good(d), Some(Verdict::Good(s))) if s != d => {
                Some(format!("differs from {}'s copy (SHA-256)", from.name()))
            }
            (Verdict::Good(_), Some(Verdict::Bad(e) | Verdict::Unreadable(e))) => Some(format!(
                "cannot be compared with {}'s copy: {e}",
                from.name()
            )),
            (Verdict::Good(_), _) => None,
        };
        if let Some(e) = err {
            let object = c.path.rsplit('/').next().unwrap_or_default().to_string();
            problems.entry(c.key.clone()).or_default().push(Failed::new(
                &c.key,
                &object,
                to.name(),
                e,
            ));
        }
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
    let mut problems = Vec::new();
    // A backup whose manifests cannot be trusted is not "verified" by comparing shards: FROM
    // keeps its copy, so `--remove-source` never deletes the only good manifest.
    if let Some(why) = &f.damaged {
        problems.push(Failed::new(
            key,
            MANIFEST,
            to,
            format!("{why}; {from} keeps its copy"),
        ));
        return (problems, Vec::new());
    }
    if let Some((_, m)) = before.backups[key].manifest(&before.order) {
        let theirs = at_to
            .and_then(|e| e.manifests.get(to))
            .and_then(|r| r.as_ref().ok());
        if theirs.is_none_or(|t| t.shards != m.shards) {
            problems.push(Failed::new(
                key,
                MANIFEST,
                to,
                "the manifest is missing or differs",
            ));
        }
    }
    let objects: Vec<(u64, String, u64, Option<String>)> = if f.is_finished() {
        let r = f.reference.iter();
        r.map(|r| (r.index, r.name.clone(), r.length, r.sha256.clone()))
            .collect()
    } else {
        let held = before.backups[key].objects.get(from).into_iter().flatten();
        held.filter_map(|(n, &s)| layout::parse_shard_name(n).map(|(i, _)| (i, n.clone(), s, None)))
            .collect()
    };
    let dir = layout::backup_dir(&before.host, &key.dataset, &key.id);
    let mut checks = Vec::new();
    for (index, name, length, sha) in objects {
        let size = at_to
            .and_then(|e| e.objects.get(to))
            .and_then(|o| o.get(&name));
        if size != Some(&length) {
            let found = size.map_or("nothing".to_string(), |s| format!("{s} bytes"));
            problems.push(Failed::new(
                key,
                &name,
                to,
                format!("{to} holds {found}, not {length} bytes"),
            ));
            continue;
        }
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

/// Deletes from `from` what it held of each verified backup (its shards and manifest; other
/// objects stay), manifests first. Returns how many objects were deleted and the failures.
pub async fn remove_source(
    before: &Catalog,
    from: &DynProvider,
    verified: &[BackupKey],
    concurrency: usize,
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
        let deletes = stream::iter(batch)
            .map(|p| async move { from.delete(&p).await })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>();
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
