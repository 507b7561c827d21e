//! The loop every sink runs, whatever its database: it follows the log
//! like a peer link does (every origin, in HLC order, from a durable
//! cursor), marks each item of its table that an entry touched, and has
//! the database's [`ItemWriter`] write it. An attempt ends [`Outcome::Done`],
//! a [`Outcome::Conflict`] (the table moved under a conditioned write:
//! retried with backoff once the source has read the table's latest
//! change), a [`Outcome::Retry`] (throttling, 5xx, network: retried with
//! exponential backoff and full jitter, recomputing from the latest merged
//! state) or [`Outcome::Dead`] (permanent: the item is dead-lettered).
//!
//! The cursor and the items still pending are persisted as one checkpoint,
//! so a restart resumes both; log retention keeps what the sink has not
//! read, and a sink that falls behind the truncated log (or a snapshot)
//! looks at every item of its table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tributary_engine::ids::{SourceId, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{Checkpoint, DeadLetter, LogStore, entries_above};

use crate::link::Backoff;
use crate::node::{Core, now_millis};

/// How long a sink waits at most between looks at an idle log (it is also
/// woken by every commit).
pub const IDLE_WAKE: Duration = Duration::from_secs(1);

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
pub enum Outcome {
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

/// An item's merged document and table image, read from one consistent
/// view of the store; `Err` is the attempt's outcome (a retry).
pub async fn read_item(
    core: &Core,
    key: &ItemKey,
) -> Result<
    (
        Option<
            std::collections::BTreeMap<
                tributary_engine::ids::AttrName,
                tributary_engine::value::AttrValue,
            >,
        >,
        super::image::TableImage,
    ),
    Outcome,
> {
    let store = Arc::clone(&core.store);
    let read_key = key.clone();
    let read = tokio::task::spawn_blocking(move || {
        store.item_and_side(&read_key, &super::image::image_key(&read_key))
    })
    .await;
    let (state, image) = match read {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(Outcome::Retry(format!("reading the item: {e}"))),
        Err(e) => return Err(Outcome::Retry(format!("reading the item: {e}"))),
    };
    let image = match image
        .map(|b| super::image::TableImage::decode(&b))
        .transpose()
    {
        Ok(image) => image.unwrap_or_default(),
        Err(e) => return Err(Outcome::Retry(format!("table image does not decode: {e}"))),
    };
    Ok((state.and_then(|s| s.values()), image))
}

/// Writes one item of a sink's table: makes the table hold the item's
/// merged document (reading it, and the item's table image, itself).
pub trait ItemWriter: Send + Sync + 'static {
    /// One attempt.
    fn write(&self, key: &ItemKey) -> impl Future<Output = Outcome> + Send;
}

/// A sink's identity and pacing.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// `sink:KIND:TABLE`: its cursor's checkpoint id and its dead letters'
    /// source.
    pub id: String,
    /// The table's merge schema.
    pub schema: TableSchema,
    /// The first retry delay.
    pub retry_backoff_initial: Duration,
    /// The largest retry delay.
    pub retry_backoff_max: Duration,
    /// Item writes in flight at once.
    pub concurrency: usize,
}

/// The sink's settings, shared by its write tasks.
struct Sink {
    id: String,
    schema: TableSchema,
    core: Arc<Core>,
}

/// Runs a sink until the node shuts down: follows the log from its cursor,
/// marks the items of its table that entries touched, and has `writer`
/// write each, retrying with backoff (see the module docs).
pub async fn run<W: ItemWriter>(core: Arc<Core>, config: SinkSettings, writer: Arc<W>) {
    let sink = Arc::new(Sink {
        id: config.id.clone(),
        schema: config.schema.clone(),
        core: Arc::clone(&core),
    });
    let Ok(source_id) = SourceId::new(&sink.id) else {
        tracing::error!(sink = %sink.id, "invalid sink id");
        return;
    };
    let table = config.schema.name().as_str();
    if core.sidecar.is_loading(table) {
        let waiting = format!("waiting for the initial load of table {table}");
        core.sidecar.sink_error(&sink.id, Some(&waiting));
        if !core
            .sidecar
            .wait_loaded(table, &mut core.shutdown.clone())
            .await
        {
            return;
        }
        core.sidecar.sink_error(&sink.id, None);
    }
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
            let writer = Arc::clone(&writer);
            tasks.spawn(async move {
                let outcome = writer.write(&key).await;
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
