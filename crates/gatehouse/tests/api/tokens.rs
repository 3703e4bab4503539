//! The stateless side: `POST /v1/token` (password and refresh grants, RFC
//! 6749), the access token's shape (RFC 9068), bearer access (RFC 6750),
//! revocation, refresh rotation and reuse detection (RFC 9700), `POST
//! /v1/session/token`, and the published keys.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::auth::types::{Permission, RoleName};
use reqwest::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, ORIGIN, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const WRONG: &str = "not the right password";
const FORM: &str = "application/x-www-form-urlencoded";

// ---------------------------------------------------------------- helpers

/// A form body from pairs, percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `POST /v1/token` with a raw body of the given media type.
async fn post_token(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>) -> Response {
    app.bare_client()
        .post(app.url("/v1/token"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

/// `POST /v1/token` with form parameters.
async fn token_form(app: &TestApp, pairs: &[(&str, &str)]) -> Response {
    post_token(app, FORM, form(pairs)).await
}

/// The password grant for `email` / `password`, as a form.
async fn password_grant_with(app: &TestApp, email: &str, password: &str) -> Response {
    token_form(
        app,
        &[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ],
    )
    .await
}

/// The refresh grant for `refresh_token`.
async fn refresh(app: &TestApp, refresh_token: &str) -> Response {
    token_form(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A successful token response.
#[derive(Debug, Clone)]
struct Pair {
    access: String,
    refresh: String,
    body: Value,
}

/// Asserts a 200 token response and returns its pair.
async fn expect_pair(res: Response) -> Pair {
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    Pair {
        access: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned(),
        body,
    }
}

/// A password grant for `user` that must succeed.
async fn grant(app: &TestApp, user: &TestUser) -> Pair {
    expect_pair(password_grant_with(app, &user.email, &user.password).await).await
}

/// Asserts an RFC 6749 §5.2 error response and returns its body.
async fn assert_oauth_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    let headers = res.headers().clone();
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    assert_eq!(headers[CACHE_CONTROL], "no-store", "RFC 6749 §5.1");
    assert_eq!(headers[PRAGMA], "no-cache", "RFC 6749 §5.1");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

/// Decodes one base64url JSON segment of a compact JWS.
fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a compact JWS");
    let raw = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&raw).expect("json")
}

/// The JOSE header of a token, unverified.
fn jose_header(token: &str) -> Value {
    segment(token, 0)
}

/// The claims of a token, unverified.
fn claims(token: &str) -> Value {
    segment(token, 1)
}

/// A request with `Authorization: Bearer`.
fn bearer(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> reqwest::RequestBuilder {
    app.bare_client()
        .request(method, app.url(path))
        .header(AUTHORIZATION, format!("Bearer {token}"))
}

/// `GET /v1/me` with a bearer token.
async fn me_bearer(app: &TestApp, token: &str) -> Response {
    bearer(app, reqwest::Method::GET, "/v1/me", token)
        .send()
        .await
        .expect("request")
}

/// Asserts a 401 that names the presented token as the reason.
async fn assert_invalid_token(res: Response) {
    let challenge = res
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

/// The caller's sessions as the bearer token sees them.
async fn sessions_bearer(app: &TestApp, token: &str) -> Vec<Value> {
    let res = bearer(app, reqwest::Method::GET, "/v1/sessions", token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["sessions"].as_array().expect("sessions").clone()
}

/// The id of the session a cookie client is on.
async fn cookie_session_id(app: &TestApp, client: &reqwest::Client) -> String {
    let res = app.get_me(client).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["session"]["id"].as_str().expect("id").to_owned()
}

fn header_str(res: &Response, name: reqwest::header::HeaderName) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

// ----------------------------------------------------- 1. password grant

#[tokio::test]
async fn password_grant_form_returns_an_uncached_bearer_token_pair() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = password_grant_with(&app, &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, CACHE_CONTROL), "no-store");
    assert_eq!(header_str(&res, PRAGMA), "no-cache");
    assert!(header_str(&res, CONTENT_TYPE).starts_with("application/json"));
    let body: Value = res.json().await.expect("json");
    assert!(body["access_token"].is_string(), "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(body["scope"].is_string(), "{body}");
    let rt = body["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(rt.len(), 43, "{rt}");
    assert_eq!(URL_SAFE_NO_PAD.decode(rt).expect("base64url").len(), 32);
}

#[tokio::test]
async fn password_grant_accepts_json() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .json(&json!({
            "grant_type": "password",
            "username": user.email,
            "password": user.password,
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(header_str(&res, CACHE_CONTROL), "no-store");
    assert_eq!(header_str(&res, PRAGMA), "no-cache");
    let pair = expect_pair(res).await;
    assert_eq!(pair.body["token_type"], "Bearer");
    assert_eq!(pair.body["expires_in"], 300);
    assert_eq!(pair.refresh.len(), 43);
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_token_parameters_are_ignored() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = token_form(
        &app,
        &[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
            ("client_id", "foo"),
        ],
    )
    .await;
    let pair = expect_pair(res).await;
    assert_eq!(pair.body["token_type"], "Bearer");
    // In JSON too, whatever the unknown member's type.
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .json(&json!({
            "grant_type": "refresh_token",
            "refresh_token": pair.refresh,
            "client_id": "foo",
            "extra": {"nested": [1, 2]},
        }))
        .send()
        .await
        .expect("request");
    expect_pair(res).await;
}

#[tokio::test]
async fn access_token_is_an_eddsa_at_jwt_signed_by_a_published_key() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    assert_eq!(pair.access.split('.').count(), 3, "compact JWS");
    let header = jose_header(&pair.access);
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let kid = header["kid"].as_str().expect("kid");
    // The library's parser agrees.
    let parsed = jsonwebtoken::decode_header(&pair.access).expect("header");
    assert_eq!(parsed.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(parsed.kid.as_deref(), Some(kid));
    let jwks: Value = app
        .bare_client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(&kid), "{kid} not in {kids:?}");
}

#[tokio::test]
async fn access_token_claims_name_user_session_audience_and_permissions() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user_with_role("support", &["tickets:read", "tickets:write"])
        .await;
    let pair = grant(&app, &user).await;
    assert_eq!(pair.body["scope"], "tickets:read tickets:write");
    let c = claims(&pair.access);
    let origin = app.origin();
    assert_eq!(c["iss"], origin.as_str(), "{c}");
    assert_eq!(c["aud"], origin.as_str(), "{c}");
    assert_eq!(c["scope"], "tickets:read tickets:write", "{c}");
    assert_eq!(c["roles"], json!(["support"]), "{c}");
    let (exp, iat) = (
        c["exp"].as_i64().expect("exp"),
        c["iat"].as_i64().expect("iat"),
    );
    assert_eq!(exp - iat, 300);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - 5..=now + 1).contains(&iat), "iat {iat}, now {now}");
    let jti = c["jti"].as_str().expect("jti");
    assert!(!jti.is_empty());

    let me: Value = me_bearer(&app, &pair.access)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(c["sub"], me["user"]["id"], "sub is the user id");
    let sessions = sessions_bearer(&app, &pair.access).await;
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{sessions:?}");
    assert_eq!(c["sid"], current[0]["id"], "sid is the session id");

    // Every token gets its own jti.
    let again = grant(&app, &user).await;
    assert_ne!(claims(&again.access)["jti"], c["jti"]);
}

// ---------------------------------------------------------- 2. errors

#[tokio::test]
async fn wrong_password_is_invalid_grant() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = password_grant_with(&app, &user.email, WRONG).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

#[tokio::test]
async fn unknown_email_gets_the_same_answer_as_a_wrong_password() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let wrong = password_grant_with(&app, &user.email, WRONG).await;
    let wrong = assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let unknown = password_grant_with(&app, &unique_email(), WRONG).await;
    let unknown = assert_oauth_error(unknown, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn unknown_grant_type_is_unsupported_grant_type() {
    let app = TestApp::spawn().await;
    for grant_type in [
        "CLIENT_CREDENTIALS",
        "AUTHORIZATION_CODE",
        "PASSWORD",
        "implicit",
        "x",
    ] {
        let res = token_form(&app, &[("grant_type", grant_type)]).await;
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    }
    // The code and client_credentials grants are supported, and need a
    // client first (tests/api/oidc.rs and client_credentials.rs have the
    // rest).
    let res = token_form(&app, &[("grant_type", "authorization_code"), ("code", "x")]).await;
    assert_oauth_error(res, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let res = token_form(&app, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(res, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn missing_parameters_are_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let cases: [&[(&str, &str)]; 5] = [
        &[("username", &user.email), ("password", &user.password)],
        &[("grant_type", "password"), ("password", &user.password)],
        &[("grant_type", "password"), ("username", &user.email)],
        &[("grant_type", "refresh_token")],
        &[],
    ];
    for pairs in cases {
        let res = token_form(&app, pairs).await;
        let body = assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(body["error_description"].is_string(), "{pairs:?}");
    }
    // JSON without a grant type, too.
    let res = post_token(&app, "application/json", r#"{"username":"a@example.com"}"#).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_parameter_sent_twice_is_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let body = format!(
        "{}&password=other",
        form(&[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
        ])
    );
    let res = post_token(&app, FORM, body).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
    let body = format!(
        "grant_type=password&{}",
        form(&[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
        ])
    );
    let res = post_token(&app, FORM, body).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn json_with_a_non_string_password_is_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    for password in [json!(12_345_678), json!(null), json!(["x"]), json!(true)] {
        let res = app
            .bare_client()
            .post(app.url("/v1/token"))
            .json(&json!({
                "grant_type": "password",
                "username": user.email,
                "password": password,
            }))
            .send()
            .await
            .expect("request");
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    for body in ["not json", "[]", r#""grant_type""#, "{"] {
        let res = post_token(&app, "application/json", body).await;
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_text_plain_body_is_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let body = form(&[
        ("grant_type", "password"),
        ("username", &user.email),
        ("password", &user.password),
    ]);
    let res = post_token(&app, "text/plain", body).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn malformed_or_unknown_refresh_tokens_are_invalid_grant() {
    let app = TestApp::spawn().await;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("rng");
    let random = URL_SAFE_NO_PAD.encode(bytes);
    assert_eq!(random.len(), 43);
    let long = "A".repeat(5000);
    for rt in [
        random.as_str(),
        "' OR 1=1 --",
        long.as_str(),
        "a",
        "%00",
        "==========================================",
    ] {
        let res = refresh(&app, rt).await;
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
}

#[tokio::test]
async fn a_token_request_over_64_kib_is_413() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let body = form(&[
        ("grant_type", "password"),
        ("username", &user.email),
        ("password", &"a".repeat(70 * 1024)),
    ]);
    let res = post_token(&app, FORM, body).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Like every error: a JSON document, never a framework's plain text.
    let ct = header_str(&res, CONTENT_TYPE);
    let text = res.text().await.expect("body");
    assert!(ct.contains("json"), "content type {ct:?}, body {text:?}");
    let _: Value = serde_json::from_str(&text).expect("a JSON error body");
}

// -------------------------------------------------------- 3. throttling

#[tokio::test]
async fn token_endpoint_shares_the_login_throttle() {
    let app = TestApp::spawn_with(|c| {
        c.login_max_failures = 3;
        c.login_window = Duration::from_secs(60);
    })
    .await;
    let user = app.create_user().await;
    for _ in 0..2 {
        let res = password_grant_with(&app, &user.email, WRONG).await;
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    let res = app.login_with(&app.bare_client(), &user.email, WRONG).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let res = password_grant_with(&app, &user.email, &user.password).await;
    let retry_after: u64 = header_str(&res, RETRY_AFTER)
        .parse()
        .expect("a 429 carries Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_oauth_error(
        res,
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
    )
    .await;

    let res = app
        .login_with(&app.bare_client(), &user.email, &user.password)
        .await;
    assert!(res.headers().contains_key(RETRY_AFTER));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

// ------------------------------------------------------- 4. bearer access

#[tokio::test]
async fn a_bearer_token_authenticates_me_as_its_user() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let res = me_bearer(&app, &pair.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    assert_eq!(me["user"]["id"], claims(&pair.access)["sub"]);
    assert_eq!(me["session"]["id"], claims(&pair.access)["sid"]);
}

#[tokio::test]
async fn bearer_sessions_lists_the_tokens_session_as_current() {
    let app = TestApp::spawn().await;
    let (user, cookie) = app.logged_in().await;
    let cookie_sid = cookie_session_id(&app, &cookie).await;
    let pair = grant(&app, &user).await;
    let sid = claims(&pair.access)["sid"].clone();
    let sessions = sessions_bearer(&app, &pair.access).await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let mine = sessions
        .iter()
        .find(|s| s["id"] == sid)
        .expect("the token's session is listed");
    assert_eq!(mine["current"], true);
    let other = sessions
        .iter()
        .find(|s| s["id"] == cookie_sid.as_str())
        .expect("the cookie session is listed");
    assert_eq!(other["current"], false);
}

#[tokio::test]
async fn bearer_logout_ends_the_session_its_access_and_refresh_tokens() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let res = bearer(&app, reqwest::Method::POST, "/v1/logout", &pair.access)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
    let res = refresh(&app, &pair.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
}

// ---------------------------------------------------------- 5. revocation

#[tokio::test]
async fn ending_a_session_revokes_its_tokens_at_once() {
    let app = TestApp::spawn().await;
    let (user, a) = app.logged_in().await;
    let b = grant(&app, &user).await;
    assert_eq!(me_bearer(&app, &b.access).await.status(), StatusCode::OK);
    let b_sid = claims(&b.access)["sid"].as_str().expect("sid").to_owned();
    let res = a
        .delete(app.url(&format!("/v1/sessions/{b_sid}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(me_bearer(&app, &b.access).await).await;
    let res = refresh(&app, &b.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // A's own session is untouched.
    assert_eq!(app.get_me(&a).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_other_sessions_revokes_their_tokens() {
    let app = TestApp::spawn().await;
    let (user, a) = app.logged_in().await;
    let b = grant(&app, &user).await;
    let c = grant(&app, &user).await;
    let res = a
        .delete(app.url("/v1/sessions?scope=others"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for pair in [&b, &c] {
        assert_invalid_token(me_bearer(&app, &pair.access).await).await;
        let res = refresh(&app, &pair.refresh).await;
        assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    assert_eq!(app.get_me(&a).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_others_by_bearer_keeps_the_tokens_own_session() {
    let app = TestApp::spawn().await;
    let (user, a) = app.logged_in().await;
    let b = grant(&app, &user).await;
    let res = bearer(
        &app,
        reqwest::Method::DELETE,
        "/v1/sessions?scope=others",
        &b.access,
    )
    .send()
    .await
    .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_bearer(&app, &b.access).await.status(), StatusCode::OK);
    assert_problem(app.get_me(&a).await, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_password_change_revokes_other_sessions_tokens() {
    let app = TestApp::spawn().await;
    let (user, a) = app.logged_in().await;
    let b = grant(&app, &user).await;
    let res = a
        .post(app.url("/v1/me/password"))
        .json(&json!({
            "current_password": user.password,
            "new_password": "an entirely new passphrase",
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(me_bearer(&app, &b.access).await).await;
    let res = refresh(&app, &b.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(app.get_me(&a).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_disabled_users_bearer_token_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    let pool = app.sql().await;
    let done = sqlx::query("UPDATE users SET disabled = 1 WHERE email = ?")
        .bind(&user.email)
        .execute(&pool)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 1);
    // The grants read the user: refused at once.
    let res = refresh(&app, &pair.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let res = password_grant_with(&app, &user.email, &user.password).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // A write behind the server's back (disabling through gatehouse also
    // ends the sessions, refused at once) reaches the bearer path when its
    // one-second principal cache lets go of what it read.
    let written = std::time::Instant::now();
    loop {
        let res = me_bearer(&app, &pair.access).await;
        if res.status() == StatusCode::UNAUTHORIZED {
            assert_invalid_token(res).await;
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            written.elapsed() < std::time::Duration::from_secs(3),
            "the disabled user's token still works 3 s later"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

// --------------------------------------------------- 6. refresh rotation

#[tokio::test]
async fn refresh_rotates_the_pair_and_spends_the_old_token() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let first = grant(&app, &user).await;
    let res = refresh(&app, &first.refresh).await;
    assert_eq!(header_str(&res, CACHE_CONTROL), "no-store");
    assert_eq!(header_str(&res, PRAGMA), "no-cache");
    let second = expect_pair(res).await;
    assert_eq!(second.body["token_type"], "Bearer");
    assert_eq!(second.body["expires_in"], 300);
    assert!(second.body["scope"].is_string());
    assert_eq!(second.refresh.len(), 43);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    // Same session, same user.
    let (c1, c2) = (claims(&first.access), claims(&second.access));
    assert_eq!(c1["sid"], c2["sid"]);
    assert_eq!(c1["sub"], c2["sub"]);
    assert_ne!(c1["jti"], c2["jti"]);
    assert_eq!(
        me_bearer(&app, &second.access).await.status(),
        StatusCode::OK
    );
    // The new refresh token works in turn.
    let third = expect_pair(refresh(&app, &second.refresh).await).await;
    assert_ne!(third.refresh, second.refresh);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_ends_the_whole_session() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let first = grant(&app, &user).await;
    let second = expect_pair(refresh(&app, &first.refresh).await).await;
    // The thief (or the victim) comes back with the spent token.
    let res = refresh(&app, &first.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // The successor dies with the session...
    let res = refresh(&app, &second.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // ...and so does every access token of it, at once.
    assert_invalid_token(me_bearer(&app, &first.access).await).await;
    assert_invalid_token(me_bearer(&app, &second.access).await).await;
    // Other sessions of the user are not affected.
    let other = grant(&app, &user).await;
    assert_eq!(
        me_bearer(&app, &other.access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_retry_within_the_grace_window_returns_the_same_successor() {
    let app = TestApp::spawn_with(|c| c.refresh_reuse_grace = Duration::from_secs(5)).await;
    let user = app.create_user().await;
    let first = grant(&app, &user).await;
    let second = expect_pair(refresh(&app, &first.refresh).await).await;
    // The client lost the response and retries with the same token.
    let retry = expect_pair(refresh(&app, &first.refresh).await).await;
    assert_eq!(retry.refresh, second.refresh, "no second successor minted");
    // The session survives: every token of it still works.
    assert_eq!(
        me_bearer(&app, &first.access).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        me_bearer(&app, &retry.access).await.status(),
        StatusCode::OK
    );
    let pool = app.sql().await;
    let sid = claims(&first.access)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE session_id = ?")
            .bind(&sid)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, 2, "the original and its one successor");
    // The successor still rotates normally afterwards.
    let third = expect_pair(refresh(&app, &second.refresh).await).await;
    assert_ne!(third.refresh, second.refresh);
    assert_eq!(
        me_bearer(&app, &third.access).await.status(),
        StatusCode::OK
    );
}

// -------------------------------------------------------- 7. concurrency

/// Presents one refresh token `n` times at once; returns each answer's
/// status and body.
async fn refresh_storm(app: &TestApp, rt: &str, n: usize) -> Vec<(StatusCode, Value)> {
    let client = app.bare_client();
    let url = app.url("/v1/token");
    let body = form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        set.spawn(async move {
            let res = client
                .post(url)
                .header(CONTENT_TYPE, FORM)
                .body(body)
                .send()
                .await
                .expect("request");
            let status = res.status();
            let body: Value = res.json().await.expect("json");
            (status, body)
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

/// With the default grace of 0 (docs/tokens.md): one request rotates the
/// token, every other one is reuse, and reuse ends the session, the new
/// pair with it.
#[tokio::test]
async fn concurrent_refreshes_mint_exactly_one_successor_and_the_reuse_ends_the_session() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    let answers = refresh_storm(&app, &pair.refresh, 10).await;
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok.len(), 1, "exactly one rotation: {answers:?}");
    for (status, body) in &answers {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "invalid_grant", "{body}");
        }
    }
    // Nine requests presented a spent token: the session is over, with the
    // pair the one rotation minted and the pair before it.
    let winner = ok[0];
    let access = winner["access_token"].as_str().expect("access token");
    let successor = winner["refresh_token"].as_str().expect("refresh token");
    assert_eq!(
        me_bearer(&app, access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_bearer(&app, &pair.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = refresh(&app, successor).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let res = refresh(&app, &pair.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    // The user is not locked out: a new grant works.
    let fresh = grant(&app, &user).await;
    assert_eq!(
        me_bearer(&app, &fresh.access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_refreshes_within_grace_share_one_successor() {
    let app = TestApp::spawn_with(|c| c.refresh_reuse_grace = Duration::from_secs(5)).await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let answers = refresh_storm(&app, &pair.refresh, 10).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let distinct: HashSet<&str> = answers
        .iter()
        .filter_map(|(_, b)| b["refresh_token"].as_str())
        .collect();
    assert_eq!(distinct.len(), 1, "{distinct:?}");
    let successor = distinct.into_iter().next().expect("one").to_owned();
    let next = expect_pair(refresh(&app, &successor).await).await;
    assert_eq!(me_bearer(&app, &next.access).await.status(), StatusCode::OK);
}

// ------------------------------------------------- 8. /v1/session/token

#[tokio::test]
async fn session_token_issues_an_access_token_for_the_cookie_session() {
    let app = TestApp::spawn().await;
    let (user, client) = app.logged_in().await;
    let sid = cookie_session_id(&app, &client).await;
    let res = client
        .post(app.url("/v1/session/token"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_str(&res, CACHE_CONTROL), "no-store");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert!(
        body.get("refresh_token").is_none(),
        "the cookie is the long-lived credential: {body}"
    );
    let at = body["access_token"].as_str().expect("access_token");
    let c = claims(at);
    assert_eq!(c["sid"], sid.as_str());
    assert_eq!(jose_header(at)["typ"], "at+jwt");
    let res = me_bearer(&app, at).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    assert_eq!(me["session"]["id"], sid.as_str());
}

#[tokio::test]
async fn session_token_without_credentials_is_401() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .post(app.url("/v1/session/token"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn session_token_with_only_a_bearer_token_is_401() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let res = bearer(
        &app,
        reqwest::Method::POST,
        "/v1/session/token",
        &pair.access,
    )
    .send()
    .await
    .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn session_token_from_a_foreign_origin_is_403() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let res = client
        .post(app.url("/v1/session/token"))
        .header(ORIGIN, "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::FORBIDDEN).await;
    // The same request from our own origin is fine.
    let res = client
        .post(app.url("/v1/session/token"))
        .header(ORIGIN, app.origin())
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
}

// ------------------------------------------------------ 9. expiry bounds

#[tokio::test]
async fn tokens_never_outlive_the_session() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.session_absolute_timeout = Duration::from_secs(3);
    })
    .await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let expires_in = pair.body["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in <= 3, "expires_in {expires_in}");
    let c = claims(&pair.access);
    let lifetime = c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat");
    assert!(lifetime <= 3, "exp - iat = {lifetime}");
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    clock.advance(Duration::from_millis(3200));
    let res = refresh(&app, &pair.refresh).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
}

#[tokio::test]
async fn an_expired_access_token_is_refused() {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.access_token_ttl = Duration::from_secs(2);
        c.jwt_leeway = Duration::ZERO;
    })
    .await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    assert_eq!(pair.body["expires_in"], 2);
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    // One second short: still good.
    clock.advance(Duration::from_secs(1));
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(1));
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
}

// ----------------------------------------------------- 10. role changes

#[tokio::test]
async fn a_role_change_reaches_tokens_at_their_next_refresh() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user_with_role("support", &["tickets:read"])
        .await;
    let cookie = app.client();
    assert_eq!(app.login(&cookie, &user).await.status(), StatusCode::OK);
    let pair = grant(&app, &user).await;
    assert_eq!(claims(&pair.access)["scope"], "tickets:read");

    let auth = gatehouse::app::build_services(&app.config, 1, app.origin())
        .await
        .expect("auth");
    auth.admin
        .set_role(
            &RoleName::parse("support").expect("role"),
            &[Permission::parse("tickets:admin").expect("permission")],
            gatehouse::auth::audit::Actor::Cli,
        )
        .await
        .expect("role set");

    // The token already issued is a signed snapshot...
    assert_eq!(claims(&pair.access)["scope"], "tickets:read");
    // ...but sessions see the change at once, whichever the credential.
    for res in [
        app.get_me(&cookie).await,
        me_bearer(&app, &pair.access).await,
    ] {
        assert_eq!(res.status(), StatusCode::OK);
        let me: Value = res.json().await.expect("json");
        assert_eq!(me["permissions"], json!(["tickets:admin"]), "{me}");
    }
    // The next refresh carries the new permissions.
    let next = expect_pair(refresh(&app, &pair.refresh).await).await;
    assert_eq!(next.body["scope"], "tickets:admin");
    let c = claims(&next.access);
    assert_eq!(c["scope"], "tickets:admin");
    assert_eq!(c["roles"], json!(["support"]));
}

// ------------------------------------------------------------- 11. JWKS

#[tokio::test]
async fn jwks_publishes_only_public_signing_keys() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let cache = header_str(&res, CACHE_CONTROL);
    assert!(cache.contains("max-age="), "{cache}");
    assert!(!cache.contains("no-store"), "{cache}");
    let body: Value = res.json().await.expect("json");
    let keys = body["keys"].as_array().expect("keys");
    // The Ed25519 access-token key, and an ID-token key of each algorithm.
    assert_eq!(keys.len(), 4, "{body}");
    let mut algs = Vec::new();
    for k in keys {
        assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()), "{k}");
        assert_eq!(k["use"], "sig", "{k}");
        let alg = k["alg"].as_str().expect("alg");
        algs.push(alg);
        match alg {
            "EdDSA" => {
                assert_eq!(k["kty"], "OKP", "{k}");
                assert_eq!(k["crv"], "Ed25519", "{k}");
                let x = k["x"].as_str().expect("x");
                assert_eq!(URL_SAFE_NO_PAD.decode(x).expect("base64url").len(), 32);
            }
            "ES256" => {
                assert_eq!(k["kty"], "EC", "{k}");
                assert_eq!(k["crv"], "P-256", "{k}");
                for c in ["x", "y"] {
                    let v = k[c].as_str().expect("coordinate");
                    assert_eq!(URL_SAFE_NO_PAD.decode(v).expect("base64url").len(), 32);
                }
            }
            "RS256" => {
                assert_eq!(k["kty"], "RSA", "{k}");
                let n = k["n"].as_str().expect("n");
                assert_eq!(URL_SAFE_NO_PAD.decode(n).expect("base64url").len(), 256);
            }
            other => panic!("unexpected alg {other}: {k}"),
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "private key published: {k}");
        }
    }
    algs.sort_unstable();
    assert_eq!(algs, ["ES256", "EdDSA", "EdDSA", "RS256"], "{body}");
    let kids: HashSet<&str> = keys.iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids.len(), keys.len(), "kids are unique");
}

#[tokio::test]
async fn an_access_token_verifies_against_the_published_jwks() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let pair = grant(&app, &user).await;
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .bare_client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("a JWK set");
    let kid = jsonwebtoken::decode_header(&pair.access)
        .expect("header")
        .kid
        .expect("kid");
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("usable key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[app.origin()]);
    validation.set_issuer(&[app.origin()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(&pair.access, &key, &validation)
        .expect("the token verifies with the published key alone");
    assert_eq!(data.claims["sid"], claims(&pair.access)["sid"]);

    // And the check is real: a tampered payload does not verify.
    let mut parts: Vec<String> = pair.access.split('.').map(str::to_owned).collect();
    let mut forged = claims(&pair.access);
    forged["scope"] = json!("gatehouse:admin");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    let forged = parts.join(".");
    assert!(jsonwebtoken::decode::<Value>(&forged, &key, &validation).is_err());
    assert_invalid_token(me_bearer(&app, &forged).await).await;
}

#[tokio::test]
async fn within_grace_a_token_whose_successor_was_used_is_reuse() {
    let app = TestApp::spawn_with(|c| c.refresh_reuse_grace = Duration::from_secs(5)).await;
    let user = app.create_user().await;
    let first = grant(&app, &user).await;
    let second = expect_pair(refresh(&app, &first.refresh).await).await;
    let third = expect_pair(refresh(&app, &second.refresh).await).await;
    // The chain has moved on twice: the first token is stale even inside the
    // grace window, and presenting it ends the session.
    assert_oauth_error(
        refresh(&app, &first.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_invalid_token(me_bearer(&app, &third.access).await).await;
    assert_oauth_error(
        refresh(&app, &third.refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn a_json_parameter_sent_twice_is_invalid_request() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let body = format!(
        r#"{{"grant_type":"password","username":"{}","password":"x","password":"{}"}}"#,
        user.email, user.password
    );
    let res = post_token(&app, "application/json", body).await;
    assert_oauth_error(res, StatusCode::BAD_REQUEST, "invalid_request").await;
}
