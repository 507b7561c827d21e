//! `[tls]`: mutual TLS on the node's gRPC port (peer links and the admin
//! API). Optional; without it the port speaks plaintext HTTP/2 and should
//! be bound to loopback or a private network.
//!
//! ```toml
//! [tls]
//! ca = "/etc/tributary/ca.pem"        # peers' and operators' certificates must chain to it
//! cert = "/etc/tributary/node.pem"    # this node's chain: a DNS SAN with its region id
//! key = "/etc/tributary/node.key"
//! handshake_timeout = "10s"           # optional
//! ```
//!
//! The files are reloaded when they change (rotation without restart).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster's CA certificate(s), PEM.
    pub ca: PathBuf,
    /// This node's certificate chain, PEM; its leaf names the region id as
    /// a DNS subject alternative name.
    pub cert: PathBuf,
    /// The certificate's private key, PEM.
    pub key: PathBuf,
    /// How long a connecting client has to finish its TLS handshake.
    #[serde(default = "default_handshake_timeout", deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    /// The files, as the TLS loader takes them.
    #[cfg(feature = "node")]
    pub fn paths(&self) -> tributary_proto::tls::Paths {
        tributary_proto::tls::Paths {
            ca: self.ca.clone(),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
        }
    }
}
