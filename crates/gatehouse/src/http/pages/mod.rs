//! The hosted pages: `/login`, `/register`, `/account` and the form posts
//! behind them, rendered on the server for browsers without any JavaScript.
//!
//! They are a second face of the same domain: every handler calls the
//! functions the JSON API calls (`Accounts::login`, `register` and
//! `change_password`, `Sessions::live_sessions`, `end` and `end_all_of`)
//! and hands out the same session cookie. Forms post
//! `application/x-www-form-urlencoded` and every successful post answers
//! 303 See Other (Post/Redirect/Get), so reloading a page never resubmits.
//!
//! Protection: the CSRF layer (`http::csrf_guard`) refuses every form post
//! whose `Origin` is not allowed, or that has no `Origin` and no
//! `Sec-Fetch-Site: same-origin` ([`form_post_is_same_origin`]); every page
//! carries a strict Content-Security-Policy, `X-Frame-Options: DENY` and
//! `Cache-Control: no-store` ([`page_headers`]); `return_to` goes through
//! [`ReturnTo`], so a login never redirects off the allowed origins.

mod account;
mod forms;
mod login;
mod register;
mod respond;
mod return_to;
mod security;
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

use account::*;
use forms::*;
use login::*;
use register::*;
use respond::*;
use security::*;
pub use security::{form_post_is_same_origin, refused, refused_body};

use super::extract::{self, Client};
use super::openapi as oa;
use super::{AppState, WebSettings};
use crate::auth::FieldError;
use crate::auth::accounts::LoginError;
use crate::auth::accounts::{ChangePasswordError, RegisterError, Registrar};
use crate::auth::audit::{Actor, Ending};
use crate::auth::sessions::Authenticated;
use crate::auth::types::{Password, SessionId};
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
