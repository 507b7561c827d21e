//! Peer links: the pure state of shipping deltas to a peer (what to read,
//! what is in flight, what is acknowledged). The gRPC tasks that drive it
//! arrive with the node runtime.

pub mod outbound;

pub use outbound::{AckOutcome, Batch, BatchId, Outbound, OutboundLimits};
