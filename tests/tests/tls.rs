//! Mutual TLS between regions and for the admin API, with real processes
//! and certificates the test generates: one valid pair replicates; every
//! bad certificate, a stalled handshake, an impostor and another cluster
//! are refused with the cause in the node's log; replaced certificate files
//! apply without a restart.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use tributary_tests::cluster::{Ctl, DEADLINE, Node, TABLES, free_port, replctl, wait_for};
use tributary_tests::pki::{Ca, Leaf};

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
    let good = Ca::new("tributary test CA");
    let ca = good.write(dir.path(), "ca");
    let pki = Pki { dir, ca, good };
    let d = pki.dir.path();
    let east = pki.good.leaf(d, "us-east-1", &["us-east-1"], false);
    let west = pki.good.leaf(d, "eu-west-1", &["eu-west-1"], false);
    let operator = pki.good.leaf(d, "operator", &["operator"], false);
    let (pa, pb) = (free_port(), free_port());
    let mut a = Node::custom(
        d,
        "a",
        "us-east-1",
        pa,
        &config(
            d,
            "us-east-1",
            "test",
            pa,
            &[("eu-west-1", pb)],
            &pki.ca,
            &east,
        ),
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

    // No client certificate, another CA, an expired certificate: refused
    // at the handshake, each cause in words in the node's log.
    let other = Ca::new("someone else's CA");
    let foreign = other.leaf(d, "foreign", &["operator"], false);
    let expired = pki.good.leaf(d, "expired", &["operator"], true);
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
    let south = pki.good.leaf(d, "ap-south-1", &["ap-south-1"], false);
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
