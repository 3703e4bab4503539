//! `/v1/admin/*`: users, their roles and sessions, roles, and resource
//! servers. Every handler takes [`Admin`], so none can be written without
//! the permission check.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::UserResponse;
use super::extract::{CurrentUser, JsonBody, StrictQuery, empty_is_none};
use super::openapi as oa;
use super::{AppState, UserView};
use crate::auth::FieldError;
use crate::auth::accounts::Registrar;
use crate::auth::audit::{Actor, AuditEvent, Ending, EventType};
use crate::auth::feed::CreateResourceServerFailure;
use crate::auth::types::{Permission, ResourceServerId, RoleName, UserId};
use crate::error::{Error, unavailable};
use crate::store::{AdminChangeError, ResourceServerRecord};

/// Users per page when the client does not say.
const DEFAULT_PAGE: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(set_user_roles))
        .routes(routes!(reset_user_mfa))
        .routes(routes!(end_user_sessions))
        .routes(routes!(list_audit))
        .routes(routes!(list_roles))
        .routes(routes!(put_role, delete_role))
        .routes(routes!(list_resource_servers, create_resource_server))
        .routes(routes!(delete_resource_server))
}

/// `GET /v1/admin/users`: one page, oldest first.
#[derive(Serialize, ToSchema)]
struct UsersPage {
    users: Vec<UserView>,
    /// Pass back as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// `GET /v1/admin/audit`: one page, newest first.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    events: Vec<AuditEventView>,
    /// Pass back as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A role and its permissions.
#[derive(Serialize, ToSchema)]
struct RoleView {
    name: String,
    /// Sorted, without duplicates.
    permissions: Vec<String>,
}

/// `GET /v1/admin/roles`.
#[derive(Serialize, ToSchema)]
struct RolesResponse {
    roles: Vec<RoleView>,
}

/// `PUT /v1/admin/roles/{name}`.
#[derive(Serialize, ToSchema)]
struct RoleResponse {
    role: RoleView,
}

/// A resource server as the API shows it: never its key, which is shown
/// once, at creation.
#[derive(Serialize, ToSchema)]
#[schema(as = ResourceServer)]
struct ResourceServerView {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
}

impl From<&ResourceServerRecord> for ResourceServerView {
    fn from(rs: &ResourceServerRecord) -> Self {
        Self {
            id: rs.id.to_string(),
            name: rs.name.clone(),
            created_at: rs.created_at,
        }
    }
}

/// `POST /v1/admin/resource-servers`: the key is in this answer only.
#[derive(Serialize, ToSchema)]
struct ResourceServerCreated {
    resource_server: ResourceServerView,
    /// `ghrs_` and 43 base64url characters; only its hash is kept.
    #[schema(pattern = "^ghrs_[A-Za-z0-9_-]{43}$")]
    key: String,
}

/// `GET /v1/admin/resource-servers`.
#[derive(Serialize, ToSchema)]
struct ResourceServersResponse {
    resource_servers: Vec<ResourceServerView>,
}

/// The query of `GET /v1/admin/users` (read by [`StrictQuery`]: a
/// parameter given twice or unknown is 400).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsersQuery {
    /// Users per page, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200, nullable = false)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(min_length = 1, nullable = false)]
    cursor: Option<String>,
}

/// The query of `GET /v1/admin/audit` (read by [`StrictQuery`]); an empty
/// value is as good as none.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only events about this user (a user id).
    #[serde(default, deserialize_with = "empty_is_none")]
    #[param(format = Uuid, nullable = false)]
    user: Option<String>,
    /// Only events of this type (such as `login_failed`).
    #[serde(default, rename = "type", deserialize_with = "empty_is_none")]
    #[param(rename = "type", nullable = false)]
    kind: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default, deserialize_with = "empty_is_none")]
    #[param(nullable = false)]
    cursor: Option<String>,
    /// Events per page, 1 to 200 (default 50).
    #[serde(default, deserialize_with = "empty_is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200, nullable = false)]
    limit: Option<String>,
}

/// An authenticated caller holding `gatehouse:admin`: 401 without
/// credentials, 403 without the permission, 503 when the permission cannot
/// be read (never allow, never deny on a store error); with
/// `admin_requires_mfa`, 401 `insufficient_user_authentication` when the
/// caller's session proved no second factor.
#[derive(Debug)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let who = CurrentUser::from_request_parts(parts, state).await?;
        let admin = Permission::parse(Permission::ADMIN).map_err(anyhow::Error::msg)?;
        if !who.has_permission(&state.gate, &admin).await? {
            return Err(who.lacks(
                "The gatehouse:admin permission is required.",
                &[Permission::ADMIN],
            ));
        }
        if state.web.admin_requires_mfa && !who.auth.session.amr.is_multi_factor() {
            return Err(Error::InsufficientAuthentication);
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

fn admin_change_error(e: AdminChangeError) -> Error {
    match e {
        AdminChangeError::LastAdmin => Error::Conflict(
            "The change would leave no enabled user holding gatehouse:admin; \
             grant it to another user first.",
        ),
        AdminChangeError::UnknownRole(r) => Error::Invalid(vec![FieldError::new(
            "roles",
            format!("unknown role {r:?}"),
        )]),
        AdminChangeError::Store(e) => unavailable(e),
    }
}

/// `GET /v1/admin/audit?user=&type=&cursor=&limit=`: the audit trail,
/// newest first. An empty parameter is as good as absent; a user id that is
/// not a UUID, an unknown type, a cursor we did not issue, a bad limit or an
/// unknown parameter is 400.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    operation_id = "listAuditEvents",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of the audit trail, newest first",
            body = AuditPage),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list_audit(
    _: Admin,
    State(state): State<AppState>,
    StrictQuery(query): StrictQuery<AuditQuery>,
) -> Result<impl IntoResponse, Error> {
    let user = query
        .user
        .map(|v| {
            UserId::parse(&v)
                .ok_or_else(|| Error::BadRequest("user must be a user id (a UUID)".into()))
        })
        .transpose()?;
    let kind = query
        .kind
        .map(|v| {
            EventType::parse(&v)
                .ok_or_else(|| Error::BadRequest(format!("unknown event type {:?}", truncated(&v))))
        })
        .transpose()?;
    let limit = query.limit.as_deref().map(page_limit).transpose()?;
    let (limit, cursor) = (limit.unwrap_or(DEFAULT_PAGE), query.cursor);
    let page = state
        .audit
        .events(user, kind, cursor.as_deref(), limit)
        .await?;
    let events: Vec<AuditEventView> = page.events.iter().map(AuditEventView::from).collect();
    Ok(Json(AuditPage {
        events,
        next_cursor: page.next_cursor,
    }))
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

/// An audit event as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
struct AuditEventView {
    #[schema(format = Uuid)]
    id: String,
    /// What happened (`login_succeeded`, `session_ended`, …).
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    at: time::OffsetDateTime,
    /// The user the event is about.
    #[schema(required = true)]
    user_id: Option<String>,
    /// Who acted: `user`, `admin`, `cli` or `system`.
    actor: &'static str,
    #[schema(required = true)]
    actor_id: Option<String>,
    #[schema(required = true)]
    session_id: Option<String>,
    #[schema(required = true)]
    ip: Option<String>,
    /// Event-specific facts (such as `reason` of `session_ended`); never a
    /// secret.
    #[schema(value_type = Object)]
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
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    operation_id = "listUsers",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(UsersQuery),
    responses(
        (status = 200, description = "One page of users", body = UsersPage),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list_users(
    _: Admin,
    State(state): State<AppState>,
    StrictQuery(query): StrictQuery<UsersQuery>,
) -> Result<impl IntoResponse, Error> {
    let limit = query.limit.as_deref().map(page_limit).transpose()?;
    let (limit, cursor) = (limit.unwrap_or(DEFAULT_PAGE), query.cursor);
    let page = state.admin.list_users(cursor.as_deref(), limit).await?;
    let users: Vec<UserView> = page.users.iter().map(UserView::from).collect();
    Ok(Json(UsersPage {
        users,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters, not a common password, not the email.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// Names of existing roles.
    #[serde(default)]
    #[schema(inline, value_type = Vec<RoleNameDoc>)]
    roles: Vec<String>,
}

/// A role name: 1 to 64 letters, digits and `_ - . : * /`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9_.:*/-]{1,64}$")]
#[allow(dead_code)]
struct RoleNameDoc(String);

/// A permission: 1 to 128 letters, digits and `_ - . : * /`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9_.:*/-]{1,128}$")]
#[allow(dead_code)]
struct PermissionDoc(String);

/// `POST /v1/admin/users`: like registration, with roles, and open even
/// when registration is closed.
#[utoipa::path(
    post,
    path = "/v1/admin/users",
    tag = "admin",
    operation_id = "createUser",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user", body = UserResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::Conflict),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn create_user(
    admin: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateUser>,
) -> Result<impl IntoResponse, Error> {
    let roles = role_names(&req.roles)?;
    let user = state
        .accounts
        .register(
            &req.email,
            req.password,
            roles,
            Registrar::Admin(admin.0.auth.user.id),
        )
        .await?;
    Ok((StatusCode::CREATED, UserResponse::of(&user)))
}

/// `GET /v1/admin/users/{id}`.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    operation_id = "getUser",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn get_user(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let user = state
        .admin
        .user(user_id(&id)?)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(UserResponse::of(&user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    /// Disabling ends every session of the user at once.
    #[serde(default)]
    disabled: Option<bool>,
    /// Marks the user's address verified (or not), as a verification link
    /// would.
    #[serde(default)]
    email_verified: Option<bool>,
}

/// `PATCH /v1/admin/users/{id}` `{"disabled": bool, "email_verified":
/// bool}` (either or both; an empty object is 400): disabling ends every
/// session of the user at once.
#[utoipa::path(
    patch,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    operation_id = "patchUser",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    request_body = PatchUser,
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::LastAdmin),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn patch_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchUser>,
) -> Result<impl IntoResponse, Error> {
    let id = user_id(&id)?;
    if req.disabled.is_none() && req.email_verified.is_none() {
        return Err(Error::BadRequest(
            "send \"disabled\", \"email_verified\" or both".into(),
        ));
    }
    // `disabled` first: its refusal (the last administrator) must leave
    // everything as it was.
    if let Some(disabled) = req.disabled {
        state
            .admin
            .set_disabled(id, disabled, admin.actor())
            .await
            .map_err(admin_change_error)?
            .ok_or(Error::NotFound)?;
    }
    if let Some(verified) = req.email_verified
        && !state
            .mail
            .set_verified(id, verified, admin.actor())
            .await
            .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    let user = state
        .admin
        .user(id)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(UserResponse::of(&user))
}

/// `DELETE /v1/admin/users/{id}`: the user's sessions end with them.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "admin",
    operation_id = "deleteUser",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted; every session of the user ended"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::LastAdmin),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn delete_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    if !state
        .admin
        .delete_user(user_id(&id)?, admin.actor())
        .await
        .map_err(admin_change_error)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/admin/users/{id}/mfa`: every second factor and recovery
/// code of the user is removed (they lost their device); their password
/// alone signs them in again.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/mfa",
    tag = "admin",
    operation_id = "resetUserMfa",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    responses(
        (status = 204, description = "The user has no second factor and no recovery code"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn reset_user_mfa(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state
        .factors
        .reset(user_id(&id)?, admin.actor())
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetRoles {
    /// Names of existing roles; they replace the user's.
    #[schema(inline, value_type = Vec<RoleNameDoc>)]
    roles: Vec<String>,
}

/// `PUT /v1/admin/users/{id}/roles`: replaces the user's roles (each must
/// exist).
#[utoipa::path(
    put,
    path = "/v1/admin/users/{id}/roles",
    tag = "admin",
    operation_id = "setUserRoles",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    request_body = SetRoles,
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::LastAdmin),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn set_user_roles(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SetRoles>,
) -> Result<impl IntoResponse, Error> {
    let id = user_id(&id)?;
    let roles = role_names(&req.roles)?;
    let user = state
        .admin
        .set_user_roles(id, &roles, admin.actor())
        .await
        .map_err(admin_change_error)?
        .ok_or(Error::NotFound)?;
    Ok(UserResponse::of(&user))
}

/// `DELETE /v1/admin/users/{id}/sessions`: a forced logout everywhere.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}/sessions",
    tag = "admin",
    operation_id = "endUserSessions",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The user's id")),
    responses(
        (status = 204, description = "Every session of the user ended"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn end_user_sessions(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = user_id(&id)?;
    state
        .admin
        .user(id)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    state
        .sessions
        .end_all_of(id, None, admin.actor(), Ending::EndedByAdmin)
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/admin/roles`.
#[utoipa::path(
    get,
    path = "/v1/admin/roles",
    tag = "admin",
    operation_id = "listRoles",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "Every role", body = RolesResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list_roles(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    let roles = state
        .admin
        .roles()
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|r| RoleView {
            name: r.name,
            permissions: r.permissions,
        })
        .collect();
    Ok(Json(RolesResponse { roles }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRole {
    #[schema(inline, value_type = Vec<PermissionDoc>)]
    permissions: Vec<String>,
}

/// `PUT /v1/admin/roles/{name}`: creates the role or replaces its
/// permissions; holders' cookie sessions see the change at once.
#[utoipa::path(
    put,
    path = "/v1/admin/roles/{name}",
    tag = "admin",
    operation_id = "putRole",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("name" = String, Path, description = "The role's name: 1 to 64 letters, digits \
        and `_ - . : * /`")),
    request_body = PutRole,
    responses(
        (status = 200, description = "The role", body = RoleResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::LastAdmin),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
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
        .admin
        .set_role(&name, &permissions, admin.actor())
        .await
        .map_err(admin_change_error)?;
    let mut perms: Vec<String> = permissions.iter().map(|p| p.as_str().to_owned()).collect();
    perms.sort_unstable();
    perms.dedup();
    Ok(Json(RoleResponse {
        role: RoleView {
            name: name.as_str().to_owned(),
            permissions: perms,
        },
    }))
}

/// `DELETE /v1/admin/roles/{name}`: its holders lose it.
#[utoipa::path(
    delete,
    path = "/v1/admin/roles/{name}",
    tag = "admin",
    operation_id = "deleteRole",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("name" = String, Path, description = "The role's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::LastAdmin),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn delete_role(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let name = RoleName::parse(&name).map_err(|_| Error::NotFound)?;
    if !state
        .admin
        .delete_role(&name, admin.actor())
        .await
        .map_err(admin_change_error)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateResourceServer {
    /// 1 to 64 letters, digits and `_ - . : * /`; unique.
    #[schema(pattern = r"^[A-Za-z0-9_.:*/-]{1,64}$")]
    name: String,
}

/// `POST /v1/admin/resource-servers` `{"name"}`: 201 with the new key,
/// shown this once (only its hash is kept).
#[utoipa::path(
    post,
    path = "/v1/admin/resource-servers",
    tag = "admin",
    operation_id = "createResourceServer",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CreateResourceServer,
    responses(
        (status = 201, description = "The resource server and its key, shown this once",
            body = ResourceServerCreated),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::Conflict),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn create_resource_server(
    admin: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateResourceServer>,
) -> Result<impl IntoResponse, Error> {
    let created = state
        .feed
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
        Json(ResourceServerCreated {
            resource_server: ResourceServerView::from(&created.record),
            key: created.key.key(),
        }),
    ))
}

/// `GET /v1/admin/resource-servers`: never their keys.
#[utoipa::path(
    get,
    path = "/v1/admin/resource-servers",
    tag = "admin",
    operation_id = "listResourceServers",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "Every resource server", body = ResourceServersResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list_resource_servers(
    _: Admin,
    State(state): State<AppState>,
) -> Result<impl IntoResponse, Error> {
    let all = state.feed.resource_servers().await.map_err(unavailable)?;
    let resource_servers = all.iter().map(ResourceServerView::from).collect();
    Ok(Json(ResourceServersResponse { resource_servers }))
}

/// `DELETE /v1/admin/resource-servers/{id}`: the key stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/admin/resource-servers/{id}",
    tag = "admin",
    operation_id = "deleteResourceServer",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("id" = String, Path, format = Uuid, description = "The resource server's id")),
    responses(
        (status = 204, description = "Deleted; its key stops working at once"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn delete_resource_server(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = ResourceServerId::parse(&id).ok_or(Error::NotFound)?;
    if !state
        .feed
        .delete_resource_server(id, admin.actor())
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}
