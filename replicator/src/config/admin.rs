//! `[admin]`: who may call the admin API (what `replctl` talks to).
//!
//! ```toml
//! [admin]
//! token_file = "/etc/tributary/admin.token"       # bearer token: every call
//! read_token_file = "/etc/tributary/read.token"   # bearer token: read-only calls
//! operators = ["ops-alice"]                       # with [tls]: certificate names that may mutate
//! trust_loopback = true                           # calls from 127.0.0.1/::1 need no credential
//! ```
//!
//! A call is granted *mutating* rights (write, pause/resume, dead-letter
//! retry/drop) or *read* rights (lag, status, offsets, digest, get, dead
//! letters) by the first credential that applies:
//! - a bearer token (`authorization: Bearer …`, `replctl --token-file`)
//!   equal to `token_file` (mutating) or `read_token_file` (read);
//! - with `[tls]`, the client certificate (already verified against the
//!   CA): mutating when `operators` is empty or the certificate names one of
//!   them (a DNS SAN), read otherwise;
//! - a plaintext call from a loopback address, with `trust_loopback`:
//!   mutating.
//!
//! Anything else is refused (`UNAUTHENTICATED`): a remote call needs a
//! client certificate or a token. Token files are read at each call, so
//! replacing one rotates it.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token that grants every call.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A file holding the bearer token that grants read-only calls.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// With `[tls]`: the certificate names (DNS SANs) that may make
    /// mutating calls; empty, every certificate of the CA may.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Whether plaintext calls from a loopback address need no credential.
    #[serde(default = "yes")]
    pub trust_loopback: bool,
}

fn yes() -> bool {
    true
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            read_token_file: None,
            operators: Vec::new(),
            trust_loopback: true,
        }
    }
}
