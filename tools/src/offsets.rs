//! `replctl offsets`: the node's typed `OffsetsResponse` as a JSON document
//! and as sections of `origin seq` lines.
//!
//! Maps are sorted (the wire's maps have no order), so the output of two
//! calls on an idle node is identical and diffable.

use std::collections::BTreeMap;

use serde::Serialize;
use tributary_proto::v1::{OffsetsResponse, VersionVector};

use crate::render::{Table, to_line};

/// Sequence numbers by origin region.
pub type Vector = BTreeMap<String, u64>;

/// What a node has applied, kept, had acknowledged, and read from sources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Offsets {
    /// Highest contiguous sequence applied, per origin.
    pub applied: Vector,
    /// First sequence still in the log, per origin.
    pub log_start: Vector,
    /// Per peer, what it acknowledged, per origin.
    pub acked: BTreeMap<String, Vector>,
    /// Per source id, its opaque checkpoint.
    pub checkpoints: BTreeMap<String, String>,
}

fn vector(wire: Option<VersionVector>) -> Vector {
    wire.map(|v| v.seqs.into_iter().collect())
        .unwrap_or_default()
}

impl From<OffsetsResponse> for Offsets {
    fn from(wire: OffsetsResponse) -> Self {
        Self {
            applied: vector(wire.applied),
            log_start: vector(wire.log_start),
            acked: wire
                .acked
                .into_iter()
                .map(|(peer, v)| (peer, vector(Some(v))))
                .collect(),
            checkpoints: wire.checkpoints.into_iter().collect(),
        }
    }
}

impl Offsets {
    /// `{"applied":{..},"log_start":{..},"acked":{peer:{..}},"checkpoints":{..}}`
    /// on one line.
    pub fn json_line(&self) -> String {
        to_line(self)
    }

    /// Sections `applied`, `log start`, `acked by <peer>` (one per peer) and
    /// `checkpoints`, each followed by aligned `name value` lines, or
    /// `(none)`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        section(&mut out, "applied", seqs(&self.applied));
        section(&mut out, "log start", seqs(&self.log_start));
        if self.acked.is_empty() {
            section(&mut out, "acked", Vec::new());
        }
        for (peer, acked) in &self.acked {
            section(&mut out, &format!("acked by {peer}"), seqs(acked));
        }
        let checkpoints = self
            .checkpoints
            .iter()
            .map(|(source, checkpoint)| (source.clone(), checkpoint.clone()))
            .collect();
        section(&mut out, "checkpoints", checkpoints);
        out
    }
}

fn seqs(vector: &Vector) -> Vec<(String, String)> {
    vector
        .iter()
        .map(|(origin, seq)| (origin.clone(), seq.to_string()))
        .collect()
}

fn section(out: &mut String, title: &str, entries: Vec<(String, String)>) {
    out.push_str(title);
    out.push('\n');
    if entries.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let mut table = Table::headless();
    for (name, value) in entries {
        table.row([name, value]);
    }
    out.push_str(&table.render(2));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn wire_vector(entries: &[(&str, u64)]) -> VersionVector {
        VersionVector {
            seqs: entries.iter().map(|(o, s)| ((*o).to_owned(), *s)).collect(),
        }
    }

    fn sample() -> Offsets {
        Offsets::from(OffsetsResponse {
            applied: Some(wire_vector(&[("us-east-1", 17), ("eu-west-1", 4)])),
            acked: HashMap::from([("eu-west-1".to_owned(), wire_vector(&[("us-east-1", 17)]))]),
            checkpoints: HashMap::from([("kinesis-carts".to_owned(), "shard-0:49590".to_owned())]),
            log_start: None,
        })
    }

    #[test]
    fn json_has_the_contract_shape_and_order() {
        assert_eq!(
            sample().json_line(),
            r#"{"applied":{"eu-west-1":4,"us-east-1":17},"log_start":{},"acked":{"eu-west-1":{"us-east-1":17}},"checkpoints":{"kinesis-carts":"shard-0:49590"}}"#
        );
    }

    #[test]
    fn human_form_has_one_section_per_vector_and_peer() {
        assert_eq!(
            sample().render(),
            "\
applied
  eu-west-1  4
  us-east-1  17
log start
  (none)
acked by eu-west-1
  us-east-1  17
checkpoints
  kinesis-carts  shard-0:49590
"
        );
    }

    #[test]
    fn nothing_acked_still_shows_the_section() {
        let text = Offsets::default().render();
        assert!(text.contains("acked\n  (none)\n"), "{text}");
    }
}
