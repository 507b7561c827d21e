//! Rendering shared by the commands: JSON documents on one line, any JSON
//! document as indented `key: value` lines, and aligned tables.
//!
//! Every function returns text whose lines each end with `\n`, except the
//! one-line JSON helpers, which return the line without it.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// A JSON document received from the node, checked to be JSON and put on
/// one line: as received when it already is one line (the node's field
/// order kept), re-serialized compactly otherwise.
pub fn one_line(text: &str) -> Result<String, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    let trimmed = text.trim();
    if trimmed.contains(['\n', '\r']) {
        Ok(value.to_string())
    } else {
        Ok(trimmed.to_owned())
    }
}

/// A document replctl built itself, as one JSON line in field order.
pub fn to_line<T: Serialize>(doc: &T) -> String {
    // replctl's own documents are structs of strings, numbers and
    // string-keyed maps: serde_json cannot fail on them.
    serde_json::to_string(doc).expect("replctl's documents serialize to JSON")
}

/// Any JSON value as indented `key: value` lines, two spaces per level.
///
/// Objects nest by indentation; arrays of scalars stay on their key's line
/// as `[a, b]`; an array holding objects or arrays lists each element on
/// its own `- ` line, an object element as a block. Strings are unquoted
/// unless empty or holding control characters. Not tied to field names.
pub fn tree(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => object(&mut out, map, 0),
        Value::Array(items) if nests(items) => elements(&mut out, items, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn pad(level: usize) -> String {
    "  ".repeat(level)
}

/// An array shown as a list of blocks rather than on one line.
fn nests(items: &[Value]) -> bool {
    items
        .iter()
        .any(|item| matches!(item, Value::Object(_) | Value::Array(_)))
}

fn object(out: &mut String, map: &Map<String, Value>, level: usize) {
    for (key, value) in map {
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                let _ = writeln!(out, "{}{key}:", pad(level));
                object(out, inner, level + 1);
            }
            Value::Array(items) if nests(items) => {
                let _ = writeln!(out, "{}{key}:", pad(level));
                elements(out, items, level + 1);
            }
            other => {
                let _ = writeln!(out, "{}{key}: {}", pad(level), inline(other));
            }
        }
    }
}

fn elements(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The block is rendered one level deeper, then its first
                // line's indentation is turned into the `- ` marker.
                let mut block = String::new();
                object(&mut block, map, level + 1);
                let inner = pad(level + 1);
                let _ = write!(out, "{}- ", pad(level));
                out.push_str(block.strip_prefix(inner.as_str()).unwrap_or(&block));
            }
            other => {
                let _ = writeln!(out, "{}- {}", pad(level), inline(other));
            }
        }
    }
}

/// A value on one line: scalars bare, arrays of scalars as `[a, b]`, the
/// rest as compact JSON.
fn inline(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() || s.chars().any(char::is_control) => value.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if !nests(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// Left-aligned columns separated by two spaces, no trailing spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        let mut table = Self::default();
        table.row(header);
        table
    }

    /// A table without a header row.
    pub fn headless() -> Self {
        Self::default()
    }

    /// Appends a row; rows may have fewer cells than others.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The rows, each line ending with `\n`, every line indented by
    /// `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = " ".repeat(indent);
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let width = widths.get(c).copied().unwrap_or(0);
                line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_keeps_a_one_line_document_as_received() -> Result<(), serde_json::Error> {
        let text = "{\"z\":1, \"a\":{\"b\":[1,2]}}\n";
        assert_eq!(one_line(text)?, "{\"z\":1, \"a\":{\"b\":[1,2]}}");
        Ok(())
    }

    #[test]
    fn one_line_compacts_a_pretty_document() -> Result<(), serde_json::Error> {
        let text = "{\n  \"a\": 1,\n  \"b\": [true, null]\n}";
        assert_eq!(one_line(text)?, r#"{"a":1,"b":[true,null]}"#);
        Ok(())
    }

    #[test]
    fn one_line_refuses_what_is_not_json() {
        assert!(one_line("region: x").is_err());
        assert!(one_line("").is_err());
    }

    #[test]
    fn tree_renders_nesting_and_blocks() {
        let status = json!({
            "region": "us-east-1",
            "cluster": "prod",
            "applied": {"us-east-1": 17, "eu-west-1": 4},
            "peers": [
                {"peer": "eu-west-1", "connected": true, "lag": {"records": 0}},
                {"peer": "ap-south-1", "connected": false, "lag": {"records": 3}}
            ],
            "tables": ["carts", "users"],
            "empty": {},
            "none": [],
            "note": "",
            "uptime_seconds": 12.5,
            "leader": null
        });
        let expected = "\
applied:
  eu-west-1: 4
  us-east-1: 17
cluster: prod
empty: {}
leader: null
none: []
note: \"\"
peers:
  - connected: true
    lag:
      records: 0
    peer: eu-west-1
  - connected: false
    lag:
      records: 3
    peer: ap-south-1
region: us-east-1
tables: [carts, users]
uptime_seconds: 12.5
";
        assert_eq!(tree(&status), expected);
    }

    #[test]
    fn tree_of_a_scalar_or_a_list() {
        assert_eq!(tree(&json!(3)), "3\n");
        assert_eq!(tree(&json!([{"a": 1}, 2])), "- a: 1\n- 2\n");
        assert_eq!(tree(&json!({"s": "two\nlines"})), "s: \"two\\nlines\"\n");
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let mut table = Table::new(["PEER", "PENDING", "RATE"]);
        table.row(["eu-west-1", "0", "12.5"]);
        table.row(["ap", "12000", ""]);
        assert_eq!(
            table.render(0),
            "PEER       PENDING  RATE\neu-west-1  0        12.5\nap         12000\n"
        );
        let mut section = Table::headless();
        section.row(["a", "1"]);
        assert_eq!(section.render(2), "  a  1\n");
    }

    #[test]
    fn to_line_keeps_field_order() {
        #[derive(Serialize)]
        struct Doc {
            items: u64,
            digest: &'static str,
        }
        assert_eq!(
            to_line(&Doc {
                items: 3,
                digest: "ab"
            }),
            r#"{"items":3,"digest":"ab"}"#
        );
    }
}
