//! The DynamoDB sink's pure parts: what to write to the local table so that
//! it holds the merged document, and how that becomes a DynamoDB request.
//!
//! # The write model
//!
//! Each region's node runs beside a DynamoDB table that applications keep
//! writing while the node replicates. The engine holds, per item, the merged
//! document (`ItemState::values()`); the node also keeps the item's *image*:
//! the table's content as of the latest stream record it ingested, without
//! the key attributes and without the sink's marker attribute.
//!
//! The sink never writes the merged document whole: that would clobber an
//! application write the node has not seen yet. It writes the *difference*
//! between merged document and image ([`plan::plan`]):
//!
//! - a counter gets `ADD delta` (merged − image), which commutes with any
//!   concurrent increment an application makes;
//! - a set gets `ADD` of the elements it lacks or `DELETE` of the elements it
//!   should not have, which keep concurrent element writes;
//! - every other change (`SET` of a register, `REMOVE` of an attribute, a
//!   set that gains and loses elements at once, a value of another type) is
//!   conditioned on the attribute still holding its image value, so a
//!   concurrent application write makes the sink's write fail instead of
//!   being overwritten; the node then retries from the newer image.
//!
//! Every sink write also sets a marker attribute (its name is configured,
//! e.g. `tributary_sink`) to a new increasing token, on the condition that
//! the marker still holds the value it has in the image (compare-and-swap,
//! [`convert::update_expression`], [`convert::delete_condition`]). A write
//! retried after a crash, whose first attempt did land, then fails its
//! condition instead of applying a second time: a counter `ADD` is never
//! counted twice.
//!
//! Applications never write the marker, so their writes do not make sink
//! writes fail except through the per-attribute conditions above.
//!
//! # Layout
//!
//! - [`plan`]: merged document + image → [`plan::SinkWrite`]; no AWS types.
//! - [`convert`]: engine values ↔ SDK `AttributeValue`, item keys, and the
//!   update / condition expressions (the only place AWS types appear).

pub mod convert;
pub mod plan;
