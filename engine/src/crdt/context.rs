//! The causal context of one item: every dot the holder has seen for it.
//!
//! Represented as a version vector (all dots `(r, 1..=vv[r])`) plus a "cloud"
//! of dots seen out of order. The representation is canonical — every
//! mutation compacts the cloud into the vector where it can — so two contexts
//! holding the same dots compare equal.

use super::sorted::{SortedMap, SortedSet};
use crate::ids::{Dot, RegionId};

/// A set of dots, compactly represented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    vv: SortedMap<RegionId, u64>,
    cloud: SortedSet<Dot>,
}

impl CausalContext {
    /// How many vector entries and cloud dots it holds (a size estimate).
    pub(crate) fn entries(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }

    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if `dot` has been seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.vv.get(&dot.region).is_some_and(|n| dot.counter <= *n) || self.cloud.contains(dot)
    }

    /// The highest counter seen from `region` (0 if none).
    pub fn max(&self, region: &RegionId) -> u64 {
        let contiguous = self.vv.get(region).copied().unwrap_or(0);
        let clouded = self
            .cloud
            .iter_from(&Dot::new(region.clone(), 0))
            .take_while(|d| &d.region == region)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        contiguous.max(clouded)
    }

    /// Adds one dot.
    pub fn insert(&mut self, dot: Dot) {
        if self.contains(&dot) {
            return;
        }
        // The common case, a region's next dot with nothing seen out of
        // order: it extends the vector, exactly what `compact` would make
        // of it, without a trip through the cloud.
        if self.cloud.is_empty() {
            match self.vv.get_mut(&dot.region) {
                Some(n) if dot.counter == *n + 1 => {
                    *n = dot.counter;
                    return;
                }
                None if dot.counter == 1 => {
                    self.vv.insert(dot.region, 1);
                    return;
                }
                _ => {}
            }
        }
        self.cloud.insert(dot);
        self.compact();
    }

    /// Adds every dot of `other`.
    pub fn join(&mut self, other: &CausalContext) {
        for (region, n) in other.vv.iter() {
            match self.vv.get_mut(region) {
                Some(mine) => *mine = (*mine).max(*n),
                None => {
                    self.vv.insert(region.clone(), *n);
                }
            }
        }
        for dot in &other.cloud {
            if !self.contains(dot) {
                self.cloud.insert(dot.clone());
            }
        }
        self.compact();
    }

    /// True if no dot has been seen.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.cloud.is_empty()
    }

    /// The contiguous part: `(region, n)` meaning dots 1..=n were all seen.
    pub fn vector(&self) -> impl ExactSizeIterator<Item = (&RegionId, u64)> {
        self.vv.iter().map(|(r, n)| (r, *n))
    }

    /// Dots seen out of order (a gap below each).
    pub fn cloud(&self) -> impl ExactSizeIterator<Item = &Dot> {
        self.cloud.iter()
    }

    /// Rebuilds a context from its parts, compacting (used by decoders).
    pub fn from_parts(
        vector: impl IntoIterator<Item = (RegionId, u64)>,
        cloud: impl IntoIterator<Item = Dot>,
    ) -> Self {
        let mut ctx = CausalContext {
            vv: vector.into_iter().filter(|(_, n)| *n > 0).collect(),
            cloud: SortedSet::new(),
        };
        for dot in cloud {
            if !ctx.contains(&dot) {
                ctx.cloud.insert(dot);
            }
        }
        ctx.compact();
        ctx
    }

    fn compact(&mut self) {
        if self.cloud.is_empty() {
            return;
        }
        // The cloud is ordered by (region, counter): one pass absorbs every
        // dot that extends its region's contiguous prefix.
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let n = self.vv.get(&dot.region).copied().unwrap_or(0);
            if dot.counter == n + 1 {
                self.vv.insert(dot.region, dot.counter);
            } else if dot.counter > n {
                self.cloud.insert(dot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(r: &str, n: u64) -> Dot {
        Dot::new(RegionId::new(r).expect("valid"), n)
    }

    #[test]
    fn compacts_contiguous_dots_into_the_vector() {
        let mut c = CausalContext::new();
        c.insert(d("a", 2));
        assert!(c.contains(&d("a", 2)) && !c.contains(&d("a", 1)));
        assert_eq!(c.max(&RegionId::new("a").expect("valid")), 2);
        c.insert(d("a", 1));
        assert_eq!(c.cloud().count(), 0);
        assert_eq!(c, CausalContext::from_parts([(d("a", 0).region, 2)], []));
    }

    #[test]
    fn join_is_a_union() {
        let a = CausalContext::from_parts([], [d("a", 1), d("b", 3)]);
        let b = CausalContext::from_parts([], [d("b", 1), d("b", 2)]);
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert!(ab.contains(&d("b", 3)) && ab.cloud().count() == 0);
    }
}
