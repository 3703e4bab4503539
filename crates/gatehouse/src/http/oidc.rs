//! The OpenID Provider's JSON endpoints: discovery
//! (`/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 §4)
//! and UserInfo (`/oauth2/userinfo`, OIDC Core §5.3). The authorization
//! endpoint and the consent page are pages (`pages::authorize`); the token
//! endpoint is `/v1/token`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{bearer_token, presented, refusal};
use super::openapi as oa;
use super::tokens::{
    OAuthError, OAuthErrorBody, authenticate_client, parameters, read_body, required,
};
use crate::auth::forward::{Identified, Presented, Unreadable};
use crate::auth::oidc::{Revoked, SCOPES};
use crate::auth::tokens::GrantError;
use crate::auth::types::ResourceServerSecret;
use crate::error::{Error, unavailable};
use crate::model::oidc::ClientType;

/// How long relying parties may cache the discovery document.
const DISCOVERY_MAX_AGE: &str = "public, max-age=300";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(discovery))
        .routes(routes!(userinfo, userinfo_post))
        .routes(routes!(revoke))
        .routes(routes!(introspect))
}

/// The body of revocation and introspection (RFC 7009 §2.1, RFC 7662
/// §2.1), with the client's credentials when it sends them there.
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: the handlers read the form themselves.
struct TokenForm {
    token: String,
    /// `access_token` or `refresh_token`; a hint only.
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// UserInfo's form body (RFC 6750 §2.2).
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only.
struct UserinfoForm {
    access_token: Option<String>,
}

/// `POST /oauth2/revoke` (RFC 7009).
#[utoipa::path(
    post,
    path = "/oauth2/revoke",
    tag = "openid",
    operation_id = "revoke",
    description = "Revokes an access or refresh token issued to the authenticated client \
        (`client_secret_basic`, `client_secret_post`, or a public client's `client_id`): the \
        client session it belongs to ends, with every token of it, at once on every node. \
        200 also for a token that is unknown, expired or malformed (RFC 7009 §2.2); 400 \
        `unauthorized_client` for a token issued to another client or to none.",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request` or `unauthorized_client`",
            body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody),
        (status = 413, description = "`invalid_request`: the body exceeds 64 KiB",
            body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody),
    )
)]
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let body = read_body(body)?;
    let params = parameters(&headers, &body)?;
    let client = authenticate_client(&state, &headers, &params)
        .await?
        .ok_or_else(|| OAuthError::invalid_client(headers.contains_key(AUTHORIZATION)))?;
    let token = required(&params, "token")?;
    match state
        .provider
        .revoke(&client, token)
        .await
        .map_err(|e| OAuthError::from(GrantError::Store(e)))?
    {
        Revoked::Ended | Revoked::Nothing => {
            Ok(([(CACHE_CONTROL, HeaderValue::from_static("no-store"))]).into_response())
        }
        Revoked::NotThisClients => Err(OAuthError::bad(
            "unauthorized_client",
            "The token was not issued to this client.",
        )),
        Revoked::Unsupported => Err(OAuthError::bad(
            "unsupported_token_type",
            "A client_credentials token is revoked by rotating the client's secret \
             (POST /v1/admin/clients/{client_id}/secret), which revokes every token \
             obtained with the old one.",
        )),
    }
}

/// `POST /oauth2/introspect` (RFC 7662).
#[utoipa::path(
    post,
    path = "/oauth2/introspect",
    tag = "openid",
    operation_id = "introspect",
    description = "Whether a token is active, and what it is. The caller is a confidential \
        client (`client_secret_basic` or `client_secret_post`) or a resource server \
        (`Authorization: Bearer ghrs_…`). Active: an access token that verifies and whose \
        session and user are live; a refresh token of a live client session, unspent, asked \
        by its own client. Everything else is `{\"active\": false}`: an ID token, another \
        client's refresh token, a token of an ended session, garbage.",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "RFC 7662 §2.2", body = IntrospectionSchema),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`: no caller, or a public client",
            body = OAuthErrorBody),
        (status = 413, description = "`invalid_request`: the body exceeds 64 KiB",
            body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody),
    )
)]
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let body = read_body(body)?;
    let params = parameters(&headers, &body)?;
    let resource_server = headers
        .get(AUTHORIZATION)
        .and_then(bearer_token)
        .and_then(ResourceServerSecret::parse_key);
    let asking = match resource_server {
        Some(key) => {
            let known = state
                .feed
                .authenticate_resource_server(&key)
                .await
                .map_err(|e| OAuthError::from(GrantError::Store(e)))?;
            if known.is_none() {
                return Err(OAuthError::invalid_client(false));
            }
            None
        }
        None => {
            let client = authenticate_client(&state, &headers, &params)
                .await?
                .filter(|c| c.kind == ClientType::Confidential)
                .ok_or_else(|| OAuthError::invalid_client(headers.contains_key(AUTHORIZATION)))?;
            Some(client.id)
        }
    };
    let token = required(&params, "token")?;
    let answer = state
        .provider
        .introspect(asking, token)
        .await
        .map_err(|e| OAuthError::from(GrantError::Store(e)))?;
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(answer),
    )
        .into_response())
}

/// An RFC 7662 answer: `active`, and for an active token what it is.
#[derive(Serialize, ToSchema)]
#[schema(as = Introspection)]
#[allow(dead_code)] // A schema only: the answer is `oidc::Introspection`.
struct IntrospectionSchema {
    active: bool,
    /// The OpenID scopes granted, then the user's permissions (an access
    /// token); the scopes granted (a refresh token).
    scope: Option<String>,
    client_id: Option<String>,
    /// The user's email.
    username: Option<String>,
    /// `Bearer` or `refresh_token`.
    token_type: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    sub: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    aud: Option<Value>,
    iss: Option<String>,
    jti: Option<String>,
    sid: Option<String>,
}

/// OpenID Provider metadata (OpenID Connect Discovery 1.0 §3, RFC 8414).
#[derive(Serialize, ToSchema)]
struct ProviderMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    /// OpenID Connect RP-Initiated Logout 1.0.
    end_session_endpoint: String,
    jwks_uri: String,
    revocation_endpoint_auth_methods_supported: Vec<&'static str>,
    introspection_endpoint_auth_methods_supported: Vec<&'static str>,
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
        revocation_endpoint: at("/oauth2/revoke"),
        introspection_endpoint: at("/oauth2/introspect"),
        end_session_endpoint: at("/oauth2/logout"),
        jwks_uri: at("/.well-known/jwks.json"),
        issuer,
        scopes_supported: SCOPES.to_vec(),
        response_types_supported: vec!["code"],
        response_modes_supported: vec!["query"],
        grant_types_supported: vec![
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password",
        ],
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
        revocation_endpoint_auth_methods_supported: vec![
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        introspection_endpoint_auth_methods_supported: vec![
            "client_secret_basic",
            "client_secret_post",
        ],
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
    let token = header_token(&state, &headers)?.ok_or(Error::Unauthorized)?;
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
    request_body(content = UserinfoForm, content_type = "application/x-www-form-urlencoded"),
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
    let in_header = header_token(&state, &headers)?;
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

/// The bearer token of the request's `Authorization` header, read as
/// every endpoint reads it (`extract::presented`): `None` without one; 400
/// for two, 401 for another scheme. UserInfo never takes the cookie.
fn header_token<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<Option<&'h str>, Error> {
    match presented(headers, state.web.cookie_name) {
        Presented::Bearer(token) => Ok(Some(token)),
        // A cookie, even one that cannot be read, is not UserInfo's concern.
        Presented::Nothing
        | Presented::Cookie(_)
        | Presented::Unreadable(Unreadable::BadCookie) => Ok(None),
        Presented::Unreadable(why) => Err(refusal(Identified::Unreadable(why))),
    }
}

async fn claims_of(state: &AppState, token: &str) -> Result<Response, Error> {
    let needs_openid = || Error::InsufficientScope {
        detail: "UserInfo needs an access token issued to a client with the openid scope.",
        scope: "openid".to_owned(),
    };
    let caller = match state
        .gate
        .identify(Presented::Bearer(token))
        .await
        .map_err(unavailable)?
    {
        Identified::Caller(caller) if caller.bearer => caller,
        // A client's own token speaks for no user.
        Identified::Client(_) => return Err(needs_openid()),
        refused => return Err(refusal(refused)),
    };
    let claims = state
        .provider
        .userinfo(&caller.auth.user, &caller.auth.session)
        .ok_or_else(needs_openid)?;
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(claims),
    )
        .into_response())
}
