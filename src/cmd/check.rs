//! `offsite check`: is the configuration usable? The config was parsed and validated before
//! this runs (a bad key is exit 2 with file and line already). Then every provider, enabled or
//! not: its rclone setup (engine::preflight: remote known to rclone's config, flags and
//! `bwlimit` accepted) and, when that is right, a probe object written, read back and deleted
//! through the same stack a backup uses. Exit 0, or 2 with one line per problem naming the
//! provider's file.

use super::{Ctx, Outcome};
use crate::engine::preflight::{self, SetupProblem};
use crate::error::ConfigError;
use crate::outln;
use crate::output::{self, Report};
use crate::provider::DynProvider;
use anyhow::Result;
use bytes::Bytes;
use serde::Serialize;

/// `offsite check`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The configuration file checked.
    pub config: String,
    /// Every provider, in priority order.
    pub providers: Vec<CheckedProvider>,
    pub problems: Vec<SetupProblem>,
}

#[derive(Debug, Serialize)]
pub struct CheckedProvider {
    pub provider: String,
    pub remote: String,
    pub enabled: bool,
    pub ok: bool,
}

pub async fn run(ctx: &Ctx) -> Result<Outcome> {
    let names: Vec<String> = ctx.cfg.providers.iter().map(|p| p.name.clone()).collect();
    let mut problems = preflight::rclone_setup(&ctx.cfg, &names, &ctx.cancel).await?;
    let set_up: Vec<String> = (names.iter())
        .filter(|n| !problems.iter().any(|p| &p.provider == *n))
        .cloned()
        .collect();
    let providers = ctx.providers(&set_up)?;
    let probes = providers.iter().map(probe);
    let found = tokio::select! {
        r = futures::future::join_all(probes) => r,
        _ = ctx.cancel.cancelled() => return Err(crate::error::Interrupted.into()),
    };
    for (p, why) in providers.iter().zip(found) {
        if let Err(why) = why {
            problems.push(SetupProblem {
                provider: p.name().to_string(),
                file: file_of(ctx, p.name()),
                problem: why,
            });
        }
    }
    let report = CheckReport {
        config: ctx.cfg.path.display().to_string(),
        providers: (ctx.cfg.providers.iter())
            .map(|p| CheckedProvider {
                provider: p.name.clone(),
                remote: crate::redact::text(&p.remote),
                enabled: p.enabled,
                ok: !problems.iter().any(|x| x.provider == p.name),
            })
            .collect(),
        problems,
    };
    let late = match report.problems.len() {
        0 => Ok(()),
        n => Err(ConfigError(format!(
            "{n} problem(s) with the configuration; fix the files named above"
        ))
        .into()),
    };
    output::conclude(ctx.json, &report, late)
}

fn file_of(ctx: &Ctx, name: &str) -> String {
    let file = ctx.cfg.providers_dir.join(format!("{name}.toml"));
    file.display().to_string()
}

/// Writes a small object at the provider's root, reads it back and deletes it.
async fn probe(p: &DynProvider) -> Result<(), String> {
    let name = format!(".offsite-check-{:016x}", fastrand::u64(..));
    let body = Bytes::from(format!("offsite check {:032x}\n", fastrand::u128(..)));
    if let Err(e) = p.put(&name, body.clone(), None).await {
        return Err(format!("cannot write a probe object: {e}"));
    }
    let read = p.get(&name, body.len() as u64).await;
    let deleted = p.delete(&name).await;
    match (read, deleted) {
        (Ok(b), Ok(())) if b == body => Ok(()),
        (Ok(_), Ok(())) => Err("a probe object reads back different from what was written".into()),
        (Err(e), _) => Err(format!("cannot read back a probe object: {e}")),
        (_, Err(e)) => Err(format!(
            "cannot delete a probe object ({name} stays at the remote's root): {e}"
        )),
    }
}

impl Report for CheckReport {
    fn render_text(&self) -> std::io::Result<()> {
        outln!("config {}: parsed and valid", self.config)?;
        for p in &self.providers {
            let state = match (p.ok, p.enabled) {
                (true, true) => "ok",
                (true, false) => "ok (disabled)",
                (false, _) => "PROBLEM",
            };
            outln!("{:<10} {:<14} {}", state, p.provider, p.remote)?;
        }
        for p in &self.problems {
            outln!("{}", p.describe())?;
        }
        Ok(())
    }
}
