//! `/v1/token` (the OAuth 2.0 token endpoint: `password` and
//! `refresh_token` grants) and `/v1/session/token` (an access token for the
//! cookie's session).

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{Client, Credential, CurrentUser};
use super::openapi as oa;
use crate::auth::mfa::Proof;
use crate::auth::oidc::{ClientAuthError, PresentedClient, basic_credentials};
use crate::auth::tokens::{GrantError, TokenPair};
use crate::auth::types::Password;
use crate::error::{Error, unavailable};
use crate::store::ClientRecord;

/// The grant type of a login's second step (the password grant answered
/// `mfa_required`).
pub const MFA_GRANT: &str = "urn:gatehouse:grant-type:mfa";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(session_token))
}

// Only a description: the handler reads the parameters itself
// (`parameters`), from either media type.
/// The parameters of `POST /v1/token`, as a form or a JSON object of
/// strings (RFC 6749 §4.3.2, §6). Unknown parameters, such as a public
/// client's `client_id`, are ignored (RFC 6749 §3.2); one sent twice is
/// `invalid_request`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct TokenRequest {
    /// `password`, `refresh_token`, `urn:gatehouse:grant-type:mfa`,
    /// `client_credentials` (with client authentication), or an OpenID
    /// client's `authorization_code`.
    #[schema(
        pattern = "^(password|refresh_token|urn:gatehouse:grant-type:mfa|client_credentials)$",
        example = "password"
    )]
    grant_type: String,
    /// The email, with `grant_type=password`.
    #[schema(nullable = false)]
    username: Option<String>,
    /// The password, with `grant_type=password`.
    #[schema(nullable = false)]
    password: Option<String>,
    /// The refresh token to rotate, with `grant_type=refresh_token`.
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// With `grant_type=urn:gatehouse:grant-type:mfa`: the `mfa_token` of
    /// the `mfa_required` answer.
    #[schema(nullable = false)]
    mfa_token: Option<String>,
    /// With the MFA grant: a TOTP code.
    #[schema(nullable = false)]
    otp: Option<String>,
    /// With the MFA grant, instead of `otp`: a recovery code.
    #[schema(nullable = false)]
    recovery_code: Option<String>,
    /// With `grant_type=client_credentials`: the permissions asked for,
    /// space-separated (a subset of the client's; all of them without it).
    #[schema(nullable = false)]
    scope: Option<String>,
    /// The client, with `client_secret_post` (or a public client's id).
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// The client's secret, with `client_secret_post`.
    #[schema(nullable = false)]
    client_secret: Option<String>,
}

/// RFC 6749 §5.1: a successful grant.
#[derive(Serialize, ToSchema)]
struct TokenResponse {
    /// A JWT (`typ: at+jwt`).
    access_token: String,
    /// Always `Bearer`.
    #[schema(pattern = "^Bearer$")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque; rotates on every use. Absent from a code grant without
    /// `offline_access`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    refresh_token: Option<String>,
    /// The ID token of a code grant that asked for `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    id_token: Option<String>,
    /// The caller's permissions, space-separated (after the granted
    /// OpenID scopes, for a token issued to a client).
    scope: String,
}

/// `POST /v1/session/token`: an access token alone.
#[derive(Serialize, ToSchema)]
struct SessionTokenResponse {
    access_token: String,
    #[schema(pattern = "^Bearer$")]
    token_type: &'static str,
    expires_in: u64,
}

/// An RFC 6749 §5.2 error body.
#[derive(Serialize, ToSchema)]
pub(super) struct OAuthErrorBody {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type` or
    /// `temporarily_unavailable`.
    #[schema(example = "invalid_grant")]
    error: &'static str,
    error_description: &'static str,
    /// With `mfa_required` only: the token of the login's second step
    /// (`grant_type=urn:gatehouse:grant-type:mfa`), good for 5 minutes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    mfa_token: Option<String>,
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: &'static str,
    retry_after: Option<Duration>,
    mfa_token: Option<String>,
    basic_challenge: bool,
}

impl OAuthError {
    pub(super) fn bad(code: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description,
            retry_after: None,
            mfa_token: None,
            basic_challenge: false,
        }
    }

    pub(super) fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "invalid_request",
            description: "The request body exceeds 64 KiB.",
            retry_after: None,
            mfa_token: None,
            basic_challenge: false,
        }
    }

    /// 401 `invalid_client` (RFC 6749 §5.2), with the Basic challenge when
    /// the client tried HTTP Basic.
    pub(super) fn invalid_client(basic: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "Client authentication failed.",
            retry_after: None,
            mfa_token: None,
            basic_challenge: basic,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.code,
            error_description: self.description,
            mfa_token: self.mfa_token,
        };
        let mut res = (self.status, Json(body)).into_response();
        // RFC 6749 §5.1: token responses are not cached.
        res.headers_mut()
            .insert(PRAGMA, HeaderValue::from_static("no-cache"));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            res.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gatehouse\""),
            );
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res
    }
}

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::InvalidGrant => Self::bad(
                "invalid_grant",
                "The credentials or the refresh token are invalid, expired or revoked.",
            ),
            GrantError::MfaRequired(challenge) => Self {
                status: StatusCode::FORBIDDEN,
                code: "mfa_required",
                description: "The password is right and a second factor is required: \
                    send grant_type=urn:gatehouse:grant-type:mfa with this mfa_token and \
                    otp (or recovery_code).",
                retry_after: None,
                mfa_token: Some(challenge.mfa_token.encode()),
                basic_challenge: false,
            },
            GrantError::EmailNotVerified => Self {
                status: StatusCode::FORBIDDEN,
                code: "email_not_verified",
                description: "The password is right but the email address is not verified: \
                    follow the link in the verification mail just sent, then try again.",
                retry_after: None,
                mfa_token: None,
                basic_challenge: false,
            },
            GrantError::UnauthorizedClient => Self::bad(
                "unauthorized_client",
                "This client may not use this grant type.",
            ),
            GrantError::InvalidScope => Self::bad(
                "invalid_scope",
                "The scope names a permission this client's roles do not give.",
            ),
            GrantError::RetiredSecret => Self::invalid_client(false),
            GrantError::InvalidMfaToken => Self::bad(
                "invalid_grant",
                "The mfa_token is unknown, expired or spent; start again with the password.",
            ),
            GrantError::Throttled { retry_after } => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "temporarily_unavailable",
                description: "Too many failed attempts; retry after the time in Retry-After.",
                retry_after: Some(retry_after),
                mfa_token: None,
                basic_challenge: false,
            },
            GrantError::Busy => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "temporarily_unavailable",
                description: "The server is busy; retry shortly.",
                retry_after: Some(Duration::from_secs(1)),
                mfa_token: None,
                basic_challenge: false,
            },
            GrantError::Store(e) => {
                tracing::error!(error = format!("{e:#}"), "token grant failed");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "temporarily_unavailable",
                    description: "The server cannot answer right now; retry shortly.",
                    retry_after: Some(Duration::from_secs(1)),
                    mfa_token: None,
                    basic_challenge: false,
                }
            }
        }
    }
}

/// The body of a token-style request after the transport's limits: 413 for
/// one over 64 KiB, 400 for one that could not be read.
pub(super) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, OAuthError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            OAuthError::too_large()
        } else {
            OAuthError::bad("invalid_request", "The request body could not be read.")
        }
    })
}

/// The request's parameters, from a form or a JSON object of strings.
/// RFC 6749 §3.2: a parameter sent twice is an error; unknown ones are
/// ignored.
pub(super) fn parameters(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    // An unreadable Content-Type is no media type we take: a 400, closed.
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let mut params = HashMap::new();
    match media.as_str() {
        "application/x-www-form-urlencoded" => {
            for (k, v) in url::form_urlencoded::parse(body) {
                if params.insert(k.into_owned(), v.into_owned()).is_some() {
                    return Err(OAuthError::bad(
                        "invalid_request",
                        "A parameter was sent more than once.",
                    ));
                }
            }
        }
        "application/json" => {
            let Pairs(pairs) = serde_json::from_slice(body).map_err(|_| {
                OAuthError::bad("invalid_request", "The body is not a JSON object.")
            })?;
            for (k, v) in pairs {
                if params.contains_key(&k) {
                    return Err(OAuthError::bad(
                        "invalid_request",
                        "A parameter was sent more than once.",
                    ));
                }
                match v {
                    serde_json::Value::String(s) => {
                        params.insert(k, s);
                    }
                    // Unknown parameters are ignored whatever their type;
                    // ours must be strings.
                    _ if matches!(
                        k.as_str(),
                        "grant_type"
                            | "username"
                            | "password"
                            | "refresh_token"
                            | "mfa_token"
                            | "otp"
                            | "recovery_code"
                            | "code"
                            | "redirect_uri"
                            | "code_verifier"
                            | "client_id"
                            | "client_secret"
                            | "token"
                            | "token_type_hint"
                    ) =>
                    {
                        return Err(OAuthError::bad(
                            "invalid_request",
                            "Parameters must be strings.",
                        ));
                    }
                    _ => {}
                }
            }
        }
        _ => {
            return Err(OAuthError::bad(
                "invalid_request",
                "Send application/x-www-form-urlencoded or application/json.",
            ));
        }
    }
    Ok(params)
}

/// A JSON object's members in order, duplicates kept (a map would keep only
/// the last of a repeated key, hiding the repetition).
struct Pairs(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(Visitor)
    }
}

pub(super) fn required<'a>(
    params: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::bad("invalid_request", "A required parameter is missing."))
}

/// `POST /v1/token`: the OAuth 2.0 token endpoint.
#[utoipa::path(
    post,
    path = "/v1/token",
    tag = "tokens",
    operation_id = "token",
    description = "The `password` grant logs in (a new session) and returns an access token \
        and a refresh token (for a user with a second factor it answers 403 `mfa_required` \
        with an `mfa_token`, and `urn:gatehouse:grant-type:mfa` with that token and `otp` or \
        `recovery_code` completes the login); the `refresh_token` grant rotates the pair (a spent refresh \
        token presented again ends the whole session); `client_credentials` gives a \
        confidential client a token of its own (client authentication by HTTP Basic or \
        `client_id` and `client_secret` in the body). Errors are RFC 6749 §5.2 bodies, not \
        problem documents. The body's credentials are its only credentials: no cookie or \
        `Authorization` header is read. The parameters are a form \
        (`application/x-www-form-urlencoded`, RFC 6749 §4.3.2 and §6); the same parameters \
        as a JSON object of strings (`application/json`) are accepted too.",
    // One media type, the form OAuth clients send. The JSON body the handler
    // also reads is named in the description only: openapi-python-client
    // (0.29.1) generates an operation whose required body has two media types
    // into a module that does not import (`| Unset` without its import), and
    // with one schema for both it could not tell them apart anyway
    // (docs/api.md, "The OpenAPI document").
    request_body(
        content = TokenRequest,
        content_type = "application/x-www-form-urlencoded",
    ),
    responses(
        (status = 200, description = "A new token pair", body = TokenResponse,
            headers(("Pragma" = String, description = "`no-cache` (RFC 6749 §5.1)"))),
        (status = 400, description = "`invalid_request`, `invalid_grant` or \
            `unsupported_grant_type` (RFC 6749 §5.2)", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`: the client authentication of a \
            `client_credentials` or `authorization_code` grant failed (with \
            `WWW-Authenticate: Basic` when HTTP Basic was tried)", body = OAuthErrorBody),
        (status = 403, description = "`mfa_required`: the password is right and the user has \
            a second factor; the body's `mfa_token` continues with the MFA grant",
            body = OAuthErrorBody),
        (status = 413, description = "`invalid_request`: the body exceeds 64 KiB",
            body = OAuthErrorBody),
        (status = 429, description = "`temporarily_unavailable`: too many failed attempts",
            body = OAuthErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "`temporarily_unavailable`: a store does not answer or \
            the hashing queue is full", body = OAuthErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
async fn token(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let body = read_body(body)?;
    let params = parameters(&headers, &body)?;
    let grant_type = required(&params, "grant_type")?;
    if grant_type == "authorization_code" {
        return code_grant(&state, &client, &headers, &params).await;
    }
    if grant_type == "client_credentials" {
        return client_credentials_grant(&state, &headers, &params).await;
    }
    let pair: TokenPair = match grant_type {
        "password" => {
            let username = required(&params, "username")?;
            let password = required(&params, "password")?;
            state
                .tokens
                .password_grant(username, Password::new(password.to_owned()), &client)
                .await?
        }
        "refresh_token" => {
            let presented = required(&params, "refresh_token")?;
            let app = authenticate_client(&state, &headers, &params).await?;
            state
                .tokens
                .refresh_grant(presented, app.map(|c| c.id))
                .await?
        }
        MFA_GRANT => {
            let mfa_token = required(&params, "mfa_token")?;
            let proof = match (params.get("otp"), params.get("recovery_code")) {
                (Some(otp), None) if !otp.trim().is_empty() => Proof::Totp(otp.trim()),
                (None, Some(code)) if !code.trim().is_empty() => Proof::RecoveryCode(code.trim()),
                _ => {
                    return Err(OAuthError::bad(
                        "invalid_request",
                        "Send exactly one of otp and recovery_code.",
                    ));
                }
            };
            state.tokens.mfa_grant(mfa_token, proof, &client).await?
        }
        _ => {
            return Err(OAuthError::bad(
                "unsupported_grant_type",
                "Supported grant types: authorization_code, client_credentials, password, \
                 refresh_token, urn:gatehouse:grant-type:mfa.",
            ));
        }
    };
    let body = TokenResponse {
        access_token: pair.access.token,
        token_type: "Bearer",
        expires_in: pair.access.expires_in,
        refresh_token: Some(pair.refresh.encode()),
        id_token: None,
        scope: pair.access.scope,
    };
    Ok(token_response(body))
}

/// RFC 6749 §5.1: a token response is never stored.
fn token_response(body: TokenResponse) -> Response {
    (
        [
            (PRAGMA, HeaderValue::from_static("no-cache")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Json(body),
    )
        .into_response()
}

/// The client a token request authenticates as (RFC 6749 §2.3): `None`
/// when it names none, or names one that is not registered without a
/// secret.
pub(super) async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<ClientRecord>, OAuthError> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    let basic = match (authorization.next(), authorization.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(OAuthError::bad(
                "invalid_request",
                "The request carries more than one Authorization header.",
            ));
        }
        (Some(value), None) => {
            let text = value.to_str().unwrap_or_default();
            let is_basic = text
                .split_once(' ')
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
            if is_basic {
                Some(basic_credentials(text).ok_or_else(|| OAuthError::invalid_client(true))?)
            } else {
                // Another scheme is not client authentication; the token
                // endpoint never read it.
                None
            }
        }
    };
    let presented = PresentedClient {
        basic,
        client_id: params.get("client_id").map(String::as_str),
        client_secret: params.get("client_secret").map(String::as_str),
    };
    state
        .provider
        .authenticate_client(&presented)
        .await
        .map_err(|e| match e {
            ClientAuthError::Failed { basic } => OAuthError::invalid_client(basic),
            ClientAuthError::TwoMethods => OAuthError::bad(
                "invalid_request",
                "Authenticate the client one way: HTTP Basic or client_secret in the body.",
            ),
            ClientAuthError::Store(e) => GrantError::Store(e).into(),
        })
}

/// The `authorization_code` grant (OIDC Core §3.1.3).
async fn code_grant(
    state: &AppState,
    meta: &crate::model::client::ClientMeta,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let client = authenticate_client(state, headers, params)
        .await?
        .ok_or_else(|| {
            let basic = headers.contains_key(AUTHORIZATION);
            OAuthError::invalid_client(basic)
        })?;
    let code = required(params, "code")?;
    let grant = state
        .provider
        .exchange_code(
            &client,
            code,
            params.get("redirect_uri").map(String::as_str),
            params.get("code_verifier").map(String::as_str),
            meta,
        )
        .await?;
    let body = TokenResponse {
        access_token: grant.access.token,
        token_type: "Bearer",
        expires_in: grant.access.expires_in,
        refresh_token: grant.refresh.map(|r| r.encode()),
        id_token: grant.id_token,
        scope: grant.access.scope,
    };
    Ok(token_response(body))
}

/// The `client_credentials` grant (RFC 6749 §4.4): only for a confidential
/// client that authenticates.
async fn client_credentials_grant(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let basic = headers.contains_key(AUTHORIZATION);
    let client = authenticate_client(state, headers, params)
        .await?
        .ok_or_else(|| OAuthError::invalid_client(basic))?;
    let access = state
        .provider
        .client_credentials(&client, params.get("scope").map(String::as_str))
        .await
        .map_err(|e| match e {
            GrantError::RetiredSecret => OAuthError::invalid_client(basic),
            e => e.into(),
        })?;
    let body = TokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
        refresh_token: None,
        id_token: None,
        scope: access.scope,
    };
    Ok(token_response(body))
}

/// `POST /v1/session/token`: only for a cookie session (a bearer caller
/// refreshes instead).
#[utoipa::path(
    post,
    path = "/v1/session/token",
    tag = "tokens",
    operation_id = "sessionToken",
    security(("sessionCookie" = [])),
    responses(
        (status = 200, description = "An access token for the cookie's session",
            body = SessionTokenResponse,
            headers(("Pragma" = String, description = "`no-cache` (RFC 6749 §5.1)"))),
        (status = 401, response = oa::Unauthorized),
        (status = 403, response = oa::Forbidden),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn session_token(State(state): State<AppState>, who: CurrentUser) -> Result<Response, Error> {
    if who.credential != Credential::Cookie {
        return Err(Error::Unauthorized);
    }
    let access = state
        .tokens
        .session_token(&who.auth.user, &who.auth.session)
        .await
        .map_err(unavailable)?;
    let body = SessionTokenResponse {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: access.expires_in,
    };
    Ok(([(PRAGMA, HeaderValue::from_static("no-cache"))], Json(body)).into_response())
}
