//! Writes the committed seed corpus (`fuzz/corpus/TARGET/`): a few valid
//! inputs per target, made with the crates' own encoders, so that the
//! fuzzers start from deep inside each format (checksums included) rather
//! than from nothing. Run from `fuzz/`: `cargo run --example seeds`.

use std::path::Path;

use prost::Message;
use tributary_engine::change::{LogEntry, Op};
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId, Seq, SourceId, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::store::{Checkpoint, DeadLetter, StoredKind, StoredValue, encode_stored};
use tributary_engine::value::{AttrValue, Scalar};
use tributary_proto::v1 as pb;
use tributary_replicator::config::ClusterName;
use tributary_replicator::link::{Batch, BatchId};
use tributary_replicator::wire::{Hello, ToWire, WireAck, batch_to_wire, snapshot_to_wire};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn region(r: &str) -> RegionId {
    RegionId::new(r).expect("region")
}

fn entries() -> Vec<LogEntry> {
    let schema = tributary_fuzz::schema();
    let key = ItemKey::new(
        TableName::new("carts").expect("table"),
        Scalar::S("u1".into()),
        Some(Scalar::S("c1".into())),
    )
    .expect("key");
    let ops = [
        vec![
            Op::Set {
                attr: AttrName::new("name").expect("attr"),
                value: AttrValue::S("x".into()),
            },
            Op::Add {
                attr: AttrName::new("qty").expect("attr"),
                amount: 2,
            },
        ],
        vec![
            Op::AddToSet {
                attr: AttrName::new("tags").expect("attr"),
                elements: vec![Scalar::S("a".into()), Scalar::S("b".into())],
            },
            Op::Set {
                attr: AttrName::new("notes").expect("attr"),
                value: AttrValue::S("n".into()),
            },
        ],
        vec![Op::Delete],
    ];
    let origin = region("us-east-1");
    let mut state = ItemState::new();
    let mut out = Vec::new();
    for (i, ops) in ops.iter().enumerate() {
        let hlc = Hlc::new(1_700_000_000_000 + i as u64, 0);
        let prepared = state.prepare(&schema, &origin, hlc, ops).expect("prepare");
        state = prepared.state;
        let mut deps = VersionVector::new();
        deps.set(region("eu-west-1"), Seq(3));
        out.push(LogEntry {
            origin: origin.clone(),
            seq: Seq(i as u64 + 1),
            hlc,
            deps,
            key: key.clone(),
            delta: prepared.delta,
        });
    }
    out
}

fn main() {
    let entries = entries();
    let mut head = VersionVector::new();
    head.set(region("us-east-1"), Seq(3));
    head.set(region("eu-west-1"), Seq(9));

    // Peer messages: the first byte is the fuzzer's flags (0: deltas as sent).
    let ship = |body: pb::ship_message::Body| {
        let mut bytes = vec![0u8];
        bytes.extend(pb::ShipMessage { body: Some(body) }.encode_to_vec());
        bytes
    };
    let hello = Hello {
        cluster: ClusterName::new("demo").expect("cluster"),
        region: region("us-east-1"),
        protocol_version: tributary_replicator::wire::PROTOCOL_VERSION,
        head: head.clone(),
    };
    write(
        "peer_message",
        "hello",
        &ship(pb::ship_message::Body::Hello(hello.to_wire())),
    );
    let batch = Batch {
        id: BatchId(7),
        entries: entries.clone(),
    };
    let batch = batch_to_wire(&batch).expect("batch");
    write(
        "peer_message",
        "batch",
        &ship(pb::ship_message::Body::Batch(batch)),
    );
    write(
        "peer_message",
        "heartbeat",
        &ship(pb::ship_message::Body::Heartbeat(pb::Heartbeat {
            hlc: 1_700_000_000_000 << 16,
            head: Some(head.to_wire()),
        })),
    );
    let items: Vec<_> = entries
        .iter()
        .map(|e| (e.key.clone(), e.delta.clone()))
        .collect();
    let chunk = snapshot_to_wire(&items, Some(&head)).expect("chunk");
    write(
        "peer_message",
        "snapshot",
        &ship(pb::ship_message::Body::Snapshot(chunk)),
    );
    let ack = WireAck {
        batch_id: BatchId(7),
        applied: head.clone(),
        stop: None,
        hlc: Hlc::new(1_700_000_000_000, 3),
    };
    let mut bytes = vec![0u8];
    bytes.extend(
        pb::ReceiverMessage {
            body: Some(pb::receiver_message::Body::Ack(ack.to_wire())),
        }
        .encode_to_vec(),
    );
    write("peer_message", "ack", &bytes);

    // Stored values: kind index, key length, key, value.
    let stored = |kind: StoredKind, key: &[u8], value: &StoredValue| {
        let index = StoredKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("kind");
        let mut bytes = vec![index as u8, key.len() as u8];
        bytes.extend_from_slice(key);
        bytes.extend(encode_stored(value).expect("encode"));
        bytes
    };
    let (log_key, _) = tributary_engine::store::encode_log_record(&entries[0]).expect("record");
    write(
        "stored_value",
        "log-entry",
        &stored(
            StoredKind::LogEntry,
            &log_key,
            &StoredValue::LogEntry(entries[0].clone()),
        ),
    );
    write(
        "stored_value",
        "item",
        &stored(
            StoredKind::Item,
            &entries[1].key.encode(),
            &StoredValue::Item(entries[1].delta.clone()),
        ),
    );
    write(
        "stored_value",
        "item-at-entry",
        &stored(
            StoredKind::Item,
            &entries[1].key.encode(),
            &StoredValue::ItemAtEntry(entries[1].origin.clone(), entries[1].seq),
        ),
    );
    write(
        "stored_value",
        "vector",
        &stored(
            StoredKind::Vector,
            b"applied",
            &StoredValue::Vector(head.clone()),
        ),
    );
    write(
        "stored_value",
        "hlc",
        &stored(StoredKind::Hlc, b"hlc", &StoredValue::Hlc(Hlc::new(5, 1))),
    );
    write(
        "stored_value",
        "checkpoint",
        &stored(
            StoredKind::Checkpoint,
            b"checkpoint/kinesis:x/shard-0",
            &StoredValue::Checkpoint(Checkpoint("after:4959".into())),
        ),
    );
    write(
        "stored_value",
        "counter",
        &stored(
            StoredKind::Counter,
            b"dead_letter_next",
            &StoredValue::Counter(12),
        ),
    );
    let letter = DeadLetter {
        source: SourceId::new("kinesis:carts/shard-0").expect("source"),
        offset: "4959".into(),
        reason: "change record is not JSON".into(),
        raw: b"{not json".to_vec(),
        attempts: 1,
        at_millis: 1_700_000_000_000,
    };
    write(
        "stored_value",
        "dead-letter",
        &stored(
            StoredKind::DeadLetter,
            &3u64.to_be_bytes(),
            &StoredValue::DeadLetter(letter),
        ),
    );

    // DynamoDB change records, one per line; the first byte is the flags.
    let records = [
        r#"{"eventID":"e1","eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1700000000,"Keys":{"pk":{"S":"u1"},"sk":{"S":"c1"}},"NewImage":{"pk":{"S":"u1"},"sk":{"S":"c1"},"qty":{"N":"2"},"tags":{"SS":["a","b"]},"name":{"S":"x"}}}}"#,
        r#"{"eventID":"e2","eventName":"MODIFY","dynamodb":{"Keys":{"pk":{"S":"u1"},"sk":{"S":"c1"}},"OldImage":{"pk":{"S":"u1"},"sk":{"S":"c1"},"qty":{"N":"2"},"tags":{"SS":["a","b"]}},"NewImage":{"pk":{"S":"u1"},"sk":{"S":"c1"},"qty":{"N":"5"},"tags":{"SS":["b","c"]},"notes":{"L":[{"N":"1.5"},{"BOOL":true},{"NULL":true},{"M":{"k":{"B":"AQI="}}}]},"tributary_sink":{"N":"3"}}}}"#,
        r#"{"eventID":"e3","eventName":"REMOVE","dynamodb":{"Keys":{"pk":{"S":"u1"},"sk":{"S":"c1"}},"OldImage":{"pk":{"S":"u1"},"sk":{"S":"c1"},"qty":{"N":"5"}}}}"#,
        r#"{"eventID":"k1","eventName":"MODIFY","tableName":"carts","dynamodb":{"ApproximateCreationDateTime":1700000000123456,"ApproximateCreationDateTimePrecision":"MICROSECOND","Keys":{"pk":{"S":"u2"},"sk":{"S":"c"}},"OldImage":{"pk":{"S":"u2"},"sk":{"S":"c"},"ns":{"NS":["1","2"]}},"NewImage":{"pk":{"S":"u2"},"sk":{"S":"c"},"ns":{"NS":["3"]},"bs":{"BS":["AA=="]}}}}"#,
    ];
    for flags in [0u8, 2, 4] {
        let mut bytes = vec![flags];
        bytes.extend(records.join("\n").into_bytes());
        write("change_record", &format!("stream-{flags}"), &bytes);
    }

    // wal2json format-2 messages.
    let messages = [
        r#"{"action":"B","xid":741,"origin":3}"#,
        r#"{"action":"I","schema":"public","table":"carts","columns":[{"name":"pk","type":"text","value":"u1"},{"name":"sk","type":"text","value":"c1"},{"name":"qty","type":"bigint","value":12345678901234567897},{"name":"tags","type":"text[]","value":"{a,\"b c\",NULL}"},{"name":"price","type":"numeric(38,18)","value":12.50},{"name":"ok","type":"boolean","value":true},{"name":"doc","type":"jsonb","value":"{\"k\": [1, 2]}"},{"name":"raw","type":"bytea","value":"\\x0102"}]}"#,
        r#"{"action":"U","schema":"public","table":"carts","columns":[{"name":"pk","type":"text","value":"u1"},{"name":"qty","type":"integer","value":7}],"identity":[{"name":"pk","type":"text","value":"u1"},{"name":"sk","type":"text","value":"c1"},{"name":"qty","type":"integer","value":5}]}"#,
        r#"{"action":"D","schema":"public","table":"carts","identity":[{"name":"pk","type":"text","value":"u1"},{"name":"sk","type":"text","value":"c1"},{"name":"when","type":"timestamp with time zone","value":"2026-11-22 10:00:00+00"}]}"#,
        r#"{"action":"C","xid":741}"#,
    ];
    for (i, m) in messages.iter().enumerate() {
        write("wal2json", &format!("message-{i}"), m.as_bytes());
    }

    // CRDT merge: arbitrary bytes already make histories; a few fixed ones.
    for (i, seed) in [
        &b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"[..],
        &[0x20; 64],
        &[0x93; 128],
    ]
    .iter()
    .enumerate()
    {
        write("crdt_merge", &format!("bytes-{i}"), seed);
    }
    println!("seeds written under fuzz/corpus/");
}
