//! The shard driver shared by the DynamoDB Streams and Kinesis sources.
//!
//! A stream is a set of shards; a closed shard's children start only once
//! it is read to its end (parents before children, so an item's records
//! stay in order across resharding). Per shard the driver keeps a durable
//! checkpoint, written in the same atomic commit as the changes, images
//! and dead letters of the records before it:
//!
//! - `after:SEQ` — every record up to sequence number `SEQ` is ingested;
//! - `end` — the shard is closed and read to its end.
//!
//! A restart resumes after the checkpoint (`AFTER_SEQUENCE_NUMBER`), so a
//! record is ingested at most once by position; one delivered twice by the
//! stream itself is caught by its event id in the item's image. Throttling
//! and transient errors back off with full jitter per shard; an expired
//! iterator is re-acquired from the checkpoint; trimmed data (records
//! that expired before they were read) is reported loudly — in the log, on
//! `/metrics` and in `replctl status` — and reading resumes at the oldest
//! record still there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tributary_engine::ids::{AttrName, SourceId};
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{Checkpoint, LogStore};

use super::classify::{Origin, RawRecord, classify};
use super::facts::ShardFacts;
use super::image::{TableImage, image_key};
use crate::link::Backoff;
use crate::node::{Core, now_millis};

/// One shard as the stream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its id.
    pub id: String,
    /// The shard it was split from or merged from, if any.
    pub parents: Vec<String>,
}

/// One read from a shard.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The records, in shard order.
    pub records: Vec<RawRecord>,
    /// Where to read next; `None` when the shard is closed and read to its
    /// end.
    pub next: Option<String>,
    /// How far behind the stream's tip this read was (Kinesis).
    pub millis_behind: Option<i64>,
}

/// Why a stream call failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The shard iterator expired (they live ~5 minutes): get a new one.
    #[error("shard iterator expired")]
    Expired,
    /// The records after the checkpoint are gone (retention passed).
    #[error("records were trimmed before they were read: {0}")]
    Trimmed(String),
    /// The stream throttled the call.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Anything else (network, service): retried with backoff.
    #[error("{0}")]
    Other(String),
}

/// What the driver needs from a stream service.
pub trait ShardStream: Send + Sync {
    /// Every shard of the stream (all pages).
    fn shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, StreamError>> + Send;
    /// An iterator at the shard's start (`after` None) or after a sequence
    /// number.
    fn iterator(
        &self,
        shard: &str,
        after: Option<&str>,
    ) -> impl Future<Output = Result<String, StreamError>> + Send;
    /// Reads from an iterator.
    fn read(
        &self,
        shard: &str,
        iterator: &str,
    ) -> impl Future<Output = Result<ReadBatch, StreamError>> + Send;
}

/// A source's identity and settings.
pub struct SourceSpec {
    /// Its id prefix, e.g. `kinesis:carts-changes`; a shard's checkpoint is
    /// `PREFIX/SHARD`.
    pub prefix: String,
    /// The table's merge schema.
    pub schema: TableSchema,
    /// The sink's marker attribute, when the table has a sink.
    pub marker: Option<AttrName>,
    /// The pause after a read that returned nothing.
    pub poll_interval: Duration,
    /// The initial load's scan window, if there was one (see
    /// [`super::classify::Origin::load_window`]).
    pub load_window: Option<(u64, u64)>,
}

/// A shard's durable position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Start,
    After(String),
    End,
}

impl Position {
    fn parse(c: Option<&Checkpoint>) -> Position {
        match c.map(|c| c.0.as_str()) {
            None => Position::Start,
            Some("end") => Position::End,
            Some(s) => s
                .strip_prefix("after:")
                .map_or(Position::Start, |seq| Position::After(seq.to_owned())),
        }
    }
}

struct ShardRun {
    iterator: Option<String>,
    backoff: Backoff,
    retry_at: Option<tokio::time::Instant>,
    done: bool,
    /// The records after the checkpoint were trimmed: read from the oldest
    /// record still there.
    from_oldest: bool,
}

/// Runs a source until the node shuts down.
pub async fn run<S: ShardStream>(core: Arc<Core>, spec: SourceSpec, stream: S) {
    let mut shutdown = core.shutdown.clone();
    let mut runs: BTreeMap<String, ShardRun> = BTreeMap::new();
    let mut shards: Vec<ShardInfo> = Vec::new();
    let mut list_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut listed_at: Option<tokio::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = tokio::time::Instant::now();
        let stale = listed_at.is_none_or(|t| now.duration_since(t) > Duration::from_secs(10));
        let any_finished = runs.values().any(|r| r.done);
        if stale || any_finished || shards.is_empty() {
            match stream.shards().await {
                Ok(list) => {
                    list_backoff.reset();
                    shards = list;
                    listed_at = Some(now);
                    runs.retain(|id, r| !r.done && shards.iter().any(|s| &s.id == id));
                }
                Err(e) => {
                    core.sidecar.source_error(&spec.prefix, &e.to_string());
                    tracing::warn!(source = %spec.prefix, error = %e, "listing shards failed");
                    let delay = list_backoff.next_delay(rand::random::<f64>());
                    if wait(&mut shutdown, delay).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let ready = ready_shards(&core, &spec, &shards);
        let mut progressed = false;
        for shard in ready {
            let state = runs.entry(shard.clone()).or_insert_with(|| ShardRun {
                iterator: None,
                backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
                retry_at: None,
                done: false,
                from_oldest: false,
            });
            if state
                .retry_at
                .is_some_and(|t| t > tokio::time::Instant::now())
            {
                continue;
            }
            match step(&core, &spec, &stream, &shard, state).await {
                Ok(read_any) => {
                    state.backoff.reset();
                    state.retry_at = None;
                    progressed |= read_any;
                }
                Err(e) => {
                    let delay = state.backoff.next_delay(rand::random::<f64>());
                    state.retry_at = Some(tokio::time::Instant::now() + delay);
                    core.sidecar
                        .shard_error(&spec.prefix, &shard, &e.to_string());
                    match &e {
                        StreamError::Trimmed(_) => {
                            core.sidecar.trimmed(&spec.prefix);
                            tracing::error!(source = %spec.prefix, %shard, error = %e, "records were lost to the stream's retention before this node read them; resuming at the oldest record still there")
                        }
                        StreamError::Throttled(_) => {
                            core.sidecar.throttled(&spec.prefix);
                            tracing::debug!(source = %spec.prefix, %shard, error = %e, "throttled")
                        }
                        _ => {
                            tracing::warn!(source = %spec.prefix, %shard, error = %e, "shard read failed; retrying")
                        }
                    }
                }
            }
        }
        if !progressed && wait(&mut shutdown, spec.poll_interval).await {
            return;
        }
    }
}

/// Waits `delay` unless the node shuts down first (true then).
async fn wait(shutdown: &mut tokio::sync::watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.changed() => true,
    }
}

/// The shards to read now: not finished, and every parent still listed
/// is finished.
fn ready_shards(core: &Core, spec: &SourceSpec, shards: &[ShardInfo]) -> Vec<String> {
    ready(shards, |shard| {
        let id = SourceId::new(format!("{}/{shard}", spec.prefix)).ok();
        let c = id.and_then(|id| core.store.checkpoint(&id).ok().flatten());
        Position::parse(c.as_ref())
    })
}

/// [`ready_shards`] given each shard's position: a shard is read once it
/// is not at its end and every parent the stream still lists is (parents
/// before children, so an item's records stay in order across a split or
/// a merge; a parent past the stream's retention is no longer listed).
fn ready(shards: &[ShardInfo], position: impl Fn(&str) -> Position) -> Vec<String> {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    shards
        .iter()
        .filter(|s| position(&s.id) != Position::End)
        .filter(|s| {
            s.parents
                .iter()
                .all(|p| !listed.contains(p.as_str()) || position(p) == Position::End)
        })
        .map(|s| s.id.clone())
        .collect()
}

/// Reads one batch of `shard` and ingests it; true if it held records.
async fn step<S: ShardStream>(
    core: &Arc<Core>,
    spec: &SourceSpec,
    stream: &S,
    shard: &str,
    state: &mut ShardRun,
) -> Result<bool, StreamError> {
    let source = SourceId::new(format!("{}/{shard}", spec.prefix))
        .map_err(|e| StreamError::Other(format!("shard id {shard:?}: {e}")))?;
    let iterator = match state.iterator.take() {
        Some(it) => it,
        None => {
            let checkpoint = core
                .store
                .checkpoint(&source)
                .map_err(|e| StreamError::Other(e.to_string()))?;
            match Position::parse(checkpoint.as_ref()) {
                Position::End => {
                    state.done = true;
                    return Ok(false);
                }
                Position::After(_) if state.from_oldest => {
                    let it = stream.iterator(shard, None).await?;
                    state.from_oldest = false;
                    it
                }
                Position::Start => stream.iterator(shard, None).await?,
                Position::After(seq) => match stream.iterator(shard, Some(&seq)).await {
                    Err(e @ StreamError::Trimmed(_)) => {
                        state.from_oldest = true;
                        return Err(e);
                    }
                    other => other?,
                },
            }
        }
    };
    let batch = match stream.read(shard, &iterator).await {
        Ok(b) => b,
        Err(StreamError::Expired) => return Err(StreamError::Expired),
        Err(e @ StreamError::Trimmed(_)) => {
            state.from_oldest = true;
            return Err(e);
        }
        Err(e) => {
            state.iterator = Some(iterator);
            return Err(e);
        }
    };
    let count = batch.records.len();
    let checkpoint = match (&batch.next, batch.records.last()) {
        (None, _) => Some(Checkpoint("end".to_owned())),
        (Some(_), Some(last)) => Some(Checkpoint(format!("after:{}", last.offset))),
        (Some(_), None) => None,
    };
    if let Some(checkpoint) = checkpoint {
        ingest(core, spec, &source, &batch.records, checkpoint).await?;
    }
    core.sidecar.shard_read(
        &spec.prefix,
        shard,
        ShardFacts {
            millis_behind: batch.millis_behind,
            last_offset: batch.records.last().map(|r| r.offset.clone()),
            records: count as u64,
            finished: batch.next.is_none(),
        },
    );
    match batch.next {
        Some(next) => state.iterator = Some(next),
        None => state.done = true,
    }
    Ok(count > 0)
}

/// Classifies `records` and commits them with `checkpoint`.
async fn ingest(
    core: &Arc<Core>,
    spec: &SourceSpec,
    source: &SourceId,
    records: &[RawRecord],
    checkpoint: Checkpoint,
) -> Result<(), StreamError> {
    let origin = Origin {
        source: &spec.prefix,
        now_millis: now_millis(),
        late: false,
        load_window: spec.load_window,
    };
    let store = Arc::clone(&core.store);
    let classified = classify(
        &spec.schema,
        spec.marker.as_ref(),
        &origin,
        records,
        |key| {
            Ok(match store.side(&image_key(key))? {
                Some(bytes) => TableImage::decode(&bytes).unwrap_or_default(),
                None => TableImage::default(),
            })
        },
    )
    .map_err(|e| StreamError::Other(format!("reading table images: {e}")))?;
    let dead = classified.attached.dead_letters.len() as u64;
    let from_record = classified.from_record;
    let attached = Attached {
        checkpoints: vec![(source.clone(), checkpoint)],
        ..classified.attached
    };
    let changes = classified.changes.len() as u64;
    let report = core
        .writer
        .ingest_with(classified.changes, attached)
        .await
        .map_err(|e| StreamError::Other(e.to_string()))?
        .map_err(|e| StreamError::Other(format!("committing to the log: {e}")))?;
    // A change the log refuses (a value of the wrong type for its merge
    // policy, an item over 400 KB) is the record's fault: dead-letter it.
    let mut refused = 0u64;
    for (i, outcome) in report.outcomes.iter().enumerate() {
        let Err(error) = outcome else { continue };
        refused += 1;
        let Some(record) = from_record.get(i).and_then(|&r| records.get(r)) else {
            continue;
        };
        let letter = super::classify::dead_letter(&origin, record, error.to_string());
        if let Err(e) = core.store.put_dead_letter(&letter) {
            tracing::error!(source = %spec.prefix, error = %e, "storing a dead letter failed");
        }
        tracing::warn!(source = %spec.prefix, offset = %record.offset, %error, "a change was refused by the log; dead-lettered");
    }
    core.sidecar.ingested(
        &spec.prefix,
        super::facts::Ingested {
            changes: changes - refused,
            echoes: classified.echoes,
            duplicates: classified.duplicates,
            dead_letters: dead + refused,
        },
    );
    core.metrics
        .dead_letters
        .with_label_values(&[&spec.prefix])
        .inc_by(dead + refused);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo {
            id: id.to_owned(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn children_wait_for_every_listed_parent_to_end() {
        // 0 split into 1 and 2; 1 and 2 merged into 3; 4 has an expired
        // parent.
        let shards = [
            shard("0", &[]),
            shard("1", &["0"]),
            shard("2", &["0"]),
            shard("3", &["1", "2"]),
            shard("4", &["gone"]),
        ];
        let at = |ends: &'static [&'static str]| {
            move |s: &str| {
                if ends.contains(&s) {
                    Position::End
                } else {
                    Position::After("7".into())
                }
            }
        };
        assert_eq!(ready(&shards, at(&[])), ["0", "4"]);
        assert_eq!(ready(&shards, at(&["0"])), ["1", "2", "4"]);
        assert_eq!(ready(&shards, at(&["0", "1"])), ["2", "4"]);
        assert_eq!(ready(&shards, at(&["0", "1", "2", "4"])), ["3"]);
    }

    #[test]
    fn checkpoints_parse_to_positions() {
        let c = |s: &str| Some(Checkpoint(s.to_owned()));
        assert_eq!(Position::parse(None), Position::Start);
        assert_eq!(Position::parse(c("end").as_ref()), Position::End);
        assert_eq!(
            Position::parse(c("after:49590").as_ref()),
            Position::After("49590".into())
        );
    }
}
