//! `replctl dead-letters`: records a source could not apply, one line each.
//!
//! `raw` is shown as UTF-8 with invalid bytes replaced (U+FFFD): the record
//! as the source delivered it, readable when it was text, which it usually
//! is (JSON).

use serde::Serialize;
use tributary_proto::v1::DeadLetter;

use crate::render::to_line;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Letter {
    /// Id, increasing; `--after` pages by it.
    pub id: u64,
    /// The source it came from.
    pub source: String,
    /// Its position in that source.
    pub offset: String,
    /// Why it was not applied (the last attempt's error).
    pub reason: String,
    /// How many times applying it was tried.
    pub attempts: u32,
    /// When it was dead-lettered, milliseconds since the Unix epoch.
    pub at_millis: u64,
    /// The record as received, UTF-8 with invalid bytes replaced.
    pub raw: String,
}

impl From<DeadLetter> for Letter {
    fn from(wire: DeadLetter) -> Self {
        Self {
            id: wire.id,
            source: wire.source,
            offset: wire.offset,
            reason: wire.reason,
            attempts: wire.attempts,
            at_millis: wire.at_millis,
            raw: String::from_utf8_lossy(&wire.raw).into_owned(),
        }
    }
}

impl Letter {
    /// `{"id":..,"source":..,"offset":..,"reason":..,"attempts":..,"at_millis":..,"raw":..}`.
    pub fn json_line(&self) -> String {
        to_line(self)
    }

    /// `#id source offset attempts reason`, one line (control characters
    /// in the reason escaped).
    pub fn render(&self) -> String {
        let reason: String = self
            .reason
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        format!(
            "#{} {} {} {} {}\n",
            self.id, self.source, self.offset, self.attempts, reason
        )
    }
}

/// `replctl dlq retry --json`: `{"id":..,"applied":..,"outcome":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryAnswer {
    /// The letter.
    pub id: u64,
    /// Applied (and removed), or still failing.
    pub applied: bool,
    /// What happened, in words.
    pub outcome: String,
}

/// `replctl dlq drop --json`: `{"id":..,"dropped":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropAnswer {
    /// The letter.
    pub id: u64,
    /// False when there was no such letter.
    pub dropped: bool,
}

impl Letter {
    /// Every field on its own line, the raw record last (`dlq show`).
    pub fn render_whole(&self) -> String {
        format!(
            "id        {}\nsource    {}\noffset    {}\nattempts  {}\nat        {} ms since the epoch\nreason    {}\nraw       {}\n",
            self.id, self.source, self.offset, self.attempts, self.at_millis, self.reason, self.raw
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Letter {
        Letter::from(DeadLetter {
            id: 7,
            source: "kinesis-carts".to_owned(),
            offset: "shard-0:49590".to_owned(),
            reason: "unknown table \"nope\"\nat line 1".to_owned(),
            raw: b"{\"table\":\"nope\"}\xff".to_vec(),
            attempts: 3,
            at_millis: 1_700_000_000_000,
        })
    }

    #[test]
    fn json_line_has_every_field_in_order_and_raw_as_text() {
        assert_eq!(
            sample().json_line(),
            r#"{"id":7,"source":"kinesis-carts","offset":"shard-0:49590","reason":"unknown table \"nope\"\nat line 1","attempts":3,"at_millis":1700000000000,"raw":"{\"table\":\"nope\"}�"}"#
        );
    }

    #[test]
    fn human_line_is_one_line() {
        assert_eq!(
            sample().render(),
            "#7 kinesis-carts shard-0:49590 3 unknown table \"nope\"\\nat line 1\n"
        );
    }
}
