//! Serving HTTPS directly: the rustls server configuration read from
//! `tls_cert`/`tls_key` at start-up, and [`TlsListener`], the axum listener
//! that hands the router connections whose TLS handshake has completed.
//!
//! Handshakes run in tasks of their own, each with a deadline, so a client
//! that connects and stays silent (or handshakes slowly) holds one task and
//! one socket, never the accept loop.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, TlsFiles};

/// How long a client has from its TCP connection to a finished handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; past it, new connections wait in the
/// kernel's accept queue instead of each costing a task and a socket here.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// PEM files larger than this are refused: a certificate chain is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Reads the certificate chain and private key and builds the server
/// configuration: aws-lc-rs, TLS 1.2 and 1.3 (rustls' safe defaults), no
/// client certificates, ALPN `http/1.1` (the router speaks HTTP/1.1 only).
///
/// # Errors
/// A [`ConfigError`] naming `tls_cert` (unreadable, no certificate, not
/// parseable) or `tls_key` (unreadable, no private key, a key type rustls
/// cannot use, or a key that is not the certificate's).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, ConfigError> {
    let certs = read_certificates(&files.cert)?;
    let key = read_private_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls_cert", format!("TLS settings: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                "tls_key",
                format!(
                    "{} is not the private key of the certificate in tls_cert",
                    files.key.display()
                ),
            ),
            rustls::Error::InvalidCertificate(e) => ConfigError::new(
                "tls_cert",
                format!(
                    "{}: the first certificate is not valid X.509: {e:?}",
                    files.cert.display()
                ),
            ),
            other => ConfigError::new("tls_key", format!("{}: {other}", files.key.display())),
        })?;
    // RFC 7301: name the one protocol served; a client that offers ALPN
    // without `http/1.1` (h2 only) is refused rather than misunderstood.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let display = path.display();
    let meta =
        std::fs::metadata(path).map_err(|e| ConfigError::new(key, format!("{display}: {e}")))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(ConfigError::new(
            key,
            format!("{display}: larger than 1 MiB"),
        ));
    }
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("{display}: {e}")))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem("tls_cert", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                "tls_cert",
                format!("{}: not PEM: {}", path.display(), pem_problem(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            "tls_cert",
            format!(
                "{}: no CERTIFICATE in it (a PEM chain, the server's certificate first)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_pem("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let problem = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no unencrypted private key in it (PKCS#8, PKCS#1 or SEC1 PEM)".to_owned()
            }
            other => format!("not PEM: {}", pem_problem(&other)),
        };
        ConfigError::new("tls_key", format!("{}: {problem}", path.display()))
    })
}

/// A short description of a PEM syntax error. The parser's own messages
/// quote lines of the file as byte arrays, which for a key file may be key
/// material; these do not.
fn pem_problem(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line",
        Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        Error::Base64Decode(_) => "a section is not valid base64",
        Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

/// A TCP listener that yields TLS streams, for [`axum::serve`].
///
/// Each accepted connection is handshaken in a task of its own (bounded by
/// [`HANDSHAKE_TIMEOUT`]); [`accept`](axum::serve::Listener::accept) returns
/// whichever finishes first. Dropping the listener (graceful shutdown
/// stops accepting) aborts the handshakes still in progress.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves `config` on connections accepted from `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                // Scanners, plain-HTTP clients and clients that do not trust
                // the certificate end here; nothing for an operator to do.
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe, as axum's graceful shutdown requires: both branches are
    // (`TcpListener::accept`, `JoinSet::join_next`), and a connection
    // accepted is in the set before the next await.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(e) => accept_error(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What axum's own TCP listener does with an accept error: a connection
/// reset before it was accepted is nothing; anything else (EMFILE) is
/// logged and waited out for a second rather than spun on.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
