//! DynamoDB change records, as a DynamoDB Streams or Kinesis source reads
//! them: each input line is one record's bytes; the batch goes through
//! `classify` (JSON → `ChangeRecord` → `derive_change`, duplicate, echo and
//! initial-load rules, dead letters), and every change it yields is applied
//! to the item CRDT.
//!
//! Invariant: every record is accounted for exactly once — a change, a
//! duplicate, an echo, a dead letter, or a MODIFY that changed nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_engine::ids::AttrName;
use tributary_fuzz::{exercise, schema};
use tributary_replicator::sidecar::classify::{Origin, RawRecord, classify};
use tributary_replicator::sidecar::image::TableImage;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let records: Vec<RawRecord> = bytes
        .split(|b| *b == b'\n')
        .take(64)
        .enumerate()
        .map(|(i, line)| RawRecord {
            shard: "shardId-0".to_owned(),
            offset: i.to_string(),
            bytes: line.to_vec(),
        })
        .collect();
    let schema = schema();
    let marker = AttrName::new("tributary_sink").expect("a valid name");
    let origin = Origin {
        source: "kinesis:carts-changes",
        now_millis: 1_700_000_000_000,
        late: flags & 1 == 1,
        // Within an initial load's window, or not.
        load_window: (flags & 2 == 2).then_some((1_600_000_000_000, 1_800_000_000_000)),
    };
    let marker = (flags & 4 == 4).then_some(&marker);
    let Ok(out) = classify(&schema, marker, &origin, &records, |_| {
        Ok(TableImage::default())
    }) else {
        return;
    };
    let accounted = out.changes.len() as u64
        + out.duplicates
        + out.echoes
        + out.attached.dead_letters.len() as u64;
    assert!(accounted <= records.len() as u64, "a record counted twice");
    assert_eq!(out.changes.len(), out.from_record.len());
    for change in &out.changes {
        exercise(&schema, &change.ops);
    }
    for (_, bytes) in &out.attached.side {
        TableImage::decode(bytes).expect("an image we encoded decodes");
    }
});
