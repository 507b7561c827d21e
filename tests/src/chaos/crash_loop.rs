//! Tier 3: a crash loop. Writers ingest continuously into every region of
//! a three-node cluster through `replctl` (a write is acknowledged only
//! once durable); again and again a node is SIGKILLed while its writer is
//! being acknowledged, and restarted. Then the checker: nothing
//! acknowledged lost, nothing duplicated, offsets never backwards, and
//! each recovery — restart until the node acknowledges a write again —
//! within the bound.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checker::Percentiles;
use super::report::Summary;
use super::run::Run;
use super::workload::WorkloadConfig;

/// How long to wait for identical digests and drained lag after the heal
/// (beyond the bound, to report how long it did take).
const WAIT: Duration = Duration::from_secs(40);
use crate::cluster::{Cluster, DEADLINE, wait_for};

/// A tier 3 scenario.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    /// Its name.
    pub name: String,
    /// The regions.
    pub regions: Vec<String>,
    /// TOML appended to every node's config (e.g. `[storage]` sync mode).
    pub extra_config: String,
    /// SIGKILLs.
    pub kills: usize,
    /// The writers.
    pub workload: WorkloadConfig,
    /// Longest acceptable recovery.
    pub recovery_bound: Duration,
}

/// Runs the crash loop with `seed`; panics with the evidence on a
/// violation.
pub fn run(scenario: &CrashLoop, seed: u64) -> Summary {
    let regions: Vec<&str> = scenario.regions.iter().map(String::as_str).collect();
    let binaries = super::binaries();
    let mut cluster = Cluster::start_secure_with(
        &regions,
        &super::mesh(regions.len()),
        &scenario.extra_config,
        |_, _, port| port,
    );
    let mut run = Run::start("tier3", &scenario.name, seed, &cluster, &scenario.workload);
    let mut rng = StdRng::seed_from_u64(seed);
    let begin = Instant::now();
    let mut restarted = vec![Duration::ZERO; regions.len()];
    let (mut recoveries, mut listening) = (Vec::new(), Vec::new());
    for k in 0..scenario.kills {
        let victim = rng.random_range(0..regions.len());
        let region = cluster.nodes[victim].region.clone();
        let recorder = &run.recorder;
        // Under ingest: the victim has acknowledged writes since it came up.
        wait_for(
            "the victim to acknowledge writes",
            DEADLINE,
            || match recorder.acked_since(&region, restarted[victim]) {
                0 => Err(format!("no write acknowledged by {region} yet")),
                _ => Ok(Some(())),
            },
        );
        // The schedule: let ingest run on into the kill for a random while.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..600)));
        cluster.kill9(victim);
        println!(
            "[{:7.3}s] kill {} of {}: SIGKILL {region}",
            run.epoch.elapsed().as_secs_f64(),
            k + 1,
            scenario.kills
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        let t0 = Instant::now();
        let since = recorder.since_start(t0);
        cluster.launch(victim);
        listening.push(t0.elapsed());
        let served = wait_for(
            "the restarted node to acknowledge a write",
            scenario.recovery_bound.max(DEADLINE),
            || match recorder.first_ack_since(&region, since) {
                Some(at) => Ok(Some(at)),
                None => Err(format!("{region}: no write acknowledged since the restart")),
            },
        );
        recoveries.push(served.saturating_sub(since));
        restarted[victim] = since;
    }
    let healed = Instant::now();
    run.stop_writers();
    let converged = run.wait_converged(WAIT);
    let drained = run.wait_drained(WAIT);
    let (_, mut summary) = run.check(healed, converged.as_ref().ok().copied());
    summary.faults = [("kill".to_owned(), scenario.kills as u64)].into();
    summary.binaries = binaries;
    summary.fault_seconds = healed.duration_since(begin).as_secs_f64();
    summary.drained_seconds = drained
        .as_ref()
        .ok()
        .map(|d| d.saturating_duration_since(healed).as_secs_f64());
    let recovery = Percentiles::of(recoveries);
    let listen = Percentiles::of(listening);
    println!(
        "until listening after a restart: p50 {:?}s max {:?}s",
        listen.p50_seconds, listen.max_seconds
    );
    let mut extra = Vec::new();
    if let Err(last) = &converged {
        extra.push(format!("digests never became identical: {last}"));
    }
    if let Err(last) = &drained {
        extra.push(format!("`replctl lag` never drained: {last}"));
    }
    let bound = scenario.recovery_bound.as_secs_f64();
    if recovery.max_seconds.is_none_or(|m| m > bound) {
        extra.push(format!(
            "slowest recovery {:?} s, bound {bound} s",
            recovery.max_seconds
        ));
    }
    summary.recovery = Some(recovery);
    run.report(&mut summary, &extra);
    summary
}
