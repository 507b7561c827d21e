//! The Tributary regional node. Today it holds the node's configuration
//! ([`config`]), the pure state of a peer link ([`link`]) and the embedded
//! demo; the node itself (sources, sinks, peer shipping over gRPC, admin API,
//! metrics) arrives with the replicator issue.

#[cfg(feature = "node")]
pub mod admin;
pub mod config;
#[cfg(feature = "node")]
pub mod crash;
#[cfg(feature = "node")]
pub mod demo;
#[cfg(feature = "node")]
pub mod dynamo;
pub mod link;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "node")]
pub mod pki;
pub mod postgres;
pub mod sidecar;
pub mod wire;
