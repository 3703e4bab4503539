//! Session lifecycle: starting a session, recognising one from its
//! secret, idle and absolute expiry, listing and ending, and the node's
//! knowledge of ended sessions.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::audit::{Actor, Audit, AuditEvent, Ending, EventType};
use crate::clock::Clock;
use crate::model::amr::Amr;
use crate::model::client::ClientMeta;
use crate::model::types::{CredentialId, SessionId, SessionSecret, UserId};
use crate::revocation::Revocations;
use crate::store::{SessionLink, SessionRecord, SessionStore, UserRecord, UserStore};

/// A session just created: the record and its secret, which exists nowhere
/// else and must reach the client exactly once.
#[derive(Debug)]
pub struct NewSession {
    pub record: SessionRecord,
    pub secret: SessionSecret,
}

/// A recognised, live session and its user.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserRecord,
    pub session: SessionRecord,
}

/// The limits that shape sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Most live sessions one user may have (`max_sessions_per_user`).
    pub max_per_user: u32,
    /// How long an ended session's tokens may still be presented: the
    /// access-token lifetime plus the leeway (what the revocation set must
    /// remember).
    pub revoke_for: Duration,
}

impl SessionLimits {
    /// How stale a session's stored `last_seen_at` may get before a use
    /// writes it: a minute or a tenth of the idle timeout, whichever is
    /// shorter, so the idle expiry is exact to within that bound without a
    /// database write on every request.
    pub fn touch_interval(&self) -> Duration {
        (self.idle_timeout / 10).min(Duration::from_secs(60))
    }
}

/// Sessions: the one service that starts, recognises and ends them, and
/// keeps the node's revocations in step with every ending.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    revocations: Arc<Revocations>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
    limits: SessionLimits,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        users: Arc<dyn UserStore>,
        revocations: Arc<Revocations>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
        limits: SessionLimits,
    ) -> Self {
        Self {
            store,
            users,
            revocations,
            audit,
            clock,
            limits,
        }
    }

    pub fn limits(&self) -> &SessionLimits {
        &self.limits
    }

    /// When a session ends for lack of use, given its last recorded use.
    pub fn idle_expiry(&self, session: &SessionRecord) -> OffsetDateTime {
        (session.last_seen_at + self.limits.idle_timeout).min(session.expires_at)
    }

    pub fn is_live(&self, session: &SessionRecord, now: OffsetDateTime) -> bool {
        now < session.expires_at && now < self.idle_expiry(session)
    }

    /// Whether a use at `now` is to be recorded: the record's
    /// `last_seen_at` is at least the touch interval old.
    pub fn use_due(&self, session: &SessionRecord, now: OffsetDateTime) -> bool {
        now - session.last_seen_at >= self.limits.touch_interval()
    }

    /// Creates a session for a user who proved who they are by `amr`, then
    /// ends their oldest live sessions beyond `max_sessions_per_user`, as
    /// any ending goes.
    ///
    /// # Errors
    /// When the OS RNG or the store fails.
    pub async fn start(
        &self,
        user: &UserRecord,
        client: &ClientMeta,
        amr: Amr,
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
            expires_at: now + self.limits.absolute_timeout,
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            amr,
            link: None,
        };
        self.store.insert_session(&record).await?;
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
        let others_allowed = (self.limits.max_per_user as usize).saturating_sub(1);
        // Oldest first, as the store returns them.
        let mut others = self.store.sessions_of(user_id).await?;
        // Client sessions live inside a browser session: they do not count.
        others.retain(|s| s.id != new && s.link.is_none() && self.is_live(s, now));
        let excess = others.len().saturating_sub(others_allowed);
        for old in &others[..excess] {
            self.end(user_id, old.id, Actor::System, Ending::SessionLimit)
                .await?;
        }
        Ok(())
    }

    /// Recognises a session from its secret: `None` when unknown, expired
    /// (idle or absolute) or its user is gone or disabled.
    ///
    /// Records the use when the stored `last_seen_at` is older than the
    /// touch interval. Where the session store is cached (Redis), a session
    /// this node read moments ago is answered from the cache, and while
    /// Redis cannot answer `revocation_fail_mode = "stale"` answers from it
    /// too (see `store::cache`).
    ///
    /// # Errors
    /// Store failures and [`crate::revocation::RevocationsUnproven`], which
    /// callers must answer with 503, not 401.
    pub async fn authenticate(
        &self,
        secret: &SessionSecret,
    ) -> anyhow::Result<Option<Authenticated>> {
        self.revocations.decisions_allowed()?;
        let hash = secret.hash();
        let now = self.clock.now();
        let Some(mut session) = self.store.session_by_secret(&hash).await? else {
            return Ok(None);
        };
        // The index found the row by hash; compare once more in constant
        // time so no backend's lookup semantics can widen the match.
        if !bool::from(session.secret_hash.0.ct_eq(&hash.0)) {
            return Ok(None);
        }
        if !self.is_live(&session, now) {
            self.end(session.user_id, session.id, Actor::System, Ending::Expired)
                .await?;
            return Ok(None);
        }
        let Some(user) = self.users.user_by_id(session.user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        if self.use_due(&session, now) {
            self.store.touch_session(session.id, now).await?;
            session.last_seen_at = now;
        }
        Ok(Some(Authenticated { user, session }))
    }

    /// The live session with this id, if it belongs to `user_id` (the
    /// bearer path's read: a token names both).
    ///
    /// # Errors
    /// Store failures.
    pub async fn live_by_id(
        &self,
        id: SessionId,
        user_id: UserId,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<SessionRecord>> {
        Ok(self
            .store
            .session_by_id(id)
            .await?
            .filter(|s| s.user_id == user_id && self.is_live(s, now)))
    }

    /// The user's live sign-ins (the device list), oldest first: every
    /// live session but client sessions.
    ///
    /// # Errors
    /// Store failures.
    pub async fn live_sessions(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        let now = self.clock.now();
        let mut sessions = self.store.sessions_of(user_id).await?;
        sessions.retain(|s| s.link.is_none() && self.is_live(s, now));
        Ok(sessions)
    }

    /// The user's live client sessions (what applications hold), oldest
    /// first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn client_sessions(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        let now = self.clock.now();
        let mut sessions = self.store.sessions_of(user_id).await?;
        sessions.retain(|s| s.link.is_some() && self.is_live(s, now));
        Ok(sessions)
    }

    /// Starts the client session an authorization code grants: for the
    /// user of `parent` (their browser session), as `link` says, under the
    /// id chosen when the code was spent. It proves what the browser
    /// session proved and ends when it ends, at the latest at its absolute
    /// expiry.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn start_client_session(
        &self,
        id: SessionId,
        parent: &SessionRecord,
        link: SessionLink,
        client: &ClientMeta,
    ) -> anyhow::Result<SessionRecord> {
        // A secret nobody is given: a client session is never a cookie's.
        let secret =
            SessionSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let now = self.clock.now();
        let record = SessionRecord {
            id,
            user_id: parent.user_id,
            secret_hash: secret.hash(),
            created_at: now,
            last_seen_at: now,
            expires_at: parent.expires_at,
            user_agent: client.user_agent.clone(),
            ip: client.ip.map(|ip| ip.to_string()),
            amr: parent.amr,
            link: Some(link),
        };
        self.store.insert_session(&record).await?;
        Ok(record)
    }

    /// Ends one of the user's sessions; `false` when the user has no such
    /// session (whether it does not exist or is someone else's). `actor`
    /// and `why` go to the audit trail.
    ///
    /// # Errors
    /// Store failures.
    pub async fn end(
        &self,
        user_id: UserId,
        id: SessionId,
        actor: Actor,
        why: Ending,
    ) -> anyhow::Result<bool> {
        let until = self.revoke_until();
        let ended = self.store.delete_session(id, user_id, until).await?;
        if ended {
            // Before the caller answers: an ended session's tokens are
            // refused as soon as the request that ended it returns.
            self.revocations.insert([(id, until)]);
            self.audit
                .record_one(self.ending_event(user_id, id, actor, why))
                .await;
        }
        // The client sessions started inside it end with it (also when it
        // was gone already: one started after it ended must not outlive it).
        self.end_children(user_id, id, actor).await?;
        Ok(ended)
    }

    /// Ends the client sessions whose browser session is `parent`.
    async fn end_children(
        &self,
        user_id: UserId,
        parent: SessionId,
        actor: Actor,
    ) -> anyhow::Result<()> {
        let children: Vec<SessionId> = self
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .filter(|s| s.link.as_ref().is_some_and(|l| l.parent_id == parent))
            .map(|s| s.id)
            .collect();
        let until = self.revoke_until();
        for child in children {
            if self.store.delete_session(child, user_id, until).await? {
                self.revocations.insert([(child, until)]);
                self.audit
                    .record_one(self.ending_event(
                        user_id,
                        child,
                        actor,
                        Ending::BrowserSessionEnded,
                    ))
                    .await;
            }
        }
        Ok(())
    }

    /// Ends every session of the user except `keep`. `actor` and `why` go
    /// to the audit trail, one event per ended session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn end_all_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        actor: Actor,
        why: Ending,
    ) -> anyhow::Result<Vec<SessionId>> {
        let until = self.revoke_until();
        let ended = self.store.delete_sessions_of(user_id, keep, until).await?;
        self.revocations.insert(ended.iter().map(|id| (*id, until)));
        let events = ended
            .iter()
            .map(|id| self.ending_event(user_id, *id, actor, why))
            .collect();
        self.audit.record(events).await;
        Ok(ended)
    }

    /// The audit event of one ended session.
    fn ending_event(
        &self,
        user_id: UserId,
        id: SessionId,
        actor: Actor,
        why: Ending,
    ) -> AuditEvent {
        if why == Ending::Logout {
            return self
                .audit
                .event(EventType::Logout, actor)
                .user(user_id)
                .session(id);
        }
        self.audit
            .event(EventType::SessionEnded, actor)
            .user(user_id)
            .session(id)
            .detail("reason", why.as_str())
    }

    /// Revokes the tokens obtained with a client credential (a client's
    /// secret rotated, or the client deleted), on this node at once and
    /// wherever ended sessions' tokens are refused: the same record, set
    /// and feed.
    ///
    /// # Errors
    /// Store failures (then nothing may be assumed revoked).
    pub async fn retire_credential(&self, id: CredentialId) -> anyhow::Result<()> {
        let until = self.revoke_until();
        self.store.revoke_credential(id, until).await?;
        self.revocations.insert([(id.revocation_key(), until)]);
        Ok(())
    }

    /// Whether tokens obtained with the credential are refused on this node.
    pub fn is_retired(&self, id: CredentialId) -> bool {
        self.revocations.is_revoked(id.revocation_key())
    }

    /// When a session ended now stops mattering: no token issued before now
    /// outlives this, leeway included.
    fn revoke_until(&self) -> OffsetDateTime {
        self.clock.now() + self.limits.revoke_for
    }

    /// Adds the store's revocations (from other processes) to the set.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn reload_revocations(&self) -> anyhow::Result<()> {
        let now = self.clock.now();
        self.revocations.insert(self.store.revocations(now).await?);
        Ok(())
    }

    /// Deletes sessions that have expired, and forgets revocations no token
    /// can outlive; run periodically.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_expired(&self) -> anyhow::Result<u64> {
        let now = self.clock.now();
        self.revocations.set().prune(now);
        self.store
            .delete_expired(now, self.limits.idle_timeout)
            .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::auth::Services;
    use crate::auth::accounts::LoginError;
    use crate::clock::ManualClock;
    use crate::model::types::Password;
    use crate::store::cache::{CacheStats, CachingSessionStore};

    async fn auth_with_clock() -> (Services, Arc<ManualClock>, tempfile::TempDir) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) = crate::auth::test_support::services(clock.clone(), |c| {
            c.session_idle_timeout = Duration::from_secs(600);
            c.session_absolute_timeout = Duration::from_secs(3600);
            c.login_max_failures = 3;
            c.login_window = Duration::from_secs(900);
        })
        .await;
        (auth, clock, dir)
    }

    async fn logged_in(auth: &Services) -> NewSession {
        logged_in_with(auth, vec![]).await
    }

    /// Registers a@example.com holding `roles` (as an operator would) and
    /// logs in once (also the cookie path's tests).
    pub(crate) async fn logged_in_with(
        auth: &Services,
        roles: Vec<crate::model::types::RoleName>,
    ) -> NewSession {
        auth.accounts
            .register(
                "a@example.com",
                "a long passphrase".into(),
                roles,
                crate::auth::accounts::Registrar::Operator,
            )
            .await
            .expect("register");
        login_once(auth).await
    }

    /// A password login of the user `logged_in` registered.
    async fn login_once(auth: &Services) -> NewSession {
        let (_, s) = auth
            .accounts
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
                auth.sessions
                    .authenticate(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        clock.advance(Duration::from_secs(601));
        assert!(
            auth.sessions
                .authenticate(&s.secret)
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
            let _ = auth.sessions.authenticate(&s.secret).await.expect("ok");
        }
        assert!(
            auth.sessions
                .authenticate(&s.secret)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(
            auth.sessions
                .live_sessions(s.record.user_id)
                .await
                .expect("ok")
                .is_empty()
        );
    }

    /// A password login of the user `logged_in` registered, then a second
    /// on the clock, so that each session is younger than the last.
    async fn login_again(auth: &Services, clock: &ManualClock) -> NewSession {
        let s = login_once(auth).await;
        clock.advance(Duration::from_secs(1));
        s
    }

    /// The `session_ended` events about the user: session, actor, reason.
    async fn endings(auth: &Services, user_id: UserId) -> Vec<(Option<SessionId>, Actor, String)> {
        let page = auth
            .audit
            .events(Some(user_id), Some(EventType::SessionEnded), None, 10)
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
        let (auth, _dir) = crate::auth::test_support::services(clock.clone(), |c| {
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
        assert_eq!(
            auth.sessions
                .live_sessions(user_id)
                .await
                .expect("ok")
                .len(),
            2
        );
        assert!(endings(&auth, user_id).await.is_empty(), "two live fit");

        let newest = login_again(&auth, &clock).await;

        let live: Vec<SessionId> = auth
            .sessions
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
            .sessions
            .authenticate(&s.secret)
            .await
            .expect("ok")
            .expect("live");
        assert_eq!(
            a.session.last_seen_at, created,
            "no write inside the interval"
        );
        clock.advance(Duration::from_secs(2));
        let a = auth
            .sessions
            .authenticate(&s.secret)
            .await
            .expect("ok")
            .expect("live");
        assert_eq!(a.session.last_seen_at, clock.now());
        let stored = auth
            .sessions
            .live_sessions(s.record.user_id)
            .await
            .expect("ok");
        assert_eq!(stored[0].last_seen_at, clock.now());
    }

    #[tokio::test]
    async fn throttling_window_closes_by_the_clock() {
        let (auth, clock, _dir) = auth_with_clock().await;
        logged_in(&auth).await;
        let c = ClientMeta::default();
        for _ in 0..3 {
            let e = auth
                .accounts
                .login("a@example.com", Password::new("wrong".into()), &c)
                .await;
            assert!(matches!(e, Err(LoginError::InvalidCredentials)));
        }
        let e = auth
            .accounts
            .login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &c,
            )
            .await;
        assert!(matches!(e, Err(LoginError::Throttled { .. })));
        clock.advance(Duration::from_secs(901));
        assert!(
            auth.accounts
                .login(
                    "a@example.com",
                    Password::new("a long passphrase".into()),
                    &c
                )
                .await
                .is_ok()
        );
    }

    /// Services with the session cache and a revocation feed (over SQLite:
    /// the cache logic does not depend on the store), the feed connected.
    async fn shared_auth() -> (Services, Arc<ManualClock>, tempfile::TempDir) {
        shared_auth_in(
            crate::config::RevocationFailMode::Closed,
            Duration::from_secs(5),
        )
        .await
    }

    async fn shared_auth_in(
        mode: crate::config::RevocationFailMode,
        max_staleness: Duration,
    ) -> (Services, Arc<ManualClock>, tempfile::TempDir) {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) = crate::auth::test_support::services_over(
            clock.clone(),
            |c| {
                c.session_idle_timeout = Duration::from_secs(600);
                c.session_absolute_timeout = Duration::from_secs(3600);
            },
            |stores, config, clock| {
                let revocations = Arc::new(crate::revocation::Revocations::fed(
                    max_staleness,
                    mode,
                    std::time::Instant::now(),
                ));
                let cached = Arc::new(CachingSessionStore::new(
                    stores.sessions.clone(),
                    revocations.clone(),
                    clock,
                    Duration::from_secs(10),
                    config.access_token_ttl,
                    config.session_idle_timeout,
                ));
                stores.sessions = cached.clone();
                stores.session_cache = Some(cached);
                stores.revocations = revocations;
            },
        )
        .await;
        auth.revocations.feed_connected(std::time::Instant::now());
        (auth, clock, dir)
    }

    fn stats(auth: &Services) -> CacheStats {
        auth.session_cache.as_ref().expect("cached").stats()
    }

    #[tokio::test]
    async fn the_cache_answers_while_fresh_then_reads_the_store() {
        let (auth, clock, _dir) = shared_auth().await;
        let s = logged_in(&auth).await;
        for _ in 0..3 {
            assert!(
                auth.sessions
                    .authenticate(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (3, 0));
        clock.advance(Duration::from_secs(10));
        assert!(
            auth.sessions
                .authenticate(&s.secret)
                .await
                .expect("ok")
                .is_some()
        );
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (3, 1));
        // Read again: fresh again.
        assert!(
            auth.sessions
                .authenticate(&s.secret)
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
            auth.sessions
                .authenticate(&s.secret)
                .await
                .expect("ok")
                .is_some()
        );
        // The ending is known (as from another node's message) while a
        // racing read re-cached the record: the set vetoes the entry.
        auth.revocations
            .insert([(s.record.id, auth.clock.now() + Duration::from_secs(300))]);
        auth.session_cache.as_ref().expect("cached").cache().put(
            s.record.clone(),
            auth.clock.now(),
            auth.revocations.epoch(),
        );
        assert!(
            auth.sessions
                .authenticate(&s.secret)
                .await
                .expect("ok")
                .is_none()
        );
    }

    #[tokio::test]
    async fn without_the_feed_the_cache_does_not_answer() {
        let (auth, _clock, _dir) = shared_auth().await;
        let s = logged_in(&auth).await;
        assert!(auth.revocations.feed_lost());
        assert!(!auth.revocations.feed_lost(), "reported once");
        for _ in 0..2 {
            assert!(
                auth.sessions
                    .authenticate(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (0, 2));
        // Reconnecting retires every entry read before (Redis may have
        // lost data): the next request reads the store, the one after it
        // is answered from what that read.
        auth.revocations.feed_connected(std::time::Instant::now());
        for _ in 0..2 {
            assert!(
                auth.sessions
                    .authenticate(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
        }
        assert_eq!((stats(&auth).hits, stats(&auth).misses), (1, 3));
    }

    #[tokio::test]
    async fn a_silent_feed_refuses_decisions_in_closed_mode_only() {
        use crate::config::RevocationFailMode::{Closed, Stale};
        let staleness = Duration::from_millis(150);
        for mode in [Closed, Stale] {
            let (auth, _clock, _dir) = shared_auth_in(mode, staleness).await;
            let s = logged_in(&auth).await;
            // A heartbeat answered just now (the setup's writes may take
            // longer than the bound).
            let feed = auth.revocations.feed().expect("fed");
            feed.prove(std::time::Instant::now());
            assert!(
                auth.sessions
                    .authenticate(&s.secret)
                    .await
                    .expect("ok")
                    .is_some()
            );
            let hits = stats(&auth).hits;
            // No heartbeat answers: the proof ages past the bound.
            tokio::time::sleep(staleness + Duration::from_millis(30)).await;
            let got = auth.sessions.authenticate(&s.secret).await;
            match mode {
                Closed => {
                    let e = got.expect_err("closed mode cannot decide");
                    assert!(e.is::<crate::revocation::RevocationsUnproven>(), "{e:#}");
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
            auth.revocations
                .feed()
                .expect("fed")
                .prove(std::time::Instant::now());
            assert!(
                auth.sessions
                    .authenticate(&s.secret)
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
            .accounts
            .login(
                "a@example.com",
                Password::new("a long passphrase".into()),
                &ClientMeta::default(),
            )
            .await
            .expect("login");
        assert_eq!(auth.sessions.sweep_expired().await.expect("sweep"), 1);
        assert!(
            auth.sessions
                .authenticate(&old.secret)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(
            auth.sessions
                .authenticate(&fresh.secret)
                .await
                .expect("ok")
                .is_some()
        );
    }
}
