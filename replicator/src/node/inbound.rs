//! The receiving side of shipping: the `Peer` gRPC service.
//!
//! A stream is accepted only from a configured peer of the same cluster
//! speaking our protocol version; then each batch is validated (sizes,
//! fields — see [`crate::wire`]), applied atomically by the writer, and acknowledged with the
//! applied vector once durable. Refusals close the stream with a status
//! whose message names the problem and the fix; the node keeps running.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use tributary_engine::ids::{Hlc, RegionId, VersionVector};
use tributary_proto::v1 as pb;
use tributary_proto::v1::peer_server::Peer;
use tributary_proto::v1::receiver_message::Body as ReceiverBody;
use tributary_proto::v1::ship_message::Body as ShipBody;

use super::core::{Core, InboundFacts, lock, now_millis};
use super::writer::Applied;
use std::time::Duration;

use crate::link::{BatchId, Holds, PenaltyBox};
use crate::wire::{
    AckStop, FromWire, Hello, PROTOCOL_VERSION, ToWire, Welcome, WireAck, WireProgress,
    batch_from_wire_lacking, snapshot_from_wire,
};
use tributary_engine::store::StoreError;

/// The shortest time between two progress reports on one stream.
const PROGRESS_EVERY: Duration = Duration::from_millis(10);

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::ReceiverMessage, Status>> + Send>>;
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

/// The peer service of one node.
pub struct PeerService {
    core: Arc<Core>,
    penalties: std::sync::Mutex<PenaltyBox>,
}

/// Who a refusal is charged to (see [`crate::link::penalty`]).
#[derive(Debug, Clone)]
struct Offender {
    /// The penalty box's key: the certificate under mutual TLS (it is
    /// authenticated, so no one can get another peer penalised), else the
    /// address and the region claimed.
    key: String,
    /// The same, for operators.
    name: String,
}

impl Offender {
    fn of(conn: Option<&super::tls::PeerConn>, claimed: Option<&RegionId>) -> Offender {
        let addr = conn
            .and_then(|c| c.remote)
            .map_or_else(|| "an unknown address".to_owned(), |a| a.ip().to_string());
        let claimed = claimed.map_or_else(|| "no region".to_owned(), ToString::to_string);
        match conn.and_then(|c| c.cert.as_ref()) {
            Some(cert) => {
                let mut hash = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(cert.as_ref(), &mut hash);
                let id = std::hash::Hasher::finish(&hash);
                Offender {
                    key: format!("certificate {id:016x}"),
                    name: format!("the peer at {addr} claiming {claimed} (certificate {id:016x})"),
                }
            }
            None => Offender {
                key: format!("{addr} claiming {claimed}"),
                name: format!("the peer at {addr} claiming {claimed}"),
            },
        }
    }
}

impl PeerService {
    /// Serves `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let rules = core.config.shipping.penalty_rules();
        Self {
            core,
            penalties: std::sync::Mutex::new(PenaltyBox::new(rules)),
        }
    }

    /// Refuses a stream for `reason`, charging the refusal to `who`.
    fn refuse(&self, who: &Offender, reason: &'static str, status: Status) -> Status {
        self.core
            .metrics
            .refused_streams
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(
            reason,
            peer = %who.name,
            message = status.message(),
            "shipping stream refused"
        );
        let started = lock(&self.penalties).strike(&who.key, std::time::Instant::now());
        if let Some(penalty) = started {
            self.core.metrics.peer_penalties.inc();
            tracing::warn!(
                peer = %who.name,
                penalty = %humantime::format_duration(penalty),
                "too many refused shipping streams: the peer is refused at once until its penalty ends"
            );
        }
        status
    }

    /// Refuses `who` at once while it serves a penalty (counted, not
    /// logged: the penalty's start was).
    fn check_penalty(&self, who: &Offender) -> Result<(), Status> {
        let Some(left) = lock(&self.penalties).penalty(&who.key, std::time::Instant::now()) else {
            return Ok(());
        };
        self.core
            .metrics
            .refused_streams
            .with_label_values(&["penalty"])
            .inc();
        let rules = self.core.config.shipping.penalty_rules();
        Err(Status::resource_exhausted(format!(
            "{} is refused for another {}: {} of its shipping streams were refused within {}; fix the cause this node's log names for the earlier refusals",
            who.name,
            humantime::format_duration(Duration::from_millis(left.as_millis() as u64)),
            rules.after,
            humantime::format_duration(rules.window),
        )))
    }

    /// Checks a hello: same cluster and protocol, a configured peer.
    fn admit(&self, hello: &Hello, who: &Offender) -> Result<(), Status> {
        let cfg = &self.core.config;
        if hello.cluster != cfg.cluster {
            return Err(self.refuse(
                who,
                "cluster",
                Status::permission_denied(format!(
                    "region {} belongs to cluster {:?} but this node ({}) is in cluster {:?}: peers of another cluster are refused",
                    hello.region,
                    hello.cluster.as_str(),
                    cfg.region,
                    cfg.cluster.as_str()
                )),
            ));
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(self.refuse(
                who,
                "protocol",
                Status::failed_precondition(format!(
                    "protocol version {} is not spoken here (this node speaks {PROTOCOL_VERSION}); upgrade the older node",
                    hello.protocol_version
                )),
            ));
        }
        if hello.region == cfg.region {
            return Err(self.refuse(
                who,
                "identity",
                Status::permission_denied(format!(
                    "the sender claims to be region {}, which is this node: two nodes share a region id",
                    cfg.region
                )),
            ));
        }
        if !self.core.links.contains_key(&hello.region) {
            return Err(self.refuse(
                who,
                "unknown_peer",
                Status::permission_denied(format!(
                    "region {} is not a configured peer of {}: add a [[peers]] entry for it on both nodes",
                    hello.region, cfg.region
                )),
            ));
        }
        Ok(())
    }

    /// With `[tls]`: the sender's certificate must name the region it
    /// claims (a DNS subject alternative name), so no peer can speak for
    /// another.
    fn check_identity(
        &self,
        hello: &Hello,
        conn: Option<&super::tls::PeerConn>,
        who: &Offender,
    ) -> Result<(), Status> {
        if self.core.tls.is_none() {
            return Ok(());
        }
        let Some(cert) = conn.and_then(|c| c.cert.as_ref()) else {
            return Err(self.refuse(
                who,
                "identity",
                Status::unauthenticated(format!(
                    "region {} connected without a client certificate; peers speak mutual TLS",
                    hello.region
                )),
            ));
        };
        if super::tls::cert_names(cert, hello.region.as_str()) {
            return Ok(());
        }
        Err(self.refuse(
            who,
            "identity",
            Status::permission_denied(format!(
                "the sender claims to be region {} but its certificate does not name it (its certificate needs a DNS subject alternative name {})",
                hello.region, hello.region
            )),
        ))
    }

    fn note(&self, peer: &RegionId, f: impl FnOnce(&mut InboundFacts)) {
        let mut inbound = lock(&self.core.inbound);
        let facts = inbound.entry(peer.clone()).or_default();
        facts.last_message_millis = Some(now_millis());
        f(facts);
    }

    /// Awaits the batches submitted on one stream, in order, and acks
    /// each once durable; a failed apply ends the stream. With `progress`,
    /// it also reports the applied vector when it moves between acks.
    async fn ack_in_order(
        self: Arc<Self>,
        peer: RegionId,
        mut queued: mpsc::Receiver<(BatchId, oneshot::Receiver<Result<Applied, StoreError>>)>,
        acks: mpsc::Sender<Result<pb::ReceiverMessage, Status>>,
        progress: bool,
        epoch: u64,
    ) {
        let mut head = self.core.head.clone();
        // What the sender was last told: the welcome's vector, then each
        // ack's or progress report's.
        let mut told = head.borrow_and_update().clone();
        // A report waits until then (at most one per PROGRESS_EVERY).
        let mut due: Option<tokio::time::Instant> = None;
        let mut last_report = tokio::time::Instant::now();
        loop {
            let message = tokio::select! {
                biased;
                next = queued.recv() => {
                    let Some((id, applied)) = next else { return };
                    let Some((applied, message)) = self.acked(&peer, id, applied, &acks, epoch).await else {
                        return;
                    };
                    told = applied;
                    message
                }
                changed = head.changed(), if progress && due.is_none() => {
                    if changed.is_err() {
                        return;
                    }
                    due = Some(last_report + PROGRESS_EVERY);
                    continue;
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    due = None;
                    let now = head.borrow_and_update().clone();
                    // The sender's own entries it learns of from the acks
                    // of its batches.
                    if !now.iter().any(|(o, s)| o != &peer && s > told.get(o)) {
                        continue;
                    }
                    let holds = match self.holds(epoch) {
                        Ok(holds) => holds,
                        Err(status) => {
                            let _ = acks.send(Err(status)).await;
                            return;
                        }
                    };
                    told = now.clone();
                    last_report = tokio::time::Instant::now();
                    let report = WireProgress {
                        applied: now,
                        hlc: Hlc::new(now_millis(), 0),
                        holds,
                    };
                    pb::ReceiverMessage {
                        body: Some(ReceiverBody::Progress(report.to_wire())),
                    }
                }
            };
            if acks.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }

    /// Awaits one submitted batch and builds its ack; `None` (after telling
    /// the sender why) when the apply failed.
    async fn acked(
        &self,
        peer: &RegionId,
        id: BatchId,
        applied: oneshot::Receiver<Result<Applied, StoreError>>,
        acks: &mpsc::Sender<Result<pb::ReceiverMessage, Status>>,
        epoch: u64,
    ) -> Option<(VersionVector, pb::ReceiverMessage)> {
        let metrics = &self.core.metrics;
        let peer_label = [peer.as_str()];
        let (report, applied) = match applied.await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let _ = acks
                    .send(Err(Status::unavailable(format!("apply failed: {e}"))))
                    .await;
                return None;
            }
            Err(_) => {
                let _ = acks
                    .send(Err(Status::unavailable("the log writer has stopped")))
                    .await;
                return None;
            }
        };
        metrics
            .entries_applied
            .with_label_values(&peer_label)
            .inc_by(report.applied as u64);
        metrics
            .duplicates
            .with_label_values(&peer_label)
            .inc_by(report.duplicates as u64);
        metrics
            .entries_parked
            .with_label_values(&peer_label)
            .inc_by(report.parked as u64);
        self.core.log_moved();
        let stop = report.stopped.as_ref().map(AckStop::from);
        if let Some(stop) = &stop {
            let reason = match stop {
                AckStop::Gap { .. } => "gap",
                AckStop::MissingDeps { .. } => "missing_deps",
                AckStop::ClockSkew { .. } => "clock_skew",
            };
            metrics
                .apply_stops
                .with_label_values(&[peer.as_str(), reason])
                .inc();
            // What was parked after the round: beside a missing dependency,
            // it tells whether the park was full, and by which bound.
            tracing::info!(
                ?stop,
                parked_entries = metrics.parked_entries.get(),
                parked_bytes = metrics.parked_bytes.get(),
                "batch applied in part"
            );
        }
        let holds = match self.holds(epoch) {
            Ok(holds) => holds,
            Err(status) => {
                let _ = acks.send(Err(status)).await;
                return None;
            }
        };
        Some((applied.clone(), ack(id, applied, stop, holds)))
    }

    /// What an ack or progress report says beside the applied vector when
    /// this node parks: what it holds and which peers reach it directly.
    /// An error when entries held since the stream's welcome (`epoch`)
    /// were dropped: the stream must end, so the sender resends from the
    /// next welcome.
    fn holds(&self, epoch: u64) -> Result<Option<Holds>, Status> {
        if !self.core.config.shipping.park_limit().parks() {
            return Ok(None);
        }
        let held = self.core.held.borrow().clone();
        if held.epoch != epoch {
            return Err(Status::unavailable(
                "entries this node held for the stream were dropped after a failed commit; reconnect and resend",
            ));
        }
        Ok(Some(Holds {
            held: held.vector,
            direct: self.core.direct_origins(),
        }))
    }

    /// Serves one admitted stream until it ends or fails.
    async fn serve(
        self: Arc<Self>,
        peer: RegionId,
        who: Offender,
        mut messages: Streaming<pb::ShipMessage>,
        acks: mpsc::Sender<Result<pb::ReceiverMessage, Status>>,
        progress: bool,
        epoch: u64,
    ) {
        let max_entries = self.core.config.shipping.batch_max_entries;
        let metrics = &self.core.metrics;
        let peer_label = [peer.as_str()];
        let (pending, queued) = mpsc::channel(64);
        let acker = tokio::spawn(Arc::clone(&self).ack_in_order(
            peer.clone(),
            queued,
            acks.clone(),
            progress,
            epoch,
        ));
        let result: Result<(), Status> = async {
            let mut shutdown = self.core.shutdown.clone();
            loop {
                // A shutting-down node ends its inbound streams, so the
                // server's graceful stop does not wait on peers.
                let next = tokio::select! {
                    m = messages.message() => m?,
                    _ = shutdown.wait_for(|s| *s) => None,
                };
                let Some(message) = next else { break };
                match message.body {
                    Some(ShipBody::Batch(batch)) => {
                        // What is durably applied already is a duplicate:
                        // left out before its delta is decoded.
                        let have = self.core.head.borrow().clone();
                        let (batch, skipped) = batch_from_wire_lacking(batch, max_entries, &have)
                            .map_err(|e| {
                                self.refuse(&who, "invalid_batch", Status::invalid_argument(e.to_string()))
                            })?;
                        metrics
                            .duplicates
                            .with_label_values(&peer_label)
                            .inc_by(skipped as u64);
                        if let Some(e) = batch
                            .entries
                            .iter()
                            .find(|e| !self.core.config.knows_region(&e.origin))
                        {
                            return Err(self.refuse(
                                &who,
                                "origin",
                                Status::permission_denied(format!(
                                    "{peer} shipped a change of region {}, which is not in this cluster (this region, its peers, or `regions`): refused",
                                    e.origin
                                )),
                            ));
                        }
                        let delivered = !batch.entries.is_empty() || skipped > 0;
                        self.note(&peer, |f| {
                            f.batches += 1;
                            if delivered {
                                f.delivered_millis = f.last_message_millis;
                            }
                        });
                        metrics
                            .batches_received
                            .with_label_values(&peer_label)
                            .inc();
                        // Submitted without waiting for it to commit: the
                        // next batch of the window joins the same group
                        // commit; the acker sends the acks in order.
                        let applied = self
                            .core
                            .writer
                            .apply_later(batch.entries)
                            .map_err(|e| Status::unavailable(e.to_string()))?;
                        if pending.send((batch.id, applied)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(ShipBody::Snapshot(chunk)) => {
                        let part = snapshot_from_wire(chunk, max_entries).map_err(|e| {
                            self.refuse(&who, "invalid_snapshot", Status::invalid_argument(e.to_string()))
                        })?;
                        if let Some((origin, _)) = part.done.iter().flat_map(|v| v.iter()).find(
                            |(o, _)| !self.core.config.knows_region(o),
                        ) {
                            return Err(self.refuse(
                                &who,
                                "origin",
                                Status::permission_denied(format!(
                                    "{peer} sent a snapshot covering region {origin}, which is not in this cluster (this region, its peers, or `regions`): refused"
                                )),
                            ));
                        }
                        let done = part.done.is_some();
                        let applied = self
                            .core
                            .writer
                            .snapshot(part.items, part.done)
                            .await
                            .map_err(|e| Status::unavailable(e.to_string()))?
                            .map_err(|e| {
                                Status::unavailable(format!("snapshot install failed: {e}"))
                            })?;
                        if done {
                            tracing::info!(applied = ?applied, "snapshot installed");
                            self.core.log_moved();
                            // A snapshot's last chunk is acked as batch 0.
                            let msg = ack(BatchId(0), applied, None, None);
                            if acks.send(Ok(msg)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Some(ShipBody::Heartbeat(hb)) => {
                        let head = VersionVector::from_wire(hb.head.unwrap_or_default())
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        self.core.peer_reports(&peer, &head);
                        self.note(&peer, |f| {
                            f.head = head;
                            f.hlc = Hlc(hb.hlc);
                        });
                    }
                    Some(ShipBody::Hello(_)) => {
                        return Err(self.refuse(
                            &who,
                            "protocol",
                            Status::invalid_argument("a second hello on one stream"),
                        ));
                    }
                    None => {
                        return Err(self.refuse(
                            &who,
                            "protocol",
                            Status::invalid_argument("an empty message: body is missing"),
                        ));
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(pending);
        let _ = acker.await;
        if let Err(status) = result {
            tracing::info!(code = ?status.code(), message = status.message(), "inbound stream ended");
            let _ = acks.send(Err(status)).await;
        }
        self.note(&peer, |f| f.connected = false);
    }
}

/// The ack of batch `id`: the applied vector after it, durable (and, from
/// a node that parks, what it holds).
fn ack(
    id: BatchId,
    applied: VersionVector,
    stop: Option<AckStop>,
    holds: Option<Holds>,
) -> pb::ReceiverMessage {
    let ack = WireAck {
        batch_id: id,
        applied,
        stop,
        hlc: Hlc::new(now_millis(), 0),
        holds,
    };
    pb::ReceiverMessage {
        body: Some(ReceiverBody::Ack(ack.to_wire())),
    }
}

/// `Arc` wrapper so the per-stream task can own the service.
pub struct SharedPeerService(pub Arc<PeerService>);

#[tonic::async_trait]
impl Peer for SharedPeerService {
    type ReplicateStream = AckStream;
    type SnapshotStream = SnapshotStream;

    async fn replicate(
        &self,
        request: Request<Streaming<pb::ShipMessage>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let service = &self.0;
        let conn = request.extensions().get::<super::tls::PeerConn>().cloned();
        let unnamed = Offender::of(conn.as_ref(), None);
        service.check_penalty(&unnamed)?;
        let mut messages = request.into_inner();
        let first = messages
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before its hello"))?;
        let Some(ShipBody::Hello(hello)) = first.body else {
            return Err(service.refuse(
                &unnamed,
                "protocol",
                Status::invalid_argument("the first message of a shipping stream must be a hello"),
            ));
        };
        let hello = Hello::from_wire(hello).map_err(|e| {
            service.refuse(
                &unnamed,
                "invalid_hello",
                Status::invalid_argument(e.to_string()),
            )
        })?;
        let who = Offender::of(conn.as_ref(), Some(&hello.region));
        service.check_penalty(&who)?;
        service.admit(&hello, &who)?;
        service.check_identity(&hello, conn.as_ref(), &who)?;
        let peer = hello.region.clone();
        service.core.peer_reports(&hello.region, &hello.head);
        service.note(&peer, |f| {
            f.connected = true;
            f.head = hello.head.clone();
        });
        let welcome = Welcome {
            cluster: service.core.config.cluster.clone(),
            region: service.core.region().clone(),
            protocol_version: PROTOCOL_VERSION,
            applied: service.core.head.borrow().clone(),
            own_entries_complete: !lock(&service.core.bootstrap).waiting,
            parks: service.core.config.shipping.park_limit().parks(),
        };
        let epoch = service.core.held.borrow().epoch;
        let (tx, rx) = mpsc::channel(64);
        let _ = tx
            .send(Ok(pb::ReceiverMessage {
                body: Some(ReceiverBody::Welcome(welcome.to_wire())),
            }))
            .await;
        tracing::info!(region = %service.core.region(), peer = %peer, "inbound stream accepted");
        let span = tracing::info_span!("inbound", region = %service.core.region(), peer = %peer);
        tokio::spawn(
            Arc::clone(service)
                .serve(peer, who, messages, tx, hello.accepts_progress, epoch)
                .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented(
            "snapshots are pushed on the shipping stream when a peer needs one; pulling one is not served",
        ))
    }
}
