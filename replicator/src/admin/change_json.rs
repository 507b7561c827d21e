//! `replctl write`'s line form → an engine [`Change`].
//!
//! ```json
//! {"table":"carts","key":{"pk":"u1","sk":"c1"},"set":{"name":"x"},"add":{"qty":2},
//!  "add_to_set":{"tags":["a"]},"remove_from_set":{"tags":["b"]},"remove":["attr"],"delete":false}
//! ```
//!
//! Every field but `table` and `key` is optional; unknown fields are
//! refused (a typo must not silently drop a write). The ops apply in the
//! order delete, set, add, add_to_set, remove_from_set, remove, so
//! `"delete":true` with `"set"` replaces the item. Whether an op fits the
//! attribute's merge policy is the engine's check (`ItemState::prepare`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tributary_engine::change::{Change, Op};
use tributary_engine::ids::{AttrName, TableName};
use tributary_engine::schema::Schemas;
use tributary_engine::value::{AttrValue, Scalar};

use super::item_json::key_from_json;

/// Why a change line was refused; the text is what `replctl write` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChangeLineError(pub String);

fn refuse(msg: impl Into<String>) -> ChangeLineError {
    ChangeLineError(msg.into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    table: String,
    key: Value,
    #[serde(default)]
    set: BTreeMap<String, Value>,
    #[serde(default)]
    add: BTreeMap<String, Value>,
    #[serde(default)]
    add_to_set: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    remove_from_set: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    delete: bool,
}

/// Parses one JSON line into a change on a table of `schemas`.
pub fn parse_change(line: &str, schemas: &Schemas) -> Result<Change, ChangeLineError> {
    let line: Line =
        serde_json::from_str(line).map_err(|e| refuse(format!("malformed change: {e}")))?;
    let table = TableName::new(line.table.as_str())
        .map_err(|e| refuse(format!("table {:?}: {e}", line.table)))?;
    let schema = schemas.get(&table).ok_or_else(|| {
        refuse(format!(
            "unknown table {table}: the node replicates only its [[tables]]"
        ))
    })?;
    let key = key_from_json(schema, &line.key).map_err(refuse)?;
    let attr = |field: &str, name: &str| -> Result<AttrName, ChangeLineError> {
        let attr = AttrName::new(name).map_err(|e| refuse(format!("{field}.{name}: {e}")))?;
        if schema.is_key(&attr) {
            return Err(refuse(format!(
                "{field}.{name}: key attributes cannot be changed; write another item instead"
            )));
        }
        Ok(attr)
    };
    let scalars = |field: &str, name: &str, values: &[Value]| {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Scalar::from_plain_json(v).map_err(|e| refuse(format!("{field}.{name}[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut ops = Vec::new();
    if line.delete {
        ops.push(Op::Delete);
    }
    for (name, v) in &line.set {
        let value =
            AttrValue::from_plain_json(v).map_err(|e| refuse(format!("set.{name}: {e}")))?;
        ops.push(Op::Set {
            attr: attr("set", name)?,
            value,
        });
    }
    for (name, v) in &line.add {
        let amount = v
            .as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
            .ok_or_else(|| {
                refuse(format!(
                    "add.{name}: expected an integer increment, found {v}"
                ))
            })?;
        ops.push(Op::Add {
            attr: attr("add", name)?,
            amount,
        });
    }
    for (name, values) in &line.add_to_set {
        ops.push(Op::AddToSet {
            attr: attr("add_to_set", name)?,
            elements: scalars("add_to_set", name, values)?,
        });
    }
    for (name, values) in &line.remove_from_set {
        ops.push(Op::RemoveFromSet {
            attr: attr("remove_from_set", name)?,
            elements: scalars("remove_from_set", name, values)?,
        });
    }
    for name in &line.remove {
        ops.push(Op::Remove {
            attr: attr("remove", name)?,
        });
    }
    Ok(Change {
        key,
        ops,
        source_millis: None,
    })
}

#[cfg(test)]
mod tests {
    use tributary_engine::schema::{MergePolicy, TableSchema};

    use super::*;

    fn schemas() -> Schemas {
        let n = |s: &str| AttrName::new(s).expect("name");
        let t = TableSchema::new(TableName::new("carts").expect("t"), n("pk"), Some(n("sk")))
            .expect("schema")
            .with_policy(n("qty"), MergePolicy::Counter)
            .expect("qty")
            .with_policy(n("tags"), MergePolicy::Set)
            .expect("tags");
        let mut s = Schemas::new();
        s.insert(t);
        s
    }

    #[test]
    fn the_contract_line_becomes_ops_in_order() {
        let line = r#"{"table":"carts","key":{"pk":"u1","sk":"c1"},"set":{"name":"x"},"add":{"qty":2},"add_to_set":{"tags":["a"]},"remove_from_set":{"tags":["b"]},"remove":["attr"],"delete":true}"#;
        let c = parse_change(line, &schemas()).expect("parses");
        let kinds: Vec<&str> = c
            .ops
            .iter()
            .map(|op| match op {
                Op::Delete => "delete",
                Op::Set { .. } => "set",
                Op::Add { amount: 2, .. } => "add2",
                Op::Add { .. } => "add",
                Op::AddToSet { .. } => "add_to_set",
                Op::RemoveFromSet { .. } => "remove_from_set",
                Op::Remove { .. } => "remove",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "delete",
                "set",
                "add2",
                "add_to_set",
                "remove_from_set",
                "remove"
            ]
        );
        assert_eq!(c.key.partition(), &Scalar::S("u1".into()));
        assert_eq!(c.key.sort(), Some(&Scalar::S("c1".into())));
    }

    fn error(line: &str) -> String {
        parse_change(line, &schemas()).expect_err("refused").0
    }

    #[test]
    fn bad_lines_are_refused_with_what_and_where() {
        assert!(error("{not json").starts_with("malformed change"));
        assert!(
            error(r#"{"table":"orders","key":{"pk":"a","sk":"b"}}"#)
                .contains("unknown table orders")
        );
        assert!(error(r#"{"table":"carts","key":{"pk":"a"}}"#).contains("sk"));
        assert!(
            error(r#"{"table":"carts","key":{"pk":"a","sk":"b"},"add":{"qty":"x"}}"#)
                .contains("add.qty")
        );
        assert!(
            error(r#"{"table":"carts","key":{"pk":"a","sk":"b"},"set":{"pk":"z"}}"#)
                .contains("key attributes")
        );
        assert!(
            error(r#"{"table":"carts","key":{"pk":"a","sk":"b"},"sett":{}}"#)
                .contains("unknown field")
        );
        assert!(
            error(r#"{"table":"carts","key":{"pk":"a","sk":"b"},"add_to_set":{"tags":[true]}}"#)
                .contains("add_to_set.tags[0]")
        );
    }
}
