//! The DynamoDB sidecar: sources that read the local table's change stream
//! into the log, and the sink that writes merged results back.
//!
//! - [`source`]: the shard driver (checkpoints, parents before children,
//!   backoff), over [`streams`] (DynamoDB Streams) or [`kinesis`] (a
//!   Kinesis data stream of DynamoDB change records);
//! - [`classify`]: records → changes, table images and dead letters (pure);
//! - [`image`]: the per-item image of the table and the sink's marker;
//! - [`sink`]: merged results back to the table, without echo and without
//!   double counting;
//! - [`facts`]: what they report to `replctl` and `/metrics`.

pub mod classify;
pub mod image;

node_only! {
    pub mod aws;
    pub mod facts;
    pub mod kinesis;
    pub mod load;
    pub mod retry;
    pub mod sink;
    pub mod sink_loop;
    pub mod source;
    pub mod streams;
    mod tasks;
    pub use tasks::start;
}
