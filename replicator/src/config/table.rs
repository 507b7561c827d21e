//! A replicated table as configured: its key attributes and which attributes
//! merge by a policy other than last-writer-wins.

use serde::Deserialize;
use tributary_engine::ids::{AttrName, TableName};
use tributary_engine::schema::{MergePolicy, SchemaError, TableSchema};

use super::error::Problem;

/// One `[[tables]]` entry.
///
/// ```toml
/// [[tables]]
/// name = "carts"
/// partition_key = "pk"
/// sort_key = "sk"        # optional
/// counters = ["qty"]     # also: sets = [...], multi = [...]; others are lww
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The table's name (as in the source database).
    pub name: TableName,
    /// The partition (hash) key attribute.
    pub partition_key: AttrName,
    /// The sort (range) key attribute, if the table has one.
    #[serde(default)]
    pub sort_key: Option<AttrName>,
    /// Attributes that merge as counters.
    #[serde(default)]
    pub counters: Vec<AttrName>,
    /// Attributes that merge as add-wins sets.
    #[serde(default)]
    pub sets: Vec<AttrName>,
    /// Attributes that keep concurrent writes as siblings.
    #[serde(default)]
    pub multi: Vec<AttrName>,
}

impl TableConfig {
    /// The configured policies, as `(config key, policy, attributes)`.
    pub fn policy_lists(&self) -> [(&'static str, MergePolicy, &[AttrName]); 3] {
        [
            ("counters", MergePolicy::Counter, &self.counters),
            ("sets", MergePolicy::Set, &self.sets),
            ("multi", MergePolicy::Multi, &self.multi),
        ]
    }

    /// The engine's schema for this table.
    pub fn to_schema(&self) -> Result<TableSchema, SchemaError> {
        let mut schema = TableSchema::new(
            self.name.clone(),
            self.partition_key.clone(),
            self.sort_key.clone(),
        )?;
        for (_, policy, attrs) in self.policy_lists() {
            for attr in attrs {
                schema = schema.with_policy(attr.clone(), policy)?;
            }
        }
        Ok(schema)
    }

    /// The problems of this table alone; `at` is its key path
    /// (`tables[0]`).
    pub(crate) fn problems(&self, at: &str, out: &mut Vec<Problem>) {
        if self.sort_key.as_ref() == Some(&self.partition_key) {
            out.push(Problem::new(
                format!("{at}.sort_key"),
                format!(
                    "is the partition key {:?} again",
                    self.partition_key.as_str()
                ),
                "name a different attribute or drop sort_key",
            ));
        }
        // Where each attribute was first given a policy.
        let mut seen: Vec<(&AttrName, String)> = Vec::new();
        for (list, _, attrs) in self.policy_lists() {
            for (i, attr) in attrs.iter().enumerate() {
                let key = format!("{at}.{list}[{i}]");
                if attr == &self.partition_key || self.sort_key.as_ref() == Some(attr) {
                    out.push(Problem::new(
                        key,
                        format!("{:?} is a key attribute; keys never merge", attr.as_str()),
                        format!("remove it from {list}"),
                    ));
                    continue;
                }
                match seen.iter().find(|(a, _)| *a == attr) {
                    Some((_, first)) => out.push(Problem::new(
                        key,
                        format!("{:?} is already listed at {first}", attr.as_str()),
                        "give each attribute one policy, listed once",
                    )),
                    None => seen.push((attr, key)),
                }
            }
        }
    }
}
