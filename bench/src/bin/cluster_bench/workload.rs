//! The load and its observers: one writer per region sending local writes
//! at a fixed offered rate (open loop: a slow answer does not slow the
//! offer down), and one poller per node reading its applied vector through
//! the admin API's `Offsets`.
//!
//! Everything is timed on one [`Clock`]; writers record each acknowledged
//! change as `(seq, ack time)` and pollers each answer as `(time, applied
//! vector)`: the arithmetic in [`crate::lag`] turns them into lags.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tributary_proto::v1 as pb;
use tributary_proto::v1::admin_client::AdminClient;

use crate::lag::{Ack, Micros, Seq};

/// The three regions of the benchmark cluster.
pub const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];

/// An applied vector, one seq per region of [`REGIONS`].
pub type Vector = [u64; 3];

/// The benchmark's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts counting now.
    pub fn start() -> Self {
        Clock(Instant::now())
    }

    /// Time since the start.
    pub fn now(&self) -> Micros {
        Micros(u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// Locks, recovering from a poisoned mutex (the logs stay consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An admin client on its own connection.
pub async fn admin(uri: &str) -> Result<AdminClient<Channel>> {
    let channel = Endpoint::from_shared(uri.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connect to {uri}"))?;
    Ok(AdminClient::new(channel))
}

/// The writers' settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Changes per second offered.
    pub rate: u64,
    /// One request per tick.
    pub tick: Duration,
    /// Distinct items written to.
    pub keys: u64,
    /// Requests awaiting their answer at most; beyond, the tick's changes
    /// are not offered (and counted).
    pub max_in_flight: usize,
}

/// What one writer recorded.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Each acknowledged change.
    pub acks: Vec<Ack>,
    /// Each answered request: when its answer arrived, and how long after
    /// the request left.
    pub latencies: Vec<(Micros, Micros)>,
    /// Changes sent.
    pub sent: u64,
    /// Changes not sent because too many requests were waiting.
    pub dropped: u64,
    /// Changes refused by the node (one result each) or lost with a failed
    /// request.
    pub failed: u64,
    /// The first failure seen.
    pub first_error: Option<String>,
}

/// A running writer.
pub struct Writer {
    task: JoinHandle<()>,
    log: Arc<Mutex<WriterLog>>,
    /// One permit per request that may be awaiting its answer.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    stop: watch::Sender<bool>,
}

/// One change line of the carts workload.
fn change_line(key: u64, n: u64) -> String {
    format!(
        r#"{{"table":"carts","key":{{"pk":"u{}","sk":"c{}"}},"set":{{"name":"item {n}"}},"add":{{"qty":1}}}}"#,
        key / 10,
        key % 10
    )
}

impl Writer {
    /// Starts writing to `client` (the node of `region`).
    pub fn start(
        client: AdminClient<Channel>,
        region: &'static str,
        cfg: WriterConfig,
        clock: Clock,
        seed: u64,
    ) -> Self {
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight));
        let (stop, mut stopped) = watch::channel(false);
        let (log2, in_flight2) = (Arc::clone(&log), Arc::clone(&in_flight));
        let task = tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut tick = tokio::time::interval(cfg.tick);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last = clock.now();
            let mut owed = 0.0f64;
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return,
                }
                // The offer follows elapsed time, so a late tick sends more
                // rather than the rate silently dropping.
                let now = clock.now();
                owed += cfg.rate as f64 * now.since(last).secs();
                last = now;
                let count = owed.floor() as u64;
                owed -= count as f64;
                if count == 0 {
                    continue;
                }
                let Ok(permit) = Arc::clone(&in_flight2).try_acquire_owned() else {
                    lock(&log2).dropped += count;
                    continue;
                };
                let lines: Vec<String> = (0..count)
                    .map(|_| {
                        n += 1;
                        change_line(rng.random_range(0..cfg.keys), n)
                    })
                    .collect();
                let (mut client, log) = (client.clone(), Arc::clone(&log2));
                tokio::spawn(async move {
                    let sent = clock.now();
                    let answer = client
                        .write(pb::WriteRequest {
                            changes_json: lines,
                        })
                        .await;
                    let at = clock.now();
                    record(&mut lock(&log), region, count, sent, at, answer);
                    drop(permit);
                });
            }
        });
        Writer {
            task,
            log,
            in_flight,
            max_in_flight: cfg.max_in_flight,
            stop,
        }
    }

    /// Stops offering, waits (at most `deadline`) for the requests in
    /// flight, and returns what was recorded.
    pub async fn stop(self, deadline: Duration) -> Result<WriterLog> {
        let _ = self.stop.send(true);
        self.task.await.context("the writer task failed")?;
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        let waited = tokio::time::timeout(deadline, self.in_flight.acquire_many(all)).await;
        if !matches!(waited, Ok(Ok(_))) {
            anyhow::bail!(
                "{} write requests still unanswered after {deadline:?}",
                self.max_in_flight
                    .saturating_sub(self.in_flight.available_permits())
            );
        }
        Ok(std::mem::take(&mut *lock(&self.log)))
    }
}

fn record(
    log: &mut WriterLog,
    region: &str,
    count: u64,
    sent: Micros,
    at: Micros,
    answer: Result<tonic::Response<pb::WriteResponse>, tonic::Status>,
) {
    log.sent += count;
    match answer {
        Err(status) => {
            log.failed += count;
            log.first_error
                .get_or_insert_with(|| format!("write request failed: {status}"));
        }
        Ok(response) => {
            log.latencies.push((at, at.since(sent)));
            for result in response.into_inner().results {
                match result.result {
                    Some(pb::write_result::Result::Written(w)) if w.origin == region => {
                        log.acks.push(Ack {
                            seq: Seq(w.seq),
                            at,
                        });
                    }
                    Some(pb::write_result::Result::Written(w)) => {
                        log.failed += 1;
                        log.first_error.get_or_insert_with(|| {
                            format!("written with origin {} at the node of {region}", w.origin)
                        });
                    }
                    Some(pb::write_result::Result::Error(e)) => {
                        log.failed += 1;
                        log.first_error
                            .get_or_insert_with(|| format!("change refused: {e}"));
                    }
                    None => {
                        log.failed += 1;
                        log.first_error
                            .get_or_insert_with(|| "a result without outcome".to_owned());
                    }
                }
            }
        }
    }
}

/// One answer of a node's `Offsets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the request left.
    pub sent: Micros,
    /// When the answer arrived.
    pub at: Micros,
    /// The node's applied vector.
    pub applied: Vector,
}

/// What one poller recorded.
#[derive(Debug, Default)]
pub struct PollLog {
    /// Every answer, in time order.
    pub samples: Vec<Sample>,
    /// Failed polls.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// A running poller of one node's applied vector.
pub struct Poller {
    task: JoinHandle<PollLog>,
    latest: watch::Receiver<Option<Sample>>,
    stop: watch::Sender<bool>,
}

impl Poller {
    /// Polls `client` every `every` (or as fast as it answers, if slower).
    pub fn start(mut client: AdminClient<Channel>, every: Duration, clock: Clock) -> Self {
        let (latest_tx, latest) = watch::channel(None);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut log = PollLog::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return log,
                }
                let sent = clock.now();
                match client.offsets(pb::OffsetsRequest {}).await {
                    Ok(r) => {
                        let seqs = r.into_inner().applied.unwrap_or_default().seqs;
                        let applied = REGIONS.map(|o| seqs.get(o).copied().unwrap_or(0));
                        let s = Sample {
                            sent,
                            at: clock.now(),
                            applied,
                        };
                        log.samples.push(s);
                        latest_tx.send_replace(Some(s));
                    }
                    Err(status) => {
                        log.errors += 1;
                        log.first_error
                            .get_or_insert_with(|| format!("Offsets failed: {status}"));
                    }
                }
            }
        });
        Poller { task, latest, stop }
    }

    /// The newest answer.
    pub fn latest(&self) -> Option<Sample> {
        *self.latest.borrow()
    }

    /// A handle on the newest answer, for another task.
    pub fn watcher(&self) -> watch::Receiver<Option<Sample>> {
        self.latest.clone()
    }

    /// Waits (at most `deadline`) for an answer satisfying `pred`; on
    /// timeout the error names `what` and the last answer seen.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample> {
        let mut rx = self.latest.clone();
        let found =
            tokio::time::timeout(deadline, rx.wait_for(|s| s.as_ref().is_some_and(&pred))).await;
        match found {
            Ok(Ok(s)) => (*s).ok_or_else(|| anyhow!("{what}: no sample")),
            Ok(Err(_)) => Err(anyhow!("{what}: the poller stopped")),
            Err(_) => Err(anyhow!(
                "{what}: not reached within {deadline:?}; last applied vector seen {:?} (regions {REGIONS:?})",
                self.latest().map(|s| s.applied)
            )),
        }
    }

    /// Stops polling and returns what was recorded.
    pub async fn stop(self) -> Result<PollLog> {
        let _ = self.stop.send(true);
        self.task.await.context("the poller task failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_lines_spread_keys_over_partitions_and_sort_keys() {
        let line = change_line(4217, 9);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["key"]["pk"], "u421");
        assert_eq!(v["key"]["sk"], "c7");
        assert_eq!(v["add"]["qty"], 1);
        assert_eq!(v["set"]["name"], "item 9");
    }

    #[test]
    fn a_refused_change_is_counted_and_an_ack_keeps_its_seq() {
        let mut log = WriterLog::default();
        let response = pb::WriteResponse {
            results: vec![
                pb::WriteResult {
                    result: Some(pb::write_result::Result::Written(pb::Written {
                        origin: "r".into(),
                        seq: 7,
                    })),
                },
                pb::WriteResult {
                    result: Some(pb::write_result::Result::Error("no".into())),
                },
            ],
        };
        record(
            &mut log,
            "r",
            2,
            Micros(10),
            Micros(30),
            Ok(tonic::Response::new(response)),
        );
        assert_eq!(
            log.acks,
            vec![Ack {
                seq: Seq(7),
                at: Micros(30)
            }]
        );
        assert_eq!((log.sent, log.failed), (2, 1));
        assert_eq!(log.latencies, vec![(Micros(30), Micros(20))]);
        assert_eq!(log.first_error.as_deref(), Some("change refused: no"));
    }
}
