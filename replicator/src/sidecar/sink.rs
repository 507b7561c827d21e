//! `kind = "dynamodb"` sink: writes merged results back to the local table.
//!
//! The sink follows the log like a peer link does (every origin, in HLC
//! order, from a durable cursor) and marks each item of its table that an
//! entry touched. For a marked item it reads, from one consistent view,
//! the merged state and the table image (what the table holds as of the
//! latest stream record, see [`super::image`]) and writes the difference
//! ([`crate::dynamo::plan`]): counters as `ADD` of what the table lacks,
//! set elements as `ADD`/`DELETE`, other attributes as `SET`/`REMOVE`
//! conditioned on the value the image shows — so a concurrent local write
//! is never overwritten by an older merged value; the condition fails, the
//! source ingests the local write, and the item is tried again.
//!
//! Every write also sets the marker attribute to a larger token,
//! conditioned on the marker the image shows (compare-and-swap). That
//! makes the sink's writes recognisable to the source (no echo) and makes
//! a write retried after a crash — whose stream record has not been read
//! yet — fail its condition instead of adding a counter twice. A delete is
//! two writes: the marker set to a negative token, then a `DeleteItem`
//! conditioned on it; the source recognises a delete of an item with a
//! negative marker as the sink's.
//!
//! Failures (see [`super::sink_loop`], the loop every sink runs): a
//! condition failure is a conflict; throttling, 5xx and network errors are
//! retried; validation errors (an item too large, a value the table
//! refuses) dead-letter the item with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use tributary_engine::key::ItemKey;
use tributary_engine::schema::TableSchema;

use super::aws::describe;
use super::image::next_token;
use super::sink_loop::{self, ItemWriter, Outcome, SinkSettings};
use crate::config::DynamoSinkConfig;
use crate::dynamo::convert::{Expression, key_to_sdk, update_expression};
use crate::dynamo::plan::{SinkWrite, plan};
use crate::node::{Core, now_millis};

/// The DynamoDB writer of one table.
struct Sink {
    id: String,
    table: String,
    schema: TableSchema,
    marker: String,
    client: Client,
    core: Arc<Core>,
}

impl ItemWriter for Sink {
    async fn write(&self, key: &ItemKey) -> Outcome {
        write_item(self, key).await
    }
}

/// Runs the DynamoDB sink of `config.table` until the node shuts down.
pub async fn run(core: Arc<Core>, config: DynamoSinkConfig, schema: TableSchema, client: Client) {
    let id = format!("sink:dynamodb:{}", config.table);
    let writer = Arc::new(Sink {
        id: id.clone(),
        table: config.table.to_string(),
        schema: schema.clone(),
        marker: config.marker_attribute.as_str().to_owned(),
        client,
        core: Arc::clone(&core),
    });
    let settings = SinkSettings {
        id,
        schema,
        retry_backoff_initial: config.retry_backoff_initial,
        retry_backoff_max: config.retry_backoff_max,
        concurrency: config.concurrency,
    };
    sink_loop::run(core, settings, writer).await;
}

/// Makes the table hold `key`'s merged document, once.
async fn write_item(sink: &Sink, key: &ItemKey) -> Outcome {
    let (merged, image) = match sink_loop::read_item(&sink.core, key).await {
        Ok(read) => read,
        Err(outcome) => return outcome,
    };
    let write = match plan(&sink.schema, merged.as_ref(), image.attrs.as_ref()) {
        Ok(Some(write)) => write,
        Ok(None) => return Outcome::Done,
        Err(e) => return Outcome::Dead(e.to_string()),
    };
    let token = next_token(image.marker.as_ref(), now_millis().saturating_mul(1000));
    let sdk_key = key_to_sdk(&sink.schema, key);
    let outcome = match write {
        // The table has no such item: create it whole, in one write (one
        // stream record), only if it still does not exist.
        SinkWrite::Update(_) if image.attrs.is_none() => match merged {
            Some(doc) => create(sink, sdk_key, &doc, token).await,
            None => Outcome::Done,
        },
        SinkWrite::Update(changes) => {
            let expr = update_expression(&changes, &sink.marker, image.marker.as_ref(), token);
            update(sink, sdk_key, expr).await
        }
        SinkWrite::Delete => delete(sink, sdk_key, image.marker.as_ref(), token).await,
    };
    if matches!(outcome, Outcome::Done) {
        sink.core.sidecar.sink_outcome(&sink.id, "written", None);
    }
    outcome
}

async fn update(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    expr: Expression,
) -> Outcome {
    let result = sink
        .client
        .update_item()
        .table_name(&sink.table)
        .set_key(Some(key))
        .set_update_expression(expr.update)
        .condition_expression(expr.condition)
        .set_expression_attribute_names(Some(expr.names))
        .set_expression_attribute_values((!expr.values.is_empty()).then_some(expr.values))
        .send()
        .await;
    match result {
        Ok(_) => Outcome::Done,
        Err(e) => failed(
            &e,
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
        ),
    }
}

/// Creates the item with the merged document, if it does not exist.
async fn create(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    doc: &BTreeMap<tributary_engine::ids::AttrName, tributary_engine::value::AttrValue>,
    token: u64,
) -> Outcome {
    let mut item = key;
    for (name, value) in doc {
        item.insert(
            name.as_str().to_owned(),
            crate::dynamo::convert::to_sdk(value),
        );
    }
    item.insert(sink.marker.clone(), AttributeValue::N(token.to_string()));
    let mut names = std::collections::HashMap::new();
    names.insert(
        "#k".to_owned(),
        sink.schema.partition_key().as_str().to_owned(),
    );
    let result = sink
        .client
        .put_item()
        .table_name(&sink.table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#k)")
        .set_expression_attribute_names(Some(names))
        .send()
        .await;
    match result {
        Ok(_) => Outcome::Done,
        Err(e) => failed(
            &e,
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
        ),
    }
}

/// Deletes the item in two conditioned steps (see the module docs).
async fn delete(
    sink: &Sink,
    key: std::collections::HashMap<String, AttributeValue>,
    marker: Option<&tributary_engine::value::AttrValue>,
    token: u64,
) -> Outcome {
    let intent = format!("-{token}");
    let mut names = std::collections::HashMap::new();
    names.insert("#m".to_owned(), sink.marker.clone());
    let mut values = std::collections::HashMap::new();
    values.insert(":t".to_owned(), AttributeValue::N(intent.clone()));
    let condition = match marker {
        Some(prev) => {
            values.insert(":p".to_owned(), crate::dynamo::convert::to_sdk(prev));
            "#m = :p"
        }
        None => "attribute_not_exists(#m)",
    };
    let marked = sink
        .client
        .update_item()
        .table_name(&sink.table)
        .set_key(Some(key.clone()))
        .update_expression("SET #m = :t")
        .condition_expression(condition)
        .set_expression_attribute_names(Some(names.clone()))
        .set_expression_attribute_values(Some(values))
        .send()
        .await;
    if let Err(e) = marked {
        return failed(
            &e,
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
        );
    }
    let mut values = std::collections::HashMap::new();
    values.insert(":t".to_owned(), AttributeValue::N(intent));
    let deleted = sink
        .client
        .delete_item()
        .table_name(&sink.table)
        .set_key(Some(key))
        .condition_expression("#m = :t")
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .send()
        .await;
    match deleted {
        Ok(_) => Outcome::Done,
        Err(e) => failed(
            &e,
            e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()),
        ),
    }
}

/// Sorts a failed write: a condition failure (`conditional`) is a
/// conflict; a validation error is permanent; everything else (throttling,
/// 5xx, network) is retried.
fn failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>, conditional: bool) -> Outcome
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if conditional {
        return Outcome::Conflict;
    }
    match e.as_service_error().and_then(|s| s.code()) {
        Some("ValidationException" | "ItemCollectionSizeLimitExceededException") => {
            Outcome::Dead(describe(e))
        }
        _ => Outcome::Retry(describe(e)),
    }
}
