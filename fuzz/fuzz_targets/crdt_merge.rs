//! CRDT merge of arbitrary states. Three replicas of one item take
//! arbitrary local changes (every policy, deletes included) and arbitrary
//! state merges between them, in any order; then:
//! - join is commutative, associative and idempotent on the states reached;
//! - after every replica has merged every other, all hold the same state;
//! - without removes or deletes, the counter is the exact sum of the adds.
//!
//! The same input also reads as two raw encoded states (sealed in the
//! store envelope): joining them must not panic, whichever is decoded.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tributary_engine::change::Op;
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId};
use tributary_engine::store::{decode_item_state, seal_payload};
use tributary_engine::value::{AttrValue, Number, Scalar};
use tributary_fuzz::schema;

const REPLICAS: usize = 3;

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    /// An lww attribute (`a0`..`a3`).
    Set {
        attr: u8,
        value: u8,
    },
    /// The `notes` multi-value register.
    SetNote {
        value: u8,
    },
    /// The `qty` counter.
    Add {
        amount: i16,
    },
    AddTags {
        elements: Vec<u8>,
    },
    RemoveTags {
        elements: Vec<u8>,
    },
    Remove {
        attr: u8,
    },
    Delete,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Local {
        replica: u8,
        ops: Vec<FuzzOp>,
        tick: u8,
    },
    Merge {
        from: u8,
        to: u8,
    },
}

fn attr(name: &str) -> AttrName {
    AttrName::new(name).expect("a valid attribute name")
}

fn lww(i: u8) -> AttrName {
    attr(&format!("a{}", i % 4))
}

fn removable(i: u8) -> AttrName {
    match i % 4 {
        0 => attr("qty"),
        1 => attr("tags"),
        2 => attr("notes"),
        _ => lww(i),
    }
}

fn tags(elements: &[u8]) -> Vec<Scalar> {
    elements
        .iter()
        .take(4)
        .map(|e| Scalar::S(format!("t{}", e % 8)))
        .collect()
}

fn to_op(op: &FuzzOp) -> Op {
    match op {
        FuzzOp::Set { attr, value } => Op::Set {
            attr: lww(*attr),
            value: AttrValue::N(Number::from_i128(i128::from(*value))),
        },
        FuzzOp::SetNote { value } => Op::Set {
            attr: attr("notes"),
            value: AttrValue::S(format!("n{value}")),
        },
        FuzzOp::Add { amount } => Op::Add {
            attr: attr("qty"),
            amount: i128::from(*amount),
        },
        FuzzOp::AddTags { elements } => Op::AddToSet {
            attr: attr("tags"),
            elements: tags(elements),
        },
        FuzzOp::RemoveTags { elements } => Op::RemoveFromSet {
            attr: attr("tags"),
            elements: tags(elements),
        },
        FuzzOp::Remove { attr } => Op::Remove {
            attr: removable(*attr),
        },
        FuzzOp::Delete => Op::Delete,
    }
}

fn joined(a: &ItemState, b: &ItemState) -> ItemState {
    let mut out = a.clone();
    out.join(b);
    out
}

fuzz_target!(|data: &[u8]| {
    raw_states(data);
    let mut u = Unstructured::new(data);
    let Ok(steps) = Vec::<Step>::arbitrary(&mut u) else {
        return;
    };
    let schema = schema();
    let regions: Vec<RegionId> = ["us-east-1", "eu-west-1", "ap-south-1"]
        .iter()
        .map(|r| RegionId::new(*r).expect("a valid region"))
        .collect();
    let mut states = vec![ItemState::new(); REPLICAS];
    let mut clocks = [0u64; REPLICAS];
    let mut sum: i128 = 0;
    let mut removed = false;
    for step in steps.iter().take(64) {
        match step {
            Step::Local { replica, ops, tick } => {
                let r = usize::from(*replica) % REPLICAS;
                let ops: Vec<Op> = ops.iter().take(6).map(to_op).collect();
                clocks[r] += 1 + u64::from(*tick);
                let Ok(prepared) =
                    states[r].prepare(&schema, &regions[r], Hlc::new(clocks[r], 0), &ops)
                else {
                    continue;
                };
                for op in &ops {
                    match op {
                        Op::Add { amount, .. } => sum += amount,
                        Op::Remove { .. } | Op::Delete => removed = true,
                        _ => {}
                    }
                }
                // The delta carries the change: the state is old ⊔ delta.
                assert_eq!(joined(&states[r], &prepared.delta), prepared.state);
                states[r] = prepared.state;
            }
            Step::Merge { from, to } => {
                let (from, to) = (usize::from(*from) % REPLICAS, usize::from(*to) % REPLICAS);
                let from = states[from].clone();
                states[to].join(&from);
            }
        }
    }
    let [a, b, c] = [&states[0], &states[1], &states[2]];
    assert_eq!(joined(a, b), joined(b, a), "join is not commutative");
    assert_eq!(
        joined(&joined(a, b), c),
        joined(a, &joined(b, c)),
        "join is not associative"
    );
    assert_eq!(joined(a, a), *a, "join is not idempotent");
    let all = joined(&joined(a, b), c);
    for s in &states {
        assert_eq!(
            joined(s, &all),
            all,
            "replicas differ after merging everything"
        );
    }
    if !removed {
        let qty = all
            .values()
            .and_then(|v| v.get(&attr("qty")).cloned())
            .map_or(0, |v| match v {
                AttrValue::N(n) => n.to_i128().expect("an integer counter"),
                other => panic!("qty is {other:?}"),
            });
        assert_eq!(qty, sum, "the counter is not the sum of its increments");
    }
});

/// Two encoded item states from the raw input, joined both ways.
fn raw_states(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (x, y) = rest.split_at(split);
    let (Ok(x), Ok(y)) = (
        decode_item_state(&seal_payload(x)),
        decode_item_state(&seal_payload(y)),
    ) else {
        return;
    };
    let _ = joined(&x, &y).values();
    let _ = joined(&y, &x).view();
}
