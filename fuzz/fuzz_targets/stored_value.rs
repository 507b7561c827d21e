//! The on-disk decoder: a key and a value as both stores read them back,
//! for every kind of stored value. The value is tried as it is (the
//! envelope's length, checksum and format version) and sealed in a valid
//! envelope (the payload decoder behind them). A value that decodes must
//! re-encode to bytes that decode to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_engine::store::{StoredKind, decode_stored, encode_stored, seal_payload};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let kind = StoredKind::ALL[usize::from(head) % StoredKind::ALL.len()];
    // Key length in the next byte, then the key, then the value.
    let Some((&key_len, rest)) = rest.split_first() else {
        return;
    };
    let key_len = usize::from(key_len).min(rest.len());
    let (key, value) = rest.split_at(key_len);
    for value in [value.to_vec(), seal_payload(value)] {
        if let Ok(decoded) = decode_stored(kind, key, &value) {
            let again = encode_stored(&decoded).expect("a decoded value encodes");
            assert_eq!(
                decode_stored(kind, key, &again).expect("re-encoded value decodes"),
                decoded
            );
        }
    }
});
