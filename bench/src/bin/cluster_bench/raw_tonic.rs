//! The baseline: raw tonic streaming of the same bytes, in this process.
//!
//! A `Peer` server on loopback whose `replicate` acknowledges every batch
//! as soon as it is decoded (no validation, no storage), and a client that
//! streams `ShipMessage::Batch`es with the node's default shape (1,000
//! entries per batch, at most 4 batches unacknowledged) until the given
//! number of entries is acknowledged. What it measures is what HTTP/2,
//! prost and tonic cost for these bytes on this machine: the ceiling a
//! link could reach if storing and applying were free.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use tributary_proto::v1 as pb;
use tributary_proto::v1::peer_client::PeerClient;
use tributary_proto::v1::peer_server::{Peer, PeerServer};
use tributary_proto::v1::receiver_message::Body as ReceiverBody;
use tributary_proto::v1::ship_message::Body as ShipBody;

/// The node's default `batch_max_entries`.
pub const BATCH_ENTRIES: usize = 1000;
/// The node's default `max_in_flight_batches`.
pub const WINDOW: usize = 8;
/// The node's default `max_message_bytes` (8 MiB).
const MAX_MESSAGE: usize = 8 << 20;

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::ReceiverMessage, Status>> + Send>>;
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

/// A receiver that acknowledges each batch at once.
struct AckingPeer;

fn vector(seq: u64) -> pb::VersionVector {
    pb::VersionVector {
        seqs: crate::workload::REGIONS
            .iter()
            .map(|r| ((*r).to_owned(), seq))
            .collect(),
    }
}

#[tonic::async_trait]
impl Peer for AckingPeer {
    type ReplicateStream = AckStream;
    type SnapshotStream = SnapshotStream;

    async fn replicate(
        &self,
        request: Request<Streaming<pb::ShipMessage>>,
    ) -> Result<Response<AckStream>, Status> {
        let mut messages = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut applied = 0u64;
            while let Ok(Some(m)) = messages.message().await {
                if let Some(ShipBody::Batch(b)) = m.body {
                    applied += b.entries.len() as u64;
                    // An ack as a node that parks sends it: the applied
                    // vector, the same as held, and one direct region.
                    let ack = pb::Ack {
                        batch_id: b.id,
                        applied: Some(vector(applied)),
                        stop: None,
                        hlc: 0,
                        held: Some(vector(applied)),
                        direct: vec!["ap-south-1".to_owned()],
                    };
                    let msg = pb::ReceiverMessage {
                        body: Some(ReceiverBody::Ack(ack)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(Status::unimplemented("not part of the baseline"))
    }
}

/// An entry shaped like the replicated ones: a real item key, a delta of
/// filler bytes sized so that the entry's share of an encoded batch is
/// `entry_bytes`, deps naming the two other regions.
pub fn template_entry(key: Vec<u8>, entry_bytes: usize) -> pb::Entry {
    let mut deps = vector(1 << 20);
    deps.seqs.remove(crate::workload::REGIONS[0]);
    let mut e = pb::Entry {
        origin: crate::workload::REGIONS[0].to_owned(),
        seq: 1 << 20,
        hlc: 1_800_000_000_000u64 << 16,
        deps: Some(deps),
        key,
        delta: Vec::new(),
    };
    // Grow the delta until the entry, framed in a batch, reaches the size.
    while e.encoded_len() + 3 < entry_bytes {
        e.delta.push(0xA5);
    }
    e
}

/// The baseline's result.
#[derive(Debug, Clone, Copy)]
pub struct RawResult {
    /// Entries acknowledged.
    pub entries: u64,
    /// From the first batch sent to the last ack received.
    pub elapsed: Duration,
    /// Encoded bytes per entry within a batch.
    pub entry_bytes: f64,
}

impl RawResult {
    /// Entries per second.
    pub fn per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
}

/// Streams `entries` copies of `template` (seqs renumbered) to an acking
/// server on loopback.
pub async fn run(template: &pb::Entry, entries: u64) -> Result<RawResult> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .add_service(
                PeerServer::new(AckingPeer)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connect to the baseline server")?;
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<pb::ShipMessage>(WINDOW + 2);
    let mut acks = client
        .replicate(ReceiverStream::new(rx))
        .await
        .context("open the baseline stream")?
        .into_inner();

    let batch = |id: u64, first_seq: u64, n: usize| pb::ShipMessage {
        body: Some(ShipBody::Batch(pb::Batch {
            id,
            entries: (0..n as u64)
                .map(|i| {
                    let mut e = template.clone();
                    e.seq = first_seq + i;
                    e
                })
                .collect(),
        })),
    };
    let entry_bytes = match batch(1, 1, BATCH_ENTRIES).body {
        Some(ShipBody::Batch(b)) => b.encoded_len() as f64 / BATCH_ENTRIES as f64,
        _ => 0.0,
    };

    let started = Instant::now();
    let (mut sent, mut acked, mut in_flight, mut id) = (0u64, 0u64, 0usize, 0u64);
    while acked < entries {
        while in_flight < WINDOW && sent < entries {
            let n = usize::try_from((entries - sent).min(BATCH_ENTRIES as u64))?;
            id += 1;
            tx.send(batch(id, sent + 1, n))
                .await
                .map_err(|_| anyhow!("the baseline stream closed"))?;
            sent += n as u64;
            in_flight += 1;
        }
        match acks.message().await? {
            Some(pb::ReceiverMessage {
                body: Some(ReceiverBody::Ack(a)),
            }) => {
                acked = a
                    .applied
                    .and_then(|v| v.seqs.values().next().copied())
                    .unwrap_or(acked);
                in_flight -= 1;
            }
            other => anyhow::bail!("unexpected baseline answer {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    drop(tx);
    let _ = stop.send(true);
    let _ = server.await;
    Ok(RawResult {
        entries,
        elapsed,
        entry_bytes,
    })
}
