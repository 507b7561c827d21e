//! `kind = "postgres"` source: a table's logical decoding (wal2json) from a
//! replication slot the node creates if missing.
//!
//! Each poll reads the server's current WAL position `upto`, then peeks
//! the slot's changes up to it (`pg_logical_slot_peek_changes`: peeking
//! consumes nothing). The complete transactions after the checkpoint enter
//! the log in one atomic commit with the checkpoint (`lsn:X/Y`, the last
//! commit's LSN), the table images and the dead letters; only once that is
//! durable is the slot advanced to the commit — so the slot is never
//! confirmed ahead of the log, and a crash in between replays transactions
//! the checkpoint then skips. A poll with nothing to read advances the slot
//! to `upto`, so WAL never piles up on an idle database. A slot that was
//! dropped, or invalidated by the server (`wal_status = lost`), is reported
//! loudly and never recreated behind the operator's back (changes were
//! lost); a slot used by another consumer is reported until it is free.
//!
//! Rows written by the table's sink carry its replication origin: they
//! only move the table image (no echo). Rows that cannot be read (a value
//! that does not map, a row without its old values) are dead letters with
//! the wal2json message, LSN and reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tributary_engine::change::Change;
use tributary_engine::ids::SourceId;
use tributary_engine::key::ItemKey;
use tributary_engine::log::Attached;
use tributary_engine::schema::TableSchema;
use tributary_engine::store::{Checkpoint, DeadLetter, LogStore};
use tributary_engine::stream_record::{EventName, derive_change};

use super::wal2json::{Message, decode, to_record};
use super::{catalog, load};
use super::{connect, describe, format_lsn, parse_lsn};
use crate::config::PostgresSourceConfig;
use crate::link::Backoff;
use crate::node::{Core, now_millis};
use crate::sidecar::classify::{continues_from, is_key_or_marker};
use crate::sidecar::facts::{Ingested, ShardFacts};
use crate::sidecar::image::{TableImage, image_key};

/// The options every peek passes to wal2json.
const PEEK: &str = "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, $2::text::pg_lsn, NULL, \
     'format-version', '2', 'include-types', '1', 'include-xids', '1', \
     'include-origin', '1', 'add-tables', $3)";

/// Runs the source until the node shuts down; reconnects with backoff.
pub async fn run(
    core: Arc<Core>,
    config: PostgresSourceConfig,
    schema: TableSchema,
    sink_origin: Option<String>,
) {
    let prefix = format!("postgres:{}", config.slot);
    while let Some(why) = core.write_gate() {
        core.sidecar
            .source_error(&prefix, &format!("waiting: {why}"));
        if core.sleep_or_shutdown(Duration::from_millis(100)).await {
            return;
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match session(
            &core,
            &config,
            &schema,
            sink_origin.as_deref(),
            &prefix,
            &mut backoff,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                core.sidecar.source_error(&prefix, &e);
                tracing::error!(source = %prefix, error = %e, "PostgreSQL source failed; retrying");
                let delay = backoff.next_delay(rand::random::<f64>());
                if core
                    .sleep_or_shutdown(delay.max(Duration::from_millis(50)))
                    .await
                {
                    return;
                }
            }
        }
    }
}

/// One connection's life: checks, then polls until shutdown (`Ok`) or an
/// error.
async fn session(
    core: &Arc<Core>,
    config: &PostgresSourceConfig,
    schema: &TableSchema,
    sink_origin: Option<&str>,
    prefix: &str,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let id = SourceId::new(prefix).map_err(|e| e.to_string())?;
    let client = connect(&config.dsn).await?;
    let info = catalog::load(&client, config.table.as_str()).await?;
    if let Some(problem) = info.problem(schema, true) {
        return Err(problem);
    }
    let checkpoint = core
        .store
        .checkpoint(&id)
        .map_err(|e| e.to_string())?
        .and_then(|c| c.0.strip_prefix("lsn:").and_then(parse_lsn));
    ensure_slot(&client, &config.slot, checkpoint.is_some()).await?;
    // The slot exists: rows from before it are scanned now (once).
    let window = load::run(
        core,
        &config.dsn,
        schema,
        &info,
        prefix,
        checkpoint.is_some(),
        config.initial_load,
    )
    .await
    .map_err(|e| format!("initial load: {e}"))?;
    core.sidecar.load_finished(config.table.as_str());
    let sink_origin = match sink_origin {
        Some(name) => Some(origin_id(&client, name).await?),
        None => None,
    };
    let mut done = checkpoint.unwrap_or(0);
    loop {
        if *core.shutdown.borrow() {
            return Ok(());
        }
        let upto: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| describe(&e))?
            .get(0);
        let rows = client
            .query(PEEK, &[&config.slot, &upto, &info.dotted])
            .await
            .map_err(|e| format!("reading slot {}: {}", config.slot, describe(&e)))?;
        let messages: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let transactions = transactions(&messages, done);
        let advance_to = match transactions.last() {
            Some((commit, _)) => {
                let commit = *commit;
                let read = Read {
                    schema,
                    sink_origin,
                    window,
                };
                ingest(core, &read, prefix, &id, &transactions).await?;
                crate::crash::point("postgres-source-after-commit");
                done = commit;
                commit
            }
            // Nothing new (or only transactions the log already holds):
            // the slot can move to what was read.
            None if messages.is_empty() => parse_lsn(&upto).unwrap_or(done).max(done),
            None => done,
        };
        client
            .query(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&config.slot, &format_lsn(advance_to)],
            )
            .await
            .map_err(|e| format!("advancing slot {}: {}", config.slot, describe(&e)))?;
        backoff.reset();
        core.sidecar.shard_read(
            prefix,
            &config.slot,
            ShardFacts {
                millis_behind: None,
                last_offset: transactions.last().map(|(lsn, _)| format_lsn(*lsn)),
                records: transactions.iter().map(|(_, rows)| rows.len() as u64).sum(),
                finished: false,
            },
        );
        if transactions.is_empty() && core.sleep_or_shutdown(config.poll_interval).await {
            return Ok(());
        }
    }
}

/// The id of replication origin `name`, created if missing (the sink
/// creates it too; whichever starts first).
async fn origin_id(client: &Client, name: &str) -> Result<u32, String> {
    client
        .query(
            "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
             (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
            &[&name],
        )
        .await
        .map_err(|e| format!("creating replication origin {name}: {}", describe(&e)))?;
    let id: i64 = client
        .query_one(
            "SELECT roident::bigint FROM pg_replication_origin WHERE roname = $1",
            &[&name],
        )
        .await
        .map_err(|e| format!("reading replication origin {name}: {}", describe(&e)))?
        .get(0);
    u32::try_from(id).map_err(|_| format!("replication origin {name} has id {id}"))
}

/// Makes sure the slot exists with wal2json and is usable. A missing slot
/// is created only on the first start (`had_checkpoint` false): later, it
/// was dropped, and the changes since are lost.
async fn ensure_slot(client: &Client, slot: &str, had_checkpoint: bool) -> Result<(), String> {
    let rows = client
        .query(
            "SELECT plugin::text, coalesce(wal_status, ''), active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| describe(&e))?;
    match rows.first() {
        None if had_checkpoint => Err(format!(
            "replication slot {slot} was dropped: the changes made since this node last read it are lost to it; \
             recreate the slot and reload the table (remove this source's checkpoints) once you have checked what is missing"
        )),
        None => {
            client
                .query(
                    "SELECT pg_create_logical_replication_slot($1, 'wal2json')",
                    &[&slot],
                )
                .await
                .map_err(|e| format!("creating slot {slot}: {}", describe(&e)))?;
            tracing::info!(%slot, "created the logical replication slot");
            Ok(())
        }
        Some(row) => {
            let plugin: String = row.get(0);
            let status: String = row.get(1);
            let active: Option<i32> = row.get(2);
            if plugin != "wal2json" {
                return Err(format!(
                    "replication slot {slot} decodes with {plugin}, not wal2json; give this source its own slot"
                ));
            }
            if status == "lost" {
                return Err(format!(
                    "replication slot {slot} was invalidated by the server (wal_status = lost): WAL it needed was removed"
                ));
            }
            if let Some(pid) = active {
                return Err(format!(
                    "replication slot {slot} is in use by another consumer (PID {pid}); give this source its own slot"
                ));
            }
            Ok(())
        }
    }
}

/// A transaction's row message: its LSN, its text, and the transaction's
/// replication origin id.
type RowMessage = (String, String, Option<u32>);

/// The complete transactions (commit LSN, their row messages) after
/// `done`, in commit order.
fn transactions(messages: &[(String, String)], done: u64) -> Vec<(u64, Vec<RowMessage>)> {
    let mut out = Vec::new();
    let mut current: Vec<RowMessage> = Vec::new();
    let mut origin = None;
    for (lsn, data) in messages {
        match decode(data) {
            Ok(Message::Begin(o)) => {
                current.clear();
                origin = o;
            }
            Ok(Message::Commit) => {
                let commit = parse_lsn(lsn).unwrap_or(0);
                let rows = std::mem::take(&mut current);
                if commit > done {
                    out.push((commit, rows));
                }
            }
            // Rows, and messages that do not decode (dead letters later).
            _ => current.push((lsn.clone(), data.clone(), origin)),
        }
    }
    out
}

/// How a session reads its rows.
struct Read<'a> {
    schema: &'a TableSchema,
    /// The numeric id of the sink's replication origin.
    sink_origin: Option<u32>,
    /// The end of the initial load's window: a transaction committed at or
    /// before it applies only where it continues from the scanned image.
    window: Option<u64>,
}

/// Ingests `transactions` in one atomic commit with the checkpoint.
async fn ingest(
    core: &Arc<Core>,
    read: &Read<'_>,
    prefix: &str,
    id: &SourceId,
    transactions: &[(u64, Vec<RowMessage>)],
) -> Result<(), String> {
    let schema = read.schema;
    let mut images: BTreeMap<ItemKey, TableImage> = BTreeMap::new();
    let mut changes = Vec::new();
    let mut from: Vec<(String, String)> = Vec::new();
    let mut dead = Vec::new();
    let mut echoes = 0;
    let mut loaded = 0;
    let rows = transactions
        .iter()
        .flat_map(|(commit, rows)| rows.iter().map(move |row| (*commit, row)));
    for (commit, (lsn, data, txn_origin)) in rows {
        let decoded = decode(data).and_then(|m| match m {
            Message::Row(row) => {
                let record = to_record(schema, &row)?;
                let change = derive_change(schema, &record, &[]).map_err(|e| e.to_string())?;
                Ok(Some((row, record, change)))
            }
            _ => Ok(None),
        });
        let (row, record, change) = match decoded {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(reason) => {
                dead.push(letter(id, lsn, reason, data));
                continue;
            }
        };
        let image = match images.get_mut(&change.key) {
            Some(image) => image,
            None => {
                let loaded = match core
                    .store
                    .side(&image_key(&change.key))
                    .map_err(|e| e.to_string())?
                {
                    Some(bytes) => TableImage::decode(&bytes).unwrap_or_default(),
                    None => TableImage::default(),
                };
                images.entry(change.key.clone()).or_insert(loaded)
            }
        };
        if read.window.is_some_and(|end| commit <= end)
            && !continues_from(image, &record, schema, None)
        {
            loaded += 1;
            continue;
        }
        image.attrs = record.new_image.as_ref().map(|new| {
            new.iter()
                .filter(|(name, _)| !is_key_or_marker(schema, None, name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        if read.sink_origin.is_some() && row.origin.or(*txn_origin) == read.sink_origin {
            echoes += 1;
        } else if !(record.event == EventName::Modify && change.ops.is_empty()) {
            changes.push(change);
            from.push((lsn.clone(), data.clone()));
        }
    }
    let commit = transactions.last().map_or(0, |(lsn, _)| *lsn);
    let dead_count = dead.len() as u64;
    let attached = Attached {
        checkpoints: vec![(
            id.clone(),
            Checkpoint(format!("lsn:{}", format_lsn(commit))),
        )],
        side: images
            .iter()
            .map(|(k, image)| (image_key(k), image.encode()))
            .collect(),
        dead_letters: dead,
    };
    let count = changes.len() as u64;
    let report = core
        .writer
        .ingest_with(changes, attached)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("committing to the log: {e}"))?;
    let mut refused = 0;
    for (i, outcome) in report.outcomes.iter().enumerate() {
        if let (Err(error), Some((lsn, data))) = (outcome, from.get(i)) {
            refused += 1;
            if let Err(e) = core
                .store
                .put_dead_letter(&letter(id, lsn, error.to_string(), data))
            {
                tracing::error!(source = %prefix, error = %e, "storing a dead letter failed");
            }
        }
    }
    core.sidecar.ingested(
        prefix,
        Ingested {
            changes: count - refused,
            echoes,
            duplicates: loaded,
            dead_letters: dead_count + refused,
        },
    );
    core.metrics
        .dead_letters
        .with_label_values(&[prefix])
        .inc_by(dead_count + refused);
    Ok(())
}

fn letter(id: &SourceId, lsn: &str, reason: String, data: &str) -> DeadLetter {
    DeadLetter {
        source: id.clone(),
        offset: lsn.to_owned(),
        reason,
        raw: data.as_bytes().to_vec(),
        attempts: 1,
        at_millis: now_millis(),
    }
}

/// A dead-lettered wal2json row, read again under `schema` (`replctl dlq
/// retry`).
pub fn retry_change(schema: &TableSchema, raw: &[u8]) -> Result<Change, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    match decode(text)? {
        Message::Row(row) => {
            let record = to_record(schema, &row)?;
            derive_change(schema, &record, &[]).map_err(|e| e.to_string())
        }
        other => Err(format!("not a row: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_transactions_after_the_checkpoint_are_taken() {
        let m = |lsn: &str, data: &str| (lsn.to_owned(), data.to_owned());
        let row = r#"{"action":"I","schema":"public","table":"carts","columns":[]}"#;
        let messages = vec![
            m("0/10", r#"{"action":"B","origin":4}"#),
            m("0/11", row),
            m("0/12", r#"{"action":"C"}"#),
            m("0/20", r#"{"action":"B"}"#),
            m("0/21", row),
            m("0/22", row),
            m("0/23", r#"{"action":"C"}"#),
            m("0/30", r#"{"action":"B"}"#),
            m("0/31", row),
        ];
        let all = transactions(&messages, 0);
        assert_eq!(
            all.iter()
                .map(|(lsn, rows)| (*lsn, rows.len()))
                .collect::<Vec<_>>(),
            [(0x12, 1), (0x23, 2)],
            "the unfinished transaction waits"
        );
        let after = transactions(&messages, 0x12);
        assert_eq!(after.len(), 1, "the first is in the log already");
        assert_eq!(
            all[0].1[0].2,
            Some(4),
            "rows carry their transaction's origin"
        );
        assert_eq!(all[1].1[0].2, None);
    }
}
