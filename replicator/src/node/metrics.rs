//! Every metric the node exports, declared in one place, on a registry of
//! the node's own (several nodes can live in one process: the demo, tests).
//!
//! A metric definition is a constant: one that does not register is a bug
//! every test would hit, hence the `expect`s.
//!
//! Lag gauges are computed when `/metrics` is scraped, from the same
//! function as `replctl lag`, so the two never disagree.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::link::PeerLag;

/// The node's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Age of the oldest entry a peer has not acknowledged, per origin.
    pub lag_seconds: GaugeVec,
    /// Entries a peer has not acknowledged, per origin.
    pub lag_records: IntGaugeVec,
    /// 1 while the link to a peer is up.
    pub peer_connected: IntGaugeVec,
    /// Batches shipped to a peer.
    pub batches_sent: IntCounterVec,
    /// Entries shipped to a peer (resends included).
    pub entries_sent: IntCounterVec,
    /// Encoded bytes shipped to a peer.
    pub bytes_sent: IntCounterVec,
    /// Entries a peer acknowledged.
    pub entries_acked: IntCounterVec,
    /// Reconnect attempts to a peer.
    pub reconnects: IntCounterVec,
    /// Times the circuit breaker of a link opened.
    pub circuit_opened: IntCounterVec,
    /// Batches received from a peer.
    pub batches_received: IntCounterVec,
    /// Entries applied from a peer.
    pub entries_applied: IntCounterVec,
    /// Entries received that were already applied (idempotent apply).
    pub duplicates: IntCounterVec,
    /// Entries received ahead of their dependencies and parked.
    pub entries_parked: IntCounterVec,
    /// Entries parked now, waiting for their dependencies.
    pub parked_entries: IntGauge,
    /// What the entries parked now weigh in memory, estimated.
    pub parked_bytes: IntGauge,
    /// Batches a receiver applied only in part, by reason.
    pub apply_stops: IntCounterVec,
    /// Shipping streams refused, by reason (`penalty`: a peer serving a
    /// penalty for too many refusals).
    pub refused_streams: IntCounterVec,
    /// Penalties started for peers refused too often.
    pub peer_penalties: IntCounter,
    /// Connections refused before any request (TLS handshake failures,
    /// the connection limit), by reason.
    pub connections_refused: IntCounterVec,
    /// Time to apply a received batch durably.
    pub apply_seconds: Histogram,
    /// Time to commit a batch of local writes durably.
    pub write_seconds: Histogram,
    /// Local changes accepted.
    pub writes: IntCounter,
    /// Local changes refused (malformed, unknown table, wrong type).
    pub writes_rejected: IntCounter,
    /// Records written to the dead-letter store, per source.
    pub dead_letters: IntCounterVec,
    /// Log entries removed by truncation.
    pub truncated: IntCounter,
    /// Operations of the log writer waiting to commit.
    pub writer_queue: IntGauge,
    /// Jobs (commits) per fsync of the group commit.
    pub group_commit_jobs: Histogram,
    /// The log's item-state cache lookups, by outcome (`hit`, `miss`).
    pub item_cache_lookups: IntCounterVec,
    /// Estimated bytes of item states in the log's cache.
    pub item_cache_bytes: IntGauge,
    /// Source records by outcome (`ingested`, `echo`, `duplicate`,
    /// `dead_letter`), per source.
    pub source_records: IntCounterVec,
    /// How far a shard's last read was behind the stream's tip, ms.
    pub source_millis_behind: IntGaugeVec,
    /// Source calls refused by throttling, per source.
    pub source_throttled: IntCounterVec,
    /// Sink writes by outcome (`written`, `conflict`, `retry`,
    /// `dead_letter`), per sink.
    pub sink_writes: IntCounterVec,
    /// Items the sink has still to write, per sink.
    pub sink_backlog: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn scalar_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

impl Metrics {
    /// Declares every metric on a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("tributary".into()), None).expect("registry");
        let peer = &["peer"];
        let lag_seconds = GaugeVec::new(
            Opts::new(
                "replication_lag_seconds",
                "Age of the oldest entry the peer has not acknowledged",
            ),
            &["peer", "origin"],
        )
        .expect("metric");
        registry
            .register(Box::new(lag_seconds.clone()))
            .expect("metric");
        let lag_records = IntGaugeVec::new(
            Opts::new(
                "replication_lag_records",
                "Entries the peer has not acknowledged",
            ),
            &["peer", "origin"],
        )
        .expect("metric");
        registry
            .register(Box::new(lag_records.clone()))
            .expect("metric");
        let peer_connected = IntGaugeVec::new(
            Opts::new(
                "peer_connected",
                "1 while the shipping stream to the peer is up",
            ),
            peer,
        )
        .expect("metric");
        registry
            .register(Box::new(peer_connected.clone()))
            .expect("metric");
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]))
            .expect("metric");
            registry.register(Box::new(h.clone())).expect("metric");
            h
        };
        let apply_seconds = histogram("apply_seconds", "Time to apply a received batch durably");
        let write_seconds = histogram("write_seconds", "Time to commit local writes durably");
        let writes = IntCounter::new("writes_total", "Local changes accepted").expect("metric");
        registry.register(Box::new(writes.clone())).expect("metric");
        let writes_rejected =
            IntCounter::new("writes_rejected_total", "Local changes refused").expect("metric");
        registry
            .register(Box::new(writes_rejected.clone()))
            .expect("metric");
        let peer_penalties = IntCounter::new(
            "peer_penalties_total",
            "Penalties started for peers whose shipping streams were refused too often",
        )
        .expect("metric");
        registry
            .register(Box::new(peer_penalties.clone()))
            .expect("metric");
        let truncated = IntCounter::new(
            "log_truncated_entries_total",
            "Log entries removed by truncation",
        )
        .expect("metric");
        registry
            .register(Box::new(truncated.clone()))
            .expect("metric");
        let writer_queue = scalar_gauge(
            &registry,
            "writer_queue",
            "Operations waiting for the log writer",
        );
        let group_commit_jobs = Histogram::with_opts(
            HistogramOpts::new("group_commit_jobs", "Commits made durable per fsync")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("metric");
        registry
            .register(Box::new(group_commit_jobs.clone()))
            .expect("metric");
        let item_cache_bytes = scalar_gauge(
            &registry,
            "item_cache_bytes",
            "Estimated bytes of decoded item states the log keeps between commits",
        );
        let parked_entries = scalar_gauge(
            &registry,
            "parked_entries",
            "Received entries kept in memory until their dependencies are applied",
        );
        let parked_bytes = scalar_gauge(
            &registry,
            "parked_bytes",
            "Estimated bytes of the received entries parked now",
        );
        Self {
            entries_parked: counter(
                &registry,
                "parked_entries_total",
                "Entries received from the peer ahead of their dependencies, parked",
                peer,
            ),
            parked_entries,
            parked_bytes,
            item_cache_lookups: counter(
                &registry,
                "item_cache_lookups_total",
                "Item states the log looked up in its cache before a merge, by outcome",
                &["outcome"],
            ),
            item_cache_bytes,
            peer_penalties,
            lag_seconds,
            lag_records,
            peer_connected,
            batches_sent: counter(
                &registry,
                "batches_sent_total",
                "Batches shipped to the peer",
                peer,
            ),
            entries_sent: counter(
                &registry,
                "entries_sent_total",
                "Entries shipped to the peer",
                peer,
            ),
            bytes_sent: counter(
                &registry,
                "bytes_sent_total",
                "Encoded bytes shipped to the peer",
                peer,
            ),
            entries_acked: counter(
                &registry,
                "entries_acked_total",
                "Entries the peer acknowledged",
                peer,
            ),
            reconnects: counter(
                &registry,
                "reconnects_total",
                "Reconnect attempts to the peer",
                peer,
            ),
            circuit_opened: counter(
                &registry,
                "circuit_opened_total",
                "Times the link's circuit breaker opened",
                peer,
            ),
            batches_received: counter(
                &registry,
                "batches_received_total",
                "Batches received from the peer",
                peer,
            ),
            entries_applied: counter(
                &registry,
                "entries_applied_total",
                "Entries applied from the peer",
                peer,
            ),
            duplicates: counter(
                &registry,
                "duplicate_entries_total",
                "Entries received that were already applied",
                peer,
            ),
            apply_stops: counter(
                &registry,
                "apply_stops_total",
                "Batches applied only in part",
                &["peer", "reason"],
            ),
            refused_streams: counter(
                &registry,
                "refused_streams_total",
                "Shipping streams refused",
                &["reason"],
            ),
            connections_refused: counter(
                &registry,
                "connections_refused_total",
                "Connections refused before any request (TLS handshake, connection limit)",
                &["reason"],
            ),
            dead_letters: counter(
                &registry,
                "dead_letters_total",
                "Records sent to the dead-letter store",
                &["source"],
            ),
            source_records: counter(
                &registry,
                "source_records_total",
                "Change records read by a source, by outcome",
                &["source", "outcome"],
            ),
            source_millis_behind: gauge(
                &registry,
                "source_millis_behind",
                "How far the shard's last read was behind the stream's tip",
                &["source", "shard"],
            ),
            source_throttled: counter(
                &registry,
                "source_throttled_total",
                "Stream reads refused by throttling",
                &["source"],
            ),
            sink_writes: counter(
                &registry,
                "sink_writes_total",
                "Sink item writes, by outcome",
                &["sink", "outcome"],
            ),
            sink_backlog: gauge(
                &registry,
                "sink_backlog_items",
                "Items the sink has still to write",
                &["sink"],
            ),
            apply_seconds,
            write_seconds,
            writes,
            writes_rejected,
            truncated,
            writer_queue,
            group_commit_jobs,
            registry,
        }
    }

    /// Sets the lag gauges from the lag report.
    pub fn observe_lag(&self, peers: &[PeerLag]) {
        for p in peers {
            for o in &p.origins {
                let labels = [p.peer.as_str(), o.origin.as_str()];
                self.lag_seconds
                    .with_label_values(&labels)
                    .set(o.oldest_pending_seconds);
                self.lag_records
                    .with_label_values(&labels)
                    .set(i64::try_from(o.pending_records).unwrap_or(i64::MAX));
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
