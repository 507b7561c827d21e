//! Bad input reaches a real node: malformed change lines, unknown tables,
//! wrong types, oversized items and messages, a peer of another cluster, a
//! peer that is not configured. Each gets a clear error, nothing good is
//! lost, the node keeps running.

use serde_json::json;
use tributary_tests::cluster::{Cluster, DEADLINE, Node, free_port, wait_for};

#[test]
fn bad_change_lines_get_clear_errors_and_the_good_ones_are_written() {
    let cluster = Cluster::start(
        &["us-east-1"],
        &[],
        "[shipping]\nmax_message_bytes = \"2MiB\"\n",
    );
    let node = &cluster.nodes[0];
    let good =
        json!({"table":"carts","key":{"pk":"a","sk":"1"},"set":{"name":"ok"},"add":{"qty":3}});
    let huge = "x".repeat(500 * 1024);
    let input = [
        good.to_string(),
        "{not json".to_owned(),
        json!({"table":"orders","key":{"pk":"a"}}).to_string(),
        json!({"table":"carts","key":{"pk":"a","sk":"1"},"add":{"qty":"three"}}).to_string(),
        json!({"table":"carts","key":{"pk":"a","sk":"1"},"set":{"qty":5}}).to_string(),
        json!({"table":"carts","key":{"pk":"a"}}).to_string(),
        json!({"table":"carts","key":{"pk":"a","sk":"2"},"set":{"blob":huge}}).to_string(),
        json!({"table":"carts","key":{"pk":"a","sk":"1"},"add":{"qty":4}}).to_string(),
    ]
    .join("\n");
    let out = node.ctl(&["write"], &(input + "\n"));
    assert_eq!(out.code, Some(1), "a rejected line exits 1: {out:?}");
    let results = out.json_lines();
    assert_eq!(results.len(), 8, "{out:?}");
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r["error"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(results[0], json!({"origin":"us-east-1","seq":1}));
    assert_eq!(results[7], json!({"origin":"us-east-1","seq":2}));
    assert_eq!(errors.len(), 6, "{results:?}");
    for (error, expect) in errors.iter().zip([
        "malformed change",
        "unknown table orders",
        "add.qty",
        "qty",
        "missing key attribute \"sk\"",
        "",
    ]) {
        assert!(
            error.contains(expect),
            "{error:?} should mention {expect:?}"
        );
    }
    assert!(errors[5].contains("409600-byte limit"), "{}", errors[5]);

    // A request beyond max_message_bytes is refused as a whole (exit 2),
    // and the node keeps serving.
    let big =
        json!({"table":"carts","key":{"pk":"b","sk":"1"},"set":{"v":"y".repeat(2560 * 1024)}});
    let out = node.ctl(&["write"], &format!("{big}\n"));
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("message") || out.stdout.contains("message"),
        "the limit is named: {out:?}"
    );
    let item = node.get("carts", r#"{"pk":"a","sk":"1"}"#);
    assert_eq!(item["attributes"], json!({"name":"ok","qty":7}), "{item}");
    let text = node.metrics();
    assert!(text.contains("tributary_writes_rejected_total 6"), "{text}");
}

#[test]
fn peers_of_another_cluster_or_not_configured_are_refused_with_the_reason() {
    let cluster = Cluster::start(&["us-east-1", "eu-west-1"], &[(0, 1)], "");
    let a = &cluster.nodes[0];
    let rogue = |region: &str, cluster_name: &str| {
        let port = free_port();
        let text = format!(
            "region = \"{region}\"\ncluster = \"{cluster_name}\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n\
             [[peers]]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n[[tables]]\nname = \"carts\"\npartition_key = \"pk\"\nsort_key = \"sk\"\n",
            cluster.dir().join(format!("rogue-{region}")).display(),
            a.url()
        );
        let mut node = Node::custom(
            cluster.dir(),
            &format!("rogue-{region}"),
            region,
            port,
            &text,
        );
        node.launch();
        node
    };
    let expect_refusal = |node: &Node, words: &str| {
        wait_for("the refusal to show in status", DEADLINE, || {
            let out = node.ctl(&["status", "--json"], "");
            let status = out.json();
            let error = status["peers"][0]["last_error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if error.contains(words) {
                Ok(Some(()))
            } else {
                Err(status.to_string())
            }
        });
    };
    // eu-west-1 is a configured peer, but this one is of cluster "other".
    let mut other = rogue("eu-west-1", "other");
    expect_refusal(&other, "cluster");
    // sa-east-1 is nobody's peer.
    let mut unknown = rogue("sa-east-1", "test");
    expect_refusal(&unknown, "not a configured peer");
    let text = a.metrics();
    assert!(
        text.contains("tributary_refused_streams_total{reason=\"cluster\"}"),
        "{text}"
    );
    assert!(
        text.contains("tributary_refused_streams_total{reason=\"unknown_peer\"}"),
        "{text}"
    );
    other.kill9();
    unknown.kill9();
    // The real peers are unaffected.
    a.write_ok(&[json!({"table":"carts","key":{"pk":"z","sk":"z"},"set":{"v":1}}).to_string()]);
    cluster.wait_converged("the real peers to converge");
}
