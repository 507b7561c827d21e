//! Starting the sidecar: a task per configured source and sink.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{aws, kinesis, load, sink, source, streams};
use crate::config::{SinkConfig, SourceConfig};
use crate::node::Core;

/// Starts a task per configured source and sink.
pub fn start(core: &Arc<Core>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let schemas = core.config.schemas().unwrap_or_default();
    // A table's sinks start writing once its sources' initial loads are
    // done (see `SidecarFacts::wait_loaded`).
    for source in &core.config.sources {
        if schemas.get(source.table()).is_some() {
            core.sidecar.expect_load(source.table().as_str());
        }
    }
    for source in core.config.sources.clone() {
        let Some(schema) = schemas.get(source.table()).cloned() else {
            continue;
        };
        let marker = core
            .config
            .sinks
            .iter()
            .filter(|s| s.table() == source.table())
            .find_map(|s| s.marker().cloned());
        let (endpoint, poll_interval) = match &source {
            SourceConfig::DynamodbStreams(c) => (source.endpoint(), c.poll_interval),
            SourceConfig::Kinesis(c) => (source.endpoint(), c.poll_interval),
            SourceConfig::Postgres(c) => {
                let sink_origin = core.config.sinks.iter().find_map(|s| match s {
                    SinkConfig::Postgres(p) if p.table == c.table => Some(p.origin_name()),
                    _ => None,
                });
                tasks.push(tokio::spawn(crate::postgres::source::run(
                    Arc::clone(core),
                    c.clone(),
                    schema,
                    sink_origin,
                )));
                continue;
            }
        };
        let Some(endpoint) = endpoint else { continue };
        let prefix = source.prefix();
        let core = Arc::clone(core);
        tasks.push(tokio::spawn(async move {
            let sdk = aws::sdk_config(&endpoint).await;
            let mut spec = source::SourceSpec {
                prefix,
                schema,
                marker,
                poll_interval,
                load_window: None,
            };
            // A node that started empty ingests nothing before its peers
            // told it how far its own region's log went (no seq reuse).
            while let Some(why) = core.write_gate() {
                core.sidecar.source_error(&spec.prefix, &format!("waiting: {why}"));
                if core.sleep_or_shutdown(std::time::Duration::from_millis(100)).await {
                    return;
                }
            }
            let mode = source.initial_load();
            let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
            spec.load_window = loop {
                match load::run(&core, &spec, mode, &dynamodb, source.table().as_str()).await {
                    Ok(window) => {
                        core.sidecar.load_finished(source.table().as_str());
                        break window;
                    }
                    Err(e) => {
                        core.sidecar.source_error(&spec.prefix, &format!("initial load: {e}"));
                        tracing::warn!(source = %spec.prefix, error = %e, "initial load failed; retrying");
                        if core.sleep_or_shutdown(std::time::Duration::from_secs(2)).await {
                            return;
                        }
                    }
                }
            };
            match &source {
                SourceConfig::DynamodbStreams(c) => {
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
                    source::run(core, spec, kinesis::KinesisStream::new(&sdk, &c.stream)).await;
                }
                // Started above.
                SourceConfig::Postgres(_) => {}
            }
        }));
    }
    for sink in core.config.sinks.clone() {
        let Some(schema) = schemas.get(sink.table()).cloned() else {
            continue;
        };
        let config = match sink {
            SinkConfig::Dynamodb(config) => config,
            SinkConfig::Postgres(config) => {
                tasks.push(tokio::spawn(crate::postgres::sink::run(
                    Arc::clone(core),
                    config,
                    schema,
                )));
                continue;
            }
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
