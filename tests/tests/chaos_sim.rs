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
        // Receivers that park (the default) and receivers that refuse
        // entries ahead of their dependencies (`park_max_entries = 0`).
        for park_max in [SimConfig::standard(seed).park_max, 0] {
            let outcome = Sim::new(SimConfig {
                park_max,
                ..SimConfig::standard(seed)
            })
            .run();
            assert!(
                outcome.is_clean() && outcome.converge_ms != u64::MAX,
                "simulation failed (park_max {park_max}): {outcome:#?}\nreproduce with: TRIBUTARY_SIM_SEED={seed} cargo test -p tributary-tests --test chaos_sim"
            );
            add(&mut faults, &outcome.faults);
            outcomes.push(outcome);
        }
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
        "runs": outcomes.len(),
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

/// What a set of runs received: entries, duplicates among them, entries
/// sent back to their own region, and the median over runs of the p99
/// visibility latency.
#[derive(Debug, Clone, Copy)]
struct Received {
    entries: u64,
    duplicate: u64,
    echoed: u64,
    p99_ms: u64,
}

impl Received {
    fn duplicate_share(&self) -> f64 {
        self.duplicate as f64 / self.entries as f64
    }
}

fn received(configs: impl Iterator<Item = SimConfig>) -> Received {
    let mut total = Received {
        entries: 0,
        duplicate: 0,
        echoed: 0,
        p99_ms: 0,
    };
    let mut p99s = Vec::new();
    for cfg in configs {
        let seed = cfg.seed;
        let outcome = Sim::new(cfg).run();
        assert!(
            outcome.is_clean() && outcome.converge_ms != u64::MAX,
            "simulation failed: {outcome:#?} (seed {seed})"
        );
        total.entries += outcome.entries_received;
        total.duplicate += outcome.entries_duplicate;
        total.echoed += outcome.entries_echoed;
        p99s.push(outcome.visibility_ms[1]);
    }
    p99s.sort_unstable();
    total.p99_ms = p99s[p99s.len() / 2];
    total
}

#[test]
fn a_healthy_mesh_never_echoes_and_parking_receivers_cut_duplicates() {
    let seeds = 1..=20u64;
    let at_once = received(seeds.clone().map(|seed| SimConfig {
        relay_hold_ms: 0,
        park_max: 0,
        ..SimConfig::healthy(seed)
    }));
    let held = received(seeds.clone().map(|seed| SimConfig {
        park_max: 0,
        ..SimConfig::healthy(seed)
    }));
    let parked = received(seeds.map(|seed| SimConfig {
        relay_hold_ms: 0,
        ..SimConfig::healthy(seed)
    }));
    let line = |name: &str, r: &Received| {
        format!(
            "{name}: {} entries received, {:.0}% duplicates, visibility p99 {} ms",
            r.entries,
            r.duplicate_share() * 100.0,
            r.p99_ms
        )
    };
    println!(
        "healthy 5-region mesh, 20 seeds: {}; {}; {}",
        line("relays at once", &at_once),
        line("relays held 50 ms", &held),
        line("receivers park", &parked),
    );
    assert_eq!(
        (at_once.echoed, held.echoed, parked.echoed),
        (0, 0, 0),
        "no region is sent its own entries back"
    );
    assert!(
        held.duplicate_share() < at_once.duplicate_share() * 0.85,
        "holding relays should cut the duplicate share: {at_once:?} vs {held:?}"
    );
    assert!(
        parked.duplicate_share() < at_once.duplicate_share() * 0.25,
        "links to receivers that park should leave out what comes directly: {at_once:?} vs {parked:?}"
    );
    assert!(
        parked.p99_ms <= at_once.p99_ms + 2 * 10,
        "without costing visibility (two ticks of slack): {at_once:?} vs {parked:?}"
    );
}
