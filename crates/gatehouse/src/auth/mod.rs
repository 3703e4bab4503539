//! The domain: accounts, password login, session lifecycle and throttling,
//! over the store traits. Nothing here knows about HTTP.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod feed;
pub mod forward;
pub mod keys;
pub mod password;
pub mod principals;
pub mod revocation;
pub mod rules;
pub mod session_cache;
pub mod sessions;
mod throttle;
pub mod tokens;
pub use crate::model::types;
pub mod verified;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::types::SessionId;
use crate::clock::Clock;
use crate::config::{Config, Registration, RevocationFailMode};
use crate::store::Stores;

pub use keys::KeyManager;
pub use password::{HashError, Hasher};
pub use revocation::{FeedStatus, RevocationSet};
pub use session_cache::{CacheStats, SessionCache};
pub use tokens::TokenSettings;

/// The limits that shape sessions, and login and registration throttling.
#[derive(Debug, Clone)]
pub struct Policy {
    pub registration: Registration,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    /// Most live sessions one user may have (`max_sessions_per_user`).
    pub max_sessions_per_user: u32,
    pub login_max_failures: u32,
    pub login_window: Duration,
    pub login_max_failures_per_ip: u32,
    pub login_max_failures_per_account: u32,
    pub registration_max_per_ip: u32,
    pub registration_window: Duration,
    /// How long audit events are kept; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
}

impl Policy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            registration: config.registration,
            session_idle_timeout: config.session_idle_timeout,
            session_absolute_timeout: config.session_absolute_timeout,
            max_sessions_per_user: config.max_sessions_per_user,
            login_max_failures: config.login_max_failures,
            login_window: config.login_window,
            // Never below the pair's budget, as `Config::load` ensures (also
            // for a configuration built in code): the contract's
            // `login_max_failures` stays reachable.
            login_max_failures_per_ip: config
                .login_max_failures_per_ip
                .max(config.login_max_failures),
            login_max_failures_per_account: config
                .login_max_failures_per_account
                .max(config.login_max_failures),
            registration_max_per_ip: config.registration_max_per_ip,
            registration_window: config.registration_window,
            audit_retention: config.audit_retention,
        }
    }

    /// How stale a session's stored `last_seen_at` may get before a use
    /// writes it: a minute or a tenth of the idle timeout, whichever is
    /// shorter, so the idle expiry is exact to within that bound without a
    /// database write on every request.
    pub fn touch_interval(&self) -> Duration {
        (self.session_idle_timeout / 10).min(Duration::from_secs(60))
    }
}

/// Who is on the other end of a request, as far as we can tell.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<IpAddr>,
    /// Truncated to a sane length by the HTTP layer.
    pub user_agent: Option<String>,
}

/// A validation failure on one input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The authentication service: one per process, shared by every request.
pub struct Auth {
    pub(crate) stores: Stores,
    pub(crate) hasher: Hasher,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: Policy,
    pub(crate) tokens: TokenSettings,
    pub(crate) keys: KeyManager,
    pub(crate) revocations: RevocationSet,
    /// When the revocations were first loaded (what the feed's proof starts
    /// from).
    pub(crate) loaded_at: std::time::Instant,
    /// Set when sessions live in a store shared by many nodes (Redis).
    pub(crate) shared: Option<SharedSessions>,
    /// Turns true when the server shuts down, ending the feed's long polls.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Counters and gauges for `/metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Access tokens whose signature was verified, by their bytes.
    pub(crate) verified: verified::VerifiedTokens,
    /// The bearer path's recent reads of session, user and permissions;
    /// only where every ending reaches this node at once.
    pub(crate) principals: Option<principals::Principals>,
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

/// The refusal of a node in `revocation_fail_mode = "closed"` that cannot
/// prove it knows every revocation: answered 503.
#[derive(Debug, thiserror::Error)]
#[error(
    "this node has had no proof for {max_staleness:?} that it knows every revocation (revocation_fail_mode = closed)"
)]
pub struct RevocationsUnproven {
    pub max_staleness: Duration,
}

/// What a node adds when its sessions live in a store shared by every node
/// (Redis), whose endings reach it through the revocation feed.
#[derive(Debug)]
pub struct SharedSessions {
    /// Session records read moments ago, answering requests while the feed
    /// follows.
    pub(crate) cache: SessionCache,
    pub(crate) feed: FeedStatus,
    /// What requests get while this node cannot prove it knows every
    /// revocation, or the store cannot answer.
    pub(crate) fail_mode: RevocationFailMode,
}

impl SharedSessions {
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn feed(&self) -> &FeedStatus {
        &self.feed
    }

    pub fn fail_mode(&self) -> RevocationFailMode {
        self.fail_mode
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Assembles the service and loads the revocations still in force.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn new(
        stores: Stores,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        policy: Policy,
        tokens: TokenSettings,
        keys: KeyManager,
    ) -> anyhow::Result<Self> {
        let revocations = RevocationSet::default();
        let loaded_at = std::time::Instant::now();
        revocations.insert(stores.sessions.revocations(clock.now()).await?);
        Ok(Self {
            stores,
            hasher,
            clock,
            policy,
            tokens,
            keys,
            revocations,
            loaded_at,
            shared: None,
            stopping: tokio::sync::watch::Sender::new(false),
            metrics: crate::metrics::Metrics::new()?,
            verified: verified::VerifiedTokens::default(),
            principals: None,
        })
    }

    /// Lets the bearer path answer from what it read of a session, its user
    /// and their permissions less than `fresh_for` ago (at most
    /// [`principals::FRESH_FOR`]; zero turns the cache off).
    ///
    /// Only for deployments where every ending of a session reaches this
    /// node's revocation set at once: one server on SQLite (sessions ended
    /// by the CLI arrive with the 2 s re-read), or sessions in Redis while
    /// the feed is connected. Not for several nodes on PostgreSQL alone,
    /// where another node's ending is known here only by reading the store.
    #[must_use]
    pub fn with_principal_cache(mut self, fresh_for: Duration) -> Self {
        let fresh_for = fresh_for.min(principals::FRESH_FOR);
        self.principals = (!fresh_for.is_zero())
            .then(|| principals::Principals::new(fresh_for, principals::CAPACITY));
        self
    }

    /// Users or roles changed through this node: bearer callers' cached
    /// permissions are read again.
    pub(crate) fn principals_changed(&self) {
        if let Some(p) = &self.principals {
            p.invalidate();
        }
    }

    /// Marks the sessions as living in a store shared by many nodes: a
    /// local cache answers for a session this node read less than
    /// `cache_fresh_for` ago (never longer than an access token lives)
    /// while the revocation feed follows; `fail_mode` decides what requests
    /// get once the feed has been silent for `max_staleness`, and what
    /// cookie requests get while the store cannot answer. The revocation
    /// feed must call [`Auth::feed_connected`] before the cache answers
    /// anything, and prove itself at least every `max_staleness`.
    #[must_use]
    pub fn with_shared_sessions(
        mut self,
        cache_fresh_for: Duration,
        fail_mode: RevocationFailMode,
        max_staleness: Duration,
    ) -> Self {
        // An entry stands in for the store no longer than a token of the
        // session could: the revocation set remembers an ending at least
        // that long, so it still vetoes every entry it applies to.
        let usable_for = self.tokens.access_token_ttl;
        self.shared = Some(SharedSessions {
            cache: SessionCache::new(
                cache_fresh_for.min(usable_for),
                usable_for,
                session_cache::CAPACITY,
            ),
            feed: FeedStatus::new(max_staleness, self.loaded_at),
            fail_mode,
        });
        self
    }

    /// The revocation feed is (re)connected, and the set reloaded after it
    /// subscribed at `proof`: entries read before may have missed an
    /// ending, so they are dropped, and the cache may answer again.
    pub fn feed_connected(&self, proof: std::time::Instant) {
        if let Some(shared) = &self.shared {
            shared.cache.clear();
            self.principals_changed();
            shared.feed.set_connected(proof);
        }
    }

    /// The revocation feed is lost: the caches stop answering (every
    /// request reads the store) until it reconnects. Returns whether it was
    /// connected.
    pub fn feed_lost(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|shared| shared.feed.set_lost())
    }

    /// Refuses a session or token decision while this node cannot prove it
    /// knows every revocation and `revocation_fail_mode` is `closed`.
    ///
    /// # Errors
    /// [`RevocationsUnproven`], which callers answer with 503.
    pub(crate) fn decisions_allowed(&self) -> Result<(), RevocationsUnproven> {
        match &self.shared {
            Some(shared)
                if shared.fail_mode == RevocationFailMode::Closed && !shared.feed.is_proven() =>
            {
                Err(RevocationsUnproven {
                    max_staleness: shared.feed.max_staleness(),
                })
            }
            _ => Ok(()),
        }
    }

    /// A session ended on another node (from the feed).
    pub fn ended_elsewhere(&self, sid: SessionId, until: time::OffsetDateTime) {
        self.revocations.insert([(sid, until)]);
        if let Some(shared) = &self.shared {
            shared.cache.remove(sid);
        }
        if let Some(p) = &self.principals {
            p.remove(sid);
        }
    }

    /// The shared-session state, when sessions live in Redis.
    pub fn shared_sessions(&self) -> Option<&SharedSessions> {
        self.shared.as_ref()
    }

    /// The signing keys.
    pub fn keys(&self) -> &KeyManager {
        &self.keys
    }

    /// Rotates the signing key (see [`KeyManager::rotate`]) and records
    /// who did. Returns the new kid.
    ///
    /// # Errors
    /// As [`KeyManager::rotate`].
    pub async fn rotate_signing_key(&self, actor: audit::Actor) -> anyhow::Result<String> {
        let kid = self.keys.rotate().await?;
        let event = self
            .event(audit::EventType::KeyRotated, actor)
            .detail("kid", kid.as_str())
            .detail("alg", keys::alg_name(self.keys.ring().alg));
        self.record_one(event).await;
        Ok(kid)
    }

    /// The Prometheus text exposition of this node's metrics. The
    /// live-sessions gauge asks the session store (within `within`; on
    /// failure or timeout it keeps its last value, and the failure is
    /// logged); the other gauges are read from memory.
    pub async fn render_metrics(&self, within: Duration) -> String {
        let counted = tokio::time::timeout(
            within,
            self.stores.sessions.count_sessions(self.clock.now()),
        )
        .await;
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
        self.metrics.render(crate::metrics::Gauges {
            live_sessions,
            revoked_sessions: self.revocations.len(),
            hash_queue_depth: self.hasher.queue_depth(),
        })
    }

    /// The metrics recorder, for the HTTP layer's request counts.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Adds the store's revocations (from other processes) to the set.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn reload_revocations(&self) -> anyhow::Result<()> {
        let now = self.clock.now();
        self.revocations
            .insert(self.stores.sessions.revocations(now).await?);
        Ok(())
    }

    /// The ended sessions whose tokens are refused.
    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// When a session ended now stops mattering: no token issued before now
    /// outlives this, leeway included.
    pub(crate) fn revoke_until(&self) -> time::OffsetDateTime {
        self.clock.now() + self.tokens.access_token_ttl + self.tokens.leeway
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Asks every store, each within `within`, and reports.
    pub async fn readiness(&self, within: Duration) -> Readiness {
        let (database, sessions) = tokio::join!(
            answer_within(within, self.stores.users.ping()),
            answer_within(within, self.stores.sessions.reachable()),
        );
        let shared = self.shared.as_ref();
        Readiness {
            database,
            redis: shared.map(|_| sessions),
            feed: shared.map(|s| FeedReport {
                connected: s.feed.is_connected(),
                proven: s.feed.is_proven(),
                proven_at: s.feed.proven_at(),
                max_staleness: s.feed.max_staleness(),
            }),
            fail_mode: shared.map(|s| s.fail_mode),
        }
    }

    /// The throttling key of one (account, client IP) pair.
    fn throttle_key(email: &str, ip: Option<IpAddr>) -> String {
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        format!("login:{ip}:{email}")
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
    //! An `Auth` on a temporary SQLite file with a clock the test drives.

    use std::sync::Arc;

    use super::{Auth, Hasher, KeyManager, Policy, TokenSettings};
    use crate::clock::Clock;
    use crate::config::{Config, DatabaseUrl};

    pub const ISSUER: &str = "https://auth.test";

    pub async fn auth(
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut Config),
    ) -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            database_url: DatabaseUrl::Sqlite(format!(
                "sqlite://{}",
                dir.path().join("t.db").display()
            )),
            ..Config::default()
        };
        configure(&mut config);
        let stores = crate::store::open(&config.database_url)
            .await
            .expect("store");
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
        let auth = Auth::new(
            stores,
            Hasher::new(2, 64).expect("hasher"),
            clock,
            Policy::from_config(&config),
            tokens,
            keys,
        )
        .await
        .expect("auth");
        (auth, dir)
    }
}
