//! Parking (`Log::park_up_to`): a received entry whose causal past is not
//! applied yet waits in memory instead of stopping its batch, and applies as
//! soon as its past does. The log's applied vector stays causally closed and
//! its items are always what applying exactly that vector's entries in HLC
//! order gives; `held` is the applied vector plus what is parked.

mod common;
mod two_origins;

use common::{MemLog, key};
use proptest::prelude::*;
use tributary_engine::change::LogEntry;
use tributary_engine::ids::{RegionId, Seq, VersionVector};
use tributary_engine::log::{ApplyStop, ParkLimit};
use two_origins::{
    KEYS, batches, counter_log as open, picks, two_origin_history as history, writes,
};

fn region(s: &str) -> RegionId {
    RegionId::new(s).expect("region")
}

fn of(all: &[LogEntry], origin: &str) -> Vec<LogEntry> {
    all.iter()
        .filter(|e| e.origin.as_str() == origin)
        .cloned()
        .collect()
}

fn vv(pairs: &[(&str, u64)]) -> VersionVector {
    pairs.iter().map(|(o, s)| (region(o), Seq(*s))).collect()
}

/// `stop` is a gap: `expected` must come next, `got` came.
fn assert_gap(stop: &Option<ApplyStop>, expected: u64, got: u64) {
    assert!(
        matches!(stop, Some(ApplyStop::Gap { expected: e, got: g, .. }) if *e == Seq(expected) && *g == Seq(got)),
        "expected a gap at {expected} (got {got}): {stop:?}"
    );
}

/// A log of `a` that parks up to 100 entries.
fn parking_log() -> MemLog {
    let mut a = open("a");
    a.park_up_to(ParkLimit::entries(100));
    a
}

/// c writes twice, b (having both) writes twice, c writes once more.
fn b_after_c() -> Vec<LogEntry> {
    history(&[
        (false, 0, 1),
        (false, 1, 2),
        (true, 0, 3),
        (true, 2, 4),
        (false, 1, 5),
    ])
}

/// The items of `log` equal those of a log that applied exactly the
/// entries of `all` its applied vector covers, in HLC order.
fn assert_items_match_applied(log: &MemLog, all: &[LogEntry]) {
    let applied = log.applied();
    let covered: Vec<LogEntry> = all
        .iter()
        .filter(|e| e.seq <= applied.get(&e.origin))
        .cloned()
        .collect();
    let mut reference = open("a");
    let report = reference.apply_remote(&covered).expect("reference");
    assert_eq!(
        report.stopped, None,
        "the applied vector {applied:?} is not causally closed"
    );
    assert_eq!(reference.applied(), applied);
    for k in 0..KEYS {
        assert_eq!(
            log.item(&key(k)).expect("read"),
            reference.item(&key(k)).expect("read"),
            "item k{k}"
        );
    }
}

#[test]
fn an_entry_ahead_of_its_dependencies_waits_and_applies_when_they_come() {
    let all = b_after_c();
    let mut a = parking_log();
    // b's entries first: both wait for c's, nothing stops.
    let r = a.apply_remote(&of(&all, "b")).expect("apply b");
    assert_eq!((r.applied, r.parked, r.stopped), (0, 2, None));
    assert_eq!(a.applied(), &VersionVector::new(), "parked is not applied");
    assert_eq!(a.held(), vv(&[("b", 2)]));
    assert_eq!(a.parked(), 2);
    // Sent again (the sender resends what it was not told is held): held
    // entries count as duplicates.
    let r = a.apply_remote(&of(&all, "b")[..1]).expect("again");
    assert_eq!((r.applied, r.duplicates, r.parked), (0, 1, 0));
    // c's entries come: b's apply behind them, in the same commit.
    let r = a.apply_remote(&of(&all, "c")).expect("apply c");
    assert_eq!((r.applied, r.parked, r.stopped), (5, 0, None));
    assert_eq!(a.applied(), &vv(&[("b", 2), ("c", 3)]));
    assert_eq!(a.held(), *a.applied());
    assert_eq!(a.parked(), 0);
    assert_items_match_applied(&a, &all);
}

#[test]
fn a_waiting_entry_does_not_stop_the_other_origins_of_its_batch() {
    let all = b_after_c();
    let mut a = parking_log();
    // c:1..2 are the dependencies of b:1; c:3 is independent of b.
    let c = of(&all, "c");
    a.apply_remote(&c[..1]).expect("c:1");
    let mut batch = of(&all, "b");
    batch.push(c[2].clone());
    // c:3 comes without c:2: a gap for c, but b parks first.
    let r = a.apply_remote(&batch).expect("apply");
    assert_eq!(r.parked, 2);
    assert_gap(&r.stopped, 2, 3);
    let r = a.apply_remote(&c[1..]).expect("c:2..3");
    assert_eq!((r.applied, r.stopped), (4, None));
    assert_eq!(a.applied(), &vv(&[("b", 2), ("c", 3)]));
    assert_items_match_applied(&a, &all);
}

#[test]
fn entries_wait_behind_their_origins_parked_run_and_a_gap_names_the_seq_after_it() {
    // c writes once; b, having it, writes three times.
    let all = history(&[(false, 0, 1), (true, 0, 2), (true, 1, 3), (true, 2, 4)]);
    let mut a = parking_log();
    let b = of(&all, "b");
    a.apply_remote(&b[..1]).expect("b:1 parks");
    let r = a.apply_remote(&b[2..]).expect("b:3");
    assert_gap(&r.stopped, 2, 3);
    let r = a.apply_remote(&b[1..]).expect("b:2..3");
    assert_eq!(
        (r.parked, r.stopped),
        (2, None),
        "behind b:1, with no deps missing"
    );
    let r = a.apply_remote(&b[..1]).expect("b:1 again");
    assert_eq!(r.duplicates, 1);
    assert_eq!(a.held(), vv(&[("b", 3)]));
    a.apply_remote(&of(&all, "c")).expect("c:1");
    assert_eq!(a.applied(), &vv(&[("b", 3), ("c", 1)]));
    assert_items_match_applied(&a, &all);
}

#[test]
fn a_full_park_stops_the_batch_as_without_parking() {
    let all = b_after_c();
    let from_b = of(&all, "b");
    let first = from_b[0].memory_estimate();
    // Full by count, or by weight: the first entry fits, the second not.
    for limit in [
        ParkLimit::entries(1),
        ParkLimit {
            entries: 100,
            bytes: first + from_b[1].memory_estimate() - 1,
        },
    ] {
        let mut a = open("a");
        a.park_up_to(limit);
        let r = a.apply_remote(&from_b).expect("apply b");
        assert_eq!(r.parked, 1, "{limit:?}");
        assert_eq!(a.parked_bytes(), first, "{limit:?}");
        assert!(
            matches!(
                &r.stopped,
                Some(ApplyStop::MissingDeps { seq: Seq(2), missing, .. }) if missing == &vv(&[("c", 2)])
            ),
            "the second entry waits behind the first, which waits for c:2 ({limit:?}): {:?}",
            r.stopped
        );
        a.apply_remote(&of(&all, "c")).expect("c");
        assert_eq!((a.parked(), a.parked_bytes()), (0, 0), "{limit:?}");
    }
    // An entry that alone weighs more than the bound never parks.
    let mut small = open("a");
    small.park_up_to(ParkLimit {
        entries: 100,
        bytes: first - 1,
    });
    let r = small.apply_remote(&from_b).expect("apply b");
    assert_eq!((r.parked, small.parked_bytes()), (0, 0));
    assert!(matches!(
        r.stopped,
        Some(ApplyStop::MissingDeps { seq: Seq(1), .. })
    ));
    // Off (the default): the first entry stops the batch.
    let mut off = open("a");
    let r = off.apply_remote(&of(&all, "b")).expect("apply b");
    assert_eq!(r.parked, 0);
    assert!(matches!(
        r.stopped,
        Some(ApplyStop::MissingDeps { seq: Seq(1), .. })
    ));
    assert_eq!(off.held(), VersionVector::new());
}

#[test]
fn a_snapshot_that_covers_parked_entries_drops_them() {
    let all = b_after_c();
    let mut a = parking_log();
    a.apply_remote(&of(&all, "b")).expect("b parks");
    a.finish_snapshot(&vv(&[("b", 1)])).expect("snapshot");
    assert_eq!(a.parked(), 1, "b:1 is covered, b:2 still waits");
    assert_eq!(a.parked_bytes(), of(&all, "b")[1].memory_estimate());
    assert_eq!(a.held(), vv(&[("b", 2)]));
    a.finish_snapshot(&vv(&[("b", 2), ("c", 2)]))
        .expect("snapshot");
    assert_eq!((a.parked(), a.parked_bytes()), (0, 0));
    assert_eq!(a.held(), vv(&[("b", 2), ("c", 2)]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives — runs in HLC order, random picks with repeats and
    /// gaps, in any order — the applied vector stays causally closed, the
    /// items are exactly its entries, `held` covers it; and once the whole
    /// history arrives in HLC order, everything is applied, nothing parked.
    #[test]
    fn parking_applies_exactly_the_applied_vector_and_converges(
        writes in writes(),
        picks in picks(),
        max in 0..20usize,
        max_bytes in prop_oneof![Just(usize::MAX), 0..8_000usize],
        together in any::<bool>(),
    ) {
        let all = history(&writes);
        let batches = batches(&all, &picks, false);
        let mut a = open("a");
        a.park_up_to(ParkLimit { entries: max, bytes: max_bytes });
        if together {
            a.apply_remote_many(batches).expect("apply many");
        } else {
            for b in &batches {
                a.apply_remote(b).expect("apply");
            }
        }
        prop_assert!(a.parked() <= max);
        prop_assert!(a.parked_bytes() <= max_bytes);
        prop_assert!(a.applied().dominated_by(&a.held()));
        assert_items_match_applied(&a, &all);
        a.apply_remote(&all).expect("everything, in order");
        prop_assert_eq!((a.parked(), a.parked_bytes()), (0, 0));
        prop_assert_eq!(a.held(), a.applied().clone());
        let head = all.iter().fold(VersionVector::new(), |mut v, e| {
            v.set(e.origin.clone(), e.seq.max(v.get(&e.origin)));
            v
        });
        prop_assert_eq!(a.applied(), &head);
        assert_items_match_applied(&a, &all);
    }
}
