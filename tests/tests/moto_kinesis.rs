//! What a real moto server (the version `scripts/setup.sh` pins) does with
//! the Kinesis calls the sidecar's Kinesis source makes: puts, ListShards
//! pages, every kind of shard iterator, GetRecords, and SplitShard. Every
//! test asserts moto's actual behaviour; where it differs from real AWS, a
//! comment says how.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, Record as KinesisRecord, Shard, ShardIteratorType,
    StreamStatus as KinesisStreamStatus,
};
use tributary_tests::moto::{Moto, clock_past, create_kinesis_stream, system_time};

/// A moto server and an SDK configuration for `region` on it.
async fn moto(region: &str) -> (Moto, SdkConfig) {
    let moto = Moto::start().expect("start moto (run scripts/setup.sh first)");
    let config = moto.sdk_config(region).await;
    (moto, config)
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
