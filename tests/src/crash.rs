//! The workload shared by the crash test and its child process.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use tributary_engine::change::{Change, Op};
use tributary_engine::clock::SystemClock;
use tributary_engine::ids::{AttrName, RegionId, TableName};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, RocksOptions, RocksStore};
use tributary_engine::value::{AttrValue, Number, Scalar};

/// Keys the workload spreads its changes over.
pub const KEYS: u64 = 16;

/// The region the child writes as.
pub fn region() -> RegionId {
    RegionId::new("crash-1").expect("valid region id")
}

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute name")
}

/// The workload's table.
pub fn schema() -> TableSchema {
    TableSchema::new(
        TableName::new("crash").expect("valid table"),
        attr("pk"),
        None,
    )
    .and_then(|s| s.with_policy(attr("n"), MergePolicy::Counter))
    .and_then(|s| s.with_policy(attr("ids"), MergePolicy::Set))
    .expect("valid schema")
}

/// The key change `seq` touches.
pub fn key_for(seq: u64) -> ItemKey {
    ItemKey::new(
        TableName::new("crash").expect("valid table"),
        Scalar::S(format!("k{}", seq % KEYS)),
        None,
    )
    .expect("valid key")
}

/// How many changes the batch starting at `first` holds (1–50, fixed by
/// `first` so that the parent can recompute batch boundaries).
pub fn batch_len(first: u64) -> u64 {
    1 + (first.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) % 50
}

/// Change `seq` of a batch ending at `last`.
pub fn change_for(seq: u64, last: u64) -> Result<Change> {
    Ok(Change {
        key: key_for(seq),
        ops: vec![
            Op::Add {
                attr: attr("n"),
                amount: 1,
            },
            Op::AddToSet {
                attr: attr("ids"),
                elements: vec![Scalar::S(format!("e{seq}"))],
            },
            Op::Set {
                attr: attr("batch_end"),
                value: AttrValue::N(Number::from_i128(i128::from(last))),
            },
        ],
        source_millis: None,
    })
}

/// Opens the workload's log on RocksDB under `dir` with `sync` durability.
pub fn open_log(dir: &Path) -> Result<Log<RocksStore, SystemClock>> {
    let store = RocksStore::open(RocksOptions::new(dir, Durability::Sync))?;
    let config = LogConfig {
        region: region(),
        schemas: [schema()].into_iter().collect::<Schemas>(),
        max_clock_skew: Duration::from_secs(30),
        item_cache_bytes: LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    };
    Ok(Log::open(store, config, SystemClock)?)
}
