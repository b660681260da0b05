//! The round-2 keys of a config: `compression` (top level and per dataset) and the
//! `[encryption]` table (recipients inline or in a file, the identity file's path).

use super::raw::RawEncryption;
use super::validate::SourceFile;
use super::EncryptionConfig;
use crate::codec::keys::parse_recipient;
use crate::codec::{Compression, Recipients};
use crate::error::ConfigError;
use std::path::Path;
use toml::Spanned;

/// `compression = "zstd" | "zstd:N" | "none"`; `None` when the key is absent.
pub(super) fn compression(
    file: &SourceFile,
    raw: Option<&Spanned<String>>,
) -> Result<Option<Compression>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    parse_compression(raw.get_ref())
        .map(Some)
        .map_err(|msg| file.err(raw.span(), msg))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    let bad = || {
        format!(
            "compression = {s:?} is not one of \"zstd\" (level {}), \"zstd:1\" .. \"zstd:19\", \"none\"",
            crate::codec::DEFAULT_LEVEL
        )
    };
    match s {
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd(crate::codec::DEFAULT_LEVEL)),
        _ => {
            let level = s.strip_prefix("zstd:").ok_or_else(bad)?;
            match level.parse::<i32>() {
                Ok(n) if (1..=19).contains(&n) && !level.starts_with('+') => {
                    Ok(Compression::Zstd(n))
                }
                _ => Err(bad()),
            }
        }
    }
}

/// The `[encryption]` table: at least one recipient, each a valid `age1...` key.
pub(super) fn encryption(
    file: &SourceFile,
    raw: &Spanned<RawEncryption>,
    base: &Path,
) -> Result<EncryptionConfig, ConfigError> {
    let e = raw.get_ref();
    let mut list = Vec::new();
    for r in e.recipients.iter().flatten() {
        list.push(parse_recipient(r.get_ref()).map_err(|m| file.err(r.span(), m))?);
    }
    if let Some(f) = &e.recipients_file {
        let path = base.join(f.get_ref());
        list.extend(recipients_file(&path).map_err(|m| file.err(f.span(), m))?);
    }
    let recipients = Recipients::new(list).ok_or_else(|| {
        file.err(
            raw.span(),
            "[encryption] has no recipients: add `recipients = [\"age1...\"]` (from `offsite keygen`) \
             or a recipients_file, or remove the table to store shards unencrypted"
                .into(),
        )
    })?;
    Ok(EncryptionConfig {
        recipients,
        identity_file: e.identity_file.as_ref().map(|p| base.join(p)),
    })
}

/// One recipient per line; blank lines and `#` comments skipped.
fn recipients_file(path: &Path) -> Result<Vec<age::x25519::Recipient>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read recipients_file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_recipient(line).map_err(|m| format!("{} line {}: {m}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// `erasure = "k+m"`; `None` when the key is absent.
pub(super) fn erasure(
    file: &SourceFile,
    raw: Option<&Spanned<String>>,
) -> Result<Option<crate::erasure::Scheme>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    raw.get_ref()
        .parse()
        .map(Some)
        .map_err(|e| file.err(raw.span(), e))
}

/// A dataset's `compression` and `encrypt`, over the top level's.
pub(super) fn dataset_codec(
    file: &SourceFile,
    name: &str,
    compression: Option<&Spanned<String>>,
    encrypt: Option<&Spanned<bool>>,
    default_compression: Compression,
    have_encryption: bool,
) -> Result<(Compression, bool), ConfigError> {
    let c = self::compression(file, compression)?.unwrap_or(default_compression);
    let encrypt = match encrypt {
        Some(e) if *e.get_ref() && !have_encryption => {
            return Err(file.err(
                e.span(),
                format!(
                    "dataset {name:?} sets encrypt = true but there is no [encryption] table with recipients; \
                     add one (run `offsite keygen` for a key) or remove encrypt"
                ),
            ))
        }
        Some(e) => *e.get_ref(),
        None => have_encryption,
    };
    Ok((c, encrypt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_values() {
        assert_eq!(parse_compression("zstd"), Ok(Compression::Zstd(3)));
        assert_eq!(parse_compression("zstd:19"), Ok(Compression::Zstd(19)));
        assert_eq!(parse_compression("none"), Ok(Compression::None));
        for bad in ["zstd:0", "zstd:20", "zstd:+3", "gzip", "zstd:", "ZSTD"] {
            let err = parse_compression(bad).unwrap_err();
            assert!(err.contains("\"zstd:1\" .. \"zstd:19\""), "{bad}: {err}");
        }
    }
}
