//! JSON forms of attribute values: DynamoDB's typed wire format
//! (`{"S": "x"}`, `{"N": "1.5"}`, …) as found in stream records and SDK
//! payloads, and plain JSON as typed by operators.
//!
//! Decoders validate as they go (numbers, non-empty and duplicate-free sets,
//! nesting depth) and report the path of the first problem. Binary values are
//! standard base64 in both formats.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use super::{AttrValue, Number, Scalar, ValueError, check_depth, index_path, key_path};

/// The path used for a value decoded on its own.
const ROOT: &str = "$";

fn bad(path: &str, reason: impl Into<String>) -> ValueError {
    ValueError::BadDynamoJson {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expect_str<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a str, ValueError> {
    v.as_str().ok_or_else(|| {
        bad(
            path,
            format!("{what} must be a JSON string, found {}", json_type(v)),
        )
    })
}

fn expect_array<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a [Value], ValueError> {
    v.as_array().map(Vec::as_slice).ok_or_else(|| {
        bad(
            path,
            format!("{what} must be a JSON array, found {}", json_type(v)),
        )
    })
}

fn decode_number(v: &Value, path: &str) -> Result<Number, ValueError> {
    expect_str(v, path, "an N value")?
        .parse()
        .map_err(|e: ValueError| e.at(path))
}

fn decode_binary(v: &Value, path: &str) -> Result<Vec<u8>, ValueError> {
    BASE64
        .decode(expect_str(v, path, "a B value")?)
        .map_err(|e| bad(path, format!("invalid base64: {e}")))
}

/// Decodes the elements of an SS/NS/BS array, refusing an empty set and
/// duplicates (as DynamoDB does).
fn decode_set<T: Ord>(
    body: &Value,
    path: &str,
    tag: &str,
    element: impl Fn(&Value, &str) -> Result<T, ValueError>,
) -> Result<BTreeSet<T>, ValueError> {
    let items = expect_array(body, path, tag)?;
    if items.is_empty() {
        return Err(ValueError::EmptySet {
            path: path.to_owned(),
        });
    }
    let mut set = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = index_path(path, i);
        if !set.insert(element(item, &p)?) {
            return Err(bad(&p, format!("duplicate element in {tag}")));
        }
    }
    Ok(set)
}

fn decode_dynamo(v: &Value, path: &str, depth: usize) -> Result<AttrValue, ValueError> {
    let Value::Object(obj) = v else {
        return Err(bad(
            path,
            format!(
                "expected an object with one type key such as {{\"S\": \"x\"}}, found {}",
                json_type(v)
            ),
        ));
    };
    let mut entries = obj.iter();
    let (Some((tag, body)), None) = (entries.next(), entries.next()) else {
        return Err(bad(
            path,
            format!("expected exactly one type key, found {}", obj.len()),
        ));
    };
    let value = match tag.as_str() {
        "S" => AttrValue::S(expect_str(body, path, "an S value")?.to_owned()),
        "N" => AttrValue::N(decode_number(body, path)?),
        "B" => AttrValue::B(decode_binary(body, path)?),
        "BOOL" => AttrValue::Bool(
            body.as_bool()
                .ok_or_else(|| bad(path, "a BOOL value must be true or false"))?,
        ),
        "NULL" => match body {
            Value::Bool(true) => AttrValue::Null,
            _ => return Err(bad(path, "a NULL value must be true")),
        },
        "L" => {
            check_depth(path, depth + 1)?;
            let items = expect_array(body, path, "an L value")?;
            AttrValue::L(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| decode_dynamo(item, &index_path(path, i), depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        "M" => {
            check_depth(path, depth + 1)?;
            let Value::Object(map) = body else {
                return Err(bad(
                    path,
                    format!(
                        "an M value must be a JSON object, found {}",
                        json_type(body)
                    ),
                ));
            };
            AttrValue::M(
                map.iter()
                    .map(|(k, item)| {
                        Ok((
                            k.clone(),
                            decode_dynamo(item, &key_path(path, k), depth + 1)?,
                        ))
                    })
                    .collect::<Result<_, ValueError>>()?,
            )
        }
        "SS" => AttrValue::Ss(decode_set(body, path, "SS", |e, p| {
            Ok(expect_str(e, p, "an SS element")?.to_owned())
        })?),
        "NS" => AttrValue::Ns(decode_set(body, path, "NS", decode_number)?),
        "BS" => AttrValue::Bs(decode_set(body, path, "BS", decode_binary)?),
        other => {
            return Err(bad(
                path,
                format!(
                    "unknown type {other:?} (expected S, N, B, BOOL, NULL, L, M, SS, NS or BS)"
                ),
            ));
        }
    };
    Ok(value)
}

/// Decodes an item image: a JSON object of attribute name → typed value, as
/// in `NewImage`/`OldImage` of a stream record. Errors name the attribute
/// path (e.g. `tags[3].name`).
pub fn image_from_dynamodb_json(v: &Value) -> Result<BTreeMap<String, AttrValue>, ValueError> {
    let Value::Object(obj) = v else {
        return Err(bad(
            ROOT,
            format!(
                "an item image must be an object of attribute name to typed value, found {}",
                json_type(v)
            ),
        ));
    };
    obj.iter()
        .map(|(name, value)| Ok((name.clone(), decode_dynamo(value, name, 0)?)))
        .collect()
}

fn decode_plain(v: &Value, path: &str, depth: usize) -> Result<AttrValue, ValueError> {
    Ok(match v {
        Value::Null => AttrValue::Null,
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::String(s) => AttrValue::S(s.clone()),
        Value::Number(n) => AttrValue::N(plain_number(n, path)?),
        Value::Array(items) => {
            check_depth(path, depth + 1)?;
            AttrValue::L(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| decode_plain(item, &index_path(path, i), depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Object(map) => {
            check_depth(path, depth + 1)?;
            AttrValue::M(
                map.iter()
                    .map(|(k, item)| {
                        Ok((
                            k.clone(),
                            decode_plain(item, &key_path(path, k), depth + 1)?,
                        ))
                    })
                    .collect::<Result<_, ValueError>>()?,
            )
        }
    })
}

fn plain_number(n: &serde_json::Number, path: &str) -> Result<Number, ValueError> {
    n.to_string().parse().map_err(|e: ValueError| e.at(path))
}

/// A number as a JSON number when reading that JSON number back gives the
/// same value, otherwise as a JSON string of the canonical text.
fn number_to_plain(n: &Number) -> Value {
    if let Some(i) = n.to_i128() {
        if let Ok(v) = i64::try_from(i) {
            return Value::from(v);
        }
        if let Ok(v) = u64::try_from(i) {
            return Value::from(v);
        }
    }
    if let Ok(f) = n.as_str().parse::<f64>()
        && let Some(j) = serde_json::Number::from_f64(f)
        && j.to_string().parse::<Number>().ok().as_ref() == Some(n)
    {
        return Value::Number(j);
    }
    Value::String(n.as_str().to_owned())
}

impl AttrValue {
    /// Decodes DynamoDB's typed JSON (`{"S":"x"}`, `{"N":"1.5"}`,
    /// `{"B":"<base64>"}`, `{"BOOL":true}`, `{"NULL":true}`, `{"L":[…]}`,
    /// `{"M":{…}}`, `{"SS":[…]}`, `{"NS":[…]}`, `{"BS":[…]}`). Refuses empty
    /// or duplicate sets, nesting beyond
    /// [`MAX_NESTING_DEPTH`](super::MAX_NESTING_DEPTH) and invalid numbers or
    /// base64; error paths start at `$`.
    pub fn from_dynamodb_json(v: &Value) -> Result<AttrValue, ValueError> {
        decode_dynamo(v, ROOT, 0)
    }

    /// Encodes as DynamoDB's typed JSON; the inverse of
    /// [`AttrValue::from_dynamodb_json`] for valid values.
    pub fn to_dynamodb_json(&self) -> Value {
        let (tag, body) = match self {
            AttrValue::S(s) => ("S", Value::from(s.as_str())),
            AttrValue::N(n) => ("N", Value::from(n.as_str())),
            AttrValue::B(b) => ("B", Value::from(BASE64.encode(b))),
            AttrValue::Bool(b) => ("BOOL", Value::Bool(*b)),
            AttrValue::Null => ("NULL", Value::Bool(true)),
            AttrValue::L(items) => (
                "L",
                Value::Array(items.iter().map(AttrValue::to_dynamodb_json).collect()),
            ),
            AttrValue::M(map) => (
                "M",
                Value::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), v.to_dynamodb_json()))
                        .collect(),
                ),
            ),
            AttrValue::Ss(s) => ("SS", s.iter().map(|e| Value::from(e.as_str())).collect()),
            AttrValue::Ns(s) => ("NS", s.iter().map(|e| Value::from(e.as_str())).collect()),
            AttrValue::Bs(s) => (
                "BS",
                s.iter().map(|e| Value::from(BASE64.encode(e))).collect(),
            ),
        };
        let mut obj = Map::new();
        obj.insert(tag.to_owned(), body);
        Value::Object(obj)
    }

    /// Reads plain JSON as typed by an operator: string → S, number → N
    /// (from the number's text), bool → BOOL, null → NULL, array → L,
    /// object → M. Refuses numbers DynamoDB cannot hold and nesting beyond
    /// [`MAX_NESTING_DEPTH`](super::MAX_NESTING_DEPTH).
    pub fn from_plain_json(v: &Value) -> Result<AttrValue, ValueError> {
        decode_plain(v, ROOT, 0)
    }

    /// Writes plain JSON for people and scripts: N becomes a JSON number when
    /// that number reads back as the same value (as i64, u64 or f64 text),
    /// otherwise a string of its canonical text; B becomes a base64 string;
    /// sets become arrays in set order. Lossy for B and sets, which read back
    /// as S and L.
    pub fn to_plain_json(&self) -> Value {
        match self {
            AttrValue::S(s) => Value::from(s.as_str()),
            AttrValue::N(n) => number_to_plain(n),
            AttrValue::B(b) => Value::from(BASE64.encode(b)),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Null => Value::Null,
            AttrValue::L(items) => {
                Value::Array(items.iter().map(AttrValue::to_plain_json).collect())
            }
            AttrValue::M(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.to_plain_json()))
                    .collect(),
            ),
            AttrValue::Ss(s) => s.iter().map(|e| Value::from(e.as_str())).collect(),
            AttrValue::Ns(s) => s.iter().map(number_to_plain).collect(),
            AttrValue::Bs(s) => s.iter().map(|e| Value::from(BASE64.encode(e))).collect(),
        }
    }
}

impl Scalar {
    /// Reads a plain JSON string (→ S) or number (→ N); anything else is
    /// [`ValueError::NotAScalar`].
    pub fn from_plain_json(v: &Value) -> Result<Scalar, ValueError> {
        match v {
            Value::String(s) => Ok(Scalar::S(s.clone())),
            Value::Number(n) => Ok(Scalar::N(plain_number(n, ROOT)?)),
            other => Err(ValueError::NotAScalar {
                path: ROOT.to_owned(),
                found: json_type(other),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn num(s: &str) -> Number {
        s.parse().expect("valid number")
    }

    fn sample() -> AttrValue {
        AttrValue::M(BTreeMap::from([
            ("s".to_owned(), AttrValue::S("héllo".into())),
            ("n".to_owned(), AttrValue::N(num("-12.5"))),
            ("b".to_owned(), AttrValue::B(vec![0, 159, 255])),
            ("t".to_owned(), AttrValue::Bool(true)),
            ("z".to_owned(), AttrValue::Null),
            (
                "l".to_owned(),
                AttrValue::L(vec![
                    AttrValue::N(num("1")),
                    AttrValue::L(vec![AttrValue::S(String::new())]),
                ]),
            ),
            (
                "ss".to_owned(),
                AttrValue::Ss(BTreeSet::from(["a".to_owned(), "b".to_owned()])),
            ),
            (
                "ns".to_owned(),
                AttrValue::Ns(BTreeSet::from([num("10"), num("9")])),
            ),
            (
                "bs".to_owned(),
                AttrValue::Bs(BTreeSet::from([vec![1], vec![2, 3]])),
            ),
        ]))
    }

    #[test]
    fn dynamodb_json_round_trips() {
        let v = sample();
        let j = v.to_dynamodb_json();
        assert_eq!(j["M"]["b"], json!({"B": "AJ//"}));
        assert_eq!(j["M"]["ns"], json!({"NS": ["9", "10"]}));
        assert_eq!(j["M"]["z"], json!({"NULL": true}));
        assert_eq!(AttrValue::from_dynamodb_json(&j).expect("decodes"), v);
    }

    #[test]
    fn dynamodb_json_is_canonicalised_on_the_way_in() {
        let v =
            AttrValue::from_dynamodb_json(&json!({"NS": ["1.0", "2e0", "-0"]})).expect("decodes");
        assert_eq!(
            v,
            AttrValue::Ns(BTreeSet::from([num("0"), num("1"), num("2")]))
        );
    }

    #[test]
    fn dynamodb_json_errors_carry_paths() {
        let image = json!({
            "id": {"S": "u1"},
            "tags": {"L": [
                {"S": "a"}, {"S": "b"}, {"S": "c"},
                {"M": {"name": {"N": "12abc"}}}
            ]}
        });
        match image_from_dynamodb_json(&image) {
            Err(ValueError::At { path, error }) => {
                assert_eq!(path, "tags[3].name");
                assert!(matches!(*error, ValueError::InvalidNumber { .. }));
            }
            other => panic!("expected a path-carrying number error, got {other:?}"),
        }
        let cases = [
            (json!({"SS": []}), "$"),
            (json!({"NS": ["1", "1.0"]}), "$[1]"),
            (json!({"B": "not base64!"}), "$"),
            (json!({"S": "x", "N": "1"}), "$"),
            (json!({"X": "x"}), "$"),
            (json!({"NULL": false}), "$"),
            (json!({"M": {"a": {"L": [{"BOOL": "yes"}]}}}), "$.a[0]"),
            (json!("plain"), "$"),
        ];
        for (input, want_path) in cases {
            let err = AttrValue::from_dynamodb_json(&input).expect_err("must be refused");
            let path = match &err {
                ValueError::BadDynamoJson { path, .. }
                | ValueError::EmptySet { path }
                | ValueError::At { path, .. } => path.clone(),
                other => panic!("unexpected error {other:?} for {input}"),
            };
            assert_eq!(path, want_path, "path for {input}: {err}");
        }
        assert!(image_from_dynamodb_json(&json!([1])).is_err());
    }

    #[test]
    fn dynamodb_json_refuses_deep_nesting() {
        let mut v = json!({"NULL": true});
        for _ in 0..=crate::value::MAX_NESTING_DEPTH {
            v = json!({ "L": [v] });
        }
        assert!(matches!(
            AttrValue::from_dynamodb_json(&v),
            Err(ValueError::TooDeep { .. })
        ));
    }

    #[test]
    fn plain_json_round_trips() {
        let input = json!({
            "name": "x",
            "count": 3,
            "big": 18446744073709551615u64,
            "neg": -9223372036854775808i64,
            "ratio": 0.1,
            "flag": false,
            "none": null,
            "list": [1, "two", [3.5]],
        });
        let v = AttrValue::from_plain_json(&input).expect("decodes");
        assert_eq!(v.to_plain_json(), input);
    }

    #[test]
    fn plain_json_output_of_special_values() {
        let precise = AttrValue::N(num("0.12345678901234567890123"));
        assert_eq!(precise.to_plain_json(), json!("0.12345678901234567890123"));
        assert_eq!(AttrValue::N(num("1E+40")).to_plain_json(), json!(1e40));
        assert_eq!(
            AttrValue::N(num("99999999999999999999")).to_plain_json(),
            json!("99999999999999999999")
        );
        assert_eq!(AttrValue::B(vec![0xff]).to_plain_json(), json!("/w=="));
        assert_eq!(
            AttrValue::Ns(BTreeSet::from([num("10"), num("2.5")])).to_plain_json(),
            json!([2.5, 10])
        );
        assert!(matches!(
            AttrValue::from_plain_json(&json!({"x": [1e300]})),
            Err(ValueError::At { ref path, .. }) if path == "$.x[0]"
        ));
    }

    #[test]
    fn scalars_from_plain_json() {
        assert_eq!(
            Scalar::from_plain_json(&json!("a")),
            Ok(Scalar::S("a".into()))
        );
        assert_eq!(
            Scalar::from_plain_json(&json!(1.50)),
            Ok(Scalar::N(num("1.5")))
        );
        assert_eq!(
            Scalar::from_plain_json(&json!(true)),
            Err(ValueError::NotAScalar {
                path: "$".into(),
                found: "a boolean"
            })
        );
    }
}
