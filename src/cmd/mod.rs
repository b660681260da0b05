//! One file per command (STYLE.md §2). Each command reads the validated config, calls the
//! engine and turns its result into output and an [`Outcome`].

pub mod backup;
pub mod check;
pub mod hosts;
pub mod init;
pub mod keygen;
pub mod list;
pub mod providers;
pub mod prune;
pub mod reference;
pub mod restore;
pub mod status;
pub mod sync;
pub mod table;
pub mod verify;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::ConfigError;
use crate::progress::Progress;
use crate::provider::{self, DynProvider, Stack};
use anyhow::Result;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How a command that did its job ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 3: done, but some provider misses something; the text says what.
    Gaps(String),
}

/// What every command gets.
pub struct Ctx {
    pub cfg: Config,

    pub json: bool,
    pub progress: Arc<dyn Progress>,
    pub cancel: CancellationToken,
    /// What the run saw of providers and backups, for the metrics file.
    pub observed: std::sync::Mutex<crate::notify::observed::Observed>,
}

impl Ctx {
    /// Providers by name, in priority order; an unknown name is a usage error.
    pub fn providers(&self, names: &[String]) -> Result<Vec<DynProvider>, ConfigError> {
        self.providers_in(names, Stack::default())
    }

    /// [`Ctx::providers`], built as `stack` says (`Stack { dry_run: true }`: writes skipped).
    pub fn providers_in(
        &self,
        names: &[String],
        stack: Stack,
    ) -> Result<Vec<DynProvider>, ConfigError> {
        let mut out = Vec::new();
        for p in &self.cfg.providers {
            if names.contains(&p.name) {
                out.push(provider::from_config_with(
                    &self.cfg,
                    p,
                    &self.cancel,
                    stack,
                    &self.progress,
                ));
            }
        }
        if let Some(unknown) = names.iter().find(|n| self.cfg.provider(n).is_none()) {
            return Err(ConfigError(format!(
                "unknown provider {unknown:?}; the providers are the files in the providers directory: {}",
                self.cfg.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(out)
    }

    /// The enabled providers plus the `extra` ones named on the command line (which may be
    /// disabled), in priority order. An unknown name is a usage error.
    pub fn providers_with(&self, extra: &[&str]) -> Result<Vec<DynProvider>, ConfigError> {
        let mut names: Vec<String> = self
            .cfg
            .providers
            .iter()
            .filter(|p| p.enabled)
            .map(|p| p.name.clone())
            .collect();
        names.extend(extra.iter().map(|s| s.to_string()));
        self.providers(&names)
    }

    /// Lists `providers` once and keeps the backups of `datasets` (all when empty), with the
    /// hashes providers list cheaply when `hashes`; see [`crate::engine::scan`].
    pub async fn scan(
        &self,
        providers: &[DynProvider],
        datasets: &[String],
        hashes: bool,
    ) -> Result<crate::catalog::Catalog> {
        let scope = crate::engine::scan::Scope {
            host: &self.cfg.host,
            datasets,
            hashes,
        };
        let catalog = crate::engine::scan::scan(providers, scope, &self.cancel).await?;
        self.observe(|o| o.listed(&catalog, providers.iter().map(|p| p.name().to_string())));
        self.known_datasets(providers, datasets, &catalog).await?;
        Ok(catalog)
    }

    /// A dataset asked for by name that is neither configured nor on any provider (all of them
    /// listed) is a typo: a usage error (exit 2) naming the datasets that exist.
    async fn known_datasets(
        &self,
        providers: &[DynProvider],
        datasets: &[String],
        catalog: &crate::catalog::Catalog,
    ) -> Result<()> {
        let stored = |d: &String| catalog.backups.keys().any(|k| &k.dataset == d);
        let Some(unknown) = datasets
            .iter()
            .find(|d| self.cfg.dataset(d).is_none() && !stored(d))
        else {
            return Ok(());
        };
        if !catalog.unreachable.is_empty() {
            return Ok(()); // it may be on the provider that could not be listed
        }
        let all = crate::engine::scan::Scope {
            host: &self.cfg.host,
            datasets: &[],
            hashes: false,
        };
        let everything = crate::engine::scan::scan(providers, all, &self.cancel).await?;
        let mut names: std::collections::BTreeSet<&str> =
            self.cfg.datasets.iter().map(|d| d.name.as_str()).collect();
        names.extend(everything.backups.keys().map(|k| k.dataset.as_str()));
        let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        Err(crate::error::ConfigError(format!(
            "dataset {unknown:?} is neither in {} nor on the providers (host {:?}); the datasets are: {}",
            self.cfg.path.display(),
            self.cfg.host,
            if names.is_empty() {
                "none yet (another machine's backups: `--host THAT_HOST`)".into()
            } else {
                names.join(", ")
            }
        ))
        .into())
    }

    /// Where restore and `verify --decrypt` get the identity: `flag` (`--identity FILE`), else
    /// `identity_file` of `[encryption]`; it is read only if an encrypted backup needs it.
    pub fn key_source(&self, flag: Option<&std::path::Path>) -> crate::engine::restore::KeySource {
        let configured = self
            .cfg
            .encryption
            .as_ref()
            .and_then(|e| e.identity_file.clone());
        crate::engine::restore::KeySource {
            identity: flag.map(|f| f.to_path_buf()).or(configured),
            config: self.cfg.path.clone(),
            passphrase: crate::codec::keys::Passphrase::FromEnvOrTerminal,
        }
    }

    /// Records what the run saw, for the metrics file.
    pub fn observe(&self, f: impl FnOnce(&mut crate::notify::observed::Observed)) {
        if let Ok(mut o) = self.observed.lock() {
            f(&mut o);
        }
    }

    /// Every enabled provider, in priority order.
    pub fn enabled_providers(&self) -> Vec<DynProvider> {
        self.enabled_providers_in(Stack::default())
    }

    /// [`Ctx::enabled_providers`], built as `stack` says (`Stack { dry_run: true }`: writes
    /// skipped).
    pub fn enabled_providers_in(&self, stack: Stack) -> Vec<DynProvider> {
        self.cfg
            .providers
            .iter()
            .filter(|p| p.enabled)
            .map(|p| provider::from_config_with(&self.cfg, p, &self.cancel, stack, &self.progress))
            .collect()
    }
}

pub async fn run(
    cli: Cli,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
) -> Result<Outcome> {
    // The commands that need no configuration (init writes one).
    match &cli.command {
        Command::Keygen { output } => return keygen::run(output.as_deref(), cli.json),
        Command::Init => return init::run(cli.config.as_deref(), cli.json),
        Command::Completions { shell } => return reference::completions(*shell),
        Command::Man => return reference::man(),
        _ => {}
    }
    let path = Config::locate(cli.config.as_deref())?;
    let cfg = Config::load(&path, cli.host.as_deref())?;
    let watch = crate::notify::Watch::of(&cfg, &cli.command);
    let ctx = Ctx {
        cfg,
        json: cli.json,
        progress,
        cancel,
        observed: Default::default(),
    };
    if let Some(w) = &watch {
        w.started().await;
    }
    let result = dispatch(&ctx, cli.command).await;
    if let Some(w) = &watch {
        let observed = ctx.observed.lock().map(|o| o.clone()).unwrap_or_default();
        w.ended(&crate::notify::Ended::of(&result), &observed).await;
    }
    result
}

/// Runs the command itself.
async fn dispatch(ctx: &Ctx, command: Command) -> Result<Outcome> {
    match command {
        Command::Backup(args) => backup::run(ctx, &args).await,
        Command::List {
            all_hosts: true, ..
        }
        | Command::Hosts => hosts::run(ctx).await,
        Command::List { dataset, .. } => list::run(ctx, dataset.as_deref()).await,
        Command::Providers => providers::run(ctx).await,
        Command::Check => check::run(ctx).await,
        Command::Prune { dry_run } => prune::run(ctx, dry_run).await,
        Command::Restore(args) => restore::run(ctx, &args).await,
        Command::Status { dataset } => status::run(ctx, dataset.as_deref()).await,
        Command::Verify(args) => verify::run(ctx, &args).await,
        Command::Sync(args) => sync::run(ctx, &args).await,
        Command::Keygen { .. } | Command::Init | Command::Completions { .. } | Command::Man => {
            unreachable!("run without a config")
        }
    }
}
