//! The on-disk decoder as tools and the fuzzers call it
//! (`store::decode_stored`): what it decodes re-encodes to the same value,
//! and bytes that are not a value of the kind asked for are a typed error
//! naming the key, never a panic.

use tributary_engine::ids::{Hlc, RegionId, Seq, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::store::{
    Checkpoint, StoreError, StoredKind, StoredValue, decode_stored, encode_stored, seal_payload,
};
use tributary_engine::value::Scalar;

fn vector() -> VersionVector {
    let mut v = VersionVector::new();
    v.set(RegionId::new("us-east-1").expect("region"), Seq(4));
    v
}

#[test]
fn stored_values_round_trip() {
    let values = [
        (
            StoredKind::Vector,
            &b"applied"[..],
            StoredValue::Vector(vector()),
        ),
        (StoredKind::Hlc, b"hlc", StoredValue::Hlc(Hlc::new(9, 2))),
        (
            StoredKind::Checkpoint,
            b"checkpoint/kinesis:x/shard-0",
            StoredValue::Checkpoint(Checkpoint("after:17".into())),
        ),
        (
            StoredKind::Counter,
            b"dead_letter_next",
            StoredValue::Counter(3),
        ),
    ];
    for (kind, key, value) in values {
        let bytes = encode_stored(&value).expect("encodes");
        assert_eq!(decode_stored(kind, key, &bytes).expect("decodes"), value);
    }
    // An item that points at the log entry holding its state.
    let table = TableName::new("orders").expect("table");
    let item = ItemKey::new(table, Scalar::S("o-1".into()), None).expect("key");
    let at = StoredValue::ItemAtEntry(RegionId::new("eu-west-1").expect("region"), Seq(77));
    let bytes = encode_stored(&at).expect("encodes");
    assert_eq!(
        decode_stored(StoredKind::Item, &item.encode(), &bytes).expect("decodes"),
        at
    );
}

#[test]
fn bytes_that_are_not_the_kind_asked_for_are_refused_with_the_key() {
    let hlc = encode_stored(&StoredValue::Hlc(Hlc::new(9, 2))).expect("encodes");
    let mut flipped = hlc.clone();
    flipped[1] ^= 0x40;
    for (kind, key, bytes, reason) in [
        (
            StoredKind::Hlc,
            &b"hlc"[..],
            &b"\x01\x02"[..],
            "shorter than the envelope",
        ),
        (
            StoredKind::Hlc,
            b"hlc",
            flipped.as_slice(),
            "checksum mismatch",
        ),
        (
            StoredKind::Checkpoint,
            b"checkpoint/x",
            seal_payload(&[0xff; 3]).leak(),
            "does not decode",
        ),
        (StoredKind::LogEntry, b"not a log key", hlc.as_slice(), ""),
        (
            StoredKind::DeadLetter,
            b"short",
            hlc.as_slice(),
            "expected 8",
        ),
    ] {
        match decode_stored(kind, key, bytes) {
            Err(StoreError::Corrupt {
                reason: r, key: k, ..
            }) => {
                assert!(r.contains(reason), "{kind:?}: {r}");
                assert!(!k.is_empty(), "{kind:?}: the error names the key");
            }
            other => panic!("{kind:?}: expected a corrupt-value error, got {other:?}"),
        }
    }
}
