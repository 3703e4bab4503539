//! The HTTP layer: one router per resource, merged here, with the layers
//! every route shares (body limits and deadline, CSRF origin check,
//! no-store, tracing).

pub mod accounts;
pub mod admin;
pub mod authz;
pub mod clients;
pub mod email;
pub mod extract;
mod limits;
pub mod mfa;
pub mod oidc;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod revocations;
pub mod sessions;
pub mod tokens;
pub mod well_known;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, ORIGIN};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use cookie::{Cookie, SameSite};
use serde::Serialize;
use time::OffsetDateTime;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::types::SessionSecret;
use crate::auth::{Services, Sessions};
use crate::error::Error;
use crate::store::{SessionRecord, UserRecord};

/// Largest request body accepted, in bytes (API.md, Conventions).
pub const BODY_LIMIT: usize = 64 * 1024;

/// Settings of the HTTP layer, fixed at start-up.
#[derive(Debug)]
pub struct WebSettings {
    /// `__Host-gatehouse` with `cookie_secure`, else `gatehouse`.
    pub cookie_name: &'static str,
    pub cookie_secure: bool,
    /// Serialized origins allowed to send cookie-authenticated writes.
    pub allowed_origins: HashSet<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Forward-authentication rules, in order.
    pub rules: Vec<crate::config::AccessRule>,
    /// SHA-256 of `metrics_token`, when `/metrics` needs it.
    pub metrics_token: Option<[u8; 32]>,
    /// How long a request's body may take to arrive, from its head.
    pub request_body_timeout: Duration,
    /// The admin API needs a session that proved a second factor.
    pub admin_requires_mfa: bool,
}

impl WebSettings {
    /// The `Set-Cookie` value that hands a new session to the client.
    pub fn session_cookie(
        &self,
        secret: &SessionSecret,
        session: &SessionRecord,
        now: OffsetDateTime,
    ) -> HeaderValue {
        // Round up: a cookie that vanished before its session would log the
        // user out early; one that outlives it by under a second is refused
        // by the server anyway.
        let remaining = (session.expires_at - now).max(time::Duration::ZERO);
        let max_age = time::Duration::seconds(
            remaining.whole_seconds() + i64::from(remaining.subsec_nanoseconds() > 0),
        );
        let c = Cookie::build((self.cookie_name, secret.encode()))
            .http_only(true)
            .secure(self.cookie_secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(max_age)
            .build();
        header_value(&c)
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn removal_cookie(&self) -> HeaderValue {
        let c = Cookie::build((self.cookie_name, ""))
            .http_only(true)
            .secure(self.cookie_secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(time::Duration::ZERO)
            .build();
        header_value(&c)
    }
}

fn header_value(c: &Cookie<'_>) -> HeaderValue {
    // The name is ours and the value base64url, so this cannot fail; an
    // empty header would merely not set the cookie.
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Everything a handler may use, passed explicitly: the domain's services
/// (`state.sessions`, `state.accounts`, … through `Deref`) and the web
/// settings. Two `Arc`s, because axum clones the state for every extractor
/// and middleware of every request: cloning [`Services`] itself (14 `Arc`s)
/// cost a third of the `/healthz` rate on 2 cores, in reference-count
/// traffic between them (docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub web: Arc<WebSettings>,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// Every route, with its OpenAPI description: each module's router is an
/// `OpenApiRouter` whose `routes!` register the axum route and the
/// operation from one annotation, so the two cannot drift apart. The
/// shared layers that need state are added by [`router`].
pub fn routes(web: &WebSettings) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(accounts::router())
        .merge(sessions::router())
        .merge(mfa::router())
        .merge(email::router())
        .merge(tokens::router())
        .merge(admin::router())
        .merge(clients::router())
        .merge(authz::router())
        .merge(revocations::router())
        .layer(SetResponseHeaderLayer::if_not_present(
            CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(pages::router(web))
        .merge(ops::router())
        .merge(well_known::router())
        .merge(oidc::router())
        .routes(routes!(openapi::openapi_json))
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let (routes, mut doc) = routes(&state.web).split_for_parts();
    openapi::with_cookie_name(&mut doc, state.web.cookie_name);
    // Serialized once, here; every request for it shares the buffer.
    let doc = openapi::OpenApiJson::new(&doc).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        openapi::OpenApiJson(axum::body::Bytes::from_static(b"{}"))
    });
    routes
        .layer(Extension(doc))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), csrf_guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::body_limits,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// The response header naming the request, as the log lines of its span do.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's id: 16 hex digits, unique per node in practice. Each worker
/// thread draws from its own splitmix64 sequence (a bijection of a counter,
/// so no repeats within a thread) seeded from the OS once, so no request
/// makes a system call or touches memory another core writes.
fn request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            // Without the OS's randomness, the thread's address still
            // tells threads apart; ids need not be secret.
            if getrandom::fill(&mut seed).is_err() {
                seed = (std::ptr::from_ref(&seed) as usize as u64).to_le_bytes();
            }
            u64::from_le_bytes(seed)
        });
    }
    let mut z = NEXT.with(|next| {
        let value = next.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        next.set(value);
        value
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut text = [0u8; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[usize::try_from((z >> (60 - 4 * i)) & 0xf).unwrap_or(0)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The outermost layer of every request: its span (`request`: the id,
/// method and route pattern, and the user once known) that every log line
/// of the request carries, the `X-Request-Id` answer header, the access
/// line (`gatehouse::access` at debug: status and latency), and the count
/// by method, route pattern and status with its latency. Layers of a
/// `Router` run after routing, so the matched route is known here; a
/// request that matched none is counted as `unmatched` (never by its raw
/// path: an attacker could mint a series per request).
async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let started = Instant::now();
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id();
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or_default(),
        method,
        route,
        user = tracing::field::Empty,
    );
    let mut res = next.run(req).instrument(span.clone()).await;
    let latency = started.elapsed();
    span.in_scope(|| {
        tracing::debug!(
            target: "gatehouse::access",
            status = res.status().as_u16(),
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    res.headers_mut().insert(REQUEST_ID, id);
    state
        .metrics
        .http_request(method, route, res.status(), latency);
    res
}

/// Refuses state-changing requests from foreign origins when they ride on
/// the session cookie, and logins from foreign origins (login CSRF): the
/// browser attaches cookies to cross-site requests, so the `Origin` header
/// is what tells a forged request apart (OWASP CSRF cheat sheet, "Verifying
/// origin with standard headers"). Requests without `Origin` (non-browser
/// clients) and bearer-authenticated requests are not affected.
///
/// The hosted pages' form posts are held to a stricter rule, cookie or not:
/// only browsers post them, and browsers always say where from (see
/// [`pages::form_post_is_same_origin`]).
async fn csrf_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if writes {
        let headers = req.headers();
        let path = req.uri().path();
        if pages::is_form_path(path) {
            if !pages::form_post_is_same_origin(headers, &state.web.allowed_origins) {
                return pages::refused(&state.web);
            }
            return next.run(req).await;
        }
        // A login sets the cookie whatever else the request carries. The
        // token endpoint never reads the cookie (its credentials are in the
        // body and its answer is not readable cross-origin), so a cookie
        // riding along does not make it a cookie-authenticated write; and
        // /v1/verify changes nothing, whatever method a proxy forwards.
        // The authorization and logout endpoints' POSTs are an
        // application's cross-site forms by design (they do nothing their
        // GETs would not); UserInfo, revocation and introspection read only
        // their bearer token or client credentials, never the cookie.
        let guarded = path == "/v1/login"
            || (path != "/v1/token"
                && path != "/v1/verify"
                && path != "/oauth2/authorize"
                && path != "/oauth2/logout"
                && path != "/oauth2/userinfo"
                && path != "/oauth2/revoke"
                && path != "/oauth2/introspect"
                && !headers.contains_key(AUTHORIZATION)
                && extract::has_cookie(headers, state.web.cookie_name));
        if guarded && let Some(origin) = headers.get(ORIGIN) {
            // An unreadable Origin is no allowed origin: refused.
            let allowed = origin
                .to_str()
                .is_ok_and(|o| state.web.allowed_origins.contains(o));
            if !allowed {
                return Error::Forbidden(
                    "Cross-origin request refused: the Origin is not allowed.",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserView {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub roles: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub disabled: bool,
    /// The user proved they read mail at `email` (a verification link, a
    /// password reset, or an administrator said so).
    pub email_verified: bool,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.clone(),
            roles: u.roles.clone(),
            created_at: u.created_at,
            disabled: u.disabled,
            email_verified: u.email_verified,
        }
    }
}

/// A session as the API shows it: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    /// A public handle, not the secret.
    #[schema(format = Uuid)]
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub idle_expires_at: OffsetDateTime,
    /// The first 256 characters of the login's `User-Agent`; null without one.
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// The client's IP address at login.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Whether this is the session of the request's own credential.
    pub current: bool,
    /// How the user proved who they are when the session began (RFC 8176:
    /// `["pwd"]`, `["pwd", "otp", "mfa"]`, ...).
    #[schema(value_type = Vec<String>, example = json!(["pwd", "otp", "mfa"]))]
    pub amr: crate::model::amr::Amr,
}

impl SessionView {
    pub fn new(sessions: &Sessions, s: &SessionRecord, current: bool) -> Self {
        Self {
            id: s.id.to_string(),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            idle_expires_at: sessions.idle_expiry(s),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            current,
            amr: s.amr,
        }
    }
}
