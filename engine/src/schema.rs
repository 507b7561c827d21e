//! Table schemas: which attributes form the key, and how every other
//! attribute merges when regions write it concurrently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AttrName, TableName};

/// How concurrent writes to one attribute merge.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MergePolicy {
    /// Last writer wins by `(HLC, region)`; a remove is a timestamped tombstone.
    #[default]
    Lww,
    /// A counter: concurrent increments all count; a remove or item delete
    /// resets only the contributions the remover had observed.
    Counter,
    /// An add-wins observed-remove set of strings, numbers or binaries.
    Set,
    /// A multi-value register: concurrent writes are all kept as siblings
    /// until a write that has seen them replaces them.
    Multi,
}

impl MergePolicy {
    /// The policy's name as used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            MergePolicy::Lww => "lww",
            MergePolicy::Counter => "counter",
            MergePolicy::Set => "set",
            MergePolicy::Multi => "multi",
        }
    }
}

/// A schema error: the definition cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A key attribute was given a merge policy (keys never merge).
    #[error("table {table}: key attribute {attr} cannot have merge policy {policy}")]
    PolicyOnKey {
        /// The table.
        table: TableName,
        /// The key attribute.
        attr: AttrName,
        /// The refused policy.
        policy: &'static str,
    },
    /// One attribute was given two different policies.
    #[error("table {table}: attribute {attr} is listed as both {first} and {second}")]
    ConflictingPolicies {
        /// The table.
        table: TableName,
        /// The attribute.
        attr: AttrName,
        /// The first policy given.
        first: &'static str,
        /// The second policy given.
        second: &'static str,
    },
    /// Partition and sort key name the same attribute.
    #[error("table {table}: partition key and sort key are both {attr}")]
    SameKeyAttributes {
        /// The table.
        table: TableName,
        /// The attribute.
        attr: AttrName,
    },
}

/// A table's key attributes and per-attribute merge policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    name: TableName,
    partition_key: AttrName,
    sort_key: Option<AttrName>,
    policies: BTreeMap<AttrName, MergePolicy>,
}

/// Up to this many attributes with a policy, [`TableSchema::policy`] scans
/// them instead of searching.
const SCANNED_POLICIES: usize = 8;

impl TableSchema {
    /// A schema with every non-key attribute `lww`.
    pub fn new(
        name: TableName,
        partition_key: AttrName,
        sort_key: Option<AttrName>,
    ) -> Result<Self, SchemaError> {
        if sort_key.as_ref() == Some(&partition_key) {
            return Err(SchemaError::SameKeyAttributes {
                table: name,
                attr: partition_key,
            });
        }
        Ok(Self {
            name,
            partition_key,
            sort_key,
            policies: BTreeMap::new(),
        })
    }

    /// Gives `attr` a merge policy (builder style).
    pub fn with_policy(mut self, attr: AttrName, policy: MergePolicy) -> Result<Self, SchemaError> {
        if self.is_key(&attr) {
            return Err(SchemaError::PolicyOnKey {
                table: self.name,
                attr,
                policy: policy.name(),
            });
        }
        match self.policies.get(&attr) {
            Some(existing) if *existing != policy => Err(SchemaError::ConflictingPolicies {
                table: self.name.clone(),
                attr,
                first: existing.name(),
                second: policy.name(),
            }),
            _ => {
                if policy != MergePolicy::Lww {
                    self.policies.insert(attr, policy);
                }
                Ok(self)
            }
        }
    }

    /// The table's name.
    pub fn name(&self) -> &TableName {
        &self.name
    }

    /// The partition key attribute.
    pub fn partition_key(&self) -> &AttrName {
        &self.partition_key
    }

    /// The sort key attribute, if the table has one.
    pub fn sort_key(&self) -> Option<&AttrName> {
        self.sort_key.as_ref()
    }

    /// True if `attr` is part of the key.
    pub fn is_key(&self, attr: &AttrName) -> bool {
        attr == &self.partition_key || self.sort_key.as_ref() == Some(attr)
    }

    /// The merge policy of `attr` (`lww` unless configured otherwise).
    pub fn policy(&self, attr: &AttrName) -> MergePolicy {
        // Tables give a policy to a few attributes: scanning them by
        // equality (lengths first, most names differ there) costs less
        // than the map's ordered search, which compares bytes at each step.
        if self.policies.len() <= SCANNED_POLICIES {
            return self
                .policies
                .iter()
                .find_map(|(a, p)| (a == attr).then_some(*p))
                .unwrap_or_default();
        }
        self.policies.get(attr).copied().unwrap_or_default()
    }

    /// The attributes with a non-default policy.
    pub fn policies(&self) -> impl Iterator<Item = (&AttrName, MergePolicy)> {
        self.policies.iter().map(|(a, p)| (a, *p))
    }
}

/// The schemas of every replicated table, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schemas(BTreeMap<TableName, TableSchema>);

impl Schemas {
    /// No tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a table's schema.
    pub fn insert(&mut self, schema: TableSchema) {
        self.0.insert(schema.name.clone(), schema);
    }

    /// The schema of `table`, if it is replicated.
    pub fn get(&self, table: &TableName) -> Option<&TableSchema> {
        self.0.get(table)
    }

    /// All schemas, ordered by table name.
    pub fn iter(&self) -> impl Iterator<Item = &TableSchema> {
        self.0.values()
    }
}

impl FromIterator<TableSchema> for Schemas {
    fn from_iter<I: IntoIterator<Item = TableSchema>>(iter: I) -> Self {
        let mut s = Schemas::new();
        for t in iter {
            s.insert(t);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> AttrName {
        AttrName::new(s).expect("valid attr")
    }

    #[test]
    fn policies_default_to_lww_and_refuse_keys_and_conflicts() {
        let t = TableName::new("carts").expect("valid table");
        let s = TableSchema::new(t.clone(), a("pk"), Some(a("sk")))
            .and_then(|s| s.with_policy(a("qty"), MergePolicy::Counter))
            .expect("valid schema");
        assert_eq!(s.policy(&a("qty")), MergePolicy::Counter);
        assert_eq!(s.policy(&a("name")), MergePolicy::Lww);
        assert!(matches!(
            s.clone().with_policy(a("sk"), MergePolicy::Set),
            Err(SchemaError::PolicyOnKey { .. })
        ));
        assert!(matches!(
            s.with_policy(a("qty"), MergePolicy::Set),
            Err(SchemaError::ConflictingPolicies { .. })
        ));
        assert!(TableSchema::new(t, a("pk"), Some(a("pk"))).is_err());
    }

    /// Few policies are scanned, many searched: both find every policy
    /// and nothing else.
    #[test]
    fn policies_are_found_however_many() {
        let policies = [MergePolicy::Counter, MergePolicy::Set, MergePolicy::Multi];
        for n in [
            1,
            SCANNED_POLICIES,
            SCANNED_POLICIES + 1,
            3 * SCANNED_POLICIES,
        ] {
            let t = TableName::new("t").expect("valid table");
            let mut s = TableSchema::new(t, a("pk"), None).expect("valid schema");
            for i in 0..n {
                s = s
                    .with_policy(a(&format!("a{i}")), policies[i % 3])
                    .expect("valid policy");
            }
            for i in 0..n {
                assert_eq!(
                    s.policy(&a(&format!("a{i}"))),
                    policies[i % 3],
                    "{n} policies"
                );
            }
            for other in ["a", "b0", &format!("a{n}"), "pk"] {
                assert_eq!(s.policy(&a(other)), MergePolicy::Lww, "{other} of {n}");
            }
        }
    }
}
