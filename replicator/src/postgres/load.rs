//! The initial load of a PostgreSQL table: rows that exist before the
//! source's slot (or were written while the slot was being created) are
//! scanned once, then the slot is followed (snapshot-then-stream).
//!
//! 1. The slot exists first ([`super::source`] creates it), so every
//!    change committed after its consistent point is in it.
//! 2. The load's checkpoint (`postgres:SLOT/initial-load`) records
//!    `scanning:LSN:MODE`, then the table is read in one `REPEATABLE READ`
//!    snapshot, page by page, each page one atomic log commit of the rows'
//!    changes (`initial_load = "items"`) or only their images (`"image"`).
//!    A restart mid-scan scans again and skips rows that have an image.
//! 3. The server's WAL position after the scan, `END`, is recorded:
//!    `done:LSN:END`.
//! 4. The slot's transactions that commit at or before `END` may or may
//!    not be in the scan's snapshot: each row change applies only where its
//!    old row is what the image holds (an insert, where the image holds no
//!    row); otherwise the scan saw it, or a later state, and it is skipped
//!    ([`crate::sidecar::classify::continues_from`]). Later transactions
//!    cannot be in the snapshot and apply as usual.
//!
//! Every value is read as text (`col::text`) on a connection made like the
//! source's own, so a scanned row and a decoded row map to the same
//! attribute values (the session settings that shape the text, such as
//! `DateStyle`, are the same).

use std::sync::Arc;

use tokio_postgres::IsolationLevel;
use tributary_engine::schema::TableSchema;

use super::catalog::TableInfo;
use super::wal2json::{Column, image};
use super::{connect, describe, format_lsn, parse_lsn, quote_ident};
use crate::config::InitialLoad;
use crate::node::Core;
use crate::sidecar::load::{ScannedRow, Start, begin};

/// Rows fetched (and committed to the log) per page.
const PAGE: i32 = 500;

/// Runs the initial load of the source `prefix` if it needs one
/// (`streaming`: it has read its slot before); returns the end of the load
/// window (`None`: no load happened).
pub async fn run(
    core: &Arc<Core>,
    dsn: &str,
    schema: &TableSchema,
    info: &TableInfo,
    prefix: &str,
    streaming: bool,
    configured: InitialLoad,
) -> Result<Option<u64>, String> {
    let mut client = connect(dsn).await?;
    let here = current_lsn(&client).await?;
    let mut load = match begin(core, prefix, streaming, configured, || here.clone())? {
        Start::Skip => return Ok(None),
        Start::Done { end, .. } => return Ok(parse_lsn(&end)),
        Start::Scan(load) => load,
    };
    tracing::info!(source = %prefix, table = %info.dotted, mode = load.mode.name(), "initial load: scanning the table");
    let columns: Vec<(&String, &String)> = info.columns.iter().collect();
    let select = format!(
        "SELECT {} FROM ONLY {}",
        columns
            .iter()
            .map(|(name, _)| format!("{}::text", quote_ident(name)))
            .collect::<Vec<_>>()
            .join(", "),
        info.qualified
    );
    let scan = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| format!("starting the scan: {}", describe(&e)))?;
    let portal = scan
        .bind(select.as_str(), &[])
        .await
        .map_err(|e| format!("scanning {}: {}", info.dotted, describe(&e)))?;
    loop {
        let rows = scan
            .query_portal(&portal, PAGE)
            .await
            .map_err(|e| format!("scanning {}: {}", info.dotted, describe(&e)))?;
        let scanned: Vec<ScannedRow> = rows
            .iter()
            .map(|row| {
                let row: Vec<Column> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, (name, sql_type))| Column {
                        name: (*name).clone(),
                        sql_type: (*sql_type).clone(),
                        value: row
                            .get::<_, Option<String>>(i)
                            .map_or(serde_json::Value::Null, serde_json::Value::String),
                    })
                    .collect();
                image(schema, &row).map_err(|reason| (reason, row_json(&row)))
            })
            .collect();
        let last = scanned.len() < PAGE as usize;
        load.page(core, schema, None, scanned).await?;
        if last {
            break;
        }
    }
    scan.commit()
        .await
        .map_err(|e| format!("ending the scan: {}", describe(&e)))?;
    let end = current_lsn(&client).await?;
    load.finish(core, end.clone()).await?;
    Ok(parse_lsn(&end))
}

async fn current_lsn(client: &tokio_postgres::Client) -> Result<String, String> {
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    // Normalised, so a recorded mark parses back.
    Ok(parse_lsn(&lsn).map(format_lsn).unwrap_or(lsn))
}

/// A scanned row as JSON text, `{"column": "text"}` (a dead letter's raw
/// bytes).
fn row_json(row: &[Column]) -> String {
    serde_json::Value::Object(
        row.iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect(),
    )
    .to_string()
}
