//! Changes (what a writer asked for) and log entries (what the log ships).
//!
//! A [`Change`] names an item and the [`Op`]s to apply to it. The log stamps
//! it with its origin, the next [`Seq`] and an [`Hlc`], turns it into a delta
//! against the item's current state (see [`crate::crdt::ItemState::prepare`])
//! and stores the delta as a [`LogEntry`]. Entries are what peers receive;
//! joining an entry twice is a no-op.

use serde::{Deserialize, Serialize};

use crate::crdt::ItemState;
use crate::ids::{AttrName, Hlc, RegionId, Seq, VersionVector};
use crate::key::ItemKey;
use crate::value::{AttrValue, Scalar};

/// One operation on one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write an attribute: an `lww` or `multi` register takes the value; a
    /// `set` attribute is replaced by the elements of an SS/NS/BS value.
    Set {
        /// The attribute.
        attr: AttrName,
        /// Its new value.
        value: AttrValue,
    },
    /// Add to a `counter` attribute (negative to subtract).
    Add {
        /// The counter.
        attr: AttrName,
        /// The increment.
        amount: i128,
    },
    /// Add elements to a `set` attribute.
    AddToSet {
        /// The set.
        attr: AttrName,
        /// Elements to add.
        elements: Vec<Scalar>,
    },
    /// Remove the elements this region has observed from a `set` attribute.
    RemoveFromSet {
        /// The set.
        attr: AttrName,
        /// Elements to remove.
        elements: Vec<Scalar>,
    },
    /// Remove an attribute (an `lww` tombstone; observed-remove for the
    /// other policies; a counter resets the contributions observed).
    Remove {
        /// The attribute.
        attr: AttrName,
    },
    /// Delete the item: removes everything this region has observed of it;
    /// updates concurrent with the delete survive. Later ops in the same
    /// change apply on top of the deleted item (a replace).
    Delete,
}

impl Op {
    /// The attribute the op touches, if any.
    pub fn attr(&self) -> Option<&AttrName> {
        match self {
            Op::Set { attr, .. }
            | Op::Add { attr, .. }
            | Op::AddToSet { attr, .. }
            | Op::RemoveFromSet { attr, .. }
            | Op::Remove { attr } => Some(attr),
            Op::Delete => None,
        }
    }
}

/// A change a writer asks for: ops on one item, not yet stamped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The item.
    pub key: ItemKey,
    /// What to do, in order. No ops means "make sure the item exists".
    pub ops: Vec<Op>,
    /// A source timestamp (e.g. DynamoDB's `ApproximateCreationDateTime`) to
    /// fold into the HLC; `None` stamps with the local clock.
    pub source_millis: Option<u64>,
}

/// One entry of the replicated log: the delta a change produced, named by
/// `(origin, seq)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The region that accepted the change.
    pub origin: RegionId,
    /// Its sequence number at the origin (dense per origin).
    pub seq: Seq,
    /// The HLC the origin stamped it with.
    pub hlc: Hlc,
    /// The origin's applied vector when it accepted the change (its causal
    /// past, other origins only). A receiver applies the entry only once its
    /// own applied vector covers `deps` (causal delivery), so that a delete
    /// or overwrite removes everything that causally preceded it.
    pub deps: VersionVector,
    /// The item.
    pub key: ItemKey,
    /// The delta state to join into the item.
    pub delta: ItemState,
}

impl LogEntry {
    /// Roughly how many bytes this entry occupies in memory, allocations
    /// included (see [`ItemState::memory_estimate`]): what the parked
    /// entries of a [`crate::log::Log`] are weighed at.
    pub fn memory_estimate(&self) -> usize {
        /// A dependency: its region id (a heap string) and seq.
        const DEP: usize = 32 + 48;
        std::mem::size_of::<Self>()
            + self.origin.as_str().len()
            + DEP * self.deps.len()
            + self.key.memory_estimate()
            + self.delta.memory_estimate()
    }
}
