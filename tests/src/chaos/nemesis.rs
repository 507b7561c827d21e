//! The nemesis of tier 2: a schedule of faults derived from the seed, and
//! its execution against a [`Cluster`] whose peer links run through a
//! [`ProxyNet`].
//!
//! Two tracks run side by side, so faults combine (a node killed during a
//! partition): the *network* track — one region isolated, a split, a
//! one-way cut, a slowdown (latency and a bandwidth limit), connection
//! resets — and the *process* track — SIGSTOP/SIGCONT pauses and SIGKILL
//! then restart (at least `min_kills`). Within a track faults do not
//! overlap. Durations are the scaled down to a CI budget (seconds,
//! not tens of seconds); the schedule's length is the run's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::proxy::ProxyNet;
use crate::cluster::Cluster;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Every link of `node` cut both ways.
    Isolate {
        /// The node.
        node: usize,
    },
    /// Links across `groups` cut both ways.
    Split {
        /// The sides.
        groups: Vec<Vec<usize>>,
    },
    /// Bytes from `from` to `to` stop; `to` to `from` still flow.
    OneWay {
        /// Sender cut off.
        from: usize,
        /// Receiver.
        to: usize,
    },
    /// Latency and a bandwidth limit on every link of `node`.
    Slow {
        /// The node.
        node: usize,
        /// Added latency each way, ms.
        latency_ms: u64,
        /// Bandwidth each way, bytes per second.
        bytes_per_second: u64,
    },
    /// Every open connection of `node`'s links reset, new ones refused.
    Reset {
        /// The node.
        node: usize,
    },
    /// SIGSTOP, then SIGCONT.
    Pause {
        /// The node.
        node: usize,
    },
    /// SIGKILL, then restart.
    Kill {
        /// The node.
        node: usize,
    },
}

impl Fault {
    /// Its kind, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Isolate { .. } => "isolate",
            Self::Split { .. } => "split",
            Self::OneWay { .. } => "one_way",
            Self::Slow { .. } => "slow",
            Self::Reset { .. } => "reset",
            Self::Pause { .. } => "pause",
            Self::Kill { .. } => "kill",
        }
    }
}

/// A fault, when it starts and how long it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Start, from the beginning of the schedule.
    pub at: Duration,
    /// How long until it is healed (for a kill: how long the node stays
    /// down).
    pub hold: Duration,
    /// The fault.
    pub fault: Fault,
}

fn secs(rng: &mut StdRng, (lo, hi): (f64, f64)) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..hi))
}

/// How long faults hold (seconds, low and high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pace {
    /// CI's: partitions and slowdowns of 1.5–4 s, pauses of 2–5 s, a kill
    /// every 6 s, so that a 60 s run holds dozens of faults.
    Compressed,
    /// The issue's: partitions of 10–30 s, slowdowns of 5–15 s, pauses of
    /// 5–10 s, a kill every ~20 s (at least the minimum), for soaks
    /// (`TRIBUTARY_CHAOS_PACE=real`).
    Real,
}

impl Pace {
    /// `TRIBUTARY_CHAOS_PACE` (`real` or `compressed`), else compressed.
    pub fn from_env() -> Pace {
        match std::env::var("TRIBUTARY_CHAOS_PACE").as_deref() {
            Ok("real") => Pace::Real,
            Ok("compressed") | Err(_) => Pace::Compressed,
            Ok(other) => panic!("TRIBUTARY_CHAOS_PACE={other}: expected real or compressed"),
        }
    }

    /// The faulty phase a scenario runs unless `TRIBUTARY_CHAOS_SECONDS`
    /// says otherwise: 60 s of compressed faults, or 120 s of real ones
    /// (four to six partitions of 10–30 s beside ten kills and four
    /// pauses).
    pub fn default_length(self) -> Duration {
        match self {
            Pace::Compressed => Duration::from_secs(60),
            Pace::Real => Duration::from_secs(120),
        }
    }

    /// The pace's durations, in seconds.
    fn timings(self) -> Timings {
        match self {
            Pace::Compressed => Timings {
                partition: (1.5, 4.0),
                slow: (1.5, 4.0),
                between: (0.3, 1.2),
                pause: (2.0, 5.0),
                kill: (0.2, 1.5),
                kill_every: 6,
                pause_every: 15,
            },
            Pace::Real => Timings {
                partition: (10.0, 30.0),
                slow: (5.0, 15.0),
                between: (1.0, 5.0),
                pause: (5.0, 10.0),
                kill: (0.5, 3.0),
                kill_every: 20,
                pause_every: 30,
            },
        }
    }
}

/// How long faults of each kind hold (low and high seconds), the gap
/// between network faults, and the seconds of run per kill and per pause.
struct Timings {
    partition: (f64, f64),
    slow: (f64, f64),
    between: (f64, f64),
    pause: (f64, f64),
    kill: (f64, f64),
    kill_every: u64,
    pause_every: u64,
}

/// The schedule for `nodes` nodes over `length` at `pace`, from `seed`.
pub fn plan(seed: u64, nodes: usize, length: Duration, min_kills: usize, pace: Pace) -> Vec<Step> {
    let pace = pace.timings();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    // Network track.
    let mut t = secs(&mut rng, (0.3, 1.0));
    while t < length {
        let node = rng.random_range(0..nodes);
        let other = (node + rng.random_range(1..nodes)) % nodes;
        let (fault, hold) = match rng.random_range(0..100) {
            0..30 => (Fault::Isolate { node }, secs(&mut rng, pace.partition)),
            30..50 => {
                let mut order: Vec<usize> = (0..nodes).collect();
                order.shuffle(&mut rng);
                let cut = rng.random_range(1..=nodes / 2);
                let groups = vec![order[..cut].to_vec(), order[cut..].to_vec()];
                (Fault::Split { groups }, secs(&mut rng, pace.partition))
            }
            50..70 => (
                Fault::OneWay {
                    from: node,
                    to: other,
                },
                secs(&mut rng, pace.partition),
            ),
            70..90 => (
                Fault::Slow {
                    node,
                    latency_ms: rng.random_range(20..250),
                    bytes_per_second: rng.random_range(20_000..400_000),
                },
                secs(&mut rng, pace.slow),
            ),
            _ => (Fault::Reset { node }, secs(&mut rng, (0.5, 2.0))),
        };
        steps.push(Step { at: t, hold, fault });
        t += hold + secs(&mut rng, pace.between);
    }
    // Process track: kills and pauses in shuffled slots, a pause's slot
    // twice a kill's (pauses outlast the nodes' keepalive).
    let pauses = (length.as_secs() / pace.pause_every).max(3) as usize;
    let kills = min_kills.max((length.as_secs() / pace.kill_every) as usize);
    let mut kinds: Vec<bool> = std::iter::repeat_n(true, kills)
        .chain(std::iter::repeat_n(false, pauses))
        .collect();
    kinds.shuffle(&mut rng);
    let unit = length.div_f64((kills + 2 * pauses) as f64);
    let mut slot_start = Duration::ZERO;
    for kill in kinds {
        let node = rng.random_range(0..nodes);
        let slot = if kill { unit } else { unit * 2 };
        let start = slot_start + slot.mul_f64(rng.random_range(0.0..0.3));
        let (fault, hold) = if kill {
            (Fault::Kill { node }, secs(&mut rng, pace.kill))
        } else {
            (Fault::Pause { node }, secs(&mut rng, pace.pause))
        };
        steps.push(Step {
            at: start,
            hold: hold.min(slot.mul_f64(0.6)),
            fault,
        });
        slot_start += slot;
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// Runs a schedule and heals; counts what it did.
pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    net: &'a ProxyNet,
    paused: BTreeSet<usize>,
    down: BTreeSet<usize>,
    /// Faults injected, by kind.
    pub counts: BTreeMap<String, u64>,
    /// How long each restart took until the node listened again.
    pub restarts: Vec<Duration>,
}

impl<'a> Nemesis<'a> {
    /// A nemesis over `cluster` and its links.
    pub fn new(cluster: &'a mut Cluster, net: &'a ProxyNet) -> Self {
        Self {
            cluster,
            net,
            paused: BTreeSet::new(),
            down: BTreeSet::new(),
            counts: BTreeMap::new(),
            restarts: Vec::new(),
        }
    }

    fn region(&self, n: usize) -> String {
        self.cluster.nodes[n].region.clone()
    }

    fn start(&mut self, fault: &Fault) {
        *self.counts.entry(fault.kind().to_owned()).or_default() += 1;
        match fault {
            Fault::Isolate { node } => self.net.isolate(*node),
            Fault::Split { groups } => self.net.split(groups),
            Fault::OneWay { from, to } => self.net.cut_one_way(*from, *to),
            Fault::Slow {
                node,
                latency_ms,
                bytes_per_second,
            } => self.net.slow(
                *node,
                Duration::from_millis(*latency_ms),
                Some(*bytes_per_second),
            ),
            Fault::Reset { node } => {
                self.net.refuse(*node);
                self.net.reset(*node);
            }
            Fault::Pause { node } => {
                if self.cluster.nodes[*node].signal("STOP") {
                    self.paused.insert(*node);
                }
            }
            Fault::Kill { node } => {
                self.cluster.kill9(*node);
                self.down.insert(*node);
            }
        }
    }

    fn end(&mut self, fault: &Fault) {
        match fault {
            Fault::Pause { node } => self.resume(*node),
            Fault::Kill { node } => self.restart(*node),
            _ => self.net.heal(),
        }
    }

    fn resume(&mut self, node: usize) {
        if self.paused.remove(&node) {
            assert!(
                self.cluster.nodes[node].signal("CONT"),
                "SIGCONT {}",
                self.region(node)
            );
        }
    }

    fn restart(&mut self, node: usize) {
        if self.down.remove(&node) {
            let t = Instant::now();
            self.cluster.launch(node);
            self.restarts.push(t.elapsed());
        }
    }

    /// Runs `steps` from `begin` (sleeping until each event is due: the
    /// schedule, not a synchronisation), logging each event relative to
    /// `epoch`.
    pub fn run(&mut self, steps: &[Step], begin: Instant, epoch: Instant) {
        // (time, is_start, step): ends sort before starts at equal times.
        let mut events: Vec<(Duration, bool, &Step)> = steps
            .iter()
            .flat_map(|s| [(s.at, true, s), (s.at + s.hold, false, s)])
            .collect();
        events.sort_by_key(|(t, start, _)| (*t, *start));
        for (t, is_start, step) in events {
            if let Some(wait) = (begin + t).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let what = if is_start { "start" } else { "heal" };
            println!(
                "[{:7.3}s] nemesis {what} {}",
                epoch.elapsed().as_secs_f64(),
                describe(&step.fault, |n| self.region(n))
            );
            if is_start {
                self.start(&step.fault);
            } else {
                self.end(&step.fault);
            }
        }
    }

    /// Heals everything: links pass, paused nodes continue, killed nodes
    /// restart.
    pub fn heal_all(&mut self) {
        self.net.heal();
        for n in self.paused.clone() {
            self.resume(n);
        }
        for n in self.down.clone() {
            self.restart(n);
        }
    }
}

/// A fault in words, with region names.
pub fn describe(fault: &Fault, region: impl Fn(usize) -> String) -> String {
    match fault {
        Fault::Isolate { node } => format!("isolate {}", region(*node)),
        Fault::Split { groups } => {
            let sides: Vec<String> = groups
                .iter()
                .map(|g| g.iter().map(|n| region(*n)).collect::<Vec<_>>().join(","))
                .collect();
            format!("split {}", sides.join(" | "))
        }
        Fault::OneWay { from, to } => format!("cut {} -> {}", region(*from), region(*to)),
        Fault::Slow {
            node,
            latency_ms,
            bytes_per_second,
        } => format!(
            "slow {} (+{latency_ms} ms, {} KB/s)",
            region(*node),
            bytes_per_second / 1000
        ),
        Fault::Reset { node } => format!("reset and refuse connections of {}", region(*node)),
        Fault::Pause { node } => format!("SIGSTOP {}", region(*node)),
        Fault::Kill { node } => format!("SIGKILL {}", region(*node)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_derived_from_its_seed_and_has_enough_kills() {
        let a = plan(7, 3, Duration::from_secs(60), 10, Pace::Compressed);
        assert_eq!(a, plan(7, 3, Duration::from_secs(60), 10, Pace::Compressed));
        assert_ne!(a, plan(8, 3, Duration::from_secs(60), 10, Pace::Compressed));
        let kills = a
            .iter()
            .filter(|s| matches!(s.fault, Fault::Kill { .. }))
            .count();
        assert!(kills >= 10, "{kills} kills");
        // Within a track, faults do not overlap.
        for process in [true, false] {
            let track: Vec<&Step> = a
                .iter()
                .filter(|s| matches!(s.fault, Fault::Kill { .. } | Fault::Pause { .. }) == process)
                .collect();
            for w in track.windows(2) {
                assert!(w[0].at + w[0].hold <= w[1].at, "{w:?}");
            }
        }
        let short = plan(1, 5, Duration::from_secs(10), 10, Pace::Compressed);
        assert!(
            short
                .iter()
                .filter(|s| matches!(s.fault, Fault::Kill { .. }))
                .count()
                >= 10
        );
    }

    #[test]
    fn the_real_pace_holds_partitions_for_tens_of_seconds() {
        let steps = plan(3, 3, Duration::from_secs(600), 10, Pace::Real);
        let partitions: Vec<&Step> = steps
            .iter()
            .filter(|s| {
                matches!(
                    s.fault,
                    Fault::Isolate { .. } | Fault::Split { .. } | Fault::OneWay { .. }
                )
            })
            .collect();
        assert!(partitions.len() >= 10, "{} partitions", partitions.len());
        for p in partitions {
            assert!((10.0..30.0).contains(&p.hold.as_secs_f64()), "{p:?}");
        }
        let kills = steps
            .iter()
            .filter(|s| matches!(s.fault, Fault::Kill { .. }))
            .count();
        assert!(kills >= 10, "{kills} kills");
        for pause in steps
            .iter()
            .filter(|s| matches!(s.fault, Fault::Pause { .. }))
        {
            assert!((5.0..10.0).contains(&pause.hold.as_secs_f64()), "{pause:?}");
        }
    }
}
