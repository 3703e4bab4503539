//! Access tokens' claims and the rules that judge them (RFC 9068 profile):
//! the header, the signature, the claims' shape and times, the lifetime.
//! Written once for this server and for gatehouse-verify in
//! `crates/gatehouse-token-rules`; this module binds them to gatehouse's
//! key ring and settings.

use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

use super::keys::{self, KeyRing, alg_name};
use crate::config::JwtAlg;
use crate::model::amr::Amr;
use crate::model::types::{ClientId, CredentialId, SessionId, UserId};
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
    /// The session whose ending revokes the token; absent from a client's
    /// own token (`client_credentials`), which has `credential_id` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// On a client's own token: the client secret it was obtained with,
    /// whose rotation (or the client's deletion) revokes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Space-separated permissions.
    pub scope: String,
    pub roles: Vec<String>,
    /// How the session's user proved who they are (RFC 8176); tokens
    /// issued before it was recorded have none: `pwd`.
    pub amr: Amr,
    /// The OpenID client the token was issued to (RFC 9068 §2.2); absent on
    /// gatehouse's own tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
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
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    credential_id: Option<String>,
    scope: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default = "password_only")]
    amr: Amr,
    #[serde(default)]
    client_id: Option<String>,
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
            credential_id: w.credential_id,
            scope: w.scope,
            roles: w.roles,
            amr: w.amr,
            client_id: w.client_id,
        }
    }
}

fn password_only() -> Amr {
    Amr::PASSWORD
}

/// Whom a verified access token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A user, in one of their sessions: gatehouse's own tokens, and a
    /// client's tokens from a code grant (a client session).
    User {
        user_id: UserId,
        session_id: SessionId,
    },
    /// A client on its own behalf (`client_credentials`): `sub` and
    /// `client_id` name it, `credential_id` the secret it used.
    Client {
        client_id: ClientId,
        credential: CredentialId,
    },
}

impl Holder {
    /// What the revocation set knows the token's grant by: its session,
    /// or its client credential.
    pub fn revocation_key(self) -> SessionId {
        match self {
            Self::User { session_id, .. } => session_id,
            Self::Client { credential, .. } => credential.revocation_key(),
        }
    }
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub holder: Holder,
}

impl VerifiedToken {
    /// The user and session a user's token speaks for; `None` for a
    /// client's own token.
    pub fn user_session(&self) -> Option<(UserId, SessionId)> {
        match self.holder {
            Holder::User {
                user_id,
                session_id,
            } => Some((user_id, session_id)),
            Holder::Client { .. } => None,
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
/// leeway, the holder (canonical `sub` and `sid`, or for a client's own
/// token `sub` = `client_id` and a canonical `credential_id`), and finally
/// `is_revoked`.
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
/// the holder, and `is_revoked`.
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
    let holder = holder(&claims).ok_or(TokenError::Malformed)?;
    if is_revoked(holder.revocation_key()) {
        return Err(TokenError::Revoked);
    }
    Ok(VerifiedToken { claims, holder })
}

/// Whom the claims speak for, in canonical forms only (we issue hyphenated
/// lower-case UUIDs): a user's token has a `sid` and no `credential_id`; a
/// client's own token has a `credential_id`, no `sid`, and `sub` equal to
/// its `client_id`. Anything else is malformed.
fn holder(claims: &AccessClaims) -> Option<Holder> {
    fn canonical<T: std::fmt::Display>(s: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        parse(s).filter(|id| id.to_string() == s)
    }
    match (&claims.sid, &claims.credential_id) {
        (Some(sid), None) => Some(Holder::User {
            user_id: canonical(&claims.sub, UserId::parse)?,
            session_id: canonical(sid, SessionId::parse)?,
        }),
        (None, Some(credential)) if claims.client_id.as_ref() == Some(&claims.sub) => {
            Some(Holder::Client {
                client_id: canonical(&claims.sub, ClientId::parse)?,
                credential: canonical(credential, CredentialId::parse)?,
            })
        }
        _ => None,
    }
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
