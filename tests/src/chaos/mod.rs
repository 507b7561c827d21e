//! Chaos tests of real processes: tier 2 (a cluster whose peer links run
//! through fault proxies, under partitions, slowdowns, pauses and kills)
//! and tier 3 (a crash loop under continuous ingest), with the history,
//! checker and report they share (tier 1, the deterministic simulation,
//! is `crate::sim`).
//!
//! Knobs (environment):
//! - `TRIBUTARY_CHAOS_SEED`: replay a run's schedule and workload choices
//!   (the processes' timing is not deterministic; the seed is printed at
//!   the start and on failure);
//! - `TRIBUTARY_CHAOS_SECONDS`: length of tier 2's faulty phase, and with
//!   it tier 3's number of kills (one per 2 s, at least 30);
//! - `TRIBUTARY_CHAOS_PACE`: `real` for the fault durations
//!   (partitions of 10–30 s), else CI's compressed ones;
//! - `TRIBUTARY_CHAOS_BIN_DIR`: the directory of the `replicator` and
//!   `replctl` builds tiers 2 and 3 run (`scripts/test.sh` sets it to its
//!   release builds); unset, the test's own profile's;
//! - `TRIBUTARY_BIN_DIR`: the same for every test of the process, chaos or
//!   not;
//! - `TRIBUTARY_CHAOS_SABOTAGE`: make the writers lie on purpose
//!   (`lost`, `duplicate`, `zombie`, `phantom`) to watch the checker fail.
//!
//! Summaries and histories go to `$CARGO_TARGET_DIR/chaos/` (else the
//! `target/chaos/` of the running test binary).

use std::path::PathBuf;
use std::time::Duration;

pub mod checker;
pub mod crash_loop;
pub mod ctl;
pub mod history;
pub mod nemesis;
pub mod observe;
pub mod partitions;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;

/// The seed: `TRIBUTARY_CHAOS_SEED`, else random.
pub fn seed() -> u64 {
    match std::env::var("TRIBUTARY_CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TRIBUTARY_CHAOS_SEED={s}: expected an integer")),
        Err(_) => rand::random(),
    }
}

/// Points this test process at the builds in `TRIBUTARY_CHAOS_BIN_DIR`
/// when set; returns the directory the nodes' binary comes from, for the
/// summary.
pub fn binaries() -> String {
    if let Some(dir) = std::env::var_os("TRIBUTARY_CHAOS_BIN_DIR") {
        crate::cluster::use_binaries_from(PathBuf::from(dir));
    }
    let node = crate::cluster::binary("replicator");
    let dir = node.parent().unwrap_or(&node).display().to_string();
    println!("node binaries: {dir}");
    dir
}

/// `TRIBUTARY_CHAOS_SECONDS`, else `default`.
pub fn length(default: Duration) -> Duration {
    match std::env::var("TRIBUTARY_CHAOS_SECONDS") {
        Ok(s) => Duration::from_secs(
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("TRIBUTARY_CHAOS_SECONDS={s}: expected seconds")),
        ),
        Err(_) => default,
    }
}

/// Where summaries and histories go: `$CARGO_TARGET_DIR/chaos` (when
/// absolute), else the `chaos/` of the target dir the test binary runs
/// from.
pub fn out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        // A relative one is relative to where cargo ran, not to the test's
        // working directory: then the binary's own path is the truth.
        if dir.is_absolute() {
            return dir.join("chaos");
        }
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("chaos")
}

/// Every pair of `n` nodes.
pub fn mesh(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect()
}
