//! Pipelined ingest (`Log::ingest_pipelined`): the store writes one batch
//! on a second thread while the log builds the next. Whatever the batches
//! (hot items changed by consecutive batches, refused changes, an item
//! cache small enough to evict), the outcome is exactly that of
//! `Log::ingest_with` one batch after another; and when a commit fails, the
//! store holds exactly the batches reported committed and the log agrees
//! with it.

mod common;

use common::{MemLog, attr, change, key, open};
use proptest::prelude::*;
use tributary_engine::change::{Change, LogEntry, Op};
use tributary_engine::ids::{RegionId, Seq};
use tributary_engine::log::{Attached, IngestReport};
use tributary_engine::schema::MergePolicy;
use tributary_engine::store::{LogStore, MemStore, StoreError};
use tributary_engine::value::AttrValue;

const KEYS: usize = 4;

fn log(cache: usize) -> MemLog {
    open(
        "a",
        &[("qty", MergePolicy::Counter), ("tags", MergePolicy::Set)],
        cache,
    )
}

/// Change `op` of item `k`; op 255 sets the counter `qty`, which the
/// schema refuses.
fn make(k: usize, op: u8) -> Change {
    if op == 255 {
        return Change {
            key: key(k),
            ops: vec![Op::Set {
                attr: attr("qty"),
                value: AttrValue::S("x".into()),
            }],
            source_millis: None,
        };
    }
    change(k, op, 6)
}

fn batches_of(spec: &[Vec<(usize, u8)>]) -> Vec<(Vec<Change>, Attached)> {
    spec.iter()
        .map(|b| {
            let changes = b.iter().map(|&(k, op)| make(k, op)).collect();
            (changes, Attached::default())
        })
        .collect()
}

fn entries(log: &MemLog) -> Vec<LogEntry> {
    log.store()
        .entries(&RegionId::new("a").expect("region"), Seq::ZERO, usize::MAX)
        .expect("entries")
}

/// `a` and `b` hold the same log, items and applied vector.
fn assert_same(a: &MemLog, b: &MemLog) {
    assert_eq!(entries(a), entries(b), "log entries");
    for k in 0..KEYS {
        assert_eq!(
            a.item(&key(k)).expect("read"),
            b.item(&key(k)).expect("read"),
            "item k{k}"
        );
    }
    assert_eq!(a.applied(), b.applied(), "applied vector");
    assert_eq!(
        a.store().applied().expect("stored applied"),
        b.store().applied().expect("stored applied"),
        "stored applied vector"
    );
}

fn spec() -> impl Strategy<Value = Vec<Vec<(usize, u8)>>> {
    let change = (0..KEYS, prop_oneof![8 => any::<u8>(), 1 => Just(255u8)]);
    prop::collection::vec(prop::collection::vec(change, 0..6), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn pipelined_ingest_equals_one_batch_after_another(
        spec in spec(),
        cache in prop_oneof![Just(0usize), Just(1_500), Just(1 << 20)],
    ) {
        let mut sequential = log(cache);
        let expected: Vec<IngestReport> = batches_of(&spec)
            .into_iter()
            .map(|(changes, attached)| sequential.ingest_with(&changes, attached).expect("ingest"))
            .collect();

        let mut pipelined = log(cache);
        let mut reports = Vec::new();
        pipelined
            .ingest_pipelined(batches_of(&spec), |r| reports.push(r.expect("committed")))
            .expect("pipelined ingest");
        prop_assert_eq!(reports, expected);
        assert_same(&pipelined, &sequential);

        // The log goes on from there, pipelined or not.
        let more = [make(0, 1), make(1, 0)];
        prop_assert_eq!(
            pipelined.ingest(&more, Vec::new()).expect("ingest"),
            sequential.ingest(&more, Vec::new()).expect("ingest")
        );
        assert_same(&pipelined, &sequential);
    }

    #[test]
    fn a_failed_commit_leaves_the_reported_prefix_and_a_log_that_agrees(
        spec in spec(),
        fail_at in 0usize..12,
    ) {
        let mut pipelined = log(1 << 20);
        let store: MemStore = pipelined.store().clone();
        let batches = batches_of(&spec);
        let total = batches.len();
        // The write that fails is the next one after batch `fail_at` is
        // taken: which batch that is depends on how far the writer got.
        let taken = std::cell::Cell::new(0usize);
        let source = batches.into_iter().enumerate().map(|(i, b)| {
            taken.set(i + 1);
            if i == fail_at {
                store.fail_next_write();
            }
            b
        });
        let mut reports: Vec<Result<IngestReport, StoreError>> = Vec::new();
        let result = pipelined.ingest_pipelined(source, |r| reports.push(r));

        let committed: Vec<&IngestReport> = reports.iter().map_while(|r| r.as_ref().ok()).collect();
        let failed = &reports[committed.len()..];
        prop_assert!(failed.iter().all(Result::is_err), "a report after a failure is Ok");
        prop_assert_eq!(reports.len(), taken.get(), "one report per batch taken");
        if fail_at < total {
            prop_assert!(result.is_err(), "the failure is returned");
            prop_assert!(!failed.is_empty(), "the failed batch is reported");
        } else {
            prop_assert!(result.is_ok());
            prop_assert_eq!(reports.len(), total);
        }

        // Exactly the reported batches are in the store, and the log agrees.
        let mut reference = log(1 << 20);
        for ((changes, attached), report) in batches_of(&spec).into_iter().zip(&committed) {
            let expected = reference.ingest_with(&changes, attached).expect("reference ingest");
            prop_assert_eq!(*report, &expected);
        }
        assert_same(&pipelined, &reference);

        // After a restart the log goes on where the store is.
        store.crash();
        let more = [make(2, 1)];
        let mut reopened = log_on(store);
        prop_assert_eq!(
            reopened.ingest(&more, Vec::new()).expect("ingest after restart"),
            reference.ingest(&more, Vec::new()).expect("reference")
        );
        assert_same(&reopened, &reference);
    }
}

/// A log over `store` (a restart).
fn log_on(store: MemStore) -> MemLog {
    common::open_on(
        "a",
        &[("qty", MergePolicy::Counter), ("tags", MergePolicy::Set)],
        1 << 20,
        store,
    )
}

#[test]
fn a_commit_that_fails_first_reports_every_batch_failed_and_moves_nothing() {
    let mut pipelined = log(1 << 20);
    pipelined.store().fail_next_write();
    let mut reports = Vec::new();
    let spec = vec![vec![(0, 1)], vec![(0, 1), (1, 0)], vec![(1, 2)]];
    let err = pipelined
        .ingest_pipelined(batches_of(&spec), |r| reports.push(r))
        .expect_err("the first commit fails");
    assert!(err.is_fatal(), "{err}");
    assert!(!reports.is_empty() && reports.iter().all(Result::is_err));
    assert!(reports.len() <= spec.len());
    assert!(pipelined.applied().is_empty(), "{:?}", pipelined.applied());
    assert!(entries(&pipelined).is_empty());
}

#[test]
fn on_rocksdb_pipelined_ingest_equals_one_batch_after_another_and_survives_reopen() {
    use std::sync::Arc;
    use std::time::Duration;
    use tributary_engine::clock::ManualClock;
    use tributary_engine::ids::TableName;
    use tributary_engine::log::{Log, LogConfig};
    use tributary_engine::schema::{Schemas, TableSchema};
    use tributary_engine::store::{Durability, RocksOptions, RocksStore};

    let dir = tempfile::tempdir().expect("temp dir");
    let open_rocks = || {
        let mut o = RocksOptions::new(dir.path(), Durability::Sync);
        o.write_buffer_bytes = 4 << 20;
        o.block_cache_bytes = 8 << 20;
        let schema = TableSchema::new(TableName::new("carts").expect("table"), attr("pk"), None)
            .and_then(|s| s.with_policy(attr("qty"), MergePolicy::Counter))
            .and_then(|s| s.with_policy(attr("tags"), MergePolicy::Set))
            .expect("schema");
        let config = LogConfig {
            region: RegionId::new("a").expect("region"),
            schemas: [schema].into_iter().collect::<Schemas>(),
            max_clock_skew: Duration::from_secs(10),
            item_cache_bytes: 1_500,
        };
        let store = Arc::new(RocksStore::open(o).expect("open rocks store"));
        Log::open(store, config, ManualClock::new(common::NOW)).expect("open log")
    };
    // 200 batches of 5 changes over 4 items: every batch touches an item
    // the one before it wrote.
    let spec: Vec<Vec<(usize, u8)>> = (0..200u32)
        .map(|b| {
            (0..5u32)
                .map(|i| ((b * 5 + i) as usize % KEYS, ((b * 7 + i * 3) % 256) as u8))
                .collect()
        })
        .collect();
    let mut sequential = log(1_500);
    let expected: Vec<IngestReport> = batches_of(&spec)
        .into_iter()
        .map(|(c, a)| sequential.ingest_with(&c, a).expect("ingest"))
        .collect();

    let mut rocks = open_rocks();
    let mut reports = Vec::new();
    rocks
        .ingest_pipelined(batches_of(&spec), |r| reports.push(r.expect("committed")))
        .expect("pipelined ingest");
    assert_eq!(reports, expected);
    let check = |rocks: &Log<Arc<RocksStore>, ManualClock>| {
        let origin = RegionId::new("a").expect("region");
        assert_eq!(
            rocks
                .store()
                .entries(&origin, Seq::ZERO, usize::MAX)
                .expect("entries"),
            entries(&sequential)
        );
        for k in 0..KEYS {
            assert_eq!(
                rocks.item(&key(k)).expect("read"),
                sequential.item(&key(k)).expect("read"),
                "item k{k}"
            );
        }
        assert_eq!(rocks.applied(), sequential.applied());
    };
    check(&rocks);
    drop(rocks);
    check(&open_rocks());
}
