//! One logical table active-active between DynamoDB in one region (a real
//! moto server) and PostgreSQL in another (a real PostgreSQL 15): writes on
//! both sides replicate both ways and merge.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use tributary_replicator::dynamo::convert::from_sdk;
use tributary_tests::cluster::{Cluster, DEADLINE, wait_for};
use tributary_tests::moto::{Moto, create_table};
use tributary_tests::postgres::Postgres;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

struct World {
    rt: tokio::runtime::Runtime,
    dynamodb: Client,
    cluster: Cluster,
    pg: Postgres,
    _moto: Moto,
}

fn start() -> World {
    let moto = Moto::start().expect("moto");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = rt.block_on(moto.sdk_config("us-east-1"));
    rt.block_on(create_table(&config, "carts", "pk", Some("sk")))
        .expect("table");
    let pg = Postgres::start().expect("postgres");
    pg.create_database("app").expect("database");
    pg.psql(
        "app",
        "CREATE TABLE carts (pk text, sk text, qty integer, tags text[], note text, color text, \
         fit text, PRIMARY KEY (pk, sk)); ALTER TABLE carts REPLICA IDENTITY FULL;",
    )
    .expect("table");
    let endpoint = moto.endpoint();
    let dsn = pg.dsn("app");
    let cluster = Cluster::start_each(
        &REGIONS,
        &[(0, 1)],
        |i| {
            if i == 0 {
                format!(
                    "[[sources]]\nkind = \"dynamodb-streams\"\ntable = \"carts\"\naws_region = \"us-east-1\"\n\
                     endpoint_url = \"{endpoint}\"\npoll_interval = \"50ms\"\n\
                     [[sinks]]\nkind = \"dynamodb\"\ntable = \"carts\"\naws_region = \"us-east-1\"\n\
                     endpoint_url = \"{endpoint}\"\nretry_backoff_initial = \"20ms\"\n"
                )
            } else {
                format!(
                    "[[sources]]\nkind = \"postgres\"\ndsn = \"{dsn}\"\ntable = \"carts\"\n\
                     slot = \"tributary_eu_west_1\"\npoll_interval = \"50ms\"\n\
                     [[sinks]]\nkind = \"postgres\"\ndsn = \"{dsn}\"\ntable = \"carts\"\n\
                     retry_backoff_initial = \"20ms\"\n"
                )
            }
        },
        |_, _, p| p,
    );
    // The PostgreSQL source's slot starts its stream: write after it exists.
    wait_for("the slot to be created", DEADLINE, || {
        let out = pg
            .psql("app", "SELECT count(*) FROM pg_replication_slots")
            .map_err(|e| e.to_string())?;
        if out.trim() == "1" {
            Ok(Some(()))
        } else {
            Err(out)
        }
    });
    World {
        dynamodb: Client::new(&config),
        rt,
        cluster,
        pg,
        _moto: moto,
    }
}

impl World {
    fn update(&self, expr: &str, values: &[(&str, AttributeValue)]) {
        let mut req = self
            .dynamodb
            .update_item()
            .table_name("carts")
            .key("pk", AttributeValue::S("u1".into()))
            .key("sk", AttributeValue::S("c".into()))
            .update_expression(expr);
        for (k, v) in values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        self.rt.block_on(req.send()).expect("UpdateItem");
    }

    /// The DynamoDB item and the PostgreSQL row, as plain JSON without key
    /// and marker.
    fn both(&self) -> (Value, Value) {
        let out = self
            .rt
            .block_on(
                self.dynamodb
                    .get_item()
                    .table_name("carts")
                    .key("pk", AttributeValue::S("u1".into()))
                    .key("sk", AttributeValue::S("c".into()))
                    .consistent_read(true)
                    .send(),
            )
            .expect("GetItem");
        let item = out.item().map_or(Value::Null, |item| {
            Value::Object(
                item.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "pk" | "sk" | "tributary_sink"))
                    .map(|(k, v)| (k.clone(), from_sdk(v).expect("value").to_plain_json()))
                    .collect(),
            )
        });
        let row = self
            .pg
            .psql(
                "app",
                "SELECT coalesce((SELECT jsonb_strip_nulls(to_jsonb(c) - 'pk' - 'sk') FROM carts c WHERE pk = 'u1'), 'null')",
            )
            .expect("row");
        (item, serde_json::from_str(row.trim()).expect("json"))
    }

    fn wait_both(&self, what: &str, expected: &Value) {
        wait_for(what, DEADLINE, || {
            let (item, row) = self.both();
            if &item == expected && &row == expected {
                Ok(Some(()))
            } else {
                Err(format!("DynamoDB {item}, PostgreSQL {row}"))
            }
        });
    }
}

/// The admin API's JSON key of the item the test writes.
const KEY: &str = r#"{"pk":"u1","sk":"c"}"#;

#[test]
fn one_table_replicates_and_merges_between_dynamodb_and_postgresql() {
    let world = start();
    let nodes = &world.cluster.nodes;
    world.update(
        "SET color = :c ADD tags :t",
        &[
            (":c", AttributeValue::S("grey".into())),
            (":t", AttributeValue::Ss(vec!["a".into()])),
        ],
    );
    world.wait_both(
        "the DynamoDB write to reach PostgreSQL",
        &json!({"color": "grey", "tags": ["a"]}),
    );

    world.cluster.set_links("pause");
    world.update(
        "SET color = :c ADD qty :q",
        &[
            (":c", AttributeValue::S("red".into())),
            (":q", AttributeValue::N("2".into())),
        ],
    );
    world
        .pg
        .psql(
            "app",
            "UPDATE carts SET fit = 'L', qty = coalesce(qty, 0) + 5, tags = array_append(tags, 'z') WHERE pk = 'u1'",
        )
        .expect("update");
    nodes[0].wait_item("carts", KEY, "us-east-1 to ingest its write", |i| {
        i["attributes"]["qty"] == json!(2)
    });
    nodes[1].wait_item("carts", KEY, "eu-west-1 to ingest its write", |i| {
        i["attributes"]["qty"] == json!(5)
    });
    world.cluster.set_links("resume");

    world.cluster.wait_converged("the regions to converge");
    world.wait_both(
        "the merged item in DynamoDB and in PostgreSQL",
        &json!({"color": "red", "fit": "L", "qty": 7, "tags": ["a", "z"]}),
    );
}
