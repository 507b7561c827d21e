//! The `[shipping]` section: how deltas travel to peers (batching, window,
//! heartbeats, keepalive, reconnects, message limits, log retention).
//! Defaults are defined once, in [`ShippingConfig`]'s `Default`.

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::error::Problem;
use super::values::{duration, format_duration, format_size, size};
use crate::link::OutboundLimits;

/// `[shipping]`: every key optional. Durations take a unit (`"2ms"`), sizes
/// take one too (`"1MiB"` = 1,048,576 bytes; `"1MB"` = 1,000,000 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShippingConfig {
    /// A batch holds at most this many log entries.
    pub batch_max_entries: usize,
    /// A batch holds at most this many bytes of entries.
    #[serde(deserialize_with = "size")]
    pub batch_max_bytes: ByteSize,
    /// How long a non-full batch waits for more entries before it is sent.
    #[serde(deserialize_with = "duration")]
    pub batch_linger: Duration,
    /// Batches sent to one peer and not yet acknowledged (the window).
    pub max_in_flight_batches: usize,
    /// How long a link holds back relaying another region's fresh entries
    /// once the peer showed it gets them from that region directly (they
    /// would arrive twice); `"0s"` (the default) relays everything at
    /// once. Also the most a relay is late when the direct path fails.
    /// Holding saves bandwidth but delays this region's own changes that
    /// depend on a held entry until the peer reports having it (see
    /// ARCHITECTURE.md, "Relays and duplicates").
    #[serde(deserialize_with = "duration")]
    pub relay_hold: Duration,
    /// Received entries that arrived ahead of their causal dependencies
    /// that this node keeps in memory until those are applied, at most
    /// (`0` refuses them, as nodes did before). Peers that see this node
    /// park send it their own entries at once and leave out what it gets
    /// from their origins directly (see ARCHITECTURE.md, "Relays and
    /// duplicates").
    pub park_max_entries: usize,
    /// What the parked entries may weigh in memory at most, estimated
    /// (`"0B"` turns parking off too). An entry that would go beyond it
    /// is refused as when the park is full (its sender resends it). A
    /// small change's entry weighs ~1–1.3 KB, so with the defaults the
    /// entry count binds first for entries up to ~2.7 KB.
    #[serde(deserialize_with = "size")]
    pub park_max_bytes: ByteSize,
    /// How often a heartbeat (HLC, head seqs) goes to each peer.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// How often an HTTP/2 keepalive ping probes an idle connection.
    #[serde(deserialize_with = "duration")]
    pub keepalive_interval: Duration,
    /// How long an unanswered keepalive ping waits before the connection is
    /// dropped.
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// The first reconnect delay after a link fails (then doubled, with
    /// full jitter).
    #[serde(deserialize_with = "duration")]
    pub reconnect_backoff_initial: Duration,
    /// The largest reconnect delay.
    #[serde(deserialize_with = "duration")]
    pub reconnect_backoff_max: Duration,
    /// The largest gRPC message sent or accepted.
    #[serde(deserialize_with = "size")]
    pub max_message_bytes: ByteSize,
    /// How long log entries are kept once every peer has acknowledged them.
    #[serde(deserialize_with = "duration")]
    pub log_retention: Duration,
    /// Connections the gRPC port holds open at most (peers and admin
    /// clients); more are closed at once and counted.
    pub max_connections: usize,
    /// Refused shipping streams (invalid messages, a region the peer may not
    /// speak for, another cluster) within `penalty_window` after which a
    /// peer is refused at once for a while (see
    /// [`crate::link::penalty`]).
    pub penalty_after: u32,
    /// The window `penalty_after` counts refusals in.
    #[serde(deserialize_with = "duration")]
    pub penalty_window: Duration,
    /// The first penalty; each further one in a row doubles it.
    #[serde(deserialize_with = "duration")]
    pub penalty_initial: Duration,
    /// The longest penalty.
    #[serde(deserialize_with = "duration")]
    pub penalty_max: Duration,
}

impl Default for ShippingConfig {
    fn default() -> Self {
        Self {
            batch_max_entries: 1000,
            batch_max_bytes: ByteSize::mib(1),
            batch_linger: Duration::from_millis(2),
            max_in_flight_batches: 8,
            relay_hold: Duration::ZERO,
            park_max_entries: 50_000,
            park_max_bytes: ByteSize::mib(128),
            heartbeat_interval: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(2),
            reconnect_backoff_initial: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            max_message_bytes: ByteSize::mib(8),
            log_retention: Duration::from_secs(3600),
            max_connections: 256,
            penalty_after: 5,
            penalty_window: Duration::from_secs(10),
            penalty_initial: Duration::from_secs(1),
            penalty_max: Duration::from_secs(60),
        }
    }
}

fn size_entry(b: ByteSize) -> String {
    format!("{} ({} bytes)", format_size(b), b.as_u64())
}

impl ShippingConfig {
    /// The penalty box's rules.
    pub fn penalty_rules(&self) -> crate::link::PenaltyRules {
        crate::link::PenaltyRules {
            after: self.penalty_after,
            window: self.penalty_window,
            initial: self.penalty_initial,
            max: self.penalty_max,
        }
    }

    /// How much received entries a node parks (`park_max_entries`,
    /// `park_max_bytes`).
    pub fn park_limit(&self) -> tributary_engine::log::ParkLimit {
        tributary_engine::log::ParkLimit {
            entries: self.park_max_entries,
            bytes: usize::try_from(self.park_max_bytes.as_u64()).unwrap_or(usize::MAX),
        }
    }

    /// The limits of a peer link's outbound window.
    pub fn outbound_limits(&self) -> OutboundLimits {
        OutboundLimits {
            max_entries: self.batch_max_entries,
            // Validation keeps it below 4 GiB; saturate on a 32-bit target.
            max_bytes: usize::try_from(self.batch_max_bytes.as_u64()).unwrap_or(usize::MAX),
            max_in_flight: self.max_in_flight_batches,
            relay_hold: self.relay_hold,
        }
    }

    /// Every key with its value, in the file's words.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("batch_max_entries", self.batch_max_entries.to_string()),
            ("batch_max_bytes", size_entry(self.batch_max_bytes)),
            ("batch_linger", format_duration(self.batch_linger)),
            (
                "max_in_flight_batches",
                self.max_in_flight_batches.to_string(),
            ),
            ("relay_hold", format_duration(self.relay_hold)),
            ("park_max_entries", self.park_max_entries.to_string()),
            ("park_max_bytes", size_entry(self.park_max_bytes)),
            (
                "heartbeat_interval",
                format_duration(self.heartbeat_interval),
            ),
            (
                "keepalive_interval",
                format_duration(self.keepalive_interval),
            ),
            ("keepalive_timeout", format_duration(self.keepalive_timeout)),
            (
                "reconnect_backoff_initial",
                format_duration(self.reconnect_backoff_initial),
            ),
            (
                "reconnect_backoff_max",
                format_duration(self.reconnect_backoff_max),
            ),
            ("max_message_bytes", size_entry(self.max_message_bytes)),
            ("log_retention", format_duration(self.log_retention)),
            ("max_connections", self.max_connections.to_string()),
            ("penalty_after", self.penalty_after.to_string()),
            ("penalty_window", format_duration(self.penalty_window)),
            ("penalty_initial", format_duration(self.penalty_initial)),
            ("penalty_max", format_duration(self.penalty_max)),
        ]
    }

    pub(crate) fn problems(&self, out: &mut Vec<Problem>) {
        let mut positive = |key: &str, zero: bool, example: &str| {
            if zero {
                out.push(Problem::new(
                    format!("shipping.{key}"),
                    "is 0",
                    format!("set a positive value such as {example}"),
                ));
            }
        };
        positive("batch_max_entries", self.batch_max_entries == 0, "1000");
        positive("max_connections", self.max_connections == 0, "256");
        positive("penalty_after", self.penalty_after == 0, "5");
        positive("penalty_window", self.penalty_window.is_zero(), "\"10s\"");
        positive("penalty_initial", self.penalty_initial.is_zero(), "\"1s\"");
        positive(
            "batch_max_bytes",
            self.batch_max_bytes.as_u64() == 0,
            "\"1MiB\"",
        );
        positive(
            "max_in_flight_batches",
            self.max_in_flight_batches == 0,
            "4",
        );
        positive(
            "heartbeat_interval",
            self.heartbeat_interval.is_zero(),
            "\"1s\"",
        );
        positive(
            "keepalive_interval",
            self.keepalive_interval.is_zero(),
            "\"1s\"",
        );
        positive(
            "keepalive_timeout",
            self.keepalive_timeout.is_zero(),
            "\"2s\"",
        );
        positive(
            "reconnect_backoff_initial",
            self.reconnect_backoff_initial.is_zero(),
            "\"50ms\"",
        );
        positive(
            "max_message_bytes",
            self.max_message_bytes.as_u64() == 0,
            "\"8MiB\"",
        );
        if self.reconnect_backoff_max < self.reconnect_backoff_initial {
            out.push(Problem::new(
                "shipping.reconnect_backoff_max",
                format!(
                    "{} is below reconnect_backoff_initial {}",
                    format_duration(self.reconnect_backoff_max),
                    format_duration(self.reconnect_backoff_initial)
                ),
                "make the maximum at least the initial delay",
            ));
        }
        if self.batch_max_bytes.as_u64() > 0 && self.batch_max_bytes >= self.max_message_bytes {
            out.push(Problem::new(
                "shipping.batch_max_bytes",
                format!(
                    "{} does not fit in max_message_bytes {} (a message also carries framing)",
                    format_size(self.batch_max_bytes),
                    format_size(self.max_message_bytes)
                ),
                "make batch_max_bytes smaller than max_message_bytes",
            ));
        }
        if self.max_message_bytes.as_u64() > u64::from(u32::MAX) {
            out.push(Problem::new(
                "shipping.max_message_bytes",
                format!(
                    "{} exceeds gRPC's 4 GiB message limit",
                    format_size(self.max_message_bytes)
                ),
                "set a value below \"4GiB\" (the default is \"8MiB\")",
            ));
        }
        if self.penalty_max < self.penalty_initial {
            out.push(Problem::new(
                "shipping.penalty_max",
                format!(
                    "{} is shorter than shipping.penalty_initial ({})",
                    format_duration(self.penalty_max),
                    format_duration(self.penalty_initial)
                ),
                "set it at least as long as penalty_initial, such as \"60s\"",
            ));
        }
    }
}
