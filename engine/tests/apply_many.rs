//! `Log::apply_remote_many` is `Log::apply_remote` batch after batch, in
//! one commit: the same reports (applied, duplicates, where each batch
//! stopped), the same applied vector and the same items, whatever the
//! batches hold — duplicates, gaps, entries ahead of their dependencies.

mod common;

use common::{MemLog, key};
use proptest::prelude::*;
use tributary_engine::change::{Change, LogEntry};
use tributary_engine::ids::Seq;
use tributary_engine::log::LogConfig;
use tributary_engine::schema::MergePolicy;

const KEYS: usize = 3;

fn open(region: &str) -> MemLog {
    common::open(
        region,
        &[("qty", MergePolicy::Counter)],
        LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    )
}

fn change(k: usize, op: u8) -> Change {
    common::change(k, op, 3)
}

/// Every entry of two origins whose writes depend on each other's: `b`
/// applies what `c` wrote so far before each of its own batches.
fn history(writes: &[(bool, usize, u8)]) -> Vec<LogEntry> {
    let (mut b, mut c) = (open("b"), open("c"));
    for &(at_b, k, op) in writes {
        if at_b {
            let from = b.applied().get(c.region());
            let news = c.entries(c.region(), from, usize::MAX).expect("read");
            b.apply_remote(&news).expect("b applies c");
            b.ingest(&[change(k, op)], Vec::new()).expect("ingest at b");
        } else {
            c.ingest(&[change(k, op)], Vec::new()).expect("ingest at c");
        }
    }
    let mut all = b.entries(b.region(), Seq::ZERO, usize::MAX).expect("b");
    all.extend(c.entries(c.region(), Seq::ZERO, usize::MAX).expect("c"));
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn many_batches_in_one_commit_equal_one_after_the_other(
        writes in prop::collection::vec((any::<bool>(), 0..KEYS, any::<u8>()), 1..24),
        picks in prop::collection::vec(
            (any::<bool>(), any::<prop::sample::Index>(), 0..12usize,
             prop::collection::vec(any::<prop::sample::Index>(), 0..8)),
            1..6,
        ),
    ) {
        let mut all = history(&writes);
        all.sort_by_key(|e| e.hlc);
        // Each batch is either a run of the history in HLC order (as a
        // sender ships it, possibly resent) or entries picked at random
        // (repeats, gaps), sorted by HLC.
        let batches: Vec<Vec<LogEntry>> = picks
            .iter()
            .map(|(run, start, len, random)| {
                if *run {
                    all.iter().skip(start.index(all.len())).take(*len).cloned().collect()
                } else {
                    let mut b: Vec<LogEntry> =
                        random.iter().map(|i| all[i.index(all.len())].clone()).collect();
                    b.sort_by_key(|e| e.hlc);
                    b
                }
            })
            .collect();
        let mut one_by_one = open("a");
        let expected: Vec<_> = batches
            .iter()
            .map(|b| {
                let r = one_by_one.apply_remote(b).expect("apply");
                (r.applied, r.duplicates, r.stopped)
            })
            .collect();
        let mut together = open("a");
        let got: Vec<_> = together
            .apply_remote_many(batches)
            .expect("apply many")
            .into_iter()
            .map(|r| (r.applied, r.duplicates, r.stopped))
            .collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(together.applied(), one_by_one.applied());
        for k in 0..KEYS {
            prop_assert_eq!(
                together.item(&key(k)).expect("read"),
                one_by_one.item(&key(k)).expect("read"),
                "item k{}", k
            );
        }
    }
}
