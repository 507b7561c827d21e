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

pub mod aws;
pub mod classify;
pub mod facts;
pub mod image;
pub mod kinesis;
pub mod retry;
pub mod sink;
pub mod source;
pub mod streams;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::{SinkConfig, SourceConfig};
use crate::node::Core;

/// Starts a task per configured source and sink.
pub fn start(core: &Arc<Core>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let schemas = core.config.schemas().unwrap_or_default();
    for source in core.config.sources.clone() {
        let Some(schema) = schemas.get(source.table()).cloned() else {
            continue;
        };
        let marker = core.config.sinks.iter().find_map(|s| match s {
            SinkConfig::Dynamodb(d) if d.table == *source.table() => {
                Some(d.marker_attribute.clone())
            }
            SinkConfig::Dynamodb(_) => None,
        });
        let core = Arc::clone(core);
        tasks.push(tokio::spawn(async move {
            let sdk = aws::sdk_config(&source.endpoint()).await;
            match &source {
                SourceConfig::DynamodbStreams(c) => {
                    let spec = source::SourceSpec {
                        prefix: format!("dynamodb-streams:{}", c.table),
                        schema,
                        marker,
                        poll_interval: c.poll_interval,
                    };
                    let stream = loop {
                        match streams::DynamoStream::open(&sdk, c.table.as_str()).await {
                            Ok(s) => break s,
                            Err(e) => {
                                core.sidecar.source_error(&spec.prefix, &e.to_string());
                                tracing::warn!(source = %spec.prefix, error = %e, "cannot open the stream; retrying");
                                if core.sleep_or_shutdown(std::time::Duration::from_secs(2)).await {
                                    return;
                                }
                            }
                        }
                    };
                    source::run(core, spec, stream).await;
                }
                SourceConfig::Kinesis(c) => {
                    let spec = source::SourceSpec {
                        prefix: format!("kinesis:{}", c.stream),
                        schema,
                        marker,
                        poll_interval: c.poll_interval,
                    };
                    source::run(core, spec, kinesis::KinesisStream::new(&sdk, &c.stream)).await;
                }
            }
        }));
    }
    for sink in core.config.sinks.clone() {
        let SinkConfig::Dynamodb(config) = sink;
        let Some(schema) = schemas.get(&config.table).cloned() else {
            continue;
        };
        let core = Arc::clone(core);
        tasks.push(tokio::spawn(async move {
            let sdk = aws::sdk_config(&config.endpoint()).await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            sink::run(core, config, schema, client).await;
        }));
    }
    tasks
}
