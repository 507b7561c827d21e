//! The generated types work: a `ShipMessage` carrying a `Batch` encodes and
//! decodes to itself, and an empty buffer decodes to the default message.

use std::collections::HashMap;

use prost::Message;
use tributary_proto::v1::{Batch, Entry, ShipMessage, VersionVector, ship_message};

fn batch_message() -> ShipMessage {
    let deps = VersionVector {
        seqs: HashMap::from([("eu-west-1".to_owned(), 7), ("ap-south-1".to_owned(), 2)]),
    };
    let entries = (1..=3)
        .map(|seq| Entry {
            origin: "us-east-1".to_owned(),
            seq,
            hlc: (1_700_000_000_000 << 16) | seq,
            deps: Some(deps.clone()),
            key: vec![1, 2, 3, seq as u8],
            delta: vec![0xde, 0xad, 0xbe, 0xef],
        })
        .collect();
    ShipMessage {
        body: Some(ship_message::Body::Batch(Batch { id: 42, entries })),
    }
}

#[test]
fn ship_message_with_batch_round_trips() {
    let message = batch_message();
    let bytes = message.encode_to_vec();
    assert_eq!(bytes.len(), message.encoded_len());
    let decoded = ShipMessage::decode(bytes.as_slice()).expect("decode");
    assert_eq!(decoded, message);
    let Some(ship_message::Body::Batch(batch)) = decoded.body else {
        panic!("expected a batch, got {:?}", decoded.body);
    };
    assert_eq!(batch.id, 42);
    assert_eq!(batch.entries.len(), 3);
    assert_eq!(batch.entries[2].seq, 3);
}

#[test]
fn truncated_message_is_an_error_not_a_panic() {
    let bytes = batch_message().encode_to_vec();
    let result = ShipMessage::decode(&bytes[..bytes.len() - 1]);
    assert!(result.is_err(), "a truncated batch must not decode");
}

#[test]
fn empty_buffer_is_the_default_message() {
    let decoded = ShipMessage::decode(&[][..]).expect("decode");
    assert_eq!(decoded, ShipMessage::default());
    assert!(decoded.body.is_none());
}
