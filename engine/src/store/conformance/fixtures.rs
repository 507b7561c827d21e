//! Test values built from real types, shared by the checks.

use super::super::{Checkpoint, CommitBatch, DeadLetter, StoreError};
use crate::change::{LogEntry, Op};
use crate::crdt::ItemState;
use crate::ids::{AttrName, Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use crate::key::ItemKey;
use crate::schema::TableSchema;
use crate::value::AttrValue;
use crate::value::Scalar;

pub(super) fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

pub(super) fn region(name: &str) -> RegionId {
    RegionId::new(name).expect("fixture region ids are valid")
}

pub(super) fn table(name: &str) -> TableName {
    TableName::new(name).expect("fixture table names are valid")
}

pub(super) fn source(name: &str) -> SourceId {
    SourceId::new(name).expect("fixture source ids are valid")
}

pub(super) fn key(t: &str, pk: &str) -> ItemKey {
    ItemKey::new(table(t), Scalar::S(pk.to_owned()), None).expect("fixture keys are valid")
}

pub(super) fn vv(entries: &[(&str, u64)]) -> VersionVector {
    entries.iter().map(|(o, s)| (region(o), Seq(*s))).collect()
}

/// A real item state: `origin` wrote string attributes `attrs` at `hlc`.
pub(super) fn state(k: &ItemKey, origin: &RegionId, hlc: Hlc, attrs: &[(&str, &str)]) -> ItemState {
    let pk = AttrName::new("pk").expect("valid attribute name");
    let schema = TableSchema::new(k.table().clone(), pk, None).expect("valid schema");
    let ops: Vec<Op> = attrs
        .iter()
        .map(|(name, value)| Op::Set {
            attr: AttrName::new(*name).expect("valid attribute name"),
            value: AttrValue::S((*value).to_owned()),
        })
        .collect();
    ItemState::new()
        .prepare(&schema, origin, hlc, &ops)
        .expect("fixture ops are valid")
        .state
}

/// The log entry `(origin, seq)` of a write to `t/<origin>-<seq>`.
pub(super) fn entry(origin: &str, seq: u64) -> LogEntry {
    let origin = region(origin);
    let hlc = Hlc::new(1_000 + seq, 0);
    let k = key("t", &format!("{origin}-{seq}"));
    let delta = state(
        &k,
        &origin,
        hlc,
        &[("name", "x"), ("seq", &seq.to_string())],
    );
    LogEntry {
        deps: [(region("z"), Seq(seq / 2))].into_iter().collect(),
        origin,
        seq: Seq(seq),
        hlc,
        key: k,
        delta,
    }
}

/// The batch that ingests `entry(origin, seq)`: the entry, its item, the
/// applied vector `{origin: seq}`, checkpoint `src → pos-<seq>`, HLC mark.
pub(super) fn ingest(origin: &str, seq: u64) -> CommitBatch {
    let e = entry(origin, seq);
    CommitBatch {
        items: vec![(e.key.clone(), e.delta.clone())],
        applied: vv(&[(origin, seq)]),
        checkpoints: vec![(source("src"), Checkpoint(format!("pos-{seq}")))],
        hlc_mark: e.hlc,
        entries: vec![e],
        ..CommitBatch::default()
    }
}

pub(super) fn letter(n: u32) -> DeadLetter {
    DeadLetter {
        source: source("kinesis:orders/shardId-000000000001"),
        offset: format!("4959{n:04}"),
        reason: format!("record {n} is not valid JSON"),
        raw: vec![0xde, 0xad, n as u8],
        attempts: n,
        at_millis: 1_700_000_000_000 + u64::from(n),
    }
}

pub(super) fn seqs(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq.0).collect()
}
