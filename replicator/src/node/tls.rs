//! The gRPC port's connections: plaintext TCP, or mutual TLS with `[tls]`.
//!
//! Every accepted TCP connection gets its TLS handshake in its own task,
//! under `handshake_timeout`: a client that stalls (or does not speak TLS)
//! is closed when it runs out, without holding up anyone else. A failed
//! handshake is logged with the client's address and the cause in words
//! (no certificate, wrong CA, expired), and counted in
//! `tributary_tls_refused_total{reason}`. The configuration is taken
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
use tokio::sync::mpsc;
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

/// One accepted connection.
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream, SocketAddr),
    /// After a completed TLS handshake.
    Tls(Box<TlsStream<TcpStream>>, PeerConn),
}

impl Connected for Conn {
    type ConnectInfo = PeerConn;

    fn connect_info(&self) -> PeerConn {
        match self {
            Conn::Plain(_, addr) => PeerConn {
                remote: Some(*addr),
                cert: None,
            },
            Conn::Tls(_, peer) => peer.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until the receiver is dropped: each
/// plaintext, or after its TLS handshake when `tls` is set.
pub fn accept(
    listener: TcpListener,
    tls: Option<(Arc<TlsFiles>, Duration)>,
    metrics: Metrics,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
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
            let _ = tcp.set_nodelay(true);
            let Some((files, timeout)) = &tls else {
                if tx.send(Ok(Conn::Plain(tcp, addr))).await.is_err() {
                    return;
                }
                continue;
            };
            let (files, timeout, tx, metrics) =
                (Arc::clone(files), *timeout, tx.clone(), metrics.clone());
            tokio::spawn(async move {
                if let Some(conn) = handshake(tcp, addr, &files, timeout, &metrics).await {
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
) -> Option<Conn> {
    let refused = |reason: &str, cause: String| {
        metrics.tls_refused.with_label_values(&[reason]).inc();
        tracing::warn!(client = %addr, reason, "TLS connection refused: {cause}");
    };
    let config = files.server()?;
    if let Some(e) = files.reload_error() {
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
            Some(Conn::Tls(Box::new(stream), peer))
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
