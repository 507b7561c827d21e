//! `kind = "dynamodb-streams"`: a table's DynamoDB stream through the AWS
//! SDK. The stream is found from the table (`DescribeTable`'s latest
//! stream ARN); its records are turned into the same change-record JSON the
//! Kinesis destination carries, so both sources share one reader.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::aws::describe;
use super::classify::RawRecord;
use super::source::{ReadBatch, ShardInfo, ShardStream, StreamError};

/// Records per `GetRecords` call (the service's maximum is 1000).
const READ_LIMIT: i32 = 1000;

/// One table's DynamoDB stream.
pub struct DynamoStream {
    client: Client,
    arn: String,
}

impl DynamoStream {
    /// Finds the table's stream.
    pub async fn open(
        config: &aws_config::SdkConfig,
        table: &str,
    ) -> Result<DynamoStream, StreamError> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let described = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| StreamError::Other(format!("DescribeTable {table}: {}", describe(&e))))?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| {
                StreamError::Other(format!(
                    "table {table} has no stream: enable it with StreamViewType NEW_AND_OLD_IMAGES"
                ))
            })?;
        Ok(DynamoStream {
            client: Client::new(config),
            arn: arn.to_owned(),
        })
    }
}

impl ShardStream for DynamoStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_stream()
                .stream_arn(&self.arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| StreamError::Other(format!("DescribeStream: {}", describe(&e))))?;
            let Some(description) = page.stream_description() else {
                break;
            };
            for shard in description.shards() {
                if let Some(id) = shard.shard_id() {
                    out.push(ShardInfo {
                        id: id.to_owned(),
                        parents: shard
                            .parent_shard_id()
                            .map(str::to_owned)
                            .into_iter()
                            .collect(),
                    });
                }
            }
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        let request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| {
            let trimmed = e
                .as_service_error()
                .is_some_and(|s| s.is_trimmed_data_access_exception());
            let text = format!("GetShardIterator {shard}: {}", describe(&e));
            if trimmed {
                StreamError::Trimmed(text)
            } else {
                StreamError::Other(text)
            }
        })?;
        out.shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| StreamError::Other(format!("GetShardIterator {shard}: no iterator")))
    }

    async fn read(&self, shard: &str, iterator: &str) -> Result<ReadBatch, StreamError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(READ_LIMIT)
            .send()
            .await
            .map_err(|e| {
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_expired_iterator_exception()) {
                    StreamError::Expired
                } else if service.is_some_and(|s| s.is_trimmed_data_access_exception()) {
                    StreamError::Trimmed(describe(&e))
                } else if service.is_some_and(|s| s.is_limit_exceeded_exception()) {
                    StreamError::Throttled(describe(&e))
                } else {
                    StreamError::Other(format!("GetRecords {shard}: {}", describe(&e)))
                }
            })?;
        let records = out
            .records()
            .iter()
            .filter_map(|r| {
                let offset = r.dynamodb().and_then(|d| d.sequence_number())?.to_owned();
                Some(RawRecord {
                    shard: shard.to_owned(),
                    offset,
                    bytes: serde_json::to_vec(&record_json(r)).unwrap_or_default(),
                })
            })
            .collect();
        Ok(ReadBatch {
            records,
            next: out.next_shard_iterator().map(str::to_owned),
            millis_behind: None,
        })
    }
}

/// A stream record as the change-record JSON of DynamoDB's Kinesis
/// destination (what [`tributary_engine::stream_record::ChangeRecord`]
/// reads), creation time in epoch seconds as Streams gives it.
pub fn record_json(r: &Record) -> Value {
    let mut dynamodb = Map::new();
    if let Some(d) = r.dynamodb() {
        if let Some(t) = d.approximate_creation_date_time() {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(t.as_secs_f64()));
        }
        for (name, image) in [
            ("Keys", d.keys()),
            ("NewImage", d.new_image()),
            ("OldImage", d.old_image()),
        ] {
            if let Some(image) = image {
                dynamodb.insert(name.into(), image_json(image));
            }
        }
        if let Some(seq) = d.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), json!(seq));
        }
    }
    json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|e| e.as_str()),
        "eventSourceARN": r.event_source(),
        "dynamodb": Value::Object(dynamodb),
    })
}

fn image_json(image: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        image
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

/// One attribute value in DynamoDB's JSON form (`{"S": "x"}`, binary as
/// base64).
fn value_json(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::B(b) => json!({ "B": b64(b.as_ref()) }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(n) => json!({ "NULL": n }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(value_json).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": image_json(m) }),
        AttributeValue::Ss(s) => json!({ "SS": s }),
        AttributeValue::Ns(s) => json!({ "NS": s }),
        AttributeValue::Bs(s) => {
            json!({ "BS": s.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() })
        }
        // A type this SDK version does not know: the record will fail to
        // parse and be dead-lettered with the type named.
        other => json!({ "UNKNOWN": format!("{other:?}") }),
    }
}
