//! `GET /metrics`, black-box: the Prometheus text exposition after real
//! traffic, with exact counts (each app owns its recorder), route patterns
//! instead of raw paths, and gauges on every session store.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::helpers::*;

/// The text of `/metrics`, checked for its content type.
async fn scrape(app: &TestApp) -> String {
    let res = app
        .bare_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    res.text().await.expect("body")
}

/// The value of the sample `series` (name and labels exactly as rendered),
/// or `None` when there is no such line.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test]
async fn logins_tokens_and_reuse_are_counted_exactly() {
    let app = TestApp::spawn_with(|c| c.login_max_failures = 2).await;
    let user = app.create_user().await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let (_, refresh) = token_pair(&app, &user).await;
    for expected in [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let res = app
            .login_with(&app.client(), &user.email, "wrong guess 1234")
            .await;
        assert_eq!(res.status(), expected);
    }
    let rotate = || {
        app.bare_client()
            .post(app.url("/v1/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .send()
    };
    assert_eq!(rotate().await.expect("req").status(), StatusCode::OK);
    assert_eq!(
        rotate().await.expect("req").status(),
        StatusCode::BAD_REQUEST
    );
    let res = client
        .post(app.url("/v1/session/token"))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::OK);

    let text = scrape(&app).await;
    // The cookie login and the password grant both log in.
    assert_eq!(
        value(&text, r#"gatehouse_logins_total{result="succeeded"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"gatehouse_logins_total{result="failed"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"gatehouse_logins_total{result="throttled"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"gatehouse_tokens_issued_total{grant="password"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gatehouse_tokens_issued_total{grant="refresh_token"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"gatehouse_tokens_issued_total{grant="session"}"#),
        1.0
    );
    assert_eq!(
        value(&text, "gatehouse_refresh_token_reuse_detected_total"),
        1.0
    );
    assert_eq!(value(&text, "gatehouse_audit_write_failures_total"), 0.0);
    assert!(text.contains("# TYPE gatehouse_logins_total counter"));
    assert!(text.contains("# HELP gatehouse_logins_total "));
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_and_status() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    for _ in 0..3 {
        let res = client
            .delete(app.url(&format!("/v1/sessions/{}", uuid::Uuid::now_v7())))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let probe = "/wp-admin/secret-probe-path";
    let res = client.get(app.url(probe)).send().await.expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = client.put(app.url("/healthz")).send().await.expect("req");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);

    let text = scrape(&app).await;
    let three =
        r#"gatehouse_http_requests_total{method="DELETE",route="/v1/sessions/{id}",status="404"}"#;
    assert_eq!(value(&text, three), 3.0);
    assert_eq!(
        value(
            &text,
            r#"gatehouse_http_requests_total{method="POST",route="/v1/login",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gatehouse_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gatehouse_http_requests_total{method="PUT",route="/healthz",status="405"}"#
        ),
        1.0
    );
    assert!(!text.contains("wp-admin"), "a raw path became a label");
    // Latency histogram: cumulative buckets ending in +Inf, sum and count.
    let series = r#"gatehouse_http_request_duration_seconds_bucket{method="DELETE",route="/v1/sessions/{id}",status="404",le="+Inf"}"#;
    assert_eq!(value(&text, series), 3.0);
    assert_eq!(
        value(
            &text,
            r#"gatehouse_http_request_duration_seconds_count{method="DELETE",route="/v1/sessions/{id}",status="404"}"#
        ),
        3.0
    );
    assert!(text.contains("# TYPE gatehouse_http_request_duration_seconds histogram"));
}

/// Live sessions, the revocation set and the hashing queue, as a store of
/// each kind reports them.
async fn gauges_follow_sessions(app: TestApp) {
    let (_, a) = app.logged_in().await;
    let (_, b) = app.logged_in().await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, "gatehouse_live_sessions"), 2.0);
    assert_eq!(value(&text, "gatehouse_revoked_sessions"), 0.0);
    assert_eq!(value(&text, "gatehouse_password_hash_queue_depth"), 0.0);
    let res = a.post(app.url("/v1/logout")).send().await.expect("req");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let text = scrape(&app).await;
    assert_eq!(value(&text, "gatehouse_live_sessions"), 1.0);
    assert_eq!(value(&text, "gatehouse_revoked_sessions"), 1.0);
    drop(b);
}

#[tokio::test]
async fn gauges_follow_sessions_on_sqlite() {
    gauges_follow_sessions(TestApp::spawn().await).await;
}

#[tokio::test]
async fn gauges_follow_sessions_on_postgres() {
    let _slot = PG_SLOTS.acquire().await.expect("semaphore");
    gauges_follow_sessions(TestApp::spawn_on_postgres(|_| {}).await).await;
}

#[tokio::test]
async fn gauges_follow_sessions_in_redis() {
    let _slot = PG_SLOTS.acquire().await.expect("semaphore");
    gauges_follow_sessions(TestApp::spawn_on_redis(|_| {}).await).await;
}

#[tokio::test]
async fn metrics_refuse_writes_and_carry_no_secret() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    let res = app.login(&client, &user).await;
    let cookie = session_cookie_value(&res, app.cookie_name()).expect("cookie");
    let res = app
        .bare_client()
        .post(app.url("/metrics"))
        .body("x".repeat(100_000))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    let text = scrape(&app).await;
    assert!(!text.contains(&cookie));
    assert!(!text.contains(&user.email));
}

/// With `metrics_token` set, a scrape needs `Authorization: Bearer` with
/// it: none is 401, another token or a user's access token is 401
/// `invalid_token`, two headers 400; the right one is 200.
#[tokio::test]
async fn a_metrics_token_closes_the_scrape_to_everyone_else() {
    const TOKEN: &str = "scrape-0123456789abcdef0123456789abcdef";
    let app = TestApp::spawn_with(|c| {
        c.metrics_token = Some(gatehouse::config::SecretBytes::new(TOKEN.into()));
    })
    .await;
    let user = app.create_user().await;
    let (access, _) = token_pair(&app, &user).await;
    let get = || app.bare_client().get(app.url("/metrics"));
    let res = get().send().await.expect("request");
    assert_eq!(
        res.headers()["www-authenticate"],
        r#"Bearer realm="gatehouse""#
    );
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    for wrong in [
        "Bearer scrape-0123456789abcdef0123456789abcdeX".to_owned(),
        format!("Bearer {access}"),
        format!("Basic {TOKEN}"),
        "Bearer ".to_owned(),
    ] {
        let res = get()
            .header("authorization", wrong.as_str())
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{wrong}");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
    let res = get()
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = get().bearer_auth(TOKEN).send().await.expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("gatehouse_logins_total")
    );
}

/// Without `metrics_token` the scrape is open, as the probes are (the
/// documented default).
#[tokio::test]
async fn without_a_metrics_token_the_scrape_is_open() {
    let app = TestApp::spawn().await;
    assert!(scrape(&app).await.contains("gatehouse_live_sessions"));
}
