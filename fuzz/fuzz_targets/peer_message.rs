//! The peer protocol: bytes off the wire → prost decode → the validation
//! every received message goes through (`replicator::wire`) → re-encode →
//! decode and validate again, which must give the same value.
//!
//! The first byte picks whether each entry's delta (and each snapshot
//! item's state) is used as sent or sealed in the store envelope first, so
//! that mutated bytes also reach the item-state decoder behind the
//! checksum.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tributary_engine::ids::VersionVector;
use tributary_engine::store::seal_payload;
use tributary_proto::v1 as pb;
use tributary_replicator::wire::{
    FromWire, Hello, ToWire, Welcome, WireAck, WireProgress, batch_from_wire, batch_to_wire,
    snapshot_from_wire, snapshot_to_wire,
};

/// The receiver's cap on entries per batch and items per chunk.
const MAX_ENTRIES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let seal = flags & 1 == 1;
    if let Ok(message) = pb::ShipMessage::decode(bytes) {
        ship(message, seal);
    }
    if let Ok(message) = pb::ReceiverMessage::decode(bytes) {
        receiver(message);
    }
});

fn ship(message: pb::ShipMessage, seal: bool) {
    use pb::ship_message::Body;
    match message.body {
        Some(Body::Hello(hello)) => round_trip::<Hello>(hello),
        Some(Body::Batch(mut batch)) => {
            if seal {
                for entry in &mut batch.entries {
                    entry.delta = seal_payload(&entry.delta);
                }
            }
            if let Ok(valid) = batch_from_wire(batch, MAX_ENTRIES) {
                let again = batch_to_wire(&valid).expect("a valid batch encodes");
                let again = pb::Batch::decode(again.encode_to_vec().as_slice())
                    .expect("our own encoding decodes");
                assert_eq!(
                    batch_from_wire(again, MAX_ENTRIES).expect("re-encoded batch validates"),
                    valid
                );
            }
        }
        Some(Body::Heartbeat(beat)) => {
            if let Some(head) = beat.head {
                round_trip::<VersionVector>(head);
            }
        }
        Some(Body::Snapshot(mut chunk)) => {
            if seal {
                for item in &mut chunk.items {
                    item.state = seal_payload(&item.state);
                }
            }
            if let Ok(part) = snapshot_from_wire(chunk, MAX_ENTRIES) {
                let again = snapshot_to_wire(&part.items, part.done.as_ref())
                    .expect("a valid chunk encodes");
                assert_eq!(
                    snapshot_from_wire(again, MAX_ENTRIES).expect("re-encoded chunk validates"),
                    part
                );
            }
        }
        None => {}
    }
}

fn receiver(message: pb::ReceiverMessage) {
    use pb::receiver_message::Body;
    match message.body {
        Some(Body::Welcome(welcome)) => round_trip::<Welcome>(welcome),
        Some(Body::Ack(ack)) => round_trip::<WireAck>(ack),
        Some(Body::Progress(progress)) => round_trip::<WireProgress>(progress),
        None => {}
    }
}

/// Validates `wire`; a valid value must survive encode → decode → validate.
fn round_trip<T>(wire: <T as FromWire>::Wire)
where
    T: FromWire + ToWire<Wire = <T as FromWire>::Wire> + PartialEq + std::fmt::Debug,
    <T as FromWire>::Wire: Message + Default,
{
    if let Ok(valid) = T::from_wire(wire) {
        let bytes = valid.to_wire().encode_to_vec();
        let again =
            <T as FromWire>::Wire::decode(bytes.as_slice()).expect("our own encoding decodes");
        assert_eq!(
            T::from_wire(again).expect("re-encoded value validates"),
            valid
        );
    }
}
