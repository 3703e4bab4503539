//! Login throttling: `login_max_failures` failures per (account, client IP)
//! within `login_window` lock that pair out with 429 until the window ends.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};
use serde_json::json;

use crate::helpers::*;

const WRONG: &str = "not the right password";
const MAX: u32 = 3;

/// An app that locks after `MAX` failures within `window`.
async fn throttled_app(window: Duration) -> TestApp {
    TestApp::spawn_with(|c| {
        c.login_max_failures = MAX;
        c.login_window = window;
    })
    .await
}

/// A window long enough that no test outlives it by accident.
const LONG: Duration = Duration::from_secs(60);

/// `n` failed logins for `email`, each asserted to be a plain 401.
async fn fail_logins(app: &TestApp, client: &Client, email: &str, n: u32) {
    for i in 0..n {
        let res = app.login_with(client, email, WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "failure {i} of {n}");
    }
}

/// A login through a client whose address a trusted proxy reports in
/// `X-Forwarded-For`.
async fn login_via_proxy(app: &TestApp, client_ip: &str, email: &str, password: &str) -> Response {
    app.bare_client()
        .post(app.url("/v1/login"))
        .header("x-forwarded-for", client_ip)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("request")
}

fn retry_after_secs(res: &Response) -> u64 {
    res.headers()
        .get(RETRY_AFTER)
        .expect("a 429 carries Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in whole seconds")
}

#[tokio::test]
async fn right_password_after_max_failures_is_429_with_retry_after() {
    let window = Duration::from_secs(3);
    let app = throttled_app(window).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;

    let res = app.login(&client, &user).await;
    assert!(set_cookie_header(&res, app.cookie_name()).is_none());
    let secs = retry_after_secs(&res);
    assert!(
        (1..=window.as_secs()).contains(&secs),
        "Retry-After: {secs}"
    );
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn lock_lifts_after_the_window() {
    let window = Duration::from_secs(2);
    let app = throttled_app(window).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;
    assert_eq!(
        app.login(&client, &user).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    tokio::time::sleep(window + Duration::from_millis(250)).await;

    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn waiting_retry_after_is_enough() {
    let app = throttled_app(Duration::from_secs(2)).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after_secs(&res);

    tokio::time::sleep(Duration::from_secs(secs)).await;

    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_success_resets_the_count() {
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    let client = app.bare_client();

    fail_logins(&app, &client, &user.email, MAX - 1).await;
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    fail_logins(&app, &client, &user.email, MAX - 1).await;

    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn throttling_is_per_account() {
    let app = throttled_app(LONG).await;
    let locked = app.create_user().await;
    let other = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &locked.email, MAX).await;
    assert_eq!(
        app.login(&client, &locked).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    assert_eq!(app.login(&client, &other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn throttling_is_per_client_ip_behind_a_trusted_proxy() {
    let app = TestApp::spawn_with(|c| {
        c.login_max_failures = MAX;
        c.login_window = LONG;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let user = app.create_user().await;
    for _ in 0..MAX {
        let res = login_via_proxy(&app, "198.51.100.7", &user.email, WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_via_proxy(&app, "198.51.100.7", &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    let res = login_via_proxy(&app, "198.51.100.8", &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_escape_the_lock() {
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    fail_logins(&app, &app.bare_client(), &user.email, MAX).await;

    let res = login_via_proxy(&app, "198.51.100.8", &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn unknown_email_is_throttled_too() {
    let app = throttled_app(LONG).await;
    let email = unique_email();
    let client = app.bare_client();
    fail_logins(&app, &client, &email, MAX).await;

    let res = app.login_with(&client, &email, PASSWORD).await;
    assert!(res.headers().contains_key(RETRY_AFTER));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn case_and_whitespace_variants_of_an_email_share_one_counter() {
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    let variants = [
        user.email.to_uppercase(),
        format!("  {}  ", user.email),
        user.email.clone(),
    ];
    for email in &variants {
        let res = app.login_with(&client, email, WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    assert_eq!(
        app.login(&client, &user).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn wrong_current_password_counts_toward_the_login_throttle() {
    let app = throttled_app(LONG).await;
    let (user, client) = app.logged_in().await;
    for _ in 0..MAX {
        let res = client
            .post(app.url("/v1/me/password"))
            .json(&json!({ "current_password": WRONG, "new_password": "an entirely different passphrase" }))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }

    let res = app.login(&app.bare_client(), &user).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn unknown_email_wrong_password_and_disabled_user_get_identical_401s() {
    let app = TestApp::spawn().await;
    let known = app.create_user().await;
    let disabled = app.create_user().await;
    let done = sqlx::query("UPDATE users SET disabled = 1 WHERE email = ?")
        .bind(&disabled.email)
        .execute(&app.sql().await)
        .await
        .expect("disable");
    assert_eq!(done.rows_affected(), 1);

    let client = app.bare_client();
    let mut answers = Vec::new();
    for (email, password) in [
        (unique_email(), PASSWORD.to_owned()),
        (known.email.clone(), WRONG.to_owned()),
        (disabled.email.clone(), disabled.password.clone()),
    ] {
        let res = app.login_with(&client, &email, &password).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{email}");
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let headers = (header(CONTENT_TYPE), header(WWW_AUTHENTICATE));
        let body = res.bytes().await.expect("body");
        answers.push((headers, body));
    }

    assert_eq!(answers[0], answers[1], "unknown email vs wrong password");
    assert_eq!(answers[0], answers[2], "unknown email vs disabled user");
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_gets_no_more_than_max_tries() {
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    // Each attempt is counted before the password is checked, so however
    // the burst interleaves, only MAX of its guesses reach the hash.
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let send = client
                .post(app.url("/v1/login"))
                .json(&json!({ "email": user.email, "password": WRONG }))
                .send();
            tokio::spawn(send)
        })
        .collect();
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("task").expect("request").status());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked, MAX as usize, "{statuses:?}");
    assert_eq!(refused, 12 - MAX as usize, "{statuses:?}");
}
