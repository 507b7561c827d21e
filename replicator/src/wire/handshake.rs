//! The start of a shipping stream: the sender's [`Hello`] and the
//! receiver's [`Welcome`].
//!
//! Conversion checks that the fields are well formed; whether the cluster
//! and protocol version are the receiver's is the caller's decision (a
//! refusal of the peer, not of a malformed message).

use tributary_engine::ids::{RegionId, VersionVector};
use tributary_proto::v1 as pb;

use super::entry::{region_from_wire, vector_from_wire};
use super::{FromWire, ToWire, WireError};
use crate::config::ClusterName;

/// The sender's first message on a shipping stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's cluster; both ends must belong to the same one.
    pub cluster: ClusterName,
    /// The sender's region.
    pub region: RegionId,
    /// The protocol version the sender speaks (see
    /// [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)).
    pub protocol_version: u32,
    /// The sender's applied vector: what it can ship.
    pub head: VersionVector,
    /// The sender understands [`WireProgress`](super::WireProgress)
    /// messages; a receiver sends none otherwise (an older sender would
    /// take the unknown message for the end of the stream).
    pub accepts_progress: bool,
}

/// The receiver's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The receiver's cluster.
    pub cluster: ClusterName,
    /// The receiver's region.
    pub region: RegionId,
    /// The protocol version the receiver speaks.
    pub protocol_version: u32,
    /// What the receiver has, durably: the sender starts from there.
    pub applied: VersionVector,
    /// The receiver holds every entry of its own region (it is not a wiped
    /// node bootstrapping), so the sender need not send them back.
    pub own_entries_complete: bool,
    /// The receiver parks entries that arrive ahead of their dependencies
    /// and reports [`super::Holds`] in its acks and progress reports.
    pub parks: bool,
}

/// The fields Hello and Welcome share, validated; `at` names the message.
fn peer_from_wire(
    at: &str,
    cluster: String,
    region: &str,
    protocol_version: u32,
) -> Result<(ClusterName, RegionId, u32), WireError> {
    if cluster.is_empty() {
        return Err(WireError::Missing {
            field: format!("{at}.cluster"),
        });
    }
    let cluster = ClusterName::new(cluster).map_err(|source| WireError::Cluster {
        field: format!("{at}.cluster"),
        source,
    })?;
    let region = region_from_wire(region, || format!("{at}.region"))?;
    if protocol_version == 0 {
        return Err(WireError::Missing {
            field: format!("{at}.protocol_version"),
        });
    }
    Ok((cluster, region, protocol_version))
}

impl ToWire for Hello {
    type Wire = pb::Hello;

    fn to_wire(&self) -> pb::Hello {
        pb::Hello {
            cluster: self.cluster.as_str().to_owned(),
            region: self.region.as_str().to_owned(),
            protocol_version: self.protocol_version,
            head: Some(self.head.to_wire()),
            accepts_progress: self.accepts_progress,
        }
    }
}

impl FromWire for Hello {
    type Wire = pb::Hello;

    fn from_wire(wire: pb::Hello) -> Result<Self, WireError> {
        let (cluster, region, protocol_version) =
            peer_from_wire("hello", wire.cluster, &wire.region, wire.protocol_version)?;
        Ok(Hello {
            cluster,
            region,
            protocol_version,
            head: vector_from_wire(wire.head, "hello.head")?,
            accepts_progress: wire.accepts_progress,
        })
    }
}

impl ToWire for Welcome {
    type Wire = pb::Welcome;

    fn to_wire(&self) -> pb::Welcome {
        pb::Welcome {
            cluster: self.cluster.as_str().to_owned(),
            region: self.region.as_str().to_owned(),
            protocol_version: self.protocol_version,
            applied: Some(self.applied.to_wire()),
            own_entries_complete: self.own_entries_complete,
            parks: self.parks,
        }
    }
}

impl FromWire for Welcome {
    type Wire = pb::Welcome;

    fn from_wire(wire: pb::Welcome) -> Result<Self, WireError> {
        let (cluster, region, protocol_version) =
            peer_from_wire("welcome", wire.cluster, &wire.region, wire.protocol_version)?;
        Ok(Welcome {
            cluster,
            region,
            protocol_version,
            applied: vector_from_wire(wire.applied, "welcome.applied")?,
            own_entries_complete: wire.own_entries_complete,
            parks: wire.parks,
        })
    }
}
