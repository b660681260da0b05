//! The one way commands read what is stored: list every provider once (in parallel), group the
//! listings into a [`Catalog`], warn about each provider that could not be listed, and fail with
//! [`NothingListable`] when none could. A stop request ends the scan at once.

use crate::catalog::Catalog;
use crate::error::{Interrupted, NothingListable};
use crate::provider::DynProvider;
use anyhow::Result;
use tokio_util::sync::CancellationToken;

/// What to list.
pub struct Scope<'a> {
    pub host: &'a str,
    /// The datasets to keep; all when empty.
    pub datasets: &'a [String],
    /// List the MD5/SHA-1 providers keep cheaply, so corrupt shards show as such.
    pub hashes: bool,
}

/// Lists `providers` and keeps the backups of `scope`'s datasets.
pub async fn scan(
    providers: &[DynProvider],
    scope: Scope<'_>,
    cancel: &CancellationToken,
) -> Result<Catalog> {
    let one = match scope.datasets {
        [d] => Some(d.as_str()),
        _ => None,
    };
    let listing = async {
        match scope.hashes {
            true => Catalog::scan_hashed(providers, scope.host, one).await,
            false => Catalog::scan(providers, scope.host, one).await,
        }
    };
    let mut catalog = tokio::select! {
        // Cancelled providers end at once too: report the stop, not them.
        biased;
        _ = cancel.cancelled() => return Err(Interrupted.into()),
        c = listing => c,
    };
    if scope.datasets.len() > 1 {
        catalog
            .backups
            .retain(|k, _| scope.datasets.contains(&k.dataset));
    }
    for (p, e) in &catalog.unreachable {
        tracing::warn!("provider {p} could not be listed: {e}");
    }
    if !providers.is_empty() && catalog.unreachable.len() == providers.len() {
        return Err(NothingListable {
            dataset: one.map(str::to_string),
            reasons: catalog
                .unreachable
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect(),
        }
        .into());
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Fault, MemoryProvider};
    use std::sync::Arc;

    #[tokio::test]
    async fn no_listable_provider_is_an_error_naming_each_one() {
        let p = MemoryProvider::new("p1");
        p.inject(Fault {
            op: "list",
            path_contains: String::new(),
            kind: crate::error::ErrorKind::Permanent,
            times: u32::MAX,
        });
        let providers: Vec<DynProvider> = vec![Arc::new(p)];
        let scope = Scope {
            host: "h",
            datasets: &["d".to_string()],
            hashes: false,
        };
        let Err(err) = scan(&providers, scope, &CancellationToken::new()).await else {
            panic!("a scan with no listable provider succeeded");
        };
        let text = err.to_string();
        assert!(err.downcast_ref::<NothingListable>().is_some(), "{text}");
        assert!(
            text.starts_with("no provider of \"d\" could be listed"),
            "{text}"
        );
        assert!(text.contains("p1: "), "{text}");
    }
}
