//! The Tributary regional node: its configuration ([`config`]), the pure
//! state of a peer link ([`link`]), the peer protocol's validation
//! ([`wire`]), and — with the default feature `node` — the runtime
//! ([`node`]: log writer, gRPC services, links, admin API, metrics), the
//! DynamoDB and PostgreSQL sidecars and the embedded demo.
//!
//! Without `node` the crate is its pure core (no RocksDB, TLS, AWS or
//! PostgreSQL clients), which is what the fuzzers build.

/// Declares items that exist only with the `node` feature.
macro_rules! node_only {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "node")]
            $item
        )*
    };
}

pub mod config;
pub mod link;
pub mod postgres;
pub mod sidecar;
pub mod wire;

node_only! {
    pub mod admin;
    pub mod crash;
    pub mod demo;
    pub mod dynamo;
    pub mod node;
    pub mod pki;
}
