//! `GET /openapi.json`: the OpenAPI 3.1 description of every route.
//!
//! The document is not written by hand. Each handler carries a
//! `#[utoipa::path]` annotation, and every module's router is a utoipa-axum
//! `OpenApiRouter` built with `routes!`, which registers the axum route and
//! its operation from the same annotation; so a route cannot be served
//! undocumented, nor documented under another path. This module holds what
//! the operations share: the document's root ([`ApiDoc`]), the security
//! schemes, the problem document's schema and the reusable error responses
//! (with their `WWW-Authenticate` and `Retry-After` headers).

use axum::Extension;
use axum::body::Bytes;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Type};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

/// The serialized document, built once with the router and shared by every
/// request (a request only copies a reference-counted buffer).
#[derive(Clone)]
pub struct OpenApiJson(pub Bytes);

impl OpenApiJson {
    /// Serializes `doc`.
    ///
    /// # Errors
    /// When the document does not serialize (it always does: it is plain
    /// data; the error is kept rather than turned into a panic).
    pub fn new(doc: &Document) -> serde_json::Result<Self> {
        serde_json::to_vec(doc).map(|v| Self(Bytes::from(v)))
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document",
    description = "The OpenAPI 3.1 description of this API, generated from the handlers' own \
        annotations. `servers` is omitted: the server does not know its public URL, so \
        paths are relative to wherever the document was fetched from.",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json",
            body = Object),
    )
)]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            // It changes only with a new version of the server.
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        doc.0,
    )
        .into_response()
}

/// The document's root: info, tags, security schemes and the shared
/// components. Paths come from the routers (`http::router`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gatehouse",
        description = "Self-hosted authentication and authorization server: server-side \
            sessions (a cookie) and JWT access tokens. The binding contract is API.md; \
            docs/api.md records the choices it leaves open.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(Problem, FieldProblem, ReadyChecks),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, LastAdmin, PayloadTooLarge,
            UnsupportedMediaType, Validation, Throttled, Unavailable,
            PageRedirect, PageError,
        ),
    ),
    tags(
        (name = "accounts", description = "Registration, who am I, password change"),
        (name = "sessions", description = "Cookie sessions: login, logout, the caller's devices"),
        (name = "email", description = "Password reset and address verification by mailed \
            links (with smtp_url; 404 without)"),
        (name = "tokens", description = "The OAuth 2.0 token endpoint and access tokens"),
        (name = "authorization", description = "Permission checks and forward authentication"),
        (name = "admin", description = "Users, roles, resource servers, OpenID clients and \
            the audit trail; needs the gatehouse:admin permission"),
        (name = "resource servers", description = "What resource servers fetch: keys and \
            revocations"),
        (name = "operations", description = "Probes, metrics and this document"),
        (name = "pages", description = "The hosted HTML pages for browsers (forms, 303 \
            redirects); not JSON"),
    ),
)]
pub struct ApiDoc;

/// The credentials the API accepts: API.md, "Conventions" and "Session
/// cookie"; docs/api.md, "The revocation feed".
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /v1/token or POST /v1/session/token. \
                         It takes precedence over the cookie: a present but invalid token is \
                         401 even when a valid cookie rides along.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(COOKIE, session_cookie("__Host-gatehouse"));
        components.add_security_scheme(
            METRICS,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The scraper's token (`metrics_token` in the configuration), when the \
                         server sets one; without it GET /metrics is open.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            RESOURCE_SERVER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ghrs_ resource-server key")
                    .description(Some(
                        "A resource server's key (`Authorization: Bearer ghrs_…`), from \
                         POST /v1/admin/resource-servers. A user's token or cookie is not \
                         accepted here.",
                    ))
                    .build(),
            ),
        );
    }
}

fn session_cookie(name: &str) -> SecurityScheme {
    SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
        name,
        "The session cookie set by POST /v1/login and the hosted login page: \
         `__Host-gatehouse`, or `gatehouse` when the server runs with cookie_secure = false \
         (plain-HTTP development). The document names the one this server uses.",
    )))
}

/// Names the session cookie this server uses (it depends on
/// `cookie_secure`), so the document describes the server that serves it.
pub fn with_cookie_name(doc: &mut Document, name: &str) {
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(COOKIE, session_cookie(name));
    }
}

/// Security scheme names, as the operations' `security(...)` cite them.
const BEARER: &str = "bearerAuth";
const COOKIE: &str = "sessionCookie";
const RESOURCE_SERVER: &str = "resourceServerKey";
const METRICS: &str = "metricsToken";

// The shape `crate::error::Error` writes (its own struct borrows, so it is
// described here).
/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // A schema only: error.rs writes the same shape.
pub struct Problem {
    /// A URN naming the case (`urn:gatehouse:problem:…`), stable for
    /// clients to branch on (docs/api.md, "Problem documents").
    #[serde(rename = "type")]
    #[schema(example = "urn:gatehouse:problem:unauthorized")]
    kind: String,
    /// The status's reason phrase.
    title: String,
    status: u16,
    /// What happened, for people; never internal error text.
    detail: String,
    /// 422 only: which fields break which rule.
    #[schema(nullable = false)]
    errors: Option<Vec<FieldProblem>>,
    /// `/readyz` 503 only (RFC 9457 §3.2 extension member).
    #[schema(nullable = false)]
    checks: Option<ReadyChecks>,
}

/// One invalid field of a 422.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // A schema only: error.rs writes the same shape.
pub struct FieldProblem {
    field: String,
    message: String,
}

/// What `/readyz` found, one word per part.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok` or `unavailable`.
    #[schema(pattern = "^(ok|unavailable)$")]
    pub database: &'static str,
    /// With Redis only: `ok` or `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^(ok|unavailable)$")]
    pub redis: Option<&'static str>,
    /// With Redis only: `connected` (following, heartbeats answered),
    /// `silent` (connected, but no heartbeat answered within
    /// `revocation_max_staleness`) or `disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^(connected|silent|disconnected)$")]
    pub revocation_feed: Option<&'static str>,
}

/// A problem-document response with optional headers.
fn problem(description: &str, headers: &[(&str, &str)]) -> RefOr<utoipa::openapi::Response> {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    );
    for (name, text) in headers {
        r = r.header(*name, header(text, true));
    }
    r.build().into()
}

/// A string header; a `required` one is always sent with its response,
/// which schemathesis then checks.
fn header(description: &str, required: bool) -> utoipa::openapi::header::Header {
    let mut h = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build();
    if required {
        // OpenAPI's Header Object has `required` (a Parameter Object without
        // `name` and `in`); utoipa's type lacks the field, and its extensions
        // serialize flattened into the object, so the member goes there.
        let mut members = Extensions::default();
        members.insert("required".to_owned(), serde_json::Value::Bool(true));
        h.extensions = Some(members);
    }
    h
}

const CHALLENGE: (&str, &str) = (
    "WWW-Authenticate",
    r#"`Bearer realm="gatehouse"`, with `error="invalid_token"` when a token was presented and rejected (RFC 6750 §3)"#,
);
const RETRY_AFTER: (&str, &str) = ("Retry-After", "Seconds to wait before retrying");

/// Declares reusable problem responses (`components/responses`).
macro_rules! problem_responses {
    ($($name:ident: $description:literal $(, $header:expr)*;)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                (stringify!($name), problem($description, &[$($header),*]))
            }
        }
    )*};
}

problem_responses! {
    BadRequest: "The request does not parse: malformed JSON, wrong types, missing or unknown fields, a bad query parameter.";
    Unauthorized: "No credentials, or credentials that are not (or no longer) valid.", CHALLENGE;
    Forbidden: "The caller may not do this: a missing permission, closed registration, or a cookie-authenticated write from a foreign Origin.";
    NotFound: "No such resource (an unknown id, or one of another user's: the same answer).";
    Conflict: "The name or email is taken.";
    LastAdmin: "The change would leave no enabled user holding gatehouse:admin (through the API; the command line may).";
    PayloadTooLarge: "The body exceeds 64 KiB.";
    UnsupportedMediaType: "The body is not sent as application/json.";
    Validation: "Input that parses but breaks a rule; `errors` names the fields.";
    Throttled: "Too many attempts: a throttling budget (this account from this client, this client's network, this account, or this network's registrations) is spent until `Retry-After` seconds have passed.", RETRY_AFTER;
    Unavailable: "A store does not answer, or the password-hashing queue is full; fail closed.", RETRY_AFTER;
}

/// A hosted page's 303 See Other (Post/Redirect/Get).
pub struct PageRedirect;

impl<'r> ToResponse<'r> for PageRedirect {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        let r = ResponseBuilder::new()
            .description("303 See Other: the browser follows `Location` with a GET.")
            .header("Location", header("Where to go next", true))
            .header(
                "Set-Cookie",
                header("Present when the session cookie is set or cleared", false),
            )
            .build();
        ("PageRedirect", r.into())
    }
}

/// A hosted page's short HTML error page (a malformed form, a refused
/// cross-origin post, an unknown id, an outage).
pub struct PageError;

impl<'r> ToResponse<'r> for PageError {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        (
            "PageError",
            html("A short HTML page saying what went wrong"),
        )
    }
}

/// An HTML response of a hosted page.
fn html(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "text/html",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        )
        .build()
        .into()
}
