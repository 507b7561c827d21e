//! The Tributary regional node. Today it holds the embedded demo; the node
//! itself (sources, sinks, peer shipping over gRPC, admin API, metrics)
//! arrives with the replicator issue.

pub mod demo;
pub mod link;
