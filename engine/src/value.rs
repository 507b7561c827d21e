//! Attribute values with DynamoDB's types and limits.
//!
//! Invariants kept here:
//! - A [`Number`] is always valid (1–38 significant digits, magnitude in
//!   `1E-130 ..= 9.99…E+125` or zero) and canonical, so numerically equal
//!   numbers are equal values with equal text, and `Ord` is numeric order.
//! - Sets (`Ss`, `Ns`, `Bs`) are duplicate-free by construction; whether they
//!   are non-empty and lists/maps nest at most [`MAX_NESTING_DEPTH`] levels is
//!   checked by [`AttrValue::validate`] (and by every JSON decoder here).
//! - Sizes follow DynamoDB's item-size accounting ([`AttrValue::size`],
//!   [`item_size`]), so [`MAX_ITEM_BYTES`] can be enforced before a write
//!   that DynamoDB would refuse.
//!
//! Errors name what was wrong and where, as a path such as `tags[3].name`.
//! Conversions from and to DynamoDB's typed JSON and to plain JSON live in
//! the `json` submodule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

mod json;
mod number;

pub use json::image_from_dynamodb_json;
pub use number::{MAX_NUMBER_DIGITS, MAX_NUMBER_EXPONENT, MIN_NUMBER_EXPONENT, Number};

/// Largest item DynamoDB stores: 400 KiB, attribute names included.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Deepest nesting of lists and maps DynamoDB accepts: a top-level list or
/// map is level 1.
pub const MAX_NESTING_DEPTH: usize = 32;

/// Why a value was refused. Every variant is about the data itself: retrying
/// cannot help, the record carrying it must be rejected (or dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The text is not a DynamoDB number.
    #[error("invalid number {input:?}: {reason}")]
    InvalidNumber {
        /// The refused text (its first 64 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The number's magnitude is outside `1E-130 ..= 9.99…E+125`.
    #[error("number {input:?} is outside DynamoDB's range (magnitude 1E-130 to 9.99…E+125, or 0)")]
    NumberOutOfRange {
        /// The refused text (its first 64 characters).
        input: String,
    },
    /// A set with no elements (DynamoDB has no empty sets; remove the
    /// attribute instead).
    #[error("{path}: a set must have at least one element")]
    EmptySet {
        /// Where the set is.
        path: String,
    },
    /// Lists and maps nested deeper than [`MAX_NESTING_DEPTH`].
    #[error("{path}: lists and maps nest deeper than {max} levels")]
    TooDeep {
        /// The container at the first level too deep.
        path: String,
        /// The limit.
        max: usize,
    },
    /// JSON that is not DynamoDB's typed attribute-value format.
    #[error("{path}: not a DynamoDB attribute value: {reason}")]
    BadDynamoJson {
        /// Where in the value.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A value where only S, N or B is allowed (a key, a set element).
    #[error("{path}: expected a string, number or binary, found {found}")]
    NotAScalar {
        /// Where the value is.
        path: String,
        /// The type found (a DynamoDB type name or a JSON type).
        found: &'static str,
    },
    /// The item is larger than DynamoDB's limit.
    #[error("item is {size} bytes, more than DynamoDB's limit of {max}")]
    ItemTooLarge {
        /// The item's size by DynamoDB's rules.
        size: usize,
        /// The limit ([`MAX_ITEM_BYTES`]).
        max: usize,
    },
    /// An error found inside a value, with where it was found.
    #[error("{path}: {error}")]
    At {
        /// Where the error was found.
        path: String,
        /// The error.
        error: Box<ValueError>,
    },
}

impl ValueError {
    /// Wraps `self` with the path where it was found.
    fn at(self, path: &str) -> ValueError {
        ValueError::At {
            path: path.to_owned(),
            error: Box::new(self),
        }
    }
}

/// `path[i]`.
fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `path.key` (or `key` at the top).
fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A scalar usable as a key value or a set element: S, N or B.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scalar {
    /// String.
    S(String),
    /// Number.
    N(Number),
    /// Binary.
    B(Vec<u8>),
}

impl Scalar {
    /// DynamoDB's type name: `"S"`, `"N"` or `"B"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::S(_) => "S",
            Scalar::N(_) => "N",
            Scalar::B(_) => "B",
        }
    }

    /// The same value as an [`AttrValue`].
    pub fn into_value(self) -> AttrValue {
        match self {
            Scalar::S(s) => AttrValue::S(s),
            Scalar::N(n) => AttrValue::N(n),
            Scalar::B(b) => AttrValue::B(b),
        }
    }

    /// Size by DynamoDB's rules (see [`AttrValue::size`]).
    pub fn size(&self) -> usize {
        match self {
            Scalar::S(s) => s.len(),
            Scalar::N(n) => number_size(n),
            Scalar::B(b) => b.len(),
        }
    }
}

impl From<Scalar> for AttrValue {
    fn from(value: Scalar) -> AttrValue {
        value.into_value()
    }
}

impl fmt::Display for Scalar {
    /// S as is, N in canonical form, B as standard base64.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::S(s) => f.write_str(s),
            Scalar::N(n) => f.write_str(n.as_str()),
            Scalar::B(b) => f.write_str(&BASE64.encode(b)),
        }
    }
}

/// An attribute value of any DynamoDB type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AttrValue {
    /// String.
    S(String),
    /// Number.
    N(Number),
    /// Binary.
    B(Vec<u8>),
    /// Boolean.
    Bool(bool),
    /// Null.
    Null,
    /// List.
    L(Vec<AttrValue>),
    /// Map.
    M(BTreeMap<String, AttrValue>),
    /// String set.
    Ss(BTreeSet<String>),
    /// Number set.
    Ns(BTreeSet<Number>),
    /// Binary set.
    Bs(BTreeSet<Vec<u8>>),
}

/// DynamoDB charges about one byte per two significant digits, plus one.
fn number_size(n: &Number) -> usize {
    n.significant_digits().div_ceil(2) + 1
}

/// The size of `AttrValue::N(Number::from_i128(v))` (a counter's value),
/// counted on the integer instead of formatting the number.
pub(crate) fn integer_size(v: i128) -> usize {
    let mut m = v.unsigned_abs();
    // Zero has one significant digit.
    let mut digits = if m == 0 { 1 } else { m.ilog10() as usize + 1 };
    // `Number::from_i128` keeps the first `MAX_NUMBER_DIGITS` digits …
    while digits > MAX_NUMBER_DIGITS {
        m /= 10;
        digits -= 1;
    }
    // … and trailing zeros are not significant.
    while m != 0 && m.is_multiple_of(10) {
        m /= 10;
        digits -= 1;
    }
    digits.div_ceil(2) + 1
}

impl AttrValue {
    /// DynamoDB's type name: `"S"`, `"N"`, `"B"`, `"BOOL"`, `"NULL"`, `"L"`,
    /// `"M"`, `"SS"`, `"NS"` or `"BS"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttrValue::S(_) => "S",
            AttrValue::N(_) => "N",
            AttrValue::B(_) => "B",
            AttrValue::Bool(_) => "BOOL",
            AttrValue::Null => "NULL",
            AttrValue::L(_) => "L",
            AttrValue::M(_) => "M",
            AttrValue::Ss(_) => "SS",
            AttrValue::Ns(_) => "NS",
            AttrValue::Bs(_) => "BS",
        }
    }

    /// The value as a [`Scalar`] if it is S, N or B.
    pub fn to_scalar(&self) -> Option<Scalar> {
        match self {
            AttrValue::S(s) => Some(Scalar::S(s.clone())),
            AttrValue::N(n) => Some(Scalar::N(n.clone())),
            AttrValue::B(b) => Some(Scalar::B(b.clone())),
            _ => None,
        }
    }

    /// The elements of an SS, NS or BS value, in set order; `None` for any
    /// other type.
    pub fn set_elements(&self) -> Option<Vec<Scalar>> {
        match self {
            AttrValue::Ss(s) => Some(s.iter().cloned().map(Scalar::S).collect()),
            AttrValue::Ns(s) => Some(s.iter().cloned().map(Scalar::N).collect()),
            AttrValue::Bs(s) => Some(s.iter().cloned().map(Scalar::B).collect()),
            _ => None,
        }
    }

    /// Size in bytes by DynamoDB's rules: strings count their UTF-8 bytes,
    /// numbers `ceil(significant digits / 2) + 1`, binaries their bytes,
    /// BOOL and NULL 1; a list or map 3 bytes plus 1 per element plus the
    /// elements (and, for a map, the key names); a set the sum of its
    /// elements.
    pub fn size(&self) -> usize {
        match self {
            AttrValue::S(s) => s.len(),
            AttrValue::N(n) => number_size(n),
            AttrValue::B(b) => b.len(),
            AttrValue::Bool(_) | AttrValue::Null => 1,
            AttrValue::L(items) => 3 + items.iter().map(|v| 1 + v.size()).sum::<usize>(),
            AttrValue::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| 1 + k.len() + v.size())
                    .sum::<usize>()
            }
            AttrValue::Ss(s) => s.iter().map(String::len).sum(),
            AttrValue::Ns(s) => s.iter().map(number_size).sum(),
            AttrValue::Bs(s) => s.iter().map(Vec::len).sum(),
        }
    }

    /// Checks what the types cannot: sets are non-empty and lists and maps
    /// nest at most [`MAX_NESTING_DEPTH`] levels. `path` names the value in
    /// errors (usually the attribute name); nested values extend it as
    /// `path[3].name`.
    pub fn validate(&self, path: &str) -> Result<(), ValueError> {
        self.validate_at(path, 0)
    }

    fn validate_at(&self, path: &str, depth: usize) -> Result<(), ValueError> {
        match self {
            AttrValue::Ss(s) if s.is_empty() => empty_set(path),
            AttrValue::Ns(s) if s.is_empty() => empty_set(path),
            AttrValue::Bs(s) if s.is_empty() => empty_set(path),
            AttrValue::L(items) => {
                check_depth(path, depth + 1)?;
                items
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, v)| v.validate_at(&index_path(path, i), depth + 1))
            }
            AttrValue::M(map) => {
                check_depth(path, depth + 1)?;
                map.iter()
                    .try_for_each(|(k, v)| v.validate_at(&key_path(path, k), depth + 1))
            }
            _ => Ok(()),
        }
    }
}

fn empty_set(path: &str) -> Result<(), ValueError> {
    Err(ValueError::EmptySet {
        path: path.to_owned(),
    })
}

fn check_depth(path: &str, depth: usize) -> Result<(), ValueError> {
    if depth > MAX_NESTING_DEPTH {
        return Err(ValueError::TooDeep {
            path: path.to_owned(),
            max: MAX_NESTING_DEPTH,
        });
    }
    Ok(())
}

/// An item's size by DynamoDB's rules: the sum over attributes of the name's
/// UTF-8 bytes plus [`AttrValue::size`].
pub fn item_size<'a>(attrs: impl IntoIterator<Item = (&'a str, &'a AttrValue)>) -> usize {
    attrs
        .into_iter()
        .map(|(name, value)| name.len() + value.size())
        .sum()
}

/// Validates every attribute ([`AttrValue::validate`], with the attribute
/// name as path) and the item's total size against [`MAX_ITEM_BYTES`].
pub fn validate_item<'a>(
    attrs: impl IntoIterator<Item = (&'a str, &'a AttrValue)>,
) -> Result<(), ValueError> {
    let mut size = 0;
    for (name, value) in attrs {
        value.validate(name)?;
        size += name.len() + value.size();
    }
    if size > MAX_ITEM_BYTES {
        return Err(ValueError::ItemTooLarge {
            size,
            max: MAX_ITEM_BYTES,
        });
    }
    Ok(())
}

/// Builds a set value from its elements: SS, NS or BS when they share one
/// type, `None` when there are none (DynamoDB has no empty set).
///
/// When the elements mix types the result is an `L` of the distinct
/// elements in [`Scalar`] order. A set attribute only holds mixed types if
/// concurrent writers disagreed on its type; the list keeps every element
/// visible instead of dropping some.
pub fn set_value(elements: impl IntoIterator<Item = Scalar>) -> Option<AttrValue> {
    let elements: BTreeSet<Scalar> = elements.into_iter().collect();
    let first = elements.first()?;
    let homogeneous = elements.iter().all(|e| e.type_name() == first.type_name());
    if !homogeneous {
        return Some(AttrValue::L(
            elements.into_iter().map(Scalar::into_value).collect(),
        ));
    }
    let value = match first {
        Scalar::S(_) => AttrValue::Ss(
            elements
                .into_iter()
                .filter_map(|e| match e {
                    Scalar::S(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
        Scalar::N(_) => AttrValue::Ns(
            elements
                .into_iter()
                .filter_map(|e| match e {
                    Scalar::N(n) => Some(n),
                    _ => None,
                })
                .collect(),
        ),
        Scalar::B(_) => AttrValue::Bs(
            elements
                .into_iter()
                .filter_map(|e| match e {
                    Scalar::B(b) => Some(b),
                    _ => None,
                })
                .collect(),
        ),
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    #[test]
    fn integer_size_is_the_size_of_the_number() {
        let mut values = vec![
            0,
            1,
            -1,
            9,
            10,
            -10,
            99,
            100,
            101,
            120_000,
            i128::MAX,
            i128::MIN,
        ];
        for k in 0..39 {
            let p = 10i128.pow(k);
            let q = p.wrapping_mul(7);
            values.extend([p, -p, p - 1, p + 1, q, 3 - q]);
        }
        let mut x: i128 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(0x5851_F42D_4C95_7F2D)
                .wrapping_add(1_442_695_040_888_963_407);
            values.extend([x, x >> 64, x >> 100, (x >> 110) * 1000]);
        }
        for v in values {
            assert_eq!(
                super::integer_size(v),
                super::AttrValue::N(super::Number::from_i128(v)).size(),
                "{v}"
            );
        }
    }

    use super::*;

    fn num(s: &str) -> Number {
        s.parse().expect("valid number")
    }

    fn nested_lists(levels: usize) -> AttrValue {
        let mut v = AttrValue::Null;
        for _ in 0..levels {
            v = AttrValue::L(vec![v]);
        }
        v
    }

    #[test]
    fn type_names() {
        assert_eq!(Scalar::B(vec![]).type_name(), "B");
        assert_eq!(AttrValue::Bool(true).type_name(), "BOOL");
        assert_eq!(AttrValue::Ns(BTreeSet::new()).type_name(), "NS");
        assert_eq!(
            Scalar::N(num("1.50")).into_value(),
            AttrValue::N(num("1.5"))
        );
    }

    #[test]
    fn scalar_display() {
        assert_eq!(Scalar::S("a b".into()).to_string(), "a b");
        assert_eq!(Scalar::N(num("1.50E2")).to_string(), "150");
        assert_eq!(Scalar::B(b"hi\xff".to_vec()).to_string(), "aGn/");
    }

    #[test]
    fn sizes_follow_dynamodb() {
        assert_eq!(AttrValue::S("héllo".into()).size(), 6);
        assert_eq!(AttrValue::N(num("0")).size(), 2);
        assert_eq!(AttrValue::N(num("12345")).size(), 4);
        assert_eq!(AttrValue::N(num("1200")).size(), 2);
        assert_eq!(AttrValue::N(num("-1.5E+40")).size(), 2);
        assert_eq!(AttrValue::B(vec![0; 10]).size(), 10);
        assert_eq!(AttrValue::Null.size(), 1);
        assert_eq!(AttrValue::Bool(false).size(), 1);
        assert_eq!(AttrValue::L(vec![]).size(), 3);
        // 3 + (1 + 1) + (1 + 3)
        assert_eq!(
            AttrValue::L(vec![AttrValue::Null, AttrValue::S("abc".into())]).size(),
            9
        );
        // 3 + (1 + len("ab") + 2)
        let m = AttrValue::M(BTreeMap::from([("ab".to_owned(), AttrValue::N(num("7")))]));
        assert_eq!(m.size(), 8);
        let ss = AttrValue::Ss(BTreeSet::from(["a".to_owned(), "bcd".to_owned()]));
        assert_eq!(ss.size(), 4);
        assert_eq!(
            item_size([("id", &AttrValue::S("x".into())), ("tags", &ss)]),
            2 + 1 + 4 + 4
        );
    }

    #[test]
    fn item_limit_is_enforced() {
        let big = AttrValue::B(vec![0; MAX_ITEM_BYTES - 4]);
        assert!(validate_item([("blob", &big)]).is_ok());
        let bigger = AttrValue::B(vec![0; MAX_ITEM_BYTES - 3]);
        assert_eq!(
            validate_item([("blob", &bigger)]),
            Err(ValueError::ItemTooLarge {
                size: MAX_ITEM_BYTES + 1,
                max: MAX_ITEM_BYTES
            })
        );
    }

    #[test]
    fn validation_names_the_path() {
        let mut inner = BTreeMap::new();
        inner.insert("name".to_owned(), AttrValue::Ss(BTreeSet::new()));
        let mut list = vec![AttrValue::Null; 3];
        list.push(AttrValue::M(inner));
        let v = AttrValue::L(list);
        assert_eq!(
            v.validate("tags"),
            Err(ValueError::EmptySet {
                path: "tags[3].name".into()
            })
        );
        assert!(nested_lists(MAX_NESTING_DEPTH).validate("deep").is_ok());
        let too_deep = nested_lists(MAX_NESTING_DEPTH + 1).validate("deep");
        let want = format!("deep{}", "[0]".repeat(MAX_NESTING_DEPTH));
        assert_eq!(
            too_deep,
            Err(ValueError::TooDeep {
                path: want,
                max: MAX_NESTING_DEPTH
            })
        );
        // Empty strings inside sets are allowed.
        assert!(
            AttrValue::Ss(BTreeSet::from([String::new()]))
                .validate("s")
                .is_ok()
        );
    }

    #[test]
    fn set_values_are_built_from_elements() {
        assert_eq!(set_value(Vec::new()), None);
        assert_eq!(
            set_value([
                Scalar::N(num("10")),
                Scalar::N(num("9")),
                Scalar::N(num("9.0"))
            ]),
            Some(AttrValue::Ns(BTreeSet::from([num("9"), num("10")])))
        );
        let ss = set_value([Scalar::S("b".into()), Scalar::S("a".into())]).expect("non-empty");
        assert_eq!(
            ss.set_elements(),
            Some(vec![Scalar::S("a".into()), Scalar::S("b".into())])
        );
        assert_eq!(
            set_value([
                Scalar::B(vec![1]),
                Scalar::S("a".into()),
                Scalar::B(vec![1])
            ]),
            Some(AttrValue::L(vec![
                AttrValue::S("a".into()),
                AttrValue::B(vec![1])
            ]))
        );
        assert_eq!(AttrValue::S("x".into()).set_elements(), None);
    }

    #[test]
    fn number_sets_order_numerically() {
        let ns = AttrValue::Ns(["10", "9", "-1", "0.5"].iter().map(|s| num(s)).collect());
        assert_eq!(
            ns.set_elements(),
            Some(
                ["-1", "0.5", "9", "10"]
                    .iter()
                    .map(|s| Scalar::N(num(s)))
                    .collect()
            )
        );
    }
}
