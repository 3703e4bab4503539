//! `/v1/authorize` (may the caller do X?) and `/v1/verify` (forward
//! authentication for nginx `auth_request` and Traefik `ForwardAuth`).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{CurrentUser, JsonBody, presented, refusal};
use super::openapi as oa;
use crate::auth::FieldError;
use crate::auth::forward::{ClientCaller, DecideError, Decision};
use crate::auth::types::Permission;
use crate::error::{Error, unavailable};

pub fn router() -> OpenApiRouter<AppState> {
    // `/v1/verify` answers every method (a proxy may forward the original
    // one; the original method is read from headers anyway): the document
    // comes from its annotation (GET, as API.md names it), the routing
    // from `any`.
    let (schemas, paths, _) = routes!(verify);
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes((schemas, paths, any(verify)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    /// A permission such as `orders:read`.
    #[schema(pattern = r"^[A-Za-z0-9_.:*/-]{1,128}$")]
    permission: String,
}

/// `POST /v1/authorize`.
#[derive(Serialize, ToSchema)]
struct AuthorizeResponse {
    allowed: bool,
}

/// The headers a proxy forwards to `/v1/verify` (nginx `auth_request`,
/// Traefik `ForwardAuth`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct VerifyHeaders {
    /// nginx: the original request's method.
    #[param(rename = "X-Original-Method", nullable = false)]
    original_method: Option<String>,
    /// nginx: the original request's URI. This or `X-Forwarded-Uri` is
    /// required (400 otherwise).
    #[param(rename = "X-Original-URI", pattern = "^/", nullable = false)]
    original_uri: Option<String>,
    /// Traefik: the original request's method.
    #[param(rename = "X-Forwarded-Method", nullable = false)]
    forwarded_method: Option<String>,
    /// Traefik: the original request's URI.
    #[param(rename = "X-Forwarded-Uri", pattern = "^/", nullable = false)]
    forwarded_uri: Option<String>,
}

/// `POST /v1/authorize`: whether the caller holds a permission, from one
/// read of their effective permissions (a store error is 503, never an
/// answer).
#[utoipa::path(
    post,
    path = "/v1/authorize",
    tag = "authorization",
    operation_id = "authorize",
    security(("bearerAuth" = []), ("sessionCookie" = [])),
    request_body = AuthorizeRequest,
    responses(
        (status = 200, description = "Whether the caller holds the permission",
            body = AuthorizeResponse),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 413, response = oa::PayloadTooLarge),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Validation),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn authorize(
    State(state): State<AppState>,
    who: CurrentUser,
    JsonBody(req): JsonBody<AuthorizeRequest>,
) -> Result<impl IntoResponse, Error> {
    let permission = Permission::parse(&req.permission)
        .map_err(|m| Error::Invalid(vec![FieldError::new("permission", m)]))?;
    let allowed = who.has_permission(&state.gate, &permission).await?;
    Ok(Json(AuthorizeResponse { allowed }))
}

const X_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const X_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const X_ROLES: HeaderName = HeaderName::from_static("x-auth-request-roles");

/// The original request's methods and URIs, from nginx's and Traefik's
/// headers, as raw bytes. Both families are read: behind one proxy, the
/// other's header may come from the client, so every value must pass. A
/// value is never skipped for being unreadable: nginx copies the request
/// line's bytes (`é`, 0xFF) into `$request_uri`, and a URI header dropped
/// for them would leave only the client's own header to judge.
fn originals(headers: &HeaderMap) -> (Vec<&[u8]>, Vec<&[u8]>) {
    let values = |names: [&str; 2]| {
        let mut out: Vec<&[u8]> = Vec::new();
        for n in names {
            for v in headers.get_all(n) {
                if !out.contains(&v.as_bytes()) {
                    out.push(v.as_bytes());
                }
            }
        }
        out
    };
    (
        values(["x-original-method", "x-forwarded-method"]),
        values(["x-original-uri", "x-forwarded-uri"]),
    )
}

/// `GET /v1/verify`: 200 with the user's headers, 401 or 403, by the
/// `[[rules]]` (first match wins; no match: authenticated), judging every
/// reading of the request and demanding what the strictest demands.
/// The answer to a client's own token: the client id as the user, its roles,
/// no email (a client has none).
fn client_headers(caller: &ClientCaller) -> Response {
    let client = &caller.client;
    tracing::Span::current().record("user", tracing::field::display(client.id));
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    // A UUID and role names (checked on the way in) are header-safe.
    if let Ok(v) = HeaderValue::from_str(&client.id.to_string()) {
        h.insert(X_USER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&client.roles.join(",")) {
        h.insert(X_ROLES, v);
    }
    res
}

#[utoipa::path(
    get,
    path = "/v1/verify",
    tag = "authorization",
    operation_id = "verify",
    description = "Forward authentication: the `[[rules]]` of the configuration decide \
        whether the original request is public, needs a caller, a permission, or is denied \
        (first match wins; no match: authenticated). The route answers every method; \
        proxies call it with GET.",
    security((), ("bearerAuth" = []), ("sessionCookie" = [])),
    params(VerifyHeaders),
    responses(
        (status = 200, description = "Allowed. For a caller, who they are:", headers(
            ("X-Auth-Request-User" = String, description = "The user id (absent on a public path)"),
            ("X-Auth-Request-Email" = String, description = "The user's email"),
            ("X-Auth-Request-Roles" = String, description = "The user's roles, comma-separated"),
        )),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn verify(State(state): State<AppState>, req: Request) -> Result<Response, Error> {
    let (parts, _) = req.into_parts();
    let (methods, uris) = originals(&parts.headers);
    if uris.is_empty() {
        return Err(Error::BadRequest(
            "X-Original-URI (nginx) or X-Forwarded-Uri (Traefik) is required".into(),
        ));
    }
    // Proxies send a method token (RFC 9110 §9.1); anything else did not
    // come from one, and is refused rather than taken as "no method".
    let methods = methods
        .iter()
        .map(|m| {
            std::str::from_utf8(m).ok().filter(|m| {
                !m.is_empty()
                    && m.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            })
        })
        .collect::<Option<Vec<&str>>>()
        .ok_or_else(|| Error::BadRequest("the original method is not an HTTP method".into()))?;
    let credential = presented(&parts.headers, state.web.cookie_name);
    let decision = state
        .gate
        .decide(&state.web.rules, &methods, &uris, credential)
        .await
        .map_err(|e| match e {
            DecideError::BadPath => {
                Error::BadRequest("the original URI's path is malformed".into())
            }
            DecideError::Store(e) => unavailable(e),
        })?;
    let who: CurrentUser = match decision {
        Decision::Public => return Ok(StatusCode::OK.into_response()),
        Decision::Closed => return Err(Error::Forbidden("This path is closed by an access rule.")),
        Decision::Refused(refused) => return Err(refusal(refused)),
        Decision::NeedsSecondFactor(Some(_)) => return Err(Error::InsufficientAuthentication),
        // Signing in again cannot help a client: it is refused outright.
        Decision::NeedsSecondFactor(None) => {
            return Err(Error::Forbidden(
                "This path needs a user who proved a second factor; a client's own token \
                 proves none.",
            ));
        }
        Decision::Lacks { caller, needed } => {
            let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
            return Err(CurrentUser::from(caller).lacks(
                "The caller lacks the permission this path requires.",
                &needed,
            ));
        }
        Decision::Allowed(caller) => caller.into(),
        Decision::ClientLacks { needed } => {
            return Err(Error::InsufficientScope {
                detail: "The caller lacks the permission this path requires.",
                scope: needed.join(" "),
            });
        }
        Decision::ClientAllowed(client) => return Ok(client_headers(&client)),
    };
    let user = &who.auth.user;
    tracing::Span::current().record("user", tracing::field::display(user.id));
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
