//! Round trips for every conversion, and refusals of malformed messages.

use proptest::prelude::*;
use prost::Message;
use tributary_engine::change::{LogEntry, Op};
use tributary_engine::clock::ClockSkew;
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId, Seq, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::log::ApplyStop;
use tributary_engine::schema::{MergePolicy, TableSchema};
use tributary_engine::store::{decode_item_state, encode_item_state};
use tributary_engine::value::{AttrValue, Scalar};
use tributary_proto::v1 as pb;

use super::*;
use crate::config::ClusterName;
use crate::link::{Batch, BatchId, Holds};

const NOW: u64 = 1_700_000_000_000;

/// A refusal case: the field named in the error, and how to spoil a valid
/// message so that it is refused there.
type Spoil<T> = (&'static str, fn(&mut T));

fn region(s: &str) -> RegionId {
    RegionId::new(s).expect("valid region")
}

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attr")
}

fn vector(pairs: &[(&str, u64)]) -> VersionVector {
    pairs.iter().map(|(r, s)| (region(r), Seq(*s))).collect()
}

fn schema() -> TableSchema {
    TableSchema::new(TableName::new("carts").expect("table"), attr("pk"), None)
        .and_then(|s| s.with_policy(attr("qty"), MergePolicy::Counter))
        .and_then(|s| s.with_policy(attr("tags"), MergePolicy::Set))
        .expect("schema")
}

fn key(k: &str) -> ItemKey {
    ItemKey::new(
        TableName::new("carts").expect("table"),
        Scalar::S(k.into()),
        None,
    )
    .expect("key")
}

/// A real entry: the delta of a change with a register write, a counter
/// increment and set elements, on top of an earlier change from another
/// region (so the delta has a non-trivial context).
fn entry(seq: u64) -> LogEntry {
    let schema = schema();
    let first = ItemState::new()
        .prepare(
            &schema,
            &region("eu-west-1"),
            Hlc::new(NOW, 0),
            &[Op::Set {
                attr: attr("name"),
                value: AttrValue::S("first".into()),
            }],
        )
        .expect("prepare first");
    let ops = [
        Op::Set {
            attr: attr("name"),
            value: AttrValue::S("Ada".into()),
        },
        Op::Add {
            attr: attr("qty"),
            amount: -3,
        },
        Op::AddToSet {
            attr: attr("tags"),
            elements: vec![Scalar::S("red".into()), Scalar::S("blue".into())],
        },
    ];
    let hlc = Hlc::new(NOW + seq, 1);
    let prepared = first
        .state
        .prepare(&schema, &region("us-east-1"), hlc, &ops)
        .expect("prepare");
    assert!(!prepared.delta.is_bottom(), "the delta carries the change");
    LogEntry {
        origin: region("us-east-1"),
        seq: Seq(seq),
        hlc,
        deps: vector(&[("eu-west-1", 1)]),
        key: key(&format!("cart-{seq}")),
        delta: prepared.delta,
    }
}

fn wire_entry(seq: u64) -> pb::Entry {
    entry_to_wire(&entry(seq)).expect("encode entry")
}

fn cluster() -> ClusterName {
    ClusterName::new("prod").expect("cluster")
}

// ---------------------------------------------------------------------------
// Item states (the engine's public wire encoding)

#[test]
fn item_state_encoding_round_trips_and_detects_every_flipped_byte() {
    let delta = entry(1).delta;
    let bytes = encode_item_state(&delta).expect("encode");
    assert_eq!(decode_item_state(&bytes).expect("decode"), delta);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        let err = decode_item_state(&bad).expect_err("a flipped byte must be detected");
        assert!(err.to_string().contains("wire delta"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Version vectors

#[test]
fn vector_round_trips() {
    let v = vector(&[("us-east-1", 7), ("eu-west-1", 1), ("ap-south-1", u64::MAX)]);
    let wire = v.to_wire();
    assert_eq!(wire.seqs.len(), 3);
    assert_eq!(VersionVector::from_wire(wire).expect("decode"), v);
    let empty = VersionVector::new();
    assert_eq!(
        VersionVector::from_wire(empty.to_wire()).expect("decode"),
        empty
    );
}

#[test]
fn vector_drops_zero_seqs() {
    let wire = pb::VersionVector {
        seqs: [("a".to_owned(), 0), ("b".to_owned(), 2)].into(),
    };
    assert_eq!(
        VersionVector::from_wire(wire).expect("decode"),
        vector(&[("b", 2)])
    );
}

#[test]
fn vector_refuses_a_bad_region_naming_it() {
    let wire = pb::VersionVector {
        seqs: [("ok".to_owned(), 1), ("not a region".to_owned(), 2)].into(),
    };
    let err = VersionVector::from_wire(wire).expect_err("refused");
    assert!(matches!(err, WireError::Region { .. }), "{err:?}");
    assert_eq!(err.field(), "vector.seqs[\"not a region\"]");
    assert!(err.to_string().starts_with("message refused"), "{err}");
}

// ---------------------------------------------------------------------------
// Entries

#[test]
fn a_batch_leaves_out_undecoded_what_the_receiver_has() {
    let mut entries: Vec<pb::Entry> = (1..=5).map(wire_entry).collect();
    // A covered entry's delta is not decoded: garbage there goes unnoticed.
    entries[1].delta = b"not a delta".to_vec();
    let wire = pb::Batch { id: 9, entries };
    let have = vector(&[("us-east-1", 2)]);
    let (batch, skipped) = batch_from_wire_lacking(wire.clone(), 10, &have).expect("decode");
    assert_eq!(skipped, 2);
    assert_eq!(batch.id, BatchId(9));
    assert_eq!(batch.entries, (3..=5).map(entry).collect::<Vec<_>>());
    // Its origin and seq are still checked.
    let mut bad = wire.clone();
    bad.entries[0].seq = 0;
    assert!(batch_from_wire_lacking(bad, 10, &have).is_err());
    // Nothing covered: every delta is decoded.
    let err = batch_from_wire_lacking(wire, 10, &VersionVector::new()).expect_err("bad delta");
    assert!(err.to_string().contains("batch.entries[1].delta"), "{err}");
}

#[test]
fn entry_round_trips() {
    let original = entry(5);
    let wire = entry_to_wire(&original).expect("encode");
    assert_eq!(wire.origin, "us-east-1");
    assert_eq!(wire.seq, 5);
    assert_eq!(wire.key, original.key.encode());
    assert_eq!(LogEntry::from_wire(wire).expect("decode"), original);
}

#[test]
fn entry_round_trips_through_protobuf_bytes() {
    let original = entry(9);
    let bytes = entry_to_wire(&original).expect("encode").encode_to_vec();
    let wire = pb::Entry::decode(bytes.as_slice()).expect("protobuf");
    assert_eq!(LogEntry::from_wire(wire).expect("decode"), original);
}

#[test]
fn entry_without_deps_has_empty_deps() {
    let mut wire = wire_entry(1);
    wire.deps = None;
    let decoded = LogEntry::from_wire(wire).expect("decode");
    assert!(decoded.deps.is_empty());
}

#[test]
fn entry_refusals_name_the_field() {
    let cases: [Spoil<pb::Entry>; 7] = [
        ("entry.origin", |e| e.origin = "us east".into()),
        ("entry.origin", |e| e.origin.clear()),
        ("entry.seq", |e| e.seq = 0),
        ("entry.deps.seqs[\"\"]", |e| {
            e.deps = Some(pb::VersionVector {
                seqs: [(String::new(), 3)].into(),
            });
        }),
        ("entry.key", |e| e.key = vec![0xff, 1, 2]),
        ("entry.key", |e| e.key.clear()),
        ("entry.delta", |e| e.delta.clear()),
    ];
    for (field, spoil) in cases {
        let mut wire = wire_entry(1);
        spoil(&mut wire);
        let err = LogEntry::from_wire(wire).expect_err("refused");
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn entry_refuses_seq_zero() {
    let mut wire = wire_entry(1);
    wire.seq = 0;
    let err = LogEntry::from_wire(wire).expect_err("refused");
    assert_eq!(
        err,
        WireError::ZeroSeq {
            field: "entry.seq".into()
        }
    );
}

#[test]
fn entry_refuses_an_undecodable_key() {
    let mut wire = wire_entry(1);
    wire.key.push(0x00);
    let err = LogEntry::from_wire(wire).expect_err("refused");
    assert!(matches!(err, WireError::Key { .. }), "{err:?}");
}

#[test]
fn entry_refuses_any_flipped_byte_in_the_delta() {
    let wire = wire_entry(1);
    for i in 0..wire.delta.len() {
        for bit in [0x01, 0x80] {
            let mut bad = wire.clone();
            bad.delta[i] ^= bit;
            let err = LogEntry::from_wire(bad).expect_err("corruption detected");
            assert!(matches!(err, WireError::Delta { .. }), "{err:?}");
            assert_eq!(err.field(), "entry.delta");
        }
    }
}

#[test]
fn entry_refuses_a_truncated_delta() {
    let wire = wire_entry(1);
    for len in 0..wire.delta.len() {
        let mut bad = wire.clone();
        bad.delta.truncate(len);
        assert!(LogEntry::from_wire(bad).is_err(), "truncated to {len}");
    }
}

// ---------------------------------------------------------------------------
// Batches

#[test]
fn batch_round_trips() {
    let batch = Batch {
        id: BatchId(17),
        entries: (1..=4).map(entry).collect(),
    };
    let wire = batch_to_wire(&batch).expect("encode");
    assert_eq!(wire.id, 17);
    assert_eq!(batch_from_wire(wire, 4).expect("decode"), batch);
    let empty = Batch {
        id: BatchId(1),
        entries: Vec::new(),
    };
    let wire = batch_to_wire(&empty).expect("encode");
    assert_eq!(batch_from_wire(wire, 4).expect("decode"), empty);
}

#[test]
fn batch_over_the_limit_is_refused() {
    let wire = pb::Batch {
        id: 1,
        entries: (1..=5).map(wire_entry).collect(),
    };
    let err = batch_from_wire(wire, 4).expect_err("refused");
    assert_eq!(
        err,
        WireError::BatchTooLarge {
            field: "batch.entries".into(),
            len: 5,
            max: 4
        }
    );
    assert!(err.to_string().contains("smaller batches"), "{err}");
}

#[test]
fn batch_names_the_bad_entry() {
    let mut entries: Vec<pb::Entry> = (1..=3).map(wire_entry).collect();
    entries[2].seq = 0;
    let err = batch_from_wire(pb::Batch { id: 1, entries }, 10).expect_err("refused");
    assert_eq!(err.field(), "batch.entries[2].seq");
}

// ---------------------------------------------------------------------------
// Hello and Welcome

fn hello() -> Hello {
    Hello {
        cluster: cluster(),
        region: region("us-east-1"),
        protocol_version: PROTOCOL_VERSION,
        head: vector(&[("us-east-1", 40), ("eu-west-1", 3)]),
        accepts_progress: true,
    }
}

#[test]
fn hello_and_welcome_round_trip() {
    let h = hello();
    assert_eq!(Hello::from_wire(h.to_wire()).expect("decode"), h);
    let w = Welcome {
        cluster: cluster(),
        region: region("eu-west-1"),
        protocol_version: PROTOCOL_VERSION,
        applied: vector(&[("us-east-1", 12)]),
        own_entries_complete: true,
        parks: true,
    };
    assert_eq!(Welcome::from_wire(w.to_wire()).expect("decode"), w);
}

#[test]
fn hello_refusals_name_the_field() {
    let cases: [Spoil<pb::Hello>; 5] = [
        ("hello.cluster", |h| h.cluster.clear()),
        ("hello.cluster", |h| h.cluster = "a/b".into()),
        ("hello.region", |h| h.region = "x".repeat(65)),
        ("hello.protocol_version", |h| h.protocol_version = 0),
        ("hello.head.seqs[\"é\"]", |h| {
            h.head = Some(pb::VersionVector {
                seqs: [("é".to_owned(), 1)].into(),
            });
        }),
    ];
    for (field, spoil) in cases {
        let mut wire = hello().to_wire();
        spoil(&mut wire);
        let err = Hello::from_wire(wire).expect_err("refused");
        assert_eq!(err.field(), field, "{err}");
    }
    let mut wire = Welcome {
        cluster: cluster(),
        region: region("eu-west-1"),
        protocol_version: PROTOCOL_VERSION,
        applied: VersionVector::new(),
        own_entries_complete: false,
        parks: false,
    }
    .to_wire();
    wire.region.clear();
    let err = Welcome::from_wire(wire).expect_err("refused");
    assert_eq!(err.field(), "welcome.region");
}

// ---------------------------------------------------------------------------
// Acks

fn ack(stop: Option<AckStop>) -> WireAck {
    WireAck {
        batch_id: BatchId(8),
        applied: vector(&[("us-east-1", 41)]),
        stop,
        hlc: Hlc::new(NOW, 3),
        holds: None,
    }
}

#[test]
fn progress_round_trips_and_a_bad_vector_is_refused() {
    let p = WireProgress {
        applied: vector(&[("us-east-1", 41), ("ap-south-1", 7)]),
        hlc: Hlc::new(NOW, 1),
        holds: None,
    };
    let bytes = p.to_wire().encode_to_vec();
    let decoded = pb::Progress::decode(bytes.as_slice()).expect("protobuf");
    assert_eq!(WireProgress::from_wire(decoded).expect("decode"), p);
    let mut wire = p.to_wire();
    wire.applied = Some(pb::VersionVector {
        seqs: [("not a region!".to_owned(), 3)].into_iter().collect(),
    });
    let err = WireProgress::from_wire(wire).expect_err("refused");
    assert!(
        err.field().starts_with("progress.applied"),
        "{}",
        err.field()
    );
}

#[test]
fn holds_round_trip_and_a_held_vector_below_applied_is_refused() {
    let holds = Holds {
        held: vector(&[("us-east-1", 45), ("ap-south-1", 2)]),
        direct: vec![region("ap-south-1")],
    };
    let a = WireAck {
        holds: Some(holds.clone()),
        ..ack(None)
    };
    assert_eq!(WireAck::from_wire(a.to_wire()).expect("decode"), a);
    let p = WireProgress {
        applied: vector(&[("us-east-1", 41)]),
        hlc: Hlc::new(NOW, 1),
        holds: Some(holds),
    };
    assert_eq!(WireProgress::from_wire(p.to_wire()).expect("decode"), p);
    // Without a held vector (a receiver that does not park): no holds,
    // whatever else the message says.
    let mut wire = a.to_wire();
    wire.held = None;
    assert_eq!(WireAck::from_wire(wire).expect("decode").holds, None);
    let mut wire = a.to_wire();
    wire.held = Some(vector(&[("us-east-1", 40)]).to_wire());
    let err = WireAck::from_wire(wire).expect_err("refused");
    assert_eq!(err.field(), "ack.held");
    let mut wire = p.to_wire();
    wire.direct = vec!["not a region!".into()];
    let err = WireProgress::from_wire(wire).expect_err("refused");
    assert_eq!(err.field(), "progress.direct");
}

#[test]
fn ack_round_trips_with_every_stop() {
    let skew = ClockSkew {
        remote: Hlc::new(NOW + 60_000, 0),
        local_ms: NOW,
        ahead_ms: 60_000,
        max_skew_ms: 10_000,
    };
    let stops = [
        ApplyStop::Gap {
            origin: region("us-east-1"),
            expected: Seq(42),
            got: Seq(45),
        },
        ApplyStop::MissingDeps {
            origin: region("us-east-1"),
            seq: Seq(42),
            missing: vector(&[("eu-west-1", 9)]),
        },
        ApplyStop::ClockSkew(skew),
    ];
    let plain = ack(None);
    assert_eq!(WireAck::from_wire(plain.to_wire()).expect("decode"), plain);
    for stop in &stops {
        let a = ack(Some(AckStop::from(stop)));
        let wire = a.to_wire();
        let bytes = wire.encode_to_vec();
        let decoded = pb::Ack::decode(bytes.as_slice()).expect("protobuf");
        assert_eq!(WireAck::from_wire(decoded).expect("decode"), a);
    }
    // What the sender learns from each.
    assert!(matches!(
        AckStop::from(&stops[0]),
        AckStop::Gap { expected: Seq(42), ref detail, .. } if detail.contains("got 45")
    ));
    assert!(matches!(
        AckStop::from(&stops[1]),
        AckStop::MissingDeps { seq: Seq(42), ref detail, .. } if detail.contains("eu-west-1")
    ));
    assert!(matches!(
        AckStop::from(&stops[2]),
        AckStop::ClockSkew { ref detail } if detail.contains("60000 ms ahead")
    ));
}

#[test]
fn ack_refusals_name_the_field() {
    let gap = AckStop::Gap {
        origin: region("us-east-1"),
        expected: Seq(2),
        detail: String::new(),
    };
    let cases: [Spoil<pb::Ack>; 5] = [
        ("ack.stop.reason", |a| {
            if let Some(s) = a.stop.as_mut() {
                s.reason = 0;
            }
        }),
        ("ack.stop.reason", |a| {
            if let Some(s) = a.stop.as_mut() {
                s.reason = 99;
            }
        }),
        ("ack.stop.origin", |a| {
            if let Some(s) = a.stop.as_mut() {
                s.origin = "?".into();
            }
        }),
        ("ack.stop.seq", |a| {
            if let Some(s) = a.stop.as_mut() {
                s.seq = 0;
            }
        }),
        ("ack.applied.seqs[\"\"]", |a| {
            a.applied = Some(pb::VersionVector {
                seqs: [(String::new(), 1)].into(),
            });
        }),
    ];
    for (field, spoil) in cases {
        let mut wire = ack(Some(gap.clone())).to_wire();
        spoil(&mut wire);
        let err = WireAck::from_wire(wire).expect_err("refused");
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn received_stop_detail_is_bounded() {
    let mut wire = ack(Some(AckStop::ClockSkew {
        detail: String::new(),
    }))
    .to_wire();
    if let Some(s) = wire.stop.as_mut() {
        s.detail = "é".repeat(MAX_STOP_DETAIL_BYTES);
    }
    let decoded = WireAck::from_wire(wire).expect("decode");
    let Some(AckStop::ClockSkew { detail }) = decoded.stop else {
        panic!("expected a clock-skew stop, got {:?}", decoded.stop);
    };
    assert!(detail.len() <= MAX_STOP_DETAIL_BYTES);
    assert!(detail.len() > MAX_STOP_DETAIL_BYTES - 2);
}

// ---------------------------------------------------------------------------
// Untrusted bytes never panic

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes as a protobuf `Entry`, then as a log entry: an error
    /// or a value, never a panic.
    #[test]
    fn arbitrary_entry_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(wire) = pb::Entry::decode(bytes.as_slice()) {
            let _ = LogEntry::from_wire(wire);
        }
    }

    /// Arbitrary key and delta bytes (and origin, seq) in a well-formed
    /// message: never a panic, and garbage is refused.
    #[test]
    fn arbitrary_entry_fields_never_panic(
        origin in "\\PC{0,70}",
        seq in any::<u64>(),
        key in proptest::collection::vec(any::<u8>(), 0..64),
        delta in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let wire = pb::Entry { origin, seq, hlc: 0, deps: None, key, delta };
        // Random delta bytes essentially never carry a valid CRC-32.
        let _ = LogEntry::from_wire(wire);
    }

    /// A valid entry's protobuf bytes with some bytes overwritten: decoding
    /// never panics, and whatever decodes is a well-formed entry.
    #[test]
    fn mutated_entry_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = wire_entry(3).encode_to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(wire) = pb::Entry::decode(bytes.as_slice())
            && let Ok(entry) = LogEntry::from_wire(wire)
        {
            prop_assert!(entry.seq >= Seq(1));
        }
    }
}
