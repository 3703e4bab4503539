//! The in-memory set of ended sessions whose access tokens may still be
//! unexpired: what makes logout take effect on stateless tokens at once,
//! for the cost of a hash lookup.

use std::collections::HashMap;
use std::sync::RwLock;

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
        let mut ended = self.ended.write().unwrap_or_else(|e| e.into_inner());
        for (sid, until) in entries {
            let e = ended.entry(sid).or_insert(until);
            *e = (*e).max(until);
        }
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
