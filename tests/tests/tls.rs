//! Mutual TLS between regions and for the admin API, with real processes
//! and certificates the test generates: one valid pair replicates; every
//! bad certificate, a stalled handshake, an impostor and another cluster
//! are refused with the cause in the node's log; replaced certificate files
//! apply without a restart.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use tributary_replicator::pki::{Ca, Leaf};
use tributary_tests::cluster::{Ctl, DEADLINE, Node, TABLES, free_port, replctl, wait_for};

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    good: Ca,
}

/// A node's config: `[tls]` with `leaf`, https peers.
fn config(
    dir: &Path,
    region: &str,
    cluster: &str,
    port: u16,
    peers: &[(&str, u16)],
    ca: &Path,
    leaf: &Leaf,
) -> String {
    let mut text = format!(
        "region = \"{region}\"\ncluster = \"{cluster}\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n",
        dir.join(format!("data-{region}-{port}")).display()
    );
    for (peer, peer_port) in peers {
        text.push_str(&format!(
            "[[peers]]\nregion = \"{peer}\"\nendpoint = \"https://127.0.0.1:{peer_port}\"\n"
        ));
    }
    text.push_str(TABLES);
    text.push_str(&format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nhandshake_timeout = \"1s\"\n",
        ca.display(),
        leaf.cert.display(),
        leaf.key.display()
    ));
    text
}

/// `replctl` over TLS to `port`, as `client` (none: no client certificate).
fn ctl(
    pki: &Pki,
    port: u16,
    region: &str,
    client: Option<&Leaf>,
    args: &[&str],
    stdin: &str,
) -> Ctl {
    let ca = pki.ca.display().to_string();
    let mut all: Vec<String> = vec!["--ca".into(), ca, "--server-name".into(), region.into()];
    if let Some(c) = client {
        all.extend([
            "--cert".into(),
            c.cert.display().to_string(),
            "--key".into(),
            c.key.display().to_string(),
        ]);
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    replctl(&format!("https://127.0.0.1:{port}"), &refs, stdin)
}

/// Waits until the node on `port` holds `qty` in item u1/c.
fn wait_qty(pki: &Pki, port: u16, region: &str, operator: &Leaf, qty: u64) {
    wait_for(&format!("{region} to hold qty {qty}"), DEADLINE, || {
        let key = r#"{"pk":"u1","sk":"c"}"#;
        let out = ctl(
            pki,
            port,
            region,
            Some(operator),
            &["get", "carts", key, "--json"],
            "",
        );
        let item: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        if item["attributes"]["qty"] == json!(qty) {
            Ok(Some(()))
        } else {
            Err(format!("{out:?}"))
        }
    });
}

/// Waits until `node`'s log says `words`.
fn wait_log(node: &Node, words: &str) {
    wait_for(
        &format!("{}'s log to say {words:?}", node.region),
        DEADLINE,
        || {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if log.contains(words) {
                Ok(Some(()))
            } else {
                Err(node.log_tail())
            }
        },
    );
}

#[test]
fn mutual_tls_admits_the_cluster_and_refuses_everyone_else() {
    let dir = tempfile::tempdir().expect("dir");
    let good = Ca::new("tributary test CA").expect("CA");
    let ca = good.write(dir.path(), "ca").expect("CA file");
    let pki = Pki { dir, ca, good };
    let d = pki.dir.path();
    let east = pki
        .good
        .leaf(d, "us-east-1", &["us-east-1"], false)
        .expect("certificate");
    let west = pki
        .good
        .leaf(d, "eu-west-1", &["eu-west-1"], false)
        .expect("certificate");
    let operator = pki
        .good
        .leaf(d, "operator", &["operator"], false)
        .expect("certificate");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Node::custom(
        d,
        "a",
        "us-east-1",
        pa,
        &(config(
            d,
            "us-east-1",
            "test",
            pa,
            &[("eu-west-1", pb)],
            &pki.ca,
            &east,
        ) + "[admin]\noperators = [\"operator\"]\n"),
    );
    let mut b = Node::custom(
        d,
        "b",
        "eu-west-1",
        pb,
        &config(
            d,
            "eu-west-1",
            "test",
            pb,
            &[("us-east-1", pa)],
            &pki.ca,
            &west,
        ),
    );
    a.launch();
    b.launch();

    // The valid pair replicates, and the operator's certificate reads.
    let write =
        json!({"table": "carts", "key": {"pk": "u1", "sk": "c"}, "add": {"qty": 3}}).to_string();
    wait_for("us-east-1 to accept a write over TLS", DEADLINE, || {
        let out = ctl(&pki, pa, "us-east-1", Some(&operator), &["write"], &write);
        if out.code == Some(0) {
            Ok(Some(()))
        } else {
            Err(format!("{out:?}"))
        }
    });
    wait_qty(&pki, pb, "eu-west-1", &operator, 3);

    // A certificate of the CA that is not an operator's reads, and may not
    // mutate.
    let viewer = pki
        .good
        .leaf(d, "viewer", &["viewer"], false)
        .expect("certificate");
    let out = ctl(&pki, pa, "us-east-1", Some(&viewer), &["status"], "");
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = ctl(&pki, pa, "us-east-1", Some(&viewer), &["write"], &write);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("may only read"), "{out:?}");

    // No client certificate, another CA, an expired certificate: refused
    // at the handshake, each cause in words in the node's log.
    let other = Ca::new("someone else's CA").expect("CA");
    let foreign = other
        .leaf(d, "foreign", &["operator"], false)
        .expect("certificate");
    let expired = pki
        .good
        .leaf(d, "expired", &["operator"], true)
        .expect("certificate");
    for (client, words) in [
        (None, "presented no certificate"),
        (Some(&foreign), "not signed by the configured CA"),
        (Some(&expired), "has expired"),
    ] {
        let out = ctl(&pki, pa, "us-east-1", client, &["status"], "");
        assert_eq!(out.code, Some(2), "{words}: {out:?}");
        wait_log(&a, words);
    }

    // A stalled handshake is closed at handshake_timeout.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", pa)).expect("connect");
    stalled.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 16];
    let read = stalled.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the stalled connection was served: {read:?}"
    );
    wait_log(&a, "did not finish within 1s");

    // Peers that are not who they claim, not in [[peers]], or of another
    // cluster: refused after the handshake, with the reason logged.
    let rogue = |name: &str, region: &str, cluster: &str, leaf: &Leaf| {
        let port = free_port();
        let mut node = Node::custom(
            d,
            name,
            region,
            port,
            &config(
                d,
                region,
                cluster,
                port,
                &[("us-east-1", pa)],
                &pki.ca,
                leaf,
            ),
        );
        node.launch();
        node
    };
    let south = pki
        .good
        .leaf(d, "ap-south-1", &["ap-south-1"], false)
        .expect("certificate");
    let impostor = rogue("impostor", "eu-west-1", "test", &south);
    wait_log(
        &a,
        "claims to be region eu-west-1 but its certificate does not name it",
    );
    let stranger = rogue("stranger", "ap-south-1", "test", &south);
    wait_log(&a, "region ap-south-1 is not a configured peer");
    let other_cluster = rogue("other-cluster", "eu-west-1", "other", &west);
    wait_log(&a, "peers of another cluster are refused");
    drop((impostor, stranger, other_cluster)); // killed

    // Rotation without restart: the CA file gains the other CA; the next
    // connection of its operator is admitted.
    let both = format!("{}{}", pki.good.pem, other.pem);
    std::fs::write(&pki.ca, both).expect("rotate the CA file");
    wait_for(
        "us-east-1 to admit the other CA's operator after the rotation",
        DEADLINE,
        || {
            let out = ctl(&pki, pa, "us-east-1", Some(&foreign), &["status"], "");
            if out.code == Some(0) {
                Ok(Some(()))
            } else {
                Err(format!("{out:?}"))
            }
        },
    );
    // Replication still flows.
    let write =
        json!({"table": "carts", "key": {"pk": "u1", "sk": "c"}, "add": {"qty": 4}}).to_string();
    let out = ctl(&pki, pb, "eu-west-1", Some(&operator), &["write"], &write);
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_qty(&pki, pa, "us-east-1", &operator, 7);
}

#[test]
fn admin_calls_need_a_credential_and_the_port_bounds_messages_and_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let (admin, read) = (d.join("admin.token"), d.join("read.token"));
    std::fs::write(&admin, "s3cret-admin\n").expect("token");
    std::fs::write(&read, "s3cret-read\n").expect("token");
    let port = free_port();
    // Loopback is not trusted here, so the test's calls count as remote.
    let text = format!(
        "region = \"us-east-1\"\ncluster = \"test\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n{TABLES}\
         [shipping]\nmax_message_bytes = \"64KiB\"\nbatch_max_bytes = \"32KiB\"\nmax_connections = 4\n\
         [admin]\ntoken_file = \"{}\"\nread_token_file = \"{}\"\ntrust_loopback = false\n",
        d.join("data").display(),
        admin.display(),
        read.display()
    );
    let mut node = Node::custom(d, "n", "us-east-1", port, &text);
    node.launch();
    let url = format!("http://127.0.0.1:{port}");
    let call = |token: Option<&Path>, args: &[&str], stdin: &str| {
        let mut all: Vec<String> = Vec::new();
        if let Some(t) = token {
            all.extend(["--token-file".to_owned(), t.display().to_string()]);
        }
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        replctl(&url, &refs, stdin)
    };
    let write =
        json!({"table": "carts", "key": {"pk": "u1", "sk": "c"}, "add": {"qty": 1}}).to_string();

    let out = call(None, &["status"], "");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("need a client certificate"), "{out:?}");
    wait_log(&node, "admin call refused");

    let out = call(Some(&read), &["status"], "");
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = call(Some(&read), &["write"], &write);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("may only read"), "{out:?}");

    let out = call(Some(&admin), &["write"], &write);
    assert_eq!(out.code, Some(0), "{out:?}");

    // Rotation: the token file is read at each call.
    let old = d.join("old.token");
    std::fs::copy(&admin, &old).expect("keep the old token");
    std::fs::write(&admin, "n3w-admin\n").expect("rotate");
    let out = call(Some(&old), &["status"], "");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("matches neither"), "{out:?}");
    let out = call(Some(&admin), &["write"], &write);
    assert_eq!(out.code, Some(0), "{out:?}");

    // An oversized message is refused whole.
    let big = json!({"table": "carts", "key": {"pk": "big", "sk": "c"},
        "set": {"note": "x".repeat(100 * 1024)}})
    .to_string();
    let out = call(Some(&admin), &["write"], &big);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("too large"), "{out:?}");

    // Connections beyond max_connections are closed at once; the port
    // serves again once they go.
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    wait_for(
        "the fifth connection to be closed at once",
        DEADLINE,
        || {
            let mut extra =
                std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            extra
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1];
            match extra.read(&mut buf) {
                Ok(0) => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    );
    wait_log(&node, "the port holds its maximum of open connections");
    drop(held);
    wait_for("the port to serve again", DEADLINE, || {
        let out = call(Some(&read), &["status"], "");
        if out.code == Some(0) {
            Ok(Some(()))
        } else {
            Err(format!("{out:?}"))
        }
    });
}

/// A log entry that originated in `region`, made by a real engine log.
fn entry_of(region: &str) -> tributary_engine::change::LogEntry {
    use tributary_engine::change::{Change, Op};
    use tributary_engine::ids::{AttrName, RegionId, Seq, TableName};
    use tributary_engine::key::ItemKey;
    use tributary_engine::log::{Log, LogConfig};
    use tributary_engine::schema::TableSchema;
    use tributary_engine::store::{Durability, MemStore};
    use tributary_engine::value::{AttrValue, Scalar};
    let table = TableName::new("carts").expect("table");
    let attr = |a: &str| AttrName::new(a).expect("attr");
    let schema = TableSchema::new(table.clone(), attr("pk"), Some(attr("sk"))).expect("schema");
    let region = RegionId::new(region).expect("region");
    let config = LogConfig {
        region: region.clone(),
        schemas: [schema].into_iter().collect(),
        max_clock_skew: std::time::Duration::from_secs(30),
        item_cache_bytes: LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    };
    let mut log = Log::open(
        MemStore::new(Durability::Buffered),
        config,
        tributary_engine::clock::SystemClock,
    )
    .expect("log");
    let change = Change {
        key: ItemKey::new(
            table,
            Scalar::S("stolen".into()),
            Some(Scalar::S("c".into())),
        )
        .expect("key"),
        ops: vec![Op::Set {
            attr: attr("note"),
            value: AttrValue::S("from nowhere".into()),
        }],
        source_millis: None,
    };
    log.ingest(&[change], Vec::new()).expect("ingest");
    log.entries(&region, Seq(0), 1).expect("entries").remove(0)
}

#[test]
fn a_peer_shipping_changes_of_a_region_outside_the_cluster_is_refused_then_penalised() {
    use tributary_proto::v1 as pb;
    use tributary_proto::v1::peer_client::PeerClient;
    use tributary_proto::v1::receiver_message::Body as ReceiverBody;
    use tributary_proto::v1::ship_message::Body as ShipBody;
    use tributary_replicator::link::{Batch, BatchId};
    use tributary_replicator::wire::ToWire;
    use tributary_replicator::wire::{Hello, PROTOCOL_VERSION, batch_to_wire};

    // Three refusals within 10 s put the sender in the penalty box.
    let mut cluster = tributary_tests::cluster::Cluster::start(
        &["us-east-1", "eu-west-1"],
        &[(0, 1)],
        "[shipping]\npenalty_after = 3\npenalty_initial = \"3s\"\n",
    );
    // This test speaks as eu-west-1 (a configured peer) from now on.
    cluster.kill9(1);
    let a = &cluster.nodes[0];
    let hello = Hello {
        cluster: "test".parse().expect("cluster"),
        region: tributary_engine::ids::RegionId::new("eu-west-1").expect("region"),
        protocol_version: PROTOCOL_VERSION,
        head: Default::default(),
        accepts_progress: false,
    };
    let batch = Batch {
        id: BatchId(1),
        entries: vec![entry_of("zz-rogue-1")],
    };
    let messages = vec![
        pb::ShipMessage {
            body: Some(ShipBody::Hello(hello.to_wire())),
        },
        pb::ShipMessage {
            body: Some(ShipBody::Batch(batch_to_wire(&batch).expect("encode"))),
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The refusal: at the hello (`Err`) or on the batch (`Ok(Err)`).
    let ship = || -> Result<tonic::Status, tonic::Status> {
        rt.block_on(async {
            let mut client = PeerClient::connect(a.url()).await.expect("connect");
            let mut replies = client
                .replicate(tokio_stream::iter(messages.clone()))
                .await?
                .into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(pb::ReceiverMessage {
                        body: Some(ReceiverBody::Welcome(_)),
                    })) => continue,
                    Ok(other) => panic!("expected a refusal, got {other:?}"),
                    Err(status) => break Ok(status),
                }
            }
        })
    };
    for attempt in 1..=3 {
        let status = ship().unwrap_or_else(|s| panic!("hello refused at attempt {attempt}: {s:?}"));
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("zz-rogue-1"), "{status:?}");
    }
    wait_log(a, "which is not in this cluster");
    let item = a.get("carts", r#"{"pk":"stolen","sk":"c"}"#);
    assert_eq!(item["exists"], json!(false), "{item}");
    // The fourth attempt is refused at once, before its batch is read.
    let status = ship().expect_err("a penalised peer's hello is refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("claiming eu-west-1")
            && status.message().contains("3 of its shipping streams"),
        "{status:?}"
    );
    wait_log(a, "the peer is refused at once until its penalty ends");
    assert!(
        a.metrics().contains("tributary_peer_penalties_total 1"),
        "{}",
        a.metrics()
    );
    // The penalty ends: the hello is admitted again (and the batch refused).
    wait_for("the penalty to end", DEADLINE, || match ship() {
        Ok(status) => Ok(Some(status)),
        Err(status) => Err(format!("{status:?}")),
    });
}

#[test]
fn a_bad_replacement_of_the_tls_files_keeps_the_old_ones_and_is_logged_once() {
    let cluster =
        tributary_tests::cluster::Cluster::start_secure_with(&["us-east-1"], &[], "", |_, _, p| p);
    let node = &cluster.nodes[0];
    let config = std::fs::read_to_string(&node.config).expect("config");
    let cert = config
        .lines()
        .find_map(|l| l.strip_prefix("cert = \"")?.strip_suffix('"'))
        .expect("the node's certificate file");
    std::fs::write(cert, "not a certificate").expect("replace the certificate");
    // Each call is a new connection; each is served with the old files.
    for _ in 0..5 {
        let out = node.ctl(&["status", "--json"], "");
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let words = "the replaced TLS files do not load";
    wait_log(node, words);
    let log = std::fs::read_to_string(&node.log).expect("log");
    assert_eq!(log.matches(words).count(), 1, "logged once: {log}");
}
