//! What the fuzz targets share: the table schema they decode under (one
//! attribute of every merge policy) and a way to exercise a change on the
//! item CRDT.

use tributary_engine::change::Op;
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId, TableName};
use tributary_engine::schema::{MergePolicy, TableSchema};

/// `carts(pk, sk)`: `qty` a counter, `tags` a set, `notes` a multi-value
/// register, anything else last-writer-wins.
pub fn schema() -> TableSchema {
    let name = |s: &str| AttrName::new(s).expect("a valid attribute name");
    TableSchema::new(
        TableName::new("carts").expect("a valid table name"),
        name("pk"),
        Some(name("sk")),
    )
    .and_then(|s| s.with_policy(name("qty"), MergePolicy::Counter))
    .and_then(|s| s.with_policy(name("tags"), MergePolicy::Set))
    .and_then(|s| s.with_policy(name("notes"), MergePolicy::Multi))
    .expect("a valid schema")
}

/// Applies `ops` to a fresh item as region `us-east-1` would, then reads
/// the result back; refusals (wrong type for a policy, too large) are
/// fine, panics are not.
pub fn exercise(schema: &TableSchema, ops: &[Op]) {
    let origin = RegionId::new("us-east-1").expect("a valid region");
    if let Ok(prepared) = ItemState::new().prepare(schema, &origin, Hlc::new(1, 0), ops) {
        let _ = prepared.state.values();
        let _ = prepared.state.view();
        let _ = prepared.state.size(schema);
    }
}
