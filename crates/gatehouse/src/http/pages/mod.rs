//! The hosted pages: `/login`, `/register`, `/account`, the pages of mailed
//! links (`/forgot-password`, `/reset-password`, `/verify-email`) and the
//! form posts behind them, rendered on the server; they work without
//! JavaScript, but for their passkey buttons (`passkeys.js`, loaded only
//! while passkeys are on).
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
//! `Cache-Control: no-store` ([`page_headers`]), and a mailed link's page
//! keeps its token out of every `Referer`; `return_to` goes through
//! [`ReturnTo`], so a login never redirects off the allowed origins.

mod account;
mod assets;
mod authorize;
mod email;
mod forms;
mod login;
mod register;
mod respond;
mod return_to;
mod security;
mod views;

use axum::middleware;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use return_to::ReturnTo;
use security::{content_security_policy, page_headers};
pub use security::{form_post_is_same_origin, is_form_path, refused, refused_body};

use super::{AppState, WebSettings};

/// The pages' router; `web` decides the Content-Security-Policy (a login
/// may redirect to an allowed origin, which `form-action` must permit).
pub fn router(web: &WebSettings) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login::login_page, login::login))
        .routes(routes!(login::second_step))
        .routes(routes!(register::register_page, register::register))
        .routes(routes!(account::account))
        .routes(routes!(account::end_session))
        .routes(routes!(account::end_others))
        .routes(routes!(account::change_password))
        .routes(routes!(account::start_totp))
        .routes(routes!(account::confirm_totp))
        .routes(routes!(account::remove_totp))
        .routes(routes!(account::new_recovery_codes))
        .routes(routes!(account::remove_passkey))
        .routes(routes!(account::remove_application))
        .routes(routes!(email::forgot_password_page, email::forgot_password))
        .routes(routes!(email::reset_password_page, email::reset_password))
        .routes(routes!(email::verify_email_page, email::verify_email))
        .routes(routes!(email::request_verification))
        .routes(routes!(login::logout))
        .routes(routes!(authorize::authorize, authorize::authorize_form))
        .routes(routes!(authorize::consent))
        .routes(routes!(authorize::logout, authorize::logout_form))
        .routes(routes!(authorize::logout_confirm))
        .layer(middleware::from_fn_with_state(
            content_security_policy(web),
            page_headers,
        ))
        .routes(routes!(assets::stylesheet))
        .routes(routes!(assets::script))
}
