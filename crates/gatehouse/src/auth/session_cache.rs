//! The node-local cache of session records, for the "many nodes" shape
//! (sessions in Redis): a cookie or bearer request whose session this node
//! read moments ago is answered without a Redis round trip.
//!
//! The cache holds no policy of its own; `Auth` decides when an entry may
//! be used (see `Auth::find_session`). What makes it safe is that every
//! ended session is in the node's `RevocationSet`, fed by the same pub/sub
//! that announces the ending, and that set is checked on every hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::types::{SecretHash, SessionId};
use crate::store::SessionRecord;

/// Most sessions one node keeps (records are a few hundred bytes each).
pub const CAPACITY: usize = 65_536;

/// A record as last read from the store.
#[derive(Debug)]
pub struct Cached {
    pub record: SessionRecord,
    /// When the store last confirmed the record.
    pub fetched_at: OffsetDateTime,
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

    /// Remembers a record the store confirmed at `fetched_at`.
    pub fn put(&self, record: SessionRecord, fetched_at: OffsetDateTime) {
        let id = record.id;
        self.by_hash.insert(record.secret_hash, id);
        self.by_id
            .insert(id, Arc::new(Cached { record, fetched_at }));
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

    pub(crate) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_stale(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::types::UserId;
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
        }
    }

    #[test]
    fn entries_are_found_by_id_and_hash_and_forgotten_together() {
        let cache = SessionCache::new(Duration::from_secs(10), Duration::from_secs(300), 100);
        let t = datetime!(2026-01-01 0:00 UTC);
        let r = record(1);
        cache.put(r.clone(), t);
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
        cache.put(record(1), t);
        let r = record(1);
        let entry = Cached {
            record: r,
            fetched_at: t,
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
        cache.put(a.clone(), t);
        // The id is re-cached with another secret: the old hash must not
        // find it.
        let mut b = a.clone();
        b.secret_hash = SecretHash([3; 32]);
        cache.put(b.clone(), t);
        assert!(cache.by_hash(&a.secret_hash).is_none());
        assert_eq!(cache.by_hash(&b.secret_hash).expect("b").record, b);
    }
}
