//! An example resource service: orders, protected by gatehouse access
//! tokens verified locally with `gatehouse-verify`. `GET /orders` needs
//! `orders:read`, `POST /orders` needs `orders:write`; `/healthz` is open.
//!
//! The whole integration is [`app`]: a [`VerifyLayer`] around the protected
//! routes, one [`RequirePermission`] per permission, and the
//! [`VerifiedClaims`] extractor in the handlers that want to know who is
//! calling (it reads the claims the layer verified).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_verify::Verifier;
use gatehouse_verify::axum::{RequirePermission, VerifiedClaims, VerifyLayer};
use serde_json::{Value, json};

/// The service's state: the verifier, and each user's orders (in memory:
/// this is an example).
#[derive(Clone)]
pub struct AppState {
    pub verifier: Verifier,
    orders: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The service's router.
pub fn app(verifier: Verifier) -> Router {
    let state = AppState {
        verifier,
        orders: Arc::default(),
    };
    let read = Router::new()
        .route("/orders", get(list_orders))
        .route_layer(RequirePermission::new("orders:read"));
    let write = Router::new()
        .route("/orders", axum::routing::post(place_order))
        .route_layer(RequirePermission::new("orders:write"));
    Router::new()
        .merge(read)
        .merge(write)
        // Outside the permission guards: 401 without a valid token, 503
        // while gatehouse's keys are unavailable.
        .route_layer(VerifyLayer::new(state.verifier.clone()))
        // Added after the layer, so not behind it.
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// The caller's orders.
async fn list_orders(
    State(state): State<AppState>,
    VerifiedClaims(claims): VerifiedClaims,
) -> Json<Value> {
    let orders = state
        .orders
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&claims.sub)
        .cloned()
        .unwrap_or_default();
    Json(json!({ "user": claims.sub, "orders": orders }))
}

/// Places an order for the caller (the body is stored as given, up to
/// axum's default body limit).
async fn place_order(
    State(state): State<AppState>,
    VerifiedClaims(claims): VerifiedClaims,
    Json(order): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut all = state.orders.lock().unwrap_or_else(|e| e.into_inner());
    let mine = all.entry(claims.sub.clone()).or_default();
    mine.push(order.clone());
    (
        StatusCode::CREATED,
        Json(json!({ "order": order, "count": mine.len() })),
    )
}
