//! The one place where wire types (generated from `proto/tributary/v1`)
//! become engine types and back.
//!
//! Everything that arrives from a peer is untrusted: [`FromWire`] (and
//! [`batch_from_wire`], which also enforces the batch size) validates every
//! field — region ids, `seq ≥ 1`, key bytes, delta bytes (checksum, format
//! version, every index inside the state), enum values — and never panics.
//! A refusal is a [`WireError`] naming the field, e.g.
//! `batch.entries[3].delta`; the receiver answers `INVALID_ARGUMENT` with
//! its text.
//!
//! The other direction ([`ToWire`], [`entry_to_wire`], [`batch_to_wire`])
//! cannot produce an invalid message.
//!
//! Invariants:
//! - `from_wire(to_wire(x)) == x` for every type here (tested);
//! - proto3 leaves absent and default alike: an absent vector is the empty
//!   vector, a zero entry in a vector is dropped (as the engine's
//!   [`VersionVector`](tributary_engine::ids::VersionVector) does), while an
//!   absent required scalar (cluster, region, seq, protocol version) is a
//!   refusal;
//! - generated types stay here and at the gRPC service edge: nothing past
//!   this module sees them.
//!
//! The conversions are traits rather than `From`/`TryFrom` because both
//! sides of most pairs (engine types, generated types) are foreign to this
//! crate, which the orphan rule forbids.

mod ack;
mod entry;
mod error;
mod handshake;
mod snapshot;
#[cfg(test)]
mod tests;

pub use ack::{AckStop, MAX_STOP_DETAIL_BYTES, WireAck, WireProgress};
pub use entry::{
    batch_from_wire, batch_from_wire_lacking, batch_to_wire, encoded_entry_to_wire, entry_to_wire,
};
pub use error::{EncodeError, WireError};
pub use handshake::{Hello, Welcome};
pub use snapshot::{SnapshotPart, snapshot_from_wire, snapshot_to_wire};

/// The peer protocol version this build speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Builds an engine value from a received message, validating it.
pub trait FromWire: Sized {
    /// The generated message.
    type Wire;

    /// Validates `wire` and converts it; never panics, whatever it holds.
    fn from_wire(wire: Self::Wire) -> Result<Self, WireError>;
}

/// Builds the message for an engine value (infallible: every engine value
/// has a valid message).
pub trait ToWire {
    /// The generated message.
    type Wire;

    /// The message carrying `self`.
    fn to_wire(&self) -> Self::Wire;
}
