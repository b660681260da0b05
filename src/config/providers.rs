//! The provider files: one `providers.d/NAME.toml` per provider, read and checked into
//! [`ProviderConfig`]s ordered by priority then name.

use super::raw::RawProvider;
use super::validate::SourceFile;
use super::{ListHashes, ProviderConfig};
use crate::error::ConfigError;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Reads every `*.toml` in `dir`, enabled or not.
pub(super) fn load(dir: &Path) -> Result<Vec<ProviderConfig>, ConfigError> {
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
        check_remote(&file, &raw.remote)?;
        out.push(ProviderConfig {
            name,
            remote: raw.remote.into_inner().trim_end_matches('/').to_string(),
            enabled: raw.enabled.unwrap_or(true),
            priority: raw.priority.unwrap_or(100),
            bwlimit: raw.bwlimit,
            flags: raw.flags.unwrap_or_default(),
            list_hashes: list_hashes(&file, raw.list_hashes)?,
            max_object_size: (raw.max_object_size.as_ref())
                .map(|s| {
                    super::units::parse_size(s.get_ref())
                        .map_err(|e| file.err(s.span(), format!("max_object_size: {e}")))
                })
                .transpose()?,
        });
    }
    out.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// `remote`: an rclone remote (`name:path`) or an absolute path.
fn check_remote(file: &SourceFile, remote: &Spanned<String>) -> Result<(), ConfigError> {
    if remote.get_ref().trim().is_empty() {
        return Err(file.err(
            remote.span(),
            "remote is empty: set e.g. remote = \"b2:bucket/offsite\"".into(),
        ));
    }
    if !remote.get_ref().contains(':') && !remote.get_ref().starts_with('/') {
        return Err(file.err(
            remote.span(),
            format!(
                "remote {:?} is neither an rclone remote (name:path) nor an absolute path",
                crate::redact::remote(remote.get_ref())
            ),
        ));
    }
    Ok(())
}

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
