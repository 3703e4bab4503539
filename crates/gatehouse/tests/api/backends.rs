//! The same HTTP journeys on every SQL backend: each scenario is written
//! once and run on a fresh SQLite file and on a fresh PostgreSQL database.

use std::time::Duration;

use gatehouse::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Generates a `sqlite_`, a `postgres_` and a `redis_` (PostgreSQL with
/// sessions in Redis) test for each scenario.
macro_rules! on_every_backend {
    ($($scenario:ident => $sqlite:ident, $postgres:ident, $redis:ident;)+) => {$(
        #[tokio::test]
        async fn $sqlite() {
            $scenario(|c| TestApp::spawn_with(c)).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            $scenario(|c| TestApp::spawn_on_postgres(c)).await;
        }

        #[tokio::test]
        async fn $redis() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            $scenario(|c| TestApp::spawn_on_redis(c)).await;
        }
    )+};
}

on_every_backend! {
    cookie_session_journey => sqlite_cookie_session_journey, postgres_cookie_session_journey, redis_cookie_session_journey;
    token_journey => sqlite_token_journey, postgres_token_journey, redis_token_journey;
    throttling_journey => sqlite_throttling_journey, postgres_throttling_journey, redis_throttling_journey;
    admin_journey => sqlite_admin_journey, postgres_admin_journey, redis_admin_journey;
    password_change_journey => sqlite_password_change_journey, postgres_password_change_journey, redis_password_change_journey;
    session_limit_journey => sqlite_session_limit_journey, postgres_session_limit_journey, redis_session_limit_journey;
}

/// What the nodes of one deployment share: the PostgreSQL database, the
/// Redis key prefix, and the issuer (so that each node's tokens are the
/// others').
fn nodes_of_one_deployment(c: &mut Config, pg: &PgDatabase, redis: &RedisPrefix) {
    c.database_url = gatehouse::config::DatabaseUrl::Postgres(pg.url().into());
    c.redis_url = Some(REDIS_URL.to_owned().into());
    c.redis_key_prefix = redis.prefix.clone();
    c.issuer = Some("http://gatehouse.test".into());
}

#[tokio::test]
async fn redis_fans_a_logout_out_to_every_nodes_revocation_set_within_a_second() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| nodes_of_one_deployment(c, &pg, &redis);
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    // Both nodes follow the feed before anything is published.
    following(&a).await;
    following(&b).await;
    let user = a.create_user().await;
    let (access, _) = token_pair(&a, &user).await;
    let verified = a
        .auth
        .bearer
        .verify_access_token(&access)
        .expect("a fresh token");
    assert_eq!(me_with_bearer(&b, &access).await, StatusCode::OK);

    let res = b
        .bare_client()
        .post(b.url("/v1/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let ended = std::time::Instant::now();
    // Node A learns of it through pub/sub: its store-free check refuses the
    // token without reading any store.
    while !a
        .auth
        .revocations
        .is_revoked(verified.holder.revocation_key())
    {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "node A did not hear of the logout on node B within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("revocation reached the other node in {:?}", ended.elapsed());
    assert_eq!(
        a.auth.bearer.verify_access_token(&access).err(),
        Some(gatehouse::auth::tokens::TokenError::Revoked)
    );
    assert_eq!(me_with_bearer(&a, &access).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_node_loads_revocations_it_missed_when_it_connects() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| nodes_of_one_deployment(c, &pg, &redis);
    let a = TestApp::spawn_with(shared).await;
    let user = a.create_user().await;
    let (access, _) = token_pair(&a, &user).await;
    let sid = a
        .auth
        .bearer
        .verify_access_token(&access)
        .expect("fresh")
        .holder
        .revocation_key();
    let res = a
        .bare_client()
        .post(a.url("/v1/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A node that was not listening when it happened (it starts now)...
    let late = TestApp::spawn_with(shared).await;
    let started = std::time::Instant::now();
    while !late.auth.revocations.is_revoked(sid) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a starting node must load the revocations in force"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn readiness_reports_redis_and_the_revocation_feed() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    let started = std::time::Instant::now();
    loop {
        let res = app
            .client()
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["status"], "ready", "{body}");
        assert_eq!(body["checks"]["database"], "ok", "{body}");
        assert_eq!(body["checks"]["redis"], "ok", "{body}");
        if body["checks"]["revocation_feed"] == "connected" {
            break;
        }
        assert_eq!(body["checks"]["revocation_feed"], "disconnected", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the revocation feed did not connect: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Without Redis there is no feed to report.
    let plain = TestApp::spawn().await;
    let body: Value = plain
        .client()
        .get(plain.url("/readyz"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok"}})
    );
}

#[tokio::test]
async fn redis_session_cache_answers_repeated_cookie_requests() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    following(&app).await;
    let (_, client) = app.logged_in().await;
    let shared = app.auth.session_cache.clone().expect("sessions in Redis");
    let before = shared.stats();
    for _ in 0..10 {
        assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    }
    let after = shared.stats();
    // The login cached the new session: the first request finds it there
    // (the principal cache in front, which the cookie path shares with the
    // bearer path, answers the others while its read is fresh), and none
    // goes to Redis.
    let hits = after.hits - before.hits;
    assert!((1..=10).contains(&hits), "{before:?} -> {after:?}");
    assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");
    assert!(after.entries >= 1);
    // Logout forgets it, and the cookie is refused.
    let res = client
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(shared.stats().entries, 0);
}

#[tokio::test]
async fn redis_session_cache_ttl_zero_reads_redis_every_time() {
    let app = TestApp::spawn_on_redis(|c| c.session_cache_ttl = Duration::ZERO).await;
    following(&app).await;
    let (_, client) = app.logged_in().await;
    let shared = app.auth.session_cache.clone().expect("sessions in Redis");
    let before = shared.stats();
    for _ in 0..5 {
        assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    }
    let after = shared.stats();
    assert_eq!(after.hits, before.hits, "{before:?} -> {after:?}");
    assert_eq!(after.misses - before.misses, 5, "{before:?} -> {after:?}");
}

/// A node's cached record holds the `last_seen_at` it read; another node
/// may have recorded later uses since. A record that looks idle-expired
/// must be read again, not taken for expired (which would end a session
/// in use).
#[tokio::test]
async fn a_cached_record_that_looks_idle_is_read_again_not_ended() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| {
        nodes_of_one_deployment(c, &pg, &redis);
        // Uses are recorded every 0.2 s; the cache answers for 10 s.
        c.session_idle_timeout = Duration::from_secs(2);
    };
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    following(&a).await;
    following(&b).await;
    let user = a.create_user().await;
    let res = a.login(&a.bare_client(), &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie_value(&res, a.cookie_name()).expect("a session cookie");
    let me = |app: &TestApp| {
        app.bare_client()
            .get(app.url("/v1/me"))
            .header("cookie", format!("{}={cookie}", app.cookie_name()))
            .send()
    };
    // A caches the record (last seen at login); B records uses.
    assert_eq!(me(&a).await.expect("request").status(), StatusCode::OK);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(me(&b).await.expect("request").status(), StatusCode::OK);
    }
    // 2.4 s after A's read: idle by A's copy, alive in Redis.
    assert_eq!(
        me(&a).await.expect("request").status(),
        StatusCode::OK,
        "node A must not take its stale copy for an idle session"
    );
    assert_eq!(me(&b).await.expect("request").status(), StatusCode::OK);
}

/// Nodes cache what they read of a caller for up to a second (the principal
/// cache, cookie and bearer alike). A change to users or roles made through
/// one node is announced on the revocation channel, and every node retires
/// what it cached at once: the callers of another node see the change by
/// their next request, not a second later.
#[tokio::test]
async fn a_role_change_through_one_node_reaches_every_nodes_cached_callers_at_once() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| nodes_of_one_deployment(c, &pg, &redis);
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    following(&a).await;
    following(&b).await;
    let admin = a.create_user_with_role("admin", &["gatehouse:admin"]).await;
    let admin_client = a.client();
    assert_eq!(
        a.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let holder = b.create_user_with_role("editor", &["docs:read"]).await;
    let cookie = b.client();
    assert_eq!(b.login(&cookie, &holder).await.status(), StatusCode::OK);
    let access = b
        .bare_client()
        .post(b.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", holder.email.as_str()),
            ("password", holder.password.as_str()),
        ])
        .send()
        .await
        .expect("POST /v1/token")
        .json::<Value>()
        .await
        .expect("JSON")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let permissions_on_b = || async {
        let by_cookie: Value = b.get_me(&cookie).await.json().await.expect("JSON");
        let by_token: Value = b
            .bare_client()
            .get(b.url("/v1/me"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("GET /v1/me")
            .json()
            .await
            .expect("JSON");
        (
            by_cookie["permissions"].clone(),
            by_token["permissions"].clone(),
        )
    };
    // B now holds what it read for both sessions, fresh for a second.
    let old = json!(["docs:read"]);
    assert_eq!(permissions_on_b().await, (old.clone(), old));

    let res = admin_client
        .put(a.url("/v1/admin/roles/editor"))
        .json(&json!({ "permissions": ["docs:read", "docs:write"] }))
        .send()
        .await
        .expect("PUT /v1/admin/roles/editor");
    assert_eq!(res.status(), StatusCode::OK);
    let changed = std::time::Instant::now();
    let new = json!(["docs:read", "docs:write"]);
    // The announcement takes about a millisecond; the cache alone would
    // keep the old permissions for most of a second.
    while permissions_on_b().await != (new.clone(), new.clone()) {
        assert!(
            changed.elapsed() < Duration::from_millis(300),
            "node B still answers the old permissions {:?} after a change on node A",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.bare_client()
        .post(app.url("/v1/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
        .send()
        .await
        .expect("request")
}

async fn me_with_bearer(app: &TestApp, token: &str) -> StatusCode {
    app.bare_client()
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

async fn cookie_session_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let user = app.create_user().await;
    assert_eq!(
        app.register(&user.email.to_uppercase(), PASSWORD)
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let laptop = app.client();
    let phone = app.client();
    assert_eq!(app.login(&laptop, &user).await.status(), StatusCode::OK);
    assert_eq!(app.login(&phone, &user).await.status(), StatusCode::OK);
    let me: Value = app.get_me(&laptop).await.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    assert_eq!(app.sessions(&laptop).await.len(), 2);
    let res = laptop
        .delete(app.url("/v1/sessions?scope=others"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    let res = laptop
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&laptop).await.status(), StatusCode::UNAUTHORIZED);
}

async fn token_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let user = app.create_user().await;
    let (access, refresh_token) = token_pair(&app, &user).await;
    assert_eq!(me_with_bearer(&app, &access).await, StatusCode::OK);
    let res = refresh(&app, &refresh_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let next: Value = res.json().await.expect("json");
    let next_access = next["access_token"].as_str().expect("access");
    assert_eq!(me_with_bearer(&app, next_access).await, StatusCode::OK);
    // Reuse of the spent token ends the session: every token of it dies.
    assert_eq!(
        refresh(&app, &refresh_token).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        me_with_bearer(&app, next_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_bearer(&app, &access).await,
        StatusCode::UNAUTHORIZED
    );
    let successor = next["refresh_token"].as_str().expect("refresh");
    assert_eq!(
        refresh(&app, successor).await.status(),
        StatusCode::BAD_REQUEST
    );
}

async fn throttling_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|c| {
        c.login_max_failures = 2;
        c.login_window = Duration::from_secs(60);
    }))
    .await;
    let user = app.create_user().await;
    let client = app.client();
    for _ in 0..2 {
        let res = app
            .login_with(&client, &user.email, "wrong password here")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
}

async fn admin_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let admin = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let admin_client = app.client();
    assert_eq!(
        app.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let (user, user_client) = app.logged_in().await;
    let (access, _) = token_pair(&app, &user).await;
    let id = app
        .get_me(&user_client)
        .await
        .json::<Value>()
        .await
        .expect("json")["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page: Value = admin_client
        .get(app.url("/v1/admin/users?limit=1"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(page["users"].as_array().expect("users").len(), 1);
    assert!(page["next_cursor"].is_string());
    let res = admin_client
        .patch(app.url(&format!("/v1/admin/users/{id}")))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        app.get_me(&user_client).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_with_bearer(&app, &access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn password_change_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|_| {})).await;
    let (user, here) = app.logged_in().await;
    let (other_access, _) = token_pair(&app, &user).await;
    let res = here
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": user.password, "new_password": "another long passphrase" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&here).await.status(), StatusCode::OK);
    assert_eq!(
        me_with_bearer(&app, &other_access).await,
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .login_with(&app.client(), &user.email, "another long passphrase")
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn sqlite_database_and_its_wal_and_shm_are_for_the_owner_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = TestApp::spawn().await;
    // A write, so that the write-ahead log and its index exist.
    app.logged_in().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = app.db_path.clone().into_os_string();
        path.push(suffix);
        let meta =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.to_string_lossy()));
        assert_eq!(
            format!("{:o}", meta.permissions().mode() & 0o777),
            "600",
            "{}: the database holds password hashes and signing keys",
            path.to_string_lossy()
        );
    }
}

/// `POST /v1/session/token` with the client's cookie: the access token of
/// its session.
async fn session_token(app: &TestApp, client: &reqwest::Client) -> String {
    let res = client
        .post(app.url("/v1/session/token"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["access_token"].as_str().expect("access").to_owned()
}

/// The reasons of the `session_ended` events about `user`, oldest first.
async fn endings(app: &TestApp, user: &TestUser) -> Vec<String> {
    let id = app
        .auth
        .admin
        .user_by_email(&user.email)
        .await
        .expect("store")
        .expect("user")
        .id;
    let page = app
        .auth
        .audit
        .events(
            Some(id),
            Some(gatehouse::auth::audit::EventType::SessionEnded),
            None,
            200,
        )
        .await
        .expect("read");
    let mut reasons: Vec<String> = page
        .events
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    reasons.reverse();
    reasons
}

async fn session_limit_journey<F, Fut>(spawn: F)
where
    F: FnOnce(Box<dyn FnOnce(&mut Config) + Send>) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let app = spawn(Box::new(|c| c.max_sessions_per_user = 3)).await;
    let user = app.create_user().await;
    // Three sessions, one through each way in: a cookie login (with an
    // access token of its session), the password grant, the hosted page.
    let first = app.client();
    assert_eq!(app.login(&first, &user).await.status(), StatusCode::OK);
    let first_access = session_token(&app, &first).await;
    let (second_access, second_refresh) = token_pair(&app, &user).await;
    let third = app.client();
    let res = third
        .post(app.url("/login"))
        .header(reqwest::header::ORIGIN, app.origin())
        .form(&[("email", user.email.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.sessions(&third).await.len(), 3);
    assert_eq!(me_with_bearer(&app, &first_access).await, StatusCode::OK);

    // A fourth ends the oldest, its cookie and its access token at once.
    let fourth = app.client();
    assert_eq!(app.login(&fourth, &user).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&first).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        me_with_bearer(&app, &first_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.sessions(&fourth).await.len(), 3);
    assert_eq!(me_with_bearer(&app, &second_access).await, StatusCode::OK);
    assert_eq!(app.get_me(&third).await.status(), StatusCode::OK);

    // A fifth (a grant this time) ends the next oldest: the grant's
    // session, whose refresh token dies with it.
    let (fifth_access, _) = token_pair(&app, &user).await;
    assert_eq!(
        me_with_bearer(&app, &second_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &second_refresh).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(me_with_bearer(&app, &fifth_access).await, StatusCode::OK);
    assert_eq!(app.get_me(&third).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&fourth).await.status(), StatusCode::OK);
    assert_eq!(
        endings(&app, &user).await,
        ["session_limit", "session_limit"]
    );
    // Another user's sessions are their own.
    let (_, other) = app.logged_in().await;
    assert_eq!(app.get_me(&other).await.status(), StatusCode::OK);
    assert_eq!(app.sessions(&fourth).await.len(), 3);
}

#[tokio::test]
async fn redis_a_session_ended_by_the_limit_is_refused_on_every_node() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    let shared = |c: &mut Config| {
        nodes_of_one_deployment(c, &pg, &redis);
        c.max_sessions_per_user = 2;
    };
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    following(&a).await;
    following(&b).await;
    let user = a.create_user().await;
    // The oldest session lives on node A, and A has its record cached.
    let (access, _) = token_pair(&a, &user).await;
    let sid = a
        .auth
        .bearer
        .verify_access_token(&access)
        .expect("fresh")
        .holder
        .revocation_key();
    let cookie = a.client();
    assert_eq!(a.login(&cookie, &user).await.status(), StatusCode::OK);
    assert_eq!(me_with_bearer(&a, &access).await, StatusCode::OK);

    // The third login, on node B, ends it.
    assert_eq!(b.login(&b.client(), &user).await.status(), StatusCode::OK);
    let ended = std::time::Instant::now();
    while !a.auth.revocations.is_revoked(sid) {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "node A did not hear of the ending on node B within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(me_with_bearer(&a, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_with_bearer(&b, &access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(a.get_me(&cookie).await.status(), StatusCode::OK);
}
