//! The PostgreSQL sidecar end to end: two real PostgreSQL 15 servers (two
//! "regions"), each a table and a node with a `postgres` source (wal2json
//! slot) and sink; the applications write with SQL.

use serde_json::{Value, json};
use tributary_tests::cluster::{
    Cluster, DEADLINE, Node, assert_each_origin_advanced_once, wait_for,
};
use tributary_tests::postgres::Postgres;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

/// The `carts` table of the cluster harness's schema (`qty` a counter,
/// `tags` a set, `note` multi), as a PostgreSQL table.
const DDL: &str = "CREATE TABLE carts (pk text, sk text, qty integer, tags text[], note text, \
     color text, fit text, x integer, y integer, v integer, price numeric, PRIMARY KEY (pk, sk)); \
     ALTER TABLE carts REPLICA IDENTITY FULL;";

fn sidecar(dsn: &str, region: &str) -> String {
    let slot = format!("tributary_{}", region.replace('-', "_"));
    format!(
        "[[sources]]\nkind = \"postgres\"\ndsn = \"{dsn}\"\ntable = \"carts\"\nslot = \"{slot}\"\n\
         poll_interval = \"50ms\"\n\
         [[sinks]]\nkind = \"postgres\"\ndsn = \"{dsn}\"\ntable = \"carts\"\n\
         retry_backoff_initial = \"20ms\"\nretry_backoff_max = \"500ms\"\n"
    )
}

struct World {
    cluster: Cluster,
    pgs: Vec<Postgres>,
}

/// One PostgreSQL server per region, each with an empty `carts` table.
fn servers() -> Vec<Postgres> {
    REGIONS
        .iter()
        .map(|_| {
            let pg = Postgres::start().expect("postgres");
            pg.create_database("app").expect("database");
            pg.psql("app", DDL).expect("table");
            pg
        })
        .collect()
}

/// The two regions' nodes, linked, each beside its server.
fn nodes(pgs: &[Postgres]) -> Cluster {
    let dsns: Vec<String> = pgs.iter().map(|p| p.dsn("app")).collect();
    Cluster::start_each(
        &REGIONS,
        &[(0, 1)],
        |i| sidecar(&dsns[i], REGIONS[i]),
        |_, _, p| p,
    )
}

fn start() -> World {
    let pgs = servers();
    let cluster = nodes(&pgs);
    // The tests' writes then go through the slots, not the initial load
    // (which `rows_from_before_the_slot_and_from_during_the_scan_are_loaded_once`
    // tests).
    for (pg, region) in pgs.iter().zip(REGIONS) {
        wait_slot(pg, &format!("tributary_{}", region.replace('-', "_")));
    }
    World { cluster, pgs }
}

/// Waits until replication slot `slot` exists on `pg`.
fn wait_slot(pg: &Postgres, slot: &str) {
    wait_for(&format!("slot {slot} to be created"), DEADLINE, || {
        let out = pg
            .psql(
                "app",
                &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .map_err(|e| e.to_string())?;
        if out.trim() == "1" {
            Ok(Some(()))
        } else {
            Err(out)
        }
    });
}

impl World {
    fn sql(&self, i: usize, sql: &str) {
        self.pgs[i]
            .psql("app", sql)
            .unwrap_or_else(|e| panic!("{} in {}: {e:#}", sql, REGIONS[i]));
    }

    /// Region `i`'s rows: pk → the non-NULL columns but the key, as JSON.
    fn rows(&self, i: usize) -> Value {
        let out = self.pgs[i]
            .psql(
                "app",
                "SELECT coalesce(jsonb_object_agg(pk, jsonb_strip_nulls(to_jsonb(c) - 'pk' - 'sk')), '{}') FROM carts c",
            )
            .expect("rows");
        serde_json::from_str(out.trim()).expect("json")
    }

    fn wait_rows(&self, what: &str, pk: &str, expected: &Value) {
        wait_for(what, DEADLINE, || {
            let rows: Vec<Value> = (0..2).map(|i| self.rows(i)[pk].clone()).collect();
            if rows.iter().all(|r| r == expected) {
                Ok(Some(()))
            } else {
                let sidecar: Vec<String> = self
                    .nodes()
                    .iter()
                    .map(|n| {
                        let s = n.status();
                        format!(
                            "{}: sources {} sinks {}",
                            n.region, s["sources"], s["sinks"]
                        )
                    })
                    .collect();
                Err(format!("{rows:?}; {sidecar:?}"))
            }
        });
    }

    /// Waits until both sinks have nothing left to write.
    fn wait_sinks_idle(&self) {
        for node in self.nodes() {
            node.wait_sink_idle("sink:postgres:carts");
        }
    }

    fn nodes(&self) -> &[Node] {
        &self.cluster.nodes
    }
}

#[test]
fn concurrent_sql_writes_in_two_clusters_merge_in_both_tables_without_echo() {
    let world = start();
    let (a, b) = (&world.nodes()[0], &world.nodes()[1]);
    world.sql(
        0,
        "INSERT INTO carts (pk, sk, color, tags) VALUES ('u1', 'c', 'grey', '{a,b}')",
    );
    world.sql(0, "INSERT INTO carts (pk, sk, x) VALUES ('u2', 'c', 1)");
    world.wait_rows("u2 in both tables", "u2", &json!({"x": 1}));
    world.wait_rows(
        "u1 in both tables",
        "u1",
        &json!({"color": "grey", "tags": ["a", "b"]}),
    );

    world.cluster.set_links("pause");
    world.sql(
        0,
        "UPDATE carts SET color = 'red', qty = coalesce(qty, 0) + 2, tags = array_append(tags, 'd') WHERE pk = 'u1'",
    );
    world.sql(0, "UPDATE carts SET qty = qty + 3 WHERE pk = 'u1'");
    world.sql(
        1,
        "BEGIN; UPDATE carts SET fit = 'L', qty = coalesce(qty, 0) + 5 WHERE pk = 'u1'; \
         UPDATE carts SET tags = array_remove(tags, 'a') WHERE pk = 'u1'; COMMIT;",
    );
    world.sql(0, "DELETE FROM carts WHERE pk = 'u2'");
    world.sql(1, "UPDATE carts SET y = 2 WHERE pk = 'u2'");
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
        "eu-west-1 to ingest its transaction",
        |i| i["attributes"]["qty"] == json!(5) && i["attributes"]["tags"] == json!(["b"]),
    );
    b.wait_item(
        "carts",
        &item_key("u2"),
        "eu-west-1 to ingest its update",
        |i| i["attributes"]["y"] == json!(2),
    );
    world.cluster.set_links("resume");

    world.cluster.wait_converged("the nodes to converge");
    world.wait_rows(
        "the merged u1 in both tables",
        "u1",
        &json!({"color": "red", "fit": "L", "qty": 10, "tags": ["b", "d"]}),
    );
    world.wait_rows("the merged u2 in both tables", "u2", &json!({"y": 2}));

    // No echo loop: a barrier write in each region, seen in the other, and
    // each origin's log advanced by exactly that write.
    let before = a.status()["applied"].clone();
    world.sql(
        0,
        "INSERT INTO carts (pk, sk, v) VALUES ('barrier-a', 'c', 1)",
    );
    world.sql(
        1,
        "INSERT INTO carts (pk, sk, v) VALUES ('barrier-b', 'c', 1)",
    );
    world.wait_rows("barrier-a in both tables", "barrier-a", &json!({"v": 1}));
    world.wait_rows("barrier-b in both tables", "barrier-b", &json!({"v": 1}));
    world
        .cluster
        .wait_converged("the nodes to converge after the barrier");
    world.wait_sinks_idle();
    let after = a.status()["applied"].clone();
    assert_each_origin_advanced_once(&REGIONS, &before, &after);
    for node in world.nodes() {
        let s = node.status();
        let slot = format!("postgres:tributary_{}", node.region.replace('-', "_"));
        let source = &s["sources"][slot.as_str()];
        assert!(
            source["echoes"].as_u64() > Some(0),
            "{}: the sink's rows came back as echoes: {source}",
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

#[test]
fn kill_9_of_either_node_during_sql_increments_loses_and_double_counts_nothing() {
    let mut world = start();
    world.sql(0, "INSERT INTO carts (pk, sk, qty) VALUES ('hot', 'c', 1)");
    world.wait_rows("the row in both tables", "hot", &json!({"qty": 1}));
    for i in 1..=40 {
        world.sql(0, "UPDATE carts SET qty = qty + 1 WHERE pk = 'hot'");
        // The source's node between its durable commit and the slot's
        // confirmation, or the sink's between its write and reading it back:
        // wherever the kill lands, nothing may be lost or counted twice.
        if i % 10 == 0 {
            let victim = (i / 10) % 2;
            world.cluster.kill9(victim);
            world.cluster.launch(victim);
        }
    }
    world
        .cluster
        .wait_converged("the regions to converge after the kills");
    world.wait_rows(
        "every increment, exactly once, in both tables",
        "hot",
        &json!({"qty": 41}),
    );
}

#[test]
fn an_idle_slot_keeps_up_with_the_servers_wal() {
    let world = start();
    // WAL moves without a change to the replicated table.
    world.sql(
        0,
        "CREATE TABLE other (x int); INSERT INTO other SELECT generate_series(1, 1000)",
    );
    let target: String = world.pgs[0]
        .psql("app", "SELECT pg_current_wal_lsn()")
        .expect("lsn")
        .trim()
        .to_owned();
    wait_for("the slot to confirm past the idle WAL", DEADLINE, || {
        let behind = world.pgs[0]
            .psql(
                "app",
                &format!(
                    "SELECT confirmed_flush_lsn >= '{target}'::pg_lsn, confirmed_flush_lsn \
                     FROM pg_replication_slots WHERE slot_name = 'tributary_us_east_1'"
                ),
            )
            .expect("slot");
        if behind.starts_with('t') {
            Ok(Some(()))
        } else {
            Err(format!("slot at {behind:?}, WAL at {target}"))
        }
    });
}

#[test]
fn rows_from_before_the_slot_and_from_during_the_scan_are_loaded_once() {
    let pgs = servers();
    const SEEDED: u64 = 1500;
    pgs[0]
        .psql(
            "app",
            &format!(
                "INSERT INTO carts (pk, sk, qty, note, price) SELECT 'r' || g, 'c', g, 'seed', \
                 12345678901234567890.123456789012345678 + g FROM generate_series(1, {SEEDED}) g"
            ),
        )
        .expect("seed");
    // An application keeps writing while the node starts, creates its slot
    // and scans: each write is in the scan, in the slot, or in both, and
    // must count once.
    let loading = std::sync::atomic::AtomicBool::new(true);
    let (cluster, writes) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while loading.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                n += 1;
                pgs[0]
                    .psql(
                        "app",
                        &format!(
                            "UPDATE carts SET qty = qty + 1 WHERE pk = 'r{}'; \
                             INSERT INTO carts (pk, sk, qty) VALUES ('w{n}', 'c', {n})",
                            n % SEEDED + 1
                        ),
                    )
                    .expect("write during the load");
            }
            n
        });
        let cluster = nodes(&pgs);
        wait_for("us-east-1's initial load to finish", DEADLINE, || {
            let s = cluster.nodes[0].status();
            let load = &s["sources"]["postgres:tributary_us_east_1"]["initial_load"];
            if load.as_str().is_some_and(|l| l.starts_with("done")) {
                Ok(Some(()))
            } else {
                Err(s["sources"].to_string())
            }
        });
        loading.store(false, std::sync::atomic::Ordering::Relaxed);
        (cluster, writer.join().expect("writer"))
    });
    let world = World { cluster, pgs };
    // Every seeded qty, one increment per update, and each inserted row.
    let expected_sum = (1..=SEEDED).sum::<u64>() + writes + (1..=writes).sum::<u64>();
    let expected = format!("{}|{expected_sum}", SEEDED + writes);
    wait_for(
        "both tables to hold every row, counted once",
        DEADLINE,
        || {
            let totals: Vec<String> = world
                .pgs
                .iter()
                .map(|pg| {
                    pg.psql("app", "SELECT count(*) || '|' || sum(qty) FROM carts")
                        .map(|t| t.trim().to_owned())
                        .unwrap_or_else(|e| e.to_string())
                })
                .collect();
            if totals.iter().all(|t| *t == expected) {
                Ok(Some(()))
            } else {
                Err(format!("count|sum {totals:?}, expected {expected}"))
            }
        },
    );
    world
        .cluster
        .wait_converged("the nodes to converge after the load");
    assert_eq!(world.rows(0), world.rows(1), "the tables differ");
    let price = world.pgs[1]
        .psql("app", "SELECT price FROM carts WHERE pk = 'r7'")
        .expect("price");
    assert_eq!(
        price.trim(),
        "12345678901234567897.123456789012345678",
        "a numeric keeps every digit"
    );
    for node in world.nodes() {
        let s = node.status();
        let slot = format!("postgres:tributary_{}", node.region.replace('-', "_"));
        assert_eq!(
            s["sources"][slot.as_str()]["dead_letters"],
            json!(0),
            "{}: {}",
            node.region,
            s["sources"]
        );
    }
}

/// Two regions holding the row `hot` (qty 1), node `i` restarted so that
/// it aborts at crash point `point`.
fn hot_row_and_crash_point(i: usize, point: &str) -> World {
    let mut world = start();
    world.sql(0, "INSERT INTO carts (pk, sk, qty) VALUES ('hot', 'c', 1)");
    world.wait_rows("the row in both tables", "hot", &json!({"qty": 1}));
    world.cluster.kill9(i);
    world.cluster.nodes[i].env = vec![("TRIBUTARY_CRASH_AT".to_owned(), point.to_owned())];
    world.cluster.launch(i);
    world
}

/// Waits for node `i` to abort at its crash point.
fn wait_crash(world: &mut World, i: usize) {
    let node = &mut world.cluster.nodes[i];
    let status = node.wait_exit(&format!("{} to abort at its crash point", node.region));
    assert!(!status.success(), "{status:?}");
    assert!(
        node.log_tail().contains("aborting at the crash point"),
        "{}",
        node.log_tail()
    );
}

/// Starts node `i` again, without a crash point.
fn restart(world: &mut World, i: usize) {
    world.cluster.nodes[i].env.clear();
    world.cluster.launch(i);
}

fn lsn(pg: &Postgres) -> String {
    pg.psql("app", "SELECT pg_current_wal_lsn()")
        .expect("lsn")
        .trim()
        .to_owned()
}

#[test]
fn a_crash_between_the_logs_commit_and_the_slots_confirmation_counts_once() {
    let mut world = hot_row_and_crash_point(0, "postgres-source-after-commit");
    world.sql(0, "UPDATE carts SET qty = qty + 1 WHERE pk = 'hot'");
    let written = lsn(&world.pgs[0]);
    wait_crash(&mut world, 0);
    let confirmed = world.pgs[0]
        .psql(
            "app",
            &format!(
                "SELECT confirmed_flush_lsn < '{written}'::pg_lsn, confirmed_flush_lsn \
                 FROM pg_replication_slots WHERE slot_name = 'tributary_us_east_1'"
            ),
        )
        .expect("slot");
    assert!(
        confirmed.starts_with('t'),
        "the slot was confirmed past the update before the node died: {confirmed} (update at {written})"
    );
    restart(&mut world, 0);
    // The slot gives the update again; the log's checkpoint skips it.
    world.sql(0, "UPDATE carts SET qty = qty + 1 WHERE pk = 'hot'");
    world
        .cluster
        .wait_converged("the regions to converge after the crash");
    world.wait_rows("both increments, once each", "hot", &json!({"qty": 3}));
    world.nodes()[0].wait_item(
        "carts",
        &item_key("hot"),
        "the log to count each once",
        |i| i["attributes"]["qty"] == json!(3),
    );
}

#[test]
fn a_crash_between_the_sinks_commit_and_its_checkpoint_counts_once() {
    let mut world = hot_row_and_crash_point(1, "postgres-sink-after-commit");
    world.sql(0, "UPDATE carts SET qty = qty + 1 WHERE pk = 'hot'");
    wait_crash(&mut world, 1);
    // The sink's write was committed before it died.
    let held = world.pgs[1]
        .psql("app", "SELECT qty FROM carts WHERE pk = 'hot'")
        .expect("qty");
    assert_eq!(held.trim(), "2", "eu-west-1's table before the restart");
    restart(&mut world, 1);
    world.sql(0, "UPDATE carts SET qty = qty + 1 WHERE pk = 'hot'");
    world
        .cluster
        .wait_converged("the regions to converge after the crash");
    world.wait_rows("both increments, once each", "hot", &json!({"qty": 3}));
    world.wait_sinks_idle();
    world.wait_rows("still once each", "hot", &json!({"qty": 3}));
}

/// One node on `pg` whose source follows `table` (no peers).
fn lone_node(pg: &Postgres, table: &str, slot: &str) -> Cluster {
    let dsn = pg.dsn("app");
    let extra = format!(
        "[[tables]]\nname = \"{table}\"\npartition_key = \"pk\"\n\
         [[sources]]\nkind = \"postgres\"\ndsn = \"{dsn}\"\ntable = \"{table}\"\nslot = \"{slot}\"\n\
         poll_interval = \"50ms\"\n"
    );
    Cluster::start_each(&["us-east-1"], &[], |_| extra.clone(), |_, _, p| p)
}

/// Waits until the node's source reports an error containing `needle`.
fn wait_source_error(node: &Node, source: &str, needle: &str) -> String {
    wait_for(&format!("the source to say {needle:?}"), DEADLINE, || {
        let s = node.status();
        let error = s["sources"][source]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if error.contains(needle) {
            Ok(Some(error))
        } else {
            Err(s["sources"].to_string())
        }
    })
}

fn wait_exists(node: &Node, table: &str, pk: &str) {
    let key = format!(r#"{{"pk":"{pk}"}}"#);
    wait_for(&format!("{pk} to be ingested"), DEADLINE, || {
        let item = node.get(table, &key);
        if item["exists"] == json!(true) {
            Ok(Some(()))
        } else {
            Err(item.to_string())
        }
    });
}

#[test]
fn bad_tables_are_refused_with_the_statement_that_fixes_them_and_recover() {
    let pg = Postgres::start().expect("postgres");
    pg.create_database("app").expect("database");
    pg.psql("app", "CREATE TABLE plain (pk text PRIMARY KEY, v text)")
        .expect("table");
    let cluster = lone_node(&pg, "plain", "tributary_plain");
    let node = &cluster.nodes[0];
    let error = wait_source_error(node, "postgres:tributary_plain", "REPLICA IDENTITY FULL");
    assert!(
        error.contains("ALTER TABLE \"public\".\"plain\" REPLICA IDENTITY FULL;"),
        "{error}"
    );
    pg.psql("app", "ALTER TABLE plain REPLICA IDENTITY FULL")
        .expect("fix");
    // The source creates its slot once the table is right; rows from before
    // that are not in the slot (PostgreSQL sources have no initial load yet).
    wait_slot(&pg, "tributary_plain");
    pg.psql("app", "INSERT INTO plain VALUES ('p1', 'x')")
        .expect("insert");
    wait_exists(node, "plain", "p1");

    pg.psql("app", "CREATE TABLE nokey (pk text, v text)")
        .expect("table");
    let cluster = lone_node(&pg, "nokey", "tributary_nokey");
    let error = wait_source_error(
        &cluster.nodes[0],
        "postgres:tributary_nokey",
        "no primary key",
    );
    assert!(error.contains("ADD PRIMARY KEY (pk)"), "{error}");

    pg.psql(
        "app",
        "CREATE TABLE shapes (pk text PRIMARY KEY, at point); ALTER TABLE shapes REPLICA IDENTITY FULL",
    )
    .expect("table");
    let cluster = lone_node(&pg, "shapes", "tributary_shapes");
    let error = wait_source_error(
        &cluster.nodes[0],
        "postgres:tributary_shapes",
        "cannot be mapped",
    );
    assert!(
        error.contains("column at") && error.contains("point"),
        "{error}"
    );
}

#[test]
fn a_slot_taken_by_another_consumer_is_reported_until_it_is_free() {
    let pg = Postgres::start().expect("postgres");
    pg.create_database("app").expect("database");
    pg.psql(
        "app",
        "CREATE TABLE plain (pk text PRIMARY KEY, v text); ALTER TABLE plain REPLICA IDENTITY FULL",
    )
    .expect("table");
    pg.psql(
        "app",
        "SELECT pg_create_logical_replication_slot('shared', 'wal2json')",
    )
    .expect("slot");
    let mut other = std::process::Command::new(
        tributary_tests::postgres::tool("pg_recvlogical").expect("pg_recvlogical"),
    )
    .args([
        "--dbname",
        &pg.dsn("app"),
        "--slot",
        "shared",
        "--start",
        "--file",
        "/dev/null",
    ])
    .spawn()
    .expect("start pg_recvlogical");
    let cluster = lone_node(&pg, "plain", "shared");
    let node = &cluster.nodes[0];
    let error = wait_source_error(node, "postgres:shared", "in use by another consumer");
    assert!(error.contains("give this source its own slot"), "{error}");
    let _ = other.kill();
    let _ = other.wait();
    pg.psql("app", "INSERT INTO plain VALUES ('p1', 'x')")
        .expect("insert");
    wait_exists(node, "plain", "p1");
}

/// The admin API's JSON key of item `pk`.
fn item_key(pk: &str) -> String {
    format!(r#"{{"pk":"{pk}","sk":"c"}}"#)
}
