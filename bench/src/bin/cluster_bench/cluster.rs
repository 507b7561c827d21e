//! The cluster under test: one `replicator run` process per region on
//! loopback, full mesh, each in a temporary directory (data, config, log).
//!
//! Invariant: every child is killed when the [`Cluster`] is dropped —
//! normal end, error or panic — so a failed run leaves no node behind.
//! Only the processes started here are ever signalled, by their own handle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tributary_tests::cluster::free_port;

/// How long a node may take to print `listening on ADDR`.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Durability of the nodes' commits (`[storage] sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    /// fsync every commit.
    Always,
    /// Group commit (fsync every `group_commit_interval`, 5 ms by default).
    Group,
}

impl SyncMode {
    /// The value in the node's TOML.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Group => "group",
        }
    }
}

/// One running node.
pub struct Node {
    /// Its region.
    pub region: &'static str,
    /// Its gRPC address (peers and admin API).
    pub listen: SocketAddr,
    /// Its `/metrics` address.
    pub metrics: Option<SocketAddr>,
    /// Its process id.
    pub pid: u32,
    child: Child,
    /// Kept open: the node must never write to a closed stdout.
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

/// The running nodes and their temporary directory.
pub struct Cluster {
    /// Nodes, in the order of the regions given to [`Cluster::start`].
    pub nodes: Vec<Node>,
    // Dropped after the nodes (field order): the children are killed first.
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // SIGKILL to our own child; tokio reaps it.
            let _ = n.child.start_kill();
        }
    }
}

/// The node configuration of `region`, peers with every other region.
fn config(
    region: &str,
    listen: SocketAddr,
    data: &Path,
    peers: &[(&str, SocketAddr)],
    sync: SyncMode,
    shipping: &[String],
) -> String {
    let mut s = format!(
        "region = \"{region}\"\ncluster = \"bench\"\ndata_dir = \"{}\"\nlisten = \"{listen}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n",
        data.display()
    );
    for (peer, addr) in peers.iter().filter(|(p, _)| *p != region) {
        s.push_str(&format!(
            "[[peers]]\nregion = \"{peer}\"\nendpoint = \"http://{addr}\"\n\n"
        ));
    }
    s.push_str(
        "[[tables]]\nname = \"carts\"\npartition_key = \"pk\"\nsort_key = \"sk\"\ncounters = [\"qty\"]\n\n",
    );
    s.push_str(&format!("[storage]\nsync = \"{}\"\n", sync.name()));
    if !shipping.is_empty() {
        s.push_str("\n[shipping]\n");
        for line in shipping {
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

impl Cluster {
    /// The temporary directory holding every node's data, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts one node per region with `binary` and waits until each has
    /// printed its listen address; `shipping` are lines of the nodes'
    /// `[shipping]` table. With `keep`, the temporary directory (data,
    /// configs, logs) is left behind for inspection.
    pub async fn start(
        binary: &Path,
        regions: &[&'static str],
        sync: SyncMode,
        shipping: &[String],
        keep: bool,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cluster-bench-")
            .disable_cleanup(keep)
            .tempdir()
            .context("create the temporary directory")?;
        // Ports below Linux's ephemeral range, as the tests' clusters use:
        // one from that range (what binding port 0 gives) can be taken by
        // an outgoing connection before the node binds it.
        let addrs: Vec<(&str, SocketAddr)> = regions
            .iter()
            .map(|r| (*r, SocketAddr::from(([127, 0, 0, 1], free_port()))))
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for &(region, listen) in &addrs {
            let home = cluster.dir.path().join(region);
            std::fs::create_dir_all(&home)?;
            let cfg_path = home.join("node.toml");
            std::fs::write(
                &cfg_path,
                config(region, listen, &home.join("data"), &addrs, sync, shipping),
            )?;
            let log = home.join("node.log");
            let stderr = std::fs::File::create(&log)?;
            let mut child = Command::new(binary)
                .arg("run")
                .arg("--config")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("start {} for {region}", binary.display()))?;
            let pid = child
                .id()
                .ok_or_else(|| anyhow!("{region}: the node exited at once"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| anyhow!("{region}: no stdout pipe"))?;
            cluster.nodes.push(Node {
                region,
                listen,
                metrics: None,
                pid,
                child,
                stdout: BufReader::new(stdout).lines(),
                log,
            });
        }
        for i in 0..cluster.nodes.len() {
            let waited =
                tokio::time::timeout(START_DEADLINE, read_addresses(&mut cluster.nodes[i])).await;
            let node = &cluster.nodes[i];
            match waited {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("{}: {e:#}\n{}", node.region, node.log_tail()),
                Err(_) => bail!(
                    "{}: no `listening on` line within {START_DEADLINE:?}\n{}",
                    node.region,
                    node.log_tail()
                ),
            }
        }
        Ok(cluster)
    }
}

/// Reads `listening on ADDR` and `metrics on http://ADDR/metrics`.
async fn read_addresses(node: &mut Node) -> Result<()> {
    let first = node
        .stdout
        .next_line()
        .await?
        .ok_or_else(|| anyhow!("the node exited before printing its address"))?;
    let addr = first
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("unexpected first line {first:?}"))?;
    let addr: SocketAddr = addr.trim().parse().context("parse the listen address")?;
    if addr != node.listen {
        bail!("listens on {addr}, configured {}", node.listen);
    }
    if let Some(line) = node.stdout.next_line().await? {
        node.metrics = line
            .strip_prefix("metrics on http://")
            .and_then(|r| r.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok());
    }
    Ok(())
}

impl Node {
    /// The last lines of the node's log (stderr), for error reports.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// The node's admin/peer endpoint as a URI.
    pub fn uri(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Peak resident set size (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("{}: read /proc/{}/status", self.region, self.pid))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("{}: no VmHWM in /proc status", self.region))?;
        Ok(kib / 1024.0)
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(&format!("/proc/{}/stat", self.pid))
    }

    /// Scheduler times so far: of the node's `log-writer` thread, and of
    /// all its threads together.
    pub fn sched(&self) -> Result<NodeSched> {
        let mut out = NodeSched::default();
        let tasks = format!("/proc/{}/task", self.pid);
        for task in std::fs::read_dir(&tasks).with_context(|| format!("list {tasks}"))? {
            let dir = task?.path();
            // A thread may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
                continue;
            };
            let t = Sched::parse(&stat)?;
            out.all.on_cpu += t.on_cpu;
            out.all.waiting += t.waiting;
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() == "log-writer" {
                out.writer = t;
            }
        }
        Ok(out)
    }

    /// The node's Prometheus text.
    pub async fn scrape(&self) -> Result<Metrics> {
        let addr = self
            .metrics
            .ok_or_else(|| anyhow!("{}: no metrics address", self.region))?;
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .ok_or_else(|| anyhow!("{}: malformed /metrics response", self.region))?;
        Ok(Metrics(body))
    }
}

/// A thread's scheduler times (from `/proc/…/schedstat`), in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sched {
    /// Time running on a CPU.
    pub on_cpu: f64,
    /// Time runnable but waiting for a CPU (run-queue wait).
    pub waiting: f64,
}

impl Sched {
    /// Parses `schedstat`: `run_ns wait_ns timeslices`.
    fn parse(text: &str) -> Result<Self> {
        let mut f = text.split_whitespace().map(str::parse::<u64>);
        let mut next = || -> Result<f64> {
            Ok(f.next()
                .ok_or_else(|| anyhow!("schedstat: too few fields"))?
                .context("schedstat: not a number")? as f64
                / 1e9)
        };
        Ok(Sched {
            on_cpu: next()?,
            waiting: next()?,
        })
    }

    /// `self - earlier`.
    pub fn minus(self, earlier: Sched) -> Sched {
        Sched {
            on_cpu: self.on_cpu - earlier.on_cpu,
            waiting: self.waiting - earlier.waiting,
        }
    }
}

/// Scheduler times of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeSched {
    /// The `log-writer` thread (every commit goes through it).
    pub writer: Sched,
    /// Every thread, summed.
    pub all: Sched,
}

/// CPU time (utime + stime) of the process whose `stat` file is `path`,
/// in seconds (USER_HZ is 100 on Linux).
pub fn cpu_seconds_of(path: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // Fields after the command name, which is in parentheses and may
    // contain spaces; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path}: malformed"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("{path}: field {} missing", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU time used by every process of the machine (user, nice, system,
/// irq, softirq, steal) since boot, in seconds.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let cpu = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat: no cpu line"))?;
    let f: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Ok(busy / 100.0)
}

/// The node counters the report uses, in [`Counters`]' order.
const COUNTERS: [&str; 15] = [
    "tributary_entries_sent_total",
    "tributary_bytes_sent_total",
    "tributary_batches_sent_total",
    "tributary_batches_received_total",
    "tributary_entries_applied_total",
    "tributary_duplicate_entries_total",
    "tributary_parked_entries_total",
    "tributary_apply_stops_total",
    "tributary_reconnects_total",
    "tributary_apply_seconds_count",
    "tributary_apply_seconds_sum",
    "tributary_write_seconds_count",
    "tributary_write_seconds_sum",
    "tributary_group_commit_jobs_count",
    "tributary_group_commit_jobs_sum",
];

/// A snapshot of a node's counters (each summed over its labels); two
/// snapshots subtract to what happened between them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters([f64; COUNTERS.len()]);

impl Counters {
    /// Reads them from a scrape.
    pub fn of(m: &Metrics) -> Self {
        Counters(COUNTERS.map(|name| m.sum(name)))
    }

    /// The value of counter `name` (one of the Prometheus names above;
    /// 0 for any other).
    pub fn get(&self, name: &str) -> f64 {
        COUNTERS
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// `self - earlier`, counter by counter.
    pub fn minus(&self, earlier: &Counters) -> Counters {
        let mut out = *self;
        for (o, e) in out.0.iter_mut().zip(earlier.0) {
            *o -= e;
        }
        out
    }

    /// The sum of several snapshots.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut out = Counters::default();
        for c in all {
            for (o, v) in out.0.iter_mut().zip(c.0) {
                *o += v;
            }
        }
        out
    }
}

/// A node's `/metrics` text.
pub struct Metrics(String);

impl Metrics {
    /// The sum of every series of `name` (all label values).
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                if !(rest.starts_with('{') || rest.starts_with(' ')) {
                    return None;
                }
                l.rsplit_once(' ')?.1.parse::<f64>().ok()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_cover_every_label_and_only_the_exact_name() {
        let m = Metrics(
            "# HELP x\ntributary_entries_sent_total{peer=\"a\"} 10\ntributary_entries_sent_total{peer=\"b\"} 5\ntributary_entries_sent_totalx 100\ntributary_writes_total 3\n"
                .to_owned(),
        );
        assert_eq!(m.sum("tributary_entries_sent_total"), 15.0);
        assert_eq!(m.sum("tributary_writes_total"), 3.0);
        assert_eq!(m.sum("tributary_missing"), 0.0);
    }

    #[test]
    fn schedstat_is_in_nanoseconds() {
        let s = Sched::parse("2500000000 500000000 42\n").expect("parse");
        assert_eq!(
            s,
            Sched {
                on_cpu: 2.5,
                waiting: 0.5
            }
        );
        assert!(Sched::parse("12").is_err());
    }

    #[test]
    fn counters_subtract_and_add_by_name() {
        let m = |v: &str| {
            Counters::of(&Metrics(format!(
                "tributary_entries_sent_total{{peer=\"a\"}} {v}\ntributary_apply_seconds_sum 0.5\n"
            )))
        };
        let d = m("30").minus(&m("10"));
        assert_eq!(d.get("tributary_entries_sent_total"), 20.0);
        assert_eq!(d.get("tributary_apply_seconds_sum"), 0.0);
        let s = Counters::sum([&m("1"), &m("2")]);
        assert_eq!(s.get("tributary_entries_sent_total"), 3.0);
        assert_eq!(s.get("tributary_apply_seconds_sum"), 1.0);
        assert_eq!(s.get("not a counter"), 0.0);
    }

    #[test]
    fn config_lists_the_other_regions_as_peers() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let text = config(
            "r-a",
            a,
            Path::new("/d"),
            &[("r-a", a), ("r-b", b)],
            SyncMode::Group,
            &["relay_hold = \"0s\"".to_owned()],
        );
        assert!(text.contains("endpoint = \"http://127.0.0.1:2\""));
        assert!(text.contains("[shipping]\nrelay_hold = \"0s\""));
        assert!(!text.contains("http://127.0.0.1:1"));
        assert!(text.contains("sync = \"group\""));
    }
}
