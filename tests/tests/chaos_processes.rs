//! Tier 2 of the chaos tests: real `replicator` processes whose peer links
//! all run through fault proxies (`chaos/proxy.rs`), written to through the
//! real `replctl` by writers on every region, under a nemesis of
//! partitions (one region isolated, splits, one-way cuts), slowdowns,
//! connection resets, SIGSTOP/SIGCONT pauses and at least ten SIGKILL +
//! restarts. After the heal: nothing acknowledged lost, nothing
//! duplicated, no zombie, identical digests within 15 s, lag drained.
//!
//! In CI (`scripts/test.sh`) the nodes are release builds
//! (`TRIBUTARY_CHAOS_BIN_DIR`) under the fault durations
//! (`TRIBUTARY_CHAOS_PACE=real`: partitions of 10–30 s, slowdowns of
//! 5–15 s, pauses of 5–10 s) for 120 s per scenario. A bare `cargo test`
//! runs the debug binaries of its own profile under a compressed schedule
//! (faults of seconds, 60 s). `TRIBUTARY_CHAOS_SECONDS` sets the length of
//! the faulty phase, `TRIBUTARY_CHAOS_SEED` replays a schedule.

use std::sync::Mutex;
use std::time::Duration;

use tributary_tests::chaos::nemesis::Pace;
use tributary_tests::chaos::partitions::{self, PartitionScenario};
use tributary_tests::chaos::workload::{Sabotage, WorkloadConfig};

/// The scenarios share two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenario(
    name: &str,
    regions: &[&str],
    writers_per_region: usize,
    extra_config: &str,
) -> PartitionScenario {
    PartitionScenario {
        name: name.to_owned(),
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        extra_config: extra_config.to_owned(),
        length: tributary_tests::chaos::length(Pace::from_env().default_length()),
        min_kills: 10,
        workload: WorkloadConfig {
            writers_per_region,
            sabotage: Sabotage::from_env(),
            ..WorkloadConfig::default()
        },
        convergence_bound: Duration::from_secs(15),
    }
}

#[test]
fn chaos_three_regions_under_partitions_pauses_and_kills_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = scenario(
        "3-regions",
        &["us-east-1", "eu-west-1", "ap-south-1"],
        2,
        "",
    );
    partitions::run(&s, tributary_tests::chaos::seed());
}

#[test]
fn chaos_five_regions_under_partitions_pauses_and_kills_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = scenario(
        "5-regions",
        &[
            "us-east-1",
            "eu-west-1",
            "ap-south-1",
            "sa-east-1",
            "ca-central-1",
        ],
        1,
        // Logs truncated as soon as every peer acknowledged: truncation
        // and log starts are exercised under the faults too.
        "[shipping]\nlog_retention = \"1s\"\n",
    );
    partitions::run(&s, tributary_tests::chaos::seed());
}
