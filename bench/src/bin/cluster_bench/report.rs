//! What the cluster phases measured, the raw tonic baseline run after them,
//! and the printed report: human-readable lines, the targets' verdicts,
//! then one JSON line.

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};
use tributary_engine::ids::TableName;
use tributary_engine::key::ItemKey;
use tributary_engine::value::Scalar;

use crate::cluster::{Counters, NodeSched};
use crate::lag::LagSummary;
use crate::workload::REGIONS;
use crate::{Args, CatchUpLoad, PauseLinks, RECEIVER, raw_tonic};

/// Target: p99 visibility lag at 5,000 changes/s per region.
const TARGET_P99_MS: f64 = 50.0;
/// Target: catch-up rate.
const TARGET_CATCH_UP: f64 = 50_000.0;

/// The lag of one ordered pair.
pub struct PairLag {
    /// `origin -> receiver`.
    pub pair: String,
    /// Its lags, if any write of the window was seen.
    pub lag: Option<LagSummary>,
    /// Writes of the window never seen at the receiver.
    pub unseen: usize,
}

/// What a phase cost.
pub struct Phase {
    /// Its length.
    pub secs: f64,
    /// Each node's counters over the phase.
    pub nodes: Vec<Counters>,
    /// Scheduler times of each node over the phase.
    pub sched: [NodeSched; 3],
    /// CPU cores each node used on average.
    pub node_cores: [f64; 3],
    /// CPU cores this benchmark process used.
    pub bench_cores: f64,
    /// CPU cores every other process of the machine used.
    pub other_cores: f64,
}

/// Everything the cluster phases measured.
pub struct Measured {
    /// Steady phase length.
    pub steady_secs: f64,
    /// Acknowledged local writes per second, per region, in the steady phase.
    pub acked_per_s: [f64; 3],
    /// Changes refused or lost with failed requests (whole run).
    pub write_failed: u64,
    /// Changes not offered because 100 requests were waiting (whole run).
    pub write_dropped: u64,
    /// The first write failure.
    pub first_write_error: Option<String>,
    /// Write request → response times, steady phase.
    pub write_latency: Option<LagSummary>,
    /// Changes applied at receivers per second, summed, steady phase.
    pub replicated_per_s: f64,
    /// Visibility lag over every ordered pair, steady phase.
    pub lag_all: Option<LagSummary>,
    /// Visibility lag per ordered pair.
    pub pairs: Vec<PairLag>,
    /// Writes the receiver showed before their ack arrived.
    pub before_ack: usize,
    /// Steady writes never seen at some receiver.
    pub unseen: usize,
    /// Mean time between two polls of one node.
    pub poll_interval_ms: f64,
    /// Mean poll round trip.
    pub poll_rtt_ms: f64,
    /// Failed polls.
    pub poll_errors: u64,
    /// Time after the steady phase until its writes were everywhere, or
    /// why they were not within the deadline.
    pub drain: Result<f64, String>,
    /// The catch-up, unless the cluster did not keep up with the offer.
    pub catch_up: Option<CatchUp>,
    /// Time from stopping the writers until every node had everything, or
    /// why not within the deadline.
    pub converge: Result<f64, String>,
    /// Items and digest of each node at the end.
    pub digests: Vec<(u64, String)>,
    /// Peak RSS of each node.
    pub rss_mib: [f64; 3],
    /// What polling cost before any load (2 s).
    pub observer: Phase,
    /// The steady phase's costs.
    pub steady: Phase,
}

/// The catch-up after the pause.
pub struct CatchUp {
    /// Entries the receiver lacked at resume.
    pub backlog: u64,
    /// Time from resume until the receiver had them (or the timeout).
    pub secs: f64,
    /// Entries of the backlog applied in that time.
    pub done: u64,
    /// Entries of the backlog still missing at the timeout (0 if caught up).
    pub remaining: u64,
    /// What it cost.
    pub phase: Phase,
}

impl CatchUp {
    fn per_s(&self) -> f64 {
        self.done as f64 / self.secs.max(1e-6)
    }
}

impl Measured {
    fn catch_up_per_s(&self) -> Option<f64> {
        self.catch_up.as_ref().map(CatchUp::per_s)
    }

    fn converged(&self) -> bool {
        self.converge.is_ok() && self.digests.windows(2).all(|w| w[0] == w[1])
    }

    /// Encoded bytes per entry on the nodes' links, if any were sent.
    fn entry_bytes(&self) -> Option<f64> {
        let c = Counters::sum(&self.steady.nodes);
        let entries = c.get("tributary_entries_sent_total");
        (entries > 0.0).then(|| c.get("tributary_bytes_sent_total") / entries)
    }
}

/// Prints what is about to run.
pub fn header(args: &Args, binary: &Path) {
    println!(
        "cluster bench: {} on loopback, full mesh, sync = {}, node binary {}",
        REGIONS.join(", "),
        args.sync.name(),
        binary.display()
    );
    println!(
        "offered {} changes/s per region (one request per {} ms), {} keys; warm-up {} s, steady {} s, pause {} s ({})",
        args.rate,
        args.tick_ms,
        args.keys,
        args.warmup,
        args.duration,
        args.pause,
        match args.pause_links {
            PauseLinks::AllInto => "every link into eu-west-1",
            PauseLinks::One => "us-east-1 -> eu-west-1 only",
        }
    );
}

fn fmt_lag(s: Option<&LagSummary>) -> String {
    s.map_or("no samples".to_owned(), |s| {
        format!(
            "p50 {:7.2} ms  p99 {:7.2} ms  max {:8.2} ms  ({} writes)",
            s.p50_ms, s.p99_ms, s.max_ms, s.count
        )
    })
}

fn per_region(v: [f64; 3], unit: &str, digits: usize) -> String {
    REGIONS
        .iter()
        .zip(v)
        .map(|(r, v)| format!("{r} {v:.digits$}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// Node internals over a phase, summed over `nodes`.
fn internals(p: &Phase, nodes: &[usize]) -> String {
    let c = Counters::sum(nodes.iter().filter_map(|&i| p.nodes.get(i)));
    let g = |n: &str| c.get(n);
    let received = g("tributary_entries_applied_total") + g("tributary_duplicate_entries_total");
    let rounds = g("tributary_group_commit_jobs_count");
    format!(
        "received {:.0} batches, {:.0} entries applied + {:.0} duplicates ({:.0}% of received), {:.0} parked until their dependencies came, {:.0} partial applies; \
         {:.0} commit rounds ({:.0}/s per node, {:.1} jobs each); mean round with peer batches {:.2} ms, with local writes {:.2} ms",
        g("tributary_batches_received_total"),
        g("tributary_entries_applied_total"),
        g("tributary_duplicate_entries_total"),
        100.0 * g("tributary_duplicate_entries_total") / received.max(1.0),
        g("tributary_parked_entries_total"),
        g("tributary_apply_stops_total"),
        rounds,
        rounds / p.secs.max(1e-9) / nodes.len().max(1) as f64,
        g("tributary_group_commit_jobs_sum") / rounds.max(1.0),
        1000.0 * g("tributary_apply_seconds_sum") / g("tributary_apply_seconds_count").max(1.0),
        1000.0 * g("tributary_write_seconds_sum") / g("tributary_write_seconds_count").max(1.0),
    )
}

fn cpu_line(p: &Phase) -> String {
    if p.secs < 0.5 {
        return "phase too short to measure".to_owned();
    }
    format!(
        "nodes {}; benchmark {:.2}; other processes {:.2} (machine has 2)",
        per_region(p.node_cores, "", 2),
        p.bench_cores,
        p.other_cores
    )
}

/// Where each node's `log-writer` thread spent the phase, and how long the
/// node's threads together waited for a CPU.
fn sched_line(p: &Phase) -> String {
    if p.secs < 0.5 {
        return "phase too short to measure".to_owned();
    }
    let pct = |s: f64| 100.0 * s / p.secs;
    REGIONS
        .iter()
        .zip(&p.sched)
        .map(|(r, s)| {
            format!(
                "{r} on CPU {:.0}% / waiting for a CPU {:.0}% (all threads: {:.2} cores waiting)",
                pct(s.writer.on_cpu),
                pct(s.writer.waiting),
                s.all.waiting / p.secs
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs the raw tonic baseline (the nodes are stopped by now) and prints
/// the report.
pub async fn baseline_and_print(args: &Args, m: Measured) -> Result<()> {
    let key = ItemKey::new(
        TableName::new("carts")?,
        Scalar::S("u421".to_owned()),
        Some(Scalar::S("c7".to_owned())),
    )?
    .encode();
    let measured_size = m.entry_bytes();
    let template = raw_tonic::template_entry(key, measured_size.unwrap_or(150.0).round() as usize);
    let raw_entries = args
        .raw_entries
        .unwrap_or((m.replicated_per_s * m.steady_secs) as u64)
        .max(100_000);
    let raw = raw_tonic::run(&template, raw_entries).await?;
    let raw_per_s = raw.per_second();
    let catch_up_per_s = m.catch_up_per_s();

    println!();
    println!("== steady phase ({:.1} s) ==", m.steady_secs);
    let acked: f64 = m.acked_per_s.iter().sum();
    println!(
        "writes acknowledged   : {acked:>8.0} changes/s ({}); failed {}, not offered (100 requests waiting) {}",
        per_region(m.acked_per_s, "/s", 0),
        m.write_failed,
        m.write_dropped
    );
    if let Some(e) = &m.first_write_error {
        println!("first write failure   : {e}");
    }
    println!(
        "write request latency : {}",
        fmt_lag(m.write_latency.as_ref())
    );
    println!(
        "replicated (applied)  : {:>8.0} changes/s summed over the 6 ordered pairs (offered: {})",
        m.replicated_per_s,
        args.rate * 6
    );
    println!("visibility lag        : {}", fmt_lag(m.lag_all.as_ref()));
    for p in &m.pairs {
        let unseen = if p.unseen > 0 {
            format!("  ({} never seen: counted at a lower bound)", p.unseen)
        } else {
            String::new()
        };
        println!("  {:<24}: {}{unseen}", p.pair, fmt_lag(p.lag.as_ref()));
    }
    println!(
        "lag resolution        : polled every {} ms: mean interval {:.2} ms, mean round trip {:.2} ms, {} failed polls; {} writes seen before their ack (lag 0), {} never seen (lag = lower bound)",
        args.poll_ms, m.poll_interval_ms, m.poll_rtt_ms, m.poll_errors, m.before_ack, m.unseen
    );
    println!(
        "observer cost         : polling alone, before the load, used CPU cores: {}",
        cpu_line(&m.observer)
    );
    let c = Counters::sum(&m.steady.nodes);
    println!(
        "links (all nodes)     : {:.0} entries sent in {:.0} batches ({:.1} entries/batch, {:.1} bytes/entry)",
        c.get("tributary_entries_sent_total"),
        c.get("tributary_batches_sent_total"),
        c.get("tributary_entries_sent_total") / c.get("tributary_batches_sent_total").max(1.0),
        measured_size.unwrap_or(0.0)
    );
    println!(
        "receivers (all nodes) : {}",
        internals(&m.steady, &[0, 1, 2])
    );
    println!("CPU cores             : {}", cpu_line(&m.steady));
    println!("log-writer threads    : {}", sched_line(&m.steady));
    match &m.drain {
        Ok(secs) => println!(
            "drain                 : {secs:.2} s after the phase until its writes were everywhere"
        ),
        Err(e) => println!("drain                 : DID NOT KEEP UP: {e}"),
    }
    println!();
    println!("== catch-up ==");
    match &m.catch_up {
        None => println!(
            "skipped               : the cluster did not keep up with the offer (try a lower --rate)"
        ),
        Some(c) => {
            println!(
                "backlog at resume     : {} entries for {} after {} s paused (writers offered {} changes/s per region; {})",
                c.backlog,
                REGIONS[RECEIVER],
                args.pause,
                args.rate,
                match args.catch_up_load {
                    CatchUpLoad::Continue => "they go on during the catch-up",
                    CatchUpLoad::Stop => "they stopped at resume",
                }
            );
            if c.remaining == 0 {
                println!(
                    "caught up in          : {:.2} s = {:>8.0} changes/s",
                    c.secs,
                    c.per_s()
                );
            } else {
                println!(
                    "NOT caught up         : {} of {} entries in {:.0} s = {:>8.0} changes/s ({} missing)",
                    c.done,
                    c.backlog,
                    c.secs,
                    c.per_s(),
                    c.remaining
                );
            }
            println!(
                "receiver {:<12} : {}",
                REGIONS[RECEIVER],
                internals(&c.phase, &[RECEIVER])
            );
            println!("CPU cores             : {}", cpu_line(&c.phase));
            println!("log-writer threads    : {}", sched_line(&c.phase));
        }
    }
    println!();
    match &m.converge {
        Ok(secs) => println!(
            "convergence           : {} {secs:.2} s after the writers stopped ({} items; digests {})",
            if m.converged() {
                "applied vectors and digests equal"
            } else {
                "applied vectors equal but DIGESTS DIFFER"
            },
            m.digests.first().map_or(0, |d| d.0),
            m.digests
                .iter()
                .map(|d| d.1.get(..12).unwrap_or(&d.1))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(e) => println!("convergence           : NOT REACHED: {e}"),
    }
    println!(
        "peak RSS (VmHWM)      : {}",
        per_region(m.rss_mib, " MiB", 1)
    );
    println!();
    println!("== raw tonic baseline (same run, after the nodes stopped) ==");
    println!(
        "entry size            : {:.1} bytes/entry in a batch ({})",
        raw.entry_bytes,
        if measured_size.is_some() {
            "as measured on the nodes' links"
        } else {
            "ASSUMED 150: the nodes' link counters were empty"
        }
    );
    println!(
        "raw streaming         : {} entries, batches of {}, {} in flight: {:.2} s = {:>8.0} entries/s",
        raw.entries,
        raw_tonic::BATCH_ENTRIES,
        raw_tonic::WINDOW,
        raw.elapsed.as_secs_f64(),
        raw_per_s
    );
    println!(
        "replicated / raw      : {:.3}x (replicated is bounded by the offer)",
        m.replicated_per_s / raw_per_s
    );
    if let Some(c) = catch_up_per_s {
        println!("catch-up / raw        : {:.3}x", c / raw_per_s);
    }
    println!();
    let p99 = m.lag_all.map_or(f64::INFINITY, |s| s.p99_ms);
    let lag_ok = p99 <= TARGET_P99_MS && args.rate >= 5_000;
    let catch_ok = catch_up_per_s.is_some_and(|c| c >= TARGET_CATCH_UP)
        && m.catch_up.as_ref().is_some_and(|c| c.remaining == 0);
    let below = if args.rate < 5_000 {
        format!(
            " — measured at {} changes/s, below the target's 5,000",
            args.rate
        )
    } else {
        String::new()
    };
    println!(
        "target: p99 lag <= {TARGET_P99_MS} ms at 5,000 changes/s per region : {} (p99 {p99:.2} ms){below}",
        verdict(lag_ok)
    );
    println!(
        "target: catch-up >= {TARGET_CATCH_UP:.0} changes/s                 : {} ({})",
        verdict(catch_ok),
        catch_up_per_s.map_or("not measured".to_owned(), |c| format!("{c:.0} changes/s"))
    );
    let map = |v: [f64; 3]| -> Value {
        Value::Object(
            REGIONS
                .iter()
                .zip(v)
                .map(|(r, v)| ((*r).to_owned(), json!(v)))
                .collect(),
        )
    };
    let received =
        c.get("tributary_entries_applied_total") + c.get("tributary_duplicate_entries_total");
    let line = json!({
        "offered_per_region": args.rate,
        "sync": args.sync.name(),
        "steady_s": m.steady_secs,
        "acked_per_s": acked,
        "replicated_per_s": m.replicated_per_s,
        "lag_ms": {
            "p50": m.lag_all.map(|s| s.p50_ms),
            "p99": m.lag_all.map(|s| s.p99_ms),
            "max": m.lag_all.map(|s| s.max_ms),
            "poll_interval": m.poll_interval_ms,
            "poll_rtt": m.poll_rtt_ms
        },
        "write_latency_ms": {
            "p50": m.write_latency.map(|s| s.p50_ms),
            "p99": m.write_latency.map(|s| s.p99_ms)
        },
        "pause_s": args.pause,
        "pause_links": format!("{:?}", args.pause_links),
        "kept_up": m.drain.is_ok(),
        "backlog": m.catch_up.as_ref().map(|c| c.backlog),
        "catch_up_s": m.catch_up.as_ref().map(|c| c.secs),
        "catch_up_per_s": catch_up_per_s,
        "catch_up_load": format!("{:?}", args.catch_up_load).to_lowercase(),
        "raw_tonic_per_s": raw_per_s,
        "entry_bytes": raw.entry_bytes,
        "replicated_over_raw": m.replicated_per_s / raw_per_s,
        "catch_up_over_raw": catch_up_per_s.map(|c| c / raw_per_s),
        "duplicate_share": c.get("tributary_duplicate_entries_total") / received.max(1.0),
        "rss_mib": map(m.rss_mib),
        "cpu_cores_steady": map(m.steady.node_cores),
        "other_cores_steady": m.steady.other_cores,
        "observer_cores": m.observer.node_cores.iter().sum::<f64>() + m.observer.bench_cores,
        "converged": m.converged(),
        "targets": {"p99_lag_le_50ms": lag_ok, "catch_up_ge_50k": catch_ok}
    });
    println!("{line}");
    Ok(())
}
