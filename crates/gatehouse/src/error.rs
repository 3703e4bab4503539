//! The HTTP layer's one error type and its RFC 9457 problem documents.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::FieldError;
use crate::auth::accounts::LoginError;
use crate::auth::accounts::{ChangePasswordError, RegisterError};

/// What went wrong, named by what the client should learn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that are not (or no longer) valid.
    #[error("authentication required")]
    Unauthorized,
    /// A bearer token was presented and rejected (RFC 6750 §3.1).
    #[error("invalid token")]
    InvalidToken,
    /// Wrong email or password: the same answer for every cause.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A wrong current password on a re-authenticating request.
    #[error("wrong password")]
    WrongPassword,
    /// The caller's session proved one factor where a second is required
    /// (RFC 9470 `insufficient_user_authentication`).
    #[error("a second factor is required")]
    InsufficientAuthentication,
    /// A second step's `mfa_token` is unknown, expired or spent.
    #[error("invalid mfa_token")]
    InvalidMfaToken,
    /// A wrong second-step code (401: it is a login's answer).
    #[error("invalid code")]
    InvalidCode,
    /// The password was right but the address is not verified
    /// (`email_verification = "required"`).
    #[error("email not verified")]
    EmailNotVerified,
    /// A mailed link's token is unknown, spent, expired or void (400).
    #[error("invalid link")]
    InvalidMailToken,
    /// A wrong code on a request that changes the caller's factors (400).
    #[error("wrong code")]
    WrongCode,
    #[error("{0}")]
    Forbidden(&'static str),
    /// A bearer caller lacks the permissions `scope` names (RFC 6750 §3.1
    /// `insufficient_scope`): a 403 that says which token would do.
    #[error("{detail}")]
    InsufficientScope { detail: &'static str, scope: String },
    /// A request whose credentials cannot be read as one (two
    /// `Authorization` headers): RFC 6750 §3.1 `invalid_request`, 400.
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    /// Input that parsed but breaks a rule (422).
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// Input that does not parse (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body did not arrive within `request_body_timeout` (408).
    #[error("request body timed out")]
    RequestTimeout,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("too many requests")]
    Throttled { retry_after: Duration },
    /// A dependency (store, hashing pool) cannot serve now; fail closed.
    #[error("service unavailable")]
    Unavailable,
    /// `/readyz`: a store does not answer; `checks` says which.
    #[error("not ready")]
    NotReady {
        detail: String,
        checks: serde_json::Value,
    },
    /// A failure that is not a dependency's: a bug, answered 500. Only by
    /// name: an `anyhow::Error` passed up with `?` becomes 503 when a store
    /// failed (see the `From` below).
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// An error passed up with `?`: a store that failed (by the type of any
/// error in its chain: SQL, Redis, a timeout, or a node that cannot prove
/// it knows every revocation) is 503, whatever the call site remembered;
/// anything else is a bug, 500.
impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        if is_dependency_failure(&e) {
            unavailable(e)
        } else {
            Self::Internal(e)
        }
    }
}

/// Whether a store or another dependency failed, rather than gatehouse.
pub fn is_dependency_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<sqlx::Error>()
            || cause.is::<redis::RedisError>()
            || cause.is::<tokio::time::error::Elapsed>()
            || cause.is::<crate::revocation::RevocationsUnproven>()
    })
}

#[derive(Serialize)]
struct FieldProblem<'a> {
    field: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<FieldProblem<'a>>>,
    /// RFC 9457 §3.2 extension member of readiness problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<&'a serde_json::Value>,
}

/// The `WWW-Authenticate` challenge of every 401 (RFC 6750 §3).
pub const CHALLENGE: &str = r#"Bearer realm="gatehouse""#;
const CHALLENGE_INVALID: &str = r#"Bearer realm="gatehouse", error="invalid_token""#;
const CHALLENGE_BAD_REQUEST: &str = r#"Bearer realm="gatehouse", error="invalid_request""#;
const CHALLENGE_SCOPE: &str = r#"Bearer realm="gatehouse", error="insufficient_scope""#;
const CHALLENGE_MFA: &str = r#"Bearer realm="gatehouse", error="insufficient_user_authentication", error_description="A second factor is required""#;

impl Error {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        use Error as E;
        match self {
            E::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication is required.",
            ),
            E::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "The access token is invalid, expired or revoked.",
            ),
            E::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "The email or password is incorrect.",
            ),
            E::WrongPassword => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "The current password is incorrect.",
            ),
            E::InsufficientAuthentication => (
                StatusCode::UNAUTHORIZED,
                "insufficient-user-authentication",
                "Sign in with a second factor to do this.",
            ),
            E::InvalidMfaToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-mfa-token",
                "The mfa_token is unknown, expired or spent; sign in again.",
            ),
            E::InvalidCode => (
                StatusCode::UNAUTHORIZED,
                "invalid-code",
                "The code is incorrect or was used before.",
            ),
            E::EmailNotVerified => (
                StatusCode::FORBIDDEN,
                "email-not-verified",
                "The email address is not verified: follow the link in the verification mail just sent, then sign in again.",
            ),
            E::InvalidMailToken => (
                StatusCode::BAD_REQUEST,
                "invalid-mail-token",
                "The link is invalid, was used, or has expired; ask for a new one.",
            ),
            E::WrongCode => (
                StatusCode::BAD_REQUEST,
                "wrong-code",
                "The code is incorrect or was used before.",
            ),
            E::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d),
            E::InsufficientScope { detail, .. } => {
                (StatusCode::FORBIDDEN, "insufficient-scope", detail)
            }
            E::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid-request", d),
            E::NotFound => (StatusCode::NOT_FOUND, "not-found", "No such resource."),
            E::Conflict(d) => (StatusCode::CONFLICT, "conflict", d),
            E::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Some fields are invalid.",
            ),
            E::BadRequest(d) => (StatusCode::BAD_REQUEST, "bad-request", d.as_str()),
            E::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "The request body exceeds 64 KiB.",
            ),
            E::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "The request body did not arrive in time.",
            ),
            E::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Send the body as application/json.",
            ),
            E::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "This method is not allowed on this resource.",
            ),
            E::Throttled { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Too many attempts; try again later.",
            ),
            E::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service cannot answer right now; try again shortly.",
            ),
            E::NotReady { detail, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not-ready",
                detail.as_str(),
            ),
            E::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "An unexpected error occurred.",
            ),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Internal(e) = &self {
            // The whole cause chain goes to the log, none of it to the client.
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let (status, slug, detail) = self.parts();
        let kind = format!("urn:gatehouse:problem:{slug}");
        let errors = match &self {
            Error::Invalid(errors) => Some(
                errors
                    .iter()
                    .map(|e| FieldProblem {
                        field: e.field,
                        message: &e.message,
                    })
                    .collect(),
            ),
            _ => None,
        };
        let problem = Problem {
            kind: &kind,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            errors,
            checks: match &self {
                Error::NotReady { checks, .. } => Some(checks),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Error::InvalidToken => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_INVALID),
                );
            }
            Error::InsufficientAuthentication => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_MFA),
                );
            }
            Error::InvalidRequest(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_BAD_REQUEST),
                );
            }
            Error::InsufficientScope { scope, .. } => {
                // Permissions are `[A-Za-z0-9_.:*/-]` (checked when a role
                // or rule names them), so they fit a quoted string as they
                // are; should one not, the challenge goes without `scope`.
                let value =
                    HeaderValue::from_str(&format!(r#"{CHALLENGE_SCOPE}, scope="{scope}""#))
                        .unwrap_or(HeaderValue::from_static(CHALLENGE_SCOPE));
                h.insert(header::WWW_AUTHENTICATE, value);
            }
            e if e.parts().0 == StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE),
                );
            }
            Error::Throttled { retry_after } => {
                // Round up: a client that waits exactly this long must succeed.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Error::Unavailable | Error::NotReady { .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // RFC 9110 §15.5.9: the rest of the body may still be on its
            // way; the connection cannot carry another request.
            Error::RequestTimeout => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        res
    }
}

impl From<LoginError> for Error {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => Self::InvalidCredentials,
            LoginError::Throttled { retry_after } => Self::Throttled { retry_after },
            LoginError::Busy => Self::Unavailable,
            LoginError::Store(e) => unavailable(e),
            LoginError::EmailNotVerified => Self::EmailNotVerified,
            // Answered 200 by the login endpoints before any conversion;
            // anywhere else no session came of it.
            LoginError::SecondFactorRequired(_) => Self::InsufficientAuthentication,
        }
    }
}

impl From<crate::auth::mfa::StepError> for Error {
    fn from(e: crate::auth::mfa::StepError) -> Self {
        use crate::auth::mfa::StepError as E;
        match e {
            E::InvalidToken => Self::InvalidMfaToken,
            E::WrongCode => Self::InvalidCode,
            E::Throttled { retry_after } => Self::Throttled { retry_after },
            E::Store(e) => unavailable(e),
        }
    }
}

impl From<crate::auth::MailError> for Error {
    fn from(e: crate::auth::MailError) -> Self {
        use crate::auth::MailError as E;
        match e {
            E::Off => Self::NotFound,
            E::Invalid(errors) => Self::Invalid(errors),
            E::Throttled { retry_after } => Self::Throttled { retry_after },
            E::InvalidToken => Self::InvalidMailToken,
            E::Busy => Self::Unavailable,
            E::Store(e) => unavailable(e),
        }
    }
}

impl From<crate::auth::mfa::FactorError> for Error {
    fn from(e: crate::auth::mfa::FactorError) -> Self {
        use crate::auth::mfa::FactorError as E;
        match e {
            E::AlreadyEnrolled => Self::Conflict("TOTP is enrolled already; remove it first."),
            E::NotEnrolled => Self::NotFound,
            E::WrongCode => Self::WrongCode,
            E::WrongPassword => Self::WrongPassword,
            E::Throttled { retry_after } => Self::Throttled { retry_after },
            E::Busy => Self::Unavailable,
            E::Store(e) => unavailable(e),
        }
    }
}

impl From<RegisterError> for Error {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Closed => Self::Forbidden("Registration is closed."),
            RegisterError::Invalid(errors) => Self::Invalid(errors),
            RegisterError::EmailTaken => {
                Self::Conflict("An account with this email already exists.")
            }
            RegisterError::UnknownRole(r) => Self::Invalid(vec![FieldError::new(
                "roles",
                format!("unknown role {r:?}"),
            )]),
            RegisterError::Throttled { retry_after } => Self::Throttled { retry_after },
            RegisterError::Busy => Self::Unavailable,
            RegisterError::Store(e) => unavailable(e),
        }
    }
}

impl From<ChangePasswordError> for Error {
    fn from(e: ChangePasswordError) -> Self {
        match e {
            ChangePasswordError::WrongPassword => Self::WrongPassword,
            ChangePasswordError::Throttled { retry_after } => Self::Throttled { retry_after },
            ChangePasswordError::Invalid(errors) => Self::Invalid(errors),
            ChangePasswordError::Busy => Self::Unavailable,
            ChangePasswordError::Store(e) => unavailable(e),
        }
    }
}

impl From<crate::model::cursor::PageError> for Error {
    fn from(e: crate::model::cursor::PageError) -> Self {
        use crate::model::cursor::PageError;
        match e {
            PageError::BadCursor => Self::BadRequest(e.to_string()),
            PageError::Store(e) => unavailable(e),
        }
    }
}

/// A store failure: logged with its cause chain, answered with 503 (fail
/// closed: never "let them in", never a misleading 401).
pub fn unavailable(e: anyhow::Error) -> Error {
    if e.is::<crate::revocation::RevocationsUnproven>() {
        // Said once, when the node became degraded (fanout.rs); not again
        // for every request it refuses meanwhile.
        tracing::debug!(error = %e, "request refused");
    } else {
        tracing::error!(error = format!("{e:#}"), "store unavailable");
    }
    Error::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    fn status(e: Error) -> StatusCode {
        e.into_response().status()
    }

    #[tokio::test]
    async fn store_failures_passed_up_with_question_mark_are_503_and_bugs_500() {
        let sql: anyhow::Result<()> = Err(sqlx::Error::PoolTimedOut).context("reading a user");
        let sql = sql.context("logging in").expect_err("an error");
        assert_eq!(status(Error::from(sql)), StatusCode::SERVICE_UNAVAILABLE);
        let redis = redis::RedisError::from((redis::ErrorKind::Io, "connection refused"));
        let redis = anyhow::Error::new(redis).context("reading a session from Redis");
        assert_eq!(status(Error::from(redis)), StatusCode::SERVICE_UNAVAILABLE);
        let elapsed = tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>())
            .await
            .expect_err("times out");
        let elapsed = anyhow::Error::new(elapsed).context("counting sessions");
        assert_eq!(
            status(Error::from(elapsed)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let unproven = anyhow::Error::new(crate::revocation::RevocationsUnproven {
            max_staleness: std::time::Duration::from_secs(5),
        });
        assert_eq!(
            status(Error::from(unproven)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let bug = anyhow::anyhow!("a signing key that does not parse");
        assert_eq!(status(Error::from(bug)), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
