//! The Tributary regional node. Today it holds the node's configuration
//! ([`config`]), the pure state of a peer link ([`link`]) and the embedded
//! demo; the node itself (sources, sinks, peer shipping over gRPC, admin API,
//! metrics) arrives with the replicator issue.

pub mod admin;
pub mod config;
pub mod crash;
pub mod demo;
pub mod dynamo;
pub mod link;
pub mod node;
pub mod pki;
pub mod postgres;
pub mod sidecar;
pub mod wire;
