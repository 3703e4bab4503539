//! `/v1/users` and `/v1/me*`: registration, who am I, password change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Client, CurrentUser, JsonBody};
use super::{AppState, SessionView, UserView};
use crate::auth::accounts::Registrar;
use crate::auth::types::Password;
use crate::error::{Error, unavailable};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/me", get(me))
        .route("/v1/me/password", post(change_password))
}

/// `POST /v1/users`. Only these two fields: anything else (such as
/// `roles`) is refused, so no one can assign themselves a role.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    email: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<impl IntoResponse, Error> {
    let user = state
        .auth
        .register(&req.email, req.password, Vec::new(), Registrar::Public)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": UserView::from(&user) })),
    ))
}

async fn me(State(state): State<AppState>, who: CurrentUser) -> Result<impl IntoResponse, Error> {
    let permissions = state
        .auth
        .permissions_of(who.auth.user.id)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "user": UserView::from(&who.auth.user),
        "session": SessionView::new(&state.auth, &who.auth.session, true),
        "permissions": permissions,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    who: CurrentUser,
    Client(client): Client,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<StatusCode, Error> {
    state
        .auth
        .change_password(
            &who.auth,
            Password::new(req.current_password),
            req.new_password,
            &client,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
