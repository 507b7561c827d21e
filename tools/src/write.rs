//! `replctl write`: stdin lines into `WriteRequest` batches, and the node's
//! results back into one JSON line per change.
//!
//! Invariants:
//! - a change is sent as the line's exact text (without its line ending);
//!   replctl does not parse it — the node validates changes, one place for
//!   the rules;
//! - blank lines are skipped and produce no output;
//! - every other line produces exactly one output line, in input order:
//!   `{"origin":"..","seq":N}` when written, `{"error":".."}` when not
//!   (including a line that is not UTF-8, rejected here because the wire
//!   carries text);
//! - a batch holds at most [`MAX_BATCH_LINES`] lines and, unless it is a
//!   single line, at most [`MAX_BATCH_BYTES`] bytes of changes.

use serde::Serialize;
use tributary_proto::v1::WriteResult;
use tributary_proto::v1::write_result::Result as WireResult;

use crate::render::to_line;

/// Most changes per `WriteRequest`.
pub const MAX_BATCH_LINES: usize = 256;

/// Most bytes of changes per `WriteRequest` (a single larger line is still
/// sent alone): keeps requests well under gRPC's default 4 MiB limit.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// One non-blank input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLine {
    /// A change, to be sent as is.
    Change(String),
    /// A line that cannot be sent: the reason.
    Unsendable(String),
}

impl InputLine {
    /// Classifies one raw line (with or without its `\n` / `\r\n`); `None`
    /// for a blank line.
    pub fn from_raw(mut raw: Vec<u8>) -> Option<Self> {
        if raw.last() == Some(&b'\n') {
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
        }
        if raw.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(match String::from_utf8(raw) {
            Ok(text) => Self::Change(text),
            Err(_) => Self::Unsendable("the line is not valid UTF-8".to_owned()),
        })
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Change(text) => text.len(),
            Self::Unsendable(_) => 0,
        }
    }
}

/// Lines waiting to be sent together, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    lines: Vec<InputLine>,
    bytes: usize,
}

impl Batch {
    /// Number of lines (sendable or not).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch has no line.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether `line` can join without breaking the size limits.
    fn fits(&self, line: &InputLine) -> bool {
        self.is_empty()
            || (self.len() < MAX_BATCH_LINES && self.bytes + line.bytes() <= MAX_BATCH_BYTES)
    }

    /// The changes to put in `WriteRequest.changes_json`, in order.
    pub fn changes(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                InputLine::Change(text) => Some(text.clone()),
                InputLine::Unsendable(_) => None,
            })
            .collect()
    }

    /// Pairs the node's results (one per sent change, in order) with the
    /// lines. Fails, with the message for the operator, when the node
    /// returned a different number of results than changes sent.
    pub fn outcomes(&self, results: Vec<WriteResult>) -> Result<Vec<Outcome>, String> {
        let sent = self.changes().len();
        if results.len() != sent {
            return Err(format!(
                "the node returned {} write results for {sent} changes",
                results.len()
            ));
        }
        let mut results = results.into_iter();
        Ok(self
            .lines
            .iter()
            .map(|line| match line {
                InputLine::Unsendable(reason) => Outcome::Rejected(reason.clone()),
                InputLine::Change(_) => results.next().map_or_else(
                    || Outcome::Rejected("no result from the node".to_owned()),
                    Outcome::from,
                ),
            })
            .collect())
    }

    /// Every line rejected with one reason: the node refused the whole
    /// request. Lines that could not be sent keep their own reason.
    pub fn rejected(&self, reason: &str) -> Vec<Outcome> {
        self.lines
            .iter()
            .map(|line| match line {
                InputLine::Unsendable(own) => Outcome::Rejected(own.clone()),
                InputLine::Change(_) => Outcome::Rejected(reason.to_owned()),
            })
            .collect()
    }
}

/// Groups lines into batches within the size limits.
#[derive(Debug, Default)]
pub struct Batcher {
    current: Batch,
}

impl Batcher {
    /// Adds a line. Returns the batch to send first when the line did not
    /// fit, or the batch it completed when it reached [`MAX_BATCH_LINES`].
    pub fn push(&mut self, line: InputLine) -> Option<Batch> {
        let ready = if self.current.fits(&line) {
            None
        } else {
            Some(std::mem::take(&mut self.current))
        };
        self.current.bytes += line.bytes();
        self.current.lines.push(line);
        if ready.is_none() && self.current.len() >= MAX_BATCH_LINES {
            return Some(std::mem::take(&mut self.current));
        }
        ready
    }

    /// The lines gathered so far, if any (to send when input pauses or ends).
    pub fn take(&mut self) -> Option<Batch> {
        if self.current.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.current))
        }
    }
}

/// What became of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted and durable at this origin and sequence number.
    Written {
        /// Region the change was written in.
        origin: String,
        /// Its sequence number in that region's log.
        seq: u64,
    },
    /// Not written: why.
    Rejected(String),
}

#[derive(Serialize)]
struct WrittenLine<'a> {
    origin: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    error: &'a str,
}

impl Outcome {
    /// The output line: `{"origin":"us-east-1","seq":17}` or
    /// `{"error":"..."}`, without a line ending.
    pub fn json_line(&self) -> String {
        match self {
            Self::Written { origin, seq } => to_line(&WrittenLine { origin, seq: *seq }),
            Self::Rejected(error) => to_line(&ErrorLine { error }),
        }
    }

    /// Whether the change was not written.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

impl From<WriteResult> for Outcome {
    fn from(result: WriteResult) -> Self {
        match result.result {
            Some(WireResult::Written(written)) => Self::Written {
                origin: written.origin,
                seq: written.seq,
            },
            Some(WireResult::Error(error)) => Self::Rejected(error),
            None => Self::Rejected("the node returned an empty result".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_proto::v1::Written;

    fn change(text: &str) -> InputLine {
        InputLine::Change(text.to_owned())
    }

    fn written(origin: &str, seq: u64) -> WriteResult {
        WriteResult {
            result: Some(WireResult::Written(Written {
                origin: origin.to_owned(),
                seq,
            })),
        }
    }

    fn error(message: &str) -> WriteResult {
        WriteResult {
            result: Some(WireResult::Error(message.to_owned())),
        }
    }

    #[test]
    fn result_lines_are_exactly_the_contract() {
        let ok = Outcome::from(written("us-east-1", 17));
        assert_eq!(ok.json_line(), r#"{"origin":"us-east-1","seq":17}"#);
        assert!(!ok.is_rejected());
        let bad = Outcome::from(error("unknown table \"nope\""));
        assert_eq!(bad.json_line(), r#"{"error":"unknown table \"nope\""}"#);
        assert!(bad.is_rejected());
        let empty = Outcome::from(WriteResult { result: None });
        assert!(empty.is_rejected());
    }

    #[test]
    fn lines_are_sent_exactly_as_read() {
        let raw = br#"{"table":"carts", "key":{"pk":"u1"}}"#.to_vec();
        let mut with_crlf = raw.clone();
        with_crlf.extend_from_slice(b"\r\n");
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert_eq!(
            InputLine::from_raw(raw),
            Some(InputLine::Change(text.clone()))
        );
        assert_eq!(
            InputLine::from_raw(with_crlf),
            Some(InputLine::Change(text))
        );
        assert_eq!(
            InputLine::from_raw(b"  not json either \n".to_vec()),
            Some(change("  not json either "))
        );
    }

    #[test]
    fn blank_lines_are_skipped() {
        for blank in [&b"\n"[..], b"", b"   \t\r\n", b"\r\n"] {
            assert_eq!(InputLine::from_raw(blank.to_vec()), None, "{blank:?}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_rejected_in_its_place() -> Result<(), String> {
        let mut batcher = Batcher::default();
        for raw in [&b"{\"a\":1}\n"[..], b"\xff\xfe\n", b"{\"b\":2}\n"] {
            let line = InputLine::from_raw(raw.to_vec());
            assert!(line.is_some());
            if let Some(line) = line {
                assert_eq!(batcher.push(line), None);
            }
        }
        let batch = batcher.take().ok_or("no batch")?;
        assert_eq!(batch.changes(), ["{\"a\":1}", "{\"b\":2}"]);
        let outcomes = batch.outcomes(vec![written("r", 1), written("r", 2)])?;
        let lines: Vec<String> = outcomes.iter().map(Outcome::json_line).collect();
        assert_eq!(
            lines,
            [
                r#"{"origin":"r","seq":1}"#,
                r#"{"error":"the line is not valid UTF-8"}"#,
                r#"{"origin":"r","seq":2}"#,
            ]
        );
        Ok(())
    }

    #[test]
    fn results_keep_input_order_and_errors_do_not_stop_the_rest() -> Result<(), String> {
        let mut batcher = Batcher::default();
        for text in ["a", "b", "c"] {
            assert_eq!(batcher.push(change(text)), None);
        }
        let batch = batcher.take().ok_or("no batch")?;
        let outcomes = batch.outcomes(vec![written("r", 1), error("bad"), written("r", 2)])?;
        assert_eq!(
            outcomes,
            [
                Outcome::Written {
                    origin: "r".to_owned(),
                    seq: 1
                },
                Outcome::Rejected("bad".to_owned()),
                Outcome::Written {
                    origin: "r".to_owned(),
                    seq: 2
                },
            ]
        );
        assert!(batcher.take().is_none());
        Ok(())
    }

    #[test]
    fn a_wrong_number_of_results_is_an_error() {
        let mut batcher = Batcher::default();
        batcher.push(change("a"));
        batcher.push(change("b"));
        let batch = batcher.take();
        let err = batch.map(|b| b.outcomes(vec![written("r", 1)]));
        assert!(matches!(err, Some(Err(message)) if message.contains("1 write results for 2")));
    }

    #[test]
    fn batches_close_at_256_lines() {
        let mut batcher = Batcher::default();
        let mut full = Vec::new();
        for i in 0..MAX_BATCH_LINES * 2 + 3 {
            if let Some(batch) = batcher.push(change(&i.to_string())) {
                full.push(batch);
            }
        }
        assert_eq!(full.iter().map(Batch::len).collect::<Vec<_>>(), [256, 256]);
        assert_eq!(full[1].changes().first().map(String::as_str), Some("256"));
        assert_eq!(batcher.take().map(|b| b.len()), Some(3));
    }

    #[test]
    fn batches_close_before_exceeding_the_byte_limit() {
        let big = "x".repeat(MAX_BATCH_BYTES / 2 + 1);
        let mut batcher = Batcher::default();
        assert_eq!(batcher.push(change(&big)), None);
        let first = batcher.push(change(&big));
        assert_eq!(first.map(|b| b.changes().len()), Some(1));
        let huge = "y".repeat(MAX_BATCH_BYTES * 2);
        let second = batcher.push(change(&huge));
        assert_eq!(second.map(|b| b.len()), Some(1));
        assert_eq!(batcher.take().map(|b| b.changes()), Some(vec![huge]));
    }

    #[test]
    fn a_refused_request_rejects_each_of_its_lines() {
        let mut batcher = Batcher::default();
        batcher.push(change("a"));
        batcher.push(InputLine::Unsendable("not utf-8".to_owned()));
        let lines: Vec<String> = batcher
            .take()
            .map(|b| b.rejected("too many changes"))
            .unwrap_or_default()
            .iter()
            .map(Outcome::json_line)
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"error":"too many changes"}"#,
                r#"{"error":"not utf-8"}"#
            ]
        );
    }
}
