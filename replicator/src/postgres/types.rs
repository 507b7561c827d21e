//! SQL types ↔ attribute values: the explicit, documented mapping of the
//! PostgreSQL sidecar. A column's type is its `format_type` name (what
//! wal2json reports and `pg_attribute` gives).
//!
//! | SQL type | attribute value |
//! |---|---|
//! | `text`, `varchar(n)`, `character(n)`, `uuid` | S |
//! | `smallint`, `integer`, `bigint`, `numeric[(p,s)]`, `real`, `double precision` | N (exact decimal text) |
//! | `boolean` | BOOL |
//! | `bytea` | B |
//! | `jsonb`, `json` | the JSON value: object → M, array → L, number → N, string → S, true/false → BOOL, null → NULL |
//! | `timestamp[tz]`, `date`, `time[tz]` | S, PostgreSQL's text form |
//! | `text[]`, `varchar[]` | SS under the `set` policy, else L of S |
//! | `smallint[]`, `integer[]`, `bigint[]`, `numeric[]` | NS under the `set` policy, else L of N |
//! | SQL NULL | the attribute is absent |
//!
//! Anything else (a composite, a range, an array of arrays, an array with
//! NULL elements, a set with repeated elements) cannot be mapped: the row is
//! a dead letter with the column and the reason.
//!
//! Writing back, every value travels as text and is cast by the server
//! (`$1::text::numeric`), so the text forms above are exactly what
//! PostgreSQL parses.

use std::collections::BTreeSet;

use serde_json::Value;
use tributary_engine::schema::MergePolicy;
use tributary_engine::value::{AttrValue, Number};

/// Why a value does not map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column} ({sql_type}): {reason}")]
pub struct TypeError {
    /// The column.
    pub column: String,
    /// Its SQL type.
    pub sql_type: String,
    /// What is wrong.
    pub reason: String,
}

/// The kind of a SQL type, as far as mapping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    /// Text-like: S.
    Text,
    /// Numeric: N.
    Number,
    /// `boolean`.
    Bool,
    /// `bytea`.
    Bytes,
    /// `json`, `jsonb`.
    Json,
    /// Arrays of text.
    TextArray,
    /// Arrays of numbers.
    NumberArray,
}

/// The kind of `sql_type` (a `format_type` name), if it maps.
pub fn kind_of(sql_type: &str) -> Option<SqlKind> {
    let base = sql_type.split('(').next().unwrap_or(sql_type).trim();
    let (element, array) = match base.strip_suffix("[]") {
        Some(e) => (e.split('(').next().unwrap_or(e).trim(), true),
        None => (base, false),
    };
    let scalar = match element {
        "text" | "character varying" | "varchar" | "character" | "char" | "bpchar" | "uuid"
        | "name" | "citext" => SqlKind::Text,
        "timestamp with time zone"
        | "timestamp without time zone"
        | "timestamptz"
        | "timestamp"
        | "date"
        | "time without time zone"
        | "time with time zone" => SqlKind::Text,
        "smallint" | "integer" | "bigint" | "numeric" | "decimal" | "real" | "double precision"
        | "int2" | "int4" | "int8" | "float4" | "float8" => SqlKind::Number,
        "boolean" | "bool" => SqlKind::Bool,
        "bytea" => SqlKind::Bytes,
        "json" | "jsonb" => SqlKind::Json,
        _ => return None,
    };
    match (scalar, array) {
        (k, false) => Some(k),
        (SqlKind::Text, true) => Some(SqlKind::TextArray),
        (SqlKind::Number, true) => Some(SqlKind::NumberArray),
        _ => None,
    }
}

fn err(column: &str, sql_type: &str, reason: impl Into<String>) -> TypeError {
    TypeError {
        column: column.to_owned(),
        sql_type: sql_type.to_owned(),
        reason: reason.into(),
    }
}

/// A column value as wal2json gives it (format 2), as an attribute value;
/// `None` for SQL NULL. wal2json 2.5 (Debian's for PostgreSQL 15) writes
/// numbers as unquoted JSON numbers; the decoder hands them over as their
/// exact text ([`super::wal2json::decode`]), so a `numeric` keeps every
/// digit DynamoDB's 38 can hold. A table scan gives every value as text.
pub fn from_wal2json(
    column: &str,
    sql_type: &str,
    policy: MergePolicy,
    value: &Value,
) -> Result<Option<AttrValue>, TypeError> {
    if value.is_null() {
        return Ok(None);
    }
    let kind = kind_of(sql_type).ok_or_else(|| {
        err(
            column,
            sql_type,
            "this type cannot be mapped to an attribute value",
        )
    })?;
    let text = || -> Result<String, TypeError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(err(column, sql_type, format!("unexpected JSON {other}"))),
        }
    };
    let number = |s: &str| {
        s.parse::<Number>().map_err(|e| {
            err(
                column,
                sql_type,
                format!("{s:?} is not a number DynamoDB can hold: {e}"),
            )
        })
    };
    Ok(Some(match kind {
        SqlKind::Text => AttrValue::S(text()?),
        SqlKind::Number => AttrValue::N(number(&text()?)?),
        SqlKind::Bool => match value {
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::String(s) if s == "t" || s == "true" => AttrValue::Bool(true),
            Value::String(s) if s == "f" || s == "false" => AttrValue::Bool(false),
            other => return Err(err(column, sql_type, format!("unexpected boolean {other}"))),
        },
        SqlKind::Bytes => {
            // wal2json drops the `\x` of bytea's hex form; the sink's own
            // text keeps it.
            let s = text()?;
            let hex = s.strip_prefix("\\x").unwrap_or(&s);
            AttrValue::B(decode_hex(hex).ok_or_else(|| err(column, sql_type, "bad hex digits"))?)
        }
        SqlKind::Json => {
            let parsed: Value = match value {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| err(column, sql_type, format!("not JSON: {e}")))?,
                other => other.clone(),
            };
            AttrValue::from_plain_json(&parsed).map_err(|e| err(column, sql_type, e.to_string()))?
        }
        SqlKind::TextArray | SqlKind::NumberArray => {
            let elements = parse_array(&text()?).map_err(|r| err(column, sql_type, r))?;
            array_value(column, sql_type, kind, policy, elements)?
        }
    }))
}

fn array_value(
    column: &str,
    sql_type: &str,
    kind: SqlKind,
    policy: MergePolicy,
    elements: Vec<String>,
) -> Result<AttrValue, TypeError> {
    let numbers = || -> Result<Vec<Number>, TypeError> {
        elements
            .iter()
            .map(|e| {
                e.parse::<Number>()
                    .map_err(|x| err(column, sql_type, format!("element {e:?}: {x}")))
            })
            .collect()
    };
    let set = policy == MergePolicy::Set;
    Ok(match (kind, set) {
        (SqlKind::TextArray, true) => AttrValue::Ss(distinct(column, sql_type, elements)?),
        (_, true) => AttrValue::Ns(distinct(column, sql_type, numbers()?)?),
        (SqlKind::TextArray, false) => {
            AttrValue::L(elements.into_iter().map(AttrValue::S).collect())
        }
        (_, false) => AttrValue::L(numbers()?.into_iter().map(AttrValue::N).collect()),
    })
}

/// The elements of a set column as a set: refused when one repeats or
/// there are none (an empty set is NULL).
fn distinct<T: Ord>(
    column: &str,
    sql_type: &str,
    elements: Vec<T>,
) -> Result<BTreeSet<T>, TypeError> {
    let count = elements.len();
    let set: BTreeSet<T> = elements.into_iter().collect();
    if set.len() != count {
        return Err(err(
            column,
            sql_type,
            "a set column holds repeated elements",
        ));
    }
    if set.is_empty() {
        return Err(err(
            column,
            sql_type,
            "an empty array (use NULL for an empty set)",
        ));
    }
    Ok(set)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a one-dimensional array literal (`{a,"b c",3}`); NULL elements,
/// nested arrays and bounds decorations are refused.
pub fn parse_array(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| format!("{text:?} is not an array literal"))?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut element = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => element.push(chars.next().ok_or("dangling escape")?),
                    Some('"') => break,
                    Some(c) => element.push(c),
                    None => return Err("unterminated quoted element".to_owned()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' || c == '"' {
                    return Err("nested arrays are not supported".to_owned());
                }
                element.push(c);
                chars.next();
            }
            if element == "NULL" {
                return Err("an array with NULL elements cannot be mapped".to_owned());
            }
        }
        out.push(element);
        match chars.next() {
            Some(',') => {}
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} after an element")),
        }
    }
    Ok(out)
}

/// An attribute value as the text PostgreSQL parses for a column of
/// `kind` (the sink sends it as `$n::text::TYPE`).
pub fn to_sql_text(value: &AttrValue, kind: SqlKind) -> Result<String, String> {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    Ok(match (kind, value) {
        (SqlKind::Text, AttrValue::S(s)) => s.clone(),
        (SqlKind::Number, AttrValue::N(n)) => n.as_str().to_owned(),
        (SqlKind::Bool, AttrValue::Bool(b)) => b.to_string(),
        (SqlKind::Bytes, AttrValue::B(b)) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        (SqlKind::Json, v) => v.to_plain_json().to_string(),
        (SqlKind::TextArray, AttrValue::Ss(s)) => {
            format!(
                "{{{}}}",
                s.iter().map(|e| quote(e)).collect::<Vec<_>>().join(",")
            )
        }
        (SqlKind::NumberArray, AttrValue::Ns(s)) => {
            format!(
                "{{{}}}",
                s.iter().map(Number::as_str).collect::<Vec<_>>().join(",")
            )
        }
        (SqlKind::TextArray | SqlKind::NumberArray, AttrValue::L(items)) => {
            let mut parts = Vec::new();
            for item in items {
                parts.push(match (kind, item) {
                    (SqlKind::TextArray, AttrValue::S(s)) => quote(s),
                    (SqlKind::NumberArray, AttrValue::N(n)) => n.as_str().to_owned(),
                    (_, other) => {
                        return Err(format!(
                            "a {} element in an array column",
                            other.type_name()
                        ));
                    }
                });
            }
            format!("{{{}}}", parts.join(","))
        }
        (k, v) => return Err(format!("a {} value for a {k:?} column", v.type_name())),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(sql: &str, policy: MergePolicy, v: Value) -> Result<Option<AttrValue>, TypeError> {
        from_wal2json("c", sql, policy, &v)
    }

    #[test]
    fn every_documented_type_maps_and_writes_back_as_it_was_read() {
        let lww = MergePolicy::Lww;
        let cases: Vec<(&str, MergePolicy, Value, AttrValue)> = vec![
            ("text", lww, json!("a\"b"), AttrValue::S("a\"b".into())),
            (
                "character varying(20)",
                lww,
                json!("x"),
                AttrValue::S("x".into()),
            ),
            (
                "integer",
                lww,
                json!(42),
                AttrValue::N("42".parse().expect("n")),
            ),
            (
                "numeric(10,2)",
                lww,
                json!("12.50"),
                AttrValue::N("12.5".parse().expect("n")),
            ),
            ("boolean", lww, json!(true), AttrValue::Bool(true)),
            ("bytea", lww, json!("\\x00ff"), AttrValue::B(vec![0, 255])),
            ("bytea", lww, json!("00ff"), AttrValue::B(vec![0, 255])),
            (
                "timestamp with time zone",
                lww,
                json!("2026-11-22 04:00:00+00"),
                AttrValue::S("2026-11-22 04:00:00+00".into()),
            ),
            (
                "text[]",
                MergePolicy::Set,
                json!("{a,\"b c\"}"),
                AttrValue::Ss(["a".to_owned(), "b c".to_owned()].into()),
            ),
            (
                "integer[]",
                lww,
                json!("{3,1}"),
                AttrValue::L(vec![
                    AttrValue::N("3".parse().expect("n")),
                    AttrValue::N("1".parse().expect("n")),
                ]),
            ),
        ];
        for (sql, policy, wire, expected) in cases {
            let got = map(sql, policy, wire.clone())
                .expect("maps")
                .expect("not null");
            assert_eq!(got, expected, "{sql} {wire}");
            let kind = kind_of(sql).expect("kind");
            let text = to_sql_text(&got, kind).expect("writes back");
            let again = map(sql, policy, Value::String(text.clone()))
                .expect("re-reads")
                .expect("value");
            assert_eq!(again, expected, "{sql}: wrote {text:?}");
        }
        let json_value = map("jsonb", lww, json!("{\"a\": [1, \"x\"]}"))
            .expect("maps")
            .expect("value");
        assert_eq!(json_value.to_plain_json(), json!({"a": [1, "x"]}));
        assert_eq!(
            map("text", lww, Value::Null),
            Ok(None),
            "NULL is an absent attribute"
        );
    }

    #[test]
    fn unmappable_values_name_the_column_and_the_reason() {
        let e = map("point", MergePolicy::Lww, json!("(1,2)")).expect_err("no mapping");
        assert_eq!(
            e.to_string(),
            "column c (point): this type cannot be mapped to an attribute value"
        );
        let e = map("text[]", MergePolicy::Lww, json!("{a,NULL}")).expect_err("null element");
        assert!(e.reason.contains("NULL"), "{e}");
        let e = map("text[]", MergePolicy::Set, json!("{a,a}")).expect_err("repeated");
        assert!(e.reason.contains("repeated"), "{e}");
        assert!(parse_array("{{1},{2}}").is_err());
    }
}
