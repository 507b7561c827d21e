//! `[[sources]]` and `[[sinks]]`: where local changes come from and where
//! merged results go. Each entry is tagged by `kind`.
//!
//! ```toml
//! [[sources]]
//! kind = "dynamodb-streams"                 # or "kinesis" with stream = "carts-changes"
//! table = "carts"                           # its merge schema is the [[tables]] entry of the same name
//! aws_region = "us-east-1"
//! endpoint_url = "http://127.0.0.1:5000"    # optional: emulators
//! [[sinks]]
//! kind = "dynamodb"
//! table = "carts"
//! aws_region = "us-east-1"
//! endpoint_url = "http://127.0.0.1:5000"
//! marker_attribute = "tributary_sink"       # optional; the default
//! ```
//!
//! The keys above are a contract with operators' scripts (extended, never
//! renamed). Credentials come from the AWS default chain (environment,
//! profile, instance role).
//!
//! ```toml
//! [[sources]]
//! kind = "postgres"
//! dsn = "host=127.0.0.1 port=5433 user=postgres dbname=app"
//! table = "carts"                    # its merge schema is the [[tables]] entry of the same name
//! slot = "tributary_us_east_1"       # created if missing
//! [[sinks]]
//! kind = "postgres"
//! dsn = "host=127.0.0.1 port=5433 user=postgres dbname=app"
//! table = "carts"
//! ```

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use tributary_engine::ids::{AttrName, TableName};

use super::error::Problem;
use super::values::duration;

/// The source kinds the design plans (DESIGN §5).
pub const SOURCE_KINDS: &[&str] = &["dynamodb-streams", "kinesis", "postgres"];

/// The sink kinds the design plans (DESIGN §5).
pub const SINK_KINDS: &[&str] = &["dynamodb", "postgres"];

/// The marker attribute's default name (see [`DynamoSinkConfig`]).
pub const DEFAULT_MARKER_ATTRIBUTE: &str = "tributary_sink";

/// Where an AWS client connects: the region, and an endpoint override for
/// emulators (moto, DynamoDB Local).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsEndpoint {
    /// The AWS region of the table or stream.
    pub aws_region: String,
    /// Overrides the service endpoint (`http://127.0.0.1:5000`).
    pub endpoint_url: Option<String>,
}

/// One `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// `kind = "dynamodb-streams"`: the table's DynamoDB stream.
    DynamodbStreams(DynamoStreamsSourceConfig),
    /// `kind = "kinesis"`: a Kinesis data stream of DynamoDB change records.
    Kinesis(KinesisSourceConfig),
    /// `kind = "postgres"`: a table's logical decoding (wal2json) from a
    /// replication slot.
    Postgres(PostgresSourceConfig),
}

/// `kind = "postgres"` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// libpq connection string (`host=… port=… user=… dbname=…`).
    pub dsn: String,
    /// The PostgreSQL table (schema `public` unless qualified); its merge
    /// schema is the `[[tables]]` entry of the same name.
    pub table: TableName,
    /// The logical replication slot, created if missing.
    pub slot: String,
    /// How long to wait before polling the slot again when it had nothing.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// What to do with the table's existing rows when the source starts
    /// with no checkpoint (see [`InitialLoad`]); default `"items"`. The
    /// table is scanned after the slot exists, so nothing written around
    /// the slot's creation is missed.
    #[serde(default)]
    pub initial_load: InitialLoad,
}

/// `kind = "dynamodb-streams"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoStreamsSourceConfig {
    /// The DynamoDB table (with a NEW_AND_OLD_IMAGES stream).
    pub table: TableName,
    /// Its AWS region.
    pub aws_region: String,
    /// Endpoint override (emulators).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How long to wait before polling a shard that returned nothing.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// What to do with the table's existing items when the source starts
    /// with no checkpoint (see [`InitialLoad`]); default `"items"`.
    #[serde(default)]
    pub initial_load: InitialLoad,
}

/// `kind = "kinesis"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// The Kinesis data stream's name.
    pub stream: String,
    /// The DynamoDB table whose change records the stream carries.
    pub table: TableName,
    /// The stream's AWS region.
    pub aws_region: String,
    /// Endpoint override (emulators).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// How long to wait before polling a shard that returned nothing.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// What to do with the table's existing items when the source starts
    /// with no checkpoint (see [`InitialLoad`]); default `"items"`. Needs
    /// DynamoDB access to the table in `aws_region`.
    #[serde(default)]
    pub initial_load: InitialLoad,
}

/// `initial_load`: what a source does, on its first start, with the items
/// the table already holds. The table is scanned once, then the stream is
/// followed from its oldest record; records from before the scan are
/// skipped, and those written while it ran apply only where they continue
/// from what the scan saw (snapshot-then-stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialLoad {
    /// Ingest every item as a local write of this region (its counters
    /// become this region's contribution). For the one region that seeds
    /// a table's data.
    #[default]
    Items,
    /// Learn what the table holds (for the sink) without ingesting it: for
    /// a region whose table already holds a copy of what another region
    /// loads.
    Image,
    /// Skip the scan: the table is empty, or its items must not replicate.
    None,
}

impl InitialLoad {
    /// The value as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            InitialLoad::Items => "items",
            InitialLoad::Image => "image",
            InitialLoad::None => "none",
        }
    }
}

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// `kind = "dynamodb"`: writes merged results back to a table.
    Dynamodb(DynamoSinkConfig),
    /// `kind = "postgres"`: writes merged results back to a table.
    Postgres(PostgresSinkConfig),
}

/// `kind = "postgres"` sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// libpq connection string.
    pub dsn: String,
    /// The PostgreSQL table.
    pub table: TableName,
    /// The replication origin the sink's transactions are tagged with (the
    /// table's source skips them: no echo); default
    /// `tributary_<table>`.
    #[serde(default)]
    pub origin: Option<String>,
    /// The first retry delay of a failed write (then doubled, full jitter).
    #[serde(default = "default_retry_initial", deserialize_with = "duration")]
    pub retry_backoff_initial: Duration,
    /// The largest retry delay.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_backoff_max: Duration,
}

impl PostgresSinkConfig {
    /// The replication origin's name.
    pub fn origin_name(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("tributary_{}", self.table))
    }
}

/// `kind = "dynamodb"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoSinkConfig {
    /// The DynamoDB table.
    pub table: TableName,
    /// Its AWS region.
    pub aws_region: String,
    /// Endpoint override (emulators).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The attribute only the sink writes: a number that grows with every
    /// sink write. The table's source recognises the sink's own writes by
    /// it (no echo), and a sink write is conditioned on it (a retried
    /// write is never applied twice). Applications must not write it.
    #[serde(default = "default_marker")]
    pub marker_attribute: AttrName,
    /// The first retry delay of a failed write (then doubled, full jitter).
    #[serde(default = "default_retry_initial", deserialize_with = "duration")]
    pub retry_backoff_initial: Duration,
    /// The largest retry delay.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_backoff_max: Duration,
    /// Item writes in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}

fn default_retry_initial() -> Duration {
    Duration::from_millis(50)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(5)
}

fn default_concurrency() -> usize {
    8
}

fn default_marker() -> AttrName {
    // A valid constant name.
    AttrName::new(DEFAULT_MARKER_ATTRIBUTE).unwrap_or_else(|_| unreachable!())
}

impl SourceConfig {
    /// The DynamoDB table the source follows.
    pub fn table(&self) -> &TableName {
        match self {
            SourceConfig::DynamodbStreams(c) => &c.table,
            SourceConfig::Kinesis(c) => &c.table,
            SourceConfig::Postgres(c) => &c.table,
        }
    }

    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::DynamodbStreams(_) => "dynamodb-streams",
            SourceConfig::Kinesis(_) => "kinesis",
            SourceConfig::Postgres(_) => "postgres",
        }
    }

    /// Its initial load (PostgreSQL sources have none yet).
    pub fn initial_load(&self) -> InitialLoad {
        match self {
            SourceConfig::DynamodbStreams(c) => c.initial_load,
            SourceConfig::Kinesis(c) => c.initial_load,
            SourceConfig::Postgres(c) => c.initial_load,
        }
    }

    /// Where its AWS clients connect (`None` for PostgreSQL).
    pub fn endpoint(&self) -> Option<AwsEndpoint> {
        let (aws_region, endpoint_url) = match self {
            SourceConfig::DynamodbStreams(c) => (&c.aws_region, &c.endpoint_url),
            SourceConfig::Kinesis(c) => (&c.aws_region, &c.endpoint_url),
            SourceConfig::Postgres(_) => return None,
        };
        Some(AwsEndpoint {
            aws_region: aws_region.clone(),
            endpoint_url: endpoint_url.clone(),
        })
    }

    /// The id prefix of its checkpoints and dead letters
    /// (`dynamodb-streams:TABLE`, `kinesis:STREAM`, `postgres:SLOT`).
    pub fn prefix(&self) -> String {
        match self {
            SourceConfig::DynamodbStreams(c) => format!("dynamodb-streams:{}", c.table),
            SourceConfig::Kinesis(c) => format!("kinesis:{}", c.stream),
            SourceConfig::Postgres(c) => format!("postgres:{}", c.slot),
        }
    }
}

impl SinkConfig {
    /// The table the sink writes.
    pub fn table(&self) -> &TableName {
        match self {
            SinkConfig::Dynamodb(c) => &c.table,
            SinkConfig::Postgres(c) => &c.table,
        }
    }

    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Dynamodb(_) => "dynamodb",
            SinkConfig::Postgres(_) => "postgres",
        }
    }

    /// The DynamoDB sink's marker attribute (none for PostgreSQL, whose
    /// sink is recognised by its replication origin).
    pub fn marker(&self) -> Option<&AttrName> {
        match self {
            SinkConfig::Dynamodb(c) => Some(&c.marker_attribute),
            SinkConfig::Postgres(_) => None,
        }
    }

    /// The id of its cursor and dead letters.
    pub fn id(&self) -> String {
        format!("sink:{}:{}", self.kind(), self.table())
    }
}

impl DynamoSinkConfig {
    /// Where its AWS client connects.
    pub fn endpoint(&self) -> AwsEndpoint {
        AwsEndpoint {
            aws_region: self.aws_region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// Checks one AWS endpoint's values.
fn endpoint_problems(at: &str, region: &str, url: Option<&str>, out: &mut Vec<Problem>) {
    if region.is_empty() {
        out.push(Problem::new(
            format!("{at}.aws_region"),
            "is empty",
            "name the AWS region, e.g. \"us-east-1\"",
        ));
    }
    if let Some(url) = url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        out.push(Problem::new(
            format!("{at}.endpoint_url"),
            format!("{url:?} is not an http(s) URL"),
            "write it as http://HOST:PORT (or remove it to use AWS's endpoint)",
        ));
    }
}

/// Problems of the `[[sources]]` and `[[sinks]]` lists against the
/// configured tables.
pub(crate) fn problems(
    sources: &[SourceConfig],
    sinks: &[SinkConfig],
    tables: &[TableName],
    out: &mut Vec<Problem>,
) {
    let unknown_table = |at: &str, table: &TableName, out: &mut Vec<Problem>| {
        if !tables.contains(table) {
            out.push(Problem::new(
                format!("{at}.table"),
                format!("table {table} has no [[tables]] entry"),
                "add a [[tables]] entry with its key attributes and merge policies",
            ));
        }
    };
    for (i, source) in sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        unknown_table(&at, source.table(), out);
        if let Some(first) = sources[..i]
            .iter()
            .position(|s| s.table() == source.table())
        {
            out.push(Problem::new(
                format!("{at}.table"),
                format!(
                    "table {} already has a source (sources[{first}])",
                    source.table()
                ),
                "follow each table through one change stream (two would ingest every change twice)",
            ));
        }
        if let Some(endpoint) = source.endpoint() {
            endpoint_problems(
                &at,
                &endpoint.aws_region,
                endpoint.endpoint_url.as_deref(),
                out,
            );
        }
        if let SourceConfig::Postgres(p) = source {
            if p.dsn.is_empty() {
                out.push(Problem::new(format!("{at}.dsn"), "is empty", "give the libpq connection string, e.g. \"host=127.0.0.1 port=5432 user=postgres dbname=app\""));
            }
            let valid = !p.slot.is_empty()
                && p.slot.len() <= 63
                && p.slot
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                out.push(Problem::new(
                    format!("{at}.slot"),
                    format!("{:?} is not a valid slot name", p.slot),
                    "use 1-63 lower-case letters, digits and underscores",
                ));
            }
        }
        if let SourceConfig::Kinesis(k) = source
            && k.stream.is_empty()
        {
            out.push(Problem::new(
                format!("{at}.stream"),
                "is empty",
                "name the Kinesis data stream",
            ));
        }
    }
    for (i, sink) in sinks.iter().enumerate() {
        let at = format!("sinks[{i}]");
        unknown_table(&at, sink.table(), out);
        if let Some(first) = sinks[..i].iter().position(|s| s.table() == sink.table()) {
            out.push(Problem::new(
                format!("{at}.table"),
                format!("table {} already has a sink (sinks[{first}])", sink.table()),
                "write each table through one sink",
            ));
        }
        if !sources.iter().any(|s| s.table() == sink.table()) {
            out.push(Problem::new(
                format!("{at}.table"),
                format!("table {} has a sink but no source", sink.table()),
                "add a [[sources]] entry for the table's change stream (dynamodb-streams or kinesis): the sink learns what the table holds, and recognises its own writes, from it",
            ));
        }
        let d = match sink {
            SinkConfig::Dynamodb(d) => d,
            SinkConfig::Postgres(p) => {
                if p.dsn.is_empty() {
                    out.push(Problem::new(
                        format!("{at}.dsn"),
                        "is empty",
                        "give the libpq connection string",
                    ));
                }
                continue;
            }
        };
        endpoint_problems(&at, &d.aws_region, d.endpoint_url.as_deref(), out);
        if d.concurrency == 0 {
            out.push(Problem::new(
                format!("{at}.concurrency"),
                "is 0",
                "allow at least one write in flight",
            ));
        }
        if d.retry_backoff_initial.is_zero() || d.retry_backoff_initial > d.retry_backoff_max {
            out.push(Problem::new(
                format!("{at}.retry_backoff_initial"),
                "must be above zero and at most retry_backoff_max",
                "e.g. retry_backoff_initial = \"50ms\", retry_backoff_max = \"5s\"",
            ));
        }
    }
}

/// Reads the `kind` of a tagged table: `Ok((kind, rest))` for a kind this
/// build has, an error naming the known kinds otherwise.
fn split_kind<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    known: &[&str],
) -> Result<(String, toml::Table), D::Error> {
    let mut table = toml::Table::deserialize(d)?;
    let known_list = known.join(", ");
    let kind = match table.remove("kind") {
        None => {
            return Err(D::Error::custom(format!(
                "{what} entry has no `kind` (known: {known_list})"
            )));
        }
        Some(toml::Value::String(kind)) => kind,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "{what} `kind` must be a string, found {} (known: {known_list})",
                other.type_str()
            )));
        }
    };
    if !known.contains(&kind.as_str()) {
        return Err(D::Error::custom(format!(
            "unknown {what} kind {kind:?} (known: {known_list})"
        )));
    }
    Ok((kind, table))
}

fn entry<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    kind: &str,
    table: toml::Table,
) -> Result<T, E> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| E::custom(format!("kind {kind:?}: {}", e.message())))
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, table) = split_kind(d, "source", SOURCE_KINDS)?;
        match kind.as_str() {
            "dynamodb-streams" => entry(&kind, table).map(SourceConfig::DynamodbStreams),
            "postgres" => entry(&kind, table).map(SourceConfig::Postgres),
            _ => entry(&kind, table).map(SourceConfig::Kinesis),
        }
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, table) = split_kind(d, "sink", SINK_KINDS)?;
        match kind.as_str() {
            "postgres" => entry(&kind, table).map(SinkConfig::Postgres),
            _ => entry(&kind, table).map(SinkConfig::Dynamodb),
        }
    }
}
