//! The delta of a change to an item nobody wrote, encoded straight from the
//! change's ops.
//!
//! Most changes a node ingests create their item (an insert). For those the
//! delta is the item's whole state, and building it as an [`ItemState`]
//! (a causal context, an alive set, a sorted map of attributes, a map of
//! siblings per register, a set of dots per set element) only to encode it
//! and drop it cost about half of an ingest's instructions. [`encode_fresh`]
//! writes the same bytes from the ops, for the plain shape of change that
//! inserts are: each attribute written once, by a register write, a set
//! write or additions, or a counter add. Anything else (a removal, a
//! delete, an attribute written twice, an op the schema refuses, an item
//! over the size limit) is left to [`ItemState::prepare_in_place`], which
//! gives the same delta or the error. A property test holds the two paths
//! to the same bytes.
//!
//! [`ItemState`]: super::ItemState
//! [`ItemState::prepare_in_place`]: super::ItemState

use std::borrow::Cow;
use std::mem::discriminant;

use super::encoding::Writer;
use crate::change::Op;
use crate::ids::{AttrName, Hlc, RegionId};
use crate::schema::{MergePolicy, TableSchema};
use crate::value::{AttrValue, MAX_ITEM_BYTES, Scalar, integer_size};

/// One attribute of a fresh delta. Dots are the counters of the change's
/// dots at its origin (the item has no others).
enum Attr<'a> {
    /// A register write: `multi` for a `multi` attribute, else `lww`.
    Register {
        multi: bool,
        dot: u64,
        value: &'a AttrValue,
    },
    /// A set's elements with their dots, in element order (borrowed from
    /// the op, or made from a set value's strings, numbers or binaries).
    Set(Vec<(Cow<'a, Scalar>, u64)>),
    /// A counter's first contribution.
    Counter(i128),
}

impl Attr<'_> {
    /// What readers see of it, in bytes (the item size rule).
    fn visible_size(&self) -> usize {
        match self {
            Attr::Register { value, .. } => value.size(),
            Attr::Set(elements) => elements.iter().map(|(e, _)| e.size()).sum(),
            Attr::Counter(amount) => integer_size(*amount),
        }
    }
}

/// Appends to `out` the compact encoding of the delta of the change `ops`
/// made at `origin` at `hlc` to an item nobody wrote — the bytes
/// [`write_compact`](super::write_compact) writes for the delta
/// [`ItemState::prepare`](super::ItemState::prepare) builds from ⊥ — and
/// returns `Some`. Returns `None`, leaving `out` as it was, when the change
/// is not of the shape this path takes or would not be accepted; the
/// caller then builds the delta as an `ItemState`.
pub(crate) fn encode_fresh(
    schema: &TableSchema,
    origin: &RegionId,
    hlc: Hlc,
    ops: &[Op],
    out: &mut Vec<u8>,
) -> Option<()> {
    let mut attrs: Vec<(&AttrName, Attr<'_>)> = Vec::with_capacity(ops.len());
    // Every effect gets a dot of its own, from 1, in op order; the alive
    // marker last.
    let mut next = 1u64;
    for op in ops {
        let attr = op.attr()?;
        if schema.is_key(attr) {
            return None;
        }
        let policy = schema.policy(attr);
        let fresh = match (op, policy) {
            (Op::Set { value, .. }, MergePolicy::Lww | MergePolicy::Multi) => {
                value.validate(attr.as_str()).ok()?;
                next += 1;
                Attr::Register {
                    multi: policy == MergePolicy::Multi,
                    dot: next - 1,
                    value,
                }
            }
            (Op::Set { value, .. }, MergePolicy::Set) => Attr::Set(elements(
                value.set_elements()?.into_iter().map(Cow::Owned),
                &mut next,
            )?),
            (Op::AddToSet { elements: e, .. }, MergePolicy::Set) => {
                Attr::Set(elements(e.iter().map(Cow::Borrowed), &mut next)?)
            }
            // Zero leaves the counter ⊥, and `i128::MIN` overflows its value.
            (Op::Add { amount, .. }, MergePolicy::Counter)
                if *amount != 0 && *amount != i128::MIN =>
            {
                Attr::Counter(*amount)
            }
            _ => return None,
        };
        attrs.push((attr, fresh));
    }
    let alive = next;
    attrs.sort_unstable_by_key(|(a, _)| *a);
    // An attribute written twice is the state path's to merge.
    if attrs.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let key_names =
        schema.partition_key().as_str().len() + schema.sort_key().map_or(0, |k| k.as_str().len());
    let size = key_names
        + attrs
            .iter()
            .map(|(name, a)| match a.visible_size() {
                0 => 0,
                n => name.as_str().len() + n,
            })
            .sum::<usize>();
    if size > MAX_ITEM_BYTES {
        return None;
    }
    // Room for it all at once: the visible bytes, plus about what the
    // encoding adds per attribute and element (tags, dots, lengths).
    let elements: usize = attrs
        .iter()
        .map(|(_, a)| match a {
            Attr::Set(e) => e.len(),
            _ => 1,
        })
        .sum();
    out.reserve(size + origin.as_str().len() + 16 * attrs.len() + 8 * elements + 32);
    let start = out.len();
    if write(origin, hlc, alive, &attrs, out).is_err() {
        out.truncate(start);
        return None;
    }
    Some(())
}

/// A set's `elements` with fresh dots in the order given, sorted; `None`
/// for none, for a repeated element, or for elements of mixed types (the
/// `ItemState` path refuses those or keeps one dot per element).
fn elements<'a>(
    elements: impl ExactSizeIterator<Item = Cow<'a, Scalar>>,
    next: &mut u64,
) -> Option<Vec<(Cow<'a, Scalar>, u64)>> {
    let mut dotted: Vec<(Cow<'a, Scalar>, u64)> = Vec::with_capacity(elements.len());
    for e in elements {
        if dotted
            .first()
            .is_some_and(|(first, _)| discriminant(&**first) != discriminant(&*e))
        {
            return None;
        }
        dotted.push((e, *next));
        *next += 1;
    }
    if dotted.is_empty() {
        return None;
    }
    dotted.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    if dotted.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(dotted)
}

/// The compact encoding (see `write_compact`) of a delta whose only region
/// is `origin` (index 0), whose context is the dots `1..=alive`, alive by
/// dot `alive`, with `attrs` sorted by name.
fn write(
    origin: &RegionId,
    hlc: Hlc,
    alive: u64,
    attrs: &[(&AttrName, Attr<'_>)],
    out: &mut Vec<u8>,
) -> postcard::Result<()> {
    let mut w = Writer(out);
    w.length(1);
    w.str(origin.as_str());
    // The HLC base is the greatest sibling HLC: this change's, if it
    // wrote a register.
    let registers = attrs
        .iter()
        .any(|(_, a)| matches!(a, Attr::Register { .. }));
    w.u64(if registers { hlc.0 } else { 0 });
    // The context: one contiguous run, no cloud.
    w.length(1);
    w.u64(0);
    w.u64(alive);
    w.length(0);
    // The alive set.
    w.length(1);
    w.u64(0);
    w.u64(alive);
    w.length(attrs.len());
    for (name, a) in attrs {
        w.str(name.as_str());
        match a {
            Attr::Register { multi, dot, value } => {
                w.u64(u64::from(*multi));
                w.length(1);
                w.u64(0);
                w.u64(*dot);
                // The sibling's HLC, below the base: the base itself.
                w.u64(0);
                w.0.push(1);
                w.serde(*value)?;
            }
            Attr::Set(elements) => {
                w.u64(2);
                w.length(elements.len());
                for (e, dot) in elements {
                    w.serde(&**e)?;
                    w.length(1);
                    w.u64(0);
                    w.u64(*dot);
                }
            }
            Attr::Counter(amount) => {
                w.u64(3);
                // The four parts: increments, decrements, and the two
                // observed bases (none).
                let (inc, dec) = if *amount > 0 { (1, 0) } else { (0, 1) };
                for n in [inc, dec] {
                    w.length(n);
                    if n == 1 {
                        w.u64(0);
                        w.varint(amount.unsigned_abs());
                    }
                }
                w.length(0);
                w.length(0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crdt::{ItemState, write_compact};
    use crate::ids::TableName;
    use crate::value::Number;

    fn name(s: &str) -> AttrName {
        AttrName::new(s).expect("valid attribute name")
    }

    /// A table with one attribute of each policy besides `lww` names.
    fn schema() -> TableSchema {
        TableSchema::new(
            TableName::new("t").expect("table"),
            name("pk"),
            Some(name("sk")),
        )
        .expect("schema")
        .with_policy(name("c"), MergePolicy::Counter)
        .expect("policy")
        .with_policy(name("s"), MergePolicy::Set)
        .expect("policy")
        .with_policy(name("m"), MergePolicy::Multi)
        .expect("policy")
    }

    fn scalar() -> impl Strategy<Value = Scalar> {
        prop_oneof![
            "[a-c]{0,3}".prop_map(Scalar::S),
            (-3i64..3).prop_map(|n| Scalar::N(Number::from_i128(i128::from(n)))),
            prop::collection::vec(any::<u8>(), 0..3).prop_map(Scalar::B),
        ]
    }

    fn value() -> impl Strategy<Value = AttrValue> {
        prop_oneof![
            "[a-z]{0,6}".prop_map(AttrValue::S),
            (-5i64..5).prop_map(|n| AttrValue::N(Number::from_i128(i128::from(n)))),
            any::<bool>().prop_map(AttrValue::Bool),
            Just(AttrValue::Null),
            prop::collection::btree_set("[a-c]{1,2}", 0..3).prop_map(AttrValue::Ss),
            // Over the item size limit on its own.
            Just(AttrValue::S("x".repeat(MAX_ITEM_BYTES))),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let attr = prop_oneof![
            Just("a"),
            Just("b"),
            Just("c"),
            Just("s"),
            Just("m"),
            Just("pk")
        ]
        .prop_map(name);
        prop_oneof![
            4 => (attr.clone(), value()).prop_map(|(attr, value)| Op::Set { attr, value }),
            2 => (attr.clone(), prop_oneof![Just(0i128), Just(i128::MIN), -9i128..9])
                .prop_map(|(attr, amount)| Op::Add { attr, amount }),
            3 => (attr.clone(), prop::collection::vec(scalar(), 0..4))
                .prop_map(|(attr, elements)| Op::AddToSet { attr, elements }),
            1 => (attr.clone(), prop::collection::vec(scalar(), 0..2))
                .prop_map(|(attr, elements)| Op::RemoveFromSet { attr, elements }),
            1 => attr.prop_map(|attr| Op::Remove { attr }),
            1 => Just(Op::Delete),
        ]
    }

    /// An insert's ops: each attribute once, of the shape its policy takes
    /// (mostly; a few values or elements the state path refuses or keeps
    /// differently).
    fn plain_ops() -> impl Strategy<Value = Vec<Op>> {
        let string_set = prop::collection::vec("[a-f]{0,3}".prop_map(Scalar::S), 1..6);
        let elements = prop_oneof![4 => string_set, 1 => prop::collection::vec(scalar(), 1..4)];
        (
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(prop_oneof![
                Just(0i128),
                Just(i128::MIN),
                Just(i128::MAX),
                -99i128..99
            ]),
            prop::option::of((any::<bool>(), elements)),
            any::<u64>(),
        )
            .prop_map(|(a, m, c, s, order)| {
                let mut ops = Vec::new();
                if let Some(value) = a {
                    ops.push(Op::Set {
                        attr: name("a"),
                        value,
                    });
                }
                if let Some(value) = m {
                    ops.push(Op::Set {
                        attr: name("m"),
                        value,
                    });
                }
                if let Some(amount) = c {
                    ops.push(Op::Add {
                        attr: name("c"),
                        amount,
                    });
                }
                if let Some((whole, elements)) = s {
                    ops.push(if whole {
                        let strings = elements.iter().filter_map(|e| match e {
                            Scalar::S(s) => Some(s.clone()),
                            _ => None,
                        });
                        Op::Set {
                            attr: name("s"),
                            value: AttrValue::Ss(strings.collect()),
                        }
                    } else {
                        Op::AddToSet {
                            attr: name("s"),
                            elements,
                        }
                    });
                }
                // In any order: the dots follow it.
                let n = ops.len().max(1);
                ops.rotate_left(usize::try_from(order % n as u64).unwrap_or(0));
                if order & (1 << 40) != 0 {
                    ops.reverse();
                }
                ops
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// Where the direct path answers, it answers what building the
        /// delta and encoding it gives; where building fails, it declines.
        #[test]
        fn encodes_what_the_state_path_encodes(
            ops in prop_oneof![prop::collection::vec(op(), 0..5), plain_ops()],
        ) {
            let schema = schema();
            let origin = RegionId::new("eu-west-1").expect("region");
            let hlc = Hlc::new(1_700_000_000_000, 3);
            let mut direct = vec![0xaa];
            let fresh = encode_fresh(&schema, &origin, hlc, &ops, &mut direct);
            let built = ItemState::new().prepare(&schema, &origin, hlc, &ops);
            match (fresh, built) {
                (Some(()), Ok(prepared)) => {
                    let mut expected = vec![0xaa];
                    write_compact(&prepared.delta, &mut expected).expect("encodes");
                    prop_assert_eq!(direct, expected);
                    prop_assert_eq!(prepared.delta, prepared.state);
                }
                (Some(()), Err(e)) => prop_assert!(false, "direct path took a refused change: {e}"),
                (None, _) => prop_assert_eq!(direct, vec![0xaa], "declining leaves the output"),
            }
        }
    }

    /// The shape of an insert takes the direct path.
    #[test]
    fn an_insert_takes_the_direct_path() {
        let ops = vec![
            Op::Set {
                attr: name("a"),
                value: AttrValue::S("title".into()),
            },
            Op::Set {
                attr: name("m"),
                value: AttrValue::N(Number::from_i128(7)),
            },
            Op::Add {
                attr: name("c"),
                amount: -2,
            },
            Op::AddToSet {
                attr: name("s"),
                elements: vec![Scalar::S("y".into()), Scalar::S("x".into())],
            },
        ];
        let origin = RegionId::new("r").expect("region");
        let mut out = Vec::new();
        assert!(encode_fresh(&schema(), &origin, Hlc::new(5, 0), &ops, &mut out).is_some());
        let delta = ItemState::new()
            .prepare(&schema(), &origin, Hlc::new(5, 0), &ops)
            .expect("valid")
            .delta;
        let mut expected = Vec::new();
        write_compact(&delta, &mut expected).expect("encodes");
        assert_eq!(out, expected);
    }
}
