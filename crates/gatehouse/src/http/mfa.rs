//! `/v1/me/mfa*` and `/v1/me/passkeys*`: the caller's second factors (TOTP,
//! passkeys, recovery codes).

use axum::Json;
use axum::extract::{Path, State};
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
use crate::auth::passkeys::{Options, PasskeyError, PasskeyInfo};
use crate::auth::types::{PasskeyId, Password};
use crate::error::{Error, unavailable};
use webauthn_rs::prelude::RegisterPublicKeyCredential;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(begin_totp, remove_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(regenerate_codes))
        .routes(routes!(passkey_options))
        .routes(routes!(register_passkey))
        .routes(routes!(delete_passkey))
}

/// `GET /v1/me/mfa`.
#[derive(Serialize, ToSchema)]
struct MfaStatus {
    /// Whether TOTP is active (a pending enrolment is not).
    totp: bool,
    /// The caller's passkeys, oldest first.
    passkeys: Vec<PasskeyView>,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCodesRequest {
    /// A current TOTP code; may be left out (or empty) by a session that
    /// proved a passkey.
    #[serde(default)]
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
pub(super) fn secret_answer<T: Serialize>(body: T) -> Response {
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
    let passkeys = state
        .factors
        .passkeys(who.auth.user.id)
        .await
        .map_err(unavailable)?;
    Ok(Json(MfaStatus {
        totp: f.totp,
        passkeys: passkeys.iter().map(PasskeyView::from).collect(),
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
    request_body = NewCodesRequest,
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
    JsonBody(req): JsonBody<NewCodesRequest>,
) -> Result<Response, Error> {
    let codes = state
        .factors
        .regenerate_recovery_codes(&who.auth, &req.code, &client)
        .await?;
    Ok(secret_answer(RecoveryCodesResponse {
        recovery_codes: Some(codes),
    }))
}

/// A passkey.
#[derive(Serialize, ToSchema)]
#[schema(as = Passkey)]
pub(super) struct PasskeyView {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
    /// Null until its first use.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    last_used_at: Option<time::OffsetDateTime>,
}

impl From<&PasskeyInfo> for PasskeyView {
    fn from(p: &PasskeyInfo) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// A WebAuthn ceremony begun: the id to finish it with, and the options for
/// the browser (`PublicKeyCredential.parseCreationOptionsFromJSON` or
/// `parseRequestOptionsFromJSON`).
#[derive(Serialize, ToSchema)]
pub(super) struct CeremonyOptions {
    /// Single use; good for 5 minutes.
    #[schema(format = Uuid)]
    pub(super) challenge_id: String,
    /// The WebAuthn options, JSON form.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub(super) public_key: serde_json::Value,
}

impl From<Options> for CeremonyOptions {
    fn from(o: Options) -> Self {
        Self {
            challenge_id: o.challenge_id.to_string(),
            public_key: o.public_key,
        }
    }
}

/// The answers of a failed passkey ceremony, as each endpoint gives them.
pub(super) fn passkey_error(e: PasskeyError, failed: Error) -> Error {
    match e {
        PasskeyError::Unavailable => Error::NotFound,
        PasskeyError::Failed => failed,
        PasskeyError::SecondFactorRequired => Error::InsufficientAuthentication,
        PasskeyError::EmailNotVerified => Error::EmailNotVerified,
        PasskeyError::Throttled { retry_after } => Error::Throttled { retry_after },
        PasskeyError::Store(e) => unavailable(e),
    }
}

/// `POST /v1/me/passkeys/options`: begins registering a passkey for the
/// caller.
#[utoipa::path(
    post,
    path = "/v1/me/passkeys/options",
    tag = "mfa",
    operation_id = "passkeyRegistrationOptions",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    description = "A discoverable credential with user verification is asked for, so the \
        passkey can also sign in without a password. A user who has a second factor \
        already must call this from a session that proved one (401 \
        `insufficient_user_authentication` otherwise). 404 while passkeys are off (the \
        relying party id would be an IP address); 429 once the client network holds \
        `login_max_failures_per_ip` unfinished ceremonies.",
    responses(
        (status = 200, description = "The ceremony's options", body = CeremonyOptions),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn passkey_options(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
) -> Result<Response, Error> {
    let options = state
        .factors
        .begin_registration(&who.auth, &client)
        .await
        .map_err(|e| passkey_error(e, Error::BadRequest("The passkey ceremony failed.".into())))?;
    Ok(secret_answer(CeremonyOptions::from(options)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterPasskeyRequest {
    #[schema(format = Uuid)]
    challenge_id: String,
    /// A name for the user to tell their passkeys apart (64 characters
    /// kept; empty: "Passkey").
    #[serde(default)]
    #[schema(max_length = 64)]
    name: String,
    /// `PublicKeyCredential.toJSON()` of the created credential
    /// (RegistrationResponseJSON).
    #[schema(value_type = Object)]
    credential: RegisterPublicKeyCredential,
}

/// `POST /v1/me/passkeys`.
#[derive(Serialize, ToSchema)]
struct RegisteredPasskey {
    passkey: PasskeyView,
    /// 10 single-use codes when this is the user's first factor, shown
    /// this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    recovery_codes: Option<Vec<String>>,
}

/// `POST /v1/me/passkeys`: finishes registering a passkey.
#[utoipa::path(
    post,
    path = "/v1/me/passkeys",
    tag = "mfa",
    operation_id = "registerPasskey",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = RegisterPasskeyRequest,
    responses(
        (status = 201, description = "The passkey is registered", body = RegisteredPasskey,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn register_passkey(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<RegisterPasskeyRequest>,
) -> Result<Response, Error> {
    let (passkey, codes) = state
        .factors
        .finish_registration(
            &who.auth,
            &req.challenge_id,
            &req.name,
            &req.credential,
            &client,
        )
        .await
        .map_err(|e| passkey_error(e, Error::BadRequest("The passkey ceremony failed.".into())))?;
    let body = RegisteredPasskey {
        passkey: PasskeyView::from(&passkey),
        recovery_codes: codes,
    };
    Ok((
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// `DELETE /v1/me/passkeys/{id}`: removes one of the caller's passkeys (the
/// recovery codes go with the last factor).
#[utoipa::path(
    delete,
    path = "/v1/me/passkeys/{id}",
    tag = "mfa",
    operation_id = "deletePasskey",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The passkey's id")),
    responses(
        (status = 204, description = "The passkey is removed"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn delete_passkey(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = PasskeyId::parse(&id).ok_or(Error::NotFound)?;
    if !state
        .factors
        .remove_passkey(&who.auth, id, &client)
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
