//! Why a message was refused ([`WireError`]) or an entry could not be put on
//! the wire ([`EncodeError`]).

use tributary_engine::ids::{IdError, RegionId, Seq};
use tributary_engine::key::KeyError;
use tributary_engine::store::StoreError;

use crate::config::ValueError;

/// A received message is malformed and refused as a whole: nothing of it is
/// applied. The receiver answers `INVALID_ARGUMENT` with this text and ends
/// the stream; resending the same message cannot succeed, so the sender
/// should log it and stop the link (it means a bug or a foreign peer).
///
/// `field` is the path of the offending field, e.g. `batch.entries[3].seq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required field is absent or holds its default (proto3 cannot tell
    /// them apart).
    #[error("message refused: {field} is missing")]
    Missing {
        /// The field.
        field: String,
    },
    /// A region id (origin, sender, vector key) is invalid.
    #[error("message refused: {field}: {source}")]
    Region {
        /// The field.
        field: String,
        /// What is wrong with it.
        source: IdError,
    },
    /// A cluster name is invalid.
    #[error("message refused: {field}: {source}")]
    Cluster {
        /// The field.
        field: String,
        /// What is wrong with it.
        source: ValueError,
    },
    /// A sequence number is zero; seqs count from 1.
    #[error("message refused: {field} is 0, but sequence numbers start at 1")]
    ZeroSeq {
        /// The field.
        field: String,
    },
    /// Key bytes do not decode as an item key.
    #[error("message refused: {field} is not an item key: {source}")]
    Key {
        /// The field.
        field: String,
        /// What the key decoder found.
        source: KeyError,
    },
    /// Delta bytes do not decode as an item state (wrong checksum, unknown
    /// format version, malformed payload).
    #[error("message refused: {field} is not an item state: {source}")]
    Delta {
        /// The field.
        field: String,
        /// What the state decoder found.
        source: StoreError,
    },
    /// An enum field holds a value this build does not know.
    #[error("message refused: {field} holds unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: String,
        /// The value received.
        value: i32,
    },
    /// A batch holds more entries than the receiver accepts.
    #[error(
        "message refused: {field} holds {len} entries, more than the limit of {max}; the sender must send smaller batches"
    )]
    BatchTooLarge {
        /// The field (`batch.entries`).
        field: String,
        /// Entries received.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// A reported vector is below the applied vector it comes with.
    #[error("message refused: {field} is below the applied vector it comes with")]
    HeldBelowApplied {
        /// The field.
        field: String,
    },
}

impl WireError {
    /// The path of the refused field.
    pub fn field(&self) -> &str {
        match self {
            WireError::Missing { field }
            | WireError::Region { field, .. }
            | WireError::Cluster { field, .. }
            | WireError::ZeroSeq { field }
            | WireError::Key { field, .. }
            | WireError::Delta { field, .. }
            | WireError::UnknownEnum { field, .. }
            | WireError::BatchTooLarge { field, .. }
            | WireError::HeldBelowApplied { field } => field,
        }
    }
}

/// A log entry's delta could not be encoded for the wire. The entry was
/// encoded once already when the log stored it, so this is a bug (or a
/// state over the 32 MiB value limit), not something a retry fixes: stop
/// the link and report the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the delta of log entry {origin}/{seq} for the wire: {source}")]
pub struct EncodeError {
    /// The entry's origin.
    pub origin: RegionId,
    /// The entry's seq.
    pub seq: Seq,
    /// What the encoder said.
    pub source: StoreError,
}
