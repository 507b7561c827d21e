//! `[[sources]]` and `[[sinks]]`: where local changes come from and where
//! merged results go. Each entry is tagged by `kind`. No kind is built yet:
//! the lists must be empty (or absent) today, and an entry is refused with
//! the list of kinds the node knows. A later issue adds one variant per kind.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The source kinds the design plans (DESIGN §5).
pub const SOURCE_KINDS: &[&str] = &["dynamodb-streams", "kinesis", "postgres"];

/// The sink kinds the design plans (DESIGN §5).
pub const SINK_KINDS: &[&str] = &["dynamodb", "postgres"];

/// One `[[sources]]` entry. No kind is implemented yet, so no value of this
/// type exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {}

/// One `[[sinks]]` entry. No kind is implemented yet, so no value of this
/// type exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {}

/// Reads the `kind` of a tagged table and refuses it: unknown kinds with the
/// list of known ones, known kinds because they are not built yet.
fn refuse_kind<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    known: &[&str],
) -> Result<std::convert::Infallible, D::Error> {
    let table = toml::Table::deserialize(d)?;
    let known_list = known.join(", ");
    let kind = match table.get("kind") {
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
    if known.contains(&kind.as_str()) {
        Err(D::Error::custom(format!(
            "{what} kind {kind:?} is not built yet; remove this entry (see the Sources and sinks issue)"
        )))
    } else {
        Err(D::Error::custom(format!(
            "unknown {what} kind {kind:?} (known: {known_list})"
        )))
    }
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match refuse_kind(d, "source", SOURCE_KINDS)? {}
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match refuse_kind(d, "sink", SINK_KINDS)? {}
    }
}
