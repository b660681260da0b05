//! Configuration: `offsite.toml` plus one `providers.d/NAME.toml` per provider.
//!
//! Parsing happens in two steps: serde reads the files into `Raw*` structs (unknown keys are
//! errors, reported with file and line by the TOML parser), then [`Config::load`] validates them
//! into [`Config`], the only type the engine sees. Every validation error is a
//! [`ConfigError`] naming the file, the line and what to change, so a bad config exits 2 before
//! anything is touched.

mod encryption;
pub mod names;
mod providers;
mod raw;
pub mod units;
mod validate;

use crate::codec::{Codec, Compression, Recipients};
use crate::error::ConfigError;
use raw::RawConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use validate::SourceFile;

/// Smallest and largest accepted `shard_size`. The lower bound keeps shard names in stream
/// order up to 1 PiB (see `layout`); the upper bound keeps memory sane.
pub const MIN_SHARD_SIZE: u64 = 1 << 20;
pub const MAX_SHARD_SIZE: u64 = 4 << 30;
/// `timeout` when not set: how long one attempt of a provider call may take.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub host: String,
    /// `--host` named another machine than this config's own: its backups have no local
    /// snapshots or state here.
    pub foreign_host: bool,
    pub state_dir: PathBuf,
    pub rclone: PathBuf,
    pub rclone_config: Option<PathBuf>,
    pub shard_size: u64,
    pub min_providers: usize,
    pub shards_in_flight: usize,
    /// `spool_dir` and `spool_size`: where shards that slow providers still need wait on disk
    /// during a backup; `None` keeps them in memory (`shards_in_flight`).
    pub spool: Option<SpoolConfig>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// Every provider file, enabled or not, ordered by priority then name.
    pub providers: Vec<ProviderConfig>,
    pub datasets: Vec<Dataset>,
    /// `[encryption]`: absent, shards are stored unencrypted.
    pub encryption: Option<EncryptionConfig>,
    /// The folder of the provider files.
    pub providers_dir: PathBuf,
    /// `metrics_file`, `notify_url`, `notify_command`: who hears how a run ended.
    pub monitor: Monitor,
}

/// `spool_dir` and `spool_size` (see `crate::spool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// The most bytes the spool holds at once.
    pub size: u64,
}

/// The top-level monitoring keys (see `crate::notify`).
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    /// Prometheus text file, rewritten after backup, sync, verify, prune and status.
    pub metrics_file: Option<PathBuf>,
    /// healthchecks.io-style ping URL (http or https).
    pub notify_url: Option<String>,
    /// Run through `sh -c` after backup, sync, verify and prune, with `OFFSITE_*` variables.
    pub notify_command: Option<String>,
}

/// The `[encryption]` table: whom backups are encrypted to, and where a restore finds its key.
#[derive(Clone)]
pub struct EncryptionConfig {
    /// `recipients` and the lines of `recipients_file`.
    pub recipients: Recipients,
    /// Only restore and `verify --decrypt` need it.
    pub identity_file: Option<PathBuf>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("recipients", &self.recipients.to_strings())
            .field("identity_file", &self.identity_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time, with jitter.
    pub base_delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub remote: String,
    pub enabled: bool,
    pub priority: i64,
    pub bwlimit: Option<String>,
    pub flags: Vec<String>,
    /// Whether the listings of `status` and plain `sync` ask for MD5/SHA-1.
    pub list_hashes: ListHashes,
    /// `max_object_size`: the largest object the provider takes (a plan's upload limit);
    /// `backup` refuses a dataset whose stored shards or pieces could be larger.
    pub max_object_size: Option<u64>,
}

/// A provider's `list_hashes` key: whether `status` and plain `sync` list the backend's
/// MD5/SHA-1 (`rclone lsjson --hash`) to catch corrupt shards without reading them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListHashes {
    /// `"auto"`: when the backend stores hashes (`rclone backend features`: hashes listed and
    /// no SlowHash); local and sftp would read every object, so they are not asked.
    #[default]
    Auto,
    /// `true`: always ask, even where rclone computes them by reading the objects.
    Always,
    /// `false`: never ask.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Zfs {
        dataset: String,
    },
    Btrfs {
        subvolume: PathBuf,
        snapshot_dir: PathBuf,
    },
    Command {
        command: String,
    },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Zfs { .. } => "zfs",
            SourceSpec::Btrfs { .. } => "btrfs",
            SourceSpec::Command { .. } => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub source: SourceSpec,
    pub full_every: Option<Duration>,
    pub incremental_every: Option<Duration>,
    pub keep_chains: Option<u32>,
    /// `max_age`: `status` and `verify` report the dataset as stale (exit 3) when its newest
    /// complete backup is older, or when it has none.
    pub max_age: Option<Duration>,
    /// `notify_url` of this dataset: a backup of it pings this URL instead of the top-level one.
    pub notify_url: Option<String>,
    /// The retention grid: `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`.
    pub keep: Grid,
    /// Names of the providers this dataset goes to (enabled ones only).
    pub providers: Vec<String>,
    /// Use the newest existing snapshot matching this glob instead of making one.
    pub snapshot_pattern: Option<String>,
    /// Extra flags for `zfs send` / `btrfs send`.
    pub send_flags: Vec<String>,
    /// Extra flags for `zfs receive` / `btrfs receive` when restoring this dataset.
    pub receive_flags: Vec<String>,
    /// `compression` (the dataset's, else the top level's, else zstd level 3).
    pub compression: Compression,
    /// `encrypt`: true by default when `[encryption]` exists.
    pub encrypt: bool,
    /// `erasure = "k+m"` (the dataset's, else the top level's): each stored shard cut into k
    /// data and m parity pieces on different providers; `None`: every provider holds every
    /// shard.
    pub erasure: Option<crate::erasure::Scheme>,
    /// `resume`: what a backup does with an unfinished one it finds.
    pub resume: Resume,
}

/// A dataset's `resume` key: what `backup` does with the unfinished backup a stopped run left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resume {
    /// `"auto"`: resume; a command source whose re-read stream differs is discarded and a
    /// fresh backup starts in the same run (zfs and btrfs streams are resumed as `Always`).
    #[default]
    Auto,
    /// `"always"`: resume; a stream that differs fails the run until `--restart`.
    Always,
    /// `"never"`: discard the unfinished backup and start afresh.
    Never,
}

/// `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`: how many periods of each
/// length keep their newest backup on the providers (0: none; see `engine::prune`'s grid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grid {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Grid {
    pub fn is_empty(&self) -> bool {
        *self == Grid::default()
    }

    /// `keep_daily = 7, keep_monthly = 6`, for reports.
    pub fn describe(&self) -> String {
        self.rules()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(rule, n)| format!("keep_{rule} = {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each rule's name (`daily`) and count.
    pub fn rules(&self) -> [(&'static str, u32); 4] {
        [
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }
}

impl Config {
    /// Finds the config file: `--config`, then `$OFFSITE_CONFIG`, then the system and user paths.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os("OFFSITE_CONFIG").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let mut candidates = vec![PathBuf::from("/etc/offsite/offsite.toml")];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".config/offsite/offsite.toml"));
        }
        candidates
            .iter()
            .find(|p| p.exists())
            .cloned()
            .ok_or_else(|| {
                ConfigError(format!(
                    "no configuration found: tried {}; pass --config PATH or set OFFSITE_CONFIG",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Reads and validates the config at `path` and the provider files it points to.
    pub fn load(path: &Path, host_override: Option<&str>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let file = SourceFile { path, text: &text };
        let base = path.parent().unwrap_or(Path::new("."));
        let providers_dir = base.join(
            raw.providers_dir
                .as_deref()
                .unwrap_or(Path::new("providers.d")),
        );
        let providers = providers::load(&providers_dir).map_err(|e| match &raw.providers_dir {
            // Set in this file: say where, as for every other key.
            Some(_) => ConfigError(format!(
                "{}: providers_dir: {}, or fix providers_dir",
                path.display(),
                e.0
            )),
            None => e,
        })?;
        let rclone = validate::rclone(&file, raw.rclone.as_ref(), base)?;
        let limits = validate::limits(&file, &raw)?;
        let spool = validate::spool(&file, &raw, base, limits.shard_size)?;
        let compression =
            encryption::compression(&file, raw.compression.as_ref())?.unwrap_or_default();
        let erasure = encryption::erasure(&file, raw.erasure.as_ref())?;
        let encryption = match &raw.encryption {
            Some(e) => Some(encryption::encryption(&file, e, base)?),
            None => None,
        };
        let datasets = validate::datasets(
            &file,
            raw.dataset,
            &providers,
            limits.min_providers,
            &providers_dir,
            (compression, encryption.is_some(), erasure),
        )?;
        let (host, foreign_host) = validate::host(path, raw.host, host_override)?;
        let monitor = Monitor {
            metrics_file: raw.metrics_file.map(|p| base.join(p)),
            notify_url: validate::notify_url(&file, raw.notify_url.as_ref(), "notify_url")?,
            notify_command: validate::notify_command(&file, raw.notify_command.as_ref())?,
        };
        Ok(Config {
            path: path.to_path_buf(),
            host,
            foreign_host,
            state_dir: raw
                .state_dir
                .map_or_else(default_state_dir, |p| base.join(p)),
            rclone,
            rclone_config: raw.rclone_config.map(|p| base.join(p)),
            shard_size: limits.shard_size,
            min_providers: limits.min_providers,
            shards_in_flight: limits.shards_in_flight,
            spool,
            concurrency: limits.concurrency,
            retry: limits.retry,
            timeout: limits.timeout,
            providers,
            datasets,
            encryption,
            providers_dir,
            monitor,
        })
    }

    /// A dataset with `erasure = "k+m"` can be backed up only to at least k+m enabled
    /// providers. Checked by `backup`, not when the config is read: a restore, status or sync
    /// after a provider was disabled must still run.
    pub fn check_erasure(&self, ds: &Dataset) -> Result<(), ConfigError> {
        let Some(e) = ds.erasure.filter(|e| ds.providers.len() < e.total()) else {
            return Ok(());
        };
        Err(ConfigError(format!(
            "{}: dataset {:?} has erasure = \"{e}\", which puts each shard's {} pieces on {} different providers, \
             but it has {} enabled provider(s); add or enable providers in {}, or choose a smaller erasure (or none)",
            self.path.display(),
            ds.name,
            e.total(),
            e.total(),
            ds.providers.len(),
            self.providers_dir.display()
        )))
    }

    /// What a backup of `ds` does to each shard: its compression, and encryption to the
    /// configured recipients unless the dataset says `encrypt = false`.
    pub fn codec(&self, ds: &Dataset) -> Codec {
        Codec {
            compression: ds.compression,
            recipients: match (&self.encryption, ds.encrypt) {
                (Some(e), true) => Some(e.recipients.clone()),
                _ => None,
            },
        }
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.name == name)
    }

    /// The datasets named on the command line, or all of them.
    pub fn select_datasets(&self, names: &[String]) -> Result<Vec<&Dataset>, ConfigError> {
        if names.is_empty() {
            return Ok(self.datasets.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.dataset(n).ok_or_else(|| {
                    ConfigError(format!(
                        "no dataset {n:?} in {}; configured: {}",
                        self.path.display(),
                        self.datasets
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect()
    }
}

/// Resolves a program name on PATH, or a path relative to the config file.
fn resolve_program(name: &str, base: &Path) -> Result<PathBuf, String> {
    if name.contains('/') {
        let p = base.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{} does not exist", p.display()))
        }
    } else {
        which::which(name).map_err(|_| format!("{name:?} not found on PATH"))
    }
}

/// `$STATE_DIRECTORY` (set by systemd's `StateDirectory=offsite`: `/var/lib/offsite`; the
/// first when it lists several), else `$XDG_STATE_HOME/offsite`, else
/// `~/.local/state/offsite`.
fn default_state_dir() -> PathBuf {
    state_dir_from(|k| std::env::var_os(k))
}

/// The state dir when the config names none: `$STATE_DIRECTORY` (set by systemd's
/// `StateDirectory=`; its first entry), then `$XDG_STATE_HOME/offsite`, then
/// `~/.local/state/offsite`.
fn state_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |k: &str| var(k).filter(|x| !x.is_empty());
    if let Some(dirs) = set("STATE_DIRECTORY") {
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if let Some(x) = set("XDG_STATE_HOME") {
        return PathBuf::from(x).join("offsite");
    }
    let home = var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".local/state/offsite")
}

/// The machine's hostname, up to its first dot.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).to_string();
    h.split('.').next().unwrap_or("localhost").to_string()
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
