//! Recovery of real node processes: SIGKILL mid-stream then restart
//! (durable offsets, nothing acknowledged lost, no effect applied twice),
//! and a wiped node that bootstraps from a snapshot after its peers
//! truncated their logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use serde_json::{Value, json};
use tributary_tests::cluster::{Cluster, DEADLINE, Node, replctl, wait_for};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];
const MESH: [(usize, usize); 3] = [(0, 1), (1, 2), (0, 2)];

/// `{"table":"carts",...,"add":{"qty":1}}` on one of ten items.
fn increment(n: u64) -> String {
    json!({"table":"carts","key":{"pk":"k","sk":format!("{}", n % 10)},"add":{"qty":1}}).to_string()
}

fn offsets(node: &Node) -> Result<Value, String> {
    let out = node.ctl(&["offsets", "--json"], "");
    if out.code == Some(0) {
        Ok(out.json())
    } else {
        Err(format!("{}: {}", node.region, out.stderr.trim()))
    }
}

/// The sum of `qty` over the ten items on `node`.
fn total_qty(node: &Node) -> u64 {
    (0..10)
        .map(|i| {
            let item = node.get("carts", &format!(r#"{{"pk":"k","sk":"{i}"}}"#));
            item["attributes"]["qty"].as_u64().unwrap_or(0)
        })
        .sum()
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(&REGIONS, &MESH, "");
    let url = cluster.nodes[0].url();
    let acked = Arc::new(AtomicU64::new(0));
    let max_seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // A writer keeps writing to us-east-1 in batches of 20, counting what
    // was acknowledged (durable); failed calls (node down) are retried.
    let writer = {
        let (acked, max_seq, stop) = (Arc::clone(&acked), Arc::clone(&max_seq), Arc::clone(&stop));
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let lines: Vec<String> = (n..n + 20).map(increment).collect();
                let out = replctl(&url, &["write"], &(lines.join("\n") + "\n"));
                if out.code == Some(0) {
                    for r in out.json_lines() {
                        let seq = r["seq"].as_u64().expect("seq");
                        max_seq.fetch_max(seq, Ordering::SeqCst);
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 20;
                }
            }
        })
    };
    let wait_acked = |at_least: u64| {
        wait_for("more acknowledged writes", DEADLINE, || {
            let a = acked.load(Ordering::SeqCst);
            if a >= at_least {
                Ok(Some(a))
            } else {
                Err(format!("{a} acknowledged"))
            }
        })
    };
    // SIGKILL a receiver mid-stream, write on, restart it.
    let a = wait_acked(200);
    cluster.kill9(1);
    wait_acked(a + 200);
    cluster.launch(1);
    // SIGKILL the writer's node itself mid-stream, restart it.
    let a = wait_acked(acked.load(Ordering::SeqCst) + 200);
    cluster.kill9(0);
    let acked_before_kill = acked.load(Ordering::SeqCst).max(a);
    let max_before_kill = max_seq.load(Ordering::SeqCst);
    cluster.launch(0);
    wait_acked(acked_before_kill + 200);
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");

    cluster.wait_converged("all regions after the kills");
    let origin = REGIONS[0];
    let head = offsets(&cluster.nodes[0]).expect("offsets")["applied"][origin]
        .as_u64()
        .expect("applied seq");
    // Every acknowledged write survived the kill of its node …
    assert!(
        head >= max_seq.load(Ordering::SeqCst) && head >= max_before_kill,
        "acknowledged seq {} (before the kill: {max_before_kill}) but the log ends at {head}",
        max_seq.load(Ordering::SeqCst)
    );
    // … and each entry took effect exactly once on every region: every
    // entry of this origin is one increment.
    for node in &cluster.nodes {
        assert_eq!(
            total_qty(node),
            head,
            "sum of increments on {}",
            node.region
        );
        let applied = offsets(node).expect("offsets")["applied"][origin].as_u64();
        assert_eq!(applied, Some(head), "{}", node.region);
    }
    assert!(acked.load(Ordering::SeqCst) <= head);
}

#[test]
fn a_wiped_node_bootstraps_from_a_snapshot_after_its_peers_truncated() {
    wiped_node_recovers(true);
}

/// Without truncation its peers ship its region's entries back to it (they
/// send a peer its own entries only while it bootstraps).
#[test]
fn a_wiped_node_gets_its_own_entries_shipped_back() {
    wiped_node_recovers(false);
}

/// ap-south-1 loses its disk after 30 writes per region and is restarted:
/// it must converge, restore its own origin's seq and continue it. With
/// `truncated`, its peers truncate their logs first (a snapshot brings it
/// back), else their logs ship it back.
fn wiped_node_recovers(truncated: bool) {
    let retention = if truncated {
        "[shipping]\nlog_retention = \"100ms\"\n"
    } else {
        ""
    };
    let mut cluster = Cluster::start(&REGIONS, &MESH, retention);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let lines: Vec<String> = (0..30)
            .map(|n| {
                json!({"table":"carts","key":{"pk":format!("r{i}"),"sk":format!("{n}")},
                       "set":{"v":n},"add":{"qty":1}})
                .to_string()
            })
            .collect();
        node.write_ok(&lines);
    }
    let (items, digest) = cluster.wait_converged("the regions to converge");
    assert_eq!(items, 90);
    // Every peer acknowledged everything: the logs are truncated.
    for node in cluster.nodes[..2].iter().filter(|_| truncated) {
        wait_for("the log to be truncated", DEADLINE, || {
            let o = offsets(node)?;
            let start = &o["log_start"];
            let done = REGIONS.iter().all(|r| start[*r].as_u64() == Some(30));
            if done {
                Ok(Some(()))
            } else {
                Err(o.to_string())
            }
        });
    }
    // ap-south-1 loses its disk.
    cluster.kill9(2);
    cluster.nodes[2].wipe();
    cluster.launch(2);
    let (items_after, digest_after) = cluster.wait_converged("the wiped node to bootstrap");
    assert_eq!((items_after, &digest_after), (items, &digest));
    let o = offsets(&cluster.nodes[2]).expect("offsets");
    assert_eq!(
        o["applied"]["ap-south-1"],
        json!(30),
        "own origin restored: {o}"
    );
    // Its next write continues its own sequence instead of reusing seq 1.
    let written = cluster.nodes[2].write_ok(&[
        json!({"table":"carts","key":{"pk":"new","sk":"1"},"set":{"v":1}}).to_string(),
    ]);
    assert_eq!(written, vec![json!({"origin":"ap-south-1","seq":31})]);
    cluster.wait_converged("the new write to reach everyone");
}
