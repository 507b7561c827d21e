//! The sending side of one peer link: a task that keeps one shipping
//! stream to the peer up and drives the [`Outbound`](crate::link::Outbound)
//! state machine with it.
//!
//! Connect (HTTP/2 keepalive, message size limits) → hello → welcome (the
//! peer's durable applied vector: where sending starts) → then, until the
//! stream breaks: fill the window with batches read from the log, send a
//! heartbeat when idle, turn acks into the persisted acknowledged vector.
//! A broken stream or refused connection is retried with exponential
//! backoff and full jitter behind a circuit breaker. Nothing on the local
//! write path waits for this task.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;
use tributary_engine::ids::{Hlc, RegionId, Seq, VersionVector};
use tributary_engine::store::{EncodedEntry, LogStore, encoded_entries_above};
use tributary_proto::v1 as pb;
use tributary_proto::v1::peer_client::PeerClient;
use tributary_proto::v1::receiver_message::Body as ReceiverBody;
use tributary_proto::v1::ship_message::Body as ShipBody;

use super::core::{Core, Link, lock, now_millis};
use crate::link::{Backoff, BatchId, EntryHead, Report, Shippable};
use crate::wire::{
    AckStop, FromWire, Hello, PROTOCOL_VERSION, ToWire, Welcome, WireAck, WireProgress,
    encoded_entry_to_wire, snapshot_to_wire,
};

/// How long to wait after a clock-skew refusal before resending.
const CLOCK_SKEW_PAUSE: Duration = Duration::from_secs(1);

/// Runs the link to `peer` until shutdown.
pub async fn run(core: Arc<Core>, peer: RegionId, link: Arc<Link>) {
    let span = tracing::info_span!("link", region = %core.region(), peer = %peer);
    async move {
        let cfg = &core.config.shipping;
        let mut backoff = Backoff::new(cfg.reconnect_backoff_initial, cfg.reconnect_backoff_max);
        loop {
            let wait = lock(&link.state).breaker.wait(now_millis());
            if !wait.is_zero() && core.sleep_or_shutdown(wait).await {
                return;
            }
            let result = connect_and_ship(&core, &peer, &link, &mut backoff).await;
            {
                let mut s = lock(&link.state);
                s.outbound.on_disconnected();
                core.metrics
                    .peer_connected
                    .with_label_values(&[peer.as_str()])
                    .set(0);
                match &result {
                    Ok(()) => return,
                    Err(e) => {
                        s.reconnects += 1;
                        s.last_error = Some(format!("{e:#}"));
                        if s.breaker.on_failure(now_millis()) {
                            core.metrics
                                .circuit_opened
                                .with_label_values(&[peer.as_str()])
                                .inc();
                            tracing::warn!(error = %format!("{e:#}"), "circuit opened");
                        }
                    }
                }
            }
            core.metrics
                .reconnects
                .with_label_values(&[peer.as_str()])
                .inc();
            if let Err(e) = &result {
                tracing::info!(error = %format!("{e:#}"), "link down; reconnecting");
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            if core.sleep_or_shutdown(delay).await {
                return;
            }
        }
    }
    .instrument(span)
    .await;
}

fn endpoint(core: &Core, link: &Link) -> anyhow::Result<Endpoint> {
    let cfg = &core.config.shipping;
    Ok(Endpoint::from(link.endpoint.uri().clone())
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// The size limit of one message, in bytes.
fn max_message(core: &Core) -> usize {
    usize::try_from(core.config.shipping.max_message_bytes.as_u64()).unwrap_or(usize::MAX)
}

/// One connection's life: returns `Ok` only on shutdown.
async fn connect_and_ship(
    core: &Arc<Core>,
    peer: &RegionId,
    link: &Arc<Link>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let endpoint = endpoint(core, link)?;
    let connected = match &core.tls {
        // Mutual TLS: the peer's certificate must name its region.
        Some(files) => {
            let name = rustls_pki_types::ServerName::try_from(peer.as_str().to_owned())
                .with_context(|| {
                    format!("region {peer} is not a DNS name a certificate can carry")
                })?;
            endpoint
                .connect_with_connector(tributary_proto::tls::connector(
                    Arc::clone(files),
                    Some(name),
                ))
                .await
        }
        None => endpoint.connect().await,
    };
    let channel: Channel = connected.map_err(|e| {
        anyhow!(
            "cannot connect to {}: {}",
            link.endpoint.uri(),
            error_chain(&e)
        )
    })?;
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(max_message(core))
        .max_encoding_message_size(max_message(core));
    let window = core.config.shipping.max_in_flight_batches + 2;
    let (tx, rx) = mpsc::channel::<pb::ShipMessage>(window);
    let hello = Hello {
        cluster: core.config.cluster.clone(),
        region: core.region().clone(),
        protocol_version: PROTOCOL_VERSION,
        head: core.head.borrow().clone(),
        accepts_progress: true,
    };
    tx.send(ship(ShipBody::Hello(hello.to_wire()))).await?;
    let mut replies = client
        .replicate(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow!("{} refused the stream: {}", peer, s.message()))?
        .into_inner();
    let welcome = match replies.message().await?.and_then(|m| m.body) {
        Some(ReceiverBody::Welcome(w)) => Welcome::from_wire(w)?,
        other => bail!("expected a welcome from {peer}, got {other:?}"),
    };
    if &welcome.region != peer || welcome.cluster != core.config.cluster {
        bail!(
            "{} answered as region {} of cluster {:?}; expected {peer} of {:?}: check the peer's endpoint",
            link.endpoint.uri(),
            welcome.region,
            welcome.cluster.as_str(),
            core.config.cluster.as_str()
        );
    }
    core.peer_reports(peer, &welcome.applied);
    let mut peer_applied = welcome.applied.clone();
    let log_start = core.store.log_start()?;
    if log_start.iter().any(|(o, s)| peer_applied.get(o) < s) {
        tracing::info!(peer_applied = ?peer_applied, log_start = ?log_start, "peer is behind the truncated log: sending a snapshot");
        send_snapshot(core, &tx).await?;
        peer_applied = loop {
            match replies.message().await?.and_then(|m| m.body) {
                Some(ReceiverBody::Ack(ack)) => {
                    let ack = WireAck::from_wire(ack)?;
                    if ack.batch_id == BatchId(0) {
                        break ack.applied;
                    }
                }
                // The snapshot's ack will say where the peer is.
                Some(ReceiverBody::Progress(_)) => {}
                other => bail!("expected the snapshot's ack from {peer}, got {other:?}"),
            }
        };
        tracing::info!(peer_applied = ?peer_applied, "peer installed the snapshot");
    }
    {
        let mut s = lock(&link.state);
        let head = core.head.borrow().clone();
        if !s.outbound.acked().dominated_by(&peer_applied) {
            tracing::warn!(
                acked = ?s.outbound.acked(),
                peer_applied = ?peer_applied,
                "the peer has less than it acknowledged (it lost its data?): sending it again"
            );
        }
        if let Some(acked) =
            s.outbound
                .on_connected(
                    &peer_applied,
                    &head,
                    welcome.own_entries_complete,
                    welcome.parks,
                )
        {
            core.store.set_acked(peer, &acked)?;
        }
        s.breaker.on_success();
        s.last_error = None;
    }
    backoff.reset();
    core.metrics
        .peer_connected
        .with_label_values(&[peer.as_str()])
        .set(1);
    tracing::info!(peer_applied = ?welcome.applied, "link up");

    let mut head = core.head.clone();
    let mut shutdown = core.shutdown.clone();
    let mut heartbeat = tokio::time::interval(core.config.shipping.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let peer_label = [peer.as_str()];
    // Whether to look for entries to send; a progress report alone only
    // matters when entries are held back (else it would cut batches short
    // of their linger).
    let mut fill = true;
    loop {
        if fill {
            fill_window(core, link, &tx, &peer_label).await?;
        }
        fill = true;
        // Entries held back (relays the peer gets directly) are looked at
        // again when the peer's acks move, or at the latest then.
        let held = lock(&link.state).outbound.wake_at().map(|at| {
            tokio::time::Instant::now()
                + Duration::from_millis(at.saturating_sub(now_millis()))
        });
        let mut skewed = false;
        tokio::select! {
            reply = replies.message() => {
                let reply = reply.map_err(|s| anyhow!("{peer} closed the stream: {}", s.message()))?;
                match reply.and_then(|m| m.body) {
                    Some(ReceiverBody::Ack(ack)) => {
                        let ack = WireAck::from_wire(ack)?;
                        on_ack(core, peer, link, Reply::Ack(&ack))?;
                        skewed = matches!(ack.stop, Some(AckStop::ClockSkew { .. }));
                    }
                    Some(ReceiverBody::Progress(progress)) => {
                        let progress = WireProgress::from_wire(progress)?;
                        let held_back = lock(&link.state).outbound.wake_at().is_some();
                        let relays_changed = on_ack(core, peer, link, Reply::Progress(&progress))?;
                        fill = held_back || relays_changed;
                    }
                    Some(ReceiverBody::Welcome(_)) => bail!("{peer} sent a second welcome"),
                    None => bail!("{peer} ended the stream"),
                }
            }
            changed = head.changed() => {
                changed.context("the log writer stopped")?;
                let linger = core.config.shipping.batch_linger;
                if !linger.is_zero() && lock(&link.state).outbound.in_flight() == 0 {
                    tokio::time::sleep(linger).await;
                }
            }
            _ = heartbeat.tick() => {
                let hb = pb::Heartbeat {
                    hlc: Hlc::new(now_millis(), 0).0,
                    head: Some(core.head.borrow().to_wire()),
                };
                tx.send(ship(ShipBody::Heartbeat(hb))).await.context("stream closed")?;
            }
            () = link.wake.notified() => {}
            () = sleep_until(held) => {}
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
        if *shutdown.borrow() || (skewed && core.sleep_or_shutdown(CLOCK_SKEW_PAUSE).await) {
            return Ok(());
        }
    }
}

/// Streams this node's items, then the applied vector they cover. The
/// vector is read first: every entry up to it is in the items read after
/// (later entries may be too; applying them again is a no-op).
async fn send_snapshot(core: &Arc<Core>, tx: &mpsc::Sender<pb::ShipMessage>) -> anyhow::Result<()> {
    let covered = core.head.borrow().clone();
    let page = core.config.shipping.batch_max_entries.max(1);
    let max_bytes =
        usize::try_from(core.config.shipping.batch_max_bytes.as_u64()).unwrap_or(usize::MAX);
    let mut after = None;
    loop {
        let store = Arc::clone(&core.store);
        let from = after.clone();
        // Items may hold effects of commits not fsynced yet (group commit):
        // fsync before sending, so nothing shipped can be lost by a crash
        // here and its dots reused for another change.
        let items = tokio::task::spawn_blocking(move || {
            let items = store.scan_items(None, from.as_ref(), page)?;
            store.sync()?;
            Ok::<_, tributary_engine::store::StoreError>(items)
        })
        .await??;
        let last = items.len() < page;
        after = items.last().map(|(k, _)| k.clone());
        // Split the page by bytes too.
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for item in items {
            let size = tributary_engine::store::encoded_item_len(&item.0, &item.1);
            if !chunk.is_empty() && bytes + size > max_bytes {
                let wire = snapshot_to_wire(&std::mem::take(&mut chunk), None)?;
                tx.send(ship(ShipBody::Snapshot(wire)))
                    .await
                    .context("stream closed")?;
                bytes = 0;
            }
            bytes += size;
            chunk.push(item);
        }
        let wire = snapshot_to_wire(&chunk, last.then_some(&covered))?;
        tx.send(ship(ShipBody::Snapshot(wire)))
            .await
            .context("stream closed")?;
        if last {
            return Ok(());
        }
    }
}

/// A log entry read for shipping: its head (what the link decides on) and
/// its wire form.
struct Ready {
    origin: RegionId,
    seq: Seq,
    deps: VersionVector,
    wire: pb::Entry,
}

impl Ready {
    fn new(e: EncodedEntry) -> Self {
        Ready {
            origin: e.origin.clone(),
            seq: e.seq,
            deps: e.deps.clone(),
            wire: encoded_entry_to_wire(e),
        }
    }
}

impl Shippable for Ready {
    fn head(&self) -> EntryHead<'_> {
        EntryHead {
            origin: &self.origin,
            seq: self.seq,
            deps: &self.deps,
        }
    }
}

fn ship(body: ShipBody) -> pb::ShipMessage {
    pb::ShipMessage { body: Some(body) }
}

/// Sends batches while the window has room and the peer lacks entries.
async fn fill_window(
    core: &Arc<Core>,
    link: &Arc<Link>,
    tx: &mpsc::Sender<pb::ShipMessage>,
    peer_label: &[&str; 1],
) -> anyhow::Result<()> {
    loop {
        let head = core.head.borrow().clone();
        let read = {
            let mut s = lock(&link.state);
            let now = now_millis();
            s.outbound.observe(&head, now);
            s.outbound.want(&head, now)
        };
        let Some(read) = read else {
            return Ok(());
        };
        let store = Arc::clone(&core.store);
        // Read off the async workers, the deltas as stored (never decoded
        // here: the receiver decodes them), and put in wire form once: its
        // encoded size packs the batch, its encoding is sent.
        let entries = tokio::task::spawn_blocking(move || {
            Ok::<_, tributary_engine::store::StoreError>(
                encoded_entries_above(&store, &read.upto, &read.from, read.limit)?
                    .into_iter()
                    .map(Ready::new)
                    .collect::<Vec<_>>(),
            )
        })
        .await??;
        let batch =
            lock(&link.state)
                .outbound
                .pack(entries, now_millis(), |e| e.wire.encoded_len());
        let Some(batch) = batch else {
            // Nothing may leave although the peer lacks entries: held
            // back (the link waits for the peer's acks or the hold's end),
            // or this log no longer has the next ones — truncated, or
            // skipped by a snapshot this node installed while the link was
            // up. Only a snapshot can bring the peer up then; it is sent
            // on connect, so start over.
            let start = core.store.log_start()?;
            let sent = lock(&link.state).outbound.sent().clone();
            if let Some((origin, first)) = start.iter().find(|(o, s)| sent.get(o) < *s) {
                bail!(
                    "the peer needs entries of {origin} from seq {} but this log starts after {first}: reconnecting to send a snapshot",
                    sent.get(origin).next()
                );
            }
            return Ok(());
        };
        let wire = pb::Batch {
            id: batch.id.0,
            entries: batch.entries.into_iter().map(|e| e.wire).collect(),
        };
        core.metrics
            .batches_sent
            .with_label_values(peer_label)
            .inc();
        core.metrics
            .entries_sent
            .with_label_values(peer_label)
            .inc_by(wire.entries.len() as u64);
        core.metrics
            .bytes_sent
            .with_label_values(peer_label)
            .inc_by(wire.encoded_len() as u64);
        tx.send(ship(ShipBody::Batch(wire)))
            .await
            .context("stream closed")?;
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the peer said of its applied vector.
#[derive(Clone, Copy)]
enum Reply<'a> {
    /// A batch's ack.
    Ack(&'a WireAck),
    /// Progress between acks.
    Progress(&'a WireProgress),
}

/// Feeds an ack or progress report to the link; returns whether the origins
/// it leaves out changed (what to send must be read again).
fn on_ack(core: &Core, peer: &RegionId, link: &Link, reply: Reply<'_>) -> anyhow::Result<bool> {
    let now = now_millis();
    let outcome = {
        let mut s = lock(&link.state);
        let outcome = match reply {
            Reply::Ack(ack) => s.outbound.on_ack(
                ack.batch_id,
                Report {
                    applied: &ack.applied,
                    holds: ack.holds.as_ref(),
                },
                now,
            ),
            Reply::Progress(p) => s.outbound.on_progress(
                Report {
                    applied: &p.applied,
                    holds: p.holds.as_ref(),
                },
                now,
            ),
        };
        s.last_ack_millis = Some(now);
        s.rate.record(now, outcome.newly_acked);
        outcome
    };
    core.metrics
        .entries_acked
        .with_label_values(&[peer.as_str()])
        .inc_by(outcome.newly_acked);
    // Persisted on batch acks only: progress comes often, and an acked
    // vector persisted a little behind is safe (a restart learns the
    // peer's vector from its welcome; truncation keeps a little more).
    if let (Some(acked), Reply::Ack(_)) = (&outcome.persist, reply) {
        core.store.set_acked(peer, acked)?;
    }
    if let (true, Reply::Ack(ack)) = (outcome.rewound, reply) {
        tracing::info!(stop = ?ack.stop, "peer applied a batch in part; resending from what it holds");
    }
    Ok(outcome.relays_changed)
}

/// An error and its sources, joined: tonic's transport errors say little
/// at the top ("transport error") and the cause (a refused certificate)
/// underneath.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
