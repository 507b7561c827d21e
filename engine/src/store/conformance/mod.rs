//! The conformance suite every [`LogStore`] must pass.
//!
//! A store's test file implements [`StoreHarness`] (how to open, reopen and
//! crash that store) and defines one `#[test]` per check with
//! [`crate::store_conformance_tests!`], so that a check added here runs for
//! every store:
//!
//! ```ignore
//! tributary_engine::store_conformance_tests!(MemHarness);
//! // expands to, for every check:
//! #[test]
//! fn commit_is_atomic_and_visible() {
//!     conformance::commit_is_atomic_and_visible(&mut MemHarness)
//! }
//! ```
//!
//! [`run_all`] runs them all in one go. Each check starts from a store of its
//! own ([`StoreHarness::open`]), so checks are independent, and panics with
//! a message saying what was expected. The checks are the contract in the
//! [`super`] module docs, made executable; a new store passes them all
//! before it is used.
//!
//! Checks are grouped by what they exercise: `writes` (commit semantics),
//! `reads` (log, items, truncation), `offsets` (acked vectors, checkpoints,
//! dead letters) and `durability` (reopen and crash); `fixtures` builds
//! real values (item states via [`crate::crdt::ItemState::prepare`]).
//!
//! This module is test support compiled into the library (so that the
//! stores' tests in other crates can use it); it panics by design.

mod durability;
mod fixtures;
mod offsets;
mod reads;
mod writes;

pub use durability::{
    buffered_writes_survive_crash_once_synced, dead_letter_ids_increase_across_reopen,
    sync_writes_survive_reopen_and_crash,
};
pub use offsets::{
    acked_vectors_are_kept_per_peer, checkpoints_are_overwritten, dead_letters_page_and_remove,
};
pub use reads::{
    entries_are_ordered_per_origin, items_read_and_scan_in_key_order,
    truncate_removes_a_prefix_up_to_applied, truncation_keeps_items_from_entries,
};
pub use writes::{
    applied_and_hlc_never_go_backwards, commit_is_atomic_and_visible,
    concurrent_readers_see_whole_batches, empty_batch_changes_nothing,
    failed_writes_leave_nothing_behind, fresh_entries_are_entries_holding_their_items,
    items_from_entries_are_written_as_their_deltas,
    side_state_and_dead_letters_commit_with_the_batch,
};

use super::{Durability, LogStore};

/// How the suite opens, reopens and crashes one kind of store.
pub trait StoreHarness {
    /// The store under test.
    type Store: LogStore;

    /// A new, empty store with the given durability policy. Every call
    /// returns a store of its own (e.g. in a new temporary directory).
    fn open(&mut self, durability: Durability) -> Self::Store;

    /// A clean shutdown (the store is synced, then closed) followed by
    /// opening the same data with the same policy.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;

    /// A power cut followed by opening the same data: whatever the store
    /// had not made durable may be lost (for [`super::MemStore`],
    /// [`super::MemStore::crash`]; an in-process RocksDB can only be
    /// dropped without syncing, which loses less than a power cut — the
    /// checks accept both).
    fn crash(&mut self, store: Self::Store) -> Self::Store;
}

/// Defines one `#[test]` per conformance check, each with a harness made
/// by `$harness` (an expression evaluated once per test). Use it in a
/// store's test file so that a check added here runs for every store:
///
/// ```ignore
/// tributary_engine::store_conformance_tests!(MemHarness);
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@each $harness;
            commit_is_atomic_and_visible,
            side_state_and_dead_letters_commit_with_the_batch,
            empty_batch_changes_nothing,
            applied_and_hlc_never_go_backwards,
            failed_writes_leave_nothing_behind,
            entries_are_ordered_per_origin,
            items_read_and_scan_in_key_order,
            truncate_removes_a_prefix_up_to_applied,
            acked_vectors_are_kept_per_peer,
            checkpoints_are_overwritten,
            dead_letters_page_and_remove,
            dead_letter_ids_increase_across_reopen,
            sync_writes_survive_reopen_and_crash,
            buffered_writes_survive_crash_once_synced,
            concurrent_readers_see_whole_batches,
            items_from_entries_are_written_as_their_deltas,
            truncation_keeps_items_from_entries,
            fresh_entries_are_entries_holding_their_items,
        );
    };
    (@each $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::store::conformance::$check(&mut $harness)
            }
        )*
    };
}

/// Runs every check, one after the other, on `h`.
pub fn run_all<H: StoreHarness>(h: &mut H) {
    commit_is_atomic_and_visible(h);
    side_state_and_dead_letters_commit_with_the_batch(h);
    empty_batch_changes_nothing(h);
    applied_and_hlc_never_go_backwards(h);
    failed_writes_leave_nothing_behind(h);
    entries_are_ordered_per_origin(h);
    items_read_and_scan_in_key_order(h);
    truncate_removes_a_prefix_up_to_applied(h);
    acked_vectors_are_kept_per_peer(h);
    checkpoints_are_overwritten(h);
    dead_letters_page_and_remove(h);
    dead_letter_ids_increase_across_reopen(h);
    sync_writes_survive_reopen_and_crash(h);
    buffered_writes_survive_crash_once_synced(h);
    concurrent_readers_see_whole_batches(h);
    items_from_entries_are_written_as_their_deltas(h);
    truncation_keeps_items_from_entries(h);
    fresh_entries_are_entries_holding_their_items(h);
}
