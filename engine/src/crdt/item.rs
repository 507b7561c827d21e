//! The item CRDT: a causal map from attribute names to per-policy stores,
//! sharing one causal context (delta-state CRDTs, Almeida et al. 2016).
//!
//! An [`ItemState`] is both a full state and a delta: a delta is simply a
//! small state holding the new dots of one change plus, in its context, the
//! dots that change superseded. [`ItemState::join`] is the only merge, used
//! for deltas from peers, for full-state anti-entropy and for bootstrap, so
//! delta application agrees with state merge by construction.
//!
//! Invariants:
//! - every dot in a store (`alive`, registers, set elements) is in `ctx`;
//! - one dot names one effect of one write and lives in exactly one store;
//!   equal dots carry equal values;
//! - a dot absent from a store but present in `ctx` was removed, and stays
//!   removed whatever arrives later (observed-remove);
//! - empty stores are dropped, so equal information means equal states.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::context::CausalContext;
use super::counter::{CounterOverflow, CounterState};
use super::sorted::{SortedMap, SortedSet};
use crate::change::Op;
use crate::ids::{AttrName, Dot, Hlc, RegionId};
use crate::schema::{MergePolicy, TableSchema};
use crate::value::{AttrValue, Scalar, ValueError};

/// One written value of a register, with the HLC it was written at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// When it was written.
    pub hlc: Hlc,
    /// The value; `None` is an `lww` tombstone (the attribute was removed).
    pub value: Option<AttrValue>,
}

/// The store of one attribute; the variant follows the attribute's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrState {
    /// `lww`: siblings of concurrent writes; the greatest `(hlc, region,
    /// counter)` is the value.
    Lww(SortedMap<Dot, Sibling>),
    /// `multi`: siblings of concurrent writes, all visible.
    Multi(SortedMap<Dot, Sibling>),
    /// `set`: each element with the dots of the adds that put it there.
    Set(SortedMap<Scalar, SortedSet<Dot>>),
    /// `counter`.
    Counter(CounterState),
}

impl AttrState {
    fn rank(&self) -> u8 {
        match self {
            AttrState::Lww(_) => 0,
            AttrState::Multi(_) => 1,
            AttrState::Set(_) => 2,
            AttrState::Counter(_) => 3,
        }
    }

    fn is_bottom(&self) -> bool {
        match self {
            AttrState::Lww(m) | AttrState::Multi(m) => m.is_empty(),
            AttrState::Set(m) => m.is_empty(),
            AttrState::Counter(c) => c.is_bottom(),
        }
    }

    /// Every dot the store holds.
    fn dots(&self) -> Box<dyn Iterator<Item = &Dot> + '_> {
        match self {
            AttrState::Lww(m) | AttrState::Multi(m) => Box::new(m.keys()),
            AttrState::Set(m) => Box::new(m.values().flatten()),
            AttrState::Counter(_) => Box::new(std::iter::empty()),
        }
    }

    fn empty_like(&self) -> AttrState {
        match self {
            AttrState::Lww(_) => AttrState::Lww(SortedMap::new()),
            AttrState::Multi(_) => AttrState::Multi(SortedMap::new()),
            AttrState::Set(_) => AttrState::Set(SortedMap::new()),
            AttrState::Counter(_) => AttrState::Counter(CounterState::default()),
        }
    }

    /// Joins `other` (with contexts `mine` / `theirs`) into `self`.
    fn join(&mut self, mine: &CausalContext, other: &AttrState, theirs: &CausalContext) {
        match (self, other) {
            (AttrState::Lww(a), AttrState::Lww(b)) | (AttrState::Multi(a), AttrState::Multi(b)) => {
                join_dot_fun(a, mine, b, theirs);
            }
            (AttrState::Set(a), AttrState::Set(b)) => {
                // Elements both hold, or only `a`; then those only `b`
                // holds (no element is cloned but those `a` gains).
                let empty = SortedSet::new();
                for (k, dots) in a.iter_mut() {
                    join_dot_set(dots, mine, b.get(k).unwrap_or(&empty), theirs);
                }
                for (k, their_dots) in b.iter() {
                    if a.contains_key(k) {
                        continue;
                    }
                    let fresh: SortedSet<Dot> = their_dots
                        .iter()
                        .filter(|d| !mine.contains(d))
                        .cloned()
                        .collect();
                    if !fresh.is_empty() {
                        a.insert(k.clone(), fresh);
                    }
                }
                a.retain(|_, dots| !dots.is_empty());
            }
            (AttrState::Counter(a), AttrState::Counter(b)) => a.join(b),
            (this, other) => {
                // Two regions disagree on the attribute's policy (a schema
                // mismatch). Resolve deterministically: the higher-ranked
                // store wins, filtered by the other side's context.
                if other.rank() > this.rank() {
                    let mut winner = other.empty_like();
                    winner.join(mine, other, theirs);
                    *this = winner;
                } else {
                    let empty = this.empty_like();
                    this.join(mine, &empty, theirs);
                }
            }
        }
    }
}

fn join_dot_set(
    a: &mut SortedSet<Dot>,
    mine: &CausalContext,
    b: &SortedSet<Dot>,
    theirs: &CausalContext,
) {
    a.retain(|d| b.contains(d) || !theirs.contains(d));
    for d in b {
        if !mine.contains(d) {
            a.insert(d.clone());
        }
    }
}

fn join_dot_fun(
    a: &mut SortedMap<Dot, Sibling>,
    mine: &CausalContext,
    b: &SortedMap<Dot, Sibling>,
    theirs: &CausalContext,
) {
    a.retain(|d, _| b.contains_key(d) || !theirs.contains(d));
    for (d, v) in b.iter() {
        if !mine.contains(d) {
            a.insert(d.clone(), v.clone());
        }
    }
}

/// Why a change cannot be applied to an item. Every variant means "refuse
/// this change" (for a source: dead-letter the record); none is transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The op targets a key attribute; keys are immutable.
    #[error("attribute {attr} is part of the key and cannot be changed")]
    KeyAttribute {
        /// The attribute.
        attr: AttrName,
    },
    /// The op does not fit the attribute's merge policy.
    #[error("attribute {attr} has merge policy {policy}: {hint}")]
    WrongPolicy {
        /// The attribute.
        attr: AttrName,
        /// Its policy.
        policy: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A set element has another type than the set's elements.
    #[error("set {attr} holds {expected} elements, got {found}")]
    SetElementType {
        /// The set.
        attr: AttrName,
        /// The type of the existing elements.
        expected: &'static str,
        /// The type given.
        found: &'static str,
    },
    /// A value breaks DynamoDB's rules.
    #[error("attribute {attr}: {source}")]
    Value {
        /// The attribute.
        attr: AttrName,
        /// What is wrong.
        source: ValueError,
    },
    /// A counter would overflow.
    #[error("counter {attr} would overflow")]
    CounterOverflow {
        /// The counter.
        attr: AttrName,
    },
    /// The item would exceed DynamoDB's item size limit.
    #[error("item would be {size} bytes, more than the {max}-byte limit")]
    ItemTooLarge {
        /// The item's size after the change.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Where a visible value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The region that wrote it.
    pub region: RegionId,
    /// The HLC it was written at.
    pub hlc: Hlc,
}

/// What a reader sees of one attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrView {
    /// One value (`lww`, `set`, `counter`, or a `multi` without conflict).
    Value {
        /// The value.
        value: AttrValue,
        /// Who wrote it (`None` for sets and counters, which many regions
        /// write together).
        provenance: Option<Provenance>,
    },
    /// Concurrent values of a `multi` register, ordered by `(hlc, region)`.
    Siblings(Vec<(AttrValue, Provenance)>),
}

/// The result of [`ItemState::prepare`]: the delta to log and ship, and the
/// item's state with the delta applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// What peers receive.
    pub delta: ItemState,
    /// The new local state (`old ⊔ delta`).
    pub state: ItemState,
}

/// The replicated state of one item (also used as a delta). Its serialized
/// form is the compact one of `crdt/encoding.rs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemState {
    ctx: CausalContext,
    alive: SortedSet<Dot>,
    attrs: SortedMap<AttrName, AttrState>,
}

impl ItemState {
    /// The state of an item nobody wrote.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if the item exists (some write is not covered by a delete).
    pub fn exists(&self) -> bool {
        !self.alive.is_empty()
    }

    /// True if the state holds no information (not even a delete).
    pub fn is_bottom(&self) -> bool {
        self.ctx.is_empty() && self.attrs.is_empty()
    }

    /// The causal context.
    pub fn context(&self) -> &CausalContext {
        &self.ctx
    }

    /// The attribute stores.
    pub fn attrs(&self) -> &SortedMap<AttrName, AttrState> {
        &self.attrs
    }

    /// The dots that keep the item alive.
    pub fn alive(&self) -> &SortedSet<Dot> {
        &self.alive
    }

    /// Rebuilds a state from its parts (decoders; property tests).
    pub fn from_parts(
        ctx: CausalContext,
        alive: SortedSet<Dot>,
        attrs: SortedMap<AttrName, AttrState>,
    ) -> Self {
        ItemState { ctx, alive, attrs }
    }

    /// Joins `other` into `self`: commutative, associative and idempotent.
    pub fn join(&mut self, other: &ItemState) {
        // ⊥ ⊔ x = x: the common case of a new item skips the store-by-store
        // walk (a stored or received state never holds an empty store, but
        // a malformed one might, so check).
        if self.join_is_copy(other) {
            self.clone_from(other);
            return;
        }
        join_dot_set(&mut self.alive, &self.ctx, &other.alive, &other.ctx);
        for (name, theirs) in other.attrs.iter() {
            match self.attrs.get_mut(name) {
                Some(mine) => mine.join(&self.ctx, theirs, &other.ctx),
                None => {
                    let mut fresh = theirs.empty_like();
                    fresh.join(&self.ctx, theirs, &other.ctx);
                    self.attrs.insert(name.clone(), fresh);
                }
            }
        }
        for (name, mine) in self.attrs.iter_mut() {
            if !other.attrs.contains_key(name) {
                let empty = mine.empty_like();
                mine.join(&self.ctx, &empty, &other.ctx);
            }
        }
        self.attrs.retain(|_, a| !a.is_bottom());
        self.ctx.join(&other.ctx);
    }

    /// True when `self ⊔ other` is `other` as it is (`self` is ⊥ and
    /// `other` holds no empty store).
    fn join_is_copy(&self, other: &ItemState) -> bool {
        self.is_bottom() && self.alive.is_empty() && other.attrs.values().all(|a| !a.is_bottom())
    }

    /// Turns a change made at `origin` at time `hlc` into a delta against
    /// this (current, local) state, and the state after it. Pure: `self` is
    /// not modified. Validates every op against the schema and the item
    /// size limit.
    pub fn prepare(
        &self,
        schema: &TableSchema,
        origin: &RegionId,
        hlc: Hlc,
        ops: &[Op],
    ) -> Result<Prepared, OpError> {
        let (delta, state) = self.prepare_delta(schema, origin, hlc, ops)?;
        let state = state.unwrap_or_else(|| delta.clone());
        Ok(Prepared { delta, state })
    }

    /// [`ItemState::prepare`], with the new state `None` when it equals
    /// the delta (a change to ⊥: the delta is the whole new state), so the
    /// caller can do without a second copy.
    pub(crate) fn prepare_delta(
        &self,
        schema: &TableSchema,
        origin: &RegionId,
        hlc: Hlc,
        ops: &[Op],
    ) -> Result<(ItemState, Option<ItemState>), OpError> {
        let delta = self.build_delta(schema, origin, hlc, ops)?;
        let state = if self.join_is_copy(&delta) {
            None
        } else {
            let mut state = self.clone();
            state.join(&delta);
            Some(state)
        };
        check_size(state.as_ref().unwrap_or(&delta).size(schema))?;
        Ok((delta, state))
    }

    /// [`ItemState::prepare_delta`] applied to `self`: returns the delta,
    /// and `self` becomes the new state — unless that is the delta itself
    /// (`self` was ⊥), which the second value tells and leaves `self` as
    /// it was. On an error `self` is unchanged.
    ///
    /// The log's writer uses it for every local change: a hot item's state
    /// is joined where it is instead of cloned, joined and dropped. The
    /// item size limit needs the size after the join; when the sizes
    /// before it bound that well below the limit, the join happens in
    /// place, and only an item near the limit pays for a trial copy.
    pub(crate) fn prepare_in_place(
        &mut self,
        schema: &TableSchema,
        origin: &RegionId,
        hlc: Hlc,
        ops: &[Op],
    ) -> Result<(ItemState, bool), OpError> {
        let delta = self.build_delta(schema, origin, hlc, ops)?;
        if self.join_is_copy(&delta) {
            check_size(delta.size(schema))?;
            return Ok((delta, true));
        }
        if self.size_bound_after(&delta, schema) <= crate::value::MAX_ITEM_BYTES {
            self.join(&delta);
            return Ok((delta, false));
        }
        let mut state = self.clone();
        state.join(&delta);
        check_size(state.size(schema))?;
        *self = state;
        Ok((delta, false))
    }

    /// An upper bound of `(self ⊔ delta).size(schema)` for a `delta` that
    /// [`ItemState::build_delta`] made from `self`. Such a delta
    /// supersedes every sibling of each register it writes and only adds
    /// set elements and siblings, so what is visible after the join is
    /// visible in `self` or in `delta`, except a counter's value, which
    /// may grow to any size a number has: each counter the delta touches
    /// adds its name and the largest number's size.
    fn size_bound_after(&self, delta: &ItemState, schema: &TableSchema) -> usize {
        /// `integer_size` of an `i128` is at most this (39 digits).
        const MAX_COUNTER_BYTES: usize = 21;
        let counters: usize = delta
            .attrs
            .iter()
            .filter(|(_, a)| matches!(a, AttrState::Counter(_)))
            .map(|(name, _)| name.as_str().len() + MAX_COUNTER_BYTES)
            .sum();
        self.visible_bytes(schema) + delta.visible_bytes(schema) + counters
    }

    /// The delta of a change made at `origin` at time `hlc` against this
    /// state: its ops validated, the item size not yet checked.
    fn build_delta(
        &self,
        schema: &TableSchema,
        origin: &RegionId,
        hlc: Hlc,
        ops: &[Op],
    ) -> Result<ItemState, OpError> {
        let mut delta = ItemState {
            attrs: SortedMap::with_capacity(ops.len()),
            ..ItemState::new()
        };
        // The change supersedes the dots that kept the item alive so far.
        delta
            .ctx
            .join(&CausalContext::from_parts([], self.alive.iter().cloned()));
        let mut builder = DeltaBuilder {
            base: self,
            schema,
            origin,
            hlc,
            next: self.ctx.max(origin) + 1,
            delta,
            deleted: false,
        };
        for op in ops {
            builder.apply(op)?;
        }
        // The item exists after the change unless its last op is a delete.
        if !matches!(ops.last(), Some(Op::Delete)) {
            let dot = builder.fresh();
            builder.delta.alive.insert(dot);
        }
        Ok(builder.delta)
    }

    /// What readers see: `None` if the item does not exist.
    pub fn view(&self) -> Option<BTreeMap<AttrName, AttrView>> {
        if !self.exists() {
            return None;
        }
        let mut out = BTreeMap::new();
        for (name, attr) in self.attrs.iter() {
            if let Some(v) = view_attr(attr) {
                out.insert(name.clone(), v);
            }
        }
        Some(out)
    }

    /// The visible values (for `multi` siblings, the greatest one), the
    /// shape a database sink writes.
    pub fn values(&self) -> Option<BTreeMap<AttrName, AttrValue>> {
        self.view().map(|attrs| {
            attrs
                .into_iter()
                .filter_map(|(name, v)| match v {
                    AttrView::Value { value, .. } => Some((name, value)),
                    AttrView::Siblings(mut s) => s.pop().map(|(value, _)| (name, value)),
                })
                .collect()
        })
    }

    /// Roughly how many bytes this state occupies in memory, allocations
    /// included: what an in-memory cache of states weighs it at. An
    /// estimate (collection nodes are counted per element), cheap to
    /// compute: one walk, no allocation.
    pub fn memory_estimate(&self) -> usize {
        /// A map or set element's share of its collection, beside the
        /// element itself.
        const NODE: usize = 32;
        /// A dot: its region id (a heap string) and counter.
        const DOT: usize = NODE + 48;
        let siblings = |m: &SortedMap<Dot, Sibling>| {
            m.values()
                .map(|s| DOT + 40 + s.value.as_ref().map_or(0, AttrValue::size))
                .sum::<usize>()
        };
        let attrs: usize = self
            .attrs
            .iter()
            .map(|(name, a)| {
                NODE + 24
                    + name.as_str().len()
                    + match a {
                        AttrState::Lww(m) | AttrState::Multi(m) => siblings(m),
                        AttrState::Set(m) => m
                            .iter()
                            .map(|(e, dots)| NODE + 32 + e.size() + DOT * dots.len())
                            .sum(),
                        AttrState::Counter(c) => DOT * c.entries(),
                    }
            })
            .sum();
        std::mem::size_of::<Self>() + DOT * (self.ctx.entries() + self.alive.len()) + attrs
    }

    /// The item's size by DynamoDB's rules, key attributes included.
    pub fn size(&self, schema: &TableSchema) -> usize {
        if !self.exists() {
            return 0;
        }
        self.visible_bytes(schema)
    }

    /// [`ItemState::size`] as if the item existed.
    fn visible_bytes(&self, schema: &TableSchema) -> usize {
        let key_names = schema.partition_key().as_str().len()
            + schema.sort_key().map_or(0, |k| k.as_str().len());
        key_names
            + self
                .attrs
                .iter()
                .map(|(name, a)| match visible_size(a) {
                    0 => 0,
                    n => name.as_str().len() + n,
                })
                .sum::<usize>()
    }
}

/// Refuses an item over DynamoDB's size limit.
fn check_size(size: usize) -> Result<(), OpError> {
    if size > crate::value::MAX_ITEM_BYTES {
        return Err(OpError::ItemTooLarge {
            size,
            max: crate::value::MAX_ITEM_BYTES,
        });
    }
    Ok(())
}

/// The size of what readers see of one attribute (0 when invisible),
/// computed without building the view.
fn visible_size(attr: &AttrState) -> usize {
    match attr {
        AttrState::Lww(m) => m
            .iter()
            .max_by(|(da, sa), (db, sb)| {
                (sa.hlc, &da.region, da.counter).cmp(&(sb.hlc, &db.region, db.counter))
            })
            .and_then(|(_, s)| s.value.as_ref())
            .map_or(0, AttrValue::size),
        AttrState::Multi(m) => m
            .values()
            .filter_map(|s| s.value.as_ref())
            .map(AttrValue::size)
            .sum(),
        AttrState::Set(m) => m.keys().map(Scalar::size).sum(),
        AttrState::Counter(c) => match c.value() {
            Ok(v) if c.is_present() => crate::value::integer_size(v),
            _ => 0,
        },
    }
}

fn view_attr(attr: &AttrState) -> Option<AttrView> {
    let prov = |d: &Dot, s: &Sibling| Provenance {
        region: d.region.clone(),
        hlc: s.hlc,
    };
    match attr {
        AttrState::Lww(m) => {
            let (dot, sib) = m.iter().max_by(|(da, sa), (db, sb)| {
                (sa.hlc, &da.region, da.counter).cmp(&(sb.hlc, &db.region, db.counter))
            })?;
            let value = sib.value.clone()?;
            Some(AttrView::Value {
                value,
                provenance: Some(prov(dot, sib)),
            })
        }
        AttrState::Multi(m) => {
            let mut s: Vec<(AttrValue, Provenance)> = m
                .iter()
                .filter_map(|(d, s)| s.value.clone().map(|v| (v, prov(d, s))))
                .collect();
            s.sort_by(|(_, a), (_, b)| (a.hlc, &a.region).cmp(&(b.hlc, &b.region)));
            match s.len() {
                0 => None,
                1 => s.pop().map(|(value, p)| AttrView::Value {
                    value,
                    provenance: Some(p),
                }),
                _ => Some(AttrView::Siblings(s)),
            }
        }
        AttrState::Set(m) => {
            crate::value::set_value(m.keys().cloned()).map(|value| AttrView::Value {
                value,
                provenance: None,
            })
        }
        AttrState::Counter(c) => {
            if !c.is_present() {
                return None;
            }
            // An overflowing sum (beyond i128) cannot be shown; the attribute
            // is then hidden rather than shown wrong. Writes refuse to get there.
            let value = c.value().ok()?;
            Some(AttrView::Value {
                value: AttrValue::N(crate::value::Number::from_i128(value)),
                provenance: None,
            })
        }
    }
}

/// The dot `(origin, next)`, added to `ctx`; `next` moves on.
fn fresh_dot(ctx: &mut CausalContext, origin: &RegionId, next: &mut u64) -> Dot {
    let dot = Dot::new(origin.clone(), *next);
    *next += 1;
    ctx.insert(dot.clone());
    dot
}

/// Builds the delta of one change, op by op.
struct DeltaBuilder<'a> {
    base: &'a ItemState,
    schema: &'a TableSchema,
    origin: &'a RegionId,
    hlc: Hlc,
    /// The counter of the next dot this change creates: every effect (the
    /// alive marker, each register write, each added set element) gets a
    /// dot of its own, because a dot must live in exactly one store.
    next: u64,
    delta: ItemState,
    /// A delete came earlier in this change: the base's contents are gone.
    deleted: bool,
}

impl DeltaBuilder<'_> {
    /// A new dot of this change, already in the delta's context.
    fn fresh(&mut self) -> Dot {
        fresh_dot(&mut self.delta.ctx, self.origin, &mut self.next)
    }

    fn apply(&mut self, op: &Op) -> Result<(), OpError> {
        let Some(attr) = op.attr() else {
            self.delete();
            return Ok(());
        };
        if self.schema.is_key(attr) {
            return Err(OpError::KeyAttribute { attr: attr.clone() });
        }
        let policy = self.schema.policy(attr);
        let wrong = |hint| OpError::WrongPolicy {
            attr: attr.clone(),
            policy: policy.name(),
            hint,
        };
        match (op, policy) {
            (Op::Set { value, .. }, MergePolicy::Lww | MergePolicy::Multi) => {
                value
                    .validate(attr.as_str())
                    .map_err(|source| OpError::Value {
                        attr: attr.clone(),
                        source,
                    })?;
                self.write_register(attr, policy, Some(value.clone()));
            }
            (Op::Set { value, .. }, MergePolicy::Set) => {
                let elements = value.set_elements().ok_or_else(|| {
                    wrong("set it to a string, number or binary set (SS, NS, BS)")
                })?;
                self.supersede(attr);
                self.delta.attrs.remove(attr);
                self.add_elements(attr, &elements)?;
            }
            (Op::Set { .. }, MergePolicy::Counter) => {
                return Err(wrong("use add with the difference, or remove to reset it"));
            }
            (Op::Add { amount, .. }, MergePolicy::Counter) => {
                let current = self.counter(attr);
                let delta = current
                    .add_delta(self.origin, *amount)
                    .map_err(|CounterOverflow| OpError::CounterOverflow { attr: attr.clone() })?;
                let mut next = current;
                next.join(&delta);
                next.value()
                    .map_err(|CounterOverflow| OpError::CounterOverflow { attr: attr.clone() })?;
                self.merge_counter(attr, delta);
            }
            (Op::Add { .. }, _) => return Err(wrong("add applies to counter attributes only")),
            (Op::AddToSet { elements, .. }, MergePolicy::Set) => {
                for e in elements {
                    self.supersede_element(attr, e);
                }
                self.add_elements(attr, elements)?;
            }
            (Op::RemoveFromSet { elements, .. }, MergePolicy::Set) => {
                for e in elements {
                    self.supersede_element(attr, e);
                    if let Some(AttrState::Set(m)) = self.delta.attrs.get_mut(attr) {
                        m.remove(e);
                    }
                }
                if self.delta.attrs.get(attr).is_some_and(AttrState::is_bottom) {
                    self.delta.attrs.remove(attr);
                }
            }
            (Op::AddToSet { .. } | Op::RemoveFromSet { .. }, _) => {
                return Err(wrong("set element ops apply to set attributes only"));
            }
            (Op::Remove { .. }, MergePolicy::Lww) => self.write_register(attr, policy, None),
            (Op::Remove { .. }, MergePolicy::Multi | MergePolicy::Set) => {
                self.supersede(attr);
                self.delta.attrs.remove(attr);
            }
            (Op::Remove { .. }, MergePolicy::Counter) => {
                let reset = self.counter(attr).reset_delta();
                self.merge_counter(attr, reset);
            }
            (Op::Delete, _) => self.delete(),
        }
        Ok(())
    }

    /// Puts the dots `attr` holds in the base state into the delta's
    /// context: the change overwrites them.
    fn supersede(&mut self, attr: &AttrName) {
        if let Some(a) = self.base.attrs.get(attr) {
            let dots: Vec<Dot> = a.dots().cloned().collect();
            self.delta.ctx.join(&CausalContext::from_parts([], dots));
        }
    }

    fn supersede_element(&mut self, attr: &AttrName, e: &Scalar) {
        if let Some(AttrState::Set(m)) = self.base.attrs.get(attr)
            && let Some(dots) = m.get(e)
        {
            self.delta
                .ctx
                .join(&CausalContext::from_parts([], dots.iter().cloned()));
        }
    }

    fn write_register(&mut self, attr: &AttrName, policy: MergePolicy, value: Option<AttrValue>) {
        self.supersede(attr);
        let sibling = Sibling {
            hlc: self.hlc,
            value,
        };
        let mut map = SortedMap::new();
        map.insert(self.fresh(), sibling);
        let state = if policy == MergePolicy::Multi {
            AttrState::Multi(map)
        } else {
            AttrState::Lww(map)
        };
        self.delta.attrs.insert(attr.clone(), state);
    }

    fn add_elements(&mut self, attr: &AttrName, elements: &[Scalar]) -> Result<(), OpError> {
        let existing_type = match (self.delta.attrs.get(attr), self.base.attrs.get(attr)) {
            (Some(AttrState::Set(m)), _) if !m.is_empty() => m.keys().next().map(Scalar::type_name),
            (_, Some(AttrState::Set(m))) if !self.deleted => m.keys().next().map(Scalar::type_name),
            _ => None,
        };
        let mut expected = existing_type;
        for e in elements {
            if let Some(t) = expected
                && t != e.type_name()
            {
                return Err(OpError::SetElementType {
                    attr: attr.clone(),
                    expected: t,
                    found: e.type_name(),
                });
            }
            expected = Some(e.type_name());
        }
        if elements.is_empty() {
            return Ok(());
        }
        // The set looked up once for all the elements, each with a fresh
        // dot of its own.
        let ItemState { ctx, attrs, .. } = &mut self.delta;
        let entry = attrs
            .entry(attr.clone())
            .or_insert_with(|| AttrState::Set(SortedMap::new()));
        for e in elements {
            let dot = fresh_dot(ctx, self.origin, &mut self.next);
            if let AttrState::Set(m) = entry {
                let mut dots = SortedSet::new();
                dots.insert(dot);
                m.insert(e.clone(), dots);
            }
        }
        Ok(())
    }

    /// The counter as the change sees it: base joined with this change's
    /// earlier ops.
    fn counter(&self, attr: &AttrName) -> CounterState {
        let mut c = match self.base.attrs.get(attr) {
            Some(AttrState::Counter(c)) => c.clone(),
            _ => CounterState::default(),
        };
        if let Some(AttrState::Counter(d)) = self.delta.attrs.get(attr) {
            c.join(d);
        }
        c
    }

    fn merge_counter(&mut self, attr: &AttrName, delta: CounterState) {
        match self.delta.attrs.get_mut(attr) {
            Some(AttrState::Counter(c)) => c.join(&delta),
            _ => {
                self.delta
                    .attrs
                    .insert(attr.clone(), AttrState::Counter(delta));
            }
        }
    }

    /// Observed-remove of the whole item: everything the base holds is
    /// superseded and counters reset what they observed; ops after the
    /// delete in the same change apply on the empty item.
    fn delete(&mut self) {
        self.deleted = true;
        self.delta.ctx.join(&self.base.ctx);
        let counters: Vec<(AttrName, CounterState)> = self
            .base
            .attrs
            .keys()
            .filter_map(|name| match self.base.attrs.get(name) {
                Some(AttrState::Counter(_)) => {
                    Some((name.clone(), self.counter(name).reset_delta()))
                }
                _ => None,
            })
            .collect();
        self.delta.attrs.clear();
        for (name, reset) in counters {
            self.delta.attrs.insert(name, AttrState::Counter(reset));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ids::TableName;

    fn name(s: &str) -> AttrName {
        AttrName::new(s).expect("valid attribute name")
    }

    fn schema() -> TableSchema {
        [
            ("m", MergePolicy::Multi),
            ("c", MergePolicy::Counter),
            ("s", MergePolicy::Set),
        ]
        .into_iter()
        .try_fold(
            TableSchema::new(TableName::new("t").expect("table"), name("pk"), None)
                .expect("schema"),
            |s, (a, p)| s.with_policy(name(a), p),
        )
        .expect("schema")
    }

    /// Values small, or big enough that three of them cross the item
    /// size limit: the trial copy and the in-place join both run.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-e]{1,6}",
            1 => (130_000usize..140_000).prop_map(|n| "x".repeat(n)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let elements = || prop::collection::vec(text().prop_map(Scalar::S), 1..3);
        prop_oneof![
            (prop_oneof![Just("l1"), Just("l2"), Just("m")], text()).prop_map(|(a, v)| Op::Set {
                attr: name(a),
                value: AttrValue::S(v),
            }),
            prop_oneof![any::<i64>().prop_map(i128::from), Just(i128::MAX / 3)].prop_map(
                |amount| Op::Add {
                    attr: name("c"),
                    amount,
                }
            ),
            elements().prop_map(|elements| Op::AddToSet {
                attr: name("s"),
                elements,
            }),
            elements().prop_map(|elements| Op::RemoveFromSet {
                attr: name("s"),
                elements,
            }),
            prop_oneof![Just("l1"), Just("m"), Just("c"), Just("s")]
                .prop_map(|a| Op::Remove { attr: name(a) }),
            Just(Op::Delete),
        ]
    }

    /// A change: its region (of two) and its ops.
    fn change() -> impl Strategy<Value = (bool, Vec<Op>)> {
        (any::<bool>(), prop::collection::vec(op(), 1..4))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Joining in place gives what the pure path gives: the same
        /// delta and state, the same refusals (the item size limit
        /// included), and a refused change leaves the state as it was.
        #[test]
        fn prepare_in_place_agrees_with_the_pure_path(
            history in prop::collection::vec(change(), 0..8),
            next in change(),
        ) {
            let schema = schema();
            let regions = [RegionId::new("a").expect("r"), RegionId::new("b").expect("r")];
            let mut state = ItemState::new();
            for (i, (which, ops)) in history.iter().enumerate() {
                let hlc = Hlc::new(i as u64 + 1, 0);
                if let Ok(p) = state.prepare(&schema, &regions[usize::from(*which)], hlc, ops) {
                    state = p.state;
                }
            }
            let (which, ops) = next;
            let origin = &regions[usize::from(which)];
            let hlc = Hlc::new(100, 0);
            let pure = state.prepare_delta(&schema, origin, hlc, &ops);
            let mut in_place = state.clone();
            match (pure, in_place.prepare_in_place(&schema, origin, hlc, &ops)) {
                (Ok((d1, s1)), Ok((d2, is_state))) => {
                    prop_assert_eq!(&d1, &d2);
                    prop_assert_eq!(s1.is_none(), is_state);
                    let expected = s1.unwrap_or_else(|| state.clone());
                    prop_assert_eq!(in_place, expected);
                }
                (Err(e1), Err(e2)) => {
                    prop_assert_eq!(e1, e2);
                    prop_assert_eq!(in_place, state);
                }
                (a, b) => prop_assert!(false, "pure {:?} but in place {:?}", a.is_ok(), b.is_ok()),
            }
        }
    }
}
