//! Fixtures the engine's log property tests share: a `carts` table keyed by
//! `pk`, items `k0`, `k1`, … and an in-memory log on a manual clock.

use std::time::Duration;

use tributary_engine::clock::ManualClock;
use tributary_engine::ids::{AttrName, RegionId, TableName};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, MemStore};
use tributary_engine::value::Scalar;

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
    Log::open(
        MemStore::new(Durability::Sync),
        config,
        ManualClock::new(NOW),
    )
    .expect("open")
}
