//! What the sink writes to make the table hold the merged document: the
//! difference between the merged document and the table's image, attribute
//! by attribute, by the attribute's merge policy (see the [module
//! docs](super) for why a difference and not the whole document).
//!
//! Invariants kept here (property-tested against a model of DynamoDB's
//! update semantics):
//! - applying the planned write to the image yields exactly the merged
//!   document (key attributes aside), with every condition true;
//! - counters only ever get `ADD`, so applying the plan to the image plus a
//!   concurrent increment `+k` yields the merged value `+ k`;
//! - no attribute appears in two of `set`/`remove`/`add`/`delete` (DynamoDB
//!   refuses overlapping paths), no empty set is ever `SET`, `ADD`ed or
//!   `DELETE`d, and every list is in attribute-name order;
//! - key attributes are never written.
//!
//! Empty sets (which DynamoDB cannot store) count as absent on both sides.

use std::collections::{BTreeMap, BTreeSet};

use tributary_engine::ids::{AttrName, IdError};
use tributary_engine::schema::{MergePolicy, TableSchema};
use tributary_engine::value::{AttrValue, Number};

/// What the sink must do to make the table hold the merged document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkWrite {
    /// An `UpdateItem` (which also creates a missing item).
    Update(Update),
    /// A `DeleteItem`: the merged document says the item is deleted.
    Delete,
}

/// The attribute actions and conditions of one `UpdateItem`, each list in
/// attribute-name order. An attribute appears in at most one of `set`,
/// `remove`, `add` and `delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// `SET #a = :v`: the attribute takes this value.
    pub set: Vec<(AttrName, AttrValue)>,
    /// `REMOVE #a`: the attribute goes away.
    pub remove: Vec<AttrName>,
    /// `ADD #a :v`: an N delta added to a number, or SS/NS/BS elements added
    /// to a set (either created when the attribute is missing).
    pub add: Vec<(AttrName, AttrValue)>,
    /// `DELETE #a :v`: SS/NS/BS elements taken out of a set (DynamoDB
    /// removes the attribute when the set becomes empty).
    pub delete: Vec<(AttrName, AttrValue)>,
    /// Conditions: the attribute still holds this value (None: does not
    /// exist).
    pub expect: Vec<(AttrName, Option<AttrValue>)>,
}

impl Update {
    /// True when the update changes no attribute and has no condition: as
    /// a write it only creates the item (and moves the sink's marker).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.remove.is_empty()
            && self.add.is_empty()
            && self.delete.is_empty()
            && self.expect.is_empty()
    }
}

/// Why no write can be planned for an item. Every variant is about the data
/// itself, so planning again gives the same answer: the caller gives up on
/// this item's write (dead-letters it) until the data changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `counter` attribute holds something other than an integer number.
    #[error("counter attribute {attr} must be an integer N, found {found} in the {side}")]
    CounterNotInteger {
        /// The attribute.
        attr: String,
        /// The offending value: the number, or the type name.
        found: String,
        /// `"merged document"` or `"table image"`.
        side: &'static str,
    },
    /// The increment from the image's counter to the merged one is beyond
    /// DynamoDB's 38 significant digits.
    #[error(
        "counter attribute {attr}: the delta from {image} (table image) to {merged} \
         (merged document) does not fit a DynamoDB number"
    )]
    CounterDeltaOutOfRange {
        /// The attribute.
        attr: String,
        /// The merged value.
        merged: Number,
        /// The image's value.
        image: Number,
    },
    /// The image has an attribute name the engine cannot represent.
    #[error("table image attribute name {name:?} is not a valid attribute name: {error}")]
    AttrName {
        /// The name as found in the image.
        name: String,
        /// Why it was refused.
        error: IdError,
    },
}

/// [`PlanError::CounterNotInteger`]'s `side` for the merged document.
const MERGED: &str = "merged document";
/// [`PlanError::CounterNotInteger`]'s `side` for the table image.
const IMAGE: &str = "table image";

/// Plans the write that makes a table whose item holds `image` hold
/// `merged` instead (both without key attributes; key attributes present in
/// either are ignored).
///
/// - both `None` → `Ok(None)`; `merged` `None` → [`SinkWrite::Delete`];
/// - `image` `None` → always an [`Update`] (it creates the item), possibly
///   [empty](Update::is_empty);
/// - otherwise `Ok(None)` when nothing differs, else an [`Update`] built
///   attribute by attribute, in name order, by the attribute's policy:
///   - `counter`: `ADD (merged − image)` (absent image counts as 0) when
///     the merged value is present and differs from the image's (in value
///     or presence); `REMOVE` expecting the image value when the merged
///     value is absent;
///   - `set`: with merged and image sets of one type, the added elements
///     are `ADD`ed, the removed ones `DELETE`d; when both happen the
///     attribute is `SET` to the merged set expecting the image value
///     (DynamoDB allows one action per attribute). An absent image counts as
///     an empty set; an absent merged value `DELETE`s all image elements.
///     Anything else (sets of different types, or a value that is not a set,
///     such as the list the engine shows for a set whose writers disagreed
///     on its type) is replaced as `lww`;
///   - `lww`, `multi`: `SET` the merged value expecting the image value
///     (or its absence), or `REMOVE` expecting the image value.
///
/// Empty sets count as absent, so none is ever `SET`.
pub fn plan(
    schema: &TableSchema,
    merged: Option<&BTreeMap<AttrName, AttrValue>>,
    image: Option<&BTreeMap<String, AttrValue>>,
) -> Result<Option<SinkWrite>, PlanError> {
    let merged = match (merged, image) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Ok(Some(SinkWrite::Delete)),
        (Some(merged), _) => merged,
    };
    let is_key = |name: &str| {
        name == schema.partition_key().as_str()
            || schema.sort_key().is_some_and(|k| k.as_str() == name)
    };
    let merged: BTreeMap<&str, (&AttrName, &AttrValue)> = merged
        .iter()
        .filter(|(name, value)| !is_key(name.as_str()) && !is_empty_set(value))
        .map(|(name, value)| (name.as_str(), (name, value)))
        .collect();
    let image_attrs: BTreeMap<&str, &AttrValue> = image
        .into_iter()
        .flatten()
        .filter(|(name, value)| !is_key(name) && !is_empty_set(value))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    let names: BTreeSet<&str> = merged.keys().chain(image_attrs.keys()).copied().collect();

    let mut update = Update::default();
    for name in names {
        let m = merged.get(name).map(|(_, v)| *v);
        let i = image_attrs.get(name).copied();
        let attr = match merged.get(name) {
            Some((attr, _)) => (*attr).clone(),
            None => AttrName::new(name).map_err(|error| PlanError::AttrName {
                name: name.to_owned(),
                error,
            })?,
        };
        match schema.policy(&attr) {
            MergePolicy::Counter => counter(&mut update, attr, m, i)?,
            MergePolicy::Set => set(&mut update, attr, m, i),
            MergePolicy::Lww | MergePolicy::Multi => replace(&mut update, attr, m, i),
        }
    }
    if image.is_none() || !update.is_empty() {
        Ok(Some(SinkWrite::Update(update)))
    } else {
        Ok(None)
    }
}

fn is_empty_set(v: &AttrValue) -> bool {
    match v {
        AttrValue::Ss(s) => s.is_empty(),
        AttrValue::Ns(s) => s.is_empty(),
        AttrValue::Bs(s) => s.is_empty(),
        _ => false,
    }
}

/// A counter's integer value, or why it has none.
fn integer(attr: &AttrName, v: &AttrValue, side: &'static str) -> Result<i128, PlanError> {
    let not_integer = |found: String| PlanError::CounterNotInteger {
        attr: attr.to_string(),
        found,
        side,
    };
    match v {
        AttrValue::N(n) => n.to_i128().ok_or_else(|| not_integer(n.to_string())),
        other => Err(not_integer(other.type_name().to_owned())),
    }
}

fn counter(
    update: &mut Update,
    attr: AttrName,
    merged: Option<&AttrValue>,
    image: Option<&AttrValue>,
) -> Result<(), PlanError> {
    let m = merged.map(|v| integer(&attr, v, MERGED)).transpose()?;
    let i = image.map(|v| integer(&attr, v, IMAGE)).transpose()?;
    match m {
        Some(m) if i != Some(m) => {
            let delta = m
                .checked_sub(i.unwrap_or(0))
                .and_then(Number::try_from_i128)
                .ok_or_else(|| PlanError::CounterDeltaOutOfRange {
                    attr: attr.to_string(),
                    merged: Number::from_i128(m),
                    image: Number::from_i128(i.unwrap_or(0)),
                })?;
            update.add.push((attr, AttrValue::N(delta)));
        }
        Some(_) => {}
        // A counter is absent from the merged document until its first
        // non-zero change: a 0 the table holds is the same count, keep it.
        None if i == Some(0) => {}
        None => replace(update, attr, None, image),
    }
    Ok(())
}

fn set(update: &mut Update, attr: AttrName, merged: Option<&AttrValue>, image: Option<&AttrValue>) {
    let diff = match (merged, image) {
        (None, None) => return,
        (Some(m), None) if is_set(m) => (Some(m.clone()), None),
        (None, Some(i)) if is_set(i) => (None, Some(i.clone())),
        (Some(m), Some(i)) => match set_diff(m, i) {
            Some(diff) => diff,
            None => return replace(update, attr, merged, image),
        },
        _ => return replace(update, attr, merged, image),
    };
    match diff {
        (Some(adds), None) => update.add.push((attr, adds)),
        (None, Some(removes)) => update.delete.push((attr, removes)),
        (Some(_), Some(_)) => replace(update, attr, merged, image),
        (None, None) => {}
    }
}

fn is_set(v: &AttrValue) -> bool {
    matches!(v, AttrValue::Ss(_) | AttrValue::Ns(_) | AttrValue::Bs(_))
}

/// `(merged ∖ image, image ∖ merged)` for two sets of one type, each `None`
/// when empty; `None` when the values are not sets of one type.
fn set_diff(
    merged: &AttrValue,
    image: &AttrValue,
) -> Option<(Option<AttrValue>, Option<AttrValue>)> {
    match (merged, image) {
        (AttrValue::Ss(m), AttrValue::Ss(i)) => Some(diff(m, i, AttrValue::Ss)),
        (AttrValue::Ns(m), AttrValue::Ns(i)) => Some(diff(m, i, AttrValue::Ns)),
        (AttrValue::Bs(m), AttrValue::Bs(i)) => Some(diff(m, i, AttrValue::Bs)),
        _ => None,
    }
}

fn diff<T: Ord + Clone>(
    merged: &BTreeSet<T>,
    image: &BTreeSet<T>,
    wrap: fn(BTreeSet<T>) -> AttrValue,
) -> (Option<AttrValue>, Option<AttrValue>) {
    let non_empty = |s: BTreeSet<T>| (!s.is_empty()).then(|| wrap(s));
    (
        non_empty(merged.difference(image).cloned().collect()),
        non_empty(image.difference(merged).cloned().collect()),
    )
}

/// The register rule: `SET` the merged value, or `REMOVE` the attribute,
/// on the condition that it still holds its image value.
fn replace(
    update: &mut Update,
    attr: AttrName,
    merged: Option<&AttrValue>,
    image: Option<&AttrValue>,
) {
    if merged == image {
        return;
    }
    match merged {
        Some(m) => update.set.push((attr.clone(), m.clone())),
        None => update.remove.push(attr.clone()),
    }
    update.expect.push((attr, image.cloned()));
}

#[cfg(test)]
mod tests;
