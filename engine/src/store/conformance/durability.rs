//! Checks of what survives a reopen and a crash.

use super::StoreHarness;
use super::fixtures::{entry, ingest, letter, ok, region, seqs, source, vv};
use crate::ids::Seq;
use crate::store::{Checkpoint, Durability, LogStore};

/// Dead-letter ids keep increasing across a reopen, even after the newest
/// letter was removed.
pub fn dead_letter_ids_increase_across_reopen<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let first = ok(store.put_dead_letter(&letter(1)), "put");
    let newest = ok(store.put_dead_letter(&letter(2)), "put");
    assert!(ok(store.remove_dead_letter(newest), "remove"));
    let store = h.reopen(store);
    let next = ok(store.put_dead_letter(&letter(3)), "put after reopen");
    assert!(
        next > newest && newest > first,
        "an id must never be reused, even after removal and reopen: {first:?}, {newest:?}, {next:?}"
    );
    let store = h.crash(store);
    let after_crash = ok(store.put_dead_letter(&letter(4)), "put after crash");
    assert!(
        after_crash > next,
        "ids increase across a crash under Sync: {next:?}, {after_crash:?}"
    );
}

/// Under [`Durability::Sync`] every write that returned survives a reopen
/// and a crash.
pub fn sync_writes_survive_reopen_and_crash<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    for seq in 1..=5 {
        ok(store.commit(&ingest("a", seq)), "commit");
    }
    ok(store.truncate(&vv(&[("a", 2)])), "truncate");
    ok(store.set_acked(&region("p"), &vv(&[("a", 4)])), "set acked");
    let dl = ok(store.put_dead_letter(&letter(1)), "put dead letter");
    let check = |store: &H::Store, when: &str| {
        assert_eq!(
            ok(store.applied(), "applied"),
            vv(&[("a", 5)]),
            "applied after {when}"
        );
        assert_eq!(
            seqs(&ok(store.entries(&region("a"), Seq::ZERO, 10), "entries")),
            vec![3, 4, 5],
            "entries after {when}"
        );
        for seq in 1..=5 {
            let e = entry("a", seq);
            assert_eq!(
                ok(store.item(&e.key), "item"),
                Some(e.delta),
                "item {seq} after {when}"
            );
        }
        assert_eq!(
            ok(store.log_start(), "log start"),
            vv(&[("a", 2)]),
            "log_start after {when}"
        );
        assert_eq!(
            ok(store.hlc_mark(), "hlc"),
            entry("a", 5).hlc,
            "HLC mark after {when}"
        );
        assert_eq!(
            ok(store.checkpoint(&source("src")), "checkpoint"),
            Some(Checkpoint("pos-5".into())),
            "checkpoint after {when}"
        );
        assert_eq!(
            ok(store.acked(&region("p")), "acked"),
            vv(&[("a", 4)]),
            "acked after {when}"
        );
        assert_eq!(
            ok(store.dead_letters(None, 10), "dead letters"),
            vec![(dl, letter(1))],
            "dead letters after {when}"
        );
    };
    let store = h.crash(store);
    check(&store, "a crash");
    let store = h.reopen(store);
    check(&store, "a reopen");
}

/// Under [`Durability::Buffered`], what was synced survives a crash, and of
/// the unsynced batches a crash keeps a prefix of whole batches (never part
/// of one); the store then accepts writes again.
pub fn buffered_writes_survive_crash_once_synced<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    for seq in 1..=3 {
        ok(store.commit(&ingest("a", seq)), "commit");
    }
    ok(store.set_acked(&region("p"), &vv(&[("a", 2)])), "set acked");
    let dl = ok(store.put_dead_letter(&letter(1)), "put dead letter");
    ok(store.sync(), "sync");
    for seq in 4..=6 {
        ok(store.commit(&ingest("a", seq)), "commit (not synced)");
    }
    let store = h.crash(store);

    let n = ok(store.applied(), "applied").get(&region("a")).0;
    assert!(
        (3..=6).contains(&n),
        "after a crash applied must be at least the synced 3 and at most 6, got {n}"
    );
    assert_eq!(
        seqs(&ok(store.entries(&region("a"), Seq::ZERO, 10), "entries")),
        (1..=n).collect::<Vec<_>>(),
        "the log after a crash must hold exactly the batches up to applied ({n})"
    );
    for seq in 1..=6 {
        let e = entry("a", seq);
        let expected = (seq <= n).then_some(e.delta);
        assert_eq!(
            ok(store.item(&e.key), "item"),
            expected,
            "item {seq} must be present iff its batch survived (applied {n})"
        );
    }
    assert_eq!(
        ok(store.hlc_mark(), "hlc"),
        entry("a", n).hlc,
        "the HLC mark of batch {n}"
    );
    assert_eq!(
        ok(store.checkpoint(&source("src")), "checkpoint"),
        Some(Checkpoint(format!("pos-{n}"))),
        "the checkpoint of batch {n}"
    );
    assert_eq!(
        ok(store.acked(&region("p")), "acked"),
        vv(&[("a", 2)]),
        "synced ack"
    );
    assert_eq!(
        ok(store.dead_letters(None, 10), "dead letters"),
        vec![(dl, letter(1))],
        "synced dead letter"
    );
    ok(store.commit(&ingest("a", n + 1)), "commit after a crash");
    ok(store.sync(), "sync after a crash");
    let store = h.crash(store);
    assert_eq!(
        ok(store.applied(), "applied").get(&region("a")),
        Seq(n + 1),
        "a synced commit after a crash survives the next crash"
    );
}
