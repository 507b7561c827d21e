//! The chaos writers: threads that write through the real client path
//! (`replctl write`) without pause other than their pacing, each bound to
//! one region, and record every operation in the [`Recorder`].
//!
//! Each call sends a small batch of operations of every kind (see
//! `history.rs` for the values). About `shared_percent` of the counter,
//! set and register operations go to keys every writer uses (concurrent
//! conflicting writes across regions); the rest to the writer's own keys.
//! A remove (or delete) only ever targets an element (item) whose add
//! (create) this writer saw acknowledged by its region, so the checker can
//! tell a zombie from add-wins.
//!
//! An operation without a definite answer is `unknown` and never retried:
//! retrying it as a new operation keeps every value unique.
//!
//! [`Sabotage`] makes a writer lie on purpose, to prove the checker fails
//! (`TRIBUTARY_CHAOS_SABOTAGE`); it is off unless that variable is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::ctl;
use super::history::{COUNTERS, DELETES, Key, OpKind, Outcome, REGISTERS, Recorder, SETS};
use super::observe::Endpoint;

/// A deliberate bug in the writers, to watch the checker catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Honest writers.
    None,
    /// Now and then an increment is recorded as acknowledged but never
    /// sent: the checker must report it lost.
    AckUnsent,
    /// Now and then an increment is sent twice but recorded once: the
    /// checker must report a duplicated effect.
    SendTwice,
    /// Now and then a remove is recorded as acknowledged but never sent:
    /// the checker must report a zombie.
    FakeRemove,
    /// Now and then an increment is sent but recorded as rejected: the
    /// checker must report a phantom.
    HideAck,
    /// After the writers stop, the first region's links to every peer are
    /// paused (`replctl pause`) and one more write goes to it: the regions
    /// must be reported divergent, and lag not drained.
    Diverge,
}

impl Sabotage {
    /// From `TRIBUTARY_CHAOS_SABOTAGE` (`lost`, `duplicate`, `zombie`,
    /// `phantom`, `diverge`); honest when unset.
    pub fn from_env() -> Self {
        match std::env::var("TRIBUTARY_CHAOS_SABOTAGE").as_deref() {
            Ok("lost") => Self::AckUnsent,
            Ok("duplicate") => Self::SendTwice,
            Ok("zombie") => Self::FakeRemove,
            Ok("phantom") => Self::HideAck,
            Ok("diverge") => Self::Diverge,
            Ok("") | Err(_) => Self::None,
            Ok(other) => panic!(
                "TRIBUTARY_CHAOS_SABOTAGE={other}: expected lost, duplicate, zombie, phantom or diverge"
            ),
        }
    }
}

/// How the writers write.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Writer threads per region.
    pub writers_per_region: usize,
    /// Keys of each kind that every writer uses.
    pub shared_keys: usize,
    /// Keys of each kind that only one writer uses.
    pub private_keys: usize,
    /// Percent of operations on shared keys.
    pub shared_percent: u32,
    /// Most operations per `replctl write` call.
    pub max_batch: usize,
    /// Most pause between two calls of one writer (pacing).
    pub pace: Duration,
    /// `replctl --timeout`.
    pub timeout: Duration,
    /// Deliberate bug, if any.
    pub sabotage: Sabotage,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            writers_per_region: 1,
            shared_keys: 4,
            private_keys: 2,
            shared_percent: 30,
            max_batch: 6,
            pace: Duration::from_millis(40),
            timeout: Duration::from_secs(2),
            sabotage: Sabotage::None,
        }
    }
}

/// Running writers.
pub struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts `cfg.writers_per_region` writers per endpoint.
    pub fn start(
        recorder: &Arc<Recorder>,
        endpoints: &[Endpoint],
        cfg: &WorkloadConfig,
        seed: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for round in 0..cfg.writers_per_region {
            for endpoint in endpoints {
                let id = threads.len();
                let writer = Writer {
                    id,
                    endpoint: endpoint.clone(),
                    cfg: cfg.clone(),
                    rng: StdRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9)),
                    n: 0,
                    live_elements: Vec::new(),
                    live_items: Vec::new(),
                    sabotage_on: id == 0 && round == 0,
                };
                let (recorder, stop) = (Arc::clone(recorder), Arc::clone(&stop));
                threads.push(std::thread::spawn(move || writer.run(&recorder, &stop)));
            }
        }
        Self { stop, threads }
    }

    /// Stops the writers and waits for their last calls to end.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("writer thread");
        }
    }
}

/// One line to send and the operation (position in the call) it is for.
struct Send {
    line: String,
    op: Option<usize>,
}

struct Writer {
    id: usize,
    endpoint: Endpoint,
    cfg: WorkloadConfig,
    rng: StdRng,
    n: u64,
    /// Elements this writer added, acknowledged, not yet removed.
    live_elements: Vec<(Key, String)>,
    /// Items this writer created, acknowledged, not yet deleted.
    live_items: Vec<Key>,
    sabotage_on: bool,
}

impl Writer {
    fn run(mut self, recorder: &Recorder, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let count = self.rng.random_range(1..=self.cfg.max_batch.max(1));
            let kinds: Vec<OpKind> = (0..count).map(|_| self.next_op()).collect();
            let answered = self.call(recorder, kinds);
            // Pacing; longer after a call without an answer (node down).
            let pause = if answered {
                self.rng.random_range(Duration::ZERO..=self.cfg.pace)
            } else {
                Duration::from_millis(self.rng.random_range(100..200))
            };
            std::thread::sleep(pause);
        }
    }

    fn key(&mut self, pk: &str) -> Key {
        if self.rng.random_range(0..100) < self.cfg.shared_percent {
            Key::new(
                pk,
                format!("s{}", self.rng.random_range(0..self.cfg.shared_keys)),
            )
        } else {
            let i = self.rng.random_range(0..self.cfg.private_keys);
            Key::new(pk, format!("w{}-{i}", self.id))
        }
    }

    fn next_op(&mut self) -> OpKind {
        self.n += 1;
        let (w, n) = (self.id, self.n);
        match self.rng.random_range(0..100) {
            0..35 => OpKind::Increment {
                key: self.key(COUNTERS),
                tag: format!("i-{w}-{n}"),
            },
            35..50 if !self.live_elements.is_empty() => {
                let i = self.rng.random_range(0..self.live_elements.len());
                let (key, element) = self.live_elements.swap_remove(i);
                OpKind::SetRemove { key, element }
            }
            35..65 => OpKind::SetAdd {
                key: self.key(SETS),
                element: format!("e-{w}-{n}"),
            },
            65..90 => OpKind::Write {
                key: self.key(REGISTERS),
                value: format!("w-{w}-{n}"),
            },
            90..95 if !self.live_items.is_empty() => {
                let i = self.rng.random_range(0..self.live_items.len());
                OpKind::Delete {
                    key: self.live_items.swap_remove(i),
                }
            }
            _ => OpKind::Create {
                key: Key::new(DELETES, format!("w{w}-{n}")),
                value: format!("c-{w}-{n}"),
            },
        }
    }

    /// What to send for `kinds`, and outcomes decided without the node
    /// (sabotage only).
    fn plan(&mut self, kinds: &[OpKind]) -> (Vec<Send>, Vec<Option<Outcome>>) {
        let mut sends = Vec::new();
        let mut fixed = vec![None; kinds.len()];
        for (i, kind) in kinds.iter().enumerate() {
            let line = kind.change_line();
            let lie = self.sabotage_on && self.rng.random_range(0..20) == 0;
            let fake_ack = Outcome::Ok {
                origin: self.endpoint.region.clone(),
                seq: 0,
            };
            match (self.cfg.sabotage, kind) {
                (Sabotage::AckUnsent, OpKind::Increment { .. }) if lie => {
                    fixed[i] = Some(fake_ack);
                }
                (Sabotage::FakeRemove, OpKind::SetRemove { .. }) if lie => {
                    fixed[i] = Some(fake_ack);
                }
                (Sabotage::SendTwice, OpKind::Increment { .. }) if lie => {
                    sends.push(Send {
                        line: line.clone(),
                        op: Some(i),
                    });
                    sends.push(Send { line, op: None });
                }
                (Sabotage::HideAck, OpKind::Increment { .. }) if lie => {
                    fixed[i] = Some(Outcome::Failed {
                        error: "sabotage: acknowledged but recorded as rejected".into(),
                    });
                    sends.push(Send { line, op: None });
                }
                _ => sends.push(Send { line, op: Some(i) }),
            }
        }
        (sends, fixed)
    }

    /// One `replctl write` call; records every outcome. Returns whether
    /// the node answered.
    fn call(&mut self, recorder: &Recorder, kinds: Vec<OpKind>) -> bool {
        let (sends, fixed) = self.plan(&kinds);
        let input: String = sends.iter().map(|s| format!("{}\n", s.line)).collect();
        let indexes = recorder.invoke(
            self.id,
            &self.endpoint.region,
            kinds.clone(),
            Instant::now(),
        );
        let run = ctl::run(
            &self.endpoint.url,
            &self.endpoint.tls,
            &["write"],
            &input,
            self.cfg.timeout,
        );
        let mut outcomes: Vec<Option<(Outcome, Instant)>> = vec![None; kinds.len()];
        for (send, (at, line)) in sends.iter().zip(&run.lines) {
            if let Some(i) = send.op {
                outcomes[i] = Some((outcome_of(line), *at));
            }
        }
        let answered = matches!(run.code, Some(0 | 1));
        for (i, kind) in kinds.iter().enumerate() {
            let (outcome, at) = match (fixed[i].clone(), outcomes[i].take()) {
                (Some(lie), Some((_, at))) => (lie, at),
                (Some(lie), None) => (lie, run.ended),
                (None, Some(found)) => found,
                (None, None) => (
                    Outcome::Unknown {
                        reason: run.failure(),
                    },
                    run.ended,
                ),
            };
            if matches!(outcome, Outcome::Ok { .. }) {
                match kind {
                    OpKind::SetAdd { key, element } => {
                        self.live_elements.push((key.clone(), element.clone()));
                    }
                    OpKind::Create { key, .. } => self.live_items.push(key.clone()),
                    _ => {}
                }
            }
            recorder.complete(indexes[i], outcome, at);
        }
        answered
    }
}

/// A `replctl write` result line as an outcome.
pub fn outcome_of(line: &str) -> Outcome {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Outcome::Unknown {
            reason: format!("unreadable result line {line:?}"),
        };
    };
    match (v["origin"].as_str(), v["seq"].as_u64(), v["error"].as_str()) {
        (Some(origin), Some(seq), _) => Outcome::Ok {
            origin: origin.to_owned(),
            seq,
        },
        (_, _, Some(error)) => Outcome::Failed {
            error: error.to_owned(),
        },
        _ => Outcome::Unknown {
            reason: format!("unexpected result line {line}"),
        },
    }
}
