//! `replctl dlq retry`: a dead letter applied again, after its cause was
//! fixed (the schema in the config, usually — the node is restarted with
//! the fix).
//!
//! - A source's record is classified again under the current schema and
//!   ingested *late*: its change enters the log stamped with the record's
//!   own time (so a later write still wins a register), and the item's
//!   table image is left alone (later records moved the table on); its
//!   event id is remembered, so retrying twice applies it once.
//! - A sink's item is queued for the sink to write again from the latest
//!   merged state.
//!
//! The letter is removed once applied; a record that still fails keeps its
//! letter and the answer says why. Retrying twice (or again after a crash
//! between the apply and the removal) applies a record once: a stream
//! record's event id is remembered in the item's image, and a PostgreSQL
//! row's letter id in the side state, each in the commit that applies it.

use std::sync::Arc;

use base64::Engine as _;
use tributary_engine::key::ItemKey;
use tributary_engine::log::Attached;
use tributary_engine::store::{DeadLetter, DeadLetterId, LogStore};

use super::classify::{Origin, RawRecord, classify};
use super::image::{TableImage, image_key};

use crate::node::{Core, now_millis};

/// Why a retry could not be attempted.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No letter has that id.
    #[error("no dead letter with id {0}")]
    NotFound(u64),
    /// The letter's source is not configured (any more).
    #[error(
        "dead letter {id} came from {from}, which this node's config no longer has; drop it or restore the source"
    )]
    UnknownSource {
        /// The letter.
        id: u64,
        /// Its source.
        from: String,
    },
    /// Storage or the writer failed.
    #[error("{0}")]
    Internal(String),
}

/// Applies dead letter `id` again: `Ok((true, what))` when it applied and
/// the letter was removed, `Ok((false, why))` when it still fails.
pub async fn retry(core: &Arc<Core>, id: u64) -> Result<(bool, String), RetryError> {
    let letter = find(core, id)?;
    let source = letter.source.as_str().to_owned();
    if let Some(table) = source
        .strip_prefix("sink:dynamodb:")
        .or_else(|| source.strip_prefix("sink:postgres:"))
    {
        let key = base64::engine::general_purpose::STANDARD
            .decode(&letter.offset)
            .ok()
            .and_then(|b| ItemKey::decode(&b).ok())
            .ok_or_else(|| RetryError::Internal(format!("dead letter {id}: bad item key")))?;
        if !core
            .config
            .sinks
            .iter()
            .any(|s| s.table().as_str() == table)
        {
            return Err(RetryError::UnknownSource { id, from: source });
        }
        core.sidecar.request_rewrite(&source, key.clone());
        remove(core, id)?;
        return Ok((
            true,
            format!("item {key} queued for the sink to write again"),
        ));
    }
    let (prefix, shard) = source.rsplit_once('/').unwrap_or((source.as_str(), ""));
    let Some(config) = core.config.sources.iter().find(|s| s.prefix() == prefix) else {
        return Err(RetryError::UnknownSource { id, from: source });
    };
    let schemas = core
        .config
        .schemas()
        .map_err(|e| RetryError::Internal(e.to_string()))?;
    let schema = schemas
        .get(config.table())
        .ok_or_else(|| RetryError::UnknownSource {
            id,
            from: source.clone(),
        })?;
    let marker = core
        .config
        .sinks
        .iter()
        .filter(|s| s.table() == config.table())
        .find_map(|s| s.marker().cloned());
    if let crate::config::SourceConfig::Postgres(_) = config {
        // A wal2json row has no event id to remember: the letter's id is
        // recorded in the same commit as its change, so a retry after a
        // crash before the letter's removal does not apply it twice.
        let applied = format!("dead-letter-applied/{id}").into_bytes();
        if core
            .store
            .side(&applied)
            .map_err(|e| RetryError::Internal(e.to_string()))?
            .is_some_and(|v| v == APPLIED)
        {
            remove(core, id)?;
            return Ok((true, "already applied; letter removed".to_owned()));
        }
        let change = match crate::postgres::source::retry_change(schema, &letter.raw) {
            Ok(change) => change,
            Err(reason) => return Ok((false, format!("still fails: {reason}"))),
        };
        let attached = Attached {
            side: vec![(applied.clone(), APPLIED.to_vec())],
            ..Attached::default()
        };
        let report = core
            .writer
            .ingest_with(vec![change], attached)
            .await
            .map_err(|e| RetryError::Internal(e.to_string()))?
            .map_err(|e| RetryError::Internal(e.to_string()))?;
        if let Some(Err(e)) = report.outcomes.first() {
            // The log refused it: the mark says so, for the next retry.
            let unmark = Attached {
                side: vec![(applied, Vec::new())],
                ..Attached::default()
            };
            core.writer
                .ingest_with(Vec::new(), unmark)
                .await
                .map_err(|e| RetryError::Internal(e.to_string()))?
                .map_err(|e| RetryError::Internal(e.to_string()))?;
            return Ok((false, format!("still fails: {e}")));
        }
        remove(core, id)?;
        return Ok((true, "applied; letter removed".to_owned()));
    }
    let record = RawRecord {
        shard: shard.to_owned(),
        offset: letter.offset.clone(),
        bytes: letter.raw.clone(),
    };
    let origin = Origin {
        source: prefix,
        now_millis: now_millis(),
        late: true,
        load_window: None,
    };
    let store = Arc::clone(&core.store);
    let classified = classify(
        schema,
        marker.as_ref(),
        &origin,
        std::slice::from_ref(&record),
        |key| {
            Ok(match store.side(&image_key(key))? {
                Some(bytes) => TableImage::decode(&bytes).unwrap_or_default(),
                None => TableImage::default(),
            })
        },
    )
    .map_err(|e| RetryError::Internal(e.to_string()))?;
    if let Some(failed) = classified.attached.dead_letters.first() {
        return Ok((false, format!("still fails: {}", failed.reason)));
    }
    let changes = classified.changes.len();
    let attached = Attached {
        side: classified.attached.side,
        ..Attached::default()
    };
    let report = core
        .writer
        .ingest_with(classified.changes, attached)
        .await
        .map_err(|e| RetryError::Internal(e.to_string()))?
        .map_err(|e| RetryError::Internal(e.to_string()))?;
    if let Some(Err(e)) = report.outcomes.first() {
        return Ok((false, format!("still fails: {e}")));
    }
    remove(core, id)?;
    Ok((
        true,
        if changes == 0 {
            "already applied (a duplicate); letter removed".to_owned()
        } else {
            "applied; letter removed".to_owned()
        },
    ))
}

/// The side-state value marking a PostgreSQL dead letter as applied.
const APPLIED: &[u8] = b"applied";

fn find(core: &Core, id: u64) -> Result<DeadLetter, RetryError> {
    let after = id.checked_sub(1).filter(|a| *a > 0).map(DeadLetterId);
    core.store
        .dead_letters(after, 1)
        .map_err(|e| RetryError::Internal(e.to_string()))?
        .into_iter()
        .find(|(found, _)| found.0 == id)
        .map(|(_, l)| l)
        .ok_or(RetryError::NotFound(id))
}

fn remove(core: &Core, id: u64) -> Result<bool, RetryError> {
    core.store
        .remove_dead_letter(DeadLetterId(id))
        .map_err(|e| RetryError::Internal(e.to_string()))
}
