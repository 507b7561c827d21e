//! The on-disk layout shared by every store: column families, key
//! encodings and the value envelope.
//!
//! # Values
//!
//! Every stored value is `[format version u8][payload][crc32 LE]`, where the
//! payload is the `postcard` encoding of the value and the CRC-32 covers the
//! version byte and the payload. [`decode`] never panics: whatever the bytes,
//! it returns the value or a [`StoreError::Corrupt`] naming the kind of value
//! and its key, so one rotten value never takes the rest of the store down.
//! A single changed byte anywhere in a value is always detected (CRC-32
//! catches every burst error of up to 32 bits).
//!
//! Two values start with another byte than the version:
//! - an item created by one change, and not written since, is stored as
//!   [`ITEM_AT_ENTRY`] and the `(origin, seq)` of that change's log entry,
//!   whose delta is the item's whole state (one copy of it, not two); the
//!   stores read such an item through to its entry;
//! - that entry is stored as [`ENTRY_HOLDING_ITEM`] (otherwise as a
//!   version-1 entry), so a truncation finds the items it must rewrite
//!   with their states before their entries go
//!   ([`item_rewrite_before_truncation`]) without reading every item.
//!
//! # Keys
//!
//! - `log`: `[origin len u8][origin bytes][seq u64 BE]`. Length-prefixing
//!   keeps the keys of one origin contiguous (origin `a` never interleaves
//!   with origin `ab`), and big-endian seqs sort numerically.
//! - `items`: [`ItemKey::encode`]; the keys of one table share
//!   [`ItemKey::table_prefix`].
//! - `meta`: readable strings (`applied`, `log_start`, `hlc`,
//!   `dead_letter_next`, `acked/<peer>`, `checkpoint/<source id>`).
//! - `dead_letters`: the id as u64 big-endian, so ids sort numerically.
//!
//! Both stores order keys bytewise, so [`super::MemStore`] and
//! [`super::RocksStore`] return scans in the same order.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "rocksdb")]
use super::EncodedEntry;
use super::{Checkpoint, CommitBatch, DeadLetter, DeadLetterId, FreshEntry, StoreError};
use crate::change::LogEntry;
use crate::crdt::{ItemState, Writer, read_compact, read_compact_sharing, write_compact};
use crate::ids::{Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;

/// The version byte written in front of every value (but the two below).
pub(crate) const FORMAT_VERSION: u8 = 1;

/// The first byte of a log entry whose item points at it (the entry
/// created the item, see [`ITEM_AT_ENTRY`]); the rest is as under
/// [`FORMAT_VERSION`]. Truncation reads the items of these entries only.
pub(crate) const ENTRY_HOLDING_ITEM: u8 = 2;

/// The first byte of an item value that points at the log entry holding
/// its state: an item created by one change keeps no second copy of that
/// change's delta, which is its whole state. The payload is the entry's
/// origin and seq. Truncation rewrites such an item with its state before
/// the entry goes.
pub(crate) const ITEM_AT_ENTRY: u8 = 3;

/// The largest encoded value the stores accept (envelope included). Items
/// are bounded far below this by DynamoDB's 400 KB rule; the limit guards
/// the stores against an unbounded dead letter or a runaway state.
pub(crate) const MAX_VALUE_BYTES: usize = 32 << 20;

/// Bytes the envelope adds to a payload: version byte and CRC.
const ENVELOPE_BYTES: usize = 1 + 4;

/// A column family (RocksDB) or key space (memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Cf {
    /// `(origin, seq)` → log entry.
    Log,
    /// Item key → merged item state.
    Items,
    /// Named vectors, marks, counters and checkpoints.
    Meta,
    /// Dead-letter id → dead letter.
    DeadLetters,
    /// Connector side state (opaque to the engine) → bytes.
    Side,
}

impl Cf {
    /// Every column family, in a fixed order.
    pub(crate) const ALL: [Cf; 5] = [Cf::Log, Cf::Items, Cf::Meta, Cf::DeadLetters, Cf::Side];

    /// The column family's name on disk.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Items => "items",
            Cf::Meta => "meta",
            Cf::DeadLetters => "dead_letters",
            Cf::Side => "side",
        }
    }

    /// Position in [`Cf::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Cf::Log => 0,
            Cf::Items => 1,
            Cf::Meta => 2,
            Cf::DeadLetters => 3,
            Cf::Side => 4,
        }
    }
}

// ---------------------------------------------------------------------------
// The envelope

/// Encodes `value` in the envelope. `what` names the value for errors.
pub(crate) fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    envelope(what, &mut out, |out| Writer(out).serde(value))?;
    Ok(out)
}

/// Replaces the contents of `out` with the envelope around what `payload`
/// appends: the payload is written in place after the version byte and
/// checksummed where it lies (one buffer, no copy).
fn envelope(
    what: &'static str,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>) -> postcard::Result<()>,
) -> Result<(), StoreError> {
    envelope_as(FORMAT_VERSION, what, out, payload)
}

/// A value of ours that did not serialize. Our types always serialize;
/// this would be a programming error in a `Serialize` impl, which the node
/// cannot fix by retrying.
fn encode_failed(what: &'static str, e: postcard::Error) -> StoreError {
    StoreError::Backend {
        op: "encode value",
        message: format!("{what}: {e}"),
    }
}

/// The compact encoding of `state` with no envelope: a fresh entry's
/// delta (see [`FreshEntry`]).
pub(crate) fn compact(what: &'static str, state: &ItemState) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    write_compact(state, &mut out).map_err(|e| encode_failed(what, e))?;
    Ok(out)
}

/// [`envelope`] with `first` for the version byte.
fn envelope_as(
    first: u8,
    what: &'static str,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>) -> postcard::Result<()>,
) -> Result<(), StoreError> {
    out.clear();
    out.push(first);
    payload(out).map_err(|e| encode_failed(what, e))?;
    let size = out.len() + ENVELOPE_BYTES - 1;
    if size > MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge { what, size });
    }
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The envelope around already-encoded payload bytes (what [`encode`]
/// writes around its postcard payload).
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + ENVELOPE_BYTES);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(payload);
    with_checksum(out)
}

/// Appends the checksum of `out` (version byte and payload) to it.
fn with_checksum(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a value written by [`encode`]. `key` is called only on failure,
/// to name the value's key in the error.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    decode_with(what, key, bytes, |payload| {
        postcard::take_from_bytes::<T>(payload).map_err(|e| e.to_string())
    })
}

/// Decodes an item state written by [`encode_item`] or
/// `encode_item_state`, with the direct reader (`read_compact`).
pub(crate) fn decode_state(
    what: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
    known: &[RegionId],
) -> Result<ItemState, StoreError> {
    decode_with(what, key, bytes, |payload| {
        read_compact_sharing(payload, known)
    })
}

/// [`decode`] with `read` for the payload: it returns the value and the
/// bytes after it.
fn decode_with<T>(
    what: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
    read: impl FnOnce(&[u8]) -> Result<(T, &[u8]), String>,
) -> Result<T, StoreError> {
    decode_as(&[FORMAT_VERSION], what, key, bytes, |_, payload| {
        read(payload)
    })
}

/// [`decode_with`] for values whose first byte is one of `firsts`, which
/// `read` is given with the payload.
fn decode_as<T>(
    firsts: &[u8],
    what: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
    read: impl FnOnce(u8, &[u8]) -> Result<(T, &[u8]), String>,
) -> Result<T, StoreError> {
    let opened = open_envelope_as(firsts, bytes);
    let reason = match opened.map(|(first, payload)| read(first, payload)) {
        Ok(Ok((value, []))) => return Ok(value),
        Ok(Ok((_, rest))) => format!("{} trailing bytes after the value", rest.len()),
        Ok(Err(e)) => format!("payload does not decode: {e}"),
        Err(reason) => reason,
    };
    Err(StoreError::Corrupt {
        what,
        key: key(),
        reason,
    })
}

/// The first byte and payload of a value written by [`envelope_as`], its
/// length, checksum and first byte (one of `firsts`) checked; or what is
/// wrong with it.
fn open_envelope_as<'a>(firsts: &[u8], bytes: &'a [u8]) -> Result<(u8, &'a [u8]), String> {
    if bytes.len() < ENVELOPE_BYTES {
        return Err(format!(
            "{} bytes is shorter than the envelope",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let (version, payload) = (body[0], &body[1..]);
    if !firsts.contains(&version) {
        return Err(format!(
            "unknown format version {version} (this build reads {firsts:?} here)"
        ));
    }
    Ok((version, payload))
}

/// Bytes as printable text, for keys that do not decode.
pub(crate) fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (the prefix is all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The smallest key strictly greater than `key`.
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

// ---------------------------------------------------------------------------
// The log

/// The key prefix shared by every entry of `origin`.
pub(crate) fn log_prefix(origin: &RegionId) -> Vec<u8> {
    let name = origin.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + name.len() + 8);
    // Region ids are at most 64 bytes (validated by `RegionId::new`).
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// The log key of `(origin, seq)`.
pub(crate) fn log_key(origin: &RegionId, seq: Seq) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + origin.as_str().len() + 8);
    log_key_into(origin, seq, &mut out);
    out
}

/// Appends the log key of `(origin, seq)` to `out`.
fn log_key_into(origin: &RegionId, seq: Seq, out: &mut Vec<u8>) {
    let name = origin.as_str().as_bytes();
    // Region ids are at most 64 bytes (validated by `RegionId::new`).
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&seq.0.to_be_bytes());
}

/// The end (exclusive) of the log keys of `origin` with seq ≤ `upto`.
pub(crate) fn log_key_end(origin: &RegionId, upto: Seq) -> Vec<u8> {
    match upto.0.checked_add(1) {
        Some(next) => log_key(origin, Seq(next)),
        // The prefix ends with a region id byte (ASCII), so it has an end.
        None => prefix_end(&log_prefix(origin)).unwrap_or_default(),
    }
}

/// Inverse of [`log_key`].
pub(crate) fn decode_log_key(bytes: &[u8]) -> Result<(RegionId, Seq), StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: "log key",
        key: printable(bytes),
        reason: reason.to_owned(),
    };
    let (&len, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    let len = usize::from(len);
    if rest.len() != len + 8 {
        return Err(corrupt("length does not match the origin length byte"));
    }
    let (name, seq) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| corrupt("origin is not UTF-8"))?;
    let origin = RegionId::new(name).map_err(|e| corrupt(&e.to_string()))?;
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(seq);
    Ok((origin, Seq(u64::from_be_bytes(seq_bytes))))
}

/// Encodes a log entry's value (its key is [`log_key`]). The value holds
/// the whole entry, origin and seq included: a dozen redundant bytes buy a
/// check that the value sits under its own key, and a format that follows
/// [`LogEntry`] as it grows.
pub(crate) fn encode_entry(entry: &LogEntry) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    encode_entry_into(entry, false, &mut out)?;
    Ok(out)
}

/// The first bytes a log entry's value may start with.
const ENTRY_FIRSTS: [u8; 2] = [FORMAT_VERSION, ENTRY_HOLDING_ITEM];

/// [`encode_entry`] into `out` (replacing its contents): the bytes
/// `postcard` gives for the entry, written field by field, marked with
/// [`ENTRY_HOLDING_ITEM`] if `holds_item`.
fn encode_entry_into(
    entry: &LogEntry,
    holds_item: bool,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let first = if holds_item {
        ENTRY_HOLDING_ITEM
    } else {
        FORMAT_VERSION
    };
    let head = (&entry.origin, entry.seq, entry.hlc, &entry.deps, &entry.key);
    envelope_as(first, "log entry", out, |out| {
        write_entry_head(head, out)?;
        write_compact(&entry.delta, out)
    })
}

/// The value of a fresh entry (see [`FreshEntry`]): an entry holding its
/// item, its delta's bytes as the engine encoded them.
fn encode_fresh_entry_into(entry: &FreshEntry, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let head = (&entry.origin, entry.seq, entry.hlc, &entry.deps, &entry.key);
    envelope_as(ENTRY_HOLDING_ITEM, "log entry", out, |out| {
        write_entry_head(head, out)?;
        out.extend_from_slice(entry.delta_bytes());
        Ok(())
    })
}

/// A log entry's fields before its delta: origin, seq, HLC, deps, key.
type EntryHeadRef<'a> = (&'a RegionId, Seq, Hlc, &'a VersionVector, &'a ItemKey);

/// Writes `head` as [`EntryHead`]'s postcard encoding.
fn write_entry_head(
    (origin, seq, hlc, deps, key): EntryHeadRef<'_>,
    out: &mut Vec<u8>,
) -> postcard::Result<()> {
    let mut w = Writer(out);
    w.str(origin.as_str());
    w.u64(seq.0);
    w.u64(hlc.0);
    w.length(deps.len());
    for (origin, seq) in deps.iter() {
        w.str(origin.as_str());
        w.u64(seq.0);
    }
    w.serde(key)
}

/// Decodes the value stored at `(origin, seq)`.
pub(crate) fn decode_entry(
    origin: RegionId,
    seq: Seq,
    bytes: &[u8],
) -> Result<LogEntry, StoreError> {
    let name = || format!("{origin}/{seq}");
    let entry = decode_as(&ENTRY_FIRSTS, "log entry", name, bytes, |_, payload| {
        let (head, rest) =
            postcard::take_from_bytes::<EntryHead>(payload).map_err(|e| e.to_string())?;
        let (delta, rest) = read_compact(rest)?;
        let entry = LogEntry {
            origin: head.origin,
            seq: head.seq,
            hlc: head.hlc,
            deps: head.deps,
            key: head.key,
            delta,
        };
        Ok((entry, rest))
    })?;
    if entry.origin != origin || entry.seq != seq {
        return Err(StoreError::Corrupt {
            what: "log entry",
            key: name(),
            reason: format!("value belongs to {}/{}", entry.origin, entry.seq),
        });
    }
    Ok(entry)
}

/// The fields of a stored [`LogEntry`] before its delta, in its serde
/// order: the delta's compact encoding is the rest of the payload.
#[derive(serde::Deserialize)]
struct EntryHead {
    origin: RegionId,
    seq: Seq,
    hlc: Hlc,
    deps: VersionVector,
    key: ItemKey,
}

/// The value stored at `(origin, seq)` as an [`EncodedEntry`]: the fields
/// decoded, the delta's bytes sealed into the wire envelope as they lie
/// (the whole value's checksum was checked; the delta is not decoded).
#[cfg(feature = "rocksdb")]
pub(crate) fn decode_encoded_entry(
    origin: RegionId,
    seq: Seq,
    bytes: &[u8],
) -> Result<EncodedEntry, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: "log entry",
        key: format!("{origin}/{seq}"),
        reason,
    };
    let (_, payload) = open_envelope_as(&ENTRY_FIRSTS, bytes).map_err(corrupt)?;
    let (head, delta) = postcard::take_from_bytes::<EntryHead>(payload)
        .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
    if head.origin != origin || head.seq != seq {
        return Err(corrupt(format!(
            "value belongs to {}/{}",
            head.origin, head.seq
        )));
    }
    Ok(EncodedEntry {
        origin: head.origin,
        seq: head.seq,
        hlc: head.hlc,
        deps: head.deps,
        key: head.key,
        delta: seal(delta),
    })
}

// ---------------------------------------------------------------------------
// Items

/// Inverse of [`ItemKey::encode`], as a store error.
pub(crate) fn decode_item_key(bytes: &[u8]) -> Result<ItemKey, StoreError> {
    ItemKey::decode(bytes).map_err(|e| StoreError::Corrupt {
        what: "item key",
        key: printable(bytes),
        reason: e.to_string(),
    })
}

/// Encodes an item state.
pub(crate) fn encode_item(state: &ItemState) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    encode_item_into(state, &mut out)?;
    Ok(out)
}

/// [`encode_item`] into `out` (replacing its contents).
fn encode_item_into(state: &ItemState, out: &mut Vec<u8>) -> Result<(), StoreError> {
    envelope("item", out, |out| write_compact(state, out))
}

/// An item's stored value, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredItem {
    /// The item's state.
    State(ItemState),
    /// The item's state is the delta of the log entry `(origin, seq)`.
    AtEntry(RegionId, Seq),
}

/// Decodes the value stored at item `key`: a state, or where it is.
pub(crate) fn decode_stored_item(key: &ItemKey, bytes: &[u8]) -> Result<StoredItem, StoreError> {
    let firsts = [FORMAT_VERSION, ITEM_AT_ENTRY];
    decode_as(
        &firsts,
        "item",
        || key.to_string(),
        bytes,
        |first, payload| {
            if first == ITEM_AT_ENTRY {
                let ((origin, seq), rest) = postcard::take_from_bytes::<(RegionId, Seq)>(payload)
                    .map_err(|e| e.to_string())?;
                Ok((StoredItem::AtEntry(origin, seq), rest))
            } else {
                let (state, rest) = read_compact_sharing(payload, &[])?;
                Ok((StoredItem::State(state), rest))
            }
        },
    )
}

/// Encodes the value of an item whose state is the delta of the log entry
/// `(origin, seq)` into `out` (replacing its contents).
pub(crate) fn encode_item_at(
    origin: &RegionId,
    seq: Seq,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    envelope_as(ITEM_AT_ENTRY, "item", out, |out| {
        let mut w = Writer(out);
        w.str(origin.as_str());
        w.u64(seq.0);
        Ok(())
    })
}

/// What reading an item's state found.
#[derive(Debug)]
pub(crate) enum ItemRead {
    /// The state.
    State(ItemState),
    /// The item points at the log entry `(origin, seq)`, which is not in
    /// the log. A truncation that removes an entry rewrites the item that
    /// points at it in the same atomic write, so a reader that raced one
    /// reads the item again; a second `Gone` is [`ItemRead::into_state`]'s
    /// error.
    Gone(RegionId, Seq),
}

impl ItemRead {
    /// The state, or the error of an item whose entry is gone.
    pub(crate) fn into_state(self, key: &ItemKey) -> Result<ItemState, StoreError> {
        match self {
            ItemRead::State(state) => Ok(state),
            ItemRead::Gone(origin, seq) => Err(StoreError::Corrupt {
                what: "item",
                key: key.to_string(),
                reason: format!("points at log entry {origin}/{seq}, which is not in the log"),
            }),
        }
    }
}

/// Reads the state of the item stored at `key` as `bytes`: the value
/// itself, or the delta of the log entry it points at, read with `entry`
/// (given the entry's log key).
pub(crate) fn read_item<V: AsRef<[u8]>>(
    key: &ItemKey,
    bytes: &[u8],
    entry: impl FnOnce(&[u8]) -> Result<Option<V>, StoreError>,
) -> Result<ItemRead, StoreError> {
    let (origin, seq) = match decode_stored_item(key, bytes)? {
        StoredItem::State(state) => return Ok(ItemRead::State(state)),
        StoredItem::AtEntry(origin, seq) => (origin, seq),
    };
    let Some(value) = entry(&log_key(&origin, seq))? else {
        return Ok(ItemRead::Gone(origin, seq));
    };
    let held = decode_entry(origin, seq, value.as_ref())?;
    if held.key != *key {
        return Err(StoreError::Corrupt {
            what: "item",
            key: key.to_string(),
            reason: format!(
                "points at log entry {}/{}, which holds item {}",
                held.origin, held.seq, held.key
            ),
        });
    }
    Ok(ItemRead::State(held.delta))
}

/// The write a truncation owes the item of the log entry stored as
/// `(log_key, value)` before the entry goes: when the entry holds its
/// item's state ([`ENTRY_HOLDING_ITEM`]) and the item, its value read with
/// `item` (given the item's key), still points at the entry, the item's
/// state as its own value — the entry's delta bytes, sealed. Entries that
/// hold no item cost one byte's look.
pub(crate) fn item_rewrite_before_truncation<V: AsRef<[u8]>>(
    log_key: &[u8],
    value: &[u8],
    item: impl FnOnce(&[u8]) -> Result<Option<V>, StoreError>,
) -> Result<Option<Put>, StoreError> {
    if value.first() != Some(&ENTRY_HOLDING_ITEM) {
        return Ok(None);
    }
    let (origin, seq) = decode_log_key(log_key)?;
    let corrupt = |reason: String| StoreError::Corrupt {
        what: "log entry",
        key: format!("{origin}/{seq}"),
        reason,
    };
    let (_, payload) = open_envelope_as(&[ENTRY_HOLDING_ITEM], value).map_err(corrupt)?;
    let (head, delta) = postcard::take_from_bytes::<EntryHead>(payload)
        .map_err(|e| corrupt(format!("payload does not decode: {e}")))?;
    let item_key = head.key.encode();
    let Some(stored) = item(&item_key)? else {
        return Ok(None);
    };
    let stored = stored.as_ref();
    if stored.first() != Some(&ITEM_AT_ENTRY) {
        return Ok(None); // rewritten since: its own state
    }
    Ok(match decode_stored_item(&head.key, stored)? {
        StoredItem::AtEntry(o, s) if o == origin && s == seq => Some(Put {
            cf: Cf::Items,
            key: item_key,
            value: seal(delta),
        }),
        _ => None,
    })
}

// ---------------------------------------------------------------------------
// Meta

/// The applied vector.
pub(crate) const META_APPLIED: &str = "applied";
/// The truncation vector.
pub(crate) const META_LOG_START: &str = "log_start";
/// The HLC high-water mark.
pub(crate) const META_HLC: &str = "hlc";
/// The next dead-letter id.
pub(crate) const META_DEAD_LETTER_NEXT: &str = "dead_letter_next";
/// Prefix of the per-peer acknowledged vectors.
pub(crate) const META_ACKED_PREFIX: &str = "acked/";
/// Prefix of the source checkpoints.
pub(crate) const META_CHECKPOINT_PREFIX: &str = "checkpoint/";

/// The meta key of `peer`'s acknowledged vector.
pub(crate) fn acked_key(peer: &RegionId) -> String {
    format!("{META_ACKED_PREFIX}{peer}")
}

/// The meta key of `source`'s checkpoint.
pub(crate) fn checkpoint_key(source: &SourceId) -> String {
    format!("{META_CHECKPOINT_PREFIX}{source}")
}

/// The name after `prefix` in a meta key, as a store error.
fn meta_name<'a>(what: &'static str, prefix: &str, key: &'a [u8]) -> Result<&'a str, StoreError> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(prefix))
        .ok_or_else(|| StoreError::Corrupt {
            what,
            key: printable(key),
            reason: format!("meta key does not start with {prefix:?}"),
        })
}

/// The peer named by an `acked/<peer>` key.
pub(crate) fn decode_acked_key(key: &[u8]) -> Result<RegionId, StoreError> {
    let name = meta_name("acked vector key", META_ACKED_PREFIX, key)?;
    RegionId::new(name).map_err(|e| StoreError::Corrupt {
        what: "acked vector key",
        key: printable(key),
        reason: e.to_string(),
    })
}

/// The source named by a `checkpoint/<source>` key.
pub(crate) fn decode_checkpoint_key(key: &[u8]) -> Result<SourceId, StoreError> {
    let name = meta_name("checkpoint key", META_CHECKPOINT_PREFIX, key)?;
    SourceId::new(name).map_err(|e| StoreError::Corrupt {
        what: "checkpoint key",
        key: printable(key),
        reason: e.to_string(),
    })
}

/// Encodes a version vector (applied, log start, acked).
pub(crate) fn encode_vector(what: &'static str, v: &VersionVector) -> Result<Vec<u8>, StoreError> {
    encode(what, v)
}

/// Decodes a version vector, dropping zero entries so that the vector's
/// invariant holds whatever the bytes said.
pub(crate) fn decode_vector(
    what: &'static str,
    meta_key: &str,
    bytes: &[u8],
) -> Result<VersionVector, StoreError> {
    let raw: BTreeMap<RegionId, Seq> = decode(what, || meta_key.to_owned(), bytes)?;
    Ok(raw.into_iter().collect())
}

/// Encodes the HLC mark.
pub(crate) fn encode_hlc(hlc: Hlc) -> Result<Vec<u8>, StoreError> {
    encode("hlc mark", &hlc)
}

/// Decodes the HLC mark.
pub(crate) fn decode_hlc(bytes: &[u8]) -> Result<Hlc, StoreError> {
    decode("hlc mark", || META_HLC.to_owned(), bytes)
}

/// Encodes a checkpoint.
pub(crate) fn encode_checkpoint(c: &Checkpoint) -> Result<Vec<u8>, StoreError> {
    encode("checkpoint", c)
}

/// Decodes the checkpoint stored under `meta_key`.
pub(crate) fn decode_checkpoint(meta_key: &str, bytes: &[u8]) -> Result<Checkpoint, StoreError> {
    decode("checkpoint", || meta_key.to_owned(), bytes)
}

/// Encodes the next dead-letter id.
pub(crate) fn encode_counter(next: u64) -> Result<Vec<u8>, StoreError> {
    encode("dead-letter counter", &next)
}

/// Decodes the next dead-letter id.
pub(crate) fn decode_counter(bytes: &[u8]) -> Result<u64, StoreError> {
    decode(
        "dead-letter counter",
        || META_DEAD_LETTER_NEXT.to_owned(),
        bytes,
    )
}

// ---------------------------------------------------------------------------
// Dead letters

/// The key of a dead letter.
pub(crate) fn dead_letter_key(id: DeadLetterId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// Inverse of [`dead_letter_key`].
pub(crate) fn decode_dead_letter_key(bytes: &[u8]) -> Result<DeadLetterId, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: "dead letter key",
        key: printable(bytes),
        reason: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(DeadLetterId(u64::from_be_bytes(array)))
}

/// Encodes a dead letter.
pub(crate) fn encode_dead_letter(letter: &DeadLetter) -> Result<Vec<u8>, StoreError> {
    encode("dead letter", letter)
}

/// Decodes the dead letter stored under `id`.
pub(crate) fn decode_dead_letter(id: DeadLetterId, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    decode("dead letter", || format!("dead letter {}", id.0), bytes)
}

// ---------------------------------------------------------------------------
// Read ranges and key-value decoding, shared by both stores

/// A key range `[start, end)`; no `end` means "to the end of the column
/// family".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    /// First key (inclusive).
    pub start: Vec<u8>,
    /// End (exclusive).
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// True when no key can be in the range.
    pub(crate) fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }

    /// Every key starting with `prefix`.
    fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }
}

/// The log keys of `origin` with seq > `after`.
pub(crate) fn entries_range(origin: &RegionId, after: Seq) -> KeyRange {
    let prefix = log_prefix(origin);
    let end = prefix_end(&prefix);
    match after.0.checked_add(1) {
        Some(first) => KeyRange {
            start: log_key(origin, Seq(first)),
            end,
        },
        // Nothing comes after `u64::MAX`: an empty range.
        None => KeyRange {
            start: end.clone().unwrap_or_default(),
            end,
        },
    }
}

/// The item keys strictly after `after`, within `table` when given.
pub(crate) fn scan_range(table: Option<&TableName>, after: Option<&ItemKey>) -> KeyRange {
    let mut range = match table {
        Some(t) => KeyRange::prefix(&ItemKey::table_prefix(t)),
        None => KeyRange {
            start: Vec::new(),
            end: None,
        },
    };
    if let Some(after) = after {
        range.start = range.start.max(key_after(&after.encode()));
    }
    range
}

/// The dead-letter keys with id > `after`.
pub(crate) fn dead_letters_range(after: Option<DeadLetterId>) -> KeyRange {
    let start = match after {
        None => Some(0),
        Some(id) => id.0.checked_add(1),
    };
    match start {
        Some(first) => KeyRange {
            start: first.to_be_bytes().to_vec(),
            end: None,
        },
        None => KeyRange {
            start: Vec::new(),
            end: Some(Vec::new()),
        },
    }
}

/// Every meta key starting with `prefix`.
pub(crate) fn meta_range(prefix: &str) -> KeyRange {
    KeyRange::prefix(prefix.as_bytes())
}

/// A log entry from its stored key and value.
pub(crate) fn entry_from_kv(key: &[u8], value: &[u8]) -> Result<LogEntry, StoreError> {
    let (origin, seq) = decode_log_key(key)?;
    decode_entry(origin, seq, value)
}

/// A log entry for shipping from its stored key and value.
#[cfg(feature = "rocksdb")]
pub(crate) fn encoded_entry_from_kv(key: &[u8], value: &[u8]) -> Result<EncodedEntry, StoreError> {
    let (origin, seq) = decode_log_key(key)?;
    decode_encoded_entry(origin, seq, value)
}

/// A dead letter from its stored key and value.
pub(crate) fn dead_letter_from_kv(
    key: &[u8],
    value: &[u8],
) -> Result<(DeadLetterId, DeadLetter), StoreError> {
    let id = decode_dead_letter_key(key)?;
    Ok((id, decode_dead_letter(id, value)?))
}

/// A peer's acknowledged vector from its meta key and value.
pub(crate) fn acked_from_kv(
    key: &[u8],
    value: &[u8],
) -> Result<(RegionId, VersionVector), StoreError> {
    let peer = decode_acked_key(key)?;
    let v = decode_vector("acked vector", &acked_key(&peer), value)?;
    Ok((peer, v))
}

/// A checkpoint from its meta key and value.
pub(crate) fn checkpoint_from_kv(
    key: &[u8],
    value: &[u8],
) -> Result<(SourceId, Checkpoint), StoreError> {
    let source = decode_checkpoint_key(key)?;
    let c = decode_checkpoint(&checkpoint_key(&source), value)?;
    Ok((source, c))
}

// ---------------------------------------------------------------------------
// Write plans, shared by both stores

/// One key-value write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Put {
    /// Where.
    pub cf: Cf,
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded value.
    pub value: Vec<u8>,
}

impl Put {
    fn meta(key: &str, value: Vec<u8>) -> Put {
        Put {
            cf: Cf::Meta,
            key: key.as_bytes().to_vec(),
            value,
        }
    }
}

/// The puts of one commit, given the stored applied vector and HLC mark
/// (see [`commit_writes`]), as a list.
pub(crate) fn commit_puts(
    batch: &CommitBatch,
    stored_applied: &VersionVector,
    stored_hlc: Hlc,
    stored_dead_letter_next: Option<u64>,
) -> Result<Vec<Put>, StoreError> {
    let mut puts = Vec::with_capacity(
        2 * (batch.entries.len() + batch.fresh_entries.len())
            + batch.items.len()
            + 2
            + batch.checkpoints.len(),
    );
    commit_writes(
        batch,
        stored_applied,
        stored_hlc,
        stored_dead_letter_next,
        |cf, key, value| {
            puts.push(Put {
                cf,
                key: key.to_vec(),
                value: value.to_vec(),
            });
            Ok(())
        },
    )?;
    Ok(puts)
}

/// The puts of one commit, given the stored applied vector and HLC mark,
/// handed to `put` one by one as `(column family, key, value)`; the key
/// and value slices are only valid during the call (the log entries and
/// items, the bulk of a commit, are encoded into two reused buffers).
///
/// The applied vector and the mark never go backwards: the batch's are
/// joined with the stored ones (so an empty batch changes nothing).
/// Encoding happens here, before the caller writes anything, so an
/// unencodable batch fails without side effects: `put` must only collect.
pub(crate) fn commit_writes(
    batch: &CommitBatch,
    stored_applied: &VersionVector,
    stored_hlc: Hlc,
    stored_dead_letter_next: Option<u64>,
    mut put: impl FnMut(Cf, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut key = Vec::with_capacity(64);
    let mut value = Vec::with_capacity(512);
    let mut item_value = Vec::new();
    let mut shared = vec![false; batch.entries.len()];
    for &i in &batch.items_from_entries {
        match shared.get_mut(i) {
            Some(s) => *s = true,
            None => {
                return Err(StoreError::Backend {
                    op: "encode value",
                    message: format!(
                        "item from entry {i} of a batch of {} entries",
                        batch.entries.len()
                    ),
                });
            }
        }
    }
    for (entry, shared) in batch.entries.iter().zip(shared) {
        key.clear();
        log_key_into(&entry.origin, entry.seq, &mut key);
        encode_entry_into(entry, shared, &mut value)?;
        put(Cf::Log, &key, &value)?;
        if shared {
            // The entry's delta is the item's state: the item points at it.
            encode_item_at(&entry.origin, entry.seq, &mut item_value)?;
            key.clear();
            entry.key.encode_into(&mut key);
            put(Cf::Items, &key, &item_value)?;
        }
    }
    for entry in &batch.fresh_entries {
        key.clear();
        log_key_into(&entry.origin, entry.seq, &mut key);
        encode_fresh_entry_into(entry, &mut value)?;
        put(Cf::Log, &key, &value)?;
        encode_item_at(&entry.origin, entry.seq, &mut item_value)?;
        key.clear();
        entry.key.encode_into(&mut key);
        put(Cf::Items, &key, &item_value)?;
    }
    for (item, state) in &batch.items {
        key.clear();
        item.encode_into(&mut key);
        encode_item_into(state, &mut value)?;
        put(Cf::Items, &key, &value)?;
    }
    let mut rest = Vec::new();
    let mut applied = stored_applied.clone();
    applied.join(&batch.applied);
    if applied != *stored_applied {
        rest.push(Put::meta(
            META_APPLIED,
            encode_vector("applied vector", &applied)?,
        ));
    }
    if batch.hlc_mark > stored_hlc {
        rest.push(Put::meta(META_HLC, encode_hlc(batch.hlc_mark)?));
    }
    for (source, checkpoint) in &batch.checkpoints {
        rest.push(Put::meta(
            &checkpoint_key(source),
            encode_checkpoint(checkpoint)?,
        ));
    }
    for (key, value) in &batch.side {
        rest.push(Put {
            cf: Cf::Side,
            key: key.clone(),
            value: encode("side state", value.as_slice())?,
        });
    }
    let mut next = stored_dead_letter_next;
    for letter in &batch.dead_letters {
        let (id, letter_puts) = dead_letter_puts(next, letter)?;
        next = Some(id.0 + 1);
        rest.extend(letter_puts);
    }
    for p in &rest {
        put(p.cf, &p.key, &p.value)?;
    }
    Ok(())
}

/// Decodes a side-state value written by [`commit_puts`].
pub(crate) fn decode_side(key: &[u8], bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    decode::<Vec<u8>>("side state", || printable(key), bytes)
}

/// The put recording what `peer` acknowledged.
pub(crate) fn acked_put(peer: &RegionId, acked: &VersionVector) -> Result<Put, StoreError> {
    Ok(Put::meta(
        &acked_key(peer),
        encode_vector("acked vector", acked)?,
    ))
}

/// The id and puts of a new dead letter, given the stored next id (as
/// read from [`META_DEAD_LETTER_NEXT`]; `None` if never written).
pub(crate) fn dead_letter_puts(
    stored_next: Option<u64>,
    letter: &DeadLetter,
) -> Result<(DeadLetterId, Vec<Put>), StoreError> {
    // Ids start at 1, so that `DeadLetterId(0)` is never a real letter.
    let id = stored_next.unwrap_or(1).max(1);
    let next = id.checked_add(1).ok_or(StoreError::TooLarge {
        what: "dead-letter id",
        size: 8,
    })?;
    let id = DeadLetterId(id);
    let puts = vec![
        Put {
            cf: Cf::DeadLetters,
            key: dead_letter_key(id).to_vec(),
            value: encode_dead_letter(letter)?,
        },
        Put::meta(META_DEAD_LETTER_NEXT, encode_counter(next)?),
    ];
    Ok((id, puts))
}

/// What a truncation does: the log ranges `[from, to)` to delete and the
/// new truncation vector (`None` when nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TruncatePlan {
    /// Key ranges of the log to delete.
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// The raised truncation vector and its encoding, when it changed.
    pub log_start: Option<(VersionVector, Vec<u8>)>,
}

/// The first step of a truncation up to `upto` from `log_start`: per
/// origin, at most `entries` more.
#[cfg(feature = "rocksdb")]
pub(crate) fn truncation_step(
    upto: &VersionVector,
    log_start: &VersionVector,
    entries: u64,
) -> VersionVector {
    upto.iter()
        .map(|(origin, want)| {
            let most = Seq(log_start.get(origin).0.saturating_add(entries));
            (origin.clone(), want.min(most))
        })
        .collect()
}

/// Plans a truncation up to `upto`, clamped to `applied`, above the
/// current `log_start`. Idempotent: planning again after applying the plan
/// yields an empty plan.
pub(crate) fn truncate_plan(
    upto: &VersionVector,
    applied: &VersionVector,
    log_start: &VersionVector,
) -> Result<TruncatePlan, StoreError> {
    let mut plan = TruncatePlan::default();
    let mut next = log_start.clone();
    for (origin, want) in upto.iter() {
        let cut = want.min(applied.get(origin));
        let start = log_start.get(origin);
        if cut > start {
            plan.ranges
                .push((log_key(origin, start.next()), log_key_end(origin, cut)));
            next.raise(origin, cut);
        }
    }
    if next != *log_start {
        let bytes = encode_vector("log start vector", &next)?;
        plan.log_start = Some((next, bytes));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("valid region")
    }

    #[test]
    fn values_round_trip_and_every_changed_byte_is_caught() {
        let mut v = VersionVector::new();
        v.set(r("us-east-1"), Seq(42));
        v.set(r("eu-west-1"), Seq(7));
        let bytes = encode_vector("applied vector", &v).expect("encodes");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(
            decode_vector("applied vector", META_APPLIED, &bytes).expect("decodes"),
            v
        );
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                match decode_vector("applied vector", META_APPLIED, &bad) {
                    Err(StoreError::Corrupt { what, key, .. }) => {
                        assert_eq!((what, key.as_str()), ("applied vector", META_APPLIED));
                    }
                    other => panic!("byte {i} ^ {flip:#x} not detected: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn decode_rejects_short_unknown_version_and_trailing_bytes() {
        for short in [&[][..], &[1], &[1, 2, 3, 4]] {
            assert!(matches!(
                decode::<u64>("x", || "k".into(), short),
                Err(StoreError::Corrupt { .. })
            ));
        }
        let mut future = vec![FORMAT_VERSION + 1, 5];
        let crc = crc32fast::hash(&future);
        future.extend_from_slice(&crc.to_le_bytes());
        let err = decode::<u64>("x", || "k".into(), &future).expect_err("unknown version");
        assert!(err.to_string().contains("unknown format version"), "{err}");
        let mut trailing = vec![FORMAT_VERSION, 5, 6];
        let crc = crc32fast::hash(&trailing);
        trailing.extend_from_slice(&crc.to_le_bytes());
        let err = decode::<u64>("x", || "k".into(), &trailing).expect_err("trailing");
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn oversized_values_are_refused() {
        let big = "x".repeat(MAX_VALUE_BYTES);
        assert!(matches!(
            encode("dead letter", &big),
            Err(StoreError::TooLarge { what: "dead letter", size }) if size > MAX_VALUE_BYTES
        ));
    }

    #[test]
    fn log_keys_sort_by_origin_then_numeric_seq() {
        let a = r("a");
        let ab = r("ab");
        let mut keys = [
            log_key(&ab, Seq(1)),
            log_key(&a, Seq(256)),
            log_key(&a, Seq(255)),
            log_key(&a, Seq(u64::MAX)),
            log_key(&a, Seq(1)),
        ];
        keys.sort();
        let decoded: Vec<_> = keys
            .iter()
            .map(|k| decode_log_key(k).expect("decodes"))
            .collect();
        assert_eq!(
            decoded,
            vec![
                (a.clone(), Seq(1)),
                (a.clone(), Seq(255)),
                (a.clone(), Seq(256)),
                (a.clone(), Seq(u64::MAX)),
                (ab.clone(), Seq(1)),
            ]
        );
        let end = log_key_end(&a, Seq(u64::MAX));
        assert!(log_key(&a, Seq(u64::MAX)) < end && end <= log_key(&ab, Seq(0)));
        assert!(decode_log_key(&[3, b'a', 0]).is_err());
        assert!(decode_log_key(&[]).is_err());
    }

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert!(key_after(&[1, 2]) > vec![1, 2]);
    }

    #[test]
    fn truncate_plan_clamps_to_applied_and_is_idempotent() {
        let mut applied = VersionVector::new();
        applied.set(r("a"), Seq(10));
        let mut upto = VersionVector::new();
        upto.set(r("a"), Seq(20));
        upto.set(r("b"), Seq(5));
        let plan = truncate_plan(&upto, &applied, &VersionVector::new()).expect("plans");
        assert_eq!(
            plan.ranges,
            vec![(log_key(&r("a"), Seq(1)), log_key(&r("a"), Seq(11)))]
        );
        let (start, _) = plan.log_start.expect("log start raised");
        assert_eq!(start.get(&r("a")), Seq(10));
        assert_eq!(start.get(&r("b")), Seq::ZERO);
        let again = truncate_plan(&upto, &applied, &start).expect("plans");
        assert_eq!(again, TruncatePlan::default());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ItemState>("item", || "k".into(), &bytes);
            let _ = decode::<DeadLetter>("dead letter", || "k".into(), &bytes);
            let _ = decode_vector("applied vector", META_APPLIED, &bytes);
            let _ = decode_log_key(&bytes);
            let _ = decode_item_key(&bytes);
            let _ = decode_dead_letter_key(&bytes);
        }

        #[test]
        fn decode_never_panics_on_valid_envelopes(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            // A valid envelope around random bytes exercises postcard itself.
            let mut bytes = vec![FORMAT_VERSION];
            bytes.extend_from_slice(&payload);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let _ = decode::<ItemState>("item", || "k".into(), &bytes);
            let _ = decode::<DeadLetter>("dead letter", || "k".into(), &bytes);
            let _ = decode_entry(r("a"), Seq(1), &bytes);
        }
    }
}
