//! A store that is down costs a request nothing: the node that knows it is
//! down answers at once (503, or the bearer path's store-free answer) and
//! reconnects in the background (DESIGN.md, "fail closed, and fast").

use std::time::{Duration, Instant};

use gatehouse::config::DatabaseUrl;
use reqwest::{Client, StatusCode};

use crate::helpers::{PgDatabase, TestApp, following, token_pair};
use crate::redis_server::{Persistence, RedisServer};

/// Sequential bearer `/v1/verify` calls, all 200; how long they took.
async fn verify_run(app: &TestApp, http: &Client, token: &str, n: u32) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let res = http
            .get(app.url("/v1/verify"))
            .bearer_auth(token)
            .header("X-Original-URI", "/app/page")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
    }
    started.elapsed()
}

#[tokio::test]
async fn bearer_verification_keeps_its_speed_while_redis_is_down() {
    const N: u32 = 300;
    let mut redis = RedisServer::start(Persistence::None);
    let pg = PgDatabase::create().await;
    let (pg_url, redis_url) = (pg.url(), redis.url());
    let app = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Postgres(pg_url);
        c.redis_url = Some(redis_url);
    })
    .await;
    following(&app).await;
    let user = app.create_user().await;
    let (token, _) = token_pair(&app, &user).await;
    let http = app.bare_client();
    verify_run(&app, &http, &token, 20).await;
    let up = verify_run(&app, &http, &token, N).await;

    redis.kill();
    // The first calls find Redis gone (each within the command timeout).
    verify_run(&app, &http, &token, 5).await;
    let down = verify_run(&app, &http, &token, N).await;
    let ratio = down.as_secs_f64() / up.as_secs_f64();
    eprintln!("{N} bearer verifications: Redis up {up:?}, Redis down {down:?} ({ratio:.2}x)");
    assert!(
        ratio < 4.0,
        "with Redis down bearer verification is {ratio:.1} times slower ({down:?} against {up:?})"
    );

    // Back by itself: a login (which needs Redis) succeeds again.
    redis.restart();
    let started = Instant::now();
    loop {
        let res = app.login(&app.client(), &user).await;
        if res.status().is_success() {
            break;
        }
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node did not reconnect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);
    drop(pg);
}
