//! The bearer path's cache of principals: for a session whose access token
//! was just verified, the session record, its user and the user's effective
//! permissions, as this node read them from the store moments ago. A client
//! that sends many requests with tokens of one session pays for those reads
//! once a second instead of on every request (they cost more than the
//! cached signature check and the rest of the request together).
//!
//! `Bearer::authenticate_token` asks it on every bearer request, whatever
//! the deployment; `store::open` decides whether it may keep anything
//! (a zero `fresh_for` keeps nothing). What keeps it honest:
//! - an ended session is refused before the cache is asked: the token check
//!   consults the revocation set, which every ending on this node (and, with
//!   Redis, on every node) reaches at once;
//! - a change to users or roles made through this node empties it at once
//!   (a generation counter: an entry filled from a read that began before
//!   the change is never used);
//! - an entry answers for [`FRESH_FOR`] at most, which bounds what a change
//!   made by another process (the CLI, another node) can miss.
//!
//! So that the requests of a busy session do not all miss together when its
//! entry expires (a burst of reads every second, which showed as the p99 of
//! the load harness), the first request that sees an entry in the last
//! fifth of its life reads the store again while the others keep using it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use quick_cache::sync::Cache;
use time::OffsetDateTime;

use super::sessions::Authenticated;
use crate::model::types::{SecretHash, SessionId};
use crate::revocation::Revocations;
use crate::store::{SessionStore, UserStore};

/// How long an entry answers after its reads: the bound on how late a role
/// change made by another process reaches a bearer caller at this node.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Most sessions one node keeps.
pub const CAPACITY: usize = 65_536;

/// A bearer caller as the store last described them.
#[derive(Debug)]
pub struct Principal {
    pub auth: Arc<Authenticated>,
    /// The user's effective permissions at the time of the read; `None`
    /// when not read (without the cache they are read only when a handler
    /// asks, as for cookies). Every cached principal has them.
    pub permissions: Option<Arc<[String]>>,
}

#[derive(Debug)]
struct Entry {
    principal: Arc<Principal>,
    read_at: OffsetDateTime,
    generation: u64,
    /// Set by the one request that reads the store again ahead of expiry.
    renewing: AtomicBool,
}

/// What the cache knows of a session.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry: the answer.
    Fresh(Arc<Principal>),
    /// A fresh entry near its end, and this caller was chosen to read the
    /// store again (it may still answer with the entry if that read fails).
    Renew(Arc<Principal>),
    /// Nothing usable: read the store.
    Miss,
}

/// Principals by session id, bounded, each answering for [`FRESH_FOR`].
pub struct Principals {
    by_session: Cache<SessionId, Arc<Entry>>,
    /// Which session a cookie's secret names (by the secret's hash), as a
    /// store read found it: the cookie path's way into `by_session`. A
    /// session's secret never changes, so this answers until evicted.
    by_secret: Cache<SecretHash, SessionId>,
    /// Bumped by every change to users or roles made on this node.
    generation: AtomicU64,
    fresh_for: Duration,
    revocations: Arc<Revocations>,
    /// Where a change is announced to the other nodes.
    announce_to: Option<Arc<dyn SessionStore>>,
}

impl std::fmt::Debug for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principals")
            .field("len", &self.by_session.len())
            .field("fresh_for", &self.fresh_for)
            .finish_non_exhaustive()
    }
}

impl Principals {
    /// A cache whose entries answer for `fresh_for` after their reads (at
    /// most [`FRESH_FOR`]; zero keeps nothing), while `revocations` lets
    /// caches answer.
    pub fn new(fresh_for: Duration, capacity: usize, revocations: Arc<Revocations>) -> Self {
        Self {
            by_session: Cache::new(capacity.max(1)),
            by_secret: Cache::new(capacity.max(1)),
            generation: AtomicU64::new(0),
            fresh_for: fresh_for.min(FRESH_FOR),
            revocations,
            announce_to: None,
        }
    }

    /// Announces every change through `store` (to the nodes that share it).
    #[must_use]
    pub fn announcing_to(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.announce_to = Some(store);
        self
    }

    /// Whether the cache keeps anything.
    pub fn is_on(&self) -> bool {
        !self.fresh_for.is_zero()
    }

    /// The generation a read must note before it starts, for
    /// [`Principals::put`]: changed by every change to users or roles on
    /// this node and every reconnection of the revocation feed.
    pub fn generation(&self) -> u64 {
        self.generation
            .load(Ordering::Acquire)
            .wrapping_add(self.revocations.epoch())
            .wrapping_add(self.revocations.principal_changes())
    }

    /// The principal of this session, when read less than `fresh_for` ago
    /// and since the last change to users or roles (the tests' view of
    /// [`Principals::lookup`]).
    #[cfg(test)]
    pub fn get(&self, sid: SessionId, now: OffsetDateTime) -> Option<Arc<Principal>> {
        match self.lookup(sid, now) {
            Lookup::Fresh(p) | Lookup::Renew(p) => Some(p),
            Lookup::Miss => None,
        }
    }

    /// Like [`Principals::get`], and in the last fifth of an entry's life
    /// names one caller (the first to ask) to read the store again.
    pub fn lookup(&self, sid: SessionId, now: OffsetDateTime) -> Lookup {
        if !self.revocations.caches_may_answer() {
            return Lookup::Miss;
        }
        let Some(entry) = self.by_session.get(&sid) else {
            return Lookup::Miss;
        };
        if entry.generation != self.generation() || now < entry.read_at {
            return Lookup::Miss;
        }
        let age = now - entry.read_at;
        if age >= self.fresh_for {
            return Lookup::Miss;
        }
        let principal = entry.principal.clone();
        if age >= self.fresh_for * 4 / 5 && !entry.renewing.swap(true, Ordering::AcqRel) {
            return Lookup::Renew(principal);
        }
        Lookup::Fresh(principal)
    }

    /// Remembers what a read that began at `generation` found; a change to
    /// users or roles since then makes the entry useless at once.
    pub fn put(&self, principal: Arc<Principal>, now: OffsetDateTime, generation: u64) {
        if !self.is_on() {
            return;
        }
        let sid = principal.auth.session.id;
        self.by_session.insert(
            sid,
            Arc::new(Entry {
                principal,
                read_at: now,
                generation,
                renewing: AtomicBool::new(false),
            }),
        );
    }

    /// The session a cookie's secret names, when a read found it here.
    pub fn session_of(&self, hash: &SecretHash) -> Option<SessionId> {
        if !self.is_on() {
            return None;
        }
        self.by_secret.get(hash)
    }

    /// Remembers that the secret of `hash` names `sid` (found by a read).
    pub fn remember_secret(&self, hash: SecretHash, sid: SessionId) {
        if self.is_on() {
            self.by_secret.insert(hash, sid);
        }
    }

    /// Forgets a secret that names no live session.
    pub fn forget_secret(&self, hash: &SecretHash) {
        self.by_secret.remove(hash);
    }

    /// Reads a principal through `read` (the session and its user; `None`
    /// when not live) and, where the cache keeps entries, the user's
    /// permissions with it, and caches what it found under the generation
    /// noted before the read began. A failed read while `renewing` an entry
    /// that is still fresh answers with that entry. The cookie and bearer
    /// paths' one way to the store.
    ///
    /// # Errors
    /// Store failures.
    pub async fn read_through(
        &self,
        users: &dyn UserStore,
        now: OffsetDateTime,
        renewing: Option<Arc<Principal>>,
        read: impl Future<Output = anyhow::Result<Option<Authenticated>>>,
    ) -> anyhow::Result<Option<Arc<Principal>>> {
        let generation = self.generation();
        let read = async {
            let Some(auth) = read.await? else {
                return Ok(None);
            };
            // Read together only when they will be cached; otherwise a
            // handler that needs them reads them.
            let permissions = if self.is_on() {
                Some(users.permissions_of(auth.user.id).await?.into())
            } else {
                None
            };
            Ok::<_, anyhow::Error>(Some((auth, permissions)))
        };
        let (auth, permissions) = match (read.await, renewing) {
            (Ok(Some(found)), _) => found,
            (Ok(None), _) => return Ok(None),
            // The entry being renewed is still fresh: it answers while the
            // store does not.
            (Err(_), Some(hit)) => return Ok(Some(hit)),
            (Err(e), None) => return Err(e),
        };
        let principal = Arc::new(Principal {
            auth: Arc::new(auth),
            permissions,
        });
        self.put(principal.clone(), now, generation);
        Ok(Some(principal))
    }

    /// Forgets one session (ended, or found not live).
    pub fn remove(&self, sid: SessionId) {
        self.by_session.remove(&sid);
    }

    /// Users or roles changed: no entry read before answers again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_session.clear();
    }

    /// Users or roles were changed through this node: its entries are
    /// retired at once, and the other nodes sharing its session store are
    /// told to retire theirs (with Redis, a message on the revocation
    /// channel, which reaches them in about a millisecond). An announcement
    /// that fails is logged: the others then see the change within
    /// [`FRESH_FOR`], as they would a change made by the command line.
    pub async fn changed(&self) {
        self.invalidate();
        if let Some(store) = &self.announce_to
            && let Err(e) = store.announce_principals_changed().await
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "a change to users or roles could not be announced to the other nodes; \
                 they see it within a second"
            );
        }
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        self.by_session.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::types::{SecretHash, UserId};
    use crate::store::{SessionRecord, UserRecord};

    fn principal() -> Arc<Principal> {
        let now = OffsetDateTime::now_utc();
        let user_id = UserId::new();
        Arc::new(Principal {
            auth: Arc::new(Authenticated {
                user: UserRecord {
                    id: user_id,
                    email: "a@example.com".to_owned(),
                    password_hash: String::new(),
                    created_at: now,
                    disabled: false,
                    email_verified: false,
                    roles: vec!["reader".to_owned()],
                },
                session: SessionRecord {
                    id: SessionId::new(),
                    user_id,
                    secret_hash: SecretHash([7; 32]),
                    created_at: now,
                    last_seen_at: now,
                    expires_at: now + time::Duration::hours(1),
                    user_agent: None,
                    ip: None,
                    amr: crate::model::amr::Amr::PASSWORD,
                    link: None,
                },
            }),
            permissions: Some(Arc::from(vec!["site:read".to_owned()])),
        })
    }

    #[test]
    fn an_entry_answers_only_while_fresh() {
        let cache = Principals::new(Duration::from_secs(1), 16, Arc::new(Revocations::local()));
        let p = principal();
        let sid = p.auth.session.id;
        let t0 = OffsetDateTime::now_utc();
        cache.put(p, t0, cache.generation());
        assert!(cache.get(sid, t0).is_some());
        assert!(
            cache
                .get(sid, t0 + time::Duration::milliseconds(999))
                .is_some()
        );
        assert!(cache.get(sid, t0 + time::Duration::seconds(1)).is_none());
        // A clock that went backwards does not make an entry fresher.
        assert!(cache.get(sid, t0 - time::Duration::seconds(5)).is_none());
        assert!(cache.get(SessionId::new(), t0).is_none());
    }

    #[test]
    fn one_caller_renews_an_entry_near_its_end_and_the_others_keep_using_it() {
        let cache = Principals::new(Duration::from_secs(1), 16, Arc::new(Revocations::local()));
        let p = principal();
        let sid = p.auth.session.id;
        let t0 = OffsetDateTime::now_utc();
        cache.put(p.clone(), t0, cache.generation());
        assert!(matches!(cache.lookup(sid, t0), Lookup::Fresh(_)));
        let late = t0 + time::Duration::milliseconds(850);
        assert!(matches!(cache.lookup(sid, late), Lookup::Renew(_)));
        assert!(matches!(cache.lookup(sid, late), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(sid, late), Lookup::Fresh(_)));
        // The renewal lands: a new entry, renewable again near its own end.
        cache.put(p, late, cache.generation());
        assert!(matches!(cache.lookup(sid, late), Lookup::Fresh(_)));
        let later = late + time::Duration::milliseconds(900);
        assert!(matches!(cache.lookup(sid, later), Lookup::Renew(_)));
        // A renewal that never landed does not stretch the entry's life.
        assert!(matches!(
            cache.lookup(sid, late + time::Duration::seconds(1)),
            Lookup::Miss
        ));
    }

    #[test]
    fn a_change_to_users_or_roles_retires_every_entry_even_one_read_before_it() {
        let cache = Principals::new(Duration::from_secs(1), 16, Arc::new(Revocations::local()));
        let t0 = OffsetDateTime::now_utc();
        let before = principal();
        let sid = before.auth.session.id;
        cache.put(before, t0, cache.generation());
        // A read began, then an admin changed roles, then the read finished.
        let late = principal();
        let late_sid = late.auth.session.id;
        let began = cache.generation();
        cache.invalidate();
        cache.put(late, t0, began);
        assert!(cache.get(sid, t0).is_none());
        assert!(
            cache.get(late_sid, t0).is_none(),
            "filled from a read older than the change"
        );
        let fresh = principal();
        let fresh_sid = fresh.auth.session.id;
        cache.put(fresh, t0, cache.generation());
        assert!(cache.get(fresh_sid, t0).is_some());
        cache.remove(fresh_sid);
        assert!(cache.get(fresh_sid, t0).is_none());
    }
}
