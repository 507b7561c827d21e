//! A TCP fault proxy for the peer links of a test cluster (this machine's
//! kernel has no `tc netem`).
//!
//! A [`Proxy`] listens on its own loopback port and forwards every
//! connection to a target port. One proxy serves one *link*: the
//! connections node `from` opens to node `to` (the node's peer endpoint
//! for `to` names the proxy). Bytes flow *up* (from → to: batches,
//! heartbeats) and *down* (to → from: welcome, acks). Per direction the
//! test sets [`DirectionFaults`]:
//! - `blackhole`: bytes stop moving — they are held, not dropped, as a
//!   partitioned TCP connection holds them; when the fault heals they
//!   flow on, unless an end gave up on the connection meanwhile
//!   (keepalive). New connections are accepted and stall likewise;
//! - `latency`: each chunk is delivered that much later (pipelined);
//! - `bytes_per_second`: a bandwidth limit.
//!
//! and per link: `refuse` (new connections are reset at once) and
//! [`Proxy::reset`] (every open connection is closed with a TCP RST).
//! A one-way cut is a blackhole in one direction only.
//!
//! [`ProxyNet`] holds the proxies of a cluster on one tokio runtime and
//! knows the partitions in terms of regions (isolate, split, one-way).
//! Every change takes effect at once on open connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Faults of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionFaults {
    /// Bytes are held until this is cleared.
    pub blackhole: bool,
    /// Added one-way delay.
    pub latency: Duration,
    /// Bandwidth limit; `None` is unlimited.
    pub bytes_per_second: Option<u64>,
}

/// Faults of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// New connections are reset at once.
    pub refuse: bool,
    /// Bytes from the connecting node to the target.
    pub up: DirectionFaults,
    /// Bytes from the target back to the connecting node.
    pub down: DirectionFaults,
}

impl LinkFaults {
    /// No fault: bytes pass.
    pub fn pass() -> Self {
        Self::default()
    }

    fn direction(&self, up: bool) -> DirectionFaults {
        if up { self.up } else { self.down }
    }
}

/// Counters of a proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed by [`Proxy::reset`] or refused.
    pub resets: AtomicU64,
    /// Bytes forwarded up.
    pub bytes_up: AtomicU64,
    /// Bytes forwarded down.
    pub bytes_down: AtomicU64,
}

/// One link's proxy: listens on [`Proxy::port`], forwards to the target.
pub struct Proxy {
    port: u16,
    faults: watch::Sender<LinkFaults>,
    resets: watch::Sender<u64>,
    stats: Arc<ProxyStats>,
}

impl Proxy {
    /// Starts a proxy on `runtime` forwarding to `127.0.0.1:target`.
    pub fn start(runtime: &tokio::runtime::Runtime, target: u16) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (faults, faults_rx) = watch::channel(LinkFaults::pass());
        let (resets, resets_rx) = watch::channel(0u64);
        let stats = Arc::new(ProxyStats::default());
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let target = SocketAddr::from(([127, 0, 0, 1], target));
        runtime.spawn(accept_loop(
            listener,
            target,
            faults_rx,
            resets_rx,
            Arc::clone(&stats),
        ));
        Ok(Self {
            port,
            faults,
            resets,
            stats,
        })
    }

    /// The port the connecting node dials.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The link's faults now.
    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }

    /// Sets the link's faults (open connections included).
    pub fn set(&self, faults: LinkFaults) {
        self.faults.send_replace(faults);
    }

    /// Changes the link's faults with `f`.
    pub fn update(&self, f: impl FnOnce(&mut LinkFaults)) {
        self.faults.send_modify(f);
    }

    /// Closes every open connection with a TCP RST.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Its counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    resets: watch::Receiver<u64>,
    stats: Arc<ProxyStats>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        if faults.borrow().refuse {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_zero_linger();
            continue;
        }
        tokio::spawn(serve(
            client,
            target,
            faults.clone(),
            resets.clone(),
            Arc::clone(&stats),
        ));
    }
}

async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    mut resets: watch::Receiver<u64>,
    stats: Arc<ProxyStats>,
) {
    let generation = *resets.borrow_and_update();
    let Ok(mut server) = TcpStream::connect(target).await else {
        // The target is down: the connecting node sees a reset, as it
        // would connecting to it directly.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let was_reset = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(
            &mut client_read,
            &mut server_write,
            true,
            faults.clone(),
            &stats.bytes_up,
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            false,
            faults.clone(),
            &stats.bytes_down,
        );
        tokio::select! {
            _ = resets.wait_for(|g| *g != generation) => true,
            _ = async { tokio::join!(up, down) } => false,
        }
    };
    if was_reset {
        stats.resets.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Waits until direction `up` of the link is not blackholed; returns its
/// faults then (pass if the proxy is gone).
async fn open(faults: &mut watch::Receiver<LinkFaults>, up: bool) -> DirectionFaults {
    match faults.wait_for(|f| !f.direction(up).blackhole).await {
        Ok(f) => f.direction(up),
        Err(_) => DirectionFaults::default(),
    }
}

/// Copies `from` to `to` under the direction's faults until either end
/// closes: a reader holds chunks while blackholed and stamps them with
/// their delivery time; a writer delivers them in order, at that time,
/// within the bandwidth limit, and holds them too while blackholed.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    up: bool,
    faults: watch::Receiver<LinkFaults>,
    forwarded: &AtomicU64,
) where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut read_faults = faults.clone();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; 16 * 1024];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let f = open(&mut read_faults, up).await;
            if tx.send((Instant::now() + f.latency, buf)).await.is_err() {
                break;
            }
        }
    };
    let mut write_faults = faults;
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let f = open(&mut write_faults, up).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
            forwarded.fetch_add(buf.len() as u64, Ordering::Relaxed);
            if let Some(rate) = f.bytes_per_second.filter(|r| *r > 0) {
                let secs = buf.len() as f64 / rate as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// The proxies of a cluster's links, by `(from, to)` node index.
pub struct ProxyNet {
    runtime: tokio::runtime::Runtime,
    links: BTreeMap<(usize, usize), Proxy>,
}

impl Default for ProxyNet {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyNet {
    /// An empty net with its own runtime (two worker threads).
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("start the proxies' runtime");
        Self {
            runtime,
            links: BTreeMap::new(),
        }
    }

    /// Adds the proxy of link `from → to` forwarding to `target`; returns
    /// the port `from` must dial.
    pub fn add(&mut self, from: usize, to: usize, target: u16) -> u16 {
        let proxy = Proxy::start(&self.runtime, target).expect("start a fault proxy");
        let port = proxy.port();
        self.links.insert((from, to), proxy);
        port
    }

    /// The proxy of link `from → to`.
    pub fn link(&self, from: usize, to: usize) -> Option<&Proxy> {
        self.links.get(&(from, to))
    }

    /// Every link.
    pub fn links(&self) -> impl Iterator<Item = (&(usize, usize), &Proxy)> {
        self.links.iter()
    }

    /// Stops every byte from `a` to `b` (both connections: `a`'s requests
    /// up, and `b`'s connection's replies down). `b` to `a` still flows.
    pub fn cut_one_way(&self, a: usize, b: usize) {
        if let Some(p) = self.link(a, b) {
            p.update(|f| f.up.blackhole = true);
        }
        if let Some(p) = self.link(b, a) {
            p.update(|f| f.down.blackhole = true);
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Partitions the nodes into `groups`: every link across groups is
    /// cut both ways.
    pub fn split(&self, groups: &[Vec<usize>]) {
        let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
        for &(from, to) in self.links.keys() {
            if group_of(from) != group_of(to) {
                self.cut(from, to);
            }
        }
    }

    /// Cuts node `n` off from every other.
    pub fn isolate(&self, n: usize) {
        for &(from, to) in self.links.keys() {
            if from == n || to == n {
                self.cut(from, to);
            }
        }
    }

    /// Adds `latency` and a bandwidth limit both ways on every link that
    /// touches `n`.
    pub fn slow(&self, n: usize, latency: Duration, bytes_per_second: Option<u64>) {
        let slow = DirectionFaults {
            blackhole: false,
            latency,
            bytes_per_second,
        };
        for (&(from, to), p) in &self.links {
            if from == n || to == n {
                p.update(|f| {
                    f.up = DirectionFaults {
                        blackhole: f.up.blackhole,
                        ..slow
                    };
                    f.down = DirectionFaults {
                        blackhole: f.down.blackhole,
                        ..slow
                    };
                });
            }
        }
    }

    /// Refuses new connections on the links that touch `n`.
    pub fn refuse(&self, n: usize) {
        for (&(from, to), p) in &self.links {
            if from == n || to == n {
                p.update(|f| f.refuse = true);
            }
        }
    }

    /// Resets every open connection of the links that touch `n`.
    pub fn reset(&self, n: usize) {
        for (&(from, to), p) in &self.links {
            if from == n || to == n {
                p.reset();
            }
        }
    }

    /// Every link back to pass.
    pub fn heal(&self) {
        for p in self.links.values() {
            p.set(LinkFaults::pass());
        }
    }

    /// Resets counted over every link.
    pub fn resets(&self) -> u64 {
        self.links
            .values()
            .map(|p| p.stats().resets.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    //! The proxy on loopback echo servers: bytes pass, a blackhole holds
    //! them until healed, a one-way cut stops one direction only, latency
    //! delays, a reset closes the connection. Waits have deadlines.

    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    /// An echo server; returns its port.
    fn echo_server() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind echo");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        s
    }

    /// Reads exactly `n` bytes within `deadline`.
    fn read_n(s: &mut TcpStream, n: usize, deadline: Duration) -> Result<Vec<u8>, String> {
        let end = Instant::now() + deadline;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < n {
            if Instant::now() > end {
                return Err(format!("only {} of {n} bytes", got.len()));
            }
            match s.read(&mut buf) {
                Ok(0) => return Err("closed".into()),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(got)
    }

    fn net_to_echo() -> (ProxyNet, u16) {
        let mut net = ProxyNet::new();
        let port = net.add(0, 1, echo_server());
        (net, port)
    }

    #[test]
    fn bytes_pass_both_ways() {
        let (_net, port) = net_to_echo();
        let mut s = connect(port);
        s.write_all(b"hello").expect("write");
        assert_eq!(
            read_n(&mut s, 5, Duration::from_secs(5)).as_deref(),
            Ok(&b"hello"[..])
        );
    }

    #[test]
    fn a_blackhole_holds_bytes_until_healed() {
        let (net, port) = net_to_echo();
        let mut s = connect(port);
        s.write_all(b"a").expect("write");
        read_n(&mut s, 1, Duration::from_secs(5)).expect("pass first");
        net.cut(0, 1);
        s.write_all(b"held").expect("write");
        assert!(
            read_n(&mut s, 4, Duration::from_millis(400)).is_err(),
            "nothing passes"
        );
        net.heal();
        assert_eq!(
            read_n(&mut s, 4, Duration::from_secs(5)).as_deref(),
            Ok(&b"held"[..])
        );
    }

    #[test]
    fn a_one_way_cut_stops_one_direction_only() {
        let (net, port) = net_to_echo();
        let mut s = connect(port);
        s.write_all(b"a").expect("write");
        read_n(&mut s, 1, Duration::from_secs(5)).expect("pass first");
        // Replies from 1 to 0 stop; requests from 0 to 1 still arrive
        // (the echo server receives them and its echo is held).
        net.cut_one_way(1, 0);
        assert!(net.link(0, 1).is_some_and(|p| p.faults().down.blackhole));
        assert!(net.link(0, 1).is_some_and(|p| !p.faults().up.blackhole));
        let before = net
            .link(0, 1)
            .map(|p| p.stats().bytes_up.load(Ordering::Relaxed));
        s.write_all(b"xyz").expect("write");
        assert!(
            read_n(&mut s, 3, Duration::from_millis(400)).is_err(),
            "echo held"
        );
        let after = net
            .link(0, 1)
            .map(|p| p.stats().bytes_up.load(Ordering::Relaxed));
        assert_eq!(
            after.zip(before).map(|(a, b)| a - b),
            Some(3),
            "request passed"
        );
        net.heal();
        assert_eq!(
            read_n(&mut s, 3, Duration::from_secs(5)).as_deref(),
            Ok(&b"xyz"[..])
        );
    }

    #[test]
    fn latency_delays_delivery() {
        let (net, port) = net_to_echo();
        net.slow(0, Duration::from_millis(150), None);
        let mut s = connect(port);
        let t = Instant::now();
        s.write_all(b"slow").expect("write");
        read_n(&mut s, 4, Duration::from_secs(5)).expect("delivered");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_reset_closes_open_connections_and_refuse_new_ones() {
        let (net, port) = net_to_echo();
        let mut s = connect(port);
        s.write_all(b"a").expect("write");
        read_n(&mut s, 1, Duration::from_secs(5)).expect("pass first");
        net.reset(0);
        let closed = read_n(&mut s, 1, Duration::from_secs(5));
        assert!(
            closed.is_err_and(|e| e != "only 0 of 1 bytes"),
            "connection closed"
        );
        if let Some(p) = net.link(0, 1) {
            p.update(|f| f.refuse = true);
        }
        let mut s = connect(port);
        let _ = s.write_all(b"b");
        assert!(read_n(&mut s, 1, Duration::from_secs(5)).is_err());
        assert!(net.resets() >= 2);
    }
}
