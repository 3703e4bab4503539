//! Operational endpoints: liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::error::Error;

/// How long readiness waits for a store before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// 200 while the process serves.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when every configured store answers, else 503.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    match tokio::time::timeout(READY_TIMEOUT, state.auth.ready()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "readiness check failed");
            Err(Error::Unavailable)
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Err(Error::Unavailable)
        }
    }
}
