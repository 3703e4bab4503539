//! `/account`: the visitor's sessions and password.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::forms::{Form, NoFields, PageQuery, Viewer};
use super::respond::{
    PageError, html, see_other, store_failed, try_again_in, with_challenge, with_retry_after,
};
use super::views::{self, Notice};
use crate::auth::FieldError;
use crate::auth::accounts::ChangePasswordError;
use crate::auth::audit::{Actor, Ending};
use crate::auth::mfa::FactorError;
use crate::auth::sessions::Authenticated;
use crate::auth::types::{Password, SessionId};
use crate::http::AppState;
use crate::http::extract::Client;
use crate::http::openapi as oa;

/// The query of the account page.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct NoticeParam {
    /// A fixed message to show, by name (`session-ended`,
    /// `others-ended`, `password-changed`, `verification-sent`,
    /// `email-verified`, …); unknown names show nothing.
    #[param(nullable = false)]
    notice: Option<String>,
}

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
pub(super) async fn account(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let notice = PageQuery::parse(query.as_deref()).notice;
    render_account(&state, &who, notice, &[], StatusCode::OK).await
}

pub(super) async fn render_account(
    state: &AppState,
    who: &Authenticated,
    notice: Option<Notice>,
    password_errors: &[FieldError],
    status: StatusCode,
) -> Result<Response, PageError> {
    render_account_with(state, who, notice, password_errors, None, status).await
}

async fn render_account_with(
    state: &AppState,
    who: &Authenticated,
    notice: Option<Notice>,
    password_errors: &[FieldError],
    mfa_error: Option<&str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let factors = state
        .factors
        .status(who.user.id)
        .await
        .map_err(store_failed)?;
    let passkeys = state
        .factors
        .passkeys(who.user.id)
        .await
        .map_err(store_failed)?;
    let sessions = state
        .sessions
        .live_sessions(who.user.id)
        .await
        .map_err(store_failed)?;
    let applications = state
        .provider
        .consents(&who.user)
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
            factors,
            mfa_error,
            passkeys: &passkeys,
            passkeys_enabled: state.factors.passkeys_enabled(),
            mail_enabled: state.mail.enabled(),
            applications: &applications,
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
pub(super) async fn end_session(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    let id = SessionId::parse(&id).ok_or_else(PageError::not_found)?;
    let ended = state
        .sessions
        .end(
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
pub(super) async fn end_others(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    state
        .sessions
        .end_all_of(
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
pub(super) struct PasswordForm {
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
pub(super) async fn change_password(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    match state
        .accounts
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

/// The page answering a refused two-step verification form: the account
/// page with the message (or the set-up page, for a confirmation).
async fn factor_refused(
    state: &AppState,
    who: &Authenticated,
    e: FactorError,
) -> Result<Response, PageError> {
    let (status, message, retry_after) = match e {
        FactorError::WrongCode => (
            StatusCode::BAD_REQUEST,
            "The code is incorrect or was used before.".to_owned(),
            None,
        ),
        FactorError::WrongPassword => (
            StatusCode::UNAUTHORIZED,
            "The current password is incorrect.".to_owned(),
            None,
        ),
        FactorError::Throttled { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            try_again_in(retry_after),
            Some(retry_after),
        ),
        FactorError::AlreadyEnrolled => (
            StatusCode::CONFLICT,
            "Two-step verification is on already.".to_owned(),
            None,
        ),
        FactorError::NotEnrolled => (
            StatusCode::NOT_FOUND,
            "Two-step verification is not set up.".to_owned(),
            None,
        ),
        FactorError::Busy => return Err(PageError::unavailable()),
        FactorError::Store(e) => return Err(store_failed(e)),
    };
    let page = render_account_with(state, who, None, &[], Some(&message), status).await?;
    Ok(match retry_after {
        Some(after) => with_retry_after(page, after),
        None if status == StatusCode::UNAUTHORIZED => with_challenge(page),
        None => page,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TotpStartForm {
    #[serde(rename = "mfa-password")]
    password: String,
}

/// `POST /account/mfa/totp`: after the current password, the set-up page
/// of a new authenticator key (QR code, key, confirmation form).
#[utoipa::path(
    post,
    path = "/account/mfa/totp",
    tag = "pages",
    operation_id = "totpSetupForm",
    security((), ("sessionCookie" = [])),
    request_body(content = TotpStartForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The set-up page: QR code, key, confirmation form",
            content_type = "text/html", body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 400, response = oa::PageError),
        (status = 401, description = "The account page again: the password is wrong",
            content_type = "text/html", body = String,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"gatehouse\"`"))),
        (status = 403, response = oa::PageError),
        (status = 409, description = "The account page again: TOTP is on already",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn start_totp(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<TotpStartForm>,
) -> Result<Response, PageError> {
    match state
        .accounts
        .begin_totp(&who, Password::new(form.password), &client)
        .await
    {
        Ok(enrolment) => Ok(html(
            StatusCode::OK,
            views::totp_setup(&views::TotpSetupView {
                secret: &enrolment.secret,
                otpauth_uri: &enrolment.otpauth_uri,
                error: None,
            }),
        )),
        Err(e) => factor_refused(&state, &who, e).await,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeForm {
    code: String,
}

/// `POST /account/mfa/totp/confirm`: turns TOTP on with a code from the
/// app; the first factor's recovery codes are shown, this once.
#[utoipa::path(
    post,
    path = "/account/mfa/totp/confirm",
    tag = "pages",
    operation_id = "totpConfirmForm",
    security((), ("sessionCookie" = [])),
    request_body(content = CodeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "TOTP is on: the recovery codes, shown once",
            content_type = "text/html", body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 400, description = "The set-up page again: the code is wrong",
            content_type = "text/html", body = String),
        (status = 403, response = oa::PageError),
        (status = 404, description = "The account page: nothing is being set up",
            content_type = "text/html", body = String),
        (status = 409, description = "The account page: TOTP is on already",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn confirm_totp(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<CodeForm>,
) -> Result<Response, PageError> {
    match state
        .factors
        .confirm_totp(&who, form.code.trim(), &client)
        .await
    {
        Ok(Some(codes)) => Ok(html(StatusCode::OK, views::recovery_codes(&codes, true))),
        // Codes of an earlier factor stay valid: nothing new to show.
        Ok(None) => Ok(see_other("/account")),
        Err(FactorError::WrongCode) => {
            let pending = state
                .factors
                .pending_totp(&who.user)
                .await
                .map_err(store_failed)?;
            match pending {
                Some(enrolment) => Ok(html(
                    StatusCode::BAD_REQUEST,
                    views::totp_setup(&views::TotpSetupView {
                        secret: &enrolment.secret,
                        otpauth_uri: &enrolment.otpauth_uri,
                        error: Some("The code is incorrect. Check the app and try again."),
                    }),
                )),
                None => factor_refused(&state, &who, FactorError::WrongCode).await,
            }
        }
        Err(e) => factor_refused(&state, &who, e).await,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveForm {
    #[serde(rename = "remove-code")]
    code: String,
}

/// `POST /account/mfa/totp/remove`: turns TOTP off, with a current code.
#[utoipa::path(
    post,
    path = "/account/mfa/totp/remove",
    tag = "pages",
    operation_id = "totpRemoveForm",
    security((), ("sessionCookie" = [])),
    request_body(content = RemoveForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, description = "The account page again: the code is wrong",
            content_type = "text/html", body = String),
        (status = 403, response = oa::PageError),
        (status = 404, description = "The account page again: TOTP is off",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn remove_totp(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<RemoveForm>,
) -> Result<Response, PageError> {
    match state
        .factors
        .remove_totp(&who, form.code.trim(), &client)
        .await
    {
        Ok(()) => Ok(see_other("/account?notice=totp-removed")),
        Err(e) => factor_refused(&state, &who, e).await,
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCodesForm {
    #[serde(rename = "codes-code")]
    code: String,
}

/// `POST /account/mfa/recovery-codes`: a new set of recovery codes, with
/// a current code; shown this once, the old set void.
#[utoipa::path(
    post,
    path = "/account/mfa/recovery-codes",
    tag = "pages",
    operation_id = "recoveryCodesForm",
    security((), ("sessionCookie" = [])),
    request_body(content = NewCodesForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The new recovery codes, shown once",
            content_type = "text/html", body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 400, description = "The account page again: the code is wrong",
            content_type = "text/html", body = String),
        (status = 403, response = oa::PageError),
        (status = 404, description = "The account page again: TOTP is off",
            content_type = "text/html", body = String),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 429, description = "The account page again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn new_recovery_codes(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(form): Form<NewCodesForm>,
) -> Result<Response, PageError> {
    match state
        .factors
        .regenerate_recovery_codes(&who, form.code.trim(), &client)
        .await
    {
        Ok(codes) => Ok(html(StatusCode::OK, views::recovery_codes(&codes, false))),
        Err(e) => factor_refused(&state, &who, e).await,
    }
}

/// `POST /account/passkeys/{id}/remove`: removes one of the visitor's
/// passkeys. An id that is not a UUID, unknown, or another user's is the
/// same 404.
#[utoipa::path(
    post,
    path = "/account/passkeys/{id}/remove",
    tag = "pages",
    operation_id = "removePasskeyForm",
    security((), ("sessionCookie" = [])),
    params(("id" = String, Path, description = "The passkey's id")),
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
pub(super) async fn remove_passkey(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Path(id): Path<String>,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    let id = crate::auth::types::PasskeyId::parse(&id).ok_or_else(PageError::not_found)?;
    if !state
        .factors
        .remove_passkey(&who, id, &client)
        .await
        .map_err(store_failed)?
    {
        return Err(PageError::not_found());
    }
    Ok(see_other("/account?notice=passkey-removed"))
}

/// `POST /account/applications/{client_id}/remove`: withdraws the consent
/// given to an application and ends its sessions of the user (its tokens
/// are refused at once). An id that is not a UUID, or names no consent of
/// the user, is 404.
#[utoipa::path(
    post,
    path = "/account/applications/{client_id}/remove",
    tag = "pages",
    operation_id = "removeApplicationForm",
    security((), ("sessionCookie" = [])),
    params(("client_id" = String, Path, description = "The application's client id")),
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
pub(super) async fn remove_application(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Path(id): Path<String>,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    let id = crate::auth::types::ClientId::parse(&id).ok_or_else(PageError::not_found)?;
    if !state
        .provider
        .revoke_consent(&who, id)
        .await
        .map_err(store_failed)?
    {
        return Err(PageError::not_found());
    }
    Ok(see_other("/account?notice=application-removed"))
}
