//! Throttling of password guessing and of registration: the budgets, the
//! keys they are counted under, and the counting, through the
//! [`FailureCounter`](crate::store::FailureCounter) (in memory on one node,
//! shared by every node in PostgreSQL or Redis).
//!
//! A password attempt meets three budgets, each a fixed window of
//! `login_window`, in this order:
//!
//! 1. the client network's, `login_max_failures_per_ip` (spraying: one
//!    address, many accounts);
//! 2. the (account, client IP) pair's, `login_max_failures` (the contract's);
//! 3. the account's, `login_max_failures_per_account` (one account, many
//!    addresses). A client network that holds a live session of the account
//!    is not held by this one (its pair budget still applies), so a botnet
//!    cannot lock a user out of the networks they use.
//!
//! Each counts the attempt before the password is checked, so a burst of
//! concurrent guesses cannot pass a gate together. The pair's counts every
//! attempt and a success resets it (its contract). The network's and the
//! account's count failures: an attempt that a later budget refuses, that
//! matches, or that is never checked (a full hashing queue, a store error)
//! is taken back ([`FailureCounter::forgive`](crate::store::FailureCounter)).
//!
//! On one node the attempts of one pair take turns ([`Turns`]): an attempt
//! waits for the one in flight before it is counted, and the one before
//! has been settled by then (a success reset the pair's count, a failure
//! left it counted). So concurrent logins with the right password are all
//! let in, and concurrent guesses still get at most `login_max_failures`
//! password checks: each is counted before its check, as across nodes,
//! where attempts of one pair on different nodes do not wait for each
//! other and the count alone decides.
//!
//! Registration attempts are counted per client network within
//! `registration_window`, created or refused alike, before anything is
//! looked up or hashed: a taken email's 409 must not become a free oracle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::audit::{Actor, Audit, EventType};
use super::sessions::Sessions;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::client::client_network;
use crate::model::types::Email;
use crate::store::{Attempt, FailureCounter, UserStore};

/// Why an attempt was not admitted; each flow answers it in its own terms
/// (`LoginError`, `RegisterError`).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A budget is spent until `retry_after` from now.
    #[error("a budget is spent")]
    Throttled { retry_after: Duration },
    /// A counter cannot be written (fail closed).
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The budgets of password attempts and registrations.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    pub login_max_failures: u32,
    pub login_window: Duration,
    pub login_max_failures_per_ip: u32,
    pub login_max_failures_per_account: u32,
    pub registration_max_per_ip: u32,
    pub registration_window: Duration,
}

impl ThrottleLimits {
    /// The budgets a configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        Self {
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
        }
    }
}

/// The counting of password attempts and registrations.
pub struct Throttle {
    failures: Arc<dyn FailureCounter>,
    users: Arc<dyn UserStore>,
    sessions: Arc<Sessions>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    limits: ThrottleLimits,
    /// The pairs' attempts in flight on this node.
    turns: Arc<Turns>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Which budget refused an attempt: `details.limit` of `login_throttled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Ip,
    AccountIp,
    Account,
}

impl Limit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::AccountIp => "account_ip",
            Self::Account => "account",
        }
    }
}

/// A password attempt every budget let through, counted in each. Dropped
/// without [`Throttle::attempt_matched`] or [`Throttle::attempt_unchecked`], it
/// stays counted: a failure. The pair's next attempt on this node waits
/// until it is settled or dropped.
#[must_use = "an admitted attempt is settled once its password is checked"]
#[derive(Debug)]
pub(crate) struct Admitted {
    ip_key: String,
    pair_key: String,
    account_key: String,
    _turn: Turn,
}

/// One lock per key in use: the attempts of one (account, client IP) pair
/// on this node go one at a time. An entry lives while some attempt holds
/// or awaits it, so the map holds only the keys in flight.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    keys: Mutex<HashMap<String, Slot>>,
}

#[derive(Debug)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Attempts holding or awaiting `lock`.
    users: usize,
}

/// An attempt's turn: its key's lock, held until dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    // Declared first: released before the ticket gives up the slot.
    _guard: OwnedMutexGuard<()>,
    _ticket: Ticket,
}

/// A place among a key's users, given up on drop, also by an attempt that
/// stopped waiting (its request went away).
#[derive(Debug)]
struct Ticket {
    turns: Arc<Turns>,
    key: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut keys = self.turns.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = keys.get_mut(&self.key) {
            slot.users -= 1;
            if slot.users == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

impl Turns {
    /// Waits until no other attempt of `key` is in flight on this node.
    pub(crate) async fn take(self: &Arc<Self>, key: &str) -> Turn {
        let lock = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let slot = keys.entry(key.to_owned()).or_insert_with(|| Slot {
                lock: Arc::default(),
                users: 0,
            });
            slot.users += 1;
            slot.lock.clone()
        };
        let ticket = Ticket {
            turns: self.clone(),
            key: key.to_owned(),
        };
        let guard = lock.lock_owned().await;
        Turn {
            _guard: guard,
            _ticket: ticket,
        }
    }

    /// How many keys have an attempt in flight (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Throttle {
    pub fn new(
        failures: Arc<dyn FailureCounter>,
        users: Arc<dyn UserStore>,
        sessions: Arc<Sessions>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        limits: ThrottleLimits,
    ) -> Self {
        Self {
            failures,
            users,
            sessions,
            audit,
            metrics,
            clock,
            limits,
            turns: Arc::default(),
        }
    }

    /// The throttling key of one (account, client IP) pair.
    fn pair_key(email: &str, ip: Option<IpAddr>) -> String {
        let ip = ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        format!("login:{ip}:{email}")
    }

    /// Counts a password attempt for `normalised` (the email as typed,
    /// normalised) from `ip` against every login budget, in order, and
    /// refuses it with the first one spent. Called before anything is
    /// hashed. Waits first for the pair's attempt in flight on this node,
    /// if any, to be settled.
    ///
    /// # Errors
    /// [`Refused::Throttled`] with the refusing window's time left;
    /// [`Refused::Store`] when a counter cannot be written (fail closed).
    pub(crate) async fn admit_password_attempt(
        &self,
        normalised: &str,
        parsed: Option<&Email>,
        ip: Option<IpAddr>,
    ) -> Result<Admitted, Refused> {
        let pair_key = Self::pair_key(normalised, ip);
        let turn = self.turns.take(&pair_key).await;
        let p = &self.limits;
        let failures = &self.failures;
        let now = self.clock.now();
        let ip_key = format!("login-ip:{}", client_network(ip));
        let per_ip = failures.hit(&ip_key, p.login_window, now).await?;
        if per_ip.count > p.login_max_failures_per_ip {
            // Refused first and cheaply: a sprayer's further guesses cost
            // one counter write, no lookup and no new key.
            return Err(self
                .login_refused(Limit::Ip, per_ip, p.login_max_failures_per_ip, None, ip)
                .await);
        }
        let pair = failures.hit(&pair_key, p.login_window, now).await?;
        if pair.count > p.login_max_failures {
            failures.forgive(&ip_key, now).await?;
            return Err(self
                .login_refused(Limit::AccountIp, pair, p.login_max_failures, parsed, ip)
                .await);
        }
        let account_key = format!("login-account:{normalised}");
        let account = failures.hit(&account_key, p.login_window, now).await?;
        if account.count > p.login_max_failures_per_account
            && !self.holds_a_session_from(parsed, ip).await?
        {
            failures.forgive(&ip_key, now).await?;
            return Err(self
                .login_refused(
                    Limit::Account,
                    account,
                    p.login_max_failures_per_account,
                    parsed,
                    ip,
                )
                .await);
        }
        Ok(Admitted {
            ip_key,
            pair_key,
            account_key,
            _turn: turn,
        })
    }

    /// The admitted attempt's password matched an enabled account: the
    /// pair's count starts over, and the attempt is no failure.
    ///
    /// # Errors
    /// When a counter cannot be written.
    pub(crate) async fn attempt_matched(&self, admitted: Admitted) -> anyhow::Result<()> {
        let failures = &self.failures;
        let now = self.clock.now();
        failures.reset(&admitted.pair_key).await?;
        failures.forgive(&admitted.ip_key, now).await?;
        failures.forgive(&admitted.account_key, now).await
    }

    /// The admitted attempt proved something right but completed no login
    /// (a right password awaiting its second step, a right code while
    /// signed in): it is no failure, so it is taken back from every
    /// budget, and no earlier failure is forgotten (only a completed login
    /// resets the pair's count).
    ///
    /// # Errors
    /// When a counter cannot be written.
    pub(crate) async fn attempt_passed(&self, admitted: Admitted) -> anyhow::Result<()> {
        let failures = &self.failures;
        let now = self.clock.now();
        for key in [&admitted.pair_key, &admitted.ip_key, &admitted.account_key] {
            failures.forgive(key, now).await?;
        }
        Ok(())
    }

    /// The admitted attempt's password was never checked (a full hashing
    /// queue, a store error): it is no failure. Best effort, since the
    /// request fails anyway; a counter left high errs against the client.
    pub(crate) async fn attempt_unchecked(&self, admitted: Admitted) {
        let failures = &self.failures;
        let now = self.clock.now();
        for key in [&admitted.ip_key, &admitted.account_key] {
            if let Err(e) = failures.forgive(key, now).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "taking back an unchecked login attempt failed"
                );
            }
        }
    }

    /// Whether the account has a live session started from the client's
    /// network (an unknown email or address has none).
    async fn holds_a_session_from(
        &self,
        email: Option<&Email>,
        ip: Option<IpAddr>,
    ) -> anyhow::Result<bool> {
        let (Some(email), Some(_)) = (email, ip) else {
            return Ok(false);
        };
        let Some(user) = self.users.user_by_email(email).await? else {
            return Ok(false);
        };
        let network = client_network(ip);
        let sessions = self.sessions.live_sessions(user.id).await?;
        Ok(sessions.iter().any(|s| {
            s.ip.as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .is_some_and(|a| client_network(Some(a)) == network)
        }))
    }

    /// Counts a refusal by `limit` and records the first of its window;
    /// returns the error to answer with.
    async fn login_refused(
        &self,
        limit: Limit,
        attempt: Attempt,
        max: u32,
        email: Option<&Email>,
        ip: Option<IpAddr>,
    ) -> Refused {
        self.metrics.logins_throttled.increment(1);
        let throttled = Refused::Throttled {
            retry_after: attempt.window_left,
        };
        // The first refusal of a window is recorded, not every one: a
        // guessing script would otherwise write a row per request.
        if attempt.count != max.saturating_add(1) {
            return throttled;
        }
        let mut event = self
            .audit
            .event(EventType::LoginThrottled, Actor::Anonymous)
            .ip(ip)
            .detail("limit", limit.as_str())
            .detail("retry_after_seconds", attempt.window_left.as_secs());
        // The account when it exists, never the email typed.
        if let Some(email) = email {
            match self.users.user_by_email(email).await {
                Ok(Some(user)) => event = event.user(user.id),
                Ok(None) => {}
                Err(e) => return Refused::Store(e),
            }
        }
        self.audit.record_one(event).await;
        throttled
    }

    /// Counts a public registration attempt from `ip` and refuses it once
    /// the client network's budget is spent. Called before the input is
    /// judged, looked up or hashed.
    ///
    /// # Errors
    /// [`Refused::Throttled`] with the window's time left;
    /// [`Refused::Store`] when the counter cannot be written.
    /// Counts a passwordless passkey ceremony begun from `ip`'s network,
    /// and refuses it once the network holds `login_max_failures_per_ip`
    /// unfinished ones within `login_window`: each ceremony is a row in the
    /// store until it is finished or expires, so an anonymous client must
    /// not be able to create them without bound. A finished login gives
    /// its one back ([`Self::ceremony_finished`]).
    ///
    /// # Errors
    /// [`Refused::Throttled`] with the window's time left;
    /// [`Refused::Store`] when the counter cannot be written.
    pub(crate) async fn admit_ceremony(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let p = &self.limits;
        let key = format!("passkey-ip:{}", client_network(ip));
        let attempt = self
            .failures
            .hit(&key, p.login_window, self.clock.now())
            .await?;
        if attempt.count <= p.login_max_failures_per_ip {
            return Ok(());
        }
        self.metrics.logins_throttled.increment(1);
        Err(Refused::Throttled {
            retry_after: attempt.window_left,
        })
    }

    /// A passwordless login from `ip`'s network completed: one ceremony
    /// fewer counts against it. Best effort (the login stands).
    pub(crate) async fn ceremony_finished(&self, ip: Option<IpAddr>) {
        let key = format!("passkey-ip:{}", client_network(ip));
        if let Err(e) = self.failures.forgive(&key, self.clock.now()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "taking back a finished passkey ceremony failed"
            );
        }
    }

    /// Counts a request for a mailed link (a password reset) under the
    /// address's budget (`login_max_failures` within `login_window`, known
    /// address or not, so the answer is the same) and the client
    /// network's (`login_max_failures_per_ip`), before anything is looked
    /// up: at most that many mails reach one mailbox, and one client cannot
    /// mail the world.
    pub(crate) async fn admit_mail_request(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<(), Refused> {
        let p = &self.limits;
        let now = self.clock.now();
        for (key, limit) in [
            (
                format!("mail-ip:{}", client_network(ip)),
                p.login_max_failures_per_ip,
            ),
            (format!("mail:{}", email.as_str()), p.login_max_failures),
        ] {
            let attempt = self.failures.hit(&key, p.login_window, now).await?;
            if attempt.count > limit {
                return Err(Refused::Throttled {
                    retry_after: attempt.window_left,
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn admit_registration(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let p = &self.limits;
        let key = format!("register-ip:{}", client_network(ip));
        let attempt = self
            .failures
            .hit(&key, p.registration_window, self.clock.now())
            .await?;
        if attempt.count <= p.registration_max_per_ip {
            return Ok(());
        }
        self.metrics.registrations_throttled.increment(1);
        if attempt.count == p.registration_max_per_ip.saturating_add(1) {
            let event = self
                .audit
                .event(EventType::RegistrationThrottled, Actor::Anonymous)
                .ip(ip)
                .detail("retry_after_seconds", attempt.window_left.as_secs());
            self.audit.record_one(event).await;
        }
        Err(Refused::Throttled {
            retry_after: attempt.window_left,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::auth::accounts::Registrar;
    use crate::auth::accounts::{LoginError, RegisterError};
    use crate::auth::types::Password;
    use crate::auth::{ClientMeta, Services};
    use crate::clock::ManualClock;

    #[test]
    fn a_client_network_is_an_ipv4_address_or_an_ipv6_64() {
        let net = |s: &str| client_network(Some(s.parse().expect("ip")));
        assert_eq!(net("192.0.2.7"), "192.0.2.7");
        assert_eq!(net("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(net("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2::9"), net("2001:db8:1:2:ffff::1"));
        assert_ne!(net("2001:db8:1:2::9"), net("2001:db8:1:3::9"));
        assert_eq!(client_network(None), "-");
    }

    #[tokio::test]
    async fn attempts_of_one_key_take_turns_and_the_map_keeps_only_keys_in_flight() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("login:192.0.2.7:a@example.com").await;
        // Another key does not wait.
        let other = tokio::time::timeout(
            Duration::from_secs(5),
            turns.take("login:192.0.2.7:b@example.com"),
        )
        .await
        .expect("another key's turn comes at once");
        // The same key waits while the first is in flight...
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take("login:192.0.2.7:a@example.com").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a second attempt of one pair ran beside the first"
        );
        // ...and gets its turn once the first is settled.
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the turn came")
            .expect("the task ran");
        assert_eq!(turns.len(), 2);
        drop((second, other));
        assert_eq!(turns.len(), 0, "settled keys are forgotten");
        // A waiter that gives up (its request went away) leaves nothing.
        let held = turns.take("k").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), turns.take("k")).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(turns.len(), 0, "an abandoned wait left its key behind");
    }

    async fn auth(clock: Arc<ManualClock>) -> (Services, tempfile::TempDir) {
        crate::auth::test_support::services(clock, |c| {
            c.login_max_failures = 2;
            c.login_max_failures_per_ip = 3;
            c.login_max_failures_per_account = 3;
            c.login_window = Duration::from_secs(600);
            c.registration_max_per_ip = 2;
            c.registration_window = Duration::from_secs(3600);
        })
        .await
    }

    fn from(ip: &str) -> ClientMeta {
        ClientMeta {
            ip: Some(ip.parse().expect("ip")),
            user_agent: None,
        }
    }

    async fn login(
        auth: &Services,
        email: &str,
        password: &str,
        ip: &str,
    ) -> Result<(), LoginError> {
        auth.accounts
            .login(email, Password::new(password.into()), &from(ip))
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn the_per_ip_budget_lifts_when_its_window_closes() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = auth(clock.clone()).await;
        for i in 0..3 {
            let e = login(&auth, &format!("u{i}@example.com"), "wrong", "192.0.2.1").await;
            assert!(matches!(e, Err(LoginError::InvalidCredentials)), "{e:?}");
        }
        let e = login(&auth, "u9@example.com", "wrong", "192.0.2.1").await;
        let Err(LoginError::Throttled { retry_after }) = e else {
            panic!("{e:?}");
        };
        assert_eq!(retry_after, Duration::from_secs(600));

        clock.advance(Duration::from_secs(600));

        let e = login(&auth, "u9@example.com", "wrong", "192.0.2.1").await;
        assert!(matches!(e, Err(LoginError::InvalidCredentials)), "{e:?}");
    }

    #[tokio::test]
    async fn attempts_refused_by_a_later_budget_do_not_spend_the_per_ip_one() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = auth(clock).await;
        // Two failures lock the pair; the refusals after them are taken
        // back from the address's budget of three.
        for _ in 0..2 {
            let e = login(&auth, "a@example.com", "wrong", "192.0.2.1").await;
            assert!(matches!(e, Err(LoginError::InvalidCredentials)), "{e:?}");
        }
        for _ in 0..5 {
            let e = login(&auth, "a@example.com", "wrong", "192.0.2.1").await;
            assert!(matches!(e, Err(LoginError::Throttled { .. })), "{e:?}");
        }
        let e = login(&auth, "b@example.com", "wrong", "192.0.2.1").await;
        assert!(
            matches!(e, Err(LoginError::InvalidCredentials)),
            "the third failure is checked: {e:?}"
        );
        let e = login(&auth, "c@example.com", "wrong", "192.0.2.1").await;
        assert!(matches!(e, Err(LoginError::Throttled { .. })), "{e:?}");
    }

    #[tokio::test]
    async fn registration_counts_every_attempt_and_lifts_with_its_window() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = auth(clock.clone()).await;
        let ip = "192.0.2.1".parse().ok();
        let public = Registrar::Public { ip };
        let register = |email: &'static str, password: &'static str| {
            auth.accounts
                .register(email, password.into(), vec![], public)
        };
        assert!(register("a@example.com", "a long passphrase").await.is_ok());
        // A weak password is an attempt too.
        let e = register("b@example.com", "short").await;
        assert!(matches!(e, Err(RegisterError::Invalid(_))), "{e:?}");
        let e = register("c@example.com", "a long passphrase").await;
        let Err(RegisterError::Throttled { retry_after }) = e else {
            panic!("{e:?}");
        };
        assert_eq!(retry_after, Duration::from_secs(3600));
        // Operators and admins are not throttled.
        let by_operator = auth
            .accounts
            .register(
                "d@example.com",
                "a long passphrase".into(),
                vec![],
                Registrar::Operator,
            )
            .await;
        assert!(by_operator.is_ok(), "{by_operator:?}");

        clock.advance(Duration::from_secs(3600));

        assert!(register("c@example.com", "a long passphrase").await.is_ok());
    }
}
