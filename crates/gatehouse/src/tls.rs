//! Serving HTTPS directly: the rustls server configuration read from
//! `tls_cert`/`tls_key` at start-up, and the handshake deadline.
//!
//! Each handshake runs in its connection's own task (`crate::serve`), so a
//! client that connects and stays silent (or handshakes slowly) holds one
//! task and one socket, never the accept loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::{ConfigError, TlsFiles};

/// How long a client has from its TCP connection to a finished handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
