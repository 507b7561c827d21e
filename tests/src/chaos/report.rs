//! The one-screen summary of a chaos run, printed and written as JSON
//! under `target/chaos/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checker::{Percentiles, Verdict};
use super::history::History;
use super::nemesis::Pace;

/// What a run did and what the checker found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `tier2` or `tier3`.
    pub tier: String,
    /// The scenario's name.
    pub scenario: String,
    /// The seed of the schedule and workload.
    pub seed: u64,
    /// Nodes in the cluster.
    pub regions: usize,
    /// The directory of the node binaries run (a release or a debug build).
    pub binaries: String,
    /// The fault durations (`Real` or `Compressed`; tier 2).
    pub pace: Option<Pace>,
    /// Runs in this summary.
    pub runs: u32,
    /// Length of the faulty phase, seconds.
    pub fault_seconds: f64,
    /// The whole run, from cluster start to verdict, seconds.
    pub wall_seconds: f64,
    /// Operations by outcome (`ok`, `failed`, `unknown`).
    pub operations: BTreeMap<String, usize>,
    /// Operations by kind.
    pub operations_by_kind: BTreeMap<String, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Acknowledged operations lost.
    pub lost: usize,
    /// Items with effects applied more than once.
    pub duplicated: usize,
    /// Total excess of counters over their increments.
    pub duplicated_effects: u64,
    /// Removed or deleted data that reappeared.
    pub zombies: usize,
    /// Effects of no operation or of a rejected one.
    pub phantoms: usize,
    /// Regions differing after the heal.
    pub divergent: usize,
    /// Offsets that went backwards or ahead of their peer.
    pub offsets_backwards: usize,
    /// Negative numbers in lag reports.
    pub negative_lag: usize,
    /// From the last heal to identical digests, seconds.
    pub convergence_seconds: Option<f64>,
    /// From the last heal to no record pending anywhere, seconds.
    pub drained_seconds: Option<f64>,
    /// Time until an acknowledged write was applied in every region.
    pub visibility: Percentiles,
    /// Acknowledged writes never seen applied everywhere.
    pub never_visible: usize,
    /// Sampling period of the offsets behind `visibility`, seconds.
    pub sample_period_seconds: f64,
    /// Time from a restart until the node acknowledged a write again.
    pub recovery: Option<Percentiles>,
    /// Offsets and lag samples taken.
    pub samples: BTreeMap<String, usize>,
    /// The most records a region had pending for a peer in a lag sample.
    pub max_pending_records: u64,
    /// Peer rows of lag samples that showed the link down.
    pub links_seen_down: usize,
    /// The highest log start seen (above 1: logs were truncated).
    pub max_log_start: u64,
    /// The history file.
    pub history: String,
    /// Whether every check passed.
    pub passed: bool,
    /// The first findings, if any.
    pub findings: Vec<String>,
}

impl Summary {
    /// A summary of `history` and `verdict`; timing fields are the
    /// caller's to fill.
    pub fn new(
        tier: &str,
        scenario: &str,
        seed: u64,
        history: &History,
        verdict: &Verdict,
    ) -> Self {
        let findings: Vec<String> = verdict
            .describe(10)
            .lines()
            .map(str::to_owned)
            .take(60)
            .collect();
        Self {
            tier: tier.to_owned(),
            scenario: scenario.to_owned(),
            seed,
            regions: 0,
            binaries: String::new(),
            pace: None,
            runs: 1,
            fault_seconds: 0.0,
            wall_seconds: 0.0,
            operations: history
                .outcome_counts()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            operations_by_kind: history
                .kind_counts()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            faults: BTreeMap::new(),
            lost: verdict.lost.distinct(),
            duplicated: verdict.duplicated.distinct(),
            duplicated_effects: verdict.duplicated_effects,
            zombies: verdict.zombies.distinct(),
            phantoms: verdict.phantoms.distinct(),
            divergent: verdict.divergent.0.len(),
            offsets_backwards: verdict.offsets.0.len(),
            negative_lag: verdict.negative_lag.0.len(),
            convergence_seconds: verdict.convergence_seconds,
            drained_seconds: None,
            visibility: verdict.visibility.clone(),
            never_visible: verdict.never_visible,
            sample_period_seconds: 0.0,
            recovery: None,
            samples: BTreeMap::new(),
            max_pending_records: 0,
            links_seen_down: 0,
            max_log_start: 0,
            history: String::new(),
            passed: verdict.is_clean(),
            findings,
        }
    }

    /// The one-screen text.
    pub fn render(&self) -> String {
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}s"));
        let pct = |p: &Percentiles| {
            format!(
                "p50 {}  p99 {}  max {}  (n={})",
                secs(p.p50_seconds),
                secs(p.p99_seconds),
                secs(p.max_seconds),
                p.count
            )
        };
        let map = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== chaos {} / {}: {} ({} regions, seed {}) ==",
            self.tier,
            self.scenario,
            if self.passed { "PASSED" } else { "FAILED" },
            self.regions,
            self.seed
        );
        let _ = writeln!(
            out,
            "runs {}   faulty phase {:.1}s   wall {:.1}s   pace {}",
            self.runs,
            self.fault_seconds,
            self.wall_seconds,
            self.pace
                .map_or_else(|| "-".to_owned(), |p| format!("{p:?}"))
        );
        let _ = writeln!(out, "binaries {}", self.binaries);
        let total: usize = self.operations.values().sum();
        let _ = writeln!(out, "operations {total}: {}", map(&self.operations));
        let _ = writeln!(out, "  by kind: {}", map(&self.operations_by_kind));
        let faults: u64 = self.faults.values().sum();
        let _ = writeln!(
            out,
            "faults {faults}: {}",
            self.faults
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "lost {}   duplicated {} ({} effects)   zombies {}   phantoms {}   divergent {}   offsets backwards {}   negative lag {}",
            self.lost,
            self.duplicated,
            self.duplicated_effects,
            self.zombies,
            self.phantoms,
            self.divergent,
            self.offsets_backwards,
            self.negative_lag
        );
        let _ = writeln!(
            out,
            "convergence after heal {}   lag drained after heal {}",
            secs(self.convergence_seconds),
            secs(self.drained_seconds)
        );
        let _ = writeln!(
            out,
            "visibility in every region: {}   never {}   (sampled every {:.2}s)",
            pct(&self.visibility),
            self.never_visible,
            self.sample_period_seconds
        );
        if let Some(r) = &self.recovery {
            let _ = writeln!(out, "recovery after restart: {}", pct(r));
        }
        let _ = writeln!(
            out,
            "samples: {}   most pending for a peer {}   link-down rows {}   highest log start {}",
            map(&self.samples),
            self.max_pending_records,
            self.links_seen_down,
            self.max_log_start
        );
        let _ = writeln!(out, "history: {}", self.history);
        for f in &self.findings {
            let _ = writeln!(out, "  ! {f}");
        }
        out
    }

    /// Writes the JSON to `dir/<tier>-<scenario>.json`; returns the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("create the chaos report dir");
        let path = dir.join(format!("{}-{}.json", self.tier, self.scenario));
        let text = serde_json::to_string_pretty(self).expect("summary as JSON");
        std::fs::write(&path, text + "\n").expect("write the chaos summary");
        path
    }
}
