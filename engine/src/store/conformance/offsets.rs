//! Checks of acknowledged vectors, checkpoints and dead letters.

use std::collections::BTreeMap;

use super::StoreHarness;
use super::fixtures::{letter, ok, region, source, vv};
use crate::ids::SourceId;
use crate::store::{Checkpoint, CommitBatch, DeadLetterId, Durability, LogStore};

/// Acknowledged vectors are stored per peer, replaced by `set_acked`.
pub fn acked_vectors_are_kept_per_peer<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let (p1, p10, p2) = (region("p1"), region("p10"), region("p2"));
    assert!(
        ok(store.acked(&p1), "acked").is_empty(),
        "a peer never acked has an empty vector"
    );
    assert!(
        ok(store.acked_all(), "acked all").is_empty(),
        "no peer acked yet"
    );
    ok(
        store.set_acked(&p1, &vv(&[("a", 3), ("b", 1)])),
        "set acked",
    );
    ok(store.set_acked(&p10, &vv(&[("a", 1)])), "set acked");
    ok(store.set_acked(&p2, &vv(&[("c", 9)])), "set acked");
    assert_eq!(
        ok(store.acked(&p1), "acked"),
        vv(&[("a", 3), ("b", 1)]),
        "p1's vector"
    );
    assert_eq!(
        ok(store.acked(&p10), "acked"),
        vv(&[("a", 1)]),
        "p10's vector, not p1's"
    );
    ok(store.set_acked(&p1, &vv(&[("a", 2)])), "replace acked");
    assert_eq!(
        ok(store.acked(&p1), "acked"),
        vv(&[("a", 2)]),
        "set_acked replaces the stored vector"
    );
    let expected = BTreeMap::from([
        (p1.clone(), vv(&[("a", 2)])),
        (p10.clone(), vv(&[("a", 1)])),
        (p2.clone(), vv(&[("c", 9)])),
    ]);
    assert_eq!(
        ok(store.acked_all(), "acked all"),
        expected,
        "acked_all lists every peer"
    );
    let store = h.reopen(store);
    assert_eq!(
        ok(store.acked_all(), "acked all"),
        expected,
        "acked vectors survive a reopen"
    );
}

/// A later checkpoint of a source replaces the earlier one; others stay.
pub fn checkpoints_are_overwritten<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let (s, s1, pg) = (source("s"), source("s/1"), source("pg:slot"));
    let commit = |cps: &[(&SourceId, &str)]| CommitBatch {
        checkpoints: cps
            .iter()
            .map(|(s, c)| ((*s).clone(), Checkpoint((*c).to_owned())))
            .collect(),
        ..CommitBatch::default()
    };
    ok(
        store.commit(&commit(&[(&s, "1"), (&s1, "a"), (&pg, "0/1")])),
        "commit",
    );
    ok(store.commit(&commit(&[(&s, "2")])), "commit");
    assert_eq!(
        ok(store.checkpoint(&s), "checkpoint"),
        Some(Checkpoint("2".into())),
        "the later checkpoint wins"
    );
    assert_eq!(
        ok(store.checkpoint(&s1), "checkpoint"),
        Some(Checkpoint("a".into())),
        "a source whose id extends another's keeps its own checkpoint"
    );
    assert_eq!(
        ok(store.checkpoint(&source("t")), "checkpoint"),
        None,
        "unknown source"
    );
    let expected = vec![
        (pg.clone(), Checkpoint("0/1".into())),
        (s.clone(), Checkpoint("2".into())),
        (s1.clone(), Checkpoint("a".into())),
    ];
    assert_eq!(
        ok(store.checkpoints(), "checkpoints"),
        expected,
        "checkpoints by source id"
    );
    let store = h.reopen(store);
    assert_eq!(
        ok(store.checkpoints(), "checkpoints"),
        expected,
        "checkpoints survive a reopen"
    );
}

/// Dead letters get increasing ids, list in id order with paging, and can
/// be removed once.
pub fn dead_letters_page_and_remove<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    assert!(
        ok(store.dead_letters(None, 10), "list").is_empty(),
        "no dead letters yet"
    );
    let ids: Vec<DeadLetterId> = (1..=5)
        .map(|n| ok(store.put_dead_letter(&letter(n)), "put dead letter"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase: {ids:?}"
    );
    let all = ok(store.dead_letters(None, 100), "list");
    assert_eq!(
        all,
        ids.iter()
            .copied()
            .zip((1..=5).map(letter))
            .collect::<Vec<_>>(),
        "dead letters list in id order, as stored"
    );
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = ok(store.dead_letters(after, 2), "page");
        assert!(page.len() <= 2, "a page holds at most `limit` letters");
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        paged.extend(page);
    }
    assert_eq!(paged, all, "paging with `after` visits every letter once");
    assert!(
        ok(store.dead_letters(None, 0), "list").is_empty(),
        "limit 0"
    );
    assert!(
        ok(store.dead_letters(Some(DeadLetterId(u64::MAX)), 10), "list").is_empty(),
        "nothing after the largest id"
    );
    assert!(
        ok(store.remove_dead_letter(ids[2]), "remove"),
        "removing a stored letter"
    );
    assert!(
        !ok(store.remove_dead_letter(ids[2]), "remove"),
        "removing it again must report false"
    );
    assert!(
        !ok(store.remove_dead_letter(DeadLetterId(999)), "remove"),
        "removing an unknown id must report false"
    );
    let left: Vec<DeadLetterId> = ok(store.dead_letters(None, 100), "list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        left,
        vec![ids[0], ids[1], ids[3], ids[4]],
        "the removed letter is gone"
    );
}
