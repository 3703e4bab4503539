//! Why a token was refused ([`VerifyError`]) and why a verifier could not be
//! built ([`BuildError`]).

/// Why an access token was refused: the first rule it breaks, in the order
/// gatehouse itself checks them, so the server and this library give the same
/// verdict for every token.
///
/// Two variants are not verdicts on the token but on this process:
/// [`KeysUnavailable`](Self::KeysUnavailable) and
/// [`RevocationsStale`](Self::RevocationsStale) (see
/// [`is_unavailable`](Self::is_unavailable)); answer those with 503, every other
/// one with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VerifyError {
    /// Longer than 8 KiB, judged before any parsing.
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    /// Not a JWS in compact form with a JSON header and a claims set of the
    /// expected types.
    #[error("the token is not a JWS in compact form with JSON header and claims")]
    Malformed,
    /// The header names a key or a processing rule of its own.
    #[error("the token's header carries a forbidden parameter")]
    ForbiddenHeader,
    /// The header's `alg` is not a configured algorithm, or not the algorithm of
    /// the key its `kid` names.
    #[error("the token's algorithm is not an accepted one")]
    WrongAlgorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("the token's typ is not at+jwt")]
    WrongType,
    /// The header's `kid` names no key of the issuer.
    #[error("the token's kid is not one of the issuer's keys")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// `exp` has passed (with the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead (with the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is ahead (with the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the configured
    /// [`max_token_lifetime`](crate::VerifierBuilder::max_token_lifetime).
    #[error("the token's lifetime (exp - iat) exceeds the maximum")]
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    #[error("the token is from another issuer")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("the token is for another audience")]
    WrongAudience,
    /// The token's session has ended.
    #[error("the token's session has ended")]
    Revoked,
    /// No key of the issuer has ever been fetched and the JWKS cannot be
    /// fetched now.
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
    /// The revocation feed has not synchronised within the configured bound,
    /// so the token's session may have ended unseen.
    #[error("the revocation feed is out of date")]
    RevocationsStale,
}

/// A verdict of the shared rules is the same verdict here.
impl From<gatehouse_token_rules::TokenError> for VerifyError {
    fn from(e: gatehouse_token_rules::TokenError) -> Self {
        use gatehouse_token_rules::TokenError as T;
        match e {
            T::TooLarge => Self::TooLarge,
            T::Malformed => Self::Malformed,
            T::ForbiddenHeader => Self::ForbiddenHeader,
            T::WrongAlgorithm => Self::WrongAlgorithm,
            T::WrongType => Self::WrongType,
            T::UnknownKey => Self::UnknownKey,
            T::BadSignature => Self::BadSignature,
            T::Expired => Self::Expired,
            T::NotYetValid => Self::NotYetValid,
            T::IssuedInFuture => Self::IssuedInFuture,
            T::LifetimeTooLong => Self::LifetimeTooLong,
            T::WrongIssuer => Self::WrongIssuer,
            T::WrongAudience => Self::WrongAudience,
            T::Revoked => Self::Revoked,
        }
    }
}

impl VerifyError {
    /// The stable, machine-readable name of the verdict, as in the shared test
    /// vectors and in logs: `too_large`, `malformed`, `forbidden_header`,
    /// `wrong_algorithm`, `wrong_type`, `unknown_key`, `bad_signature`,
    /// `expired`, `not_yet_valid`, `issued_in_future`, `lifetime_too_long`,
    /// `wrong_issuer`, `wrong_audience`, `revoked`, `keys_unavailable`,
    /// `revocations_stale`.
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
            Self::KeysUnavailable => "keys_unavailable",
            Self::RevocationsStale => "revocations_stale",
        }
    }

    /// Whether the refusal says nothing about the token but that this process
    /// cannot judge it right now (fail closed): answer 503 and let the client
    /// retry, not 401.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeysUnavailable | Self::RevocationsStale)
    }

    /// Every variant, for tests and for mapping codes back (`code` is the
    /// inverse).
    pub(crate) const ALL: [Self; 16] = [
        Self::TooLarge,
        Self::Malformed,
        Self::ForbiddenHeader,
        Self::WrongAlgorithm,
        Self::WrongType,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInFuture,
        Self::LifetimeTooLong,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::Revoked,
        Self::KeysUnavailable,
        Self::RevocationsStale,
    ];

    /// The variant whose [`code`](Self::code) is `code`.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

/// Why [`VerifierBuilder::build`](crate::VerifierBuilder::build) refused the
/// configuration. Secrets are never part of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The issuer is empty.
    #[error("the issuer is empty")]
    EmptyIssuer,
    /// A URL derived from the issuer, or given, is not an absolute http(s) URL.
    #[error("{what} is not an absolute http(s) URL")]
    InvalidUrl {
        /// Which URL: `jwks_url` or `revocation feed URL`.
        what: &'static str,
    },
    /// The audience is empty.
    #[error("the audience is empty")]
    EmptyAudience,
    /// No algorithm is accepted.
    #[error("no algorithm is accepted")]
    NoAlgorithms,
    /// HS256 is accepted but no shared secret was given.
    #[error("HS256 is accepted but no hs256_secret is configured")]
    MissingHs256Secret,
    /// The HS256 secret is shorter than 32 bytes (RFC 7518 §3.2: a key of at
    /// least the hash's size).
    #[error("the HS256 secret is shorter than 32 bytes")]
    WeakHs256Secret,
    /// The leeway is over 5 minutes.
    #[error("the leeway must be at most 5 minutes")]
    LeewayTooLarge,
    /// The maximum token lifetime is under 1 second.
    #[error("the maximum token lifetime must be at least 1 second")]
    MaxTokenLifetimeTooShort,
    /// The refetch interval is under 1 second.
    #[error("the refetch interval must be at least 1 second")]
    RefetchIntervalTooShort,
    /// The resource-server key is empty or not a valid header value.
    #[error("the revocation feed key is empty or contains characters not allowed in a header")]
    InvalidFeedKey,
    /// A staleness bound was set without a revocation feed, or under 2 seconds.
    #[error("revocation_max_staleness needs a revocation_feed and must be at least 2 seconds")]
    InvalidStaleness,
    /// A revocation feed is configured but `build` was not called inside a
    /// Tokio runtime, so its task cannot be spawned.
    #[error("a revocation feed needs a Tokio runtime: call build() inside one")]
    NoRuntime,
    /// The default HTTP client could not be built (for instance, TLS roots
    /// could not be loaded).
    #[error("the HTTP client cannot be built: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_to_its_variant() {
        for e in VerifyError::ALL {
            assert_eq!(VerifyError::from_code(e.code()), Some(e));
        }
        assert_eq!(VerifyError::from_code("valid"), None);
    }

    #[test]
    fn only_keys_and_revocations_are_unavailable() {
        let unavailable: Vec<_> = VerifyError::ALL
            .into_iter()
            .filter(VerifyError::is_unavailable)
            .collect();
        assert_eq!(
            unavailable,
            [VerifyError::KeysUnavailable, VerifyError::RevocationsStale]
        );
    }
}
