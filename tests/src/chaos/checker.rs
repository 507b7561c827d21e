//! The checker: a [`History`] and the [`Observations`] of a run in, a
//! [`Verdict`] out. Pure — no I/O, no clock — so it is unit-tested on
//! synthetic histories (`checker/tests.rs`).
//!
//! What it reports, and the exact rule behind each count (values are
//! unique, see `history.rs`, so every effect names its operation):
//! - **lost**: an acknowledged effect missing from a region's final state —
//!   an acknowledged increment's tag absent, or its count missing
//!   (`qty < tags`); an acknowledged set add absent with no remove of it
//!   acknowledged or in doubt; an acknowledged create gone with no delete
//!   acknowledged or in doubt; a register without a value although a write
//!   to it was acknowledged, or holding the value of an acknowledged write
//!   `a` although a later acknowledged write `b` went to the same region
//!   after `a` was acknowledged (`b`'s timestamp is higher there, so `b`
//!   must win); an acknowledged write that a region's `applied` did not
//!   cover in a sample taken after the acknowledgement.
//! - **duplicated**: a counter item whose `qty` exceeds its number of
//!   distinct increment tags (each increment adds 1 and one tag in one
//!   change, so an increment applied twice shows as `qty > tags`); the
//!   count is the excess. With the lost and phantom rules this pins the
//!   counter exactly: `qty = tags`, acknowledged ⊆ tags ⊆ acknowledged ∪
//!   unknown, hence `acked ≤ qty ≤ acked + unknown`.
//! - **zombies** (deleted data that reappears): an element present after
//!   its removal was acknowledged at the region that had acknowledged its
//!   add; an item present after its delete was acknowledged likewise.
//! - **phantoms**: an effect of no operation, or of one the node rejected.
//! - **divergent**: regions whose final digest is missing or differs from
//!   the first region's, or whose last sampled `applied` vector (taken
//!   after the heal and the drain) differs from the first region's.
//! - **offsets**: per region, `applied`, `log_start` or a peer's `acked`
//!   that went backwards between consecutive samples (they are durable, so
//!   not even a restart may move them back); a peer's `acked` above what
//!   that peer itself reported as applied afterwards.
//! - **negative lag**: any negative number in a `lag --json` document.
//! - **visibility**: per acknowledged write, the time from its
//!   acknowledgement until a sample of every region's `applied` covered
//!   its `(origin, seq)`; p50 / p99 / max, and how many never were.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::history::{COUNTERS, DELETES, History, Key, Op, OpKind, Outcome, REGISTERS, SETS};
use super::observe::{ItemView, Observations, RegionState};

/// One violation, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The operation it concerns, if one.
    pub op: Option<usize>,
    /// The region where it was seen, if one.
    pub region: Option<String>,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.region {
            write!(f, "[{r}] ")?;
        }
        if let Some(op) = self.op {
            write!(f, "op {op}: ")?;
        }
        f.write_str(&self.detail)
    }
}

/// Findings of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub(super) fn push(&mut self, op: Option<usize>, region: Option<&str>, detail: String) {
        self.0.push(Finding {
            op,
            region: region.map(str::to_owned),
            detail,
        });
    }

    /// Distinct violations, whatever the regions that showed them: an
    /// acknowledged write lost on three regions is one, so is an item
    /// whose counter is too high on every region.
    pub fn distinct(&self) -> usize {
        let seen: BTreeSet<(Option<usize>, &str)> = self
            .0
            .iter()
            .map(|f| {
                (
                    f.op,
                    if f.op.is_some() {
                        ""
                    } else {
                        f.detail.as_str()
                    },
                )
            })
            .collect();
        seen.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many were measured.
    pub count: usize,
    /// Median, in seconds.
    pub p50_seconds: Option<f64>,
    /// 99th percentile, in seconds.
    pub p99_seconds: Option<f64>,
    /// Maximum, in seconds.
    pub max_seconds: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values`.
    pub fn of(mut values: Vec<Duration>) -> Self {
        values.sort();
        let at = |p: usize| -> Option<f64> {
            if values.is_empty() {
                return None;
            }
            let rank = (p * values.len()).div_ceil(100).max(1);
            Some(values[rank - 1].as_secs_f64())
        };
        Self {
            count: values.len(),
            p50_seconds: at(50),
            p99_seconds: at(99),
            max_seconds: values.last().map(Duration::as_secs_f64),
        }
    }
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Acknowledged effects missing.
    pub lost: Findings,
    /// Effects applied more than once.
    pub duplicated: Findings,
    /// Total excess of counters over their increments (per item, the
    /// largest excess any region showed).
    pub duplicated_effects: u64,
    /// Removed or deleted data present again.
    pub zombies: Findings,
    /// Effects of no operation, or of a rejected one.
    pub phantoms: Findings,
    /// Regions whose digest differs after the heal.
    pub divergent: Findings,
    /// Offsets that went backwards or ahead of the truth.
    pub offsets: Findings,
    /// Negative numbers in lag reports.
    pub negative_lag: Findings,
    /// Visibility latency of acknowledged writes in every region.
    pub visibility: Percentiles,
    /// Acknowledged writes never seen applied in every region's samples.
    pub never_visible: usize,
    /// From the last heal to identical digests, in seconds.
    pub convergence_seconds: Option<f64>,
}

impl Verdict {
    /// True when nothing was violated.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.zombies.is_empty()
            && self.phantoms.is_empty()
            && self.divergent.is_empty()
            && self.offsets.is_empty()
            && self.negative_lag.is_empty()
    }

    /// Up to `limit` findings of each kind, one per line.
    pub fn describe(&self, limit: usize) -> String {
        let mut out = String::new();
        for (name, f) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("zombie", &self.zombies),
            ("phantom", &self.phantoms),
            ("divergent", &self.divergent),
            ("offsets", &self.offsets),
            ("negative lag", &self.negative_lag),
        ] {
            for finding in f.0.iter().take(limit) {
                out.push_str(&format!("{name}: {finding}\n"));
            }
            if f.0.len() > limit {
                out.push_str(&format!("{name}: ... {} more\n", f.0.len() - limit));
            }
        }
        out
    }
}

/// Checks a run.
pub fn check(history: &History, obs: &Observations) -> Verdict {
    let mut v = Verdict::default();
    let by_key = ops_by_key(history);
    let mut excess: BTreeMap<Key, u64> = BTreeMap::new();
    for state in &obs.finals {
        check_items(&by_key, state, &mut v, &mut excess);
    }
    v.duplicated_effects = excess.values().sum();
    check_digests(&obs.finals, &mut v);
    samples::check_final_applied(&obs.regions, &obs.offsets, &mut v);
    samples::check_offsets(history, &obs.offsets, &mut v);
    samples::check_lag(&obs.lag, &mut v);
    let (latencies, never) = samples::visibility(history, &obs.regions, &obs.offsets);
    v.visibility = Percentiles::of(latencies);
    v.never_visible = never;
    v.convergence_seconds = match (obs.healed, obs.converged) {
        (Some(h), Some(c)) => Some(c.saturating_sub(h).as_secs_f64()),
        _ => None,
    };
    v
}

fn ops_by_key(history: &History) -> BTreeMap<&Key, Vec<&Op>> {
    let mut by_key: BTreeMap<&Key, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.kind.key()).or_default().push(op);
    }
    by_key
}

fn is_acked(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok { .. })
}

fn is_failed(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Failed { .. })
}

/// Whether `later` went to the region that acknowledged `earlier`, after
/// the acknowledgement: then that region had `earlier`'s effects when it
/// stamped `later`.
fn observed(earlier: &Op, later: &Op) -> bool {
    is_acked(earlier)
        && later.region == earlier.region
        && earlier.completed.is_some_and(|c| later.invoked >= c)
}

fn check_items(
    by_key: &BTreeMap<&Key, Vec<&Op>>,
    state: &RegionState,
    v: &mut Verdict,
    excess: &mut BTreeMap<Key, u64>,
) {
    let region = Some(state.region.as_str());
    for (key, view) in &state.items {
        let Some(ops) = by_key.get(key) else {
            continue;
        };
        match key.pk.as_str() {
            COUNTERS => {
                let e = check_counter(key, ops, view, region, v);
                if e > 0 {
                    let max = excess.entry(key.clone()).or_default();
                    *max = (*max).max(e);
                }
            }
            SETS => check_set(key, ops, view, region, v),
            REGISTERS => check_register(key, ops, view, region, v),
            DELETES => check_created(key, ops, view, region, v),
            _ => {}
        }
    }
}

/// Returns the counter's excess over its increments (0 if none).
fn check_counter(
    key: &Key,
    ops: &[&Op],
    view: &ItemView,
    region: Option<&str>,
    v: &mut Verdict,
) -> u64 {
    let mut known = BTreeSet::new();
    for op in ops {
        let OpKind::Increment { tag, .. } = &op.kind else {
            continue;
        };
        known.insert(tag.as_str());
        let present = view.tags.contains(tag);
        if is_acked(op) && !present {
            v.lost.push(
                Some(op.index),
                region,
                format!("acknowledged increment {tag} of {key} is missing"),
            );
        }
        if is_failed(op) && present {
            v.phantoms.push(
                Some(op.index),
                region,
                format!("rejected increment {tag} of {key} took effect"),
            );
        }
    }
    for tag in &view.tags {
        if !known.contains(tag.as_str()) {
            v.phantoms.push(
                None,
                region,
                format!("{key} holds tag {tag} that no increment wrote"),
            );
        }
    }
    let tags = i128::try_from(view.tags.len()).unwrap_or(i128::MAX);
    if view.qty > tags {
        let excess = view.qty - tags;
        v.duplicated.push(
            None,
            region,
            format!(
                "{key}: qty {} but {tags} distinct increments ({excess} applied twice)",
                view.qty
            ),
        );
        return u64::try_from(excess).unwrap_or(u64::MAX);
    }
    if view.qty < tags {
        v.lost.push(
            None,
            region,
            format!("{key}: qty {} below its {tags} increments' tags", view.qty),
        );
    }
    0
}

fn check_set(key: &Key, ops: &[&Op], view: &ItemView, region: Option<&str>, v: &mut Verdict) {
    let mut removes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let OpKind::SetRemove { element, .. } = &op.kind {
            removes.entry(element.as_str()).or_default().push(op);
        }
    }
    let mut known = BTreeSet::new();
    for add in ops {
        let OpKind::SetAdd { element, .. } = &add.kind else {
            continue;
        };
        known.insert(element.as_str());
        let present = view.tags.contains(element);
        if is_failed(add) {
            if present {
                v.phantoms.push(
                    Some(add.index),
                    region,
                    format!("rejected add of {element} to {key} took effect"),
                );
            }
            continue;
        }
        if !is_acked(add) {
            continue; // in doubt: present or not, and removes may race it
        }
        let rms = removes.get(element.as_str()).map_or(&[][..], Vec::as_slice);
        let removed = rms.iter().find(|r| is_acked(r) && observed(add, r));
        let in_doubt = rms.iter().any(|r| !is_failed(r));
        match removed {
            Some(rm) if present => v.zombies.push(
                Some(rm.index),
                region,
                format!(
                    "{element} is in {key} after its remove (op {}) was acknowledged",
                    rm.index
                ),
            ),
            None if !present && !in_doubt => v.lost.push(
                Some(add.index),
                region,
                format!("acknowledged add of {element} to {key} is missing"),
            ),
            _ => {}
        }
    }
    for element in &view.tags {
        if !known.contains(element.as_str()) {
            v.phantoms.push(
                None,
                region,
                format!("{key} holds {element} that no add wrote"),
            );
        }
    }
}

fn check_register(key: &Key, ops: &[&Op], view: &ItemView, region: Option<&str>, v: &mut Verdict) {
    let writes: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.kind, OpKind::Write { .. }))
        .collect();
    let value_of = |op: &Op| match &op.kind {
        OpKind::Write { value, .. } => Some(value.clone()),
        _ => None,
    };
    let Some(value) = view.value.as_ref().filter(|_| view.exists) else {
        if let Some(last) = writes.iter().rev().find(|w| is_acked(w)) {
            v.lost.push(
                Some(last.index),
                region,
                format!("{key} has no value although writes to it were acknowledged"),
            );
        }
        return;
    };
    let Some(winner) = writes.iter().find(|w| value_of(w).as_ref() == Some(value)) else {
        v.phantoms.push(
            None,
            region,
            format!("{key} holds {value:?}, which no write wrote"),
        );
        return;
    };
    if is_failed(winner) {
        v.phantoms.push(
            Some(winner.index),
            region,
            format!("{key} holds {value:?} of a rejected write"),
        );
        return;
    }
    // A write acknowledged by the winner's region after the winner was
    // acknowledged there carries a higher timestamp: it must have won.
    if let Some(newer) = writes
        .iter()
        .rev()
        .find(|b| b.index != winner.index && is_acked(b) && observed(winner, b))
    {
        v.lost.push(
            Some(newer.index),
            region,
            format!(
                "{key} holds {value:?} (op {}) although the later write {:?} (op {}) was acknowledged by the same region",
                winner.index,
                value_of(newer).unwrap_or_default(),
                newer.index
            ),
        );
    }
}

fn check_created(key: &Key, ops: &[&Op], view: &ItemView, region: Option<&str>, v: &mut Verdict) {
    let Some(create) = ops.iter().find(|o| matches!(o.kind, OpKind::Create { .. })) else {
        return;
    };
    let deletes: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| matches!(o.kind, OpKind::Delete { .. }))
        .collect();
    let created_value = match &create.kind {
        OpKind::Create { value, .. } => value.as_str(),
        _ => "",
    };
    if is_failed(create) {
        if view.exists {
            v.phantoms.push(
                Some(create.index),
                region,
                format!("{key} exists although its create was rejected"),
            );
        }
        return;
    }
    if view.exists && view.value.as_deref() != Some(created_value) {
        v.phantoms.push(
            Some(create.index),
            region,
            format!("{key} holds {:?}, not its create's value", view.value),
        );
    }
    if !is_acked(create) {
        return;
    }
    let deleted = deletes.iter().find(|d| is_acked(d) && observed(create, d));
    let in_doubt = deletes.iter().any(|d| !is_failed(d));
    match deleted {
        Some(d) if view.exists => v.zombies.push(
            Some(d.index),
            region,
            format!("{key} exists after its delete was acknowledged"),
        ),
        None if !view.exists && !in_doubt => v.lost.push(
            Some(create.index),
            region,
            format!("acknowledged create of {key} is missing"),
        ),
        _ => {}
    }
}

fn check_digests(finals: &[RegionState], v: &mut Verdict) {
    let Some(first) = finals.first() else {
        return;
    };
    for state in finals {
        match (&state.digest, &first.digest) {
            (Some(d), Some(f)) if d == f => {}
            (Some(d), Some(f)) => v.divergent.push(
                None,
                Some(&state.region),
                format!(
                    "digest {} over {} items, but {} has {} over {} items",
                    d.digest, d.items, first.region, f.digest, f.items
                ),
            ),
            (None, _) => v.divergent.push(
                None,
                Some(&state.region),
                "no digest after the heal".to_owned(),
            ),
            (Some(_), None) => {} // reported for the first region itself
        }
    }
}

mod samples;

#[cfg(test)]
mod tests;
