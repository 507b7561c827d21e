//! Version vectors, log entries and batches of entries.

use tributary_engine::change::LogEntry;
use tributary_engine::ids::{Hlc, RegionId, Seq, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::store::{EncodedEntry, decode_item_state_sharing};
use tributary_proto::v1 as pb;

use super::{EncodeError, FromWire, ToWire, WireError};
use crate::link::{Batch, BatchId};

impl ToWire for VersionVector {
    type Wire = pb::VersionVector;

    fn to_wire(&self) -> pb::VersionVector {
        pb::VersionVector {
            seqs: self
                .iter()
                .map(|(origin, seq)| (origin.as_str().to_owned(), seq.0))
                .collect(),
        }
    }
}

impl FromWire for VersionVector {
    type Wire = pb::VersionVector;

    fn from_wire(wire: pb::VersionVector) -> Result<Self, WireError> {
        vector_from_wire(Some(wire), "vector")
    }
}

/// A received vector; `at` names it for errors. Absent means empty; zero
/// entries are dropped.
pub(super) fn vector_from_wire(
    wire: Option<pb::VersionVector>,
    at: &str,
) -> Result<VersionVector, WireError> {
    vector_from_wire_in(wire, at, &mut Regions::default())
}

/// [`vector_from_wire`], its region ids through `regions`.
fn vector_from_wire_in(
    wire: Option<pb::VersionVector>,
    at: &str,
    regions: &mut Regions,
) -> Result<VersionVector, WireError> {
    let Some(wire) = wire else {
        return Ok(VersionVector::new());
    };
    // Sorted, so that of several bad region ids the same one is reported
    // every time (the map's order is random).
    let mut seqs: Vec<(String, u64)> = wire.seqs.into_iter().collect();
    seqs.sort_unstable();
    let mut vector = VersionVector::new();
    for (origin, seq) in seqs {
        let region = regions.get(&origin, || format!("{at}.seqs[{origin:?}]"))?;
        vector.raise(&region, Seq(seq));
    }
    Ok(vector)
}

/// A received region id; `field` names it for errors.
pub(super) fn region_from_wire(
    value: &str,
    field: impl FnOnce() -> String,
) -> Result<RegionId, WireError> {
    if value.is_empty() {
        return Err(WireError::Missing { field: field() });
    }
    RegionId::from_borrowed(value).map_err(|source| WireError::Region {
        field: field(),
        source,
    })
}

/// The region ids met while decoding one batch. A batch names a handful of
/// regions, each in every entry's origin, deps and delta: each is checked
/// and allocated once, and one the receiver already knows (it is seeded
/// with them) is that very id, so later comparisons are pointer tests.
#[derive(Default)]
struct Regions(Vec<RegionId>);

impl Regions {
    /// Past this many, names are no longer remembered: a peer sending many
    /// distinct ones costs a check each, not a longer search each.
    const MAX: usize = 16;

    fn seeded(known: impl IntoIterator<Item = RegionId>) -> Self {
        Regions(known.into_iter().take(Self::MAX).collect())
    }

    /// The region named `value`; `field` names it for errors.
    fn get(&mut self, value: &str, field: impl FnOnce() -> String) -> Result<RegionId, WireError> {
        if let Some(known) = self.0.iter().find(|r| r.as_str() == value) {
            return Ok(known.clone());
        }
        let region = region_from_wire(value, field)?;
        if self.0.len() < Self::MAX {
            self.0.push(region.clone());
        }
        Ok(region)
    }
}

/// A received seq, which must be at least 1.
pub(super) fn seq_from_wire(value: u64, field: impl FnOnce() -> String) -> Result<Seq, WireError> {
    if value == 0 {
        return Err(WireError::ZeroSeq { field: field() });
    }
    Ok(Seq(value))
}

/// The message for a log entry: key and delta in the engine's canonical
/// encodings.
pub fn entry_to_wire(entry: &LogEntry) -> Result<pb::Entry, EncodeError> {
    EncodedEntry::encode(entry)
        .map(encoded_entry_to_wire)
        .map_err(|source| EncodeError {
            origin: entry.origin.clone(),
            seq: entry.seq,
            source,
        })
}

/// The message for an entry read for shipping: its delta's bytes go out as
/// they were stored ([`encoded_entries_above`](tributary_engine::store::encoded_entries_above)).
pub fn encoded_entry_to_wire(entry: EncodedEntry) -> pb::Entry {
    pb::Entry {
        origin: entry.origin.as_str().to_owned(),
        seq: entry.seq.0,
        hlc: entry.hlc.0,
        deps: Some(entry.deps.to_wire()),
        key: entry.key.encode(),
        delta: entry.delta,
    }
}

impl FromWire for LogEntry {
    type Wire = pb::Entry;

    fn from_wire(wire: pb::Entry) -> Result<Self, WireError> {
        entry_from_wire(wire, "entry")
    }
}

/// A received entry; `at` names it for errors.
fn entry_from_wire(wire: pb::Entry, at: &str) -> Result<LogEntry, WireError> {
    let origin = region_from_wire(&wire.origin, || format!("{at}.origin"))?;
    entry_from_wire_in(wire, origin, at, &mut Regions::default())
}

/// [`entry_from_wire`] with its origin decoded, region ids through
/// `regions`.
fn entry_from_wire_in(
    wire: pb::Entry,
    origin: RegionId,
    at: &str,
    regions: &mut Regions,
) -> Result<LogEntry, WireError> {
    let seq = seq_from_wire(wire.seq, || format!("{at}.seq"))?;
    let deps = vector_from_wire_in(wire.deps, &format!("{at}.deps"), regions)?;
    let key = ItemKey::decode(&wire.key).map_err(|source| WireError::Key {
        field: format!("{at}.key"),
        source,
    })?;
    let delta =
        decode_item_state_sharing(&wire.delta, &regions.0).map_err(|source| WireError::Delta {
            field: format!("{at}.delta"),
            source,
        })?;
    Ok(LogEntry {
        origin,
        seq,
        hlc: Hlc(wire.hlc),
        deps,
        key,
        delta,
    })
}

/// The message for a batch.
pub fn batch_to_wire(batch: &Batch) -> Result<pb::Batch, EncodeError> {
    Ok(pb::Batch {
        id: batch.id.0,
        entries: batch
            .entries
            .iter()
            .map(entry_to_wire)
            .collect::<Result<_, _>>()?,
    })
}

/// A received batch of at most `max_entries` entries, each validated. The
/// size is checked before any entry is decoded. Per-origin contiguity and
/// causal order are not checked here: the log stops at a gap or a missing
/// dependency and the ack says where (`ApplyStop`).
pub fn batch_from_wire(wire: pb::Batch, max_entries: usize) -> Result<Batch, WireError> {
    batch_from_wire_lacking(wire, max_entries, &VersionVector::new()).map(|(batch, _)| batch)
}

/// [`batch_from_wire`] without the entries `have` covers: duplicates (e.g.
/// the relayed copy of an entry that came first from its origin) are left
/// out with only their origin and seq checked, their deltas not decoded.
/// Returns the batch and how many entries were left out. Per origin, a
/// batch's seqs ascend, so what is left out is a prefix of each origin's
/// entries and the rest stays contiguous.
pub fn batch_from_wire_lacking(
    wire: pb::Batch,
    max_entries: usize,
    have: &VersionVector,
) -> Result<(Batch, usize), WireError> {
    if wire.entries.len() > max_entries {
        return Err(WireError::BatchTooLarge {
            field: "batch.entries".to_owned(),
            len: wire.entries.len(),
            max: max_entries,
        });
    }
    let mut entries = Vec::with_capacity(wire.entries.len());
    let mut skipped = 0;
    let mut regions = Regions::seeded(have.iter().map(|(r, _)| r.clone()));
    for (i, entry) in wire.entries.into_iter().enumerate() {
        let at = || format!("batch.entries[{i}]");
        let origin = regions.get(&entry.origin, || format!("{}.origin", at()))?;
        if seq_from_wire(entry.seq, || format!("{}.seq", at()))? <= have.get(&origin) {
            skipped += 1;
            continue;
        }
        entries.push(entry_from_wire_in(entry, origin, &at(), &mut regions)?);
    }
    Ok((
        Batch {
            id: BatchId(wire.id),
            entries,
        },
        skipped,
    ))
}
