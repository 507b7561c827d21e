//! The checker on synthetic histories: a clean run passes, and each kind of
//! violation (lost, duplicated, zombie, phantom, divergent digests,
//! offsets going backwards, negative lag) is reported — and only it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::chaos::history::{History, Key, Op, OpKind, Outcome};
use crate::chaos::observe::{
    Digest, ItemView, LagSample, Observations, OffsetsSample, RegionState,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Builds a history: each op invoked at `t` and completed at `t + 5 ms`.
#[derive(Default)]
struct Builder {
    ops: Vec<Op>,
    seq: BTreeMap<String, u64>,
}

impl Builder {
    fn op(&mut self, region: &str, kind: OpKind, outcome: &str, t: u64) -> usize {
        let index = self.ops.len();
        let outcome = match outcome {
            "ok" => {
                let seq = self.seq.entry(region.to_owned()).or_default();
                *seq += 1;
                Outcome::Ok {
                    origin: region.to_owned(),
                    seq: *seq,
                }
            }
            "failed" => Outcome::Failed {
                error: "rejected".into(),
            },
            _ => Outcome::Unknown {
                reason: "timeout".into(),
            },
        };
        self.ops.push(Op {
            index,
            writer: 0,
            region: region.to_owned(),
            kind,
            invoked: ms(t),
            completed: Some(ms(t + 5)),
            outcome,
        });
        index
    }

    fn history(&self) -> History {
        History {
            ops: self.ops.clone(),
        }
    }
}

fn ctr() -> Key {
    Key::new(COUNTERS, "0")
}
fn set() -> Key {
    Key::new(SETS, "0")
}
fn reg() -> Key {
    Key::new(REGISTERS, "0")
}
fn del() -> Key {
    Key::new(DELETES, "w0-0")
}

fn inc(tag: &str) -> OpKind {
    OpKind::Increment {
        key: ctr(),
        tag: tag.into(),
    }
}
fn add(e: &str) -> OpKind {
    OpKind::SetAdd {
        key: set(),
        element: e.into(),
    }
}
fn remove(e: &str) -> OpKind {
    OpKind::SetRemove {
        key: set(),
        element: e.into(),
    }
}
fn write(value: &str) -> OpKind {
    OpKind::Write {
        key: reg(),
        value: value.into(),
    }
}

fn view(qty: i128, tags: &[&str], value: Option<&str>) -> ItemView {
    ItemView {
        exists: true,
        qty,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        value: value.map(str::to_owned),
    }
}

fn digest(d: &str) -> Option<Digest> {
    Some(Digest {
        items: 4,
        digest: d.into(),
    })
}

/// Two regions holding `items`, with equal digests.
fn finals(items: &[(Key, ItemView)]) -> Vec<RegionState> {
    ["a", "b"]
        .iter()
        .map(|r| RegionState {
            region: (*r).to_owned(),
            digest: digest("d1"),
            items: items.iter().cloned().collect(),
        })
        .collect()
}

fn obs(finals: Vec<RegionState>) -> Observations {
    Observations {
        regions: vec!["a".into(), "b".into()],
        finals,
        healed: Some(ms(1000)),
        converged: Some(ms(3500)),
        ..Observations::default()
    }
}

fn sample(region: &str, t: u64, applied: &[(&str, u64)]) -> OffsetsSample {
    OffsetsSample {
        region: region.into(),
        started: ms(t),
        ended: ms(t + 10),
        applied: applied.iter().map(|(o, s)| ((*o).to_owned(), *s)).collect(),
        ..OffsetsSample::default()
    }
}

/// A run in which every kind of operation happened and nothing went wrong.
fn clean_run() -> (Builder, Observations) {
    let mut b = Builder::default();
    b.op("a", inc("i-0-1"), "ok", 0);
    b.op("b", inc("i-1-1"), "ok", 0);
    b.op("a", inc("i-0-2"), "unknown", 10); // in doubt: absent is fine
    b.op("b", inc("i-1-2"), "failed", 10);
    b.op("a", add("e-0-1"), "ok", 20);
    b.op("a", add("e-0-2"), "ok", 20);
    b.op("a", remove("e-0-2"), "ok", 40);
    b.op("a", add("e-0-3"), "ok", 50);
    b.op("a", remove("e-0-3"), "unknown", 60); // in doubt: either
    b.op("a", write("w-0-1"), "ok", 70);
    b.op("b", write("w-1-1"), "ok", 70); // concurrent: either may win
    b.op(
        "a",
        OpKind::Create {
            key: del(),
            value: "c".into(),
        },
        "ok",
        80,
    );
    b.op("a", OpKind::Delete { key: del() }, "ok", 90);
    let items = vec![
        (ctr(), view(2, &["i-0-1", "i-1-1"], None)),
        (set(), view(0, &["e-0-1", "e-0-3"], None)),
        (reg(), view(0, &[], Some("w-1-1"))),
        (del(), ItemView::default()),
    ];
    let mut o = obs(finals(&items));
    // a acknowledged 8 writes and b 2 by 95 ms; a had them all at 110 ms
    // and b at 310 ms.
    o.offsets = vec![
        sample("a", 0, &[]),
        sample("b", 0, &[]),
        sample("a", 100, &[("a", 8), ("b", 2)]),
        sample("b", 300, &[("a", 8), ("b", 2)]),
    ];
    o.lag = vec![LagSample {
        region: "a".into(),
        at: ms(100),
        doc: json!({"region":"a","peers":[{"peer":"b","pending_records":0,"oldest_pending_seconds":0.0}]}),
    }];
    (b, o)
}

#[test]
fn a_clean_run_passes_and_is_measured() {
    let (b, o) = clean_run();
    let v = check(&b.history(), &o);
    assert!(v.is_clean(), "{}", v.describe(10));
    assert_eq!(v.convergence_seconds, Some(2.5));
    // Every acknowledged op was seen in both regions by 310 ms.
    let acked = b.ops.iter().filter(|o| o.acked().is_some()).count();
    assert_eq!(v.visibility.count, acked);
    assert_eq!(v.never_visible, 0);
    assert!(v.visibility.max_seconds.is_some_and(|m| m <= 0.31), "{v:?}");
}

#[test]
fn an_acknowledged_increment_missing_is_lost() {
    let (b, mut o) = clean_run();
    let ctr_view = o.finals[1].items.get_mut(&ctr()).expect("counter");
    ctr_view.tags.remove("i-1-1");
    ctr_view.qty = 1;
    let v = check(&b.history(), &o);
    assert_eq!(v.lost.distinct(), 1, "{}", v.describe(10));
    assert_eq!(v.lost.0[0].op, Some(1));
    assert_eq!(v.lost.0[0].region.as_deref(), Some("b"));
    assert!(v.duplicated.is_empty() && v.zombies.is_empty() && v.phantoms.is_empty());
}

#[test]
fn a_counter_above_its_increments_is_a_duplicate() {
    let (b, mut o) = clean_run();
    o.finals[0].items.get_mut(&ctr()).expect("counter").qty = 3;
    o.finals[1].items.get_mut(&ctr()).expect("counter").qty = 4;
    let v = check(&b.history(), &o);
    assert_eq!(v.duplicated.0.len(), 2, "{}", v.describe(10));
    assert_eq!(v.duplicated_effects, 2, "the larger excess of the item");
    assert!(v.lost.is_empty() && v.zombies.is_empty() && v.phantoms.is_empty());
}

#[test]
fn a_counter_below_its_tags_is_lost() {
    let (b, mut o) = clean_run();
    o.finals[0].items.get_mut(&ctr()).expect("counter").qty = 1;
    let v = check(&b.history(), &o);
    assert_eq!(v.lost.distinct(), 1, "{}", v.describe(10));
    assert!(v.duplicated.is_empty());
}

#[test]
fn a_removed_element_that_reappears_is_a_zombie() {
    let (b, mut o) = clean_run();
    for f in &mut o.finals {
        f.items
            .get_mut(&set())
            .expect("set")
            .tags
            .insert("e-0-2".into());
    }
    let v = check(&b.history(), &o);
    assert_eq!(v.zombies.distinct(), 1, "{}", v.describe(10));
    assert_eq!(v.zombies.0.len(), 2, "seen in both regions");
    assert_eq!(v.zombies.0[0].op, Some(6), "the acknowledged remove");
    assert!(v.lost.is_empty() && v.phantoms.is_empty());
}

#[test]
fn a_deleted_item_that_reappears_is_a_zombie() {
    let (b, mut o) = clean_run();
    *o.finals[0].items.get_mut(&del()).expect("item") = view(0, &[], Some("c"));
    let v = check(&b.history(), &o);
    assert_eq!(v.zombies.distinct(), 1, "{}", v.describe(10));
    assert!(v.lost.is_empty() && v.phantoms.is_empty());
}

#[test]
fn a_remove_the_adding_region_had_not_acknowledged_first_proves_nothing() {
    // The remove went to another region: add-wins may keep the element.
    let mut b = Builder::default();
    b.op("a", add("e-0-1"), "ok", 0);
    b.op("b", remove("e-0-1"), "ok", 10);
    let v = check(
        &b.history(),
        &obs(finals(&[(set(), view(0, &["e-0-1"], None))])),
    );
    assert!(v.is_clean(), "{}", v.describe(10));
}

#[test]
fn an_acknowledged_add_missing_is_lost_unless_a_remove_is_in_doubt() {
    let (b, mut o) = clean_run();
    o.finals[0]
        .items
        .get_mut(&set())
        .expect("set")
        .tags
        .remove("e-0-1");
    let v = check(&b.history(), &o);
    assert_eq!(v.lost.distinct(), 1, "{}", v.describe(10));
    assert_eq!(v.lost.0[0].op, Some(4));

    let (b, mut o) = clean_run();
    o.finals[0]
        .items
        .get_mut(&set())
        .expect("set")
        .tags
        .remove("e-0-3");
    assert!(check(&b.history(), &o).is_clean(), "its remove is in doubt");
}

#[test]
fn effects_of_rejected_or_unknown_operations_are_phantoms() {
    let (b, mut o) = clean_run();
    let c = o.finals[0].items.get_mut(&ctr()).expect("counter");
    c.tags.insert("i-1-2".into()); // the rejected increment
    c.tags.insert("i-9-9".into()); // no increment at all
    c.qty = 4;
    let v = check(&b.history(), &o);
    assert_eq!(v.phantoms.distinct(), 2, "{}", v.describe(10));
    assert!(v.duplicated.is_empty() && v.lost.is_empty());
}

#[test]
fn an_older_register_value_beating_a_later_acknowledged_write_is_lost() {
    let mut b = Builder::default();
    b.op("a", write("w-0-1"), "ok", 0);
    b.op("a", write("w-0-2"), "ok", 10); // invoked after w-0-1's ack at a
    let history = b.history();
    let stale = obs(finals(&[(reg(), view(0, &[], Some("w-0-1")))]));
    let v = check(&history, &stale);
    assert_eq!(v.lost.distinct(), 1, "{}", v.describe(10));
    assert_eq!(v.lost.0[0].op, Some(1));
    let fresh = obs(finals(&[(reg(), view(0, &[], Some("w-0-2")))]));
    assert!(check(&history, &fresh).is_clean());
    let gone = obs(finals(&[(reg(), ItemView::default())]));
    assert_eq!(check(&history, &gone).lost.distinct(), 1);
}

#[test]
fn regions_with_different_digests_diverge() {
    let (b, mut o) = clean_run();
    o.finals[1].digest = digest("d2");
    let v = check(&b.history(), &o);
    assert_eq!(v.divergent.0.len(), 1, "{}", v.describe(10));
    assert_eq!(v.divergent.0[0].region.as_deref(), Some("b"));
    o.finals[1].digest = None;
    assert_eq!(check(&b.history(), &o).divergent.0.len(), 1);
}

#[test]
fn regions_whose_last_applied_vectors_differ_diverge() {
    let (b, mut o) = clean_run();
    o.offsets.push(sample("b", 400, &[("a", 7), ("b", 2)]));
    let v = check(&b.history(), &o);
    assert_eq!(v.divergent.0.len(), 1, "{}", v.describe(10));
    assert!(v.divergent.0[0].detail.contains("last applied"));
    assert_eq!(v.offsets.0.len(), 1, "and b's applied went back");
}

#[test]
fn applied_going_backwards_is_reported() {
    let (b, mut o) = clean_run();
    o.offsets.push(sample("a", 400, &[("a", 6), ("b", 2)]));
    o.offsets.push(sample("a", 500, &[("a", 8), ("b", 2)]));
    let v = check(&b.history(), &o);
    assert_eq!(v.offsets.0.len(), 1, "{}", v.describe(10));
    assert!(
        v.offsets.0[0]
            .detail
            .contains("applied[a] went back from 8")
    );
}

#[test]
fn acked_going_backwards_or_beyond_the_peer_is_reported() {
    let (b, mut o) = clean_run();
    let mut s1 = sample("a", 210, &[("a", 8), ("b", 2)]);
    s1.acked.insert("b".into(), [("a".to_owned(), 8)].into());
    let mut s2 = sample("a", 220, &[("a", 8), ("b", 2)]);
    s2.acked.insert("b".into(), [("a".to_owned(), 7)].into());
    o.offsets.extend([s1, s2]);
    let v = check(&b.history(), &o);
    assert_eq!(v.offsets.0.len(), 1, "{}", v.describe(10));
    assert!(v.offsets.0[0].detail.contains("acked[b][a] went back"));

    let (b, mut o) = clean_run();
    let mut s = sample("a", 210, &[("a", 8), ("b", 2)]);
    s.acked.insert("b".into(), [("a".to_owned(), 9)].into());
    o.offsets.push(s);
    let v = check(&b.history(), &o);
    assert_eq!(v.offsets.0.len(), 1, "{}", v.describe(10));
    assert!(v.offsets.0[0].detail.contains("b applied only 8"));
}

#[test]
fn an_acknowledged_write_its_origin_does_not_cover_later_is_lost() {
    let (b, mut o) = clean_run();
    // a acknowledged a:6..=8 by 95 ms; its sample started after says 5.
    o.offsets[2] = sample("a", 100, &[("a", 5), ("b", 2)]);
    o.offsets[3] = sample("b", 300, &[("a", 5), ("b", 2)]);
    let v = check(&b.history(), &o);
    assert_eq!(v.lost.distinct(), 3, "{}", v.describe(10));
    assert_eq!(v.never_visible, 3);
}

#[test]
fn negative_lag_is_reported() {
    let (b, mut o) = clean_run();
    o.lag.push(LagSample {
        region: "b".into(),
        at: ms(500),
        doc: json!({"region":"b","peers":[{"peer":"a","pending_records":0,"oldest_pending_seconds":-1.5}]}),
    });
    let v = check(&b.history(), &o);
    assert_eq!(v.negative_lag.0.len(), 1, "{}", v.describe(10));
    assert!(
        v.negative_lag.0[0]
            .detail
            .contains("oldest_pending_seconds = -1.5")
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let p = Percentiles::of((1..=100).map(ms).collect());
    assert_eq!(p.count, 100);
    assert_eq!(p.p50_seconds, Some(0.05));
    assert_eq!(p.p99_seconds, Some(0.099));
    assert_eq!(p.max_seconds, Some(0.1));
    assert_eq!(Percentiles::of(Vec::new()).p50_seconds, None);
}
