//! The gRPC port's connections: plaintext TCP, or mutual TLS with `[tls]`.
//!
//! Every accepted TCP connection gets its TLS handshake in its own task,
//! under `handshake_timeout`: a client that stalls (or does not speak TLS)
//! is closed when it runs out, without holding up anyone else. A failed
//! handshake is logged with the client's address and the cause in words
//! (no certificate, wrong CA, expired), and counted in
//! `tributary_connections_refused_total{reason}`. At most
//! `[shipping] max_connections` connections are open at once; one more is
//! closed at once (`reason="connection_limit"`). The configuration is taken
//! from [`TlsFiles`] per connection, so replaced certificate files apply
//! to the next connection.
//!
//! The client's leaf certificate travels with the connection
//! ([`PeerConn`], a tonic `Connected` whose info lands in each request's
//! extensions), so the peer service can check that the region a peer
//! claims is one its certificate names ([`cert_names`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tributary_proto::tls::{TlsFiles, describe};

use super::Metrics;

/// What a request knows of the connection it came on.
#[derive(Debug, Clone)]
pub struct PeerConn {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The client's leaf certificate (mutual TLS), verified against the CA.
    pub cert: Option<CertificateDer<'static>>,
}

/// One accepted connection, holding one of the port's connection permits
/// until it closes.
pub struct Conn {
    io: Io,
    peer: PeerConn,
    _permit: OwnedSemaphorePermit,
}

enum Io {
    /// Plaintext.
    Plain(TcpStream),
    /// After a completed TLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = PeerConn;

    fn connect_info(&self) -> PeerConn {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until the receiver is dropped: each
/// plaintext, or after its TLS handshake when `tls` is set; at most
/// `max_connections` open at once (more are closed at once, counted as
/// `connection_limit`).
pub fn accept(
    listener: TcpListener,
    tls: Option<(Arc<TlsFiles>, Duration)>,
    max_connections: usize,
    metrics: Metrics,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                metrics
                    .connections_refused
                    .with_label_values(&["connection_limit"])
                    .inc();
                tracing::warn!(client = %addr, max_connections, "connection refused: the port holds its maximum of open connections ([shipping] max_connections)");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Some((files, timeout)) = &tls else {
                let conn = Conn {
                    io: Io::Plain(tcp),
                    peer: PeerConn {
                        remote: Some(addr),
                        cert: None,
                    },
                    _permit: permit,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
                continue;
            };
            let (files, timeout, tx, metrics) =
                (Arc::clone(files), *timeout, tx.clone(), metrics.clone());
            tokio::spawn(async move {
                if let Some((io, peer)) = handshake(tcp, addr, &files, timeout, &metrics).await {
                    let conn = Conn {
                        io,
                        peer,
                        _permit: permit,
                    };
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    rx
}

async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    files: &TlsFiles,
    timeout: Duration,
    metrics: &Metrics,
) -> Option<(Io, PeerConn)> {
    let refused = |reason: &str, cause: String| {
        metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(client = %addr, reason, "TLS connection refused: {cause}");
    };
    let config = files.server()?;
    if let Some(e) = files.new_reload_error() {
        tracing::error!(error = %e, "the replaced TLS files do not load; still using the previous ones");
    }
    match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(tcp)).await {
        Err(_) => {
            refused(
                "handshake_timeout",
                format!(
                    "the TLS handshake did not finish within {timeout:?} (a stalled or non-TLS client); closed"
                ),
            );
            None
        }
        Ok(Err(e)) => {
            let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            let reason = match tls {
                Some(rustls::Error::NoCertificatesPresented) => "no_client_certificate",
                Some(rustls::Error::InvalidCertificate(c)) => match c {
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. } => "expired",
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature => "unknown_ca",
                    _ => "bad_certificate",
                },
                _ => "handshake",
            };
            let cause = tls.map_or_else(|| e.to_string(), describe);
            refused(reason, format!("the TLS handshake failed: {cause}"));
            None
        }
        Ok(Ok(stream)) => {
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            let peer = PeerConn {
                remote: Some(addr),
                cert,
            };
            Some((Io::Tls(Box::new(stream)), peer))
        }
    }
}

/// Whether `cert` (already verified against the CA) names `name` as a DNS
/// subject alternative name.
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}
