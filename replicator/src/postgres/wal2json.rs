//! wal2json (format version 2) messages, and rows as DynamoDB-style change
//! records, so the engine's `derive_change` turns them into CRDT ops under
//! the table's schema exactly as it does for DynamoDB's records. Pure.
//!
//! A message is one JSON object: `{"action":"B"|"C", "xid", "lsn"}` for a
//! transaction's begin and commit, `{"action":"I"|"U"|"D", "schema",
//! "table", "columns": [{"name","type","value"}], "identity": [...]}` for a
//! row (`columns` the new row, `identity` the old one under `REPLICA
//! IDENTITY FULL`), with `"origin"` (the origin's numeric id, `roident`,
//! with `include-origin`) when the transaction was made by a session with a
//! replication origin.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;
use tributary_engine::schema::TableSchema;
use tributary_engine::stream_record::{ChangeRecord, EventName};
use tributary_engine::value::AttrValue;

use super::types::from_wal2json;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A transaction begins; with the id of its replication origin, if it
    /// has one.
    Begin(Option<u32>),
    /// A transaction commits.
    Commit,
    /// A row changed.
    Row(Row),
    /// Anything else (messages, truncates): ignored.
    Other(String),
}

/// A row change.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Insert, update or delete.
    pub event: EventName,
    /// `schema.table`.
    pub table: String,
    /// The new row (inserts and updates).
    pub columns: Vec<Column>,
    /// The old row (updates and deletes, `REPLICA IDENTITY FULL`).
    pub identity: Vec<Column>,
    /// The id of the transaction's replication origin (`roident`), when
    /// wal2json gives it on the row.
    pub origin: Option<u32>,
}

/// One column of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type (`format_type` name).
    pub sql_type: String,
    /// Its value as wal2json wrote it.
    pub value: Value,
}

/// A message as wal2json writes it. Column values stay raw JSON text, so
/// a `numeric` keeps every digit (wal2json 2.5 writes numbers unquoted,
/// and a double would round them to 15 significant digits).
#[derive(serde::Deserialize)]
struct Wire<'a> {
    action: Option<&'a str>,
    origin: Option<u64>,
    #[serde(default)]
    schema: String,
    #[serde(default)]
    table: String,
    #[serde(borrow)]
    columns: Option<Vec<WireColumn<'a>>>,
    #[serde(borrow)]
    identity: Option<Vec<WireColumn<'a>>>,
}

#[derive(serde::Deserialize)]
struct WireColumn<'a> {
    name: Option<String>,
    #[serde(rename = "type")]
    sql_type: Option<String>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

/// Decodes one message.
pub fn decode(text: &str) -> Result<Message, String> {
    let wire: Wire = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let action = wire.action.ok_or("no \"action\"")?;
    let origin = wire
        .origin
        .and_then(|o| u32::try_from(o).ok())
        .filter(|o| *o != 0);
    let event = match action {
        "B" => return Ok(Message::Begin(origin)),
        "C" => return Ok(Message::Commit),
        "I" => EventName::Insert,
        "U" => EventName::Modify,
        "D" => EventName::Remove,
        other => return Ok(Message::Other(other.to_owned())),
    };
    Ok(Message::Row(Row {
        event,
        table: format!("{}.{}", wire.schema, wire.table),
        columns: columns(wire.columns)?,
        identity: columns(wire.identity)?,
        origin,
    }))
}

fn columns(list: Option<Vec<WireColumn>>) -> Result<Vec<Column>, String> {
    list.unwrap_or_default()
        .into_iter()
        .map(|c| {
            Ok(Column {
                name: c.name.ok_or("a column without a name")?,
                sql_type: c
                    .sql_type
                    .ok_or("a column without a type (enable include-types)")?,
                value: c.value.map_or(Ok(Value::Null), raw_value)?,
            })
        })
        .collect()
}

/// A raw column value: a JSON number becomes its exact text (the type
/// mapping parses text), anything else its JSON value.
fn raw_value(raw: &RawValue) -> Result<Value, String> {
    let text = raw.get().trim();
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Ok(Value::String(text.to_owned()))
    } else {
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
    }
}

/// The attributes of a row's `columns` (SQL NULLs left out) under
/// `schema`'s policies.
pub fn image(
    schema: &TableSchema,
    columns: &[Column],
) -> Result<BTreeMap<String, AttrValue>, String> {
    let mut out = BTreeMap::new();
    for c in columns {
        let policy = tributary_engine::ids::AttrName::new(c.name.as_str())
            .map(|a| schema.policy(&a))
            .map_err(|e| format!("column {}: {e}", c.name))?;
        if let Some(v) =
            from_wal2json(&c.name, &c.sql_type, policy, &c.value).map_err(|e| e.to_string())?
        {
            out.insert(c.name.clone(), v);
        }
    }
    Ok(out)
}

/// The row as a change record (`tableName` = the schema's table; the
/// creation time is left to the local HLC).
pub fn to_record(schema: &TableSchema, row: &Row) -> Result<ChangeRecord, String> {
    let old = image(schema, &row.identity)?;
    // An update leaves out the columns whose out-of-line (TOAST) value did
    // not change: the new row is the old one overlaid with what is given.
    let given = image(schema, &row.columns)?;
    let new = if row.event == EventName::Modify {
        let named: std::collections::BTreeSet<&str> =
            row.columns.iter().map(|c| c.name.as_str()).collect();
        let mut new: BTreeMap<String, AttrValue> = old
            .iter()
            .filter(|(k, _)| !named.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        new.extend(given);
        new
    } else {
        given
    };
    if row.event != EventName::Insert && row.identity.is_empty() {
        return Err(format!(
            "{} of {} carries no old row: the table needs REPLICA IDENTITY FULL",
            row.event, row.table
        ));
    }
    let keys: BTreeMap<String, AttrValue> = std::iter::once(schema.partition_key())
        .chain(schema.sort_key())
        .filter_map(|k| {
            let name = k.as_str();
            new.get(name)
                .or_else(|| old.get(name))
                .map(|v| (name.to_owned(), v.clone()))
        })
        .collect();
    Ok(ChangeRecord {
        event: row.event,
        table: None,
        keys,
        old_image: (row.event != EventName::Insert).then_some(old),
        new_image: (row.event != EventName::Remove).then_some(new),
        approximate_creation_millis: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tributary_engine::change::Op;
    use tributary_engine::ids::{AttrName, TableName};
    use tributary_engine::schema::MergePolicy;
    use tributary_engine::stream_record::derive_change;

    use super::*;

    fn schema() -> TableSchema {
        let a = |s: &str| AttrName::new(s).expect("name");
        TableSchema::new(TableName::new("carts").expect("t"), a("pk"), None)
            .expect("schema")
            .with_policy(a("qty"), MergePolicy::Counter)
            .expect("counter")
            .with_policy(a("tags"), MergePolicy::Set)
            .expect("set")
    }

    #[test]
    fn an_update_becomes_a_counter_add_and_a_set_change() {
        let msg = json!({"action": "U", "schema": "public", "table": "carts", "origin": null,
            "columns": [
                {"name": "pk", "type": "text", "value": "u1"},
                {"name": "qty", "type": "integer", "value": 7},
                {"name": "tags", "type": "text[]", "value": "{a,c}"}],
            "identity": [
                {"name": "pk", "type": "text", "value": "u1"},
                {"name": "qty", "type": "integer", "value": 5},
                {"name": "tags", "type": "text[]", "value": "{a,b}"}]});
        let Message::Row(row) = decode(&msg.to_string()).expect("decodes") else {
            panic!("a row")
        };
        assert_eq!((row.table.as_str(), row.origin), ("public.carts", None));
        let record = to_record(&schema(), &row).expect("record");
        let change = derive_change(&schema(), &record, &[]).expect("change");
        assert!(
            change.ops.iter().any(|o| matches!(o, Op::Add { .. })),
            "{:?}",
            change.ops
        );
        assert_eq!(
            change.ops.len(),
            3,
            "add qty, remove b, add c: {:?}",
            change.ops
        );
    }

    #[test]
    fn an_update_without_an_unchanged_toasted_column_keeps_it() {
        let msg = json!({"action": "U", "schema": "public", "table": "carts",
            "columns": [
                {"name": "pk", "type": "text", "value": "u1"},
                {"name": "qty", "type": "integer", "value": 6}],
            "identity": [
                {"name": "pk", "type": "text", "value": "u1"},
                {"name": "qty", "type": "integer", "value": 5},
                {"name": "big", "type": "text", "value": "a long text"}]});
        let Message::Row(row) = decode(&msg.to_string()).expect("decodes") else {
            panic!("a row")
        };
        let record = to_record(&schema(), &row).expect("record");
        assert!(
            record
                .new_image
                .as_ref()
                .is_some_and(|n| n.contains_key("big")),
            "{record:?}"
        );
        let change = derive_change(&schema(), &record, &[]).expect("change");
        assert_eq!(
            change.ops.len(),
            1,
            "only the counter moved: {:?}",
            change.ops
        );
    }

    #[test]
    fn begin_commit_and_rows_without_old_values_are_told_apart() {
        assert_eq!(
            decode(r#"{"action":"B","xid":7}"#),
            Ok(Message::Begin(None))
        );
        assert_eq!(
            decode(r#"{"action":"B","xid":7,"origin":3}"#),
            Ok(Message::Begin(Some(3)))
        );
        assert_eq!(decode(r#"{"action":"C","xid":7}"#), Ok(Message::Commit));
        let del = json!({"action": "D", "schema": "public", "table": "carts",
            "columns": [], "origin": 3});
        let Message::Row(row) = decode(&del.to_string()).expect("decodes") else {
            panic!("a row")
        };
        assert_eq!(row.origin, Some(3));
        let err = to_record(&schema(), &row).expect_err("no old row");
        assert!(err.contains("REPLICA IDENTITY FULL"), "{err}");
        assert!(decode("{oops").is_err());
    }

    #[test]
    fn a_numeric_keeps_every_digit() {
        let msg = r#"{"action":"I","schema":"public","table":"carts","columns":[
            {"name":"pk","type":"text","value":"u1"},
            {"name":"price","type":"numeric(38,18)","value":12345678901234567890.123456789012345678},
            {"name":"tiny","type":"numeric","value":-0.000000000000000000001},
            {"name":"note","type":"text","value":null}]}"#;
        let Message::Row(row) = decode(msg).expect("decodes") else {
            panic!("a row")
        };
        let record = to_record(&schema(), &row).expect("record");
        let new = record.new_image.expect("new row");
        assert_eq!(
            new.get("price").map(|v| v.to_dynamodb_json().to_string()),
            Some(r#"{"N":"12345678901234567890.123456789012345678"}"#.to_owned())
        );
        assert!(new.contains_key("tiny"), "{new:?}");
        assert!(!new.contains_key("note"), "NULL is absent: {new:?}");
    }
}
