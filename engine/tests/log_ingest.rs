//! The log above a store: local ingest, remote apply (duplicates, gaps,
//! causal dependencies, clock skew), refused changes, checkpoints, the HLC
//! across restarts, truncation — on both stores.

use std::time::Duration;

use tributary_engine::change::{Change, LogEntry, Op};
use tributary_engine::clock::ManualClock;
use tributary_engine::crdt::AttrView;
use tributary_engine::ids::{AttrName, Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{ApplyStop, ChangeError, Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{
    Checkpoint, Durability, LogStore, MemStore, RocksOptions, RocksStore,
};
use tributary_engine::value::{AttrValue, Scalar};

const NOW: u64 = 1_700_000_000_000;

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attr")
}

fn region(s: &str) -> RegionId {
    RegionId::new(s).expect("valid region")
}

fn schemas() -> Schemas {
    let t = TableSchema::new(TableName::new("carts").expect("table"), attr("pk"), None)
        .and_then(|s| s.with_policy(attr("qty"), MergePolicy::Counter))
        .expect("schema");
    [t].into_iter().collect()
}

fn key(k: &str) -> ItemKey {
    ItemKey::new(
        TableName::new("carts").expect("table"),
        Scalar::S(k.into()),
        None,
    )
    .expect("key")
}

fn add(k: &str, n: i128) -> Change {
    Change {
        key: key(k),
        ops: vec![Op::Add {
            attr: attr("qty"),
            amount: n,
        }],
        source_millis: None,
    }
}

fn config(r: &str) -> LogConfig {
    LogConfig {
        region: region(r),
        schemas: schemas(),
        max_clock_skew: Duration::from_secs(10),
        item_cache_bytes: LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    }
}

fn qty<S: LogStore>(log: &Log<S, ManualClock>, k: &str) -> Option<AttrValue> {
    let view = log.item(&key(k)).expect("read").and_then(|s| s.view())?;
    match view.get(&attr("qty")) {
        Some(AttrView::Value { value, .. }) => Some(value.clone()),
        _ => None,
    }
}

fn n(v: i64) -> Option<AttrValue> {
    Some(AttrValue::N(v.to_string().parse().expect("number")))
}

fn all_entries<S: LogStore>(log: &Log<S, ManualClock>) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for (origin, _) in log.applied().clone().iter() {
        out.extend(log.entries(origin, Seq::ZERO, usize::MAX).expect("entries"));
    }
    out.sort_by_key(|e| e.hlc);
    out
}

/// Runs `check` on a pair of fresh logs per store kind.
fn on_both_stores(check: impl Fn(&mut dyn FnMut(&str) -> Box<dyn LogUnderTest>)) {
    check(&mut |r| {
        Box::new(
            Log::open(
                MemStore::new(Durability::Sync),
                config(r),
                ManualClock::new(NOW),
            )
            .expect("open"),
        )
    });
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = std::cell::RefCell::new(Vec::new());
    check(&mut |r| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            RocksStore::open(RocksOptions::new(dir.path(), Durability::Sync)).expect("open rocks");
        dirs.borrow_mut().push(dir);
        Box::new(Log::open(store, config(r), ManualClock::new(NOW)).expect("open"))
    });
}

/// The log operations the tests use, object-safe so one test body runs on
/// both store types.
trait LogUnderTest {
    fn ingest(&mut self, c: &[Change]) -> Vec<Result<(Seq, Hlc), ChangeError>>;
    fn apply(&mut self, e: &[LogEntry]) -> (usize, usize, Option<ApplyStop>);
    fn entries(&self) -> Vec<LogEntry>;
    fn qty(&self, k: &str) -> Option<AttrValue>;
    fn applied(&self) -> VersionVector;
}

impl<S: LogStore> LogUnderTest for Log<S, ManualClock> {
    fn ingest(&mut self, c: &[Change]) -> Vec<Result<(Seq, Hlc), ChangeError>> {
        self.ingest(c, Vec::new()).expect("ingest").outcomes
    }
    fn apply(&mut self, e: &[LogEntry]) -> (usize, usize, Option<ApplyStop>) {
        let r = self.apply_remote(e).expect("apply");
        (r.applied, r.duplicates, r.stopped)
    }
    fn entries(&self) -> Vec<LogEntry> {
        all_entries(self)
    }
    fn qty(&self, k: &str) -> Option<AttrValue> {
        qty(self, k)
    }
    fn applied(&self) -> VersionVector {
        Log::applied(self).clone()
    }
}

#[test]
fn remote_entries_apply_once_in_order_and_duplicates_are_no_ops() {
    on_both_stores(|open| {
        let mut a = open("a");
        let mut b = open("b");
        a.ingest(&[add("x", 2), add("x", 3)]);
        a.ingest(&[add("x", 4)]);
        let entries = a.entries();
        assert_eq!(
            entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // First delivery, then the same entries again (duplicated delivery).
        assert_eq!(b.apply(&entries), (3, 0, None));
        assert_eq!(b.apply(&entries), (0, 3, None));
        assert_eq!(b.qty("x"), n(9));
        assert_eq!(b.applied(), a.applied());
    });
}

#[test]
fn a_gap_stops_the_batch_after_the_contiguous_prefix() {
    on_both_stores(|open| {
        let mut a = open("a");
        let mut b = open("b");
        a.ingest(&[add("x", 1), add("x", 1), add("x", 1)]);
        let entries = a.entries();
        let reordered = vec![entries[0].clone(), entries[2].clone(), entries[1].clone()];
        let (applied, dups, stop) = b.apply(&reordered);
        assert_eq!((applied, dups), (1, 0));
        assert_eq!(
            stop,
            Some(ApplyStop::Gap {
                origin: region("a"),
                expected: Seq(2),
                got: Seq(3)
            })
        );
        assert_eq!(b.qty("x"), n(1));
        assert_eq!(b.apply(&entries), (2, 1, None));
        assert_eq!(b.qty("x"), n(3));
    });
}

#[test]
fn an_entry_waits_for_its_causal_past() {
    on_both_stores(|open| {
        let mut a = open("a");
        let mut b = open("b");
        let mut c = open("c");
        a.ingest(&[add("x", 5)]);
        b.apply(&a.entries());
        b.ingest(&[Change {
            key: key("x"),
            ops: vec![Op::Delete],
            source_millis: None,
        }]);
        let from_b: Vec<LogEntry> = b
            .entries()
            .into_iter()
            .filter(|e| e.origin == region("b"))
            .collect();
        // c hears of b's delete before a's increment that the delete saw.
        let (applied, _, stop) = c.apply(&from_b);
        assert_eq!(applied, 0);
        assert!(
            matches!(&stop, Some(ApplyStop::MissingDeps { origin, .. }) if *origin == region("b")),
            "expected MissingDeps, got {stop:?}"
        );
        c.apply(&a.entries());
        assert_eq!(c.apply(&from_b), (1, 0, None));
        assert_eq!(
            c.qty("x"),
            None,
            "the delete removed the increment it had seen"
        );
    });
}

#[test]
fn an_item_created_then_changed_or_refused_in_one_batch_keeps_every_accepted_change() {
    on_both_stores(|open| {
        let mut a = open("a");
        let refused = |k: &str| Change {
            key: key(k),
            ops: vec![Op::Set {
                attr: attr("qty"),
                value: AttrValue::S("many".into()),
            }],
            source_millis: None,
        };
        let out = a.ingest(&[
            add("new", 1),
            refused("new"),
            add("twice", 2),
            add("twice", 3),
            refused("twice"),
            add("once", 4),
        ]);
        let accepted: Vec<bool> = out.iter().map(Result::is_ok).collect();
        assert_eq!(accepted, [true, false, true, true, false, true]);
        assert_eq!(a.qty("new"), n(1));
        assert_eq!(a.qty("twice"), n(5));
        assert_eq!(a.qty("once"), n(4));
        let out = a.ingest(&[add("new", 10), add("once", 10)]);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        assert_eq!(
            a.qty("new"),
            n(11),
            "a later batch starts from the stored state"
        );
        assert_eq!(a.qty("once"), n(14));
    });
}

#[test]
fn refused_changes_are_reported_and_the_rest_of_the_batch_lands() {
    on_both_stores(|open| {
        let mut a = open("a");
        let wrong_type = Change {
            key: key("x"),
            ops: vec![Op::Set {
                attr: attr("qty"),
                value: AttrValue::S("many".into()),
            }],
            source_millis: None,
        };
        let unknown = Change {
            key: ItemKey::new(
                TableName::new("nope").expect("t"),
                Scalar::S("k".into()),
                None,
            )
            .expect("k"),
            ops: vec![],
            source_millis: None,
        };
        let too_big = Change {
            key: key("y"),
            ops: vec![Op::Set {
                attr: attr("blob"),
                value: AttrValue::B(vec![0; 401 * 1024]),
            }],
            source_millis: None,
        };
        let out = a.ingest(&[wrong_type, add("x", 1), unknown, too_big, add("x", 1)]);
        assert!(
            matches!(out[0], Err(ChangeError::Op { .. })),
            "{:?}",
            out[0]
        );
        assert!(
            matches!(out[2], Err(ChangeError::UnknownTable(_))),
            "{:?}",
            out[2]
        );
        let too_big_err = out[3]
            .as_ref()
            .expect_err("oversized item refused")
            .to_string();
        assert!(too_big_err.contains("limit"), "{too_big_err}");
        assert_eq!(out[1].as_ref().map(|(s, _)| *s), Ok(Seq(1)));
        assert_eq!(out[4].as_ref().map(|(s, _)| *s), Ok(Seq(2)));
        assert_eq!(a.qty("x"), n(2));
        assert_eq!(a.entries().len(), 2, "refused changes are not logged");
    });
}

#[test]
fn a_remote_clock_beyond_the_skew_bound_is_refused_not_applied() {
    on_both_stores(|open| {
        let mut a = open("a");
        let mut b = open("b");
        a.ingest(&[add("x", 1)]);
        let mut e = a.entries();
        e[0].hlc = Hlc::new(NOW + 3_600_000, 0);
        let (applied, _, stop) = b.apply(&e);
        assert_eq!(applied, 0);
        assert!(matches!(stop, Some(ApplyStop::ClockSkew(_))), "{stop:?}");
        assert_eq!(b.qty("x"), None);
    });
}

#[test]
fn checkpoints_commit_with_the_batch_and_the_hlc_survives_restart() {
    let store = MemStore::new(Durability::Sync);
    let clock = ManualClock::new(NOW);
    let mut log = Log::open(store.clone(), config("a"), clock.clone()).expect("open");
    let src = SourceId::new("kinesis:orders/shard-0").expect("source");
    let report = log
        .ingest(
            &[add("x", 1)],
            vec![(src.clone(), Checkpoint("4960".into()))],
        )
        .expect("ingest");
    let (_, hlc) = report.outcomes[0].clone().expect("accepted");
    assert!(report.durable);
    assert_eq!(
        store.checkpoint(&src).expect("read"),
        Some(Checkpoint("4960".into()))
    );
    // Even a batch whose every change is refused advances the checkpoint
    // (the caller dead-letters those records).
    let bad = Change {
        key: key("x"),
        ops: vec![Op::Add {
            attr: attr("name"),
            amount: 1,
        }],
        source_millis: None,
    };
    log.ingest(&[bad], vec![(src.clone(), Checkpoint("4961".into()))])
        .expect("ingest");
    assert_eq!(
        store.checkpoint(&src).expect("read"),
        Some(Checkpoint("4961".into()))
    );
    drop(log);
    // The wall clock went back an hour; the restarted log still moves forward.
    clock.set(NOW - 3_600_000);
    let mut log = Log::open(store, config("a"), clock).expect("reopen");
    let (_, later) = log
        .ingest(&[add("x", 1)], Vec::new())
        .expect("ingest")
        .outcomes[0]
        .clone()
        .expect("ok");
    assert!(later > hlc, "{later:?} must follow {hlc:?}");
    assert_eq!(log.applied().get(&region("a")), Seq(2));
}

#[test]
fn truncation_keeps_what_some_peer_still_needs() {
    let store = MemStore::new(Durability::Sync);
    let mut log = Log::open(store.clone(), config("a"), ManualClock::new(NOW)).expect("open");
    log.ingest(
        &[add("x", 1), add("x", 1), add("x", 1), add("x", 1)],
        Vec::new(),
    )
    .expect("ingest");
    let acked = |s: u64| {
        [(region("a"), Seq(s))]
            .into_iter()
            .collect::<VersionVector>()
    };
    store.set_acked(&region("b"), &acked(3)).expect("ack b");
    store.set_acked(&region("c"), &acked(2)).expect("ack c");
    let upto = log
        .truncate_acknowledged(&[region("b"), region("c")])
        .expect("truncate");
    assert_eq!(upto.get(&region("a")), Seq(2));
    let left: Vec<u64> = log
        .entries(&region("a"), Seq::ZERO, 10)
        .expect("entries")
        .iter()
        .map(|e| e.seq.0)
        .collect();
    assert_eq!(left, vec![3, 4]);
    assert_eq!(
        store.log_start().expect("log start").get(&region("a")),
        Seq(2)
    );
    // The items are untouched by truncation.
    assert_eq!(qty(&log, "x"), n(4));
}

#[test]
fn entries_above_come_in_causal_order_and_apply_in_one_pass() {
    let clock = ManualClock::new(NOW);
    let open = |r: &str| {
        Log::open(MemStore::new(Durability::Sync), config(r), clock.clone()).expect("open")
    };
    let (mut a, mut b, mut c) = (open("a"), open("b"), open("c"));
    a.ingest(&[add("x", 1), add("y", 1)], Vec::new())
        .expect("ingest");
    clock.advance(Duration::from_millis(5));
    b.apply_remote(&a.entries_above(&VersionVector::new(), 100).expect("read"))
        .expect("apply");
    b.ingest(
        &[Change {
            key: key("x"),
            ops: vec![Op::Delete],
            source_millis: None,
        }],
        Vec::new(),
    )
    .expect("ingest");
    clock.advance(Duration::from_millis(5));
    a.ingest(&[add("y", 2)], Vec::new()).expect("ingest");
    // b holds a's first two entries and its own delete; c receives all of
    // b's log, then the rest from a.
    let from_b = b.entries_above(c.applied(), 100).expect("read");
    let hlcs: Vec<Hlc> = from_b.iter().map(|e| e.hlc).collect();
    assert!(hlcs.windows(2).all(|w| w[0] < w[1]), "HLC order: {hlcs:?}");
    let r = c.apply_remote(&from_b).expect("apply");
    assert_eq!((r.applied, r.stopped), (3, None));
    let rest = a.entries_above(c.applied(), 100).expect("read");
    assert_eq!(
        rest.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
        vec![3],
        "only what c lacks"
    );
    assert!(a.entries_above(a.applied(), 100).expect("read").is_empty());
    c.apply_remote(&rest).expect("apply");
    assert_eq!(qty(&c, "x"), None);
    assert_eq!(qty(&c, "y"), n(3));
}

#[test]
fn group_commit_acknowledges_only_after_sync() {
    let store = MemStore::new(Durability::Buffered);
    let clock = ManualClock::new(NOW);
    let mut log = Log::open(store.clone(), config("a"), clock.clone()).expect("open");
    let report = log.ingest(&[add("x", 1)], Vec::new()).expect("ingest");
    assert!(!report.durable, "buffered ingest is not durable until sync");
    log.sync().expect("sync");
    let report = log.ingest(&[add("x", 10)], Vec::new()).expect("ingest");
    assert!(!report.durable);
    drop(log);
    // Power cut before the second sync: the unsynced batch is gone, the
    // synced one is whole.
    store.crash();
    let log = Log::open(store, config("a"), clock).expect("reopen");
    assert_eq!(log.applied().get(&region("a")), Seq(1));
    assert_eq!(qty(&log, "x"), n(1));
}

#[test]
fn converged_regions_have_equal_digests_whatever_the_order_and_store() {
    use tributary_engine::store::digest_items;
    let clock = ManualClock::new(NOW);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a =
        Log::open(MemStore::new(Durability::Sync), config("a"), clock.clone()).expect("open");
    let rocks = RocksStore::open(RocksOptions::new(dir.path(), Durability::Sync)).expect("rocks");
    let mut b = Log::open(rocks, config("b"), clock.clone()).expect("open");
    a.ingest(&[add("x", 1), add("y", 2)], Vec::new())
        .expect("ingest");
    b.ingest(
        &[
            add("x", 5),
            Change {
                key: key("z"),
                ops: vec![Op::Delete],
                source_millis: None,
            },
        ],
        Vec::new(),
    )
    .expect("ingest");
    let before = (
        digest_items(a.store(), 2).expect("digest"),
        digest_items(b.store(), 2).expect("digest"),
    );
    assert_ne!(
        before.0.digest, before.1.digest,
        "different states, different digests"
    );
    let to_b = a.entries_above(b.applied(), 100).expect("read");
    let to_a = b.entries_above(a.applied(), 100).expect("read");
    b.apply_remote(&to_b).expect("apply");
    a.apply_remote(&to_a).expect("apply");
    let da = digest_items(a.store(), 2).expect("digest");
    let db = digest_items(b.store(), 1000).expect("digest");
    assert_eq!(
        da, db,
        "converged: equal digests on a memory store and a RocksDB store, any page size"
    );
    assert_eq!(
        (da.items, da.live_items),
        (2, 2),
        "x and y exist; deleting the never-seen z stored nothing"
    );
    assert_eq!(da.digest.len(), 64);
}

#[test]
fn a_snapshot_brings_a_new_log_level_with_a_truncated_one() {
    let open = |r: &str| {
        Log::open(
            MemStore::new(Durability::Sync),
            config(r),
            ManualClock::new(NOW),
        )
        .expect("open")
    };
    let mut a = open("a");
    let mut b = open("b");
    for i in 0..20 {
        a.ingest(&[add(&format!("k{}", i % 5), 1)], vec![])
            .expect("ingest");
    }
    // Everything acknowledged by the (only) peer and truncated.
    a.store().set_acked(&region("c"), a.applied()).expect("ack");
    a.truncate_acknowledged(&[region("c")]).expect("truncate");
    assert_eq!(
        a.store().log_start().expect("start").get(&region("a")),
        Seq(20)
    );

    // b joins the snapshot in two chunks, then finishes it.
    let head = a.applied().clone();
    let items = a.store().scan_items(None, None, usize::MAX).expect("scan");
    let (first, second) = items.split_at(2);
    b.install_snapshot_items(first).expect("chunk 1");
    assert_eq!(
        b.applied(),
        &VersionVector::new(),
        "applied waits for the end"
    );
    b.install_snapshot_items(second).expect("chunk 2");
    let jumped = b.finish_snapshot(&head).expect("finish");
    assert_eq!(jumped.get(&region("a")), Seq(20));
    assert_eq!(b.applied(), &head);
    assert_eq!(
        b.store().log_start().expect("start").get(&region("a")),
        Seq(20)
    );
    for k in 0..5 {
        assert_eq!(qty(&b, &format!("k{k}")), n(4), "k{k}");
    }
    let digest = |log: &Log<MemStore, ManualClock>| {
        tributary_engine::store::digest_items(log.store(), 3).expect("digest")
    };
    assert_eq!(digest(&a), digest(&b));

    // The log resumes: a's next entry applies on b without a gap, and
    // finishing the same snapshot again changes nothing.
    a.ingest(&[add("k0", 10)], vec![]).expect("ingest");
    let next = a.entries(&region("a"), Seq(20), 10).expect("entries");
    let report = b.apply_remote(&next).expect("apply");
    assert_eq!((report.applied, report.stopped), (1, None));
    assert_eq!(qty(&b, "k0"), n(14));
    assert!(b.finish_snapshot(&head).expect("again").is_empty());
}

#[test]
fn entries_above_never_ships_beyond_the_durable_head() {
    let mut log = Log::open(
        MemStore::new(Durability::Buffered),
        config("a"),
        ManualClock::new(NOW),
    )
    .expect("open");
    for i in 0..5 {
        log.ingest(&[add(&format!("k{i}"), 1)], vec![])
            .expect("ingest");
    }
    // Only seq 3 is known durable (published); 4 and 5 are committed but
    // could still be lost by a crash.
    let mut durable = VersionVector::new();
    durable.set(region("a"), Seq(3));
    let shipped =
        tributary_engine::store::entries_above(log.store(), &durable, &VersionVector::new(), 100)
            .expect("entries");
    let seqs: Vec<u64> = shipped.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// What a link ships is a prefix of the HLC order over everything the
    /// peer lacks, however few entries each origin is read for: at least
    /// one origin's share, never an entry that sorts after one left out.
    #[test]
    fn entries_above_is_a_prefix_of_the_hlc_order_of_what_is_lacking(
        steps in proptest::collection::vec((0usize..3, 1usize..40, 0u64..3), 1..24),
        have_fraction in proptest::collection::vec(0.0f64..1.2, 3),
        limit in 1usize..400,
    ) {
        let clock = ManualClock::new(NOW);
        let open = |r: &str| {
            Log::open(MemStore::new(Durability::Sync), config(r), clock.clone()).expect("open")
        };
        let mut origins = [open("a"), open("b"), open("c")];
        for (who, count, advance) in steps {
            let changes: Vec<Change> = (0..count).map(|i| add(&format!("k{}", i % 7), 1)).collect();
            origins[who].ingest(&changes, Vec::new()).expect("ingest");
            clock.advance(Duration::from_millis(advance));
        }
        let mut collector = open("d");
        for o in &origins {
            let r = collector.apply_remote(&all_entries(o)).expect("apply");
            proptest::prop_assert_eq!(r.stopped, None);
        }
        let head = collector.applied().clone();
        let have: VersionVector = head
            .iter()
            .zip(&have_fraction)
            .map(|((o, s), f)| (o.clone(), Seq(((s.0 as f64) * f).min(s.0 as f64) as u64)))
            .collect();
        let mut lacking: Vec<LogEntry> = all_entries(&collector)
            .into_iter()
            .filter(|e| e.seq > have.get(&e.origin))
            .collect();
        lacking.sort_by(|a, b| (a.hlc, &a.origin, a.seq).cmp(&(b.hlc, &b.origin, b.seq)));
        let got = tributary_engine::store::entries_above(collector.store(), &head, &have, limit)
            .expect("read");
        let at_least = lacking.len().min(limit.min(tributary_engine::store::MIN_SHARE));
        proptest::prop_assert!(got.len() >= at_least, "{} entries, wanted at least {at_least}", got.len());
        proptest::prop_assert!(got.len() <= limit);
        proptest::prop_assert_eq!(&got[..], &lacking[..got.len()]);
    }
}
