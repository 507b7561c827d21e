//! The admin API's documents, as pure functions: the JSON-lines change
//! form `replctl write` sends ([`parse_change`]) and the merged-item
//! document `replctl get` prints ([`item_document`]). The gRPC service in
//! [`crate::node`] calls these; nothing here does I/O.

mod change_json;
mod item_json;

pub use change_json::{ChangeLineError, parse_change};
pub use item_json::{hlc_text, item_document, key_from_json};
