//! Extractors: typed JSON bodies with problem-document rejections, the
//! client's identity (IP, user agent), and the caller's credentials.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::auth::forward::{Caller, Identified, Presented, Unreadable};
use crate::auth::sessions::Authenticated;
use crate::auth::types::SessionSecret;
use crate::auth::{ClientMeta, Gate};
use crate::error::{Error, unavailable};

/// Longest user agent we record.
const MAX_USER_AGENT: usize = 256;

/// A JSON body of type `T`, which must be a JSON object. Malformed JSON,
/// wrong types and any other top-level value are 400 (serde would otherwise
/// accept a struct written as an array of its fields), a body over the limit
/// 413, a missing JSON content type 415: always a problem document, never
/// axum's plain-text rejection.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json(headers: &HeaderMap) -> bool {
    // An unreadable Content-Type names no JSON: 415, closed.
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge
            } else {
                Error::BadRequest("The request body could not be read.".into())
            }
        })?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::BadRequest("The body must be a JSON object.".into()));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| Error::BadRequest(format!("Invalid JSON body: {e}")))
    }
}

/// The client: its IP address (the socket peer, or from `X-Forwarded-For`
/// when the peer is a trusted proxy) and user agent.
#[derive(Debug, Clone)]
pub struct Client(pub ClientMeta);

impl FromRequestParts<AppState> for Client {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let ip = peer.map(|p| client_ip(p, &parts.headers, &state.web.trusted_proxies));
        // Informational only (shown in "your devices"): an unreadable user
        // agent is recorded as its readable part, never a reason to refuse.
        let user_agent = parts.headers.get(USER_AGENT).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_USER_AGENT)
                .collect()
        });
        Ok(Self(ClientMeta { ip, user_agent }))
    }
}

/// The client IP: walk `X-Forwarded-For` from the right while the hop that
/// added the entry is a trusted proxy; the first address added by an
/// untrusted hop is the client. A peer that is not trusted is the client,
/// whatever it claims.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Bytes, not text: an entry that is not an address (whatever its bytes)
    // ends the chain below, instead of its whole header line being skipped
    // and the walk going on past it.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let hop = std::str::from_utf8(hop).map(str::trim);
        match hop
            .map_err(|_| ())
            .and_then(|h| h.parse::<IpAddr>().map_err(|_| ()))
        {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed entry ends the trusted chain: believe nothing
            // further left.
            Err(_) => break,
        }
    }
    client
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Cookie,
    Bearer,
}

/// The authenticated caller: a handler that takes this cannot run without
/// valid credentials. A bearer token takes precedence over the cookie; a
/// present but invalid credential is a 401, never treated as anonymous.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub auth: Arc<Authenticated>,
    pub credential: Credential,
    /// The effective permissions read with the session (the bearer path
    /// reads them together); `None` until asked for.
    permissions: Option<Arc<[String]>>,
}

impl CurrentUser {
    /// The caller's effective permissions: current as of this request for a
    /// cookie, as of at most `principals::FRESH_FOR` ago for a bearer token
    /// (and at once after a change made through this node).
    ///
    /// # Errors
    /// Store failures (503: never allow, never deny).
    pub async fn permissions(&self, gate: &Gate) -> Result<Arc<[String]>, Error> {
        if let Some(p) = &self.permissions {
            return Ok(p.clone());
        }
        let held = gate
            .permissions_of(self.auth.user.id)
            .await
            .map_err(unavailable)?;
        Ok(held.into())
    }

    /// The 403 for a caller lacking `permissions`: for a bearer token, with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"` naming them
    /// (RFC 6750 §3.1), so a client knows which token to fetch.
    pub fn lacks(&self, detail: &'static str, permissions: &[&str]) -> Error {
        match self.credential {
            Credential::Bearer => Error::InsufficientScope {
                detail,
                scope: permissions.join(" "),
            },
            Credential::Cookie => Error::Forbidden(detail),
        }
    }

    /// Whether the caller holds a permission, by [`CurrentUser::permissions`].
    ///
    /// # Errors
    /// Store failures (503: never allow, never deny).
    pub async fn has_permission(
        &self,
        gate: &Gate,
        permission: &crate::auth::types::Permission,
    ) -> Result<bool, Error> {
        let held = self.permissions(gate).await?;
        Ok(held.iter().any(|p| p == permission.as_str()))
    }
}

impl From<Caller> for CurrentUser {
    fn from(caller: Caller) -> Self {
        Self {
            auth: caller.auth,
            credential: if caller.bearer {
                Credential::Bearer
            } else {
                Credential::Cookie
            },
            permissions: caller.permissions,
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let credential = presented(&parts.headers, state.web.cookie_name);
        match state.gate.identify(credential).await.map_err(unavailable)? {
            // A token issued to an application is for the application and
            // its resource servers (and UserInfo), never for gatehouse's
            // own API: an app must not manage the account it signs in.
            Identified::Caller(caller) if caller.auth.session.link.is_some() => {
                Err(Error::Forbidden(
                    "This access token was issued to an application; gatehouse's own API \
                     takes only the user's own tokens and session.",
                ))
            }
            Identified::Client(_) => Err(Error::Forbidden(
                "This access token is an application's own (client_credentials); gatehouse's \
                 own API takes only a user's tokens and session.",
            )),
            Identified::Caller(caller) => {
                // The request's span (http::count_request) names the user
                // in every later log line of the request.
                tracing::Span::current()
                    .record("user", tracing::field::display(caller.auth.user.id));
                Ok(caller.into())
            }
            refused => Err(refusal(refused)),
        }
    }
}

/// The credential a request carries: a bearer token takes precedence over
/// the cookie; one that cannot be read is said so, never taken as none.
pub fn presented<'h>(headers: &'h HeaderMap, cookie_name: &str) -> Presented<'h> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Presented::Unreadable(Unreadable::TwoAuthorizations);
        }
        // A header that is not a bearer token (another scheme, bytes that
        // are not text) is a 401, never anonymous.
        return bearer_token(value).map_or(
            Presented::Unreadable(Unreadable::NotBearer),
            Presented::Bearer,
        );
    }
    match session_cookie(headers, cookie_name) {
        Ok(Some(secret)) => Presented::Cookie(secret),
        Ok(None) => Presented::Nothing,
        Err(_) => Presented::Unreadable(Unreadable::BadCookie),
    }
}

/// The answer to a credential that names no caller: 400 for two
/// `Authorization` headers (RFC 6750 §3.1 `invalid_request`), 401
/// `invalid_token` for a refused bearer token, else 401.
pub fn refusal(refused: Identified) -> Error {
    match refused {
        Identified::Unreadable(Unreadable::TwoAuthorizations) => {
            Error::InvalidRequest("The request carries more than one Authorization header.")
        }
        Identified::TokenRefused(reason) => {
            tracing::debug!(%reason, "bearer token refused");
            Error::InvalidToken
        }
        Identified::Caller(_)
        | Identified::Client(_)
        | Identified::Nobody
        | Identified::Unreadable(Unreadable::NotBearer | Unreadable::BadCookie) => {
            Error::Unauthorized
        }
    }
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1: the
/// scheme is case-insensitive); `None` for any other scheme or shape.
pub fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Calls `f` with every `name=value` pair of the request's `Cookie`
/// headers, until it returns an error. A header is read lossily, never
/// skipped: browsers send cookies other sites' pages set with UTF-8 values,
/// and one such cookie must not hide ours. Our cookie's name and value are
/// ASCII, so a replaced byte can only make a cookie of our name unparseable
/// (refused), never absent. A header that is valid UTF-8 (the usual case)
/// is borrowed, not copied.
fn each_cookie<E>(
    headers: &HeaderMap,
    mut f: impl FnMut(&str, &str) -> Result<(), E>,
) -> Result<(), E> {
    for h in headers.get_all(COOKIE) {
        let text = String::from_utf8_lossy(h.as_bytes());
        for c in cookie::Cookie::split_parse(text.as_ref()).flatten() {
            f(c.name(), c.value())?;
        }
    }
    Ok(())
}

/// The session secret from the request's cookies: `Ok(None)` when there is
/// no session cookie; `Err` when there is one that cannot be a secret of
/// ours (forged, oversized, or sent twice).
///
/// # Errors
/// [`Error::Unauthorized`] for a malformed or duplicated session cookie.
pub fn session_cookie(headers: &HeaderMap, name: &str) -> Result<Option<SessionSecret>, Error> {
    let mut found = None;
    each_cookie(headers, |n, value| {
        if n != name {
            return Ok(());
        }
        if found.is_some() {
            // Two cookies of our name means someone planted one.
            return Err(Error::Unauthorized);
        }
        found = Some(SessionSecret::parse(value).ok_or(Error::Unauthorized)?);
        Ok(())
    })?;
    Ok(found)
}

/// Whether the request carries a cookie of the given name (well-formed or
/// not): what decides whether the CSRF check applies. It reads the headers
/// as [`session_cookie`] does, so a cookie the session check would see is
/// never hidden from the CSRF check.
pub fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    // `Err` here means "found": it stops the walk at the first match.
    each_cookie(headers, |n, _| if n == name { Err(()) } else { Ok(()) }).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let stranger: IpAddr = "203.0.113.9".parse().expect("ip");
        let h = xff("198.51.100.7, 10.0.0.6");
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // A client cannot prepend its way past the first untrusted hop.
        let h = xff("1.1.1.1, 198.51.100.7");
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        let h = xff("garbage");
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &[]), proxy);
    }

    #[test]
    fn duplicate_or_forged_session_cookies_are_refused() {
        let s = SessionSecret::generate().expect("rng").encode();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; gh={s}")).expect("h"),
        );
        assert!(session_cookie(&h, "gh").expect("ok").is_some());
        h.insert(
            COOKIE,
            HeaderValue::from_str(&format!("gh={s}; gh={s}")).expect("h"),
        );
        assert!(session_cookie(&h, "gh").is_err());
        h.insert(COOKIE, HeaderValue::from_static("gh=forged"));
        assert!(session_cookie(&h, "gh").is_err());
        h.insert(COOKIE, HeaderValue::from_static("other=1"));
        assert!(session_cookie(&h, "gh").expect("ok").is_none());
    }
}

/// A query string read strictly into `T`, a `Deserialize` struct with
/// `deny_unknown_fields` whose `IntoParams` documents the same parameters:
/// a parameter given twice is 400, an unknown one is 400, and so is a
/// value serde cannot take. Fields are strings the handler validates, with
/// messages of its own; whether an empty value counts is each field's rule
/// (see [`empty_is_none`]).
#[derive(Debug)]
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let raw = parts.uri.query().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (name, _) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !seen.insert(name.clone()) {
                return Err(Error::BadRequest(format!(
                    "the query parameter {:?} is given twice",
                    shortened(&name)
                )));
            }
        }
        serde_urlencoded::from_str(raw)
            .map(Self)
            .map_err(|e| Error::BadRequest(format!("the query: {}", shortened(&e.to_string()))))
    }
}

/// For `#[serde(default, deserialize_with = "empty_is_none")]` on an
/// `Option<String>`: an empty value is as good as none (a filter form
/// submitted with a field left blank).
///
/// # Errors
/// When the value is not a string.
pub fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|v| !v.is_empty()))
}

/// At most 100 characters of what a client sent, for a message.
fn shortened(s: &str) -> String {
    s.chars().take(100).collect()
}
