//! Tributary's wire protocol: the peer shipping stream and the admin API,
//! as generated code, and the TLS both travel over ([`tls`]).
//!
//! `build.rs` compiles `proto/tributary/v1/peer.proto` and `admin.proto`
//! with a pure-Rust compiler (no system `protoc`) and generates the prost
//! messages plus the tonic clients ([`v1::peer_client`],
//! [`v1::admin_client`]) and servers ([`v1::peer_server`],
//! [`v1::admin_server`]).
//!
//! Nothing here validates anything: every field of a received message is
//! untrusted. Conversion to and from engine types, and the validation that
//! goes with it, lives in one place, the replicator's `wire` module; the
//! engine never sees these types.

/// Package `tributary.v1`: the peer protocol (`Peer`) and the admin API
/// (`Admin`).
// Generated code: prost and tonic turn .proto comments into docs, and emit
// undocumented items where the .proto has no comment (and for generated
// helpers such as the oneof modules). The exception is scoped to this module;
// hand-written code keeps the lint.
#[expect(
    missing_docs,
    reason = "generated from the .proto files; not every field has a comment"
)]
pub mod v1 {
    tonic::include_proto!("tributary.v1");
}

#[cfg(feature = "tls")]
pub mod tls;
