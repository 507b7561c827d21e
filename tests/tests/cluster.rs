//! Three real `replicator` processes on loopback, written to and read
//! through the real `replctl`: conflicting writes converge, counters are
//! exact, a line topology relays, pause/resume shows in `replctl lag`.

use std::thread;

use serde_json::{Value, json};
use tributary_tests::cluster::{Cluster, DEADLINE, wait_for};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];
const MESH: [(usize, usize); 3] = [(0, 1), (1, 2), (0, 2)];

fn line(v: Value) -> String {
    v.to_string()
}

#[test]
fn concurrent_conflicting_writes_converge_with_exact_counters() {
    let cluster = Cluster::start(&REGIONS, &MESH, "");
    // Every region writes concurrently: its own attribute of one shared
    // item, increments of one counter, and set adds, in several requests.
    let per_region = 40;
    thread::scope(|s| {
        for (i, node) in cluster.nodes.iter().enumerate() {
            s.spawn(move || {
                for round in 0..4 {
                    let lines: Vec<String> = (0..per_region / 4)
                        .map(|n| {
                            line(json!({
                                "table": "carts",
                                "key": {"pk": "alice", "sk": "line-1"},
                                "set": {format!("attr_{i}"): format!("r{i}-{round}-{n}")},
                                "add": {"qty": 1},
                                "add_to_set": {"tags": [format!("t{i}")]},
                            }))
                        })
                        .collect();
                    node.write_ok(&lines);
                }
            });
        }
    });
    let (items, digest) = cluster.wait_converged("three regions to converge");
    assert_eq!(items, 1, "one item written");
    for node in &cluster.nodes {
        let item = node.get("carts", r#"{"pk":"alice","sk":"line-1"}"#);
        assert_eq!(item["exists"], json!(true), "{item}");
        let attrs = &item["attributes"];
        assert_eq!(
            attrs["qty"],
            json!(3 * per_region),
            "counter is the exact sum: {item}"
        );
        for i in 0..3 {
            assert!(
                attrs[format!("attr_{i}")].is_string(),
                "attr_{i} survived on {}: {item}",
                node.region
            );
        }
        assert_eq!(attrs["tags"], json!(["t0", "t1", "t2"]), "{item}");
        assert_eq!(node.digest().map(|d| d.1), Ok(digest.clone()));
    }
}

#[test]
fn a_line_topology_converges_through_the_middle() {
    // A – B – C: A and C are not peers; B relays.
    let cluster = Cluster::start(&REGIONS, &[(0, 1), (1, 2)], "");
    let write = |node: usize, attr: &str| {
        cluster.nodes[node].write_ok(&[line(json!({
            "table": "carts", "key": {"pk": "bob", "sk": "x"},
            "set": {attr: node}, "add": {"qty": 10},
        }))]);
    };
    write(0, "from_a");
    write(2, "from_c");
    cluster.wait_converged("A and C to converge through B");
    let a = cluster.nodes[0].get("carts", r#"{"pk":"bob","sk":"x"}"#);
    assert_eq!(a["attributes"]["from_c"], json!(2), "{a}");
    assert_eq!(a["attributes"]["qty"], json!(20), "{a}");
    let c = cluster.nodes[2].get("carts", r#"{"pk":"bob","sk":"x"}"#);
    assert_eq!(c["attributes"]["from_a"], json!(0), "{c}");
}

fn peer<'a>(lag: &'a Value, peer: &str) -> Option<&'a Value> {
    lag["peers"]
        .as_array()?
        .iter()
        .find(|p| p["peer"] == json!(peer))
}

#[test]
fn pause_shows_pending_records_then_resume_drains_them() {
    let cluster = Cluster::start(&REGIONS[..2], &[(0, 1)], "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    wait_for("the link to come up", DEADLINE, || {
        let lag = a.lag()?;
        match peer(&lag, "eu-west-1") {
            Some(p) if p["connected"] == json!(true) => Ok(Some(())),
            _ => Err(lag.to_string()),
        }
    });
    let out = a.ctl(&["pause", "eu-west-1"], "");
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<String> = (0..25)
        .map(|n| line(json!({"table":"carts","key":{"pk":"p","sk":format!("{n}")},"set":{"v":n}})))
        .collect();
    a.write_ok(&lines);
    let lag = a.lag().expect("lag");
    let p = peer(&lag, "eu-west-1").expect("peer row");
    assert_eq!(p["paused"], json!(true), "{lag}");
    assert_eq!(p["pending_records"], json!(25), "{lag}");
    // Thresholds: exceeded → exit 1; within → exit 0.
    let over = a.ctl(&["lag", "--max-records", "10"], "");
    assert_eq!(over.code, Some(1), "{over:?}");
    let within = a.ctl(&["lag", "--max-records", "25"], "");
    assert_eq!(within.code, Some(0), "{within:?}");
    assert_eq!(
        b.digest().map(|d| d.0),
        Ok(0),
        "nothing shipped while paused"
    );

    let out = a.ctl(&["resume", "eu-west-1"], "");
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_for("pending records to drain", DEADLINE, || {
        let lag = a.lag()?;
        match peer(&lag, "eu-west-1") {
            Some(p) if p["pending_records"] == json!(0) => Ok(Some(())),
            _ => Err(lag.to_string()),
        }
    });
    let ok = a.ctl(&["lag", "--max-records", "0", "--max-seconds", "5"], "");
    assert_eq!(ok.code, Some(0), "{ok:?}");
    cluster.wait_converged("B to have A's writes");
}

#[test]
fn a_region_keeps_writing_reading_and_reporting_lag_with_every_peer_down() {
    let mut cluster = Cluster::start(&REGIONS, &MESH, "");
    cluster.nodes[0].write_ok(&[line(
        json!({"table":"carts","key":{"pk":"s","sk":"1"},"add":{"qty":1}}),
    )]);
    cluster.wait_converged("the first write to reach everyone");
    cluster.wait_drained("every ack to arrive");
    cluster.kill9(1);
    cluster.kill9(2);
    let a = &cluster.nodes[0];
    let lines: Vec<String> = (0..10)
        .map(|_| line(json!({"table":"carts","key":{"pk":"s","sk":"1"},"add":{"qty":1}})))
        .collect();
    a.write_ok(&lines);
    assert_eq!(
        a.get("carts", r#"{"pk":"s","sk":"1"}"#)["attributes"]["qty"],
        json!(11)
    );
    let lag = wait_for("both links to be reported down", DEADLINE, || {
        let lag = a.lag()?;
        let down = ["eu-west-1", "ap-south-1"].iter().all(|p| {
            peer(&lag, p).is_some_and(|p| {
                p["connected"] == json!(false) && p["pending_records"] == json!(10)
            })
        });
        if down {
            Ok(Some(lag))
        } else {
            Err(lag.to_string())
        }
    });
    let status = a.ctl(&["status", "--json"], "").json();
    assert_eq!(status["applied"]["us-east-1"], json!(11), "{status} {lag}");
    // Nothing waits for dependencies once everything arrived.
    assert_eq!(
        status["parked"],
        json!({"entries": 0, "bytes": 0, "max_entries": 50_000, "max_bytes": 128 << 20}),
        "{status}"
    );
    // The peers come back and catch up.
    cluster.launch(1);
    cluster.launch(2);
    cluster.wait_converged("the peers to catch up");
}
