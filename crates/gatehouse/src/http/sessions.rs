//! `/v1/login`, `/v1/logout` and `/v1/sessions*`: the cookie session's
//! lifecycle.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Client, CurrentUser, JsonBody};
use super::{AppState, SessionView, UserView};
use crate::auth::audit::{Actor, Ending};
use crate::auth::types::{Password, SessionId};
use crate::error::{Error, unavailable};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/sessions", get(list).delete(end_others))
        .route("/v1/sessions/{id}", delete(end_one))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
}

/// `POST /v1/login`: a new session (a new secret every time, never one the
/// client chose) in the cookie.
async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Error> {
    let (user, new) = state
        .auth
        .login(&req.email, Password::new(req.password), &client)
        .await?;
    let cookie = state
        .web
        .session_cookie(&new.secret, &new.record, new.record.created_at);
    let body = json!({
        "user": UserView::from(&user),
        "session": SessionView::new(&state.auth, &new.record, true),
    });
    Ok(([(SET_COOKIE, cookie)], Json(body)).into_response())
}

/// `POST /v1/logout`: ends the credential's session and clears the cookie.
async fn logout(State(state): State<AppState>, who: CurrentUser) -> Result<Response, Error> {
    state
        .auth
        .end_session(
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

async fn list(State(state): State<AppState>, who: CurrentUser) -> Result<impl IntoResponse, Error> {
    let sessions = state
        .auth
        .live_sessions(who.auth.user.id)
        .await
        .map_err(unavailable)?;
    let views: Vec<SessionView> = sessions
        .iter()
        .map(|s| SessionView::new(&state.auth, s, s.id == who.auth.session.id))
        .collect();
    Ok(Json(json!({ "sessions": views })))
}

/// `DELETE /v1/sessions/{id}`: 404 alike for an unknown id and for another
/// user's session, so ids cannot be probed.
async fn end_one(
    State(state): State<AppState>,
    who: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id = SessionId::parse(&id).ok_or(Error::NotFound)?;
    let ended = state
        .auth
        .end_session(
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
async fn end_others(
    State(state): State<AppState>,
    who: CurrentUser,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, Error> {
    let scope_is_others = query.as_deref().is_some_and(|q| {
        let pairs: Vec<_> = url::form_urlencoded::parse(q.as_bytes()).collect();
        pairs.len() == 1 && pairs[0].0 == "scope" && pairs[0].1 == "others"
    });
    if !scope_is_others {
        return Err(Error::BadRequest(
            "DELETE /v1/sessions needs ?scope=others (to end one session, DELETE /v1/sessions/{id})".into(),
        ));
    }
    state
        .auth
        .end_sessions_of(
            who.auth.user.id,
            Some(who.auth.session.id),
            Actor::User(who.auth.user.id),
            Ending::SignedOutElsewhere,
        )
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}
