//! What a real moto server (the version `scripts/setup.sh` pins) does with
//! exactly the calls the DynamoDB sidecar makes: region isolation,
//! DynamoDB Streams, conditional updates and paginated scans (Kinesis:
//! `moto_kinesis.rs`). Every test asserts moto's actual behaviour; where
//! it differs from real AWS, a comment says how, so the sidecar is written
//! for AWS and its tests know what the emulator cannot show.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, OperationType, Record as StreamRecord,
    ShardIteratorType as StreamIteratorType, StreamStatus, StreamViewType,
};
use tributary_tests::moto::{Moto, create_kinesis_stream, create_table, system_time};

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
