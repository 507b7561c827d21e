//! The collections item states are made of: maps and sets kept as sorted
//! vectors.
//!
//! An item state holds a handful of attributes, and each store a handful of
//! dots; a `BTreeMap` spends one heap node per map however small, and the
//! log builds, joins, encodes and drops states for every change it ingests
//! or applies. A sorted vector is one allocation, copies as one block and
//! iterates in key order as the B-tree did, so encodings and equality do
//! not change. Lookups are binary searches; an insert in the middle shifts
//! the tail, which costs nothing at these sizes.

use std::borrow::Borrow;
use std::fmt;

use litemap::LiteMap;

/// A map kept as a vector sorted by key.
pub type SortedMap<K, V> = LiteMap<K, V>;

/// A set kept as a vector sorted by element.
#[derive(Clone, PartialEq, Eq)]
pub struct SortedSet<T>(LiteMap<T, ()>);

impl<T: Ord> SortedSet<T> {
    /// The empty set (no allocation).
    pub fn new() -> Self {
        SortedSet(LiteMap::new())
    }

    /// Adds `value`; false if it was there.
    pub fn insert(&mut self, value: T) -> bool {
        self.0.insert(value, ()).is_none()
    }

    /// True if `value` is in the set.
    pub fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.0.contains_key(value)
    }

    /// Removes `value`; false if it was not there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.0.remove(value).is_some()
    }

    /// Keeps the elements `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.0.retain(|v, ()| keep(v));
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.0.as_slice().iter().map(|(v, ())| v)
    }

    /// The elements from the first that is not less than `from`, in order.
    pub fn iter_from<Q: Ord + ?Sized>(&self, from: &Q) -> impl Iterator<Item = &T>
    where
        T: Borrow<Q>,
    {
        let start = self.0.find_index(from).unwrap_or_else(|i| i);
        self.0.as_slice()[start..].iter().map(|(v, ())| v)
    }

    /// How many elements it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord> Default for SortedSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord> FromIterator<T> for SortedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        SortedSet(iter.into_iter().map(|v| (v, ())).collect())
    }
}

impl<T: Ord> Extend<T> for SortedSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for v in iter {
            self.insert(v);
        }
    }
}

impl<T: Ord> IntoIterator for SortedSet<T> {
    type Item = T;
    type IntoIter = std::iter::Map<std::vec::IntoIter<(T, ())>, fn((T, ())) -> T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_tuple_vec().into_iter().map(|(v, ())| v)
    }
}

impl<'a, T: Ord> IntoIterator for &'a SortedSet<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (T, ())>, fn(&'a (T, ())) -> &'a T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.as_slice().iter().map(|(v, ())| v)
    }
}

impl<T: Ord + fmt::Debug> fmt::Debug for SortedSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The set behaves as a `BTreeSet` under any sequence of inserts,
        /// removes and retains.
        #[test]
        fn behaves_as_a_btree_set(ops in prop::collection::vec((0u8..3, 0u16..64), 0..200)) {
            let mut mine = SortedSet::new();
            let mut model = BTreeSet::new();
            for (op, v) in ops {
                match op {
                    0 => prop_assert_eq!(mine.insert(v), model.insert(v)),
                    1 => prop_assert_eq!(mine.remove(&v), model.remove(&v)),
                    _ => {
                        mine.retain(|x| x % (v + 1) != 0);
                        model.retain(|x| x % (v + 1) != 0);
                    }
                }
                prop_assert!(mine.iter().eq(model.iter()));
                prop_assert!(mine.iter_from(&32).eq(model.range(32..)));
                prop_assert_eq!(mine.contains(&v), model.contains(&v));
            }
        }
    }
}
