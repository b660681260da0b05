//! Configuration: `offsite.toml` plus one `providers.d/NAME.toml` per provider.
//!
//! Parsing happens in two steps: serde reads the files into `Raw*` structs (unknown keys are
//! errors, reported with file and line by the TOML parser), then [`Config::load`] validates them
//! into [`Config`], the only type the engine sees. Every validation error is a
//! [`ConfigError`] naming the file, the line and what to change, so a bad config exits 2 before
//! anything is touched.

pub mod names;
mod raw;
pub mod units;

use crate::error::ConfigError;
use raw::{RawConfig, RawDataset, RawProvider};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Smallest and largest accepted `shard_size`. The lower bound keeps shard names in stream
/// order up to 1 PiB (see `layout`); the upper bound keeps memory sane.
pub const MIN_SHARD_SIZE: u64 = 1 << 20;
pub const MAX_SHARD_SIZE: u64 = 4 << 30;

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
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// Every provider file, enabled or not, ordered by priority then name.
    pub providers: Vec<ProviderConfig>,
    pub datasets: Vec<Dataset>,
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
    /// Names of the providers this dataset goes to (enabled ones only).
    pub providers: Vec<String>,
    /// Use the newest existing snapshot matching this glob instead of making one.
    pub snapshot_pattern: Option<String>,
    /// Extra flags for `zfs send` / `btrfs send`.
    pub send_flags: Vec<String>,
    /// Extra flags for `zfs receive` / `btrfs receive` when restoring this dataset.
    pub receive_flags: Vec<String>,
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
        let providers = load_providers(&providers_dir)?;
        let rclone_name = raw
            .rclone
            .as_ref()
            .map_or("rclone", |r| r.get_ref().as_str());
        let rclone = resolve_program(rclone_name, base).map_err(|e| {
            let msg = format!("rclone: {e}; install rclone (apt-get install rclone) or set `rclone = \"/path/to/rclone\"`");
            match &raw.rclone {
                Some(r) => file.err(r.span(), msg),
                None => ConfigError(format!("{}: {msg}", path.display())),
            }
        })?;

        let shard_size = match &raw.shard_size {
            Some(s) => {
                let v = s.get_ref().0;
                if !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&v) {
                    return Err(file.err(
                        s.span(),
                        format!(
                            "shard_size {v} bytes is out of range: use 1MiB to 4GiB (64MiB is a good default)"
                        ),
                    ));
                }
                v
            }
            None => 64 << 20,
        };
        let min_providers = positive(&file, raw.min_providers.as_ref(), "min_providers", 1, 1000)?;
        let shards_in_flight = positive(
            &file,
            raw.shards_in_flight.as_ref(),
            "shards_in_flight",
            4,
            1024,
        )?;
        let concurrency = positive(&file, raw.concurrency.as_ref(), "concurrency", 2, 64)?;
        let attempts = positive(&file, raw.retries.as_ref(), "retries", 5, 100)? as u32;
        let retry = RetryPolicy {
            attempts,
            base_delay: raw
                .retry_delay
                .map(|s| s.0)
                .unwrap_or(Duration::from_secs(1)),
        };
        let timeout = match &raw.timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(file.err(t.span(), "timeout must be above zero".into()))
            }
            Some(t) => t.get_ref().0,
            None => Duration::from_secs(3600),
        };

        let enabled: Vec<&ProviderConfig> = providers.iter().filter(|p| p.enabled).collect();
        let mut datasets = Vec::new();
        let mut names = BTreeSet::new();
        for d in raw.dataset {
            let span = d.span();
            let d = d.into_inner();
            let ds = validate_dataset(&file, span.clone(), d, &providers, &enabled)?;
            if !names.insert(ds.name.clone()) {
                return Err(file.err(
                    span,
                    format!(
                        "dataset {:?} is defined twice; names must be unique",
                        ds.name
                    ),
                ));
            }
            if ds.providers.len() < min_providers {
                return Err(file.err(span, format!(
                    "dataset {:?} has {} enabled provider(s) but min_providers = {min_providers}; add or enable providers in {}",
                    ds.name, ds.providers.len(), providers_dir.display()
                )));
            }
            datasets.push(ds);
        }

        let own_host = raw.host.unwrap_or_else(hostname);
        let foreign_host = host_override.is_some_and(|h| h != own_host);
        let host = host_override.map(str::to_string).unwrap_or(own_host);
        if host.is_empty()
            || host.contains('/')
            || host.starts_with('.')
            || host.len() > names::MAX_COMPONENT
        {
            return Err(ConfigError(format!(
                "{}: host {host:?} is not usable as a folder name on the remotes; set `host = \"name\"`",
                path.display()
            )));
        }
        let state_dir = match raw.state_dir {
            Some(p) => base.join(p),
            None => default_state_dir(),
        };
        let rclone_config = raw.rclone_config.map(|p| base.join(p));

        Ok(Config {
            path: path.to_path_buf(),
            host,
            foreign_host,
            state_dir,
            rclone,
            rclone_config,
            shard_size,
            min_providers,
            shards_in_flight,
            concurrency,
            retry,
            timeout,
            providers,
            datasets,
        })
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

/// A config file's path and text, to turn byte spans into `file:line` in messages.
struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl SourceFile<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, span: std::ops::Range<usize>, msg: String) -> ConfigError {
        ConfigError(format!(
            "{}:{}: {msg}",
            self.path.display(),
            self.line(span)
        ))
    }
}

fn positive(
    file: &SourceFile,
    v: Option<&Spanned<i64>>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            let n = *s.get_ref();
            if n < 1 || n as u64 > max as u64 {
                Err(file.err(
                    s.span(),
                    format!("{key} = {n} is out of range: use 1 to {max}"),
                ))
            } else {
                Ok(n as usize)
            }
        }
    }
}

fn validate_dataset(
    file: &SourceFile,
    span: std::ops::Range<usize>,
    d: RawDataset,
    all: &[ProviderConfig],
    enabled: &[&ProviderConfig],
) -> Result<Dataset, ConfigError> {
    let name = d.name.get_ref().clone();
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(file.err(
            d.name.span(),
            format!("dataset name {name:?} must be non-empty printable text"),
        ));
    }
    let is_command = d.command.is_some() && d.zfs.is_none() && d.btrfs.is_none();
    if is_command
        && (d.snapshot_pattern.is_some() || d.send_flags.is_some() || d.receive_flags.is_some())
    {
        return Err(file.err(span, format!(
            "dataset {name:?}: snapshot_pattern, send_flags and receive_flags apply to zfs and btrfs datasets only"
        )));
    }
    if let Some(p) = &d.snapshot_pattern {
        if p.is_empty() || p.contains('/') || p.contains('@') {
            return Err(file.err(span, format!(
                "dataset {name:?}: snapshot_pattern {p:?} must match a snapshot's short name (no '@' or '/'), e.g. \"autosnap_*_daily\""
            )));
        }
    }
    if d.snapshot_dir.is_some() && d.btrfs.is_none() {
        return Err(file.err(
            span,
            format!("dataset {name:?}: snapshot_dir applies to btrfs datasets only"),
        ));
    }
    let source = match (d.zfs, d.btrfs, d.command) {
        (Some(z), None, None) => {
            if z.is_empty() || z.contains('@') {
                return Err(file.err(span, format!("dataset {name:?}: zfs = {z:?} must name a dataset (pool/fs), without @snapshot")));
            }
            SourceSpec::Zfs { dataset: z }
        }
        (None, Some(b), None) => {
            let snapshot_dir = d
                .snapshot_dir
                .unwrap_or_else(|| b.join(".offsite-snapshots"));
            SourceSpec::Btrfs { subvolume: b, snapshot_dir }
        }
        (None, None, Some(c)) => {
            if c.trim().is_empty() {
                return Err(file.err(span, format!("dataset {name:?}: command is empty")));
            }
            SourceSpec::Command { command: c }
        }
        (None, None, None) => {
            return Err(file.err(span, format!(
                "dataset {name:?} has no source: set exactly one of zfs = \"pool/fs\", btrfs = \"/path/to/subvolume\" or command = \"...\""
            )))
        }
        _ => {
            return Err(file.err(span, format!(
                "dataset {name:?} sets more than one of zfs, btrfs and command: keep exactly one"
            )))
        }
    };
    if let Some(why) = names::too_long(&name, &source) {
        return Err(file.err(d.name.span(), why));
    }
    let providers = match d.providers {
        None => enabled.iter().map(|p| p.name.clone()).collect(),
        Some(list) => {
            let line_span = list.span();
            let mut out = Vec::new();
            for p in list.into_inner() {
                match all.iter().find(|c| c.name == p) {
                    None => {
                        return Err(file.err(
                            line_span,
                            format!(
                                "dataset {name:?}: unknown provider {p:?}; known: {}",
                                all.iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ))
                    }
                    Some(c) if !c.enabled => {
                        tracing::warn!(
                            "dataset {name:?}: provider {p:?} is disabled and will not be used"
                        );
                    }
                    Some(_) if out.contains(&p) => {}
                    Some(_) => out.push(p),
                }
            }
            out
        }
    };
    if d.keep_chains == Some(0) {
        return Err(file.err(span, format!(
            "dataset {name:?}: keep_chains = 0 would delete every backup; use 1 or more, or leave it out to keep everything"
        )));
    }
    Ok(Dataset {
        name,
        source,
        full_every: d.full_every.map(|s| s.0),
        incremental_every: d.incremental_every.map(|s| s.0),
        keep_chains: d.keep_chains,
        providers,
        snapshot_pattern: d.snapshot_pattern,
        send_flags: d.send_flags.unwrap_or_default(),
        receive_flags: d.receive_flags.unwrap_or_default(),
    })
}

fn load_providers(dir: &Path) -> Result<Vec<ProviderConfig>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ConfigError(format!(
            "cannot read providers directory {}: {e}; create it with one NAME.toml per provider",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let raw: RawProvider = toml::from_str(&text).map_err(|e| {
            ConfigError(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let file = SourceFile {
            path: &path,
            text: &text,
        };
        if raw.remote.get_ref().trim().is_empty() {
            return Err(file.err(
                raw.remote.span(),
                "remote is empty: set e.g. remote = \"b2:bucket/offsite\"".into(),
            ));
        }
        if !raw.remote.get_ref().contains(':') && !raw.remote.get_ref().starts_with('/') {
            return Err(file.err(
                raw.remote.span(),
                format!(
                    "remote {:?} is neither an rclone remote (name:path) nor an absolute path",
                    crate::redact::remote(raw.remote.get_ref())
                ),
            ));
        }
        out.push(ProviderConfig {
            name,
            remote: raw.remote.into_inner().trim_end_matches('/').to_string(),
            enabled: raw.enabled.unwrap_or(true),
            priority: raw.priority.unwrap_or(100),
            bwlimit: raw.bwlimit,
            flags: raw.flags.unwrap_or_default(),
            list_hashes: list_hashes(&file, raw.list_hashes)?,
        });
    }
    out.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
    Ok(out)
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

fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("offsite");
    }
    let home = std::env::var_os("HOME")
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
/// Reads a provider's `list_hashes` key: `"auto"` (the default), `true` or `false`.
fn list_hashes(
    file: &SourceFile,
    raw: Option<Spanned<toml::Value>>,
) -> Result<ListHashes, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ListHashes::Auto);
    };
    match raw.get_ref() {
        toml::Value::Boolean(true) => Ok(ListHashes::Always),
        toml::Value::Boolean(false) => Ok(ListHashes::Never),
        toml::Value::String(s) if s == "auto" => Ok(ListHashes::Auto),
        other => Err(file.err(
            raw.span(),
            format!("list_hashes is {other}: set \"auto\", true or false"),
        )),
    }
}

#[cfg(test)]
mod tests;
