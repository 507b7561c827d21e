//! The PostgreSQL sidecar (Aurora PostgreSQL or any PostgreSQL ≥ 15 with
//! `wal_level = logical` and the wal2json plugin): a source that reads a
//! table's logical decoding from a replication slot into the log, and a
//! sink that writes merged results back.
//!
//! - [`source`]: `pg_logical_slot_peek_changes` (wal2json format 2) up to
//!   the server's current WAL position; each poll's complete transactions
//!   enter the log in one atomic commit with the slot's checkpoint (the
//!   last commit LSN); only then is the slot advanced
//!   (`pg_replication_slot_advance`), so the slot is never confirmed ahead
//!   of the durable log; an idle poll advances it to the server's position,
//!   so WAL does not pile up. Rows the sink wrote carry its replication
//!   origin: they only move the table image (no echo, no double count).
//! - [`load`]: the initial load of the rows that exist before the slot:
//!   one snapshot scan after the slot is created, then the slot, whose
//!   first transactions apply only where they continue from the scan.
//! - [`sink`]: upserts conditioned on the values the table image shows
//!   (counters as `col = col + delta`), in a session tagged with the
//!   sink's replication origin.
//! - [`types`]: the SQL type ↔ attribute value mapping.
//! - [`catalog`]: the table's columns, primary key and replica identity,
//!   checked at start-up against the `[[tables]]` schema.
//! - [`wal2json`]: the decoder of wal2json's messages (pure).

pub mod types;
pub mod wal2json;

node_only! {
    pub mod catalog;
    pub mod load;
    pub mod sink;
    pub mod source;
}

#[cfg(feature = "node")]
/// Connects with `dsn` (no TLS: loopback or a private network; TLS comes
/// with the security issue) and drives the connection in a task.
pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL ({}): {e}", redact(dsn)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A DSN without its password, for messages.
pub fn redact(dsn: &str) -> String {
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=…"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An LSN (`X/Y`) as a number, for comparisons.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// A number as an LSN (`X/Y`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A SQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(feature = "node")]
/// The error's SQLSTATE and message, in one line.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_and_order() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(parse_lsn("2A/FF00").expect("lsn")), "2A/FF00");
        assert!(parse_lsn("0/FFFFFFFF") < parse_lsn("1/0"));
        assert_eq!(parse_lsn("junk"), None);
    }

    #[test]
    fn passwords_are_redacted_and_identifiers_quoted() {
        assert_eq!(
            redact("host=h password=secret user=u"),
            "host=h password=… user=u"
        );
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
