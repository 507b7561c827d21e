//! Tributary's engine: the CRDT data model, the hybrid logical clock and the
//! CRDT log with its stores (in memory and on RocksDB).
//!
//! No tokio, no network, no global state: everything here takes its inputs
//! (clock readings, stores, changes) from the caller and returns values.

pub mod change;
pub mod clock;
pub mod crdt;
pub mod ids;
pub mod key;
pub mod log;
pub mod schema;
pub mod store;
pub mod stream_record;
pub mod value;
