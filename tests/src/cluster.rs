//! A cluster of real `replicator` processes on loopback, driven through
//! the real `replctl`: what the multi-process and chaos tests share.
//!
//! Every node gets its own temporary data dir, config file, free ports and
//! a log file (its stderr), which [`Cluster`] prints when a wait fails.
//! Waiting is always on state, with a deadline, reporting the last state
//! seen ([`wait_for`]).
//!
//! The binaries are found beside the test executable's directory
//! (`target/<profile>/`): `cargo test --workspace` builds both, since the
//! replicator and tools packages have integration tests. The chaos tiers
//! take release builds instead when `scripts/test.sh` made them
//! ([`use_binaries_from`]).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_replicator::pki::Ca;

/// How long a wait lasts before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Where this test process takes its binaries from instead of its own
/// profile's directory (see [`use_binaries_from`]).
static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes every later [`binary`] of this test process come from `dir`
/// (e.g. `$CARGO_TARGET_DIR/release`: the chaos tiers run release builds).
/// The first call wins; `TRIBUTARY_BIN_DIR` still overrides it.
pub fn use_binaries_from(dir: PathBuf) {
    let chosen = BIN_DIR.get_or_init(|| dir.clone());
    assert_eq!(
        chosen,
        &dir,
        "binaries already taken from {}",
        chosen.display()
    );
}

/// A built binary of the workspace (`replicator`, `replctl`): from
/// `TRIBUTARY_BIN_DIR` when set, else from the directory given to
/// [`use_binaries_from`], else from the profile the test runs in.
pub fn binary(name: &str) -> PathBuf {
    let chosen = std::env::var_os("TRIBUTARY_BIN_DIR")
        .map(|d| (PathBuf::from(d), "TRIBUTARY_BIN_DIR"))
        .or_else(|| BIN_DIR.get().map(|d| (d.clone(), "use_binaries_from")));
    if let Some((dir, from)) = chosen {
        let path = dir.join(name);
        assert!(path.exists(), "{from}: {} is not built", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps/, a benchmark binary from
    // target/<profile>/: the workspace's binaries are in target/<profile>/.
    let mut dir = exe.parent().expect("target/<profile>/...");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target/<profile>/deps");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the suite with `cargo test --workspace` (scripts/test.sh)",
        path.display()
    );
    path
}

/// A free TCP port on loopback, below Linux's ephemeral range (32768+):
/// a port from that range could be taken by some outgoing connection
/// between the check and a node's (re)start.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1")
}

/// Polls `check` until it returns `Ok(Some(_))` or `deadline` passes; on
/// timeout panics with `what` and the last state `check` reported.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> T {
    let end = Instant::now() + deadline;
    let mut last = String::from("(never checked)");
    loop {
        match check() {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(state) => last = state,
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}; last state: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `replctl --node URL ARGS` with `stdin`.
pub fn replctl(url: &str, args: &[&str], stdin: &str) -> Ctl {
    let mut child = Command::new(binary("replctl"))
        .arg("--node")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replctl");
    // Fed from a thread: replctl answers while it reads, and a large
    // input must not fill both pipes.
    let feeder = child.stdin.take().map(|mut input| {
        let text = stdin.to_owned();
        std::thread::spawn(move || {
            let _ = input.write_all(text.as_bytes());
        })
    });
    let out: Output = child.wait_with_output().expect("run replctl");
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Ctl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One node: its files, ports and process.
pub struct Node {
    /// Its region id.
    pub region: String,
    /// Its gRPC port.
    pub port: u16,
    /// Its /metrics port.
    pub metrics_port: u16,
    /// Its config file.
    pub config: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    /// Extra environment for its process (e.g. a crash point), applied at
    /// the next launch.
    pub env: Vec<(String, String)>,
    /// `replctl`'s TLS arguments (`--ca`, `--cert`, `--key`) when the node
    /// speaks mutual TLS; empty for plaintext.
    pub tls: Vec<String>,
    child: Option<Child>,
}

/// What `replctl` did.
#[derive(Debug)]
pub struct Ctl {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ctl {
    /// Stdout as one JSON document; panics with the output otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("replctl printed no JSON ({e}): {self:?}"))
    }

    /// Stdout as JSON lines.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect()
    }
}

impl Node {
    /// The admin URL (`--node`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_empty() { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// True while its process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `replctl --node <this> ARGS` with `stdin`.
    pub fn ctl(&self, args: &[&str], stdin: &str) -> Ctl {
        let all: Vec<&str> = self
            .tls
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        replctl(&self.url(), &all, stdin)
    }

    /// `replctl write` of `lines`; panics unless every line was accepted.
    /// Returns the `{"origin","seq"}` results.
    pub fn write_ok(&self, lines: &[String]) -> Vec<Value> {
        let out = self.ctl(&["write"], &(lines.join("\n") + "\n"));
        assert_eq!(
            out.code,
            Some(0),
            "replctl write on {}: {out:?}",
            self.region
        );
        let results = out.json_lines();
        assert_eq!(results.len(), lines.len(), "{out:?}");
        results
    }

    /// `replctl digest --json`, or the failure as text.
    pub fn digest(&self) -> Result<(u64, String), String> {
        let out = self.ctl(&["digest", "--json"], "");
        if out.code != Some(0) {
            return Err(format!("{}: {}", self.region, out.stderr.trim()));
        }
        let v = out.json();
        Ok((
            v["items"].as_u64().unwrap_or_default(),
            v["digest"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// `replctl lag --json`.
    pub fn lag(&self) -> Result<Value, String> {
        let out = self.ctl(&["lag", "--json"], "");
        match out.code {
            Some(0 | 1) => Ok(out.json()),
            _ => Err(format!("{}: {}", self.region, out.stderr.trim())),
        }
    }

    /// `replctl get TABLE KEY --json`.
    pub fn get(&self, table: &str, key: &str) -> Value {
        let out = self.ctl(&["get", table, key, "--json"], "");
        assert_eq!(out.code, Some(0), "{out:?}");
        out.json()
    }

    /// `replctl status --json`.
    pub fn status(&self) -> Value {
        let out = self.ctl(&["status", "--json"], "");
        assert_eq!(out.code, Some(0), "{out:?}");
        out.json()
    }

    /// Waits until the merged item `key` (JSON) of `table` shows `check`;
    /// a timeout reports the item as last seen.
    pub fn wait_item(&self, table: &str, key: &str, what: &str, check: impl Fn(&Value) -> bool) {
        wait_for(what, DEADLINE, || {
            let item = self.get(table, key);
            if check(&item) {
                Ok(Some(()))
            } else {
                Err(item.to_string())
            }
        });
    }

    /// Waits until the sink named `sink` in `replctl status` (e.g.
    /// `sink:dynamodb:carts`) has nothing left to write.
    pub fn wait_sink_idle(&self, sink: &str) {
        wait_for("the sinks to have nothing left to write", DEADLINE, || {
            let s = self.status();
            if s["sinks"][sink]["backlog"] == serde_json::json!(0) {
                Ok(Some(()))
            } else {
                Err(s["sinks"].to_string())
            }
        });
    }

    /// A node whose config file is `text`, with files named `name` in
    /// `dir` (not started; see [`Node::launch`]).
    pub fn custom(dir: &Path, name: &str, region: &str, port: u16, text: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).expect("write config");
        Self {
            region: region.to_owned(),
            port,
            metrics_port: 0,
            config,
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            env: Vec::new(),
            tls: Vec::new(),
            child: None,
        }
    }

    /// Starts the process and waits until it serves.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut child = Command::new(binary("replicator"))
            // Tests talk to moto, never to AWS: static credentials, and no
            // instance-metadata probing.
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn replicator");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "{} did not start; its log:\n{}",
                self.region,
                self.log_tail()
            )
        });
        assert!(
            line.starts_with("listening on"),
            "{}: {line}\n{}",
            self.region,
            self.log_tail()
        );
    }

    /// Removes its data dir (the node must not be running).
    pub fn wipe(&mut self) {
        assert!(!self.is_running(), "wipe {} while it runs", self.region);
        std::fs::remove_dir_all(&self.data_dir).expect("wipe the data dir");
    }

    /// The Prometheus text of its `/metrics` endpoint.
    pub fn metrics(&self) -> String {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request /metrics");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        text
    }

    /// Waits until the process ends by itself (e.g. at a crash point);
    /// its exit status.
    pub fn wait_exit(&mut self, what: &str) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the node was launched");
        let status = wait_for(what, DEADLINE, || match child.try_wait() {
            Ok(Some(status)) => Ok(Some(status)),
            Ok(None) => Err("still running".to_owned()),
            Err(e) => Err(e.to_string()),
        });
        self.child = None;
        status
    }

    /// SIGKILLs the process (no shutdown, no flush).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a `kill -s` name: `STOP`, `CONT`, ...) to the
    /// process, through kill(1) to keep `unsafe` out; false if it is not
    /// running or kill failed.
    pub fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGTERMs the process and waits for it to exit; returns its code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = i32::try_from(c.id()).expect("pid");
        // SAFETY-free: kill(1) via the command line keeps `unsafe` out.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM",
                self.region
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The tail of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Nodes, their links and their files.
pub struct Cluster {
    /// The nodes, in the order given.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// The table every cluster test uses.
pub const TABLES: &str = r#"
[[tables]]
name = "carts"
partition_key = "pk"
sort_key = "sk"
counters = ["qty"]
sets = ["tags"]
multi = ["note"]
"#;

impl Cluster {
    /// `replctl VERB REGION` (`pause`, `resume`) on every node, for every
    /// other node's region.
    pub fn set_links(&self, verb: &str) {
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|n| n.region != node.region) {
                let out = node.ctl(&[verb, &other.region], "");
                assert_eq!(out.code, Some(0), "{verb} {}: {out:?}", other.region);
            }
        }
    }

    /// Writes the configs of `regions`, peered along `links` (pairs of
    /// indexes, both directions), with `extra` TOML appended to each, and
    /// starts every node.
    pub fn start(regions: &[&str], links: &[(usize, usize)], extra: &str) -> Self {
        Self::start_with(regions, links, extra, |_, _, port| port)
    }

    /// [`Cluster::start`], with node `from`'s peer endpoint for node `to`
    /// on the port `endpoint(from, to, to's gRPC port)` returns — a fault
    /// proxy's, for the chaos tests. The admin API stays direct.
    pub fn start_with(
        regions: &[&str],
        links: &[(usize, usize)],
        extra: &str,
        endpoint: impl FnMut(usize, usize, u16) -> u16,
    ) -> Self {
        Self::start_each(regions, links, |_| extra.to_owned(), endpoint)
    }

    /// [`Cluster::start_with`], with the extra TOML of node `i` given by
    /// `extra(i)` (e.g. sources and sinks in the node's own AWS region).
    pub fn start_each(
        regions: &[&str],
        links: &[(usize, usize)],
        extra: impl Fn(usize) -> String,
        endpoint: impl FnMut(usize, usize, u16) -> u16,
    ) -> Self {
        Self::build(regions, links, extra, endpoint, false)
    }

    /// [`Cluster::start_with`] with mutual TLS on every node: a CA made
    /// for the cluster, a certificate per region (its region id and
    /// 127.0.0.1), `https` peers, and an operator certificate `replctl`
    /// presents ([`Node::ctl`], [`Node::tls`]).
    pub fn start_secure_with(
        regions: &[&str],
        links: &[(usize, usize)],
        extra: &str,
        endpoint: impl FnMut(usize, usize, u16) -> u16,
    ) -> Self {
        Self::build(regions, links, |_| extra.to_owned(), endpoint, true)
    }

    fn build(
        regions: &[&str],
        links: &[(usize, usize)],
        extra: impl Fn(usize) -> String,
        mut endpoint: impl FnMut(usize, usize, u16) -> u16,
        secure: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = secure.then(|| {
            let ca = Ca::new("tributary test cluster CA").expect("CA");
            let ca_file = ca.write(dir.path(), "ca").expect("CA file");
            let operator = ca
                .leaf(dir.path(), "operator", &["operator"], false)
                .expect("operator certificate");
            (ca, ca_file, operator)
        });
        let scheme = if secure { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = regions.iter().map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            let mut peers = String::new();
            for &(a, b) in links {
                let other = if a == i {
                    b
                } else if b == i {
                    a
                } else {
                    continue;
                };
                peers.push_str(&format!(
                    "[[peers]]\nregion = \"{}\"\nendpoint = \"{scheme}://127.0.0.1:{}\"\n",
                    regions[other],
                    endpoint(i, other, ports[other].0)
                ));
            }
            let data_dir = dir.path().join(region);
            let config = dir.path().join(format!("{region}.toml"));
            let (port, metrics_port) = ports[i];
            // Every region, so that relayed changes (a line or ring of
            // links) are accepted.
            let all = regions
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = format!(
                "region = \"{region}\"\ncluster = \"test\"\nregions = [{all}]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{}\n{peers}{TABLES}",
                data_dir.display(),
                extra(i)
            );
            let mut tls = Vec::new();
            if let Some((ca, ca_file, operator)) = &pki {
                let leaf = ca
                    .leaf(dir.path(), region, &[region, "127.0.0.1"], false)
                    .expect("node certificate");
                text.push_str(&format!(
                    "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    ca_file.display(),
                    leaf.cert.display(),
                    leaf.key.display()
                ));
                tls = [
                    "--ca",
                    &ca_file.display().to_string(),
                    "--cert",
                    &operator.cert.display().to_string(),
                    "--key",
                    &operator.key.display().to_string(),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            }
            std::fs::write(&config, text).expect("write config");
            nodes.push(Node {
                region: (*region).to_owned(),
                port,
                metrics_port,
                config,
                data_dir,
                log: dir.path().join(format!("{region}.log")),
                env: Vec::new(),
                tls,
                child: None,
            });
        }
        let mut cluster = Self { nodes, dir };
        for i in 0..regions.len() {
            cluster.launch(i);
        }
        // Nodes that start empty open local writes once every peer has
        // told them how far their own origin went (the bootstrap gate).
        for node in &cluster.nodes {
            wait_for("the node to open local writes", DEADLINE, || {
                let out = node.ctl(&["status", "--json"], "");
                if out.code != Some(0) {
                    return Err(out.stderr);
                }
                let status = out.json();
                if status["bootstrapping"] == Value::Bool(false) {
                    Ok(Some(()))
                } else {
                    Err(status.to_string())
                }
            });
        }
        cluster
    }

    /// The temporary directory holding every node's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts node `i` and waits until it serves.
    pub fn launch(&mut self, i: usize) {
        self.nodes[i].launch();
    }

    /// SIGKILLs node `i`.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Waits until every running node reports the same digest over a
    /// non-empty set of items; returns it.
    pub fn wait_converged(&self, what: &str) -> (u64, String) {
        wait_for(what, DEADLINE, || {
            let digests: Vec<Result<(u64, String), String>> =
                self.nodes.iter().map(Node::digest).collect();
            let seen = format!("{digests:?}");
            let first = digests[0].clone().map_err(|_| seen.clone())?;
            if first.0 > 0 && digests.iter().all(|d| d.as_ref().ok() == Some(&first)) {
                Ok(Some(first))
            } else {
                Err(seen)
            }
        })
    }

    /// Waits until no node has records pending for any peer (every
    /// entry acknowledged everywhere).
    pub fn wait_drained(&self, what: &str) {
        wait_for(what, DEADLINE, || {
            let mut seen = Vec::new();
            for node in &self.nodes {
                let lag = node.lag()?;
                let pending: u64 = lag["peers"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["pending_records"].as_u64())
                            .sum()
                    })
                    .unwrap_or(u64::MAX);
                seen.push(format!("{}: {pending}", node.region));
                if pending != 0 {
                    return Err(seen.join(", "));
                }
            }
            Ok(Some(()))
        });
    }

    /// Every node's log tail.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.region, n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Node {
    /// A node never outlives its test.
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
    }
}

/// Asserts that each of `regions` advanced its own log by exactly one entry
/// between the applied vectors `before` and `after` (`replctl status`'s
/// `applied`): the sidecar tests' barrier write, with no echo of a sink's
/// write taken back in as a local change.
pub fn assert_each_origin_advanced_once(regions: &[&str], before: &Value, after: &Value) {
    for region in regions {
        let (x, y) = (before[*region].as_u64(), after[*region].as_u64());
        assert_eq!(
            y,
            x.map(|x| x + 1),
            "origin {region}: log went from {x:?} to {y:?}; only the barrier write was expected \
             (before {before}, after {after})"
        );
    }
}
