//! The readable form of `replctl get`: the item document the node returns,
//! `{"table":..,"key":{..},"exists":..,"attributes":{..},"provenance":{..}}`,
//! as lines.
//!
//! Only `attributes` and `provenance` are interpreted, and only as objects;
//! the values are shown as compact JSON so that `5` and `"5"` stay apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// The item as lines:
///
/// ```text
/// carts {"pk":"u1","sk":"c1"}
/// exists: true
///   name = "x"
///   qty = 5
/// provenance:
///   name = {"hlc":"…","region":"us-east-1"}
/// ```
///
/// Attributes and provenance entries are sorted by name. `table` and `key`
/// are what was asked for, shown when the document lacks them.
pub fn render(item_json: &str, table: &str, key: &str) -> Result<String, serde_json::Error> {
    let doc: Value = serde_json::from_str(item_json)?;
    let mut out = String::new();

    let table = doc.get("table").and_then(Value::as_str).unwrap_or(table);
    let key = match doc.get("key") {
        Some(value) => value.to_string(),
        None => key.to_owned(),
    };
    let _ = writeln!(out, "{table} {key}");

    let exists = match doc.get("exists") {
        Some(Value::Bool(exists)) => exists.to_string(),
        Some(other) => other.to_string(),
        None => "unknown".to_owned(),
    };
    let _ = writeln!(out, "exists: {exists}");
    entries(&mut out, doc.get("attributes"));

    if let Some(Value::Object(provenance)) = doc.get("provenance")
        && !provenance.is_empty()
    {
        out.push_str("provenance:\n");
        entries(&mut out, doc.get("provenance"));
    }
    Ok(out)
}

/// `  name = value-json` per entry of an object, sorted by name.
fn entries(out: &mut String, object: Option<&Value>) {
    let Some(Value::Object(map)) = object else {
        return;
    };
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    for (name, value) in sorted {
        let _ = writeln!(out, "  {name} = {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_item_lists_its_attributes_sorted() -> Result<(), serde_json::Error> {
        let doc = r#"{"table":"carts","key":{"pk":"u1","sk":"c1"},"exists":true,
            "attributes":{"tags":["a"],"name":"x","qty":5}}"#;
        assert_eq!(
            render(doc, "ignored", "{}")?,
            "carts {\"pk\":\"u1\",\"sk\":\"c1\"}\nexists: true\n  name = \"x\"\n  qty = 5\n  tags = [\"a\"]\n"
        );
        Ok(())
    }

    #[test]
    fn provenance_follows_when_present() -> Result<(), serde_json::Error> {
        let doc = r#"{"table":"carts","key":{"pk":"u1"},"exists":true,
            "attributes":{"name":"x"},
            "provenance":{"name":{"region":"us-east-1","hlc":"7"}}}"#;
        let text = render(doc, "carts", "{}")?;
        assert!(
            text.ends_with(
                "  name = \"x\"\nprovenance:\n  name = {\"hlc\":\"7\",\"region\":\"us-east-1\"}\n"
            ),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn a_missing_item_says_so_and_falls_back_to_the_request() -> Result<(), serde_json::Error> {
        let text = render(r#"{"exists":false}"#, "carts", r#"{"pk":"u9"}"#)?;
        assert_eq!(text, "carts {\"pk\":\"u9\"}\nexists: false\n");
        Ok(())
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(render("<html>", "carts", "{}").is_err());
    }
}
