//! The running node: the log writer thread, the gRPC server (peer and admin
//! services), one link task per peer, the `/metrics` endpoint, and an
//! orderly shutdown.
//!
//! ```text
//!  admin Write ──┐                         ┌── link task → peer A
//!  (sources)  ───┼─► writer thread ─► head ┼── link task → peer B
//!  peer batches ─┘   (owns the Log,   watch└── /metrics, lag, status
//!                     group commit)
//! ```
//!
//! Static stability: the write path is admin → writer → RocksDB; no link
//! task is on it, so a region with every peer down keeps writing, reading
//! and reporting lag.

mod admin;
mod core;
mod housekeeping;
mod inbound;
pub mod metrics;
mod outbound;
pub mod tls;
mod writer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tributary_engine::clock::SystemClock;
use tributary_engine::log::Log;
use tributary_engine::store::{LogStore, RocksOptions, RocksStore};
use tributary_proto::v1::admin_server::AdminServer;
use tributary_proto::v1::peer_server::PeerServer;

pub use self::core::{Core, LagDoc, lock, now_millis};
use self::core::{Link, LinkState};
pub use self::metrics::Metrics;
use self::writer::{Held, Published, Writer};
use crate::config::NodeConfig;
use crate::link::{CircuitBreaker, Outbound, Rate};

/// Local changes waiting to commit at most; more are refused with
/// `RESOURCE_EXHAUSTED` (throttling) rather than queued without bound.
pub const MAX_PENDING_WRITES: usize = 100_000;

/// Consecutive failures that open a link's circuit breaker.
const BREAKER_THRESHOLD: u32 = 5;

/// A node that is serving.
pub struct RunningNode {
    core: Arc<Core>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl RunningNode {
    /// Opens the store and starts serving `config`. Ports 0 in `listen` and
    /// `metrics_listen` pick free ports (see [`RunningNode::listen`]).
    pub async fn start(config: NodeConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let log_config = config.log_config()?;
        let durability = config.storage.sync.durability();
        let store = Arc::new(
            RocksStore::open(RocksOptions::new(config.data_dir.clone(), durability))
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
        );
        let mut log = Log::open(Arc::clone(&store), log_config, SystemClock)?;
        log.park_up_to(config.shipping.park_limit());
        let fresh = log.applied().is_empty()
            && store.scan_items(None, None, 1)?.is_empty()
            && !config.peers.is_empty();
        let metrics = Metrics::new();
        let (head_tx, head_rx) = watch::channel(log.applied().clone());
        let (held_tx, held_rx) = watch::channel(Held {
            vector: log.held(),
            epoch: log.park_epoch(),
        });
        let group = (durability == tributary_engine::store::Durability::Buffered)
            .then_some(config.storage.group_commit_interval);
        let published = Published {
            head: head_tx,
            held: held_tx,
        };
        let (writer, writer_thread) = Writer::start(log, group, published, metrics.clone())?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut links = BTreeMap::new();
        for peer in &config.peers {
            let acked = store.acked(&peer.region)?;
            let state = LinkState {
                outbound: Outbound::new(
                    config.region.clone(),
                    peer.region.clone(),
                    config.shipping.outbound_limits(),
                    acked,
                ),
                last_ack_millis: None,
                rate: Rate::new(Duration::from_secs(5)),
                breaker: CircuitBreaker::new(
                    BREAKER_THRESHOLD,
                    config.shipping.reconnect_backoff_max,
                ),
                reconnects: 0,
                last_error: None,
            };
            links.insert(
                peer.region.clone(),
                Arc::new(Link {
                    endpoint: peer.endpoint.clone(),
                    state: Mutex::new(state),
                    wake: Notify::new(),
                }),
            );
        }
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(
                tributary_proto::tls::TlsFiles::load(t.paths())
                    .map_err(|e| anyhow::anyhow!("[tls]: {e}"))?,
            )),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen = {:?}: cannot bind", config.listen.to_string()))?;
        let listen = listener.local_addr()?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("metrics_listen = {:?}: cannot bind", addr.to_string())
            })?),
            None => None,
        };
        let metrics_listen = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let core = Arc::new(Core {
            store,
            writer,
            head: head_rx,
            held: held_rx,
            links,
            inbound: Mutex::new(BTreeMap::new()),
            metrics: metrics.clone(),
            started: Instant::now(),
            write_permits: Semaphore::new(MAX_PENDING_WRITES),
            shutdown: shutdown_rx,
            sidecar: crate::sidecar::facts::SidecarFacts::new(metrics.clone()),
            bootstrap: Mutex::new(self::core::Bootstrap {
                waiting: fresh,
                ..Default::default()
            }),
            tls,
            config,
        });
        let server = serve(&core, listener);
        let mut tasks = Vec::new();
        for (peer, link) in &core.links {
            tasks.push(tokio::spawn(outbound::run(
                Arc::clone(&core),
                peer.clone(),
                Arc::clone(link),
            )));
        }
        tasks.push(tokio::spawn(housekeeping::retain(Arc::clone(&core))));
        tasks.extend(crate::sidecar::start(&core));
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(serve_metrics(Arc::clone(&core), listener)));
        }
        tracing::info!(region = %core.region(), %listen, "node serving");
        Ok(Self {
            core,
            listen,
            metrics_listen,
            shutdown,
            tasks,
            server,
            writer_thread,
        })
    }

    /// The gRPC address (peers and admin API).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The `/metrics` address, if enabled.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_listen
    }

    /// The shared state (for in-process callers: the demo, tests).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Stops serving: closes the streams and links, then lets the writer
    /// commit and fsync what is queued.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let served = self.server.await;
        // The writer thread ends when its last handle (in `core`) drops.
        drop(self.core);
        tokio::task::spawn_blocking(move || self.writer_thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the log writer panicked"))?;
        served?.context("the gRPC server failed")?;
        Ok(())
    }
}

fn serve(
    core: &Arc<Core>,
    listener: TcpListener,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let cfg = &core.config.shipping;
    let max = usize::try_from(cfg.max_message_bytes.as_u64()).unwrap_or(usize::MAX);
    let peer = PeerServer::new(inbound::SharedPeerService(Arc::new(
        inbound::PeerService::new(Arc::clone(core)),
    )))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let admin = AdminServer::new(admin::AdminService::new(Arc::clone(core)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let mut shutdown = core.shutdown.clone();
    let tls = core
        .tls
        .as_ref()
        .zip(core.config.tls.as_ref())
        .map(|(files, c)| (Arc::clone(files), c.handshake_timeout));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(tls::accept(
        listener,
        tls,
        cfg.max_connections,
        core.metrics.clone(),
    ));
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(cfg.keepalive_interval))
        .http2_keepalive_timeout(Some(cfg.keepalive_timeout))
        .tcp_nodelay(true)
        .add_service(peer)
        .add_service(admin);
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = shutdown.wait_for(|s| *s).await;
    }))
}

async fn serve_metrics(core: Arc<Core>, listener: TcpListener) {
    let c = Arc::clone(&core);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let core = Arc::clone(&c);
            async move {
                let text = tokio::task::spawn_blocking(move || {
                    core.metrics.observe_lag(&core.lag().peers);
                    core.metrics.render()
                })
                .await
                .unwrap_or_default();
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        }),
    );
    let mut shutdown = core.shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the /metrics server failed");
    }
}
