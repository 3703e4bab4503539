//! The pages' security headers and their CSRF rule: the Content-Security-Policy,
//! the headers every page carries, and the refusal page of a cross-origin post.

use std::collections::HashSet;

use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, ORIGIN, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::respond::PageError;
use crate::http::WebSettings;

/// Whether `path` is one of the pages' form posts, which the CSRF layer
/// guards whether or not a cookie rides along: a forged post to `/login` or
/// `/register` needs no cookie to do harm (login CSRF).
pub fn is_form_path(path: &str) -> bool {
    matches!(
        path,
        "/login"
            | "/login/mfa"
            | "/register"
            | "/logout"
            | "/forgot-password"
            | "/reset-password"
            | "/verify-email"
            | "/oauth2/consent"
            | "/oauth2/logout/confirm"
    ) || path.starts_with("/account/")
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

/// `default-src 'none'`: the pages load nothing but their stylesheet and
/// their one script (`/assets/passkeys.js`, which calls this origin's JSON
/// API for passkeys), run no inline script, cannot be framed
/// (clickjacking), and their forms post only here, or (through a login's
/// redirect) to an allowed origin.
pub(super) fn content_security_policy(web: &WebSettings) -> HeaderValue {
    pub(super) const BASE: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
        script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";
    let mut origins: Vec<&str> = web.allowed_origins.iter().map(String::as_str).collect();
    origins.sort_unstable();
    let policy = format!("{BASE}; form-action 'self' {}", origins.join(" "));
    // Allowed origins were parsed at start-up (scheme://host[:port]); should
    // one not fit in a header, fall back to this server alone.
    HeaderValue::from_str(policy.trim_end()).unwrap_or_else(|_| {
        HeaderValue::from_static(concat!(
            "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; ",
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ))
    })
}

pub(super) fn set_page_headers(h: &mut HeaderMap, csp: HeaderValue) {
    // A page that names its own policy (the consent page, whose form may
    // go on to the application) keeps it.
    if !h.contains_key(CONTENT_SECURITY_POLICY) {
        h.insert(CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: see `form_post_is_same_origin`. A
    // page that set a stricter one keeps it ([`keep_link_private`]).
    if !h.contains_key(REFERRER_POLICY) {
        h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Pages show emails and devices, and carry cookies: never cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Marks the answer to a mailed link's URL (`/reset-password?token=…`,
/// `/verify-email?token=…`) so that the browser puts the token in no
/// `Referer`: `strict-origin` sends only the bare origin, to this server
/// (the stylesheet, the form's post) and anywhere else alike. Not
/// `no-referrer`: under it browsers post the page's form with
/// `Origin: null` (Fetch, "append a request `Origin` header"), which
/// [`form_post_is_same_origin`] refuses; under `strict-origin` they send
/// the real origin, as on every other page. `Cache-Control: no-store` is
/// every page's already.
pub(super) fn keep_link_private(mut res: Response) -> Response {
    res.headers_mut()
        .insert(REFERRER_POLICY, HeaderValue::from_static("strict-origin"));
    res
}

/// The security headers of every page answer, errors and redirects included.
pub(super) async fn page_headers(
    State(csp): State<HeaderValue>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    set_page_headers(res.headers_mut(), csp);
    res
}

#[cfg(test)]
mod tests {
    use super::is_form_path;

    #[test]
    fn the_mailed_links_forms_are_guarded_like_every_page_form() {
        for path in [
            "/login",
            "/register",
            "/forgot-password",
            "/reset-password",
            "/verify-email",
            "/account/email-verification",
        ] {
            assert!(is_form_path(path), "{path}");
        }
        for path in [
            "/v1/password-reset",
            "/v1/email/verify",
            "/reset-password/x",
        ] {
            assert!(!is_form_path(path), "{path}");
        }
    }
}
