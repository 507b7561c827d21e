//! The PostgreSQL change decoder: a wal2json (format 2) message → a row →
//! a change record under the table's schema → CRDT ops applied to an item;
//! every decoded column value is also turned back into SQL text the way
//! the sink writes it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_engine::stream_record::derive_change;
use tributary_fuzz::{exercise, schema};
use tributary_replicator::postgres::types::{kind_of, to_sql_text};
use tributary_replicator::postgres::wal2json::{Message, decode, image, to_record};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(Message::Row(row)) = decode(text) else {
        return;
    };
    let schema = schema();
    for column in row.columns.iter().chain(&row.identity) {
        if let (Ok(values), Some(kind)) = (
            image(&schema, std::slice::from_ref(column)),
            kind_of(&column.sql_type),
        ) {
            for value in values.values() {
                let _ = to_sql_text(value, kind);
            }
        }
    }
    let Ok(record) = to_record(&schema, &row) else {
        return;
    };
    if let Ok(change) = derive_change(&schema, &record, &[]) {
        exercise(&schema, &change.ops);
    }
});
