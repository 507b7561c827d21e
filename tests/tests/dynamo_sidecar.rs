//! The DynamoDB sidecar end to end, against a real moto server: two
//! regions, each a table with a stream and a node with a source and a
//! sink; the application writes through the AWS SDK.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tributary_replicator::dynamo::convert::from_sdk;
use tributary_tests::cluster::{
    Cluster, DEADLINE, Node, assert_each_origin_advanced_once, wait_for,
};
use tributary_tests::moto::{Moto, create_table};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const MARKER: &str = "tributary_sink";

/// The sidecar's config for node `i`: the table's stream as source, the
/// table as sink, both in the node's own region.
fn sidecar(endpoint: &str, i: usize, poll: &str) -> String {
    let region = REGIONS[i];
    format!(
        r#"
[[sources]]
kind = "dynamodb-streams"
table = "carts"
aws_region = "{region}"
endpoint_url = "{endpoint}"
poll_interval = "{poll}"
[[sinks]]
kind = "dynamodb"
table = "carts"
aws_region = "{region}"
endpoint_url = "{endpoint}"
retry_backoff_initial = "20ms"
retry_backoff_max = "500ms"
"#
    )
}

struct World {
    rt: tokio::runtime::Runtime,
    clients: Vec<Client>,
    cluster: Cluster,
    // Dropped last: the nodes stop before the server.
    _moto: Moto,
}

fn start() -> World {
    start_polling(["50ms", "50ms"])
}

/// [`start`], with each node's source polling at its own interval.
fn start_polling(polls: [&str; 2]) -> World {
    let world = launch(|i, endpoint| sidecar(endpoint, i, polls[i]), |_| {});
    // The tests' writes go through the streams, not the initial load
    // (which `an_initial_load_takes_a_prepopulated_table_without_counting_its_stream_twice`
    // tests with writes racing the scan).
    for node in world.nodes() {
        wait_for("the initial load to finish", DEADLINE, || {
            let s = node.status();
            let load = &s["sources"]["dynamodb-streams:carts"]["initial_load"];
            if load.as_str().is_some_and(|l| l.starts_with("done")) {
                Ok(Some(()))
            } else {
                Err(s["sources"].to_string())
            }
        });
    }
    world
}

/// Starts moto, the tables, `prepare` (given the runtime and a client per
/// region), then the nodes with `config(i, endpoint)`.
fn launch(config: impl Fn(usize, &str) -> String, prepare: impl FnOnce(&World0)) -> World {
    let moto = Moto::start().expect("moto server");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut clients = Vec::new();
    for region in REGIONS {
        let config = rt.block_on(moto.sdk_config(region));
        rt.block_on(create_table(&config, "carts", "pk", Some("sk")))
            .expect("create table");
        clients.push(Client::new(&config));
    }
    let before = World0 { rt, clients };
    prepare(&before);
    let endpoint = moto.endpoint();
    let cluster = Cluster::start_each(&REGIONS, &[(0, 1)], |i| config(i, &endpoint), |_, _, p| p);
    World {
        rt: before.rt,
        clients: before.clients,
        cluster,
        _moto: moto,
    }
}

/// The tables before the nodes start.
struct World0 {
    rt: tokio::runtime::Runtime,
    clients: Vec<Client>,
}

fn key(pk: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S("cart".to_owned())),
    ]
}

impl World {
    /// `UpdateItem` with `expr` and `values` (`:a`, `:b`, …) in region `i`.
    fn update(&self, i: usize, pk: &str, expr: &str, values: &[(&str, AttributeValue)]) {
        let mut req = self.clients[i]
            .update_item()
            .table_name("carts")
            .update_expression(expr);
        for (k, v) in key(pk) {
            req = req.key(k, v);
        }
        for (name, value) in values {
            req = req.expression_attribute_values(*name, value.clone());
        }
        self.rt
            .block_on(req.send())
            .unwrap_or_else(|e| panic!("UpdateItem {expr} in {}: {e:?}", REGIONS[i]));
    }

    /// `PutItem` of `pk` with attribute `v` in region `i`.
    fn put(&self, i: usize, pk: &str, v: i64) {
        let mut req = self.clients[i]
            .put_item()
            .table_name("carts")
            .item("v", n(v));
        for (k, value) in key(pk) {
            req = req.item(k, value);
        }
        self.rt
            .block_on(req.send())
            .unwrap_or_else(|e| panic!("PutItem in {}: {e:?}", REGIONS[i]));
    }

    fn delete(&self, i: usize, pk: &str) {
        let mut req = self.clients[i].delete_item().table_name("carts");
        for (k, v) in key(pk) {
            req = req.key(k, v);
        }
        self.rt
            .block_on(req.send())
            .unwrap_or_else(|e| panic!("DeleteItem in {}: {e:?}", REGIONS[i]));
    }

    /// Region `i`'s table: pk → attributes as plain JSON, without the key
    /// attributes and the sink's marker.
    fn table(&self, i: usize) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .rt
                .block_on(
                    self.clients[i]
                        .scan()
                        .table_name("carts")
                        .set_exclusive_start_key(start.take())
                        .send(),
                )
                .expect("scan");
            for item in page.items() {
                let pk = match item.get("pk") {
                    Some(AttributeValue::S(s)) => s.clone(),
                    other => panic!("item without a string pk: {other:?}"),
                };
                let attrs: serde_json::Map<String, Value> = item
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "pk" | "sk" | MARKER))
                    .map(|(k, v)| {
                        let v = from_sdk(v).expect("attribute value");
                        (k.clone(), v.to_plain_json())
                    })
                    .collect();
                out.insert(pk, Value::Object(attrs));
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        out
    }

    /// Waits until both tables hold `expected` for `pk` (`None`: no item).
    fn wait_tables(&self, what: &str, pk: &str, expected: Option<&Value>) {
        wait_for(what, DEADLINE, || {
            let tables: Vec<Option<Value>> = (0..2).map(|i| self.table(i).remove(pk)).collect();
            if tables.iter().all(|t| t.as_ref() == expected) {
                Ok(Some(()))
            } else {
                let sources: Vec<String> = self
                    .nodes()
                    .iter()
                    .map(|n| {
                        let s = n.status();
                        let key = format!(r#"{{"pk":"{pk}","sk":"cart"}}"#);
                        format!(
                            "{}: log {} sources {}",
                            n.region,
                            n.get("carts", &key)["attributes"],
                            s["sources"]
                        )
                    })
                    .collect();
                Err(format!("tables: {tables:?}; {sources:?}"))
            }
        });
    }

    fn nodes(&self) -> &[Node] {
        &self.cluster.nodes
    }
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|s| (*s).to_owned()).collect())
}

#[test]
fn concurrent_writes_in_two_regions_merge_in_both_tables_without_echo() {
    let world = start();
    let (a, b) = (&world.nodes()[0], &world.nodes()[1]);

    // An item both regions know, with tag "a", before the race.
    world.update(
        0,
        "u1",
        "SET color = :a ADD tags :b",
        &[
            (":a", AttributeValue::S("grey".into())),
            (":b", ss(&["a", "b"])),
        ],
    );
    world.update(0, "u2", "SET x = :a", &[(":a", n(1))]);
    world.wait_tables("u2 to reach both tables", "u2", Some(&json!({"x": 1})));
    world.wait_tables(
        "u1 to reach both tables",
        "u1",
        Some(&json!({"color": "grey", "tags": ["a", "b"]})),
    );

    // The race: with shipping paused both ways, each region writes the same
    // items through the AWS SDK, then shipping resumes.
    world.cluster.set_links("pause");
    world.update(
        0,
        "u1",
        "SET color = :a ADD qty :b, tags :c",
        &[
            (":a", AttributeValue::S("red".into())),
            (":b", n(2)),
            (":c", ss(&["d"])),
        ],
    );
    world.update(0, "u1", "ADD qty :a", &[(":a", n(3))]);
    world.update(
        1,
        "u1",
        "SET fit = :a ADD qty :b DELETE tags :c",
        &[
            (":a", AttributeValue::S("L".into())),
            (":b", n(5)),
            (":c", ss(&["a"])),
        ],
    );
    world.delete(0, "u2");
    world.update(1, "u2", "SET y = :a", &[(":a", n(2))]);
    // Each node has ingested its own region's writes before the links
    // resume (so the writes are concurrent in the log, not just in time).
    a.wait_item(
        "carts",
        &item_key("u1"),
        "us-east-1 to ingest its writes",
        |i| i["attributes"]["qty"] == json!(5),
    );
    a.wait_item(
        "carts",
        &item_key("u2"),
        "us-east-1 to ingest its delete",
        |i| i["exists"] == json!(false),
    );
    b.wait_item(
        "carts",
        &item_key("u1"),
        "eu-west-1 to ingest its writes",
        |i| i["attributes"]["qty"] == json!(5) && i["attributes"]["fit"] == json!("L"),
    );
    b.wait_item(
        "carts",
        &item_key("u2"),
        "eu-west-1 to ingest its update",
        |i| i["attributes"]["y"] == json!(2),
    );
    world.cluster.set_links("resume");

    // Both attributes, the exact counter sum, the set with the concurrent
    // add and the observed remove; the update that raced the delete
    // survives it, without the attribute the delete observed.
    let (items, digest) = world.cluster.wait_converged("the nodes to converge");
    world.wait_tables(
        "the merged u1 in both tables",
        "u1",
        Some(&json!({"color": "red", "fit": "L", "qty": 10, "tags": ["b", "d"]})),
    );
    world.wait_tables("the merged u2 in both tables", "u2", Some(&json!({"y": 2})));
    assert!(items >= 2, "digest over {items} items: {digest}");

    // No echo loop: once both regions have written a barrier item and seen
    // the other's, each origin's log advanced by exactly its barrier write;
    // a sink write taken back in as a local change would add entries.
    let before = a.status()["applied"].clone();
    // (PutItem: moto emits two INSERT records for an UpdateItem that
    // creates an item, AWS one.)
    world.put(0, "barrier-a", 1);
    world.put(1, "barrier-b", 1);
    world.wait_tables(
        "barrier-a in both tables",
        "barrier-a",
        Some(&json!({"v": 1})),
    );
    world.wait_tables(
        "barrier-b in both tables",
        "barrier-b",
        Some(&json!({"v": 1})),
    );
    world
        .cluster
        .wait_converged("the nodes to converge after the barrier");
    for node in world.nodes() {
        node.wait_sink_idle("sink:dynamodb:carts");
    }
    let after = a.status()["applied"].clone();
    assert_each_origin_advanced_once(&REGIONS, &before, &after);
    for node in world.nodes() {
        let s = node.status();
        let source = &s["sources"]["dynamodb-streams:carts"];
        assert!(
            source["echoes"].as_u64() > Some(0),
            "{}: the source saw the sink's writes as echoes: {source}",
            node.region
        );
        assert_eq!(
            source["dead_letters"],
            json!(0),
            "{}: {source}",
            node.region
        );
    }
}

/// The sink's landed writes, from `/metrics` (0 before the first).
fn sink_written(node: &Node) -> u64 {
    let needle = "tributary_sink_writes_total{outcome=\"written\",sink=\"sink:dynamodb:carts\"} ";
    node.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_sink_killed_between_its_write_and_seeing_it_never_counts_twice() {
    // eu-west-1's source polls slowly: after each of its sink's writes
    // there is a wide window before the write comes back on the stream.
    let mut world = start_polling(["50ms", "1500ms"]);
    let mut kills = 0;
    for i in 0..30 {
        world.update(0, "hot", "ADD qty :a", &[(":a", n(1))]);
        if kills < 3 && i % 5 == 4 {
            // Wait for the sink to land a write, then kill -9 at once:
            // the write is in the table, its stream record not yet read.
            let node = &world.nodes()[1];
            let end = std::time::Instant::now() + DEADLINE;
            while sink_written(node) == 0 && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if sink_written(node) == 0 {
                // No write to catch this round (the entries may still be
                // on their way): try again at the next round.
                eprintln!(
                    "no sink write after increment {i}; status {}",
                    node.status()
                );
                continue;
            }
            world.cluster.kill9(1);
            world.cluster.launch(1);
            kills += 1;
        }
    }
    assert!(kills >= 1, "no sink write was ever caught");
    world
        .cluster
        .wait_converged("the regions to converge after the crashes");
    world.wait_tables(
        "both tables to count every increment exactly once",
        "hot",
        Some(&json!({"qty": 30})),
    );
}

#[test]
fn an_initial_load_takes_a_prepopulated_table_without_counting_its_stream_twice() {
    const ITEMS: usize = 600;
    let world = launch(
        |i, endpoint| {
            sidecar(endpoint, i, "50ms").replace(
                "poll_interval = \"50ms\"",
                "poll_interval = \"50ms\"\ninitial_load = \"items\"",
            )
        },
        |w| {
            // us-east-1's table holds data before Tributary starts; its
            // stream holds the writes that made it.
            for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(25) {
                let mut req = w.clients[0].batch_write_item();
                let puts = chunk
                    .iter()
                    .map(|i| {
                        let mut put = aws_sdk_dynamodb::types::PutRequest::builder()
                            .item("qty", n(*i as i64))
                            .item("name", AttributeValue::S(format!("n{i}")));
                        for (k, v) in key(&format!("item-{i}")) {
                            put = put.item(k, v);
                        }
                        aws_sdk_dynamodb::types::WriteRequest::builder()
                            .put_request(put.build().expect("put"))
                            .build()
                    })
                    .collect();
                req = req.request_items("carts", puts);
                w.rt.block_on(req.send()).expect("BatchWriteItem");
            }
        },
    );
    // The application goes on writing while the load runs.
    for i in 0..30 {
        world.update(0, &format!("item-{i}"), "ADD qty :a", &[(":a", n(1000))]);
    }
    for i in 0..10 {
        world.put(0, &format!("late-{i}"), 7);
        world.delete(0, &format!("item-{}", ITEMS - 1 - i));
    }
    // Items created by UpdateItem while the scan may be running (moto
    // records such a create as two INSERTs: the key, then the item).
    for round in 0..3 {
        for i in 0..10 {
            world.update(
                0,
                &format!("new-{i}"),
                "SET colour = :a ADD qty :b",
                &[(":a", AttributeValue::S(format!("c{round}"))), (":b", n(1))],
            );
        }
    }
    wait_for("eu-west-1's table to equal us-east-1's", DEADLINE, || {
        let (east, west) = (world.table(0), world.table(1));
        if east.len() == ITEMS + 10 && east == west {
            Ok(Some(east))
        } else {
            Err(format!("{} items east, {} west", east.len(), west.len()))
        }
    });
    let east = world.table(0);
    assert_eq!(east["item-5"], json!({"qty": 1005, "name": "n5"}));
    assert_eq!(east["item-100"], json!({"qty": 100, "name": "n100"}));
    assert_eq!(east["late-3"], json!({"v": 7}));
    assert!(!east.contains_key(&format!("item-{}", ITEMS - 1)));
    for i in 0..10 {
        assert_eq!(
            east[&format!("new-{i}")],
            json!({"qty": 3, "colour": "c2"}),
            "new-{i}"
        );
    }
    world.cluster.wait_converged("the nodes to converge");
    let status = world.nodes()[0].status();
    let source = &status["sources"]["dynamodb-streams:carts"];
    // The scan saw the prepopulated items and perhaps some written during it.
    let loaded: usize = source["initial_load"]
        .as_str()
        .and_then(|l| l.strip_prefix("done ("))
        .and_then(|l| l.strip_suffix(" items)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("initial load not done: {source}"));
    assert!((ITEMS..=ITEMS + 20).contains(&loaded), "{source}");
    assert!(
        source["duplicates"].as_u64() >= Some(ITEMS as u64),
        "the stream's records from before the scan were skipped: {source}"
    );
}

/// The admin API's JSON key of item `pk`.
fn item_key(pk: &str) -> String {
    format!(r#"{{"pk":"{pk}","sk":"cart"}}"#)
}
