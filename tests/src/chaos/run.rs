//! What every chaos tier of real processes does around its faults: start
//! the recorder, the samplers and the writers; after the heal, wait for
//! identical digests and drained lag; read the final state; check; print
//! and write the summary; and on any failure (a violation or a panic)
//! print the seed, the history's path and the nodes' log tails, and keep
//! the full logs beside the history.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checker::{Verdict, check};
use super::history::{DELETES, Key, OpKind, Outcome, REGISTERS, Recorder};
use super::observe::{self, Endpoint, Observations, Sampler};
use super::report::Summary;
use super::workload::{Sabotage, WorkloadConfig, Writers};
use crate::cluster::Cluster;

/// How often the samplers ask every region for its offsets.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(300);

/// A chaos run in progress.
pub struct Run {
    /// `tier2`, `tier3`.
    pub tier: String,
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Where the summary, the history and (on failure) the logs go.
    pub dir: PathBuf,
    /// Every region's admin endpoint.
    pub endpoints: Vec<Endpoint>,
    /// The history being recorded.
    pub recorder: Arc<Recorder>,
    /// When the run started (the cluster is up).
    pub epoch: Instant,
    logs: Vec<(String, PathBuf)>,
    sampler: Option<Sampler>,
    writers: Option<Writers>,
    sabotage: Sabotage,
}

impl Run {
    /// Starts recording, sampling and writing against `cluster`.
    pub fn start(
        tier: &str,
        scenario: &str,
        seed: u64,
        cluster: &Cluster,
        workload: &WorkloadConfig,
    ) -> Self {
        let dir = super::out_dir();
        let history = dir.join(format!("{tier}-{scenario}.history.jsonl"));
        println!(
            "chaos {tier}/{scenario}: seed {seed} (replay with TRIBUTARY_CHAOS_SEED={seed}); history {}",
            history.display()
        );
        let epoch = Instant::now();
        let recorder = Arc::new(Recorder::new(epoch, Some(&history)));
        let endpoints: Vec<Endpoint> = cluster
            .nodes
            .iter()
            .map(|n| Endpoint {
                region: n.region.clone(),
                url: n.url(),
                tls: n.tls.clone(),
            })
            .collect();
        let sampler = Sampler::start(&endpoints, epoch, SAMPLE_PERIOD, 3);
        let writers = Writers::start(&recorder, &endpoints, workload, seed);
        Self {
            tier: tier.to_owned(),
            scenario: scenario.to_owned(),
            seed,
            dir,
            endpoints,
            recorder,
            epoch,
            logs: cluster
                .nodes
                .iter()
                .map(|n| (n.region.clone(), n.log.clone()))
                .collect(),
            sampler: Some(sampler),
            writers: Some(writers),
            sabotage: workload.sabotage,
        }
    }

    /// Stops the writers (their last calls end).
    pub fn stop_writers(&mut self) {
        if let Some(w) = self.writers.take() {
            w.stop();
            if self.sabotage == Sabotage::Diverge {
                self.diverge();
            }
        }
    }

    /// The `diverge` sabotage: the first region stops shipping to every
    /// peer, then acknowledges one more write.
    fn diverge(&self) {
        let first = &self.endpoints[0];
        for peer in &self.endpoints[1..] {
            let run = super::ctl::run(
                &first.url,
                &first.tls,
                &["pause", &peer.region],
                "",
                Duration::from_secs(5),
            );
            println!(
                "sabotage: pause {} -> {}: {:?}",
                first.region, peer.region, run.code
            );
        }
        let kind = OpKind::Write {
            key: Key::new(REGISTERS, "diverge"),
            value: "w-diverge-1".to_owned(),
        };
        let index = self.recorder.invoke(
            usize::MAX,
            &first.region,
            vec![kind.clone()],
            Instant::now(),
        );
        let run = super::ctl::run(
            &first.url,
            &first.tls,
            &["write"],
            &(kind.change_line() + "\n"),
            Duration::from_secs(5),
        );
        let outcome = run.lines.first().map_or_else(
            || Outcome::Unknown {
                reason: run.failure(),
            },
            |(_, line)| super::workload::outcome_of(line),
        );
        self.recorder.complete(index[0], outcome, run.ended);
    }

    /// Waits until every region reports the same non-empty digest; returns
    /// when that was first seen, or the last digests seen at `deadline`.
    pub fn wait_converged(&self, deadline: Duration) -> Result<Instant, String> {
        poll(deadline, || {
            let digests: Vec<Result<observe::Digest, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .endpoints
                    .iter()
                    .map(|e| s.spawn(move || observe::digest(e)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("digest thread"))
                    .collect()
            });
            let at = Instant::now();
            let first = digests[0].clone()?;
            if first.items > 0 && digests.iter().all(|d| d.as_ref().ok() == Some(&first)) {
                Ok(Some(at))
            } else {
                Err(format!("digests {digests:?}"))
            }
        })
    }

    /// Waits until no region has a record pending for any peer (`replctl
    /// lag --json`); returns when that was seen, or the last state seen at
    /// `deadline`.
    pub fn wait_drained(&self, deadline: Duration) -> Result<Instant, String> {
        poll(deadline, || {
            let mut seen = Vec::new();
            for e in &self.endpoints {
                let run = super::ctl::run(
                    &e.url,
                    &e.tls,
                    &["lag", "--json"],
                    "",
                    Duration::from_secs(2),
                );
                let doc = run
                    .json()
                    .ok_or_else(|| format!("{}: {}", e.region, run.failure()))?;
                let pending: u64 = doc["peers"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .map(|p| p["pending_records"].as_u64().unwrap_or(u64::MAX))
                            .fold(0u64, u64::saturating_add)
                    })
                    .unwrap_or(u64::MAX);
                seen.push(format!("{}: {pending}", e.region));
                if pending != 0 {
                    // The links' own view, so a stuck one can be diagnosed.
                    let status = super::ctl::run(
                        &e.url,
                        &e.tls,
                        &["status", "--json"],
                        "",
                        Duration::from_secs(2),
                    );
                    let links = status
                        .json()
                        .map(|s| s["peers"].to_string())
                        .unwrap_or_default();
                    return Err(format!(
                        "pending records {}; {} lag {doc}; its links {links}",
                        seen.join(", "),
                        e.region
                    ));
                }
            }
            Ok(Some(Instant::now()))
        })
    }

    /// Stops sampling, reads every region's final state and checks the
    /// history against it. `healed` and `converged` are instants.
    pub fn check(&mut self, healed: Instant, converged: Option<Instant>) -> (Verdict, Summary) {
        self.stop_writers();
        let (offsets, lag) = self.sampler.take().map(Sampler::finish).unwrap_or_default();
        let history = self.recorder.history();
        let mut keys: Vec<Key> = history.ops.iter().map(|o| o.kind.key().clone()).collect();
        keys.sort();
        keys.dedup();
        let shared: Vec<Key> = keys.iter().filter(|k| k.pk != DELETES).cloned().collect();
        let finals =
            observe::read_final(&self.endpoints, &keys, &shared).expect("read the final state");
        let since = |t: Instant| t.saturating_duration_since(self.epoch);
        let obs = Observations {
            regions: self.endpoints.iter().map(|e| e.region.clone()).collect(),
            finals,
            offsets,
            lag,
            healed: Some(since(healed)),
            converged: converged.map(since),
        };
        let verdict = check(&history, &obs);
        let mut summary = Summary::new(&self.tier, &self.scenario, self.seed, &history, &verdict);
        summary.regions = self.endpoints.len();
        summary.sample_period_seconds = SAMPLE_PERIOD.as_secs_f64();
        summary.samples = [
            ("offsets".to_owned(), obs.offsets.len()),
            ("lag".to_owned(), obs.lag.len()),
        ]
        .into();
        summary.max_log_start = obs
            .offsets
            .iter()
            .flat_map(|o| o.log_start.values().copied())
            .max()
            .unwrap_or(0);
        // Evidence that the faults bit: the most records a region had
        // pending for a peer, and lag samples with a link down.
        let peers = obs
            .lag
            .iter()
            .flat_map(|l| l.doc["peers"].as_array().cloned().unwrap_or_default());
        for p in peers {
            let pending = p["pending_records"].as_u64().unwrap_or(0);
            summary.max_pending_records = summary.max_pending_records.max(pending);
            if p["connected"] == serde_json::Value::Bool(false) {
                summary.links_seen_down += 1;
            }
        }
        summary.history = self
            .recorder
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        (verdict, summary)
    }

    /// Prints and writes `summary`; panics with the evidence unless it
    /// passed and `extra` (the tier's own bounds) holds no failure.
    pub fn report(&self, summary: &mut Summary, extra: &[String]) {
        summary.wall_seconds = self.epoch.elapsed().as_secs_f64();
        summary.passed &= extra.is_empty();
        summary.findings.extend(extra.iter().cloned());
        print!("{}", summary.render());
        let path = summary.write(&self.dir);
        println!("summary: {}", path.display());
        if !summary.passed {
            panic!(
                "chaos {}/{} failed (seed {}, replay with TRIBUTARY_CHAOS_SEED={}): {}; history {}; logs {}",
                self.tier,
                self.scenario,
                self.seed,
                self.seed,
                summary.findings.join("; "),
                summary.history,
                self.logs_dir().display()
            );
        }
    }

    fn logs_dir(&self) -> PathBuf {
        self.dir
            .join(format!("{}-{}.logs", self.tier, self.scenario))
    }

    /// Every node's log tail.
    pub fn log_tails(&self) -> String {
        self.logs
            .iter()
            .map(|(region, path)| {
                let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {region} ({}) ---\n{}",
                    path.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `check` until it returns `Ok(Some(_))` or `deadline` passes;
/// then the last state it reported.
pub fn poll<T>(
    deadline: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let end = Instant::now() + deadline;
    let mut last = String::from("(never checked)");
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(state) => last = state,
        }
        if Instant::now() >= end {
            return Err(format!("after {deadline:?}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Writers and samplers must not outlive the cluster's nodes.
        if let Some(w) = self.writers.take() {
            w.stop();
        }
        if let Some(s) = self.sampler.take() {
            let _ = s.finish();
        }
        let dir = self.logs_dir();
        let _ = std::fs::create_dir_all(&dir);
        for (region, path) in &self.logs {
            let _ = std::fs::copy(path, dir.join(format!("{region}.log")));
        }
        eprintln!(
            "chaos {}/{} FAILED — seed {} (replay with TRIBUTARY_CHAOS_SEED={}); history {}; full node logs in {}\n{}",
            self.tier,
            self.scenario,
            self.seed,
            self.seed,
            self.recorder
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            dir.display(),
            self.log_tails()
        );
        let _ = self.recorder.history(); // flushes the file
    }
}
