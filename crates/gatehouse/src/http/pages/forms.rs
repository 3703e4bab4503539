//! The pages' extractors: the form body (`Form`), the signed-in visitor
//! (`Viewer`) and the query a page reads (`PageQuery`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use utoipa::{IntoParams, ToSchema};

use super::respond::{PageError, see_other, store_failed};
use super::views::Notice;
use crate::auth::sessions::Authenticated;
use crate::http::{AppState, extract};

/// Where a visitor without a session is sent.
const LOGIN_FOR_ACCOUNT: &str = "/login?return_to=/account";

/// A form body of type `T`: `application/x-www-form-urlencoded` in UTF-8
/// (else 415), at most the router's 64 KiB (else 413), every name and value
/// valid percent-encoded UTF-8, each field at most once, no unknown field
/// and none missing (else 400). `serde_urlencoded` would decode invalid
/// UTF-8 lossily; a password must reach the hasher byte for byte or not at
/// all.
#[derive(Debug)]
pub struct Form<T>(pub T);

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    // An unreadable Content-Type names no form: 415, closed.
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let media_ok = parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    // A charset, if named, must be UTF-8 (WHATWG: the only encoding of
    // urlencoded forms that browsers produce for a UTF-8 page).
    let charset_ok = parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    media_ok && charset_ok
}

/// The name/value pairs of a urlencoded body; `None` when any part is not
/// UTF-8 after percent-decoding.
pub(super) fn form_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    pub(super) fn decode(raw: &[u8]) -> Option<String> {
        let plus_as_space: Vec<u8> = raw
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        String::from_utf8(percent_encoding::percent_decode(&plus_as_space).collect()).ok()
    }
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        if !is_form(req.headers()) {
            return Err(PageError::unsupported());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                PageError::too_large()
            } else {
                PageError::bad_request()
            }
        })?;
        let pairs = form_pairs(&bytes).ok_or_else(PageError::bad_request)?;
        // serde's derive refuses duplicated fields ("duplicate field") and,
        // with `deny_unknown_fields`, unknown ones.
        let fields = MapDeserializer::<_, serde::de::value::Error>::new(pairs.into_iter());
        T::deserialize(fields).map(Self).map_err(|e| {
            tracing::debug!(reason = %e, "form refused");
            PageError::bad_request()
        })
    }
}

/// The live session of the request's cookie, if any. The pages read only
/// the cookie: they are for browsers, and an `Authorization` header is not
/// what a browser sends to a page. A malformed or duplicated cookie counts
/// as none (the visitor is sent to the login page, never let in).
pub(super) async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, PageError> {
    let Ok(Some(secret)) = extract::session_cookie(headers, state.web.cookie_name) else {
        return Ok(None);
    };
    // The principal cache answers as it does for the API (`auth::cookies`).
    Ok(state
        .cookies
        .authenticate(&secret)
        .await
        .map_err(store_failed)?
        .map(|p| Authenticated::clone(&p.auth)))
}

/// The signed-in visitor of an account page or post. Without a live session
/// the request is answered with a redirect to the login page (and a stale
/// cookie is cleared), so a handler taking `Viewer` runs only for a user.
pub(super) struct Viewer(pub(super) Authenticated);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match current_session(state, &parts.headers).await {
            Ok(Some(who)) => Ok(Self(who)),
            Ok(None) => {
                let mut res = see_other(LOGIN_FOR_ACCOUNT);
                if extract::has_cookie(&parts.headers, state.web.cookie_name) {
                    res.headers_mut()
                        .append(SET_COOKIE, state.web.removal_cookie());
                }
                Err(res)
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

/// The query a page reads ([`PageQuery`]); other parameters are ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct PageQueryParams {
    /// Where to go after signing in: a path here or a URL of an allowed
    /// origin; anything else means `/account`.
    #[param(nullable = false)]
    return_to: Option<String>,
    /// A fixed message to show, by name (`registered`, `signed-out`, …);
    /// unknown names show nothing.
    #[param(nullable = false)]
    notice: Option<String>,
    /// `/login` only: `login` shows the form even to a signed-in visitor
    /// (an application asked for a fresh sign-in).
    #[param(nullable = false)]
    prompt: Option<String>,
    /// `/login` only: the email to fill in.
    #[param(nullable = false)]
    login_hint: Option<String>,
}

/// The query of a page: `return_to` (taken only when given once) and
/// `notice`. Anything else is ignored: links from elsewhere may carry
/// tracking parameters, and a GET changes nothing.
#[derive(Debug, Default)]
pub(super) struct PageQuery {
    pub(super) return_to: Option<String>,
    pub(super) notice: Option<Notice>,
    /// `prompt=login`: show the login form even to a signed-in visitor.
    pub(super) force_login: bool,
    pub(super) login_hint: Option<String>,
}

impl PageQuery {
    pub(super) fn parse(query: Option<&str>) -> Self {
        let mut out = Self::default();
        let mut return_tos = 0;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "return_to" => {
                    return_tos += 1;
                    out.return_to = Some(v.into_owned());
                }
                "notice" => out.notice = Notice::parse(&v),
                "prompt" => out.force_login = v == "login",
                "login_hint" if v.len() <= 320 => out.login_hint = Some(v.into_owned()),
                _ => {}
            }
        }
        // Two answers to "where to" is an ambiguity an attacker would
        // exploit (one checked, the other followed): use neither.
        if return_tos != 1 {
            out.return_to = None;
        }
        out
    }
}

pub(super) fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

pub(super) fn registration_open(state: &AppState) -> bool {
    state.accounts.registration_open()
}

/// A post with no fields (the sign-out buttons). Taking it still holds the
/// body to the form rules: the right content type, nothing unexpected.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NoFields {}

#[cfg(test)]
mod tests {
    use axum::http::header::CONTENT_TYPE;
    use axum::http::{HeaderMap, HeaderValue};

    use super::{PageQuery, is_form};
    use crate::http::pages::views::Notice;

    #[test]
    fn only_urlencoded_utf8_forms_are_read() {
        let mut h = HeaderMap::new();
        for (ct, ok) in [
            ("application/x-www-form-urlencoded", true),
            ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", true),
            (
                "application/x-www-form-urlencoded; charset=iso-8859-1",
                false,
            ),
            ("multipart/form-data; boundary=x", false),
            ("application/json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_form(&h), ok, "{ct}");
        }
        h.remove(CONTENT_TYPE);
        assert!(!is_form(&h));
    }

    #[test]
    fn a_twice_given_return_to_is_ignored() {
        let q = PageQuery::parse(Some("return_to=/a&return_to=//evil.example"));
        assert_eq!(q.return_to, None);
        let q = PageQuery::parse(Some("return_to=%2Fa&notice=signed-out&utm=x"));
        assert_eq!(q.return_to.as_deref(), Some("/a"));
        assert_eq!(q.notice, Some(Notice::SignedOut));
    }
}
