//! The log's in-memory cache of merged item states.
//!
//! Every local change and every remote entry merges into its item's current
//! state, which the log would otherwise read from the store and decode on
//! each commit: with a hot working set that read is most of a commit's cost
//! (a memtable search through every version of the item, then a decode).
//! The cache keeps the decoded states of recently merged items, weighed by
//! [`ItemState::memory_estimate`] against a byte budget (S3-FIFO eviction,
//! from `quick_cache`).
//!
//! Coherence: the [`Log`](super::Log) is the single writer of the store's
//! item states, and it updates the cache only after a commit succeeded (a
//! truncation rewrites items that point at their log entries, but only
//! how their states are stored, never the states). A state is
//! *taken* out while a batch merges into it and put back after the commit;
//! a failed read or commit forgets what was taken, so the next batch reads
//! the store again. An item first written (its state is its first delta) is
//! not admitted: write-once workloads would only churn the cache. It is
//! admitted the next time it is merged.

use quick_cache::Weighter;
use quick_cache::unsync::Cache;

use crate::crdt::ItemState;
use crate::key::ItemKey;

/// A cached state and the weight it was admitted at (the weighter must
/// return the same weight for an entry for as long as it is cached).
#[derive(Default)]
struct Cached {
    state: ItemState,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl Weighter<ItemKey, Cached> for ByWeight {
    fn weight(&self, _key: &ItemKey, value: &Cached) -> u64 {
        value.weight
    }
}

/// Lookups since the log opened: what the cache saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemCacheStats {
    /// States found in the cache.
    pub hits: u64,
    /// States read from the store.
    pub misses: u64,
    /// States cached now.
    pub items: usize,
    /// Their estimated size, in bytes.
    pub bytes: u64,
    /// The budget, in bytes (0: the cache is off).
    pub capacity: u64,
}

/// Decoded item states by key, within a byte budget.
pub(crate) struct ItemCache {
    cache: Option<Cache<ItemKey, Cached, ByWeight>>,
    hits: u64,
    misses: u64,
}

/// A typical state's estimate, for sizing the cache's table up front.
const TYPICAL_ITEM_BYTES: usize = 1024;

impl ItemCache {
    /// A cache of at most `capacity` bytes; 0 turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
        let cache = (capacity > 0).then(|| {
            Cache::with_weighter(
                (capacity / TYPICAL_ITEM_BYTES).max(16),
                capacity as u64,
                ByWeight,
            )
        });
        Self {
            cache,
            hits: 0,
            misses: 0,
        }
    }

    /// Takes `key`'s state out for a merge: `None` if it is not cached (read
    /// the store). Until [`ItemCache::put`] or [`ItemCache::forget`], the
    /// entry holds an empty placeholder of weight 0.
    pub(crate) fn take(&mut self, key: &ItemKey) -> Option<ItemState> {
        let found = self.cache.as_mut().and_then(|c| {
            c.get_mut(key)
                .map(|mut entry| std::mem::take(&mut *entry).state)
        });
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Caches `state` as `key`'s committed state. Bottom states are not
    /// kept (the store has nothing for them either).
    pub(crate) fn put(&mut self, key: ItemKey, state: ItemState) {
        let Some(cache) = self.cache.as_mut() else {
            return;
        };
        if state.is_bottom() {
            cache.remove(&key);
            return;
        }
        let weight = (key.memory_estimate() + state.memory_estimate()) as u64;
        cache.insert(key, Cached { state, weight });
    }

    /// Drops `key` (its state was taken and may no longer match the store).
    pub(crate) fn forget(&mut self, key: &ItemKey) {
        if let Some(cache) = self.cache.as_mut() {
            cache.remove(key);
        }
    }

    /// Counters and size.
    pub(crate) fn stats(&self) -> ItemCacheStats {
        ItemCacheStats {
            hits: self.hits,
            misses: self.misses,
            items: self.cache.as_ref().map_or(0, Cache::len),
            bytes: self.cache.as_ref().map_or(0, Cache::weight),
            capacity: self.cache.as_ref().map_or(0, Cache::capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Op;
    use crate::ids::{Hlc, RegionId};
    use crate::schema::TableSchema;
    use crate::value::{AttrValue, Scalar};

    fn key(i: u32) -> ItemKey {
        ItemKey::new(
            "t".parse().expect("table"),
            Scalar::S(format!("k{i}")),
            None,
        )
        .expect("key")
    }

    fn state(bytes: usize) -> ItemState {
        let schema = TableSchema::new(
            "t".parse().expect("table"),
            "pk".parse().expect("attr"),
            None,
        )
        .expect("schema");
        let region = RegionId::new("us-east-1").expect("region");
        let ops = [Op::Set {
            attr: "a".parse().expect("attr"),
            value: AttrValue::S("x".repeat(bytes)),
        }];
        ItemState::new()
            .prepare_delta(&schema, &region, Hlc::new(1, 0), &ops)
            .expect("delta")
            .0
    }

    #[test]
    fn a_taken_state_comes_back_after_put_and_is_gone_after_forget() {
        let mut cache = ItemCache::new(1 << 20);
        assert_eq!(cache.take(&key(1)), None);
        cache.put(key(1), state(10));
        assert_eq!(cache.take(&key(1)), Some(state(10)));
        // Taken: a placeholder until put back.
        assert_eq!(cache.take(&key(1)), Some(ItemState::new()));
        cache.forget(&key(1));
        assert_eq!(cache.take(&key(1)), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 2));
    }

    #[test]
    fn the_budget_bounds_the_bytes_held() {
        let mut cache = ItemCache::new(64 * 1024);
        for i in 0..1_000 {
            cache.put(key(i), state(1_000));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.items > 10 && stats.items < 64, "{stats:?}");
    }

    #[test]
    fn off_caches_nothing_and_bottom_states_are_not_kept() {
        let mut off = ItemCache::new(0);
        off.put(key(1), state(10));
        assert_eq!(off.take(&key(1)), None);
        let mut on = ItemCache::new(1 << 20);
        on.put(key(1), state(10));
        on.put(key(1), ItemState::new());
        assert_eq!(on.take(&key(1)), None);
    }
}
