//! The domain: accounts, password login, session lifecycle and throttling,
//! over the store traits. Nothing here knows about HTTP.

pub mod accounts;
pub mod password;
pub mod sessions;
pub mod types;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, Registration};
use crate::store::Stores;

pub use password::{HashError, Hasher};

/// The limits that shape sessions and login throttling.
#[derive(Debug, Clone)]
pub struct Policy {
    pub registration: Registration,
    pub session_idle_timeout: Duration,
    pub session_absolute_timeout: Duration,
    pub login_max_failures: u32,
    pub login_window: Duration,
}

impl Policy {
    /// The policy a configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
            registration: config.registration,
            session_idle_timeout: config.session_idle_timeout,
            session_absolute_timeout: config.session_absolute_timeout,
            login_max_failures: config.login_max_failures,
            login_window: config.login_window,
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
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(stores: Stores, hasher: Hasher, clock: Arc<dyn Clock>, policy: Policy) -> Self {
        Self {
            stores,
            hasher,
            clock,
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Answers when every store answers.
    ///
    /// # Errors
    /// The first store error.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.stores.users.ping().await
    }

    /// The throttling key of one (account, client IP) pair.
    fn throttle_key(email: &str, ip: Option<IpAddr>) -> String {
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        format!("login:{ip}:{email}")
    }
}
