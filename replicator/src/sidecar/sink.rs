//! `kind = "dynamodb"` sink: writes merged results back to the local table.
//!
//! The sink follows the log like a peer link does (every origin, in HLC
//! order, from a durable cursor) and marks each item of its table that an
//! entry touched. For a marked item it reads, from one consistent view,
//! the merged state and the table image (what the table holds as of the
//! latest stream record, see [`super::image`]) and writes the difference
//! ([`crate::dynamo::plan`]): counters as `ADD` of what the table lacks,
//! set elements as `ADD`/`DELETE`, other attributes as `SET`/`REMOVE`
//! conditioned on the value the image shows — so a concurrent local write
//! is never overwritten by an older merged value; the condition fails, the
//! source ingests the local write, and the item is tried again.
//!
//! Every write also sets the marker attribute to a larger token,
//! conditioned on the marker the image shows (compare-and-swap). That
//! makes the sink's writes recognisable to the source (no echo) and makes
//! a write retried after a crash — whose stream record has not been read
//! yet — fail its condition instead of adding a counter twice. A delete is
//! two writes: the marker set to a negative token, then a `DeleteItem`
//! conditioned on it; the source recognises a delete of an item with a
//! negative marker as the sink's.
//!
//! Failures: a condition failure is a conflict (retried once the image has
//! moved, with backoff); throttling, 5xx and network errors are retried
//! with exponential backoff and full jitter, each attempt recomputing the
//! write from the latest merged state; validation errors (an item too
//! large, a value the table refuses) dead-letter the item with the reason.
//! A cursor entry is persisted with the set of items still pending, so a
//! restart resumes both.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tributary_engine::ids::{SourceId, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{Checkpoint, DeadLetter, LogStore, entries_above};

use super::aws::describe;
use super::image::{TableImage, image_key, next_token};
use crate::config::DynamoSinkConfig;
use crate::dynamo::convert::{Expression, key_to_sdk, update_expression};
use crate::dynamo::plan::{SinkWrite, plan};
use crate::link::Backoff;
use crate::node::{Core, now_millis};

/// Log entries read per round.
const READ_LIMIT: usize = 1000;

/// The sink's durable position: the log entries it has handled, and the
/// items still to write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    done: VersionVector,
    /// Encoded item keys, base64.
    pending: Vec<String>,
}

/// What one write attempt came to.
#[derive(Debug)]
enum Outcome {
    /// The table holds the merged document (or nothing needed writing).
    Done,
    /// A condition failed: the table moved since the image was taken.
    Conflict,
    /// A transient failure: retry.
    Retry(String),
    /// A permanent failure: dead-letter.
    Dead(String),
}

struct Pending {
    backoff: Backoff,
    at: Instant,
}

/// The sink's settings, shared by its write tasks.
struct Sink {
    id: String,
    table: String,
    schema: TableSchema,
    marker: String,
    client: Client,
    core: Arc<Core>,
}

/// Runs the sink until the node shuts down.
pub async fn run(core: Arc<Core>, config: DynamoSinkConfig, schema: TableSchema, client: Client) {
    let sink = Arc::new(Sink {
        id: format!("sink:dynamodb:{}", config.table),
        table: config.table.to_string(),
        schema,
        marker: config.marker_attribute.as_str().to_owned(),
        client,
        core: Arc::clone(&core),
    });
    let Ok(source_id) = SourceId::new(&sink.id) else {
        tracing::error!(sink = %sink.id, "invalid sink id");
        return;
    };
    let mut cursor: Cursor = core
        .store
        .checkpoint(&source_id)
        .ok()
        .flatten()
        .and_then(|c| serde_json::from_str(&c.0).ok())
        .unwrap_or_default();
    let backoff = || Backoff::new(config.retry_backoff_initial, config.retry_backoff_max);
    let mut pending: BTreeMap<ItemKey, Pending> = BTreeMap::new();
    for key in &cursor.pending {
        if let Some(key) = base64::engine::general_purpose::STANDARD
            .decode(key)
            .ok()
            .and_then(|b| ItemKey::decode(&b).ok())
        {
            pending.insert(
                key,
                Pending {
                    backoff: backoff(),
                    at: Instant::now(),
                },
            );
        }
    }
    let mut head = core.head.clone();
    let mut shutdown = core.shutdown.clone();
    let mut saved = cursor.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Mark the items new log entries touched.
        let now_head = head.borrow_and_update().clone();
        match mark(&sink, &now_head, &mut cursor.done) {
            Ok(keys) => {
                for key in keys {
                    pending.entry(key).or_insert_with(|| Pending {
                        backoff: backoff(),
                        at: Instant::now(),
                    });
                }
            }
            Err(e) => tracing::warn!(sink = %sink.id, error = %e, "reading the log failed"),
        }
        for key in core.sidecar.take_rewrites(&sink.id) {
            pending.insert(
                key,
                Pending {
                    backoff: backoff(),
                    at: Instant::now(),
                },
            );
        }
        // Write what is due, `concurrency` at a time.
        let now = Instant::now();
        let due: Vec<ItemKey> = pending
            .iter()
            .filter(|(_, p)| p.at <= now)
            .map(|(k, _)| k.clone())
            .take(config.concurrency.max(1) * 4)
            .collect();
        let mut tasks = JoinSet::new();
        let mut results = Vec::new();
        for key in due {
            if tasks.len() >= config.concurrency.max(1)
                && let Some(Ok(r)) = tasks.join_next().await
            {
                results.push(r);
            }
            let sink = Arc::clone(&sink);
            tasks.spawn(async move {
                let outcome = write_item(&sink, &key).await;
                (key, outcome)
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        for (key, outcome) in results {
            settle(&sink, &mut pending, key, outcome);
        }
        core.sidecar.sink_backlog(&sink.id, pending.len());
        core.sidecar.sink_cursor(&sink.id, &cursor.done);
        cursor.pending = pending
            .keys()
            .map(|k| base64::engine::general_purpose::STANDARD.encode(k.encode()))
            .collect();
        if cursor != saved {
            if let Err(e) = save(&core, &source_id, &cursor).await {
                tracing::warn!(sink = %sink.id, error = %e, "saving the sink's cursor failed");
            } else {
                saved = cursor.clone();
            }
        }
        // Sleep until the log moves, the next retry is due, or shutdown.
        let next = pending
            .values()
            .map(|p| p.at)
            .min()
            .unwrap_or_else(|| Instant::now() + IDLE_WAKE);
        let caught_up = cursor.done == *head.borrow() || !cursor.done.dominated_by(&head.borrow());
        if pending.values().any(|p| p.at <= Instant::now()) || !caught_up {
            continue;
        }
        tokio::select! {
            _ = head.changed() => {}
            _ = shutdown.changed() => {}
            () = core.sidecar.wake.notified() => {}
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Reads the log above `done` and returns the items of the sink's table
/// the entries touched, advancing `done`. When the log was truncated (or a
/// snapshot installed) past `done`, every item of the table is marked.
fn mark(
    sink: &Sink,
    head: &VersionVector,
    done: &mut VersionVector,
) -> Result<BTreeSet<ItemKey>, tributary_engine::store::StoreError> {
    let store = &sink.core.store;
    let mut keys = BTreeSet::new();
    let log_start = store.log_start()?;
    if !log_start.dominated_by(done) && log_start.iter().any(|(o, s)| s > done.get(o)) {
        // Entries the sink never saw are gone: look at every item.
        let table = sink.schema.name().clone();
        let mut after: Option<ItemKey> = None;
        loop {
            let page = store.scan_items(Some(&table), after.as_ref(), 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            keys.extend(page.into_iter().map(|(k, _)| k));
        }
        done.join(&log_start);
    }
    let entries = entries_above(store, head, done, READ_LIMIT)?;
    for e in entries {
        if e.seq > done.get(&e.origin) {
            done.set(e.origin.clone(), e.seq);
        }
        if e.key.table() == sink.schema.name() {
            keys.insert(e.key);
        }
    }
    Ok(keys)
}

fn settle(sink: &Sink, pending: &mut BTreeMap<ItemKey, Pending>, key: ItemKey, outcome: Outcome) {
    let facts = &sink.core.sidecar;
    match outcome {
        Outcome::Done => {
            pending.remove(&key);
        }
        Outcome::Conflict => {
            facts.sink_outcome(&sink.id, "conflict", None);
            if let Some(p) = pending.get_mut(&key) {
                p.at = Instant::now() + p.backoff.next_delay(rand::random::<f64>());
            }
        }
        Outcome::Retry(error) => {
            facts.sink_outcome(&sink.id, "retry", Some(&error));
            tracing::warn!(sink = %sink.id, key = %key, %error, "sink write failed; retrying");
            if let Some(p) = pending.get_mut(&key) {
                p.at = Instant::now() + p.backoff.next_delay(rand::random::<f64>());
            }
        }
        Outcome::Dead(reason) => {
            facts.sink_outcome(&sink.id, "dead_letter", Some(&reason));
            tracing::error!(sink = %sink.id, key = %key, %reason, "sink write refused; item dead-lettered");
            pending.remove(&key);
            let letter = DeadLetter {
                source: SourceId::new(&sink.id).unwrap_or_else(|_| unreachable!()),
                offset: base64::engine::general_purpose::STANDARD.encode(key.encode()),
                reason,
                raw: key.to_string().into_bytes(),
                attempts: 1,
                at_millis: now_millis(),
            };
            if let Err(e) = sink.core.store.put_dead_letter(&letter) {
                tracing::error!(sink = %sink.id, error = %e, "storing a dead letter failed");
            }
            sink.core
                .metrics
                .dead_letters
                .with_label_values(&[&sink.id])
                .inc();
        }
    }
}

async fn save(core: &Core, id: &SourceId, cursor: &Cursor) -> anyhow::Result<()> {
    let text = serde_json::to_string(cursor)?;
    let attached = Attached {
        checkpoints: vec![(id.clone(), Checkpoint(text))],
        ..Attached::default()
    };
    core.writer.ingest_with(Vec::new(), attached).await??;
    Ok(())
}

/// Makes the table hold `key`'s merged document, once.
async fn write_item(sink: &Sink, key: &ItemKey) -> Outcome {
    let store = Arc::clone(&sink.core.store);
    let read_key = key.clone();
    let read =
        tokio::task::spawn_blocking(move || store.item_and_side(&read_key, &image_key(&read_key)))
            .await;
    let (state, image) = match read {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Outcome::Retry(format!("reading the item: {e}")),
        Err(e) => return Outcome::Retry(format!("reading the item: {e}")),
    };
    let image = match image.map(|b| TableImage::decode(&b)).transpose() {
        Ok(image) => image.unwrap_or_default(),
        Err(e) => return Outcome::Retry(format!("table image does not decode: {e}")),
    };
    let merged = state.and_then(|s| s.values());
    let write = match plan(&sink.schema, merged.as_ref(), image.attrs.as_ref()) {
        Ok(Some(write)) => write,
        Ok(None) => return Outcome::Done,
        Err(e) => return Outcome::Dead(e.to_string()),
    };
    let token = next_token(image.marker.as_ref(), now_millis().saturating_mul(1000));
    let sdk_key = key_to_sdk(&sink.schema, key);
    let outcome = match write {
        // The table has no such item: create it whole, in one write (one
        // stream record), only if it still does not exist.
        SinkWrite::Update(_) if image.attrs.is_none() => match merged {
            Some(doc) => create(sink, sdk_key, &doc, token).await,
            None => Outcome::Done,
        },
        SinkWrite::Update(changes) => {
            let expr = update_expression(&changes, &sink.marker, image.marker.as_ref(), token);
            update(sink, sdk_key, expr).await
        }
        SinkWrite::Delete => delete(sink, sdk_key, image.marker.as_ref(), token).await,
    };
    if matches!(outcome, Outcome::Done) {
        sink.core.sidecar.sink_outcome(&sink.id, "written", None);
    }
    outcome
}

async fn update(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    expr: Expression,
) -> Outcome {
    let result = sink
        .client
        .update_item()
        .table_name(&sink.table)
        .set_key(Some(key))
        .set_update_expression(expr.update)
        .condition_expression(expr.condition)
        .set_expression_attribute_names(Some(expr.names))
        .set_expression_attribute_values((!expr.values.is_empty()).then_some(expr.values))
        .send()
        .await;
    match result {
        Ok(_) => Outcome::Done,
        Err(e) => classify_error(
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
            e.as_service_error().map(|s| {
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(s)
                    .unwrap_or_default()
                    .to_owned()
            }),
            describe(&e),
        ),
    }
}

/// Creates the item with the merged document, if it does not exist.
async fn create(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    doc: &BTreeMap<tributary_engine::ids::AttrName, tributary_engine::value::AttrValue>,
    token: u64,
) -> Outcome {
    let mut item = key;
    for (name, value) in doc {
        item.insert(
            name.as_str().to_owned(),
            crate::dynamo::convert::to_sdk(value),
        );
    }
    item.insert(sink.marker.clone(), AttributeValue::N(token.to_string()));
    let mut names = std::collections::HashMap::new();
    names.insert(
        "#k".to_owned(),
        sink.schema.partition_key().as_str().to_owned(),
    );
    let result = sink
        .client
        .put_item()
        .table_name(&sink.table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#k)")
        .set_expression_attribute_names(Some(names))
        .send()
        .await;
    match result {
        Ok(_) => Outcome::Done,
        Err(e) => classify_error(
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
            e.as_service_error().map(|s| {
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(s)
                    .unwrap_or_default()
                    .to_owned()
            }),
            describe(&e),
        ),
    }
}

/// Deletes the item in two conditioned steps (see the module docs).
async fn delete(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    marker: Option<&tributary_engine::value::AttrValue>,
    token: u64,
) -> Outcome {
    let intent = format!("-{token}");
    let mut names = std::collections::HashMap::new();
    names.insert("#m".to_owned(), sink.marker.clone());
    let mut values = std::collections::HashMap::new();
    values.insert(":t".to_owned(), AttributeValue::N(intent.clone()));
    let condition = match marker {
        Some(prev) => {
            values.insert(":p".to_owned(), crate::dynamo::convert::to_sdk(prev));
            "#m = :p"
        }
        None => "attribute_not_exists(#m)",
    };
    let marked = sink
        .client
        .update_item()
        .table_name(&sink.table)
        .set_key(Some(key.clone()))
        .update_expression("SET #m = :t")
        .condition_expression(condition)
        .set_expression_attribute_names(Some(names.clone()))
        .set_expression_attribute_values(Some(values))
        .send()
        .await;
    if let Err(e) = marked {
        return classify_error(
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
            e.as_service_error().map(|s| {
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(s)
                    .unwrap_or_default()
                    .to_owned()
            }),
            describe(&e),
        );
    }
    let mut values = std::collections::HashMap::new();
    values.insert(":t".to_owned(), AttributeValue::N(intent));
    let deleted = sink
        .client
        .delete_item()
        .table_name(&sink.table)
        .set_key(Some(key))
        .condition_expression("#m = :t")
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .send()
        .await;
    match deleted {
        Ok(_) => Outcome::Done,
        Err(e) => classify_error(
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
            e.as_service_error().map(|s| {
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(s)
                    .unwrap_or_default()
                    .to_owned()
            }),
            describe(&e),
        ),
    }
}

/// Sorts a failed write: a condition failure is a conflict; a validation
/// error is permanent; everything else (throttling, 5xx, network) is
/// retried.
fn classify_error(conditional: bool, code: Option<String>, text: String) -> Outcome {
    if conditional {
        return Outcome::Conflict;
    }
    match code.as_deref() {
        Some("ValidationException" | "ItemCollectionSizeLimitExceededException") => {
            Outcome::Dead(text)
        }
        _ => Outcome::Retry(text),
    }
}

/// How long the sink waits at most between looks at an idle log (its
/// tasks are also woken by every commit).
pub const IDLE_WAKE: Duration = Duration::from_secs(1);
