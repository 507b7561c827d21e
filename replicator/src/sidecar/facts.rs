//! What the sources and sinks report while they run: per shard its last
//! offset and lag behind the stream, per source and sink their counts and
//! last error. Shown by `replctl status`, `lag` and `offsets`; the same
//! figures are on `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;
use tributary_engine::ids::VersionVector;
use tributary_engine::key::ItemKey;

use crate::node::{Metrics, lock, now_millis};

/// One shard's latest read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardFacts {
    /// How far behind the stream's tip the last read was (Kinesis).
    pub millis_behind: Option<i64>,
    /// The last record's sequence number.
    pub last_offset: Option<String>,
    /// Records in the last read.
    pub records: u64,
    /// The shard is closed and read to its end.
    pub finished: bool,
}

/// Counts of one ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Changes committed.
    pub changes: u64,
    /// The sink's own writes, skipped.
    pub echoes: u64,
    /// Redelivered records, skipped.
    pub duplicates: u64,
    /// Records dead-lettered.
    pub dead_letters: u64,
}

/// One shard, as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShardReport {
    /// The latest read.
    #[serde(flatten)]
    pub last: ShardFacts,
    /// When it was read last (Unix ms).
    pub read_at_millis: Option<u64>,
    /// The last error, if the latest attempt failed.
    pub error: Option<String>,
}

/// One source, as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    /// Per shard.
    pub shards: BTreeMap<String, ShardReport>,
    /// Changes ingested since start.
    pub changes: u64,
    /// Sink echoes skipped since start.
    pub echoes: u64,
    /// Duplicates skipped since start.
    pub duplicates: u64,
    /// Records dead-lettered since start.
    pub dead_letters: u64,
    /// Reads throttled since start.
    pub throttled: u64,
    /// Times records were found trimmed (lost to the stream's retention
    /// before this node read them) since start.
    pub trimmed: u64,
    /// The last source-wide error (listing shards, …).
    pub error: Option<String>,
    /// The initial load's progress, when one ran since start.
    pub initial_load: Option<String>,
}

/// One sink, as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkReport {
    /// Item writes that landed since start.
    pub written: u64,
    /// Writes refused by their condition (the table moved; retried).
    pub conflicts: u64,
    /// Writes failed and retried.
    pub retries: u64,
    /// Items dead-lettered (permanent failures).
    pub dead_letters: u64,
    /// Items waiting to be written or retried.
    pub backlog: u64,
    /// The last error.
    pub error: Option<String>,
}

/// Every source's and sink's report, shared by their tasks and the admin
/// API.
pub struct SidecarFacts {
    metrics: Metrics,
    sources: Mutex<BTreeMap<String, SourceReport>>,
    sinks: Mutex<BTreeMap<String, SinkReport>>,
    cursors: Mutex<BTreeMap<String, VersionVector>>,
    rewrites: Mutex<BTreeMap<String, Vec<ItemKey>>>,
    /// Wakes the sinks when an item is queued for rewriting.
    pub wake: Notify,
}

impl SidecarFacts {
    /// Empty reports; counts also go to `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            sources: Mutex::new(BTreeMap::new()),
            sinks: Mutex::new(BTreeMap::new()),
            cursors: Mutex::new(BTreeMap::new()),
            rewrites: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
        }
    }

    fn source<R>(&self, source: &str, f: impl FnOnce(&mut SourceReport) -> R) -> R {
        f(lock(&self.sources).entry(source.to_owned()).or_default())
    }

    fn sink<R>(&self, sink: &str, f: impl FnOnce(&mut SinkReport) -> R) -> R {
        f(lock(&self.sinks).entry(sink.to_owned()).or_default())
    }

    /// A source-wide failure.
    pub fn source_error(&self, source: &str, error: &str) {
        self.source(source, |s| s.error = Some(error.to_owned()));
    }

    /// The initial load's progress.
    pub fn load_progress(&self, source: &str, progress: String) {
        self.source(source, |s| s.initial_load = Some(progress));
    }

    /// A shard read failed.
    pub fn shard_error(&self, source: &str, shard: &str, error: &str) {
        self.source(source, |s| {
            s.shards.entry(shard.to_owned()).or_default().error = Some(error.to_owned());
        });
    }

    /// Records were lost to the stream's retention before they were read.
    pub fn trimmed(&self, source: &str) {
        self.source(source, |s| s.trimmed += 1);
        self.metrics
            .source_records
            .with_label_values(&[source, "trimmed"])
            .inc();
    }

    /// A read was throttled.
    pub fn throttled(&self, source: &str) {
        self.source(source, |s| s.throttled += 1);
        self.metrics
            .source_throttled
            .with_label_values(&[source])
            .inc();
    }

    /// A shard was read (and what it held committed).
    pub fn shard_read(&self, source: &str, shard: &str, facts: ShardFacts) {
        if let Some(behind) = facts.millis_behind {
            self.metrics
                .source_millis_behind
                .with_label_values(&[source, shard])
                .set(behind);
        }
        self.source(source, |s| {
            s.error = None;
            let r = s.shards.entry(shard.to_owned()).or_default();
            if facts.last_offset.is_none() {
                r.last.millis_behind = facts.millis_behind;
                r.last.finished = facts.finished;
                r.last.records = 0;
            } else {
                r.last = facts;
            }
            r.read_at_millis = Some(now_millis());
            r.error = None;
        });
    }

    /// What one commit of a source held.
    pub fn ingested(&self, source: &str, n: Ingested) {
        self.source(source, |s| {
            s.changes += n.changes;
            s.echoes += n.echoes;
            s.duplicates += n.duplicates;
            s.dead_letters += n.dead_letters;
        });
        for (outcome, count) in [
            ("ingested", n.changes),
            ("echo", n.echoes),
            ("duplicate", n.duplicates),
            ("dead_letter", n.dead_letters),
        ] {
            self.metrics
                .source_records
                .with_label_values(&[source, outcome])
                .inc_by(count);
        }
    }

    /// A sink write's outcome: `written`, `conflict`, `retry` or
    /// `dead_letter`, with the error of the last two.
    pub fn sink_outcome(&self, sink: &str, outcome: &str, error: Option<&str>) {
        self.sink(sink, |s| {
            match outcome {
                "written" => s.written += 1,
                "conflict" => s.conflicts += 1,
                "retry" => s.retries += 1,
                _ => s.dead_letters += 1,
            }
            if let Some(e) = error {
                s.error = Some(e.to_owned());
            }
        });
        self.metrics
            .sink_writes
            .with_label_values(&[sink, outcome])
            .inc();
    }

    /// The sink's backlog of items.
    pub fn sink_backlog(&self, sink: &str, items: usize) {
        let items = items as u64;
        self.sink(sink, |s| s.backlog = items);
        self.metrics
            .sink_backlog
            .with_label_values(&[sink])
            .set(i64::try_from(items).unwrap_or(i64::MAX));
    }

    /// How far the sink has read the log (log retention keeps what it has
    /// not read).
    pub fn sink_cursor(&self, sink: &str, done: &VersionVector) {
        lock(&self.cursors).insert(sink.to_owned(), done.clone());
    }

    /// Every sink's cursor.
    pub fn sink_cursors(&self) -> Vec<VersionVector> {
        lock(&self.cursors).values().cloned().collect()
    }

    /// Queues `key` for the sink `sink` to write again (a dead letter
    /// retried by an operator).
    pub fn request_rewrite(&self, sink: &str, key: ItemKey) {
        lock(&self.rewrites)
            .entry(sink.to_owned())
            .or_default()
            .push(key);
        self.wake.notify_waiters();
    }

    /// The items queued for `sink` to write again.
    pub fn take_rewrites(&self, sink: &str) -> Vec<ItemKey> {
        lock(&self.rewrites).remove(sink).unwrap_or_default()
    }

    /// Every source's report.
    pub fn sources(&self) -> BTreeMap<String, SourceReport> {
        lock(&self.sources).clone()
    }

    /// Every sink's report.
    pub fn sinks(&self) -> BTreeMap<String, SinkReport> {
        lock(&self.sinks).clone()
    }
}
