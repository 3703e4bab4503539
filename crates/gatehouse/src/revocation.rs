//! What this node knows of ended sessions: the in-memory set of ended
//! sessions whose access tokens may still be unexpired (what makes logout
//! take effect on stateless tokens at once, for the cost of a hash lookup),
//! and, with sessions in Redis, whether the revocation feed proves the set
//! complete. The domain, the caches that wrap the stores and the feed all
//! share one [`Revocations`]; it imports nothing but the model.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::RevocationFailMode;
use crate::model::types::SessionId;

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

/// Whether this node can prove that its revocation set holds every session
/// ended anywhere: only a node with `redis_url` has a feed to prove it with.
///
/// The proof is an instant up to which the set is known complete: the
/// instant before a (re)connection subscribed to the revocation channel,
/// once the reload that follows succeeded; then, while the subscription
/// lives, the sending instant of each heartbeat (a PING on the subscriber's
/// own connection) answered there. Redis answers a PING on a connection
/// only after every message it queued to that connection earlier, so an
/// answered heartbeat proves that every ending published before it was sent
/// has been applied. Instants are monotonic (wall-clock jumps move nothing).
#[derive(Debug)]
pub struct FeedStatus {
    /// Origin of `proven`.
    base: Instant,
    /// Milliseconds from `base` to the instant proven, plus one (0: never).
    proven: AtomicU64,
    /// Whether the subscription is live.
    connected: AtomicBool,
    /// How old the proof may grow before the node must say it cannot know.
    max_staleness: Duration,
}

impl FeedStatus {
    /// A feed not yet connected whose set was known complete at `loaded`
    /// (when the revocations were loaded at start-up).
    pub fn new(max_staleness: Duration, loaded: Instant) -> Self {
        let status = Self {
            base: loaded,
            proven: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            max_staleness,
        };
        status.prove(loaded);
        status
    }

    /// Whether the subscription is live (it may still be silent: see
    /// [`FeedStatus::is_proven`]).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether the set was proven complete less than `max_staleness` ago.
    pub fn is_proven(&self) -> bool {
        self.proof_age().is_some_and(|age| age < self.max_staleness)
    }

    /// Whether caches may answer for the store: the subscription is live
    /// and has proven itself recently, so an ending elsewhere reaches this
    /// node within moments.
    pub fn is_following(&self) -> bool {
        self.is_connected() && self.is_proven()
    }

    /// How long ago the instant last proven was.
    pub fn proof_age(&self) -> Option<Duration> {
        match self.proven.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }

    /// When the proof runs out (or ran out).
    pub fn proven_until(&self) -> Instant {
        let proven = match self.proven.load(Ordering::Acquire) {
            0 => self.base,
            ms => self.base + Duration::from_millis(ms - 1),
        };
        proven + self.max_staleness
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// Records that the set held every ending published before `at`.
    pub fn prove(&self, at: Instant) {
        // Rounded down: the proof never claims more than it knows.
        let ms = u64::try_from(at.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX - 1);
        self.proven.fetch_max(ms + 1, Ordering::AcqRel);
    }

    /// The subscription is live, and the set complete as of `proof`.
    fn set_connected(&self, proof: Instant) {
        self.prove(proof);
        self.connected.store(true, Ordering::Release);
    }

    /// Marks the subscription lost; returns whether it was live.
    fn set_lost(&self) -> bool {
        self.connected.swap(false, Ordering::AcqRel)
    }

    /// The wall-clock instant last proven, for reports.
    pub fn proven_at(&self) -> Option<OffsetDateTime> {
        self.proof_age().map(|age| OffsetDateTime::now_utc() - age)
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

/// The node's knowledge of ended sessions: the set, and with Redis the
/// feed that keeps it complete and what requests get when it cannot.
///
/// Without a feed (one node on SQLite, or nodes sharing PostgreSQL alone)
/// every decision is allowed and caches may always answer: what this node
/// does not learn at once, it learns from the store. With one, caches
/// answer only while the feed follows, and decisions stop in `closed` mode
/// once the proof is older than `revocation_max_staleness`.
#[derive(Debug)]
pub struct Revocations {
    set: RevocationSet,
    feed: Option<FeedStatus>,
    fail_mode: RevocationFailMode,
    /// Bumped on every (re)connection of the feed: cache entries filled
    /// from a read that began before it are not used (the store may have
    /// lost data, and endings may have gone unannounced meanwhile).
    epoch: AtomicU64,
    /// Bumped by every change to users or roles that another node announced
    /// through the feed: principals read before it are not used.
    principal_changes: AtomicU64,
}

impl Revocations {
    /// A node without a revocation feed.
    pub fn local() -> Self {
        Self {
            set: RevocationSet::default(),
            feed: None,
            fail_mode: RevocationFailMode::Closed,
            epoch: AtomicU64::new(0),
            principal_changes: AtomicU64::new(0),
        }
    }

    /// A node fed by Redis's revocation channel, whose set was known
    /// complete at `loaded` (see [`FeedStatus::new`]).
    pub fn fed(max_staleness: Duration, fail_mode: RevocationFailMode, loaded: Instant) -> Self {
        Self {
            feed: Some(FeedStatus::new(max_staleness, loaded)),
            fail_mode,
            ..Self::local()
        }
    }

    /// Whether the session has been ended.
    pub fn is_revoked(&self, sid: SessionId) -> bool {
        self.set.is_revoked(sid)
    }

    /// Records ended sessions (ended here, by another process, or announced
    /// by the feed).
    pub fn insert(&self, entries: impl IntoIterator<Item = (SessionId, OffsetDateTime)>) {
        self.set.insert(entries);
    }

    /// The set itself (its long-poll notifications, its size, pruning).
    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    /// The feed's state, when the node has one.
    pub fn feed(&self) -> Option<&FeedStatus> {
        self.feed.as_ref()
    }

    /// What requests get while the feed cannot prove the set complete
    /// (`None` without a feed).
    pub fn fail_mode(&self) -> Option<RevocationFailMode> {
        self.feed.as_ref().map(|_| self.fail_mode)
    }

    /// Whether a cached session may stand in for a store that cannot
    /// answer a cookie request (`revocation_fail_mode = "stale"`).
    pub fn stale_ok(&self) -> bool {
        self.fail_mode() == Some(RevocationFailMode::Stale)
    }

    /// Refuses a session or token decision while this node cannot prove it
    /// knows every revocation and `revocation_fail_mode` is `closed`.
    ///
    /// # Errors
    /// [`RevocationsUnproven`], which callers answer with 503.
    pub fn decisions_allowed(&self) -> Result<(), RevocationsUnproven> {
        match &self.feed {
            Some(feed) if self.fail_mode == RevocationFailMode::Closed && !feed.is_proven() => {
                Err(RevocationsUnproven {
                    max_staleness: feed.max_staleness(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether caches may answer for the store: always without a feed;
    /// with one, while it follows.
    pub fn caches_may_answer(&self) -> bool {
        self.feed.as_ref().is_none_or(FeedStatus::is_following)
    }

    /// The feed's current epoch: a cache notes it before it reads the
    /// store and keeps the entry only while it is unchanged.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// How many changes to users or roles other nodes have announced.
    pub fn principal_changes(&self) -> u64 {
        self.principal_changes.load(Ordering::Acquire)
    }

    /// Another node announced a change to users or roles (the feed's
    /// `principals` message): every principal this node read before is
    /// retired.
    pub fn principals_changed(&self) {
        self.principal_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The revocation feed is (re)connected, and the set reloaded after it
    /// subscribed at `proof`: entries cached before may have missed an
    /// ending, so they are no longer used, and the caches may answer again.
    pub fn feed_connected(&self, proof: Instant) {
        if let Some(feed) = &self.feed {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            feed.set_connected(proof);
        }
    }

    /// The revocation feed is lost: the caches stop answering (every
    /// request reads the store) until it reconnects. Returns whether it was
    /// connected.
    pub fn feed_lost(&self) -> bool {
        self.feed.as_ref().is_some_and(FeedStatus::set_lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

#[cfg(test)]
mod feed_tests {
    use super::*;

    #[test]
    fn a_feed_is_proven_only_while_its_proof_is_younger_than_the_bound() {
        let staleness = Duration::from_millis(200);
        let loaded = Instant::now();
        let feed = FeedStatus::new(staleness, loaded);
        assert!(feed.is_proven(), "the load at start-up proves the set");
        assert!(!feed.is_connected());
        assert!(!feed.is_following(), "caches wait for the subscription");
        feed.set_connected(Instant::now());
        assert!(feed.is_following());
        // An older proof never moves the instant back.
        feed.prove(loaded);
        std::thread::sleep(staleness + Duration::from_millis(20));
        assert!(!feed.is_proven(), "silent past the bound");
        assert!(!feed.is_following());
        assert!(feed.proven_until() <= Instant::now());
        feed.prove(Instant::now());
        assert!(feed.is_following());
        assert!(feed.set_lost());
        assert!(!feed.set_lost(), "reported once");
        assert!(feed.is_proven() && !feed.is_following());
    }
}
