//! Checks of the log and item reads, and of truncation.

use std::collections::BTreeMap;

use super::StoreHarness;
use super::fixtures::{entry, ingest, key, ok, region, seqs, state, table, vv};
use crate::change::LogEntry;
use crate::crdt::ItemState;
use crate::ids::{Hlc, Seq, VersionVector};
use crate::key::ItemKey;
use crate::store::{CommitBatch, Durability, EncodedEntry, LogStore};
use crate::value::Scalar;

/// Entries come back per origin, in seq order, strictly after `after`, at
/// most `limit`, even for origins whose names prefix each other.
pub fn entries_are_ordered_per_origin<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    let mut written: BTreeMap<String, Vec<LogEntry>> = BTreeMap::new();
    // Interleave origins `a`, `ab` and `b` in batches; `a` crosses seq 256
    // (where a little-endian or textual seq would sort wrong).
    for chunk in 0..6u64 {
        let mut batch = CommitBatch::default();
        for seq in chunk * 50 + 1..=chunk * 50 + 50 {
            batch.entries.push(entry("a", seq));
        }
        for (origin, seq) in [("ab", chunk + 1), ("b", chunk + 1), ("ab", chunk + 7)] {
            batch.entries.push(entry(origin, seq));
        }
        // Not in seq order within the batch: the store orders by key.
        batch.entries.reverse();
        ok(store.commit(&batch), "commit");
        for e in batch.entries {
            written.entry(e.origin.to_string()).or_default().push(e);
        }
    }
    for list in written.values_mut() {
        list.sort_by_key(|e| e.seq);
    }
    let (a, ab, b) = (region("a"), region("ab"), region("b"));
    assert_eq!(
        ok(store.entries(&a, Seq::ZERO, usize::MAX), "entries of a"),
        written["a"],
        "entries of `a` must be exactly its 300 entries in seq order (no `ab` entries)"
    );
    assert_eq!(
        ok(store.entries(&ab, Seq::ZERO, usize::MAX), "entries of ab"),
        written["ab"],
        "entries of `ab` must be exactly its entries in seq order"
    );
    assert_eq!(
        seqs(&ok(
            store.entries(&b, Seq::ZERO, usize::MAX),
            "entries of b"
        )),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&ok(
            store.entries(&a, Seq(254), 3),
            "entries of a after 254"
        )),
        vec![255, 256, 257],
        "`after` is exclusive and `limit` caps the count, across the 255/256 boundary"
    );
    let mut paged = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = ok(store.entries(&a, after, 64), "page of entries");
        assert!(page.len() <= 64, "a page must hold at most `limit` entries");
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(
        paged, written["a"],
        "paging with `after` must visit every entry once"
    );
    for (after, limit, what) in [
        (Seq(300), 10, "after the last seq"),
        (Seq(u64::MAX), 10, "after u64::MAX"),
        (Seq::ZERO, 0, "with limit 0"),
    ] {
        assert!(
            ok(store.entries(&a, after, limit), "entries").is_empty(),
            "entries {what} must be empty"
        );
    }
    for unknown in ["aa", "c", "b-"] {
        assert!(
            ok(store.entries(&region(unknown), Seq::ZERO, 10), "entries").is_empty(),
            "origin {unknown} wrote nothing, so it has no entries"
        );
    }
    // What links ship: the same entries, their deltas in the wire encoding.
    for (origin, after, limit) in [
        (&a, Seq::ZERO, usize::MAX),
        (&ab, Seq::ZERO, usize::MAX),
        (&a, Seq(254), 3),
        (&region("c"), Seq::ZERO, 10),
    ] {
        let encoded = ok(
            store.encoded_entries(origin, after, limit),
            "encoded entries",
        );
        let plain = ok(store.entries(origin, after, limit), "entries");
        let expected: Vec<EncodedEntry> = plain
            .iter()
            .map(|e| ok(EncodedEntry::encode(e), "encode an entry"))
            .collect();
        assert_eq!(
            encoded, expected,
            "encoded_entries of {origin} after {after:?} (limit {limit}) must be its entries with their deltas encoded"
        );
        let decoded: Vec<LogEntry> = encoded
            .into_iter()
            .map(|e| ok(e.decode(), "decode an encoded entry"))
            .collect();
        assert_eq!(decoded, plain, "encoded entries must decode to the entries");
    }
}

/// Items: point reads, multi-gets in the order asked, scans in key order
/// restricted to a table, paging with `after`, overwrite.
pub fn items_read_and_scan_in_key_order<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Buffered);
    let origin = region("a");
    let mut all: Vec<(ItemKey, ItemState)> = Vec::new();
    // `t` prefixes `t2` and `tt`; `u` sorts between them in byte order.
    for (n, t) in ["t", "t2", "tt", "u"].into_iter().enumerate() {
        for pk in ["a", "b", "ba", "c", "d"] {
            let k = key(t, pk);
            let s = state(
                &k,
                &origin,
                Hlc::new(n as u64, 0),
                &[("v", &format!("{t}/{pk}"))],
            );
            all.push((k, s));
        }
        let with_sort = ItemKey::new(
            table(t),
            Scalar::S("b".into()),
            Some(Scalar::B(vec![0, 255])),
        )
        .expect("valid key");
        let s = state(&with_sort, &origin, Hlc::new(9, 0), &[("v", "sorted")]);
        all.push((with_sort, s));
    }
    let batch = CommitBatch {
        items: all.clone(),
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "commit items");
    all.sort_by_key(|(k, _)| k.encode());
    let in_table = |t: &str| -> Vec<(ItemKey, ItemState)> {
        all.iter()
            .filter(|(k, _)| k.table().as_str() == t)
            .cloned()
            .collect()
    };

    let missing = key("t", "nope");
    assert_eq!(
        ok(store.item(&missing), "item"),
        None,
        "an item never written reads as None"
    );
    assert_eq!(
        ok(
            store.items(&[all[3].0.clone(), missing.clone(), all[0].0.clone()]),
            "items"
        ),
        vec![Some(all[3].1.clone()), None, Some(all[0].1.clone())],
        "items() must answer in the order asked, None for missing keys"
    );
    assert!(
        ok(store.items(&[]), "items").is_empty(),
        "items(&[]) must be empty"
    );

    for t in ["t", "t2", "tt", "u"] {
        assert_eq!(
            ok(store.scan_items(Some(&table(t)), None, usize::MAX), "scan"),
            in_table(t),
            "a scan of table {t} must return exactly its items in encoded-key order"
        );
    }
    assert_eq!(
        ok(store.scan_items(None, None, usize::MAX), "scan all"),
        all,
        "a scan without table must return every item in encoded-key order"
    );
    for t in [None, Some(table("t"))] {
        let mut paged = Vec::new();
        let mut after: Option<ItemKey> = None;
        loop {
            let page = ok(store.scan_items(t.as_ref(), after.as_ref(), 4), "scan page");
            assert!(page.len() <= 4, "a page must hold at most `limit` items");
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            paged.extend(page);
        }
        let expected = match &t {
            Some(t) => in_table(t.as_str()),
            None => all.clone(),
        };
        assert_eq!(
            paged, expected,
            "paging with `after` (table {t:?}) must visit every item once"
        );
    }
    assert!(
        ok(store.scan_items(Some(&table("t")), None, 0), "scan").is_empty(),
        "limit 0 must return nothing"
    );
    assert!(
        ok(
            store.scan_items(Some(&table("t")), Some(&key("u", "a")), 10),
            "scan"
        )
        .is_empty(),
        "a scan of t after a key that sorts past t must be empty"
    );
    assert_eq!(
        ok(
            store.scan_items(Some(&table("u")), Some(&key("t", "zzz")), 100),
            "scan"
        ),
        in_table("u"),
        "a scan of u after a key of an earlier table must return all of u"
    );

    let k = key("t", "b");
    let newer = state(&k, &region("b"), Hlc::new(99, 0), &[("v", "overwritten")]);
    let batch = CommitBatch {
        items: vec![(k.clone(), newer.clone())],
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "overwrite item");
    assert_eq!(
        ok(store.item(&k), "item"),
        Some(newer),
        "a commit replaces the stored item state"
    );
    assert_eq!(
        ok(
            store.scan_items(Some(&table("t")), None, usize::MAX),
            "scan"
        )
        .len(),
        in_table("t").len(),
        "an overwrite must not add an item"
    );
}

/// Truncation removes entries with seq ≤ `upto`, never beyond applied,
/// raises `log_start`, and is idempotent and durable.
pub fn truncate_removes_a_prefix_up_to_applied<H: StoreHarness>(h: &mut H) {
    let store = h.open(Durability::Sync);
    let mut batch = CommitBatch::default();
    for seq in 1..=10 {
        batch.entries.push(entry("a", seq));
    }
    for seq in 1..=7 {
        batch.entries.push(entry("b", seq));
    }
    // Entries b:7 is above the applied vector (the store keeps it anyway).
    batch.applied = vv(&[("a", 10), ("b", 6)]);
    ok(store.commit(&batch), "commit");
    ok(
        store.truncate(&vv(&[("a", 4), ("b", 100), ("c", 3)])),
        "truncate",
    );
    let (a, b) = (region("a"), region("b"));
    assert_eq!(
        seqs(&ok(store.entries(&a, Seq::ZERO, 100), "entries")),
        (5..=10).collect::<Vec<_>>(),
        "truncating a to 4 must remove exactly seqs 1..=4"
    );
    assert_eq!(
        seqs(&ok(store.entries(&b, Seq::ZERO, 100), "entries")),
        vec![7],
        "truncation must stop at the applied vector (b:6), keeping b:7"
    );
    assert_eq!(
        ok(store.log_start(), "log start"),
        vv(&[("a", 4), ("b", 6)]),
        "log_start must record the truncation, clamped to applied, nothing for unknown c"
    );
    for again in [vv(&[("a", 2)]), vv(&[("a", 4), ("b", 100), ("c", 3)])] {
        ok(store.truncate(&again), "truncate again");
        assert_eq!(
            ok(store.log_start(), "log start"),
            vv(&[("a", 4), ("b", 6)]),
            "truncating to {again:?} again must not change log_start"
        );
        assert_eq!(
            seqs(&ok(store.entries(&a, Seq(2), 100), "entries")),
            (5..=10).collect::<Vec<_>>(),
            "reading from below log_start returns the entries after it"
        );
    }
    ok(store.truncate(&VersionVector::new()), "empty truncate");
    let store = h.reopen(store);
    assert_eq!(
        ok(store.log_start(), "log start"),
        vv(&[("a", 4), ("b", 6)]),
        "log_start must survive a reopen"
    );
    assert_eq!(
        seqs(&ok(store.entries(&a, Seq::ZERO, 100), "entries")),
        (5..=10).collect::<Vec<_>>(),
        "truncated entries must stay gone after a reopen"
    );
    ok(store.commit(&ingest("a", 11)), "commit after truncation");
    ok(store.truncate(&vv(&[("a", 11)])), "truncate everything");
    assert!(
        ok(store.entries(&a, Seq::ZERO, 100), "entries").is_empty(),
        "truncating to applied must remove every entry of a"
    );
    assert_eq!(ok(store.log_start(), "log start").get(&a), Seq(11));
}

/// Items created from their entries (`items_from_entries`) read as those
/// entries' deltas after the entries are truncated: while readers read
/// them, in scans, and after a reopen. An item written since keeps its
/// newer state, and one made again from a later entry keeps that entry's.
/// Crosses several truncation steps of a store that truncates in steps.
pub fn truncation_keeps_items_from_entries<H: StoreHarness>(h: &mut H) {
    const N: u64 = 9_000;
    const KEPT: u64 = 100;
    let store = h.open(Durability::Buffered);
    let entries: Vec<LogEntry> = (1..=N).map(|seq| entry("a", seq)).collect();
    let batch = CommitBatch {
        entries: entries.clone(),
        items_from_entries: (0..entries.len()).collect(),
        applied: vv(&[("a", N)]),
        ..CommitBatch::default()
    };
    ok(store.commit(&batch), "commit");
    let rewritten = &entries[1].key;
    let newer = state(
        rewritten,
        &region("b"),
        Hlc::new(99_999, 0),
        &[("name", "y")],
    );
    let overwrite = CommitBatch {
        items: vec![(rewritten.clone(), newer.clone())],
        ..CommitBatch::default()
    };
    ok(store.commit(&overwrite), "overwrite an item");
    // An item made from a later entry of its own: it points there, and a
    // truncation of its first entry must leave it alone.
    let repointed = LogEntry {
        key: entries[2].key.clone(),
        ..entry("a", N + 1)
    };
    let again = CommitBatch {
        entries: vec![repointed.clone()],
        items_from_entries: vec![0],
        applied: vv(&[("a", N + 1)]),
        ..CommitBatch::default()
    };
    ok(store.commit(&again), "an item from a later entry");
    let mut expected: BTreeMap<ItemKey, ItemState> = entries
        .iter()
        .map(|e| (e.key.clone(), e.delta.clone()))
        .collect();
    expected.insert(rewritten.clone(), newer);
    expected.insert(repointed.key.clone(), repointed.delta.clone());
    let sample: Vec<ItemKey> = expected.keys().step_by(97).cloned().collect();
    let sampled: Vec<Option<ItemState>> = sample.iter().map(|k| expected.get(k).cloned()).collect();
    let check = |store: &H::Store, when: &str| {
        let scanned: BTreeMap<ItemKey, ItemState> =
            ok(store.scan_items(None, None, usize::MAX), "scan")
                .into_iter()
                .collect();
        assert!(
            scanned == expected,
            "{when}: a scan must read every item's state"
        );
        assert_eq!(ok(store.items(&sample), "items"), sampled, "{when}: items");
        assert_eq!(
            ok(store.item(rewritten), "item").as_ref(),
            expected.get(rewritten),
            "{when}: the item written since keeps its own state"
        );
    };
    check(&store, "before truncation");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (store, done, sample, sampled) = (&store, &done, &sample, &sampled);
        scope.spawn(move || {
            let mut reads = 0u64;
            // At least one read, then until the truncation is over.
            while reads == 0 || !done.load(std::sync::atomic::Ordering::Acquire) {
                assert_eq!(
                    ok(store.items(sample), "items during truncation"),
                    *sampled,
                    "read {reads} during the truncation"
                );
                reads += 1;
            }
        });
        ok(store.truncate(&vv(&[("a", N - KEPT)])), "truncate");
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    assert_eq!(
        seqs(&ok(
            store.entries(&region("a"), Seq::ZERO, usize::MAX),
            "entries"
        )),
        (N - KEPT + 1..=N + 1).collect::<Vec<_>>(),
        "the truncation removes its prefix"
    );
    check(&store, "after truncation");
    let store = h.reopen(store);
    check(&store, "after a reopen");
    ok(store.truncate(&vv(&[("a", N)])), "truncate everything");
    check(&store, "after truncating everything");
}
