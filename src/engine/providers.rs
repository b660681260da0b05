//! The provider check behind `offsite providers`: every configured provider (enabled or not)
//! listed and asked for its usage, all at once. A provider that cannot be listed is a row
//! saying so (with its error, redacted), never an early return; a stop request ends the check.

use crate::config::{Config, ProviderConfig};
use crate::error::Interrupted;
use crate::provider::{self, DynProvider};
use crate::redact;
use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// `offsite providers`.
#[derive(Debug, Serialize)]
pub struct ProvidersReport {
    pub host: String,
    /// In configuration order.
    pub providers: Vec<ProviderCheck>,
}

/// One provider: reachable, what offsite keeps there, its free space.
#[derive(Debug, Serialize)]
pub struct ProviderCheck {
    pub provider: String,
    /// The remote, redacted.
    pub remote: String,
    pub enabled: bool,
    pub priority: i64,
    /// Its listing of the host's directory succeeded.
    pub reachable: bool,
    /// Objects offsite keeps for the host, when reachable.
    pub objects: Option<usize>,
    pub bytes: Option<u64>,
    /// From `rclone about`, where the backend tells.
    pub free: Option<u64>,
    pub total: Option<u64>,
    /// Why the listing failed, redacted.
    pub error: Option<String>,
}

impl ProvidersReport {
    /// Enabled providers that could not be listed.
    pub fn down(&self) -> Vec<&str> {
        self.providers
            .iter()
            .filter(|p| p.enabled && !p.reachable)
            .map(|p| p.provider.as_str())
            .collect()
    }
}

/// Checks every provider of `cfg`.
pub async fn check(cfg: &Config, cancel: &CancellationToken) -> Result<ProvidersReport> {
    let checks = cfg.providers.iter().map(|pc| {
        let p = provider::from_config(cfg, pc, cancel);
        async move { check_one(&p, pc, &cfg.host).await }
    });
    let providers = tokio::select! {
        // Cancelled providers end at once too: report the stop, not them.
        biased;
        _ = cancel.cancelled() => return Err(Interrupted.into()),
        r = futures::future::join_all(checks) => r,
    };
    Ok(ProvidersReport {
        host: cfg.host.clone(),
        providers,
    })
}

/// Lists `p`'s objects of `host` and asks for its usage, at once.
pub async fn check_one(p: &DynProvider, pc: &ProviderConfig, host: &str) -> ProviderCheck {
    let (listing, about) = tokio::join!(p.list(host), p.about());
    let usage = about.ok();
    let mut row = ProviderCheck {
        provider: pc.name.clone(),
        remote: redact::remote(&pc.remote),
        enabled: pc.enabled,
        priority: pc.priority,
        reachable: false,
        objects: None,
        bytes: None,
        free: usage.as_ref().and_then(|u| u.free),
        total: usage.as_ref().and_then(|u| u.total),
        error: None,
    };
    match listing {
        Ok(l) => {
            row.reachable = true;
            row.objects = Some(l.len());
            row.bytes = Some(l.iter().map(|o| o.size).sum());
        }
        Err(e) => row.error = Some(redact::text(&e.to_string())),
    }
    row
}
