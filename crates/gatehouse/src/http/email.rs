//! The email endpoints: `POST /v1/password-reset` (and its `/confirm`),
//! `POST /v1/me/email/verification`, `POST /v1/email/verify`. Without
//! `smtp_url` each answers 404. Links in mails are built on `public_url`,
//! never on this request's `Host` or `X-Forwarded-Host`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Client, CurrentUser, JsonBody};
use super::openapi as oa;
use crate::auth::mail::REQUESTED_VERIFICATION_GAP;
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(request_verification))
        .routes(routes!(verify_email))
}

/// What `POST /v1/password-reset` and `POST /v1/me/email/verification`
/// answer: the same text whatever happened.
#[derive(Debug, Serialize, ToSchema)]
struct AcceptedResponse {
    message: &'static str,
}

/// The one answer of `POST /v1/password-reset`, for known and unknown
/// addresses alike.
pub const RESET_ACCEPTED: &str = "If an account uses this address, a mail with a link to reset \
     its password is on its way. The link works once and expires.";

const VERIFICATION_ACCEPTED: &str = "Unless your address is verified already, or a mail was \
     sent a moment ago, a mail with a link to verify it is on its way.";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordResetRequest {
    /// Trimmed and compared case-insensitively.
    #[schema(format = Email, max_length = 254)]
    email: String,
}

/// `POST /v1/password-reset`: 202 and the same body, in the same time, for
/// known and unknown addresses; a known, enabled account gets a mail with
/// a link to `/reset-password?token=…`. Counted per address and per
/// client network before anything is looked up.
#[utoipa::path(
    post,
    path = "/v1/password-reset",
    tag = "email",
    operation_id = "requestPasswordReset",
    request_body = PasswordResetRequest,
    responses(
        (status = 202, description = "Accepted (whether or not the address has an account)", body = AcceptedResponse),
        (status = 400, response = oa::BadRequest),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn request_password_reset(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<PasswordResetRequest>,
) -> Result<impl IntoResponse, Error> {
    state
        .mail
        .request_password_reset(&req.email, &client)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse {
            message: RESET_ACCEPTED,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfirmResetRequest {
    /// The `token` of the mailed link.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
    /// 8 to 128 characters, not a common password, not the email.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// `POST /v1/password-reset/confirm`: sets the password and ends every
/// session of the user (their access and refresh tokens with them). A
/// weak password (422) leaves the token unspent.
#[utoipa::path(
    post,
    path = "/v1/password-reset/confirm",
    tag = "email",
    operation_id = "confirmPasswordReset",
    request_body = ConfirmResetRequest,
    responses(
        (status = 204, description = "The password is changed; every session of the user ended"),
        (status = 400, description = "Malformed, or the token is unknown, used, expired or void (problem type `invalid-mail-token`)", body = oa::Problem, content_type = "application/problem+json"),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn confirm_password_reset(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<ConfirmResetRequest>,
) -> Result<StatusCode, Error> {
    state
        .mail
        .reset_password(&req.token, req.new_password, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/email/verification`: a mail with a link to
/// `/verify-email?token=…`, unless the caller's address is verified or a
/// link was sent within the last minute (202 either way).
#[utoipa::path(
    post,
    path = "/v1/me/email/verification",
    tag = "email",
    operation_id = "requestEmailVerification",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 202, description = "Accepted", body = AcceptedResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn request_verification(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
) -> Result<impl IntoResponse, Error> {
    state
        .mail
        .send_verification(&who.auth.user, REQUESTED_VERIFICATION_GAP, &client)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedResponse {
            message: VERIFICATION_ACCEPTED,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyEmailRequest {
    /// The `token` of the mailed link.
    #[schema(min_length = 43, max_length = 43)]
    token: String,
}

/// `POST /v1/email/verify`: the user's `email_verified` becomes true.
#[utoipa::path(
    post,
    path = "/v1/email/verify",
    tag = "email",
    operation_id = "verifyEmail",
    request_body = VerifyEmailRequest,
    responses(
        (status = 204, description = "The address is verified"),
        (status = 400, description = "Malformed, or the token is unknown, used, expired or void (problem type `invalid-mail-token`)", body = oa::Problem, content_type = "application/problem+json"),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn verify_email(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<VerifyEmailRequest>,
) -> Result<StatusCode, Error> {
    state.mail.verify_email(&req.token, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
