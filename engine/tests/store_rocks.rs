//! The RocksDB store passes the store conformance suite, detects corrupted
//! values without losing the rest of the store, and keeps its on-disk
//! layout.

use std::path::Path;

use tempfile::TempDir;
use tributary_engine::change::{LogEntry, Op};
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::conformance::StoreHarness;
use tributary_engine::store::{
    Checkpoint, CommitBatch, DeadLetter, DeadLetterId, Durability, LogStore, RocksOptions,
    RocksStore, StoreError,
};
use tributary_engine::value::{AttrValue, Scalar};

/// Small caches and memtables: many tests run in parallel.
fn options(path: &Path, durability: Durability) -> RocksOptions {
    let mut o = RocksOptions::new(path, durability);
    o.write_buffer_bytes = 4 << 20;
    o.block_cache_bytes = 8 << 20;
    o
}

fn open(path: &Path, durability: Durability) -> RocksStore {
    RocksStore::open(options(path, durability)).expect("open rocks store")
}

/// Opens each store in a temporary directory of its own. A crash drops
/// the store without syncing: in one process that loses no more than a
/// process crash does (the OS keeps the WAL's page cache), which the
/// checks allow.
#[derive(Default)]
struct RocksHarness {
    dirs: Vec<TempDir>,
}

impl StoreHarness for RocksHarness {
    type Store = RocksStore;

    fn open(&mut self, durability: Durability) -> RocksStore {
        let dir = TempDir::new().expect("temp dir");
        let store = open(dir.path(), durability);
        self.dirs.push(dir);
        store
    }

    fn reopen(&mut self, store: RocksStore) -> RocksStore {
        store.sync().expect("a clean shutdown syncs");
        let (path, durability) = (store.path().to_owned(), store.durability());
        drop(store);
        open(&path, durability)
    }

    fn crash(&mut self, store: RocksStore) -> RocksStore {
        let (path, durability) = (store.path().to_owned(), store.durability());
        drop(store);
        open(&path, durability)
    }
}

tributary_engine::store_conformance_tests!(RocksHarness::default());

// ---------------------------------------------------------------------------
// Corruption and layout

fn region(s: &str) -> RegionId {
    RegionId::new(s).expect("valid region")
}

fn key(pk: &str) -> ItemKey {
    ItemKey::new(
        TableName::new("orders").expect("valid table"),
        Scalar::S(pk.into()),
        None,
    )
    .expect("valid key")
}

fn state(k: &ItemKey, origin: &RegionId, attrs: &[(&str, &str)]) -> ItemState {
    let schema = TableSchema::new(k.table().clone(), AttrName::new("pk").expect("attr"), None)
        .expect("schema");
    let ops: Vec<Op> = attrs
        .iter()
        .map(|(a, v)| Op::Set {
            attr: AttrName::new(*a).expect("attr"),
            value: AttrValue::S((*v).into()),
        })
        .collect();
    ItemState::new()
        .prepare(&schema, origin, Hlc::new(1_000, 0), &ops)
        .expect("valid ops")
        .state
}

fn entry(origin: &str, seq: u64, k: &ItemKey) -> LogEntry {
    let origin = region(origin);
    let delta = state(k, &origin, &[("status", "paid")]);
    LogEntry {
        origin,
        seq: Seq(seq),
        hlc: Hlc::new(1_000 + seq, 0),
        deps: VersionVector::new(),
        key: k.clone(),
        delta,
    }
}

/// The log key layout: `[origin len][origin][seq u64 BE]`.
fn raw_log_key(origin: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![origin.len() as u8];
    k.extend_from_slice(origin.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

const CFS: [&str; 5] = ["log", "items", "meta", "dead_letters", "side"];

/// Opens the store's directory with plain RocksDB and lets `f` tamper.
fn with_raw_db(path: &Path, f: impl FnOnce(&rocksdb::DB)) {
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf(&opts, path, CFS).expect("open raw db");
    f(&db);
}

fn cf<'a>(db: &'a rocksdb::DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family exists")
}

/// Writes items `k1`, `k2`, `k3` and entries `a/1`, `a/2`, closes the
/// store and returns the directory.
fn populated() -> (TempDir, Vec<(ItemKey, ItemState)>, Vec<LogEntry>) {
    let dir = TempDir::new().expect("temp dir");
    let store = open(dir.path(), Durability::Sync);
    let keys = [key("k1"), key("k2"), key("k3")];
    let items: Vec<(ItemKey, ItemState)> = keys
        .iter()
        .map(|k| (k.clone(), state(k, &region("a"), &[("status", "new")])))
        .collect();
    let entries = vec![entry("a", 1, &keys[0]), entry("a", 2, &keys[1])];
    let batch = CommitBatch {
        entries: entries.clone(),
        items: items.clone(),
        applied: [(region("a"), Seq(2))].into_iter().collect(),
        checkpoints: vec![],
        hlc_mark: Hlc::new(1_002, 0),
        ..CommitBatch::default()
    };
    store.commit(&batch).expect("commit");
    drop(store);
    (dir, items, entries)
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str, key: &str) {
    match result {
        Err(StoreError::Corrupt {
            what: w,
            key: k,
            reason,
        }) => {
            assert_eq!(
                (w, k.as_str()),
                (what, key),
                "the error must name the value ({reason})"
            );
        }
        other => panic!("expected Corrupt {{ {what}, {key} }}, got {other:?}"),
    }
}

/// Reading the tampered `k1` and `a/1` fails with `Corrupt` naming them;
/// the rest reads fine; new commits work and repair the item.
fn check_tampered_store(dir: &TempDir, items: &[(ItemKey, ItemState)], entries: &[LogEntry]) {
    let store = open(dir.path(), Durability::Sync);
    let (k1, k2, k3) = (&items[0].0, &items[1].0, &items[2].0);
    assert_corrupt(store.item(k1), "item", &k1.to_string());
    assert_corrupt(
        store.items(&[k2.clone(), k1.clone()]),
        "item",
        &k1.to_string(),
    );
    assert_corrupt(store.scan_items(None, None, 10), "item", &k1.to_string());
    assert_corrupt(
        store.entries(&region("a"), Seq::ZERO, 10),
        "log entry",
        "a/1",
    );
    assert_eq!(
        store.item(k2).expect("k2 is intact"),
        Some(items[1].1.clone())
    );
    assert_eq!(
        store
            .items(&[k3.clone(), k2.clone()])
            .expect("intact items"),
        vec![Some(items[2].1.clone()), Some(items[1].1.clone())]
    );
    assert_eq!(
        store
            .scan_items(None, Some(k1), 10)
            .expect("scan past the corrupt item"),
        items[1..].to_vec()
    );
    assert_eq!(
        store
            .entries(&region("a"), Seq(1), 10)
            .expect("entries after the corrupt one"),
        entries[1..].to_vec()
    );
    assert_eq!(
        store.applied().expect("meta is intact").get(&region("a")),
        Seq(2)
    );

    let repaired = state(k1, &region("b"), &[("status", "repaired")]);
    let batch = CommitBatch {
        entries: vec![entry("a", 3, k1)],
        items: vec![(k1.clone(), repaired.clone())],
        applied: [(region("a"), Seq(3))].into_iter().collect(),
        checkpoints: vec![(
            SourceId::new("src").expect("source"),
            Checkpoint("9".into()),
        )],
        hlc_mark: Hlc::new(1_003, 0),
        ..CommitBatch::default()
    };
    store.commit(&batch).expect("commits still work");
    assert_eq!(store.item(k1).expect("repaired"), Some(repaired));
    assert_eq!(
        store.entries(&region("a"), Seq(2), 10).expect("new entry"),
        vec![entry("a", 3, k1)]
    );
}

#[test]
fn garbage_values_are_reported_as_corrupt_and_the_rest_still_works() {
    let (dir, items, entries) = populated();
    with_raw_db(dir.path(), |db| {
        db.put_cf(cf(db, "items"), items[0].0.encode(), b"garbage")
            .expect("overwrite item");
        db.put_cf(cf(db, "log"), raw_log_key("a", 1), [0u8; 3])
            .expect("overwrite entry");
    });
    check_tampered_store(&dir, &items, &entries);
}

#[test]
fn a_single_flipped_byte_is_reported_as_corrupt() {
    let (dir, items, entries) = populated();
    with_raw_db(dir.path(), |db| {
        for (cf_name, k) in [("items", items[0].0.encode()), ("log", raw_log_key("a", 1))] {
            let mut value = db
                .get_cf(cf(db, cf_name), &k)
                .expect("read")
                .expect("value exists");
            let middle = value.len() / 2;
            value[middle] ^= 0x01;
            db.put_cf(cf(db, cf_name), &k, value).expect("write back");
        }
    });
    check_tampered_store(&dir, &items, &entries);
}

/// Items created by one change point at its log entry. One whose entry is
/// missing, or that points at another item's entry, is reported as a
/// corrupt item naming its key; the others still read, and a commit
/// repairs it.
#[test]
fn an_item_whose_entry_is_missing_or_foreign_is_reported_as_corrupt() {
    let dir = TempDir::new().expect("temp dir");
    let (k1, k2, k3) = (key("k1"), key("k2"), key("k3"));
    {
        let store = open(dir.path(), Durability::Sync);
        let batch = CommitBatch {
            entries: vec![entry("a", 1, &k1), entry("a", 2, &k2)],
            items_from_entries: vec![0, 1],
            applied: [(region("a"), Seq(2))].into_iter().collect(),
            ..CommitBatch::default()
        };
        store.commit(&batch).expect("commit");
    }
    with_raw_db(dir.path(), |db| {
        db.delete_cf(cf(db, "log"), raw_log_key("a", 1))
            .expect("delete entry");
        let items = cf(db, "items");
        let k2_value = db.get_cf(items, k2.encode()).expect("read").expect("k2");
        db.put_cf(items, k3.encode(), k2_value)
            .expect("copy k2 to k3");
    });
    let store = open(dir.path(), Durability::Sync);
    for k in [&k1, &k3] {
        assert_corrupt(store.item(k), "item", &k.to_string());
        assert_corrupt(
            store.items(&[k2.clone(), k.clone()]),
            "item",
            &k.to_string(),
        );
    }
    assert_corrupt(store.scan_items(None, None, 10), "item", &k1.to_string());
    assert_eq!(
        store.item(&k2).expect("k2 reads from its entry"),
        Some(entry("a", 2, &k2).delta)
    );
    let repaired = state(&k1, &region("b"), &[("status", "repaired")]);
    let batch = CommitBatch {
        items: vec![(k1.clone(), repaired.clone())],
        ..CommitBatch::default()
    };
    store.commit(&batch).expect("commits still work");
    assert_eq!(store.item(&k1).expect("repaired"), Some(repaired));
}

#[test]
fn an_undecodable_key_is_reported_as_corrupt() {
    let (dir, items, _) = populated();
    with_raw_db(dir.path(), |db| {
        // Sorts after every `orders` key (length byte 6 < 0xff).
        db.put_cf(cf(db, "items"), [0xff, 1, 2], b"x").expect("put");
    });
    let store = open(dir.path(), Durability::Sync);
    assert_corrupt(
        store.scan_items(None, None, 10),
        "item key",
        "\\xff\\x01\\x02",
    );
    assert_eq!(
        store
            .scan_items(Some(items[0].0.table()), None, 10)
            .expect("the table's own scan never reaches the bad key"),
        items
    );
}

#[test]
fn a_reopen_keeps_the_dead_letter_counter() {
    let dir = TempDir::new().expect("temp dir");
    let letter = |n: u8| DeadLetter {
        source: SourceId::new("pg:slot").expect("source"),
        offset: format!("0/{n}"),
        reason: "bad".into(),
        raw: vec![n],
        attempts: 1,
        at_millis: 0,
    };
    let mut last = DeadLetterId(0);
    for round in 0..3u8 {
        let store = open(dir.path(), Durability::Buffered);
        for n in 0..3 {
            let id = store.put_dead_letter(&letter(round * 3 + n)).expect("put");
            assert!(
                id > last,
                "ids increase across reopens: {last:?} then {id:?}"
            );
            last = id;
        }
        // Remove everything: the counter alone must keep ids increasing.
        for (id, _) in store.dead_letters(None, 100).expect("list") {
            assert!(store.remove_dead_letter(id).expect("remove"));
        }
        store.sync().expect("sync");
    }
    assert_eq!(last, DeadLetterId(9), "ids are 1, 2, 3, … without reuse");
}

#[test]
fn the_on_disk_layout_is_stable() {
    let dir = TempDir::new().expect("temp dir");
    {
        let store = open(dir.path(), Durability::Sync);
        let k = key("k1");
        let batch = CommitBatch {
            entries: vec![entry("us-east-1", 300, &k)],
            items: vec![(k.clone(), state(&k, &region("us-east-1"), &[("a", "b")]))],
            applied: [(region("us-east-1"), Seq(300))].into_iter().collect(),
            checkpoints: vec![(
                SourceId::new("kinesis:s/1").expect("source"),
                Checkpoint("7".into()),
            )],
            hlc_mark: Hlc::new(5, 0),
            ..CommitBatch::default()
        };
        store.commit(&batch).expect("commit");
        store.truncate(&batch.applied).expect("truncate");
        store
            .commit(&CommitBatch {
                entries: vec![entry("us-east-1", 301, &k)],
                ..CommitBatch::default()
            })
            .expect("commit");
        store
            .set_acked(&region("eu-west-1"), &batch.applied)
            .expect("ack");
        store
            .put_dead_letter(&DeadLetter {
                source: SourceId::new("s").expect("source"),
                offset: "1".into(),
                reason: "r".into(),
                raw: vec![],
                attempts: 0,
                at_millis: 0,
            })
            .expect("dead letter");
    }
    with_raw_db(dir.path(), |db| {
        let keys = |name: &str| -> Vec<Vec<u8>> {
            db.iterator_cf(cf(db, name), rocksdb::IteratorMode::Start)
                .map(|kv| kv.expect("iterate").0.to_vec())
                .collect()
        };
        assert_eq!(keys("log"), vec![raw_log_key("us-east-1", 301)]);
        assert_eq!(keys("items"), vec![key("k1").encode()]);
        assert_eq!(keys("dead_letters"), vec![1u64.to_be_bytes().to_vec()]);
        let meta: Vec<String> = keys("meta")
            .into_iter()
            .map(|k| String::from_utf8(k).expect("meta keys are text"))
            .collect();
        assert_eq!(
            meta,
            [
                "acked/eu-west-1",
                "applied",
                "checkpoint/kinesis:s/1",
                "dead_letter_next",
                "hlc",
                "log_start"
            ]
        );
        let value = db
            .get_cf(cf(db, "items"), key("k1").encode())
            .expect("read")
            .expect("item exists");
        assert_eq!(value[0], 1, "values start with the format version");
        let (body, crc) = value.split_at(value.len() - 4);
        assert_eq!(
            crc,
            crc32fast::hash(body).to_le_bytes(),
            "values end with the CRC-32 (LE) of version and payload"
        );
    });
}
