//! Peer links: the pure state of shipping deltas to a peer (what to read,
//! what is in flight, what is acknowledged) and the lag arithmetic. The gRPC tasks that drive it
//! arrive with the node runtime.

pub mod lag;
pub mod outbound;
pub mod penalty;
pub mod retry;

pub use lag::{LinkFacts, OriginLag, PeerLag, Rate, peer_lag};
pub use outbound::{
    AckOutcome, Batch, BatchId, EntryHead, Holds, Outbound, OutboundLimits, Read, Report,
    STRICT_AFTER_REWIND, Shippable,
};
pub use penalty::{PenaltyBox, PenaltyRules};
pub use retry::{Backoff, CircuitBreaker, CircuitState};
