//! Resource servers and the revocation feed (`/v1/admin/resource-servers`,
//! `GET /v1/revocations`): who may follow it, what it says, and how fast a
//! waiting request hears of an ending, on every backend.

use std::time::{Duration, Instant};

use gatehouse::Config;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use serde_json::{Value, json};

use crate::helpers::*;

/// An admin of `app`: a client logged in with a `gatehouse:admin` cookie.
async fn admin(app: &TestApp) -> reqwest::Client {
    let user = app
        .create_user_with_role("feed-admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    client
}

/// Creates a resource server through the admin API; returns (id, key).
async fn resource_server(app: &TestApp, admin: &reqwest::Client, name: &str) -> (String, String) {
    let res = admin
        .post(app.url("/v1/admin/resource-servers"))
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "the key is a secret"
    );
    let body: Value = res.json().await.expect("json");
    (
        body["resource_server"]["id"]
            .as_str()
            .expect("id")
            .to_owned(),
        body["key"].as_str().expect("key").to_owned(),
    )
}

/// `GET /v1/revocations` with a key and a raw query.
async fn feed_raw(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.bare_client()
        .get(app.url(&format!("/v1/revocations{query}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
}

/// A feed answer that must be 200: (sids, cursor).
async fn feed(app: &TestApp, key: &str, query: &str) -> (Vec<String>, String, Value) {
    let res = feed_raw(app, key, query).await;
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    let sids = body["revocations"]
        .as_array()
        .expect("revocations")
        .iter()
        .map(|r| r["sid"].as_str().expect("sid").to_owned())
        .collect();
    let cursor = body["cursor"].as_str().expect("cursor").to_owned();
    (sids, cursor, body)
}

/// A password grant; returns (access token, its session id).
async fn token_session(app: &TestApp, user: &TestUser) -> (String, String) {
    let (token, _) = token_pair(app, user).await;
    let sid = app
        .auth
        .bearer
        .verify_access_token(&token)
        .expect("a fresh token")
        .holder
        .revocation_key()
        .to_string();
    (token, sid)
}

async fn logout(app: &TestApp, token: &str) {
    let res = app
        .bare_client()
        .post(app.url("/v1/logout"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn admins_create_list_and_delete_resource_servers() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let (id, key) = resource_server(&app, &admin, "orders-api").await;
    assert!(key.starts_with("ghrs_"), "{key}");
    assert_eq!(key.len(), 5 + 43, "{key}");

    let res = admin
        .get(app.url("/v1/admin/resource-servers"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("body");
    assert!(
        !text.contains(&key[5..]),
        "the key is never shown again: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["resource_servers"][0]["id"], id.as_str());
    assert_eq!(body["resource_servers"][0]["name"], "orders-api");
    assert!(body["resource_servers"][0]["created_at"].is_string());

    // The key works; a second server with the same name does not exist.
    feed(&app, &key, "").await;
    let res = admin
        .post(app.url("/v1/admin/resource-servers"))
        .json(&json!({ "name": "orders-api" }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::CONFLICT).await;

    let res = admin
        .delete(app.url(&format!("/v1/admin/resource-servers/{id}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Deleted: the key stops working at once.
    assert_problem(feed_raw(&app, &key, "").await, StatusCode::UNAUTHORIZED).await;
    for gone in [
        id.as_str(),
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let res = admin
            .delete(app.url(&format!("/v1/admin/resource-servers/{gone}")))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn resource_server_admin_refuses_bad_input_and_non_admins() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    for name in [
        json!(""),
        json!("a".repeat(65)),
        json!("has space"),
        json!("x'; DROP TABLE resource_servers; --"),
        json!("naïve"),
    ] {
        let res = admin
            .post(app.url("/v1/admin/resource-servers"))
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request");
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "name", "{body}");
    }
    for body in [
        json!({ "name": 7 }),
        json!({}),
        json!({ "name": "ok", "key": "ghrs_chosen" }),
        json!(["ok"]),
    ] {
        let res = admin
            .post(app.url("/v1/admin/resource-servers"))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let res = admin
        .post(app.url("/v1/admin/resource-servers"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"name": "{}"}}"#, "a".repeat(70 * 1024)))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Nothing was created by any of it.
    let res = admin
        .get(app.url("/v1/admin/resource-servers"))
        .send()
        .await
        .expect("request");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["resource_servers"], json!([]));

    let (_, user) = app.logged_in().await;
    let res = user
        .post(app.url("/v1/admin/resource-servers"))
        .json(&json!({ "name": "sneaky" }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app
        .bare_client()
        .get(app.url("/v1/admin/resource-servers"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn the_feed_takes_only_a_resource_server_key() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let (_, key) = resource_server(&app, &admin, "billing").await;
    let user = app.create_user().await;
    let (access, _) = token_session(&app, &user).await;

    // No credentials: a plain challenge.
    let res = app
        .bare_client()
        .get(app.url("/v1/revocations"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="gatehouse""#)
    );
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    // A user's session cookie is not a resource server's credential.
    let res = admin
        .get(app.url("/v1/revocations"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;

    let forged = format!("ghrs_{}", "A".repeat(43));
    let flipped = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('A') { "B" } else { "A" }
    );
    for bad in [
        access.as_str(),
        forged.as_str(),
        flipped.as_str(),
        &key[5..],
        "ghrs_",
        "ghrs_' OR 1=1 --",
        &format!("{key}x"),
        &"ghrs_".repeat(2000),
    ] {
        let res = feed_raw(&app, bad, "").await;
        assert_eq!(
            res.headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some(r#"Bearer realm="gatehouse", error="invalid_token""#),
            "{bad:.40}"
        );
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
    for scheme in [
        format!("Basic {key}"),
        format!("Token {key}"),
        "Bearer".into(),
    ] {
        let res = app
            .bare_client()
            .get(app.url("/v1/revocations"))
            .header("authorization", scheme)
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
    // The right key still works after all that.
    feed(&app, &key, "").await;
}

#[tokio::test]
async fn the_feed_refuses_malformed_queries() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let (_, key) = resource_server(&app, &admin, "search").await;
    let (_, cursor, _) = feed(&app, &key, "").await;
    for query in [
        "?since=garbage".to_owned(),
        "?since=".to_owned(),
        "?since=ABC.1".to_owned(),
        "?since=abc.-1".to_owned(),
        "?since=abc.1%27%20OR%20%271%27%3D%271".to_owned(),
        format!("?since={}", "a".repeat(5000)),
        "?wait=31".to_owned(),
        "?wait=-1".to_owned(),
        "?wait=1.5".to_owned(),
        "?wait=soon".to_owned(),
        format!("?since={cursor}&since={cursor}"),
        "?wait=1&wait=2".to_owned(),
        "?cursor=1".to_owned(),
    ] {
        let res = feed_raw(&app, &key, &query).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    feed(&app, &key, &format!("?since={cursor}&wait=0")).await;
}

/// The feed's journey on one backend: ended sessions are listed, a cursor
/// resumes after them, a waiting request answers as soon as a session
/// ends, and a foreign cursor starts over.
async fn feed_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let key = app
        .auth
        .feed
        .create_resource_server("journey", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("created")
        .key
        .key();
    let user = app.create_user().await;
    let (first, first_sid) = token_session(&app, &user).await;
    let (second, second_sid) = token_session(&app, &user).await;
    let (_, _) = token_session(&app, &user).await;

    let (sids, start, _) = feed(&app, &key, "").await;
    assert!(sids.is_empty(), "{sids:?}");

    logout(&app, &first).await;
    let (sids, cursor, body) = feed(&app, &key, &format!("?since={start}")).await;
    assert_eq!(sids, std::slice::from_ref(&first_sid));
    // Refused until its last token can have expired: 5 minutes plus the
    // 30 s leeway from now.
    let until = time::OffsetDateTime::parse(
        body["revocations"][0]["until"].as_str().expect("until"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let ahead = until - time::OffsetDateTime::now_utc();
    assert!(
        ahead > time::Duration::seconds(320) && ahead <= time::Duration::seconds(330),
        "{ahead}"
    );
    // From the start, and after the cursor.
    let (all, _, _) = feed(&app, &key, "").await;
    assert_eq!(all, std::slice::from_ref(&first_sid));
    let (none, same, _) = feed(&app, &key, &format!("?since={cursor}")).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(same, cursor);

    // A waiting request hears of the next ending at once.
    let waiting = {
        let url = app.url(&format!("/v1/revocations?since={cursor}&wait=20"));
        let client = app.bare_client();
        let key = key.clone();
        tokio::spawn(async move {
            let res = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("request");
            let status = res.status();
            (
                status,
                Instant::now(),
                res.json::<Value>().await.expect("json"),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the request waits while nothing ends"
    );
    logout(&app, &second).await;
    let ended = Instant::now();
    let (status, answered, body) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting request answers")
        .expect("the task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revocations"][0]["sid"], second_sid.as_str(), "{body}");
    assert_eq!(body["revocations"].as_array().map(Vec::len), Some(1));
    eprintln!(
        "revocation feed: a waiting request answered {:?} after the logout returned",
        answered.saturating_duration_since(ended)
    );

    // Nothing new: a short wait answers empty, with the cursor unchanged.
    let cursor = body["cursor"].as_str().expect("cursor").to_owned();
    let began = Instant::now();
    let (none, same, _) = feed(&app, &key, &format!("?since={cursor}&wait=1")).await;
    assert!(none.is_empty() && same == cursor, "{none:?} {same}");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );

    // A cursor of another numbering, or beyond the end, starts over.
    for foreign in ["0123456789abcdef.1".to_owned(), format!("{}9999", &cursor)] {
        let (mut again, _, _) = feed(&app, &key, &format!("?since={foreign}")).await;
        again.sort();
        let mut both = vec![first_sid.clone(), second_sid.clone()];
        both.sort();
        assert_eq!(again, both, "{foreign}");
    }
}

#[tokio::test]
async fn sqlite_feed_journey() {
    feed_journey(|c| TestApp::spawn_with(c)).await;
}

#[tokio::test]
async fn postgres_feed_journey() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    feed_journey(|c| TestApp::spawn_on_postgres(c)).await;
}

#[tokio::test]
async fn redis_feed_journey() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    feed_journey(|c| TestApp::spawn_on_redis(c)).await;
}

/// Two nodes: a resource server waiting on node A hears of a logout on
/// node B, through Redis at once, through PostgreSQL alone within the 2 s
/// re-read.
async fn feed_across_nodes(with_redis: bool) {
    let _slot = PG_SLOTS
        .acquire_many(2)
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| {
        c.database_url = gatehouse::config::DatabaseUrl::Postgres(pg.url().into());
        c.issuer = Some("http://gatehouse.test".into());
        if with_redis {
            c.redis_url = Some(REDIS_URL.to_owned().into());
            c.redis_key_prefix = redis.prefix.clone();
        }
    };
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    if with_redis {
        following(&a).await;
        following(&b).await;
    }
    let key = a
        .auth
        .feed
        .create_resource_server("across", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("created")
        .key
        .key();
    let user = a.create_user().await;
    let (token, sid) = token_session(&b, &user).await;
    let (_, cursor, _) = feed(&a, &key, "").await;
    let waiting = {
        let url = a.url(&format!("/v1/revocations?since={cursor}&wait=20"));
        let client = a.bare_client();
        tokio::spawn(async move {
            let res = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("request");
            (Instant::now(), res.json::<Value>().await.expect("json"))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    logout(&b, &token).await;
    let ended = Instant::now();
    let (answered, body) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting request answers")
        .expect("the task");
    assert_eq!(body["revocations"][0]["sid"], sid.as_str(), "{body}");
    let took = answered.saturating_duration_since(ended);
    eprintln!(
        "revocation feed across nodes ({}): answered {took:?} after the logout on the other node",
        if with_redis { "redis" } else { "postgres" }
    );
    let bound = if with_redis {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(2500)
    };
    assert!(took <= bound, "{took:?}");
}

#[tokio::test]
async fn redis_a_waiting_feed_hears_of_a_logout_on_another_node_at_once() {
    feed_across_nodes(true).await;
}

#[tokio::test]
async fn postgres_a_waiting_feed_hears_of_a_logout_on_another_node_within_the_reload() {
    feed_across_nodes(false).await;
}
