//! The `[storage]` section: when a write is durable, and how far a peer's
//! clock may run ahead. Defaults are defined once, in [`StorageConfig`]'s
//! `Default`.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use tributary_engine::log::LogConfig;
use tributary_engine::store::Durability;

use super::error::Problem;
use super::values::{duration, format_duration, format_size, size};

/// When the node acknowledges a write relative to its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync every commit before acknowledging it (`Durability::Sync`).
    #[default]
    Always,
    /// Group commit: commits are written without fsync and made durable
    /// together every `group_commit_interval` (`Durability::Buffered`);
    /// acknowledgements wait for that sync.
    Group,
}

impl SyncMode {
    /// The store setting this mode maps to.
    pub fn durability(self) -> Durability {
        match self {
            SyncMode::Always => Durability::Sync,
            SyncMode::Group => Durability::Buffered,
        }
    }

    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Group => "group",
        }
    }
}

/// `[storage]`: every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `"always"` (default) or `"group"`.
    pub sync: SyncMode,
    /// With `sync = "group"`: how often buffered commits are fsynced.
    #[serde(deserialize_with = "duration")]
    pub group_commit_interval: Duration,
    /// How far ahead of the local clock a peer's timestamp may be before its
    /// entries are refused (and retried later).
    #[serde(deserialize_with = "duration")]
    pub max_clock_skew: Duration,
    /// Memory for decoded item states kept between commits ("0" turns the
    /// cache off): a merge into a cached item skips the store read.
    #[serde(deserialize_with = "size")]
    pub item_cache: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            group_commit_interval: Duration::from_millis(5),
            max_clock_skew: Duration::from_secs(30),
            item_cache: ByteSize::b(LogConfig::DEFAULT_ITEM_CACHE_BYTES as u64),
        }
    }
}

impl StorageConfig {
    /// Every key with its value, as written in the file.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("sync", format!("{:?}", self.sync.name())),
            (
                "group_commit_interval",
                format_duration(self.group_commit_interval),
            ),
            ("max_clock_skew", format_duration(self.max_clock_skew)),
            ("item_cache", format_size(self.item_cache)),
        ]
    }

    pub(crate) fn problems(&self, out: &mut Vec<Problem>) {
        if self.sync == SyncMode::Group && self.group_commit_interval.is_zero() {
            out.push(Problem::new(
                "storage.group_commit_interval",
                "is 0 with sync = \"group\"",
                "set a positive interval such as \"5ms\", or use sync = \"always\"",
            ));
        }
        if self.max_clock_skew.is_zero() {
            out.push(Problem::new(
                "storage.max_clock_skew",
                "is 0: every peer entry stamped even a millisecond ahead would be refused",
                "set a positive bound such as \"30s\"",
            ));
        }
    }
}
