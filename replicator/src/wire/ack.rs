//! The receiver's acknowledgement of a batch ([`WireAck`]) and, when it
//! applied only part of it, why ([`AckStop`]); and its report of progress
//! between acks ([`WireProgress`]).

use tributary_engine::ids::{Hlc, RegionId, Seq, VersionVector};
use tributary_engine::log::ApplyStop;
use tributary_proto::v1 as pb;
use tributary_proto::v1::stop::Reason;

use super::entry::{region_from_wire, seq_from_wire, vector_from_wire};
use super::{FromWire, ToWire, WireError};
use crate::link::{BatchId, Holds};

/// The longest `detail` kept from a received stop, in bytes: it is only
/// logged, and a peer must not be able to fill the logs.
pub const MAX_STOP_DETAIL_BYTES: usize = 1024;

/// Why the receiver applied a batch only in part. Entries before the stop
/// were applied (the ack's vector says how far); the sender rewinds to the
/// acknowledged vector and resends (go-back-N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckStop {
    /// An entry of `origin` skipped a seq: the receiver needs `expected`
    /// next.
    Gap {
        /// The origin.
        origin: RegionId,
        /// The seq that must come next.
        expected: Seq,
        /// Human-readable detail, for logs.
        detail: String,
    },
    /// The entry `(origin, seq)` depends on entries the receiver has not
    /// applied yet.
    MissingDeps {
        /// The entry's origin.
        origin: RegionId,
        /// The entry's seq.
        seq: Seq,
        /// What is missing, for logs.
        detail: String,
    },
    /// An entry's HLC is beyond the receiver's clock-skew bound: back off
    /// and resend later. The entry is the first one past the ack's vector.
    ClockSkew {
        /// The bound and how far ahead the entry was, for logs.
        detail: String,
    },
}

impl From<&ApplyStop> for AckStop {
    fn from(stop: &ApplyStop) -> Self {
        match stop {
            ApplyStop::Gap {
                origin,
                expected,
                got,
            } => AckStop::Gap {
                origin: origin.clone(),
                expected: *expected,
                detail: format!("expected seq {expected} of {origin}, got {got}"),
            },
            ApplyStop::MissingDeps {
                origin,
                seq,
                missing,
            } => AckStop::MissingDeps {
                origin: origin.clone(),
                seq: *seq,
                detail: format!("{origin}/{seq} depends on {missing:?}, not applied yet"),
            },
            ApplyStop::ClockSkew(skew) => AckStop::ClockSkew {
                detail: skew.to_string(),
            },
        }
    }
}

impl ToWire for AckStop {
    type Wire = pb::Stop;

    fn to_wire(&self) -> pb::Stop {
        let (reason, origin, seq, detail) = match self {
            AckStop::Gap {
                origin,
                expected,
                detail,
            } => (Reason::Gap, origin.as_str(), expected.0, detail),
            AckStop::MissingDeps {
                origin,
                seq,
                detail,
            } => (Reason::MissingDeps, origin.as_str(), seq.0, detail),
            AckStop::ClockSkew { detail } => (Reason::ClockSkew, "", 0, detail),
        };
        pb::Stop {
            reason: reason.into(),
            origin: origin.to_owned(),
            seq,
            detail: detail.clone(),
        }
    }
}

impl FromWire for AckStop {
    type Wire = pb::Stop;

    fn from_wire(wire: pb::Stop) -> Result<Self, WireError> {
        stop_from_wire(wire, "stop")
    }
}

/// A received stop; `at` names it for errors.
fn stop_from_wire(wire: pb::Stop, at: &str) -> Result<AckStop, WireError> {
    let detail = truncate(wire.detail, MAX_STOP_DETAIL_BYTES);
    let origin = || region_from_wire(&wire.origin, || format!("{at}.origin"));
    let seq = || seq_from_wire(wire.seq, || format!("{at}.seq"));
    match Reason::try_from(wire.reason) {
        Ok(Reason::Gap) => Ok(AckStop::Gap {
            origin: origin()?,
            expected: seq()?,
            detail,
        }),
        Ok(Reason::MissingDeps) => Ok(AckStop::MissingDeps {
            origin: origin()?,
            seq: seq()?,
            detail,
        }),
        // Origin and seq are not used: the stop is at the first entry past
        // the ack's vector.
        Ok(Reason::ClockSkew) => Ok(AckStop::ClockSkew { detail }),
        Ok(Reason::Unspecified) | Err(_) => Err(WireError::UnknownEnum {
            field: format!("{at}.reason"),
            value: wire.reason,
        }),
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The receiver's acknowledgement of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireAck {
    /// The batch acknowledged.
    pub batch_id: BatchId,
    /// The receiver's applied vector after the batch, durable.
    pub applied: VersionVector,
    /// Set when the batch was applied only in part.
    pub stop: Option<AckStop>,
    /// The receiver's HLC when it acknowledged.
    pub hlc: Hlc,
    /// From a receiver that parks: what it holds and who reaches it
    /// directly.
    pub holds: Option<Holds>,
}

/// The wire fields of an ack's or progress report's holds.
fn holds_to_wire(holds: Option<&Holds>) -> (Option<pb::VersionVector>, Vec<String>) {
    match holds {
        Some(h) => (
            Some(h.held.to_wire()),
            h.direct.iter().map(|r| r.as_str().to_owned()).collect(),
        ),
        None => (None, Vec::new()),
    }
}

/// `None` when the message carries no held vector (a receiver that does
/// not park); a held vector below `applied` is refused.
fn holds_from_wire(
    held: Option<pb::VersionVector>,
    direct: Vec<String>,
    applied: &VersionVector,
    at: &str,
) -> Result<Option<Holds>, WireError> {
    let Some(held) = held else {
        return Ok(None);
    };
    let held = vector_from_wire(Some(held), &format!("{at}.held"))?;
    if !applied.dominated_by(&held) {
        return Err(WireError::HeldBelowApplied {
            field: format!("{at}.held"),
        });
    }
    let direct = direct
        .iter()
        .map(|r| region_from_wire(r, || format!("{at}.direct")))
        .collect::<Result<_, _>>()?;
    Ok(Some(Holds { held, direct }))
}

impl ToWire for WireAck {
    type Wire = pb::Ack;

    fn to_wire(&self) -> pb::Ack {
        let (held, direct) = holds_to_wire(self.holds.as_ref());
        pb::Ack {
            batch_id: self.batch_id.0,
            applied: Some(self.applied.to_wire()),
            stop: self.stop.as_ref().map(ToWire::to_wire),
            hlc: self.hlc.0,
            held,
            direct,
        }
    }
}

impl FromWire for WireAck {
    type Wire = pb::Ack;

    fn from_wire(wire: pb::Ack) -> Result<Self, WireError> {
        let applied = vector_from_wire(wire.applied, "ack.applied")?;
        Ok(WireAck {
            batch_id: BatchId(wire.batch_id),
            stop: wire
                .stop
                .map(|stop| stop_from_wire(stop, "ack.stop"))
                .transpose()?,
            hlc: Hlc(wire.hlc),
            holds: holds_from_wire(wire.held, wire.direct, &applied, "ack")?,
            applied,
        })
    }
}

/// The receiver's applied vector, durable, sent when it moved between acks
/// (by other peers' batches or local writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireProgress {
    /// The receiver's applied vector, durable.
    pub applied: VersionVector,
    /// The receiver's HLC when it reported.
    pub hlc: Hlc,
    /// As in [`WireAck::holds`].
    pub holds: Option<Holds>,
}

impl ToWire for WireProgress {
    type Wire = pb::Progress;

    fn to_wire(&self) -> pb::Progress {
        let (held, direct) = holds_to_wire(self.holds.as_ref());
        pb::Progress {
            applied: Some(self.applied.to_wire()),
            hlc: self.hlc.0,
            held,
            direct,
        }
    }
}

impl FromWire for WireProgress {
    type Wire = pb::Progress;

    fn from_wire(wire: pb::Progress) -> Result<Self, WireError> {
        let applied = vector_from_wire(wire.applied, "progress.applied")?;
        Ok(WireProgress {
            hlc: Hlc(wire.hlc),
            holds: holds_from_wire(wire.held, wire.direct, &applied, "progress")?,
            applied,
        })
    }
}
