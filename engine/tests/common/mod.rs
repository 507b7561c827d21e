//! Fixtures the engine's log property tests share: a `carts` table keyed by
//! `pk`, items `k0`, `k1`, … and an in-memory log on a manual clock.

use std::time::Duration;

use tributary_engine::change::{Change, Op};
use tributary_engine::clock::ManualClock;
use tributary_engine::ids::{AttrName, RegionId, TableName};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, MemStore};
use tributary_engine::value::{AttrValue, Scalar};

/// The manual clock's start, in Unix ms.
pub const NOW: u64 = 1_700_000_000_000;

/// A log over an in-memory store.
pub type MemLog = Log<MemStore, ManualClock>;

/// An attribute name.
pub fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("attr")
}

/// Item `k{i}` of `carts`.
pub fn key(i: usize) -> ItemKey {
    ItemKey::new(
        TableName::new("carts").expect("table"),
        Scalar::S(format!("k{i}")),
        None,
    )
    .expect("key")
}

/// A log of `region` with the `carts` table (attributes named in
/// `policies` merge so, the others last-writer-wins) and an item cache of
/// `cache` bytes.
pub fn open(region: &str, policies: &[(&str, MergePolicy)], cache: usize) -> MemLog {
    open_on(region, policies, cache, MemStore::new(Durability::Sync))
}

/// [`open`] over `store` (e.g. a restart after [`MemStore::crash`]).
pub fn open_on(
    region: &str,
    policies: &[(&str, MergePolicy)],
    cache: usize,
    store: MemStore,
) -> MemLog {
    let table = policies.iter().fold(
        TableSchema::new(TableName::new("carts").expect("table"), attr("pk"), None),
        |schema, (name, policy)| schema.and_then(|s| s.with_policy(attr(name), *policy)),
    );
    let config = LogConfig {
        region: RegionId::new(region).expect("region"),
        schemas: [table.expect("schema")].into_iter().collect::<Schemas>(),
        max_clock_skew: Duration::from_secs(10),
        item_cache_bytes: cache,
    };
    Log::open(store, config, ManualClock::new(NOW)).expect("open")
}

/// A change of item `k{k}`: operation `op % kinds` of, in order, set
/// `name`, add to the counter `qty`, add to and remove from the set `tags`,
/// remove `name`, delete the item (with fewer kinds, the last is the
/// delete).
pub fn change(k: usize, op: u8, kinds: u8) -> Change {
    let tag = || vec![Scalar::S(format!("t{}", op % 3))];
    let op = match op % kinds {
        0 => Op::Set {
            attr: attr("name"),
            value: AttrValue::S(format!("n{op}")),
        },
        1 => Op::Add {
            attr: attr("qty"),
            amount: i128::from(op),
        },
        2 if kinds > 3 => Op::AddToSet {
            attr: attr("tags"),
            elements: tag(),
        },
        3 if kinds > 4 => Op::RemoveFromSet {
            attr: attr("tags"),
            elements: tag(),
        },
        4 if kinds > 5 => Op::Remove { attr: attr("name") },
        _ => Op::Delete,
    };
    Change {
        key: key(k),
        ops: vec![op],
        source_millis: None,
    }
}
