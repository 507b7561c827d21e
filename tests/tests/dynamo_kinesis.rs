//! The Kinesis source against a real moto server: poison records become
//! dead letters and the stream goes on; `replctl dlq retry` applies one
//! after the schema is fixed; redelivered records count once; a shard split
//! mid-run loses and duplicates nothing.
//!
//! moto does not implement DynamoDB's Kinesis streaming destination, so the
//! test plays it: it puts on the stream the same JSON change records the
//! real service would (eventID, eventName, tableName, dynamodb.Keys /
//! NewImage / OldImage, ApproximateCreationDateTime in milliseconds).

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use serde_json::{Value, json};
use tributary_replicator::dynamo::convert::from_sdk;
use tributary_tests::cluster::{Cluster, DEADLINE, Node, wait_for};
use tributary_tests::moto::{Moto, create_kinesis_stream, create_table};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// `scores`: `qty` a counter, and `score` — by an operator's mistake — one
/// too, until the fix.
fn tables(score_is_counter: bool) -> String {
    let counters = if score_is_counter {
        r#"["qty", "score"]"#
    } else {
        r#"["qty"]"#
    };
    format!(
        "[[tables]]\nname = \"scores\"\npartition_key = \"pk\"\nsort_key = \"sk\"\ncounters = {counters}\n"
    )
}

/// Node 0 reads the Kinesis stream (no table in us-east-1 here, so no
/// initial load); node 1 follows its table's DynamoDB
/// stream (a sink learns what its table holds from the table's stream)
/// and writes the table.
fn config(endpoint: &str, i: usize, score_is_counter: bool) -> String {
    let connector = if i == 0 {
        format!(
            "[[sources]]\nkind = \"kinesis\"\nstream = \"scores-changes\"\ntable = \"scores\"\n\
             aws_region = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\npoll_interval = \"50ms\"\n\
             initial_load = \"none\"\n"
        )
    } else {
        format!(
            "[[sources]]\nkind = \"dynamodb-streams\"\ntable = \"scores\"\naws_region = \"eu-west-1\"\n\
             endpoint_url = \"{endpoint}\"\npoll_interval = \"50ms\"\n\
             [[sinks]]\nkind = \"dynamodb\"\ntable = \"scores\"\naws_region = \"eu-west-1\"\n\
             endpoint_url = \"{endpoint}\"\nretry_backoff_initial = \"20ms\"\n"
        )
    };
    format!("{}{connector}", tables(score_is_counter))
}

struct World {
    rt: tokio::runtime::Runtime,
    kinesis: aws_sdk_kinesis::Client,
    table: aws_sdk_dynamodb::Client,
    cluster: Cluster,
    _moto: Moto,
}

fn start() -> World {
    let moto = Moto::start().expect("moto server");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let east = rt.block_on(moto.sdk_config("us-east-1"));
    let west = rt.block_on(moto.sdk_config("eu-west-1"));
    rt.block_on(create_kinesis_stream(&east, "scores-changes", 1))
        .expect("create stream");
    rt.block_on(create_table(&west, "scores", "pk", Some("sk")))
        .expect("create table");
    let endpoint = moto.endpoint();
    let cluster = Cluster::start_each(
        &REGIONS,
        &[(0, 1)],
        |i| config(&endpoint, i, true),
        |_, _, p| p,
    );
    World {
        kinesis: aws_sdk_kinesis::Client::new(&east),
        table: aws_sdk_dynamodb::Client::new(&west),
        rt,
        cluster,
        _moto: moto,
    }
}

/// A change record as DynamoDB's Kinesis destination writes it.
fn record(id: &str, event: &str, pk: &str, old: Option<Value>, new: Option<Value>) -> Vec<u8> {
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": 1_795_000_000_000u64,
        "Keys": {"pk": {"S": pk}, "sk": {"S": "s"}},
        "SizeBytes": 40,
    });
    let image = |attrs: Value| {
        let mut m = attrs.as_object().cloned().unwrap_or_default();
        m.insert("pk".into(), json!({"S": pk}));
        m.insert("sk".into(), json!({"S": "s"}));
        Value::Object(m)
    };
    if let Some(old) = old {
        dynamodb["OldImage"] = image(old);
    }
    if let Some(new) = new {
        dynamodb["NewImage"] = image(new);
    }
    serde_json::to_vec(&json!({
        "awsRegion": "us-east-1",
        "eventID": id,
        "eventName": event,
        "tableName": "scores",
        "recordFormat": "application/json",
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
    }))
    .expect("json")
}

impl World {
    fn put(&self, bytes: Vec<u8>) {
        self.rt
            .block_on(
                self.kinesis
                    .put_record()
                    .stream_name("scores-changes")
                    .partition_key("scores")
                    .data(Blob::new(bytes))
                    .send(),
            )
            .expect("PutRecord");
    }

    /// eu-west-1's item `pk` as plain JSON (marker and key removed).
    fn item(&self, pk: &str) -> Option<Value> {
        let out = self
            .rt
            .block_on(
                self.table
                    .get_item()
                    .table_name("scores")
                    .key("pk", AttributeValue::S(pk.to_owned()))
                    .key("sk", AttributeValue::S("s".to_owned()))
                    .consistent_read(true)
                    .send(),
            )
            .expect("GetItem");
        out.item().map(|item| {
            Value::Object(
                item.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "pk" | "sk" | "tributary_sink"))
                    .map(|(k, v)| (k.clone(), from_sdk(v).expect("value").to_plain_json()))
                    .collect(),
            )
        })
    }

    fn wait_item(&self, what: &str, pk: &str, expected: &Value) {
        wait_for(what, DEADLINE, || {
            let item = self.item(pk);
            if item.as_ref() == Some(expected) {
                Ok(Some(()))
            } else {
                Err(format!("{item:?}"))
            }
        });
    }

    fn source(&self) -> &Node {
        &self.cluster.nodes[0]
    }
}

fn letters(node: &Node) -> Vec<Value> {
    let out = node.ctl(&["dlq", "list", "--json"], "");
    assert_eq!(out.code, Some(0), "{out:?}");
    out.json_lines()
}

#[test]
fn poison_records_are_dead_letters_the_stream_goes_on_and_retry_applies_them() {
    let mut world = start();

    // A counter that is not a number (the schema's mistake), then bytes
    // that are not JSON, then good records, one of them delivered twice.
    world.put(record(
        "e1",
        "INSERT",
        "p1",
        None,
        Some(json!({"score": {"S": "high"}})),
    ));
    world.put(b"{not json".to_vec());
    world.put(record(
        "e3",
        "INSERT",
        "p2",
        None,
        Some(json!({"v": {"N": "1"}})),
    ));
    let increment = record(
        "e4",
        "MODIFY",
        "p3",
        Some(json!({"qty": {"N": "1"}})),
        Some(json!({"qty": {"N": "6"}})),
    );
    world.put(increment.clone());
    world.put(increment);

    world.wait_item(
        "the good record to replicate past the poison",
        "p2",
        &json!({"v": 1}),
    );
    world.wait_item(
        "the redelivered increment to count once",
        "p3",
        &json!({"qty": 5}),
    );
    let dead = letters(world.source());
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("score")),
        "{dead:?}"
    );
    assert_eq!(
        dead[0]["source"],
        json!("kinesis:scores-changes/shardId-000000000000")
    );
    assert!(
        dead[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not JSON")),
        "{dead:?}"
    );
    assert_eq!(dead[1]["raw"], json!("{not json"));
    // The redelivered record may be read after the item already counts
    // the first delivery: wait for the source to report it skipped.
    wait_for(
        "the source to count the redelivery as a duplicate",
        DEADLINE,
        || {
            let status = world.source().ctl(&["status", "--json"], "").json();
            let source = &status["sources"]["kinesis:scores-changes"];
            if (source["dead_letters"].clone(), source["duplicates"].clone())
                == (json!(2), json!(1))
            {
                Ok(Some(()))
            } else {
                Err(source.to_string())
            }
        },
    );
    assert!(
        world
            .source()
            .metrics()
            .contains("tributary_dead_letters_total{source=\"kinesis:scores-changes\"} 2"),
        "the dead letters are counted on /metrics"
    );

    // A retry before the fix still fails and keeps the letter.
    let first = dead[0]["id"].as_u64().expect("id").to_string();
    let again = world.source().ctl(&["dlq", "retry", &first], "");
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stdout.contains("still fails"), "{again:?}");

    // The operator fixes the schema on both nodes and restarts them.
    for i in 0..2 {
        let node = &mut world.cluster.nodes[i];
        assert_eq!(node.terminate(), Some(0), "{}", node.log_tail());
        std::fs::write(&node.config, {
            let text = std::fs::read_to_string(&node.config).expect("read config");
            text.replace(&tables(true), &tables(false))
        })
        .expect("write config");
        node.launch();
    }
    let retried = world.source().ctl(&["dlq", "retry", &first, "--json"], "");
    assert_eq!(retried.code, Some(0), "{retried:?}");
    world.wait_item(
        "the retried record to replicate",
        "p1",
        &json!({"score": "high"}),
    );
    let twice = world.source().ctl(&["dlq", "retry", &first], "");
    assert_eq!(
        twice.code,
        Some(1),
        "the letter is gone once applied: {twice:?}"
    );

    let second = dead[1]["id"].as_u64().expect("id").to_string();
    let still = world.source().ctl(&["dlq", "retry", &second], "");
    assert_eq!(
        still.code,
        Some(1),
        "bytes that are not JSON never apply: {still:?}"
    );
    let dropped = world.source().ctl(&["dlq", "drop", &second], "");
    assert_eq!(dropped.code, Some(0), "{dropped:?}");
    assert!(letters(world.source()).is_empty(), "every letter handled");
}

#[test]
fn a_shard_split_mid_run_loses_and_duplicates_nothing() {
    let world = start();
    for n in 0..20u32 {
        if n == 10 {
            let shards = world
                .rt
                .block_on(
                    world
                        .kinesis
                        .list_shards()
                        .stream_name("scores-changes")
                        .send(),
                )
                .expect("ListShards");
            let parent = shards.shards()[0].shard_id().to_owned();
            world
                .rt
                .block_on(
                    world
                        .kinesis
                        .split_shard()
                        .stream_name("scores-changes")
                        .shard_to_split(parent)
                        .new_starting_hash_key((1u128 << 127).to_string())
                        .send(),
                )
                .expect("SplitShard");
        }
        world.put(record(
            &format!("split-{n}"),
            "MODIFY",
            "split",
            Some(json!({"qty": {"N": n.to_string()}})),
            Some(json!({"qty": {"N": (n + 1).to_string()}})),
        ));
    }
    world.wait_item(
        "every increment across the split, once",
        "split",
        &json!({"qty": 20}),
    );
    world.cluster.wait_converged("the regions to converge");
    assert!(letters(world.source()).is_empty());
}
