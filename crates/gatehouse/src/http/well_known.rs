//! `/.well-known/jwks.json`: the public keys that verify our tokens.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::auth::keys::PublishedKey;

/// How long verifiers may cache the key set. A rotation publishes the new
/// key when it starts signing, so verifiers must also refetch on an unknown
/// `kid`; the old key stays published for a token lifetime after rotation,
/// far longer than this.
const JWKS_MAX_AGE: &str = "public, max-age=300";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks))
}

/// An RFC 7517 JSON Web Key Set.
#[derive(Serialize, ToSchema)]
struct Jwks {
    /// Every key that may have signed a live token: the access-token keys
    /// (none with HS256) and the ID-token keys (RS256, ES256 and EdDSA),
    /// each naming what it signs in `gatehouse_purpose`.
    #[schema(value_type = Vec<PublicJwk>)]
    keys: Vec<PublishedKey>,
}

/// A public key (RFC 7517 §4; members by key type, RFC 7518 §6, RFC 8037).
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: the keys are `PublishedKey`s.
struct PublicJwk {
    /// `OKP` (Ed25519), `EC` (P-256) or `RSA`.
    kty: String,
    kid: String,
    /// `EdDSA`, `ES256` or `RS256`.
    alg: String,
    /// Always `sig`.
    #[schema(rename = "use")]
    key_use: String,
    /// `OKP` and `EC`: the curve.
    crv: Option<String>,
    /// `OKP` and `EC`: the public point's x coordinate (base64url).
    x: Option<String>,
    /// `EC`: the y coordinate (base64url).
    y: Option<String>,
    /// `RSA`: the modulus (base64url).
    n: Option<String>,
    /// `RSA`: the exponent (base64url).
    e: Option<String>,
    /// What the key signs: `access` (access tokens, `typ: at+jwt`) or
    /// `id_token` (OpenID Connect ID tokens). gatehouse's own member (RFC
    /// 7517 §4: ignored by whoever does not know it); a resource server
    /// verifying access tokens takes only the `access` keys.
    gatehouse_purpose: String,
}

/// `GET /.well-known/jwks.json`.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "resource servers",
    operation_id = "jwks",
    responses(
        (status = 200, description = "The public keys that verify access tokens and ID tokens", body = Jwks,
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))),
    )
)]
async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let ring = state.keys.ring();
    (
        [(CACHE_CONTROL, HeaderValue::from_static(JWKS_MAX_AGE))],
        Json(Jwks {
            keys: ring.published.clone(),
        }),
    )
}
