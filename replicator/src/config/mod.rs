//! The node's configuration: one TOML file, typed and validated at load.
//!
//! ```toml
//! region = "us-east-1"            # unique node / region id
//! cluster = "demo"                # peers of another cluster are refused
//! data_dir = "/var/lib/tributary/us-east-1"
//! listen = "127.0.0.1:7101"       # gRPC: peers and admin API
//! metrics_listen = "127.0.0.1:9101"   # Prometheus /metrics (optional)
//! [[peers]]
//! region = "eu-west-1"
//! endpoint = "http://127.0.0.1:7102"
//! [[tables]]
//! name = "carts"
//! partition_key = "pk"
//! sort_key = "sk"                 # optional
//! counters = ["qty"]              # also sets = [...], multi = [...]; default lww
//! [storage]                       # optional; see StorageConfig
//! [shipping]                      # optional; see ShippingConfig
//! ```
//!
//! The top-level keys above are a contract with operators' scripts: they are
//! extended, never renamed. Tuning lives in the optional `[storage]` and
//! `[shipping]` sections, whose defaults are defined once (their `Default`
//! impls) and shown by [`NodeConfig::explain`]. `[[sources]]` and `[[sinks]]`
//! connect the node to its database (see [`connectors`]).
//!
//! Invariants: unknown keys are errors (a typo never silently falls back to
//! a default); every value carries its unit in its type (`Duration`,
//! `ByteSize`, `SocketAddr`); a [`NodeConfig`] returned by
//! [`NodeConfig::from_toml_str`] or [`NodeConfig::load`] has passed
//! [`NodeConfig::validate`], which reports all problems at once, each with
//! its key path and a fix. A value of the wrong form (a duration without a
//! unit, an endpoint without a port) stops parsing at that spot and is
//! reported alone, with TOML's line and column.

pub mod admin;
pub mod connectors;
mod error;
mod explain;
pub mod shipping;
pub mod storage;
mod table;
pub mod tls;
mod values;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tributary_engine::ids::RegionId;
use tributary_engine::log::LogConfig;
use tributary_engine::schema::{SchemaError, Schemas};

pub use admin::AdminConfig;
pub use connectors::{
    AwsEndpoint, DynamoSinkConfig, DynamoStreamsSourceConfig, InitialLoad, KinesisSourceConfig,
    PostgresSinkConfig, PostgresSourceConfig, SinkConfig, SourceConfig,
};
pub use error::{ConfigError, Problem, Problems};
pub use shipping::ShippingConfig;
pub use storage::{StorageConfig, SyncMode};
pub use table::TableConfig;
pub use tls::TlsConfig;
pub use values::{ClusterName, PeerEndpoint, ValueError};

/// A regional node's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's region: unique in the cluster, the origin of its changes.
    pub region: RegionId,
    /// The cluster; peers announcing another cluster are refused.
    pub cluster: ClusterName,
    /// Where the node keeps its log and items.
    pub data_dir: PathBuf,
    /// The gRPC address for peers and the admin API.
    pub listen: SocketAddr,
    /// The Prometheus `/metrics` address; none means no metrics endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The other regions this node ships to and receives from. May be
    /// empty: a lone region runs (static stability).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// The replicated tables.
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Change streams ingested as local changes (the admin API's write
    /// call is always a source too).
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Sinks writing merged results back to the local database.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// `[storage]`: durability and clock-skew bound.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[shipping]`: how deltas travel to peers.
    #[serde(default)]
    pub shipping: ShippingConfig,
    /// Every region of the cluster, for relayed changes: a peer may ship
    /// changes that originated in this node's region, its own, or a region
    /// listed here. Default: this region and its peers (a full mesh needs
    /// nothing more; a line or ring lists the regions beyond the peers).
    #[serde(default)]
    pub regions: Vec<RegionId>,
    /// `[tls]`: mutual TLS on the gRPC port (see [`TlsConfig`]).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `[admin]`: who may call the admin API (see [`AdminConfig`]).
    #[serde(default)]
    pub admin: AdminConfig,
}

/// One `[[peers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's region id (must match what the peer announces).
    pub region: RegionId,
    /// Where the peer's gRPC server listens.
    pub endpoint: PeerEndpoint,
}

impl NodeConfig {
    /// Parses and validates a configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Checks the configuration as a whole and reports every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match Problems::from_vec(self.problems()) {
            None => Ok(()),
            Some(problems) => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Every problem of the configuration, in the order of the file's keys;
    /// empty when it is valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            out.push(Problem::new(
                "data_dir",
                "is empty",
                "name the directory for the node's data",
            ));
        }
        if let Some(metrics) = self.metrics_listen {
            let same_port = metrics.port() == self.listen.port();
            let overlap = metrics.ip() == self.listen.ip()
                || metrics.ip().is_unspecified()
                || self.listen.ip().is_unspecified();
            if same_port && overlap {
                out.push(Problem::new(
                    "metrics_listen",
                    format!("{metrics} collides with listen {}", self.listen),
                    "give the metrics endpoint its own port",
                ));
            }
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let at = format!("peers[{i}]");
            if peer.region == self.region {
                out.push(Problem::new(
                    format!("{at}.region"),
                    format!("{} is this node's own region", peer.region),
                    "list only the other regions (or fix the top-level `region`)",
                ));
            }
            if let Some(first) = self.peers[..i].iter().position(|p| p.region == peer.region) {
                out.push(Problem::new(
                    format!("{at}.region"),
                    format!("{} is already peers[{first}]", peer.region),
                    "list each peer region once",
                ));
            }
            if let Some(first) = self.peers[..i]
                .iter()
                .position(|p| p.endpoint == peer.endpoint)
            {
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!(
                        "{} is already the endpoint of peers[{first}]",
                        peer.endpoint
                    ),
                    "give each peer its own endpoint",
                ));
            }
            match (peer.endpoint.uri().scheme_str(), &self.tls) {
                (Some("https"), None) => out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!("{} uses https but there is no [tls] section", peer.endpoint),
                    "add [tls] with ca, cert and key, or use http://",
                )),
                (Some("http"), Some(_)) => out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!(
                        "{} uses http but [tls] is set: peers speak mutual TLS",
                        peer.endpoint
                    ),
                    "write it as https://HOST:PORT",
                )),
                _ => {}
            }
            if peer.endpoint.is_addr(self.listen) {
                out.push(Problem::new(
                    format!("{at}.endpoint"),
                    format!("{} is this node's own listen address", peer.endpoint),
                    "use the peer's address",
                ));
            }
        }
        for (i, table) in self.tables.iter().enumerate() {
            let at = format!("tables[{i}]");
            if let Some(first) = self.tables[..i].iter().position(|t| t.name == table.name) {
                out.push(Problem::new(
                    format!("{at}.name"),
                    format!("table {} is already tables[{first}]", table.name),
                    "configure each table once",
                ));
            }
            table.problems(&at, &mut out);
        }
        let tables: Vec<_> = self.tables.iter().map(|t| t.name.clone()).collect();
        connectors::problems(&self.sources, &self.sinks, &tables, &mut out);
        self.storage.problems(&mut out);
        self.shipping.problems(&mut out);
        out
    }

    /// Whether a peer may ship a change that originated in `origin`: this
    /// region, a peer, or a region of [`NodeConfig::regions`].
    pub fn knows_region(&self, origin: &RegionId) -> bool {
        *origin == self.region
            || self.peers.iter().any(|p| p.region == *origin)
            || self.regions.contains(origin)
    }

    /// The engine's schemas of the configured tables.
    pub fn schemas(&self) -> Result<Schemas, SchemaError> {
        self.tables.iter().map(TableConfig::to_schema).collect()
    }

    /// The settings of this node's CRDT log.
    pub fn log_config(&self) -> Result<LogConfig, SchemaError> {
        Ok(LogConfig {
            region: self.region.clone(),
            schemas: self.schemas()?,
            max_clock_skew: self.storage.max_clock_skew,
            item_cache_bytes: usize::try_from(self.storage.item_cache.as_u64())
                .unwrap_or(usize::MAX),
        })
    }
}
