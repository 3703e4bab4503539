//! `/v1/login`, `/v1/logout` and `/v1/sessions*`: the cookie session's
//! lifecycle.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Client, CurrentUser, JsonBody, StrictQuery};
use super::openapi as oa;
use super::{AppState, SessionView, UserView};
use crate::auth::accounts::LoginError;
use crate::auth::audit::{Actor, Ending};
use crate::auth::mfa::Proof;
use crate::auth::sessions::NewSession;
use crate::auth::types::{Password, SessionId};
use crate::error::{Error, unavailable};
use crate::http::mfa::{CeremonyOptions, passkey_error, secret_answer};
use crate::store::UserRecord;
use webauthn_rs::prelude::PublicKeyCredential;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(login_mfa))
        .routes(routes!(login_mfa_passkey_options))
        .routes(routes!(passwordless_options))
        .routes(routes!(passwordless))
        .routes(routes!(logout))
        .routes(routes!(list, end_others))
        .routes(routes!(end_one))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

/// `POST /v1/login`, `POST /v1/login/mfa`: signed in.
#[derive(Serialize, ToSchema)]
struct LoginResponse {
    user: UserView,
    /// The new session (`current` is true).
    session: SessionView,
}

/// `POST /v1/login` for a user with a second factor: the password is right,
/// no session yet.
#[derive(Serialize, ToSchema)]
struct MfaRequiredResponse {
    /// Always `true`.
    mfa_required: bool,
    /// Names this login's second step (`POST /v1/login/mfa`); single use.
    mfa_token: String,
    /// The user's methods: `totp`, `recovery_code` (while codes are left).
    methods: Vec<&'static str>,
    /// Seconds the `mfa_token` stays good.
    expires_in: u64,
}

/// What `POST /v1/login` answers with 200.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum LoginAnswer {
    SignedIn(LoginResponse),
    MfaRequired(MfaRequiredResponse),
}

/// Either `code`, or `challenge_id` and `credential`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginMfaRequest {
    /// The `mfa_token` of the `mfa_required` answer.
    mfa_token: String,
    /// A TOTP code (six digits) or a recovery code.
    #[serde(default)]
    #[schema(max_length = 64, nullable = false)]
    code: Option<String>,
    /// With `credential`: the ceremony of `POST /v1/login/mfa/passkey-options`.
    #[serde(default)]
    #[schema(format = Uuid, nullable = false)]
    challenge_id: Option<String>,
    /// With `challenge_id`: `PublicKeyCredential.toJSON()` of the assertion.
    #[serde(default)]
    #[schema(value_type = Object, nullable = false)]
    credential: Option<PublicKeyCredential>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasskeyOptionsRequest {
    /// The `mfa_token` of the `mfa_required` answer.
    mfa_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordlessRequest {
    #[schema(format = Uuid)]
    challenge_id: String,
    /// `PublicKeyCredential.toJSON()` of the assertion.
    #[schema(value_type = Object)]
    credential: PublicKeyCredential,
}

/// `GET /v1/sessions`.
#[derive(Serialize, ToSchema)]
struct SessionsResponse {
    /// The caller's live sessions.
    sessions: Vec<SessionView>,
}

/// `DELETE /v1/sessions?scope=…`: `others` is the only scope (read by
/// [`StrictQuery`]).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EndOthersQuery {
    /// Must be `others`: ending sessions is not done by default.
    #[param(value_type = String, pattern = "^others$")]
    scope: Option<String>,
}

/// `POST /v1/login`: a new session (a new secret every time, never one the
/// client chose) in the cookie.
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "sessions",
    operation_id = "login",
    request_body = LoginRequest,
    description = "For a user with a second factor, the right password answers \
        `{\"mfa_required\": true, \"mfa_token\", \"methods\", \"expires_in\"}`, with no \
        cookie and no session: `POST /v1/login/mfa` completes the login.",
    responses(
        (status = 200, description = "Logged in (the session cookie is set), or the password \
            is right and a second factor is required (no cookie)", body = LoginAnswer,
            headers(("Set-Cookie" = String, description = "The new session cookie, when \
            logged in"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Error> {
    match state
        .accounts
        .login(&req.email, Password::new(req.password), &client)
        .await
    {
        Ok((user, new)) => Ok(signed_in(&state, &user, &new)),
        Err(LoginError::SecondFactorRequired(challenge)) => {
            let body = LoginAnswer::MfaRequired(MfaRequiredResponse {
                mfa_required: true,
                mfa_token: challenge.mfa_token.encode(),
                methods: challenge.methods.iter().map(|m| m.as_str()).collect(),
                expires_in: challenge.expires_in.as_secs(),
            });
            Ok(secret_answer(body))
        }
        Err(e) => Err(e.into()),
    }
}

/// 200 with the user, the new session and its cookie.
fn signed_in(state: &AppState, user: &UserRecord, new: &NewSession) -> Response {
    let cookie = state
        .web
        .session_cookie(&new.secret, &new.record, new.record.created_at);
    let body = LoginAnswer::SignedIn(LoginResponse {
        user: UserView::from(user),
        session: SessionView::new(&state.sessions, &new.record, true),
    });
    ([(SET_COOKIE, cookie)], Json(body)).into_response()
}

/// `POST /v1/login/mfa`: the second step of a login, with a TOTP or a
/// recovery code.
#[utoipa::path(
    post,
    path = "/v1/login/mfa",
    tag = "sessions",
    operation_id = "loginMfa",
    request_body = LoginMfaRequest,
    description = "Wrong codes count toward the login throttle of the account and client \
        address (429 past it) and do not spend the `mfa_token`; it dies after \
        `login_max_failures` of them, after 5 minutes, or when a login completes with it. \
        A TOTP code is accepted once.",
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse,
            headers(("Set-Cookie" = String, description = "The new session cookie"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn login_mfa(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<LoginMfaRequest>,
) -> Result<Response, Error> {
    let proof = match (&req.code, &req.challenge_id, &req.credential) {
        (Some(code), None, None) => Proof::Code(code.trim()),
        (None, Some(challenge_id), Some(credential)) => Proof::Passkey {
            challenge_id,
            credential,
        },
        _ => {
            return Err(Error::BadRequest(
                "Send either code, or challenge_id and credential.".into(),
            ));
        }
    };
    let (user, new) = state
        .factors
        .complete_login(&req.mfa_token, proof, &client)
        .await?;
    Ok(signed_in(&state, &user, &new))
}

/// `POST /v1/login/mfa/passkey-options`: a passkey ceremony for the second
/// step of a login (the user's passkeys, user verification required).
#[utoipa::path(
    post,
    path = "/v1/login/mfa/passkey-options",
    tag = "sessions",
    operation_id = "loginMfaPasskeyOptions",
    request_body = PasskeyOptionsRequest,
    description = "Finish with `POST /v1/login/mfa` `{\"mfa_token\", \"challenge_id\", \
        \"credential\"}`. 401 for a spent, expired or unknown `mfa_token` or a user without \
        passkeys; 404 while passkeys are off; 429 once the client network holds \
        `login_max_failures_per_ip` unfinished ceremonies.",
    responses(
        (status = 200, description = "The ceremony's options", body = CeremonyOptions),
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
async fn login_mfa_passkey_options(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<PasskeyOptionsRequest>,
) -> Result<Response, Error> {
    let options = state
        .factors
        .begin_second_factor(&req.mfa_token, &client)
        .await
        .map_err(|e| passkey_error(e, Error::InvalidMfaToken))?;
    Ok(secret_answer(CeremonyOptions::from(options)))
}

/// `POST /v1/login/passkey/options`: a passwordless login's ceremony.
#[utoipa::path(
    post,
    path = "/v1/login/passkey/options",
    tag = "sessions",
    operation_id = "passwordlessOptions",
    description = "Any discoverable credential of this relying party, user verification \
        required; finish with `POST /v1/login/passkey`. 404 while passkeys are off. Each \
        client network may hold `login_max_failures_per_ip` unfinished ceremonies within \
        `login_window` (429 past it); a completed passwordless login gives one back.",
    responses(
        (status = 200, description = "The ceremony's options", body = CeremonyOptions),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn passwordless_options(
    State(state): State<AppState>,
    Client(client): Client,
) -> Result<Response, Error> {
    let options = state
        .factors
        .begin_passwordless(&client)
        .await
        .map_err(|e| passkey_error(e, Error::Unauthorized))?;
    Ok(secret_answer(CeremonyOptions::from(options)))
}

/// `POST /v1/login/passkey`: a passwordless login with a passkey.
#[utoipa::path(
    post,
    path = "/v1/login/passkey",
    tag = "sessions",
    operation_id = "passwordless",
    request_body = PasswordlessRequest,
    description = "The session's `amr` is `[\"hwk\", \"user\", \"mfa\"]`. 401 for a failed \
        ceremony, an unknown credential, a spent or expired challenge, or a disabled user.",
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse,
            headers(("Set-Cookie" = String, description = "The new session cookie"))),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn passwordless(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<PasswordlessRequest>,
) -> Result<Response, Error> {
    let (user, new) = state
        .factors
        .finish_passwordless(&req.challenge_id, &req.credential, &client)
        .await
        .map_err(|e| passkey_error(e, Error::Unauthorized))?;
    Ok(signed_in(&state, &user, &new))
}

/// `POST /v1/logout`: ends the credential's session and clears the cookie.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "sessions",
    operation_id = "logout",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 204, description = "The session ended; the cookie is cleared",
            headers(("Set-Cookie" = String, description = "The cookie, cleared (Max-Age=0)"))),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn logout(State(state): State<AppState>, who: CurrentUser) -> Result<Response, Error> {
    state
        .sessions
        .end(
            who.auth.user.id,
            who.auth.session.id,
            Actor::User(who.auth.user.id),
            Ending::Logout,
        )
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, state.web.removal_cookie())],
    )
        .into_response())
}

/// `GET /v1/sessions`: the caller's live sessions.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "listSessions",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "The caller's live sessions", body = SessionsResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<impl IntoResponse, Error> {
    let sessions = state
        .sessions
        .live_sessions(who.auth.user.id)
        .await
        .map_err(unavailable)?;
    let views: Vec<SessionView> = sessions
        .iter()
        .map(|s| SessionView::new(&state.sessions, s, s.id == who.auth.session.id))
        .collect();
    Ok(Json(SessionsResponse { sessions: views }))
}

/// `DELETE /v1/sessions/{id}`: 404 alike for an unknown id and for another
/// user's session, so ids cannot be probed.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    operation_id = "endSession",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The session's id")),
    responses(
        (status = 204, description = "The session ended (the cookie is cleared when it was the \
            caller's own)", headers(("Set-Cookie" = String, description = "Present when the \
            caller ended its own session: the cookie, cleared"))),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn end_one(
    State(state): State<AppState>,
    who: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = SessionId::parse(&id).ok_or(Error::NotFound)?;
    let ended = state
        .sessions
        .end(
            who.auth.user.id,
            id,
            Actor::User(who.auth.user.id),
            Ending::EndedByUser,
        )
        .await
        .map_err(unavailable)?;
    if !ended {
        return Err(Error::NotFound);
    }
    if id == who.auth.session.id {
        return Ok((
            StatusCode::NO_CONTENT,
            [(SET_COOKIE, state.web.removal_cookie())],
        )
            .into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/sessions?scope=others`: every session of the caller but the
/// current one. Without `scope=others` the request is refused rather than
/// guessed at: ending sessions is not something to do by default.
#[utoipa::path(
    delete,
    path = "/v1/sessions",
    tag = "sessions",
    operation_id = "endOtherSessions",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(EndOthersQuery),
    responses(
        (status = 204, description = "Every session of the caller but the current one ended"),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn end_others(
    State(state): State<AppState>,
    who: CurrentUser,
    StrictQuery(query): StrictQuery<EndOthersQuery>,
) -> Result<StatusCode, Error> {
    if query.scope.as_deref() != Some("others") {
        return Err(Error::BadRequest(
            "DELETE /v1/sessions needs ?scope=others (to end one session, DELETE /v1/sessions/{id})".into(),
        ));
    }
    state
        .sessions
        .end_all_of(
            who.auth.user.id,
            Some(who.auth.session.id),
            Actor::User(who.auth.user.id),
            Ending::SignedOutElsewhere,
        )
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}
