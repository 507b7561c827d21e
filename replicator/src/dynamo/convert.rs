//! The edge between the engine's types and the AWS SDK's: attribute values
//! both ways, item keys, and the expressions of the sink's `UpdateItem` and
//! `DeleteItem` calls. Nothing past this module sees an SDK type.
//!
//! Invariants kept here:
//! - `from_sdk(&to_sdk(v)) == v` for every valid value (tested);
//! - [`from_sdk`] accepts only what DynamoDB itself can hold (valid numbers,
//!   non-empty duplicate-free sets, `NULL` true, nesting within
//!   [`MAX_NESTING_DEPTH`]) and names the path of the first problem;
//! - expressions never contain an attribute name, only placeholders (`#m`
//!   for the marker, `#n0`, `#n1`, … for attributes, `:token`, `:prev`,
//!   `:v0`, `:v1`, … for values), since names may be reserved words; every
//!   placeholder in `names` and `values` is used (DynamoDB refuses unused
//!   ones), and each attribute has one name placeholder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use tributary_engine::key::ItemKey;
use tributary_engine::schema::TableSchema;
use tributary_engine::value::{AttrValue, MAX_NESTING_DEPTH, Number, Scalar, ValueError};

use super::plan::Update;

/// The path of a value converted on its own.
const ROOT: &str = "$";
/// The marker attribute's name placeholder.
const MARKER: &str = "#m";
/// The placeholder of the marker's new token.
const TOKEN: &str = ":token";
/// The placeholder of the marker's expected (image) value.
const PREV: &str = ":prev";

/// Why a value read from DynamoDB cannot become an engine value. Every
/// variant is about the data: reading it again gives the same answer, so
/// the caller gives up on this item (dead-letters it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A type this SDK build does not know (DynamoDB added one).
    #[error("{path}: attribute value of a type this build does not know")]
    UnknownType {
        /// Where the value is, e.g. `tags[3].name`.
        path: String,
    },
    /// A number (N, or an NS element) that is not a valid DynamoDB number.
    #[error("{path}: {error}")]
    Number {
        /// Where the number is.
        path: String,
        /// What is wrong with it.
        error: ValueError,
    },
    /// `NULL` with the value false, which DynamoDB never holds.
    #[error("{path}: a NULL value must be true")]
    NullNotTrue {
        /// Where the value is.
        path: String,
    },
    /// An SS, NS or BS with no elements.
    #[error("{path}: a set must have at least one element")]
    EmptySet {
        /// Where the set is.
        path: String,
    },
    /// An SS, NS or BS holding one element twice (for NS: numerically).
    #[error("{path}: duplicate element in {set}")]
    DuplicateElement {
        /// The duplicate element.
        path: String,
        /// `"SS"`, `"NS"` or `"BS"`.
        set: &'static str,
    },
    /// Lists and maps nested deeper than [`MAX_NESTING_DEPTH`].
    #[error("{path}: lists and maps nest deeper than {max} levels")]
    TooDeep {
        /// The container at the first level too deep.
        path: String,
        /// The limit.
        max: usize,
    },
}

/// `path[i]`.
fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `path.key`.
fn key_path(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// The SDK value for an engine value.
pub fn to_sdk(v: &AttrValue) -> AttributeValue {
    match v {
        AttrValue::S(s) => AttributeValue::S(s.clone()),
        AttrValue::N(n) => AttributeValue::N(n.as_str().to_owned()),
        AttrValue::B(b) => AttributeValue::B(Blob::new(b.clone())),
        AttrValue::Bool(b) => AttributeValue::Bool(*b),
        AttrValue::Null => AttributeValue::Null(true),
        AttrValue::L(items) => AttributeValue::L(items.iter().map(to_sdk).collect()),
        AttrValue::M(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect())
        }
        AttrValue::Ss(s) => AttributeValue::Ss(s.iter().cloned().collect()),
        AttrValue::Ns(s) => AttributeValue::Ns(s.iter().map(|n| n.as_str().to_owned()).collect()),
        AttrValue::Bs(s) => AttributeValue::Bs(s.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

/// The SDK value for a key value.
fn scalar_to_sdk(v: &Scalar) -> AttributeValue {
    match v {
        Scalar::S(s) => AttributeValue::S(s.clone()),
        Scalar::N(n) => AttributeValue::N(n.as_str().to_owned()),
        Scalar::B(b) => AttributeValue::B(Blob::new(b.clone())),
    }
}

/// The engine value for an SDK value, validated; error paths start at `$`.
pub fn from_sdk(v: &AttributeValue) -> Result<AttrValue, ConvertError> {
    decode(v, ROOT, 0)
}

/// An item as read from DynamoDB (`GetItem`'s `item`), attribute by
/// attribute; error paths start at the attribute name. Key attributes and
/// the sink's marker are kept: removing them to make the sink's image is the
/// caller's job.
pub fn image_from_sdk(
    item: &HashMap<String, AttributeValue>,
) -> Result<BTreeMap<String, AttrValue>, ConvertError> {
    item.iter()
        .map(|(name, v)| Ok((name.clone(), decode(v, name, 0)?)))
        .collect()
}

/// The `Key` of an item for `GetItem`, `UpdateItem` and `DeleteItem`:
/// the partition key value under the schema's partition key name, and the
/// sort key value under the sort key name.
///
/// `key` must belong to the table `schema` describes: a sort key value is
/// only included when the schema has a sort key (and DynamoDB refuses a key
/// lacking the sort key value its table requires).
pub fn key_to_sdk(schema: &TableSchema, key: &ItemKey) -> HashMap<String, AttributeValue> {
    let mut out = HashMap::with_capacity(2);
    out.insert(
        schema.partition_key().to_string(),
        scalar_to_sdk(key.partition()),
    );
    if let (Some(name), Some(sort)) = (schema.sort_key(), key.sort()) {
        out.insert(name.to_string(), scalar_to_sdk(sort));
    }
    out
}

fn decode(v: &AttributeValue, path: &str, depth: usize) -> Result<AttrValue, ConvertError> {
    let value = match v {
        AttributeValue::S(s) => AttrValue::S(s.clone()),
        AttributeValue::N(n) => AttrValue::N(number(n, path)?),
        AttributeValue::B(b) => AttrValue::B(b.as_ref().to_vec()),
        AttributeValue::Bool(b) => AttrValue::Bool(*b),
        AttributeValue::Null(true) => AttrValue::Null,
        AttributeValue::Null(false) => {
            return Err(ConvertError::NullNotTrue {
                path: path.to_owned(),
            });
        }
        AttributeValue::L(items) => {
            check_depth(path, depth + 1)?;
            AttrValue::L(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| decode(item, &index_path(path, i), depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        AttributeValue::M(map) => {
            check_depth(path, depth + 1)?;
            AttrValue::M(
                map.iter()
                    .map(|(k, item)| Ok((k.clone(), decode(item, &key_path(path, k), depth + 1)?)))
                    .collect::<Result<_, ConvertError>>()?,
            )
        }
        AttributeValue::Ss(s) => AttrValue::Ss(set(s, path, "SS", |e, _| Ok(e.clone()))?),
        AttributeValue::Ns(s) => AttrValue::Ns(set(s, path, "NS", |e, p| number(e, p))?),
        AttributeValue::Bs(s) => AttrValue::Bs(set(s, path, "BS", |e, _| Ok(e.as_ref().to_vec()))?),
        _ => {
            return Err(ConvertError::UnknownType {
                path: path.to_owned(),
            });
        }
    };
    Ok(value)
}

fn number(text: &str, path: &str) -> Result<Number, ConvertError> {
    text.parse().map_err(|error| ConvertError::Number {
        path: path.to_owned(),
        error,
    })
}

fn check_depth(path: &str, depth: usize) -> Result<(), ConvertError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(ConvertError::TooDeep {
            path: path.to_owned(),
            max: MAX_NESTING_DEPTH,
        });
    }
    Ok(())
}

/// The elements of an SS/NS/BS, refusing an empty set and duplicates (as
/// DynamoDB does).
fn set<E, T: Ord>(
    elements: &[E],
    path: &str,
    tag: &'static str,
    element: impl Fn(&E, &str) -> Result<T, ConvertError>,
) -> Result<BTreeSet<T>, ConvertError> {
    if elements.is_empty() {
        return Err(ConvertError::EmptySet {
            path: path.to_owned(),
        });
    }
    let mut out = BTreeSet::new();
    for (i, e) in elements.iter().enumerate() {
        let p = index_path(path, i);
        if !out.insert(element(e, &p)?) {
            return Err(ConvertError::DuplicateElement { path: p, set: tag });
        }
    }
    Ok(out)
}

/// The expressions of one sink call, with their placeholders: pass
/// `update` as `UpdateExpression` (absent for `DeleteItem`), `condition` as
/// `ConditionExpression`, `names` as `ExpressionAttributeNames` and `values`
/// as `ExpressionAttributeValues` (omit the latter when empty: DynamoDB
/// refuses an empty map).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// The update expression (`SET … REMOVE … ADD … DELETE …`); `None` for a
    /// delete.
    pub update: Option<String>,
    /// The condition expression; never empty (the marker is always checked).
    pub condition: String,
    /// Name placeholder (`#m`, `#n0`, …) → attribute name.
    pub names: HashMap<String, String>,
    /// Value placeholder (`:token`, `:prev`, `:v0`, …) → value.
    pub values: HashMap<String, AttributeValue>,
}

/// Hands out placeholders: one name placeholder per attribute, a fresh
/// value placeholder per use.
struct Placeholders {
    names: HashMap<String, String>,
    by_attr: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    next_value: usize,
}

impl Placeholders {
    /// Placeholders with `#m` standing for the marker.
    fn new(marker: &str) -> Self {
        Self {
            names: HashMap::from([(MARKER.to_owned(), marker.to_owned())]),
            by_attr: HashMap::new(),
            values: HashMap::new(),
            next_value: 0,
        }
    }

    fn name(&mut self, attr: &str) -> String {
        if let Some(p) = self.by_attr.get(attr) {
            return p.clone();
        }
        let p = format!("#n{}", self.by_attr.len());
        self.by_attr.insert(attr.to_owned(), p.clone());
        self.names.insert(p.clone(), attr.to_owned());
        p
    }

    fn value(&mut self, v: &AttrValue) -> String {
        let p = format!(":v{}", self.next_value);
        self.next_value += 1;
        self.values.insert(p.clone(), to_sdk(v));
        p
    }

    /// `attribute_not_exists(#m)`, or `#m = :prev`.
    fn marker_condition(&mut self, marker_prev: Option<&AttrValue>) -> String {
        match marker_prev {
            None => format!("attribute_not_exists({MARKER})"),
            Some(prev) => {
                self.values.insert(PREV.to_owned(), to_sdk(prev));
                format!("{MARKER} = {PREV}")
            }
        }
    }

    /// `#a = :v`, or `attribute_not_exists(#a)`.
    fn expect(&mut self, attr: &str, value: Option<&AttrValue>) -> String {
        let name = self.name(attr);
        match value {
            None => format!("attribute_not_exists({name})"),
            Some(v) => format!("{name} = {}", self.value(v)),
        }
    }

    fn finish(self, update: Option<String>, condition: String) -> Expression {
        Expression {
            update,
            condition,
            names: self.names,
            values: self.values,
        }
    }
}

/// Appends ` KEYWORD a, b, …` unless `parts` is empty.
fn clause(out: &mut String, keyword: &str, parts: &[String]) {
    if !parts.is_empty() {
        // Writing to a String cannot fail.
        let _ = write!(out, " {keyword} {}", parts.join(", "));
    }
}

/// The `UpdateItem` expressions for a planned [`Update`]: its actions plus
/// `SET #m = :token` (the marker takes `token`, as an N), on the condition
/// `attribute_not_exists(#m)` (no `marker_prev`) or `#m = :prev`, AND-ed
/// with each of the update's expectations (`#a = :v` or
/// `attribute_not_exists(#a)`).
///
/// Placeholders are numbered in order of appearance: `SET`, `REMOVE`,
/// `ADD`, `DELETE`, then the condition. The update must not act on the
/// marker attribute itself (the image it was planned from has the marker
/// removed); if it did, DynamoDB would refuse the overlapping paths.
pub fn update_expression(
    update: &Update,
    marker: &str,
    marker_prev: Option<&AttrValue>,
    token: u64,
) -> Expression {
    let mut p = Placeholders::new(marker);
    p.values
        .insert(TOKEN.to_owned(), AttributeValue::N(token.to_string()));

    let mut set = vec![format!("{MARKER} = {TOKEN}")];
    for (attr, v) in &update.set {
        let name = p.name(attr.as_str());
        set.push(format!("{name} = {}", p.value(v)));
    }
    let remove: Vec<String> = update.remove.iter().map(|a| p.name(a.as_str())).collect();
    let add: Vec<String> = update
        .add
        .iter()
        .map(|(attr, v)| format!("{} {}", p.name(attr.as_str()), p.value(v)))
        .collect();
    let delete: Vec<String> = update
        .delete
        .iter()
        .map(|(attr, v)| format!("{} {}", p.name(attr.as_str()), p.value(v)))
        .collect();
    let mut expression = format!("SET {}", set.join(", "));
    clause(&mut expression, "REMOVE", &remove);
    clause(&mut expression, "ADD", &add);
    clause(&mut expression, "DELETE", &delete);

    let mut condition = vec![p.marker_condition(marker_prev)];
    for (attr, v) in &update.expect {
        condition.push(p.expect(attr.as_str(), v.as_ref()));
    }
    p.finish(Some(expression), condition.join(" AND "))
}

/// The `DeleteItem` condition: `attribute_not_exists(#m)` (no
/// `marker_prev`) or `#m = :prev`, so that a delete planned from a stale
/// image, or retried after it landed and the item was written again, does
/// not apply.
pub fn delete_condition(marker: &str, marker_prev: Option<&AttrValue>) -> Expression {
    let mut p = Placeholders::new(marker);
    let condition = p.marker_condition(marker_prev);
    p.finish(None, condition)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use tributary_engine::ids::{AttrName, TableName};

    fn a(s: &str) -> AttrName {
        AttrName::new(s).expect("valid attribute name")
    }

    fn n(v: i128) -> AttrValue {
        AttrValue::N(Number::from_i128(v))
    }

    fn s(v: &str) -> AttrValue {
        AttrValue::S(v.to_owned())
    }

    fn sdk_n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_owned())
    }

    fn sdk_s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn nested() -> AttrValue {
        AttrValue::M(BTreeMap::from([
            ("name".to_owned(), s("cart")),
            (
                "qty".to_owned(),
                AttrValue::N("-12.5".parse().expect("number")),
            ),
            ("blob".to_owned(), AttrValue::B(vec![0, 255])),
            ("ok".to_owned(), AttrValue::Bool(true)),
            ("none".to_owned(), AttrValue::Null),
            (
                "items".to_owned(),
                AttrValue::L(vec![
                    AttrValue::M(BTreeMap::from([("sku".to_owned(), s("a1"))])),
                    AttrValue::L(vec![]),
                    AttrValue::Ss(["x".to_owned(), "y".to_owned()].into()),
                ]),
            ),
            (
                "ns".to_owned(),
                AttrValue::Ns([Number::from_i128(1), "1.5E+40".parse().expect("number")].into()),
            ),
            ("bs".to_owned(), AttrValue::Bs([vec![1], vec![2, 3]].into())),
        ]))
    }

    #[test]
    fn values_round_trip_through_the_sdk() {
        let v = nested();
        let sdk = to_sdk(&v);
        assert_eq!(from_sdk(&sdk), Ok(v));
        let AttributeValue::M(map) = &sdk else {
            panic!("a map: {sdk:?}");
        };
        assert_eq!(map.get("qty"), Some(&sdk_n("-12.5")));
        assert_eq!(map.get("none"), Some(&AttributeValue::Null(true)));
        assert_eq!(
            map.get("ns"),
            Some(&AttributeValue::Ns(vec!["1".into(), "1.5E+40".into()]))
        );
    }

    #[test]
    fn numbers_from_dynamodb_are_made_canonical() {
        assert_eq!(
            from_sdk(&sdk_n("1.50")),
            Ok(AttrValue::N("1.5".parse().expect("number")))
        );
        assert_eq!(from_sdk(&sdk_n("007")), Ok(n(7)));
    }

    #[test]
    fn what_dynamodb_cannot_hold_is_refused_with_its_path() {
        let err =
            from_sdk(&AttributeValue::L(vec![sdk_s("x"), sdk_n("abc")])).expect_err("bad number");
        assert!(
            matches!(err, ConvertError::Number { ref path, .. } if path == "$[1]"),
            "{err:?}"
        );
        assert_eq!(
            from_sdk(&AttributeValue::Null(false)),
            Err(ConvertError::NullNotTrue { path: "$".into() })
        );
        assert_eq!(
            from_sdk(&AttributeValue::Ss(vec![])),
            Err(ConvertError::EmptySet { path: "$".into() })
        );
        assert_eq!(
            from_sdk(&AttributeValue::Ns(vec!["1".into(), "1.0".into()])),
            Err(ConvertError::DuplicateElement {
                path: "$[1]".into(),
                set: "NS"
            })
        );
        let err =
            from_sdk(&AttributeValue::Ns(vec!["1".into(), "x".into()])).expect_err("bad element");
        assert!(
            matches!(err, ConvertError::Number { ref path, .. } if path == "$[1]"),
            "{err:?}"
        );
        let mut deep = sdk_s("leaf");
        for _ in 0..=MAX_NESTING_DEPTH {
            deep = AttributeValue::L(vec![deep]);
        }
        let err = from_sdk(&deep).expect_err("too deep");
        assert!(
            matches!(
                err,
                ConvertError::TooDeep {
                    max: MAX_NESTING_DEPTH,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut ok = sdk_s("leaf");
        for _ in 0..MAX_NESTING_DEPTH {
            ok = AttributeValue::L(vec![ok]);
        }
        assert!(from_sdk(&ok).is_ok());
    }

    #[test]
    fn images_convert_attribute_by_attribute_and_name_the_attribute_in_errors() {
        let item = HashMap::from([
            ("pk".to_owned(), sdk_s("u1")),
            ("qty".to_owned(), sdk_n("3")),
            ("tributary_sink".to_owned(), sdk_n("41")),
        ]);
        let image = image_from_sdk(&item).expect("valid item");
        assert_eq!(
            image,
            BTreeMap::from([
                ("pk".to_owned(), s("u1")),
                ("qty".to_owned(), n(3)),
                ("tributary_sink".to_owned(), n(41)),
            ])
        );
        let bad = HashMap::from([(
            "tags".to_owned(),
            AttributeValue::M(HashMap::from([(
                "k".to_owned(),
                AttributeValue::Bs(vec![]),
            )])),
        )]);
        let err = image_from_sdk(&bad).expect_err("empty set");
        assert_eq!(
            err,
            ConvertError::EmptySet {
                path: "tags.k".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "tags.k: a set must have at least one element"
        );
    }

    #[test]
    fn keys_use_the_schema_names() {
        let table = TableName::new("carts").expect("table");
        let with_sort = TableSchema::new(table.clone(), a("pk"), Some(a("sk"))).expect("schema");
        let key = ItemKey::new(
            table.clone(),
            Scalar::S("u1".into()),
            Some(Scalar::N(Number::from_i128(7))),
        )
        .expect("key");
        assert_eq!(
            key_to_sdk(&with_sort, &key),
            HashMap::from([
                ("pk".to_owned(), sdk_s("u1")),
                ("sk".to_owned(), sdk_n("7"))
            ])
        );
        let no_sort = TableSchema::new(table.clone(), a("id"), None).expect("schema");
        let key = ItemKey::new(table, Scalar::B(vec![1, 2]), None).expect("key");
        assert_eq!(
            key_to_sdk(&no_sort, &key),
            HashMap::from([("id".to_owned(), AttributeValue::B(Blob::new(vec![1, 2])))])
        );
    }

    fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn values(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn an_update_creating_an_item_only_sets_the_marker() {
        let e = update_expression(&Update::default(), "tributary_sink", None, 7);
        assert_eq!(
            e,
            Expression {
                update: Some("SET #m = :token".into()),
                condition: "attribute_not_exists(#m)".into(),
                names: names(&[("#m", "tributary_sink")]),
                values: values(&[(":token", sdk_n("7"))]),
            }
        );
    }

    #[test]
    fn an_update_with_every_action_and_condition() {
        // Attribute names that are DynamoDB reserved words.
        let update = Update {
            set: vec![(a("name"), s("new")), (a("size"), n(2))],
            remove: vec![a("status")],
            add: vec![
                (a("count"), n(3)),
                (a("tags"), AttrValue::Ss(["b".to_owned()].into())),
            ],
            delete: vec![(a("set"), AttrValue::Ns([Number::from_i128(1)].into()))],
            expect: vec![
                (a("name"), Some(s("old"))),
                (a("size"), None),
                (a("status"), Some(AttrValue::Bool(false))),
            ],
        };
        let e = update_expression(&update, "tributary_sink", Some(&n(6)), 7);
        assert_eq!(
            e.update.as_deref(),
            Some(
                "SET #m = :token, #n0 = :v0, #n1 = :v1 REMOVE #n2 ADD #n3 :v2, #n4 :v3 DELETE #n5 :v4"
            )
        );
        assert_eq!(
            e.condition,
            "#m = :prev AND #n0 = :v5 AND attribute_not_exists(#n1) AND #n2 = :v6"
        );
        assert_eq!(
            e.names,
            names(&[
                ("#m", "tributary_sink"),
                ("#n0", "name"),
                ("#n1", "size"),
                ("#n2", "status"),
                ("#n3", "count"),
                ("#n4", "tags"),
                ("#n5", "set"),
            ])
        );
        assert_eq!(
            e.values,
            values(&[
                (":token", sdk_n("7")),
                (":prev", sdk_n("6")),
                (":v0", sdk_s("new")),
                (":v1", sdk_n("2")),
                (":v2", sdk_n("3")),
                (":v3", AttributeValue::Ss(vec!["b".into()])),
                (":v4", AttributeValue::Ns(vec!["1".into()])),
                (":v5", sdk_s("old")),
                (":v6", AttributeValue::Bool(false)),
            ])
        );
    }

    #[test]
    fn an_update_that_only_removes_on_condition() {
        let update = Update {
            remove: vec![a("qty")],
            expect: vec![(a("qty"), Some(n(3)))],
            ..Update::default()
        };
        let e = update_expression(&update, "m", None, 1);
        assert_eq!(e.update.as_deref(), Some("SET #m = :token REMOVE #n0"));
        assert_eq!(e.condition, "attribute_not_exists(#m) AND #n0 = :v0");
        assert_eq!(e.names, names(&[("#m", "m"), ("#n0", "qty")]));
        assert_eq!(
            e.values,
            values(&[(":token", sdk_n("1")), (":v0", sdk_n("3"))])
        );
    }

    #[test]
    fn a_delete_checks_only_the_marker() {
        assert_eq!(
            delete_condition("tributary_sink", None),
            Expression {
                update: None,
                condition: "attribute_not_exists(#m)".into(),
                names: names(&[("#m", "tributary_sink")]),
                values: HashMap::new(),
            }
        );
        assert_eq!(
            delete_condition("tributary_sink", Some(&n(41))),
            Expression {
                update: None,
                condition: "#m = :prev".into(),
                names: names(&[("#m", "tributary_sink")]),
                values: values(&[(":prev", sdk_n("41"))]),
            }
        );
    }

    /// Every placeholder in the text, in order: `#…` and `:…` tokens.
    fn placeholders(text: &str) -> Vec<String> {
        text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
            .filter(|t| t.starts_with('#') || t.starts_with(':'))
            .map(str::to_owned)
            .collect()
    }

    fn scalar() -> impl Strategy<Value = AttrValue> {
        prop_oneof![
            ".{0,4}".prop_map(AttrValue::S),
            any::<i64>().prop_map(|v| n(i128::from(v))),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(AttrValue::B),
            any::<bool>().prop_map(AttrValue::Bool),
            Just(AttrValue::Null),
            prop::collection::btree_set(".{0,3}", 1..4).prop_map(AttrValue::Ss),
            prop::collection::btree_set(
                any::<i32>().prop_map(|v| Number::from_i128(i128::from(v))),
                1..4
            )
            .prop_map(AttrValue::Ns),
            prop::collection::btree_set(prop::collection::vec(any::<u8>(), 0..3), 1..4)
                .prop_map(AttrValue::Bs),
        ]
    }

    fn value() -> impl Strategy<Value = AttrValue> {
        scalar().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(AttrValue::L),
                prop::collection::btree_map(".{0,3}", inner, 0..4).prop_map(AttrValue::M),
            ]
        })
    }

    fn update() -> impl Strategy<Value = Update> {
        let attr = || prop::sample::select(vec!["a", "b", "c", "name"]).prop_map(a);
        let pairs = || prop::collection::vec((attr(), scalar()), 0..3);
        (
            pairs(),
            prop::collection::vec(attr(), 0..3),
            pairs(),
            pairs(),
            prop::collection::vec((attr(), prop::option::of(scalar())), 0..3),
        )
            .prop_map(|(set, remove, add, delete, expect)| Update {
                set,
                remove,
                add,
                delete,
                expect,
            })
    }

    proptest! {
        #[test]
        fn any_value_round_trips(v in value()) {
            prop_assert_eq!(from_sdk(&to_sdk(&v)), Ok(v));
        }

        #[test]
        fn expressions_use_exactly_the_placeholders_they_define(
            update in update(),
            prev in prop::option::of(scalar()),
            token in any::<u64>(),
        ) {
            let e = update_expression(&update, "tributary_sink", prev.as_ref(), token);
            let text = format!("{} {}", e.update.as_deref().unwrap_or_default(), e.condition);
            let used: BTreeSet<String> = placeholders(&text).into_iter().collect();
            let defined: BTreeSet<String> = e.names.keys().chain(e.values.keys()).cloned().collect();
            prop_assert_eq!(used, defined);
            // One name placeholder per attribute.
            let attrs: BTreeSet<&String> = e.names.values().collect();
            prop_assert_eq!(attrs.len(), e.names.len());
            prop_assert_eq!(e.values.get(TOKEN), Some(&AttributeValue::N(token.to_string())));
        }
    }
}
