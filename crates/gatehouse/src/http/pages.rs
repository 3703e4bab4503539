//! The hosted pages: `/login`, `/register`, `/account` and the form posts
//! behind them, rendered on the server for browsers without any JavaScript.
//!
//! They are a second face of the same domain: every handler calls the
//! functions the JSON API calls (`Auth::login`, `register`,
//! `live_sessions`, `end_session`, `end_sessions_of`, `change_password`) and
//! hands out the same session cookie. Forms post
//! `application/x-www-form-urlencoded` and every successful post answers
//! 303 See Other (Post/Redirect/Get), so reloading a page never resubmits.
//!
//! Protection: the CSRF layer (`http::csrf_guard`) refuses every form post
//! whose `Origin` is not allowed, or that has no `Origin` and no
//! `Sec-Fetch-Site: same-origin` ([`form_post_is_same_origin`]); every page
//! carries a strict Content-Security-Policy, `X-Frame-Options: DENY` and
//! `Cache-Control: no-store` ([`page_headers`]); `return_to` goes through
//! [`ReturnTo`], so a login never redirects off the allowed origins.

mod return_to;
mod views;

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, ORIGIN, REFERRER_POLICY,
    RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use maud::Markup;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use return_to::ReturnTo;
use views::Notice;

use super::extract::{self, Client};
use super::openapi as oa;
use super::{AppState, WebSettings};
use crate::auth::FieldError;
use crate::auth::accounts::{ChangePasswordError, RegisterError, Registrar};
use crate::auth::audit::{Actor, Ending};
use crate::auth::sessions::{Authenticated, LoginError};
use crate::auth::types::{Password, SessionId};
use crate::config::Registration;
use crate::error::CHALLENGE;

/// Where a visitor without a session is sent.
const LOGIN_FOR_ACCOUNT: &str = "/login?return_to=/account";

/// The one message of every failed login: unknown email, wrong password and
/// disabled account read alike (no account enumeration).
const INVALID_LOGIN: &str = "The email or password is incorrect.";

const UNAVAILABLE: &str = "The service cannot answer right now. Try again in a moment.";

/// The pages' router; `web` decides the Content-Security-Policy (a login
/// may redirect to an allowed origin, which `form-action` must permit).
pub fn router(web: &WebSettings) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login_page, login))
        .routes(routes!(register_page, register))
        .routes(routes!(account))
        .routes(routes!(end_session))
        .routes(routes!(end_others))
        .routes(routes!(change_password))
        .routes(routes!(logout))
        .layer(middleware::from_fn_with_state(
            content_security_policy(web),
            page_headers,
        ))
        .routes(routes!(stylesheet))
}

/// The query a page reads ([`PageQuery`]); other parameters are ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageQueryParams {
    /// Where to go after signing in: a path here or a URL of an allowed
    /// origin; anything else means `/account`.
    #[param(nullable = false)]
    return_to: Option<String>,
    /// A fixed message to show, by name (`registered`, `signed-out`, …);
    /// unknown names show nothing.
    #[param(nullable = false)]
    notice: Option<String>,
}

/// The query of the account page.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct NoticeParam {
    /// A fixed message to show, by name (`session-ended`,
    /// `others-ended`, `password-changed`).
    #[param(nullable = false)]
    notice: Option<String>,
}

/// Whether `path` is one of the pages' form posts, which the CSRF layer
/// guards whether or not a cookie rides along: a forged post to `/login` or
/// `/register` needs no cookie to do harm (login CSRF).
pub fn is_form_path(path: &str) -> bool {
    matches!(path, "/login" | "/register" | "/logout") || path.starts_with("/account/")
}

/// The CSRF rule of form posts, stricter than the API's: browsers send
/// `Origin` on every form post (Fetch standard, "append a request `Origin`
/// header"), so a missing one is refused, unless the browser vouches with
/// `Sec-Fetch-Site: same-origin` (Fetch Metadata). The pages' `Referrer-Policy:
/// same-origin` keeps browsers sending the real origin (with `no-referrer`
/// they would send `Origin: null`, which is refused).
pub fn form_post_is_same_origin(headers: &HeaderMap, allowed: &HashSet<String>) -> bool {
    match headers.get(ORIGIN) {
        // An unreadable Origin is no allowed origin: refused.
        Some(origin) => origin.to_str().is_ok_and(|o| allowed.contains(o)),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

/// The 403 page of a refused cross-origin form post, with the pages'
/// headers (the CSRF layer answers before the pages' own layer runs).
pub fn refused(web: &WebSettings) -> Response {
    let mut res = PageError::forbidden().into_response();
    set_page_headers(res.headers_mut(), content_security_policy(web));
    res
}

/// The page of a form post that the router's body limits refuse before its
/// handler runs: 413 when `timed_out` is false (a declared body over
/// 64 KiB), else 408 (a body that did not arrive in time). With the pages'
/// headers, as [`refused`].
pub fn refused_body(web: &WebSettings, timed_out: bool) -> Response {
    let page = if timed_out {
        PageError::timed_out()
    } else {
        PageError::too_large()
    };
    let mut res = page.into_response();
    set_page_headers(res.headers_mut(), content_security_policy(web));
    res
}

/// `default-src 'none'`: the pages load nothing but their stylesheet, run no
/// script, cannot be framed (clickjacking), and their forms post only here,
/// or (through a login's redirect) to an allowed origin.
fn content_security_policy(web: &WebSettings) -> HeaderValue {
    const BASE: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
        frame-ancestors 'none'; base-uri 'none'";
    let mut origins: Vec<&str> = web.allowed_origins.iter().map(String::as_str).collect();
    origins.sort_unstable();
    let policy = format!("{BASE}; form-action 'self' {}", origins.join(" "));
    // Allowed origins were parsed at start-up (scheme://host[:port]); should
    // one not fit in a header, fall back to this server alone.
    HeaderValue::from_str(policy.trim_end()).unwrap_or_else(|_| {
        HeaderValue::from_static(concat!(
            "default-src 'none'; style-src 'self'; img-src 'self'; ",
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ))
    })
}

fn set_page_headers(h: &mut HeaderMap, csp: HeaderValue) {
    h.insert(CONTENT_SECURITY_POLICY, csp);
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: see `form_post_is_same_origin`.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Pages show emails and devices, and carry cookies: never cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The security headers of every page answer, errors and redirects included.
async fn page_headers(State(csp): State<HeaderValue>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    set_page_headers(res.headers_mut(), csp);
    res
}

/// The pages' one stylesheet.
#[utoipa::path(
    get,
    path = "/assets/gatehouse.css",
    tag = "pages",
    operation_id = "stylesheet",
    responses(
        (status = 200, description = "The stylesheet", content_type = "text/css", body = String,
            headers(("Cache-Control" = String, description = "`public, max-age=3600`"))),
    )
)]
async fn stylesheet() -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        views::STYLESHEET,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// 303 See Other: after a post, the browser fetches `location` with GET.
fn see_other(location: &str) -> Response {
    // Every location is ours or a re-serialised URL (ASCII); a value that
    // still does not fit a header goes to the account page.
    let value =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/account"));
    (StatusCode::SEE_OTHER, [(LOCATION, value)]).into_response()
}

/// RFC 9110 §15.5.2: a 401 carries a challenge; the API's, for one rule.
fn with_challenge(mut res: Response) -> Response {
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    res
}

fn with_retry_after(mut res: Response, after: Duration) -> Response {
    // Round up: a browser that waits exactly this long must succeed.
    let secs = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// "Try again in 15 minutes", for a throttled form.
fn try_again_in(after: Duration) -> String {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    if secs < 60 {
        format!("Too many attempts. Try again in {} seconds.", secs.max(1))
    } else {
        let mins = secs.div_ceil(60);
        let unit = if mins == 1 { "minute" } else { "minutes" };
        format!("Too many attempts. Try again in {mins} {unit}.")
    }
}

/// A page that is only an error: what a malformed post, an unknown route
/// parameter or an outage answers. Never echoes internal error text.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    text: &'static str,
}

impl PageError {
    fn bad_request() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            text: "The form could not be read. Go back, reload the page and try again.",
        }
    }

    fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            title: "Too large",
            text: "The form was larger than 64 KiB.",
        }
    }

    fn timed_out() -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            title: "Too slow",
            text: "The form did not arrive in time. Go back and try again.",
        }
    }

    fn unsupported() -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            title: "Unsupported form",
            text: "Send the form as application/x-www-form-urlencoded in UTF-8.",
        }
    }

    fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            text: "There is no such page.",
        }
    }

    fn forbidden() -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            title: "Refused",
            text: "This form was sent from another site, so it was refused. \
                   Open this site's own page and try again.",
        }
    }

    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Unavailable",
            text: UNAVAILABLE,
        }
    }
}

/// A store failure: logged with its cause, answered 503 (fail closed).
fn store_failed(e: anyhow::Error) -> PageError {
    let _ = crate::error::unavailable(e);
    PageError::unavailable()
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let res = html(self.status, views::message(self.title, self.text));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            return with_retry_after(res, Duration::from_secs(1));
        }
        res
    }
}

// ---------------------------------------------------------------------------
// Extractors
// ---------------------------------------------------------------------------

/// A form body of type `T`: `application/x-www-form-urlencoded` in UTF-8
/// (else 415), at most the router's 64 KiB (else 413), every name and value
/// valid percent-encoded UTF-8, each field at most once, no unknown field
/// and none missing (else 400). `serde_urlencoded` would decode invalid
/// UTF-8 lossily; a password must reach the hasher byte for byte or not at
/// all.
#[derive(Debug)]
pub struct Form<T>(pub T);

fn is_form(headers: &HeaderMap) -> bool {
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
fn form_pairs(body: &[u8]) -> Option<Vec<(String, String)>> {
    fn decode(raw: &[u8]) -> Option<String> {
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
async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Authenticated>, PageError> {
    let Ok(Some(secret)) = extract::session_cookie(headers, state.web.cookie_name) else {
        return Ok(None);
    };
    state
        .auth
        .authenticate_session(&secret)
        .await
        .map_err(store_failed)
}

/// The signed-in visitor of an account page or post. Without a live session
/// the request is answered with a redirect to the login page (and a stale
/// cookie is cleared), so a handler taking `Viewer` runs only for a user.
struct Viewer(Authenticated);

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

/// The query of a page: `return_to` (taken only when given once) and
/// `notice`. Anything else is ignored: links from elsewhere may carry
/// tracking parameters, and a GET changes nothing.
#[derive(Debug, Default)]
struct PageQuery {
    return_to: Option<String>,
    notice: Option<Notice>,
}

impl PageQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut out = Self::default();
        let mut return_tos = 0;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "return_to" => {
                    return_tos += 1;
                    out.return_to = Some(v.into_owned());
                }
                "notice" => out.notice = Notice::parse(&v),
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

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn registration_open(state: &AppState) -> bool {
    state.auth.policy().registration == Registration::Open
}

// ---------------------------------------------------------------------------
// Login and logout
// ---------------------------------------------------------------------------

/// `GET /login`: the form; a visitor already signed in goes straight on.
#[utoipa::path(
    get,
    path = "/login",
    tag = "pages",
    operation_id = "loginPage",
    params(PageQueryParams),
    responses(
        (status = 200, description = "The sign-in form", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 503, response = oa::PageError),
    )
)]
async fn login_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let q = PageQuery::parse(query.as_deref());
    let return_to = ReturnTo::parse_or_default(q.return_to.as_deref(), &state.web.allowed_origins);
    if current_session(&state, &headers).await?.is_some() {
        return Ok(see_other(return_to.as_str()));
    }
    Ok(html(
        StatusCode::OK,
        views::login(&views::LoginView {
            email: "",
            return_to: &return_to,
            error: None,
            notice: q.notice,
            registration_open: registration_open(&state),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    email: String,
    password: String,
    /// Absent and empty alike mean the account page.
    #[serde(default)]
    return_to: String,
}

/// `POST /login`: a new session in the cookie and 303 to `return_to`
/// (checked again here: the hidden field is the client's to forge).
#[utoipa::path(
    post,
    path = "/login",
    tag = "pages",
    operation_id = "loginForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The form again, with one message for every failure",
            content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The form again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The form again: the service cannot answer",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "`1`"))),
    )
)]
async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<LoginForm>,
) -> Response {
    let return_to =
        ReturnTo::parse_or_default(non_empty(&form.return_to), &state.web.allowed_origins);
    let failed = |status: StatusCode, message: &str| {
        html(
            status,
            views::login(&views::LoginView {
                email: form.email.trim(),
                return_to: &return_to,
                error: Some(message),
                notice: None,
                registration_open: registration_open(&state),
            }),
        )
    };
    match state
        .auth
        .login(&form.email, Password::new(form.password), &client)
        .await
    {
        Ok((_, new)) => {
            let cookie = state
                .web
                .session_cookie(&new.secret, &new.record, new.record.created_at);
            let mut res = see_other(return_to.as_str());
            res.headers_mut().append(SET_COOKIE, cookie);
            res
        }
        Err(LoginError::InvalidCredentials) => {
            with_challenge(failed(StatusCode::UNAUTHORIZED, INVALID_LOGIN))
        }
        Err(LoginError::Throttled { retry_after }) => with_retry_after(
            failed(StatusCode::TOO_MANY_REQUESTS, &try_again_in(retry_after)),
            retry_after,
        ),
        Err(LoginError::Busy) => with_retry_after(
            failed(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
            Duration::from_secs(1),
        ),
        Err(LoginError::Store(e)) => {
            let _ = crate::error::unavailable(e);
            with_retry_after(
                failed(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                Duration::from_secs(1),
            )
        }
    }
}

/// A post with no fields (the sign-out buttons). Taking it still holds the
/// body to the form rules: the right content type, nothing unexpected.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `POST /logout`: ends the cookie's session, clears the cookie, and shows
/// the login page. Without a live session there is nothing to end; the
/// answer is the same.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "pages",
    operation_id = "logoutForm",
    security((), ("sessionCookie" = [])),
    request_body(content = NoFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    if let Some(who) = current_session(&state, &headers).await? {
        state
            .auth
            .end_session(
                who.user.id,
                who.session.id,
                Actor::User(who.user.id),
                Ending::Logout,
            )
            .await
            .map_err(store_failed)?;
    }
    let mut res = see_other("/login?notice=signed-out");
    res.headers_mut()
        .append(SET_COOKIE, state.web.removal_cookie());
    Ok(res)
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

/// `GET /register`: the form while registration is open; 404 when closed
/// (there is no such page then).
#[utoipa::path(
    get,
    path = "/register",
    tag = "pages",
    operation_id = "registerPage",
    params(PageQueryParams),
    responses(
        (status = 200, description = "The registration form", content_type = "text/html",
            body = String),
        (status = 404, response = oa::PageError),
    )
)]
async fn register_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    if !registration_open(&state) {
        return Err(PageError::not_found());
    }
    let q = PageQuery::parse(query.as_deref());
    let return_to = ReturnTo::parse_or_default(q.return_to.as_deref(), &state.web.allowed_origins);
    Ok(html(
        StatusCode::OK,
        views::register(&views::RegisterView {
            email: "",
            return_to: &return_to,
            errors: &[],
            error: None,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: String,
}

/// `POST /register`: creates the account (as `POST /v1/users`, without
/// logging in, within the same registration budget) and sends the browser
/// to the login page.
#[utoipa::path(
    post,
    path = "/register",
    tag = "pages",
    operation_id = "registerForm",
    request_body(content = RegisterForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 409, description = "The form again: the email is taken",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The form again, with the policy errors on their fields",
            content_type = "text/html", body = String),
        (status = 429, description = "The form again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<RegisterForm>,
) -> Result<Response, PageError> {
    if !registration_open(&state) {
        return Err(PageError::not_found());
    }
    let return_to =
        ReturnTo::parse_or_default(non_empty(&form.return_to), &state.web.allowed_origins);
    let registrar = Registrar::Public { ip: client.ip };
    let (status, errors) = match state
        .auth
        .register(&form.email, form.password, Vec::new(), registrar)
        .await
    {
        Ok(_) => {
            let mut location = "/login?notice=registered".to_owned();
            if !return_to.is_default() {
                location.push('&');
                location.push_str(&views::query_of(&return_to));
            }
            return Ok(see_other(&location));
        }
        Err(RegisterError::Invalid(errors)) => (StatusCode::UNPROCESSABLE_ENTITY, errors),
        Err(RegisterError::EmailTaken) => (
            StatusCode::CONFLICT,
            vec![FieldError::new(
                "email",
                "already belongs to an account; sign in instead",
            )],
        ),
        Err(RegisterError::Throttled { retry_after }) => {
            let page = html(
                StatusCode::TOO_MANY_REQUESTS,
                views::register(&views::RegisterView {
                    email: form.email.trim(),
                    return_to: &return_to,
                    errors: &[],
                    error: Some(&try_again_in(retry_after)),
                }),
            );
            return Ok(with_retry_after(page, retry_after));
        }
        // Registration closed between the check and now.
        Err(RegisterError::Closed) => return Err(PageError::not_found()),
        Err(RegisterError::Busy) => return Err(PageError::unavailable()),
        // Public registration assigns no roles.
        Err(RegisterError::UnknownRole(_)) => return Err(PageError::bad_request()),
        Err(RegisterError::Store(e)) => return Err(store_failed(e)),
    };
    Ok(html(
        status,
        views::register(&views::RegisterView {
            email: form.email.trim(),
            return_to: &return_to,
            errors: &errors,
            error: None,
        }),
    ))
}

// ---------------------------------------------------------------------------
// The account page
// ---------------------------------------------------------------------------

/// `GET /account`: who am I, my devices, change password.
#[utoipa::path(
    get,
    path = "/account",
    tag = "pages",
    operation_id = "accountPage",
    security((), ("sessionCookie" = [])),
    params(NoticeParam),
    responses(
        (status = 200, description = "The account page", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 503, response = oa::PageError),
    )
)]
async fn account(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = PageQuery::parse(query.as_deref()).notice;
    render_account(&state, &who, notice, &[], StatusCode::OK).await
}

async fn render_account(
    state: &AppState,
    who: &Authenticated,
    notice: Option<Notice>,
    password_errors: &[FieldError],
    status: StatusCode,
) -> Result<Response, PageError> {
    let sessions = state
        .auth
        .live_sessions(who.user.id)
        .await
        .map_err(store_failed)?;
    let mut sessions: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let current = s.id == who.session.id;
            (s, current)
        })
        .collect();
    // This device first, then the most recently used.
    sessions.sort_by(|(a, a_cur), (b, b_cur)| {
        b_cur.cmp(a_cur).then(b.last_seen_at.cmp(&a.last_seen_at))
    });
    Ok(html(
        status,
        views::account(&views::AccountView {
            user: &who.user,
            sessions: &sessions,
            notice,
            password_errors,
        }),
    ))
}

/// `POST /account/sessions/{id}/end`: signs one device out. An id that is
/// not a UUID, unknown, or another user's is the same 404. Ending this
/// device's own session signs the browser out.
#[utoipa::path(
    post,
    path = "/account/sessions/{id}/end",
    tag = "pages",
    operation_id = "endSessionForm",
    security((), ("sessionCookie" = [])),
    params(("id" = String, Path, description = "The session's id")),
    request_body(content = NoFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
async fn end_session(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    let id = SessionId::parse(&id).ok_or_else(PageError::not_found)?;
    let ended = state
        .auth
        .end_session(
            who.user.id,
            id,
            Actor::User(who.user.id),
            Ending::EndedByUser,
        )
        .await
        .map_err(store_failed)?;
    if !ended {
        return Err(PageError::not_found());
    }
    if id == who.session.id {
        let mut res = see_other("/login?notice=signed-out");
        res.headers_mut()
            .append(SET_COOKIE, state.web.removal_cookie());
        return Ok(res);
    }
    Ok(see_other("/account?notice=session-ended"))
}

/// `POST /account/sessions/end-others`: every device but this one.
#[utoipa::path(
    post,
    path = "/account/sessions/end-others",
    tag = "pages",
    operation_id = "endOthersForm",
    security((), ("sessionCookie" = [])),
    request_body(content = NoFields, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
async fn end_others(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    state
        .auth
        .end_sessions_of(
            who.user.id,
            Some(who.session.id),
            Actor::User(who.user.id),
            Ending::SignedOutElsewhere,
        )
        .await
        .map_err(store_failed)?;
    Ok(see_other("/account?notice=others-ended"))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    /// The hidden username field that lets password managers file the new
    /// password under the right account; not used.
    #[serde(default, rename = "username")]
    _username: String,
}

/// `POST /account/password`: as `POST /v1/me/password` (policy first, then
/// the current password, throttled like logins; every other session ends).
#[utoipa::path(
    post,
    path = "/account/password",
    tag = "pages",
    operation_id = "changePasswordForm",
    security((), ("sessionCookie" = [])),
    request_body(content = PasswordForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The account page again: the current password is wrong",
            content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The account page again, with the policy error",
            content_type = "text/html", body = String),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    match state
        .auth
        .change_password(
            &who,
            Password::new(form.current_password),
            form.new_password,
            &client,
        )
        .await
    {
        Ok(()) => Ok(see_other("/account?notice=password-changed")),
        Err(ChangePasswordError::Invalid(errors)) => {
            render_account(
                &state,
                &who,
                None,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(ChangePasswordError::WrongPassword) => {
            let errors = [FieldError::new(
                "current_password",
                "The current password is incorrect.",
            )];
            let page =
                render_account(&state, &who, None, &errors, StatusCode::UNAUTHORIZED).await?;
            Ok(with_challenge(page))
        }
        Err(ChangePasswordError::Throttled { retry_after }) => {
            let errors = [FieldError::new(
                "current_password",
                try_again_in(retry_after),
            )];
            let page =
                render_account(&state, &who, None, &errors, StatusCode::TOO_MANY_REQUESTS).await?;
            Ok(with_retry_after(page, retry_after))
        }
        Err(ChangePasswordError::Busy) => Err(PageError::unavailable()),
        Err(ChangePasswordError::Store(e)) => Err(store_failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route is registered at the annotation's literal path (utoipa
    /// needs a literal); the pages link to `STYLESHEET_PATH`.
    #[test]
    fn the_stylesheet_is_routed_where_the_pages_link_to_it() {
        assert_eq!(
            <__path_stylesheet as utoipa::Path>::path(),
            views::STYLESHEET_PATH
        );
    }

    fn form<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
        let pairs = form_pairs(body)?;
        T::deserialize(MapDeserializer::<_, serde::de::value::Error>::new(
            pairs.into_iter(),
        ))
        .ok()
    }

    #[test]
    fn forms_decode_percent_escapes_and_plus() {
        let f: LoginForm = form(b"email=a%40b.example&password=p+w%2Bx%C3%A9").expect("form");
        assert_eq!(f.email, "a@b.example");
        assert_eq!(f.password, "p w+x\u{e9}");
        assert_eq!(f.return_to, "");
    }

    #[test]
    fn hostile_forms_are_refused() {
        // Invalid UTF-8, duplicated, unknown and missing fields.
        assert!(form::<LoginForm>(b"email=a&password=%FF").is_none());
        assert!(form::<LoginForm>(b"email=a&password=b&password=c").is_none());
        assert!(form::<LoginForm>(b"email=a&password=b&roles=admin").is_none());
        assert!(form::<LoginForm>(b"email=a").is_none());
        assert!(form::<NoFields>(b"").is_some());
        assert!(form::<NoFields>(b"x=1").is_none());
    }

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

    #[test]
    fn throttle_messages_round_up() {
        assert_eq!(
            try_again_in(Duration::from_millis(1500)),
            "Too many attempts. Try again in 2 seconds."
        );
        assert_eq!(
            try_again_in(Duration::from_secs(61)),
            "Too many attempts. Try again in 2 minutes."
        );
        assert_eq!(
            try_again_in(Duration::from_secs(60)),
            "Too many attempts. Try again in 1 minute."
        );
    }
}
