//! What the sources and sinks report while they run: per shard its last
//! offset and lag behind the stream, per source and sink their counts and
//! last error. Shown by `replctl status`, `lag` and `offsets`; the same
//! figures are on `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
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
    /// The tables whose initial load has not finished (see
    /// [`SidecarFacts::wait_loaded`]).
    loading: tokio::sync::watch::Sender<BTreeSet<String>>,
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
            loading: tokio::sync::watch::Sender::new(BTreeSet::new()),
        }
    }

    /// A source of `table` is about to decide on its initial load: the
    /// table's sinks wait until [`SidecarFacts::load_finished`].
    pub fn expect_load(&self, table: &str) {
        self.loading.send_modify(|t| {
            t.insert(table.to_owned());
        });
    }

    /// The initial load of `table` finished (or was not needed).
    pub fn load_finished(&self, table: &str) {
        self.loading.send_if_modified(|t| t.remove(table));
    }

    /// Whether an initial load of `table` is running.
    pub fn is_loading(&self, table: &str) -> bool {
        self.loading.borrow().contains(table)
    }

    /// Sets (or clears) the sink's reported error without counting an
    /// outcome.
    pub fn sink_error(&self, sink: &str, error: Option<&str>) {
        self.sink(sink, |s| s.error = error.map(str::to_owned));
    }

    /// Waits until no initial load of `table` is running; false if
    /// `shutdown` came first.
    ///
    /// A sink writing while its table is scanned would have its writes
    /// (other regions' contributions) read by the scan as the
    /// application's, and counted again.
    pub async fn wait_loaded(
        &self,
        table: &str,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let mut loading = self.loading.subscribe();
        tokio::select! {
            done = loading.wait_for(|t| !t.contains(table)) => done.is_ok(),
            _ = shutdown.wait_for(|s| *s) => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sink_waits_for_its_tables_initial_load_only() {
        let facts = std::sync::Arc::new(SidecarFacts::new(Metrics::new()));
        let (stop, mut shutdown) = tokio::sync::watch::channel(false);
        facts.expect_load("carts");
        assert!(facts.is_loading("carts") && !facts.is_loading("orders"));
        // Another table's sink does not wait.
        assert!(facts.wait_loaded("orders", &mut shutdown).await);
        let waiter = {
            let facts = std::sync::Arc::clone(&facts);
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move { facts.wait_loaded("carts", &mut shutdown).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the sink went on during the load");
        facts.load_finished("carts");
        assert!(waiter.await.expect("task"), "released by the load's end");
        // A shutdown releases a waiting sink with `false`.
        facts.expect_load("carts");
        let _ = stop.send(true);
        assert!(!facts.wait_loaded("carts", &mut shutdown).await);
    }
}
