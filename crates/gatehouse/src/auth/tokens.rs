//! The stateless side: signed JWT access tokens (RFC 9068 profile), their
//! verification, and rotating refresh tokens with reuse detection.
//!
//! The design is written down in `docs/tokens.md`.

use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::keys::{self, KeyRing, alg_name};
use super::sessions::LoginError;
use super::types::{Password, RefreshSecret, SessionId, UserId};
use super::{Auth, ClientMeta, HashError};
use crate::store::{SessionRecord, UserRecord};

/// Longest access token accepted, in bytes (before any parsing).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` of an access token (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Header parameters that would make a verifier take a key, or a rule, from
/// the token itself (RFC 8725 §3.10), or that we do not implement: a token
/// carrying any of them is refused.
const FORBIDDEN_HEADER: &[&str] = &[
    "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "zip", "enc", "b64",
];

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub sid: String,
    /// Space-separated permissions.
    pub scope: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// Why an access token was refused. The HTTP layer answers every one with
/// the same 401 `invalid_token`; the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    #[error("the token is not a JWS in compact form with JSON header and claims")]
    Malformed,
    #[error("the token's header carries a forbidden parameter")]
    ForbiddenHeader,
    #[error("the token's algorithm is not the configured one")]
    WrongAlgorithm,
    #[error("the token's typ is not at+jwt")]
    WrongType,
    #[error("the token's kid is not one of our keys")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token's session has ended")]
    Revoked,
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

/// The signature-layer validation for one algorithm: every claim check is
/// ours (with our clock), so jsonwebtoken checks only the algorithm and the
/// signature.
pub fn signature_validation(ring: &KeyRing) -> Validation {
    let mut v = Validation::new(keys::algorithm(ring.alg));
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v
}

/// The parsed, checked header of a compact JWS: its `kid`.
///
/// # Errors
/// A [`TokenError`] for anything but a three-part token whose header is a
/// JSON object with the configured `alg`, a `typ` of `at+jwt`, a string
/// `kid`, and none of the forbidden parameters.
pub fn check_header(token: &str, ring: &KeyRing) -> Result<String, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    if FORBIDDEN_HEADER.iter().any(|k| header.contains_key(*k)) {
        return Err(TokenError::ForbiddenHeader);
    }
    // Exact match: "none", "NONE", "nOnE" and every other algorithm fail here.
    if header.get("alg").and_then(|a| a.as_str()) != Some(alg_name(ring.alg)) {
        return Err(TokenError::WrongAlgorithm);
    }
    let typ = header
        .get("typ")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    // RFC 9068 §4: "at+jwt", or with the "application/" prefix; media
    // types compare case-insensitively.
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(TokenError::WrongType);
    }
    match header.get("kid").and_then(|k| k.as_str()) {
        Some(kid) if ring.verifier(kid).is_some() => Ok(kid.to_owned()),
        _ => Err(TokenError::UnknownKey),
    }
}

/// Checks only the signature of a token against the ring (for `token
/// decode`); claims are not judged.
///
/// # Errors
/// As [`check_header`], or [`TokenError::BadSignature`].
pub fn verify_signature(token: &str, ring: &KeyRing) -> Result<serde_json::Value, TokenError> {
    let kid = check_header(token, ring)?;
    let key = ring.verifier(&kid).ok_or(TokenError::UnknownKey)?;
    jsonwebtoken::decode::<serde_json::Value>(token, key, &signature_validation(ring))
        .map(|d| d.claims)
        .map_err(map_jwt_error)
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) => {
            TokenError::BadSignature
        }
        K::InvalidAlgorithm | K::MissingAlgorithm => TokenError::WrongAlgorithm,
        _ => TokenError::Malformed,
    }
}

impl Auth {
    /// Verifies a bearer access token: size, header (algorithm, type, key),
    /// signature, `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway, and that
    /// its session has not ended. No store round trip: the signature check
    /// and a lookup in the in-memory revocation set.
    ///
    /// # Errors
    /// The first rule the token breaks.
    pub fn verify_access_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let ring = self.keys.ring();
        let kid = check_header(token, &ring)?;
        let key = ring.verifier(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(map_jwt_error)?
            .claims;
        let t = &self.tokens;
        let now = self.clock.now().unix_timestamp();
        let leeway = i64::try_from(t.leeway.as_secs()).unwrap_or(0);
        if claims.iss != t.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(&t.audience) {
            return Err(TokenError::WrongAudience);
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now < nbf.saturating_sub(leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        let (Some(user_id), Some(session_id)) =
            (UserId::parse(&claims.sub), SessionId::parse(&claims.sid))
        else {
            return Err(TokenError::Malformed);
        };
        if self.revocations.is_revoked(session_id) {
            return Err(TokenError::Revoked);
        }
        Ok(VerifiedToken {
            claims,
            user_id,
            session_id,
        })
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
        store.touch_session(session.id, now).await?;
        let mut session = session;
        session.last_seen_at = now;
        let access = self.issue_access_token(&user, &session).await?;
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
            let encoded = URL_SAFE_NO_PAD.encode(&bytes);
            return RefreshSecret::parse(&encoded).ok_or_else(|| {
                GrantError::Store(anyhow::anyhow!("a sealed successor is not 32 bytes"))
            });
        }
        tracing::warn!(
            target: "gatehouse::audit",
            event = "refresh_reuse_detected",
            user_id = %session.user_id,
            session_id = %session.id,
            "a spent refresh token was presented again; ending its session"
        );
        self.end_session(session.user_id, session.id).await?;
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
        self.issue_access_token(user, session).await
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
    /// The session and user behind a verified access token: `None` when the
    /// session is gone or not live, belongs to someone else, or the user is
    /// disabled. Unlike a cookie, a token never records a use.
    ///
    /// # Errors
    /// Store failures.
    pub async fn authenticate_token(
        &self,
        token: &VerifiedToken,
    ) -> anyhow::Result<Option<super::sessions::Authenticated>> {
        let Some(session) = self.stores.sessions.session_by_id(token.session_id).await? else {
            return Ok(None);
        };
        if session.user_id != token.user_id || !self.is_live(&session, self.clock.now()) {
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
