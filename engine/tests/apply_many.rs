//! `Log::apply_remote_many` is `Log::apply_remote` batch after batch, in
//! one commit: the same reports (applied, duplicates, where each batch
//! stopped), the same applied vector and the same items, whatever the
//! batches hold — duplicates, gaps, entries ahead of their dependencies.

mod common;
mod two_origins;

use common::key;
use proptest::prelude::*;
use two_origins::{
    KEYS, batches, counter_log as open, picks, two_origin_history as history, writes,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn many_batches_in_one_commit_equal_one_after_the_other(
        writes in writes(),
        picks in picks(),
    ) {
        let all = history(&writes);
        let batches = batches(&all, &picks, true);
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
