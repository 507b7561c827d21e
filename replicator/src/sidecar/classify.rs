//! From raw change records to what one atomic ingest commits: the changes
//! of the application's writes, the new table images, and the dead letters
//! of records that cannot be read. Pure, apart from reading the current
//! images through the closure the caller passes.
//!
//! Per record, in stream order:
//! 1. JSON → [`ChangeRecord`] → [`derive_change`] under the table's schema
//!    (the marker attribute ignored); any failure dead-letters the record
//!    with its reason, raw bytes, shard and offset, and the batch goes on;
//! 2. a record whose event id the item's image has seen is a duplicate
//!    (at-least-once delivery) and changes nothing;
//! 3. the sink's own writes ([`is_sink_write`]) only move the image: their
//!    effect is already in the log, so they are never ingested again (no
//!    echo, no double count);
//! 4. every other record is the application's: its change is ingested
//!    (a MODIFY that changed nothing replicated is skipped), and the image
//!    becomes the record's new image.

use std::collections::BTreeMap;

use tributary_engine::change::Change;
use tributary_engine::ids::{AttrName, SourceId};
use tributary_engine::key::ItemKey;
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{DeadLetter, StoreError};
use tributary_engine::stream_record::{ChangeRecord, EventName, derive_change};

use super::image::{TableImage, image_key, is_sink_write};

/// One record as a source read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The shard it came from.
    pub shard: String,
    /// Its position in the shard (sequence number).
    pub offset: String,
    /// The record: DynamoDB change-record JSON.
    pub bytes: Vec<u8>,
}

/// What a batch of records amounts to.
#[derive(Debug, Default)]
pub struct Classified {
    /// The application's changes, in stream order.
    pub changes: Vec<Change>,
    /// For each change, the index of its record in the batch.
    pub from_record: Vec<usize>,
    /// Images and dead letters (the caller adds the checkpoints).
    pub attached: Attached,
    /// Records that were the sink's own writes.
    pub echoes: u64,
    /// Records already ingested (redelivered).
    pub duplicates: u64,
}

/// How a source names itself and its shards in dead letters.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The source's id prefix, e.g. `kinesis:carts-changes`.
    pub source: &'a str,
    /// Unix milliseconds now (the dead letters' timestamp).
    pub now_millis: u64,
    /// A dead letter retried by an operator, not a record read in stream
    /// order: its change is ingested, but the item's image is left as it
    /// is (later records have moved the table on); only its event id is
    /// remembered, so a second retry is a duplicate.
    pub late: bool,
    /// The initial load's scan window `[start, end]` (Unix ms, widened by
    /// the timestamps' precision): a record from before it is already in
    /// the scanned items; one from within it applies only if it continues
    /// from the item's image (its old image is the image), else the scan
    /// already saw it.
    pub load_window: Option<(u64, u64)>,
}

/// Classifies `records` (see the module docs). `load` reads an item's
/// current image from the store; images changed by earlier records of the
/// batch are taken from the batch.
pub fn classify(
    schema: &TableSchema,
    marker: Option<&AttrName>,
    origin: &Origin<'_>,
    records: &[RawRecord],
    mut load: impl FnMut(&ItemKey) -> Result<TableImage, StoreError>,
) -> Result<Classified, StoreError> {
    let mut out = Classified::default();
    let mut images: BTreeMap<ItemKey, TableImage> = BTreeMap::new();
    let ignore: Vec<AttrName> = marker.cloned().into_iter().collect();
    for (index, record) in records.iter().enumerate() {
        let (value, parsed, change) = match read(schema, &ignore, &record.bytes) {
            Ok(read) => read,
            Err(reason) => {
                out.attached
                    .dead_letters
                    .push(dead_letter(origin, record, reason));
                continue;
            }
        };
        let event_id = value.get("eventID").and_then(serde_json::Value::as_str);
        let image = match images.get_mut(&change.key) {
            Some(image) => image,
            None => {
                let loaded = load(&change.key)?;
                images.entry(change.key.clone()).or_insert(loaded)
            }
        };
        if image.has_seen(event_id) || reflected_by_load(origin, &parsed, image, schema, marker) {
            out.duplicates += 1;
            continue;
        }
        image.remember(event_id);
        if origin.late {
            out.changes.push(change);
            out.from_record.push(index);
            continue;
        }
        let removed = parsed.event == EventName::Remove;
        let (old_marker, new_marker) = match marker {
            Some(m) => (
                parsed.old_image.as_ref().and_then(|i| i.get(m.as_str())),
                parsed.new_image.as_ref().and_then(|i| i.get(m.as_str())),
            ),
            None => (None, None),
        };
        let sink = marker.is_some() && is_sink_write(removed, old_marker, new_marker);
        image.marker = new_marker.cloned();
        image.attrs = parsed.new_image.as_ref().filter(|_| !removed).map(|new| {
            new.iter()
                .filter(|(name, _)| !is_key_or_marker(schema, marker, name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        if sink {
            out.echoes += 1;
        } else if !(parsed.event == EventName::Modify && change.ops.is_empty()) {
            out.changes.push(change);
            out.from_record.push(index);
        }
    }
    out.attached.side = images
        .iter()
        .map(|(key, image)| (image_key(key), image.encode()))
        .collect();
    Ok(out)
}

/// Whether the initial load's scan already holds this record's effect.
fn reflected_by_load(
    origin: &Origin<'_>,
    record: &ChangeRecord,
    image: &TableImage,
    schema: &TableSchema,
    marker: Option<&AttrName>,
) -> bool {
    let (Some((start, end)), Some(at)) = (origin.load_window, record.approximate_creation_millis)
    else {
        return false;
    };
    if at < start {
        return true;
    }
    if at > end {
        return false;
    }
    !continues_from(image, record, schema, marker)
}

/// Whether `record` continues from `image`: its old row is what the image
/// holds. An insert continues from no item, and from an item that holds
/// nothing but its key: a write that creates an item can be recorded as
/// two inserts, the key and then the item (moto does this for an
/// `UpdateItem` of a new item), and a scan between the two sees the key
/// alone. Inside an initial load's window, a record that continues is
/// applied; one that does not was seen by the scan already (the scanned
/// row is a later state) and is skipped.
pub fn continues_from(
    image: &TableImage,
    record: &ChangeRecord,
    schema: &TableSchema,
    marker: Option<&AttrName>,
) -> bool {
    if record.old_image.is_none()
        && image.marker.is_none()
        && image.attrs.as_ref().is_none_or(BTreeMap::is_empty)
    {
        return true;
    }
    let old_attrs = record.old_image.as_ref().map(|old| {
        old.iter()
            .filter(|(name, _)| !is_key_or_marker(schema, marker, name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    });
    let old_marker = match (marker, &record.old_image) {
        (Some(m), Some(old)) => old.get(m.as_str()).cloned(),
        _ => None,
    };
    old_attrs == image.attrs && old_marker == image.marker
}

pub(crate) fn is_key_or_marker(
    schema: &TableSchema,
    marker: Option<&AttrName>,
    name: &str,
) -> bool {
    schema.partition_key().as_str() == name
        || schema.sort_key().is_some_and(|s| s.as_str() == name)
        || marker.is_some_and(|m| m.as_str() == name)
}

/// Parses one record: its JSON, the decoded record and its change.
fn read(
    schema: &TableSchema,
    ignore: &[AttrName],
    bytes: &[u8],
) -> Result<(serde_json::Value, ChangeRecord, Change), String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("change record is not JSON: {e}"))?;
    let parsed = ChangeRecord::from_json(&value).map_err(|e| e.to_string())?;
    let change = derive_change(schema, &parsed, ignore).map_err(|e| e.to_string())?;
    Ok((value, parsed, change))
}

/// The dead letter of `record`, refused for `reason`.
pub fn dead_letter(origin: &Origin<'_>, record: &RawRecord, reason: String) -> DeadLetter {
    let id = format!("{}/{}", origin.source, record.shard);
    DeadLetter {
        // Source ids allow any printable text; a control character in a
        // shard id would be the stream's bug, and the prefix still names it.
        source: SourceId::new(&id)
            .or_else(|_| SourceId::new(origin.source))
            .unwrap_or_else(|_| unreachable_source()),
        offset: record.offset.clone(),
        reason,
        raw: record.bytes.clone(),
        attempts: 1,
        at_millis: origin.now_millis,
    }
}

fn unreachable_source() -> SourceId {
    // A constant, valid id.
    SourceId::new("source").unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tributary_engine::change::Op;
    use tributary_engine::ids::TableName;
    use tributary_engine::schema::MergePolicy;
    use tributary_engine::value::AttrValue;

    use super::*;

    fn schema() -> TableSchema {
        let name = |s: &str| AttrName::new(s).expect("valid");
        TableSchema::new(TableName::new("carts").expect("valid"), name("pk"), None)
            .expect("schema")
            .with_policy(name("qty"), MergePolicy::Counter)
            .expect("policy")
    }

    fn marker() -> AttrName {
        AttrName::new("tributary_sink").expect("valid")
    }

    fn record(offset: u32, v: serde_json::Value) -> RawRecord {
        RawRecord {
            shard: "shard-0".into(),
            offset: offset.to_string(),
            bytes: serde_json::to_vec(&v).expect("json"),
        }
    }

    fn modify(id: &str, old: serde_json::Value, new: serde_json::Value) -> serde_json::Value {
        json!({"eventID": id, "eventName": "MODIFY", "dynamodb": {
            "Keys": {"pk": {"S": "u1"}}, "OldImage": old, "NewImage": new}})
    }

    fn run(records: &[RawRecord]) -> Classified {
        let origin = Origin {
            source: "kinesis:carts-changes",
            now_millis: 7,
            late: false,
            load_window: None,
        };
        classify(&schema(), Some(&marker()), &origin, records, |_| {
            Ok(TableImage::default())
        })
        .expect("classify")
    }

    #[test]
    fn application_writes_become_changes_and_move_the_image() {
        let out = run(&[record(
            1,
            modify(
                "e1",
                json!({"pk": {"S": "u1"}, "qty": {"N": "1"}, "tributary_sink": {"N": "5"}}),
                json!({"pk": {"S": "u1"}, "qty": {"N": "4"}, "tributary_sink": {"N": "5"}}),
            ),
        )]);
        assert_eq!(out.changes.len(), 1);
        assert!(
            matches!(out.changes[0].ops.as_slice(), [Op::Add { .. }]),
            "{:?}",
            out.changes
        );
        let [(_, bytes)] = out.attached.side.as_slice() else {
            panic!("one image expected: {:?}", out.attached.side);
        };
        let image = TableImage::decode(bytes).expect("image");
        let attrs = image.attrs.expect("item exists");
        assert_eq!(
            attrs.keys().collect::<Vec<_>>(),
            ["qty"],
            "no key, no marker"
        );
        assert_eq!(image.recent, ["e1"]);
    }

    #[test]
    fn the_sinks_writes_and_redeliveries_are_not_ingested_again() {
        let sink = modify(
            "e1",
            json!({"pk": {"S": "u1"}, "qty": {"N": "1"}}),
            json!({"pk": {"S": "u1"}, "qty": {"N": "4"}, "tributary_sink": {"N": "9"}}),
        );
        let app = modify(
            "e2",
            json!({"pk": {"S": "u1"}, "qty": {"N": "4"}, "tributary_sink": {"N": "9"}}),
            json!({"pk": {"S": "u1"}, "qty": {"N": "6"}, "tributary_sink": {"N": "9"}}),
        );
        let out = run(&[record(1, sink), record(2, app.clone()), record(3, app)]);
        assert_eq!((out.echoes, out.duplicates), (1, 1));
        assert_eq!(
            out.changes.len(),
            1,
            "only the application's write: {:?}",
            out.changes
        );
    }

    #[test]
    fn unreadable_records_are_dead_letters_and_the_batch_goes_on() {
        let good = json!({"eventID": "e9", "eventName": "INSERT", "dynamodb": {
            "Keys": {"pk": {"S": "u2"}}, "NewImage": {"pk": {"S": "u2"}, "qty": {"N": "2"}}}});
        let out = run(&[
            RawRecord {
                shard: "shard-0".into(),
                offset: "1".into(),
                bytes: b"{not json".to_vec(),
            },
            record(2, json!({"eventName": "TRUNCATE", "dynamodb": {}})),
            record(3, good),
        ]);
        assert_eq!(out.changes.len(), 1);
        let reasons: Vec<_> = out
            .attached
            .dead_letters
            .iter()
            .map(|d| (d.offset.as_str(), d.source.as_str(), d.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].1, "kinesis:carts-changes/shard-0");
        assert!(reasons[0].2.contains("not JSON"), "{reasons:?}");
        assert!(reasons[1].2.contains("TRUNCATE"), "{reasons:?}");
        assert_eq!(out.attached.dead_letters[0].raw, b"{not json");
    }

    /// Records of one item with their creation time, `a`, `b`: a create by
    /// `UpdateItem` recorded as two inserts (key, then item), then updates.
    fn created_then_updated() -> Vec<(serde_json::Value, Option<BTreeMap<String, AttrValue>>)> {
        let key = json!({"pk": {"S": "u1"}});
        let item = |qty: i64, colour: &str| json!({"pk": {"S": "u1"}, "qty": {"N": qty.to_string()}, "colour": {"S": colour}});
        let states = [
            key.clone(),
            item(1, "red"),
            item(2, "blue"),
            item(3, "blue"),
        ];
        let mut out = Vec::new();
        for (i, new) in states.iter().enumerate() {
            let (event, old) = match i {
                0 | 1 => ("INSERT", None),
                _ => ("MODIFY", Some(states[i - 1].clone())),
            };
            let mut dynamodb = json!({"Keys": key, "NewImage": new,
                "ApproximateCreationDateTime": 1_700_000_000_500u64 + i as u64});
            if let Some(old) = old {
                dynamodb["OldImage"] = old;
            }
            let record =
                json!({"eventID": format!("e{i}"), "eventName": event, "dynamodb": dynamodb});
            let scanned = tributary_engine::value::image_from_dynamodb_json(new).expect("image");
            out.push((record, Some(scanned)));
        }
        out
    }

    #[test]
    fn a_scan_at_any_point_of_a_create_counts_every_write_once() {
        let records = created_then_updated();
        let raw: Vec<RawRecord> = records
            .iter()
            .enumerate()
            .map(|(i, (r, _))| record(i as u32, r.clone()))
            .collect();
        let origin = Origin {
            source: "dynamodb-streams:carts",
            now_millis: 7,
            late: false,
            load_window: Some((1_700_000_000_000, 1_700_000_002_000)),
        };
        // The scan saw the item as it was before the first record, or
        // after record `seen`.
        let scans = std::iter::once(None).chain(records.iter().map(|(_, s)| s.clone()));
        for (seen, scanned) in scans.enumerate() {
            let scanned_qty = scanned.as_ref().and_then(|s| s.get("qty")).map_or(0, |q| {
                let AttrValue::N(n) = q else {
                    panic!("qty {q:?}")
                };
                n.to_i128().expect("integer")
            });
            let image = TableImage {
                attrs: scanned.map(|s| {
                    s.into_iter()
                        .filter(|(k, _)| k != "pk")
                        .collect::<BTreeMap<_, _>>()
                }),
                ..TableImage::default()
            };
            let out = classify(&schema(), Some(&marker()), &origin, &raw, |_| {
                Ok(image.clone())
            })
            .expect("classify");
            let added: i128 = out
                .changes
                .iter()
                .flat_map(|c| &c.ops)
                .map(|op| match op {
                    Op::Add { amount, .. } => *amount,
                    _ => 0,
                })
                .sum();
            assert_eq!(
                scanned_qty + added,
                3,
                "scan after {seen} records: {} changes, {} duplicates",
                out.changes.len(),
                out.duplicates
            );
            let [(_, bytes)] = out.attached.side.as_slice() else {
                panic!("one image expected");
            };
            let last = TableImage::decode(bytes).expect("image");
            assert_eq!(
                last.attrs.as_ref().and_then(|a| a.get("colour")),
                Some(&AttrValue::S("blue".into())),
                "scan after {seen} records"
            );
        }
    }

    #[test]
    fn the_sinks_delete_is_recognised_by_its_negative_marker() {
        let delete = |m: i64| {
            json!({"eventID": format!("d{m}"), "eventName": "REMOVE", "dynamodb": {
                "Keys": {"pk": {"S": "u1"}},
                "OldImage": {"pk": {"S": "u1"}, "tributary_sink": {"N": m.to_string()}}}})
        };
        let out = run(&[record(1, delete(-12))]);
        assert_eq!((out.changes.len(), out.echoes), (0, 1));
        let out = run(&[record(1, delete(12))]);
        assert!(matches!(out.changes[0].ops.as_slice(), [Op::Delete]));
    }
}
