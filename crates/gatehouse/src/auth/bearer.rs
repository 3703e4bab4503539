//! The bearer path: verifying an access token (the cache of verified
//! tokens, the revocation set) and reading who it speaks for (the
//! principal cache, the session and user stores).

use std::sync::Arc;

use time::OffsetDateTime;

use super::claims::{
    TokenError, TokenSettings, VerifiedToken, check_header, check_times, validate_access_token,
};
use super::keys::KeyManager;
use super::principals::{Lookup, Principal, Principals};
use super::sessions::{Authenticated, Sessions};
use super::verified::VerifiedTokens;
use crate::clock::Clock;
use crate::model::types::{SessionId, UserId};
use crate::revocation::Revocations;
use crate::store::UserStore;

/// Verifies access tokens and finds their principals.
pub struct Bearer {
    keys: Arc<KeyManager>,
    settings: TokenSettings,
    /// Access tokens whose signature was verified, by their bytes.
    verified: VerifiedTokens,
    revocations: Arc<Revocations>,
    principals: Arc<Principals>,
    sessions: Arc<Sessions>,
    users: Arc<dyn UserStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Bearer {
    pub fn new(
        keys: Arc<KeyManager>,
        settings: TokenSettings,
        revocations: Arc<Revocations>,
        principals: Arc<Principals>,
        sessions: Arc<Sessions>,
        users: Arc<dyn UserStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            keys,
            settings,
            verified: VerifiedTokens::default(),
            revocations,
            principals,
            sessions,
            users,
            clock,
        }
    }

    /// The cache of verified tokens (for tests).
    pub fn verified(&self) -> &VerifiedTokens {
        &self.verified
    }

    /// Verifies a bearer access token: size, header (algorithm, type, key),
    /// signature, `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway, the
    /// lifetime, and that its session has not ended. No store round trip:
    /// the signature check and a lookup in the in-memory revocation set.
    ///
    /// # Errors
    /// The first rule the token breaks.
    ///
    /// A token verified before is answered from the cache of verified
    /// tokens (see [`VerifiedTokens`]): its signature is not checked again,
    /// but its times, its key's presence in the ring and its session's
    /// revocation are, on every use.
    pub fn verify_access_token(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        let ring = self.keys.ring();
        let now = self.clock.now().unix_timestamp();
        let is_revoked = |sid| self.revocations.is_revoked(sid);
        if let Some(hit) = self.verified.get(token) {
            // The ring is checked too: a key withdrawn from it (a rotation
            // whose predecessor retired) takes its tokens with it.
            if ring.verifier(&hit.kid).is_some() {
                check_times(&hit.token.claims, &self.settings, now)?;
                if is_revoked(hit.token.holder.revocation_key()) {
                    return Err(TokenError::Revoked);
                }
                return Ok(hit.token.clone());
            }
        }
        let kid = check_header(token, &ring)?;
        let verified = Arc::new(validate_access_token(
            token,
            &ring,
            &self.settings,
            now,
            is_revoked,
        )?);
        self.verified.insert(token, kid, verified.clone());
        Ok(verified)
    }

    /// Refuses a token decision while this node cannot prove it knows
    /// every revocation (`revocation_fail_mode = "closed"`).
    ///
    /// # Errors
    /// [`crate::revocation::RevocationsUnproven`].
    pub fn decisions_allowed(&self) -> Result<(), crate::revocation::RevocationsUnproven> {
        self.revocations.decisions_allowed()
    }

    /// The session and user behind a verified user's access token, with the
    /// user's effective permissions: `None` when the session is gone or not
    /// live, belongs to someone else, or the user is disabled, and for a
    /// client's own token (it has neither). Unlike a cookie, a token never
    /// records a use.
    ///
    /// What was read for the session less than `session_cache_ttl` ago
    /// answers where the principal cache may (see `principals.rs` for why
    /// that is safe, and `store::open` for where it is on).
    ///
    /// # Errors
    /// Store failures and [`crate::revocation::RevocationsUnproven`].
    pub async fn authenticate_token(
        &self,
        token: &VerifiedToken,
    ) -> anyhow::Result<Option<Arc<Principal>>> {
        self.revocations.decisions_allowed()?;
        let Some((user_id, session_id)) = token.user_session() else {
            return Ok(None);
        };
        let now = self.clock.now();
        // The token passed the revocation set just now, so its session was
        // not ended on this node, nor (with Redis, while the feed follows)
        // on any other.
        let cache = &self.principals;
        let mut renewing = None;
        match cache.lookup(session_id, now) {
            Lookup::Miss => {}
            Lookup::Fresh(hit) | Lookup::Renew(hit)
                if hit.auth.session.user_id != user_id
                    || !self.sessions.is_live(&hit.auth.session, now) =>
            {
                // Expired, or idle by a record that may be stale: the
                // store decides.
                cache.remove(session_id);
            }
            Lookup::Fresh(hit) => return Ok(Some(hit)),
            Lookup::Renew(hit) => renewing = Some(hit),
        }
        let read = self.read_principal(user_id, session_id, now);
        let found = cache
            .read_through(&*self.users, now, renewing, read)
            .await?;
        if found.is_none() {
            cache.remove(session_id);
        }
        Ok(found)
    }

    /// The bearer path's reads: the token's session and its user. The
    /// token is verified against the revocation set already, the authority
    /// on ended sessions: where the session store is cached, a cached
    /// record stands in while it cannot answer, whatever the fail mode
    /// (which governs cookies).
    async fn read_principal(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<Authenticated>> {
        let found = self.sessions.live_by_id(session_id, user_id, now).await?;
        let Some(session) = found else {
            return Ok(None);
        };
        let Some(user) = self.users.user_by_id(user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        Ok(Some(Authenticated { user, session }))
    }
}
