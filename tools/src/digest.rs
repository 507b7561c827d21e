//! `replctl digest`: the digest of every item, equal on converged regions.

use serde::Serialize;
use tributary_proto::v1::DigestResponse;

use crate::render::to_line;

/// A node's items digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Digest {
    /// Number of items digested.
    pub items: u64,
    /// The digest, hex.
    pub digest: String,
}

impl From<DigestResponse> for Digest {
    fn from(wire: DigestResponse) -> Self {
        Self {
            items: wire.items,
            digest: wire.digest,
        }
    }
}

impl Digest {
    /// Exactly `{"items":N,"digest":"<hex>"}`.
    pub fn json_line(&self) -> String {
        to_line(self)
    }

    /// `items N  digest <hex>`, one line.
    pub fn render(&self) -> String {
        format!("items {}  digest {}\n", self.items, self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Digest {
        Digest::from(DigestResponse {
            items: 42,
            digest: "9f86d081".to_owned(),
        })
    }

    #[test]
    fn json_is_exactly_items_then_digest() {
        assert_eq!(sample().json_line(), r#"{"items":42,"digest":"9f86d081"}"#);
    }

    #[test]
    fn human_form_is_one_line() {
        assert_eq!(sample().render(), "items 42  digest 9f86d081\n");
    }
}
