//! The lag report (`replctl lag`): the node's lag document, its table, and
//! the threshold check whose result is the exit code.
//!
//! The document is the node's; replctl reads only the fields below and
//! ignores the others (they still reach `--json` output, which prints the
//! document as received). A threshold is exceeded strictly, per peer (the
//! peer row carries the totals over origins): when `pending_records` is
//! greater than `--max-records`, or `oldest_pending_seconds` greater than
//! `--max-seconds`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::exit::Exit;
use crate::render::Table;

/// The lag of one node towards each of its peers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LagReport {
    /// The reporting node's region.
    pub region: String,
    /// One entry per configured peer.
    pub peers: Vec<PeerLag>,
    /// Per change-stream source (absent from nodes without one).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceLag>,
    /// Per sink (absent from nodes without one).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkLag>,
}

/// A source: its shards and what it dead-lettered.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SourceLag {
    /// Per shard.
    #[serde(default)]
    pub shards: BTreeMap<String, ShardLag>,
    /// Records dead-lettered since the node started.
    #[serde(default)]
    pub dead_letters: u64,
    /// The last source-wide error.
    #[serde(default)]
    pub error: Option<String>,
}

/// A shard's position and lag behind the stream.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ShardLag {
    /// The last record read.
    #[serde(default)]
    pub last_offset: Option<String>,
    /// How far the last read was behind the stream's tip (Kinesis).
    #[serde(default)]
    pub millis_behind: Option<i64>,
    /// Closed and read to its end.
    #[serde(default)]
    pub finished: bool,
    /// The last read's error.
    #[serde(default)]
    pub error: Option<String>,
}

/// A sink's backlog and failures.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct SinkLag {
    /// Items still to write.
    #[serde(default)]
    pub backlog: u64,
    /// Writes retried since start.
    #[serde(default)]
    pub retries: u64,
    /// Writes whose condition failed (retried) since start.
    #[serde(default)]
    pub conflicts: u64,
    /// Items dead-lettered since start.
    #[serde(default)]
    pub dead_letters: u64,
    /// The last error.
    #[serde(default)]
    pub error: Option<String>,
}

/// What a node still has to ship to one peer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PeerLag {
    /// The peer's region.
    pub peer: String,
    /// Whether the link to the peer is up.
    pub connected: bool,
    /// Whether shipping to the peer is paused by an operator.
    pub paused: bool,
    /// Records not yet acknowledged by the peer, over all origins.
    pub pending_records: u64,
    /// Age of the oldest unacknowledged record, in seconds.
    pub oldest_pending_seconds: f64,
    /// Seconds since the peer's last acknowledgement; `None` if never.
    #[serde(default)]
    pub last_ack_seconds: Option<f64>,
    /// Recent shipping rate; `None` when the node has no estimate.
    #[serde(default)]
    pub throughput_records_per_second: Option<f64>,
    /// The pending records split by origin region.
    #[serde(default)]
    pub origins: Vec<OriginLag>,
}

/// The part of a peer's lag that comes from one origin region.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OriginLag {
    /// The region where the records were written.
    pub origin: String,
    /// Records of this origin not yet acknowledged by the peer.
    pub pending_records: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_seconds: f64,
}

impl LagReport {
    /// Reads the node's `lag_json`.
    pub fn parse(lag_json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(lag_json)
    }

    /// `region R` and the table: per peer a totals row (ORIGIN `*`) then one
    /// indented row per origin.
    pub fn render(&self) -> String {
        let mut table = Table::new([
            "PEER",
            "ORIGIN",
            "CONNECTED",
            "PAUSED",
            "PENDING",
            "OLDEST(s)",
            "LAST-ACK(s)",
            "RATE(/s)",
        ]);
        for peer in &self.peers {
            table.row([
                peer.peer.clone(),
                "*".to_owned(),
                yes_no(peer.connected),
                yes_no(peer.paused),
                peer.pending_records.to_string(),
                seconds(peer.oldest_pending_seconds),
                peer.last_ack_seconds
                    .map_or_else(|| "-".to_owned(), seconds),
                peer.throughput_records_per_second
                    .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}")),
            ]);
            for origin in &peer.origins {
                table.row([
                    format!("  {}", peer.peer),
                    origin.origin.clone(),
                    String::new(),
                    String::new(),
                    origin.pending_records.to_string(),
                    seconds(origin.oldest_pending_seconds),
                ]);
            }
        }
        let mut out = format!("region {}\n", self.region);
        out.push_str(&table.render(0));
        if self.peers.is_empty() {
            out.push_str("(no peers)\n");
        }
        if !self.sources.is_empty() {
            let mut sources = Table::new([
                "SOURCE",
                "SHARD",
                "LAST-OFFSET",
                "BEHIND(ms)",
                "DEAD-LETTERS",
                "ERROR",
            ]);
            for (name, source) in &self.sources {
                sources.row([
                    name.clone(),
                    "*".to_owned(),
                    String::new(),
                    String::new(),
                    source.dead_letters.to_string(),
                    source.error.clone().unwrap_or_default(),
                ]);
                for (shard, s) in &source.shards {
                    sources.row([
                        format!("  {name}"),
                        shard.clone(),
                        s.last_offset.clone().unwrap_or_else(|| "-".to_owned())
                            + if s.finished { " (end)" } else { "" },
                        s.millis_behind
                            .map_or_else(|| "-".to_owned(), |m| m.to_string()),
                        String::new(),
                        s.error.clone().unwrap_or_default(),
                    ]);
                }
            }
            out.push_str(&sources.render(0));
        }
        if !self.sinks.is_empty() {
            let mut sinks = Table::new([
                "SINK",
                "BACKLOG",
                "RETRIES",
                "CONFLICTS",
                "DEAD-LETTERS",
                "ERROR",
            ]);
            for (name, s) in &self.sinks {
                sinks.row([
                    name.clone(),
                    s.backlog.to_string(),
                    s.retries.to_string(),
                    s.conflicts.to_string(),
                    s.dead_letters.to_string(),
                    s.error.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&sinks.render(0));
        }
        out
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

fn seconds(value: f64) -> String {
    format!("{value:.1}")
}

/// The `--max-records` and `--max-seconds` limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Most pending records a peer may have.
    pub max_records: Option<u64>,
    /// Oldest a pending record may be, in seconds.
    pub max_seconds: Option<f64>,
}

/// A peer over a threshold.
#[derive(Debug, Clone, PartialEq)]
pub enum Breach {
    /// More records pending than `--max-records`.
    Records {
        /// The peer.
        peer: String,
        /// Its pending records.
        pending: u64,
        /// The limit.
        max: u64,
    },
    /// Oldest pending record older than `--max-seconds`.
    Seconds {
        /// The peer.
        peer: String,
        /// Age of its oldest pending record.
        oldest: f64,
        /// The limit.
        max: f64,
    },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Records { peer, pending, max } => write!(
                f,
                "peer {peer}: {pending} records pending, more than --max-records {max}"
            ),
            Self::Seconds { peer, oldest, max } => write!(
                f,
                "peer {peer}: oldest pending record is {oldest:.1}s old, more than --max-seconds {max}"
            ),
        }
    }
}

impl Thresholds {
    /// Whether any limit is set (otherwise the report need not be read).
    pub fn any(&self) -> bool {
        self.max_records.is_some() || self.max_seconds.is_some()
    }

    /// Every peer over a limit, in report order, records before seconds.
    pub fn check(&self, report: &LagReport) -> Vec<Breach> {
        let mut breaches = Vec::new();
        for peer in &report.peers {
            if let Some(max) = self.max_records
                && peer.pending_records > max
            {
                breaches.push(Breach::Records {
                    peer: peer.peer.clone(),
                    pending: peer.pending_records,
                    max,
                });
            }
            if let Some(max) = self.max_seconds
                && peer.oldest_pending_seconds > max
            {
                breaches.push(Breach::Seconds {
                    peer: peer.peer.clone(),
                    oldest: peer.oldest_pending_seconds,
                    max,
                });
            }
        }
        breaches
    }
}

/// Exit 1 when any threshold was exceeded, else 0.
pub fn exit_for(breaches: &[Breach]) -> Exit {
    if breaches.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"region":"us-east-1","peers":[
        {"peer":"eu-west-1","connected":true,"paused":false,"pending_records":1500,
         "oldest_pending_seconds":3.25,"last_ack_seconds":0.2,
         "throughput_records_per_second":12.5,"future_field":{"x":1},
         "origins":[{"origin":"us-east-1","pending_records":1000,"oldest_pending_seconds":3.25},
                    {"origin":"ap-south-1","pending_records":500,"oldest_pending_seconds":1.0}]},
        {"peer":"ap-south-1","connected":false,"paused":true,"pending_records":0,
         "oldest_pending_seconds":0.0,"last_ack_seconds":null,
         "throughput_records_per_second":0.0,"origins":[]}]}"#;

    fn report() -> Result<LagReport, serde_json::Error> {
        LagReport::parse(DOC)
    }

    #[test]
    fn unknown_fields_are_ignored_and_null_last_ack_is_none() -> Result<(), serde_json::Error> {
        let report = report()?;
        assert_eq!(report.region, "us-east-1");
        assert_eq!(report.peers.len(), 2);
        assert_eq!(report.peers[0].origins.len(), 2);
        assert_eq!(report.peers[1].last_ack_seconds, None);
        Ok(())
    }

    #[test]
    fn a_document_without_the_counts_is_refused() {
        assert!(LagReport::parse(r#"{"region":"r","peers":[{"peer":"p"}]}"#).is_err());
    }

    #[test]
    fn table_has_a_totals_row_per_peer_then_indented_origin_rows() -> Result<(), serde_json::Error>
    {
        let text = report()?.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "region us-east-1");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "PEER",
                "ORIGIN",
                "CONNECTED",
                "PAUSED",
                "PENDING",
                "OLDEST(s)",
                "LAST-ACK(s)",
                "RATE(/s)"
            ]
        );
        let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            row(2),
            ["eu-west-1", "*", "yes", "no", "1500", "3.2", "0.2", "12.5"]
        );
        assert!(lines[3].starts_with("  eu-west-1"));
        assert_eq!(row(3), ["eu-west-1", "us-east-1", "1000", "3.2"]);
        assert_eq!(row(4), ["eu-west-1", "ap-south-1", "500", "1.0"]);
        assert_eq!(
            row(5),
            ["ap-south-1", "*", "no", "yes", "0", "0.0", "-", "0.0"]
        );
        assert_eq!(lines.len(), 6);
        Ok(())
    }

    #[test]
    fn columns_line_up() -> Result<(), serde_json::Error> {
        let text = report()?.render();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        let pending_column = lines[0].find("PENDING");
        assert!(pending_column.is_some());
        for line in &lines[1..] {
            let at = pending_column.and_then(|c| line.get(c..));
            assert!(
                at.is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_digit())),
                "{line:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn sources_and_sinks_follow_the_peers() -> Result<(), serde_json::Error> {
        let report = LagReport::parse(
            r#"{"region":"us-east-1","peers":[],
                "sources":{"kinesis:carts":{"shards":{"shardId-0":{"last_offset":"49","millis_behind":1200,"finished":false,"records":3}},"dead_letters":2,"echoes":5}},
                "sinks":{"sink:dynamodb:carts":{"backlog":4,"retries":1,"conflicts":3,"dead_letters":0,"written":9}}}"#,
        )?;
        let text: Vec<String> = report
            .render()
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect();
        assert_eq!(
            text[3..],
            [
                "SOURCE           SHARD      LAST-OFFSET  BEHIND(ms)  DEAD-LETTERS  ERROR",
                "kinesis:carts    *                                   2",
                "  kinesis:carts  shardId-0  49           1200",
                "SINK                 BACKLOG  RETRIES  CONFLICTS  DEAD-LETTERS  ERROR",
                "sink:dynamodb:carts  4        1        3          0",
            ]
        );
        Ok(())
    }

    #[test]
    fn no_peers_is_said() {
        let empty = LagReport {
            region: "r".to_owned(),
            peers: Vec::new(),
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
        };
        assert!(empty.render().ends_with("(no peers)\n"));
    }

    #[test]
    fn more_pending_records_than_the_limit_exits_1() -> Result<(), serde_json::Error> {
        let thresholds = Thresholds {
            max_records: Some(1000),
            max_seconds: None,
        };
        let breaches = thresholds.check(&report()?);
        assert_eq!(
            breaches,
            [Breach::Records {
                peer: "eu-west-1".to_owned(),
                pending: 1500,
                max: 1000
            }]
        );
        assert_eq!(exit_for(&breaches), Exit::Failure);
        assert_eq!(
            breaches[0].to_string(),
            "peer eu-west-1: 1500 records pending, more than --max-records 1000"
        );
        Ok(())
    }

    #[test]
    fn limits_are_strict() -> Result<(), serde_json::Error> {
        let at_the_limit = Thresholds {
            max_records: Some(1500),
            max_seconds: Some(3.25),
        };
        let breaches = at_the_limit.check(&report()?);
        assert!(breaches.is_empty(), "{breaches:?}");
        assert_eq!(exit_for(&breaches), Exit::Success);
        Ok(())
    }

    #[test]
    fn an_old_pending_record_exits_1() -> Result<(), serde_json::Error> {
        let thresholds = Thresholds {
            max_records: None,
            max_seconds: Some(3.0),
        };
        let breaches = thresholds.check(&report()?);
        assert_eq!(breaches.len(), 1);
        assert!(matches!(&breaches[0], Breach::Seconds { peer, .. } if peer == "eu-west-1"));
        assert_eq!(exit_for(&breaches), Exit::Failure);
        Ok(())
    }

    #[test]
    fn no_limits_never_fail() -> Result<(), serde_json::Error> {
        let none = Thresholds::default();
        assert!(!none.any());
        assert!(none.check(&report()?).is_empty());
        Ok(())
    }
}
