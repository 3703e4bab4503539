//! Building the application from a [`Config`]: stores, domain, router, and
//! the bound listener. The binary and the tests build it the same way.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::Digest as _;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use crate::auth::{Hasher, KeyManager, Policy, Services, TokenSettings};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConnectionLimits, DatabaseUrl};
use crate::http::{self, AppState, WebSettings};
use crate::store::FeedSource;

/// How often expired sessions are swept from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often the signing keys and the revocations are re-read, so a
/// rotation or a session ended by the CLI or another node takes effect
/// within this bound.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Most password hashes waiting for the pool before logins get 503.
const MAX_HASH_QUEUE: usize = 1024;

/// Opens the configured stores and wires the domain's services on them.
///
/// `hash_concurrency` bounds how many password hashes run at once (the
/// server uses one per core; a CLI command needs one). `issuer` is the
/// `iss` of tokens (the configured one, or the server's bound origin).
///
/// # Errors
/// When a store cannot be opened, a signing key cannot be loaded, or the
/// configuration asks for a backend this build does not have.
pub async fn build_services(
    config: &Config,
    hash_concurrency: usize,
    issuer: String,
) -> anyhow::Result<Services> {
    let (services, _) =
        build_services_on(config, hash_concurrency, issuer, Arc::new(SystemClock)).await?;
    Ok(services)
}

/// [`build_services`] on `clock` (tests move a manual one instead of
/// sleeping); also returns where the revocation feed comes from, when
/// sessions are in Redis.
///
/// # Errors
/// As [`build_services`].
pub async fn build_services_on(
    config: &Config,
    hash_concurrency: usize,
    issuer: String,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Services, Option<FeedSource>)> {
    let stores = crate::store::open(config, clock.clone()).await?;
    // Until the services are built (the first keys, the revocations in
    // force), PostgreSQL operations may wait for a connection as long as
    // the pool does: a loaded machine can take longer than the 500 ms a
    // request waits to open one. Ended before anything is served.
    let start_up = stores.start_up();
    let feed = stores.feed.clone();
    let hasher = Hasher::new(hash_concurrency, MAX_HASH_QUEUE)?;
    let keys = KeyManager::init(config, stores.keys.clone(), clock.clone()).await?;
    let tokens = TokenSettings {
        audience: config.audience.clone().unwrap_or_else(|| issuer.clone()),
        issuer,
        access_token_ttl: config.access_token_ttl,
        leeway: config.jwt_leeway,
        refresh_reuse_grace: config.refresh_reuse_grace,
    };
    // Compiled (and tried on sample values) before anything is served: a
    // broken override stops the start-up, not a mail.
    let templates = match config.smtp_url {
        Some(_) => Some(Arc::new(crate::mail::Templates::load(
            config.email_templates.as_deref(),
        )?)),
        None => None,
    };
    let services = Services::new(
        stores,
        hasher,
        clock,
        Policy::from_config(config),
        tokens,
        keys,
        templates,
    )
    .await?;
    drop(start_up);
    Ok((services, feed))
}

/// The sender of mails: `email_from`, else `gatehouse@` and the host of
/// `issuer` (`localhost` when that is an IP address, which no mail domain
/// is).
pub fn email_from(config: &Config, issuer: &str) -> String {
    if let Some(from) = &config.email_from {
        return from.clone();
    }
    let host = url::Url::parse(issuer)
        .ok()
        .and_then(|u| match u.host() {
            Some(url::Host::Domain(d)) => Some(d.to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("gatehouse@{host}")
}

/// The issuer a command-line tool assumes: the configured one, else what a
/// server on `listen` would call itself (`https://` when it serves TLS).
pub fn default_issuer(config: &Config) -> String {
    config
        .issuer
        .clone()
        .unwrap_or_else(|| format!("{}://{}", config.scheme(), config.listen))
}

/// A built application, bound to its address and ready to serve.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    /// The TLS settings, when the server speaks HTTPS itself.
    tls: Option<Arc<ServerConfig>>,
    limits: ConnectionLimits,
    state: AppState,
    /// Redis URL and revocation channel, when sessions live in Redis.
    revocation_feed: Option<FeedSource>,
    /// The outbox's sender, with `smtp_url`.
    mail_sender: Option<crate::mail::Sender>,
}

impl Application {
    /// Reads the TLS certificate and key (when configured), opens the
    /// stores, builds the router and binds `config.listen` (port 0 picks a
    /// free port; see [`Application::local_addr`]).
    ///
    /// # Errors
    /// When the TLS files cannot be used (naming `tls_cert` or `tls_key`), a
    /// store cannot be opened or the address cannot be bound.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_on(config, Arc::new(SystemClock)).await
    }

    /// [`Application::build`] with `clock` as the one source of "now" for
    /// expiry, tokens and throttling windows (tests move a manual clock
    /// instead of sleeping).
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_on(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Before anything else: a bad certificate stops start-up before the
        // database is created or the port taken, like any bad setting.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        crate::serve::warn_if_short_of_files(&config.connections);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let origin = format!("{}://{addr}", config.scheme());
        let issuer = config.issuer.clone().unwrap_or_else(|| origin.clone());
        let (services, revocation_feed) =
            build_services_on(&config, num_cpus(), issuer.clone(), clock.clone()).await?;
        let mail_sender = match &config.smtp_url {
            Some(url) => Some(crate::mail::Sender::new(
                services.mail.outbox(),
                crate::mail::Smtp::new(
                    url,
                    &email_from(&config, &issuer),
                    config.smtp_ca_file.as_deref(),
                )?,
                clock,
                services.metrics.clone(),
                services.mail.wake(),
            )),
            None => None,
        };
        if config.issuer.is_none() && matches!(config.database_url, DatabaseUrl::Postgres(_)) {
            // Every node would call itself by its own address, and refuse
            // the others' tokens.
            tracing::warn!(%addr, "issuer is not set: with several nodes, set the same issuer on every node");
        }
        let issuer_origin = config.issuer_origin().unwrap_or(origin);
        let mut allowed_origins: HashSet<String> = config.allowed_origins.iter().cloned().collect();
        allowed_origins.insert(issuer_origin);
        // Mails send users to the hosted pages on public_url: their forms
        // post from there.
        if let Some(origin) = config
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
        {
            allowed_origins.insert(origin);
        }
        let web = WebSettings {
            cookie_name: if config.cookie_secure {
                "__Host-gatehouse"
            } else {
                "gatehouse"
            },
            cookie_secure: config.cookie_secure,
            allowed_origins,
            trusted_proxies: config.trusted_proxies.clone(),
            rules: config.rules.clone(),
            metrics_token: config
                .metrics_token
                .as_ref()
                .map(|t| sha2::Sha256::digest(t.expose()).into()),
            request_body_timeout: config.connections.request_body_timeout,
            admin_requires_mfa: config.admin_requires_mfa,
        };
        Ok(Self {
            listener,
            addr,
            tls,
            limits: config.connections,
            revocation_feed,
            mail_sender,
            state: AppState {
                services: Arc::new(services),
                web: Arc::new(web),
            },
        })
    }

    /// The domain's services (for tests and embedding).
    pub fn services(&self) -> Services {
        Services::clone(&self.state.services)
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the bound address: `https://ADDR` when the server
    /// speaks TLS itself, else `http://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until `shutdown` completes, then stops accepting, closes idle
    /// connections, lets the requests in flight finish for up to
    /// `shutdown_timeout`, closes the rest and returns.
    ///
    /// # Errors
    /// None today: a failure to accept one connection is logged and the
    /// server goes on. The `Result` leaves room for failures that must stop
    /// it.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let services = &self.state.services;
        let (sessions, audit, factors, mail, provider) = (
            services.sessions.clone(),
            services.audit.clone(),
            services.factors.clone(),
            services.mail.clone(),
            services.provider.clone(),
        );
        let sweeper = spawn_background("sweeper", async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                match sessions.sweep_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(swept = n, "expired sessions deleted"),
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "sweeping expired sessions failed")
                    }
                }
                match factors.sweep_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(swept = n, "expired pending logins deleted"),
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "sweeping pending logins failed")
                    }
                }
                match provider.sweep_codes().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(swept = n, "expired authorization codes deleted"),
                    Err(e) => tracing::warn!(
                        error = format!("{e:#}"),
                        "sweeping authorization codes failed"
                    ),
                }
                match audit.sweep().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(swept = n, "audit events past audit_retention deleted")
                    }
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "sweeping audit events failed")
                    }
                }
                if mail.enabled() {
                    match mail.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            swept = n,
                            "expired mail tokens, given-up mails and old devices deleted"
                        ),
                        Err(e) => {
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "sweeping mail tokens and the outbox failed"
                            )
                        }
                    }
                }
            }
        });
        let mail_sender = self
            .mail_sender
            .map(|sender| spawn_background("mail sender", sender.run()));
        let (sessions, keys, metrics, revocations) = (
            services.sessions.clone(),
            services.keys.clone(),
            services.metrics.clone(),
            services.revocations.clone(),
        );
        let key_watch = spawn_background("key and revocation re-read", async move {
            let mut tick = tokio::time::interval(KEY_RELOAD_EVERY);
            loop {
                tick.tick().await;
                // Whether or not anything scrapes /metrics.
                metrics.run_upkeep();
                if let Err(e) = keys.reload().await {
                    tracing::warn!(error = format!("{e:#}"), "reloading signing keys failed");
                }
                // Sessions ended by another process (the CLI) reach this
                // node's revocation set within the same bound. With Redis,
                // the feed delivers every ending (and each reconnection
                // reloads them all), so re-reading every revocation in
                // force every 2 s would only cost Redis and this node's
                // memory (seen at 100,000 in force). A feed that has gone
                // silent is not trusted: the set is re-read meanwhile.
                let fed = revocations.feed().is_some_and(|f| f.is_following());
                if fed {
                    continue;
                }
                if let Err(e) = sessions.reload_revocations().await {
                    tracing::warn!(error = format!("{e:#}"), "reloading revocations failed");
                }
            }
        });
        let feed = self.revocation_feed.map(|source| {
            spawn_background(
                "revocation feed",
                crate::fanout::follow_revocations(
                    services.sessions.clone(),
                    services.revocations.clone(),
                    source,
                ),
            )
        });
        let resource_feed = services.feed.clone();
        let shutdown = async move {
            shutdown.await;
            // Long polls would hold the graceful shutdown for up to 30 s.
            resource_feed.stop_waiting();
        };
        let metrics = services.metrics.connections.clone();
        let app = http::router(self.state);
        crate::serve::serve(self.listener, self.tls, app, self.limits, metrics, shutdown).await;
        sweeper.abort();
        key_watch.abort();
        if let Some(sender) = mail_sender {
            sender.abort();
        }
        if let Some(feed) = feed {
            feed.abort();
        }
        Ok(())
    }
}

/// Spawns a task meant to run until shutdown (it is aborted then), and
/// says in the log if it ends before: a panic there would otherwise stop
/// sweeping, re-reading keys or following the revocation feed without a
/// word (the feed's loss still fails closed: the node stops proving it
/// knows every revocation).
fn spawn_background(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::AbortHandle {
    let handle = tokio::spawn(task);
    let abort = handle.abort_handle();
    tokio::spawn(async move {
        match handle.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                tracing::error!(task = name, error = %e, "a background task panicked and stopped")
            }
            Ok(()) => tracing::error!(task = name, "a background task stopped"),
        }
    });
    abort
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for reading what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_background_task_that_stops_says_so_and_an_aborted_one_does_not() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let _ = spawn_background("doomed", async { panic!("boom") });
        let aborted = spawn_background("aborted", std::future::pending());
        aborted.abort();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let text = String::from_utf8_lossy(&log.0.lock().expect("the log")).into_owned();
        assert!(
            text.contains("a background task panicked and stopped") && text.contains("doomed"),
            "{text}"
        );
        assert!(!text.contains("aborted"), "{text}");
    }
}
