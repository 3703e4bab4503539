//! The in-memory set of ended sessions whose access tokens may still be
//! unexpired: what makes logout take effect on stateless tokens at once,
//! for the cost of a hash lookup.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use time::OffsetDateTime;

use super::types::SessionId;

/// Ended sessions, each with the instant after which no token of it can be
/// valid any more (when it can be forgotten).
///
/// Fed by every path that ends a session on this node, loaded from the
/// store at start-up; the distributed shape feeds it from pub/sub too.
#[derive(Debug, Default)]
pub struct RevocationSet {
    ended: RwLock<HashMap<SessionId, OffsetDateTime>>,
    /// Woken when an entry is added or extended (the feed's long polls
    /// wait on it).
    changed: tokio::sync::Notify,
}

impl RevocationSet {
    /// Whether the session has been ended.
    pub fn is_revoked(&self, sid: SessionId) -> bool {
        self.ended
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&sid)
    }

    /// Records ended sessions.
    pub fn insert(&self, entries: impl IntoIterator<Item = (SessionId, OffsetDateTime)>) {
        let mut news = false;
        {
            let mut ended = self.ended.write().unwrap_or_else(|e| e.into_inner());
            for (sid, until) in entries {
                match ended.get_mut(&sid) {
                    Some(known) if *known >= until => {}
                    Some(known) => {
                        *known = until;
                        news = true;
                    }
                    None => {
                        ended.insert(sid, until);
                        news = true;
                    }
                }
            }
        }
        if news {
            self.changed.notify_waiters();
        }
    }

    /// Completes at the next insert that adds or extends an entry (only
    /// for futures created, and enabled or polled, before it).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Forgets sessions none of whose tokens can still be valid.
    pub fn prune(&self, now: OffsetDateTime) {
        self.ended
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }

    /// How many ended sessions are remembered.
    pub fn len(&self) -> usize {
        self.ended.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether this node's revocation set follows the shared revocation feed
/// (Redis pub/sub) right now. Only a node with `redis_url` has a feed; it
/// starts disconnected.
#[derive(Debug, Default)]
pub struct FeedStatus {
    connected: AtomicBool,
    /// When the feed was lost, in ms since the epoch; 0 while connected or
    /// before it first connected.
    lost_at_ms: AtomicI64,
}

impl FeedStatus {
    /// Whether every session ended elsewhere reaches the set within moments.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self) {
        self.lost_at_ms.store(0, Ordering::Relaxed);
        self.connected.store(true, Ordering::Release);
    }

    /// Marks the feed lost at `now`; returns whether it was connected.
    pub(crate) fn set_lost(&self, now: OffsetDateTime) -> bool {
        let was = self.connected.swap(false, Ordering::AcqRel);
        if was {
            self.lost_at_ms
                .store(crate::clock::to_millis(now), Ordering::Relaxed);
        }
        was
    }

    /// When the feed was lost, while it is.
    pub fn lost_at(&self) -> Option<OffsetDateTime> {
        match self.lost_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(crate::clock::from_millis(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn remembers_until_the_last_token_expires() {
        let set = RevocationSet::default();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let sid = SessionId::new();
        assert!(!set.is_revoked(sid));
        set.insert([(sid, t0 + Duration::from_secs(300))]);
        assert!(set.is_revoked(sid));
        set.prune(t0 + Duration::from_secs(299));
        assert!(set.is_revoked(sid));
        set.prune(t0 + Duration::from_secs(300));
        assert!(!set.is_revoked(sid));
        assert!(set.is_empty());
    }
}
