//! Refusals as HTTP answers: the bearer token's extraction from a request
//! (RFC 6750 §2.1), and [`Rejection`], which becomes a 401, 403 or 503 with an
//! RFC 9457 problem document and the RFC 6750 §3 challenge, exactly as
//! gatehouse itself answers.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::claims::Claims;
use crate::error::VerifyError;
use crate::verifier::Verifier;

/// The challenge of every 401 (RFC 6750 §3).
const CHALLENGE: &str = r#"Bearer realm="gatehouse""#;
/// A token was presented and refused (RFC 6750 §3.1).
const CHALLENGE_INVALID: &str = r#"Bearer realm="gatehouse", error="invalid_token""#;
/// The request itself is malformed (RFC 6750 §3.1).
const CHALLENGE_INVALID_REQUEST: &str = r#"Bearer realm="gatehouse", error="invalid_request""#;

/// Why a request was refused, ready to be answered. It never carries the
/// token: the answer tells the client what to do, not what it sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// No `Authorization: Bearer` header (or another scheme): 401.
    MissingToken,
    /// More than one `Authorization` header: 400.
    InvalidRequest,
    /// A token that fails verification: 401 `invalid_token`.
    InvalidToken(VerifyError),
    /// Keys or revocations unavailable: 503.
    Unavailable(VerifyError),
    /// A valid token without the permission: 403 `insufficient_scope`.
    InsufficientScope(Arc<str>),
    /// A permission guard with no claims and no verifier to get them: 500.
    Misconfigured,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::MissingToken => f.write_str("Rejection::MissingToken"),
            Kind::InvalidRequest => f.write_str("Rejection::InvalidRequest"),
            Kind::InvalidToken(e) => write!(f, "Rejection::InvalidToken({})", e.code()),
            Kind::Unavailable(e) => write!(f, "Rejection::Unavailable({})", e.code()),
            Kind::InsufficientScope(p) => write!(f, "Rejection::InsufficientScope({p})"),
            Kind::Misconfigured => f.write_str("Rejection::Misconfigured"),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.parts().2)
    }
}

impl std::error::Error for Rejection {}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        let kind = if e.is_unavailable() {
            Kind::Unavailable(e)
        } else {
            Kind::InvalidToken(e)
        };
        Self { kind }
    }
}

impl Rejection {
    pub(crate) fn missing_token() -> Self {
        Self {
            kind: Kind::MissingToken,
        }
    }

    pub(crate) fn insufficient_scope(permission: Arc<str>) -> Self {
        Self {
            kind: Kind::InsufficientScope(permission),
        }
    }

    pub(crate) fn misconfigured() -> Self {
        Self {
            kind: Kind::Misconfigured,
        }
    }

    /// The status the answer carries: 400, 401, 403, 500 or 503.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The verdict on the token, when one was presented and judged.
    #[must_use]
    pub fn verify_error(&self) -> Option<VerifyError> {
        match &self.kind {
            Kind::InvalidToken(e) | Kind::Unavailable(e) => Some(*e),
            _ => None,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match &self.kind {
            Kind::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication is required.",
            ),
            Kind::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "The request carries more than one Authorization header.",
            ),
            // One answer for every reason, as gatehouse gives: the reason is
            // for logs, not for whoever holds the token.
            Kind::InvalidToken(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid-token",
                "The access token is invalid, expired or revoked.",
            ),
            Kind::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The access token cannot be verified right now; try again shortly.",
            ),
            Kind::InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The access token lacks the permission this resource requires.",
            ),
            Kind::Misconfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "An unexpected error occurred.",
            ),
        }
    }

    /// The answer: the status, an RFC 9457 problem document, `Cache-Control:
    /// no-store`, and `WWW-Authenticate` (401, 403, 400) or `Retry-After`
    /// (503), for any body type that can be made from a `String`.
    #[must_use]
    pub fn to_response<B: From<String>>(&self) -> http::Response<B> {
        let (status, slug, detail) = self.parts();
        let problem = serde_json::json!({
            "type": format!("urn:gatehouse:problem:{slug}"),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = http::Response::new(B::from(problem.to_string()));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self.kind {
            Kind::MissingToken => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE),
                );
            }
            Kind::InvalidToken(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_INVALID),
                );
            }
            Kind::InvalidRequest => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(CHALLENGE_INVALID_REQUEST),
                );
            }
            Kind::InsufficientScope(permission) => {
                h.insert(header::WWW_AUTHENTICATE, insufficient_scope(permission));
            }
            Kind::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Kind::Misconfigured => {}
        }
        response
    }
}

/// RFC 6750 §3.1 `insufficient_scope`, naming the scope needed when it is a
/// valid scope-token (RFC 6749 §3.3), which also makes it safe inside the
/// quoted string.
fn insufficient_scope(permission: &str) -> HeaderValue {
    const BASE: &str = r#"Bearer realm="gatehouse", error="insufficient_scope""#;
    if is_scope_token(permission)
        && let Ok(v) = HeaderValue::from_str(&format!(r#"{BASE}, scope="{permission}""#))
    {
        return v;
    }
    HeaderValue::from_static(BASE)
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub(crate) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The token of the request's `Authorization: Bearer` header, read as
/// gatehouse reads it (RFC 6750 §2.1: the scheme is case-insensitive).
///
/// # Errors
/// A 401 without `error` when there is no such header or it is of another
/// scheme or shape (no token was presented); a 400 when there are several.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(header::AUTHORIZATION) {
            Rejection {
                kind: Kind::InvalidRequest,
            }
        } else {
            Rejection::missing_token()
        });
    };
    // A header that is not text cannot hold a bearer token: the same 401 as
    // no token, never a pass.
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    });
    token.ok_or_else(Rejection::missing_token)
}

/// Verifies the request's bearer token.
///
/// # Errors
/// The [`Rejection`] to answer with.
pub(crate) async fn authenticate(
    verifier: &Verifier,
    headers: &HeaderMap,
) -> Result<Claims, Rejection> {
    let token = bearer_token(headers)?;
    verifier.verify(token).await.map_err(Rejection::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER   abc  "])), Ok("abc"));
    }

    #[test]
    fn other_schemes_and_shapes_count_as_no_token() {
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer    ",
            "Bearerabc",
            "abc",
            "",
        ] {
            assert_eq!(
                bearer_token(&headers(&[v])),
                Err(Rejection::missing_token()),
                "{v:?}"
            );
        }
        assert_eq!(
            bearer_token(&HeaderMap::new()),
            Err(Rejection::missing_token())
        );
    }

    #[test]
    fn two_authorization_headers_are_a_bad_request() {
        let r = bearer_token(&headers(&["Bearer a", "Bearer b"])).expect_err("two");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    fn body(r: &http::Response<String>) -> serde_json::Value {
        serde_json::from_str(r.body()).expect("problem JSON")
    }

    #[test]
    fn refusals_become_problem_documents_with_their_challenge() {
        let r: http::Response<String> = Rejection::missing_token().to_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], CHALLENGE);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(body(&r)["status"], 401);
        assert_eq!(body(&r)["type"], "urn:gatehouse:problem:unauthorized");

        let r: http::Response<String> = Rejection::from(VerifyError::Expired).to_response();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="gatehouse", error="invalid_token""#
        );
        assert_eq!(body(&r)["title"], "Unauthorized");

        for e in [VerifyError::KeysUnavailable, VerifyError::RevocationsStale] {
            let r: http::Response<String> = Rejection::from(e).to_response();
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()[header::RETRY_AFTER], "1");
            assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        }
    }

    #[test]
    fn insufficient_scope_names_the_permission_when_it_is_a_scope_token() {
        let r: http::Response<String> =
            Rejection::insufficient_scope("orders:read".into()).to_response();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="gatehouse", error="insufficient_scope", scope="orders:read""#
        );
        for odd in ["a b", "a\"b", "a\\b", ""] {
            let r: http::Response<String> = Rejection::insufficient_scope(odd.into()).to_response();
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                r#"Bearer realm="gatehouse", error="insufficient_scope""#
            );
        }
    }
}
