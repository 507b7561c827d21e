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
//!
//! The table's sinks wait until the load is done
//! ([`super::facts::SidecarFacts::wait_loaded`]): a row the sink wrote
//! during the scan holds other regions' contributions, which the scan
//! would take for this region's writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tributary_engine::ids::{AttrName, SourceId};
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{Checkpoint, DeadLetter, LogStore};
use tributary_engine::stream_record::{ChangeRecord, EventName, derive_change};
use tributary_engine::value::AttrValue;

use super::aws::describe;
use super::classify::is_key_or_marker;
use super::image::{TableImage, image_key};
use super::source::SourceSpec;
use crate::config::InitialLoad;
use crate::dynamo::convert::image_from_sdk;
use crate::node::{Core, now_millis};

/// Slack for the stream's timestamp precision (DynamoDB Streams rounds to
/// the second).
const PRECISION_MS: u64 = 1000;

/// Runs the initial load of a DynamoDB table if this source needs one;
/// returns the scan window the stream's first records are judged by
/// (`None`: no load happened).
pub async fn run(
    core: &Arc<Core>,
    spec: &SourceSpec,
    mode: InitialLoad,
    client: &Client,
    table: &str,
) -> Result<Option<(u64, u64)>, String> {
    let checkpoints = core.store.checkpoints().map_err(|e| e.to_string())?;
    // Any shard checkpoint: the stream was read before.
    let streaming = checkpoints.iter().any(|(s, _)| {
        s.as_str()
            .strip_prefix(&spec.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|shard| shard != LOAD)
    });
    let start = || now_millis().saturating_sub(PRECISION_MS).to_string();
    let mut load = match begin(core, &spec.prefix, streaming, mode, start)? {
        Start::Skip => return Ok(None),
        Start::Done { start, end } => {
            let (t0, t1) = (start.parse().unwrap_or(0), end.parse().unwrap_or(0));
            return Ok((t1 > 0).then_some((t0, t1)));
        }
        Start::Scan(load) => load,
    };
    tracing::info!(source = %spec.prefix, %table, mode = load.mode.name(), "initial load: scanning the table");
    let mut from: Option<std::collections::HashMap<String, AttributeValue>> = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(from.take())
            .send()
            .await
            .map_err(|e| format!("Scan {table}: {}", describe(&e)))?;
        let rows = page
            .items()
            .iter()
            .map(|item| image_from_sdk(item).map_err(|e| (e.to_string(), item_json(item))))
            .collect();
        load.page(core, &spec.schema, spec.marker.as_ref(), rows)
            .await?;
        match page.last_evaluated_key() {
            Some(k) => from = Some(k.clone()),
            None => break,
        }
    }
    // An empty table needs no window: the stream alone tells everything
    // written since (and `done:T0:0` says so after a restart).
    let t1 = if load.rows == 0 {
        0
    } else {
        now_millis().saturating_add(PRECISION_MS)
    };
    let t0 = load.start.parse().unwrap_or(0);
    load.finish(core, t1.to_string()).await?;
    Ok((t1 > 0).then_some((t0, t1)))
}

/// The id suffix of a source's load checkpoint (`PREFIX/initial-load`).
const LOAD: &str = "initial-load";

/// Where a source's initial load stands.
pub enum Start {
    /// No load: the source read its stream before, or the config says
    /// `"none"`.
    Skip,
    /// The load finished; its start and end marks.
    Done {
        /// The mark recorded before the scan.
        start: String,
        /// The mark recorded after it.
        end: String,
    },
    /// A scan is to run (or to run again, after a restart mid-scan).
    Scan(Load),
}

/// Decides what the load of the source `prefix` does, from its checkpoint
/// `PREFIX/initial-load` (`scanning:START:MODE` or `done:START:END`);
/// `streaming` says whether the source has stream checkpoints, and
/// `start_mark` gives the mark a new scan starts at (a time, an LSN).
pub fn begin(
    core: &Core,
    prefix: &str,
    streaming: bool,
    configured: InitialLoad,
    start_mark: impl FnOnce() -> String,
) -> Result<Start, String> {
    let id = SourceId::new(format!("{prefix}/{LOAD}")).map_err(|e| e.to_string())?;
    let recorded = core.store.checkpoint(&id).map_err(|e| e.to_string())?;
    let parts: Option<Vec<String>> = recorded.map(|c| c.0.split(':').map(str::to_owned).collect());
    let part = |parts: &[String], i: usize| parts.get(i).cloned().unwrap_or_default();
    let (start, mode) = match parts {
        Some(parts) if parts.first().map(String::as_str) == Some("done") => {
            return Ok(Start::Done {
                start: part(&parts, 1),
                end: part(&parts, 2),
            });
        }
        // Resuming a scan: with the mode it started with.
        Some(parts) => (
            part(&parts, 1),
            if parts.get(2).map(String::as_str) == Some("image") {
                InitialLoad::Image
            } else {
                InitialLoad::Items
            },
        ),
        None if streaming || configured == InitialLoad::None => return Ok(Start::Skip),
        // This region's writes are in the log already (a wiped node
        // restored from its peers): loading the items as new writes would
        // count them twice; learn the images only.
        None if configured == InitialLoad::Items && core.head.borrow().get(core.region()).0 > 0 => {
            tracing::warn!(source = %prefix, "initial load: this region's writes are already in the log (restored from peers); loading the table's images only");
            (start_mark(), InitialLoad::Image)
        }
        None => (start_mark(), configured),
    };
    Ok(Start::Scan(Load {
        scanning: Checkpoint(format!("scanning:{start}:{}", mode.name())),
        id,
        prefix: prefix.to_owned(),
        mode,
        start,
        rows: 0,
    }))
}

/// A scan in progress: each page of rows is one atomic commit.
pub struct Load {
    id: SourceId,
    prefix: String,
    scanning: Checkpoint,
    /// Whether rows become changes or only images.
    pub mode: InitialLoad,
    /// The mark recorded before the scan.
    pub start: String,
    /// Rows scanned so far.
    pub rows: u64,
}

/// A scanned row: its attributes, or why they could not be read and the
/// row as text.
pub type ScannedRow = Result<BTreeMap<String, AttrValue>, (String, String)>;

impl Load {
    /// Commits one page of scanned rows: each row's change (`"items"`) and
    /// image, skipping rows loaded before a restart; unreadable rows are
    /// dead letters.
    pub async fn page(
        &mut self,
        core: &Arc<Core>,
        schema: &TableSchema,
        marker: Option<&AttrName>,
        rows: Vec<ScannedRow>,
    ) -> Result<(), String> {
        let mut changes = Vec::new();
        let mut attached = Attached {
            checkpoints: vec![(self.id.clone(), self.scanning.clone())],
            ..Attached::default()
        };
        for row in rows {
            self.rows += 1;
            let loaded = row.and_then(|attrs| {
                load_item(core, schema, marker, self.mode, &attrs)
                    .map_err(|reason| (reason, attrs_json(&attrs)))
            });
            match loaded {
                Ok(Some((change, key, image))) => {
                    changes.extend(change);
                    attached.side.push((key, image));
                }
                Ok(None) => {}
                Err((reason, raw)) => attached.dead_letters.push(DeadLetter {
                    source: self.id.clone(),
                    offset: format!("row {}", self.rows),
                    reason,
                    raw: raw.into_bytes(),
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
            .map_err(|e| format!("committing loaded rows: {e}"))?;
        for refused in report.outcomes.iter().filter_map(|o| o.as_ref().err()) {
            tracing::warn!(source = %self.prefix, error = %refused, "a loaded row was refused by the log");
        }
        core.sidecar
            .load_progress(&self.prefix, format!("scanning ({} items)", self.rows));
        Ok(())
    }

    /// Records the load's end (`done:START:END`): the stream follows.
    pub async fn finish(self, core: &Arc<Core>, end: String) -> Result<(), String> {
        let done = Attached {
            checkpoints: vec![(self.id, Checkpoint(format!("done:{}:{end}", self.start)))],
            ..Attached::default()
        };
        core.writer
            .ingest_with(Vec::new(), done)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("committing the load's end: {e}"))?;
        core.sidecar
            .load_progress(&self.prefix, format!("done ({} items)", self.rows));
        tracing::info!(source = %self.prefix, rows = self.rows, "initial load done; following the stream");
        Ok(())
    }
}

/// One scanned item: its change (with `"items"`), its image key and image;
/// `None` when it was loaded before (a restart mid-scan).
type Loaded = (Option<tributary_engine::change::Change>, Vec<u8>, Vec<u8>);

fn load_item(
    core: &Core,
    schema: &TableSchema,
    marker: Option<&AttrName>,
    mode: InitialLoad,
    attrs: &BTreeMap<String, AttrValue>,
) -> Result<Option<Loaded>, String> {
    let record = ChangeRecord {
        event: EventName::Insert,
        table: None,
        keys: BTreeMap::new(),
        old_image: None,
        new_image: Some(attrs.clone()),
        approximate_creation_millis: None,
    };
    let ignore: Vec<_> = marker.into_iter().cloned().collect();
    let change = derive_change(schema, &record, &ignore).map_err(|e| e.to_string())?;
    let key = image_key(&change.key);
    if core.store.side(&key).map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    let image = TableImage {
        marker: marker.and_then(|m| attrs.get(m.as_str()).cloned()),
        attrs: Some(
            attrs
                .iter()
                .filter(|(k, _)| !is_key_or_marker(schema, marker, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        recent: Vec::new(),
    };
    let change = (mode == InitialLoad::Items).then_some(change);
    Ok(Some((change, key, image.encode())))
}

/// An item as DynamoDB JSON text (a dead letter's raw bytes).
fn item_json(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    match image_from_sdk(item) {
        Ok(attrs) => attrs_json(&attrs),
        Err(e) => format!("{{\"unreadable\":{:?}}}", e.to_string()),
    }
}

/// Attributes as DynamoDB JSON text.
fn attrs_json(attrs: &BTreeMap<String, AttrValue>) -> String {
    serde_json::Value::Object(
        attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_dynamodb_json()))
            .collect(),
    )
    .to_string()
}
