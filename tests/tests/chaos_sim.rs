//! Tier 1 of the chaos tests: the deterministic simulation (`sim.rs`) over
//! many seeds. `TRIBUTARY_SIM_SEEDS=N` runs N seeds (default 200);
//! `TRIBUTARY_SIM_SEED=S` replays one seed. A failure prints the seed to
//! reproduce with; the summary goes to stdout and to
//! `$CARGO_TARGET_DIR/chaos/sim.json`.

use std::path::PathBuf;
use std::time::Instant;

use tributary_tests::sim::{Faults, Outcome, Sim, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn report_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("chaos")
}

fn add(total: &mut Faults, f: &Faults) {
    total.isolations += f.isolations;
    total.splits += f.splits;
    total.rings += f.rings;
    total.one_way_cuts += f.one_way_cuts;
    total.crashes += f.crashes;
    total.acks_lost += f.acks_lost;
    total.acks_duplicated += f.acks_duplicated;
    total.acks_reordered += f.acks_reordered;
    total.skewed_clocks += f.skewed_clocks;
}

#[test]
fn simulated_partitions_crashes_and_lossy_acks_lose_nothing() {
    let seeds: Vec<u64> = match env_u64("TRIBUTARY_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("TRIBUTARY_SIM_SEEDS").unwrap_or(200);
            let base = env_u64("TRIBUTARY_SIM_BASE").unwrap_or(1);
            (base..base + n).collect()
        }
    };
    let started = Instant::now();
    let mut faults = Faults::default();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for &seed in &seeds {
        let outcome = Sim::new(SimConfig::standard(seed)).run();
        assert!(
            outcome.is_clean() && outcome.converge_ms != u64::MAX,
            "simulation failed: {outcome:#?}\nreproduce with: TRIBUTARY_SIM_SEED={seed} cargo test -p tributary-tests --test chaos_sim"
        );
        add(&mut faults, &outcome.faults);
        outcomes.push(outcome);
    }
    // Determinism: the same seed replays the same run.
    let again = Sim::new(SimConfig::standard(seeds[0])).run();
    assert_eq!(
        serde_json::to_string(&again).expect("json"),
        serde_json::to_string(&outcomes[0]).expect("json"),
        "seed {} did not replay identically",
        seeds[0]
    );
    let ops: u64 = outcomes.iter().map(|o| o.acked_ops).sum();
    let unacked: u64 = outcomes.iter().map(|o| o.unacked_ops).sum();
    let max = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).max().unwrap_or(0);
    let mut p99s: Vec<u64> = outcomes.iter().map(|o| o.visibility_ms[1]).collect();
    p99s.sort_unstable();
    let summary = serde_json::json!({
        "tier": "simulation",
        "seeds": seeds.len(),
        "regions": 5,
        "acked_ops": ops,
        "unacked_ops": unacked,
        "faults": faults,
        "lost": 0, "duplicated": 0, "zombies": 0, "divergent": 0, "offsets_backwards": 0,
        "converge_ms_max": max(|o| o.converge_ms),
        "visibility_ms": {
            "p50_median_over_seeds": outcomes.iter().map(|o| o.visibility_ms[0]).sum::<u64>() / outcomes.len() as u64,
            "p99_median_over_seeds": p99s[p99s.len() / 2],
            "max": max(|o| o.visibility_ms[2]),
        },
        "wall_seconds": started.elapsed().as_secs_f64(),
    });
    println!(
        "chaos tier 1 (simulation):\n{}",
        serde_json::to_string_pretty(&summary).expect("json")
    );
    let dir = report_dir();
    std::fs::create_dir_all(&dir).expect("create the chaos report dir");
    std::fs::write(dir.join("sim.json"), summary.to_string()).expect("write the report");
}
