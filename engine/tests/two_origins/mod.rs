//! Two origins whose writes depend on each other's, for the tests of
//! receiving entries (`apply_many`, `parking`); built on `common`.

use proptest::prelude::*;
use proptest::sample::Index;
use tributary_engine::change::LogEntry;
use tributary_engine::ids::Seq;
use tributary_engine::log::LogConfig;
use tributary_engine::schema::MergePolicy;

use crate::common::{MemLog, change, open};

/// A log of `region` whose `qty` is a counter, with the default item cache.
pub fn counter_log(region: &str) -> MemLog {
    open(
        region,
        &[("qty", MergePolicy::Counter)],
        LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    )
}

/// Every entry of two origins whose writes depend on each other's, in HLC
/// order: per `(at_b, k, op)`, either `c` writes, or `b` applies what `c`
/// wrote so far and then writes (so `b`'s entries depend on `c`'s). Each
/// write is `change(k, op, 3)` on `counter_log`s.
pub fn two_origin_history(writes: &[(bool, usize, u8)]) -> Vec<LogEntry> {
    let (mut b, mut c) = (counter_log("b"), counter_log("c"));
    for &(at_b, k, op) in writes {
        if at_b {
            let from = b.applied().get(c.region());
            let news = c.entries(c.region(), from, usize::MAX).expect("read");
            b.apply_remote(&news).expect("b applies c");
            b.ingest(&[change(k, op, 3)], Vec::new())
                .expect("ingest at b");
        } else {
            c.ingest(&[change(k, op, 3)], Vec::new())
                .expect("ingest at c");
        }
    }
    let mut all = b.entries(b.region(), Seq::ZERO, usize::MAX).expect("b");
    all.extend(c.entries(c.region(), Seq::ZERO, usize::MAX).expect("c"));
    all.sort_by_key(|e| e.hlc);
    all
}

/// Items the histories write: `k0` .. `k{KEYS - 1}`.
pub const KEYS: usize = 3;

/// Writes for [`two_origin_history`].
pub fn writes() -> impl Strategy<Value = Vec<(bool, usize, u8)>> {
    prop::collection::vec((any::<bool>(), 0..KEYS, any::<u8>()), 1..24)
}

/// One batch to deliver: `(run, start, len, random)`.
pub type Pick = (bool, Index, usize, Vec<Index>);

/// Batches to deliver, for [`batches`].
pub fn picks() -> impl Strategy<Value = Vec<Pick>> {
    prop::collection::vec(
        (
            any::<bool>(),
            any::<Index>(),
            0..12usize,
            prop::collection::vec(any::<Index>(), 0..8),
        ),
        1..6,
    )
}

/// The batches `picks` make of `all`: each either a run of the history in
/// HLC order (as a sender ships it, possibly resent) or entries picked at
/// random (repeats, gaps), in HLC order if `sorted`, else as picked.
pub fn batches(all: &[LogEntry], picks: &[Pick], sorted: bool) -> Vec<Vec<LogEntry>> {
    picks
        .iter()
        .map(|(run, start, len, random)| {
            if *run {
                all.iter()
                    .skip(start.index(all.len()))
                    .take(*len)
                    .cloned()
                    .collect()
            } else {
                let mut b: Vec<LogEntry> = random
                    .iter()
                    .map(|i| all[i.index(all.len())].clone())
                    .collect();
                if sorted {
                    b.sort_by_key(|e| e.hlc);
                }
                b
            }
        })
        .collect()
}
