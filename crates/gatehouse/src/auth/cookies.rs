//! The cookie path: recognising the session a cookie's secret names,
//! standing on the same principal cache as the bearer path, with the same
//! freshness rules (`principals.rs`).
//!
//! The cache learns which session a secret names from the store read that
//! recognised it, and keeps the secret's hash, never the secret. A request
//! whose cookie it knows is answered from memory when every rule a store
//! read would apply holds for the entry:
//! - the session is not in the revocation set: an ending on this node (and,
//!   with Redis, on any node) is refused by the next request;
//! - the entry is fresh (at most [`super::principals::FRESH_FOR`] old, and
//!   since the last change to users or roles made through this node);
//! - the secret matches the cached record's hash, compared in constant time;
//! - the session is live by the cached record (its `last_seen_at` is never
//!   later than the stored one, so an entry live by it is live by the store);
//! - no use needs recording: when the cached `last_seen_at` is older than
//!   the touch interval, the store is read and the use written, as without
//!   the cache.
//!
//! Otherwise the store decides, as [`Sessions::authenticate`] always did.

use std::sync::Arc;

use subtle::ConstantTimeEq as _;

use super::principals::{Lookup, Principal, Principals};
use super::sessions::Sessions;
use crate::clock::Clock;
use crate::model::types::SessionSecret;
use crate::revocation::Revocations;
use crate::store::UserStore;

/// Recognises session cookies.
pub struct Cookies {
    sessions: Arc<Sessions>,
    users: Arc<dyn UserStore>,
    principals: Arc<Principals>,
    revocations: Arc<Revocations>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies").finish_non_exhaustive()
    }
}

impl Cookies {
    pub fn new(
        sessions: Arc<Sessions>,
        users: Arc<dyn UserStore>,
        principals: Arc<Principals>,
        revocations: Arc<Revocations>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            sessions,
            users,
            principals,
            revocations,
            clock,
        }
    }

    /// The live session a cookie's secret names, its user and (where the
    /// principal cache is on) the user's effective permissions: `None` when
    /// unknown, expired (idle or absolute), ended, or its user is gone or
    /// disabled. Records the use as [`Sessions::authenticate`] does.
    ///
    /// # Errors
    /// Store failures and [`crate::revocation::RevocationsUnproven`], which
    /// callers must answer with 503, not 401.
    pub async fn authenticate(
        &self,
        secret: &SessionSecret,
    ) -> anyhow::Result<Option<Arc<Principal>>> {
        self.revocations.decisions_allowed()?;
        let hash = secret.hash();
        let now = self.clock.now();
        let cache = &self.principals;
        let mut renewing = None;
        let known = cache.session_of(&hash);
        if let Some(sid) = known {
            if self.revocations.is_revoked(sid) {
                cache.remove(sid);
            } else {
                match cache.lookup(sid, now) {
                    Lookup::Miss => {}
                    Lookup::Fresh(hit) | Lookup::Renew(hit)
                        if !bool::from(hit.auth.session.secret_hash.0.ct_eq(&hash.0))
                            || !self.sessions.is_live(&hit.auth.session, now)
                            || self.sessions.use_due(&hit.auth.session, now) =>
                    {
                        // Not this secret's, idle by a record that may be
                        // stale, or a use to record: the store decides.
                        cache.remove(sid);
                    }
                    Lookup::Fresh(hit) => return Ok(Some(hit)),
                    Lookup::Renew(hit) => renewing = Some(hit),
                }
            }
        }
        let read = self.sessions.authenticate(secret);
        let found = cache
            .read_through(&*self.users, now, renewing, read)
            .await?;
        match &found {
            Some(principal) => cache.remember_secret(hash, principal.auth.session.id),
            None => {
                cache.forget_secret(&hash);
                if let Some(sid) = known {
                    cache.remove(sid);
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;
    use crate::auth::Services;
    use crate::auth::audit::{Actor, Ending};
    use crate::auth::sessions::NewSession;
    use crate::auth::sessions::tests::logged_in_with;
    use crate::clock::ManualClock;
    use crate::model::types::{Permission, RoleName};
    use crate::store::{SessionStore, UserStore};

    struct Fixture {
        auth: Services,
        clock: Arc<ManualClock>,
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        _dir: tempfile::TempDir,
    }

    /// The services on SQLite (where the principal cache is on) with the
    /// raw stores beside them: a write through those is another process's.
    async fn fixture() -> Fixture {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let mut raw = None;
        let (auth, dir) = crate::auth::test_support::services_over(
            clock.clone(),
            |c| c.session_idle_timeout = Duration::from_secs(600),
            |stores, _, _| raw = Some((stores.users.clone(), stores.sessions.clone())),
        )
        .await;
        let (users, sessions) = raw.expect("the stores");
        Fixture {
            auth,
            clock,
            users,
            sessions,
            _dir: dir,
        }
    }

    async fn who(f: &Fixture, s: &NewSession) -> Option<Arc<Principal>> {
        f.auth
            .cookies
            .authenticate(&s.secret)
            .await
            .expect("no store error")
    }

    #[tokio::test]
    async fn another_process_s_change_is_seen_within_the_second_and_not_before() {
        let f = fixture().await;
        let s = logged_in_with(&f.auth, vec![]).await;
        let first = who(&f, &s).await.expect("live");
        assert!(first.permissions.is_some(), "read with the session");
        // Disabled behind the node's back: the cached read still answers
        // (this is what the cache buys), for less than a second.
        assert!(
            f.users
                .set_disabled(s.record.user_id, true)
                .await
                .expect("write")
        );
        f.clock.advance(Duration::from_millis(700));
        let cached = who(&f, &s).await.expect("answered from memory");
        assert!(Arc::ptr_eq(&cached, &first), "the same read");
        // In the last fifth of the entry's life one request reads again
        // (ahead of expiry, so a busy session's requests do not all miss
        // together): it finds the change.
        f.clock.advance(Duration::from_millis(150));
        assert!(who(&f, &s).await.is_none(), "the renewal read refuses");
        assert!(
            who(&f, &s).await.is_none(),
            "and so does every request after it"
        );
        // A secret the store does not know is refused too, cached or not.
        let stranger = SessionSecret::generate().expect("rng");
        assert!(
            f.auth
                .cookies
                .authenticate(&stranger)
                .await
                .expect("ok")
                .is_none()
        );
    }

    #[tokio::test]
    async fn an_ending_on_this_node_is_refused_by_the_next_request() {
        let f = fixture().await;
        let s = logged_in_with(&f.auth, vec![]).await;
        assert!(who(&f, &s).await.is_some());
        assert!(
            f.auth
                .sessions
                .end(s.record.user_id, s.record.id, Actor::System, Ending::Logout)
                .await
                .expect("ended")
        );
        assert!(
            who(&f, &s).await.is_none(),
            "the revocation set vetoes the entry"
        );
    }

    #[tokio::test]
    async fn a_role_change_through_the_node_is_seen_by_the_next_request() {
        let f = fixture().await;
        let role = RoleName::parse("editor").expect("name");
        let read = Permission::parse("docs:read").expect("permission");
        let write = Permission::parse("docs:write").expect("permission");
        f.auth
            .admin
            .set_role(&role, std::slice::from_ref(&read), Actor::Cli)
            .await
            .expect("role");
        let s = logged_in_with(&f.auth, vec![role.clone()]).await;
        let held = who(&f, &s).await.expect("live").permissions.clone();
        assert_eq!(held.as_deref(), Some(&["docs:read".to_owned()][..]));
        f.auth
            .admin
            .set_role(&role, &[read, write], Actor::Cli)
            .await
            .expect("role");
        let held = who(&f, &s).await.expect("live").permissions.clone();
        assert_eq!(
            held.as_deref(),
            Some(&["docs:read".to_owned(), "docs:write".to_owned()][..])
        );
    }

    #[tokio::test]
    async fn a_use_due_for_recording_is_written_though_the_entry_is_fresh() {
        let f = fixture().await;
        let s = logged_in_with(&f.auth, vec![]).await;
        let login = s.record.last_seen_at;
        // 600 s idle timeout: a use is written once a minute.
        f.clock.advance(Duration::from_millis(59_500));
        assert!(who(&f, &s).await.is_some());
        let stored = |f: &Fixture| {
            let (store, id) = (f.sessions.clone(), s.record.id);
            async move {
                store
                    .session_by_id(id)
                    .await
                    .expect("read")
                    .expect("stored")
                    .last_seen_at
            }
        };
        assert_eq!(stored(&f).await, login, "59.5 s: not yet");
        // Half a second later the entry is fresh, but the use is due.
        f.clock.advance(Duration::from_millis(600));
        assert!(who(&f, &s).await.is_some());
        assert_eq!(stored(&f).await, f.clock.now(), "written on this use");
        // And not again on the next ones.
        f.clock.advance(Duration::from_millis(200));
        assert!(who(&f, &s).await.is_some());
        assert_eq!(stored(&f).await, f.clock.now() - Duration::from_millis(200));
    }
}
