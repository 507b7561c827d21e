//! Checks of what a commit writes and when readers see it.

use std::sync::atomic::{AtomicBool, Ordering};

use super::StoreHarness;
use super::fixtures::{entry, ingest, key, letter, ok, region, seqs, source, vv};
use crate::change::LogEntry;
use crate::crdt::{AttrState, CausalContext, ItemState, Sibling, SortedMap, SortedSet};
use crate::ids::{AttrName, Dot, Hlc, Seq};
use crate::store::codec::MAX_VALUE_BYTES;
use crate::store::{
    Checkpoint, CommitBatch, DeadLetterId, Durability, EncodedEntry, FreshEntry, LogStore,
    StoreError,
};
use crate::value::AttrValue;

/// Everything a commit writes is readable when it returns: entries, items,
/// the applied vector, checkpoints and the HLC mark.
pub fn commit_is_atomic_and_visible<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    let (a1, a2, b1) = (entry("a", 1), entry("a", 2), entry("b", 1));
    let batch = CommitBatch {
        entries: vec![a1.clone(), a2.clone(), b1.clone()],
        items: vec![
            (a1.key.clone(), a1.delta.clone()),
            (a2.key.clone(), a2.delta.clone()),
            (b1.key.clone(), b1.delta.clone()),
        ],
        applied: vv(&[("a", 2), ("b", 1)]),
        checkpoints: vec![
            (source("kinesis:orders/shard-1"), Checkpoint("495".into())),
            (source("pg:slot"), Checkpoint("0/16B3748".into())),
        ],
        hlc_mark: Hlc::new(5_000, 3),
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "commit");
    assert_eq!(
        ok(store.entries(&region("a"), Seq::ZERO, 10), "entries of a"),
        vec![a1.clone(), a2.clone()],
        "the committed entries of origin a must be readable, equal to what was written"
    );
    assert_eq!(
        ok(store.entries(&region("b"), Seq::ZERO, 10), "entries of b"),
        vec![b1.clone()],
        "the committed entry of origin b must be readable"
    );
    assert_eq!(
        ok(store.item(&a2.key), "item"),
        Some(a2.delta.clone()),
        "a committed item must be readable"
    );
    assert_eq!(
        ok(store.items(&[b1.key.clone(), a1.key.clone()]), "items"),
        vec![Some(b1.delta.clone()), Some(a1.delta.clone())],
        "items() must return the committed states in the order asked"
    );
    assert_eq!(
        ok(store.applied(), "applied"),
        batch.applied,
        "applied vector after commit"
    );
    assert_eq!(
        ok(store.hlc_mark(), "hlc mark"),
        Hlc::new(5_000, 3),
        "HLC mark after commit"
    );
    assert_eq!(
        ok(store.checkpoint(&source("pg:slot")), "checkpoint"),
        Some(Checkpoint("0/16B3748".into())),
        "a committed checkpoint must be readable"
    );
    assert_eq!(
        ok(store.checkpoints(), "checkpoints"),
        batch.checkpoints,
        "checkpoints() must list every committed checkpoint, ordered by source id"
    );
    assert!(
        ok(store.log_start(), "log start").is_empty(),
        "nothing was truncated, so log_start must be empty"
    );
}

/// Side state and dead letters are written by the same atomic commit as
/// the entries and checkpoints: a side value replaces the previous one,
/// dead letters get the next ids, and `item_and_side` reads both from one
/// view.
pub fn side_state_and_dead_letters_commit_with_the_batch<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    ok(store.put_dead_letter(&letter(1)), "first dead letter");
    let mut batch = ingest("a", 1);
    let item = batch.entries[0].key.clone();
    batch.side = vec![(b"img/1".to_vec(), b"first".to_vec())];
    batch.dead_letters = vec![letter(2), letter(3)];
    ok(
        store.commit(&batch),
        "commit with side state and dead letters",
    );
    assert_eq!(
        ok(store.side(b"img/1"), "side"),
        Some(b"first".to_vec()),
        "a committed side value must be readable"
    );
    assert_eq!(
        ok(store.side(b"img/2"), "side"),
        None,
        "no value was written there"
    );
    let letters = ok(store.dead_letters(None, 10), "dead letters");
    let ids: Vec<u64> = letters.iter().map(|(id, _)| id.0).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "dead letters of a commit take the next ids"
    );
    assert_eq!(
        letters[2].1,
        letter(3),
        "a committed dead letter reads back whole"
    );
    let mut next = ingest("a", 2);
    next.side = vec![(b"img/1".to_vec(), b"second".to_vec())];
    ok(store.commit(&next), "second commit");
    let (state, side) = ok(store.item_and_side(&item, b"img/1"), "item and side");
    assert_eq!(
        (state.is_some(), side),
        (true, Some(b"second".to_vec())),
        "item_and_side must see the item and the newest side value"
    );
    ok(
        store.put_dead_letter(&letter(4)),
        "dead letter after the commit",
    );
    let last = ok(
        store.dead_letters(Some(DeadLetterId(3)), 10),
        "dead letters after 3",
    );
    assert_eq!(
        last.iter().map(|(id, _)| id.0).collect::<Vec<_>>(),
        vec![4],
        "ids keep increasing after dead letters written by a commit"
    );
}

/// An empty batch commits fine and changes nothing.
pub fn empty_batch_changes_nothing<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    ok(
        store.commit(&CommitBatch::default()),
        "empty commit on an empty store",
    );
    assert!(
        ok(store.applied(), "applied").is_empty(),
        "applied after an empty commit"
    );
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        Hlc::default(),
        "HLC mark after an empty commit"
    );
    ok(store.commit(&ingest("a", 1)), "commit");
    ok(store.commit(&CommitBatch::default()), "empty commit");
    assert_eq!(
        ok(store.applied(), "applied"),
        vv(&[("a", 1)]),
        "an empty batch must not reset the applied vector"
    );
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        entry("a", 1).hlc,
        "an empty batch must not reset the HLC mark"
    );
    assert_eq!(
        seqs(&ok(store.entries(&region("a"), Seq::ZERO, 10), "entries")),
        vec![1]
    );
}

/// The applied vector is joined (pointwise max) and the HLC mark raised,
/// never lowered, by a commit.
pub fn applied_and_hlc_never_go_backwards<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    let first = CommitBatch {
        applied: vv(&[("a", 5)]),
        hlc_mark: Hlc::new(100, 0),
        ..CommitBatch::default()
    };
    ok(store.commit(&first), "commit");
    let stale = CommitBatch {
        applied: vv(&[("a", 3), ("b", 1)]),
        hlc_mark: Hlc::new(50, 0),
        ..CommitBatch::default()
    };
    ok(store.commit(&stale), "commit");
    assert_eq!(
        ok(store.applied(), "applied"),
        vv(&[("a", 5), ("b", 1)]),
        "applied must be the pointwise max of the stored and the committed vectors"
    );
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        Hlc::new(100, 0),
        "the HLC mark must never go backwards"
    );
    let store = h.reopen(store);
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        Hlc::new(100, 0),
        "HLC mark across reopen"
    );
}

/// A write that fails (here: a value over the size limit) leaves nothing of
/// itself, and the store goes on working.
pub fn failed_writes_leave_nothing_behind<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    ok(store.commit(&ingest("a", 1)), "commit");
    let k = key("t", "huge");
    let dot = Dot::new(region("a"), 1);
    let sibling = Sibling {
        hlc: Hlc::new(9, 0),
        value: Some(AttrValue::S("x".repeat(MAX_VALUE_BYTES))),
    };
    let huge = ItemState::from_parts(
        CausalContext::new(),
        SortedSet::from_iter([dot.clone()]),
        SortedMap::from_iter([(
            AttrName::new("blob").expect("valid attribute name"),
            AttrState::Lww(SortedMap::from_iter([(dot, sibling)])),
        )]),
    );
    let mut batch = ingest("a", 2);
    batch.items.push((k.clone(), huge));
    match store.commit(&batch) {
        Err(StoreError::TooLarge { what, .. }) => assert_eq!(what, "item"),
        other => panic!("committing an oversized item must fail with TooLarge, got {other:?}"),
    }
    assert_eq!(
        seqs(&ok(store.entries(&region("a"), Seq::ZERO, 10), "entries")),
        vec![1],
        "a failed commit must not leave its log entry behind"
    );
    assert_eq!(
        ok(store.item(&batch.entries[0].key), "item"),
        None,
        "nor its items"
    );
    assert_eq!(ok(store.item(&k), "item"), None, "nor the oversized item");
    assert_eq!(
        ok(store.applied(), "applied"),
        vv(&[("a", 1)]),
        "nor its applied vector"
    );
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        entry("a", 1).hlc,
        "nor its HLC mark"
    );
    assert_eq!(
        ok(store.checkpoint(&source("src")), "checkpoint"),
        Some(Checkpoint("pos-1".into())),
        "nor its checkpoint"
    );

    let mut big = letter(1);
    big.reason = "x".repeat(MAX_VALUE_BYTES);
    assert!(
        matches!(
            store.put_dead_letter(&big),
            Err(StoreError::TooLarge { .. })
        ),
        "an oversized dead letter must be refused with TooLarge"
    );
    assert_eq!(
        ok(store.put_dead_letter(&letter(2)), "put dead letter"),
        DeadLetterId(1),
        "a refused dead letter must not consume an id"
    );
    ok(
        store.commit(&ingest("a", 2)),
        "the store must keep working after a refused write",
    );
}

/// Readers on other threads see a batch whole: once the applied vector
/// says `k`, entry `k` and its item are readable.
pub fn concurrent_readers_see_whole_batches<H: StoreHarness>(h: &mut H) {
    const BATCHES: u64 = 200;
    let store = h.open(Durability::Buffered);
    let done = AtomicBool::new(false);
    /// Sets the flag even if the writer panics, so readers stop.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    std::thread::scope(|scope| {
        let store = &store;
        let done = &done;
        scope.spawn(move || {
            let _done = Done(done);
            for seq in 1..=BATCHES {
                ok(store.commit(&ingest("a", seq)), "commit");
            }
        });
        for _ in 0..2 {
            scope.spawn(move || {
                let a = region("a");
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let k = ok(store.applied(), "applied").get(&a).0;
                    if k > 0 {
                        let entries = ok(store.entries(&a, Seq(k - 1), usize::MAX), "entries");
                        assert_eq!(
                            entries.first().map(|e| e.seq),
                            Some(Seq(k)),
                            "applied says {k}, so entry {k} must be readable"
                        );
                        let e = entry("a", k);
                        assert_eq!(
                            ok(store.item(&e.key), "item"),
                            Some(e.delta),
                            "applied says {k}, so item {k} must be readable"
                        );
                    }
                    if finished {
                        break;
                    }
                }
            });
        }
    });
    assert_eq!(
        ok(store.applied(), "applied"),
        vv(&[("a", BATCHES)]),
        "every batch applied"
    );
}

/// Items given as entries' deltas (`items_from_entries`) are written like
/// `items`, and kept across a reopen; an index beyond the entries fails the
/// commit, which then leaves nothing behind.
pub fn items_from_entries_are_written_as_their_deltas<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let (a1, a2, b1) = (entry("a", 1), entry("a", 2), entry("b", 1));
    let bad = CommitBatch {
        entries: vec![a1.clone()],
        items_from_entries: vec![1],
        applied: vv(&[("a", 1)]),
        ..CommitBatch::default()
    };
    assert!(
        store.commit(&bad).is_err(),
        "an item from an entry beyond the batch must fail the commit"
    );
    assert!(
        ok(store.entries(&region("a"), Seq::ZERO, 10), "entries").is_empty()
            && ok(store.applied(), "applied").is_empty(),
        "a failed commit must leave nothing behind"
    );
    let batch = CommitBatch {
        entries: vec![a1.clone(), a2.clone(), b1.clone()],
        items: vec![(a1.key.clone(), a1.delta.clone())],
        items_from_entries: vec![1, 2],
        applied: vv(&[("a", 2), ("b", 1)]),
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "commit");
    let keys = [a1.key.clone(), a2.key.clone(), b1.key.clone()];
    let expected = vec![
        Some(a1.delta.clone()),
        Some(a2.delta.clone()),
        Some(b1.delta.clone()),
    ];
    assert_eq!(
        ok(store.items(&keys), "items"),
        expected,
        "items from entries must read back as the entries' deltas"
    );
    let store = h.reopen(store);
    assert_eq!(
        ok(store.items(&keys), "items after reopen"),
        expected,
        "items from entries must survive a reopen"
    );
    assert_eq!(
        ok(store.entries(&region("a"), Seq::ZERO, 10), "entries"),
        vec![a1, a2],
        "the entries are written as usual"
    );
}

/// Fresh entries (an insert's entry with its delta already encoded) are
/// written as entries holding their items: they read back as log entries,
/// raw and encoded, their items as their deltas, across a reopen and after
/// a truncation removes them.
pub fn fresh_entries_are_entries_holding_their_items<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let (a1, a2, a3, b1) = (entry("a", 1), entry("a", 2), entry("a", 3), entry("b", 1));
    let fresh = |e: &LogEntry| ok(FreshEntry::encode(e), "encode a fresh entry");
    let batch = CommitBatch {
        entries: vec![a3.clone()],
        items: vec![(a3.key.clone(), a3.delta.clone())],
        fresh_entries: vec![fresh(&a2), fresh(&b1), fresh(&a1)],
        applied: vv(&[("a", 3), ("b", 1)]),
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "commit");
    let keys = [
        a1.key.clone(),
        a2.key.clone(),
        a3.key.clone(),
        b1.key.clone(),
    ];
    let expected: Vec<Option<ItemState>> = [&a1, &a2, &a3, &b1]
        .iter()
        .map(|e| Some(e.delta.clone()))
        .collect();
    let check = |store: &H::Store, when: &str| {
        assert_eq!(
            ok(store.items(&keys), "items"),
            expected,
            "{when}: the items of fresh entries read as their deltas"
        );
    };
    check(&store, "after the commit");
    assert_eq!(
        ok(store.entries(&region("a"), Seq::ZERO, 10), "entries"),
        vec![a1.clone(), a2.clone(), a3.clone()],
        "fresh entries are log entries"
    );
    let encoded: Vec<EncodedEntry> = [&a1, &a2, &a3]
        .iter()
        .map(|e| ok(EncodedEntry::encode(e), "encode"))
        .collect();
    assert_eq!(
        ok(
            store.encoded_entries(&region("a"), Seq::ZERO, 10),
            "encoded entries"
        ),
        encoded,
        "fresh entries ship as any entry"
    );
    let store = h.reopen(store);
    check(&store, "after a reopen");
    ok(store.truncate(&vv(&[("a", 2), ("b", 1)])), "truncate");
    check(&store, "after their entries are truncated");
    assert_eq!(
        ok(store.entries(&region("a"), Seq::ZERO, 10), "entries"),
        vec![a3],
        "the truncation removes its prefix"
    );
}
