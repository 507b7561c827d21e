//! The TLS Tributary's gRPC travels over, shared by the node (peer links,
//! admin API) and `replctl`: rustls with the aws-lc-rs provider, TLS 1.2
//! and 1.3, ALPN `h2`.
//!
//! [`TlsFiles`] holds the PEM files of one party (the cluster's CA, and its
//! own certificate chain and key) and builds rustls configurations from
//! them. It re-reads the files whenever one of them changed (by
//! modification time and size), so a certificate is rotated by replacing
//! its files: new connections use the new one, no restart; a rotation that
//! does not load (a half-written file, a key that does not match) keeps
//! the previous configuration and says why ([`TlsFiles::reload_error`]).
//!
//! A server built here requires a client certificate chaining to the CA
//! (mutual TLS); a client verifies the server's certificate against the
//! CA and the name it dials (for peers: the peer's region id, which the
//! peer's certificate must carry as a DNS subject alternative name).
//!
//! [`describe`] turns rustls's errors into words an operator acts on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One party's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The CA certificate(s) peers' certificates must chain to (PEM).
    pub ca: PathBuf,
    /// This party's certificate chain (PEM), leaf first; `None` for a
    /// client without a certificate.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// Why the TLS files cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The configurations built from one version of the files.
struct Built {
    stamp: Vec<Option<(SystemTime, u64)>>,
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

/// TLS files, loaded, and loaded again when they change.
pub struct TlsFiles {
    paths: Paths,
    built: Mutex<Built>,
    reload_error: Mutex<Option<String>>,
    /// Whether [`TlsFiles::new_reload_error`] has told the current error.
    reload_error_told: std::sync::atomic::AtomicBool,
}

impl TlsFiles {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(paths: Paths) -> Result<Self, TlsError> {
        let built = build(&paths)?;
        Ok(Self {
            paths,
            built: Mutex::new(built),
            reload_error: Mutex::new(None),
            reload_error_told: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The files.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The server configuration (client certificates required), from the
    /// files as they are now; `None` without a certificate of our own.
    pub fn server(&self) -> Option<Arc<ServerConfig>> {
        self.current().0
    }

    /// The client configuration, from the files as they are now.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.current().1
    }

    /// Why the last change to the files did not load (the previous
    /// configuration is still in use), if it did not.
    pub fn reload_error(&self) -> Option<String> {
        lock(&self.reload_error).clone()
    }

    /// [`TlsFiles::reload_error`], but only the first time it is asked
    /// after the files changed: to log a bad replacement once, not on every
    /// connection while it stays.
    pub fn new_reload_error(&self) -> Option<String> {
        let error = self.reload_error()?;
        let told = self
            .reload_error_told
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        (!told).then_some(error)
    }

    fn current(&self) -> (Option<Arc<ServerConfig>>, Arc<ClientConfig>) {
        let mut built = lock(&self.built);
        let stamp = stamps(&self.paths);
        if stamp != built.stamp {
            match build(&self.paths) {
                Ok(new) => {
                    *built = new;
                    *lock(&self.reload_error) = None;
                }
                Err(e) => {
                    // Keep serving with what worked; try again next time.
                    built.stamp = stamp;
                    *lock(&self.reload_error) = Some(e.0);
                    self.reload_error_told
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        (built.server.clone(), Arc::clone(&built.client))
    }

    /// Opens a TLS connection to `host:port`, verifying that the server's
    /// certificate chains to the CA and names `server_name`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        server_name: ServerName<'static>,
    ) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(self.client())
            .connect(server_name.clone(), tcp)
            .await
            .map_err(|e| {
                let text = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => describe(tls),
                    None => e.to_string(),
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "TLS with {host}:{port} (expecting {}): {text}",
                        name_text(&server_name)
                    ),
                )
            })
    }
}

/// A connector for tonic's `Endpoint::connect_with_connector`: TLS to the
/// URI's host and port, the server's certificate checked for
/// `server_name` (the host itself when `None`).
pub fn connector(
    files: Arc<TlsFiles>,
    server_name: Option<ServerName<'static>>,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<TlsStream<TcpStream>>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        let files = Arc::clone(&files);
        let server_name = server_name.clone();
        async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("{uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| io::Error::other(format!("{host} is not a server name: {e}")))?,
            };
            files.connect(&host, port, name).await.map(TokioIo::new)
        }
    })
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// A rustls error in words an operator can act on.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::NoCertificatesPresented => {
            "the other side presented no certificate (mutual TLS is required: give it a certificate signed by the cluster's CA)".to_owned()
        }
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the certificate is not signed by the configured CA (wrong CA: check [tls] ca on both sides)".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the certificate has expired: issue a new one and replace its files (they are reloaded)".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet (check the clocks, or its start date)".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate does not name the expected server (a peer's certificate must carry its region id as a DNS name)".to_owned()
            }
            CertificateError::Revoked => "the certificate was revoked".to_owned(),
            other => format!("the certificate was refused: {other:?}"),
        },
        Error::AlertReceived(alert) => format!(
            "the other side refused the handshake ({alert:?}): its log names the cause"
        ),
        other => other.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn stamps(paths: &Paths) -> Vec<Option<(SystemTime, u64)>> {
    std::iter::once(Some(&paths.ca))
        .chain([paths.cert.as_ref(), paths.key.as_ref()])
        .map(|p| {
            let meta = std::fs::metadata(p?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let found: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if found.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(found)
}

fn build(paths: &Paths) -> Result<Built, TlsError> {
    let stamp = stamps(paths);
    let mut roots = RootCertStore::empty();
    for ca in certs(&paths.ca, "CA file")? {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("CA file {}: {e}", paths.ca.display())))?;
    }
    let roots = Arc::new(roots);
    let own = match (&paths.cert, &paths.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "certificate file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError(format!("key file {}: {e}", key.display())))?;
            Some((chain, key))
        }
        (None, None) => None,
        _ => {
            return Err(TlsError(
                "a certificate needs its key and a key its certificate: give both".to_owned(),
            ));
        }
    };
    let versions = rustls::DEFAULT_VERSIONS;
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(Arc::clone(&roots));
    let mut client = match &own {
        Some((chain, key)) => client
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError(format!("certificate and key: {}", describe(&e))))?,
        None => client.with_no_client_auth(),
    };
    client.alpn_protocols = vec![b"h2".to_vec()];
    let server = match own {
        Some((chain, key)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError(format!("CA file {}: {e}", paths.ca.display())))?;
            let mut server = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .map_err(|e| TlsError(e.to_string()))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .map_err(|e| TlsError(format!("certificate and key: {}", describe(&e))))?;
            server.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(server))
        }
        None => None,
    };
    Ok(Built {
        stamp,
        server,
        client: Arc::new(client),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
