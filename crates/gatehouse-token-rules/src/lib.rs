//! The rules of a gatehouse access token, written once for the server
//! (`crates/gatehouse`, which issues and checks tokens) and for
//! `gatehouse-verify` (which resource servers link to check them locally),
//! so the two cannot judge a token differently: the verdicts
//! ([`TokenError`], named as the shared test vectors name them), the header
//! ([`check_header`]), the signature ([`verify_jws`]), the times
//! ([`check_times`]), the lifetime ([`check_lifetime`]) and the canonical
//! form of ids ([`parse_uuid`]) and the `amr` claim ([`Amr`]). Each caller keeps what holds state: the
//! key lookup (a `kid` not among the keys is [`TokenError::UnknownKey`]),
//! the claims' types, and the revocation lookup.
//!
//! The order of the checks is the verdict's order: a token that breaks two
//! rules is refused by the first, as `testdata/access-tokens.json` records.

mod amr;
mod json;

pub use amr::Amr;
pub use json::UniqueObject;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;

/// Longest access token accepted, in bytes, judged before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` gatehouse puts in an access token's header (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Header parameters that would make a verifier take a key, or a rule, from
/// the token itself (RFC 8725 §3.10), or that gatehouse does not implement
/// (RFC 7515 §4.1.11 `crit`, RFC 7797 `b64`, JWE's `zip`/`enc`).
pub const FORBIDDEN_HEADER: &[&str] = &[
    "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "zip", "enc", "b64",
];

/// Why an access token was refused, by the first rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenError {
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    #[error("the token is not a JWS in compact form with JSON header and claims")]
    Malformed,
    #[error("the token's header carries a forbidden parameter")]
    ForbiddenHeader,
    #[error("the token's algorithm is not an accepted one")]
    WrongAlgorithm,
    #[error("the token's typ is not at+jwt")]
    WrongType,
    #[error("the token's kid is not one of the issuer's keys")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's lifetime (exp - iat) exceeds the maximum")]
    LifetimeTooLong,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token's session has ended")]
    Revoked,
}

impl TokenError {
    /// The verdict's name in the shared test vectors
    /// (`testdata/access-tokens.json`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::ForbiddenHeader => "forbidden_header",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::WrongType => "wrong_type",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Revoked => "revoked",
        }
    }
}

/// What the header rules let through: the algorithm, as the caller's
/// `accept` recognised it, and the `kid` (`None` when absent or not a
/// string: no key can match it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<A> {
    pub alg: A,
    pub kid: Option<String>,
}

/// The header rules, in order: size; three parts; a header that is
/// base64url (no padding) of a JSON object naming no member twice at any
/// depth; none of [`FORBIDDEN_HEADER`]; an `alg` that `accept` maps to an
/// algorithm the caller takes (compared exactly: `none` in every spelling
/// fails); a `typ` of `at+jwt` or `application/at+jwt`, any case.
///
/// # Errors
/// `TooLarge`, `Malformed`, `ForbiddenHeader`, `WrongAlgorithm` or
/// `WrongType`, whichever rule breaks first.
pub fn check_header<A>(
    token: &str,
    accept: impl FnOnce(&str) -> Option<A>,
) -> Result<Header<A>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    // RFC 7515 §2: base64url without padding; the engine refuses padding,
    // non-alphabet bytes and non-zero trailing bits.
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    // RFC 7515 §4: a duplicate name is refused, not resolved to the last
    // one, so no reader of this header can see another `alg` or `kid`.
    let UniqueObject(header) =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    if FORBIDDEN_HEADER.iter().any(|k| header.contains_key(*k)) {
        return Err(TokenError::ForbiddenHeader);
    }
    let alg = header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .and_then(accept)
        .ok_or(TokenError::WrongAlgorithm)?;
    let typ = header
        .get("typ")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    // RFC 9068 §4: "at+jwt", or with the "application/" prefix; media types
    // compare case-insensitively. A missing typ is a wrong one (RFC 8725
    // §3.11).
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(TokenError::WrongType);
    }
    let kid = match header.get("kid") {
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        _ => None,
    };
    Ok(Header { alg, kid })
}

/// The signature over `header.payload` under one key and one algorithm;
/// returns the decoded payload. It judges neither the header nor the
/// claims: callers check the header first and the claims after.
///
/// # Errors
/// `Malformed` when the token is not three parts, the signature is empty
/// (a token of the wrong shape, not a signature that fails), or the payload
/// of a correctly signed token is not base64url; `BadSignature` when the
/// signature is not base64url or does not verify (also when the key belongs
/// to another algorithm family).
pub fn verify_jws(
    token: &str,
    alg: jsonwebtoken::Algorithm,
    key: &DecodingKey,
) -> Result<Vec<u8>, TokenError> {
    let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (_, payload) = message.split_once('.').ok_or(TokenError::Malformed)?;
    if signature.is_empty() || payload.contains('.') {
        return Err(TokenError::Malformed);
    }
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
        Ok(true) => URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed),
        Ok(false) | Err(_) => Err(TokenError::BadSignature),
    }
}

/// `exp`, `nbf` and `iat` against `now` (Unix seconds), with `leeway`
/// seconds either way: expired on or after `exp` (RFC 7519 §4.1.4), not
/// valid before `nbf`, and not issued in the future.
///
/// # Errors
/// `Expired`, `NotYetValid` or `IssuedInFuture`, in that order.
pub fn check_times(
    exp: i64,
    nbf: Option<i64>,
    iat: i64,
    now: i64,
    leeway: i64,
) -> Result<(), TokenError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| now < nbf.saturating_sub(leeway)) {
        return Err(TokenError::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// The lifetime `exp - iat` against `max` seconds: gatehouse never issues a
/// token that lives longer than its `access_token_ttl`, so a longer one was
/// not minted by its rules, whoever holds the key. Saturating: an `iat`
/// near `i64::MIN` is a lifetime too long, never an overflow into a short
/// one.
///
/// # Errors
/// `LifetimeTooLong`.
pub fn check_lifetime(exp: i64, iat: i64, max: i64) -> Result<(), TokenError> {
    if exp.saturating_sub(iat) > max {
        return Err(TokenError::LifetimeTooLong);
    }
    Ok(())
}

/// A UUID in the RFC 9562 §4 hyphenated form (8-4-4-4-12 hex digits), lower
/// case unless `upper_ok`; any version and variant. gatehouse issues ids in
/// this form only, and one spelling per id keeps the revocation lookup
/// exact.
#[must_use]
pub fn parse_uuid(s: &str, upper_ok: bool) -> Option<u128> {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' if upper_ok => b - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(digit);
    }
    Some(value)
}
