//! SIGTERM stops a node in order — exit 0, streams closed, queued commits
//! fsynced — and it resumes where it stopped.

use serde_json::json;
use tributary_tests::cluster::Cluster;

#[test]
fn sigterm_exits_cleanly_and_a_restart_resumes_with_everything_written() {
    let mut cluster = Cluster::start(
        &["us-east-1", "eu-west-1"],
        &[(0, 1)],
        "[storage]\nsync = \"group\"\n",
    );
    let lines: Vec<String> = (0..200)
        .map(|n| {
            json!({"table":"carts","key":{"pk":"t","sk":format!("{}", n % 7)},"add":{"qty":1}})
                .to_string()
        })
        .collect();
    cluster.nodes[0].write_ok(&lines);
    let before = cluster.wait_converged("both regions to have the writes");
    for i in 0..2 {
        let code = cluster.nodes[i].terminate();
        assert_eq!(
            code,
            Some(0),
            "{} exits 0 on SIGTERM:\n{}",
            cluster.nodes[i].region,
            cluster.nodes[i].log_tail()
        );
    }
    cluster.launch(0);
    cluster.launch(1);
    assert_eq!(cluster.wait_converged("the restarted regions"), before);
    let offsets = cluster.nodes[1].ctl(&["offsets", "--json"], "").json();
    assert_eq!(offsets["applied"]["us-east-1"], json!(200), "{offsets}");
    // The link resumes from its durable acknowledged vector: new writes
    // flow, nothing is resent as new.
    cluster.nodes[0].write_ok(&[
        json!({"table":"carts","key":{"pk":"t","sk":"0"},"add":{"qty":1}}).to_string(),
    ]);
    cluster.wait_converged("the write after the restart");
    let item = cluster.nodes[1].get("carts", r#"{"pk":"t","sk":"0"}"#);
    assert_eq!(item["attributes"]["qty"], json!(30), "{item}");
}
