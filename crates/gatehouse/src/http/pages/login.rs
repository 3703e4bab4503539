//! `/login` and `/logout`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::forms::{
    Form, NoFields, PageQuery, PageQueryParams, current_session, non_empty, registration_open,
};
use super::respond::{
    PageError, UNAVAILABLE, continue_to, html, see_other, store_failed, try_again_in,
    with_challenge, with_retry_after,
};
use super::return_to::ReturnTo;
use super::views;
use crate::auth::accounts::LoginError;
use crate::auth::audit::{Actor, Ending};
use crate::auth::mfa::{Method, Proof, StepError};
use crate::auth::sessions::NewSession;
use crate::auth::types::Password;
use crate::http::AppState;
use crate::http::extract::Client;
use crate::http::openapi as oa;

/// The one message of every failed login: unknown email, wrong password and
/// disabled account read alike (no account enumeration).
const INVALID_LOGIN: &str = "The email or password is incorrect.";

/// `GET /login`: the form; a visitor already signed in goes straight on.
#[utoipa::path(
    get,
    path = "/login",
    tag = "pages",
    operation_id = "loginPage",
    params(
        PageQueryParams,
        ("X-Original-URI" = Option<String>, Header, nullable = false,
            description = "Set by a proxy that hands its refused requests here \
            (docs/integrations.md, nginx's `error_page 401`): the refused request's \
            URI, as the client sent it. Without `return_to`: a browser (`Accept` \
            naming `text/html`) gets 303 to `/login?return_to=` with the URI \
            percent-encoded (to `/login` alone when it is no local path); any other \
            client the 401 the proxy was given."),
    ),
    responses(
        (status = 200, description = "The sign-in form", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 401, response = oa::Unauthorized),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn login_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let q = PageQuery::parse(query.as_deref());
    // A proxy's "sign in first" (docs/integrations.md): nginx cannot
    // percent-encode the refused request's URI into a query string, so it
    // hands the request here with its URI in a header, and this answer
    // puts it into `return_to`, encoded. Only a path the login would
    // follow anyway is taken; any other value still gets the proxy's
    // answer, without a way back.
    if q.return_to.is_none()
        && let Some(original) = headers.get("x-original-uri")
    {
        let browser = headers
            .get_all(axum::http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|accept| accept.to_ascii_lowercase().contains("text/html"));
        if !browser {
            // An API client keeps the proxy's answer: 401 with the
            // challenge (invalid_token when it sent a token).
            let refusal = if headers.contains_key(axum::http::header::AUTHORIZATION) {
                crate::error::Error::InvalidToken
            } else {
                crate::error::Error::Unauthorized
            };
            return Ok(axum::response::IntoResponse::into_response(refusal));
        }
        let target = original
            .to_str()
            .ok()
            .and_then(|uri| ReturnTo::parse(uri, &state.web.allowed_origins))
            .filter(|target| target.as_str().starts_with('/'));
        return Ok(match target {
            Some(target) => {
                let encoded: String =
                    url::form_urlencoded::byte_serialize(target.as_str().as_bytes()).collect();
                see_other(&format!("/login?return_to={encoded}"))
            }
            None => see_other("/login"),
        });
    }
    let return_to = ReturnTo::parse_or_default(q.return_to.as_deref(), &state.web.allowed_origins);
    if !q.force_login && current_session(&state, &headers).await?.is_some() {
        return Ok(see_other(return_to.as_str()));
    }
    Ok(html(
        StatusCode::OK,
        views::login(&views::LoginView {
            email: q.login_hint.as_deref().unwrap_or_default(),
            return_to: &return_to,
            error: None,
            notice: q.notice,
            registration_open: registration_open(&state),
            passkeys: state.factors.passkeys_enabled(),
            password_reset: state.mail.enabled(),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginForm {
    pub(super) email: String,
    pub(super) password: String,
    /// Absent and empty alike mean the account page.
    #[serde(default)]
    pub(super) return_to: String,
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
        (status = 200, description = "The password is right and the account has a second \
            factor: the second step's form (no cookie yet); or, signed in on the way back to \
            the authorization endpoint, a page that sends the browser on", content_type = "text/html",
            body = String),
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
pub(super) async fn login(
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
                passkeys: state.factors.passkeys_enabled(),
                password_reset: state.mail.enabled(),
            }),
        )
    };
    match state
        .accounts
        .login(&form.email, Password::new(form.password), &client)
        .await
    {
        Ok((_, new)) => signed_in(&state, &new, &return_to),
        Err(LoginError::SecondFactorRequired(challenge)) => html(
            StatusCode::OK,
            views::login_second_step(&views::SecondStepView {
                mfa_token: &challenge.mfa_token.encode(),
                return_to: &return_to,
                error: None,
                recovery_codes: challenge.methods.contains(&Method::RecoveryCode),
                passkey: challenge.methods.contains(&Method::Passkey),
            }),
        ),
        Err(LoginError::InvalidCredentials) => {
            with_challenge(failed(StatusCode::UNAUTHORIZED, INVALID_LOGIN))
        }
        Err(LoginError::EmailNotVerified) => failed(
            StatusCode::FORBIDDEN,
            "Your email address is not verified yet. We sent you a mail with a link: follow it, then sign in again.",
        ),
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

/// A new session in the cookie, and 303 to `return_to`.
fn signed_in(state: &AppState, new: &NewSession, return_to: &ReturnTo) -> Response {
    let cookie = state
        .web
        .session_cookie(&new.secret, &new.record, new.record.created_at);
    let mut res = continue_to(return_to.as_str());
    res.headers_mut().append(SET_COOKIE, cookie);
    res
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SecondStepForm {
    pub(super) mfa_token: String,
    /// A TOTP code or a recovery code.
    pub(super) code: String,
    #[serde(default)]
    pub(super) return_to: String,
}

/// `POST /login/mfa`: the second step of a sign-in; a new session in the
/// cookie and 303 to `return_to`. A wrong code shows the step again with
/// the same `mfa_token`; a dead one sends the visitor back to the
/// password.
#[utoipa::path(
    post,
    path = "/login/mfa",
    tag = "pages",
    operation_id = "loginSecondStepForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = SecondStepForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Signed in, on the way back to the authorization \
            endpoint: a page that sends the browser on (`<meta http-equiv=\"refresh\">`)",
            content_type = "text/html", body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The step again (a wrong code), or the sign-in form (the \
            mfa_token is spent, expired or unknown)", content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The step again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The step again: the service cannot answer",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "`1`"))),
    )
)]
pub(super) async fn second_step(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<SecondStepForm>,
) -> Response {
    let return_to =
        ReturnTo::parse_or_default(non_empty(&form.return_to), &state.web.allowed_origins);
    let again = |status: StatusCode, message: &str| {
        html(
            status,
            views::login_second_step(&views::SecondStepView {
                mfa_token: &form.mfa_token,
                return_to: &return_to,
                error: Some(message),
                recovery_codes: true,
                passkey: state.factors.passkeys_enabled(),
            }),
        )
    };
    match state
        .factors
        .complete_login(&form.mfa_token, Proof::Code(form.code.trim()), &client)
        .await
    {
        Ok((_, new)) => signed_in(&state, &new, &return_to),
        Err(StepError::WrongCode) => with_challenge(again(
            StatusCode::UNAUTHORIZED,
            "The code is incorrect or was used before.",
        )),
        Err(StepError::InvalidToken) => with_challenge(html(
            StatusCode::UNAUTHORIZED,
            views::login(&views::LoginView {
                email: "",
                return_to: &return_to,
                error: Some("This sign-in expired. Enter your email and password again."),
                notice: None,
                registration_open: registration_open(&state),
                passkeys: state.factors.passkeys_enabled(),
                password_reset: state.mail.enabled(),
            }),
        )),
        Err(StepError::Throttled { retry_after }) => with_retry_after(
            again(StatusCode::TOO_MANY_REQUESTS, &try_again_in(retry_after)),
            retry_after,
        ),
        Err(StepError::Store(e)) => {
            let _ = crate::error::unavailable(e);
            with_retry_after(
                again(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                Duration::from_secs(1),
            )
        }
    }
}

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
pub(super) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    if let Some(who) = current_session(&state, &headers).await? {
        state
            .sessions
            .end(
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

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde::de::value::MapDeserializer;

    use super::LoginForm;
    use crate::http::pages::forms::{NoFields, form_pairs};

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
}
