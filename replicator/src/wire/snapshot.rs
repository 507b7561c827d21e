//! State snapshots on the wire: chunks of `(item key, item state)` pairs,
//! the last one carrying the applied vector the snapshot covers.

use tributary_engine::crdt::ItemState;
use tributary_engine::ids::VersionVector;
use tributary_engine::key::ItemKey;
use tributary_engine::store::{StoreError, decode_item_state, encode_item_state};
use tributary_proto::v1 as pb;

use super::entry::vector_from_wire;
use super::{ToWire, WireError};

/// A received snapshot chunk, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPart {
    /// Items of the chunk.
    pub items: Vec<(ItemKey, ItemState)>,
    /// On the last chunk: the applied vector the snapshot covers.
    pub done: Option<VersionVector>,
}

/// The message for a chunk; `done` is set on the last one.
pub fn snapshot_to_wire(
    items: &[(ItemKey, ItemState)],
    done: Option<&VersionVector>,
) -> Result<pb::SnapshotChunk, StoreError> {
    Ok(pb::SnapshotChunk {
        applied: done.map(ToWire::to_wire),
        items: items
            .iter()
            .map(|(k, s)| {
                Ok(pb::SnapshotItem {
                    key: k.encode(),
                    state: encode_item_state(s)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        done: done.is_some(),
    })
}

/// A received chunk of at most `max_items` items, each validated.
pub fn snapshot_from_wire(
    wire: pb::SnapshotChunk,
    max_items: usize,
) -> Result<SnapshotPart, WireError> {
    if wire.items.len() > max_items {
        return Err(WireError::BatchTooLarge {
            field: "snapshot.items".to_owned(),
            len: wire.items.len(),
            max: max_items,
        });
    }
    let items = wire
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let key = ItemKey::decode(&item.key).map_err(|source| WireError::Key {
                field: format!("snapshot.items[{i}].key"),
                source,
            })?;
            let state = decode_item_state(&item.state).map_err(|source| WireError::Delta {
                field: format!("snapshot.items[{i}].state"),
                source,
            })?;
            Ok((key, state))
        })
        .collect::<Result<_, WireError>>()?;
    let done = if wire.done {
        Some(vector_from_wire(wire.applied, "snapshot.applied")?)
    } else {
        None
    };
    Ok(SnapshotPart { items, done })
}
