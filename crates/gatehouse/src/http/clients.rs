//! `/v1/admin/clients*`: the OpenID client registry (issue 20's first
//! slice: registering clients; no authorization flow reads them yet).
//! Every handler takes the [`Admin`] extractor.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::admin::Admin;
use super::extract::JsonBody;
use super::openapi as oa;
use crate::auth::clients::{ClientFailure, ClientPatch, ClientSpec};
use crate::auth::types::ClientId;
use crate::error::{Error, unavailable};
use crate::store::ClientRecord;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, patch_client, delete_client))
        .routes(routes!(rotate_secret))
}

/// `confidential` or `public`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^(confidential|public)$")]
#[allow(dead_code)]
struct ClientTypeDoc(String);

/// `authorization_code`, `refresh_token` or `client_credentials`.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    pattern = "^(authorization_code|refresh_token|client_credentials)$"
)]
#[allow(dead_code)]
struct GrantTypeDoc(String);

/// `openid`, `profile`, `email` or `offline_access`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^(openid|profile|email|offline_access)$")]
#[allow(dead_code)]
struct ScopeDoc(String);

/// `RS256`, `ES256` or `EdDSA`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = "^(RS256|ES256|EdDSA)$")]
#[allow(dead_code)]
struct AlgDoc(String);

/// An absolute URI, in normal form, without fragment or userinfo:
/// `https://…`, `http://` on the loopback interface only (`127.0.0.1`,
/// `[::1]`, `localhost`), or a native app's private-use scheme holding a
/// `.` (`com.example.app:/cb`). At most 2,000 characters.
#[derive(ToSchema)]
#[schema(value_type = String, max_length = 2000)]
#[allow(dead_code)]
struct RedirectUriDoc(String);

/// A role name: 1 to 64 letters, digits and `_ - . : * /`.
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9_.:*/-]{1,64}$")]
#[allow(dead_code)]
struct ClientRoleDoc(String);

/// An OpenID client as the API shows it: never its secret, which is shown
/// once, at creation.
#[derive(Serialize, ToSchema)]
#[schema(as = Client)]
struct ClientView {
    /// A UUID v7: public, not a credential.
    #[schema(format = Uuid)]
    client_id: String,
    name: String,
    #[serde(rename = "type")]
    #[schema(inline, value_type = ClientTypeDoc)]
    kind: &'static str,
    /// In the order registered; compared exactly by the flows (the port of
    /// a loopback `http` URI aside).
    #[schema(inline, value_type = Vec<RedirectUriDoc>)]
    redirect_uris: Vec<String>,
    #[schema(inline, value_type = Vec<RedirectUriDoc>)]
    post_logout_redirect_uris: Vec<String>,
    /// The application is the operator's own (its users will not be asked
    /// for consent).
    first_party: bool,
    #[schema(inline, value_type = Vec<GrantTypeDoc>)]
    grant_types: Vec<&'static str>,
    #[schema(inline, value_type = Vec<ScopeDoc>)]
    scopes: Vec<String>,
    /// The roles whose permissions its `client_credentials` tokens carry;
    /// sorted.
    #[schema(inline, value_type = Vec<ClientRoleDoc>)]
    roles: Vec<String>,
    #[schema(inline, value_type = AlgDoc)]
    id_token_signed_response_alg: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: time::OffsetDateTime,
}

impl From<&ClientRecord> for ClientView {
    fn from(c: &ClientRecord) -> Self {
        Self {
            client_id: c.id.to_string(),
            name: c.name.clone(),
            kind: c.kind.as_str(),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            first_party: c.first_party,
            grant_types: c.grant_types.iter().map(|g| g.as_str()).collect(),
            scopes: c.scopes.clone(),
            roles: c.roles.clone(),
            id_token_signed_response_alg: c.id_token_alg.as_str(),
            created_at: c.created_at,
        }
    }
}

/// `POST /v1/admin/clients`: a confidential client's secret is in this
/// answer only.
#[derive(Serialize, ToSchema)]
struct ClientCreated {
    client: ClientView,
    /// Confidential clients only: `ghcs_` and 43 base64url characters;
    /// only its SHA-256 is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^ghcs_[A-Za-z0-9_-]{43}$")]
    client_secret: Option<String>,
}

/// `POST /v1/admin/clients/{client_id}/secret`: the new secret, shown this
/// once.
#[derive(Serialize, ToSchema)]
struct SecretRotated {
    #[schema(format = Uuid)]
    client_id: String,
    /// `ghcs_` and 43 base64url characters; only its SHA-256 is kept.
    #[schema(pattern = "^ghcs_[A-Za-z0-9_-]{43}$")]
    client_secret: String,
}

/// `GET` and `PATCH /v1/admin/clients/{client_id}`.
#[derive(Serialize, ToSchema)]
struct ClientResponse {
    client: ClientView,
}

/// `GET /v1/admin/clients`.
#[derive(Serialize, ToSchema)]
struct ClientsResponse {
    /// Oldest first.
    clients: Vec<ClientView>,
}

/// A present member's value: `null` is refused (400) rather than taken for
/// an absent member.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateClient {
    /// For people (shown where users sign in): 1 to 100 characters,
    /// trimmed.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At most 20; may be empty only without `authorization_code`.
    #[schema(inline, value_type = Vec<RedirectUriDoc>, max_items = 20)]
    redirect_uris: Vec<String>,
    #[serde(rename = "type")]
    #[schema(inline, value_type = ClientTypeDoc)]
    kind: String,
    /// At most 20, under the rules of `redirect_uris` (default none).
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<RedirectUriDoc>>, max_items = 20, nullable = false)]
    post_logout_redirect_uris: Option<Vec<String>>,
    /// Default false.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    first_party: Option<bool>,
    /// Default `RS256`.
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<AlgDoc>, nullable = false)]
    id_token_signed_response_alg: Option<String>,
    /// Default `["authorization_code", "refresh_token"]`;
    /// `client_credentials` for confidential clients only;
    /// `refresh_token` only with `authorization_code`.
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<GrantTypeDoc>>, nullable = false)]
    grant_types: Option<Vec<String>>,
    /// Default `["openid", "profile", "email", "offline_access"]`.
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<ScopeDoc>>, nullable = false)]
    scopes: Option<Vec<String>>,
    /// Existing roles: the permissions of its `client_credentials` tokens
    /// (so only with that grant). Default none.
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<ClientRoleDoc>>, nullable = false)]
    roles: Option<Vec<String>>,
}

/// Any of the mutable fields (not `type`, not `client_id`), under the
/// rules of creation, judged with the client's other fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchClient {
    #[serde(default, deserialize_with = "present")]
    #[schema(min_length = 1, max_length = 100, nullable = false)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<RedirectUriDoc>>, max_items = 20, nullable = false)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<RedirectUriDoc>>, max_items = 20, nullable = false)]
    post_logout_redirect_uris: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    first_party: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<GrantTypeDoc>>, nullable = false)]
    grant_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<ScopeDoc>>, nullable = false)]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<Vec<ClientRoleDoc>>, nullable = false)]
    roles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(inline, value_type = Option<AlgDoc>, nullable = false)]
    id_token_signed_response_alg: Option<String>,
}

fn client_id(raw: &str) -> Result<ClientId, Error> {
    ClientId::parse(raw).ok_or(Error::NotFound)
}

fn failure(e: ClientFailure) -> Error {
    match e {
        ClientFailure::Invalid(errors) => Error::Invalid(errors),
        ClientFailure::NotFound => Error::NotFound,
        ClientFailure::NoSecret => {
            Error::Conflict("A public client has no secret; only a confidential one's rotates.")
        }
        ClientFailure::Store(e) => unavailable(e),
    }
}

/// `POST /v1/admin/clients`: 201 with the client and, for a confidential
/// one, its secret, shown this once (only its SHA-256 is kept).
#[utoipa::path(
    post,
    path = "/v1/admin/clients",
    tag = "admin",
    operation_id = "createClient",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = CreateClient,
    responses(
        (status = 201, description = "The client and, if confidential, its secret, shown \
            this once", body = ClientCreated),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn create_client(
    admin: Admin,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateClient>,
) -> Result<impl IntoResponse, Error> {
    let spec = ClientSpec {
        name: req.name,
        kind: req.kind,
        redirect_uris: req.redirect_uris,
        post_logout_redirect_uris: req.post_logout_redirect_uris,
        first_party: req.first_party,
        grant_types: req.grant_types,
        scopes: req.scopes,
        roles: req.roles,
        id_token_signed_response_alg: req.id_token_signed_response_alg,
    };
    let created = state
        .clients
        .create(spec, admin.actor())
        .await
        .map_err(failure)?;
    Ok((
        StatusCode::CREATED,
        Json(ClientCreated {
            client: ClientView::from(&created.record),
            client_secret: created.secret.map(|s| s.secret()),
        }),
    ))
}

/// `GET /v1/admin/clients`: never their secrets.
#[utoipa::path(
    get,
    path = "/v1/admin/clients",
    tag = "admin",
    operation_id = "listClients",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    responses(
        (status = 200, description = "Every client, oldest first", body = ClientsResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn list_clients(_: Admin, State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    let all = state.clients.clients().await.map_err(unavailable)?;
    Ok(Json(ClientsResponse {
        clients: all.iter().map(ClientView::from).collect(),
    }))
}

/// `GET /v1/admin/clients/{client_id}`.
#[utoipa::path(
    get,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "getClient",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("client_id" = String, Path, format = Uuid, description = "The client's id")),
    responses(
        (status = 200, description = "The client", body = ClientResponse),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn get_client(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let client = state
        .clients
        .client(client_id(&id)?)
        .await
        .map_err(unavailable)?
        .ok_or(Error::NotFound)?;
    Ok(Json(ClientResponse {
        client: ClientView::from(&client),
    }))
}

/// `PATCH /v1/admin/clients/{client_id}`: any of the mutable fields; an
/// empty object is 400.
#[utoipa::path(
    patch,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "patchClient",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("client_id" = String, Path, format = Uuid, description = "The client's id")),
    request_body = PatchClient,
    responses(
        (status = 200, description = "The client as changed", body = ClientResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn patch_client(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PatchClient>,
) -> Result<impl IntoResponse, Error> {
    let id = client_id(&id)?;
    let patch = ClientPatch {
        name: req.name,
        redirect_uris: req.redirect_uris,
        post_logout_redirect_uris: req.post_logout_redirect_uris,
        first_party: req.first_party,
        grant_types: req.grant_types,
        scopes: req.scopes,
        roles: req.roles,
        id_token_signed_response_alg: req.id_token_signed_response_alg,
    };
    if patch.is_empty() {
        return Err(Error::BadRequest(
            "send at least one of name, redirect_uris, post_logout_redirect_uris, \
             first_party, grant_types, scopes, roles, id_token_signed_response_alg"
                .into(),
        ));
    }
    let client = state
        .clients
        .patch(id, patch, admin.actor())
        .await
        .map_err(failure)?;
    Ok(Json(ClientResponse {
        client: ClientView::from(&client),
    }))
}

/// `DELETE /v1/admin/clients/{client_id}`.
#[utoipa::path(
    delete,
    path = "/v1/admin/clients/{client_id}",
    tag = "admin",
    operation_id = "deleteClient",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("client_id" = String, Path, format = Uuid, description = "The client's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn delete_client(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    if !state
        .provider
        .delete_client(client_id(&id)?, admin.actor())
        .await
        .map_err(unavailable)?
    {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/clients/{client_id}/secret`: a confidential client's
/// new secret, shown this once; the old one stops working and every token
/// obtained with it (`client_credentials`) is refused at once.
#[utoipa::path(
    post,
    path = "/v1/admin/clients/{client_id}/secret",
    tag = "admin",
    operation_id = "rotateClientSecret",
    description = "Replaces a confidential client's secret. The old secret stops \
        authenticating the client, and every access token obtained with it by the \
        `client_credentials` grant is refused at once, on every node and at every resource \
        server that follows the revocation feed. The client's sessions with users (code \
        grants) are not touched. No request body is read.",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    params(("client_id" = String, Path, format = Uuid, description = "The client's id")),
    responses(
        (status = 200, description = "The new secret, shown this once", body = SecretRotated,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn rotate_secret(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let id = client_id(&id)?;
    let secret = state
        .provider
        .rotate_secret(id, admin.actor())
        .await
        .map_err(failure)?;
    Ok((
        [(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        )],
        Json(SecretRotated {
            client_id: id.to_string(),
            client_secret: secret.secret(),
        }),
    ))
}
