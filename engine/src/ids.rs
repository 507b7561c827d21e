//! Newtypes for every identifier and offset the engine passes around.
//!
//! Invariants kept here: a [`RegionId`], [`TableName`] or [`AttrName`] is
//! always valid once constructed (constructors validate), a [`Seq`] counts from
//! 1 (0 means "nothing yet"), and a [`VersionVector`] never holds a zero entry,
//! so two vectors that mean the same thing compare equal.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is empty or longer than its limit.
    #[error("{kind} {value:?} must be 1 to {max} bytes long")]
    Length {
        /// Which kind of identifier.
        kind: &'static str,
        /// The refused value.
        value: String,
        /// Its maximum length in bytes.
        max: usize,
    },
    /// The identifier holds a character outside its alphabet.
    #[error("{kind} {value:?} may only contain {allowed}")]
    Charset {
        /// Which kind of identifier.
        kind: &'static str,
        /// The refused value.
        value: String,
        /// The allowed alphabet, in words.
        allowed: &'static str,
    },
}

/// Names are immutable and cloned constantly (every dot, vector and log
/// entry holds a region id): a shared `Arc<str>` makes a clone a reference
/// count instead of an allocation.
macro_rules! name_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:literal, $pred:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(Arc<str>);

        // Ordered by the name; two clones of one shared name are equal
        // without comparing bytes (equality already is: `Arc<str>`'s `Eq`
        // tests the pointer first). The dots of one item mostly name a
        // few regions, decoded once each, so sorting and searching them
        // mostly compares clones.
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if Arc::ptr_eq(&self.0, &other.0) {
                    std::cmp::Ordering::Equal
                } else {
                    self.0.cmp(&other.0)
                }
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        // Serialized as the plain string, straight from the shared one (no
        // `String` copy per name written).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                Self::from_borrowed(&value.into())
            }

            /// [`Self::new`] from a borrowed string, which is copied once,
            /// into the shared name (decoders use it).
            pub fn from_borrowed(value: &str) -> Result<Self, IdError> {
                if value.is_empty() || value.len() > $max {
                    return Err(IdError::Length { kind: $kind, value: value.to_owned(), max: $max });
                }
                let pred: fn(char) -> bool = $pred;
                if !value.chars().all(pred) {
                    return Err(IdError::Charset {
                        kind: $kind,
                        value: value.to_owned(),
                        allowed: $allowed,
                    });
                }
                Ok(Self(Arc::from(value)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::from_borrowed(s)
            }
        }
    };
}

name_newtype!(
    /// A region (one node of the cluster), e.g. `us-east-1`. Unique in the
    /// cluster; it names the origin of every change the node accepts locally.
    RegionId,
    "region id",
    64,
    "ASCII letters, digits, '-', '_' and '.'",
    |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
);

impl RegionId {
    /// True when both are clones of one shared name: a pointer test that
    /// spares the string comparison (equal names built apart are not the
    /// same here, only equal).
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

name_newtype!(
    /// A table name, with DynamoDB's rules (3–255 characters in DynamoDB; we
    /// accept 1–255 so that tests can use short names).
    TableName,
    "table name",
    255,
    "ASCII letters, digits, '-', '_' and '.'",
    |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
);

name_newtype!(
    /// An attribute name (DynamoDB allows any UTF-8 up to 64 KiB; we keep the
    /// same limit and refuse control characters).
    AttrName,
    "attribute name",
    65_535,
    "printable characters",
    |c| !c.is_control()
);

name_newtype!(
    /// Identifies one input position stream of a source, e.g.
    /// `kinesis:orders/shardId-000000000001` or `pg:tributary_us_east_1`.
    SourceId,
    "source id",
    1024,
    "printable characters",
    |c| !c.is_control()
);

/// A per-origin log sequence number. Dense: every origin numbers its changes
/// 1, 2, 3, … without gaps; `Seq::ZERO` means "none yet".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// "Nothing yet".
    pub const ZERO: Seq = Seq(0);

    /// The following sequence number.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// A hybrid logical clock timestamp: milliseconds since the Unix epoch in the
/// upper 48 bits, a logical counter in the lower 16 (Kulkarni et al. 2014).
/// Ordered like the pair `(millis, logical)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Bits of the logical counter.
    pub const LOGICAL_BITS: u32 = 16;
    /// The largest physical time representable (about year 10889).
    pub const MAX_MILLIS: u64 = (1 << (64 - Self::LOGICAL_BITS)) - 1;

    /// Builds a timestamp from its parts; `millis` is clamped to
    /// [`Hlc::MAX_MILLIS`].
    pub fn new(millis: u64, logical: u16) -> Hlc {
        Hlc((millis.min(Self::MAX_MILLIS) << Self::LOGICAL_BITS) | u64::from(logical))
    }

    /// Physical milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.logical())
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({}.{})", self.millis(), self.logical())
    }
}

/// A dot: the unique name of one write to one item, `(region, n)` where `n`
/// counts that region's writes *to that item* (1, 2, 3, …). Item-local
/// counters keep every item's causal context compact (see
/// [`crate::crdt::CausalContext`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The region that made the write.
    pub region: RegionId,
    /// The region's write counter for this item.
    pub counter: u64,
}

impl Dot {
    /// Builds a dot.
    pub fn new(region: RegionId, counter: u64) -> Dot {
        Dot { region, counter }
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.region, self.counter)
    }
}

/// The highest contiguous [`Seq`] per origin: an applied vector ("everything
/// up to `v[o]` from origin `o` is in my log") or an acknowledged vector ("the
/// peer told me it has everything up to `v[o]`"). Missing entries mean zero.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<RegionId, Seq>);

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry for `origin` (zero when absent).
    pub fn get(&self, origin: &RegionId) -> Seq {
        self.0.get(origin).copied().unwrap_or(Seq::ZERO)
    }

    /// Sets the entry for `origin`; zero removes it.
    pub fn set(&mut self, origin: RegionId, seq: Seq) {
        if seq == Seq::ZERO {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, seq);
        }
    }

    /// Raises the entry for `origin` to at least `seq`.
    pub fn raise(&mut self, origin: &RegionId, seq: Seq) {
        if seq > self.get(origin) {
            self.0.insert(origin.clone(), seq);
        }
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for (origin, seq) in &other.0 {
            self.raise(origin, *seq);
        }
    }

    /// Pointwise minimum (an origin missing on either side drops out).
    #[must_use]
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        VersionVector(
            self.0
                .iter()
                .filter_map(|(o, s)| {
                    let m = (*s).min(other.get(o));
                    (m > Seq::ZERO).then(|| (o.clone(), m))
                })
                .collect(),
        )
    }

    /// True when every entry of `self` is ≤ the one in `other`.
    pub fn dominated_by(&self, other: &VersionVector) -> bool {
        self.0.iter().all(|(o, s)| *s <= other.get(o))
    }

    /// The non-zero entries, ordered by origin.
    pub fn iter(&self) -> impl Iterator<Item = (&RegionId, Seq)> {
        self.0.iter().map(|(o, s)| (o, *s))
    }

    /// Number of non-zero entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when every entry is zero.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sum over origins of `self[o] - other[o]` where positive: the number of
    /// records `self` has that `other` has not (e.g. pending for a peer).
    pub fn records_ahead_of(&self, other: &VersionVector) -> u64 {
        self.iter()
            .map(|(o, s)| s.0.saturating_sub(other.get(o).0))
            .sum()
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(o, s)| (o.as_str(), s.0)))
            .finish()
    }
}

impl FromIterator<(RegionId, Seq)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (RegionId, Seq)>>(iter: I) -> Self {
        let mut v = VersionVector::new();
        for (o, s) in iter {
            v.raise(&o, s);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("valid region")
    }

    #[test]
    fn names_are_validated() {
        assert!(RegionId::new("us-east-1").is_ok());
        assert!(matches!(RegionId::new(""), Err(IdError::Length { .. })));
        assert!(matches!(
            RegionId::new("us east"),
            Err(IdError::Charset { .. })
        ));
        assert!(AttrName::new("a b").is_ok());
        assert!(AttrName::new("a\nb").is_err());
    }

    #[test]
    fn hlc_orders_by_millis_then_logical() {
        let a = Hlc::new(10, 5);
        let b = Hlc::new(11, 0);
        assert!(a < b);
        assert_eq!(a.millis(), 10);
        assert_eq!(a.logical(), 5);
        assert_eq!(Hlc::new(u64::MAX, 0).millis(), Hlc::MAX_MILLIS);
    }

    #[test]
    fn version_vector_arithmetic() {
        let mut a = VersionVector::new();
        a.set(r("a"), Seq(5));
        a.set(r("b"), Seq(2));
        let mut b = VersionVector::new();
        b.set(r("a"), Seq(3));
        b.set(r("c"), Seq(7));
        assert_eq!(a.records_ahead_of(&b), 2 + 2);
        let m = a.meet(&b);
        assert_eq!(m.get(&r("a")), Seq(3));
        assert_eq!(m.get(&r("b")), Seq::ZERO);
        assert!(m.dominated_by(&a) && m.dominated_by(&b));
        a.join(&b);
        assert_eq!(a.get(&r("c")), Seq(7));
        a.set(r("c"), Seq::ZERO);
        assert_eq!(a.len(), 2);
    }
}
