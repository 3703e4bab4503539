//! The SMTP transport: `lettre` over rustls on aws-lc-rs, trusting the
//! system's certificate store (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
//! honoured). `smtp://` upgrades with STARTTLS when the server offers it,
//! and demands it when the URL carries credentials (they never cross the
//! network in clear); `smtps://` speaks TLS from the first byte. The
//! credentials come from the URL's user and password (percent-decoded) and
//! are never logged: [`SecretUrl`] hides them in every message.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;
use url::Url;

use crate::config::SecretUrl;
use crate::model::mail::OutboxMail;

/// The longest one SMTP command may take (connecting included), so a
/// server that hangs costs one mail's attempt, not the sender.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The server refused it for good (a 5xx answer, or an address it
    /// cannot take): retrying cannot help.
    pub permanent: bool,
    /// One line, without secrets.
    pub message: String,
}

/// A configured SMTP relay and the sender of every mail.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of Message-IDs (the sender's).
    domain: String,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// The transport `url` names, sending as `from`. Opens no connection.
    ///
    /// # Errors
    /// When the URL or the sender cannot be used (naming the key).
    pub fn new(url: &SecretUrl, from: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("email_from: {from:?} is not a mail address ({e})"))?;
        let domain = from.email.domain().to_owned();
        let parsed = Url::parse(url.expose())
            .map_err(|_| anyhow::anyhow!("smtp_url: {} is not a URL", url.redacted()))?;
        let host = parsed
            .host_str()
            .context("smtp_url: needs a host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let implicit = parsed.scheme() == "smtps";
        let port = parsed.port().unwrap_or(if implicit { 465 } else { 25 });
        let credentials = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            (user, password) => Some(Credentials::new(
                percent_decode_str(user).decode_utf8_lossy().into_owned(),
                percent_decode_str(password.unwrap_or_default())
                    .decode_utf8_lossy()
                    .into_owned(),
            )),
        };
        let mut tls = TlsParameters::builder(host.clone());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("smtp_ca_file: cannot read {}", path.display()))?;
            anyhow::ensure!(
                pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
                "smtp_ca_file: {} holds no PEM certificate",
                path.display()
            );
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "smtp_ca_file: {} holds no usable certificate ({e})",
                    path.display()
                )
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| anyhow::anyhow!("smtp_url: TLS for {host}: {e}"))?;
        let tls = if implicit {
            Tls::Wrapper(tls)
        } else if credentials.is_some() {
            Tls::Required(tls)
        } else {
            Tls::Opportunistic(tls)
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT))
            .pool_config(
                PoolConfig::new()
                    .max_size(4)
                    .idle_timeout(Duration::from_secs(30)),
            );
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
        })
    }

    /// The sender's address as configured.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends one mail: plain text and HTML as alternatives, its outbox id
    /// as Message-ID (a retried mail keeps it, so receivers can tell a
    /// repeat).
    ///
    /// # Errors
    /// [`SendError`], permanent when the server refused it for good.
    pub async fn send(&self, mail: &OutboxMail) -> Result<(), SendError> {
        let to: Mailbox = mail.to.parse().map_err(|e| SendError {
            permanent: true,
            message: format!("the recipient is not a mail address ({e})"),
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@{}>", mail.id, self.domain)))
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| SendError {
                permanent: true,
                message: format!("the mail cannot be built ({e})"),
            })?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: format!("{e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The transport's pool lives on the Tokio runtime, as in the server.
    #[tokio::test]
    async fn urls_and_senders_are_checked_and_debug_hides_the_password() {
        let ok = Smtp::new(
            &SecretUrl::new("smtp://user:s3cr%40t@mail.example.com:587"),
            "Acme <auth@example.com>",
            None,
        )
        .expect("smtp");
        assert!(!format!("{ok:?}").contains("s3cr"));
        assert_eq!(ok.from().email.to_string(), "auth@example.com");
        assert!(
            Smtp::new(
                &SecretUrl::new("smtps://mail.example.com"),
                "auth@example.com",
                None
            )
            .is_ok()
        );
        let e = Smtp::new(
            &SecretUrl::new("smtp://mail.example.com"),
            "not an address",
            None,
        )
        .expect_err("bad sender");
        assert!(format!("{e:#}").contains("email_from"), "{e:#}");
    }
}
