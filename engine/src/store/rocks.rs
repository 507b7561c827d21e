//! [`RocksStore`]: the [`LogStore`] on RocksDB.
//!
//! Column families `log`, `items`, `meta`, `dead_letters` and `side` hold the
//! shared [`super::codec`] layout. Invariants:
//! - every write is **one** `WriteBatch` (RocksDB applies a batch across
//!   column families atomically, in memory and in WAL recovery), written
//!   with `sync` under [`Durability::Sync`]; [`LogStore::sync`] fsyncs the
//!   WAL for [`Durability::Buffered`];
//! - read-modify-write operations (commit, truncate, dead letters) run
//!   under one writer lock, so concurrent writers cannot interleave
//!   between the read and the write; reads take no lock;
//! - after any failed write or sync the store is *poisoned*: it refuses
//!   every later write with [`StoreError::Backend`] (its durability is
//!   unknown, see [`StoreError::is_fatal`]) and keeps serving reads;
//! - no compression: the build carries no codec (see the workspace
//!   `Cargo.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Env,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use super::codec::{self, Cf, ItemRead, KeyRange, Put};
use super::{
    Checkpoint, CommitBatch, DeadLetter, DeadLetterId, Durability, EncodedEntry, LogStore,
    StoreError, StoredValue,
};
use crate::change::LogEntry;
use crate::crdt::ItemState;
use crate::ids::{Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;

/// How to open a [`RocksStore`]. Build with [`RocksOptions::new`] and
/// adjust the public fields; the defaults suit one node per region.
#[derive(Debug, Clone, PartialEq)]
pub struct RocksOptions {
    /// The database directory (created if missing).
    pub path: PathBuf,
    /// When writes become durable.
    pub durability: Durability,
    /// Memtable size of the `log` and `items` column families, in bytes
    /// (`meta` and `dead_letters` use at most 4 MiB).
    pub write_buffer_bytes: usize,
    /// Block cache shared by all column families, in bytes.
    pub block_cache_bytes: usize,
    /// Upper bound on open SST files (RocksDB's `max_open_files`; -1 means
    /// unlimited).
    pub max_open_files: i32,
    /// Bloom filter bits per key on `items` (point reads of items that
    /// do not exist skip the disk). 0 disables the filter.
    pub items_bloom_bits_per_key: f64,
}

impl RocksOptions {
    /// Default memtable size: 64 MiB.
    pub const DEFAULT_WRITE_BUFFER_BYTES: usize = 64 << 20;
    /// Default block cache: 256 MiB.
    pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 << 20;
    /// Default open file limit.
    pub const DEFAULT_MAX_OPEN_FILES: i32 = 1024;
    /// Default bloom filter density (about 1% false positives).
    pub const DEFAULT_ITEMS_BLOOM_BITS_PER_KEY: f64 = 10.0;

    /// Options for the database at `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>, durability: Durability) -> Self {
        Self {
            path: path.into(),
            durability,
            write_buffer_bytes: Self::DEFAULT_WRITE_BUFFER_BYTES,
            block_cache_bytes: Self::DEFAULT_BLOCK_CACHE_BYTES,
            max_open_files: Self::DEFAULT_MAX_OPEN_FILES,
            items_bloom_bits_per_key: Self::DEFAULT_ITEMS_BLOOM_BITS_PER_KEY,
        }
    }

    fn cf_options(&self, cf: Cf, cache: &Cache) -> Options {
        let mut opts = Options::default();
        opts.set_compression_type(DBCompressionType::None);
        let small = 4 << 20;
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        match cf {
            Cf::Log => opts.set_write_buffer_size(self.write_buffer_bytes),
            // Side state holds a sidecar's per-item table images: point
            // reads by item, like the items.
            Cf::Items | Cf::Side => {
                opts.set_write_buffer_size(self.write_buffer_bytes);
                if self.items_bloom_bits_per_key > 0.0 {
                    table.set_bloom_filter(self.items_bloom_bits_per_key, false);
                    // The memtable too: an ingest reads every item it
                    // writes, most of them new, and a miss then skips the
                    // skiplist search (a bloom of 2% of the memtable size).
                    opts.set_memtable_whole_key_filtering(true);
                    opts.set_memtable_prefix_bloom_ratio(0.02);
                }
            }
            Cf::Meta | Cf::DeadLetters => {
                opts.set_write_buffer_size(self.write_buffer_bytes.min(small));
            }
        }
        opts.set_block_based_table_factory(&table);
        opts
    }
}

/// Approximate bytes per column family: SST files on disk plus memtables.
///
/// Approximate: SST sizes lag behind deletes until compaction, memtable
/// sizes count arena allocation rather than live data, and WAL files are
/// not counted at all. Good for trends and benchmarks, not for accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSizes {
    /// The `log` column family.
    pub log: u64,
    /// The `items` column family.
    pub items: u64,
    /// The `meta` column family.
    pub meta: u64,
    /// The `dead_letters` column family.
    pub dead_letters: u64,
    /// The `side` column family (connector state).
    pub side: u64,
}

impl StoreSizes {
    /// The sum over column families.
    pub fn total(&self) -> u64 {
        self.log + self.items + self.meta + self.dead_letters + self.side
    }
}

/// The [`LogStore`] on RocksDB. `Send + Sync`; share it with an `Arc`.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    durability: Durability,
    /// Serializes read-modify-write operations.
    writer: Mutex<()>,
    /// Set by a failed write; refuses every later write.
    poisoned: AtomicBool,
    /// The size of the last commit's write batch: the next one starts with
    /// that capacity instead of growing (and copying) its buffer as it
    /// fills.
    commit_bytes: AtomicUsize,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .field("poisoned", &self.poisoned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn backend(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        op,
        message: e.to_string(),
    }
}

impl RocksStore {
    /// Opens (creating if missing) the database at `options.path`, with
    /// its column families.
    pub fn open(options: RocksOptions) -> Result<Self, StoreError> {
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(options.max_open_files);
        db_opts.set_compression_type(DBCompressionType::None);
        // Flushes and compactions run at a lower CPU priority than the
        // write path: their bursts (a 64 MiB memtable written out, an L0
        // compaction) otherwise land on the commit latency of a node that
        // shares its cores, with its database or with other nodes.
        let mut env = Env::new().map_err(|e| backend("open database", e.to_string()))?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        db_opts.set_env(&env);
        let cfs = Cf::ALL
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), options.cf_options(*cf, &cache)));
        let db = DB::open_cf_descriptors(&db_opts, &options.path, cfs)
            .map_err(|e| backend("open database", format!("{}: {e}", options.path.display())))?;
        Ok(Self {
            db,
            path: options.path,
            durability: options.durability,
            writer: Mutex::new(()),
            commit_bytes: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes every column family's memtable to SST files (so that
    /// [`RocksStore::approximate_sizes`] measures on-disk bytes).
    pub fn flush(&self) -> Result<(), StoreError> {
        for cf in Cf::ALL {
            self.db
                .flush_cf(self.cf(cf)?)
                .map_err(|e| backend("flush memtable", e))?;
        }
        Ok(())
    }

    /// Compacts every column family whole, so that overwritten and
    /// deleted values (truncated entries, items rewritten by a truncation)
    /// leave the disk and [`RocksStore::approximate_sizes`] counts live
    /// data. Runs on the calling thread; takes as long as rewriting the
    /// database.
    pub fn compact(&self) -> Result<(), StoreError> {
        for cf in Cf::ALL {
            self.db
                .compact_range_cf(self.cf(cf)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// The value stored under item `key` as it lies, decoded: the item's
    /// state, or the log entry holding it ([`StoredValue::ItemAtEntry`]).
    /// For tools and benchmarks; readers want [`LogStore::item`].
    pub fn stored_item(&self, key: &ItemKey) -> Result<Option<StoredValue>, StoreError> {
        self.get("read item", Cf::Items, &key.encode())?
            .map(|bytes| super::stored_item_value(key, &bytes))
            .transpose()
    }

    /// Approximate bytes per column family (see [`StoreSizes`]).
    pub fn approximate_sizes(&self) -> Result<StoreSizes, StoreError> {
        let size = |cf: Cf| -> Result<u64, StoreError> {
            let handle = self.cf(cf)?;
            let mut total = 0u64;
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.size-all-mem-tables",
            ] {
                let v = self
                    .db
                    .property_int_value_cf(handle, prop)
                    .map_err(|e| backend("read size property", e))?;
                total = total.saturating_add(v.unwrap_or(0));
            }
            Ok(total)
        };
        Ok(StoreSizes {
            log: size(Cf::Log)?,
            items: size(Cf::Items)?,
            meta: size(Cf::Meta)?,
            dead_letters: size(Cf::DeadLetters)?,
            side: size(Cf::Side)?,
        })
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StoreError::Backend {
                op: "find column family",
                message: format!("column family {} is missing", cf.name()),
            })
    }

    /// Refuses writes once poisoned.
    fn check_writable(&self, op: &'static str) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Backend {
                op,
                message: "store refuses writes after an earlier write failed; restart the node"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Takes the writer lock for a read-modify-write, unless poisoned.
    fn begin_write(&self, op: &'static str) -> Result<MutexGuard<'_, ()>, StoreError> {
        // A panic under the lock left no half-written batch (batches are
        // written whole or not at all), so the lock's poison is ignored.
        let guard = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_writable(op)?;
        Ok(guard)
    }

    /// Writes `batch` in one atomic write; poisons the store on failure.
    fn write(&self, op: &'static str, batch: WriteBatch) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(self.durability == Durability::Sync);
        self.db.write_opt(batch, &opts).map_err(|e| {
            self.poisoned.store(true, Ordering::Release);
            backend(op, e)
        })
    }

    fn add_puts(&self, batch: &mut WriteBatch, puts: &[Put]) -> Result<(), StoreError> {
        for p in puts {
            batch.put_cf(self.cf(p.cf)?, &p.key, &p.value);
        }
        Ok(())
    }

    fn get(
        &self,
        op: &'static str,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(cf)?, key)
            .map_err(|e| backend(op, e))
    }

    fn dead_letter_next(&self) -> Result<Option<u64>, StoreError> {
        self.get(
            "read dead-letter counter",
            Cf::Meta,
            codec::META_DEAD_LETTER_NEXT.as_bytes(),
        )?
        .map(|bytes| codec::decode_counter(&bytes))
        .transpose()
    }

    fn meta_vector(&self, what: &'static str, key: &str) -> Result<VersionVector, StoreError> {
        match self.get("read meta", Cf::Meta, key.as_bytes())? {
            Some(bytes) => codec::decode_vector(what, key, &bytes),
            None => Ok(VersionVector::new()),
        }
    }

    /// Decodes up to `limit` pairs of `range`, in key order.
    /// Up to `limit` log entries of `origin` after `after`, each decoded by
    /// `decode` from its stored key and value.
    fn log_range<T>(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let range = codec::entries_range(origin, after);
        self.collect("read log entries", Cf::Log, &range, limit, decode)
    }

    fn collect<T>(
        &self,
        op: &'static str,
        cf: Cf,
        range: &KeyRange,
        limit: usize,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.each(op, cf, range, |k, v| {
            out.push(decode(k, v)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Calls `visit` with each pair of `range` in key order, while it
    /// returns `Ok(true)`.
    fn each(
        &self,
        op: &'static str,
        cf: Cf,
        range: &KeyRange,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if range.is_empty() {
            return Ok(());
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = &range.end {
            opts.set_iterate_upper_bound(end.clone());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        it.seek(&range.start);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| backend(op, e))
    }

    /// The state of the item stored at `key` as `bytes`, read through to
    /// its log entry if it points at one.
    fn item_state(&self, key: &ItemKey, bytes: &[u8]) -> Result<ItemState, StoreError> {
        let entry = |k: &[u8]| self.get("read log entry", Cf::Log, k);
        match codec::read_item(key, bytes, entry)? {
            ItemRead::State(state) => Ok(state),
            gone @ ItemRead::Gone(..) => {
                // A truncation removed the entry after the item was read,
                // rewriting the item in the same write: read it again.
                match self.get("read item", Cf::Items, &key.encode())? {
                    Some(again) => codec::read_item(key, &again, entry)?.into_state(key),
                    None => gone.into_state(key),
                }
            }
        }
    }
}

/// The largest write-batch capacity a commit starts with (one large
/// commit must not make every later one allocate as much).
const MAX_COMMIT_BYTES_HINT: usize = 4 << 20;

/// The most entries per origin one truncation step removes (see
/// [`RocksStore`]'s `truncate`).
const TRUNCATE_STEP_ENTRIES: u64 = 4096;

impl LogStore for RocksStore {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError> {
        let _guard = self.begin_write("commit")?;
        let applied = self.meta_vector("applied vector", codec::META_APPLIED)?;
        let hlc = self.hlc_mark()?;
        let next = if batch.dead_letters.is_empty() {
            None
        } else {
            self.dead_letter_next()?
        };
        // Straight into the write batch, each column family looked up once.
        let mut handles = Vec::with_capacity(Cf::ALL.len());
        for cf in Cf::ALL {
            handles.push(self.cf(cf)?);
        }
        let mut wb = WriteBatch::with_capacity_bytes(self.commit_bytes.load(Ordering::Relaxed));
        codec::commit_writes(batch, &applied, hlc, next, |cf, key, value| {
            wb.put_cf(handles[cf.index()], key, value);
            Ok(())
        })?;
        if wb.is_empty() {
            return Ok(());
        }
        self.commit_bytes.store(
            wb.size_in_bytes().min(MAX_COMMIT_BYTES_HINT),
            Ordering::Relaxed,
        );
        self.write("commit", wb)
    }

    fn sync(&self) -> Result<(), StoreError> {
        // No writer lock: commits go on while the WAL is fsynced.
        self.check_writable("sync")?;
        self.db.flush_wal(true).map_err(|e| {
            self.poisoned.store(true, Ordering::Release);
            backend("sync", e)
        })
    }

    fn item(&self, key: &ItemKey) -> Result<Option<ItemState>, StoreError> {
        self.get("read item", Cf::Items, &key.encode())?
            .map(|bytes| self.item_state(key, &bytes))
            .transpose()
    }

    fn items(&self, keys: &[ItemKey]) -> Result<Vec<Option<ItemState>>, StoreError> {
        let cf = self.cf(Cf::Items)?;
        // Every key encoded into one buffer and read in one batched call,
        // which takes the keys where they lie and pins the values.
        let mut buf = Vec::with_capacity(keys.len() * 32);
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            k.encode_into(&mut buf);
            ends.push(buf.len());
        }
        let starts = std::iter::once(0).chain(ends.iter().copied());
        let encoded: Vec<&[u8]> = starts.zip(&ends).map(|(s, &e)| &buf[s..e]).collect();
        // Keys asked for in byte order (e.g. an ingest of consecutive
        // keys) spare RocksDB its sort of them.
        let sorted = encoded.is_sorted();
        let values = self
            .db
            .batched_multi_get_cf(cf, encoded.iter().copied(), sorted);
        // Filled in place: collecting `Result`s gives no size hint, and
        // growing a vector of states copies every state read so far.
        let mut states = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            let value = value.map_err(|e| backend("read items", e))?;
            states.push(
                value
                    .map(|bytes| self.item_state(key, &bytes))
                    .transpose()?,
            );
        }
        Ok(states)
    }

    fn scan_items(
        &self,
        table: Option<&TableName>,
        after: Option<&ItemKey>,
        limit: usize,
    ) -> Result<Vec<(ItemKey, ItemState)>, StoreError> {
        let range = codec::scan_range(table, after);
        self.collect("scan items", Cf::Items, &range, limit, |k, v| {
            let key = codec::decode_item_key(k)?;
            let item = self.item_state(&key, v)?;
            Ok((key, item))
        })
    }

    fn entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.log_range(origin, after, limit, codec::entry_from_kv)
    }

    fn encoded_entries(
        &self,
        origin: &RegionId,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<EncodedEntry>, StoreError> {
        self.log_range(origin, after, limit, codec::encoded_entry_from_kv)
    }

    fn applied(&self) -> Result<VersionVector, StoreError> {
        self.meta_vector("applied vector", codec::META_APPLIED)
    }

    fn log_start(&self) -> Result<VersionVector, StoreError> {
        self.meta_vector("log start vector", codec::META_LOG_START)
    }

    fn truncate(&self, upto: &VersionVector) -> Result<(), StoreError> {
        // In steps, each one atomic write under the writer lock: commits
        // wait for one step's item rewrites, never for a whole backlog's.
        loop {
            let _guard = self.begin_write("truncate log")?;
            let applied = self.applied()?;
            let start = self.log_start()?;
            let step = codec::truncation_step(upto, &start, TRUNCATE_STEP_ENTRIES);
            let plan = codec::truncate_plan(&step, &applied, &start)?;
            let mut wb = WriteBatch::default();
            let (log, items) = (self.cf(Cf::Log)?, self.cf(Cf::Items)?);
            for (from, to) in &plan.ranges {
                let range = KeyRange {
                    start: from.clone(),
                    end: Some(to.clone()),
                };
                self.each("read log entries", Cf::Log, &range, |k, v| {
                    let item = |key: &[u8]| self.get("read item", Cf::Items, key);
                    if let Some(put) = codec::item_rewrite_before_truncation(k, v, item)? {
                        wb.put_cf(items, &put.key, &put.value);
                    }
                    Ok(true)
                })?;
                wb.delete_range_cf(log, from, to);
            }
            let Some((_, bytes)) = &plan.log_start else {
                return Ok(()); // nothing left to remove
            };
            wb.put_cf(self.cf(Cf::Meta)?, codec::META_LOG_START, bytes);
            self.write("truncate log", wb)?;
        }
    }

    fn acked(&self, peer: &RegionId) -> Result<VersionVector, StoreError> {
        self.meta_vector("acked vector", &codec::acked_key(peer))
    }

    fn acked_all(&self) -> Result<BTreeMap<RegionId, VersionVector>, StoreError> {
        let range = codec::meta_range(codec::META_ACKED_PREFIX);
        Ok(self
            .collect(
                "read acked vectors",
                Cf::Meta,
                &range,
                usize::MAX,
                codec::acked_from_kv,
            )?
            .into_iter()
            .collect())
    }

    fn set_acked(&self, peer: &RegionId, acked: &VersionVector) -> Result<(), StoreError> {
        let put = codec::acked_put(peer, acked)?;
        // A blind write: no read, so no writer lock (acks never wait for a
        // commit's fsync), but still refused once poisoned.
        self.check_writable("write acked vector")?;
        let mut wb = WriteBatch::default();
        self.add_puts(&mut wb, &[put])?;
        self.write("write acked vector", wb)
    }

    fn checkpoint(&self, source: &SourceId) -> Result<Option<Checkpoint>, StoreError> {
        let key = codec::checkpoint_key(source);
        self.get("read checkpoint", Cf::Meta, key.as_bytes())?
            .map(|bytes| codec::decode_checkpoint(&key, &bytes))
            .transpose()
    }

    fn checkpoints(&self) -> Result<Vec<(SourceId, Checkpoint)>, StoreError> {
        let range = codec::meta_range(codec::META_CHECKPOINT_PREFIX);
        self.collect(
            "read checkpoints",
            Cf::Meta,
            &range,
            usize::MAX,
            codec::checkpoint_from_kv,
        )
    }

    fn hlc_mark(&self) -> Result<Hlc, StoreError> {
        self.get("read hlc mark", Cf::Meta, codec::META_HLC.as_bytes())?
            .map_or(Ok(Hlc::default()), |bytes| codec::decode_hlc(&bytes))
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<DeadLetterId, StoreError> {
        let _guard = self.begin_write("write dead letter")?;
        let next = self.dead_letter_next()?;
        let (id, puts) = codec::dead_letter_puts(next, letter)?;
        let mut wb = WriteBatch::default();
        self.add_puts(&mut wb, &puts)?;
        self.write("write dead letter", wb)?;
        Ok(id)
    }

    fn dead_letters(
        &self,
        after: Option<DeadLetterId>,
        limit: usize,
    ) -> Result<Vec<(DeadLetterId, DeadLetter)>, StoreError> {
        let range = codec::dead_letters_range(after);
        self.collect(
            "read dead letters",
            Cf::DeadLetters,
            &range,
            limit,
            codec::dead_letter_from_kv,
        )
    }

    fn remove_dead_letter(&self, id: DeadLetterId) -> Result<bool, StoreError> {
        let _guard = self.begin_write("remove dead letter")?;
        let key = codec::dead_letter_key(id);
        if self
            .get("read dead letter", Cf::DeadLetters, &key)?
            .is_none()
        {
            return Ok(false);
        }
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.cf(Cf::DeadLetters)?, key);
        self.write("remove dead letter", wb)?;
        Ok(true)
    }

    fn side(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get("read side state", Cf::Side, key)?
            .map(|bytes| codec::decode_side(key, &bytes))
            .transpose()
    }

    fn item_and_side(
        &self,
        key: &ItemKey,
        side: &[u8],
    ) -> Result<(Option<ItemState>, Option<Vec<u8>>), StoreError> {
        let snapshot = self.db.snapshot();
        let log = self.cf(Cf::Log)?;
        let item = snapshot
            .get_cf(self.cf(Cf::Items)?, key.encode())
            .map_err(|e| backend("read item", e))?
            .map(|bytes| {
                // One snapshot: an entry the item points at is in it.
                let entry = |k: &[u8]| {
                    snapshot
                        .get_cf(log, k)
                        .map_err(|e| backend("read log entry", e))
                };
                codec::read_item(key, &bytes, entry)?.into_state(key)
            })
            .transpose()?;
        let value = snapshot
            .get_cf(self.cf(Cf::Side)?, side)
            .map_err(|e| backend("read side state", e))?
            .map(|bytes| codec::decode_side(side, &bytes))
            .transpose()?;
        Ok((item, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(name, nice)` of every thread of this process (Linux `/proc`).
    fn threads() -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("list threads") {
            let dir = task.expect("thread").path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            // Fields after the parenthesised name: state is field 3, nice 19.
            let nice = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(19 - 3))
                .and_then(|n| n.parse().ok())
                .expect("nice in /proc/<tid>/stat");
            out.push((comm.trim().to_owned(), nice));
        }
        out
    }

    /// A store in `dir` holding one write: peer `p` acknowledged `p`/1.
    fn store_with_one_ack(dir: &Path) -> (RocksStore, RegionId, VersionVector) {
        let store = RocksStore::open(RocksOptions::new(dir, Durability::Sync)).expect("open");
        let peer = RegionId::new("p").expect("valid region");
        let v: VersionVector = [(peer.clone(), Seq(1))].into_iter().collect();
        store.set_acked(&peer, &v).expect("write");
        (store, peer, v)
    }

    #[test]
    fn flushes_run_below_the_write_path_priority() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _, _) = store_with_one_ack(dir.path());
        // A flush runs on RocksDB's high-priority pool, whose threads take
        // the lowered priority when they pick up a job.
        store.flush().expect("flush");
        let threads = threads();
        let flushers: Vec<_> = threads
            .iter()
            .filter(|(name, _)| name.starts_with("rocksdb:high"))
            .collect();
        assert!(!flushers.is_empty(), "no flush thread among {threads:?}");
        assert!(
            flushers.iter().all(|(_, nice)| *nice > 0),
            "flush threads at the write path's priority: {threads:?}"
        );
    }

    #[test]
    fn a_poisoned_store_refuses_writes_but_serves_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, peer, v) = store_with_one_ack(dir.path());
        // What a failed WAL write or fsync does (RocksDB offers no way to
        // make one fail on demand).
        store.poisoned.store(true, Ordering::Release);
        for err in [
            store.set_acked(&peer, &v).expect_err("poisoned"),
            store.commit(&CommitBatch::default()).expect_err("poisoned"),
            store.sync().expect_err("poisoned"),
            store.truncate(&v).expect_err("poisoned"),
            store
                .remove_dead_letter(DeadLetterId(1))
                .expect_err("poisoned"),
        ] {
            assert!(err.is_fatal(), "{err}");
        }
        assert_eq!(store.acked(&peer).expect("reads still work"), v);
    }

    #[test]
    fn sizes_are_reported_per_column_family() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            RocksStore::open(RocksOptions::new(dir.path(), Durability::Buffered)).expect("open");
        let sizes = store.approximate_sizes().expect("sizes");
        assert_eq!(
            sizes.total(),
            sizes.log + sizes.items + sizes.meta + sizes.dead_letters + sizes.side
        );
        assert_eq!(store.path(), dir.path());
    }
}
