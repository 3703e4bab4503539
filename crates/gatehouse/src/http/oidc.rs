//! The OpenID Provider's JSON endpoints: discovery
//! (`/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 §4)
//! and UserInfo (`/oauth2/userinfo`, OIDC Core §5.3). The authorization
//! endpoint and the consent page are pages (`pages::authorize`); the token
//! endpoint is `/v1/token`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{bearer_token, refusal};
use super::openapi as oa;
use crate::auth::forward::{Identified, Presented};
use crate::auth::oidc::SCOPES;
use crate::error::{Error, unavailable};

/// How long relying parties may cache the discovery document.
const DISCOVERY_MAX_AGE: &str = "public, max-age=300";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(discovery))
        .routes(routes!(userinfo, userinfo_post))
}

/// OpenID Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414).
#[derive(Serialize, ToSchema)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    jwks_uri: String,
    scopes_supported: Vec<&'static str>,
    response_types_supported: Vec<&'static str>,
    response_modes_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    subject_types_supported: Vec<&'static str>,
    id_token_signing_alg_values_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: Vec<&'static str>,
    claims_supported: Vec<&'static str>,
    code_challenge_methods_supported: Vec<&'static str>,
    prompt_values_supported: Vec<&'static str>,
    /// RFC 9207: every authorization response carries `iss`.
    authorization_response_iss_parameter_supported: bool,
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
}

/// `GET /.well-known/openid-configuration`.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "openid",
    operation_id = "openidConfiguration",
    responses(
        (status = 200, description = "The provider's metadata: every endpoint on the issuer",
            body = ProviderMetadata,
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
    )
)]
async fn discovery(State(state): State<AppState>) -> impl IntoResponse {
    let issuer = state.provider.issuer().to_owned();
    let base = issuer.trim_end_matches('/');
    let at = |path: &str| format!("{base}{path}");
    let metadata = ProviderMetadata {
        authorization_endpoint: at("/oauth2/authorize"),
        token_endpoint: at("/v1/token"),
        userinfo_endpoint: at("/oauth2/userinfo"),
        jwks_uri: at("/.well-known/jwks.json"),
        issuer,
        scopes_supported: SCOPES.to_vec(),
        response_types_supported: vec!["code"],
        response_modes_supported: vec!["query"],
        grant_types_supported: vec!["authorization_code", "refresh_token", "password"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: vec!["RS256", "ES256", "EdDSA"],
        token_endpoint_auth_methods_supported: vec![
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        claims_supported: vec![
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "amr",
            "sid",
            "email",
            "email_verified",
            "preferred_username",
            "roles",
        ],
        code_challenge_methods_supported: vec!["S256"],
        prompt_values_supported: vec!["none", "login", "consent"],
        authorization_response_iss_parameter_supported: true,
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
    };
    (
        [(CACHE_CONTROL, HeaderValue::from_static(DISCOVERY_MAX_AGE))],
        Json(metadata),
    )
}

/// UserInfo claims (OIDC Core §5.1): those of the scopes granted.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // A schema only: the answer is `oidc::UserClaims`.
struct UserInfo {
    /// The user's id.
    sub: String,
    /// With `email`.
    email: Option<String>,
    /// With `email`.
    email_verified: Option<bool>,
    /// With `profile`: the email address.
    preferred_username: Option<String>,
    /// With `profile`: the user's role names.
    roles: Option<Vec<String>>,
}

/// `GET /oauth2/userinfo`.
#[utoipa::path(
    get,
    path = "/oauth2/userinfo",
    tag = "openid",
    operation_id = "userinfo",
    description = "The claims about the user of an access token issued to a client with \
        the `openid` scope (`Authorization: Bearer`). A token of an ended session is 401 \
        `invalid_token`; one without `openid` (gatehouse's own tokens) 403 \
        `insufficient_scope`.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The claims", body = UserInfo),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    let token = header_token(&headers)?.ok_or(Error::Unauthorized)?;
    claims_of(&state, token).await
}

/// `POST /oauth2/userinfo`: the token in the `Authorization` header, or as
/// `access_token` in a form body (RFC 6750 §2.2), never both.
#[utoipa::path(
    post,
    path = "/oauth2/userinfo",
    tag = "openid",
    operation_id = "userinfoPost",
    description = "As the GET; the token may instead be the form field `access_token` \
        (RFC 6750 §2.2). Both at once is 400.",
    security(("bearerAuth" = [])),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The claims", body = UserInfo),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let in_header = header_token(&headers)?;
    let mut in_body = None;
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if form {
        for (k, v) in url::form_urlencoded::parse(&body) {
            if k == "access_token" {
                if in_body.is_some() {
                    return Err(Error::InvalidRequest(
                        "access_token was sent more than once.",
                    ));
                }
                in_body = Some(v.into_owned());
            }
        }
    }
    match (in_header, in_body.as_deref()) {
        (Some(_), Some(_)) => Err(Error::InvalidRequest(
            "Send the access token one way: the Authorization header or the body.",
        )),
        (Some(token), None) | (None, Some(token)) => claims_of(&state, token).await,
        (None, None) => Err(Error::Unauthorized),
    }
}

/// The bearer token of the `Authorization` header: `None` without one; an
/// error for two, or for another scheme.
fn header_token(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Error::InvalidRequest(
            "The request carries more than one Authorization header.",
        )),
        (Some(value), None) => bearer_token(value).map(Some).ok_or(Error::Unauthorized),
    }
}

async fn claims_of(state: &AppState, token: &str) -> Result<Response, Error> {
    let caller = match state
        .gate
        .identify(Presented::Bearer(token))
        .await
        .map_err(unavailable)?
    {
        Identified::Caller(caller) if caller.bearer => caller,
        refused => return Err(refusal(refused)),
    };
    let claims = state
        .provider
        .userinfo(&caller.auth.user, &caller.auth.session)
        .ok_or(Error::InsufficientScope {
            detail: "UserInfo needs an access token issued to a client with the openid scope.",
            scope: "openid".to_owned(),
        })?;
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(claims),
    )
        .into_response())
}
