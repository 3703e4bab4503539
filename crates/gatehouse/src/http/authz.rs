//! `/v1/authorize` (may the caller do X?) and `/v1/verify` (forward
//! authentication for nginx `auth_request` and Traefik `ForwardAuth`).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{CurrentUser, JsonBody};
use crate::auth::FieldError;
use crate::auth::rules::{normalize_path, policy_for};
use crate::auth::types::Permission;
use crate::config::RulePolicy;
use crate::error::{Error, unavailable};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/authorize", post(authorize))
        .route("/v1/verify", any(verify))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    permission: String,
}

/// `POST /v1/authorize`: whether the caller holds a permission, from one
/// read of their effective permissions (a store error is 503, never an
/// answer).
async fn authorize(
    State(state): State<AppState>,
    who: CurrentUser,
    JsonBody(req): JsonBody<AuthorizeRequest>,
) -> Result<impl IntoResponse, Error> {
    let permission = Permission::parse(&req.permission)
        .map_err(|m| Error::Invalid(vec![FieldError::new("permission", m)]))?;
    let allowed = state
        .auth
        .has_permission(who.auth.user.id, &permission)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "allowed": allowed })))
}

const X_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const X_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const X_ROLES: HeaderName = HeaderName::from_static("x-auth-request-roles");

/// The original request's method and URI, from nginx's or Traefik's
/// headers.
fn original(headers: &HeaderMap) -> Result<(String, String), Error> {
    let get = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| headers.get(*n))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = get(["x-original-method", "x-forwarded-method"]).unwrap_or_else(|| "GET".into());
    let uri = get(["x-original-uri", "x-forwarded-uri"]).ok_or_else(|| {
        Error::BadRequest("X-Original-URI (nginx) or X-Forwarded-Uri (Traefik) is required".into())
    })?;
    Ok((method, uri))
}

/// `GET /v1/verify`: 200 with the user's headers, 401 or 403, by the first
/// matching `[[rules]]` entry (no match: authenticated).
async fn verify(State(state): State<AppState>, req: Request) -> Result<Response, Error> {
    let (mut parts, _) = req.into_parts();
    let (method, uri) = original(&parts.headers)?;
    let path = normalize_path(&uri)
        .map_err(|_| Error::BadRequest("the original URI's path is malformed".into()))?;
    let policy = policy_for(&state.web.rules, &method, &path);
    match policy {
        RulePolicy::Public => return Ok(StatusCode::OK.into_response()),
        RulePolicy::Deny => return Err(Error::Forbidden("This path is closed by an access rule.")),
        RulePolicy::Authenticated | RulePolicy::Permission(_) => {}
    }
    let who = CurrentUser::from_request_parts(&mut parts, &state).await?;
    if let RulePolicy::Permission(p) = policy {
        let permission = Permission::parse(p).map_err(anyhow::Error::msg)?;
        let allowed = state
            .auth
            .has_permission(who.auth.user.id, &permission)
            .await
            .map_err(unavailable)?;
        if !allowed {
            return Err(Error::Forbidden(
                "The caller lacks the permission this path requires.",
            ));
        }
    }
    let user = &who.auth.user;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(
        X_USER,
        HeaderValue::from_str(&user.id.to_string()).map_err(anyhow::Error::new)?,
    );
    // Emails and role names are checked on the way in; neither holds a
    // character a header cannot carry.
    if let Ok(v) = HeaderValue::from_str(&user.email) {
        h.insert(X_EMAIL, v);
    }
    if let Ok(v) = HeaderValue::from_str(&user.roles.join(",")) {
        h.insert(X_ROLES, v);
    }
    Ok(res)
}
