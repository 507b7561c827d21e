//! The log writer: one thread owns the [`Log`] and commits every local
//! write and every received batch, in arrival order.
//!
//! Group commit: with `sync = "group"` the store writes without fsync and
//! the writer makes everything it committed durable with one fsync after
//! each round — a round being the jobs that queued while the previous
//! fsync ran, plus those arriving within `group_commit_interval`. Replies
//! (write results, acks) leave only after that fsync: nothing is
//! acknowledged before it is durable. With `sync = "always"` each commit
//! is its own fsync.
//!
//! Local writes queued one behind another in a round share commits:
//! small ones (the admin API's) one commit, a backlog of source batches
//! commits of about [`PIPELINE_BATCH_CHANGES`] changes (whole jobs each,
//! so a job's checkpoint commits with its changes), written by
//! [`Log::ingest_pipelined`]: the store writes one while the next is built.
//!
//! After each round the new applied vector is published on the `head`
//! watch, which wakes the peer links.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::sync::{oneshot, watch};
use tributary_engine::change::{Change, LogEntry};
use tributary_engine::clock::{Clock, SystemClock};
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::VersionVector;
use tributary_engine::key::ItemKey;
use tributary_engine::log::{ApplyReport, Attached, IngestReport, Log};
use tributary_engine::store::{Durability, LogStore, RocksStore, StoreError};

use super::metrics::Metrics;

/// The node's log over its shared RocksDB store.
pub type NodeLog = Log<Arc<RocksStore>, SystemClock>;

/// A remote batch's result: the report and the applied vector after it.
pub type Applied = (ApplyReport, VersionVector);

/// What the log holds (see [`Log::held`]): the applied vector plus the
/// parked entries, and the epoch that moves when parked entries are lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The applied vector joined with what is parked.
    pub vector: VersionVector,
    /// [`Log::park_epoch`].
    pub epoch: u64,
}

/// Where the writer publishes what it applied and what it holds, after
/// each round.
pub struct Published {
    /// The applied vector (the links read up to it).
    pub head: watch::Sender<VersionVector>,
    /// What is held (the receivers report it).
    pub held: watch::Sender<Held>,
}

/// Where a local write's outcome goes, once durable.
type IngestReply = oneshot::Sender<Result<IngestReport, StoreError>>;

/// A local write as the writer groups it: its changes, what commits with
/// them, and where the outcome goes.
type IngestJob = (Vec<Change>, Attached, IngestReply);

/// Where a received batch's outcome goes, once durable.
type ApplyReply = oneshot::Sender<Result<Applied, StoreError>>;

/// Work for the writer.
pub enum Job {
    /// Local changes (the admin API's writes, the sources' records).
    Ingest {
        /// The changes.
        changes: Vec<Change>,
        /// Checkpoints, side state and dead letters committed with them.
        attached: Attached,
        /// Where the outcome goes, once durable.
        reply: IngestReply,
    },
    /// A batch received from a peer.
    Apply {
        /// Its entries, validated.
        entries: Vec<LogEntry>,
        /// Where the outcome goes, once durable.
        reply: ApplyReply,
    },
    /// A chunk of a peer's snapshot; `done` on the last one.
    Snapshot {
        /// Item states to join.
        items: Vec<(ItemKey, ItemState)>,
        /// The vector the snapshot covers, on its last chunk.
        done: Option<VersionVector>,
        /// Where the applied vector goes, once durable.
        reply: oneshot::Sender<Result<VersionVector, StoreError>>,
    },
}

/// A reply held until the round's fsync: it sends the job's result, or
/// the fsync's failure in place of a success.
type Reply = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

fn reply<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, StoreError>>,
    r: Result<T, StoreError>,
) -> Reply {
    Box::new(move |synced| {
        let _ = tx.send(synced.clone().and(r));
    })
}

/// The handle the rest of the node submits jobs through.
#[derive(Clone)]
pub struct Writer {
    jobs: Sender<Job>,
    metrics: Metrics,
}

/// The writer has stopped (node shutting down or storage failed).
#[derive(Debug, thiserror::Error)]
#[error("the log writer has stopped")]
pub struct WriterStopped;

impl Writer {
    /// Starts the writer thread; it stops when every [`Writer`] is dropped,
    /// after committing and syncing what was queued.
    pub fn start(
        log: NodeLog,
        group_interval: Option<Duration>,
        published: Published,
        metrics: Metrics,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (jobs, rx) = crossbeam_channel::unbounded();
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(log, &rx, group_interval, &published, &m))?;
        Ok((Self { jobs, metrics }, thread))
    }

    /// Commits local changes; resolves once they are durable.
    pub async fn ingest(
        &self,
        changes: Vec<Change>,
    ) -> Result<Result<IngestReport, StoreError>, WriterStopped> {
        self.ingest_with(changes, Attached::default()).await
    }

    /// Commits a source's changes with its checkpoints, side state and
    /// dead letters, atomically; resolves once durable.
    pub async fn ingest_with(
        &self,
        changes: Vec<Change>,
        attached: Attached,
    ) -> Result<Result<IngestReport, StoreError>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Ingest {
            changes,
            attached,
            reply,
        })?;
        rx.await.map_err(|_| WriterStopped)
    }

    /// Queues a received batch and returns at once; the receiver resolves
    /// once it is durable. Batches queued one after another are applied in
    /// that order, and several can share one group commit.
    pub fn apply_later(
        &self,
        entries: Vec<LogEntry>,
    ) -> Result<oneshot::Receiver<Result<Applied, StoreError>>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Apply { entries, reply })?;
        Ok(rx)
    }

    /// Installs a snapshot chunk; resolves with the applied vector once
    /// durable.
    pub async fn snapshot(
        &self,
        items: Vec<(ItemKey, ItemState)>,
        done: Option<VersionVector>,
    ) -> Result<Result<VersionVector, StoreError>, WriterStopped> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Snapshot { items, done, reply })?;
        rx.await.map_err(|_| WriterStopped)
    }

    fn submit(&self, job: Job) -> Result<(), WriterStopped> {
        self.metrics.writer_queue.inc();
        self.jobs.send(job).map_err(|_| WriterStopped)
    }
}

/// Jobs per round at most, so replies are not held back indefinitely.
const MAX_ROUND_JOBS: usize = 256;

fn run(
    mut log: NodeLog,
    rx: &Receiver<Job>,
    group_interval: Option<Duration>,
    published: &Published,
    metrics: &Metrics,
) {
    let buffered = log.store().durability() == Durability::Buffered;
    let mut cache_seen = log.item_cache_stats();
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut jobs = vec![first];
        let deadline = started + group_interval.unwrap_or_default();
        while jobs.len() < MAX_ROUND_JOBS {
            let next = match rx.try_recv() {
                Ok(job) => Ok(job),
                Err(_) if buffered => {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                Err(_) => Err(RecvTimeoutError::Timeout),
            };
            match next {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics
            .writer_queue
            .sub(i64::try_from(jobs.len()).unwrap_or(i64::MAX));
        let count = jobs.len();
        let mut replies: Vec<Reply> = Vec::with_capacity(count);
        let mut applies = 0usize;
        let mut jobs = jobs.into_iter().peekable();
        while let Some(job) = jobs.next() {
            match job {
                Job::Ingest {
                    changes,
                    attached,
                    reply,
                } => {
                    // With the local writes queued right behind it: one
                    // commit for all of them.
                    let mut group = vec![(changes, attached, reply)];
                    while let Some(Job::Ingest { .. }) = jobs.peek() {
                        if let Some(Job::Ingest {
                            changes,
                            attached,
                            reply,
                        }) = jobs.next()
                        {
                            group.push((changes, attached, reply));
                        }
                    }
                    ingest_group(&mut log, group, &mut replies);
                }
                Job::Apply { entries, reply } => {
                    // With the received batches queued right behind it: one
                    // commit, each hot item written once.
                    let mut group = vec![(entries, reply)];
                    while let Some(Job::Apply { .. }) = jobs.peek() {
                        if let Some(Job::Apply { entries, reply }) = jobs.next() {
                            group.push((entries, reply));
                        }
                    }
                    applies += group.len();
                    apply_group(&mut log, group, &mut replies);
                }
                Job::Snapshot { items, done, reply } => {
                    applies += 1;
                    let r = log
                        .install_snapshot_items(&items)
                        .and_then(|()| match &done {
                            Some(v) => log.finish_snapshot(v).map(|_| log.applied().clone()),
                            None => Ok(log.applied().clone()),
                        });
                    replies.push(self::reply(reply, r));
                }
            }
        }
        let synced = if buffered { log.sync() } else { Ok(()) };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "fsync of the log failed; writes of this round are refused");
        }
        publish(&log, published);
        metrics
            .parked_entries
            .set(i64::try_from(log.parked()).unwrap_or(i64::MAX));
        metrics
            .parked_bytes
            .set(i64::try_from(log.parked_bytes()).unwrap_or(i64::MAX));
        let elapsed = started.elapsed().as_secs_f64();
        let cache = log.item_cache_stats();
        let lookups = &metrics.item_cache_lookups;
        lookups
            .with_label_values(&["hit"])
            .inc_by(cache.hits - cache_seen.hits);
        lookups
            .with_label_values(&["miss"])
            .inc_by(cache.misses - cache_seen.misses);
        metrics
            .item_cache_bytes
            .set(i64::try_from(cache.bytes).unwrap_or(i64::MAX));
        cache_seen = cache;
        metrics.group_commit_jobs.observe(count as f64);
        if applies > 0 {
            metrics.apply_seconds.observe(elapsed);
        }
        if applies < count {
            metrics.write_seconds.observe(elapsed);
        }
        for r in replies {
            r(&synced);
        }
    }
    if let Err(e) = log.sync() {
        tracing::error!(error = %e, "final fsync of the log failed");
    }
}

/// Publishes the applied and held vectors, where they moved.
fn publish(log: &NodeLog, published: &Published) {
    published.head.send_if_modified(|h| {
        let moved = h != log.applied();
        if moved {
            *h = log.applied().clone();
        }
        moved
    });
    published.held.send_if_modified(|h| {
        let held = Held {
            vector: log.held(),
            epoch: log.park_epoch(),
        };
        let moved = *h != held;
        if moved {
            *h = held;
        }
        moved
    });
}

/// Changes per commit above which a round's local writes are split into
/// several commits, pipelined: the engine's benchmark batch, where its
/// pipelined ingest measured ≥ 0.5× raw RocksDB puts.
const PIPELINE_BATCH_CHANGES: usize = 1_000;

/// One commit's worth of local writes: whole jobs, in order.
#[derive(Default)]
struct IngestBatch {
    changes: Vec<Change>,
    attached: Attached,
    /// Each job's change count and reply, in order.
    parts: Vec<(usize, IngestReply)>,
}

impl IngestBatch {
    fn push(&mut self, changes: Vec<Change>, attached: Attached, reply: IngestReply) {
        self.parts.push((changes.len(), reply));
        self.changes.extend(changes);
        self.attached.checkpoints.extend(attached.checkpoints);
        self.attached.side.extend(attached.side);
        self.attached.dead_letters.extend(attached.dead_letters);
    }
}

/// Hands each job of a commit (`parts`) its own outcomes from the commit's
/// report.
fn answer(
    parts: Vec<(usize, IngestReply)>,
    report: Result<IngestReport, StoreError>,
    replies: &mut Vec<Reply>,
) {
    match report {
        Ok(report) => {
            let mut outcomes = report.outcomes.into_iter();
            for (len, reply) in parts {
                let part = IngestReport {
                    outcomes: outcomes.by_ref().take(len).collect(),
                    durable: report.durable,
                };
                replies.push(self::reply(reply, Ok(part)));
            }
        }
        Err(e) => {
            for (_, reply) in parts {
                replies.push(self::reply(reply, Err(e.clone())));
            }
        }
    }
}

/// Local writes that queued one behind another, cut into commits of whole
/// jobs: a job joins the commit before it unless that would take it past
/// [`PIPELINE_BATCH_CHANGES`]. Small writes (the admin API's) so share one
/// commit; a backlog of source batches becomes several.
fn cut_batches(group: Vec<IngestJob>) -> Vec<IngestBatch> {
    let mut batches: Vec<IngestBatch> = Vec::new();
    for (changes, attached, reply) in group {
        let joins = batches.last().is_some_and(|b| {
            b.changes.len() + changes.len() <= PIPELINE_BATCH_CHANGES
        });
        if !joins {
            batches.push(IngestBatch::default());
        }
        if let Some(batch) = batches.last_mut() {
            batch.push(changes, attached, reply);
        }
    }
    batches
}

/// Local writes that queued one behind another (see [`cut_batches`]),
/// committed in order with the same outcome as one job after the other:
/// their changes in order, checkpoints and side state in order, later ones
/// winning; each job's reply gets its own outcomes. One commit goes
/// through [`Log::ingest_with`]; several through
/// [`Log::ingest_pipelined`], each written while the next is built.
fn ingest_group<S: LogStore + Clone, C: Clock>(
    log: &mut Log<S, C>,
    group: Vec<IngestJob>,
    replies: &mut Vec<Reply>,
) {
    let mut batches = cut_batches(group);
    if batches.len() == 1
        && let Some(IngestBatch {
            changes,
            attached,
            parts,
        }) = batches.pop()
    {
        answer(parts, log.ingest_with(&changes, attached), replies);
        return;
    }
    let (inputs, mut waiting): (Vec<_>, VecDeque<_>) = batches
        .into_iter()
        .map(|b| ((b.changes, b.attached), b.parts))
        .unzip();
    // One report per batch taken, in order.
    let result = log.ingest_pipelined(inputs, |report| {
        if let Some(parts) = waiting.pop_front() {
            answer(parts, report, replies);
        }
    });
    // Batches never taken (the pipeline stopped at a failure).
    if let Err(e) = result {
        for parts in waiting {
            answer(parts, Err(e.clone()), replies);
        }
    }
}

/// Received batches that queued one behind another, applied by one
/// [`Log::apply_remote_many`]; each reply carries its batch's report and
/// the applied vector after the commit.
fn apply_group(
    log: &mut NodeLog,
    group: Vec<(Vec<LogEntry>, ApplyReply)>,
    replies: &mut Vec<Reply>,
) {
    let (batches, senders): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    match log.apply_remote_many(batches) {
        Ok(reports) => {
            for (report, reply) in reports.into_iter().zip(senders) {
                let applied = log.applied().clone();
                replies.push(self::reply(reply, Ok((report, applied))));
            }
        }
        Err(e) => {
            for reply in senders {
                replies.push(self::reply(reply, Err(e.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tributary_engine::change::Op;
    use tributary_engine::clock::ManualClock;
    use tributary_engine::ids::{AttrName, RegionId, Seq, SourceId, TableName};
    use tributary_engine::log::LogConfig;
    use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
    use tributary_engine::store::{Checkpoint, MemStore};
    use tributary_engine::value::Scalar;

    use super::*;

    type MemLog = Log<MemStore, ManualClock>;

    fn log(store: MemStore) -> MemLog {
        let attr = |s: &str| AttrName::new(s).expect("attr");
        let table = TableSchema::new(TableName::new("t").expect("table"), attr("pk"), None)
            .and_then(|t| t.with_policy(attr("n"), MergePolicy::Counter))
            .expect("schema");
        let config = LogConfig {
            region: RegionId::new("r").expect("region"),
            schemas: [table].into_iter().collect::<Schemas>(),
            max_clock_skew: Duration::from_secs(10),
            item_cache_bytes: 1 << 20,
        };
        Log::open(store, config, ManualClock::new(1_700_000_000_000)).expect("open")
    }

    /// Job `j`'s `len` changes: each adds 1 to the counter of one of 50
    /// items (so consecutive batches share items), checkpointed at `j`.
    fn job(j: usize, len: usize) -> (Vec<Change>, Attached) {
        let changes = (0..len)
            .map(|i| Change {
                key: ItemKey::new(
                    TableName::new("t").expect("table"),
                    Scalar::S(format!("k{}", (j * 7 + i) % 50)),
                    None,
                )
                .expect("key"),
                ops: vec![Op::Add {
                    attr: AttrName::new("n").expect("attr"),
                    amount: 1,
                }],
                source_millis: None,
            })
            .collect();
        let attached = Attached {
            checkpoints: vec![(
                SourceId::new("src").expect("source"),
                Checkpoint(format!("{j:04}")),
            )],
            ..Attached::default()
        };
        (changes, attached)
    }

    type Answer = oneshot::Receiver<Result<IngestReport, StoreError>>;

    /// The jobs of `sizes` as the writer queues them, with their answers.
    fn group(sizes: &[usize]) -> (Vec<IngestJob>, Vec<Answer>) {
        sizes
            .iter()
            .enumerate()
            .map(|(j, &len)| {
                let (changes, attached) = job(j, len);
                let (tx, rx) = oneshot::channel();
                ((changes, attached, tx), rx)
            })
            .unzip()
    }

    /// Runs `ingest_group` as a round does: replies sent after a sync
    /// that succeeded; every job must be answered.
    fn run_group(log: &mut MemLog, sizes: &[usize]) -> Vec<Result<IngestReport, StoreError>> {
        let (jobs, answers) = group(sizes);
        let mut replies = Vec::new();
        ingest_group(log, jobs, &mut replies);
        for r in replies {
            r(&Ok(()));
        }
        answers
            .into_iter()
            .enumerate()
            .map(|(j, mut rx)| rx.try_recv().unwrap_or_else(|e| panic!("job {j} not answered: {e}")))
            .collect()
    }

    #[test]
    fn jobs_are_cut_into_commits_of_whole_jobs() {
        let cut = |sizes: &[usize]| -> Vec<Vec<usize>> {
            cut_batches(group(sizes).0)
                .iter()
                .map(|b| b.parts.iter().map(|(len, _)| *len).collect())
                .collect()
        };
        assert_eq!(cut(&[1, 1, 1]), vec![vec![1, 1, 1]]);
        assert_eq!(
            cut(&[300, 300, 400, 1, 2_500, 3, 600, 600]),
            vec![vec![300, 300, 400], vec![1], vec![2_500], vec![3, 600], vec![600]]
        );
        assert_eq!(cut(&[]), Vec::<Vec<usize>>::new());
    }

    /// However the jobs are cut and pipelined, each gets exactly what
    /// ingesting the jobs one after another gives, and the store ends the
    /// same.
    #[test]
    fn a_pipelined_group_answers_each_job_as_one_after_another() {
        for sizes in [
            vec![5],
            vec![300, 300, 500, 1_200, 10, 10],
            vec![1_000, 1_000, 1_000],
        ] {
            let mut grouped = log(MemStore::new(Durability::Sync));
            let answers = run_group(&mut grouped, &sizes);
            let mut reference = log(MemStore::new(Durability::Sync));
            for (j, (&len, answer)) in sizes.iter().zip(answers).enumerate() {
                let (changes, attached) = job(j, len);
                let expected = reference.ingest_with(&changes, attached).expect("ingest");
                assert_eq!(answer.expect("committed"), expected, "job {j} of {sizes:?}");
            }
            assert_eq!(grouped.applied(), reference.applied(), "{sizes:?}");
            let total: usize = sizes.iter().sum();
            assert_eq!(
                grouped.applied().get(&RegionId::new("r").expect("region")),
                Seq(total as u64)
            );
            let source = SourceId::new("src").expect("source");
            assert_eq!(
                grouped.store().checkpoint(&source).expect("checkpoint"),
                reference.store().checkpoint(&source).expect("checkpoint"),
            );
            for k in 0..50 {
                let key = ItemKey::new(
                    TableName::new("t").expect("table"),
                    Scalar::S(format!("k{k}")),
                    None,
                )
                .expect("key");
                assert_eq!(
                    grouped.item(&key).expect("item"),
                    reference.item(&key).expect("item"),
                    "k{k} after {sizes:?}"
                );
            }
        }
    }

    /// A failed commit answers every job of the group with the error,
    /// those of batches the pipeline never took too, and moves nothing.
    #[test]
    fn a_failed_commit_answers_every_job_with_the_error() {
        for sizes in [vec![3], vec![600, 600, 600, 600, 600]] {
            let store = MemStore::new(Durability::Sync);
            let mut failing = log(store.clone());
            store.fail_next_write();
            let answers = run_group(&mut failing, &sizes);
            assert!(
                answers.iter().all(Result::is_err),
                "{sizes:?}: {answers:?}"
            );
            assert!(failing.applied().is_empty(), "{:?}", failing.applied());
        }
    }
}
