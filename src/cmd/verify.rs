//! `offsite verify [DATASET] [--deep] [--decrypt [--identity FILE]] [--provider NAME]`: do the
//! providers hold what the manifests say? The quick check compares one listing per provider
//! with the manifests (sizes only); `--deep` also downloads every shard and checks its stored
//! SHA-256 (engine::verify; no identity needed); `--decrypt` (implies `--deep`) also decodes
//! the shards of compressed and encrypted backups and checks their plaintext SHA-256 (the
//! identity is read only if a backup in scope is encrypted; missing or wrong: exit 2 before
//! anything is downloaded).
//! Only finished backups are verified; `status` shows unfinished ones.
//!
//! Exit 3 on any missing, truncated, corrupt or unreadable shard, missing or bad manifest, or
//! provider in scope that could not be listed. An erasure-coded backup is checked piece by
//! piece on the provider placement puts each on (`--deep`: each piece's SHA-256; `--decrypt`
//! then joins `k` good pieces of each shard, decodes and checks the plaintext); a shard with
//! fewer than `k` good pieces, or that does not decode from them, is lost: exit 1 after the
//! table.

use super::table::print_rows;
use super::{Ctx, Outcome};
use crate::cli::VerifyArgs;
use crate::config::units::human_bytes;
use crate::engine::stale;
use crate::engine::verify::{
    self, Decoding, DeepScope, Limits, VerifiedBackup, VerifyReport, VerifyScope,
};
use crate::gaps::{self, Corrupt};
use crate::outln;
use crate::output::{self, Report};
use anyhow::Result;

pub async fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<Outcome> {
    let only = args.provider.as_deref();
    let providers = ctx.providers_with(&only.into_iter().collect::<Vec<_>>())?;
    let datasets: Vec<String> = args.dataset.iter().cloned().collect();
    let catalog = ctx.scan(&providers, &datasets, false).await?;
    let quick = gaps::survey(&ctx.cfg, &catalog, &Corrupt::new());
    let decoding = match args.decrypt {
        true => {
            let keys = ctx.key_source(args.identity.as_deref());
            Some(Decoding::prepare(&catalog, &quick, &keys).await?)
        }
        false => None,
    };
    let deep = match args.deep || args.decrypt {
        true => {
            let limits = Limits {
                shards_in_flight: ctx.cfg.shards_in_flight,
                concurrency: ctx.cfg.concurrency,
            };
            let (host, progress, cancel) = (&catalog.host, &ctx.progress, &ctx.cancel);
            let scope = DeepScope {
                only,
                decoding: decoding.as_ref(),
            };
            let found =
                verify::deep_check_in(host, &quick, scope, &providers, limits, progress, cancel);
            Some(found.await?)
        }
        false => None,
    };
    let surveys = match &deep {
        Some(d) => gaps::survey(&ctx.cfg, &catalog, &d.corrupt),
        None => quick,
    };
    let scope = VerifyScope {
        only,
        deep: deep.as_ref(),
    };
    let mut report = verify::verify_report(&catalog, &surveys, scope);
    report.stale = stale::stale(&ctx.cfg, &catalog, &datasets, std::time::SystemTime::now());
    report.problems = stale::add_to(report.problems.take(), &report.stale);
    ctx.observe(|o| o.surveyed(&surveys));
    let lost = report
        .lost
        .clone()
        .map_or(Ok(()), |why| Err(anyhow::anyhow!(why)));
    output::conclude(ctx.json, &report, lost)
}

impl Report for VerifyReport {
    fn render_text(&self) -> std::io::Result<()> {
        let mut rows = vec![["DATASET", "BACKUP", "PROVIDER", "RESULT"]
            .map(String::from)
            .to_vec()];
        for b in &self.backups {
            let (dataset, backup_id, results) = match b {
                VerifiedBackup::Finished(b) => (
                    &b.dataset,
                    &b.backup_id,
                    b.providers
                        .iter()
                        .map(|p| (&p.provider, &p.result))
                        .collect::<Vec<_>>(),
                ),
                VerifiedBackup::Damaged(b) => (
                    &b.dataset,
                    &b.backup_id,
                    b.providers
                        .iter()
                        .map(|p| (&p.provider, &p.result))
                        .collect(),
                ),
            };
            for (provider, result) in results {
                rows.push(vec![
                    dataset.clone(),
                    backup_id.clone(),
                    provider.clone(),
                    result.clone(),
                ]);
            }
        }
        print_rows(&rows)?;
        for s in &self.stale {
            outln!("{}", s.describe())?;
        }
        if !self.unfinished.is_empty() {
            outln!(
                "{} unfinished backup(s) not verified; see `offsite status`",
                self.unfinished.len()
            )?;
        }
        if let Some(bytes) = self.checked_bytes {
            outln!("{} checked by SHA-256", human_bytes(bytes))?;
        }
        if let Some(n) = self.decrypted {
            outln!("{n} shard(s) of compressed or encrypted backups decoded and checked by plaintext SHA-256")?;
        }
        for u in &self.undecodable {
            outln!(
                "{} {}: shard {} does not decode from good pieces: {}",
                u.dataset,
                u.backup_id,
                u.shard,
                u.error
            )?;
        }
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        match &self.problems {
            Some(problems) => Outcome::Gaps(problems.clone()),
            None => Outcome::Done,
        }
    }
}
