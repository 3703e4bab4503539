//! `/v1/me/mfa*`: the caller's second factors (TOTP and recovery codes).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CACHE_CONTROL;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Client, CurrentUser, JsonBody};
use super::openapi as oa;
use crate::auth::types::Password;
use crate::error::{Error, unavailable};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(begin_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_codes))
}

/// `GET /v1/me/mfa`.
#[derive(Serialize, ToSchema)]
struct MfaStatus {
    /// Whether TOTP is active (a pending enrolment is not).
    totp: bool,
    /// The caller's passkeys: always empty in this version, which offers
    /// TOTP and recovery codes only (docs/mfa.md).
    #[schema(value_type = Vec<Object>)]
    passkeys: [(); 0],
    /// Unused recovery codes.
    recovery_codes_left: u32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    /// The caller's current password.
    password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    /// A current TOTP code (six digits).
    #[schema(max_length = 64)]
    code: String,
}

/// `POST /v1/me/mfa/totp`.
#[derive(Serialize, ToSchema)]
struct TotpEnrolmentResponse {
    /// The key, base32 (RFC 4648, unpadded), for typing into an app.
    secret: String,
    /// `otpauth://totp/...` (SHA-1, 6 digits, 30 s), for a QR code.
    otpauth_uri: String,
}

/// Recovery codes, shown this once.
#[derive(Serialize, ToSchema)]
struct RecoveryCodesResponse {
    /// 10 single-use codes (60 bits each), shown this once; absent when
    /// the caller had codes already.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    recovery_codes: Option<Vec<String>>,
}

/// A response that carries secrets: never cached.
fn secret_answer<T: Serialize>(body: T) -> Response {
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /v1/me/mfa`: the caller's second factors.
#[utoipa::path(
    get,
    path = "/v1/me/mfa",
    tag = "mfa",
    operation_id = "mfaStatus",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "The caller's second factors", body = MfaStatus),
        (status = 401, response = oa::Unauthorized),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn status(State(state): State<AppState>, who: CurrentUser) -> Result<Response, Error> {
    let f = state
        .factors
        .status(who.auth.user.id)
        .await
        .map_err(unavailable)?;
    Ok(Json(MfaStatus {
        totp: f.totp,
        passkeys: [],
        recovery_codes_left: f.recovery_codes_left,
    })
    .into_response())
}

/// `POST /v1/me/mfa/totp`: a new TOTP key, pending until a code confirms
/// it (a pending one is replaced).
#[utoipa::path(
    post,
    path = "/v1/me/mfa/totp",
    tag = "mfa",
    operation_id = "beginTotp",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "The key, pending until confirmed", body = TotpEnrolmentResponse,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::Conflict),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn begin_totp(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<PasswordRequest>,
) -> Result<Response, Error> {
    let enrolment = state
        .accounts
        .begin_totp(&who.auth, Password::new(req.password), &client)
        .await?;
    Ok(secret_answer(TotpEnrolmentResponse {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
    }))
}

/// `POST /v1/me/mfa/totp/confirm`: activates the pending TOTP key with a
/// code from it; the first factor also issues recovery codes.
#[utoipa::path(
    post,
    path = "/v1/me/mfa/totp/confirm",
    tag = "mfa",
    operation_id = "confirmTotp",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "TOTP is active; `recovery_codes` when it is the first \
            factor", body = RecoveryCodesResponse,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn confirm_totp(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Response, Error> {
    let codes = state
        .factors
        .confirm_totp(&who.auth, &req.code, &client)
        .await?;
    Ok(secret_answer(RecoveryCodesResponse {
        recovery_codes: codes,
    }))
}

/// `DELETE /v1/me/mfa/totp`: removes TOTP, on a current code of it; the
/// recovery codes go with the last factor.
#[utoipa::path(
    delete,
    path = "/v1/me/mfa/totp",
    tag = "mfa",
    operation_id = "removeTotp",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 204, description = "TOTP is removed"),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn remove_totp(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<StatusCode, Error> {
    state
        .factors
        .remove_totp(&who.auth, &req.code, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/mfa/recovery-codes`: a new set of recovery codes, on a
/// current TOTP code; the old set is void.
#[utoipa::path(
    post,
    path = "/v1/me/mfa/recovery-codes",
    tag = "mfa",
    operation_id = "regenerateRecoveryCodes",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The new codes, shown this once", body = RecoveryCodesResponse,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn regenerate_codes(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Response, Error> {
    let codes = state
        .factors
        .regenerate_recovery_codes(&who.auth, &req.code, &client)
        .await?;
    Ok(secret_answer(RecoveryCodesResponse {
        recovery_codes: Some(codes),
    }))
}
