//! Secrets have one door (STYLE.md §14): every place that shows a provider's remote or rclone
//! flags, and every text that may quote them (rclone's stderr, errors, log lines, JSON), goes
//! through this module first.
//!
//! What counts as secret follows rclone's own notion: the options it marks `IsPassword` (pass,
//! password, secret, library_key, ...) or `Sensitive` (keys, tokens, client ids and secrets,
//! account names, users, SAS URLs, service account credentials), recognised by the words of
//! the option's name, so that `secret_access_key`, `--s3-secret-access-key` and
//! `--sftp-pass` are all caught; see [`is_sensitive`]. Three forms are masked:
//! - connection-string parameters: `:s3,access_key_id=X,secret_access_key='Y':bucket`;
//! - flag values: `--sftp-pass X` and `--sftp-pass=X`;
//! - passwords in URLs: `https://user:X@host`.
//!
//! Guarantee: [`text`] also replaces, literally, every secret value of every provider built
//! in this process ([`register`] is called by the rclone provider), so a secret that rclone
//! quotes in some other form is hidden too. A masked value reads [`MASK`].

use std::collections::BTreeSet;
use std::sync::RwLock;

/// What a secret value is replaced with.
pub const MASK: &str = "***";

/// Every secret value [`register`]ed so far, hidden literally by [`text`].
static SECRETS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Words that make an option name sensitive (its name split at `_` and `-`).
const SECRET_WORDS: &[&str] = &[
    "pass",
    "passwd",
    "password",
    "password2",
    "passphrase",
    "secret",
    "token",
    "key",
    "credentials",
    "credential",
    "sas",
    "account",
    "user",
    "username",
    "cookie",
    "header",
    "headers",
    "authorization",
    "bearer",
    "otp",
];

/// Names that contain a secret word but hold no secret: booleans (whose flag takes no value, so
/// the next argument is not theirs), durations, and paths or URLs worth showing in errors.
const NOT_SECRET: &[&str] = &[
    "ask_password",
    "key_use_agent",
    "env_auth",
    "auth_owner_only",
    "auth_no_open_browser",
    "key_file",
    "pubkey_file",
    "service_account_file",
    "shared_credentials_file",
    "token_url",
    "user_agent",
    "no_check_certificate",
];

/// Whether an rclone option holds a secret, by name: a config key (`secret_access_key`) or a
/// flag (`--s3-secret-access-key`, with its backend prefix).
pub fn is_sensitive(name: &str) -> bool {
    let norm = name
        .trim_start_matches('-')
        .to_ascii_lowercase()
        .replace('-', "_");
    if norm.is_empty() || NOT_SECRET.iter().any(|n| norm.ends_with(n)) {
        return false;
    }
    if norm.ends_with("client_id") {
        return true;
    }
    norm.split('_').any(|w| SECRET_WORDS.contains(&w))
}

/// A remote as it may be shown: connection-string parameters that hold secrets, and passwords
/// in URLs, masked. `b2:bucket/x` and plain paths come back unchanged.
pub fn remote(remote: &str) -> String {
    mask_urls(&mask_params(remote))
}

/// Flags as they may be shown: the value of each sensitive flag masked, in both the
/// `--flag value` and `--flag=value` forms.
pub fn flags<S: AsRef<str>>(flags: &[S]) -> Vec<String> {
    let mut out = Vec::with_capacity(flags.len());
    let mut mask_next = false;
    for f in flags {
        let f = f.as_ref();
        if std::mem::take(&mut mask_next) {
            out.push(MASK.to_string());
            continue;
        }
        match f.strip_prefix("--").and_then(|n| n.split_once('=')) {
            Some((name, _)) if is_sensitive(name) => out.push(format!("--{name}={MASK}")),
            Some(_) => out.push(remote(f)),
            None if f.starts_with("--") && is_sensitive(f) => {
                mask_next = true;
                out.push(f.to_string());
            }
            None => out.push(remote(f)),
        }
    }
    out
}

/// Free text (rclone's stderr, an error message, a log line, a JSON document): every
/// registered secret replaced literally, then every pattern masked.
pub fn text(s: &str) -> String {
    let mut out = s.to_string();
    if let Ok(secrets) = SECRETS.read() {
        // Longest first, so a secret that contains another is replaced whole.
        let mut by_len: Vec<&String> = secrets.iter().collect();
        by_len.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in by_len {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
    }
    mask_urls(&mask_flags_in_text(&mask_params(&out)))
}

/// Remembers the secret values in a provider's remote and flags, for [`text`].
///
/// Only values of [`LITERAL_MIN`] characters or more are replaced literally: a short value
/// (or a user name) would also mask ordinary words of the output, such as `backup` in a JSON
/// key; the patterns still mask it where it stands as a parameter or flag value.
pub fn register<S: AsRef<str>>(remote: &str, flags: &[S]) {
    let mut found = secrets_of(remote, flags);
    found.retain(|s| s.chars().count() >= LITERAL_MIN);
    if found.is_empty() {
        return;
    }
    if let Ok(mut set) = SECRETS.write() {
        set.extend(found);
    }
}

/// The shortest secret [`register`] replaces literally in free text.
const LITERAL_MIN: usize = 8;

/// Whether a sensitive name holds who one is (`user`, `account`) rather than a secret: masked
/// where it stands, never replaced as a word elsewhere.
fn is_identity(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("user") || n.contains("account")
}

/// The secret values in a remote and flags, each as written and unquoted (user and account
/// names left out: see [`is_identity`]).
pub fn secrets_of<S: AsRef<str>>(remote: &str, flags: &[S]) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |name: &str, raw: &str, value: String| {
        if !is_identity(name) {
            out.push(raw.to_string());
            out.push(value);
        }
    };
    for_each_param(remote, &mut push);
    for_each_url_password(remote, |p| push("password", p, p.to_string()));
    let mut take_next = false;
    for f in flags {
        let f = f.as_ref();
        if std::mem::take(&mut take_next) {
            push("value", f, f.to_string());
            continue;
        }
        match f.strip_prefix("--").and_then(|n| n.split_once('=')) {
            Some((name, value)) if is_sensitive(name) && !is_identity(name) => {
                push(name, value, value.to_string())
            }
            Some(_) => {}
            None => take_next = f.starts_with("--") && is_sensitive(f) && !is_identity(f),
        }
        for_each_param(f, &mut push);
    }
    out.retain(|s| !s.is_empty() && s != MASK);
    out.sort();
    out.dedup();
    out
}

/// Calls `f(name, raw, value)` for each sensitive `,name=value` parameter in `s`; `raw` is the
/// value as written (quotes included), `value` without quotes.
fn for_each_param(s: &str, mut f: impl FnMut(&str, &str, String)) {
    let mut i = 0;
    while let Some((name, start, end)) = next_param(s, i) {
        let raw = &s[start..end];
        f(name, raw, unquote(raw));
        i = end.max(start + 1);
    }
}

/// Masks the value of every sensitive `,name=value` parameter in `s`.
fn mask_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some((_, start, end)) = next_param(s, i) {
        out.push_str(&s[i..start]);
        out.push_str(MASK);
        i = end;
    }
    out.push_str(&s[i..]);
    out
}

/// The next sensitive connection-string parameter at or after byte `from`: its name and the
/// byte range of its value. A parameter follows a `,`; its value is quoted (`'...'` or
/// `"..."`, a doubled quote standing for one) or runs to the next `,`, `:`, quote or space.
fn next_param(s: &str, from: usize) -> Option<(&str, usize, usize)> {
    let bytes = s.as_bytes();
    let mut i = from;
    while let Some(off) = s[i..].find(',') {
        let name_start = i + off + 1;
        let name_len = s[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(s.len() - name_start);
        let eq = name_start + name_len;
        i = name_start;
        if name_len == 0 || bytes.get(eq) != Some(&b'=') {
            continue;
        }
        let name = &s[name_start..eq];
        if !is_sensitive(name) {
            continue;
        }
        let start = eq + 1;
        return Some((name, start, value_end(s, start)));
    }
    None
}

/// Where a parameter value that starts at `start` ends.
fn value_end(s: &str, start: usize) -> usize {
    let bytes = s.as_bytes();
    match bytes.get(start) {
        Some(&q) if q == b'\'' || q == b'"' => {
            let mut j = start + 1;
            while j < bytes.len() {
                if bytes[j] == q {
                    if bytes.get(j + 1) == Some(&q) {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            bytes.len()
        }
        _ => s[start..]
            .find(|c: char| matches!(c, ',' | ':' | '\'' | '"') || c.is_whitespace())
            .map_or(s.len(), |n| start + n),
    }
}

/// A parameter value without its quotes (a doubled quote inside stands for one).
fn unquote(raw: &str) -> String {
    for q in ['\'', '"'] {
        if raw.len() >= 2 && raw.starts_with(q) && raw.ends_with(q) {
            let inner = &raw[1..raw.len() - 1];
            return inner.replace(&format!("{q}{q}"), &q.to_string());
        }
    }
    raw.to_string()
}

/// Masks `--name=value` and `--name value` for sensitive flag names in free text.
fn mask_flags_in_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find("--") {
        let name_start = i + off + 2;
        let name_len = s[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(s.len() - name_start);
        let name_end = name_start + name_len;
        out.push_str(&s[i..name_end]);
        i = name_end;
        if name_len == 0 || !is_sensitive(&s[name_start..name_end]) {
            continue;
        }
        let rest = &s[name_end..];
        let sep = if rest.starts_with('=') {
            1
        } else {
            rest.len() - rest.trim_start_matches([' ', '\t']).len()
        };
        if sep == 0 || rest[sep..].is_empty() || rest[sep..].starts_with("--") {
            continue;
        }
        let start = name_end + sep;
        let end = match s.as_bytes()[start] {
            b'\'' | b'"' => value_end(s, start),
            _ => s[start..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .map_or(s.len(), |n| start + n),
        };
        out.push_str(&s[name_end..start]);
        out.push_str(MASK);
        i = end;
    }
    out.push_str(&s[i..]);
    out
}

/// Calls `f` with the password of every `scheme://user:password@` in `s`.
fn for_each_url_password(s: &str, mut f: impl FnMut(&str)) {
    for (start, end) in url_passwords(s) {
        f(&s[start..end]);
    }
}

/// Masks the password of every `scheme://user:password@host` in `s`.
fn mask_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    for (start, end) in url_passwords(s) {
        out.push_str(&s[i..start]);
        out.push_str(MASK);
        i = end;
    }
    out.push_str(&s[i..]);
    out
}

/// Byte ranges of the passwords in `scheme://user:password@` forms.
fn url_passwords(s: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find("://") {
        let auth_start = i + off + 3;
        let auth_len = s[auth_start..]
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | ',') || c.is_whitespace())
            .unwrap_or(s.len() - auth_start);
        let auth = &s[auth_start..auth_start + auth_len];
        if let Some(at) = auth.rfind('@') {
            if let Some(colon) = auth[..at].find(':') {
                found.push((auth_start + colon + 1, auth_start + at));
            }
        }
        i = auth_start;
    }
    found
}

#[cfg(test)]
mod tests;
