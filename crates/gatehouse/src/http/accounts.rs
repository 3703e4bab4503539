//! `/v1/users` and `/v1/me*`: registration, who am I, password change.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Client, CurrentUser, JsonBody};
use super::openapi as oa;
use super::{AppState, SessionView, UserView};
use crate::auth::accounts::Registrar;
use crate::auth::types::Password;
use crate::error::Error;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// `{"user": User}`: what creating, reading or changing one user answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub user: UserView,
}

impl UserResponse {
    pub fn of(user: &crate::store::UserRecord) -> Json<Self> {
        Json(Self {
            user: UserView::from(user),
        })
    }
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
struct MeResponse {
    user: UserView,
    /// The session of the request's credential (`current` is true).
    session: SessionView,
    /// The caller's effective permissions, sorted.
    permissions: Vec<String>,
}

/// `POST /v1/users`. Only these two fields: anything else (such as
/// `roles`) is refused, so no one can assign themselves a role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    /// Trimmed and compared case-insensitively.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters, not a common password, not the email.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// `POST /v1/users`: creates an account (it does not log in). Every
/// attempt counts toward the client network's registration budget.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "accounts",
    operation_id = "register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account", body = UserResponse),
        (status = 400, response = oa::BadRequest),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::Conflict),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<impl IntoResponse, Error> {
    let registrar = Registrar::Public { ip: client.ip };
    let user = state
        .accounts
        .register(&req.email, req.password, Vec::new(), registrar)
        .await?;
    Ok((StatusCode::CREATED, UserResponse::of(&user)))
}

/// `GET /v1/me`: the caller, their session and effective permissions.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "accounts",
    operation_id = "me",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn me(State(state): State<AppState>, who: CurrentUser) -> Result<impl IntoResponse, Error> {
    let permissions = who.permissions(&state.gate).await?.to_vec();
    Ok(Json(MeResponse {
        user: UserView::from(&who.auth.user),
        session: SessionView::new(&state.sessions, &who.auth.session, true),
        permissions,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    current_password: String,
    /// 8 to 128 characters, not a common password, not the email.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// `POST /v1/me/password`: the policy is checked first (422), then the
/// current password (401, counted by the login throttle); every other
/// session of the user ends.
#[utoipa::path(
    post,
    path = "/v1/me/password",
    tag = "accounts",
    operation_id = "changePassword",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; every other session of the user ended"),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 429, response = oa::Throttled),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<StatusCode, Error> {
    state
        .accounts
        .change_password(
            &who.auth,
            Password::new(req.current_password),
            req.new_password,
            &client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
