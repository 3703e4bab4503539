//! The domain: per-flow services over the store traits, wired once by
//! [`Services::new`]. Nothing here knows about HTTP, or which backend or
//! cache the stores are (`store::open` decides that).
//!
//! - [`Accounts`]: registration, password login, password change;
//! - [`SecondFactors`]: TOTP and recovery codes, the second step of a login;
//! - [`Mail`]: password reset and address verification by mailed links (the
//!   security notices are the audit trail's, `notices`);
//! - [`Sessions`]: starting, recognising and ending sessions;
//! - [`Tokens`]: signing access tokens, the token endpoint's grants;
//! - [`Bearer`]: verifying access tokens and finding their principals;
//! - [`Gate`]: who is calling and whether they may (`/v1/verify`);
//! - [`Admin`]: users, roles, signing keys;
//! - [`Feed`]: resource servers and the revocation feed they read;
//! - [`Clients`]: the OpenID client registry;
//! - [`Audit`]: the audit trail;
//! - [`Ops`]: readiness and metrics.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod bearer;
pub mod claims;
pub mod clients;
pub mod cookies;
pub mod feed;
pub mod forward;
pub mod keys;
pub mod mail;
pub mod mfa;
pub mod notices;
pub mod oidc;
pub mod passkeys;
pub mod password;
pub mod principals;
pub mod rules;
pub mod sessions;
pub mod throttle;
pub mod tokens;
pub use crate::model::types;
pub mod verified;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, EmailVerification, Registration, RevocationFailMode};
use crate::mail::Templates;
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::store::{SessionStore, Stores, UserStore};

pub use crate::model::client::{ClientMeta, FieldError};
pub use accounts::Accounts;
pub use admin::Admin;
pub use audit::Audit;
pub use bearer::Bearer;
pub use clients::Clients;
pub use cookies::Cookies;
pub use feed::Feed;
pub use forward::Gate;
pub use keys::KeyManager;
pub use mail::{Mail, MailError, MailSettings};
pub use mfa::SecondFactors;
pub use password::{HashError, Hasher};
pub use sessions::{SessionLimits, Sessions};
pub use throttle::{Throttle, ThrottleLimits};
pub use tokens::{TokenSettings, Tokens};

/// The limits that shape sessions, and login and registration throttling.
#[derive(Debug, Clone)]
pub struct Policy {
    pub registration: Registration,
    pub sessions: SessionLimits,
    pub throttle: ThrottleLimits,
    /// How long audit events are kept; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// `rp_id`: the WebAuthn relying party id; `None` takes the issuer's
    /// host.
    pub rp_id: Option<String>,
    /// `webauthn_origins`; empty takes the issuer's origin.
    pub webauthn_origins: Vec<String>,
    /// `smtp_url` is set.
    pub mail_enabled: bool,
    pub email_verification: EmailVerification,
    pub password_reset_ttl: Duration,
    pub email_verification_ttl: Duration,
    /// `public_url`; `None` takes the issuer.
    pub public_url: Option<String>,
}

impl Policy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            registration: config.registration,
            sessions: SessionLimits {
                idle_timeout: config.session_idle_timeout,
                absolute_timeout: config.session_absolute_timeout,
                max_per_user: config.max_sessions_per_user,
                revoke_for: config.access_token_ttl + config.jwt_leeway,
            },
            throttle: ThrottleLimits::from_config(config),
            audit_retention: config.audit_retention,
            rp_id: config.rp_id.clone(),
            webauthn_origins: config.webauthn_origins.clone(),
            mail_enabled: config.smtp_url.is_some(),
            email_verification: config.email_verification,
            password_reset_ttl: config.password_reset_ttl,
            email_verification_ttl: config.email_verification_ttl,
            public_url: config.public_url.clone(),
        }
    }
}

/// Every service of one process, wired once; shared by every request, the
/// command line and the background tasks. Each service holds only what it
/// uses.
#[derive(Clone)]
pub struct Services {
    pub accounts: Arc<Accounts>,
    pub admin: Arc<Admin>,
    pub audit: Arc<Audit>,
    pub bearer: Arc<Bearer>,
    pub clients: Arc<Clients>,
    pub cookies: Arc<Cookies>,
    pub factors: Arc<SecondFactors>,
    pub mail: Arc<Mail>,
    pub feed: Arc<Feed>,
    pub gate: Arc<Gate>,
    pub ops: Arc<Ops>,
    pub provider: Arc<oidc::Provider>,
    pub sessions: Arc<Sessions>,
    pub tokens: Arc<Tokens>,
    pub keys: Arc<KeyManager>,
    /// The sessions this node knows ended, and the revocation feed's state.
    pub revocations: Arc<Revocations>,
    pub metrics: Arc<Metrics>,
    /// The session cache in front of Redis, when there is one (its
    /// counters).
    pub session_cache: Option<Arc<crate::store::cache::CachingSessionStore>>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Wires every service over `stores` and loads the revocations still
    /// in force. `templates` are the mails' (with `smtp_url` set; `None`
    /// turns mail off).
    ///
    /// # Errors
    /// When the store cannot be read, or the metrics cannot be registered.
    #[allow(clippy::too_many_arguments)] // the wiring, done once
    pub async fn new(
        stores: Stores,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        policy: Policy,
        settings: TokenSettings,
        keys: KeyManager,
        templates: Option<Arc<Templates>>,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new()?);
        let hasher = Arc::new(hasher);
        let keys = Arc::new(keys);
        let revocations = stores.revocations.clone();
        let templates = templates.filter(|_| policy.mail_enabled);
        let public_url = policy
            .public_url
            .clone()
            .unwrap_or_else(|| settings.issuer.clone());
        let mail_wake = Arc::new(tokio::sync::Notify::new());
        let mut audit = Audit::new(
            stores.audit.clone(),
            clock.clone(),
            metrics.clone(),
            policy.audit_retention,
        );
        if let Some(templates) = &templates {
            audit = audit.with_notices(notices::Notices::new(
                stores.users.clone(),
                stores.mail.clone(),
                templates.clone(),
                notices::Links::new(&public_url),
                mail_wake.clone(),
            ));
        }
        let audit = Arc::new(audit);
        let sessions = Arc::new(Sessions::new(
            stores.sessions.clone(),
            stores.users.clone(),
            revocations.clone(),
            audit.clone(),
            clock.clone(),
            policy.sessions,
        ));
        sessions.reload_revocations().await?;
        let principals = Arc::new(
            principals::Principals::new(
                stores.principal_cache_ttl,
                principals::CAPACITY,
                revocations.clone(),
            )
            .announcing_to(stores.sessions.clone()),
        );
        let throttle = Arc::new(Throttle::new(
            stores.failures.clone(),
            stores.users.clone(),
            sessions.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
            policy.throttle,
        ));
        let mail = Arc::new(Mail::new(
            stores.mail.clone(),
            stores.users.clone(),
            hasher.clone(),
            throttle.clone(),
            sessions.clone(),
            principals.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
            templates,
            MailSettings {
                verification: policy.email_verification,
                reset_ttl: policy.password_reset_ttl,
                verification_ttl: policy.email_verification_ttl,
                public_url,
            },
            mail_wake,
        ));
        let factors = Arc::new(SecondFactors::new(
            stores.mfa.clone(),
            stores.users.clone(),
            throttle.clone(),
            sessions.clone(),
            keys.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
            &settings.issuer,
            policy.throttle.login_max_failures,
            passkeys::relying_party(
                &settings.issuer,
                policy.rp_id.as_deref(),
                &policy.webauthn_origins,
            )?,
            mail.clone(),
        ));
        factors.seal_plaintext_keys().await?;
        let accounts = Arc::new(Accounts::new(
            stores.users.clone(),
            hasher.clone(),
            throttle,
            sessions.clone(),
            factors.clone(),
            principals.clone(),
            mail.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
            policy.registration,
        ));
        let bearer = Arc::new(Bearer::new(
            keys.clone(),
            settings.clone(),
            revocations.clone(),
            principals.clone(),
            sessions.clone(),
            stores.users.clone(),
            clock.clone(),
        ));
        let tokens = Arc::new(Tokens::new(
            keys.clone(),
            settings,
            accounts.clone(),
            factors.clone(),
            sessions.clone(),
            stores.sessions.clone(),
            stores.users.clone(),
            audit.clone(),
            metrics.clone(),
            clock.clone(),
        ));
        let client_cache = Arc::new(clients::ClientCache::new(stores.principal_cache_ttl));
        let clients = Arc::new(Clients::new(
            stores.clients.clone(),
            client_cache,
            audit.clone(),
            clock.clone(),
        ));
        let cookies = Arc::new(Cookies::new(
            sessions.clone(),
            stores.users.clone(),
            principals.clone(),
            revocations.clone(),
            clock.clone(),
        ));
        let gate = Arc::new(Gate::new(
            bearer.clone(),
            cookies.clone(),
            stores.users.clone(),
            clients.clone(),
        ));
        let admin = Arc::new(Admin::new(
            stores.users.clone(),
            sessions.clone(),
            principals,
            keys.clone(),
            audit.clone(),
        ));
        let feed = Arc::new(Feed::new(
            stores.resource_servers.clone(),
            stores.sessions.clone(),
            revocations.clone(),
            audit.clone(),
            clock.clone(),
        ));
        let provider = Arc::new(oidc::Provider::new(
            bearer.clone(),
            clients.clone(),
            stores.grants.clone(),
            sessions.clone(),
            stores.sessions.clone(),
            stores.users.clone(),
            tokens.clone(),
            keys.clone(),
            audit.clone(),
            clock.clone(),
        ));
        let ops = Arc::new(Ops {
            outbox: mail.enabled().then(|| stores.mail.clone()),
            users: stores.users.clone(),
            sessions: stores.sessions.clone(),
            revocations: revocations.clone(),
            metrics: metrics.clone(),
            hasher,
            clock: clock.clone(),
        });
        Ok(Self {
            accounts,
            admin,
            factors,
            mail,
            audit,
            bearer,
            clients,
            cookies,
            feed,
            gate,
            ops,
            provider,
            sessions,
            tokens,
            keys,
            revocations,
            metrics,
            session_cache: stores.session_cache,
            clock,
        })
    }
}

/// What `/readyz` reports: each store's answer, and with Redis the state
/// of the revocation feed.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// The SQL database (users, roles, keys; sessions without Redis).
    pub database: Result<(), String>,
    /// Redis, when configured.
    pub redis: Option<Result<(), String>>,
    /// With Redis, the revocation feed.
    pub feed: Option<FeedReport>,
    pub fail_mode: Option<RevocationFailMode>,
}

/// The state of the revocation feed, for `/readyz`.
#[derive(Debug, Clone)]
pub struct FeedReport {
    /// The subscription is live.
    pub connected: bool,
    /// This node proved less than `max_staleness` ago that it knows every
    /// revocation.
    pub proven: bool,
    /// The instant last proven.
    pub proven_at: Option<time::OffsetDateTime>,
    pub max_staleness: Duration,
}

impl Readiness {
    /// Every configured store answers, and with Redis this node knows every
    /// revocation.
    pub fn is_ready(&self) -> bool {
        self.database.is_ok()
            && self.redis.as_ref().is_none_or(Result::is_ok)
            && self.feed.as_ref().is_none_or(|f| f.proven)
    }
}

/// Readiness and metrics: what operators ask of the node.
pub struct Ops {
    /// With mail on, the outbox (its gauges).
    outbox: Option<Arc<dyn crate::store::MailStore>>,
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    hasher: Arc<Hasher>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").finish_non_exhaustive()
    }
}

impl Ops {
    /// The Prometheus text exposition of this node's metrics. The
    /// live-sessions gauge asks the session store (within `within`; on
    /// failure or timeout it keeps its last value, and the failure is
    /// logged); the other gauges are read from memory.
    pub async fn render_metrics(&self, within: Duration) -> String {
        let counted =
            tokio::time::timeout(within, self.sessions.count_sessions(self.clock.now())).await;
        let live_sessions = match counted {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "counting live sessions failed");
                None
            }
            Err(_) => {
                tracing::warn!("counting live sessions timed out");
                None
            }
        };
        let outbox = match &self.outbox {
            None => None,
            Some(store) => match tokio::time::timeout(within, store.outbox_stats()).await {
                Ok(Ok(stats)) => {
                    let age = stats
                        .oldest_pending
                        .map_or(0.0, |at| (self.clock.now() - at).as_seconds_f64().max(0.0));
                    #[allow(clippy::cast_precision_loss)] // exact below 2^53
                    Some((stats.pending, stats.failed, age))
                }
                Ok(Err(e)) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "reading the outbox's state failed"
                    );
                    None
                }
                Err(_) => {
                    tracing::warn!("reading the outbox's state timed out");
                    None
                }
            },
        };
        self.metrics.render(crate::metrics::Gauges {
            live_sessions,
            revoked_sessions: self.revocations.set().len(),
            hash_queue_depth: self.hasher.queue_depth(),
            outbox,
        })
    }

    /// Asks every store, each within `within`, and reports.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let (database, sessions) = tokio::join!(
            answer_within(within, self.users.ping()),
            answer_within(within, self.sessions.reachable()),
        );
        let feed = self.revocations.feed();
        Readiness {
            database,
            redis: feed.map(|_| sessions),
            feed: feed.map(|f| FeedReport {
                connected: f.is_connected(),
                proven: f.is_proven(),
                proven_at: f.proven_at(),
                max_staleness: f.max_staleness(),
            }),
            fail_mode: self.revocations.fail_mode(),
        }
    }
}

/// A probe's answer within `within`, its error as one line.
async fn answer_within(
    within: Duration,
    probe: impl Future<Output = anyhow::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(within, probe).await {
        Ok(answer) => answer.map_err(|e| format!("{e:#}")),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! The services on a temporary SQLite file with a clock the test
    //! drives.

    use std::sync::Arc;

    use super::{Hasher, KeyManager, Policy, Services, TokenSettings};
    use crate::clock::Clock;
    use crate::config::{Config, DatabaseUrl};
    use crate::store::Stores;

    pub const ISSUER: &str = "https://auth.test";

    /// The services of a test configuration (on a fresh SQLite file).
    pub async fn services(
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut Config),
    ) -> (Services, tempfile::TempDir) {
        services_over(clock, configure, |_, _, _| {}).await
    }

    /// As [`services`], with `wrap` changing the stores first (the tests of
    /// the session cache put it in front of SQLite: its logic does not
    /// depend on the store).
    pub async fn services_over(
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut Config),
        wrap: impl FnOnce(&mut Stores, &Config, Arc<dyn Clock>),
    ) -> (Services, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            database_url: DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                dir.path().join("t.db").display()
            )),
            ..Config::default()
        };
        configure(&mut config);
        let mut stores = crate::store::open(&config, clock.clone())
            .await
            .expect("store");
        wrap(&mut stores, &config, clock.clone());
        let keys = KeyManager::init(&config, stores.keys.clone(), clock.clone())
            .await
            .expect("keys");
        let tokens = TokenSettings {
            issuer: ISSUER.into(),
            audience: ISSUER.into(),
            access_token_ttl: config.access_token_ttl,
            leeway: config.jwt_leeway,
            refresh_reuse_grace: config.refresh_reuse_grace,
        };
        let services = Services::new(
            stores,
            Hasher::new(2, 64).expect("hasher"),
            clock,
            Policy::from_config(&config),
            tokens,
            keys,
            None,
        )
        .await
        .expect("services");
        (services, dir)
    }
}
