//! `/v1/admin/*`: users, their roles and sessions, roles, and resource
//! servers. Every handler takes [`Admin`], so none can be written without
//! the permission check.

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::extract::{CurrentUser, JsonBody};
use super::{AppState, UserView};
use crate::auth::FieldError;
use crate::auth::accounts::Registrar;
use crate::auth::audit::{Actor, AuditEvent, Ending, EventType};
use crate::auth::feed::CreateResourceServerFailure;
use crate::auth::types::{Permission, ResourceServerId, RoleName, UserId};
use crate::error::{Error, unavailable};
use crate::store::{ResourceServerRecord, RolesError};

/// Users per page when the client does not say.
const DEFAULT_PAGE: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list_users).post(create_user))
        .route(
            "/v1/admin/users/{id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route("/v1/admin/users/{id}/roles", put(set_user_roles))
        .route(
            "/v1/admin/users/{id}/sessions",
            axum::routing::delete(end_user_sessions),
        )
        .route("/v1/admin/audit", get(list_audit))
        .route("/v1/admin/roles", get(list_roles))
        .route("/v1/admin/roles/{name}", put(put_role).delete(delete_role))
        .route(
            "/v1/admin/resource-servers",
            get(list_resource_servers).post(create_resource_server),
        )
        .route(
            "/v1/admin/resource-servers/{id}",
            axum::routing::delete(delete_resource_server),
        )
}

/// An authenticated caller holding `gatehouse:admin`: 401 without
/// credentials, 403 without the permission, 503 when the permission cannot
/// be read (never allow, never deny on a store error).
#[derive(Debug)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let who = CurrentUser::from_request_parts(parts, state).await?;
        let admin = Permission::parse(Permission::ADMIN).map_err(anyhow::Error::msg)?;
        let allowed = state
            .auth
            .has_permission(who.auth.user.id, &admin)
            .await
            .map_err(unavailable)?;
        if !allowed {
            return Err(Error::Forbidden(
                "The gatehouse:admin permission is required.",
            ));
        }
        Ok(Self(who))
    }
}

impl Admin {
    /// The administrator, as the audit trail names them.
    pub fn actor(&self) -> Actor {
        Actor::User(self.0.auth.user.id)
    }
}

fn user_id(raw: &str) -> Result<UserId, Error> {
    UserId::parse(raw).ok_or(Error::NotFound)
}

fn role_name(raw: &str) -> Result<RoleName, Error> {
    RoleName::parse(raw).map_err(|m| Error::Invalid(vec![FieldError::new("name", m)]))
}

fn role_names(raw: &[String]) -> Result<Vec<RoleName>, Error> {
    raw.iter()
        .map(|r| RoleName::parse(r).map_err(|m| Error::Invalid(vec![FieldError::new("roles", m)])))
        .collect()
}

fn roles_error(e: RolesError) -> Error {
    match e {
        RolesError::UnknownRole(r) => Error::Invalid(vec![FieldError::new(
            "roles",
            format!("unknown role {r:?}"),
        )]),
        RolesError::Store(e) => unavailable(e),
    }
}

/// `GET /v1/admin/audit?user=&type=&cursor=&limit=`: the audit trail,
/// newest first. An empty parameter is as good as absent; a user id that is
/// not a UUID, an unknown type, a cursor we did not issue, a bad limit or an
/// unknown parameter is 400.
async fn list_audit(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, Error> {
    let mut limit = DEFAULT_PAGE;
    let (mut user, mut kind, mut cursor) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "user" => {
                user =
                    Some(UserId::parse(&v).ok_or_else(|| {
                        Error::BadRequest("user must be a user id (a UUID)".into())
                    })?);
            }
            "type" => {
                kind = Some(EventType::parse(&v).ok_or_else(|| {
                    Error::BadRequest(format!("unknown event type {:?}", truncated(&v)))
                })?);
            }
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v.into_owned()),
            other => return Err(unknown_parameter(other)),
        }
    }
    let page = state
        .auth
        .audit_events(user, kind, cursor.as_deref(), limit)
        .await
        .map_err(unavailable)?
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let events: Vec<AuditEventView> = page.events.iter().map(AuditEventView::from).collect();
    Ok(Json(
        json!({ "events": events, "next_cursor": page.next_cursor }),
    ))
}

/// At most 64 characters of a client's string, for an error message.
fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A page size: 1 to 200 (`MAX_PAGE` of users and of audit events alike).
fn page_limit(v: &str) -> Result<u32, Error> {
    v.parse()
        .ok()
        .filter(|n| (1..=crate::auth::admin::MAX_PAGE).contains(n))
        .ok_or_else(|| Error::BadRequest("limit must be an integer from 1 to 200".into()))
}

fn unknown_parameter(name: &str) -> Error {
    Error::BadRequest(format!("unknown query parameter {:?}", truncated(name)))
}

/// An audit event as the API shows it.
#[derive(Debug, Serialize)]
struct AuditEventView {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    at: time::OffsetDateTime,
    user_id: Option<String>,
    actor: &'static str,
    actor_id: Option<String>,
    session_id: Option<String>,
    ip: Option<String>,
    details: serde_json::Value,
}

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> Self {
        let (actor, actor_id) = e.actor.parts();
        Self {
            id: e.id.to_string(),
            kind: e.kind.as_str(),
            at: e.at,
            user_id: e.user_id.map(|u| u.to_string()),
            actor,
            actor_id: actor_id.map(|u| u.to_string()),
            session_id: e.session_id.map(|s| s.to_string()),
            ip: e.ip.clone(),
            details: e.details.clone(),
        }
    }
}

/// `GET /v1/admin/users?limit=&cursor=`.
async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, Error> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => limit = page_limit(&v)?,
            "cursor" => cursor = Some(v.into_owned()),
            other => return Err(unknown_parameter(other)),
        }
    }
    let page = state
        .auth
        .list_users(cursor.as_deref(), limit)
        .await
        .map_err(unavailable)?
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    let users: Vec<UserView> = page.users.iter().map(UserView::from).collect();
    Ok(Json(
        json!({ "users": users, "next_cursor": page.next_cursor }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// `POST /v1/admin/users`: like registration, with roles, and open even
/// when registration is closed.
async fn create_user(
    admin: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, Error> {
    let roles = role_names(&req.roles)?;
    let user = state
        .auth
        .register(
            &req.email,
            req.password,
            roles,
            Registrar::Admin(admin.0.auth.user.id),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": UserView::from(&user) })),
    ))
}

async fn get_user(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let user = state
        .auth
        .user(user_id(&id)?)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(Json(json!({ "user": UserView::from(&user) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    disabled: bool,
}

/// `PATCH /v1/admin/users/{id}` `{"disabled": bool}`: disabling ends every
/// session of the user at once.
async fn patch_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchUser>,
) -> Result<impl IntoResponse, Error> {
    let user = state
        .auth
        .set_disabled(user_id(&id)?, req.disabled, admin.actor())
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(Json(json!({ "user": UserView::from(&user) })))
}

async fn delete_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    if !state
        .auth
        .delete_user(user_id(&id)?, admin.actor())
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRoles {
    roles: Vec<String>,
}

async fn set_user_roles(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetRoles>,
) -> Result<impl IntoResponse, Error> {
    let id = user_id(&id)?;
    let roles = role_names(&req.roles)?;
    let user = state
        .auth
        .set_user_roles(id, &roles, admin.actor())
        .await
        .map_err(roles_error)?
        .ok_or(Error::NotFound)?;
    Ok(Json(json!({ "user": UserView::from(&user) })))
}

/// `DELETE /v1/admin/users/{id}/sessions`: a forced logout everywhere.
async fn end_user_sessions(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = user_id(&id)?;
    state
        .auth
        .user(id)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    state
        .auth
        .end_sessions_of(id, None, admin.actor(), Ending::EndedByAdmin)
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    let roles: Vec<_> = state
        .auth
        .roles()
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|r| json!({ "name": r.name, "permissions": r.permissions }))
        .collect();
    Ok(Json(json!({ "roles": roles })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRole {
    permissions: Vec<String>,
}

/// `PUT /v1/admin/roles/{name}`: creates the role or replaces its
/// permissions; holders' cookie sessions see the change at once.
async fn put_role(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<PutRole>,
) -> Result<impl IntoResponse, Error> {
    let name = role_name(&name)?;
    let permissions = req
        .permissions
        .iter()
        .map(|p| {
            Permission::parse(p)
                .map_err(|m| Error::Invalid(vec![FieldError::new("permissions", m)]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    state
        .auth
        .set_role(&name, &permissions, admin.actor())
        .await
        .map_err(unavailable)?;
    let mut perms: Vec<&str> = permissions.iter().map(Permission::as_str).collect();
    perms.sort_unstable();
    perms.dedup();
    Ok(Json(
        json!({ "role": { "name": name.as_str(), "permissions": perms } }),
    ))
}

async fn delete_role(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let name = RoleName::parse(&name).map_err(|_| Error::NotFound)?;
    if !state
        .auth
        .delete_role(&name, admin.actor())
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A resource server as the API shows it (never its key, which is shown
/// once, at creation).
fn resource_server_view(rs: &ResourceServerRecord) -> serde_json::Value {
    json!({
        "id": rs.id.to_string(),
        "name": rs.name,
        "created_at": rs.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateResourceServer {
    name: String,
}

/// `POST /v1/admin/resource-servers` `{"name"}`: 201 with the new key,
/// shown this once (only its hash is kept).
async fn create_resource_server(
    admin: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateResourceServer>,
) -> Result<impl IntoResponse, Error> {
    let created = state
        .auth
        .create_resource_server(&req.name, admin.actor())
        .await
        .map_err(|e| match e {
            CreateResourceServerFailure::Invalid(errors) => Error::Invalid(errors),
            CreateResourceServerFailure::NameTaken => {
                Error::Conflict("A resource server with this name exists.")
            }
            CreateResourceServerFailure::Store(e) => unavailable(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "resource_server": resource_server_view(&created.record),
            "key": created.key.key(),
        })),
    ))
}

async fn list_resource_servers(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, Error> {
    let all = state.auth.resource_servers().await.map_err(unavailable)?;
    let views: Vec<_> = all.iter().map(resource_server_view).collect();
    Ok(Json(json!({ "resource_servers": views })))
}

/// `DELETE /v1/admin/resource-servers/{id}`: the key stops working at once.
async fn delete_resource_server(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = ResourceServerId::parse(&id).ok_or(Error::NotFound)?;
    if !state
        .auth
        .delete_resource_server(id, admin.actor())
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
