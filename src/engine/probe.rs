//! Proves that providers are distinct storage: a probe object (random name and content,
//! `<remote>/.offsite-probe-*`) written through one provider is looked for through the others.
//! Two names for one storage (a renamed rclone remote, a path through a symlink or a bind
//! mount) would otherwise count as two copies, and `sync --migrate FROM --to TO
//! --remove-source` would empty TO while emptying FROM.
//!
//! Guarantees:
//! - Every probe written is deleted again, whatever the outcome (a failed delete is a warning),
//!   except when the run is interrupted during the probe: then one may stay at the remote's root.
//! - Only a probe read back with its exact content makes two providers "the same"; a provider
//!   that cannot be written or read is an error for the caller to judge, never "distinct".

use crate::error::{ConfigError, ErrorKind, Interrupted, ProviderError};
use crate::provider::DynProvider;
use anyhow::{Context, Result};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// Object names of probes start with this, at the root of a provider.
pub const PROBE_PREFIX: &str = ".offsite-probe-";

/// A probe: a random name and content.
struct Probe {
    name: String,
    content: Bytes,
}

impl Probe {
    fn new() -> Self {
        Probe {
            name: format!("{PROBE_PREFIX}{:016x}", fastrand::u64(..)),
            content: Bytes::from(format!("offsite probe {:032x}\n", fastrand::u128(..))),
        }
    }
}

/// Whether `p` shows `probe` with its content: `Ok(false)` when it holds no such object.
async fn sees(p: &DynProvider, probe: &Probe) -> Result<bool, ProviderError> {
    match p.get(&probe.name, 4096).await {
        Ok(b) => Ok(b == probe.content),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

async fn remove(p: &DynProvider, probe: &Probe) {
    if let Err(e) = p.delete(&probe.name).await {
        tracing::warn!("{e}; remove the probe object {} by hand", probe.name);
    }
}

/// Groups `providers` by storage: providers that see each other's probes share a group. One
/// probe per provider, written in parallel; every provider looks for every other's probe.
/// A provider that cannot be probed is an error naming it.
pub async fn storage_groups(
    providers: &[DynProvider],
    cancel: &CancellationToken,
) -> Result<Vec<Vec<String>>> {
    let probes: Vec<Probe> = providers.iter().map(|_| Probe::new()).collect();
    let probes = probes.as_slice();
    let work = async {
        let puts = providers
            .iter()
            .zip(probes)
            .map(|(p, probe)| p.put(&probe.name, probe.content.clone(), None));
        let written = futures::future::join_all(puts).await;
        let found = async {
            for r in &written {
                r.clone().context("cannot write a probe object")?;
            }
            let looks = (0..providers.len()).flat_map(|i| {
                (0..providers.len())
                    .filter(move |&j| j != i)
                    .map(move |j| async move {
                        let seen = sees(&providers[j], &probes[i]).await;
                        (i, j, seen)
                    })
            });
            let mut pairs = Vec::new();
            for (i, j, seen) in futures::future::join_all(looks).await {
                if seen.context("cannot read back a probe object")? {
                    pairs.push((i, j));
                }
            }
            anyhow::Ok(pairs)
        }
        .await;
        let deletes = providers.iter().zip(probes).zip(&written);
        let deletes = deletes
            .filter(|(_, w)| w.is_ok())
            .map(|((p, probe), _)| remove(p, probe));
        futures::future::join_all(deletes).await;
        found
    };
    let pairs = tokio::select! {
        r = work => r?,
        _ = cancel.cancelled() => return Err(Interrupted.into()),
    };
    Ok(group(providers, &pairs))
}

/// Union of the pairs that saw each other's probe, in provider order.
fn group(providers: &[DynProvider], pairs: &[(usize, usize)]) -> Vec<Vec<String>> {
    let mut of: Vec<usize> = (0..providers.len()).collect();
    for &(i, j) in pairs {
        let (a, b) = (of[i], of[j]);
        of.iter_mut().filter(|g| **g == b).for_each(|g| *g = a);
    }
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut leaders: Vec<usize> = Vec::new();
    for (i, p) in providers.iter().enumerate() {
        match leaders.iter().position(|&l| l == of[i]) {
            Some(k) => groups[k].push(p.name().to_string()),
            None => {
                leaders.push(of[i]);
                groups.push(vec![p.name().to_string()]);
            }
        }
    }
    groups
}

/// With `min_providers` > 1, two provider files pointing at one storage must not count as two
/// copies: a probe object finds them; all but the first of each storage are left out of the
/// backup (with a warning), and a run that cannot reach `min_providers` distinct storages is
/// refused (exit 2). A probe that fails is a warning: the provider's upload will tell.
/// `rule` names the setting that asks for `min_providers` distinct storages in errors
/// (`min_providers = 2`, `erasure = "2+1"`).
pub async fn distinct_storage(
    providers: Vec<DynProvider>,
    min_providers: usize,
    rule: &str,
    cancel: &CancellationToken,
) -> Result<Vec<DynProvider>> {
    if min_providers < 2 || providers.len() < 2 {
        return Ok(providers);
    }
    match storage_groups(&providers, cancel).await {
        Ok(groups) => Ok(one_per_storage(providers, &groups, min_providers, rule)?),
        Err(e) if e.is::<Interrupted>() => Err(e),
        Err(e) => {
            tracing::warn!(
                "{e:#}; could not check that the providers are distinct storage, so each counts as one copy"
            );
            Ok(providers)
        }
    }
}

/// The first provider of each storage group, or why `groups` cannot meet `min_providers`.
fn one_per_storage(
    providers: Vec<DynProvider>,
    groups: &[Vec<String>],
    min_providers: usize,
    rule: &str,
) -> Result<Vec<DynProvider>, ConfigError> {
    let files = |g: &[String]| {
        g.iter()
            .map(|n| format!("{n}.toml"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    if groups.len() < min_providers {
        let shared: Vec<String> = groups
            .iter()
            .filter(|g| g.len() > 1)
            .map(|g| files(g))
            .collect();
        return Err(ConfigError(format!(
            "provider files {} in the providers directory point at one storage (a probe object written through one \
             is read back through the other), so they hold one copy, and {} distinct storage(s) cannot meet \
             {rule} ({min_providers} needed); point them at different storage or change {rule}",
            shared.join("; "),
            groups.len()
        )));
    }
    for g in groups.iter().filter(|g| g.len() > 1) {
        tracing::warn!(
            "provider files {} point at one storage: they count as one copy, and only {} is written to",
            files(g),
            g[0]
        );
    }
    let keep: Vec<&String> = groups.iter().map(|g| &g[0]).collect();
    Ok(providers
        .into_iter()
        .filter(|p| keep.iter().any(|k| *k == p.name()))
        .collect())
}

/// Whether `a` and `b` are one storage under two names.
pub async fn same_storage(
    a: &DynProvider,
    b: &DynProvider,
    cancel: &CancellationToken,
) -> Result<bool> {
    let groups = storage_groups(&[a.clone(), b.clone()], cancel).await?;
    Ok(groups.len() == 1)
}

#[cfg(test)]
mod tests;
