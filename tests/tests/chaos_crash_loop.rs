//! Tier 3 of the chaos tests: a crash loop. Writers ingest continuously
//! into a three-region cluster through `replctl` (acknowledged only once
//! durable, here with group commit) while nodes are SIGKILLed and
//! restarted at least 30 times; nothing acknowledged may be lost or
//! applied twice, offsets never go back, and every restarted node
//! acknowledges writes again within 20 s.
//! `TRIBUTARY_CHAOS_SECONDS=N` raises the kills to N / 2 (at least 30);
//! `TRIBUTARY_CHAOS_SEED` replays the kill schedule. The nodes are the
//! builds in `TRIBUTARY_CHAOS_BIN_DIR` (release ones in CI), as in
//! `chaos_processes.rs`.

use std::time::Duration;

use tributary_tests::chaos::crash_loop::{self, CrashLoop};
use tributary_tests::chaos::workload::{Sabotage, WorkloadConfig};

#[test]
fn chaos_crash_loop_loses_no_acknowledged_write() {
    let seconds = tributary_tests::chaos::length(Duration::ZERO).as_secs();
    let scenario = CrashLoop {
        name: "crash-loop".to_owned(),
        regions: ["us-east-1", "eu-west-1", "ap-south-1"]
            .map(str::to_owned)
            .to_vec(),
        // Group commit: writes are acknowledged after the round's one
        // fsync (tier 2 runs the default, an fsync per commit).
        extra_config: "[storage]\nsync = \"group\"\n".to_owned(),
        kills: 30.max(usize::try_from(seconds / 2).unwrap_or(usize::MAX)),
        workload: WorkloadConfig {
            sabotage: Sabotage::from_env(),
            ..WorkloadConfig::default()
        },
        recovery_bound: Duration::from_secs(20),
    };
    crash_loop::run(&scenario, tributary_tests::chaos::seed());
}
