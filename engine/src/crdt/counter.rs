//! The counter attribute: a PN-counter with observed reset.
//!
//! Each region's increments and decrements are kept as two monotone totals;
//! a reset (attribute remove, item delete) records, per region, the totals
//! it observed as a *base*. The value is the sum of what every region added
//! beyond its base. All four maps join by pointwise maximum, so the join is
//! trivially commutative, associative and idempotent, and a reset cancels
//! exactly the contributions its writer had seen — an increment concurrent
//! with a reset survives.

use std::collections::BTreeMap;

use super::sorted::SortedMap;
use crate::ids::RegionId;

/// The state of one counter attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterState {
    inc: SortedMap<RegionId, u128>,
    dec: SortedMap<RegionId, u128>,
    base_inc: SortedMap<RegionId, u128>,
    base_dec: SortedMap<RegionId, u128>,
}

/// A counter total would exceed `u128`, or the value would not fit `i128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("counter overflow")]
pub struct CounterOverflow;

fn join_max(into: &mut SortedMap<RegionId, u128>, from: &SortedMap<RegionId, u128>) {
    for (r, v) in from.iter() {
        match into.get_mut(r) {
            Some(e) => *e = (*e).max(*v),
            None => {
                into.insert(r.clone(), *v);
            }
        }
    }
}

fn get(map: &SortedMap<RegionId, u128>, r: &RegionId) -> u128 {
    map.get(r).copied().unwrap_or(0)
}

impl CounterState {
    /// How many per-region contributions it records (a size estimate).
    pub(crate) fn entries(&self) -> usize {
        self.inc.len() + self.dec.len() + self.base_inc.len() + self.base_dec.len()
    }

    /// Joins `other` into `self` (pointwise maximum).
    pub fn join(&mut self, other: &CounterState) {
        join_max(&mut self.inc, &other.inc);
        join_max(&mut self.dec, &other.dec);
        join_max(&mut self.base_inc, &other.base_inc);
        join_max(&mut self.base_dec, &other.base_dec);
    }

    /// The four maps: increments, decrements, and their reset bases.
    pub fn parts(&self) -> [&SortedMap<RegionId, u128>; 4] {
        [&self.inc, &self.dec, &self.base_inc, &self.base_dec]
    }

    /// Rebuilds a counter from [`CounterState::parts`] (decoders).
    pub fn from_parts(parts: [SortedMap<RegionId, u128>; 4]) -> Self {
        let [inc, dec, base_inc, base_dec] = parts;
        CounterState {
            inc,
            dec,
            base_inc,
            base_dec,
        }
    }

    /// True when the counter holds no information at all.
    pub fn is_bottom(&self) -> bool {
        self.inc.is_empty()
            && self.dec.is_empty()
            && self.base_inc.is_empty()
            && self.base_dec.is_empty()
    }

    /// True when some region contributed since the last reset it observed:
    /// the attribute is visible (possibly with value 0).
    pub fn is_present(&self) -> bool {
        self.inc.iter().any(|(r, v)| *v > get(&self.base_inc, r))
            || self.dec.iter().any(|(r, v)| *v > get(&self.base_dec, r))
    }

    /// The counter's value.
    pub fn value(&self) -> Result<i128, CounterOverflow> {
        let mut total: i128 = 0;
        for (r, v) in self.inc.iter() {
            let c = i128::try_from(v.saturating_sub(get(&self.base_inc, r)))
                .map_err(|_| CounterOverflow)?;
            total = total.checked_add(c).ok_or(CounterOverflow)?;
        }
        for (r, v) in self.dec.iter() {
            let c = i128::try_from(v.saturating_sub(get(&self.base_dec, r)))
                .map_err(|_| CounterOverflow)?;
            total = total.checked_sub(c).ok_or(CounterOverflow)?;
        }
        Ok(total)
    }

    /// The delta that adds `amount` on behalf of `region`: the region's new
    /// totals (both of them, so that a replica that receives this delta
    /// knows the region's whole contribution so far, whatever order deltas
    /// arrive in). `self` is not changed.
    pub fn add_delta(
        &self,
        region: &RegionId,
        amount: i128,
    ) -> Result<CounterState, CounterOverflow> {
        let mut inc = get(&self.inc, region);
        let mut dec = get(&self.dec, region);
        let total = if amount >= 0 { &mut inc } else { &mut dec };
        *total = total
            .checked_add(amount.unsigned_abs())
            .ok_or(CounterOverflow)?;
        let mut delta = CounterState::default();
        for (map, v) in [(&mut delta.inc, inc), (&mut delta.dec, dec)] {
            if v > 0 {
                map.insert(region.clone(), v);
            }
        }
        Ok(delta)
    }

    /// The delta that resets everything `self` holds: the observed totals
    /// become the bases.
    pub fn reset_delta(&self) -> CounterState {
        let mut delta = self.clone();
        join_max(&mut delta.base_inc, &self.inc);
        join_max(&mut delta.base_dec, &self.dec);
        delta
    }

    /// Per-region net contribution since the last observed reset (for
    /// provenance displays).
    pub fn contributions(&self) -> BTreeMap<RegionId, i128> {
        let mut out = BTreeMap::new();
        for (r, v) in self.inc.iter() {
            let c = v.saturating_sub(get(&self.base_inc, r));
            *out.entry(r.clone()).or_insert(0i128) += i128::try_from(c).unwrap_or(i128::MAX);
        }
        for (r, v) in self.dec.iter() {
            let c = v.saturating_sub(get(&self.base_dec, r));
            let e = out.entry(r.clone()).or_insert(0i128);
            *e = e.saturating_sub(i128::try_from(c).unwrap_or(i128::MAX));
        }
        out.retain(|_, v| *v != 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("valid")
    }

    #[test]
    fn concurrent_increment_survives_a_reset_that_did_not_see_it() {
        let mut a = CounterState::default();
        a.join(&a.add_delta(&r("a"), 5).expect("fits"));
        // b sees a's 5 and resets; concurrently a adds 2.
        let mut b = a.clone();
        let reset = b.reset_delta();
        b.join(&reset);
        let inc = a.add_delta(&r("a"), 2).expect("fits");
        a.join(&inc);
        a.join(&reset);
        b.join(&inc);
        assert_eq!(a, b);
        assert_eq!(a.value(), Ok(2));
        assert!(a.is_present());
    }

    #[test]
    fn reset_hides_the_attribute_and_decrements_count() {
        let mut c = CounterState::default();
        c.join(&c.add_delta(&r("a"), 3).expect("fits"));
        c.join(&c.add_delta(&r("b"), -4).expect("fits"));
        assert_eq!(c.value(), Ok(-1));
        let reset = c.reset_delta();
        c.join(&reset);
        assert_eq!(c.value(), Ok(0));
        assert!(!c.is_present());
        assert!(!c.is_bottom());
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut c = CounterState::default();
        c.join(&c.add_delta(&r("a"), i128::MAX).expect("fits"));
        c.join(&c.add_delta(&r("a"), i128::MAX).expect("fits"));
        assert_eq!(c.value(), Err(CounterOverflow));
        c.join(&c.add_delta(&r("a"), 1).expect("fits exactly u128::MAX"));
        assert_eq!(c.add_delta(&r("a"), 1), Err(CounterOverflow));
    }
}
