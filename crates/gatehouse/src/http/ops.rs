//! Operational endpoints: liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use time::format_description::well_known::Rfc3339;

use super::AppState;
use crate::auth::Readiness;
use crate::config::RevocationFailMode;
use crate::error::Error;

/// How long readiness waits for a store before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// How long a scrape waits for the session store's count.
const METRICS_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.auth.render_metrics(METRICS_STORE_TIMEOUT).await;
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
}

/// 200 while the process serves.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when every configured store answers, else 503 (a problem document
/// saying what is down and how the node behaves meanwhile). Either way the
/// body's `checks` name each store and, with Redis, the revocation feed.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let r = state.auth.readiness(READY_TIMEOUT).await;
    let word = |answer: &Result<(), String>| if answer.is_ok() { "ok" } else { "unavailable" };
    let mut checks = json!({ "database": word(&r.database) });
    if let Some(redis) = &r.redis {
        checks["redis"] = json!(word(redis));
    }
    if let Some(connected) = r.feed_connected {
        checks["revocation_feed"] = json!(if connected {
            "connected"
        } else {
            "disconnected"
        });
    }
    if r.is_ready() {
        let mut body = json!({ "status": "ready" });
        body["checks"] = checks;
        return Ok(Json(body));
    }
    for (store, answer) in [("database", Some(&r.database)), ("redis", r.redis.as_ref())] {
        if let Some(Err(e)) = answer {
            tracing::warn!(store, error = %e, "readiness check failed");
        }
    }
    Err(Error::NotReady {
        detail: not_ready_detail(&r),
        checks,
    })
}

/// One sentence per failing part, and what the node does meanwhile.
fn not_ready_detail(r: &Readiness) -> String {
    let mut parts = Vec::new();
    if r.database.is_err() {
        parts.push(
            "The database does not answer: logins, grants and account changes answer 503."
                .to_owned(),
        );
    }
    if matches!(r.redis, Some(Err(_))) {
        let since = r
            .feed_lost_at
            .and_then(|t| t.format(&Rfc3339).ok())
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        let cookies = match r.fail_mode {
            Some(RevocationFailMode::Stale) => {
                "session cookies this node read in the last access-token lifetime are accepted from its cache, others answer 503 (revocation_fail_mode = stale)"
            }
            _ => "session cookies answer 503 (revocation_fail_mode = closed)",
        };
        parts.push(format!(
            "Degraded{since}: Redis does not answer; access tokens are verified against the revocations known when it was last reached; {cookies}; logins and grants answer 503."
        ));
    }
    parts.join(" ")
}
