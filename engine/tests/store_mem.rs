//! The in-memory store passes the store conformance suite, with
//! [`MemStore::crash`] as the power cut.

use tributary_engine::store::conformance::StoreHarness;
use tributary_engine::store::{Durability, LogStore, MemStore};

/// Opens fresh [`MemStore`]s; a reopen is a sync (clean shutdown), a crash
/// drops every unsynced write.
struct MemHarness;

impl StoreHarness for MemHarness {
    type Store = MemStore;

    fn open(&mut self, durability: Durability) -> MemStore {
        MemStore::new(durability)
    }

    fn reopen(&mut self, store: MemStore) -> MemStore {
        store.sync().expect("a clean shutdown syncs");
        store
    }

    fn crash(&mut self, store: MemStore) -> MemStore {
        store.crash();
        store
    }
}

tributary_engine::store_conformance_tests!(MemHarness);

#[test]
fn run_all_runs_every_check() {
    tributary_engine::store::conformance::run_all(&mut MemHarness);
}
