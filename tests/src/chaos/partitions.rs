//! Tier 2: real `replicator` processes, every peer link through a fault
//! proxy, writers on every region through `replctl`, and the nemesis
//! (partitions, one-way cuts, slowdowns, resets, pauses, kills) for the
//! run's length; then heal, stop the writers and check: nothing lost,
//! nothing duplicated, no zombie, identical digests within the bound after
//! the last heal, and `replctl lag` drained.

use std::time::{Duration, Instant};

use super::nemesis::{self, Nemesis};
use super::proxy::ProxyNet;
use super::report::Summary;
use super::run::Run;
use super::workload::WorkloadConfig;

/// How long to wait for identical digests and drained lag after the heal
/// (beyond the bound, to report how long it did take).
const WAIT: Duration = Duration::from_secs(40);
use crate::cluster::Cluster;

/// A tier 2 scenario.
#[derive(Debug, Clone)]
pub struct PartitionScenario {
    /// Its name (file names of its summary and history).
    pub name: String,
    /// The regions.
    pub regions: Vec<String>,
    /// TOML appended to every node's config.
    pub extra_config: String,
    /// Length of the faulty phase.
    pub length: Duration,
    /// Fewest SIGKILL + restarts.
    pub min_kills: usize,
    /// The writers.
    pub workload: WorkloadConfig,
    /// Identical digests at most this long after the last heal.
    pub convergence_bound: Duration,
}

/// Runs the scenario with `seed`; panics with the evidence on a violation.
pub fn run(scenario: &PartitionScenario, seed: u64) -> Summary {
    let regions: Vec<&str> = scenario.regions.iter().map(String::as_str).collect();
    let binaries = super::binaries();
    let mut net = ProxyNet::new();
    let mut cluster = Cluster::start_secure_with(
        &regions,
        &super::mesh(regions.len()),
        &scenario.extra_config,
        |from, to, port| net.add(from, to, port),
    );
    let pace = nemesis::Pace::from_env();
    println!("fault pace: {pace:?}");
    let steps = nemesis::plan(
        seed,
        regions.len(),
        scenario.length,
        scenario.min_kills,
        pace,
    );
    let mut run = Run::start("tier2", &scenario.name, seed, &cluster, &scenario.workload);
    let begin = Instant::now();
    let (counts, restarts) = {
        let mut nemesis = Nemesis::new(&mut cluster, &net);
        nemesis.run(&steps, begin, run.epoch);
        nemesis.heal_all();
        (nemesis.counts.clone(), nemesis.restarts.clone())
    };
    let healed = Instant::now();
    println!(
        "[{:7.3}s] healed everything; stopping the writers",
        run.epoch.elapsed().as_secs_f64()
    );
    run.stop_writers();
    let converged = run.wait_converged(WAIT);
    let drained = run.wait_drained(WAIT);
    let (_, mut summary) = run.check(healed, converged.as_ref().ok().copied());
    summary.faults = counts;
    summary.binaries = binaries;
    summary.pace = Some(pace);
    summary.fault_seconds = healed.duration_since(begin).as_secs_f64();
    summary.drained_seconds = drained
        .as_ref()
        .ok()
        .map(|d| d.saturating_duration_since(healed).as_secs_f64());
    let mut extra = Vec::new();
    if let Err(last) = &converged {
        extra.push(format!("digests never became identical: {last}"));
    }
    if let Err(last) = &drained {
        extra.push(format!("`replctl lag` never drained: {last}"));
    }
    let kills = summary.faults.get("kill").copied().unwrap_or(0);
    if kills < scenario.min_kills as u64 {
        extra.push(format!("only {kills} kills, wanted {}", scenario.min_kills));
    }
    let bound = scenario.convergence_bound.as_secs_f64();
    if summary.convergence_seconds.is_none_or(|c| c > bound) {
        extra.push(format!(
            "digests identical {:?} s after the last heal, bound {bound} s",
            summary.convergence_seconds
        ));
    }
    let slowest = restarts.iter().max().copied().unwrap_or_default();
    println!(
        "restarts: {} (slowest until listening: {:.3}s)",
        restarts.len(),
        slowest.as_secs_f64()
    );
    run.report(&mut summary, &extra);
    summary
}
