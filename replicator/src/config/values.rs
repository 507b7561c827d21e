//! Validated values the configuration is made of: the cluster name, a peer's
//! endpoint, and durations written with their unit.
//!
//! Invariant: a [`ClusterName`] or [`PeerEndpoint`] is valid once
//! constructed; deserialization goes through the same constructors, so a bad
//! value is reported by the TOML parser with its line and column.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Why a configuration value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The cluster name is empty, too long or has a character outside its
    /// alphabet.
    #[error(
        "cluster name {value:?} must be 1 to {max} bytes of ASCII letters, digits, '-', '_' and '.'",
        max = ClusterName::MAX_LEN
    )]
    ClusterName {
        /// The refused value.
        value: String,
    },
    /// The peer endpoint is not `http(s)://HOST:PORT`.
    #[error("endpoint {value:?} {reason}; write it as http://HOST:PORT or https://HOST:PORT")]
    Endpoint {
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The name of a cluster. Nodes refuse peers that announce another cluster,
/// so two deployments sharing a network cannot mix their data.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ClusterName(String);

impl ClusterName {
    /// The longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps a cluster name.
    pub fn new(value: impl Into<String>) -> Result<Self, ValueError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(value))
        } else {
            Err(ValueError::ClusterName { value })
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::new(value)
    }
}

impl FromStr for ClusterName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::new(s)
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterName({:?})", self.0)
    }
}

/// Where a peer's gRPC server listens: `http://HOST:PORT` or
/// `https://HOST:PORT`, with an explicit port and nothing after it (no path,
/// query or user info).
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PeerEndpoint(http::Uri);

impl PeerEndpoint {
    /// Validates and wraps an endpoint.
    pub fn new(value: &str) -> Result<Self, ValueError> {
        let refuse = |reason: &str| ValueError::Endpoint {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = value
            .parse()
            .map_err(|e: http::uri::InvalidUri| refuse(&format!("is not a URI ({e})")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err(refuse("must use the http or https scheme")),
            None => return Err(refuse("has no scheme")),
        }
        let Some(authority) = uri.authority() else {
            return Err(refuse("has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(refuse("must not carry user info"));
        }
        if authority.host().is_empty() {
            return Err(refuse("has no host"));
        }
        if authority.port_u16().is_none() {
            return Err(refuse("has no port"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(refuse("must not have a path or query"));
        }
        Ok(Self(uri))
    }

    /// The endpoint as a URI (what a gRPC client dials).
    pub fn uri(&self) -> &http::Uri {
        &self.0
    }

    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        self.0.host().unwrap_or_default()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port_u16().unwrap_or_default()
    }

    /// True for `https`.
    pub fn is_tls(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }

    /// True if this endpoint names exactly `addr` (an IP literal host with
    /// the same port); host names are not resolved.
    pub fn is_addr(&self, addr: std::net::SocketAddr) -> bool {
        let host = self.host().trim_start_matches('[').trim_end_matches(']');
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == addr.ip() && self.port() == addr.port())
    }
}

impl TryFrom<String> for PeerEndpoint {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::new(&value)
    }
}

impl FromStr for PeerEndpoint {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::new(s)
    }
}

impl fmt::Display for PeerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Uri` prints an absent path as "/"; the endpoint is written without.
        let scheme = self.0.scheme_str().unwrap_or("http");
        match self.0.authority() {
            Some(a) => write!(f, "{scheme}://{a}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for PeerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerEndpoint({self})")
    }
}

/// Deserializes a [`std::time::Duration`] written with its unit, as
/// `humantime` reads it: `"5ms"`, `"30s"`, `"1h 30m"`. A bare number is
/// refused, so no one has to guess the unit.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = std::time::Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit in quotes, e.g. \"5ms\", \"2s\", \"1h\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "duration {text:?}: {e}; write a number with a unit, e.g. \"5ms\", \"2s\", \"1h\""
                ))
            })
        }
    }
    d.deserialize_str(Visitor)
}

/// Deserializes a [`bytesize::ByteSize`]: a string with a unit (`"1MiB"` =
/// 1,048,576 bytes, `"1MB"` = 1,000,000 bytes, `"512 KiB"`) or a plain
/// integer number of bytes.
pub(crate) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<bytesize::ByteSize, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = bytesize::ByteSize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size with a unit in quotes, e.g. \"1MiB\", or a number of bytes")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            text.parse::<bytesize::ByteSize>().map_err(|e| {
                E::custom(format!(
                    "size {text:?}: {e}; write a number with a unit, e.g. \"1MiB\", \"512KiB\""
                ))
            })
        }
        fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<Self::Value, E> {
            Ok(bytesize::ByteSize::b(bytes))
        }
        fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<Self::Value, E> {
            u64::try_from(bytes)
                .map(bytesize::ByteSize::b)
                .map_err(|_| E::custom(format!("size {bytes} is negative")))
        }
    }
    d.deserialize_any(Visitor)
}

/// A duration as it would be written in the file (`"1m 30s"`).
pub(crate) fn format_duration(d: std::time::Duration) -> String {
    format!("\"{}\"", humantime::format_duration(d))
}

/// A size as it would be written in the file: the largest binary unit that
/// divides it exactly (`"1MiB"`, `"1536KiB"`, `"1000B"`).
pub(crate) fn format_size(size: bytesize::ByteSize) -> String {
    let bytes = size.as_u64();
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("\"{}{unit}\"", bytes >> shift);
        }
    }
    format!("\"{bytes}B\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        use bytesize::ByteSize;
        assert_eq!(format_size(ByteSize::mib(8)), "\"8MiB\"");
        assert_eq!(format_size(ByteSize::kib(1536)), "\"1536KiB\"");
        assert_eq!(format_size(ByteSize::b(1_000_000)), "\"1000000B\"");
        assert_eq!(format_size(ByteSize::b(0)), "\"0B\"");
    }

    #[test]
    fn cluster_names_are_validated() {
        assert!(ClusterName::new("demo-1.prod_x").is_ok());
        assert!(ClusterName::new("").is_err());
        assert!(ClusterName::new("has space").is_err());
        assert!(ClusterName::new("x".repeat(65)).is_err());
    }

    #[test]
    fn endpoints_need_http_scheme_host_and_port_only() {
        let e = PeerEndpoint::new("http://127.0.0.1:7102").expect("valid");
        assert_eq!(e.to_string(), "http://127.0.0.1:7102");
        assert_eq!((e.host(), e.port(), e.is_tls()), ("127.0.0.1", 7102, false));
        assert!(e.is_addr("127.0.0.1:7102".parse().expect("addr")));
        let v6 = PeerEndpoint::new("https://[::1]:443/").expect("valid");
        assert!(v6.is_tls());
        assert!(v6.is_addr("[::1]:443".parse().expect("addr")));
        for (bad, why) in [
            ("ftp://h:1", "scheme"),
            ("127.0.0.1:7102", "scheme"),
            ("http://h", "port"),
            ("http://h:1/x", "path"),
            ("http://h:1?q=1", "query"),
            ("http://u@h:1", "user info"),
            ("http://:1", "host"),
            ("not a uri", "URI"),
        ] {
            let err = PeerEndpoint::new(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
