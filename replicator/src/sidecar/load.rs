//! The initial load: a source that starts with no checkpoint for a table
//! that already holds data scans the table once, then follows the stream
//! from its oldest record, losing nothing in between (snapshot-then-stream).
//!
//! 1. The scan's start time `t0` is recorded (checkpoint
//!    `PREFIX/initial-load` = `scanning:T0:MODE`), minus a second for the
//!    precision of stream timestamps. A node whose own region's writes are
//!    already in its log (a wiped node restored from its peers) loads
//!    images only, whatever the config says: its items are in the log.
//! 2. Every item is ingested as a local change (`initial_load = "items"`)
//!    or only recorded as the item's image (`"image"`), page by page, each
//!    page one atomic commit. A restart mid-scan scans again and skips the
//!    items that already have an image (an image exists only once the item
//!    was loaded: the stream is not read before the scan ends).
//! 3. The scan's end `t1` (plus a second) is recorded: `done:T0:T1`.
//! 4. The stream is read from the oldest record: records from before `t0`
//!    are in the scanned items already; records from within `[t0, t1]`
//!    apply only where they continue from the item's image (see
//!    [`super::classify::Origin::load_window`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tributary_engine::ids::SourceId;
use tributary_engine::log::Attached;
use tributary_engine::store::{Checkpoint, DeadLetter, LogStore};
use tributary_engine::stream_record::{ChangeRecord, EventName, derive_change};
use tributary_engine::value::AttrValue;

use super::aws::describe;
use super::image::{TableImage, image_key};
use super::source::SourceSpec;
use crate::config::InitialLoad;
use crate::dynamo::convert::image_from_sdk;
use crate::node::{Core, now_millis};

/// Slack for the stream's timestamp precision (DynamoDB Streams rounds to
/// the second).
const PRECISION_MS: u64 = 1000;

/// Runs the initial load if this source needs one; returns the scan window
/// the stream's first records are judged by (`None`: no load happened).
pub async fn run(
    core: &Arc<Core>,
    spec: &SourceSpec,
    mode: InitialLoad,
    client: &Client,
    table: &str,
) -> Result<Option<(u64, u64)>, String> {
    let id = SourceId::new(format!("{}/initial-load", spec.prefix)).map_err(|e| e.to_string())?;
    let checkpoints = core.store.checkpoints().map_err(|e| e.to_string())?;
    let mine = |c: &&(SourceId, Checkpoint)| {
        c.0.as_str()
            .strip_prefix(&spec.prefix)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let load = checkpoints
        .iter()
        .filter(mine)
        .find(|(s, _)| *s == id)
        .map(|(_, c)| c.0.clone());
    let streaming = checkpoints.iter().filter(mine).any(|(s, _)| *s != id);
    let (t0, mode) = match load.as_deref().map(|c| c.split(':').collect::<Vec<_>>()) {
        Some(parts) if parts.first() == Some(&"done") => {
            let t = |i: usize| parts.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok((t(2) > 0).then(|| (t(1), t(2))));
        }
        // Resuming a scan: with the mode it started with.
        Some(parts) => (
            parts.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            if parts.get(2) == Some(&"image") {
                InitialLoad::Image
            } else {
                InitialLoad::Items
            },
        ),
        None if streaming || mode == InitialLoad::None => return Ok(None),
        // This region's writes are in the log already (a wiped node
        // restored from its peers): loading the items as new writes would
        // count them twice; learn the images only.
        None if mode == InitialLoad::Items && core.head.borrow().get(core.region()).0 > 0 => {
            tracing::warn!(source = %spec.prefix, "initial load: this region's writes are already in the log (restored from peers); loading the table's images only");
            (
                now_millis().saturating_sub(PRECISION_MS),
                InitialLoad::Image,
            )
        }
        None => (now_millis().saturating_sub(PRECISION_MS), mode),
    };
    let scanning = Checkpoint(format!("scanning:{t0}:{}", mode.name()));
    tracing::info!(source = %spec.prefix, %table, mode = mode.name(), "initial load: scanning the table");
    let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
    let mut items = 0u64;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| format!("Scan {table}: {}", describe(&e)))?;
        let mut changes = Vec::new();
        let mut attached = Attached {
            checkpoints: vec![(id.clone(), scanning.clone())],
            ..Attached::default()
        };
        for item in page.items() {
            items += 1;
            match load_item(core, spec, mode, item) {
                Ok(Some((change, key, image))) => {
                    changes.extend(change);
                    attached.side.push((key, image));
                }
                Ok(None) => {}
                Err(reason) => attached.dead_letters.push(DeadLetter {
                    source: id.clone(),
                    offset: format!("item {items}"),
                    reason,
                    raw: item_json(item).into_bytes(),
                    attempts: 1,
                    at_millis: now_millis(),
                }),
            }
        }
        let report = core
            .writer
            .ingest_with(changes, attached)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("committing loaded items: {e}"))?;
        for refused in report.outcomes.iter().filter_map(|o| o.as_ref().err()) {
            tracing::warn!(source = %spec.prefix, error = %refused, "a loaded item was refused by the log");
        }
        core.sidecar
            .load_progress(&spec.prefix, format!("scanning ({items} items)"));
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    // An empty table needs no window: the stream alone tells everything
    // written since (and `done:T0:0` says so after a restart).
    let t1 = if items == 0 {
        0
    } else {
        now_millis().saturating_add(PRECISION_MS)
    };
    let done = Attached {
        checkpoints: vec![(id, Checkpoint(format!("done:{t0}:{t1}")))],
        ..Attached::default()
    };
    core.writer
        .ingest_with(Vec::new(), done)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("committing the load's end: {e}"))?;
    core.sidecar
        .load_progress(&spec.prefix, format!("done ({items} items)"));
    tracing::info!(source = %spec.prefix, items, "initial load done; following the stream");
    Ok((t1 > 0).then_some((t0, t1)))
}

/// One scanned item: its change (with `"items"`), its image key and image;
/// `None` when it was loaded before (a restart mid-scan).
type Loaded = (Option<tributary_engine::change::Change>, Vec<u8>, Vec<u8>);

fn load_item(
    core: &Core,
    spec: &SourceSpec,
    mode: InitialLoad,
    item: &std::collections::HashMap<String, AttributeValue>,
) -> Result<Option<Loaded>, String> {
    let attrs = image_from_sdk(item).map_err(|e| e.to_string())?;
    let record = ChangeRecord {
        event: EventName::Insert,
        table: None,
        keys: BTreeMap::new(),
        old_image: None,
        new_image: Some(attrs.clone()),
        approximate_creation_millis: None,
    };
    let ignore: Vec<_> = spec.marker.iter().cloned().collect();
    let change = derive_change(&spec.schema, &record, &ignore).map_err(|e| e.to_string())?;
    let key = image_key(&change.key);
    if core.store.side(&key).map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    let marker = spec
        .marker
        .as_ref()
        .and_then(|m| attrs.get(m.as_str()).cloned());
    let is_key_or_marker = |name: &str| {
        spec.schema.partition_key().as_str() == name
            || spec.schema.sort_key().is_some_and(|s| s.as_str() == name)
            || spec.marker.as_ref().is_some_and(|m| m.as_str() == name)
    };
    let image = TableImage {
        attrs: Some(
            attrs
                .into_iter()
                .filter(|(k, _)| !is_key_or_marker(k))
                .collect::<BTreeMap<String, AttrValue>>(),
        ),
        marker,
        recent: Vec::new(),
    };
    let change = (mode == InitialLoad::Items).then_some(change);
    Ok(Some((change, key, image.encode())))
}

/// An item as DynamoDB JSON text (a dead letter's raw bytes).
fn item_json(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    match image_from_sdk(item) {
        Ok(attrs) => serde_json::Value::Object(
            attrs
                .iter()
                .map(|(k, v)| (k.clone(), v.to_dynamodb_json()))
                .collect(),
        )
        .to_string(),
        Err(e) => format!("{{\"unreadable\":{:?}}}", e.to_string()),
    }
}
