//! The embedded demo: three regions, each a real node (its own RocksDB in a
//! temporary directory, gRPC on a loopback port, peer links to the other
//! two), written to through the admin API. The regions make conflicting
//! writes to a shopping cart during a partition (every link paused), then
//! heal and converge. Beside each merged item it prints what DynamoDB
//! Global Tables' whole-item last-writer-wins would have kept, and the
//! cluster's replication lag as `replctl lag` reports it.
//!
//! The nodes speak mutual TLS, as a production cluster should: the demo
//! makes a throwaway CA and certificates ([`crate::pki`]) in a temporary
//! directory, and its own admin clients present an operator's certificate.
//!
//! With `serve`, the nodes keep running after the scenario and the
//! `replctl` commands to reach them (with the TLS files) are printed,
//! until Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::admin_client::AdminClient;

use crate::config::NodeConfig;
use crate::node::RunningNode;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];

/// How long the demo waits for the regions to converge.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);

/// What one region's application writes to one cart line.
struct LocalWrite {
    region: usize,
    line: &'static str,
    change: Value,
}

fn change(line: &str, ops: Value) -> Value {
    let mut c = json!({"table": "carts", "key": {"user": "alice", "line": line}});
    if let (Some(obj), Value::Object(ops)) = (c.as_object_mut(), ops) {
        obj.extend(ops);
    }
    c
}

/// One region of the demo: the node and an admin client of it.
struct Region {
    node: RunningNode,
    admin: AdminClient<Channel>,
}

/// The demo's TLS files: the CA, one certificate per region, and the
/// operator's (the demo's own admin clients, and `replctl`).
struct DemoTls {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    nodes: Vec<crate::pki::Leaf>,
    operator: crate::pki::Leaf,
}

impl DemoTls {
    fn make() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = crate::pki::Ca::new("tributary demo CA")?;
        let ca_file = ca.write(dir.path(), "ca")?;
        let nodes = REGIONS
            .iter()
            .map(|r| ca.leaf(dir.path(), r, &[r, "127.0.0.1"], false))
            .collect::<Result<_>>()?;
        let operator = ca.leaf(dir.path(), "operator", &["operator"], false)?;
        Ok(Self {
            dir,
            ca: ca_file,
            nodes,
            operator,
        })
    }

    /// An admin client of the node at `addr`, over mutual TLS.
    async fn admin(&self, addr: std::net::SocketAddr) -> Result<AdminClient<Channel>> {
        let files = std::sync::Arc::new(tributary_proto::tls::TlsFiles::load(
            tributary_proto::tls::Paths {
                ca: self.ca.clone(),
                cert: Some(self.operator.cert.clone()),
                key: Some(self.operator.key.clone()),
            },
        )?);
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .connect_with_connector(tributary_proto::tls::connector(files, None))
            .await?;
        Ok(AdminClient::new(channel))
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn config(i: usize, ports: &[u16], dir: &std::path::Path, tls: &DemoTls) -> Result<NodeConfig> {
    let mut text = format!(
        "region = \"{}\"\ncluster = \"demo\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n",
        REGIONS[i],
        dir.display(),
        ports[i]
    );
    for (j, r) in REGIONS.iter().enumerate() {
        if j != i {
            text.push_str(&format!(
                "[[peers]]\nregion = \"{r}\"\nendpoint = \"https://127.0.0.1:{}\"\n",
                ports[j]
            ));
        }
    }
    text.push_str(
        "[[tables]]\nname = \"carts\"\npartition_key = \"user\"\nsort_key = \"line\"\ncounters = [\"qty\"]\nsets = [\"tags\"]\n",
    );
    text.push_str(&format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        tls.ca.display(),
        tls.nodes[i].cert.display(),
        tls.nodes[i].key.display()
    ));
    Ok(NodeConfig::from_toml_str(&text)?)
}

impl Region {
    async fn write(&mut self, change: &Value) -> Result<()> {
        let resp = self
            .admin
            .write(pb::WriteRequest {
                changes_json: vec![change.to_string()],
            })
            .await?
            .into_inner();
        for r in resp.results {
            if let Some(pb::write_result::Result::Error(e)) = r.result {
                bail!("demo write refused: {e}");
            }
        }
        Ok(())
    }

    async fn item(&mut self, line: &str) -> Result<Value> {
        let key = json!({"user": "alice", "line": line}).to_string();
        let resp = self
            .admin
            .get(pb::GetRequest {
                table: "carts".into(),
                key_json: key,
                provenance: false,
            })
            .await?
            .into_inner();
        Ok(serde_json::from_str(&resp.item_json)?)
    }

    async fn digest(&mut self) -> Result<(u64, String)> {
        let d = self.admin.digest(pb::DigestRequest {}).await?.into_inner();
        Ok((d.items, d.digest))
    }

    async fn set_paused(&mut self, paused: bool) -> Result<()> {
        let me = self.node.core().region().clone();
        for peer in REGIONS.iter().filter(|r| **r != me.as_str()) {
            self.admin
                .set_peer_paused(pb::SetPeerPausedRequest {
                    peer: (*peer).to_owned(),
                    paused,
                })
                .await?;
        }
        Ok(())
    }
}

/// The visible attributes of an item, as plain JSON text per attribute.
fn render(item: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if item["exists"] != json!(true) {
        out.insert("(item)".into(), "deleted".into());
        return out;
    }
    if let Some(attrs) = item["attributes"].as_object() {
        for (k, v) in attrs {
            out.insert(k.clone(), v.to_string());
        }
    }
    out
}

/// Waits until every region reports the same digest and has no pending
/// records for any peer.
async fn converge(regions: &mut [Region]) -> Result<()> {
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    loop {
        let mut digests = Vec::new();
        for r in regions.iter_mut() {
            digests.push(r.digest().await?);
        }
        let pending: u64 = regions
            .iter()
            .flat_map(|r| r.node.core().lag().peers)
            .map(|p| p.pending_records)
            .sum();
        if pending == 0 && digests.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the regions did not converge within {CONVERGE_DEADLINE:?}: digests {digests:?}, {pending} records pending"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every region accepts writes (a node started on an empty
/// data dir waits for a peer before it writes; see the bootstrap gate).
async fn writable(regions: &[Region]) -> Result<()> {
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    while regions.iter().any(|r| r.node.core().write_gate().is_some()) {
        if Instant::now() > deadline {
            bail!("the regions did not reach each other within {CONVERGE_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn lag_table(out: &mut impl Write, regions: &[Region]) -> Result<()> {
    writeln!(out, "replctl lag, per region:")?;
    writeln!(
        out,
        "  {:<11} {:<11} {:>9} {:>7} {:>9} {:>10} {:>12}",
        "REGION", "PEER", "CONNECTED", "PENDING", "OLDEST(s)", "LAST-ACK(s)", "RATE(/s)"
    )?;
    for r in regions {
        let lag = r.node.core().lag();
        for p in &lag.peers {
            writeln!(
                out,
                "  {:<11} {:<11} {:>9} {:>7} {:>9.1} {:>10} {:>12.1}",
                lag.region.as_str(),
                p.peer.as_str(),
                if p.connected { "yes" } else { "no" },
                p.pending_records,
                p.oldest_pending_seconds,
                p.last_ack_seconds
                    .map_or("-".to_owned(), |s| format!("{s:.1}")),
                p.throughput_records_per_second
            )?;
        }
    }
    Ok(())
}

/// Plays the scenario and prints it to `out`; with `serve`, keeps the
/// nodes up afterwards until Ctrl-C.
pub fn run(out: &mut impl Write, serve: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(play(out, serve))
}

async fn play(out: &mut impl Write, serve: bool) -> Result<()> {
    let dirs: Vec<tempfile::TempDir> = REGIONS
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = REGIONS.iter().map(|_| free_port()).collect::<Result<_>>()?;
    let tls = DemoTls::make()?;
    let mut regions = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let node = RunningNode::start(config(i, &ports, dir.path(), &tls)?).await?;
        let admin = tls.admin(node.listen()).await?;
        regions.push(Region { node, admin });
    }
    writable(&regions).await?;

    writeln!(
        out,
        "Tributary demo: three regions, each a node with its own RocksDB and gRPC port (mutual TLS)"
    )?;
    for r in &regions {
        writeln!(
            out,
            "  {:<11} http://{}",
            r.node.core().region().as_str(),
            r.node.listen()
        )?;
    }
    writeln!(
        out,
        "One shopping cart (table carts, user alice). Policies: qty = counter, tags ="
    )?;
    writeln!(
        out,
        "add-wins set, everything else last-writer-wins per attribute.\n"
    )?;

    // Before the partition: us-east-1 creates two cart lines; all regions get them.
    regions[0]
        .write(&change(
            "espresso",
            json!({"set": {"name": "Espresso beans"}, "add": {"qty": 1}, "add_to_set": {"tags": ["gift"]}}),
        ))
        .await?;
    regions[0]
        .write(&change(
            "filters",
            json!({"set": {"name": "Paper filters"}, "add": {"qty": 2}}),
        ))
        .await?;
    converge(&mut regions).await?;
    writeln!(
        out,
        "1. us-east-1 adds two cart lines; every region has them."
    )?;

    // The partition: every link paused, every region writes on its own.
    for r in &mut regions {
        r.set_paused(true).await?;
    }
    let partition_writes = [
        LocalWrite {
            region: 0,
            line: "espresso",
            change: json!({"add": {"qty": 2}, "set": {"name": "Espresso beans 1kg"}}),
        },
        LocalWrite {
            region: 1,
            line: "espresso",
            change: json!({"add": {"qty": 3}, "add_to_set": {"tags": ["express"]}, "set": {"price": "12.50"}}),
        },
        LocalWrite {
            region: 2,
            line: "espresso",
            change: json!({"add": {"qty": 1}, "remove_from_set": {"tags": ["gift"]}}),
        },
        LocalWrite {
            region: 0,
            line: "filters",
            change: json!({"delete": true}),
        },
        LocalWrite {
            region: 1,
            line: "filters",
            change: json!({"add": {"qty": 5}}),
        },
    ];
    writeln!(out, "2. Partition (every link paused). Concurrently:")?;
    writeln!(
        out,
        "   us-east-1:  espresso qty +2, name := \"Espresso beans 1kg\";  filters DELETED"
    )?;
    writeln!(
        out,
        "   eu-west-1:  espresso qty +3, tags += express, price := \"12.50\";  filters qty +5"
    )?;
    writeln!(out, "   ap-south-1: espresso qty +1, tags -= gift")?;
    // What whole-item last-writer-wins keeps: the image of the region that
    // wrote last (here the order of the writes above).
    let mut lww_image: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for w in &partition_writes {
        let region = &mut regions[w.region];
        region.write(&change(w.line, w.change.clone())).await?;
        lww_image.insert(w.line, render(&region.item(w.line).await?));
    }
    writeln!(
        out,
        "   (whole-item last-writer-wins keeps the image of the region that wrote the line last)"
    )?;
    for r in &mut regions {
        r.set_paused(false).await?;
    }
    converge(&mut regions).await?;
    writeln!(
        out,
        "3. Heal: links resumed; the regions exchange their log entries and converge.\n"
    )?;

    for line in ["espresso", "filters"] {
        let mut merged = Vec::new();
        for r in &mut regions {
            merged.push(render(&r.item(line).await?));
        }
        let identical = merged.windows(2).all(|w| w[0] == w[1]);
        anyhow::ensure!(identical, "regions did not converge on {line}: {merged:?}");
        writeln!(
            out,
            "cart line {line:?}: all three regions identical: {}",
            if identical { "yes" } else { "NO" }
        )?;
        let lww = lww_image.get(line).cloned().unwrap_or_default();
        let attrs: std::collections::BTreeSet<&String> =
            merged[0].keys().chain(lww.keys()).collect();
        writeln!(
            out,
            "  {:<8} {:<34} {:<34}",
            "attr", "Tributary (merged)", "whole-item LWW would keep"
        )?;
        for a in attrs {
            let m = merged[0].get(a).map_or("-", String::as_str);
            let l = lww.get(a).map_or("-", String::as_str);
            let mark = if m == l { "" } else { "  <- differs" };
            writeln!(out, "  {a:<8} {m:<34} {l:<34}{mark}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Merged: every increment counts (espresso qty 1+2+3+1 = 7), the concurrent"
    )?;
    writeln!(
        out,
        "tag add survives the other region's remove, different attributes written in"
    )?;
    writeln!(
        out,
        "different regions all survive, and the update that raced the delete of"
    )?;
    writeln!(
        out,
        "\"filters\" keeps that line alive with only the increment the delete did not see.\n"
    )?;
    lag_table(out, &regions)?;

    if serve {
        writeln!(
            out,
            "\nServing until Ctrl-C (TLS files in {}). Try:",
            tls.dir.path().display()
        )?;
        for r in &regions {
            writeln!(
                out,
                "  replctl --node https://{} --ca {} --cert {} --key {} lag      # {}",
                r.node.listen(),
                tls.ca.display(),
                tls.operator.cert.display(),
                tls.operator.key.display(),
                r.node.core().region().as_str()
            )?;
        }
        out.flush()?;
        tokio::signal::ctrl_c().await?;
    }
    for r in regions {
        r.node.shutdown().await?;
    }
    Ok(())
}
