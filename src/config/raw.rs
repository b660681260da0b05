//! The config files as written, before validation. Unknown keys are errors.

use super::units::{ByteSize, Span};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub host: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub providers_dir: Option<PathBuf>,
    pub rclone: Option<Spanned<String>>,
    pub rclone_config: Option<PathBuf>,
    pub shard_size: Option<Spanned<ByteSize>>,
    pub min_providers: Option<Spanned<i64>>,
    pub shards_in_flight: Option<Spanned<i64>>,
    pub spool_dir: Option<Spanned<PathBuf>>,
    pub spool_size: Option<Spanned<ByteSize>>,
    pub concurrency: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
    pub retry_delay: Option<Span>,
    pub timeout: Option<Spanned<Span>>,
    pub compression: Option<Spanned<String>>,
    pub erasure: Option<Spanned<String>>,
    pub encryption: Option<Spanned<RawEncryption>>,
    pub metrics_file: Option<PathBuf>,
    pub notify_url: Option<Spanned<String>>,
    pub notify_command: Option<Spanned<String>>,
    #[serde(default)]
    pub dataset: Vec<Spanned<RawDataset>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    pub recipients: Option<Vec<Spanned<String>>>,
    pub recipients_file: Option<Spanned<PathBuf>>,
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataset {
    pub name: Spanned<String>,
    pub zfs: Option<String>,
    pub btrfs: Option<PathBuf>,
    pub command: Option<String>,
    pub snapshot_dir: Option<PathBuf>,
    pub full_every: Option<Span>,
    pub incremental_every: Option<Span>,
    pub keep_chains: Option<u32>,
    pub max_age: Option<Span>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub providers: Option<Spanned<Vec<String>>>,
    pub snapshot_pattern: Option<String>,
    pub send_flags: Option<Vec<String>>,
    pub receive_flags: Option<Vec<String>>,
    pub compression: Option<Spanned<String>>,
    pub encrypt: Option<Spanned<bool>>,
    pub erasure: Option<Spanned<String>>,
    pub notify_url: Option<Spanned<String>>,
    pub resume: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub remote: Spanned<String>,
    pub enabled: Option<bool>,
    pub priority: Option<i64>,
    pub bwlimit: Option<String>,
    pub flags: Option<Vec<String>>,
    pub list_hashes: Option<Spanned<toml::Value>>,
    pub max_object_size: Option<Spanned<String>>,
}
