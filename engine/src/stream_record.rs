//! DynamoDB change records and the CRDT ops they imply.
//!
//! [`ChangeRecord`] is the decoded form of one record of DynamoDB's Kinesis
//! streaming destination or of DynamoDB Streams (as JSON). [`derive_change`]
//! turns it into a [`Change`] by diffing the old and new images attribute by
//! attribute under the table's merge policies: a counter becomes the
//! increment between the images, a set the elements added and removed, any
//! other attribute its new value.
//!
//! Everything here is a pure function of its inputs. Every [`RecordError`]
//! means "this record cannot be replicated as it is": retrying cannot help,
//! the caller should dead-letter the record (and, for the schema and stream
//! configuration errors, tell the operator the fix the message names).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::change::{Change, Op};
use crate::ids::{AttrName, IdError};
use crate::key::{ItemKey, KeyError};
use crate::schema::{MergePolicy, TableSchema};
use crate::value::{AttrValue, Scalar, ValueError, image_from_dynamodb_json};

/// `ApproximateCreationDateTime` values below this are epoch seconds
/// (DynamoDB Streams); at or above, epoch milliseconds (Kinesis destination).
const SECONDS_BELOW: f64 = 100_000_000_000.0;
/// `ApproximateCreationDateTime` values at or above this are epoch
/// microseconds (the Kinesis destination's default precision) when the
/// record does not state its precision; 1e14 ms would be the year 5138.
const MICROS_FROM: f64 = 100_000_000_000_000.0;

/// Why a record cannot be turned into a change. Every variant means
/// "dead-letter this record": the record itself (or the configuration that
/// produced it) is wrong, and retrying gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not UTF-8 JSON.
    #[error("change record is not UTF-8 JSON: {reason}")]
    NotJson {
        /// The decoder's complaint.
        reason: String,
    },
    /// A required field is absent.
    #[error("change record has no {path}")]
    MissingField {
        /// The JSON path of the field, e.g. `dynamodb`.
        path: &'static str,
    },
    /// A field is present but not of the expected shape.
    #[error("change record field {path}: {reason}")]
    BadField {
        /// The JSON path of the field.
        path: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `eventName` is not INSERT, MODIFY or REMOVE.
    #[error("unknown eventName {name:?} (expected INSERT, MODIFY or REMOVE)")]
    UnknownEvent {
        /// The value found.
        name: String,
    },
    /// An image or the keys hold a value that is not valid DynamoDB JSON.
    #[error("change record field {path}: {error}")]
    BadValue {
        /// `dynamodb.Keys`, `dynamodb.NewImage` or `dynamodb.OldImage`.
        path: &'static str,
        /// What is wrong, with the attribute path.
        error: ValueError,
    },
    /// An attribute name that Tributary cannot hold.
    #[error("attribute name {name:?}: {error}")]
    BadAttrName {
        /// The name found.
        name: String,
        /// Why it was refused.
        error: IdError,
    },
    /// The record is for another table than the schema given.
    #[error("record is for table {found:?} but was decoded with the schema of {expected:?}")]
    WrongTable {
        /// The schema's table.
        expected: String,
        /// The record's table.
        found: String,
    },
    /// A key attribute of the schema is in neither the keys nor the images.
    #[error("key attribute {attr} is missing from the record's Keys and images")]
    MissingKeyAttribute {
        /// The key attribute.
        attr: AttrName,
    },
    /// The record's `Keys` name an attribute the schema does not list as a
    /// key: the configured schema does not match the table's key schema.
    #[error(
        "record key attribute {attr:?} is not a key in the configured schema; \
         configure the table's partition and sort key as in DynamoDB"
    )]
    UnexpectedKeyAttribute {
        /// The attribute.
        attr: String,
    },
    /// A key attribute is not S, N or B.
    #[error("key attribute {attr} must be S, N or B, found {found}")]
    KeyNotScalar {
        /// The key attribute.
        attr: AttrName,
        /// The type found.
        found: &'static str,
    },
    /// The key values break DynamoDB's key limits.
    #[error("invalid item key: {0}")]
    Key(#[from] KeyError),
    /// A `counter` attribute holds something other than an integer number.
    #[error(
        "counter attribute {attr} must be an integer N within ±1.7E+38, \
         found {found} in the {image}"
    )]
    CounterNotInteger {
        /// The attribute.
        attr: AttrName,
        /// The offending value: its type, or the number.
        found: String,
        /// `"old image"` or `"new image"`.
        image: &'static str,
    },
    /// A `set` attribute holds something other than an SS, NS or BS.
    #[error("set attribute {attr} must be SS, NS or BS, found {found} in the {image}")]
    SetWrongType {
        /// The attribute.
        attr: AttrName,
        /// The type found.
        found: &'static str,
        /// `"old image"` or `"new image"`.
        image: &'static str,
    },
    /// A MODIFY without the old image: increments and set differences
    /// cannot be computed.
    #[error(
        "MODIFY record has no OldImage; set the table's stream view type \
         to NEW_AND_OLD_IMAGES"
    )]
    MissingOldImage,
    /// An INSERT or MODIFY without the new image.
    #[error(
        "{event} record has no NewImage; set the table's stream view type \
         to NEW_AND_OLD_IMAGES"
    )]
    MissingNewImage {
        /// The event.
        event: EventName,
    },
}

/// What happened to the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    /// The item was created.
    Insert,
    /// The item was updated or replaced.
    Modify,
    /// The item was deleted.
    Remove,
}

impl EventName {
    /// The name as DynamoDB writes it: `INSERT`, `MODIFY` or `REMOVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Insert => "INSERT",
            EventName::Modify => "MODIFY",
            EventName::Remove => "REMOVE",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded DynamoDB change record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// INSERT, MODIFY or REMOVE.
    pub event: EventName,
    /// The table, when the record names it.
    pub table: Option<String>,
    /// The item's key attributes (`dynamodb.Keys`; empty if absent).
    pub keys: BTreeMap<String, AttrValue>,
    /// The item before the change (`dynamodb.OldImage`).
    pub old_image: Option<BTreeMap<String, AttrValue>>,
    /// The item after the change (`dynamodb.NewImage`).
    pub new_image: Option<BTreeMap<String, AttrValue>>,
    /// When DynamoDB made the change, in epoch milliseconds.
    pub approximate_creation_millis: Option<u64>,
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn image(
    dynamodb: &serde_json::Map<String, Value>,
    name: &str,
    path: &'static str,
) -> Result<Option<BTreeMap<String, AttrValue>>, RecordError> {
    field(dynamodb, name)
        .map(|v| image_from_dynamodb_json(v).map_err(|error| RecordError::BadValue { path, error }))
        .transpose()
}

/// The table name from a DynamoDB Streams ARN
/// (`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`).
fn table_from_arn(arn: &str) -> Option<String> {
    let rest = &arn[arn.find(":table/")? + ":table/".len()..];
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn creation_millis(dynamodb: &serde_json::Map<String, Value>) -> Result<Option<u64>, RecordError> {
    const PATH: &str = "dynamodb.ApproximateCreationDateTime";
    let Some(v) = field(dynamodb, "ApproximateCreationDateTime") else {
        return Ok(None);
    };
    let t = v
        .as_f64()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| RecordError::BadField {
            path: PATH,
            reason: format!("expected a non-negative epoch time, found {v}"),
        })?;
    let precision = field(dynamodb, "ApproximateCreationDateTimePrecision").and_then(Value::as_str);
    let millis = match precision {
        Some("MICROSECOND") => t / 1000.0,
        Some("MILLISECOND") => t,
        _ if t < SECONDS_BELOW => t * 1000.0,
        _ if t >= MICROS_FROM => t / 1000.0,
        _ => t,
    };
    // Finite, non-negative and below 2^64 after the range checks above.
    Ok(Some(millis.round().min(u64::MAX as f64) as u64))
}

impl ChangeRecord {
    /// Decodes a record of DynamoDB's Kinesis streaming destination or of
    /// DynamoDB Streams: `eventName`, optional `tableName` (else taken from
    /// `eventSourceARN` when present), and `dynamodb.{Keys, NewImage,
    /// OldImage, ApproximateCreationDateTime}`. The creation time is read as
    /// epoch seconds when below 1e11 (Streams, possibly fractional), as
    /// microseconds when `ApproximateCreationDateTimePrecision` says so (or
    /// the value is ≥ 1e14), and as milliseconds otherwise (Kinesis).
    pub fn from_json(v: &Value) -> Result<ChangeRecord, RecordError> {
        let obj = v.as_object().ok_or_else(|| RecordError::BadField {
            path: "$",
            reason: "a change record must be a JSON object".to_owned(),
        })?;
        let name =
            field(obj, "eventName").ok_or(RecordError::MissingField { path: "eventName" })?;
        let name = name.as_str().ok_or_else(|| RecordError::BadField {
            path: "eventName",
            reason: format!("expected a string, found {name}"),
        })?;
        let event = match name {
            "INSERT" => EventName::Insert,
            "MODIFY" => EventName::Modify,
            "REMOVE" => EventName::Remove,
            other => {
                return Err(RecordError::UnknownEvent {
                    name: other.to_owned(),
                });
            }
        };
        let table = match field(obj, "tableName") {
            Some(Value::String(t)) => Some(t.clone()),
            Some(other) => {
                return Err(RecordError::BadField {
                    path: "tableName",
                    reason: format!("expected a string, found {other}"),
                });
            }
            None => field(obj, "eventSourceARN")
                .and_then(Value::as_str)
                .and_then(table_from_arn),
        };
        let dynamodb =
            field(obj, "dynamodb").ok_or(RecordError::MissingField { path: "dynamodb" })?;
        let dynamodb = dynamodb.as_object().ok_or_else(|| RecordError::BadField {
            path: "dynamodb",
            reason: "expected an object".to_owned(),
        })?;
        Ok(ChangeRecord {
            event,
            table,
            keys: image(dynamodb, "Keys", "dynamodb.Keys")?.unwrap_or_default(),
            old_image: image(dynamodb, "OldImage", "dynamodb.OldImage")?,
            new_image: image(dynamodb, "NewImage", "dynamodb.NewImage")?,
            approximate_creation_millis: creation_millis(dynamodb)?,
        })
    }

    /// Decodes a record from bytes that must be UTF-8 JSON (see
    /// [`ChangeRecord::from_json`]).
    pub fn from_slice(bytes: &[u8]) -> Result<ChangeRecord, RecordError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RecordError::NotJson {
            reason: format!("not UTF-8: {e}"),
        })?;
        let v: Value = serde_json::from_str(text).map_err(|e| RecordError::NotJson {
            reason: e.to_string(),
        })?;
        Self::from_json(&v)
    }
}

fn item_key(schema: &TableSchema, record: &ChangeRecord) -> Result<ItemKey, RecordError> {
    if let Some(attr) = record.keys.keys().find(|k| {
        schema.partition_key().as_str() != *k && schema.sort_key().is_none_or(|s| s.as_str() != *k)
    }) {
        return Err(RecordError::UnexpectedKeyAttribute { attr: attr.clone() });
    }
    let value = |attr: &AttrName| -> Result<Scalar, RecordError> {
        let name = attr.as_str();
        let v = record
            .keys
            .get(name)
            .or_else(|| record.new_image.as_ref().and_then(|i| i.get(name)))
            .or_else(|| record.old_image.as_ref().and_then(|i| i.get(name)))
            .ok_or_else(|| RecordError::MissingKeyAttribute { attr: attr.clone() })?;
        v.to_scalar().ok_or_else(|| RecordError::KeyNotScalar {
            attr: attr.clone(),
            found: v.type_name(),
        })
    };
    let partition = value(schema.partition_key())?;
    let sort = schema.sort_key().map(value).transpose()?;
    Ok(ItemKey::new(schema.name().clone(), partition, sort)?)
}

const OLD: &str = "old image";
const NEW: &str = "new image";

fn counter_value(
    attr: &AttrName,
    v: Option<&AttrValue>,
    image: &'static str,
) -> Result<i128, RecordError> {
    match v {
        None => Ok(0),
        Some(AttrValue::N(n)) => n.to_i128().ok_or_else(|| RecordError::CounterNotInteger {
            attr: attr.clone(),
            found: n.to_string(),
            image,
        }),
        Some(other) => Err(RecordError::CounterNotInteger {
            attr: attr.clone(),
            found: other.type_name().to_owned(),
            image,
        }),
    }
}

/// The elements of a set attribute. Besides SS/NS/BS this accepts a list of
/// scalars: the form [`crate::value::set_value`] gives a set whose writers
/// disagreed on its element type, which a sink may have written back.
fn set_elements(
    attr: &AttrName,
    v: Option<&AttrValue>,
    image: &'static str,
) -> Result<BTreeSet<Scalar>, RecordError> {
    let wrong = |found| RecordError::SetWrongType {
        attr: attr.clone(),
        found,
        image,
    };
    match v {
        None => Ok(BTreeSet::new()),
        Some(AttrValue::L(items)) => items
            .iter()
            .map(|e| e.to_scalar().ok_or_else(|| wrong("L")))
            .collect(),
        Some(v) => v
            .set_elements()
            .map(|e| e.into_iter().collect())
            .ok_or_else(|| wrong(v.type_name())),
    }
}

fn attr_ops(
    attr: AttrName,
    policy: MergePolicy,
    old: Option<&AttrValue>,
    new: Option<&AttrValue>,
    ops: &mut Vec<Op>,
) -> Result<(), RecordError> {
    if new.is_none() {
        if old.is_some() {
            ops.push(Op::Remove { attr });
        }
        return Ok(());
    }
    match policy {
        MergePolicy::Counter => {
            let before = counter_value(&attr, old, OLD)?;
            let after = counter_value(&attr, new, NEW)?;
            // Both are below 10^38 in magnitude, so the difference fits.
            let amount = after.saturating_sub(before);
            if amount != 0 {
                ops.push(Op::Add { attr, amount });
            }
        }
        MergePolicy::Set => {
            let before = set_elements(&attr, old, OLD)?;
            let after = set_elements(&attr, new, NEW)?;
            let removed: Vec<Scalar> = before.difference(&after).cloned().collect();
            let added: Vec<Scalar> = after.difference(&before).cloned().collect();
            // Removals first: a set whose element type changes must be
            // emptied before elements of the new type are accepted.
            if !removed.is_empty() {
                ops.push(Op::RemoveFromSet {
                    attr: attr.clone(),
                    elements: removed,
                });
            }
            if !added.is_empty() {
                ops.push(Op::AddToSet {
                    attr,
                    elements: added,
                });
            }
        }
        MergePolicy::Lww | MergePolicy::Multi => {
            if let Some(value) = new
                && old != Some(value)
            {
                ops.push(Op::Set {
                    attr,
                    value: value.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Derives the change a record asks for under `schema`.
///
/// The key comes from `record.keys`, falling back to the new and then the
/// old image, and must be S, N or B within DynamoDB's key limits. REMOVE
/// gives `[Op::Delete]`. INSERT and MODIFY need the new image; MODIFY also
/// the old one (INSERT without it diffs against an empty item). Each
/// non-key attribute of either image, except those named in `ignore` (e.g.
/// a sink's marker attribute), is diffed in name order:
///
/// - `counter`: integer N on both sides (absent = 0); a non-zero
///   difference gives [`Op::Add`] (so a counter created as 0 gives nothing).
/// - `set`: SS/NS/BS on both sides (absent = empty); elements only in the
///   old image give [`Op::RemoveFromSet`], then elements only in the new
///   image [`Op::AddToSet`], each sorted.
/// - `lww` / `multi`: a new value different from the old gives [`Op::Set`].
/// - Under every policy, an attribute in the old image but not the new
///   gives [`Op::Remove`].
///
/// A MODIFY that changes nothing replicated yields no ops (a [`Change`]
/// with no ops only makes sure the item exists; callers may skip it).
/// `source_millis` is the record's approximate creation time. A record that
/// names another table than `schema` is refused.
pub fn derive_change(
    schema: &TableSchema,
    record: &ChangeRecord,
    ignore: &[AttrName],
) -> Result<Change, RecordError> {
    if let Some(table) = &record.table
        && table != schema.name().as_str()
    {
        return Err(RecordError::WrongTable {
            expected: schema.name().to_string(),
            found: table.clone(),
        });
    }
    let key = item_key(schema, record)?;
    let mut ops = Vec::new();
    match record.event {
        EventName::Remove => ops.push(Op::Delete),
        event @ (EventName::Insert | EventName::Modify) => {
            let empty = BTreeMap::new();
            let new = record
                .new_image
                .as_ref()
                .ok_or(RecordError::MissingNewImage { event })?;
            let old = match (&record.old_image, event) {
                (Some(old), _) => old,
                (None, EventName::Insert) => &empty,
                (None, _) => return Err(RecordError::MissingOldImage),
            };
            let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for name in names {
                let attr =
                    AttrName::new(name.as_str()).map_err(|error| RecordError::BadAttrName {
                        name: name.clone(),
                        error,
                    })?;
                if schema.is_key(&attr) || ignore.contains(&attr) {
                    continue;
                }
                let policy = schema.policy(&attr);
                attr_ops(attr, policy, old.get(name), new.get(name), &mut ops)?;
            }
        }
    }
    Ok(Change {
        key,
        ops,
        source_millis: record.approximate_creation_millis,
    })
}

#[cfg(test)]
mod tests;
