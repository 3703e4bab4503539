//! The axum extractor, `RequirePermission` and `VerifyLayer`: statuses,
//! challenges and problem documents as a client sees them.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use gatehouse_verify::axum::{RequirePermission, VerifiedClaims, VerifyLayer};
use gatehouse_verify::{Algorithm, Claims, Verifier};
use tower::ServiceExt as _;

use crate::common::{self, ManualClock, Mock, T0, TestKey};

struct Fixture {
    mock: Mock,
    key: TestKey,
    clock: ManualClock,
    verifier: Verifier,
    valid: String,
    clerk_only: String,
    expired: String,
}

async fn fixture() -> Fixture {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());
    let mut clerk = claims.clone();
    clerk["scope"] = "profile:read".into();
    let mut expired = claims.clone();
    expired["exp"] = (clock.secs() - 60).into();
    Fixture {
        valid: key.mint(&claims),
        clerk_only: key.mint(&clerk),
        expired: key.mint(&expired),
        verifier,
        mock,
        key,
        clock,
    }
}

async fn whoami(VerifiedClaims(claims): VerifiedClaims) -> String {
    format!("user {}", claims.sub)
}

async fn from_layer(claims: Claims) -> String {
    format!("layer {}", claims.sub)
}

async fn maybe(claims: Option<VerifiedClaims>) -> String {
    match claims {
        Some(c) => format!("user {}", c.sub),
        None => "anonymous".into(),
    }
}

fn request(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut r = Request::builder().uri(path);
    if let Some(a) = authorization {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(Body::empty()).expect("request")
}

async fn send(app: &Router, path: &str, authorization: Option<&str>) -> (Response, String) {
    let response = app
        .clone()
        .oneshot(request(path, authorization))
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8(bytes.to_vec()).expect("utf-8"),
    )
}

fn challenge(r: &Response) -> &str {
    r.headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_problem(r: &Response, body: &str, status: u16) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    let problem: serde_json::Value = serde_json::from_str(body).expect("problem JSON");
    assert_eq!(problem["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(problem[field].is_string(), "{field} in {body}");
    }
}

fn extractor_app(verifier: &Verifier) -> Router {
    Router::new()
        .route("/me", get(whoami))
        .route("/maybe", get(maybe))
        .with_state(verifier.clone())
}

#[tokio::test]
async fn the_extractor_answers_200_with_the_claims() {
    let f = fixture().await;
    let app = extractor_app(&f.verifier);
    let (r, body) = send(&app, "/me", Some(&format!("Bearer {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body, format!("user {}", common::SUB));
    let (r, _) = send(&app, "/me", Some(&format!("bEaReR {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK, "the scheme is case-insensitive");
}

#[tokio::test]
async fn no_token_is_401_with_the_plain_challenge() {
    let f = fixture().await;
    let app = extractor_app(&f.verifier);
    for auth in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer ")] {
        let (r, body) = send(&app, "/me", auth).await;
        assert_problem(&r, &body, 401);
        assert_eq!(challenge(&r), r#"Bearer realm="gatehouse""#, "{auth:?}");
    }
}

#[tokio::test]
async fn a_bad_token_is_401_invalid_token_and_never_echoed() {
    let f = fixture().await;
    let app = extractor_app(&f.verifier);
    for token in [f.expired.as_str(), "garbage.token.here", "x"] {
        let (r, body) = send(&app, "/me", Some(&format!("Bearer {token}"))).await;
        assert_problem(&r, &body, 401);
        assert_eq!(
            challenge(&r),
            r#"Bearer realm="gatehouse", error="invalid_token""#
        );
        assert!(token.len() < 8 || !body.contains(token), "{body}");
    }
}

#[tokio::test]
async fn optional_claims_are_none_only_without_a_header() {
    let f = fixture().await;
    let app = extractor_app(&f.verifier);
    let (r, body) = send(&app, "/maybe", None).await;
    assert_eq!((r.status(), body.as_str()), (StatusCode::OK, "anonymous"));
    let (r, body) = send(&app, "/maybe", Some(&format!("Bearer {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body, format!("user {}", common::SUB));
    let (r, _) = send(&app, "/maybe", Some(&format!("Bearer {}", f.expired))).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a bad token is not anonymous"
    );
}

fn layered_app(verifier: &Verifier) -> Router {
    Router::new()
        .route("/orders", get(from_layer))
        .route_layer(RequirePermission::new("orders:read"))
        .route_layer(VerifyLayer::new(verifier.clone()))
        .route("/open", get(|| async { "open" }))
}

#[tokio::test]
async fn require_permission_after_the_layer_answers_403_without_the_permission() {
    let f = fixture().await;
    let app = layered_app(&f.verifier);
    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body, format!("layer {}", common::SUB));

    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.clerk_only))).await;
    assert_problem(&r, &body, 403);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="gatehouse", error="insufficient_scope", scope="orders:read""#
    );

    let (r, body) = send(&app, "/orders", None).await;
    assert_problem(&r, &body, 401);
    let (r, _) = send(&app, "/open", None).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "routes added after the layers are open"
    );
}

#[tokio::test]
async fn require_permission_verifies_on_its_own() {
    let f = fixture().await;
    let app = Router::new()
        .route("/orders", get(whoami))
        .route_layer(RequirePermission::new("orders:read").with_verifier(f.verifier.clone()))
        .with_state(f.verifier.clone());
    let (r, _) = send(&app, "/orders", Some(&format!("Bearer {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.clerk_only))).await;
    assert_problem(&r, &body, 403);
    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.expired))).await;
    assert_problem(&r, &body, 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="gatehouse", error="invalid_token""#
    );

    // The verifier may also come from the request's extensions.
    let app = Router::new()
        .route("/orders", get(from_layer))
        .route_layer(RequirePermission::new("orders:read"))
        .layer(axum::Extension(f.verifier.clone()));
    let (r, _) = send(&app, "/orders", Some(&format!("Bearer {}", f.valid))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_guard_with_nothing_to_verify_with_fails_closed() {
    let f = fixture().await;
    let app = Router::new()
        .route("/orders", get(|| async { "secret" }))
        .route_layer(RequirePermission::new("orders:read"));
    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.valid))).await;
    assert_problem(&r, &body, 500);
    let app = Router::new().route("/orders", get(from_layer));
    let (r, body) = send(&app, "/orders", Some(&format!("Bearer {}", f.valid))).await;
    assert_problem(&r, &body, 500);
}

#[tokio::test]
async fn unavailable_keys_are_503_with_retry_after() {
    let clock = ManualClock::at(T0);
    let issuer = common::closed_port_url().await;
    let verifier = Verifier::builder(&issuer)
        .clock(clock.clock())
        .build()
        .expect("verifier");
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let token = key.mint(&common::claims(&issuer, clock.secs()));
    for (app, path) in [
        (extractor_app(&verifier), "/me"),
        (layered_app(&verifier), "/orders"),
    ] {
        let (r, body) = send(&app, path, Some(&format!("Bearer {token}"))).await;
        assert_problem(&r, &body, 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}

#[tokio::test]
async fn the_tower_layer_serves_any_framework_on_http_types() {
    let f = fixture().await;
    let inner = tower::service_fn(|req: http::Request<String>| async move {
        let sub = req
            .extensions()
            .get::<Claims>()
            .map(|c| c.sub.clone())
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(http::Response::new(sub))
    });
    let service = tower::ServiceBuilder::new()
        .layer(VerifyLayer::new(f.verifier.clone()))
        .service(inner);
    let call = |auth: Option<String>| {
        let service = service.clone();
        async move {
            let mut req = http::Request::builder();
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            service
                .oneshot(req.body(String::new()).expect("request"))
                .await
                .expect("infallible")
        }
    };
    let ok = call(Some(format!("Bearer {}", f.valid))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body(), common::SUB);
    let missing = call(None).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="gatehouse""#
    );
    let bad = call(Some(format!("Bearer {}", f.expired))).await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="gatehouse", error="invalid_token""#
    );
    let problem: serde_json::Value = serde_json::from_str(bad.body()).expect("problem");
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-token");

    let guarded = tower::ServiceBuilder::new()
        .layer(VerifyLayer::new(f.verifier.clone()))
        .layer(RequirePermission::new("orders:write"))
        .service(tower::service_fn(|_: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::from("written")))
        }));
    let denied = guarded
        .oneshot(
            http::Request::builder()
                .header(header::AUTHORIZATION, format!("Bearer {}", f.valid))
                .body(String::new())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        denied.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="gatehouse", error="insufficient_scope", scope="orders:write""#
    );
}

/// Both ways of guarding a route: the extractor and the layers.
fn both_apps(verifier: &Verifier) -> [(Router, &'static str); 2] {
    [
        (extractor_app(verifier), "/me"),
        (layered_app(verifier), "/orders"),
    ]
}

async fn assert_invalid_token(app: &Router, path: &str, token: &str, what: &str) {
    let (r, body) = send(app, path, Some(&format!("Bearer {token}"))).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "{what} on {path}: {body}"
    );
    assert_problem(&r, &body, 401);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="gatehouse", error="invalid_token""#,
        "{what} on {path}"
    );
}

/// RFC 7515 §4 / RFC 7519 §4: a member name given twice is refused, never
/// resolved to the first or the last, at any depth, even under a genuine
/// signature. `serde_json::Value` cannot hold a duplicate: written as text.
#[tokio::test]
async fn a_duplicate_member_is_401_invalid_token_even_when_genuinely_signed() {
    let f = fixture().await;
    let claims = common::claims(&f.mock.base, f.clock.secs()).to_string();
    let body = claims.strip_prefix('{').expect("an object");
    let header = r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#;
    let sign = |h: &str, p: &str| f.key.sign_raw(h, p, Algorithm::EdDSA);
    // Control: the same header and claims as text are accepted.
    for (app, path) in both_apps(&f.verifier) {
        let (r, _) = send(
            &app,
            path,
            Some(&format!("Bearer {}", sign(header, &claims))),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "control on {path}");
    }
    let cases = [
        (
            "alg twice",
            sign(
                r#"{"alg":"HS256","alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#,
                &claims,
            ),
        ),
        (
            "kid twice",
            sign(
                r#"{"alg":"EdDSA","kid":"nobody","kid":"k1","typ":"at+jwt"}"#,
                &claims,
            ),
        ),
        (
            "a header duplicate in a nested object",
            sign(
                r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x-ext":{"a":1,"a":2}}"#,
                &claims,
            ),
        ),
        (
            "scope twice",
            sign(header, &format!(r#"{{"scope":"orders:read",{body}"#)),
        ),
        (
            "an unknown claim twice",
            sign(header, &format!(r#"{{"x-ext":1,"x-ext":2,{body}"#)),
        ),
        (
            "a claims duplicate in a nested object",
            sign(header, &format!(r#"{{"x-ext":[{{"a":1,"a":2}}],{body}"#)),
        ),
    ];
    for (app, path) in both_apps(&f.verifier) {
        for (what, token) in &cases {
            assert_invalid_token(&app, path, token, what).await;
        }
    }
}

/// A token claiming to live longer than gatehouse's ttl plus leeway (the
/// default: 5 min + 30 s) was not minted by its rules, whoever holds the key.
#[tokio::test]
async fn a_lifetime_over_the_maximum_is_401_invalid_token_even_when_genuinely_signed() {
    let f = fixture().await;
    let now = f.clock.secs();
    let lasting = |iat: i64, exp: i64| {
        let mut c = common::claims(&f.mock.base, now);
        c["iat"] = iat.into();
        c["exp"] = exp.into();
        f.key.mint(&c)
    };
    let at_the_cap = lasting(now - 10, now - 10 + 330);
    for (app, path) in both_apps(&f.verifier) {
        let (r, _) = send(&app, path, Some(&format!("Bearer {at_the_cap}"))).await;
        assert_eq!(r.status(), StatusCode::OK, "at the cap on {path}");
        for (what, token) in [
            ("30 days", lasting(now, now + 30 * 86_400)),
            ("issued 30 days ago", lasting(now - 30 * 86_400, now + 60)),
            ("one second over the cap", lasting(now - 10, now - 10 + 331)),
        ] {
            assert_invalid_token(&app, path, &token, what).await;
        }
    }
}

/// A gatehouse with another `access_token_ttl` needs `max_token_lifetime` set
/// to its ttl plus leeway: then its tokens pass, and one second more does not.
#[tokio::test]
async fn max_token_lifetime_follows_the_servers_ttl_and_leeway() {
    let f = fixture().await;
    let now = f.clock.secs();
    let lasting = |secs: i64| {
        let mut c = common::claims(&f.mock.base, now);
        c["exp"] = (now + secs).into();
        f.key.mint(&c)
    };
    let two_hours = f
        .mock
        .builder(&f.clock)
        .max_token_lifetime(std::time::Duration::from_secs(2 * 3600 + 30))
        .build()
        .expect("verifier");
    for (verifier, accepted, refused) in [
        (&f.verifier, 330, 331),
        (&two_hours, 2 * 3600 + 30, 2 * 3600 + 31),
    ] {
        let app = extractor_app(verifier);
        let (r, _) = send(&app, "/me", Some(&format!("Bearer {}", lasting(accepted)))).await;
        assert_eq!(r.status(), StatusCode::OK, "{accepted} s");
        assert_invalid_token(&app, "/me", &lasting(refused), &format!("{refused} s")).await;
        assert_eq!(
            verifier.verify(&lasting(refused)).await,
            Err(gatehouse_verify::VerifyError::LifetimeTooLong)
        );
    }
}
