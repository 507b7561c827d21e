//! Property tests of the item CRDT's laws, for every merge policy at once
//! (the schema has an `lww`, a `multi`, a `counter` and a `set` attribute):
//!
//! - join is commutative, associative and idempotent;
//! - 3–5 replicas that make changes while exchanging deltas in any order,
//!   each delivered 1–3 times, converge to one state;
//! - delta application equals full-state merge;
//! - the converged state agrees with a sequential reference model that knows
//!   nothing of dots or contexts, only which effects each change created and
//!   which effects its writer knew about (counter = exact sum of the
//!   increments no reset knew of; add-wins sets; observed-remove delete).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use tributary_engine::change::{LogEntry, Op};
use tributary_engine::clock::{HybridClock, ManualClock};
use tributary_engine::crdt::{AttrView, ItemState};
use tributary_engine::ids::{AttrName, Hlc, RegionId, Seq, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::schema::{MergePolicy, TableSchema};
use tributary_engine::store::{
    decode_item_state, encode_item_state, encode_log_record, seal_payload,
};
use tributary_engine::value::{AttrValue, Scalar};

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attr")
}

fn schema() -> TableSchema {
    TableSchema::new(TableName::new("t").expect("table"), attr("pk"), None)
        .and_then(|s| s.with_policy(attr("qty"), MergePolicy::Counter))
        .and_then(|s| s.with_policy(attr("tags"), MergePolicy::Set))
        .and_then(|s| s.with_policy(attr("note"), MergePolicy::Multi))
        .expect("valid schema")
}

fn region(i: usize) -> RegionId {
    RegionId::new(format!("r{i}")).expect("valid region")
}

/// One generated operation.
#[derive(Debug, Clone)]
enum GenOp {
    SetName(u8),
    RemoveName,
    SetNote(u8),
    RemoveNote,
    Add(i8),
    ResetQty,
    AddTag(u8),
    RemoveTag(u8),
    ReplaceTags(Vec<u8>),
    Delete,
    Touch,
}

fn gen_op() -> impl Strategy<Value = GenOp> {
    prop_oneof![
        3 => (0u8..4).prop_map(GenOp::SetName),
        1 => Just(GenOp::RemoveName),
        2 => (0u8..4).prop_map(GenOp::SetNote),
        1 => Just(GenOp::RemoveNote),
        3 => prop_oneof![1i8..=5, -5i8..=-1].prop_map(GenOp::Add),
        1 => Just(GenOp::ResetQty),
        3 => (0u8..4).prop_map(GenOp::AddTag),
        2 => (0u8..4).prop_map(GenOp::RemoveTag),
        1 => proptest::collection::vec(0u8..4, 0..3).prop_map(GenOp::ReplaceTags),
        1 => Just(GenOp::Delete),
        1 => Just(GenOp::Touch),
    ]
}

fn tag(t: u8) -> Scalar {
    Scalar::S(format!("t{t}"))
}

fn to_ops(op: &GenOp) -> Vec<Op> {
    let s = |v: u8| AttrValue::S(format!("v{v}"));
    match op {
        GenOp::SetName(v) => vec![Op::Set {
            attr: attr("name"),
            value: s(*v),
        }],
        GenOp::RemoveName => vec![Op::Remove { attr: attr("name") }],
        GenOp::SetNote(v) => vec![Op::Set {
            attr: attr("note"),
            value: s(*v),
        }],
        GenOp::RemoveNote => vec![Op::Remove { attr: attr("note") }],
        GenOp::Add(n) => vec![Op::Add {
            attr: attr("qty"),
            amount: i128::from(*n),
        }],
        GenOp::ResetQty => vec![Op::Remove { attr: attr("qty") }],
        GenOp::AddTag(t) => vec![Op::AddToSet {
            attr: attr("tags"),
            elements: vec![tag(*t)],
        }],
        GenOp::RemoveTag(t) => vec![Op::RemoveFromSet {
            attr: attr("tags"),
            elements: vec![tag(*t)],
        }],
        GenOp::ReplaceTags(ts) => {
            let set: BTreeSet<String> = ts.iter().map(|t| format!("t{t}")).collect();
            if set.is_empty() {
                vec![Op::Remove { attr: attr("tags") }]
            } else {
                vec![Op::Set {
                    attr: attr("tags"),
                    value: AttrValue::Ss(set),
                }]
            }
        }
        GenOp::Delete => vec![Op::Delete],
        GenOp::Touch => vec![],
    }
}

/// A step of a run: a replica makes a change, or receives an earlier delta.
#[derive(Debug, Clone)]
enum Step {
    Local {
        replica: usize,
        op: GenOp,
    },
    Deliver {
        replica: usize,
        pick: usize,
        times: usize,
    },
}

fn gen_steps(replicas: usize, len: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        (0..replicas, gen_op()).prop_map(|(replica, op)| Step::Local { replica, op }),
        (0..replicas, any::<usize>(), 1usize..=3).prop_map(|(replica, pick, times)| {
            Step::Deliver {
                replica,
                pick,
                times,
            }
        }),
    ];
    proptest::collection::vec(step, 1..len)
}

// ---------------------------------------------------------------------------
// The reference model: effects and knowledge, no dots.

/// What an effect is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Alive,
    Name(Option<u8>),
    Note(u8),
    Tag(u8),
}

/// One change as the model sees it.
#[derive(Debug, Clone)]
struct RefEvent {
    origin: usize,
    hlc: Hlc,
    created: Vec<(usize, Effect)>,
    superseded: BTreeSet<usize>,
    /// Counter: `Some((index, amount))` for an increment by `origin`.
    increment: Option<(u32, i64)>,
    /// Counter knowledge carried: per region, the highest increment index.
    counter_know: BTreeMap<usize, u32>,
    /// This change resets the counter (remove or delete).
    reset: bool,
}

#[derive(Debug, Clone, Default)]
struct RefReplica {
    received: BTreeSet<usize>,
    known: BTreeSet<usize>,
    counter_know: BTreeMap<usize, u32>,
    own_increments: u32,
}

struct Model {
    events: Vec<RefEvent>,
    effects: Vec<Effect>,
}

impl Model {
    fn live(&self, r: &RefReplica) -> Vec<usize> {
        let superseded: BTreeSet<usize> = r
            .received
            .iter()
            .flat_map(|e| self.events[*e].superseded.iter().copied())
            .collect();
        r.received
            .iter()
            .flat_map(|e| self.events[*e].created.iter().map(|(id, _)| *id))
            .filter(|id| !superseded.contains(id))
            .collect()
    }

    fn receive(&self, r: &mut RefReplica, e: usize) {
        let ev = &self.events[e];
        r.received.insert(e);
        r.known.extend(ev.created.iter().map(|(id, _)| *id));
        r.known.extend(ev.superseded.iter().copied());
        for (region, idx) in &ev.counter_know {
            let k = r.counter_know.entry(*region).or_insert(0);
            *k = (*k).max(*idx);
        }
    }

    fn local(&mut self, r: &mut RefReplica, origin: usize, hlc: Hlc, op: &GenOp) -> usize {
        let live = self.live(r);
        let live_where = |f: &dyn Fn(&Effect) -> bool| -> BTreeSet<usize> {
            live.iter()
                .copied()
                .filter(|id| f(&self.effects[*id]))
                .collect()
        };
        let mut superseded = live_where(&|e| *e == Effect::Alive);
        let mut created = Vec::new();
        let mut increment = None;
        let mut counter_know = BTreeMap::new();
        let mut reset = false;
        match op {
            GenOp::SetName(v) => {
                superseded.extend(live_where(&|e| matches!(e, Effect::Name(_))));
                created.push(Effect::Name(Some(*v)));
            }
            GenOp::RemoveName => {
                superseded.extend(live_where(&|e| matches!(e, Effect::Name(_))));
                created.push(Effect::Name(None));
            }
            GenOp::SetNote(v) => {
                superseded.extend(live_where(&|e| matches!(e, Effect::Note(_))));
                created.push(Effect::Note(*v));
            }
            GenOp::RemoveNote => superseded.extend(live_where(&|e| matches!(e, Effect::Note(_)))),
            GenOp::Add(n) => {
                r.own_increments += 1;
                increment = Some((r.own_increments, i64::from(*n)));
                counter_know.insert(origin, r.own_increments);
            }
            GenOp::ResetQty => {
                reset = true;
                counter_know = r.counter_know.clone();
            }
            GenOp::AddTag(t) => {
                superseded.extend(live_where(&|e| *e == Effect::Tag(*t)));
                created.push(Effect::Tag(*t));
            }
            GenOp::RemoveTag(t) => superseded.extend(live_where(&|e| *e == Effect::Tag(*t))),
            GenOp::ReplaceTags(ts) => {
                superseded.extend(live_where(&|e| matches!(e, Effect::Tag(_))));
                let unique: BTreeSet<u8> = ts.iter().copied().collect();
                created.extend(unique.into_iter().map(Effect::Tag));
            }
            GenOp::Delete => {
                superseded.extend(r.known.iter().copied());
                reset = true;
                counter_know = r.counter_know.clone();
            }
            GenOp::Touch => {}
        }
        if !matches!(op, GenOp::Delete) {
            created.push(Effect::Alive);
        }
        let created = created
            .into_iter()
            .map(|e| {
                self.effects.push(e.clone());
                (self.effects.len() - 1, e)
            })
            .collect();
        self.events.push(RefEvent {
            origin,
            hlc,
            created,
            superseded,
            increment,
            counter_know,
            reset,
        });
        let id = self.events.len() - 1;
        self.receive(r, id);
        id
    }

    /// The view after every event was received everywhere.
    fn converged_view(&self) -> Option<BTreeMap<String, AttrValue>> {
        let all = RefReplica {
            received: (0..self.events.len()).collect(),
            ..RefReplica::default()
        };
        let live = self.live(&all);
        let with_hlc = |id: usize| {
            let ev = self
                .events
                .iter()
                .find(|e| e.created.iter().any(|(c, _)| *c == id))
                .expect("effect has an event");
            (ev.hlc, region(ev.origin))
        };
        if !live.iter().any(|id| self.effects[*id] == Effect::Alive) {
            return None;
        }
        let mut out = BTreeMap::new();
        let name = live
            .iter()
            .filter_map(|id| match self.effects[*id] {
                Effect::Name(v) => Some((with_hlc(*id), v)),
                _ => None,
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, Some(v))) = name {
            out.insert("name".to_owned(), AttrValue::S(format!("v{v}")));
        }
        let mut notes: Vec<((Hlc, RegionId), u8)> = live
            .iter()
            .filter_map(|id| match self.effects[*id] {
                Effect::Note(v) => Some((with_hlc(*id), v)),
                _ => None,
            })
            .collect();
        notes.sort();
        match notes.len() {
            0 => {}
            1 => {
                out.insert("note".to_owned(), AttrValue::S(format!("v{}", notes[0].1)));
            }
            _ => {
                let l = notes
                    .iter()
                    .map(|(_, v)| AttrValue::S(format!("v{v}")))
                    .collect();
                out.insert("note".to_owned(), AttrValue::L(l));
            }
        }
        let tags: BTreeSet<String> = live
            .iter()
            .filter_map(|id| match self.effects[*id] {
                Effect::Tag(t) => Some(format!("t{t}")),
                _ => None,
            })
            .collect();
        if !tags.is_empty() {
            out.insert("tags".to_owned(), AttrValue::Ss(tags));
        }
        // Counter: the increments no reset knew of.
        let mut base: BTreeMap<usize, u32> = BTreeMap::new();
        for ev in self.events.iter().filter(|e| e.reset) {
            for (region, idx) in &ev.counter_know {
                let b = base.entry(*region).or_insert(0);
                *b = (*b).max(*idx);
            }
        }
        let surviving: Vec<i64> = self
            .events
            .iter()
            .filter_map(|e| e.increment.map(|(idx, n)| (e.origin, idx, n)))
            .filter(|(o, idx, _)| *idx > base.get(o).copied().unwrap_or(0))
            .map(|(_, _, n)| n)
            .collect();
        if !surviving.is_empty() {
            let sum: i64 = surviving.iter().sum();
            out.insert(
                "qty".to_owned(),
                AttrValue::N(sum.to_string().parse().expect("number")),
            );
        }
        Some(out)
    }
}

/// Flattens a view to plain values: `multi` siblings become a list.
fn flat(state: &ItemState) -> Option<BTreeMap<String, AttrValue>> {
    state.view().map(|attrs| {
        attrs
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    AttrView::Value { value, .. } => value,
                    AttrView::Siblings(s) => AttrValue::L(s.into_iter().map(|(v, _)| v).collect()),
                };
                (k.as_str().to_owned(), v)
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Running a history on real replicas.

struct Run {
    deltas: Vec<ItemState>,
    replicas: Vec<ItemState>,
    model: Model,
    ref_replicas: Vec<RefReplica>,
}

fn run(n: usize, steps: &[Step]) -> Run {
    let schema = schema();
    let wall = ManualClock::new(1_000_000);
    let mut clocks: Vec<HybridClock<ManualClock>> = (0..n)
        .map(|_| HybridClock::new(wall.clone(), Hlc::default(), Duration::from_secs(3600)))
        .collect();
    let mut replicas = vec![ItemState::new(); n];
    let mut ref_replicas = vec![RefReplica::default(); n];
    let mut model = Model {
        events: Vec::new(),
        effects: Vec::new(),
    };
    let mut deltas: Vec<ItemState> = Vec::new();
    let mut hlcs: Vec<Hlc> = Vec::new();
    for step in steps {
        match step {
            Step::Local { replica, op } => {
                wall.advance(Duration::from_millis(1));
                let hlc = clocks[*replica].now();
                let prepared = replicas[*replica]
                    .prepare(&schema, &region(*replica), hlc, &to_ops(op))
                    .expect("generated ops are valid");
                replicas[*replica] = prepared.state;
                deltas.push(prepared.delta);
                hlcs.push(hlc);
                model.local(&mut ref_replicas[*replica], *replica, hlc, op);
            }
            Step::Deliver {
                replica,
                pick,
                times,
            } => {
                if deltas.is_empty() {
                    continue;
                }
                let e = pick % deltas.len();
                for _ in 0..*times {
                    replicas[*replica].join(&deltas[e]);
                }
                clocks[*replica]
                    .observe(hlcs[e])
                    .expect("no skew in this test");
                model.receive(&mut ref_replicas[*replica], e);
            }
        }
    }
    Run {
        deltas,
        replicas,
        model,
        ref_replicas,
    }
}

/// A deterministic shuffle with duplicates: every delta 1–3 times.
fn delivery_order(len: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut order: Vec<usize> = (0..len)
        .flat_map(|i| std::iter::repeat_n(i, 1 + (i % 3)))
        .collect();
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Every state some replica held during one random run: states drawn from
/// one history, so a dot means the same write in all of them.
fn states_of_one_run() -> impl Strategy<Value = Vec<ItemState>> {
    (3usize..=4, gen_steps(4, 30)).prop_map(|(n, steps)| {
        let mut pool = Vec::new();
        for i in 1..=steps.len() {
            let steps: Vec<Step> = steps[..i]
                .iter()
                .map(|s| match s.clone() {
                    Step::Local { replica, op } => Step::Local {
                        replica: replica % n,
                        op,
                    },
                    Step::Deliver {
                        replica,
                        pick,
                        times,
                    } => Step::Deliver {
                        replica: replica % n,
                        pick,
                        times,
                    },
                })
                .collect();
            pool.extend(run(n, &steps).replicas);
        }
        pool
    })
}

fn pick3() -> impl Strategy<Value = (ItemState, ItemState, ItemState)> {
    (states_of_one_run(), any::<(usize, usize, usize)>()).prop_map(|(pool, (i, j, k))| {
        let at = |x: usize| pool[x % pool.len()].clone();
        (at(i), at(j), at(k))
    })
}

fn joined(a: &ItemState, b: &ItemState) -> ItemState {
    let mut x = a.clone();
    x.join(b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn join_is_commutative((a, b, _) in pick3()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
    }

    #[test]
    fn join_is_associative((a, b, c) in pick3()) {
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
    }

    #[test]
    fn join_is_idempotent((a, b, _) in pick3()) {
        prop_assert_eq!(joined(&a, &a), a.clone());
        let ab = joined(&a, &b);
        prop_assert_eq!(joined(&ab, &b), ab.clone());
    }
}

/// The stores write item states and log entries with a hand-written
/// encoder; it must give exactly the bytes of the serde encoding (which the
/// decoder reads), sealed in the envelope.
fn assert_encoders_agree(state: &ItemState) -> Result<(), TestCaseError> {
    let serde = postcard::to_allocvec(state).expect("serde encodes");
    let direct = encode_item_state(state).expect("encodes");
    prop_assert_eq!(&direct, &seal_payload(&serde));
    prop_assert_eq!(&decode_item_state(&direct).expect("decodes"), state);
    let mut deps = VersionVector::new();
    deps.set(region(1), Seq(7));
    deps.set(region(2), Seq(300));
    let key = ItemKey::new(
        TableName::new("t").expect("table"),
        Scalar::S("pk".into()),
        Some(Scalar::N("-1.5".parse().expect("number"))),
    )
    .expect("key");
    let entry = LogEntry {
        origin: region(0),
        seq: Seq(1 << 40),
        hlc: Hlc::new(1_700_000_000_000, 3),
        deps,
        key,
        delta: state.clone(),
    };
    let (_, direct) = encode_log_record(&entry).expect("encodes");
    let serde = postcard::to_allocvec(&entry).expect("serde encodes");
    prop_assert_eq!(&direct, &seal_payload(&serde));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_stores_encoder_writes_the_serde_bytes(pool in states_of_one_run()) {
        for state in &pool {
            assert_encoders_agree(state)?;
        }
    }
}

/// The stores decode item states with a hand-written reader; on any bytes
/// it must agree with the serde decoder (postcard through the compact
/// form): the same state, or both refusing.
fn assert_decoders_agree(payload: &[u8]) -> Result<(), TestCaseError> {
    let serde = match postcard::take_from_bytes::<ItemState>(payload) {
        Ok((state, [])) => Some(state),
        _ => None,
    };
    let direct = decode_item_state(&seal_payload(payload)).ok();
    prop_assert_eq!(direct, serde, "payload {:02x?}", payload);
    Ok(())
}

/// An edit of an encoded state: overwrite, cut or insert bytes.
#[derive(Debug, Clone)]
enum Edit {
    Overwrite(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    /// Inserts the byte `n` times: a run of continuation bytes lengthens a
    /// varint, up to and past its width.
    Insert(prop::sample::Index, u8, usize),
}

/// Bytes that mean something in the format (option and variant tags,
/// varint continuation) more often than uniform bytes would.
fn gen_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(vec![0u8, 1, 2, 3, 4, 0x7f, 0x80, 0x81, 0xff]),
        any::<u8>(),
    ]
}

fn gen_edit() -> impl Strategy<Value = Edit> {
    let at = any::<prop::sample::Index>;
    prop_oneof![
        6 => (at(), gen_byte()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        1 => at().prop_map(Edit::Truncate),
        2 => (at(), gen_byte(), 1usize..12).prop_map(|(i, b, n)| Edit::Insert(i, b, n)),
    ]
}

fn apply_edit(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Overwrite(at, b) => {
            let i = at.index(bytes.len().max(1));
            if let Some(x) = bytes.get_mut(i) {
                *x = *b;
            }
        }
        Edit::Truncate(at) => bytes.truncate(at.index(bytes.len().max(1))),
        Edit::Insert(at, b, n) => {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, std::iter::repeat_n(*b, *n));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_stores_decoder_agrees_with_serde_on_any_bytes(
        pool in states_of_one_run(),
        edits in proptest::collection::vec(gen_edit(), 1..16),
    ) {
        for state in &pool {
            let bytes = postcard::to_allocvec(state).expect("encodes");
            assert_decoders_agree(&bytes)?;
            // Each edit alone, then all of them together.
            let mut all = bytes.clone();
            for edit in &edits {
                let mut one = bytes.clone();
                apply_edit(&mut one, edit);
                assert_decoders_agree(&one)?;
                apply_edit(&mut all, edit);
            }
            assert_decoders_agree(&all)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replicas_converge_and_agree_with_the_reference_model(
        n in 3usize..=5,
        steps in gen_steps(5, 40),
        seed in any::<u64>(),
    ) {
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|s| match s {
                Step::Local { replica, op } => Step::Local { replica: replica % n, op },
                Step::Deliver { replica, pick, times } => Step::Deliver { replica: replica % n, pick, times },
            })
            .collect();
        let Run { deltas, mut replicas, model, ref_replicas } = run(n, &steps);

        // Full-state merge of the replicas as they stand (anti-entropy).
        let merged_states = replicas.iter().fold(ItemState::new(), |acc, s| joined(&acc, s));

        // Every replica now receives every delta, in its own random order,
        // each 1–3 times.
        for (i, r) in replicas.iter_mut().enumerate() {
            for e in delivery_order(deltas.len(), seed.wrapping_add(i as u64)) {
                r.join(&deltas[e]);
            }
        }
        for (i, r) in replicas.iter().enumerate().skip(1) {
            prop_assert_eq!(r, &replicas[0], "replica {} differs from replica 0", i);
        }

        // Delta application equals state merge.
        let from_deltas = deltas.iter().fold(ItemState::new(), |acc, d| joined(&acc, d));
        prop_assert_eq!(&from_deltas, &replicas[0]);
        prop_assert_eq!(joined(&merged_states, &from_deltas), from_deltas.clone());

        // The converged state means what the reference model says.
        prop_assert_eq!(flat(&replicas[0]), model.converged_view());
        prop_assert!(ref_replicas.len() == n);
    }
}

/// The documented semantics, spelled out on small fixed histories.
mod examples {
    use super::*;

    fn change(state: &ItemState, r: usize, hlc: u64, op: &GenOp) -> (ItemState, ItemState) {
        let p = state
            .prepare(&schema(), &region(r), Hlc::new(hlc, 0), &to_ops(op))
            .expect("valid");
        (p.delta, p.state)
    }

    #[test]
    fn concurrent_updates_of_different_attributes_both_survive() {
        let (_, base) = change(&ItemState::new(), 0, 1, &GenOp::Touch);
        let (d1, mut a) = change(&base, 0, 2, &GenOp::SetName(1));
        let (d2, mut b) = change(&base, 1, 3, &GenOp::SetNote(2));
        a.join(&d2);
        b.join(&d1);
        assert_eq!(a, b);
        let v = flat(&a).expect("exists");
        assert_eq!(v.get("name"), Some(&AttrValue::S("v1".into())));
        assert_eq!(v.get("note"), Some(&AttrValue::S("v2".into())));
    }

    #[test]
    fn an_update_concurrent_with_a_delete_survives_and_counters_reset_only_what_was_seen() {
        let (_, base) = change(&ItemState::new(), 0, 1, &GenOp::Add(5));
        let (del, mut a) = change(&base, 0, 2, &GenOp::Delete);
        let (upd, mut b) = change(&base, 1, 3, &GenOp::Add(2));
        a.join(&upd);
        b.join(&del);
        assert_eq!(a, b);
        let v = flat(&a).expect("the concurrent update keeps the item");
        assert_eq!(v.get("qty"), Some(&AttrValue::N("2".parse().expect("n"))));
    }

    #[test]
    fn add_wins_over_a_concurrent_remove() {
        let (_, base) = change(&ItemState::new(), 0, 1, &GenOp::AddTag(1));
        let (rm, mut a) = change(&base, 0, 2, &GenOp::RemoveTag(1));
        let (add, mut b) = change(&base, 1, 3, &GenOp::AddTag(1));
        a.join(&add);
        b.join(&rm);
        assert_eq!(flat(&a), flat(&b));
        assert_eq!(
            flat(&a).and_then(|v| v.get("tags").cloned()),
            Some(AttrValue::Ss(["t1".to_owned()].into()))
        );
    }

    #[test]
    fn lww_picks_the_greatest_hlc_and_multi_keeps_siblings() {
        let (_, base) = change(&ItemState::new(), 0, 1, &GenOp::Touch);
        // Region 0 writes name then note; region 1, concurrently, the same.
        let (d1, a1) = change(&base, 0, 5, &GenOp::SetName(1));
        let (d4, mut a) = change(&a1, 0, 7, &GenOp::SetNote(4));
        let (d2, b1) = change(&base, 1, 4, &GenOp::SetName(2));
        let (d3, _) = change(&b1, 1, 6, &GenOp::SetNote(3));
        for d in [&d2, &d3, &d4, &d1] {
            a.join(d);
        }
        let v = flat(&a).expect("exists");
        assert_eq!(v.get("name"), Some(&AttrValue::S("v1".into())));
        assert_eq!(
            v.get("note"),
            Some(&AttrValue::L(vec![
                AttrValue::S("v3".into()),
                AttrValue::S("v4".into())
            ]))
        );
    }
}
