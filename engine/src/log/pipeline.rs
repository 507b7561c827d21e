//! Pipelined ingest: the store writes one batch while the log builds the
//! next.
//!
//! A commit has two halves that need different things: building a batch
//! (reading the items, stamping the changes, building their deltas) needs
//! the log's state, and writing it (encoding, the WriteBatch, the WAL and
//! its fsync, the memtables) needs only the store. [`Log::ingest_pipelined`]
//! runs the second half on a thread of its own, so on two or more cores a
//! stream of batches costs about the larger half instead of the sum.
//!
//! What stays exactly as with [`Log::ingest_with`] one batch after
//! another: each batch is one atomic commit, batches commit in order, and a
//! batch is reported only once its commit returned (durable under
//! [`Durability::Sync`](crate::store::Durability::Sync)).
//!
//! How the log's state stays right while a batch is in flight:
//! - the applied vector (and so the next seq) moves when a batch is built,
//!   as if its commit had succeeded; if a commit fails, the writer stops,
//!   no later batch is written, and the log reads its applied vector back
//!   from the store, which holds exactly the batches committed before;
//! - the states of a batch's items stay out of the item cache until its
//!   commit returns (then they go in, or are forgotten after a failure),
//!   and a batch that touches an item of a batch still in flight waits for
//!   that commit before it reads the item. So the cache and the store only
//!   ever hold committed states, and hot items cost a wait, never a stale
//!   read.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::mpsc;

use foldhash::fast::RandomState;

use super::{Attached, Built, ChangeOutcome, IngestReport, Log};
use crate::change::Change;
use crate::clock::Clock;
use crate::store::{CommitBatch, LogStore, StoreError};

/// A batch sent to the writer and not yet reported.
struct InFlight {
    /// Hashes of the item keys it writes.
    keys: KeyHashes,
    /// Its changes' outcomes.
    outcomes: Vec<ChangeOutcome>,
}

/// Hashes of item keys (a collision only costs a needless wait).
type KeyHashes = HashSet<u64, RandomState>;

/// What the writer hands back: the batch and how its commit went.
type Written = (CommitBatch, Result<(), StoreError>);

impl<S: LogStore + Clone, C: Clock> Log<S, C> {
    /// Ingests `batches` in order, each exactly as [`Log::ingest_with`]
    /// would (one atomic commit per batch), writing each batch to the store
    /// on a second thread while the next one is built.
    ///
    /// `reported` gets every batch's outcome, in order, once its commit
    /// returned: its report, or the error of the first commit that failed,
    /// for that batch and for every batch taken after it (none of those
    /// was written): one report per batch taken from `batches`. The call
    /// returns after the last report; on a failure it stops taking batches
    /// and returns the error.
    ///
    /// The store handle is cloned for the writer thread (an
    /// `Arc<RocksStore>` or a [`MemStore`](crate::store::MemStore)).
    pub fn ingest_pipelined<I>(
        &mut self,
        batches: I,
        mut reported: impl FnMut(Result<IngestReport, StoreError>),
    ) -> Result<(), StoreError>
    where
        I: IntoIterator<Item = (Vec<Change>, Attached)>,
    {
        let durable = self.commits_are_durable();
        let store = self.store.clone();
        let hasher = RandomState::default();
        std::thread::scope(|scope| {
            // One batch queued behind the one being written: enough to keep
            // the writer busy, and the log's state at most two batches
            // ahead of the store.
            let (to_writer, jobs) = mpsc::sync_channel::<CommitBatch>(1);
            let (done_tx, done) = mpsc::channel::<Written>();
            scope.spawn(move || {
                for batch in jobs {
                    let committed = store.commit(&batch);
                    let failed = committed.is_err();
                    // Handed back whole: dropping the entries here, away
                    // from the thread that allocated them, measured slower.
                    if done_tx.send((batch, committed)).is_err() || failed {
                        // Nothing after a failed commit may be written: its
                        // seqs follow the failed batch's.
                        break;
                    }
                }
            });
            let mut in_flight = VecDeque::new();
            let mut failure = None;
            let mut unbuilt = None;
            for (changes, attached) in batches {
                let keys: KeyHashes = changes.iter().map(|c| hasher.hash_one(&c.key)).collect();
                // Report what is written; wait for a batch in flight that
                // writes an item this one reads.
                while !in_flight.is_empty() {
                    let waits = in_flight
                        .iter()
                        .any(|f: &InFlight| !f.keys.is_disjoint(&keys));
                    let written = if waits {
                        done.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
                    } else {
                        done.try_recv()
                    };
                    let written = match written {
                        Ok(written) => written,
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            // The writer stopped: the drain below reports
                            // what it left unwritten.
                            failure.get_or_insert_with(writer_gone);
                            break;
                        }
                    };
                    if let Some(batch) = in_flight.pop_front() {
                        self.settle_written(written, batch, durable, &mut failure, &mut reported);
                    }
                }
                if let Some(e) = &failure {
                    // Taken but not built: reported failed, as the batches
                    // in flight behind the failure are.
                    reported(Err(e.clone()));
                    break;
                }
                match self.build_ingest(&changes, attached) {
                    Ok((built, outcomes)) => {
                        in_flight.push_back(InFlight { keys, outcomes });
                        if to_writer.send(self.stage(built)).is_err() {
                            // The writer stopped after a failure, reported below.
                            break;
                        }
                    }
                    Err(e) => {
                        unbuilt = Some(e);
                        break;
                    }
                }
            }
            drop(to_writer);
            while let Some(batch) = in_flight.pop_front() {
                match done.recv() {
                    Ok(written) => {
                        self.settle_written(written, batch, durable, &mut failure, &mut reported);
                    }
                    // Not written: the writer stopped at an earlier failure.
                    Err(_) => reported(Err(failure.get_or_insert_with(writer_gone).clone())),
                }
            }
            if let Some(e) = unbuilt {
                reported(Err(e.clone()));
                failure.get_or_insert(e);
            }
            match failure {
                Some(e) => {
                    // The log ran ahead of the store: take the store's
                    // word for what is applied.
                    if let Ok(applied) = self.store.applied() {
                        self.applied = applied;
                    }
                    Err(e)
                }
                None => Ok(()),
            }
        })
    }

    /// Completes `built` for the writer, as if its commit had succeeded
    /// already: the applied vector moves, the states of its items leave
    /// the cache with it.
    fn stage(&mut self, built: Built) -> CommitBatch {
        let (batch, applied) = self.take_items(built);
        self.applied = applied;
        batch
    }

    /// Settles a batch the writer handed back and reports it: its items
    /// into the cache if its commit succeeded (forgotten otherwise, and the
    /// failure recorded).
    fn settle_written(
        &mut self,
        (mut batch, committed): Written,
        in_flight: InFlight,
        durable: bool,
        failure: &mut Option<StoreError>,
        reported: &mut impl FnMut(Result<IngestReport, StoreError>),
    ) {
        self.settle_items(&mut batch, &committed);
        match committed {
            Ok(()) => reported(Ok(IngestReport {
                outcomes: in_flight.outcomes,
                durable,
            })),
            Err(e) => {
                reported(Err(e.clone()));
                failure.get_or_insert(e);
            }
        }
    }
}

/// The writer thread ended without reporting a batch (it panicked).
fn writer_gone() -> StoreError {
    StoreError::Backend {
        op: "pipelined commit",
        message: "the writer thread stopped before writing the batch".to_owned(),
    }
}
