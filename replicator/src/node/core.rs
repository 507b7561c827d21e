//! The state every part of a running node shares: the store (for reads),
//! the writer (for commits), the applied-vector watch, the peer links and
//! what inbound streams report; and the lag and status documents built
//! from them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tributary_engine::clock::{Clock, SystemClock, millis};
use tributary_engine::ids::{Hlc, RegionId, Seq, VersionVector};
use tributary_engine::store::{LogStore, RocksStore};

use super::metrics::Metrics;
use super::writer::Writer;
use crate::admin::hlc_text;
use crate::config::{NodeConfig, PeerEndpoint};
use crate::link::{CircuitBreaker, LinkFacts, Outbound, PeerLag, Rate, peer_lag};

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_millis() -> u64 {
    SystemClock.now_millis()
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it
/// (every critical section here leaves the state consistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the outbound side of one link knows.
pub struct LinkState {
    /// The shipping state machine.
    pub outbound: Outbound,
    /// When the peer last acknowledged (ms).
    pub last_ack_millis: Option<u64>,
    /// Acknowledged entries per second.
    pub rate: Rate,
    /// Reconnect pacing.
    pub breaker: CircuitBreaker,
    /// Connection attempts that failed or streams that broke.
    pub reconnects: u64,
    /// Why the link last went down.
    pub last_error: Option<String>,
}

/// One configured peer.
pub struct Link {
    /// Where it listens.
    pub endpoint: PeerEndpoint,
    /// Its state.
    pub state: Mutex<LinkState>,
    /// Wakes the link task (pause / resume).
    pub wake: Notify,
}

/// What an inbound stream from a peer reports.
#[derive(Debug, Clone, Default)]
pub struct InboundFacts {
    /// True while its stream is open.
    pub connected: bool,
    /// The sender's applied vector, from its last heartbeat or hello.
    pub head: VersionVector,
    /// The sender's HLC from its last heartbeat.
    pub hlc: Hlc,
    /// Batches received.
    pub batches: u64,
    /// When the last message came (ms).
    pub last_message_millis: Option<u64>,
    /// When it last brought a batch with entries (ms).
    pub delivered_millis: Option<u64>,
}

/// How long a peer's stream may bring no entries and still count as a
/// direct path for the peer's own entries (see [`Core::direct_origins`]).
pub const DIRECT_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether local writes may start: a node that started on an empty data
/// dir with peers configured may be a wiped node whose region's entries
/// live on at its peers; writing before it knows how far its own origin's
/// log went would reuse sequence numbers (and peers would drop those writes
/// as duplicates). It waits until every configured peer has reported its
/// view of this origin (hello, heartbeat or welcome) and the log has caught
/// up with the highest — by shipping or a snapshot. Every peer, because one
/// peer may hold fewer of this region's entries than another.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    /// True until it is safe to write.
    pub waiting: bool,
    /// The highest seq of this origin a peer reported.
    pub own_head: Option<Seq>,
    /// The peers that reported.
    pub reported: std::collections::BTreeSet<RegionId>,
}

/// The shared state of a running node.
pub struct Core {
    /// The configuration it runs with.
    pub config: NodeConfig,
    /// Its store, for reads (commits go through the writer).
    pub store: Arc<RocksStore>,
    /// The log writer.
    pub writer: Writer,
    /// The applied vector, as of the last durable commit.
    pub head: watch::Receiver<VersionVector>,
    /// What the log holds: applied plus parked (see [`super::writer::Held`]).
    pub held: watch::Receiver<super::writer::Held>,
    /// Configured peers.
    pub links: BTreeMap<RegionId, Arc<Link>>,
    /// Inbound streams, by sending region.
    pub inbound: Mutex<BTreeMap<RegionId, InboundFacts>>,
    /// Metrics.
    pub metrics: Metrics,
    /// When the node started.
    pub started: Instant,
    /// Admission control of local writes (throttling): one permit per
    /// change waiting to commit.
    pub write_permits: Semaphore,
    /// Flips to true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Bootstrap of a node that started empty.
    pub bootstrap: Mutex<Bootstrap>,
    /// What the sources and sinks report.
    pub sidecar: crate::sidecar::facts::SidecarFacts,
    /// The TLS files of `[tls]`, loaded (and reloaded when they change).
    pub tls: Option<Arc<tributary_proto::tls::TlsFiles>>,
}

/// The `replctl lag --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct LagDoc {
    /// This region.
    pub region: RegionId,
    /// One entry per configured peer.
    pub peers: Vec<PeerLag>,
    /// Per source (`kinesis:STREAM`, `dynamodb-streams:TABLE`): per shard
    /// its last offset and how far behind the stream it is, and counts.
    pub sources: BTreeMap<String, crate::sidecar::facts::SourceReport>,
    /// Per sink: items still to write, retries, dead letters.
    pub sinks: BTreeMap<String, crate::sidecar::facts::SinkReport>,
}

impl Core {
    /// This region.
    pub fn region(&self) -> &RegionId {
        &self.config.region
    }

    /// The peers whose own entries reach this node over their own open
    /// stream, which brought entries within [`DIRECT_QUIET`]. Other
    /// senders need not relay these origins to a node that parks. A peer
    /// with nothing to send drops out, and so does one whose link is
    /// paused or stuck: then the others relay its entries (an idle peer's:
    /// none).
    pub fn direct_origins(&self) -> Vec<RegionId> {
        let now = now_millis();
        let quiet = millis(DIRECT_QUIET);
        lock(&self.inbound)
            .iter()
            .filter(|(_, f)| {
                f.connected
                    && f.delivered_millis
                        .is_some_and(|at| now.saturating_sub(at) <= quiet)
            })
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// The HLC of log entry `(origin, seq)`, if it is in the log.
    fn hlc_of(&self, origin: &RegionId, seq: Seq) -> Option<Hlc> {
        let after = Seq(seq.0.saturating_sub(1));
        let found = self.store.entries(origin, after, 1).ok()?;
        found.first().filter(|e| e.seq == seq).map(|e| e.hlc)
    }

    /// A peer reports `head` (its applied vector): if this node is waiting
    /// to bootstrap, learn how far this region's own log went.
    pub fn peer_reports(&self, peer: &RegionId, head: &VersionVector) {
        let mut b = lock(&self.bootstrap);
        if !b.waiting {
            return;
        }
        b.reported.insert(peer.clone());
        let own = head.get(self.region());
        b.own_head = Some(b.own_head.map_or(own, |h| h.max(own)));
        self.check_bootstrapped(&mut b);
    }

    /// Re-checks the bootstrap after the log moved.
    pub fn log_moved(&self) {
        let mut b = lock(&self.bootstrap);
        if b.waiting {
            self.check_bootstrapped(&mut b);
        }
    }

    fn check_bootstrapped(&self, b: &mut Bootstrap) {
        let have = self.head.borrow().get(self.region());
        let all = self.links.keys().all(|p| b.reported.contains(p));
        if all && b.own_head.is_some_and(|h| h <= have) {
            b.waiting = false;
            tracing::info!(region = %self.region(), own_seq = have.0, "bootstrapped: local writes open");
        }
    }

    /// Why local writes must wait, if they must.
    pub fn write_gate(&self) -> Option<String> {
        let b = lock(&self.bootstrap);
        let missing: Vec<&str> = self
            .links
            .keys()
            .filter(|p| !b.reported.contains(*p))
            .map(RegionId::as_str)
            .collect();
        b.waiting.then(|| match b.own_head {
            _ if !missing.is_empty() => format!(
                "{} started on an empty data dir and waits for every peer to report how far region {}'s log went (a wiped node must not reuse sequence numbers); not heard from yet: {}",
                self.region(),
                self.region(),
                missing.join(", ")
            ),
            None => "bootstrapping".to_owned(),
            Some(h) => format!(
                "{} is catching up with its own region's log from its peers (seq {} of {}); local writes open once it has",
                self.region(), self.head.borrow().get(self.region()), h
            ),
        })
    }

    /// Lag per peer and origin, now.
    pub fn lag(&self) -> LagDoc {
        let head = self.head.borrow().clone();
        let now = now_millis();
        let peers = self
            .links
            .iter()
            .map(|(peer, link)| {
                let (acked, connected, paused, last_ack, throughput) = {
                    let s = lock(&link.state);
                    (
                        s.outbound.acked().clone(),
                        s.outbound.is_connected(),
                        s.outbound.is_paused(),
                        s.last_ack_millis,
                        s.rate.per_second(now),
                    )
                };
                let facts = LinkFacts {
                    peer,
                    connected,
                    paused,
                    acked: &acked,
                    last_ack_millis: last_ack,
                    throughput,
                };
                peer_lag(&head, &facts, now, |o, s| self.hlc_of(o, s))
            })
            .collect();
        LagDoc {
            region: self.region().clone(),
            peers,
            sources: self.sidecar.sources(),
            sinks: self.sidecar.sinks(),
        }
    }

    /// The `replctl status` document.
    pub fn status(&self) -> Value {
        let head = self.head.borrow().clone();
        let log_start = self.store.log_start().unwrap_or_default();
        let dead_letters = self.store.dead_letters(None, 10_000).map_or(0, |d| d.len());
        let now = now_millis();
        let peers: Vec<Value> = self
            .links
            .iter()
            .map(|(peer, link)| {
                let s = lock(&link.state);
                json!({
                    "peer": peer.as_str(),
                    "endpoint": link.endpoint.uri().to_string(),
                    "connected": s.outbound.is_connected(),
                    "paused": s.outbound.is_paused(),
                    "circuit": s.breaker.state().name(),
                    "consecutive_failures": s.breaker.failures(),
                    "reconnects": s.reconnects,
                    "in_flight_batches": s.outbound.in_flight(),
                    "acked": vector_json(s.outbound.acked()),
                    "last_ack_seconds": s.last_ack_millis.map(|t| now.saturating_sub(t) as f64 / 1000.0),
                    "last_error": s.last_error,
                })
            })
            .collect();
        let inbound: Vec<Value> = lock(&self.inbound)
            .iter()
            .map(|(peer, f)| {
                json!({
                    "peer": peer.as_str(),
                    "connected": f.connected,
                    "peer_head": vector_json(&f.head),
                    "peer_hlc": hlc_text(f.hlc),
                    "batches": f.batches,
                    "last_message_seconds": f.last_message_millis.map(|t| now.saturating_sub(t) as f64 / 1000.0),
                })
            })
            .collect();
        json!({
            "region": self.region().as_str(),
            "cluster": self.config.cluster.as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "listen": self.config.listen.to_string(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "applied": vector_json(&head),
            "log_start": vector_json(&log_start),
            "tables": self.config.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            "dead_letters": dead_letters,
            "bootstrapping": lock(&self.bootstrap).waiting,
            // The writer sets these gauges after every commit round.
            "parked": {
                "entries": self.metrics.parked_entries.get(),
                "bytes": self.metrics.parked_bytes.get(),
                "max_entries": self.config.shipping.park_max_entries,
                "max_bytes": self.config.shipping.park_max_bytes.as_u64(),
            },
            "peers": peers,
            "inbound": inbound,
            "sources": self.sidecar.sources(),
            "sinks": self.sidecar.sinks(),
        })
    }

    /// Waits until shutdown starts or `d` passes; true on shutdown.
    pub async fn sleep_or_shutdown(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        if *rx.borrow() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            _ = rx.wait_for(|s| *s) => true,
        }
    }
}

/// A version vector as a JSON object `{"origin": seq}`.
pub fn vector_json(v: &VersionVector) -> Value {
    Value::Object(
        v.iter()
            .map(|(o, s)| (o.as_str().to_owned(), Value::from(s.0)))
            .collect(),
    )
}
