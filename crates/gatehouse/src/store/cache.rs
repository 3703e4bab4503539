//! The node-local cache of session records, as a [`SessionStore`] that
//! wraps the store it caches ([`CachingSessionStore`], in the manner of
//! tower-sessions' `CachingSessionStore`). `store::open` puts it in front
//! of Redis for the "many nodes" shape: a cookie or bearer request whose
//! session this node read moments ago is answered without a Redis round
//! trip. The domain calls the `SessionStore` it is given and does not know
//! whether a cache is there.
//!
//! What makes it safe: every ended session is in the node's
//! [`Revocations`], fed by the same pub/sub that announces the ending, and
//! the set vetoes an entry on every hit; entries answer only while the feed
//! follows (see `FeedStatus::is_following`), and not after a reconnection
//! that began after their read; a record that looks expired is read again
//! (another node may have recorded a later use).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::{RefreshRecord, RevocationLog, SessionRecord, SessionStore};
use crate::clock::Clock;
use crate::model::types::{CredentialId, SecretHash, SessionId, UserId};
use crate::revocation::Revocations;

/// Most sessions one node keeps (records are a few hundred bytes each).
pub const CAPACITY: usize = 65_536;

/// A record as last read from the store.
#[derive(Debug)]
pub struct Cached {
    pub record: SessionRecord,
    /// When the store last confirmed the record.
    pub fetched_at: OffsetDateTime,
    /// The feed's epoch noted before the read (`Revocations::epoch`).
    pub epoch: u64,
}

/// Lookup counters since start (for the hit rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    /// Requests answered from a fresh entry.
    pub hits: u64,
    /// Requests that read the store.
    pub misses: u64,
    /// Requests answered from an entry because the store could not answer.
    pub stale: u64,
}

/// Session records by id, with an index by secret hash; bounded, with
/// entries judged fresh for `fresh_for` after the store confirmed them.
pub struct SessionCache {
    by_id: Cache<SessionId, Arc<Cached>>,
    by_hash: Cache<SecretHash, SessionId>,
    fresh_for: Duration,
    usable_for: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("fresh_for", &self.fresh_for)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SessionCache {
    /// A cache whose entries answer requests for `fresh_for` after being
    /// read, and stand in for an unreachable store for `usable_for`.
    pub fn new(fresh_for: Duration, usable_for: Duration, capacity: usize) -> Self {
        Self {
            by_id: Cache::new(capacity),
            by_hash: Cache::new(capacity),
            fresh_for,
            usable_for,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The entry of the session with this secret hash.
    pub fn by_hash(&self, hash: &SecretHash) -> Option<Arc<Cached>> {
        let id = self.by_hash.get(hash)?;
        self.by_id
            .get(&id)
            .filter(|c| c.record.secret_hash == *hash)
    }

    /// The entry of the session with this id.
    pub fn by_id(&self, id: SessionId) -> Option<Arc<Cached>> {
        self.by_id.get(&id)
    }

    /// Whether the entry may answer a request in place of the store.
    pub fn is_fresh(&self, entry: &Cached, now: OffsetDateTime) -> bool {
        within(entry.fetched_at, now, self.fresh_for)
    }

    /// Whether the entry may stand in for a store that cannot answer.
    pub fn is_usable_stale(&self, entry: &Cached, now: OffsetDateTime) -> bool {
        within(entry.fetched_at, now, self.usable_for)
    }

    /// Remembers a record the store confirmed at `fetched_at`, read in the
    /// feed's `epoch`.
    pub fn put(&self, record: SessionRecord, fetched_at: OffsetDateTime, epoch: u64) {
        let id = record.id;
        self.by_hash.insert(record.secret_hash, id);
        self.by_id.insert(
            id,
            Arc::new(Cached {
                record,
                fetched_at,
                epoch,
            }),
        );
    }

    /// Forgets a session (the hash index entry then points at nothing).
    pub fn remove(&self, id: SessionId) {
        if let Some((_, entry)) = self.by_id.remove(&id) {
            self.by_hash.remove(&entry.record.secret_hash);
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.by_id.clear();
        self.by_hash.clear();
    }

    fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    fn count_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.by_id.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }
}

/// `since <= now < since + span` (a clock stepping back makes nothing
/// fresh).
fn within(since: OffsetDateTime, now: OffsetDateTime, span: Duration) -> bool {
    since <= now && now - since < span
}

/// How a session is looked up.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    Secret(&'a SecretHash),
    Id(SessionId),
}

/// A [`SessionStore`] answered from a [`SessionCache`] where it may be.
///
/// Lookups (by secret or id) answer from a fresh entry while the feed
/// follows and the record still looks live; a session in the revocation
/// set is `None` whatever the cache holds. When the store fails, a usable
/// entry stands in: for lookups by id always (the bearer path, whose token
/// already passed the revocation set, the authority on ended sessions),
/// for lookups by secret (cookies) only in `revocation_fail_mode =
/// "stale"`, which also lets a use go unrecorded rather than refused.
/// Writes go to the store first and then keep the cache in step.
pub struct CachingSessionStore {
    inner: Arc<dyn SessionStore>,
    cache: SessionCache,
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
    /// `session_idle_timeout`: a cached record idle past it is read again.
    idle_timeout: Duration,
}

impl std::fmt::Debug for CachingSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingSessionStore")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl CachingSessionStore {
    /// Wraps `inner`; entries answer for `fresh_for` after their read and
    /// stand in for an unreachable store for `usable_for` (no longer than a
    /// token of the session could live: the revocation set remembers an
    /// ending at least that long, so it still vetoes every entry it applies
    /// to).
    pub fn new(
        inner: Arc<dyn SessionStore>,
        revocations: Arc<Revocations>,
        clock: Arc<dyn Clock>,
        fresh_for: Duration,
        usable_for: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            cache: SessionCache::new(fresh_for.min(usable_for), usable_for, CAPACITY),
            revocations,
            clock,
            idle_timeout,
        }
    }

    /// Lookup counters since start.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The cache itself (tests plant entries in it).
    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    fn looks_live(&self, record: &SessionRecord, now: OffsetDateTime) -> bool {
        now < record.expires_at && now < record.last_seen_at + self.idle_timeout
    }

    async fn find(&self, key: Key<'_>, stale_ok: bool) -> anyhow::Result<Option<SessionRecord>> {
        let cache = &self.cache;
        let now = self.clock.now();
        let cached = match key {
            Key::Secret(hash) => cache.by_hash(hash),
            Key::Id(id) => cache.by_id(id),
        };
        if let Some(entry) = &cached
            && self.revocations.is_revoked(entry.record.id)
        {
            // Ended (perhaps on another node): the feed that announced it
            // also filled the set, so the set vetoes the entry.
            cache.remove(entry.record.id);
            return Ok(None);
        }
        let epoch = self.revocations.epoch();
        // A record that looks expired may only be stale in `last_seen_at`
        // (another node recorded a later use): the store decides. One read
        // before the feed last reconnected may have missed an ending.
        let cached = cached.filter(|e| e.epoch == epoch && self.looks_live(&e.record, now));
        if let Some(entry) = &cached
            && self.revocations.caches_may_answer()
            && cache.is_fresh(entry, now)
        {
            cache.count_hit();
            return Ok(Some(entry.record.clone()));
        }
        cache.count_miss();
        let found = match key {
            Key::Secret(hash) => self.inner.session_by_secret(hash).await,
            Key::Id(id) => self.inner.session_by_id(id).await,
        };
        match found {
            Ok(Some(record)) => {
                cache.put(record.clone(), now, epoch);
                Ok(Some(record))
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
                    Ok(Some(entry.record.clone()))
                }
                _ => Err(e),
            },
        }
    }
}

#[async_trait]
impl SessionStore for CachingSessionStore {
    async fn insert_session(&self, session: &SessionRecord) -> anyhow::Result<()> {
        let epoch = self.revocations.epoch();
        self.inner.insert_session(session).await?;
        self.cache.put(session.clone(), self.clock.now(), epoch);
        Ok(())
    }

    async fn reachable(&self) -> anyhow::Result<()> {
        self.inner.reachable().await
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>> {
        self.find(Key::Secret(hash), self.revocations.stale_ok())
            .await
    }

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>> {
        self.find(Key::Id(id), true).await
    }

    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        match self.inner.touch_session(id, last_seen_at).await {
            Ok(()) => {
                // The entry keeps the instant the store last confirmed it.
                if let Some(entry) = self.cache.by_id(id)
                    && entry.record.last_seen_at < last_seen_at
                {
                    let mut record = entry.record.clone();
                    record.last_seen_at = last_seen_at;
                    self.cache.put(record, entry.fetched_at, entry.epoch);
                }
                Ok(())
            }
            // Already answering from the cache for want of the store: the
            // use goes unrecorded rather than refused.
            Err(e) if self.revocations.stale_ok() => {
                tracing::debug!(error = format!("{e:#}"), "recording a session use failed");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn announce_principals_changed(&self) -> anyhow::Result<()> {
        self.inner.announce_principals_changed().await
    }

    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        self.inner.count_sessions(now).await
    }

    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        self.inner.sessions_of(user_id).await
    }

    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let ended = self.inner.delete_session(id, user_id, revoke_until).await?;
        if ended {
            self.cache.remove(id);
        }
        Ok(ended)
    }

    async fn revoke_credential(
        &self,
        id: CredentialId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.inner.revoke_credential(id, revoke_until).await
    }

    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>> {
        let ended = self
            .inner
            .delete_sessions_of(user_id, keep, revoke_until)
            .await?;
        for id in &ended {
            self.cache.remove(*id);
        }
        Ok(ended)
    }

    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64> {
        self.inner.delete_expired(now, idle).await
    }

    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>> {
        self.inner.revocations(now).await
    }

    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog> {
        self.inner.revocation_log(after, now, limit).await
    }

    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.inner
            .insert_refresh(hash, session_id, created_at)
            .await
    }

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>> {
        self.inner.refresh_by_hash(hash).await
    }

    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool> {
        self.inner
            .rotate_refresh(old, spent_at, successor, successor_sealed, session_id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn record(byte: u8) -> SessionRecord {
        let t = datetime!(2026-01-01 0:00 UTC);
        SessionRecord {
            id: SessionId::new(),
            user_id: UserId::new(),
            secret_hash: SecretHash([byte; 32]),
            created_at: t,
            last_seen_at: t,
            expires_at: t + Duration::from_secs(3600),
            user_agent: None,
            ip: None,
            amr: crate::model::amr::Amr::PASSWORD,
            link: None,
        }
    }

    #[test]
    fn entries_are_found_by_id_and_hash_and_forgotten_together() {
        let cache = SessionCache::new(Duration::from_secs(10), Duration::from_secs(300), 100);
        let t = datetime!(2026-01-01 0:00 UTC);
        let r = record(1);
        cache.put(r.clone(), t, 0);
        assert_eq!(cache.by_id(r.id).expect("by id").record, r);
        assert_eq!(cache.by_hash(&r.secret_hash).expect("by hash").record, r);
        assert!(cache.by_hash(&SecretHash([2; 32])).is_none());
        cache.remove(r.id);
        assert!(cache.by_id(r.id).is_none());
        assert!(cache.by_hash(&r.secret_hash).is_none());
        assert_eq!(cache.stats().entries, 0);
    }

    #[test]
    fn freshness_and_stale_use_are_bounded_by_the_clock() {
        let cache = SessionCache::new(Duration::from_secs(10), Duration::from_secs(300), 100);
        let t = datetime!(2026-01-01 0:00 UTC);
        cache.put(record(1), t, 0);
        let r = record(1);
        let entry = Cached {
            record: r,
            fetched_at: t,
            epoch: 0,
        };
        assert!(cache.is_fresh(&entry, t + Duration::from_secs(9)));
        assert!(!cache.is_fresh(&entry, t + Duration::from_secs(10)));
        assert!(cache.is_usable_stale(&entry, t + Duration::from_secs(299)));
        assert!(!cache.is_usable_stale(&entry, t + Duration::from_secs(300)));
        // A clock that steps back trusts nothing.
        assert!(!cache.is_fresh(&entry, t - Duration::from_secs(1)));
    }

    #[test]
    fn a_reused_hash_index_entry_never_yields_another_session() {
        let cache = SessionCache::new(Duration::from_secs(10), Duration::from_secs(300), 100);
        let t = datetime!(2026-01-01 0:00 UTC);
        let a = record(1);
        cache.put(a.clone(), t, 0);
        // The id is re-cached with another secret: the old hash must not
        // find it.
        let mut b = a.clone();
        b.secret_hash = SecretHash([3; 32]);
        cache.put(b.clone(), t, 0);
        assert!(cache.by_hash(&a.secret_hash).is_none());
        assert_eq!(cache.by_hash(&b.secret_hash).expect("b").record, b);
    }
}
