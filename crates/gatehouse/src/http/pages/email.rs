//! The pages of mailed links: `/forgot-password` (ask for a reset link),
//! `/reset-password` (the link: a new password), `/verify-email` (the
//! link: prove the mailbox) and the account page's
//! `/account/email-verification` (mail me a link). They call what the JSON
//! endpoints call (`Mail::request_password_reset`, `reset_password`,
//! `verify_email`, `send_verification`); without `smtp_url` they answer 404,
//! as those do.
//!
//! Opening a link changes nothing: mail scanners and link previews fetch
//! every URL in a mail, so `GET` (and `HEAD`, which axum answers with the
//! `GET` handler) only renders a form that carries the token; the token is
//! neither looked up nor spent until the visitor posts it.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::forms::{Form, NoFields, Viewer, current_session};
use super::respond::{PageError, html, see_other, store_failed, try_again_in, with_retry_after};
use super::security::keep_link_private;
use super::views::{self, LinkKind};
use crate::auth::MailError;
use crate::auth::mail::REQUESTED_VERIFICATION_GAP;
use crate::http::AppState;
use crate::http::email::RESET_ACCEPTED;
use crate::http::extract::Client;
use crate::http::openapi as oa;

/// 404 while mail is off: the pages do not exist then.
fn mail_on(state: &AppState) -> Result<(), PageError> {
    if state.mail.enabled() {
        Ok(())
    } else {
        Err(PageError::not_found())
    }
}

/// The `token` of a link's query: given once and not empty, else none.
fn token_of(query: Option<&str>) -> Option<String> {
    let mut tokens = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let token = tokens.next()?;
    (tokens.next().is_none() && !token.is_empty()).then_some(token)
}

/// The 400 page of a link that cannot be used.
fn link_invalid(kind: LinkKind) -> Response {
    html(StatusCode::BAD_REQUEST, views::link_invalid(kind))
}

/// What a refused mail flow answers, but for the refusals each handler
/// shows on its own form (`Invalid`, and `Throttled` where it can happen).
fn refused(e: MailError, kind: LinkKind) -> Response {
    match e {
        MailError::Off => PageError::not_found().into_response(),
        MailError::InvalidToken => link_invalid(kind),
        MailError::Invalid(_) => PageError::bad_request().into_response(),
        MailError::Throttled { retry_after } => with_retry_after(
            html(
                StatusCode::TOO_MANY_REQUESTS,
                views::message("Too many attempts", &try_again_in(retry_after)),
            ),
            retry_after,
        ),
        MailError::Busy => PageError::unavailable().into_response(),
        MailError::Store(e) => store_failed(e).into_response(),
    }
}

/// `GET /forgot-password`: the form that asks for a reset link.
#[utoipa::path(
    get,
    path = "/forgot-password",
    tag = "pages",
    operation_id = "forgotPasswordPage",
    responses(
        (status = 200, description = "The form: the account's email address",
            content_type = "text/html", body = String),
        (status = 404, response = oa::PageError),
    )
)]
pub(super) async fn forgot_password_page(
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    mail_on(&state)?;
    Ok(html(
        StatusCode::OK,
        views::forgot_password(&views::ForgotView {
            email: "",
            errors: &[],
            error: None,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ForgotForm {
    email: String,
}

/// `POST /forgot-password`: as `POST /v1/password-reset`: the same page,
/// byte for byte, whether or not an account uses the address; a known,
/// enabled account gets a mail with a link to `/reset-password`.
#[utoipa::path(
    post,
    path = "/forgot-password",
    tag = "pages",
    operation_id = "forgotPasswordForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = ForgotForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "If an account uses the address, a mail is on its way \
            (the same page for every address)", content_type = "text/html", body = String),
        (status = 400, response = oa::PageError),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The form again: not an email address",
            content_type = "text/html", body = String),
        (status = 429, description = "The form again: try again in N minutes",
            content_type = "text/html", body = String,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn forgot_password(
    State(state): State<AppState>,
    Client(client): Client,
    Form(form): Form<ForgotForm>,
) -> Result<Response, PageError> {
    mail_on(&state)?;
    let again = |status: StatusCode, errors: &[crate::auth::FieldError], error: Option<&str>| {
        html(
            status,
            views::forgot_password(&views::ForgotView {
                email: form.email.trim(),
                errors,
                error,
            }),
        )
    };
    Ok(
        match state
            .mail
            .request_password_reset(&form.email, &client)
            .await
        {
            Ok(()) => html(StatusCode::OK, views::reset_requested(RESET_ACCEPTED)),
            Err(MailError::Invalid(errors)) => {
                again(StatusCode::UNPROCESSABLE_ENTITY, &errors, None)
            }
            Err(MailError::Throttled { retry_after }) => with_retry_after(
                again(
                    StatusCode::TOO_MANY_REQUESTS,
                    &[],
                    Some(&try_again_in(retry_after)),
                ),
                retry_after,
            ),
            Err(e) => refused(e, LinkKind::PasswordReset),
        },
    )
}

/// `GET /reset-password?token=…`: the mailed link's page, a form for the
/// new password carrying the token. Renders only: the token is not looked
/// up, let alone spent (mail scanners open links).
#[utoipa::path(
    get,
    path = "/reset-password",
    tag = "pages",
    operation_id = "resetPasswordPage",
    params(
        ("token" = Option<String>, Query, nullable = false,
            description = "The token of the mailed link, carried into the form as it is"),
    ),
    responses(
        (status = 200, description = "The form: a new password (the token in a hidden field; \
            `Referrer-Policy: strict-origin`)", content_type = "text/html", body = String),
        (status = 400, description = "No token: the link is not valid",
            content_type = "text/html", body = String),
        (status = 404, response = oa::PageError),
    )
)]
pub(super) async fn reset_password_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let res = match mail_on(&state) {
        Err(e) => e.into_response(),
        Ok(()) => match token_of(query.as_deref()) {
            None => link_invalid(LinkKind::PasswordReset),
            Some(token) => html(
                StatusCode::OK,
                views::reset_password(&views::ResetView {
                    token: &token,
                    errors: &[],
                }),
            ),
        },
    };
    keep_link_private(res)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetForm {
    /// The mailed link's token.
    token: String,
    new_password: String,
}

/// `POST /reset-password`: as `POST /v1/password-reset/confirm`: the new
/// password, every session of the user ended, and 303 to the login page.
/// A weak password shows the form again and leaves the token unspent.
#[utoipa::path(
    post,
    path = "/reset-password",
    tag = "pages",
    operation_id = "resetPasswordForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = ResetForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, response = oa::PageRedirect),
        (status = 400, description = "The link is invalid, was used, or has expired (or the \
            form could not be read)", content_type = "text/html", body = String),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 422, description = "The form again, with the policy error (the token kept)",
            content_type = "text/html", body = String),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn reset_password(
    State(state): State<AppState>,
    Client(client): Client,
    Form(ResetForm {
        token,
        new_password,
    }): Form<ResetForm>,
) -> Result<Response, PageError> {
    mail_on(&state)?;
    Ok(
        match state
            .mail
            .reset_password(&token, new_password, &client)
            .await
        {
            Ok(_) => see_other("/login?notice=password-reset"),
            Err(MailError::Invalid(errors)) => html(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::reset_password(&views::ResetView {
                    token: &token,
                    errors: &errors,
                }),
            ),
            Err(e) => refused(e, LinkKind::PasswordReset),
        },
    )
}

/// `GET /verify-email?token=…`: the mailed link's page, one button that
/// posts the token. Renders only, as `GET /reset-password`.
#[utoipa::path(
    get,
    path = "/verify-email",
    tag = "pages",
    operation_id = "verifyEmailPage",
    params(
        ("token" = Option<String>, Query, nullable = false,
            description = "The token of the mailed link, carried into the form as it is"),
    ),
    responses(
        (status = 200, description = "A button that verifies the address (the token in a \
            hidden field; `Referrer-Policy: strict-origin`)", content_type = "text/html",
            body = String),
        (status = 400, description = "No token: the link is not valid",
            content_type = "text/html", body = String),
        (status = 404, response = oa::PageError),
    )
)]
pub(super) async fn verify_email_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let res = match mail_on(&state) {
        Err(e) => e.into_response(),
        Ok(()) => match token_of(query.as_deref()) {
            None => link_invalid(LinkKind::EmailVerification),
            Some(token) => html(StatusCode::OK, views::verify_email(&token)),
        },
    };
    keep_link_private(res)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyForm {
    /// The mailed link's token.
    token: String,
}

/// `POST /verify-email`: as `POST /v1/email/verify`. A visitor signed in
/// as that user goes to the account page (303); anyone else is told on a
/// page of its own.
#[utoipa::path(
    post,
    path = "/verify-email",
    tag = "pages",
    operation_id = "verifyEmailForm",
    description = "Form posts need an allowed `Origin`, or none and \
        `Sec-Fetch-Site: same-origin` (403 otherwise).",
    request_body(content = VerifyForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The address is verified", content_type = "text/html",
            body = String),
        (status = 303, response = oa::PageRedirect),
        (status = 400, description = "The link is invalid, was used, or has expired (or the \
            form could not be read)", content_type = "text/html", body = String),
        (status = 403, response = oa::PageError),
        (status = 404, response = oa::PageError),
        (status = 413, response = oa::PageError),
        (status = 415, response = oa::PageError),
        (status = 503, response = oa::PageError),
    )
)]
pub(super) async fn verify_email(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Form(VerifyForm { token }): Form<VerifyForm>,
) -> Result<Response, PageError> {
    mail_on(&state)?;
    let user = match state.mail.verify_email(&token, &client).await {
        Ok(user) => user,
        Err(e) => return Ok(refused(e, LinkKind::EmailVerification)),
    };
    // The address is verified whatever follows: a failed look at the
    // cookie only costs the shortcut to the account page.
    let theirs = matches!(
        current_session(&state, &headers).await,
        Ok(Some(who)) if who.user.id == user.id
    );
    Ok(if theirs {
        see_other("/account?notice=email-verified")
    } else {
        html(StatusCode::OK, views::email_verified())
    })
}

/// `POST /account/email-verification`: as `POST /v1/me/email/verification`:
/// a mail with a link to `/verify-email`, unless the address is verified or
/// a link went out within the last minute; 303 back with the same notice
/// either way.
#[utoipa::path(
    post,
    path = "/account/email-verification",
    tag = "pages",
    operation_id = "emailVerificationForm",
    security((), ("sessionCookie" = [])),
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
pub(super) async fn request_verification(
    State(state): State<AppState>,
    Viewer(who): Viewer,
    Client(client): Client,
    Form(NoFields {}): Form<NoFields>,
) -> Result<Response, PageError> {
    mail_on(&state)?;
    Ok(
        match state
            .mail
            .send_verification(&who.user, REQUESTED_VERIFICATION_GAP, &client)
            .await
        {
            Ok(_) => see_other("/account?notice=verification-sent"),
            Err(e) => refused(e, LinkKind::EmailVerification),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::token_of;

    #[test]
    fn a_link_names_its_token_once() {
        assert_eq!(token_of(Some("token=abc")).as_deref(), Some("abc"));
        assert_eq!(
            token_of(Some("utm_source=mail&token=a%2Bb&x=1")).as_deref(),
            Some("a+b")
        );
        assert_eq!(token_of(Some("token=a&token=b")), None);
        assert_eq!(token_of(Some("token=")), None);
        assert_eq!(token_of(Some("other=1")), None);
        assert_eq!(token_of(None), None);
    }
}
