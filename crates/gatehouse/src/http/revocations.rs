//! `GET /v1/revocations`: the feed of ended sessions for resource servers,
//! authenticated with a resource-server key (never a user's credentials).

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{StrictQuery, bearer_token};
use super::openapi as oa;
use crate::auth::feed::{FeedCursor, MAX_FEED_WAIT};
use crate::auth::types::ResourceServerSecret;
use crate::error::{Error, unavailable};
use crate::store::ResourceServerRecord;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(feed))
}

/// A caller holding a resource-server key (`Authorization: Bearer ghrs_…`):
/// 401 without one, 401 `invalid_token` for a key that is malformed or not
/// (or no longer) known, 503 when the store cannot tell.
#[derive(Debug)]
pub struct ResourceServer(pub ResourceServerRecord);

impl FromRequestParts<AppState> for ResourceServer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let value = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(Error::Unauthorized)?;
        let key = bearer_token(value)
            .and_then(ResourceServerSecret::parse_key)
            .ok_or(Error::InvalidToken)?;
        let found = state
            .feed
            .authenticate_resource_server(&key)
            .await
            .map_err(unavailable)?;
        found.map(Self).ok_or(Error::InvalidToken)
    }
}

/// An ended session whose tokens must be refused until `until`.
#[derive(Serialize, ToSchema)]
struct Revocation {
    /// The session id (the tokens' `sid`).
    #[schema(format = Uuid)]
    sid: String,
    /// After this every token of the session has expired.
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

/// `GET /v1/revocations`.
#[derive(Serialize, ToSchema)]
struct RevocationPage {
    /// At most 1,000; when full, ask again at once.
    revocations: Vec<Revocation>,
    /// Pass back as `since`.
    cursor: String,
}

/// The feed's query (read by [`StrictQuery`]: a parameter given twice, or
/// an unknown one, is 400; an empty value is a value, and refused).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct FeedQuery {
    /// The `cursor` of the previous answer; without it, every revocation
    /// in force.
    #[param(min_length = 1, nullable = false)]
    since: Option<String>,
    /// Seconds to wait for a revocation when there is none after the
    /// cursor (a long poll), 0 to 30.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 30, nullable = false)]
    wait: Option<String>,
}

/// `GET /v1/revocations?since=CURSOR&wait=SECONDS`: the sessions ended
/// after the cursor (every one in force without it), waiting up to `wait`
/// seconds (0 to 30, default 0) for one when there are none.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    tag = "resource servers",
    operation_id = "revocations",
    security(("resourceServerKey" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "The sessions ended after the cursor", body = RevocationPage),
        (status = 400, response = oa::BadRequest),
        (status = 401, response = oa::Unauthorized),
        (status = 503, response = oa::Unavailable),
    )
)]
async fn feed(
    ResourceServer(_): ResourceServer,
    State(state): State<AppState>,
    StrictQuery(query): StrictQuery<FeedQuery>,
) -> Result<impl IntoResponse, Error> {
    let since = query
        .since
        .map(|v| {
            FeedCursor::parse(&v).map_err(|_| {
                Error::BadRequest(
                    "since is not a cursor this server issued; start again without it".into(),
                )
            })
        })
        .transpose()?;
    let wait = query
        .wait
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s <= MAX_FEED_WAIT.as_secs())
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    Error::BadRequest("wait must be a whole number of seconds, 0 to 30".into())
                })
        })
        .transpose()?;
    let page = state
        .feed
        .revocation_feed(since.as_ref(), wait.unwrap_or(Duration::ZERO))
        .await
        .map_err(unavailable)?;
    let revocations: Vec<Revocation> = page
        .revocations
        .iter()
        .map(|(sid, until)| Revocation {
            sid: sid.to_string(),
            until: *until,
        })
        .collect();
    Ok(Json(RevocationPage {
        revocations,
        cursor: page.cursor.encode(),
    }))
}
