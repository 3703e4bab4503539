//! Operational endpoints: liveness, readiness and metrics. (`/openapi.json`
//! lives in `http::openapi`.)

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::{self as oa, ReadyChecks};
use crate::auth::Readiness;
use crate::config::RevocationFailMode;
use crate::error::Error;

/// How long readiness waits for a store before calling it down.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// `GET /readyz` when ready.
#[derive(Serialize, ToSchema)]
struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    status: &'static str,
    checks: ReadyChecks,
}

/// How long a scrape waits for the session store's count.
const METRICS_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    description = "Unauthenticated like the probes unless `metrics_token` is set; then it \
        needs `Authorization: Bearer` with that token (401 otherwise). It holds counts, never \
        a secret or an email.",
    security((), ("metricsToken" = [])),
    responses(
        (status = 200, description = "The Prometheus text format, version 0.0.4",
            content_type = "text/plain", body = String),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
    )
)]
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Error> {
    if let Some(expected) = &state.web.metrics_token {
        scraper_authorized(&headers, expected)?;
    }
    let text = state.ops.render_metrics(METRICS_STORE_TIMEOUT).await;
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    ))
}

/// Whether the request carries the scraper's token: one `Authorization:
/// Bearer` header whose token's SHA-256 equals `expected`, compared in
/// constant time.
///
/// # Errors
/// 401 without it (or with another), 400 for two `Authorization` headers.
fn scraper_authorized(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), Error> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Error::Unauthorized)?;
    if values.next().is_some() {
        return Err(Error::InvalidRequest(
            "The request carries more than one Authorization header.",
        ));
    }
    let token = super::extract::bearer_token(value).ok_or(Error::Unauthorized)?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(presented.ct_eq(expected)) {
        Ok(())
    } else {
        Err(Error::InvalidToken)
    }
}

/// 200 while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The process serves", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 when every configured store answers, else 503 (a problem document
/// saying what is down and how the node behaves meanwhile). Either way the
/// body's `checks` name each store and, with Redis, the revocation feed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Every configured store answers", body = Ready),
        (status = 503, description = "A store does not answer: a problem document \
            (`urn:gatehouse:problem:not-ready`) whose `detail` says what is down and how the \
            node behaves meanwhile, and whose `checks` says which part",
            content_type = "application/problem+json", body = oa::Problem,
            headers(("Retry-After" = String, description = "`1`"))),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, Error> {
    let r = state.ops.readiness(READY_TIMEOUT).await;
    let word = |answer: &Result<(), String>| if answer.is_ok() { "ok" } else { "unavailable" };
    let checks = ReadyChecks {
        database: word(&r.database),
        redis: r.redis.as_ref().map(word),
        revocation_feed: r.feed.as_ref().map(|f| match (f.connected, f.proven) {
            (true, true) => "connected",
            (true, false) => "silent",
            (false, _) => "disconnected",
        }),
    };
    if r.is_ready() {
        return Ok(Json(Ready {
            status: "ready",
            checks,
        }));
    }
    for (store, answer) in [("database", Some(&r.database)), ("redis", r.redis.as_ref())] {
        if let Some(Err(e)) = answer {
            tracing::warn!(store, error = %e, "readiness check failed");
        }
    }
    Err(Error::NotReady {
        detail: not_ready_detail(&r),
        checks: serde_json::to_value(&checks).unwrap_or_default(),
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
    let unproven = r.feed.as_ref().filter(|f| !f.proven);
    if matches!(r.redis, Some(Err(_))) || unproven.is_some() {
        let since = r
            .feed
            .as_ref()
            .and_then(|f| f.proven_at)
            .and_then(|t| t.format(&Rfc3339).ok())
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        let redis_down = matches!(r.redis, Some(Err(_)));
        let cause = match unproven {
            Some(f) if !redis_down => format!(
                "the revocation feed has answered no heartbeat for revocation_max_staleness ({}s), so this node cannot know of a logout made on another",
                f.max_staleness.as_secs()
            ),
            _ => "Redis does not answer".to_owned(),
        };
        let behaviour = match (r.fail_mode, unproven.is_some()) {
            (Some(RevocationFailMode::Stale), _) => {
                "access tokens are verified against the revocations this node knows, and session cookies it read in the last access-token lifetime are accepted from its cache, others answer 503 (revocation_fail_mode = stale)"
            }
            (_, true) => {
                "every request with a session cookie or an access token answers 503 (revocation_fail_mode = closed)"
            }
            (_, false) => {
                "session cookies answer 503; access tokens are verified against the revocations this node knows until revocation_max_staleness has passed, then answer 503 too (revocation_fail_mode = closed)"
            }
        };
        let grants = if redis_down {
            "; logins and grants answer 503"
        } else {
            ""
        };
        parts.push(format!("Degraded{since}: {cause}; {behaviour}{grants}."));
    }
    parts.join(" ")
}
