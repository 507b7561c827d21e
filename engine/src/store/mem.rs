//! [`MemStore`]: the in-memory [`LogStore`], for tests and the deterministic
//! simulation, with power-cut simulation.
//!
//! It stores the very bytes [`super::RocksStore`] stores (the shared
//! [`super::codec`] layout, ordered bytewise), so both stores scan in the
//! same order and every value round-trips through the on-disk encoding in
//! simulation too.
//!
//! Invariants:
//! - there are two images, `current` (what reads see) and `durable` (what
//!   survives [`MemStore::crash`]); `durable` is always `current` minus a
//!   suffix of whole writes, never part of one;
//! - under [`Durability::Sync`] every write reaches both images before it
//!   returns; under [`Durability::Buffered`] it reaches `durable` at the
//!   next successful [`LogStore::sync`];
//! - after a failed write (only an injected one: see
//!   [`MemStore::fail_next_write`]) every later write and sync fails with
//!   [`StoreError::Backend`] until [`MemStore::crash`] (a restart).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::codec::{self, Cf, KeyRange, Put};
use super::{Checkpoint, CommitBatch, DeadLetter, DeadLetterId, Durability, LogStore, StoreError};
use crate::change::LogEntry;
use crate::crdt::ItemState;
use crate::ids::{Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;

/// One write to an image.
#[derive(Debug, Clone)]
enum Write {
    Put(Put),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, KeyRange),
}

/// The contents of the four key spaces.
#[derive(Debug, Clone, Default)]
struct Image {
    cfs: [BTreeMap<Vec<u8>, Vec<u8>>; Cf::ALL.len()],
}

impl Image {
    fn cf(&self, cf: Cf) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.cfs[cf.index()]
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Option<&[u8]> {
        self.cf(cf).get(key).map(Vec::as_slice)
    }

    /// The pairs of `range`, in key order.
    fn range<'a>(
        &'a self,
        cf: Cf,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a [u8])> + 'a> {
        if range.is_empty() {
            return Box::new(std::iter::empty());
        }
        let end = match &range.end {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        Box::new(
            self.cf(cf)
                .range::<[u8], _>((Bound::Included(range.start.as_slice()), end))
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
    }

    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Put(p) => {
                    self.cfs[p.cf.index()].insert(p.key.clone(), p.value.clone());
                }
                Write::Delete(cf, key) => {
                    self.cfs[cf.index()].remove(key);
                }
                Write::DeleteRange(cf, range) => {
                    let doomed: Vec<Vec<u8>> =
                        self.range(*cf, range).map(|(k, _)| k.to_vec()).collect();
                    for k in doomed {
                        self.cfs[cf.index()].remove(&k);
                    }
                }
            }
        }
    }

    /// The state of the item at `key`, read through to its log entry if it
    /// points at one.
    fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError> {
        self.get(Cf::Items, &key.encode())
            .map(|b| self.item_state(key, b))
            .transpose()
    }

    /// The state of the item stored at `key` as `bytes`.
    fn item_state(&self, key: &ItemKey, bytes: &[u8]) -> Result<ItemState, StoreError> {
        // One image: an entry an item points at is there, or the item is
        // corrupt.
        codec::read_item(key, bytes, |k| Ok(self.get(Cf::Log, k)))?.into_state(key)
    }

    fn meta(&self, key: &str) -> Option<&[u8]> {
        self.get(Cf::Meta, key.as_bytes())
    }

    fn vector(&self, what: &'static str, key: &str) -> Result<VersionVector, StoreError> {
        self.meta(key).map_or_else(
            || Ok(VersionVector::new()),
            |b| codec::decode_vector(what, key, b),
        )
    }

    fn hlc(&self) -> Result<Hlc, StoreError> {
        self.meta(codec::META_HLC)
            .map_or(Ok(Hlc::default()), codec::decode_hlc)
    }

    /// Decodes up to `limit` pairs of `range`.
    fn collect<T>(
        &self,
        cf: Cf,
        range: &KeyRange,
        limit: usize,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.range(cf, range)
            .take(limit)
            .map(|(k, v)| decode(k, v))
            .collect()
    }
}

/// Everything behind the lock.
#[derive(Debug, Default)]
struct State {
    /// What reads see.
    current: Image,
    /// What survives a crash.
    durable: Image,
    /// Writes in `current` but not yet in `durable`, oldest first.
    unsynced: Vec<Vec<Write>>,
    /// A write failed: refuse writes until a restart.
    poisoned: bool,
    /// Fail the next write (fault injection).
    fail_next: bool,
}

/// An in-memory [`LogStore`] with crash simulation.
///
/// Cloning is cheap and **shares** the store: every clone sees the same
/// data, and [`MemStore::crash`] on one clone crashes them all (as one
/// process holding several handles would).
#[derive(Debug, Clone)]
pub struct MemStore {
    durability: Durability,
    state: Arc<RwLock<State>>,
}

fn lock_poisoned(op: &'static str) -> StoreError {
    StoreError::Backend {
        op,
        message: "memory store lock poisoned by a panic".to_owned(),
    }
}

impl MemStore {
    /// An empty store with the given durability policy.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            state: Arc::new(RwLock::new(State::default())),
        }
    }

    /// Simulates a power cut and restart: writes not yet durable are lost
    /// (under [`Durability::Buffered`], everything since the last
    /// successful [`LogStore::sync`]), and the store accepts writes again.
    /// Every clone sees the result.
    pub fn crash(&self) {
        let mut state = match self.state.write() {
            Ok(guard) => guard,
            // A panic while writing left `current` suspect; a crash
            // discards it anyway.
            Err(poisoned) => poisoned.into_inner(),
        };
        state.current = state.durable.clone();
        state.unsynced.clear();
        state.poisoned = false;
        state.fail_next = false;
        self.state.clear_poison();
    }

    /// Makes the next write or sync fail with [`StoreError::Backend`]
    /// (leaving nothing of itself behind) and poisons the store, as a
    /// failed fsync would; for tests of the fatal-error path.
    pub fn fail_next_write(&self) {
        if let Ok(mut state) = self.state.write() {
            state.fail_next = true;
        }
    }

    /// The number of writes not yet durable (always 0 under
    /// [`Durability::Sync`]).
    pub fn unsynced_writes(&self) -> usize {
        self.state.read().map_or(0, |s| s.unsynced.len())
    }

    fn read(&self, op: &'static str) -> Result<RwLockReadGuard<'_, State>, StoreError> {
        self.state.read().map_err(|_| lock_poisoned(op))
    }

    fn lock_for_write(&self, op: &'static str) -> Result<RwLockWriteGuard<'_, State>, StoreError> {
        let mut state = self.state.write().map_err(|_| lock_poisoned(op))?;
        if state.poisoned {
            return Err(StoreError::Backend {
                op,
                message: "store refuses writes after an earlier write failed; restart the node"
                    .to_owned(),
            });
        }
        if state.fail_next {
            state.fail_next = false;
            state.poisoned = true;
            return Err(StoreError::Backend {
                op,
                message: "injected write failure".to_owned(),
            });
        }
        Ok(state)
    }

    /// Plans a write against the current image (under the write lock, so
    /// read-modify-write is atomic) and applies it.
    fn write<R>(
        &self,
        op: &'static str,
        plan: impl FnOnce(&Image) -> Result<(Vec<Write>, R), StoreError>,
    ) -> Result<R, StoreError> {
        let mut state = self.lock_for_write(op)?;
        let (writes, result) = plan(&state.current)?;
        if writes.is_empty() {
            return Ok(result);
        }
        state.current.apply(&writes);
        match self.durability {
            Durability::Sync => state.durable.apply(&writes),
            Durability::Buffered => state.unsynced.push(writes),
        }
        Ok(result)
    }
}

fn puts(puts: Vec<Put>) -> Vec<Write> {
    puts.into_iter().map(Write::Put).collect()
}

impl LogStore for MemStore {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        self.write("commit", |img| {
            let applied = img.vector("applied vector", codec::META_APPLIED)?;
            let hlc = img.hlc()?;
            let next = img
                .meta(codec::META_DEAD_LETTER_NEXT)
                .map(codec::decode_counter)
                .transpose()?;
            Ok((puts(codec::commit_puts(batch, &applied, hlc, next)?), ()))
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut state = self.lock_for_write("sync")?;
        let state = &mut *state;
        for writes in state.unsynced.drain(..) {
            state.durable.apply(&writes);
        }
        Ok(())
    }

    fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError> {
        self.read("read item")?.current.item(key)
    }

    fn items(&self, keys: &[ItemKey]) -> Result<Vec<Option<ItemState>>, StoreError> {
        let state = self.read("read items")?;
        keys.iter().map(|key| state.current.item(key)).collect()
    }

    fn scan_items(
        &self,
        table: Option<&TableName>,
        after: Option<&ItemKey>,
        limit: usize,
    ) -> Result<Vec<(ItemKey, ItemState)>, StoreError> {
        let state = self.read("scan items")?;
        let range = codec::scan_range(table, after);
        let image = &state.current;
        image.collect(Cf::Items, &range, limit, |k, v| {
            let key = codec::decode_item_key(k)?;
            let item = image.item_state(&key, v)?;
            Ok((key, item))
        })
    }

    fn entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let state = self.read("read log entries")?;
        let range = codec::entries_range(origin, after);
        state
            .current
            .collect(Cf::Log, &range, limit, codec::entry_from_kv)
    }

    fn applied(&self) -> Result<VersionVector, StoreError> {
        self.read("read applied vector")?
            .current
            .vector("applied vector", codec::META_APPLIED)
    }

    fn log_start(&self) -> Result<VersionVector, StoreError> {
        self.read("read log start")?
            .current
            .vector("log start vector", codec::META_LOG_START)
    }

    fn truncate(&self, upto: &VersionVector) -> Result<(), StoreError> {
        self.write("truncate log", |img| {
            let applied = img.vector("applied vector", codec::META_APPLIED)?;
            let start = img.vector("log start vector", codec::META_LOG_START)?;
            let plan = codec::truncate_plan(upto, &applied, &start)?;
            let mut writes = Vec::new();
            for (start, end) in plan.ranges {
                let range = KeyRange {
                    start,
                    end: Some(end),
                };
                // Items that point at entries about to go get their states.
                for (k, v) in img.range(Cf::Log, &range) {
                    let rewrite = codec::item_rewrite_before_truncation(k, v, |item| {
                        Ok(img.get(Cf::Items, item))
                    })?;
                    writes.extend(rewrite.map(Write::Put));
                }
                writes.push(Write::DeleteRange(Cf::Log, range));
            }
            if let Some((_, bytes)) = plan.log_start {
                writes.push(Write::Put(Put {
                    cf: Cf::Meta,
                    key: codec::META_LOG_START.as_bytes().to_vec(),
                    value: bytes,
                }));
            }
            Ok((writes, ()))
        })
    }

    fn acked(&self, peer: &RegionId) -> Result<VersionVector, StoreError> {
        self.read("read acked vector")?
            .current
            .vector("acked vector", &codec::acked_key(peer))
    }

    fn acked_all(&self) -> Result<BTreeMap<RegionId, VersionVector>, StoreError> {
        let state = self.read("read acked vectors")?;
        let range = codec::meta_range(codec::META_ACKED_PREFIX);
        Ok(state
            .current
            .collect(Cf::Meta, &range, usize::MAX, codec::acked_from_kv)?
            .into_iter()
            .collect())
    }

    fn set_acked(&self, peer: &RegionId, acked: &VersionVector) -> Result<(), StoreError> {
        let put = codec::acked_put(peer, acked)?;
        self.write("write acked vector", |_| Ok((vec![Write::Put(put)], ())))
    }

    fn checkpoint(&self, source: &SourceId) -> Result<Option<Checkpoint>, StoreError> {
        let key = codec::checkpoint_key(source);
        self.read("read checkpoint")?
            .current
            .meta(&key)
            .map(|b| codec::decode_checkpoint(&key, b))
            .transpose()
    }

    fn checkpoints(&self) -> Result<Vec<(SourceId, Checkpoint)>, StoreError> {
        let state = self.read("read checkpoints")?;
        let range = codec::meta_range(codec::META_CHECKPOINT_PREFIX);
        state
            .current
            .collect(Cf::Meta, &range, usize::MAX, codec::checkpoint_from_kv)
    }

    fn hlc_mark(&self) -> Result<Hlc, StoreError> {
        self.read("read hlc mark")?.current.hlc()
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<DeadLetterId, StoreError> {
        self.write("write dead letter", |img| {
            let next = img
                .meta(codec::META_DEAD_LETTER_NEXT)
                .map(codec::decode_counter)
                .transpose()?;
            let (id, p) = codec::dead_letter_puts(next, letter)?;
            Ok((puts(p), id))
        })
    }

    fn dead_letters(
        &self,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Result<Vec<(DeadLetterId, DeadLetter)>, StoreError> {
        let state = self.read("read dead letters")?;
        let range = codec::dead_letters_range(after);
        state
            .current
            .collect(Cf::DeadLetters, &range, limit, codec::dead_letter_from_kv)
    }

    fn remove_dead_letter(&self, id: DeadLetterId) -> Result<bool, StoreError> {
        self.write("remove dead letter", |img| {
            let key = codec::dead_letter_key(id).to_vec();
            if img.get(Cf::DeadLetters, &key).is_none() {
                return Ok((Vec::new(), false));
            }
            Ok((vec![Write::Delete(Cf::DeadLetters, key)], true))
        })
    }

    fn side(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let state = self.read("read side state")?;
        state
            .current
            .get(Cf::Side, key)
            .map(|b| codec::decode_side(key, b))
            .transpose()
    }

    fn item_and_side(
        &self,
        key: &ItemKey,
        side: &[u8],
    ) -> Result<(Option<ItemState>, Option<Vec<u8>>), StoreError> {
        // One lock: no commit lands between the two reads.
        let state = self.read("read item and side state")?;
        let item = state.current.item(key)?;
        let value = state
            .current
            .get(Cf::Side, side)
            .map(|b| codec::decode_side(side, b))
            .transpose()?;
        Ok((item, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("valid region")
    }

    fn acked(n: u64) -> VersionVector {
        [(r("a"), Seq(n))].into_iter().collect()
    }

    #[test]
    fn buffered_writes_are_lost_by_a_crash_until_synced() {
        let store = MemStore::new(Durability::Buffered);
        let clone = store.clone();
        store.set_acked(&r("p"), &acked(1)).expect("write");
        store.sync().expect("sync");
        store.set_acked(&r("p"), &acked(2)).expect("write");
        assert_eq!(store.unsynced_writes(), 1);
        assert_eq!(
            clone.acked(&r("p")).expect("read"),
            acked(2),
            "clones share state"
        );
        clone.crash();
        assert_eq!(
            store.acked(&r("p")).expect("read"),
            acked(1),
            "the unsynced write must be lost and the synced one kept"
        );
        assert_eq!(store.unsynced_writes(), 0);
    }

    #[test]
    fn sync_writes_survive_a_crash() {
        let store = MemStore::new(Durability::Sync);
        store.set_acked(&r("p"), &acked(3)).expect("write");
        assert_eq!(store.unsynced_writes(), 0);
        store.crash();
        assert_eq!(store.acked(&r("p")).expect("read"), acked(3));
    }

    #[test]
    fn a_failed_write_poisons_the_store_until_restart() {
        let store = MemStore::new(Durability::Sync);
        store.set_acked(&r("p"), &acked(1)).expect("write");
        store.fail_next_write();
        let err = store
            .set_acked(&r("p"), &acked(2))
            .expect_err("injected failure");
        assert!(err.is_fatal(), "{err}");
        assert_eq!(
            store.acked(&r("p")).expect("reads still work"),
            acked(1),
            "a failed write leaves nothing behind"
        );
        let err = store.commit(&CommitBatch::default()).expect_err("poisoned");
        assert!(err.to_string().contains("refuses writes"), "{err}");
        assert!(
            store.sync().is_err(),
            "sync must not vouch for durability when poisoned"
        );
        store.crash();
        store
            .set_acked(&r("p"), &acked(2))
            .expect("writes work after a restart");
    }
}
