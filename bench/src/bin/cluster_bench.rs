//! Cross-region replication on loopback, against raw tonic streaming of the
//! same bytes measured in the same run.
//!
//! Three `replicator run` processes (us-east-1, eu-west-1, ap-south-1), full
//! mesh, each receiving local writes at a fixed offered rate (open loop)
//! through the admin API. Measured:
//!
//! - **steady phase**: sustained replicated changes/s (applied at
//!   receivers, from their applied vectors) and end-to-end visibility lag
//!   p50/p99/max over every ordered pair: write acknowledged by region A's
//!   node → first `Offsets` poll of region B whose applied vector covers it
//!   (polled every `--poll-ms`, so the lag is exact to within one poll
//!   interval plus one round trip, both printed);
//! - **catch-up**: every link into eu-west-1 paused for `--pause` seconds
//!   while all writers continue (with `--pause-links one`, only
//!   us-east-1 → eu-west-1; each link forwards every origin, so eu-west-1
//!   then still gets us-east-1's entries through ap-south-1), then resumed:
//!   backlog at resume / time until eu-west-1 covers the heads at resume.
//!   Skipped when the steady phase's writes are not everywhere within
//!   `--drain-timeout` (the cluster did not keep up with the offer);
//! - each node's peak RSS (VmHWM) and CPU time, its `log-writer` thread's
//!   time on a CPU and waiting for one (`/proc/…/schedstat`), the node
//!   counters of each phase (batches, duplicates, commit rounds), what the
//!   polling alone costs (2 s before the load), and how busy the machine
//!   was with other processes (it is shared);
//! - **baseline**: an in-process tonic `Peer` server that acks each batch
//!   at once, streamed batches of 1,000 entries of the size measured on the
//!   nodes' links (`bytes_sent / entries_sent`), 8 in flight (the node default), as many
//!   entries as were replicated in the steady phase.
//!
//! Prints a report, whether the targets are met (p99 lag ≤ 50 ms at
//! 5,000 changes/s per region; catch-up ≥ 50,000 changes/s), and one JSON
//! line. Needs the node binary next to this one:
//! `cargo build --release -p tributary-replicator --bin replicator`.
//!
//! Run: `cargo run --release -p tributary-bench --bin cluster_bench [-- --duration 20 --pause 10]`

// The binary's modules live in `cluster_bench/` (a crate root's `mod`
// would otherwise look beside it, among the other binaries).
#[path = "cluster_bench/cluster.rs"]
mod cluster;
#[path = "cluster_bench/lag.rs"]
mod lag;
#[path = "cluster_bench/raw_tonic.rs"]
mod raw_tonic;
#[path = "cluster_bench/report.rs"]
mod report;
#[path = "cluster_bench/workload.rs"]
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tributary_proto::v1 as pb;
use tributary_proto::v1::admin_client::AdminClient;

use crate::cluster::{Cluster, Counters, NodeSched, SyncMode};
use crate::lag::{Micros, Observed, Seq, monotone, summarize, visibility_lags};
use crate::report::{CatchUp, Measured, PairLag, Phase};
use crate::workload::{
    Clock, PollLog, Poller, REGIONS, Sample, Vector, Writer, WriterConfig, WriterLog,
};

/// The region cut off during the pause.
pub const RECEIVER: usize = 1;

/// Which links the pause phase stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PauseLinks {
    /// Every link into eu-west-1 (us-east-1 → eu-west-1 and
    /// ap-south-1 → eu-west-1): eu-west-1 receives nothing.
    AllInto,
    /// Only us-east-1 → eu-west-1 (its entries still arrive through
    /// ap-south-1).
    One,
}

/// What the writers do while the receiver catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatchUpLoad {
    /// They go on offering `--rate` in every region: the catch-up gets
    /// what the load leaves of the machine.
    Continue,
    /// They stop when the links resume: the catch-up has the machine to
    /// itself, which measures the shipping pipeline's own capacity.
    Stop,
}

/// Cluster replication benchmark: 3 nodes on loopback.
#[derive(Debug, Parser)]
pub struct Args {
    /// Offered local writes per second, per region.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Length of the measured steady phase, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// How long links stay paused before the catch-up, in seconds.
    #[arg(long, default_value_t = 30)]
    pub pause: u64,
    /// The nodes' `[storage] sync`.
    #[arg(long, value_enum, default_value_t = SyncMode::Group)]
    pub sync: SyncMode,
    /// Which links the pause stops.
    #[arg(long, value_enum, default_value_t = PauseLinks::AllInto)]
    pub pause_links: PauseLinks,
    /// What the writers do during the catch-up.
    #[arg(long, value_enum, default_value_t = CatchUpLoad::Continue)]
    pub catch_up_load: CatchUpLoad,
    /// The nodes' `[shipping] relay_hold` (e.g. "0s"; default: the node's).
    #[arg(long)]
    pub relay_hold: Option<String>,
    /// A line of the nodes' `[shipping]` table, in TOML (repeatable), e.g.
    /// `--shipping max_in_flight_batches=8` or
    /// `--shipping 'batch_linger="1ms"'`.
    #[arg(long)]
    pub shipping: Vec<String>,
    /// Load before the steady phase starts, in seconds (not measured).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// How often each node's applied vector is polled, in milliseconds.
    /// Lags are exact to within one interval plus a round trip; polling
    /// costs CPU on the nodes and here (the report prints how much, before
    /// the load): every 1 ms measured ~0.4 node cores + ~0.35 benchmark
    /// cores on the 2-core machine, hence 5 ms by default.
    #[arg(long, default_value_t = 5)]
    pub poll_ms: u64,
    /// One write request per region every this many milliseconds.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Distinct items written to (shared by the regions).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Longest wait for the catch-up, in seconds.
    #[arg(long, default_value_t = 180)]
    pub catch_up_timeout: u64,
    /// Longest wait, after the steady phase, for its writes to be visible
    /// everywhere; a cluster that needs longer did not keep up with the
    /// offer, and the catch-up phase is skipped.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,
    /// Print a progress line (how far behind each node is, CPU) every this
    /// many seconds; 0 for none.
    #[arg(long, default_value_t = 5)]
    pub progress: u64,
    /// Entries streamed by the raw tonic baseline (default: as many as
    /// were replicated in the steady phase, at least 100,000).
    #[arg(long)]
    pub raw_entries: Option<u64>,
    /// Longest wait, after the writers stop, for every node to have every
    /// write, in seconds.
    #[arg(long, default_value_t = 60)]
    pub converge_timeout: u64,
    /// The node binary (default: `replicator` next to this executable).
    #[arg(long)]
    pub replicator: Option<PathBuf>,
    /// Keep the nodes' data, configs and logs (RocksDB's LOG included)
    /// instead of deleting them.
    #[arg(long)]
    pub keep: bool,
}

fn replicator_binary(args: &Args) -> Result<PathBuf> {
    let path = match &args.replicator {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("the executable has no directory"))?
            .join("replicator"),
    };
    if !path.is_file() {
        bail!(
            "node binary {} not found: build it with `cargo build --release -p tributary-replicator --bin replicator` (or pass --replicator PATH)",
            path.display()
        );
    }
    Ok(path)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = replicator_binary(&args)?;
    report::header(&args, &binary);
    let mut shipping = args.shipping.clone();
    if let Some(hold) = &args.relay_hold {
        shipping.push(format!("relay_hold = \"{hold}\""));
    }
    let cluster = Cluster::start(&binary, &REGIONS, args.sync, &shipping, args.keep).await?;
    if args.keep {
        println!(
            "keeping the nodes' data, configs and logs in {}",
            cluster.dir().display()
        );
    }
    let result = run(&args, &cluster).await;
    if result.is_err() {
        for n in &cluster.nodes {
            eprintln!("{}", n.log_tail());
        }
    }
    // Kills the nodes before the baseline runs.
    drop(cluster);
    report::baseline_and_print(&args, result?).await
}

/// Every node's counters, now.
async fn counters(cluster: &Cluster) -> Result<Vec<Counters>> {
    let mut out = Vec::new();
    for n in &cluster.nodes {
        out.push(Counters::of(&n.scrape().await?));
    }
    Ok(out)
}

/// CPU seconds of each node, of this process, and of the whole machine;
/// scheduler times of each node.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    nodes: [f64; 3],
    sched: [NodeSched; 3],
    bench: f64,
    machine: f64,
}

impl Cpu {
    fn now(cluster: &Cluster) -> Result<Self> {
        let mut nodes = [0.0; 3];
        let mut sched = [NodeSched::default(); 3];
        for (i, n) in cluster.nodes.iter().enumerate().take(3) {
            nodes[i] = n.cpu_seconds()?;
            sched[i] = n.sched()?;
        }
        Ok(Cpu {
            nodes,
            sched,
            bench: cluster::cpu_seconds_of("/proc/self/stat")?,
            machine: cluster::machine_busy_seconds()?,
        })
    }
}

/// What one phase cost: counters per node, CPU cores used.
async fn phase_since(cluster: &Cluster, start: (&[Counters], Cpu), secs: f64) -> Result<Phase> {
    let end = counters(cluster).await?;
    let cpu = Cpu::now(cluster)?;
    let nodes: Vec<Counters> = end.iter().zip(start.0).map(|(e, s)| e.minus(s)).collect();
    let per = |a: f64, b: f64| (a - b) / secs.max(1e-9);
    let node_cores = [0, 1, 2].map(|i| per(cpu.nodes[i], start.1.nodes[i]));
    let bench_cores = per(cpu.bench, start.1.bench);
    let machine = per(cpu.machine, start.1.machine);
    let sched = [0, 1, 2].map(|i| NodeSched {
        writer: cpu.sched[i].writer.minus(start.1.sched[i].writer),
        all: cpu.sched[i].all.minus(start.1.sched[i].all),
    });
    Ok(Phase {
        secs,
        nodes,
        sched,
        node_cores,
        bench_cores,
        other_cores: (machine - node_cores.iter().sum::<f64>() - bench_cores).max(0.0),
    })
}

/// Waits until every node's applied vector covers `heads`.
async fn wait_covered(
    pollers: &[Poller],
    heads: Vector,
    deadline: Duration,
    what: &str,
) -> Result<()> {
    for (i, p) in pollers.iter().enumerate() {
        p.wait_for(deadline, &format!("{what} at {}", REGIONS[i]), |s| {
            s.applied.iter().zip(&heads).all(|(a, h)| a >= h)
        })
        .await?;
    }
    Ok(())
}

/// Each origin's own head, from answers sent after `after`.
async fn fresh_heads(pollers: &[Poller], after: Micros) -> Result<Vector> {
    let mut heads = [0; 3];
    for (i, p) in pollers.iter().enumerate() {
        let s = p
            .wait_for(Duration::from_secs(10), "a fresh applied vector", |s| {
                s.sent > after
            })
            .await?;
        heads[i] = s.applied[i];
    }
    Ok(heads)
}

/// Waits until every node admits local writes and has every link up.
async fn wait_ready(admins: &mut [AdminClient<Channel>], deadline: Duration) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let mut last = String::new();
        let mut ready = true;
        for a in admins.iter_mut() {
            let doc = a
                .status(pb::StatusRequest {})
                .await?
                .into_inner()
                .status_json;
            let v: serde_json::Value = serde_json::from_str(&doc).context("parse status")?;
            let linked = v["peers"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["connected"] == true));
            if v["bootstrapping"] != false || !linked {
                ready = false;
                last = doc;
            }
        }
        if ready {
            return Ok(());
        }
        if start.elapsed() > deadline {
            bail!("the cluster was not ready within {deadline:?}; last status: {last}");
        }
        // Status has no change notification: poll it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn set_paused(admin: &mut AdminClient<Channel>, peer: &str, paused: bool) -> Result<()> {
    admin
        .set_peer_paused(pb::SetPeerPausedRequest {
            peer: peer.to_owned(),
            paused,
        })
        .await
        .with_context(|| format!("pause={paused} the link to {peer}"))?;
    Ok(())
}

/// Prints, every `every`, how many entries each node lacks of the origins'
/// heads and the CPU each node used meanwhile.
fn progress(pollers: &[Poller], pids: [u32; 3], clock: Clock, every: Duration) -> JoinHandle<()> {
    let watchers: Vec<_> = pollers.iter().map(Poller::watcher).collect();
    tokio::spawn(async move {
        let cpu = |pid: u32| cluster::cpu_seconds_of(&format!("/proc/{pid}/stat")).unwrap_or(0.0);
        let mut before = pids.map(cpu);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let latest: Vec<Option<Sample>> = watchers.iter().map(|w| *w.borrow()).collect();
            let heads: Vec<u64> = (0..3)
                .map(|o| latest[o].map_or(0, |s| s.applied[o]))
                .collect();
            let behind: Vec<String> = (0..3)
                .map(|b| {
                    let lacks: u64 = (0..3)
                        .filter(|&o| o != b)
                        .map(|o| heads[o].saturating_sub(latest[b].map_or(0, |s| s.applied[o])))
                        .sum();
                    format!("{} {lacks}", REGIONS[b])
                })
                .collect();
            let now = pids.map(cpu);
            let cores: Vec<String> = (0..3)
                .map(|i| format!("{:.2}", (now[i] - before[i]) / every.as_secs_f64()))
                .collect();
            before = now;
            println!(
                "  [t={:6.1}s] entries behind the origins: {}; node CPU cores {}",
                clock.now().secs(),
                behind.join(", "),
                cores.join(" ")
            );
        }
    })
}

fn observed(samples: &[Sample], origin: usize) -> Vec<Observed> {
    monotone(
        samples
            .iter()
            .map(|s| Observed {
                at: s.at,
                applied: Seq(s.applied[origin]),
            })
            .collect(),
    )
}

/// The regions' writers, and the logs of those stopped.
#[derive(Default)]
struct Load {
    writers: Vec<Writer>,
    logs: Vec<WriterLog>,
}

impl Load {
    /// Stops the writers still running (waiting for their requests in
    /// flight); returns every writer's log, in region order.
    async fn stop(&mut self) -> Result<&[WriterLog]> {
        for w in self.writers.drain(..) {
            self.logs.push(w.stop(Duration::from_secs(60)).await?);
        }
        Ok(&self.logs)
    }
}

/// Pauses the links into the receiver, lets the backlog grow, resumes and
/// measures how fast the receiver catches up with the heads at resume.
async fn catch_up_phase(
    args: &Args,
    cluster: &Cluster,
    admins: &mut [AdminClient<Channel>],
    pollers: &[Poller],
    clock: Clock,
    load: &mut Load,
) -> Result<CatchUp> {
    let senders: Vec<usize> = match args.pause_links {
        PauseLinks::AllInto => vec![0, 2],
        PauseLinks::One => vec![0],
    };
    for &s in &senders {
        set_paused(&mut admins[s], REGIONS[RECEIVER], true).await?;
    }
    println!(
        "paused links into {} for {} s",
        REGIONS[RECEIVER], args.pause
    );
    tokio::time::sleep(Duration::from_secs(args.pause)).await;
    if args.catch_up_load == CatchUpLoad::Stop {
        load.stop().await?;
    }
    let now = clock.now();
    let heads = fresh_heads(pollers, now).await?;
    let receiver = &pollers[RECEIVER];
    let before = receiver
        .wait_for(Duration::from_secs(10), "the receiver's vector", |s| {
            s.sent > now
        })
        .await?
        .applied;
    let backlog: u64 = senders
        .iter()
        .map(|&s| heads[s].saturating_sub(before[s]))
        .sum();
    let (c1, cpu1) = (counters(cluster).await?, Cpu::now(cluster)?);
    let resumed = clock.now();
    for &s in &senders {
        set_paused(&mut admins[s], REGIONS[RECEIVER], false).await?;
    }
    println!("resumed with a backlog of {backlog} entries");
    let timeout = Duration::from_secs(args.catch_up_timeout);
    let caught = receiver
        .wait_for(timeout, "catch-up", |s| {
            senders.iter().all(|&o| s.applied[o] >= heads[o])
        })
        .await;
    let (secs, done, remaining) = match caught {
        Ok(s) => (s.at.since(resumed).secs(), backlog, 0),
        Err(e) => {
            println!("{e:#}");
            let last = receiver.latest().map_or(before, |s| s.applied);
            let left: u64 = senders
                .iter()
                .map(|&o| heads[o].saturating_sub(last[o]))
                .sum();
            (timeout.as_secs_f64(), backlog.saturating_sub(left), left)
        }
    };
    let phase = phase_since(cluster, (&c1, cpu1), secs).await?;
    println!("caught up {done} entries in {secs:.2} s");
    Ok(CatchUp {
        backlog,
        secs,
        done,
        remaining,
        phase,
    })
}

/// Starts the load, runs the phases, stops everything and computes.
async fn run(args: &Args, cluster: &Cluster) -> Result<Measured> {
    let clock = Clock::start();
    let mut admins = Vec::new();
    for n in &cluster.nodes {
        admins.push(workload::admin(&n.uri()).await?);
    }
    wait_ready(&mut admins, Duration::from_secs(60)).await?;
    let mut pollers = Vec::new();
    for n in &cluster.nodes {
        let client = workload::admin(&n.uri()).await?;
        let every = Duration::from_millis(args.poll_ms.max(1));
        pollers.push(Poller::start(client, every, clock));
    }
    // What observing costs, before any load: the polls alone.
    let (c_idle, cpu_idle) = (counters(cluster).await?, Cpu::now(cluster)?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let observer = phase_since(cluster, (&c_idle, cpu_idle), 2.0).await?;
    let cfg = WriterConfig {
        rate: args.rate,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        keys: args.keys.max(1),
        max_in_flight: 100,
    };
    let mut load = Load::default();
    for (i, n) in cluster.nodes.iter().enumerate() {
        let client = workload::admin(&n.uri()).await?;
        load.writers
            .push(Writer::start(client, n.region, cfg, clock, 42 + i as u64));
    }
    let pids = [0, 1, 2].map(|i| cluster.nodes[i].pid);
    let progress = (args.progress > 0)
        .then(|| progress(&pollers, pids, clock, Duration::from_secs(args.progress)));

    // Steady phase.
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (c0, cpu0) = (counters(cluster).await?, Cpu::now(cluster)?);
    let steady_start = clock.now();
    println!("steady phase: {} s", args.duration);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let steady_end = clock.now();
    let steady_secs = steady_end.since(steady_start).secs();
    let steady = phase_since(cluster, (&c0, cpu0), steady_secs).await?;
    println!("steady phase done; waiting for its writes to be visible everywhere");
    let heads = fresh_heads(&pollers, steady_end).await?;
    let drain_start = clock.now();
    let drain = wait_covered(
        &pollers,
        heads,
        Duration::from_secs(args.drain_timeout),
        "steady writes visible",
    )
    .await
    .map(|()| clock.now().since(drain_start).secs())
    .map_err(|e| format!("{e:#}"));
    let catch_up = match &drain {
        Ok(_) => {
            Some(catch_up_phase(args, cluster, &mut admins, &pollers, clock, &mut load).await?)
        }
        Err(e) => {
            println!(
                "the cluster did not keep up with the offer ({e}); skipping the catch-up (measure it at a rate the cluster sustains, e.g. --rate 1000)"
            );
            None
        }
    };

    // Stop, converge, compare.
    let logs = load.stop().await?;
    let stopped = clock.now();
    let heads = fresh_heads(&pollers, stopped).await?;
    let converge = wait_covered(
        &pollers,
        heads,
        Duration::from_secs(args.converge_timeout),
        "convergence",
    )
    .await
    .map(|()| clock.now().since(stopped).secs())
    .map_err(|e| format!("{e:#}"));
    if let Some(p) = progress {
        p.abort();
    }
    let mut digests = Vec::new();
    for a in &mut admins {
        let d = a.digest(pb::DigestRequest {}).await?.into_inner();
        digests.push((d.items, d.digest));
    }
    let mut rss_mib = [0.0; 3];
    for (r, n) in rss_mib.iter_mut().zip(&cluster.nodes) {
        *r = n.peak_rss_mib()?;
    }
    let mut polls: Vec<PollLog> = Vec::new();
    for p in pollers {
        polls.push(p.stop().await?);
    }

    // Arithmetic.
    let mut all = Vec::new();
    let mut pairs = Vec::new();
    let (mut before_ack, mut unseen) = (0, 0);
    for (a, log) in logs.iter().enumerate() {
        for (b, poll) in polls.iter().enumerate().filter(|(b, _)| *b != a) {
            let mut l = visibility_lags(
                &log.acks,
                &observed(&poll.samples, a),
                steady_start,
                steady_end,
            );
            before_ack += l.before_ack;
            unseen += l.unseen;
            all.extend_from_slice(&l.lags);
            pairs.push(PairLag {
                pair: format!("{} -> {}", REGIONS[a], REGIONS[b]),
                lag: summarize(&mut l.lags),
                unseen: l.unseen,
            });
        }
    }
    let mut replicated = 0u64;
    for (b, poll) in polls.iter().enumerate() {
        for a in (0..3).filter(|&a| a != b) {
            let o = observed(&poll.samples, a);
            replicated += lag::applied_at(&o, steady_end)
                .0
                .saturating_sub(lag::applied_at(&o, steady_start).0);
        }
    }
    let in_steady = |t: Micros| t >= steady_start && t < steady_end;
    let acked_per_s = [0, 1, 2]
        .map(|i| logs[i].acks.iter().filter(|a| in_steady(a.at)).count() as f64 / steady_secs);
    let mut latencies: Vec<Micros> = logs
        .iter()
        .flat_map(|l| {
            l.latencies
                .iter()
                .filter(|(at, _)| in_steady(*at))
                .map(|(_, l)| *l)
        })
        .collect();
    let (mut gaps, mut rtts) = (Vec::new(), Vec::new());
    for p in &polls {
        let steady: Vec<&Sample> = p.samples.iter().filter(|s| in_steady(s.at)).collect();
        gaps.extend(steady.windows(2).map(|w| w[1].at.since(w[0].at).0));
        rtts.extend(steady.iter().map(|s| s.at.since(s.sent).0));
    }
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1000.0;
    Ok(Measured {
        steady_secs,
        acked_per_s,
        write_failed: logs.iter().map(|l| l.failed).sum(),
        write_dropped: logs.iter().map(|l| l.dropped).sum(),
        first_write_error: logs.iter().find_map(|l| l.first_error.clone()),
        write_latency: summarize(&mut latencies),
        replicated_per_s: replicated as f64 / steady_secs,
        lag_all: summarize(&mut all),
        pairs,
        before_ack,
        unseen,
        poll_interval_ms: mean(&gaps),
        poll_rtt_ms: mean(&rtts),
        poll_errors: polls.iter().map(|p| p.errors).sum(),
        drain,
        catch_up,
        converge,
        digests,
        rss_mib,
        observer,
        steady,
    })
}
