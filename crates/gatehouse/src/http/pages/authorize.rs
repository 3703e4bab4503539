//! The authorization endpoint (`/oauth2/authorize`, OIDC Core §3.1.2) and
//! the consent page's post (`/oauth2/consent`).
//!
//! The request is judged by `Provider::check_request`: until the client and
//! its redirect URI are known to be genuine, errors are a page here; after,
//! they go back to the redirect URI. Every answer to the client carries
//! `iss` (RFC 9207). No session: the login page, then back here (its
//! `return_to`). A client that is not first-party needs the user's consent,
//! asked once per scope set.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use url::Url;
use utoipa::ToSchema;

use super::forms::{Form, current_session, form_pairs, is_form};
use super::respond::{PageError, html, store_failed};
use super::security::content_security_policy;
use super::views;
use crate::auth::oidc::{AuthorizationRequest, AuthorizeError, LOGIN_AFTER, Next};
use crate::auth::sessions::Authenticated;
use crate::http::AppState;
use crate::http::openapi as oa;

/// Longest authorization request taken (its query comes back through the
/// login page's `return_to`, which takes 2,048 characters).
const MAX_REQUEST: usize = 1900;

/// The parameters of a request: each name once (`None` for one given more
/// than once).
fn parameters(pairs: Vec<(String, String)>) -> HashMap<String, Option<String>> {
    let mut params: HashMap<String, Option<String>> = HashMap::new();
    for (k, v) in pairs {
        params
            .entry(k)
            .and_modify(|seen| *seen = None)
            .or_insert(Some(v));
    }
    params
}

/// Whether any name or value holds a control character: no parameter of
/// these requests may (RFC 6749 Appendix A: `state`, `scope`, `nonce`,
/// client ids and URIs are visible ASCII or Unicode text), and such a
/// request is refused whole, on a page.
fn has_control_characters(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k.chars().chain(v.chars()).any(char::is_control))
}

/// Whether a raw query or form body has a `%` that starts no escape (two
/// hex digits): malformed, where a lenient decoder would pass it on as is.
fn broken_escapes(raw: &[u8]) -> bool {
    raw.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// The pairs of a query string; `None` when it is malformed.
fn query_pairs(query: &str) -> Option<Vec<(String, String)>> {
    if broken_escapes(query.as_bytes()) {
        return None;
    }
    Some(
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

/// The pairs of a form body: 415 for another media type, 400 for a body
/// that is not valid UTF-8 or has broken escapes.
fn body_pairs(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    if !is_form(headers) {
        return Err(PageError::unsupported());
    }
    form_pairs(body)
        .filter(|_| !broken_escapes(body))
        .ok_or_else(PageError::bad_request)
}

fn refused_request() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        views::authorize_refused(
            "The request is malformed (control characters or broken escapes).",
        ),
    )
}

// Only descriptions: the handlers read the parameters themselves (each
// once, unknown ones ignored, as OIDC Core §3.1.2.1 asks).
/// The authorization request as a form (every parameter is checked by the
/// endpoint, in the order docs/api.md gives).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct AuthorizeForm {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    login_hint: Option<String>,
}

/// An RP-initiated logout request as a form: every parameter is optional.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct LogoutForm {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// `GET /oauth2/authorize`: the authorization request (OIDC Core
/// §3.1.2.1), in the query.
#[utoipa::path(
    get,
    path = "/oauth2/authorize",
    tag = "openid",
    operation_id = "oidcAuthorize",
    description = "The authorization endpoint: `response_type=code`, `client_id`, \
        `redirect_uri` (registered; the port of a loopback one may vary), `scope`, `state`, \
        `nonce`, `code_challenge` + `code_challenge_method=S256` (required for public \
        clients), `prompt` (`none`, `login`, `consent`), `max_age`, `login_hint`. \
        Answers 302 to the redirect URI with `code` (or `error`), `state` and `iss`; \
        without a session 302 to `/login`; for a client that is not first-party the consent \
        page. An unknown client or redirect URI gets a 400 page, never a redirect.",
    responses(
        (status = 200, description = "The consent page", content_type = "text/html",
            body = String),
        (status = 302, description = "To the client's redirect URI (`code` or `error`, \
            `state`, `iss`), or to the login page",
            headers(("Location" = String, description = "Where to go"))),
        (status = 400, description = "The client or redirect URI is not genuine: a page",
            content_type = "text/html", body = String),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn authorize(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(pairs) = query_pairs(query.as_deref().unwrap_or_default()) else {
        return refused_request();
    };
    respond(&state, &headers, pairs).await
}

/// `POST /oauth2/authorize`: the same request as a form (OIDC Core
/// §3.1.2.1 allows both methods).
#[utoipa::path(
    post,
    path = "/oauth2/authorize",
    tag = "openid",
    operation_id = "oidcAuthorizeForm",
    description = "The authorization request as an \
        `application/x-www-form-urlencoded` body; answered as the GET.",
    request_body(content = AuthorizeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The consent page", content_type = "text/html",
            body = String),
        (status = 302, description = "To the client's redirect URI or the login page",
            headers(("Location" = String, description = "Where to go"))),
        (status = 400, description = "The client or redirect URI is not genuine, or the \
            body is no form: a page", content_type = "text/html", body = String),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn authorize_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = match body_pairs(&headers, &body) {
        Ok(pairs) => pairs,
        Err(refused) => return refused.into_response(),
    };
    respond(&state, &headers, pairs).await
}

async fn respond(state: &AppState, headers: &HeaderMap, pairs: Vec<(String, String)>) -> Response {
    if has_control_characters(&pairs) {
        return refused_request();
    }
    let request_len: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let params = parameters(pairs);
    let req = match state.provider.check_request(&params).await {
        Err(e) => return store_failed(e).into_response(),
        Ok(Err(AuthorizeError::Page(reason))) => {
            return html(StatusCode::BAD_REQUEST, views::authorize_refused(reason));
        }
        Ok(Err(refused @ AuthorizeError::Redirect { .. })) => {
            return redirect_error(state, refused);
        }
        Ok(Ok(req)) => req,
    };
    if request_len > MAX_REQUEST {
        return error_to_client(state, &req, "invalid_request", "The request is too long.");
    }
    let visitor = match current_session(state, headers).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let next = match state.provider.next(&req, visitor.as_ref()).await {
        Ok(next) => next,
        Err(e) => return store_failed(e).into_response(),
    };
    match (next, visitor) {
        (Next::Login { .. }, _) if req.prompt.none => error_to_client(
            state,
            &req,
            "login_required",
            "The user is not signed in (prompt=none).",
        ),
        (Next::Consent, _) if req.prompt.none => error_to_client(
            state,
            &req,
            "consent_required",
            "The user has not allowed this client (prompt=none).",
        ),
        (Next::Login { force }, _) => to_login(state, &params, &req, force),
        (Next::Consent, Some(visitor)) => consent_page(state, &params, &req, &visitor),
        (Next::Issue, Some(visitor)) => issue(state, &req, &visitor).await,
        // `next` answers Login for a visitor without a session.
        (Next::Consent | Next::Issue, None) => to_login(state, &params, &req, false),
    }
}

/// 302 to the login page, which comes back here. A forced login replaces
/// `prompt=login` and `max_age` with the instant after which the user must
/// have signed in, so the way back does not send them to the login again.
fn to_login(
    state: &AppState,
    params: &HashMap<String, Option<String>>,
    req: &AuthorizationRequest,
    force: bool,
) -> Response {
    let mut back = url::form_urlencoded::Serializer::new(String::new());
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        if matches!(name.as_str(), "prompt" | "max_age" | LOGIN_AFTER) && force {
            continue;
        }
        if let Some(Some(value)) = params.get(name) {
            back.append_pair(name, value);
        }
    }
    if force {
        let after = req
            .login_after
            .unwrap_or_else(|| state.clock.now().unix_timestamp());
        back.append_pair(LOGIN_AFTER, &after.to_string());
    }
    let return_to = format!("/oauth2/authorize?{}", back.finish());
    let mut login = url::form_urlencoded::Serializer::new(String::new());
    login.append_pair("return_to", &return_to);
    if force {
        login.append_pair("prompt", "login");
    }
    if let Some(hint) = &req.login_hint {
        login.append_pair("login_hint", hint);
    }
    found(&format!("/login?{}", login.finish()))
}

fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(LOCATION, value)]).into_response(),
        Err(_) => PageError::bad_request().into_response(),
    }
}

/// The redirect URI with the answer's parameters and `iss` added to its
/// query.
fn to_client(state: &AppState, redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return PageError::bad_request().into_response();
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        query.append_pair("iss", state.provider.issuer());
    }
    found(url.as_str())
}

fn redirect_error(state: &AppState, refused: AuthorizeError) -> Response {
    let AuthorizeError::Redirect {
        redirect_uri,
        state: client_state,
        error,
        description,
    } = refused
    else {
        return PageError::bad_request().into_response();
    };
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(s) = &client_state {
        pairs.push(("state", s));
    }
    to_client(state, &redirect_uri, &pairs)
}

fn error_to_client(
    state: &AppState,
    req: &AuthorizationRequest,
    error: &'static str,
    description: &'static str,
) -> Response {
    redirect_error(
        state,
        AuthorizeError::Redirect {
            redirect_uri: req.redirect_uri.clone(),
            state: req.state.clone(),
            error,
            description,
        },
    )
}

async fn issue(state: &AppState, req: &AuthorizationRequest, visitor: &Authenticated) -> Response {
    let code = match state.provider.issue_code(req, visitor).await {
        Ok(code) => code,
        Err(e) => return store_failed(e).into_response(),
    };
    let code = code.encode();
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        pairs.push(("state", s));
    }
    to_client(state, &req.redirect_uri, &pairs)
}

/// The consent page. Its `form-action` also names the application's
/// origin: the decision's answer redirects there.
fn consent_page(
    state: &AppState,
    params: &HashMap<String, Option<String>>,
    req: &AuthorizationRequest,
    visitor: &Authenticated,
) -> Response {
    let mut request = url::form_urlencoded::Serializer::new(String::new());
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        if let Some(Some(value)) = params.get(name) {
            // Consent is what is being asked: the answer must not ask again.
            if name != "prompt" || value != "consent" {
                request.append_pair(name, value);
            }
        }
    }
    let request = request.finish();
    let origin = client_origin(&req.redirect_uri);
    let mut res = html(
        StatusCode::OK,
        views::consent(&views::ConsentView {
            client_name: &req.client.name,
            client_origin: &origin,
            email: &visitor.user.email,
            scopes: &req.scopes,
            request: &request,
        }),
    );
    res.headers_mut()
        .insert(CONTENT_SECURITY_POLICY, consent_policy(state, &origin));
    res
}

/// The redirect URI's origin (`scheme://host[:port]`), or the whole URI for
/// a private-use scheme (whose origin is opaque).
fn client_origin(redirect_uri: &str) -> String {
    match Url::parse(redirect_uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url.origin().ascii_serialization(),
        Ok(url) => format!("{}:", url.scheme()),
        Err(_) => String::new(),
    }
}

fn consent_policy(state: &AppState, origin: &str) -> HeaderValue {
    let base = content_security_policy(&state.web);
    let extended = format!("{} {origin}", base.to_str().unwrap_or_default());
    HeaderValue::from_str(&extended).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::broken_escapes;

    #[test]
    fn a_percent_must_start_an_escape() {
        assert!(!broken_escapes(b"a=%20b&c=%7e"));
        assert!(broken_escapes(b"a=%zz"));
        assert!(broken_escapes(b"a=%"));
        assert!(broken_escapes(b"a=%2"));
        assert!(broken_escapes(b"%=1"));
        assert!(!broken_escapes(b""));
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsentForm {
    /// The authorization request's query, as the page was given it.
    request: String,
    /// `allow` or `deny`.
    decision: String,
}

/// `POST /oauth2/consent`: the user's decision; the request is judged
/// again (the hidden field is the client's to forge), then 303 to the
/// client with the code, or with `access_denied`.
#[utoipa::path(
    post,
    path = "/oauth2/consent",
    tag = "openid",
    operation_id = "oidcConsentForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "To the login page (no session)",
            headers(("Location" = String, description = "Where to go"))),
        (status = 303, description = "To the client's redirect URI with `code` or \
            `error=access_denied`, `state` and `iss`",
            headers(("Location" = String, description = "Where to go"))),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let Some(pairs) = query_pairs(&form.request) else {
        return refused_request();
    };
    if has_control_characters(&pairs) {
        return refused_request();
    }
    let params = parameters(pairs);
    let req = match state.provider.check_request(&params).await {
        Err(e) => return store_failed(e).into_response(),
        Ok(Err(AuthorizeError::Page(reason))) => {
            return html(StatusCode::BAD_REQUEST, views::authorize_refused(reason));
        }
        Ok(Err(refused @ AuthorizeError::Redirect { .. })) => {
            return see_other_from(redirect_error(&state, refused));
        }
        Ok(Ok(req)) => req,
    };
    let visitor = match current_session(&state, &headers).await {
        Ok(Some(v)) => v,
        Ok(None) => return to_login(&state, &params, &req, false),
        Err(e) => return e.into_response(),
    };
    let answer = match form.decision.as_str() {
        "allow" => {
            if let Err(e) = state.provider.give_consent(&req, &visitor).await {
                return store_failed(e).into_response();
            }
            issue(&state, &req, &visitor).await
        }
        "deny" => error_to_client(
            &state,
            &req,
            "access_denied",
            "The user did not allow this client.",
        ),
        _ => return PageError::bad_request().into_response(),
    };
    see_other_from(answer)
}

/// A post's redirect is 303 See Other (the browser follows with GET).
fn see_other_from(mut res: Response) -> Response {
    if res.status() == StatusCode::FOUND {
        *res.status_mut() = StatusCode::SEE_OTHER;
    }
    res
}

/// `GET /oauth2/logout`: RP-initiated logout (OpenID Connect RP-Initiated
/// Logout 1.0) with `id_token_hint`, `client_id`,
/// `post_logout_redirect_uri` and `state`.
#[utoipa::path(
    get,
    path = "/oauth2/logout",
    tag = "openid",
    operation_id = "oidcLogout",
    description = "With a valid `id_token_hint` (an ID token from here, expired ones too) the \
        browser session it names ends at once; without one, a page asks the visitor to \
        confirm. Then 302 to the `post_logout_redirect_uri` (registered for the client the \
        hint or `client_id` names) with `state`, or 303 to the login page. A hint from \
        elsewhere, another client's hint, or an unregistered URI is a 400 page.",
    responses(
        (status = 200, description = "The confirmation page", content_type = "text/html",
            body = String),
        (status = 302, description = "Signed out: to the `post_logout_redirect_uri`",
            headers(("Location" = String, description = "Where to go"))),
        (status = 303, description = "Signed out: to the login page",
            headers(("Location" = String, description = "Where to go"))),
        (status = 400, description = "A request refused: a page", content_type = "text/html",
            body = String),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn logout(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(pairs) = query_pairs(query.as_deref().unwrap_or_default()) else {
        return refused_request();
    };
    logout_request(&state, &headers, pairs).await
}

/// `POST /oauth2/logout`: the same request as a form body.
#[utoipa::path(
    post,
    path = "/oauth2/logout",
    tag = "openid",
    operation_id = "oidcLogoutForm",
    description = "The RP-initiated logout request as an \
        `application/x-www-form-urlencoded` body; answered as the GET.",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The confirmation page", content_type = "text/html",
            body = String),
        (status = 302, description = "Signed out: to the `post_logout_redirect_uri`",
            headers(("Location" = String, description = "Where to go"))),
        (status = 303, description = "Signed out: to the login page",
            headers(("Location" = String, description = "Where to go"))),
        (status = 400, description = "A request refused: a page", content_type = "text/html",
            body = String),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn logout_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = match body_pairs(&headers, &body) {
        Ok(pairs) => pairs,
        Err(refused) => return refused.into_response(),
    };
    logout_request(&state, &headers, pairs).await
}

async fn logout_request(
    state: &AppState,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    if has_control_characters(&pairs) {
        return refused_request();
    }
    let params = parameters(pairs);
    if params.values().any(Option::is_none) {
        return html(
            StatusCode::BAD_REQUEST,
            views::authorize_refused("A parameter was sent more than once."),
        );
    }
    let get = |name: &str| {
        params
            .get(name)
            .cloned()
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let (hint, client_id, uri, client_state) = (
        get("id_token_hint"),
        get("client_id"),
        get("post_logout_redirect_uri"),
        get("state"),
    );
    let req = match state
        .provider
        .check_logout(hint.as_deref(), client_id.as_deref(), uri.as_deref())
        .await
    {
        Err(e) => return store_failed(e).into_response(),
        Ok(Err(why)) => return html(StatusCode::BAD_REQUEST, views::authorize_refused(why)),
        Ok(Ok(req)) => req,
    };
    let visitor = match current_session(state, headers).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    if req.hinted.is_none() && visitor.is_some() {
        // Nothing proves the application asked: the visitor confirms.
        let origin = req
            .post_logout_redirect_uri
            .as_deref()
            .map(client_origin)
            .unwrap_or_default();
        let mut res = html(
            StatusCode::OK,
            views::logout_confirm(&views::LogoutView {
                client_name: req.client.as_ref().map(|c| c.name.as_str()),
                client_id: client_id.as_deref().unwrap_or_default(),
                post_logout_redirect_uri: uri.as_deref().unwrap_or_default(),
                state: client_state.as_deref().unwrap_or_default(),
            }),
        );
        res.headers_mut()
            .insert(CONTENT_SECURITY_POLICY, consent_policy(state, &origin));
        return res;
    }
    signed_out(
        state,
        &req,
        visitor.as_ref(),
        client_state.as_deref(),
        false,
    )
    .await
}

/// Ends the session, clears the cookie when it was the visitor's, and
/// sends the browser on: to the client's URI with `state`, else to the
/// login page.
async fn signed_out(
    state: &AppState,
    req: &crate::auth::oidc::LogoutRequest,
    visitor: Option<&Authenticated>,
    client_state: Option<&str>,
    after_post: bool,
) -> Response {
    if let Err(e) = state.provider.logout(req, visitor).await {
        return store_failed(e).into_response();
    }
    let ended_visitors = visitor.is_some_and(|v| {
        req.hinted
            .is_none_or(|(_, session)| session == v.session.id)
    });
    let mut res = match &req.post_logout_redirect_uri {
        Some(uri) => {
            let pairs: Vec<(&str, &str)> = client_state.map(|s| ("state", s)).into_iter().collect();
            let Ok(mut url) = Url::parse(uri) else {
                return PageError::bad_request().into_response();
            };
            if !pairs.is_empty() {
                url.query_pairs_mut().extend_pairs(pairs);
            }
            let res = found(url.as_str());
            if after_post { see_other_from(res) } else { res }
        }
        None => super::respond::see_other("/login?notice=signed-out"),
    };
    if ended_visitors {
        res.headers_mut()
            .append(axum::http::header::SET_COOKIE, state.web.removal_cookie());
    }
    res
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LogoutConfirmForm {
    /// The page sends all three, empty when the request had none.
    client_id: String,
    post_logout_redirect_uri: String,
    state: String,
}

/// `POST /oauth2/logout/confirm`: the confirmation page's button; the
/// request is judged again, then the visitor's session ends.
#[utoipa::path(
    post,
    path = "/oauth2/logout/confirm",
    tag = "openid",
    operation_id = "oidcLogoutConfirm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = LogoutConfirmForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed out: to the `post_logout_redirect_uri` or the \
            login page", headers(("Location" = String, description = "Where to go"))),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn logout_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutConfirmForm>,
) -> Response {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let (client_id, uri) = (
        non_empty(&form.client_id),
        non_empty(&form.post_logout_redirect_uri),
    );
    let req = match state
        .provider
        .check_logout(None, client_id.as_deref(), uri.as_deref())
        .await
    {
        Err(e) => return store_failed(e).into_response(),
        Ok(Err(why)) => return html(StatusCode::BAD_REQUEST, views::authorize_refused(why)),
        Ok(Ok(req)) => req,
    };
    let visitor = match current_session(&state, &headers).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    signed_out(
        &state,
        &req,
        visitor.as_ref(),
        non_empty(&form.state).as_deref(),
        true,
    )
    .await
}
