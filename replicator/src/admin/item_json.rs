//! The merged-item document of `replctl get`, and item keys in JSON.
//!
//! ```json
//! {"table":"carts","key":{"pk":"u1","sk":"c1"},"exists":true,
//!  "attributes":{"name":"x","qty":5,"tags":["a"]}}
//! ```
//!
//! Values are plain JSON (numbers as numbers when exact, sets as sorted
//! arrays, a `multi` attribute with concurrent siblings as an array of
//! them). With provenance, `"provenance":{"name":{"region":..,"hlc":..}}`
//! names the region and HLC behind each register value (a `multi`
//! attribute lists one per sibling; counters and sets, written by many
//! regions together, have none).

use serde_json::{Map, Value, json};
use tributary_engine::crdt::{AttrView, ItemState, Provenance};
use tributary_engine::ids::Hlc;
use tributary_engine::key::ItemKey;
use tributary_engine::schema::TableSchema;
use tributary_engine::value::Scalar;

/// Reads an item key given as a JSON object of the table's key attributes
/// (`{"pk":"u1","sk":"c1"}`); the error says what is missing or extra.
pub fn key_from_json(schema: &TableSchema, key: &Value) -> Result<ItemKey, String> {
    let Value::Object(fields) = key else {
        return Err(format!(
            "key: expected a JSON object of the key attributes, found {key}"
        ));
    };
    let part = |name: &str| -> Result<Scalar, String> {
        let v = fields
            .get(name)
            .ok_or_else(|| format!("key: missing key attribute {name:?}"))?;
        Scalar::from_plain_json(v).map_err(|e| format!("key.{name}: {e}"))
    };
    let pk = part(schema.partition_key().as_str())?;
    let sk = match schema.sort_key() {
        Some(sk) => Some(part(sk.as_str())?),
        None => None,
    };
    let is_key = |k: &str| {
        k == schema.partition_key().as_str() || schema.sort_key().is_some_and(|s| s.as_str() == k)
    };
    let extra: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !is_key(k))
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "key: {extra:?} are not key attributes of table {}",
            schema.name()
        ));
    }
    ItemKey::new(schema.name().clone(), pk, sk).map_err(|e| format!("key: {e}"))
}

/// The key as the JSON object operators type.
fn key_to_json(schema: &TableSchema, key: &ItemKey) -> Value {
    let mut obj = Map::new();
    obj.insert(
        schema.partition_key().as_str().to_owned(),
        key.partition().clone().into_value().to_plain_json(),
    );
    if let (Some(name), Some(sk)) = (schema.sort_key(), key.sort()) {
        obj.insert(
            name.as_str().to_owned(),
            sk.clone().into_value().to_plain_json(),
        );
    }
    Value::Object(obj)
}

fn provenance_json(p: &Provenance) -> Value {
    json!({"region": p.region.as_str(), "hlc": hlc_text(p.hlc)})
}

/// An HLC as operators read it: `<unix millis>.<logical>`.
pub fn hlc_text(hlc: Hlc) -> String {
    format!("{}.{}", hlc.millis(), hlc.logical())
}

/// The document for `key` in state `state` (`None`: never written here).
pub fn item_document(
    schema: &TableSchema,
    key: &ItemKey,
    state: Option<&ItemState>,
    provenance: bool,
) -> Value {
    let view = state.and_then(ItemState::view);
    let mut attributes = Map::new();
    let mut origins = Map::new();
    for (name, v) in view.iter().flatten() {
        let name = name.as_str().to_owned();
        match v {
            AttrView::Value { value, provenance } => {
                attributes.insert(name.clone(), value.to_plain_json());
                if let Some(p) = provenance {
                    origins.insert(name, provenance_json(p));
                }
            }
            AttrView::Siblings(siblings) => {
                attributes.insert(
                    name.clone(),
                    Value::Array(siblings.iter().map(|(v, _)| v.to_plain_json()).collect()),
                );
                origins.insert(
                    name,
                    Value::Array(siblings.iter().map(|(_, p)| provenance_json(p)).collect()),
                );
            }
        }
    }
    let mut doc = json!({
        "table": schema.name().as_str(),
        "key": key_to_json(schema, key),
        "exists": view.is_some(),
        "attributes": attributes,
    });
    if provenance && let Some(obj) = doc.as_object_mut() {
        obj.insert("provenance".to_owned(), Value::Object(origins));
    }
    doc
}
