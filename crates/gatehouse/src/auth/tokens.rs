//! The stateless side: signed JWT access tokens (RFC 9068 profile), their
//! verification, and rotating refresh tokens with reuse detection.
//!
//! The design is written down in `docs/tokens.md`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Header};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::{Actor, Ending, EventType};
use super::keys::{self, KeyRing, alg_name};
use super::principals::{Lookup, Principal, Principals};
use super::sessions::LoginError;
use super::types::{Password, RefreshSecret, SessionId, UserId};
use super::{Auth, ClientMeta, HashError};
use crate::config::JwtAlg;
use crate::store::{SessionRecord, UserRecord};
use gatehouse_token_rules::UniqueObject;

// The rules of an access token, written once for this server and for
// gatehouse-verify: the verdicts, the header, the signature, the times and
// the lifetime (crates/gatehouse-token-rules).
pub use gatehouse_token_rules::{ACCESS_TOKEN_TYP, MAX_TOKEN_LEN, TokenError};

/// Settings of the token side, fixed at start-up.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    pub leeway: Duration,
    pub refresh_reuse_grace: Duration,
}

/// `aud`: one string when we issue; a verifier accepts either form
/// (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(all) => all.iter().any(|a| a == aud),
        }
    }
}

/// The claims of an access token.
///
/// Deserialising refuses what [`validate_access_token`] refuses as
/// malformed: anything but a JSON object, a claim of the wrong type, a
/// missing required claim (`iat` included: without it the lifetime cannot
/// be judged), and a member name given twice, at any depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireClaims")]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub sid: String,
    /// Space-separated permissions.
    pub scope: String,
    pub roles: Vec<String>,
}

/// The claims set as it arrives. Read as a map, never as a sequence (a
/// struct would also take a JSON array of the claims in order). serde's
/// derive refuses a known claim given twice; every other member is
/// collected into `_others`, which refuses a name given twice, at any depth
/// (RFC 7519 §4). Our tokens carry no other member, so the collection costs
/// nothing on the hot path.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    jti: String,
    sid: String,
    scope: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(flatten)]
    _others: UniqueObject,
}

impl From<WireClaims> for AccessClaims {
    fn from(w: WireClaims) -> Self {
        Self {
            iss: w.iss,
            sub: w.sub,
            aud: w.aud,
            exp: w.exp,
            iat: w.iat,
            nbf: w.nbf,
            jti: w.jti,
            sid: w.sid,
            scope: w.scope,
            roles: w.roles,
        }
    }
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedAccess {
    pub token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// What a token grant returns.
#[derive(Debug)]
pub struct TokenPair {
    pub access: IssuedAccess,
    pub refresh: RefreshSecret,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Wrong credentials, or an unknown, spent or ended refresh token.
    #[error("invalid grant")]
    InvalidGrant,
    #[error("too many failed attempts")]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<LoginError> for GrantError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => Self::InvalidGrant,
            LoginError::Throttled { retry_after } => Self::Throttled { retry_after },
            LoginError::Busy => Self::Busy,
            LoginError::Store(e) => Self::Store(e),
        }
    }
}

impl From<HashError> for GrantError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// The parsed, checked header of a compact JWS: its `kid`.
///
/// # Errors
/// A [`TokenError`] for anything but a three-part token whose header is a
/// JSON object (no member name twice, at any depth) with the configured
/// `alg`, a `typ` of `at+jwt`, a string `kid`, and none of the forbidden
/// parameters.
pub fn check_header(token: &str, ring: &KeyRing) -> Result<String, TokenError> {
    let ours = alg_name(ring.alg);
    let header = gatehouse_token_rules::check_header(token, |alg| (alg == ours).then_some(()))?;
    match header.kid {
        Some(kid) if ring.verifier(&kid).is_some() => Ok(kid),
        _ => Err(TokenError::UnknownKey),
    }
}

/// The signature layer: verifies the JWS signature of a compact token with
/// one key under one algorithm and returns the decoded payload. It judges
/// neither the header nor the claims: callers check the header first (as
/// [`check_header`] does) and the claims after.
///
/// # Errors
/// [`TokenError::Malformed`] for a token that is not three base64url parts;
/// [`TokenError::BadSignature`] when the signature does not verify, or the
/// key does not belong to the algorithm's family.
pub fn verify_jws(token: &str, alg: JwtAlg, key: &DecodingKey) -> Result<Vec<u8>, TokenError> {
    gatehouse_token_rules::verify_jws(token, keys::algorithm(alg), key)
}

/// Checks the header and the signature of a token against the ring (for
/// `token decode`); claims are not judged.
///
/// # Errors
/// As [`check_header`] and [`verify_jws`].
pub fn verify_signature(token: &str, ring: &KeyRing) -> Result<Vec<u8>, TokenError> {
    let kid = check_header(token, ring)?;
    let key = ring.verifier(&kid).ok_or(TokenError::UnknownKey)?;
    verify_jws(token, ring.alg, key)
}

/// gatehouse's rules for an access token, in the order they are checked:
/// the header and signature ([`verify_signature`]), the claims' shape, `iss`,
/// `aud`, `exp`, `nbf` and `iat` against `now` (Unix seconds) with the
/// leeway, the lifetime `exp - iat` within `access_token_ttl` plus the
/// leeway, canonical `sub` and `sid`, and finally `is_revoked`.
///
/// `gatehouse-verify` implements the same rules for resource servers; the
/// shared vectors in `testdata/access-tokens.json` are run against both.
///
/// # Errors
/// The first rule the token breaks.
pub fn validate_access_token(
    token: &str,
    ring: &KeyRing,
    settings: &TokenSettings,
    now: i64,
    is_revoked: impl Fn(SessionId) -> bool,
) -> Result<VerifiedToken, TokenError> {
    let payload = verify_signature(token, ring)?;
    // Only a JSON object with our claims' types and no member name twice
    // parses: arrays, strings and numbers are refused here.
    let claims: AccessClaims =
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    check_claims(claims, settings, now, is_revoked)
}

/// The claims' rules of [`validate_access_token`], in its order: `iss`,
/// `aud`, the times ([`check_times`]), the lifetime ([`check_lifetime`]),
/// canonical `sub` and `sid`, and `is_revoked`.
///
/// # Errors
/// The first rule the claims break.
pub fn check_claims(
    claims: AccessClaims,
    settings: &TokenSettings,
    now: i64,
    is_revoked: impl Fn(SessionId) -> bool,
) -> Result<VerifiedToken, TokenError> {
    if claims.iss != settings.issuer {
        return Err(TokenError::WrongIssuer);
    }
    if !claims.aud.contains(&settings.audience) {
        return Err(TokenError::WrongAudience);
    }
    check_times(&claims, settings, now)?;
    check_lifetime(&claims, settings)?;
    // Canonical forms only: we issue hyphenated lower-case UUIDs.
    let user_id = UserId::parse(&claims.sub).filter(|u| u.to_string() == claims.sub);
    let session_id = SessionId::parse(&claims.sid).filter(|s| s.to_string() == claims.sid);
    let (Some(user_id), Some(session_id)) = (user_id, session_id) else {
        return Err(TokenError::Malformed);
    };
    if is_revoked(session_id) {
        return Err(TokenError::Revoked);
    }
    Ok(VerifiedToken {
        claims,
        user_id,
        session_id,
    })
}

/// `exp`, `nbf` and `iat` against `now` (Unix seconds), with the leeway.
///
/// # Errors
/// [`TokenError::Expired`], [`TokenError::NotYetValid`] or
/// [`TokenError::IssuedInFuture`], in that order.
pub fn check_times(
    claims: &AccessClaims,
    settings: &TokenSettings,
    now: i64,
) -> Result<(), TokenError> {
    let leeway = i64::try_from(settings.leeway.as_secs()).unwrap_or(0);
    gatehouse_token_rules::check_times(claims.exp, claims.nbf, claims.iat, now, leeway)
}

/// The lifetime `exp - iat` against `access_token_ttl` plus the leeway: a
/// token we issue never lives longer (its `exp` is at most now + ttl), so a
/// longer one was not minted by this server's rules, whoever holds the key
/// (API.md, "Tokens"). Fixed once the token is signed, so the cache of
/// verified tokens need not judge it again.
///
/// # Errors
/// [`TokenError::LifetimeTooLong`].
pub fn check_lifetime(claims: &AccessClaims, settings: &TokenSettings) -> Result<(), TokenError> {
    // Rounded up: `iat` and `exp` are floored to whole seconds, so a token of
    // a ttl with a fraction of a second can span its ceiling.
    let ttl = settings.access_token_ttl;
    let ttl = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    let cap = settings.leeway.as_secs().saturating_add(ttl);
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    gatehouse_token_rules::check_lifetime(claims.exp, claims.iat, cap)
}

impl Auth {
    /// Verifies a bearer access token: size, header (algorithm, type, key),
    /// signature, `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway, the
    /// lifetime, and that its session has not ended. No store round trip:
    /// the signature check and a lookup in the in-memory revocation set.
    ///
    /// # Errors
    /// The first rule the token breaks.
    ///
    /// A token verified before is answered from the cache of verified
    /// tokens (see [`super::verified::VerifiedTokens`]): its signature is not checked again,
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
                check_times(&hit.token.claims, &self.tokens, now)?;
                if is_revoked(hit.token.session_id) {
                    return Err(TokenError::Revoked);
                }
                return Ok(hit.token.clone());
            }
        }
        let kid = check_header(token, &ring)?;
        let verified = Arc::new(validate_access_token(
            token,
            &ring,
            &self.tokens,
            now,
            is_revoked,
        )?);
        self.verified.insert(token, kid, verified.clone());
        Ok(verified)
    }

    /// Signs an access token for a live session, carrying the user's
    /// current roles and permissions. Its expiry never passes the session's:
    /// neither its absolute expiry nor the idle expiry as of now.
    ///
    /// # Errors
    /// When the store fails or no signing key is available.
    pub async fn issue_access_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
    ) -> anyhow::Result<IssuedAccess> {
        let permissions = self.permissions_of(user.id).await?;
        let scope = permissions.join(" ");
        let ring = self.keys.ring();
        let signer = ring
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no signing key is available"))?;
        let now = self.clock.now();
        let exp = (now + self.tokens.access_token_ttl)
            .min(session.expires_at)
            .min(now + self.policy.session_idle_timeout);
        let claims = AccessClaims {
            iss: self.tokens.issuer.clone(),
            sub: user.id.to_string(),
            aud: Audience::One(self.tokens.audience.clone()),
            exp: exp.unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: None,
            jti: Uuid::now_v7().to_string(),
            sid: session.id.to_string(),
            scope: scope.clone(),
            roles: user.roles.clone(),
        };
        let mut header = Header::new(keys::algorithm(ring.alg));
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))?;
        let expires_in = u64::try_from(claims.exp - claims.iat).unwrap_or(0);
        Ok(IssuedAccess {
            token,
            expires_in,
            scope,
        })
    }

    /// The `password` grant: a password login (throttled with `/v1/login`,
    /// one counter) that starts a new session and returns its first token
    /// pair.
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn password_grant(
        &self,
        email: &str,
        password: Password,
        client: &ClientMeta,
    ) -> Result<TokenPair, GrantError> {
        let (user, new) = self.login(email, password, client).await?;
        let refresh =
            RefreshSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        self.stores
            .sessions
            .insert_refresh(&refresh.hash(), new.record.id, new.record.created_at)
            .await?;
        let access = self.issue_access_token(&user, &new.record).await?;
        self.metrics.tokens_password_grant.increment(1);
        Ok(TokenPair { access, refresh })
    }

    /// The `refresh_token` grant: spends the presented token and returns a
    /// new pair, by a compare-and-swap in the store so that of concurrent
    /// uses at most one mints a successor.
    ///
    /// A token presented again after it was spent is theft (RFC 9700
    /// §4.14.2): the whole session ends, its successor with it. Within
    /// `refresh_reuse_grace` of the spend, the same successor is returned
    /// instead (a client that lost the response may retry).
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn refresh_grant(&self, presented: &str) -> Result<TokenPair, GrantError> {
        let presented = RefreshSecret::parse(presented).ok_or(GrantError::InvalidGrant)?;
        let hash = presented.hash();
        let store = &self.stores.sessions;
        let record = store
            .refresh_by_hash(&hash)
            .await?
            .ok_or(GrantError::InvalidGrant)?;
        let session = store
            .session_by_id(record.session_id)
            .await?
            .ok_or(GrantError::InvalidGrant)?;
        let now = self.clock.now();
        if !self.is_live(&session, now) {
            return Err(GrantError::InvalidGrant);
        }
        let user = self
            .stores
            .users
            .user_by_id(session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(GrantError::InvalidGrant)?;

        let successor = if record.spent_at.is_none() {
            let successor =
                RefreshSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
            let sealed = keys::seal(
                &successor_key(&presented)?,
                b"refresh-successor",
                successor.expose(),
            )?;
            if store
                .rotate_refresh(&hash, now, &successor.hash(), &sealed, session.id)
                .await?
            {
                Some(successor)
            } else {
                None
            }
        } else {
            None
        };
        let successor = match successor {
            Some(s) => s,
            // Spent before, or just now by a concurrent request.
            None => {
                self.spent_token_presented(&presented, &session, now)
                    .await?
            }
        };
        // A grant is a use of the session, recorded like a cookie's: the
        // write only when the stored use is older than the touch interval.
        // Otherwise the token's idle bound stays the stored one, at most
        // that interval earlier than now's.
        let mut session = session;
        if now - session.last_seen_at >= self.policy.touch_interval() {
            store.touch_session(session.id, now).await?;
            session.last_seen_at = now;
        }
        let access = self.issue_access_token(&user, &session).await?;
        self.metrics.tokens_refresh_grant.increment(1);
        Ok(TokenPair {
            access,
            refresh: successor,
        })
    }

    /// A spent refresh token came back: inside the grace window, the same
    /// successor; outside, the session ends.
    async fn spent_token_presented(
        &self,
        presented: &RefreshSecret,
        session: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<RefreshSecret, GrantError> {
        let record = self
            .stores
            .sessions
            .refresh_by_hash(&presented.hash())
            .await?
            .ok_or(GrantError::InvalidGrant)?;
        let grace = self.tokens.refresh_reuse_grace;
        if let (Some(spent_at), Some(sealed)) = (record.spent_at, &record.successor_sealed)
            && !grace.is_zero()
            && now < spent_at + grace
        {
            let bytes = keys::open(&successor_key(presented)?, b"refresh-successor", sealed)?;
            let successor =
                RefreshSecret::parse(&URL_SAFE_NO_PAD.encode(&bytes)).ok_or_else(|| {
                    GrantError::Store(anyhow::anyhow!("a sealed successor is not 32 bytes"))
                })?;
            // A retry gets the successor only while the successor itself is
            // unspent: once the chain has moved on, an old token is reuse.
            let successor_unspent = self
                .stores
                .sessions
                .refresh_by_hash(&successor.hash())
                .await?
                .is_some_and(|r| r.spent_at.is_none());
            if successor_unspent {
                return Ok(successor);
            }
        }
        self.metrics.refresh_reuse_detected.increment(1);
        let event = self
            .event(EventType::RefreshReuseDetected, Actor::System)
            .user(session.user_id)
            .session(session.id);
        self.record_one(event).await;
        self.end_session(
            session.user_id,
            session.id,
            Actor::System,
            Ending::RefreshReuse,
        )
        .await?;
        Err(GrantError::InvalidGrant)
    }

    /// An access token for the cookie's session (`POST /v1/session/token`).
    ///
    /// # Errors
    /// When the store fails or no signing key is available.
    pub async fn session_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
    ) -> anyhow::Result<IssuedAccess> {
        let access = self.issue_access_token(user, session).await?;
        self.metrics.tokens_session.increment(1);
        Ok(access)
    }
}

/// The key that seals a token's successor: derived from the token itself,
/// so only a holder of the spent token can recover the successor.
fn successor_key(token: &RefreshSecret) -> anyhow::Result<LessSafeKey> {
    let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, token.expose());
    let derived = aws_lc_rs::hmac::sign(&mac_key, b"gatehouse refresh successor v1");
    let key = UnboundKey::new(&AES_256_GCM, derived.as_ref())
        .map_err(|_| anyhow::anyhow!("deriving the successor key"))?;
    Ok(LessSafeKey::new(key))
}

impl Auth {
    /// The session and user behind a verified access token, with the user's
    /// effective permissions: `None` when the session is gone or not live,
    /// belongs to someone else, or the user is disabled. Unlike a cookie, a
    /// token never records a use.
    ///
    /// With the principal cache (`Auth::with_principal_cache`), what was
    /// read for the session less than a second ago answers; see
    /// `principals.rs` for why that is safe.
    ///
    /// # Errors
    /// Store failures.
    pub async fn authenticate_token(
        &self,
        token: &VerifiedToken,
    ) -> anyhow::Result<Option<Arc<Principal>>> {
        self.decisions_allowed()?;
        let now = self.clock.now();
        // The token passed the revocation set just now, so its session was
        // not ended on this node, nor (with Redis, while the feed follows)
        // on any other.
        let cache = self.principals.as_ref().filter(|_| {
            self.shared
                .as_ref()
                .is_none_or(|shared| shared.feed.is_following())
        });
        let mut renewing = None;
        if let Some(cache) = cache {
            match cache.lookup(token.session_id, now) {
                Lookup::Miss => {}
                Lookup::Fresh(hit) | Lookup::Renew(hit)
                    if hit.auth.session.user_id != token.user_id
                        || !self.is_live(&hit.auth.session, now) =>
                {
                    // Expired, or idle by a record that may be stale: the
                    // store decides.
                    cache.remove(token.session_id);
                }
                Lookup::Fresh(hit) => return Ok(Some(hit)),
                Lookup::Renew(hit) => renewing = Some(hit),
            }
        }
        let generation = cache.map(Principals::generation);
        let read = async {
            let Some(auth) = self.authenticate_token_from_store(token, now).await? else {
                return Ok(None);
            };
            // Read together only when they will be cached; otherwise a
            // handler that needs them reads them.
            let permissions = match cache {
                Some(_) => Some(self.permissions_of(auth.user.id).await?.into()),
                None => None,
            };
            Ok::<_, anyhow::Error>(Some((auth, permissions)))
        };
        let (auth, permissions) = match (read.await, renewing) {
            (Ok(Some(found)), _) => found,
            (Ok(None), _) => {
                if let Some(cache) = cache {
                    cache.remove(token.session_id);
                }
                return Ok(None);
            }
            // The entry being renewed is still fresh: it answers while the
            // store does not.
            (Err(_), Some(hit)) => return Ok(Some(hit)),
            (Err(e), None) => return Err(e),
        };
        let principal = Arc::new(Principal {
            auth: Arc::new(auth),
            permissions,
        });
        if let (Some(cache), Some(generation)) = (cache, generation) {
            cache.put(principal.clone(), now, generation);
        }
        Ok(Some(principal))
    }

    /// The bearer path's reads: the token's session (from the store, or the
    /// session cache with Redis) and its user.
    async fn authenticate_token_from_store(
        &self,
        token: &VerifiedToken,
        now: OffsetDateTime,
    ) -> anyhow::Result<Option<super::sessions::Authenticated>> {
        // The token is verified against the revocation set already, the
        // authority on ended sessions: while the session store cannot
        // answer, a cached record of the session stands in, whatever the
        // fail mode (which governs cookies).
        let found = self
            .find_session(super::sessions::SessionKey::Id(token.session_id), now, true)
            .await?;
        let Some((session, _)) = found else {
            return Ok(None);
        };
        if session.user_id != token.user_id || !self.is_live(&session, now) {
            return Ok(None);
        }
        let Some(user) = self.stores.users.user_by_id(token.user_id).await? else {
            return Ok(None);
        };
        if user.disabled {
            return Ok(None);
        }
        Ok(Some(super::sessions::Authenticated { user, session }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::Value;
    use time::macros::datetime;

    use super::*;
    use crate::auth::sessions::NewSession;
    use crate::auth::test_support;
    use crate::clock::{Clock as _, ManualClock};

    /// A published JOSE test vector (`tests/vectors`, copied from the
    /// team's `shared/vectors`).
    fn vector(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the test vector {} ({e})", path.display()));
        serde_json::from_str(&text).expect("vector JSON")
    }

    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str().unwrap_or_else(|| panic!("{k}"))
    }

    fn flip_last_signature_char(token: &str) -> String {
        let mut t = token.to_owned();
        let last = t.pop().expect("char");
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies_with_its_key() {
        let v = vector("rfc7515_a1_hs256.json");
        let key = URL_SAFE_NO_PAD.decode(s(&v["jwk"], "k")).expect("k");
        let key = DecodingKey::from_secret(&key);
        let payload = verify_jws(s(&v, "compact"), JwtAlg::Hs256, &key).expect("valid signature");
        assert_eq!(payload, s(&v, "payload_utf8").as_bytes());
        let forged = flip_last_signature_char(s(&v, "compact"));
        assert_eq!(
            verify_jws(&forged, JwtAlg::Hs256, &key),
            Err(TokenError::BadSignature)
        );
        // The example is expired: the claims layer refuses it as a token of ours.
        let claims: Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(claims["exp"], 1_300_819_380);
    }

    #[test]
    fn rfc8037_a4_ed25519_example_verifies_with_its_key() {
        let v = vector("rfc8037_a4_ed25519.json");
        let key = DecodingKey::from_ed_components(s(&v["jwk_public"], "x")).expect("x");
        let payload = verify_jws(s(&v, "compact"), JwtAlg::EdDsa, &key).expect("valid signature");
        assert_eq!(payload, b"Example of Ed25519 signing");
        let forged = flip_last_signature_char(s(&v, "compact"));
        assert_eq!(
            verify_jws(&forged, JwtAlg::EdDsa, &key),
            Err(TokenError::BadSignature)
        );
        // Not a claims set: the claims layer cannot parse it.
        assert!(serde_json::from_slice::<AccessClaims>(&payload).is_err());
    }

    #[test]
    fn rfc7515_a2_rs256_and_a3_es256_examples_verify_with_their_keys() {
        let v = vector("rfc7515_a2_rs256.json");
        let key =
            DecodingKey::from_rsa_components(s(&v["jwk_public"], "n"), s(&v["jwk_public"], "e"))
                .expect("rsa");
        verify_jws(s(&v, "compact"), JwtAlg::Rs256, &key).expect("RS256 example");
        let v = vector("rfc7515_a3_es256.json");
        let key =
            DecodingKey::from_ec_components(s(&v["jwk_public"], "x"), s(&v["jwk_public"], "y"))
                .expect("ec");
        verify_jws(s(&v, "compact"), JwtAlg::Es256, &key).expect("ES256 example");
    }

    #[test]
    fn a_key_of_another_family_never_verifies() {
        // HS256 keyed with the bytes of an Ed25519 public key: the classic
        // algorithm-confusion forgery must fail at the signature layer too.
        let v = vector("rfc8037_a4_ed25519.json");
        let ed = DecodingKey::from_ed_components(s(&v["jwk_public"], "x")).expect("x");
        let hs = vector("rfc7515_a1_hs256.json");
        assert_eq!(
            verify_jws(s(&hs, "compact"), JwtAlg::Hs256, &ed),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_jws(s(&v, "compact"), JwtAlg::Hs256, &ed),
            Err(TokenError::BadSignature)
        );
    }

    #[tokio::test]
    async fn rfc7515_a5_unsecured_example_is_refused() {
        let v = vector("rfc7515_a5_unsecured_none.json");
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock, |_| {}).await;
        assert_eq!(
            auth.verify_access_token(s(&v, "compact")).err(),
            Some(TokenError::WrongAlgorithm)
        );
        let key = DecodingKey::from_secret(b"any key at all");
        assert_eq!(
            verify_jws(s(&v, "compact"), JwtAlg::Hs256, &key),
            Err(TokenError::Malformed)
        );
    }

    /// Another access token for the same session.
    async fn session_with_token_of(auth: &Auth, new: &NewSession) -> (UserRecord, IssuedAccess) {
        let user = auth
            .stores
            .users
            .user_by_id(new.record.user_id)
            .await
            .expect("read")
            .expect("user");
        let access = auth
            .issue_access_token(&user, &new.record)
            .await
            .expect("token");
        (user, access)
    }

    async fn session_with_token(auth: &Auth) -> (NewSession, IssuedAccess) {
        let user = auth
            .register(
                "t@example.com",
                "a long passphrase".into(),
                vec![],
                super::super::accounts::Registrar::Operator,
            )
            .await
            .expect("user");
        let new = auth
            .start_session(&user, &ClientMeta::default())
            .await
            .expect("session");
        let access = auth
            .issue_access_token(&user, &new.record)
            .await
            .expect("token");
        (new, access)
    }

    #[tokio::test]
    async fn expiry_is_judged_by_the_injected_clock_with_the_leeway() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock.clone(), |c| {
            c.access_token_ttl = Duration::from_secs(300);
            c.jwt_leeway = Duration::from_secs(30);
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 300);
        auth.verify_access_token(&access.token)
            .expect("fresh token");
        // From here on the token is answered from the cache of verified
        // tokens, whose hits are judged by the same clock.
        assert_eq!(auth.verified.len(), 1);
        clock.advance(Duration::from_secs(329));
        auth.verify_access_token(&access.token)
            .expect("inside the leeway");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            auth.verify_access_token(&access.token).err(),
            Some(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn only_the_exact_verified_bytes_hit_the_cache() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock, |_| {}).await;
        let (_, access) = session_with_token(&auth).await;
        let first = auth.verify_access_token(&access.token).expect("fresh");
        let again = auth.verify_access_token(&access.token).expect("cached");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second answer is the cached one"
        );
        // The same claims under a forged signature, and the token with its
        // signature cut off: neither rides on the cached verdict.
        let (message, signature) = access.token.rsplit_once('.').expect("three parts");
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{message}.{}", String::from_utf8(forged).expect("ascii"));
        assert_eq!(
            auth.verify_access_token(&forged).err(),
            Some(TokenError::BadSignature)
        );
        assert_eq!(
            auth.verify_access_token(&format!("{message}.")).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(auth.verified.len(), 1, "refused tokens are not cached");
    }

    #[tokio::test]
    async fn refused_tokens_never_enter_the_cache() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock.clone(), |c| {
            c.access_token_ttl = Duration::from_secs(60);
            c.jwt_leeway = Duration::ZERO;
        })
        .await;
        let (new, access) = session_with_token(&auth).await;
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            auth.verify_access_token(&access.token).err(),
            Some(TokenError::Expired)
        );
        assert!(auth.verified.is_empty());
        let (_, live) = session_with_token_of(&auth, &new).await;
        auth.end_session(
            new.record.user_id,
            new.record.id,
            Actor::System,
            Ending::EndedByAdmin,
        )
        .await
        .expect("end");
        assert_eq!(
            auth.verify_access_token(&live.token).err(),
            Some(TokenError::Revoked)
        );
        assert!(auth.verified.is_empty());
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = super::super::verified::VerifiedTokens::with_capacity(64 * 1024);
        let verified = Arc::new(VerifiedToken {
            claims: AccessClaims {
                iss: "i".into(),
                sub: "s".into(),
                aud: Audience::One("a".into()),
                exp: 0,
                iat: 0,
                nbf: None,
                jti: "j".into(),
                sid: "s".into(),
                scope: String::new(),
                roles: Vec::new(),
            },
            user_id: UserId::new(),
            session_id: SessionId::new(),
        });
        for i in 0..5_000 {
            let token = format!("{i:0>600}");
            cache.insert(&token, "kid".into(), verified.clone());
        }
        assert!(cache.weight() <= 64 * 1024, "{}", cache.weight());
        assert!(!cache.is_empty());
        assert!(cache.len() < 5_000);
    }

    #[tokio::test]
    async fn a_token_from_the_future_is_refused() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) =
            test_support::auth(clock.clone(), |c| c.jwt_leeway = Duration::ZERO).await;
        let (_, access) = session_with_token(&auth).await;
        // Verifying "before" it was issued: the clock went back an hour.
        let earlier = Arc::new(ManualClock::new(datetime!(2025-12-31 23:00 UTC)));
        let (mut other, _dir2) = test_support::auth(earlier, |_| {}).await;
        other.keys = auth.keys;
        assert_eq!(
            other.verify_access_token(&access.token).err(),
            Some(TokenError::IssuedInFuture)
        );
    }

    #[tokio::test]
    async fn ending_the_session_revokes_its_token_without_a_store_read() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock, |_| {}).await;
        let (new, access) = session_with_token(&auth).await;
        auth.verify_access_token(&access.token).expect("live");
        auth.end_session(
            new.record.user_id,
            new.record.id,
            Actor::System,
            Ending::EndedByAdmin,
        )
        .await
        .expect("end");
        assert_eq!(
            auth.verify_access_token(&access.token).err(),
            Some(TokenError::Revoked)
        );
        assert_eq!(auth.revocations().len(), 1);
    }

    #[tokio::test]
    async fn revocations_survive_a_restart() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) = test_support::auth(clock.clone(), |_| {}).await;
        let (new, _) = session_with_token(&auth).await;
        auth.end_session(
            new.record.user_id,
            new.record.id,
            Actor::System,
            Ending::EndedByAdmin,
        )
        .await
        .expect("end");
        let reopened = crate::store::open(&crate::config::DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        )))
        .await
        .expect("store");
        let loaded = reopened
            .sessions
            .revocations(clock.now())
            .await
            .expect("read");
        assert_eq!(
            loaded.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![new.record.id]
        );
    }

    fn settings(ttl: Duration, leeway: Duration) -> TokenSettings {
        TokenSettings {
            issuer: "i".into(),
            audience: "a".into(),
            access_token_ttl: ttl,
            leeway,
            refresh_reuse_grace: Duration::ZERO,
        }
    }

    fn claims_lasting(iat: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: Audience::One("a".into()),
            exp,
            iat,
            nbf: None,
            jti: "j".into(),
            sid: "s".into(),
            scope: String::new(),
            roles: Vec::new(),
        }
    }

    #[test]
    fn the_lifetime_is_capped_at_the_ttl_rounded_up_plus_the_leeway() {
        let five_min = settings(Duration::from_secs(300), Duration::from_secs(30));
        assert_eq!(check_lifetime(&claims_lasting(0, 330), &five_min), Ok(()));
        assert_eq!(
            check_lifetime(&claims_lasting(0, 331), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            check_lifetime(&claims_lasting(0, 30 * 86_400), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        // Saturating, both ways: no overflow turns a huge lifetime short.
        assert_eq!(
            check_lifetime(&claims_lasting(i64::MIN, 0), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            check_lifetime(&claims_lasting(-1, i64::MAX), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        let fraction = settings(Duration::from_millis(1_500), Duration::ZERO);
        assert_eq!(check_lifetime(&claims_lasting(0, 2), &fraction), Ok(()));
        assert_eq!(
            check_lifetime(&claims_lasting(0, 3), &fraction),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[tokio::test]
    async fn a_token_issued_under_a_fractional_ttl_passes_the_lifetime_cap() {
        // iat floors 0.9 s to 0, exp floors 2.4 s to 2: two seconds apart
        // under a ttl of 1.5 s.
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00:00.9 UTC)));
        let (auth, _dir) = test_support::auth(clock, |c| {
            c.access_token_ttl = Duration::from_millis(1_500);
            c.jwt_leeway = Duration::ZERO;
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 2);
        auth.verify_access_token(&access.token)
            .expect("a token as issued");
    }

    #[test]
    fn claims_with_a_member_given_twice_at_any_depth_are_refused() {
        let good = serde_json::to_string(&claims_lasting(0, 300)).expect("json");
        assert!(serde_json::from_str::<AccessClaims>(&good).is_ok());
        let body = good.strip_prefix('{').expect("an object");
        for first in [
            r#""exp":86400"#,
            r#""sid":"t""#,
            r#""x":1,"x":2"#,
            r#""x":{"y":1,"y":1}"#,
            r#""x":[{"y":[{"z":1,"z":2}]}]"#,
        ] {
            let twice = format!("{{{first},{body}");
            assert!(
                serde_json::from_str::<AccessClaims>(&twice).is_err(),
                "{twice}"
            );
        }
        let unique = format!(r#"{{"x":{{"y":1}},"z":[{{"y":1}},{{"y":1}}],{body}"#);
        assert!(serde_json::from_str::<AccessClaims>(&unique).is_ok());
        // Every claim in the struct's order, as an array: not an object.
        let in_order = r#"["i","s","a",300,0,null,"j","s","",[]]"#;
        assert!(serde_json::from_str::<AccessClaims>(in_order).is_err());
        let without_iat = good.replace(r#""iat":0,"#, "");
        assert_ne!(without_iat, good);
        assert!(serde_json::from_str::<AccessClaims>(&without_iat).is_err());
    }

    #[tokio::test]
    async fn a_token_never_outlives_its_session() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::auth(clock, |c| {
            c.session_absolute_timeout = Duration::from_secs(120);
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 120);
    }
}
