//! The CRDT log of one region: local changes in, remote entries in, one
//! atomic store commit per batch.
//!
//! [`Log`] is the single writer of a [`LogStore`]. It stamps local changes
//! (origin = this region, the next dense `seq`, an HLC), turns them into
//! deltas against the current item states, and commits log entries, merged
//! items, the applied vector, source checkpoints and the HLC mark in one
//! [`CommitBatch`]. Remote entries are applied in per-origin `seq` order and
//! in causal order (an entry waits for its `deps`): duplicates are skipped
//! (idempotent apply); a gap or a missing dependency stops the batch there.
//!
//! Invariants: `applied[o]` is the highest seq of origin `o` in the log and
//! every lower one is there too (or was truncated after all peers had it);
//! an item's stored state is the join of every applied entry for it.

mod item_cache;
mod parked;
mod pipeline;

use std::time::Duration;

use crate::change::{Change, LogEntry};
use crate::clock::{Clock, ClockSkew, HybridClock};
use crate::crdt::{ItemState, OpError, encode_fresh};
use crate::ids::{Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;
use crate::schema::Schemas;
use crate::store::{
    Checkpoint, CommitBatch, DeadLetter, Durability, FreshEntry, LogStore, StoreError,
};
use item_cache::ItemCache;
pub use item_cache::ItemCacheStats;
pub use parked::ParkLimit;
use parked::Parked;

/// Why one local change was refused (the rest of its batch goes on). For a
/// source record this means "dead-letter it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The table is not replicated by this node.
    #[error("unknown table {0}: add a [[tables]] entry for it")]
    UnknownTable(TableName),
    /// The ops do not fit the item or its schema.
    #[error("item {key}: {source}")]
    Op {
        /// The item.
        key: ItemKey,
        /// What is wrong.
        source: OpError,
    },
}

/// What became of a batch of local changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    /// Per change, in order: its `(seq, hlc)` or why it was refused.
    pub outcomes: Vec<ChangeOutcome>,
    /// True when the accepted changes are already durable; otherwise they
    /// are durable after the next [`Log::sync`].
    pub durable: bool,
}

/// Why applying remote entries stopped early (the entries before the stop
/// were applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyStop {
    /// An entry skipped ahead of the applied vector: the sender must resend
    /// from `expected`.
    Gap {
        /// The origin.
        origin: RegionId,
        /// The seq that must come next.
        expected: Seq,
        /// The seq that came.
        got: Seq,
    },
    /// An entry's causal past is not applied yet: the entries it depends on
    /// must come first (from any peer).
    MissingDeps {
        /// The entry's origin.
        origin: RegionId,
        /// The entry's seq.
        seq: Seq,
        /// What it depends on beyond the applied vector.
        missing: VersionVector,
    },
    /// An entry's HLC is too far in the future: back off and retry later.
    ClockSkew(ClockSkew),
}

/// What became of a batch of remote entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries applied.
    pub applied: usize,
    /// Entries skipped because they were already in the log, or parked.
    pub duplicates: usize,
    /// Entries parked until their dependencies are applied (see
    /// [`Log::park_up_to`]).
    pub parked: usize,
    /// Why the batch stopped early, if it did.
    pub stopped: Option<ApplyStop>,
    /// True when the applied entries are already durable.
    pub durable: bool,
}

/// Settings of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// This region: the origin of local changes.
    pub region: RegionId,
    /// The replicated tables.
    pub schemas: Schemas,
    /// How far ahead of the local clock a remote timestamp may be.
    pub max_clock_skew: Duration,
    /// Budget of the in-memory cache of merged item states, in bytes (0
    /// turns it off). Merging into a cached state skips the store read and
    /// the decode; see [`LogConfig::DEFAULT_ITEM_CACHE_BYTES`].
    pub item_cache_bytes: usize,
}

impl LogConfig {
    /// The item cache's default budget: 64 MiB.
    pub const DEFAULT_ITEM_CACHE_BYTES: usize = 64 << 20;
}

/// What a source commits beside its changes (see [`Log::ingest_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    /// Source positions consumed.
    pub checkpoints: Vec<(SourceId, Checkpoint)>,
    /// Connector side state, key → value (see [`CommitBatch::side`]).
    pub side: Vec<(Vec<u8>, Vec<u8>)>,
    /// Records that could not be ingested.
    pub dead_letters: Vec<DeadLetter>,
}

/// The region's CRDT log over a store.
pub struct Log<S, C> {
    store: S,
    config: LogConfig,
    hlc: HybridClock<C>,
    applied: VersionVector,
    items: ItemCache,
    parked: Parked,
}

impl<S: LogStore, C: Clock> Log<S, C> {
    /// Opens the log on `store`, resuming its applied vector and HLC mark.
    pub fn open(store: S, config: LogConfig, clock: C) -> Result<Self, StoreError> {
        let applied = store.applied()?;
        let hlc = HybridClock::new(clock, store.hlc_mark()?, config.max_clock_skew);
        Ok(Self {
            items: ItemCache::new(config.item_cache_bytes),
            store,
            config,
            hlc,
            applied,
            parked: Parked::default(),
        })
    }

    /// This region.
    pub fn region(&self) -> &RegionId {
        &self.config.region
    }

    /// The replicated tables.
    pub fn schemas(&self) -> &Schemas {
        &self.config.schemas
    }

    /// The store (for reads; writes go through the log).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Closes the log, handing back its store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// The applied vector.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// Parks received entries whose dependencies are not applied yet,
    /// within `limit`, instead of stopping their batch ([`ParkLimit::OFF`],
    /// the default, turns parking off). A parked entry is applied by the first
    /// [`Log::apply_remote_many`] after its dependencies are; entries of
    /// its origin that follow it park behind it. Parked entries live in
    /// memory only: they count in [`Log::held`], never in
    /// [`Log::applied`].
    pub fn park_up_to(&mut self, limit: ParkLimit) {
        self.parked.set_max(limit);
    }

    /// The applied vector joined with what is parked: received entries
    /// this log holds in memory and will apply without anyone resending
    /// them — unless [`Log::park_epoch`] moves.
    pub fn held(&self) -> VersionVector {
        self.parked.held(&self.applied)
    }

    /// Entries parked now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// What the entries parked now weigh in memory, estimated (see
    /// [`LogEntry::memory_estimate`]).
    pub fn parked_bytes(&self) -> usize {
        self.parked.bytes()
    }

    /// Moves whenever parked entries were dropped instead of applied (a
    /// failed commit): a [`Log::held`] vector read before it moved no
    /// longer holds, and whoever was told it must resend from
    /// [`Log::applied`].
    pub fn park_epoch(&self) -> u64 {
        self.parked.epoch()
    }

    /// The HLC.
    pub fn clock(&self) -> &HybridClock<C> {
        &self.hlc
    }

    /// A fresh HLC reading (e.g. for heartbeats).
    pub fn now(&mut self) -> Hlc {
        self.hlc.now()
    }

    /// What the item cache saved since the log opened, and its size.
    pub fn item_cache_stats(&self) -> ItemCacheStats {
        self.items.stats()
    }

    /// The merged state of an item.
    pub fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError> {
        self.store.item(key)
    }

    /// Entries of `origin` after `after`, for shipping.
    pub fn entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.store.entries(origin, after, limit)
    }

    /// Up to `limit` entries the holder of `have` lacks, from every origin,
    /// in HLC order — which respects causality, so a receiver can apply
    /// them in the order given (what a peer link ships).
    pub fn entries_above(
        &self,
        have: &VersionVector,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        crate::store::entries_above(&self.store, &self.applied, have, limit)
    }

    /// True when a commit is durable once it returns (`sync` every batch);
    /// otherwise after the next [`Log::sync`].
    fn commits_are_durable(&self) -> bool {
        self.store.durability() == Durability::Sync
    }

    /// Makes every committed batch durable (group commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// Ingests local changes in one atomic commit, together with the source
    /// positions they came from. Refused changes are reported, not written;
    /// the checkpoints are written even if every change was refused (the
    /// caller dead-letters those records first).
    pub fn ingest(
        &mut self,
        changes: &[Change],
        checkpoints: Vec<(SourceId, Checkpoint)>,
    ) -> Result<IngestReport, StoreError> {
        self.ingest_with(
            changes,
            Attached {
                checkpoints,
                ..Attached::default()
            },
        )
    }

    /// [`Log::ingest`] with everything a source writes beside its changes:
    /// checkpoints, side state (e.g. its image of the table) and the dead
    /// letters of the records it could not read, all in the same atomic
    /// commit.
    pub fn ingest_with(
        &mut self,
        changes: &[Change],
        attached: Attached,
    ) -> Result<IngestReport, StoreError> {
        let (built, outcomes) = self.build_ingest(changes, attached)?;
        self.commit(built)?;
        Ok(IngestReport {
            outcomes,
            durable: self.commits_are_durable(),
        })
    }

    /// The commit of [`Log::ingest_with`], built against the log's current
    /// state (nothing written, the log's state untouched), and each
    /// change's outcome.
    fn build_ingest(
        &mut self,
        changes: &[Change],
        attached: Attached,
    ) -> Result<(Built, Vec<ChangeOutcome>), StoreError> {
        let (mut slots, of) = self.load(changes.iter().map(|c| &c.key))?;
        let mut batch = CommitBatch {
            checkpoints: attached.checkpoints,
            side: attached.side,
            dead_letters: attached.dead_letters,
            // Mostly inserts: room for every change as a fresh entry.
            fresh_entries: Vec::with_capacity(changes.len()),
            ..CommitBatch::default()
        };
        let mut applied = self.applied.clone();
        let region = self.config.region.clone();
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut deps = self.applied.clone();
        deps.set(region.clone(), Seq::ZERO);
        for (change, &i) in changes.iter().zip(&of) {
            let Some(schema) = self.config.schemas.get(change.key.table()) else {
                outcomes.push(Err(ChangeError::UnknownTable(change.key.table().clone())));
                continue;
            };
            let slot = &mut slots[i];
            if let Some(i) = slot.from_entry.take() {
                // Changed again in this batch: its state so far is that
                // entry's delta.
                slot.state = batch
                    .entries
                    .get(i)
                    .map(|e| e.delta.clone())
                    .unwrap_or_default();
            }
            let hlc = match change.source_millis {
                Some(ms) => self.hlc.stamp_source(ms),
                None => self.hlc.now(),
            };
            if slot.changes == 1 && slot.state.is_bottom() {
                // An insert, and its item's only change in the batch: its
                // delta encoded straight from the ops, if they are plain.
                let mut delta = Vec::new();
                if encode_fresh(schema, &region, hlc, &change.ops, &mut delta).is_some() {
                    let seq = applied.get(&region).next();
                    applied.set(region.clone(), seq);
                    // Its state stays ⊥ here: the store writes the item.
                    slot.touched = true;
                    batch.fresh_entries.push(FreshEntry::from_parts(
                        region.clone(),
                        seq,
                        hlc,
                        deps.clone(),
                        change.key.clone(),
                        delta,
                    ));
                    outcomes.push(Ok((seq, hlc)));
                    continue;
                }
            }
            match slot
                .state
                .prepare_in_place(schema, &region, hlc, &change.ops)
            {
                Ok((delta, is_state)) => {
                    let seq = applied.get(&region).next();
                    applied.set(region.clone(), seq);
                    if is_state {
                        // The new state is the delta (the item was ⊥):
                        // one copy, in the entry.
                        slot.from_entry = Some(batch.entries.len());
                    }
                    slot.touched = true;
                    batch.entries.push(LogEntry {
                        origin: region.clone(),
                        seq,
                        hlc,
                        deps: deps.clone(),
                        key: change.key.clone(),
                        delta,
                    });
                    outcomes.push(Ok((seq, hlc)));
                }
                Err(source) => outcomes.push(Err(ChangeError::Op {
                    key: change.key.clone(),
                    source,
                })),
            }
        }
        Ok((
            Built {
                batch,
                slots,
                applied,
            },
            outcomes,
        ))
    }

    /// Applies entries received from a peer, in order, in one atomic
    /// commit. Entries already applied are skipped; the first entry that
    /// would leave a gap, or whose HLC is beyond the clock-skew bound,
    /// stops the batch (everything before it is applied).
    pub fn apply_remote(&mut self, entries: &[LogEntry]) -> Result<ApplyReport, StoreError> {
        self.apply_remote_owned(entries.to_vec())
    }

    /// [`Log::apply_remote`] of entries the caller gives up: the accepted
    /// ones are committed as they are, without a copy.
    pub fn apply_remote_owned(
        &mut self,
        entries: Vec<LogEntry>,
    ) -> Result<ApplyReport, StoreError> {
        let mut reports = self.apply_remote_many(vec![entries])?;
        Ok(reports.pop().unwrap_or(ApplyReport {
            applied: 0,
            duplicates: 0,
            parked: 0,
            stopped: None,
            durable: self.commits_are_durable(),
        }))
    }

    /// Applies several received batches, each as [`Log::apply_remote`]
    /// would one after the other (a stop ends only its own batch), in one
    /// atomic commit: an item several batches change is read and written
    /// once. One report per batch, in order; an error means none of them
    /// was applied (and whatever was parked is dropped: see
    /// [`Log::park_epoch`]).
    pub fn apply_remote_many(
        &mut self,
        batches: Vec<Vec<LogEntry>>,
    ) -> Result<Vec<ApplyReport>, StoreError> {
        let durable = self.commits_are_durable();
        let mut applied = self.applied.clone();
        let mut accepted = Vec::with_capacity(batches.iter().map(Vec::len).sum());
        let taken = self.parked.taken();
        // Parked entries a snapshot made ready.
        self.unpark(&mut applied, &mut accepted);
        let mut reports = Vec::with_capacity(batches.len());
        for entries in batches {
            let before = accepted.len();
            let (duplicates, parked, stopped) = self.accept(entries, &mut applied, &mut accepted);
            reports.push(ApplyReport {
                applied: accepted.len() - before,
                duplicates,
                parked,
                stopped,
                durable,
            });
        }
        if accepted.is_empty() {
            return Ok(reports);
        }
        let committed = self.commit_remote(accepted, applied);
        if committed.is_err() && self.parked.taken() != taken {
            // Entries taken out of the parked runs went down with the
            // commit; the rest may depend on them.
            self.parked.clear();
        }
        committed.map(|()| reports)
    }

    /// Joins accepted remote entries into their items and commits them.
    fn commit_remote(
        &mut self,
        accepted: Vec<LogEntry>,
        applied: VersionVector,
    ) -> Result<(), StoreError> {
        let (mut slots, of) = self.load(accepted.iter().map(|e| &e.key))?;
        for (entry, &i) in accepted.iter().zip(&of) {
            let slot = &mut slots[i];
            slot.state.join(&entry.delta);
            slot.touched = true;
        }
        let batch = CommitBatch {
            entries: accepted,
            ..CommitBatch::default()
        };
        self.commit(Built {
            batch,
            slots,
            applied,
        })
    }

    /// Moves the entries of one received batch that apply next (given
    /// `applied`, which it advances) into `accepted`, parking those that
    /// wait for dependencies while there is room, up to the first that
    /// cannot be either; returns how many were duplicates (or parked
    /// already), how many it parked, and why it stopped, if it did.
    fn accept(
        &mut self,
        entries: Vec<LogEntry>,
        applied: &mut VersionVector,
        accepted: &mut Vec<LogEntry>,
    ) -> (usize, usize, Option<ApplyStop>) {
        let mut duplicates = 0;
        let mut parked = 0;
        for entry in entries {
            let have = applied.get(&entry.origin);
            let top = self.parked.top(&entry.origin).map_or(have, |t| t.max(have));
            if entry.seq <= top {
                duplicates += 1;
                continue;
            }
            if entry.seq != top.next() {
                let stop = ApplyStop::Gap {
                    origin: entry.origin.clone(),
                    expected: top.next(),
                    got: entry.seq,
                };
                return (duplicates, parked, Some(stop));
            }
            let waits_behind = top > have;
            let missing = parked::missing_deps(&entry, applied);
            if waits_behind || !missing.is_empty() {
                let Some(weight) = self.parked.room_for(&entry) else {
                    let missing = if waits_behind {
                        self.parked.missing(&entry.origin, applied)
                    } else {
                        missing
                    };
                    let stop = ApplyStop::MissingDeps {
                        origin: entry.origin.clone(),
                        seq: entry.seq,
                        missing,
                    };
                    return (duplicates, parked, Some(stop));
                };
                // Observed now: a parked entry applies later without
                // another check, so one beyond the skew bound never parks.
                if let Err(skew) = self.hlc.observe(entry.hlc) {
                    return (duplicates, parked, Some(ApplyStop::ClockSkew(skew)));
                }
                self.parked.push(entry, weight);
                parked += 1;
                continue;
            }
            if let Err(skew) = self.hlc.observe(entry.hlc) {
                return (duplicates, parked, Some(ApplyStop::ClockSkew(skew)));
            }
            applied.set(entry.origin.clone(), entry.seq);
            accepted.push(entry);
            self.unpark(applied, accepted);
        }
        (duplicates, parked, None)
    }

    /// Moves parked entries whose dependencies `applied` now covers into
    /// `accepted`, advancing `applied`, until none is ready.
    fn unpark(&mut self, applied: &mut VersionVector, accepted: &mut Vec<LogEntry>) {
        if self.parked.is_empty() {
            return;
        }
        while let Some(entry) = self.parked.take_ready(applied) {
            applied.set(entry.origin.clone(), entry.seq);
            accepted.push(entry);
        }
    }

    /// Joins a chunk of a peer's state snapshot into the items (bootstrap
    /// of a new or wiped node, or of one behind a peer's truncated log).
    /// The applied vector does not move until [`Log::finish_snapshot`].
    pub fn install_snapshot_items(
        &mut self,
        items: &[(ItemKey, ItemState)],
    ) -> Result<(), StoreError> {
        let (mut slots, of) = self.load(items.iter().map(|(k, _)| k))?;
        for ((_, state), &i) in items.iter().zip(&of) {
            slots[i].state.join(state);
        }
        let mut batch = CommitBatch {
            items: slots
                .into_iter()
                .filter(|s| !s.state.is_bottom())
                .map(|s| (s.key, s.state))
                .collect(),
            applied: self.applied.clone(),
            hlc_mark: self.hlc.high_water(),
            ..CommitBatch::default()
        };
        let committed = self.store.commit(&batch);
        self.settle_items(&mut batch, &committed);
        committed
    }

    /// Ends a snapshot whose items reflect every entry up to `snapshot`:
    /// the applied vector becomes the join of both. Origins that jumped
    /// ahead have a hole in this log, so their log start moves to the
    /// snapshot's seq (peers behind it get a snapshot from here in turn).
    /// Returns the origins that jumped.
    pub fn finish_snapshot(
        &mut self,
        snapshot: &VersionVector,
    ) -> Result<VersionVector, StoreError> {
        let jumped: VersionVector = snapshot
            .iter()
            .filter(|(o, s)| *s > self.applied.get(o))
            .map(|(o, s)| (o.clone(), s))
            .collect();
        if jumped.is_empty() {
            return Ok(jumped);
        }
        let mut applied = self.applied.clone();
        applied.join(snapshot);
        let batch = CommitBatch {
            applied: applied.clone(),
            hlc_mark: self.hlc.high_water(),
            ..CommitBatch::default()
        };
        self.store.commit(&batch)?;
        self.parked.forget_covered(&applied);
        self.applied = applied;
        self.store.truncate(&jumped)?;
        Ok(jumped)
    }

    /// Removes the log prefix that every one of `peers` acknowledged and
    /// returns the vector truncated up to.
    pub fn truncate_acknowledged(&self, peers: &[RegionId]) -> Result<VersionVector, StoreError> {
        let mut upto = self.applied.clone();
        for peer in peers {
            upto = upto.meet(&self.store.acked(peer)?);
        }
        self.store.truncate(&upto)?;
        Ok(upto)
    }

    /// Current states of the given items (each loaded once), sorted by key:
    /// taken from the item cache, or read from the store; and for each of
    /// `keys`, in order, the index of its slot. Every slot must then go
    /// through [`Log::commit`] (or [`Log::settle_items`]), which puts the
    /// states back or forgets them.
    fn load<'k>(
        &mut self,
        keys: impl Iterator<Item = &'k ItemKey>,
    ) -> Result<(Vec<Slot>, Vec<usize>), StoreError> {
        let keys: Vec<&ItemKey> = keys.collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(keys[b]));
        // The distinct keys, how many of `keys` each is, and where each of
        // `keys` went.
        let mut unique: Vec<ItemKey> = Vec::with_capacity(keys.len());
        let mut counts: Vec<usize> = Vec::with_capacity(keys.len());
        let mut of = vec![0; keys.len()];
        for i in order {
            match counts.last_mut() {
                Some(n) if unique.last() == Some(keys[i]) => *n += 1,
                _ => {
                    unique.push(keys[i].clone());
                    counts.push(1);
                }
            }
            of[i] = unique.len() - 1;
        }
        let cached: Vec<Option<ItemState>> = unique.iter().map(|k| self.items.take(k)).collect();
        let missing: Vec<ItemKey> = unique
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let mut found = match self.store.items(&missing) {
            Ok(found) => found.into_iter(),
            Err(e) => {
                for (key, _) in unique.iter().zip(&cached).filter(|(_, c)| c.is_some()) {
                    self.items.forget(key);
                }
                return Err(e);
            }
        };
        let slots = unique
            .into_iter()
            .zip(cached)
            .zip(counts)
            .map(|((key, cached), changes)| Slot {
                key,
                taken: cached.is_some(),
                state: cached
                    .or_else(|| found.next().flatten())
                    .unwrap_or_default(),
                changes,
                touched: false,
                from_entry: None,
            })
            .collect();
        Ok((slots, of))
    }

    /// After a commit of `batch`'s items: on success they are the items'
    /// states, cached; on failure the cache forgets them (their stored
    /// states are whatever the store kept).
    fn settle_items(&mut self, batch: &mut CommitBatch, committed: &Result<(), StoreError>) {
        for (key, state) in batch.items.drain(..) {
            match committed {
                Ok(()) => self.items.put(key, state),
                Err(_) => self.items.forget(&key),
            }
        }
    }

    /// Commits `built`: its batch with the states of the items its entries
    /// touched; the log's applied vector moves only if the commit succeeded.
    fn commit(&mut self, built: Built) -> Result<(), StoreError> {
        let (mut batch, applied) = self.take_items(built);
        let committed = self.store.commit(&batch);
        self.settle_items(&mut batch, &committed);
        committed?;
        self.applied = applied;
        Ok(())
    }

    /// Completes `built`'s batch for its commit: the states of the items
    /// its entries touched (the others go back into the cache as they
    /// were), its applied vector and the HLC mark; returns it with the
    /// applied vector after it.
    fn take_items(&mut self, built: Built) -> (CommitBatch, VersionVector) {
        let Built {
            mut batch,
            slots,
            applied,
        } = built;
        // A bottom state (e.g. the delete of an item never seen) holds no
        // information and, contexts only growing, never replaces a stored
        // one. (A fresh entry's item is ⊥ here too: the store writes it.)
        for s in slots {
            if !s.touched {
                // Unchanged: back into the cache as it was.
                self.items.put(s.key, s.state);
                continue;
            }
            match s.from_entry {
                // A new item (not cached: see `item_cache`).
                Some(i) => {
                    if batch.entries.get(i).is_some_and(|e| !e.delta.is_bottom()) {
                        batch.items_from_entries.push(i);
                    }
                }
                None if s.state.is_bottom() => {}
                None => {
                    batch.items.push((s.key, s.state));
                    continue;
                }
            }
            // Not cached after the commit: a placeholder left by taking the
            // state out goes (an insert's item, never cached, left none).
            if s.taken {
                self.items.forget(&s.key);
            }
        }
        batch.applied = applied.clone();
        batch.hlc_mark = self.hlc.high_water();
        (batch, applied)
    }
}

/// A commit built against the log's state and not yet made.
struct Built {
    /// The batch, without its items' states (see [`Log::take_items`]).
    batch: CommitBatch,
    /// The states of the items the batch read.
    slots: Vec<Slot>,
    /// The applied vector after the batch.
    applied: VersionVector,
}

/// One local change's outcome: its `(seq, hlc)` or why it was refused.
pub type ChangeOutcome = Result<(Seq, Hlc), ChangeError>;

/// One item's state while a batch changes it.
struct Slot {
    key: ItemKey,
    /// The state, unless `from_entry` holds it, or a fresh entry does
    /// (then it stays ⊥ here).
    state: ItemState,
    /// How many of the batch's entries it was loaded for.
    changes: usize,
    /// Its state was taken from the item cache.
    taken: bool,
    /// An entry of the batch changed it (only those are written).
    touched: bool,
    /// The index of the batch's entry whose delta is the item's state.
    from_entry: Option<usize>,
}
