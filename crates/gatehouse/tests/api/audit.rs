//! The audit trail, black-box: security events recorded by real requests and
//! read back through `GET /v1/admin/audit` (filters, pages, hostile queries),
//! on SQLite, PostgreSQL and with sessions in Redis; no secret in any event.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// An admin logged in on a fresh cookie client.
async fn admin(app: &TestApp) -> Client {
    let user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    client
}

async fn audit(app: &TestApp, admin: &Client, query: &str) -> Value {
    let res = admin
        .get(app.url(&format!("/v1/admin/audit{query}")))
        .send()
        .await
        .expect("request");
    let status = res.status();
    let body = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn types(page: &Value) -> Vec<&str> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

async fn user_id(app: &TestApp, client: &Client) -> String {
    let me: Value = app.get_me(client).await.json().await.expect("json");
    me["user"]["id"].as_str().expect("id").to_owned()
}

/// A user's security story, told by real requests, read back newest first
/// with who did what, from where, on which session, and nothing secret.
async fn a_users_security_events_are_recorded_in_order(app: TestApp) {
    let admin = admin(&app).await;
    let user = app.create_user().await;
    // A wrong password, then two sessions (a cookie and a token pair).
    let wrong = app
        .login_with(&app.client(), &user.email, "not the password at all")
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let phone = app.client();
    let res = app.login(&phone, &user).await;
    let cookie = session_cookie_value(&res, app.cookie_name()).expect("cookie");
    let id = user_id(&app, &phone).await;
    let (access, refresh) = token_pair(&app, &user).await;
    // Rotate once, then replay the spent refresh token: theft.
    let rotate = |rt: String| {
        app.bare_client()
            .post(app.url("/v1/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
            .send()
    };
    assert_eq!(
        rotate(refresh.clone()).await.expect("req").status(),
        StatusCode::OK
    );
    assert_eq!(
        rotate(refresh.clone()).await.expect("req").status(),
        StatusCode::BAD_REQUEST
    );
    // A new password ends the other sessions; then logout; then an admin
    // disables the account.
    let laptop = app.client();
    assert_eq!(app.login(&laptop, &user).await.status(), StatusCode::OK);
    let new_password = "a brand new passphrase";
    let res = phone
        .post(app.url("/v1/me/password"))
        .json(&json!({"current_password": user.password, "new_password": new_password}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = phone.post(app.url("/v1/logout")).send().await.expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = admin
        .patch(app.url(&format!("/v1/admin/users/{id}")))
        .json(&json!({"disabled": true}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::OK);

    let page = audit(&app, &admin, &format!("?user={id}")).await;
    assert_eq!(
        types(&page),
        [
            "user_disabled",
            "logout",
            "session_ended",
            "password_changed",
            "login_succeeded",
            "session_ended",
            "refresh_reuse_detected",
            "login_succeeded",
            "login_succeeded",
            "login_failed",
            "user_created",
        ],
        "{page:#}"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let events = page["events"].as_array().expect("events");
    let admin_id = user_id(&app, &admin).await;
    assert_eq!(events[0]["actor"], "user");
    assert_eq!(events[0]["actor_id"], admin_id.as_str());
    assert_eq!(events[1]["actor_id"], id.as_str());
    assert_eq!(events[2]["details"]["reason"], "password_changed");
    assert_eq!(events[5]["details"]["reason"], "refresh_reuse");
    assert_eq!(events[5]["actor"], "system");
    assert_eq!(events[9]["details"]["reason"], "wrong_password");
    assert_eq!(events[9]["actor"], "anonymous");
    assert_eq!(events[9]["ip"], "127.0.0.1");
    assert_eq!(events[10]["actor"], "user", "a public registration");
    for e in events {
        assert_eq!(e["user_id"], id.as_str());
        let at = e["at"].as_str().expect("at");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        uuid::Uuid::parse_str(e["id"].as_str().expect("id")).expect("uuid");
    }
    // The logout names the session it ended: the phone's.
    let phone_session = events[1]["session_id"].as_str().expect("session id");
    assert_eq!(events[8]["session_id"], phone_session);
    // No secret anywhere in the trail: not the passwords, the cookie, the
    // access token or either refresh token.
    let whole = audit(&app, &admin, "?limit=200").await.to_string();
    for secret in [
        user.password.as_str(),
        new_password,
        "not the password at all",
        &cookie,
        &access,
        &refresh,
    ] {
        assert!(!whole.contains(secret), "a secret leaked into the trail");
    }
}

#[tokio::test]
async fn security_events_are_recorded_on_sqlite() {
    a_users_security_events_are_recorded_in_order(TestApp::spawn().await).await;
}

#[tokio::test]
async fn security_events_are_recorded_on_postgres() {
    let _slot = PG_SLOTS.acquire().await.expect("semaphore");
    a_users_security_events_are_recorded_in_order(TestApp::spawn_on_postgres(|_| {}).await).await;
}

#[tokio::test]
async fn security_events_are_recorded_with_sessions_in_redis() {
    let _slot = PG_SLOTS.acquire().await.expect("semaphore");
    a_users_security_events_are_recorded_in_order(TestApp::spawn_on_redis(|_| {}).await).await;
}

#[tokio::test]
async fn a_guessing_run_records_each_failure_and_the_throttle_once() {
    let app = TestApp::spawn_with(|c| c.login_max_failures = 3).await;
    let admin = admin(&app).await;
    let user = app.create_user().await;
    let guesser = app.client();
    for _ in 0..3 {
        let res = app
            .login_with(&guesser, &user.email, "wrong guess 1234")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    for _ in 0..5 {
        let res = app
            .login_with(&guesser, &user.email, "wrong guess 1234")
            .await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // An unknown account: recorded without the email typed.
    let stranger = "nobody-here@example.com";
    let res = app.login_with(&guesser, stranger, "whatever it is").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let page = audit(&app, &admin, "?type=login_throttled").await;
    assert_eq!(types(&page), ["login_throttled"], "{page:#}");
    assert_eq!(page["events"][0]["ip"], "127.0.0.1");
    assert!(page["events"][0]["user_id"].is_string());
    let page = audit(&app, &admin, "?type=login_failed").await;
    assert_eq!(types(&page).len(), 4);
    assert_eq!(page["events"][0]["user_id"], Value::Null);
    assert_eq!(page["events"][0]["details"]["reason"], "unknown_account");
    assert!(!page.to_string().contains(stranger));
}

#[tokio::test]
async fn pages_follow_the_cursor_without_repeats_or_gaps() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    for _ in 0..4 {
        let (_, c) = app.logged_in().await;
        let res = c.post(app.url("/v1/logout")).send().await.expect("req");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    let all = audit(&app, &admin, "?type=logout").await;
    assert_eq!(types(&all).len(), 4);
    let mut seen = Vec::new();
    let mut query = "?type=logout&limit=3".to_owned();
    loop {
        let page = audit(&app, &admin, &query).await;
        seen.extend(page["events"].as_array().expect("events").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?type=logout&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(Value::Array(seen), all["events"]);
    // Empty parameters are as good as absent.
    let res = audit(&app, &admin, "?user=&type=&cursor=").await;
    assert!(types(&res).len() > 4);
}

#[tokio::test]
async fn operator_actions_name_their_actor() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let kid = app
        .auth
        .admin
        .rotate_signing_key(gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("rotate");
    let res = admin
        .put(app.url("/v1/admin/roles/support"))
        .json(&json!({"permissions": ["tickets:read"]}))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::OK);
    let page = audit(&app, &admin, "?type=key_rotated").await;
    assert_eq!(page["events"][0]["actor"], "cli");
    assert_eq!(page["events"][0]["actor_id"], Value::Null);
    assert_eq!(page["events"][0]["details"]["kid"], kid.as_str());
    assert_eq!(page["events"][0]["details"]["alg"], "EdDSA");
    assert_eq!(page["events"][0]["details"]["purpose"], "access");
    let page = audit(&app, &admin, "?type=role_changed").await;
    let newest = &page["events"][0];
    assert_eq!(newest["actor"], "user");
    assert_eq!(newest["details"]["role"], "support");
    assert_eq!(newest["details"]["permissions"], json!(["tickets:read"]));
}

#[tokio::test]
async fn rotating_the_id_token_keys_records_each_new_key() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;

    let kids = app
        .auth
        .admin
        .rotate_id_token_keys(gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("rotate");

    let page = audit(&app, &admin, "?type=key_rotated").await;
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{page}");
    let mut recorded: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["actor"], "cli", "{e}");
            assert_eq!(e["details"]["purpose"], "id_token", "{e}");
            (
                e["details"]["alg"].as_str().expect("alg").to_owned(),
                e["details"]["kid"].as_str().expect("kid").to_owned(),
            )
        })
        .collect();
    recorded.sort();
    let mut expected: Vec<(String, String)> = ["RS256", "ES256", "EdDSA"]
        .into_iter()
        .map(str::to_owned)
        .zip(kids)
        .collect();
    expected.sort();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn the_trail_is_for_admins_only() {
    let app = TestApp::spawn().await;
    let res = app
        .bare_client()
        .get(app.url("/v1/admin/audit"))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let (_, user) = app.logged_in().await;
    let res = user
        .get(app.url("/v1/admin/audit"))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let forged = app
        .bare_client()
        .get(app.url("/v1/admin/audit"))
        .bearer_auth("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
        .send()
        .await
        .expect("req");
    assert_problem(forged, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn hostile_queries_are_refused_with_400() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let before = audit(&app, &admin, "?limit=200").await;
    let long = "x".repeat(10_000);
    for query in [
        "?user=not-a-uuid".to_owned(),
        "?user=' OR 1=1 --".to_owned(),
        "?type=login".to_owned(),
        "?type=login_failed' OR '1'='1".to_owned(),
        "?type=LOGIN_FAILED".to_owned(),
        "?cursor=AAAA".to_owned(),
        "?cursor=%00%01".to_owned(),
        "?limit=0".to_owned(),
        "?limit=201".to_owned(),
        "?limit=-1".to_owned(),
        "?limit=ten".to_owned(),
        "?since=yesterday".to_owned(),
        format!("?type={long}"),
        format!("?{long}=1"),
    ] {
        let res = admin
            .get(app.url(&format!("/v1/admin/audit{query}")))
            .send()
            .await
            .expect("req");
        let problem = assert_problem(res, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"].as_str().expect("detail").len() < 200,
            "the detail echoes at most a little of the input: {query}"
        );
    }
    let after = audit(&app, &admin, "?limit=200").await;
    assert_eq!(before, after, "a refused query records and changes nothing");
}

#[tokio::test]
async fn a_trail_that_cannot_be_written_neither_blocks_nor_hides_the_action() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    // The trail's table is gone: every append fails from now on.
    sqlx::query("DROP TABLE audit_events")
        .execute(&app.sql().await)
        .await
        .expect("drop");
    let client = app.client();
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::OK, "the login itself stands");
    let res = client
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_me(&client).await.status(),
        StatusCode::UNAUTHORIZED,
        "the logout took effect"
    );
    let text = app
        .bare_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("body");
    assert!(
        text.lines()
            .any(|l| l == "gatehouse_audit_write_failures_total 2"),
        "both lost events are counted:\n{text}"
    );
}
