//! What a real moto server (the version `scripts/setup.sh` pins) does with
//! exactly the calls the DynamoDB sidecar makes: region isolation,
//! DynamoDB Streams, conditional updates, Kinesis reads and resharding,
//! and paginated scans. Every test asserts moto's actual behaviour; where
//! it differs from real AWS, a comment says how, so the sidecar is written
//! for AWS and its tests know what the emulator cannot show.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodbstreams::primitives::DateTime;
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record as StreamRecord,
    ShardIteratorType as StreamIteratorType, StreamStatus, StreamViewType,
};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, Record as KinesisRecord, Shard, ShardIteratorType,
    StreamStatus as KinesisStreamStatus,
};
use tributary_tests::moto::{Moto, create_kinesis_stream, create_table};

/// A moto server and an SDK configuration for `region` on it.
async fn moto(region: &str) -> (Moto, SdkConfig) {
    let moto = Moto::start().expect("start moto (run scripts/setup.sh first)");
    let config = moto.sdk_config(region).await;
    (moto, config)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ss(vs: &[&str]) -> AttributeValue {
    AttributeValue::Ss(vs.iter().map(|v| (*v).to_owned()).collect())
}

/// An item or image, ordered, with string sets sorted (sets have no order).
fn image(map: &HashMap<String, StreamValue>) -> BTreeMap<String, StreamValue> {
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                StreamValue::Ss(set) => {
                    let mut set = set.clone();
                    set.sort();
                    StreamValue::Ss(set)
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// An expected image from `(name, value)` pairs, in stream types.
fn expect_image(pairs: &[(&str, StreamValue)]) -> BTreeMap<String, StreamValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn st(v: &str) -> StreamValue {
    StreamValue::S(v.to_owned())
}

fn sn(v: i64) -> StreamValue {
    StreamValue::N(v.to_string())
}

fn sss(vs: &[&str]) -> StreamValue {
    StreamValue::Ss(vs.iter().map(|v| (*v).to_owned()).collect())
}

fn system_time(t: &DateTime) -> SystemTime {
    SystemTime::try_from(*t).expect("timestamp in SystemTime's range")
}

/// Waits (yielding) until the local clock — moto's clock too, on this
/// machine — is past `t` by more than `by`: timestamps taken after that
/// are strictly later than `t` even at millisecond precision.
async fn clock_past(t: SystemTime, by: Duration) {
    while SystemTime::now() <= t + by {
        tokio::task::yield_now().await;
    }
}

/// The only shard of a table's stream.
async fn stream_shard(streams: &aws_sdk_dynamodbstreams::Client, arn: &str) -> String {
    let out = streams
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .expect("describe stream");
    let shards = out.stream_description().expect("description").shards();
    assert_eq!(shards.len(), 1, "shards: {shards:?}");
    shards[0].shard_id().expect("shard id").to_owned()
}

/// Records from a stream shard iterator, one GetRecords call.
async fn stream_records(
    streams: &aws_sdk_dynamodbstreams::Client,
    iterator: &str,
    limit: Option<i32>,
) -> (Vec<StreamRecord>, Option<String>) {
    let out = streams
        .get_records()
        .shard_iterator(iterator)
        .set_limit(limit)
        .send()
        .await
        .expect("stream GetRecords");
    (
        out.records().to_vec(),
        out.next_shard_iterator().map(str::to_owned),
    )
}

async fn stream_iterator(
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
    shard: &str,
    kind: StreamIteratorType,
    sequence_number: Option<&str>,
) -> String {
    streams
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_sequence_number(sequence_number.map(str::to_owned))
        .send()
        .await
        .expect("stream GetShardIterator")
        .shard_iterator()
        .expect("shard iterator")
        .to_owned()
}

fn seq(r: &StreamRecord) -> u128 {
    r.dynamodb()
        .and_then(|d| d.sequence_number())
        .expect("sequence number")
        .parse()
        .expect("a decimal sequence number")
}

fn event_names(records: &[StreamRecord]) -> Vec<OperationType> {
    records
        .iter()
        .map(|r| r.event_name().expect("eventName").clone())
        .collect()
}

#[tokio::test]
async fn regions_on_one_server_are_isolated() {
    let (moto, us) = moto("us-east-1").await;
    let eu = moto.sdk_config("eu-west-1").await;
    let us_arn = create_table(&us, "shared", "pk", None)
        .await
        .expect("create table in us-east-1");
    let us_ddb = aws_sdk_dynamodb::Client::new(&us);
    let eu_ddb = aws_sdk_dynamodb::Client::new(&eu);

    let listed = eu_ddb.list_tables().send().await.expect("list eu tables");
    assert!(
        listed.table_names().is_empty(),
        "eu-west-1 lists {:?}",
        listed.table_names()
    );
    let listed = us_ddb.list_tables().send().await.expect("list us tables");
    assert_eq!(listed.table_names(), ["shared"]);

    // The same name in another region is another table, with its own stream.
    let eu_arn = create_table(&eu, "shared", "pk", None)
        .await
        .expect("create the same table name in eu-west-1");
    assert!(
        us_arn.starts_with("arn:aws:dynamodb:us-east-1:123456789012:table/shared/stream/"),
        "{us_arn}"
    );
    assert!(
        eu_arn.starts_with("arn:aws:dynamodb:eu-west-1:123456789012:table/shared/stream/"),
        "{eu_arn}"
    );
    eu_ddb
        .put_item()
        .table_name("shared")
        .item("pk", s("only-in-eu"))
        .send()
        .await
        .expect("put in eu-west-1");
    let us_items = us_ddb
        .scan()
        .table_name("shared")
        .send()
        .await
        .expect("scan us-east-1");
    assert_eq!(us_items.count(), 0, "{:?}", us_items.items());

    // moto writes awsRegion "us-east-1" into every stream record, whatever
    // the table's region. Real AWS writes the table's region. The sidecar
    // must take the region from its configuration, never from records.
    let eu_streams = aws_sdk_dynamodbstreams::Client::new(&eu);
    let shard = stream_shard(&eu_streams, &eu_arn).await;
    let it = stream_iterator(
        &eu_streams,
        &eu_arn,
        &shard,
        StreamIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, _) = stream_records(&eu_streams, &it, None).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].aws_region(), Some("us-east-1"));

    // Kinesis streams are per region too.
    create_kinesis_stream(&us, "events", 1)
        .await
        .expect("create Kinesis stream in us-east-1");
    let eu_kinesis = aws_sdk_kinesis::Client::new(&eu);
    let eu_streams = eu_kinesis
        .list_streams()
        .send()
        .await
        .expect("list eu Kinesis streams");
    assert!(
        eu_streams.stream_names().is_empty(),
        "{:?}",
        eu_streams.stream_names()
    );
}

#[tokio::test]
async fn streams_report_every_write_with_keys_and_both_images() {
    let (_moto, config) = moto("us-east-1").await;
    let arn = create_table(&config, "orders", "pk", Some("sk"))
        .await
        .expect("create table");
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);

    let described = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("describe stream");
    let description = described.stream_description().expect("description");
    assert_eq!(description.stream_status(), Some(&StreamStatus::Enabled));
    assert_eq!(
        description.stream_view_type(),
        Some(&StreamViewType::NewAndOldImages)
    );
    // moto: a new table's stream has exactly one shard, open forever, and
    // every table's shard has the same id and starting sequence number.
    // Real AWS: a table has several shards, each closed after about four
    // hours (EndingSequenceNumber set) and followed by children naming it
    // as ParentShardId; a reader must follow that lineage.
    let shards = description.shards();
    assert_eq!(shards.len(), 1, "{shards:?}");
    assert_eq!(
        shards[0].shard_id(),
        Some("shardId-00000001541626099285-f35f62ef")
    );
    assert_eq!(shards[0].parent_shard_id(), None);
    let range = shards[0].sequence_number_range().expect("sequence range");
    assert_eq!(
        range.starting_sequence_number(),
        Some("1100000000017454423009")
    );
    assert_eq!(range.ending_sequence_number(), None);
    let shard = shards[0].shard_id().expect("shard id").to_owned();

    let key = || -> HashMap<String, AttributeValue> {
        [("pk".to_owned(), s("a")), ("sk".to_owned(), s("1"))].into()
    };
    let before = SystemTime::now();
    ddb.put_item()
        .table_name("orders")
        .set_item(Some(
            key()
                .into_iter()
                .chain([("a".to_owned(), s("x")), ("b".to_owned(), n(1))])
                .collect(),
        ))
        .send()
        .await
        .expect("PutItem");
    ddb.update_item()
        .table_name("orders")
        .set_key(Some(key()))
        .update_expression("ADD qty :n, tags :ss SET a = :v REMOVE b")
        .expression_attribute_values(":n", n(3))
        .expression_attribute_values(":ss", ss(&["p", "q"]))
        .expression_attribute_values(":v", s("y"))
        .send()
        .await
        .expect("UpdateItem ADD/SET/REMOVE");
    ddb.update_item()
        .table_name("orders")
        .set_key(Some(key()))
        .update_expression("DELETE tags :ss")
        .expression_attribute_values(":ss", ss(&["p"]))
        .send()
        .await
        .expect("UpdateItem DELETE");
    ddb.delete_item()
        .table_name("orders")
        .set_key(Some(key()))
        .send()
        .await
        .expect("DeleteItem");
    let after = SystemTime::now();

    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, next) = stream_records(&streams, &it, None).await;
    assert_eq!(
        event_names(&records),
        [
            OperationType::Insert,
            OperationType::Modify,
            OperationType::Modify,
            OperationType::Remove
        ]
    );
    let keys = expect_image(&[("pk", st("a")), ("sk", st("1"))]);
    let base = [("pk", st("a")), ("sk", st("1"))];
    let v0 = expect_image(&[
        base[0].clone(),
        base[1].clone(),
        ("a", st("x")),
        ("b", sn(1)),
    ]);
    let v1 = expect_image(&[
        base[0].clone(),
        base[1].clone(),
        ("a", st("y")),
        ("qty", sn(3)),
        ("tags", sss(&["p", "q"])),
    ]);
    let v2 = expect_image(&[
        base[0].clone(),
        base[1].clone(),
        ("a", st("y")),
        ("qty", sn(3)),
        ("tags", sss(&["q"])),
    ]);
    let expected = [
        (None, Some(&v0)),
        (Some(&v0), Some(&v1)),
        (Some(&v1), Some(&v2)),
        (Some(&v2), None),
    ];
    let start: u128 = "1100000000017454423009".parse().expect("decimal");
    let mut event_ids = BTreeSet::new();
    let mut sub_second = false;
    for (i, (record, (old, new))) in records.iter().zip(expected).enumerate() {
        let d = record.dynamodb().expect("dynamodb field");
        assert_eq!(d.keys().map(image), Some(keys.clone()), "record {i} Keys");
        assert_eq!(
            d.old_image().map(image).as_ref(),
            old,
            "record {i} OldImage"
        );
        assert_eq!(
            d.new_image().map(image).as_ref(),
            new,
            "record {i} NewImage"
        );
        assert_eq!(d.stream_view_type(), Some(&StreamViewType::NewAndOldImages));
        assert!(
            d.size_bytes().is_some_and(|b| b > 0),
            "record {i} SizeBytes"
        );
        // moto: consecutive decimal sequence numbers from the shard's
        // StartingSequenceNumber. Real AWS: increasing, not consecutive;
        // compare them as numbers (they are up to 40 digits), not strings.
        assert_eq!(seq(record), start + i as u128, "record {i} SequenceNumber");
        // eventID: moto sends a fresh 32-hex-digit id (a UUID); so does AWS.
        let id = record.event_id().expect("eventID");
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        event_ids.insert(id.to_owned());
        assert_eq!(record.event_source(), Some("aws:dynamodb"));
        assert_eq!(record.event_version(), Some("1.0"));
        // ApproximateCreationDateTime is epoch *seconds* on the wire; moto
        // sends milliseconds as the fraction (1795318881.216). Real AWS
        // rounds it down to the whole second: never order by it.
        let created = d
            .approximate_creation_date_time()
            .expect("ApproximateCreationDateTime");
        let at = system_time(created);
        assert!(
            at + Duration::from_secs(1) >= before && at <= after + Duration::from_secs(1),
            "record {i} created at {created:?}, writes ran {before:?}..{after:?}"
        );
        // (The SDK parses the decimal through a float: .216 may read as
        // .215999977.)
        let sub_ms = created.subsec_nanos() % 1_000_000;
        assert!(
            !(1_000..=999_000).contains(&sub_ms),
            "millisecond precision: {created:?}"
        );
        sub_second |= created.subsec_nanos() != 0;
    }
    assert_eq!(event_ids.len(), 4, "distinct eventIDs");
    assert!(sub_second, "moto's timestamps carry milliseconds");

    // AFTER_SEQUENCE_NUMBER resumes after a given record; AT_ starts on it.
    let second = records[1]
        .dynamodb()
        .and_then(|d| d.sequence_number())
        .expect("sequence number");
    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::AfterSequenceNumber,
        Some(second),
    )
    .await;
    let (resumed, _) = stream_records(&streams, &it, None).await;
    assert_eq!(
        resumed.iter().map(seq).collect::<Vec<_>>(),
        [start + 2, start + 3]
    );
    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::AtSequenceNumber,
        Some(second),
    )
    .await;
    let (resumed, _) = stream_records(&streams, &it, None).await;
    assert_eq!(
        resumed.iter().map(seq).collect::<Vec<_>>(),
        [start + 1, start + 2, start + 3]
    );

    // Limit bounds a page; NextShardIterator continues it.
    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (page, page_next) = stream_records(&streams, &it, Some(1)).await;
    assert_eq!(page.iter().map(seq).collect::<Vec<_>>(), [start]);
    let (page, _) = stream_records(&streams, &page_next.expect("next iterator"), Some(2)).await;
    assert_eq!(
        page.iter().map(seq).collect::<Vec<_>>(),
        [start + 1, start + 2]
    );

    // At the end of an open shard: no records and a NextShardIterator that
    // later returns the writes made since (moto's iterators never expire;
    // AWS's expire after 15 minutes).
    let next = next.expect("NextShardIterator after the last record");
    let (none, at_end) = stream_records(&streams, &next, None).await;
    assert!(none.is_empty(), "{none:?}");
    let at_end = at_end.expect("NextShardIterator at the end of an open shard");
    ddb.put_item()
        .table_name("orders")
        .item("pk", s("b"))
        .item("sk", s("2"))
        .send()
        .await
        .expect("PutItem");
    let (later, _) = stream_records(&streams, &at_end, None).await;
    assert_eq!(later.iter().map(seq).collect::<Vec<_>>(), [start + 4]);
    assert_eq!(event_names(&later), [OperationType::Insert]);
}

#[tokio::test]
async fn streams_record_writes_that_change_nothing() {
    let (_moto, config) = moto("us-east-1").await;
    let arn = create_table(&config, "carts", "pk", None)
        .await
        .expect("create table");
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    for _ in 0..2 {
        ddb.put_item()
            .table_name("carts")
            .item("pk", s("k"))
            .item("v", n(1))
            .send()
            .await
            .expect("PutItem");
    }
    ddb.update_item()
        .table_name("carts")
        .key("pk", s("k"))
        .update_expression("SET v = :v")
        .expression_attribute_values(":v", n(1))
        .send()
        .await
        .expect("UpdateItem to the same value");

    // moto emits a MODIFY with OldImage == NewImage for each write that
    // changes nothing. Real AWS emits no record for such writes. The sink's
    // own writes therefore may or may not come back through the stream.
    let shard = stream_shard(&streams, &arn).await;
    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, _) = stream_records(&streams, &it, None).await;
    assert_eq!(
        event_names(&records),
        [
            OperationType::Insert,
            OperationType::Modify,
            OperationType::Modify
        ]
    );
    for record in &records[1..] {
        let d = record.dynamodb().expect("dynamodb field");
        assert_eq!(d.old_image().map(image), d.new_image().map(image));
    }
}

#[tokio::test]
async fn conditional_update_on_a_marker_writes_all_or_nothing() {
    let (_moto, config) = moto("us-east-1").await;
    let arn = create_table(&config, "marked", "pk", None)
        .await
        .expect("create table");
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let update = |prev: &str, next: &str, add: i64| {
        ddb.update_item()
            .table_name("marked")
            .key("pk", s("k"))
            .update_expression("SET #m = :t ADD #q :n")
            .condition_expression("attribute_not_exists(#m) OR #m = :prev")
            .expression_attribute_names("#m", "marker")
            .expression_attribute_names("#q", "qty")
            .expression_attribute_values(":t", s(next))
            .expression_attribute_values(":n", n(add))
            .expression_attribute_values(":prev", s(prev))
    };
    let item = |marker: &str, qty: i64| -> HashMap<String, AttributeValue> {
        [
            ("pk".to_owned(), s("k")),
            ("marker".to_owned(), s(marker)),
            ("qty".to_owned(), n(qty)),
        ]
        .into()
    };

    // SET and ADD in one expression create the missing item.
    let created = update("none", "h1", 2)
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .expect("conditional create");
    assert_eq!(created.attributes(), Some(&item("h1", 2)));
    update("h1", "h2", 3)
        .send()
        .await
        .expect("update on the expected marker");

    // A stale marker: ConditionalCheckFailedException, nothing written.
    let err = update("h1", "h3", 7)
        .send()
        .await
        .expect_err("stale marker must fail")
        .into_service_error();
    assert_eq!(err.code(), Some("ConditionalCheckFailedException"));
    match &err {
        UpdateItemError::ConditionalCheckFailedException(e) => {
            assert_eq!(e.message(), Some("The conditional request failed"));
            assert_eq!(
                e.item(),
                None,
                "no item without ReturnValuesOnConditionCheckFailure"
            );
        }
        other => panic!("expected ConditionalCheckFailedException, got {other:?}"),
    }

    // ReturnValuesOnConditionCheckFailure = ALL_OLD: the error carries the
    // item as it is (moto supports it, as AWS does).
    let err = update("h1", "h3", 7)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .expect_err("stale marker must fail")
        .into_service_error();
    match &err {
        UpdateItemError::ConditionalCheckFailedException(e) => {
            assert_eq!(e.item(), Some(&item("h2", 5)));
        }
        other => panic!("expected ConditionalCheckFailedException, got {other:?}"),
    }

    let stored = ddb
        .get_item()
        .table_name("marked")
        .key("pk", s("k"))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    assert_eq!(stored.item(), Some(&item("h2", 5)));

    // Failed conditions leave no stream record. But moto records an
    // UpdateItem that creates its item as two INSERTs: first one whose
    // NewImage is the key alone, then one with the whole item (and no
    // OldImage). AWS records one INSERT with the whole item. A stream
    // reader must take a key-only INSERT as an item with no attributes.
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let shard = stream_shard(&streams, &arn).await;
    let it = stream_iterator(
        &streams,
        &arn,
        &shard,
        StreamIteratorType::TrimHorizon,
        None,
    )
    .await;
    let (records, _) = stream_records(&streams, &it, None).await;
    assert_eq!(
        event_names(&records),
        [
            OperationType::Insert,
            OperationType::Insert,
            OperationType::Modify
        ]
    );
    let images: Vec<_> = records
        .iter()
        .map(|r| {
            let d = r.dynamodb().expect("dynamodb field");
            (d.old_image().map(image), d.new_image().map(image))
        })
        .collect();
    let v1 = expect_image(&[("pk", st("k")), ("marker", st("h1")), ("qty", sn(2))]);
    let v2 = expect_image(&[("pk", st("k")), ("marker", st("h2")), ("qty", sn(5))]);
    assert_eq!(
        images,
        [
            (None, Some(expect_image(&[("pk", st("k"))]))),
            (None, Some(v1.clone())),
            (Some(v1), Some(v2)),
        ]
    );
}

/// All shards of a Kinesis stream, through ListShards pages of `page`.
async fn list_all_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str, page: i32) -> Vec<Shard> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // moto ties a NextToken to the stream name it was issued for and
        // wants that name again with it. Real AWS rejects StreamName
        // together with NextToken (InvalidArgumentException): a paginated
        // ListShards must send NextToken alone there.
        let out = kinesis
            .list_shards()
            .stream_name(stream)
            .set_next_token(token.clone())
            .max_results(page)
            .send()
            .await
            .expect("ListShards");
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(next) => token = Some(next.to_owned()),
            None => return shards,
        }
    }
}

async fn kinesis_iterator(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    kind: ShardIteratorType,
    sequence_number: Option<&str>,
    timestamp: Option<SystemTime>,
) -> String {
    kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(sequence_number.map(str::to_owned))
        .set_timestamp(timestamp.map(DateTime::from))
        .send()
        .await
        .expect("Kinesis GetShardIterator")
        .shard_iterator()
        .expect("shard iterator")
        .to_owned()
}

/// One Kinesis GetRecords: records, NextShardIterator, MillisBehindLatest.
async fn kinesis_records(
    kinesis: &aws_sdk_kinesis::Client,
    iterator: &str,
    limit: Option<i32>,
) -> (Vec<KinesisRecord>, Option<String>, Option<i64>) {
    let out = kinesis
        .get_records()
        .shard_iterator(iterator)
        .set_limit(limit)
        .send()
        .await
        .expect("Kinesis GetRecords");
    assert!(
        out.child_shards().is_empty(),
        "moto never lists ChildShards"
    );
    (
        out.records().to_vec(),
        out.next_shard_iterator().map(str::to_owned),
        out.millis_behind_latest(),
    )
}

fn payloads(records: &[KinesisRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned())
        .collect()
}

fn kinesis_seqs(records: &[KinesisRecord]) -> Vec<&str> {
    records.iter().map(|r| r.sequence_number()).collect()
}

fn latest_arrival(records: &[KinesisRecord]) -> SystemTime {
    records
        .iter()
        .map(|r| {
            system_time(
                r.approximate_arrival_timestamp()
                    .expect("arrival timestamp"),
            )
        })
        .max()
        .expect("at least one record")
}

#[tokio::test]
async fn kinesis_puts_lists_and_reads_from_every_kind_of_iterator() {
    let (_moto, config) = moto("us-east-1").await;
    create_kinesis_stream(&config, "events", 3)
        .await
        .expect("create stream");
    let kinesis = aws_sdk_kinesis::Client::new(&config);

    // ListShards pages by MaxResults with a NextToken.
    let first = kinesis
        .list_shards()
        .stream_name("events")
        .max_results(2)
        .send()
        .await
        .expect("ListShards page 1");
    assert_eq!(first.shards().len(), 2);
    let token = first.next_token().expect("NextToken after a full page");
    // moto: NextToken alone (what AWS requires) is refused.
    let alone = kinesis
        .list_shards()
        .next_token(token)
        .send()
        .await
        .expect_err("moto refuses a NextToken without its stream name")
        .into_service_error();
    assert_eq!(
        aws_sdk_kinesis::error::ProvideErrorMetadata::code(&alone),
        Some("InvalidToken")
    );
    let shards = list_all_shards(&kinesis, "events", 2).await;
    let ids: Vec<&str> = shards.iter().map(Shard::shard_id).collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    // Hash ranges tile 0..2^128-1; an empty shard's StartingSequenceNumber
    // is "0" in moto (AWS: a 56-digit number).
    let mut next_start = 0u128;
    for shard in &shards {
        let range = shard.hash_key_range().expect("hash key range");
        assert_eq!(range.starting_hash_key(), next_start.to_string());
        next_start = range
            .ending_hash_key()
            .parse::<u128>()
            .expect("decimal")
            .wrapping_add(1);
        let seqs = shard.sequence_number_range().expect("sequence range");
        assert_eq!(seqs.starting_sequence_number(), "0");
        assert_eq!(seqs.ending_sequence_number(), None);
        assert_eq!(shard.parent_shard_id(), None);
    }
    assert_eq!(
        next_start, 0,
        "the last range ends at 2^128-1 (wrapped to 0)"
    );

    // ExplicitHashKey picks the shard: shard 1's first hash key.
    let on_shard_1 = shards[1]
        .hash_key_range()
        .expect("hash key range")
        .starting_hash_key()
        .to_owned();
    let on_shard_0 = "0";
    let before = SystemTime::now();
    let put = kinesis
        .put_record()
        .stream_name("events")
        .partition_key("k")
        .explicit_hash_key(&on_shard_1)
        .data(Blob::new("r1"))
        .send()
        .await
        .expect("PutRecord");
    assert_eq!(put.shard_id(), "shardId-000000000001");
    let entries = ["r2", "r3"].map(|d| {
        PutRecordsRequestEntry::builder()
            .partition_key("k")
            .explicit_hash_key(&on_shard_1)
            .data(Blob::new(d))
            .build()
            .expect("entry")
    });
    let puts = kinesis
        .put_records()
        .stream_name("events")
        .set_records(Some(entries.to_vec()))
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(puts.failed_record_count(), Some(0));
    let other = kinesis
        .put_record()
        .stream_name("events")
        .partition_key("k")
        .explicit_hash_key(on_shard_0)
        .data(Blob::new("elsewhere"))
        .send()
        .await
        .expect("PutRecord on shard 0");
    let after = SystemTime::now();
    // moto numbers each shard's records 1, 2, 3...: sequence numbers are
    // per shard, so two shards hold the same ones. AWS's are 56-digit
    // decimals; a position must always be (shard, sequence number), and
    // sequence numbers compared as numbers.
    assert_eq!(put.sequence_number(), "1");
    assert_eq!(
        puts.records()
            .iter()
            .map(|r| (r.shard_id(), r.sequence_number()))
            .collect::<Vec<_>>(),
        [
            (Some("shardId-000000000001"), Some("2")),
            (Some("shardId-000000000001"), Some("3"))
        ]
    );
    assert_eq!(
        (other.shard_id(), other.sequence_number()),
        ("shardId-000000000000", "1")
    );

    let shard = "shardId-000000000001";
    let it = kinesis_iterator(
        &kinesis,
        "events",
        shard,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let (all, next, behind) = kinesis_records(&kinesis, &it, None).await;
    assert_eq!(payloads(&all), ["r1", "r2", "r3"]);
    assert_eq!(kinesis_seqs(&all), ["1", "2", "3"]);
    assert!(all.iter().all(|r| r.partition_key() == Some("k")));
    // ApproximateArrivalTimestamp: epoch seconds with milliseconds, as AWS.
    for r in &all {
        let at = system_time(r.approximate_arrival_timestamp().expect("arrival"));
        assert!(
            at + Duration::from_secs(1) >= before && at <= after + Duration::from_secs(1),
            "arrived {at:?}, puts ran {before:?}..{after:?}"
        );
    }
    // MillisBehindLatest is present: moto computes it as the arrival gap
    // between the newest record of the shard and the last one returned
    // (AWS: how far the response is from the shard's tip, vs. now).
    assert_eq!(behind, Some(0));

    // Limit pages the shard; the next iterator continues.
    let (page, page_next, page_behind) = kinesis_records(&kinesis, &it, Some(1)).await;
    assert_eq!(payloads(&page), ["r1"]);
    assert!(page_behind.is_some_and(|ms| ms >= 0), "{page_behind:?}");
    let (page, _, _) = kinesis_records(&kinesis, &page_next.expect("next"), Some(1)).await;
    assert_eq!(payloads(&page), ["r2"]);

    for (kind, from, expect) in [
        (
            ShardIteratorType::AfterSequenceNumber,
            "1",
            &["r2", "r3"][..],
        ),
        (ShardIteratorType::AtSequenceNumber, "2", &["r2", "r3"][..]),
    ] {
        let it = kinesis_iterator(&kinesis, "events", shard, kind.clone(), Some(from), None).await;
        let (records, _, _) = kinesis_records(&kinesis, &it, None).await;
        assert_eq!(payloads(&records), expect, "{kind:?} {from}");
    }

    // At the end of an open shard: no records, an iterator that keeps
    // polling, and MillisBehindLatest 0.
    let (none, at_end, behind) = kinesis_records(&kinesis, &next.expect("next"), None).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(behind, Some(0));
    let at_end = at_end.expect("NextShardIterator on an open shard");

    // AT_TIMESTAMP starts at the first record that arrived at or after it.
    clock_past(latest_arrival(&all), Duration::from_millis(2)).await;
    let middle = SystemTime::now();
    kinesis
        .put_record()
        .stream_name("events")
        .partition_key("k")
        .explicit_hash_key(&on_shard_1)
        .data(Blob::new("r4"))
        .send()
        .await
        .expect("PutRecord");
    for (at, expect) in [
        (
            before - Duration::from_secs(1),
            &["r1", "r2", "r3", "r4"][..],
        ),
        (middle, &["r4"][..]),
        (SystemTime::now() + Duration::from_secs(60), &[][..]),
    ] {
        let it = kinesis_iterator(
            &kinesis,
            "events",
            shard,
            ShardIteratorType::AtTimestamp,
            None,
            Some(at),
        )
        .await;
        let (records, _, _) = kinesis_records(&kinesis, &it, None).await;
        assert_eq!(payloads(&records), expect, "AT_TIMESTAMP {at:?}");
    }
    let (tail, _, _) = kinesis_records(&kinesis, &at_end, None).await;
    assert_eq!(payloads(&tail), ["r4"], "the end iterator sees later puts");
}

#[tokio::test]
async fn kinesis_split_shard_closes_the_parent_but_moto_keeps_writing_to_it() {
    let (_moto, config) = moto("us-east-1").await;
    create_kinesis_stream(&config, "split", 1)
        .await
        .expect("create stream");
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let parent = "shardId-000000000000";
    for d in ["r1", "r2", "r3"] {
        kinesis
            .put_record()
            .stream_name("split")
            .partition_key(d)
            .data(Blob::new(d))
            .send()
            .await
            .expect("PutRecord");
    }
    let it = kinesis_iterator(
        &kinesis,
        "split",
        parent,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let (before_split, _, _) = kinesis_records(&kinesis, &it, None).await;
    assert_eq!(payloads(&before_split), ["r1", "r2", "r3"]);

    clock_past(latest_arrival(&before_split), Duration::from_millis(2)).await;
    let split_at = SystemTime::now();
    let middle = 1u128 << 127;
    kinesis
        .split_shard()
        .stream_name("split")
        .shard_to_split(parent)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .expect("SplitShard");
    // moto reshards at once: the stream stays ACTIVE (AWS: UPDATING for a
    // while; further reshards are refused until ACTIVE again).
    let summary = kinesis
        .describe_stream_summary()
        .stream_name("split")
        .send()
        .await
        .expect("DescribeStreamSummary");
    assert_eq!(
        summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone()),
        Some(KinesisStreamStatus::Active)
    );

    let shards = list_all_shards(&kinesis, "split", 100).await;
    let ids: Vec<&str> = shards.iter().map(Shard::shard_id).collect();
    assert_eq!(
        ids,
        [parent, "shardId-000000000001", "shardId-000000000002"]
    );
    let ending = |shard: &Shard| {
        shard
            .sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .map(str::to_owned)
    };
    // The parent is closed: EndingSequenceNumber is its last record.
    assert_eq!(ending(&shards[0]), Some("3".to_owned()));
    // The children name it and split its hash range at the new key.
    let max = u128::MAX.to_string();
    let expected_ranges = [
        ("0".to_owned(), (middle - 1).to_string()),
        (middle.to_string(), max),
    ];
    for (child, range) in shards[1..].iter().zip(expected_ranges) {
        assert_eq!(child.parent_shard_id(), Some(parent));
        assert_eq!(child.adjacent_parent_shard_id(), None);
        let hash = child.hash_key_range().expect("hash key range");
        assert_eq!(
            (
                hash.starting_hash_key().to_owned(),
                hash.ending_hash_key().to_owned()
            ),
            range
        );
        assert_eq!(ending(child), None);
    }

    // moto routes a put to the first shard whose range holds the key, the
    // closed parent included, so records after a split still land in the
    // parent and its EndingSequenceNumber moves with them. AWS writes them
    // to the open child (here shardId-000000000002). Tests on moto cannot
    // show records crossing from parent to child.
    let late = kinesis
        .put_record()
        .stream_name("split")
        .partition_key("late")
        .explicit_hash_key((middle + 1).to_string())
        .data(Blob::new("late"))
        .send()
        .await
        .expect("PutRecord after the split");
    assert_eq!((late.shard_id(), late.sequence_number()), (parent, "4"));
    let shards = list_all_shards(&kinesis, "split", 100).await;
    assert_eq!(ending(&shards[0]), Some("4".to_owned()));
    for child in &shards[1..] {
        let it = kinesis_iterator(
            &kinesis,
            "split",
            child.shard_id(),
            ShardIteratorType::TrimHorizon,
            None,
            None,
        )
        .await;
        let (records, next, _) = kinesis_records(&kinesis, &it, None).await;
        assert!(records.is_empty(), "{}: {records:?}", child.shard_id());
        assert!(next.is_some());
    }

    // moto re-puts the parent's records while splitting: same payloads and
    // (here) sequence numbers, but arrival timestamps of the split.
    let it = kinesis_iterator(
        &kinesis,
        "split",
        parent,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let (records, next, _) = kinesis_records(&kinesis, &it, None).await;
    assert_eq!(payloads(&records), ["r1", "r2", "r3", "late"]);
    assert_eq!(kinesis_seqs(&records), ["1", "2", "3", "4"]);
    for r in &records {
        let at = system_time(r.approximate_arrival_timestamp().expect("arrival"));
        assert!(
            at + Duration::from_millis(1) >= split_at,
            "{:?} arrived {at:?}, before the split at {split_at:?}",
            payloads(std::slice::from_ref(r))
        );
    }
    // Read to its end, the closed parent still hands out a
    // NextShardIterator (AWS: None, which is how a reader knows to move
    // on to the children).
    let (none, end, _) = kinesis_records(&kinesis, &next.expect("next"), None).await;
    assert!(none.is_empty(), "{none:?}");
    assert!(end.is_some(), "moto never ends a closed shard");

    // A closed shard cannot be split again.
    let again = kinesis
        .split_shard()
        .stream_name("split")
        .shard_to_split(parent)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .expect_err("splitting a closed shard")
        .into_service_error();
    assert!(again.is_invalid_argument_exception(), "{again:?}");
}

#[tokio::test]
async fn scan_pages_with_limit_and_last_evaluated_key() {
    let (_moto, config) = moto("us-east-1").await;
    create_table(&config, "pages", "pk", Some("sk"))
        .await
        .expect("create table");
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let mut written = BTreeSet::new();
    for i in 0..5 {
        let pk = format!("p{i}");
        ddb.put_item()
            .table_name("pages")
            .item("pk", s(&pk))
            .item("sk", s("s"))
            .item("body", s("x"))
            .send()
            .await
            .expect("PutItem");
        written.insert(pk);
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = ddb
            .scan()
            .table_name("pages")
            .limit(2)
            .set_exclusive_start_key(start.clone())
            .send()
            .await
            .expect("Scan");
        sizes.push(page.count());
        assert_eq!(page.scanned_count(), page.count());
        for item in page.items() {
            seen.push(match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.clone(),
                other => panic!("pk {other:?}"),
            });
        }
        match page.last_evaluated_key() {
            Some(key) => {
                // LastEvaluatedKey is the last item's full primary key.
                let last = page.items().last().expect("a page with a key has items");
                let expected: HashMap<String, AttributeValue> = ["pk", "sk"]
                    .iter()
                    .map(|k| ((*k).to_owned(), last[*k].clone()))
                    .collect();
                assert_eq!(key, &expected);
                start = Some(key.clone());
            }
            None => break,
        }
        assert!(sizes.len() <= 5, "scan does not end: pages {sizes:?}");
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen.len(), 5, "no item twice: {seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), written);

    // moto omits LastEvaluatedKey when a page ends exactly at the table's
    // end. AWS returns one whenever Limit was reached, so the last page can
    // be empty: loop until LastEvaluatedKey is absent, never on page size.
    let exact = ddb
        .scan()
        .table_name("pages")
        .limit(5)
        .send()
        .await
        .expect("Scan");
    assert_eq!(exact.count(), 5);
    assert_eq!(exact.last_evaluated_key(), None);
}
