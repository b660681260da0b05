//! The rules a parsed `offsite.toml` must meet, one small function per rule, turning the raw
//! structs of [`super::raw`] into the validated [`super::Config`] parts. Every error is a
//! [`ConfigError`] naming the file, the line (where the TOML parser gave a span) and what to
//! change.

use super::names;
use super::raw::{RawConfig, RawDataset};
use super::{Dataset, ProviderConfig, RetryPolicy, SourceSpec, MAX_SHARD_SIZE, MIN_SHARD_SIZE};
use crate::codec::Compression;
use crate::error::ConfigError;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A config file's path and text, to turn byte spans into `file:line` in messages.
pub(super) struct SourceFile<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl SourceFile<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    pub fn err(&self, span: Range<usize>, msg: String) -> ConfigError {
        ConfigError(format!(
            "{}:{}: {msg}",
            self.path.display(),
            self.line(span)
        ))
    }
}

/// The top-level numbers of `offsite.toml`, checked and with their defaults.
pub(super) struct Limits {
    pub shard_size: u64,
    pub min_providers: usize,
    pub shards_in_flight: usize,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

/// Checks the top-level numbers, in the order they are written in the docs.
pub(super) fn limits(file: &SourceFile, raw: &RawConfig) -> Result<Limits, ConfigError> {
    let shard_size = shard_size(file, raw)?;
    let min_providers = in_range(file, raw.min_providers.as_ref(), "min_providers", 1, 1000)?;
    let shards_in_flight = in_range(
        file,
        raw.shards_in_flight.as_ref(),
        "shards_in_flight",
        4,
        1024,
    )?;
    let concurrency = in_range(file, raw.concurrency.as_ref(), "concurrency", 2, 64)?;
    let attempts = in_range(file, raw.retries.as_ref(), "retries", 5, 100)? as u32;
    let retry = RetryPolicy {
        attempts,
        base_delay: raw
            .retry_delay
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(1)),
    };
    Ok(Limits {
        shard_size,
        min_providers,
        shards_in_flight,
        concurrency,
        retry,
        timeout: timeout(file, raw)?,
    })
}

/// `shard_size`: 1 MiB to 4 GiB, 64 MiB when not set.
fn shard_size(file: &SourceFile, raw: &RawConfig) -> Result<u64, ConfigError> {
    let Some(s) = &raw.shard_size else {
        return Ok(64 << 20);
    };
    let v = s.get_ref().0;
    if !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&v) {
        return Err(file.err(
            s.span(),
            format!(
                "shard_size {v} bytes is out of range: use 1MiB to 4GiB (64MiB is a good default)"
            ),
        ));
    }
    Ok(v)
}

/// `spool_dir` and `spool_size`: both or neither, the size at least one shard. The folder's
/// existence is checked when a backup opens the spool, not here: restore and status never
/// use it.
pub(super) fn spool(
    file: &SourceFile,
    raw: &RawConfig,
    base: &Path,
    shard_size: u64,
) -> Result<Option<super::SpoolConfig>, ConfigError> {
    let (dir, size) = match (&raw.spool_dir, &raw.spool_size) {
        (None, None) => return Ok(None),
        (Some(dir), Some(size)) => (base.join(dir.get_ref()), size),
        (Some(dir), None) => {
            return Err(file.err(
                dir.span(),
                "spool_dir is set without spool_size; add e.g. `spool_size = \"20GiB\"` \
                 (the most disk the spool may take)"
                    .into(),
            ))
        }
        (None, Some(s)) => {
            return Err(file.err(
                s.span(),
                "spool_size is set without spool_dir; add `spool_dir = \"/path\"`, a folder \
                 on a local disk"
                    .into(),
            ))
        }
    };
    let size_v = size.get_ref().0;
    if size_v < shard_size {
        return Err(file.err(
            size.span(),
            format!(
                "spool_size {} is smaller than one shard (shard_size {}); make it several \
                 shards, e.g. what a slow provider uploads in an hour",
                crate::config::units::human_bytes(size_v),
                crate::config::units::human_bytes(shard_size)
            ),
        ));
    }
    Ok(Some(super::SpoolConfig { dir, size: size_v }))
}

/// `timeout`: above zero, an hour when not set.
fn timeout(file: &SourceFile, raw: &RawConfig) -> Result<Duration, ConfigError> {
    match &raw.timeout {
        Some(t) if t.get_ref().0.is_zero() => {
            Err(file.err(t.span(), "timeout must be above zero".into()))
        }
        Some(t) => Ok(t.get_ref().0),
        None => Ok(super::DEFAULT_TIMEOUT),
    }
}

/// A count that must be within `1..=max`; `default` when not set.
fn in_range(
    file: &SourceFile,
    v: Option<&Spanned<i64>>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(s) = v else {
        return Ok(default);
    };
    let n = *s.get_ref();
    if n < 1 || n as u64 > max as u64 {
        return Err(file.err(
            s.span(),
            format!("{key} = {n} is out of range: use 1 to {max}"),
        ));
    }
    Ok(n as usize)
}

/// `rclone`: a program on PATH or a path relative to the config, `rclone` when not set.
pub(super) fn rclone(
    file: &SourceFile,
    raw: Option<&Spanned<String>>,
    base: &Path,
) -> Result<PathBuf, ConfigError> {
    let name = raw.map_or("rclone", |r| r.get_ref().as_str());
    super::resolve_program(name, base).map_err(|e| {
        let msg = format!("rclone: {e}; install rclone (apt-get install rclone) or set `rclone = \"/path/to/rclone\"`");
        match raw {
            Some(r) => file.err(r.span(), msg),
            None => ConfigError(format!("{}: {msg}", file.path.display())),
        }
    })
}

/// The host folder on the remotes: `--host`, else `host`, else this machine's name. It must
/// be usable as one folder name. Returns it and whether `--host` named another machine.
pub(super) fn host(
    path: &Path,
    configured: Option<String>,
    host_override: Option<&str>,
) -> Result<(String, bool), ConfigError> {
    let own_host = configured.unwrap_or_else(super::hostname);
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
    Ok((host, foreign_host))
}

/// What a dataset inherits from the top level: compression, whether `[encryption]` exists,
/// erasure.
pub(super) type Defaults = (Compression, bool, Option<crate::erasure::Scheme>);

/// Validates every `[[dataset]]`: each on its own, then that names are unique and that each
/// has at least `min_providers` enabled providers.
pub(super) fn datasets(
    file: &SourceFile,
    raw: Vec<Spanned<RawDataset>>,
    providers: &[ProviderConfig],
    min_providers: usize,
    providers_dir: &Path,
    defaults: Defaults,
) -> Result<Vec<Dataset>, ConfigError> {
    let enabled: Vec<&ProviderConfig> = providers.iter().filter(|p| p.enabled).collect();
    let mut datasets = Vec::new();
    let mut names = BTreeSet::new();
    for d in raw {
        let span = d.span();
        let ds = dataset(
            file,
            span.clone(),
            d.into_inner(),
            providers,
            &enabled,
            defaults,
        )?;
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
    Ok(datasets)
}

/// One `[[dataset]]` on its own (`span` is its table, for the rules without a narrower span).
fn dataset(
    file: &SourceFile,
    span: Range<usize>,
    d: RawDataset,
    all: &[ProviderConfig],
    enabled: &[&ProviderConfig],
    (compression, have_encryption, erasure): Defaults,
) -> Result<Dataset, ConfigError> {
    let at = |msg: String| file.err(span.clone(), msg);
    let name = dataset_name(file, &d.name)?;
    let (compression, encrypt) = super::encryption::dataset_codec(
        file,
        &name,
        d.compression.as_ref(),
        d.encrypt.as_ref(),
        compression,
        have_encryption,
    )?;
    let erasure = super::encryption::erasure(file, d.erasure.as_ref())?.or(erasure);
    snapshot_keys_fit_source(&d, &name).map_err(at)?;
    let source = source(&name, &d).map_err(at)?;
    if let Some(why) = names::too_long(&name, &source) {
        return Err(file.err(d.name.span(), why));
    }
    let providers = match &d.providers {
        None => enabled.iter().map(|p| p.name.clone()).collect(),
        Some(list) => listed_providers(&name, list.get_ref(), all)
            .map_err(|msg| file.err(list.span(), msg))?,
    };
    if d.keep_chains == Some(0) {
        return Err(at(format!(
            "dataset {name:?}: keep_chains = 0 would delete every backup; use 1 or more, or leave it out to keep everything"
        )));
    }
    let notify_url = notify_url(
        file,
        d.notify_url.as_ref(),
        &format!("dataset {name:?}: notify_url"),
    )?;
    Ok(Dataset {
        name,
        source,
        full_every: d.full_every.map(|s| s.0),
        incremental_every: d.incremental_every.map(|s| s.0),
        keep_chains: d.keep_chains,
        max_age: d.max_age.map(|s| s.0),
        notify_url,
        keep: super::Grid {
            daily: d.keep_daily.unwrap_or(0),
            weekly: d.keep_weekly.unwrap_or(0),
            monthly: d.keep_monthly.unwrap_or(0),
            yearly: d.keep_yearly.unwrap_or(0),
        },
        providers,
        snapshot_pattern: d.snapshot_pattern,
        send_flags: d.send_flags.unwrap_or_default(),
        receive_flags: d.receive_flags.unwrap_or_default(),
        compression,
        encrypt,
        erasure,
        resume: resume(file, d.resume.as_ref())?,
    })
}

/// A dataset's `resume`: `"auto"` (the default), `"always"` or `"never"`.
fn resume(file: &SourceFile, raw: Option<&Spanned<String>>) -> Result<super::Resume, ConfigError> {
    use super::Resume;
    let Some(raw) = raw else {
        return Ok(Resume::Auto);
    };
    match raw.get_ref().as_str() {
        "auto" => Ok(Resume::Auto),
        "always" => Ok(Resume::Always),
        "never" => Ok(Resume::Never),
        other => Err(file.err(
            raw.span(),
            format!("resume = {other:?}: set \"auto\", \"always\" or \"never\""),
        )),
    }
}

/// A dataset's `name`: non-empty printable text.
fn dataset_name(file: &SourceFile, name: &Spanned<String>) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty() || n.chars().any(|c| c.is_control()) {
        return Err(file.err(
            name.span(),
            format!("dataset name {n:?} must be non-empty printable text"),
        ));
    }
    Ok(n.clone())
}

/// The keys that apply to snapshots only: `snapshot_pattern`, `send_flags` and
/// `receive_flags` not on a command dataset, a pattern that is a short snapshot name, and
/// `snapshot_dir` on btrfs only.
fn snapshot_keys_fit_source(d: &RawDataset, name: &str) -> Result<(), String> {
    let is_command = d.command.is_some() && d.zfs.is_none() && d.btrfs.is_none();
    if is_command
        && (d.snapshot_pattern.is_some() || d.send_flags.is_some() || d.receive_flags.is_some())
    {
        return Err(format!(
            "dataset {name:?}: snapshot_pattern, send_flags and receive_flags apply to zfs and btrfs datasets only"
        ));
    }
    if let Some(p) = &d.snapshot_pattern {
        if p.is_empty() || p.contains('/') || p.contains('@') {
            return Err(format!(
                "dataset {name:?}: snapshot_pattern {p:?} must match a snapshot's short name (no '@' or '/'), e.g. \"autosnap_*_daily\""
            ));
        }
    }
    if d.snapshot_dir.is_some() && d.btrfs.is_none() {
        return Err(format!(
            "dataset {name:?}: snapshot_dir applies to btrfs datasets only"
        ));
    }
    Ok(())
}

/// Exactly one of `zfs`, `btrfs` and `command`, each well-formed.
fn source(name: &str, d: &RawDataset) -> Result<SourceSpec, String> {
    match (&d.zfs, &d.btrfs, &d.command) {
        (Some(z), None, None) => {
            if z.is_empty() || z.contains('@') {
                return Err(format!("dataset {name:?}: zfs = {z:?} must name a dataset (pool/fs), without @snapshot"));
            }
            Ok(SourceSpec::Zfs { dataset: z.clone() })
        }
        (None, Some(b), None) => Ok(SourceSpec::Btrfs {
            subvolume: b.clone(),
            snapshot_dir: d
                .snapshot_dir
                .clone()
                .unwrap_or_else(|| b.join(".offsite-snapshots")),
        }),
        (None, None, Some(c)) => {
            if c.trim().is_empty() {
                return Err(format!("dataset {name:?}: command is empty"));
            }
            Ok(SourceSpec::Command { command: c.clone() })
        }
        (None, None, None) => Err(format!(
            "dataset {name:?} has no source: set exactly one of zfs = \"pool/fs\", btrfs = \"/path/to/subvolume\" or command = \"...\""
        )),
        _ => Err(format!(
            "dataset {name:?} sets more than one of zfs, btrfs and command: keep exactly one"
        )),
    }
}

/// A dataset's `providers` list: every name known (a disabled one is warned about and left
/// out), duplicates dropped.
fn listed_providers(
    name: &str,
    list: &[String],
    all: &[ProviderConfig],
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for p in list {
        match all.iter().find(|c| c.name == *p) {
            None => {
                let known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                return Err(format!(
                    "dataset {name:?}: unknown provider {p:?}; known: {}",
                    known.join(", ")
                ));
            }
            Some(c) if !c.enabled => {
                tracing::warn!("dataset {name:?}: provider {p:?} is disabled and will not be used");
            }
            Some(_) if out.contains(p) => {}
            Some(_) => out.push(p.clone()),
        }
    }
    Ok(out)
}

/// A `notify_url`: an http or https URL (`what` names the key in the message).
pub(super) fn notify_url(
    file: &SourceFile,
    url: Option<&Spanned<String>>,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(url) = url else { return Ok(None) };
    let u = url.get_ref().trim();
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') && !u.contains(char::is_whitespace) => {
            Ok(Some(u.trim_end_matches('/').to_string()))
        }
        _ => Err(file.err(
            url.span(),
            format!("{what} = {u:?} is not an http:// or https:// URL (e.g. \"https://hc-ping.com/UUID\")"),
        )),
    }
}

/// `notify_command`: a non-empty shell command line.
pub(super) fn notify_command(
    file: &SourceFile,
    cmd: Option<&Spanned<String>>,
) -> Result<Option<String>, ConfigError> {
    let Some(cmd) = cmd else { return Ok(None) };
    if cmd.get_ref().trim().is_empty() {
        return Err(file.err(
            cmd.span(),
            "notify_command is empty; name a program to run, or leave the key out".into(),
        ));
    }
    Ok(Some(cmd.get_ref().clone()))
}
