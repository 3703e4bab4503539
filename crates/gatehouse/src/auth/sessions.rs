//! Session lifecycle: password login (with throttling), recognising a
//! session from its secret, idle and absolute expiry, listing and ending.

use std::time::Duration;

use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::audit::{Actor, Ending, EventType};
use super::types::{Email, Password, SecretHash, SessionId, SessionSecret, UserId};
use super::{Auth, ClientMeta, HashError};
use crate::config::RevocationFailMode;
use crate::store::{SessionRecord, UserRecord};

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown email, wrong password or disabled account: deliberately one
    /// case, so the answer tells an attacker nothing.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A login budget is spent: this account from this client, this
    /// client's network, or this account (`auth::throttle`).
    #[error("too many failed logins")]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<HashError> for LoginError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// A session just created: the record and its secret, which exists nowhere
/// else and must reach the client exactly once.
#[derive(Debug)]
pub struct NewSession {
    pub record: SessionRecord,
    pub secret: SessionSecret,
}

/// How a session is looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionKey<'a> {
    Secret(&'a SecretHash),
    Id(SessionId),
}

/// Where a session record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Store,
    /// A fresh cache entry, read from the store at `fetched_at`.
    Cache {
        fetched_at: OffsetDateTime,
    },
    /// A cache entry standing in for a store that could not answer.
    Stale {
        fetched_at: OffsetDateTime,
    },
}

/// A recognised, live session and its user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserRecord,
    pub session: SessionRecord,
}

impl Auth {
    /// When a session ends for lack of use, given its last recorded use.
    pub fn idle_expiry(&self, session: &SessionRecord) -> OffsetDateTime {
        (session.last_seen_at + self.policy.session_idle_timeout).min(session.expires_at)
    }

    pub(crate) fn is_live(&self, session: &SessionRecord, now: OffsetDateTime) -> bool {
        now < session.expires_at && now < self.idle_expiry(session)
    }

    /// Checks a password for an email and, when it matches an enabled
    /// account, creates a new session (never reusing one: no fixation).
    ///
    /// Throttling is per (account, client IP): once `login_max_failures`
    /// attempts without a success fall within `login_window`, every further
    /// attempt is refused, even with the right password, until the window
    /// closes; the client network's and the account's failure budgets apply
    /// too (`auth::throttle`). Unknown accounts are counted and hashed like
    /// known ones.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        client: &ClientMeta,
    ) -> Result<(UserRecord, NewSession), LoginError> {
        let user = self.check_password(email, password, client.ip).await?;
        let session = self.start_session(&user, client).await?;
        self.metrics.logins_succeeded.increment(1);
        let mut event = self
            .event(EventType::LoginSucceeded, Actor::User(user.id))
            .user(user.id)
            .session(session.record.id)
            .ip(client.ip);
        if let Some(ua) = &client.user_agent {
            event = event.detail("user_agent", ua.as_str());
        }
        self.record_one(event).await;
        Ok((user, session))
    }

    /// The throttled password check shared by every password login path.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn check_password(
        &self,
        email: &str,
        password: Password,
        ip: Option<std::net::IpAddr>,
    ) -> Result<UserRecord, LoginError> {
        let parsed = Email::parse(email).ok();
        // Unparseable emails still get a key of their own (bounded length),
        // so malformed guesses are throttled too.
        let normalised = parsed.as_ref().map_or_else(
            || {
                email
                    .trim()
                    .to_lowercase()
                    .chars()
                    .take(254)
                    .collect::<String>()
            },
            |e| e.as_str().to_owned(),
        );
        // Count the attempt before checking the password, not after: checked
        // afterwards, a burst of concurrent guesses would all pass the gate
        // before the first failure was recorded.
        let admitted = self
            .admit_password_attempt(&normalised, parsed.as_ref(), ip)
            .await?;
        let (user, matched) = match self.verify_password(parsed.as_ref(), password).await {
            Ok(checked) => checked,
            Err(e) => {
                self.attempt_unchecked(admitted).await;
                return Err(e);
            }
        };
        match user {
            Some(user) if matched && !user.disabled => {
                self.attempt_matched(admitted).await?;
                Ok(user)
            }
            user => {
                self.metrics.logins_failed.increment(1);
                // The account when it exists, never the email typed: people
                // type passwords into the email field.
                let mut event = self.event(EventType::LoginFailed, Actor::Anonymous).ip(ip);
                if let Some(user) = user {
                    let reason = if user.disabled && matched {
                        "user_disabled"
                    } else {
                        "wrong_password"
                    };
                    event = event.user(user.id).detail("reason", reason);
                } else {
                    event = event.detail("reason", "unknown_account");
                }
                self.record_one(event).await;
                Err(LoginError::InvalidCredentials)
            }
        }
    }

    /// The account of `email`, if any, and whether `password` is its
    /// password (an unknown account is verified against a dummy hash, so it
    /// costs the same).
    async fn verify_password(
        &self,
        email: Option<&Email>,
        password: Password,
    ) -> Result<(Option<UserRecord>, bool), LoginError> {
        let user = match email {
            Some(e) => self.stores.users.user_by_email(e).await?,
            None => None,
        };
        let matched = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        Ok((user, matched))
    }

    /// Creates a session for an authenticated user, then ends their oldest
    /// live sessions beyond `max_sessions_per_user`, as any ending goes.
    ///
    /// # Errors
    /// When the OS RNG or the store fails.
    pub async fn start_session(
        &self,
        user: &UserRecord,
        client: &ClientMeta,
    ) -> anyhow::Result<NewSession> {
        let secret =
            SessionSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let now = self.clock.now();
        let record = SessionRecord {
            id: SessionId::new(),
            user_id: user.id,
            secret_hash: secret.hash(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.policy.session_absolute_timeout,
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
        };
        self.stores.sessions.insert_session(&record).await?;
        if let Some(shared) = &self.shared {
            shared.cache.put(record.clone(), now);
        }
        self.end_sessions_over_the_limit(user.id, record.id, now)
            .await?;
        Ok(NewSession { record, secret })
    }

    /// Ends the user's oldest live sessions (by creation) until at most
    /// `max_sessions_per_user` remain with `new` among them, each as any
    /// ending goes: revoked on every node at once, recorded as
    /// `session_ended` with reason `session_limit`. Sessions past their
    /// expiry are not counted (the sweeper deletes them).
    ///
    /// Counted after the insert, so of concurrent logins the last to read
    /// sees every new session: the limit may be passed for the moment
    /// between, never for good. A store failure here fails the login; the
    /// session just stored is then unknown to anyone and expires unused.
    async fn end_sessions_over_the_limit(
        &self,
        user_id: UserId,
        new: SessionId,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        // `new` is one of the allowed; the rest may fill the others.
        let others_allowed = (self.policy.max_sessions_per_user as usize).saturating_sub(1);
        // Oldest first, as the store returns them.
        let mut others = self.stores.sessions.sessions_of(user_id).await?;
        others.retain(|s| s.id != new && self.is_live(s, now));
        let excess = others.len().saturating_sub(others_allowed);
        for old in &others[..excess] {
            self.end_session(user_id, old.id, Actor::System, Ending::SessionLimit)
                .await?;
        }
        Ok(())
    }

    /// Recognises a session from its secret: `None` when unknown, expired
    /// (idle or absolute) or its user is gone or disabled.
    ///
    /// Records the use when the stored `last_seen_at` is older than the
    /// touch interval. With sessions in Redis, a session this node read
    /// moments ago is answered from its cache; while Redis cannot answer,
    /// `revocation_fail_mode = "stale"` answers from the cache too.
    ///
    /// # Errors
    /// Store failures, which callers must answer with 503, not 401.
    pub async fn authenticate_session(
        &self,
        secret: &SessionSecret,
    ) -> anyhow::Result<Option<Authenticated>> {
        self.decisions_allowed()?;
        let hash = secret.hash();
        let now = self.clock.now();
        let stale_ok = self
            .shared
            .as_ref()
            .is_some_and(|s| s.fail_mode == RevocationFailMode::Stale);
        let Some((mut session, source)) = self
            .find_session(SessionKey::Secret(&hash), now, stale_ok)
            .await?
        else {
            return Ok(None);
        };
        // The index found the row by hash; compare once more in constant
        // time so no backend's lookup semantics can widen the match.
        if !bool::from(session.secret_hash.0.ct_eq(&hash.0)) {
            return Ok(None);
        }
        if !self.is_live(&session, now) {
            // Only a record read from the store gets here (a cached one
            // that looks expired is read again first).
            self.end_session(session.user_id, session.id, Actor::System, Ending::Expired)
                .await?;
            return Ok(None);
        }
        let Some(user) = self.stores.users.user_by_id(session.user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        if now - session.last_seen_at >= self.policy.touch_interval() {
            match self.stores.sessions.touch_session(session.id, now).await {
                Ok(()) => {
                    session.last_seen_at = now;
                    if let Some(shared) = &self.shared {
                        let fetched_at = match source {
                            Source::Store => now,
                            Source::Cache { fetched_at } | Source::Stale { fetched_at } => {
                                fetched_at
                            }
                        };
                        shared.cache.put(session.clone(), fetched_at);
                    }
                }
                // Already answering from the cache for want of the store:
                // the use goes unrecorded rather than refused.
                Err(e) if stale_ok => {
                    tracing::debug!(error = format!("{e:#}"), "recording a session use failed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(Authenticated { user, session }))
    }

    /// Finds a session by secret hash or id: from the local cache when the
    /// entry is fresh, the revocation feed following and the record still
    /// looks live; else from the store. When the store fails and `stale_ok`,
    /// a usable cached entry stands in. A session in the revocation set is
    /// `None` whatever the cache holds.
    ///
    /// # Errors
    /// Store failures (without a usable stand-in).
    pub(crate) async fn find_session(
        &self,
        key: SessionKey<'_>,
        now: OffsetDateTime,
        stale_ok: bool,
    ) -> anyhow::Result<Option<(SessionRecord, Source)>> {
        let Some(shared) = &self.shared else {
            let found = match key {
                SessionKey::Secret(hash) => self.stores.sessions.session_by_secret(hash).await?,
                SessionKey::Id(id) => self.stores.sessions.session_by_id(id).await?,
            };
            return Ok(found.map(|s| (s, Source::Store)));
        };
        let cache = &shared.cache;
        let cached = match key {
            SessionKey::Secret(hash) => cache.by_hash(hash),
            SessionKey::Id(id) => cache.by_id(id),
        };
        if let Some(entry) = &cached
            && self.revocations.is_revoked(entry.record.id)
        {
            // Ended (perhaps on another node): the feed that announced it
            // also filled the set, so the set vetoes the entry.
            cache.remove(entry.record.id);
            return Ok(None);
        }
        // A record that looks expired may only be stale in `last_seen_at`
        // (another node recorded a later use): the store decides.
        let cached = cached.filter(|e| self.is_live(&e.record, now));
        if let Some(entry) = &cached
            && shared.feed.is_following()
            && cache.is_fresh(entry, now)
        {
            cache.count_hit();
            return Ok(Some((
                entry.record.clone(),
                Source::Cache {
                    fetched_at: entry.fetched_at,
                },
            )));
        }
        cache.count_miss();
        let found = match key {
            SessionKey::Secret(hash) => self.stores.sessions.session_by_secret(hash).await,
            SessionKey::Id(id) => self.stores.sessions.session_by_id(id).await,
        };
        match found {
            Ok(Some(record)) => {
                cache.put(record.clone(), now);
                Ok(Some((record, Source::Store)))
            }
            Ok(None) => {
                if let Some(entry) = &cached {
                    cache.remove(entry.record.id);
                }
                Ok(None)
            }
            Err(e) => match cached {
                Some(entry) if stale_ok && cache.is_usable_stale(&entry, now) => {
                    cache.count_stale();
                    tracing::debug!(
                        error = format!("{e:#}"),
                        session_id = %entry.record.id,
                        "session store unavailable: answering from the local cache"
                    );
                    Ok(Some((
                        entry.record.clone(),
                        Source::Stale {
                            fetched_at: entry.fetched_at,
                        },
                    )))
                }
                _ => Err(e),
            },
        }
    }

    /// The user's live sessions, oldest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn live_sessions(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        let now = self.clock.now();
        let mut sessions = self.stores.sessions.sessions_of(user_id).await?;
        sessions.retain(|s| self.is_live(s, now));
        Ok(sessions)
    }

    /// Ends one of the user's sessions; `false` when the user has no such
    /// session (whether it does not exist or is someone else's). `actor`
    /// and `why` go to the audit trail.
    ///
    /// # Errors
    /// Store failures.
    pub async fn end_session(
        &self,
        user_id: UserId,
        id: SessionId,
        actor: Actor,
        why: Ending,
    ) -> anyhow::Result<bool> {
        let until = self.revoke_until();
        let ended = self
            .stores
            .sessions
            .delete_session(id, user_id, until)
            .await?;
        if ended {
            // Before the caller answers: an ended session's tokens are
            // refused as soon as the request that ended it returns.
            self.revocations.insert([(id, until)]);
            if let Some(shared) = &self.shared {
                shared.cache.remove(id);
            }
            self.record_one(self.ending_event(user_id, id, actor, why))
                .await;
        }
        Ok(ended)
    }

    /// Ends every session of the user except `keep`. `actor` and `why` go
    /// to the audit trail, one event per ended session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn end_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        actor: Actor,
        why: Ending,
    ) -> anyhow::Result<Vec<SessionId>> {
        let until = self.revoke_until();
        let ended = self
            .stores
            .sessions
            .delete_sessions_of(user_id, keep, until)
            .await?;
        self.revocations.insert(ended.iter().map(|id| (*id, until)));
        if let Some(shared) = &self.shared {
            for id in &ended {
                shared.cache.remove(*id);
            }
        }
        let events = ended
            .iter()
            .map(|id| self.ending_event(user_id, *id, actor, why))
            .collect();
        self.record(events).await;
        Ok(ended)
    }

    /// The audit event of one ended session.
    fn ending_event(
        &self,
        user_id: UserId,
        id: SessionId,
        actor: Actor,
        why: Ending,
    ) -> super::audit::AuditEvent {
        if why == Ending::Logout {
            return self
                .event(EventType::Logout, actor)
                .user(user_id)
                .session(id);
        }
        self.event(EventType::SessionEnded, actor)
            .user(user_id)
            .session(id)
            .detail("reason", why.as_str())
    }

    /// Deletes sessions that have expired; run periodically.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_expired_sessions(&self) -> anyhow::Result<u64> {
        let now = self.clock.now();
        self.revocations.prune(now);
        self.stores
            .sessions
            .delete_expired(now, self.policy.session_idle_timeout)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::clock::{Clock as _, ManualClock};

    async fn auth_with_clock() -> (Auth, Arc<ManualClock>, tempfile::TempDir) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) = crate::auth::test_support::auth(clock.clone(), |c| {
            c.session_idle_timeout = Duration::from_secs(600);
            c.session_absolute_timeout = Duration::from_secs(3600);
            c.login_max_failures = 3;
            c.login_window = Duration::from_secs(900);
        })
        .await;
        (auth, clock, dir)
    }

    async fn logged_in(auth: &Auth) -> NewSession {
        auth.register(
            "a@example.com",
            "a long passphrase".into(),
            vec![],
            crate::auth::accounts::Registrar::Operator,
        )
        .await
        .expect("register");
        login_once(auth).await
    }

    /// A password login of the user `logged_in` registered.
    async fn login_once(auth: &Auth) -> NewSession {
        let (_, s) = auth
            .login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &ClientMeta::default(),
            )
            .await
            .expect("login");
        s
    }

    #[tokio::test]
    async fn idle_timeout_ends_an_unused_session_and_use_extends_it() {
        let (auth, clock, _dir) = auth_with_clock().await;
        let s = logged_in(&auth).await;
        // Used every 5 minutes, a 10-minute idle timeout never fires.
        for _ in 0..5 {
            clock.advance(Duration::from_secs(300));
            assert!(
                auth.authenticate_session(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        clock.advance(Duration::from_secs(601));
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_none()
        );
    }

    #[tokio::test]
    async fn absolute_timeout_ends_even_a_busy_session() {
        let (auth, clock, _dir) = auth_with_clock().await;
        let s = logged_in(&auth).await;
        for _ in 0..12 {
            clock.advance(Duration::from_secs(300));
            let _ = auth.authenticate_session(&s.secret).await.expect("ok");
        }
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(
            auth.live_sessions(s.record.user_id)
                .await
                .expect("ok")
                .is_empty()
        );
    }

    /// A password login of the user `logged_in` registered, then a second
    /// on the clock, so that each session is younger than the last.
    async fn login_again(auth: &Auth, clock: &ManualClock) -> NewSession {
        let s = login_once(auth).await;
        clock.advance(Duration::from_secs(1));
        s
    }

    /// The `session_ended` events about the user: session, actor, reason.
    async fn endings(auth: &Auth, user_id: UserId) -> Vec<(Option<SessionId>, Actor, String)> {
        let page = auth
            .audit_events(Some(user_id), Some(EventType::SessionEnded), None, 10)
            .await
            .expect("read");
        page.events
            .iter()
            .map(|e| {
                let reason = e.details["reason"].as_str().unwrap_or_default();
                (e.session_id, e.actor, reason.to_owned())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_login_past_the_limit_ends_the_oldest_live_sessions_only() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = crate::auth::test_support::auth(clock.clone(), |c| {
            c.session_idle_timeout = Duration::from_secs(600);
            c.max_sessions_per_user = 2;
        })
        .await;
        let idle = logged_in(&auth).await;
        let user_id = idle.record.user_id;
        // Idle past its timeout, not yet swept: it no longer counts.
        clock.advance(Duration::from_secs(601));
        let oldest = login_again(&auth, &clock).await;
        let newer = login_again(&auth, &clock).await;
        assert_eq!(auth.live_sessions(user_id).await.expect("ok").len(), 2);
        assert!(endings(&auth, user_id).await.is_empty(), "two live fit");

        let newest = login_again(&auth, &clock).await;

        let live: Vec<SessionId> = auth
            .live_sessions(user_id)
            .await
            .expect("ok")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(live, [newer.record.id, newest.record.id]);
        assert!(auth.revocations.is_revoked(oldest.record.id));
        assert!(!auth.revocations.is_revoked(idle.record.id));
        assert_eq!(
            endings(&auth, user_id).await,
            [(
                Some(oldest.record.id),
                Actor::System,
                "session_limit".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn last_seen_is_written_only_after_the_touch_interval() {
        let (auth, clock, _dir) = auth_with_clock().await;
        let s = logged_in(&auth).await;
        let created = s.record.last_seen_at;
        clock.advance(Duration::from_secs(59));
        let a = auth
            .authenticate_session(&s.secret)
            .await
            .expect("ok")
            .expect("live");
        assert_eq!(
            a.session.last_seen_at, created,
            "no write inside the interval"
        );
        clock.advance(Duration::from_secs(2));
        let a = auth
            .authenticate_session(&s.secret)
            .await
            .expect("ok")
            .expect("live");
        assert_eq!(a.session.last_seen_at, clock.now());
        let stored = auth.live_sessions(s.record.user_id).await.expect("ok");
        assert_eq!(stored[0].last_seen_at, clock.now());
    }

    #[tokio::test]
    async fn throttling_window_closes_by_the_clock() {
        let (auth, clock, _dir) = auth_with_clock().await;
        logged_in(&auth).await;
        let c = ClientMeta::default();
        for _ in 0..3 {
            let e = auth
                .login("a@example.com", Password::new("wrong".into()), &c)
                .await;
            assert!(matches!(e, Err(LoginError::InvalidCredentials)));
        }
        let e = auth
            .login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &c,
            )
            .await;
        assert!(matches!(e, Err(LoginError::Throttled { .. })));
        clock.advance(Duration::from_secs(901));
        assert!(
            auth.login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &c
            )
            .await
            .is_ok()
        );
    }

    /// An `Auth` with the shared-session cache (over SQLite: the cache
    /// logic does not depend on the store) and its feed connected.
    async fn shared_auth() -> (Auth, Arc<ManualClock>, tempfile::TempDir) {
        shared_auth_in(
            crate::config::RevocationFailMode::Closed,
            Duration::from_secs(5),
        )
        .await
    }

    async fn shared_auth_in(
        mode: crate::config::RevocationFailMode,
        max_staleness: Duration,
    ) -> (Auth, Arc<ManualClock>, tempfile::TempDir) {
        let (auth, clock, dir) = auth_with_clock().await;
        let auth = auth.with_shared_sessions(Duration::from_secs(10), mode, max_staleness);
        auth.feed_connected(std::time::Instant::now());
        (auth, clock, dir)
    }

    fn stats(auth: &Auth) -> crate::auth::CacheStats {
        auth.shared_sessions().expect("shared").cache_stats()
    }

    #[tokio::test]
    async fn the_cache_answers_while_fresh_then_reads_the_store() {
        let (auth, clock, _dir) = shared_auth().await;
        let s = logged_in(&auth).await;
        for _ in 0..3 {
            assert!(
                auth.authenticate_session(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (3, 0));
        clock.advance(Duration::from_secs(10));
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_some()
        );
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (3, 1));
        // Read again: fresh again.
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_some()
        );
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (4, 1));
    }

    #[tokio::test]
    async fn a_revoked_session_is_refused_whatever_the_cache_holds() {
        let (auth, _clock, _dir) = shared_auth().await;
        let s = logged_in(&auth).await;
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_some()
        );
        // The ending is known (as from another node's message) while a
        // racing read re-cached the record: the set vetoes the entry.
        auth.revocations
            .insert([(s.record.id, auth.clock.now() + Duration::from_secs(300))]);
        auth.shared_sessions()
            .expect("shared")
            .cache
            .put(s.record.clone(), auth.clock.now());
        assert!(
            auth.authenticate_session(&s.secret)
                .await
                .expect("ok")
                .is_none()
        );
    }

    #[tokio::test]
    async fn without_the_feed_the_cache_does_not_answer() {
        let (auth, _clock, _dir) = shared_auth().await;
        let s = logged_in(&auth).await;
        assert!(auth.feed_lost());
        assert!(!auth.feed_lost(), "reported once");
        for _ in 0..2 {
            assert!(
                auth.authenticate_session(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (0, 2));
        // Reconnecting empties the cache (Redis may have lost data).
        auth.feed_connected(std::time::Instant::now());
        assert_eq!(stats(&auth).entries, 0);
    }

    #[tokio::test]
    async fn a_silent_feed_refuses_decisions_in_closed_mode_only() {
        use crate::config::RevocationFailMode::{Closed, Stale};
        let staleness = Duration::from_millis(150);
        for mode in [Closed, Stale] {
            let (auth, _clock, _dir) = shared_auth_in(mode, staleness).await;
            let s = logged_in(&auth).await;
            assert!(
                auth.authenticate_session(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
            let hits = stats(&auth).hits;
            // No heartbeat answers: the proof ages past the bound.
            tokio::time::sleep(staleness + Duration::from_millis(30)).await;
            let got = auth.authenticate_session(&s.secret).await;
            match mode {
                Closed => {
                    let e = got.expect_err("closed mode cannot decide");
                    assert!(e.is::<crate::auth::RevocationsUnproven>(), "{e:#}");
                }
                // The store still answers; stale mode reads it.
                Stale => assert!(got.expect("stale mode decides").is_some()),
            }
            assert_eq!(
                stats(&auth).hits,
                hits,
                "a silent feed keeps the cache quiet"
            );
            // A heartbeat answered proves the set again.
            auth.shared_sessions()
                .expect("shared")
                .feed()
                .prove(std::time::Instant::now());
            assert!(
                auth.authenticate_session(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
    }

    #[tokio::test]
    async fn sweep_deletes_only_expired_sessions() {
        let (auth, clock, _dir) = auth_with_clock().await;
        let old = logged_in(&auth).await;
        clock.advance(Duration::from_secs(601));
        let (_, fresh) = auth
            .login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &ClientMeta::default(),
            )
            .await
            .expect("login");
        assert_eq!(auth.sweep_expired_sessions().await.expect("sweep"), 1);
        assert!(
            auth.authenticate_session(&old.secret)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(
            auth.authenticate_session(&fresh.secret)
                .await
                .expect("ok")
                .is_some()
        );
    }
}
