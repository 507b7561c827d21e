//! `kind = "kinesis"`: a Kinesis data stream carrying DynamoDB change
//! records (the JSON of DynamoDB's Kinesis streaming destination), through
//! the AWS SDK. Every shard (ListShards, all pages), `MillisBehindLatest`
//! as the source's lag, throttling (`ProvisionedThroughputExceeded`,
//! `LimitExceeded`) backed off by the shared driver.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::aws::describe;
use super::classify::RawRecord;
use super::source::{ReadBatch, ShardInfo, ShardStream, StreamError};

/// Records per `GetRecords` call (the service's maximum is 10,000).
const READ_LIMIT: i32 = 1000;

/// One Kinesis data stream.
pub struct KinesisStream {
    client: Client,
    stream: String,
}

impl KinesisStream {
    /// A reader of `stream`.
    pub fn new(config: &aws_config::SdkConfig, stream: &str) -> KinesisStream {
        KinesisStream {
            client: Client::new(config),
            stream: stream.to_owned(),
        }
    }
}

impl KinesisStream {
    async fn list_page(
        &self,
        token: Option<String>,
        with_name: bool,
    ) -> Result<aws_sdk_kinesis::operation::list_shards::ListShardsOutput, StreamError> {
        let mut request = self.client.list_shards().set_next_token(token);
        if with_name {
            request = request.stream_name(&self.stream);
        }
        request.send().await.map_err(|e| {
            let throttled = e
                .as_service_error()
                .is_some_and(|s| s.is_limit_exceeded_exception());
            let text = format!("ListShards {}: {}", self.stream, describe(&e));
            if throttled {
                StreamError::Throttled(text)
            } else {
                StreamError::Other(text)
            }
        })
    }
}

impl ShardStream for KinesisStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // AWS takes either the stream name or a page token; moto wants
            // the name with the token too, so a refused page is asked again
            // that way.
            let page = match token.take() {
                None => self.list_page(None, true).await?,
                Some(t) => match self.list_page(Some(t.clone()), false).await {
                    Ok(page) => page,
                    Err(StreamError::Other(_)) => self.list_page(Some(t), true).await?,
                    Err(e) => return Err(e),
                },
            };
            for shard in page.shards() {
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect();
                out.push(ShardInfo {
                    id: shard.shard_id().to_owned(),
                    parents,
                });
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        let request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| {
            let throttled = e
                .as_service_error()
                .is_some_and(|s| s.is_provisioned_throughput_exceeded_exception());
            let text = format!("GetShardIterator {shard}: {}", describe(&e));
            if throttled {
                StreamError::Throttled(text)
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
                } else if service.is_some_and(|s| {
                    s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception()
                }) {
                    StreamError::Throttled(describe(&e))
                } else {
                    StreamError::Other(format!("GetRecords {shard}: {}", describe(&e)))
                }
            })?;
        let records = out
            .records()
            .iter()
            .map(|r| RawRecord {
                shard: shard.to_owned(),
                offset: r.sequence_number().to_owned(),
                bytes: r.data().as_ref().to_vec(),
            })
            .collect();
        Ok(ReadBatch {
            records,
            next: out.next_shard_iterator().map(str::to_owned),
            millis_behind: out.millis_behind_latest(),
        })
    }
}
