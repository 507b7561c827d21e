//! The log store: where the CRDT log, the merged items, the offsets and the
//! dead letters live, behind one trait with two implementations
//! ([`MemStore`] and [`RocksStore`]) that pass the same
//! [`conformance`] suite.
//!
//! # Contract
//!
//! - **Atomicity.** [`LogStore::commit`] applies a whole [`CommitBatch`] —
//!   log entries, item states, the applied vector, source checkpoints and
//!   the HLC mark — or nothing of it. After a crash a reopened store shows a
//!   prefix of the committed batches, never part of one.
//! - **Visibility.** When `commit` (or any other write) returns `Ok`, every
//!   read on any thread sees it.
//! - **Durability.** Under [`Durability::Sync`] a write is durable when it
//!   returns `Ok`. Under [`Durability::Buffered`] it is durable once a later
//!   [`LogStore::sync`] returns `Ok` (group commit: many batches, one
//!   fsync). Callers acknowledge a change only once it is durable. Dropping
//!   a store does not sync: a clean shutdown calls `sync` first.
//! - **Monotone marks.** A commit joins its applied vector into the stored
//!   one and raises the HLC mark; neither ever goes backwards, and an empty
//!   [`CommitBatch`] changes nothing. Checkpoints, item states and acked
//!   vectors are replaced by what is written.
//! - **Errors.** A write that returns `Err` left nothing of itself visible.
//!   A [`StoreError::Corrupt`] names the value that cannot be decoded and
//!   leaves the store usable for other keys; [`StoreError::Backend`] from a
//!   write means the store cannot vouch for durability any more: it refuses
//!   every later write (it is *poisoned*) and the node must stop (see
//!   [`StoreError::is_fatal`]); reads keep working. A value whose encoding
//!   exceeds 32 MiB is refused with [`StoreError::TooLarge`] before
//!   anything is written.
//! - **The log.** Entries of one origin are dense by `seq`; the store does
//!   not check it (the engine does) but keeps whatever it is given.
//!   [`LogStore::truncate`] removes a prefix per origin and records it in
//!   [`LogStore::log_start`], so readers can tell "truncated" from "never
//!   written".

mod codec;
pub mod conformance;
mod digest;
mod mem;
#[cfg(feature = "rocksdb")]
mod rocks;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::change::LogEntry;
use crate::crdt::ItemState;
use crate::ids::{Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;

pub use digest::{ItemsDigest, digest_items};
pub use mem::MemStore;

/// The bytes one item occupies in a store: encoded key plus encoded value
/// (for measuring the CRDT metadata overhead).
pub fn encoded_item_len(key: &ItemKey, state: &ItemState) -> usize {
    key.encode().len() + codec::encode_item(state).map_or(0, |v| v.len())
}
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksOptions, RocksStore, StoreSizes};

/// The stored key and value of a log entry, exactly as the stores write
/// them (for benchmarks that compare against raw puts of the same bytes).
pub fn encode_log_record(entry: &LogEntry) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    Ok((
        codec::log_key(&entry.origin, entry.seq),
        codec::encode_entry(entry)?,
    ))
}

/// Encodes an item state for the wire (a log entry's delta, a snapshot
/// item): the same versioned envelope the stores write,
/// `[format version][postcard][crc32]`, so a peer running this build or a
/// later one that still reads this format version can decode it.
///
/// Fails with [`StoreError::TooLarge`] when the encoding exceeds the
/// stores' 32 MiB value limit.
pub fn encode_item_state(state: &ItemState) -> Result<Vec<u8>, StoreError> {
    codec::encode_item(state)
}

/// A log entry ready to ship: its fields decoded, its delta still in the
/// wire encoding of [`encode_item_state`] (the receiver decodes, and so
/// validates, it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEntry {
    /// See [`LogEntry::origin`].
    pub origin: RegionId,
    /// See [`LogEntry::seq`].
    pub seq: Seq,
    /// See [`LogEntry::hlc`].
    pub hlc: Hlc,
    /// See [`LogEntry::deps`].
    pub deps: VersionVector,
    /// See [`LogEntry::key`].
    pub key: ItemKey,
    /// [`LogEntry::delta`], encoded by [`encode_item_state`].
    pub delta: Vec<u8>,
}

impl EncodedEntry {
    /// Encodes `entry`'s delta.
    pub fn encode(entry: &LogEntry) -> Result<Self, StoreError> {
        Ok(Self {
            origin: entry.origin.clone(),
            seq: entry.seq,
            hlc: entry.hlc,
            deps: entry.deps.clone(),
            key: entry.key.clone(),
            delta: encode_item_state(&entry.delta)?,
        })
    }

    /// Decodes the delta back into a [`LogEntry`].
    pub fn decode(self) -> Result<LogEntry, StoreError> {
        Ok(LogEntry {
            delta: decode_item_state(&self.delta)?,
            origin: self.origin,
            seq: self.seq,
            hlc: self.hlc,
            deps: self.deps,
            key: self.key,
        })
    }
}

/// Decodes bytes written by [`encode_item_state`], typically received from
/// a peer and therefore untrusted.
///
/// Never panics: a wrong length, checksum, format version, payload or any
/// out-of-range index inside the state is a [`StoreError::Corrupt`] whose
/// key is `"wire delta"`.
pub fn decode_item_state(bytes: &[u8]) -> Result<ItemState, StoreError> {
    decode_item_state_sharing(bytes, &[])
}

/// [`decode_item_state`], where a region the state names that is in
/// `known` is that one, shared rather than allocated again (receivers pass
/// the regions they know, so later comparisons are pointer tests).
pub fn decode_item_state_sharing(
    bytes: &[u8],
    known: &[RegionId],
) -> Result<ItemState, StoreError> {
    codec::decode_state("item", || "wire delta".to_owned(), bytes, known)
}

/// The kinds of value the stores keep, by what reads them back (see
/// [`decode_stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    /// A log entry, under its `(origin, seq)` key.
    LogEntry,
    /// An item's merged state, or where it is ([`StoredValue::ItemAtEntry`]),
    /// under its item key.
    Item,
    /// A version vector (applied, log start, a peer's acknowledged).
    Vector,
    /// The HLC high-water mark.
    Hlc,
    /// A source checkpoint.
    Checkpoint,
    /// The next dead-letter id.
    Counter,
    /// A dead letter, under its id.
    DeadLetter,
}

impl StoredKind {
    /// Every kind.
    pub const ALL: [StoredKind; 7] = [
        StoredKind::LogEntry,
        StoredKind::Item,
        StoredKind::Vector,
        StoredKind::Hlc,
        StoredKind::Checkpoint,
        StoredKind::Counter,
        StoredKind::DeadLetter,
    ];
}

/// A stored value, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    /// See [`StoredKind::LogEntry`].
    LogEntry(LogEntry),
    /// See [`StoredKind::Item`].
    Item(ItemState),
    /// An item whose state is the delta of the log entry `(origin, seq)`
    /// (an item created by that entry and not written since; the stores
    /// read the state from the entry). Stored under the item's key.
    ItemAtEntry(RegionId, Seq),
    /// See [`StoredKind::Vector`].
    Vector(VersionVector),
    /// See [`StoredKind::Hlc`].
    Hlc(Hlc),
    /// See [`StoredKind::Checkpoint`].
    Checkpoint(Checkpoint),
    /// See [`StoredKind::Counter`].
    Counter(u64),
    /// See [`StoredKind::DeadLetter`].
    DeadLetter(DeadLetter),
}

/// Decodes `value`, stored under `key`, exactly as both stores decode a
/// value of `kind` they read back — the on-disk decoder, for tools and the
/// fuzzers. Never panics: a key or value that does not decode, or a log
/// entry stored under another entry's key, is a [`StoreError::Corrupt`]
/// naming the key.
pub fn decode_stored(
    kind: StoredKind,
    key: &[u8],
    value: &[u8],
) -> Result<StoredValue, StoreError> {
    Ok(match kind {
        StoredKind::LogEntry => {
            let (origin, seq) = codec::decode_log_key(key)?;
            StoredValue::LogEntry(codec::decode_entry(origin, seq, value)?)
        }
        StoredKind::Item => {
            let key = codec::decode_item_key(key)?;
            stored_item_value(&key, value)?
        }
        StoredKind::Vector => StoredValue::Vector(codec::decode_vector(
            "version vector",
            &codec::printable(key),
            value,
        )?),
        StoredKind::Hlc => StoredValue::Hlc(codec::decode_hlc(value)?),
        StoredKind::Checkpoint => {
            StoredValue::Checkpoint(codec::decode_checkpoint(&codec::printable(key), value)?)
        }
        StoredKind::Counter => StoredValue::Counter(codec::decode_counter(value)?),
        StoredKind::DeadLetter => {
            let id = codec::decode_dead_letter_key(key)?;
            StoredValue::DeadLetter(codec::decode_dead_letter(id, value)?)
        }
    })
}

/// Decodes the value stored under item `key`: [`StoredValue::Item`] or
/// [`StoredValue::ItemAtEntry`].
pub(crate) fn stored_item_value(key: &ItemKey, value: &[u8]) -> Result<StoredValue, StoreError> {
    Ok(match codec::decode_stored_item(key, value)? {
        codec::StoredItem::State(state) => StoredValue::Item(state),
        codec::StoredItem::AtEntry(origin, seq) => StoredValue::ItemAtEntry(origin, seq),
    })
}

/// Encodes a value as the stores write it (the inverse of
/// [`decode_stored`] for the value; its key is unchanged).
pub fn encode_stored(value: &StoredValue) -> Result<Vec<u8>, StoreError> {
    match value {
        StoredValue::LogEntry(entry) => codec::encode_entry(entry),
        StoredValue::Item(state) => codec::encode_item(state),
        StoredValue::ItemAtEntry(origin, seq) => {
            let mut out = Vec::new();
            codec::encode_item_at(origin, *seq, &mut out)?;
            Ok(out)
        }
        StoredValue::Vector(v) => codec::encode_vector("version vector", v),
        StoredValue::Hlc(hlc) => codec::encode_hlc(*hlc),
        StoredValue::Checkpoint(c) => codec::encode_checkpoint(c),
        StoredValue::Counter(next) => codec::encode_counter(*next),
        StoredValue::DeadLetter(letter) => codec::encode_dead_letter(letter),
    }
}

/// Wraps raw payload bytes in the stores' envelope (format version and
/// checksum), so that a fuzzer's bytes reach the payload decoder instead of
/// failing the checksum.
pub fn seal_payload(payload: &[u8]) -> Vec<u8> {
    codec::seal(payload)
}

/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every write is fsynced before it returns.
    Sync,
    /// Writes are durable after the next [`LogStore::sync`] (group commit).
    Buffered,
}

/// The log entry of a change that created its item: its delta, which is
/// the item's whole state, already in the compact encoding. The log encodes
/// an insert's delta straight from its ops instead of building it as an
/// [`ItemState`]; see [`CommitBatch::fresh_entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshEntry {
    /// See [`LogEntry::origin`].
    pub origin: RegionId,
    /// See [`LogEntry::seq`].
    pub seq: Seq,
    /// See [`LogEntry::hlc`].
    pub hlc: Hlc,
    /// See [`LogEntry::deps`].
    pub deps: VersionVector,
    /// See [`LogEntry::key`].
    pub key: ItemKey,
    /// The delta's compact encoding (no envelope), made by the engine.
    delta: Vec<u8>,
}

impl FreshEntry {
    /// The fresh entry of `entry`, whose delta is its item's whole state.
    pub fn encode(entry: &LogEntry) -> Result<Self, StoreError> {
        let delta = codec::compact("log entry", &entry.delta)?;
        Ok(Self::from_parts(
            entry.origin.clone(),
            entry.seq,
            entry.hlc,
            entry.deps.clone(),
            entry.key.clone(),
            delta,
        ))
    }

    /// An entry of an already encoded `delta` (the engine's own encoding).
    pub(crate) fn from_parts(
        origin: RegionId,
        seq: Seq,
        hlc: Hlc,
        deps: VersionVector,
        key: ItemKey,
        delta: Vec<u8>,
    ) -> Self {
        Self {
            origin,
            seq,
            hlc,
            deps,
            key,
            delta,
        }
    }

    /// The delta's compact encoding.
    pub(crate) fn delta_bytes(&self) -> &[u8] {
        &self.delta
    }
}

/// A source's position (a Kinesis sequence number, a PostgreSQL LSN, …),
/// opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Checkpoint(pub String);

/// Everything one ingest writes, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitBatch {
    /// Log entries to append, keyed by `(origin, seq)`.
    pub entries: Vec<LogEntry>,
    /// New merged states of the items the entries touched.
    pub items: Vec<(ItemKey, ItemState)>,
    /// Items whose new state is exactly the delta of one of `entries`
    /// (typically an item written for the first time), by index into
    /// `entries`: written under the entry's key with the entry's delta as
    /// state, as if listed in `items`, without a second copy of the state:
    /// the stored item points at the entry, and reads go through to it
    /// until the item is written again or the entry truncated (which
    /// rewrites the item with its state). An item is in `items` or here,
    /// not both; an index beyond `entries` fails the commit.
    pub items_from_entries: Vec<usize>,
    /// Log entries of changes that created their items, their deltas
    /// already encoded. Each is written as an entry of `entries` listed in
    /// `items_from_entries` is: a log entry holding its item's state, and
    /// the item pointing at it. Their items are in neither `items` nor
    /// `items_from_entries`.
    pub fresh_entries: Vec<FreshEntry>,
    /// The applied vector after this batch, joined (pointwise maximum)
    /// into the stored one: the applied vector never goes backwards, and a
    /// batch may carry only the origins it advanced.
    pub applied: VersionVector,
    /// Source positions consumed by this batch.
    pub checkpoints: Vec<(SourceId, Checkpoint)>,
    /// Connector side state written with the batch (e.g. a sidecar's
    /// image of its table), opaque to the engine: key → value, replacing.
    pub side: Vec<(Vec<u8>, Vec<u8>)>,
    /// Records the batch's source could not ingest, stored atomically with
    /// the checkpoints that move past them (ids allocated in order).
    pub dead_letters: Vec<DeadLetter>,
    /// The HLC high-water mark after this batch; the stored mark is
    /// raised to it, never lowered (so an HLC never goes backwards across
    /// restarts).
    pub hlc_mark: Hlc,
}

/// Identifies one dead letter; increasing in the order they were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetterId(pub u64);

/// A record that could not be ingested or written, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source or sink it came from.
    pub source: SourceId,
    /// Its position in that source (shard sequence number, LSN, …).
    pub offset: String,
    /// Why it failed, in words an operator can act on.
    pub reason: String,
    /// The raw bytes as received.
    pub raw: Vec<u8>,
    /// How many times it was tried.
    pub attempts: u32,
    /// When it was stored (Unix milliseconds).
    pub at_millis: u64,
}

/// What a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A stored value does not decode (bit rot, a foreign writer, a bug).
    /// The rest of the store is usable; this value needs repair (e.g. from
    /// a peer's snapshot).
    #[error("corrupt {what} at {key}: {reason}")]
    Corrupt {
        /// Which kind of value (`item`, `log entry`, `applied vector`, …).
        what: &'static str,
        /// The key, printable.
        key: String,
        /// What the decoder found.
        reason: String,
    },
    /// The storage backend failed. From a write, durability is unknown and
    /// the node must stop; from a read, the read may be retried.
    #[error("storage failed during {op}: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// A value too large to store (e.g. beyond the encoder's limits).
    #[error("{what} too large: {size} bytes")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// Its encoded size.
        size: usize,
    },
}

impl StoreError {
    /// True when the node must stop: a write whose durability is unknown.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Backend { .. })
    }
}

/// The storage seam of the engine. See the module docs for the contract.
pub trait LogStore: Send + Sync {
    /// The durability policy the store was opened with.
    fn durability(&self) -> Durability;

    /// Atomically applies `batch`.
    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError>;

    /// Makes every write that returned `Ok` durable.
    fn sync(&self) -> Result<(), StoreError>;

    /// The merged state of one item.
    fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError>;

    /// The merged states of several items, in the order asked.
    fn items(&self, keys: &[ItemKey]) -> Result<Vec<Option<ItemState>>, StoreError> {
        keys.iter().map(|k| self.item(k)).collect()
    }

    /// Up to `limit` items in key order, strictly after `after`, of `table`
    /// only when given (snapshots, digests, scans).
    fn scan_items(
        &self,
        table: Option<&TableName>,
        after: Option<&ItemKey>,
        limit: usize,
    ) -> Result<Vec<(ItemKey, ItemState)>, StoreError>;

    /// Up to `limit` log entries of `origin` with `seq > after`, in order.
    fn entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// [`LogStore::entries`] with each delta left in the wire encoding of
    /// [`encode_item_state`], for shipping. The default decodes and encodes
    /// again; a store that keeps entries encoded overrides it to skip both.
    fn encoded_entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<EncodedEntry>, StoreError> {
        self.entries(origin, after, limit)?
            .iter()
            .map(EncodedEntry::encode)
            .collect()
    }

    /// The applied vector: per origin, the highest seq in the log.
    fn applied(&self) -> Result<VersionVector, StoreError>;

    /// Per origin, the highest seq removed by truncation.
    fn log_start(&self) -> Result<VersionVector, StoreError>;

    /// Removes, per origin, the entries with `seq ≤ upto[origin]` (never
    /// beyond the applied vector) and raises [`LogStore::log_start`].
    /// Items stored as pointers at removed entries (see
    /// [`CommitBatch::items_from_entries`]) are rewritten with their
    /// states in the same atomic write as the removal, so every item reads
    /// the same before, during and after. A store may truncate in several
    /// such writes (each raising `log_start`); a failure or crash between
    /// them leaves a shorter truncation, which a later call continues.
    fn truncate(&self, upto: &VersionVector) -> Result<(), StoreError>;

    /// What `peer` acknowledged (empty if never).
    fn acked(&self, peer: &RegionId) -> Result<VersionVector, StoreError>;

    /// Every peer's acknowledged vector.
    fn acked_all(&self) -> Result<BTreeMap<RegionId, VersionVector>, StoreError>;

    /// Records what `peer` acknowledged (replaces the stored vector).
    fn set_acked(&self, peer: &RegionId, acked: &VersionVector) -> Result<(), StoreError>;

    /// A source's checkpoint.
    fn checkpoint(&self, source: &SourceId) -> Result<Option<Checkpoint>, StoreError>;

    /// Every source checkpoint.
    fn checkpoints(&self) -> Result<Vec<(SourceId, Checkpoint)>, StoreError>;

    /// The persisted HLC high-water mark (default if none).
    fn hlc_mark(&self) -> Result<Hlc, StoreError>;

    /// Stores a dead letter.
    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<DeadLetterId, StoreError>;

    /// Up to `limit` dead letters with id greater than `after`, in order.
    fn dead_letters(
        &self,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Result<Vec<(DeadLetterId, DeadLetter)>, StoreError>;

    /// Removes a dead letter; `false` if there was none with that id.
    fn remove_dead_letter(&self, id: DeadLetterId) -> Result<bool, StoreError>;

    /// One connector side-state value (see [`CommitBatch::side`]).
    fn side(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// An item's merged state and a side-state value, read from one
    /// consistent view: no commit lands between the two reads (a sink
    /// compares the two, and a commit writes both together).
    fn item_and_side(
        &self,
        key: &ItemKey,
        side: &[u8],
    ) -> Result<(Option<ItemState>, Option<Vec<u8>>), StoreError>;
}

/// A shared store: the node's log writer owns the [`Log`](crate::log::Log)
/// while readers (admin API, peer links, snapshots) read the same store
/// through another handle, without waiting for the writer.
impl<T: LogStore + ?Sized> LogStore for std::sync::Arc<T> {
    fn durability(&self) -> Durability {
        (**self).durability()
    }
    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError> {
        (**self).item(key)
    }
    fn items(&self, keys: &[ItemKey]) -> Result<Vec<Option<ItemState>>, StoreError> {
        (**self).items(keys)
    }
    fn scan_items(
        &self,
        table: Option<&TableName>,
        after: Option<&ItemKey>,
        limit: usize,
    ) -> Result<Vec<(ItemKey, ItemState)>, StoreError> {
        (**self).scan_items(table, after, limit)
    }
    fn entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        (**self).entries(origin, after, limit)
    }
    fn encoded_entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<EncodedEntry>, StoreError> {
        (**self).encoded_entries(origin, after, limit)
    }
    fn applied(&self) -> Result<VersionVector, StoreError> {
        (**self).applied()
    }
    fn log_start(&self) -> Result<VersionVector, StoreError> {
        (**self).log_start()
    }
    fn truncate(&self, upto: &VersionVector) -> Result<(), StoreError> {
        (**self).truncate(upto)
    }
    fn acked(&self, peer: &RegionId) -> Result<VersionVector, StoreError> {
        (**self).acked(peer)
    }
    fn acked_all(&self) -> Result<BTreeMap<RegionId, VersionVector>, StoreError> {
        (**self).acked_all()
    }
    fn set_acked(&self, peer: &RegionId, acked: &VersionVector) -> Result<(), StoreError> {
        (**self).set_acked(peer, acked)
    }
    fn checkpoint(&self, source: &SourceId) -> Result<Option<Checkpoint>, StoreError> {
        (**self).checkpoint(source)
    }
    fn checkpoints(&self) -> Result<Vec<(SourceId, Checkpoint)>, StoreError> {
        (**self).checkpoints()
    }
    fn hlc_mark(&self) -> Result<Hlc, StoreError> {
        (**self).hlc_mark()
    }
    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<DeadLetterId, StoreError> {
        (**self).put_dead_letter(letter)
    }
    fn dead_letters(
        &self,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Result<Vec<(DeadLetterId, DeadLetter)>, StoreError> {
        (**self).dead_letters(after, limit)
    }
    fn remove_dead_letter(&self, id: DeadLetterId) -> Result<bool, StoreError> {
        (**self).remove_dead_letter(id)
    }
    fn side(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).side(key)
    }
    fn item_and_side(
        &self,
        key: &ItemKey,
        side: &[u8],
    ) -> Result<(Option<ItemState>, Option<Vec<u8>>), StoreError> {
        (**self).item_and_side(key, side)
    }
}

/// Up to `limit` entries the holder of `have` lacks, from every origin of
/// `head` and not beyond it (a durable applied vector), in HLC order —
/// which respects causality, so a receiver can apply them in the order
/// given (what a peer link ships). The result is always a prefix of that
/// order over everything lacking, at least one entry long when anything
/// is lacking. An origin whose next entry was truncated yields entries
/// starting above the gap: the caller detects that from `log_start`.
///
/// Each lacking origin is read for its share of `limit` (at least
/// [`MIN_SHARE`]), not for all of it: the merge then keeps the entries that
/// sort at or before the earliest last entry of an origin that may have
/// more (later ones could interleave with entries not read). With n
/// origins behind, that decodes about `limit` entries instead of
/// `n × limit` and drops none of them in the common case.
pub fn entries_above(
    store: &impl LogStore,
    head: &VersionVector,
    have: &VersionVector,
    limit: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    above(
        |origin, after, n| store.entries(origin, after, n),
        |e: &LogEntry| (e.hlc, &e.origin, e.seq),
        head,
        have,
        limit,
    )
}

/// [`entries_above`] read with [`LogStore::encoded_entries`]: what a link
/// ships, without decoding the deltas.
pub fn encoded_entries_above(
    store: &impl LogStore,
    head: &VersionVector,
    have: &VersionVector,
    limit: usize,
) -> Result<Vec<EncodedEntry>, StoreError> {
    above(
        |origin, after, n| store.encoded_entries(origin, after, n),
        |e: &EncodedEntry| (e.hlc, &e.origin, e.seq),
        head,
        have,
        limit,
    )
}

/// The merge of [`entries_above`] over entries of any form: `read` reads an
/// origin's entries after a seq, `order` gives an entry's `(hlc, origin,
/// seq)`.
fn above<E>(
    read: impl Fn(&RegionId, Seq, usize) -> Result<Vec<E>, StoreError>,
    order: impl Fn(&E) -> (Hlc, &RegionId, Seq),
    head: &VersionVector,
    have: &VersionVector,
    limit: usize,
) -> Result<Vec<E>, StoreError> {
    let lacking: Vec<(&RegionId, Seq)> = head
        .iter()
        .filter(|(origin, h)| *h > have.get(origin))
        .collect();
    if lacking.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let share = limit.div_ceil(lacking.len()).max(MIN_SHARE).min(limit);
    let mut out = Vec::new();
    // The sort key of the earliest last entry of an origin read short of
    // its end: entries above it may be missing from `out`.
    let mut frontier: Option<(Hlc, RegionId, Seq)> = None;
    for (origin, h) in lacking {
        // Never beyond `head`: the store may hold commits that are not
        // durable yet (group commit); shipping one that a crash then loses
        // would let the origin reuse its seq for another change.
        let read = read(origin, have.get(origin), share)?;
        let complete = read.len() < share || read.last().is_some_and(|e| order(e).2 >= h);
        let before = out.len();
        out.extend(read.into_iter().take_while(|e| order(e).2 <= h));
        if !complete && let Some(last) = out[before..].last() {
            let (hlc, origin, seq) = order(last);
            let key = (hlc, origin.clone(), seq);
            if frontier.as_ref().is_none_or(|f| key < *f) {
                frontier = Some(key);
            }
        }
    }
    out.sort_by(|a, b| order(a).cmp(&order(b)));
    if let Some((hlc, origin, seq)) = frontier {
        out.retain(|e| order(e) <= (hlc, &origin, seq));
    }
    out.truncate(limit);
    Ok(out)
}

/// The fewest entries [`entries_above`] reads from an origin at a time.
pub const MIN_SHARE: usize = 64;
