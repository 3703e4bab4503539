//! `/.well-known/jwks.json`: the public keys that verify our tokens.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

/// How long verifiers may cache the key set. A rotation publishes the new
/// key when it starts signing, so verifiers must also refetch on an unknown
/// `kid`; the old key stays published for a token lifetime after rotation,
/// far longer than this.
const JWKS_MAX_AGE: &str = "public, max-age=300";

pub fn router() -> Router<AppState> {
    Router::new().route("/.well-known/jwks.json", get(jwks))
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let ring = state.auth.keys().ring();
    (
        [(CACHE_CONTROL, HeaderValue::from_static(JWKS_MAX_AGE))],
        Json(json!({ "keys": ring.published })),
    )
}
