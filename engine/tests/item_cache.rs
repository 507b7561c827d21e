//! The log's item cache changes nothing but speed: a log with it (budgets
//! small enough to evict) and one without, fed the same local changes,
//! remote entries and failed commits, hold the same items after every step.

mod common;

use common::{MemLog, key};
use proptest::prelude::*;
use tributary_engine::change::Change;
use tributary_engine::schema::MergePolicy;

const KEYS: usize = 4;

fn open(region: &str, cache: usize) -> MemLog {
    common::open(
        region,
        &[("qty", MergePolicy::Counter), ("tags", MergePolicy::Set)],
        cache,
    )
}

/// One step of the workload.
#[derive(Debug, Clone)]
enum Step {
    /// Local changes on both logs under test.
    Local(Vec<(usize, u8)>),
    /// Changes at the remote region.
    Remote(Vec<(usize, u8)>),
    /// Both logs under test apply what the remote region has.
    Deliver,
    /// The next commit of both logs under test fails; then the store
    /// recovers (as after a restart of the store, the log kept).
    FailNext,
}

fn change(k: usize, op: u8) -> Change {
    common::change(k, op, 6)
}

fn changes(spec: &[(usize, u8)]) -> Vec<Change> {
    spec.iter().map(|&(k, op)| change(k, op)).collect()
}

fn step() -> impl Strategy<Value = Step> {
    let batch = || prop::collection::vec((0..KEYS, any::<u8>()), 1..6);
    prop_oneof![
        4 => batch().prop_map(Step::Local),
        3 => batch().prop_map(Step::Remote),
        2 => Just(Step::Deliver),
        1 => Just(Step::FailNext),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_cached_log_holds_the_same_items_as_an_uncached_one(
        budget in prop_oneof![Just(400usize), Just(2_000), Just(1 << 20)],
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut remote = open("eu-west-1", 0);
        let mut cached = open("us-east-1", budget);
        let mut plain = open("us-east-1", 0);
        for (i, step) in steps.iter().enumerate() {
            let mut results = Vec::new();
            for log in [&mut cached, &mut plain] {
                match step {
                    Step::Local(spec) => {
                        results.push(log.ingest(&changes(spec), Vec::new()).map(|r| r.outcomes.len()));
                    }
                    Step::Deliver => {
                        let from = log.applied().get(remote.region());
                        let entries = remote.entries(remote.region(), from, usize::MAX).expect("read");
                        results.push(log.apply_remote(&entries).map(|r| r.applied));
                    }
                    Step::FailNext => log.store().fail_next_write(),
                    Step::Remote(_) => {}
                }
            }
            if let Step::Remote(spec) = step {
                remote.ingest(&changes(spec), Vec::new()).expect("remote ingest");
            }
            prop_assert_eq!(results.first().map(Result::is_ok), results.last().map(Result::is_ok));
            if results.iter().any(Result::is_err) {
                cached.store().crash();
                plain.store().crash();
            }
            prop_assert_eq!(cached.applied(), plain.applied(), "step {}: {:?}", i, step);
            for k in 0..KEYS {
                prop_assert_eq!(
                    cached.item(&key(k)).expect("read"),
                    plain.item(&key(k)).expect("read"),
                    "step {}: {:?}, item k{}", i, step, k
                );
            }
        }
        let stats = cached.item_cache_stats();
        prop_assert!(stats.bytes <= stats.capacity, "{:?}", stats);
        prop_assert_eq!(plain.item_cache_stats().hits, 0);
    }
}
