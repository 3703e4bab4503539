//! Throttling. Logins: `login_max_failures` failures per (account, client
//! IP) within `login_window` lock that pair out with 429 until the window
//! ends; `login_max_failures_per_ip` failures from one client network over
//! every account (spraying) and `login_max_failures_per_account` failures
//! of one account from every client (a botnet) do the same for the network
//! and the account, on every path that checks a password. Registration:
//! `registration_max_per_ip` attempts per client network within
//! `registration_window`, created or not. Every budget is shared by the
//! nodes of a deployment.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::Config;
use reqwest::header::{CONTENT_TYPE, ORIGIN, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use gatehouse::clock::ManualClock;

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
    // On a clock the test moves: a loaded machine cannot close the window
    // while the failures are sent.
    let window = Duration::from_secs(3);
    let (app, clock) = throttled_app_on(window).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;
    clock.advance(Duration::from_secs(1));

    let res = app.login(&client, &user).await;
    assert!(set_cookie_header(&res, app.cookie_name()).is_none());
    let secs = retry_after_secs(&res);
    assert_eq!(secs, window.as_secs() - 1, "Retry-After: {secs}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

/// [`throttled_app`] on a clock the test moves.
async fn throttled_app_on(window: Duration) -> (TestApp, Arc<ManualClock>) {
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        c.login_max_failures = MAX;
        c.login_window = window;
    })
    .await;
    (app, clock)
}

#[tokio::test]
async fn lock_lifts_after_the_window() {
    let window = Duration::from_secs(15 * 60);
    let (app, clock) = throttled_app_on(window).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;
    assert_eq!(
        app.login(&client, &user).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Still locked just before the window closes.
    clock.advance(window - Duration::from_secs(1));
    assert_eq!(
        app.login(&client, &user).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_secs(1));

    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn waiting_retry_after_is_enough() {
    let (app, clock) = throttled_app_on(Duration::from_secs(15 * 60)).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    fail_logins(&app, &client, &user.email, MAX).await;
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after_secs(&res);

    clock.advance(Duration::from_secs(secs));

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

/// `n` logins of `email` with `password` sent at once; their statuses.
async fn burst(
    app: &TestApp,
    client: &Client,
    email: &str,
    password: &str,
    n: usize,
) -> Vec<StatusCode> {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let send = client
                .post(app.url("/v1/login"))
                .json(&json!({ "email": email, "password": password }))
                .send();
            tokio::spawn(send)
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for h in handles {
        statuses.push(h.await.expect("task").expect("request").status());
    }
    statuses
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_gets_no_more_than_max_tries() {
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    // Each attempt is counted before the password is checked, so however
    // the burst interleaves, only MAX of its guesses reach the hash.
    let statuses = burst(&app, &client, &user.email, WRONG, 12).await;
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

#[tokio::test]
async fn concurrent_logins_with_the_right_password_are_all_let_in() {
    // Attempts of one account from one address take turns on a node: each
    // waits for the one in flight, which a success settles (its count
    // starts over), so no right password is refused for attempts that
    // were merely in flight. Before, 8 in parallel got 429 once more than
    // MAX were in flight.
    let app = throttled_app(LONG).await;
    let user = app.create_user().await;
    let client = app.bare_client();
    for round in 0..3 {
        let statuses = burst(&app, &client, &user.email, &user.password, 8).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "round {round}: {statuses:?}"
        );
    }
    // A failure before a burst of right passwords still counts toward the
    // limit, and the first success resets it.
    fail_logins(&app, &client, &user.email, MAX - 1).await;
    let statuses = burst(&app, &client, &user.email, &user.password, 6).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // Then a burst of guesses: the turns change nothing of the limit, at
    // most MAX of them reach the hash, whatever the interleaving.
    let statuses = burst(&app, &client, &user.email, WRONG, 12).await;
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, MAX as usize, "{statuses:?}");
}

// ---------------------------------------------------------------------------
// The per-IP, per-account and registration budgets
// ---------------------------------------------------------------------------

/// A client spraying one guess over many accounts.
const SPRAYER: &str = "198.51.100.66";
/// A client that has done nothing wrong.
const BYSTANDER: &str = "203.0.113.10";
/// A client creating accounts in bulk.
const FLOODER: &str = "192.0.2.99";

/// An app behind a trusted proxy on 127.0.0.1, so that `X-Forwarded-For`
/// names the client, with windows no test outlives and the budgets set by
/// `configure`.
async fn behind_proxy(configure: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        trusting_the_proxy(c);
        configure(c);
    })
    .await
}

fn trusting_the_proxy(c: &mut Config) {
    c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    c.login_window = LONG;
    c.registration_window = LONG;
}

/// A POST to `path` from `client_ip`, as the trusted proxy reports it.
fn post_via_proxy(app: &TestApp, client: &Client, client_ip: &str, path: &str) -> RequestBuilder {
    client
        .post(app.url(path))
        .header("x-forwarded-for", client_ip)
}

async fn register_via_proxy(
    app: &TestApp,
    client_ip: &str,
    email: &str,
    password: &str,
) -> Response {
    post_via_proxy(app, &app.bare_client(), client_ip, "/v1/users")
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("request")
}

/// `POST /v1/token` with `grant_type=password`.
async fn grant_via_proxy(app: &TestApp, client_ip: &str, email: &str, password: &str) -> Response {
    post_via_proxy(app, &app.bare_client(), client_ip, "/v1/token")
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await
        .expect("request")
}

/// A form post to a hosted page, as a browser on the app's own pages sends
/// it.
async fn form_via_proxy(
    app: &TestApp,
    client: &Client,
    client_ip: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Response {
    post_via_proxy(app, client, client_ip, path)
        .header(ORIGIN, app.origin())
        .form(fields)
        .send()
        .await
        .expect("request")
}

/// Asserts a 429 problem document with a `Retry-After` within the window.
async fn assert_throttled(res: Response) {
    let secs = retry_after_secs(&res);
    assert!((1..=LONG.as_secs()).contains(&secs), "Retry-After: {secs}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
}

/// Asserts a hosted page answering 429 with `Retry-After` and the message.
async fn assert_throttled_page(res: Response) {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after_secs(&res);
    assert!((1..=LONG.as_secs()).contains(&secs), "Retry-After: {secs}");
    let ct = res.headers()[CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let body = res.text().await.expect("body");
    assert!(body.contains("Too many attempts. Try again in"), "{body}");
}

#[tokio::test]
async fn spraying_many_accounts_from_one_ip_meets_the_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 4;
    })
    .await;
    let user = app.create_user().await;
    // One guess per account: no (account, IP) budget comes into play.
    for i in 0..4 {
        let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }

    let res = login_via_proxy(&app, SPRAYER, &user.email, &user.password).await;

    assert!(set_cookie_header(&res, app.cookie_name()).is_none());
    assert_throttled(res).await;
    let res = login_via_proxy(&app, BYSTANDER, &user.email, &user.password).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "other addresses are unaffected"
    );
}

#[tokio::test]
async fn successes_do_not_spend_the_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 3;
    })
    .await;
    let user = app.create_user().await;
    for _ in 0..2 {
        let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // More successes than the budget holds, from the same address.
    for _ in 0..5 {
        let res = login_via_proxy(&app, SPRAYER, &user.email, &user.password).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the third failure");

    let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;

    assert_throttled(res).await;
}

#[tokio::test]
async fn the_addresses_of_one_ipv6_64_share_a_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 2;
    })
    .await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2:aaaa::2"] {
        let res = login_via_proxy(&app, ip, &unique_email(), WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{ip}");
    }

    let res = login_via_proxy(&app, "2001:db8:1:2::99", &unique_email(), WRONG).await;

    assert_throttled(res).await;
    let res = login_via_proxy(&app, "2001:db8:1:3::1", &unique_email(), WRONG).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "another /64");
}

#[tokio::test]
async fn guessing_one_account_from_many_ips_meets_the_per_account_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_account = 4;
    })
    .await;
    let victim = app.create_user().await;
    let other = app.create_user().await;
    for ip in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let res = login_via_proxy(&app, ip, &victim.email, WRONG).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{ip}");
        }
    }

    let res = login_via_proxy(&app, "198.51.100.3", &victim.email, &victim.password).await;

    assert_throttled(res).await;
    // The addresses are not blocked: another account signs in from them.
    let res = login_via_proxy(&app, "198.51.100.3", &other.email, &other.password).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_network_holding_a_live_session_of_the_account_still_signs_in() {
    const HOME: &str = "203.0.113.5";
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_account = 4;
    })
    .await;
    let user = app.create_user().await;
    let res = login_via_proxy(&app, HOME, &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::OK, "a session lives at home");
    for ip in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            let res = login_via_proxy(&app, ip, &user.email, WRONG).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{ip}");
        }
    }
    let res = login_via_proxy(&app, "203.0.113.77", &user.email, &user.password).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a new network is held by the account's budget"
    );

    let res = login_via_proxy(&app, HOME, &user.email, &user.password).await;

    assert_eq!(res.status(), StatusCode::OK, "home still gets in");
    // ...within its own (account, IP) budget.
    for _ in 0..2 {
        let res = login_via_proxy(&app, HOME, &user.email, WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_via_proxy(&app, HOME, &user.email, &user.password).await;
    assert_throttled(res).await;
}

#[tokio::test]
async fn a_registration_flood_from_one_ip_meets_its_budget() {
    let app = behind_proxy(|c| c.registration_max_per_ip = 3).await;
    for i in 0..3 {
        let res = register_via_proxy(&app, FLOODER, &unique_email(), PASSWORD).await;
        assert_eq!(res.status(), StatusCode::CREATED, "sign-up {i}");
    }
    let email = unique_email();

    let res = register_via_proxy(&app, FLOODER, &email, PASSWORD).await;

    assert_throttled(res).await;
    // Nothing was created, and other addresses are unaffected.
    let res = register_via_proxy(&app, BYSTANDER, &email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn probing_a_taken_email_meets_the_registration_budget() {
    const PROBER: &str = "198.51.100.200";
    let app = behind_proxy(|c| c.registration_max_per_ip = 3).await;
    let taken = unique_email();
    let res = register_via_proxy(&app, BYSTANDER, &taken, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    for _ in 0..3 {
        let res = register_via_proxy(&app, PROBER, &taken, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
    }

    let res = register_via_proxy(&app, PROBER, &taken, PASSWORD).await;

    assert_throttled(res).await;
    let res = register_via_proxy(&app, PROBER, &unique_email(), PASSWORD).await;
    assert_throttled(res).await;
}

#[tokio::test]
async fn the_register_form_meets_the_registration_budget() {
    let app = behind_proxy(|c| c.registration_max_per_ip = 2).await;
    let client = app.client();
    for _ in 0..2 {
        let email = unique_email();
        let fields = [("email", email.as_str()), ("password", PASSWORD)];
        let res = form_via_proxy(&app, &client, FLOODER, "/register", &fields).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
    let email = unique_email();
    let fields = [("email", email.as_str()), ("password", PASSWORD)];

    let res = form_via_proxy(&app, &client, FLOODER, "/register", &fields).await;

    assert_throttled_page(res).await;
    let res = form_via_proxy(&app, &client, BYSTANDER, "/register", &fields).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "created from elsewhere"
    );
}

#[tokio::test]
async fn the_login_form_meets_the_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 3;
    })
    .await;
    let user = app.create_user().await;
    let client = app.client();
    for _ in 0..3 {
        let email = unique_email();
        let fields = [("email", email.as_str()), ("password", WRONG)];
        let res = form_via_proxy(&app, &client, SPRAYER, "/login", &fields).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let right = [
        ("email", user.email.as_str()),
        ("password", user.password.as_str()),
    ];

    let res = form_via_proxy(&app, &client, SPRAYER, "/login", &right).await;

    assert_throttled_page(res).await;
    let res = form_via_proxy(&app, &client, BYSTANDER, "/login", &right).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn password_grants_meet_the_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 3;
    })
    .await;
    let user = app.create_user().await;
    for _ in 0..3 {
        let res = grant_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"], "invalid_grant");
    }

    let res = grant_via_proxy(&app, SPRAYER, &user.email, &user.password).await;

    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = retry_after_secs(&res);
    assert!((1..=LONG.as_secs()).contains(&secs), "Retry-After: {secs}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let res = grant_via_proxy(&app, BYSTANDER, &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_password_check_spends_the_one_per_ip_budget() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 5;
    })
    .await;
    let (_, signed_in) = app.logged_in().await;
    let other = app.create_user().await;
    let new_password = "an entirely different passphrase";
    // One failure on each path, all from one address.
    let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "JSON login");
    let res = grant_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "password grant");
    let email = unique_email();
    let fields = [("email", email.as_str()), ("password", WRONG)];
    let res = form_via_proxy(&app, &app.client(), SPRAYER, "/login", &fields).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "login form");
    let res = post_via_proxy(&app, &signed_in, SPRAYER, "/v1/me/password")
        .json(&json!({ "current_password": WRONG, "new_password": new_password }))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "POST /v1/me/password"
    );
    let fields = [("current_password", WRONG), ("new_password", new_password)];
    let res = form_via_proxy(&app, &signed_in, SPRAYER, "/account/password", &fields).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "account page");

    // Spent: the right password of another account is refused everywhere.
    let res = login_via_proxy(&app, SPRAYER, &other.email, &other.password).await;
    assert_throttled(res).await;
    let res = grant_via_proxy(&app, SPRAYER, &other.email, &other.password).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "password grant"
    );
    let fields = [
        ("email", other.email.as_str()),
        ("password", other.password.as_str()),
    ];
    let res = form_via_proxy(&app, &app.client(), SPRAYER, "/login", &fields).await;
    assert_throttled_page(res).await;
}

/// An admin's cookie client, signed in from 127.0.0.1.
async fn admin(app: &TestApp) -> Client {
    let user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    client
}

async fn audit_events(app: &TestApp, admin: &Client, kind: &str) -> Vec<Value> {
    let res = admin
        .get(app.url(&format!("/v1/admin/audit?type={kind}")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK, "{kind}");
    let page: Value = res.json().await.expect("json");
    page["events"].as_array().expect("events").clone()
}

/// The value of one series in `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .bare_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn budget_refusals_are_audited_once_per_window_and_counted() {
    let app = behind_proxy(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 2;
        c.registration_max_per_ip = 1;
    })
    .await;
    let admin = admin(&app).await;
    for expected in [401, 401, 429, 429, 429] {
        let res = login_via_proxy(&app, SPRAYER, &unique_email(), WRONG).await;
        assert_eq!(res.status().as_u16(), expected);
    }
    for expected in [201, 429, 429] {
        let res = register_via_proxy(&app, FLOODER, &unique_email(), PASSWORD).await;
        assert_eq!(res.status().as_u16(), expected);
    }

    let throttled = audit_events(&app, &admin, "login_throttled").await;
    assert_eq!(throttled.len(), 1, "{throttled:#?}");
    assert_eq!(throttled[0]["ip"], SPRAYER);
    assert_eq!(throttled[0]["details"]["limit"], "ip");
    assert_eq!(throttled[0]["user_id"], Value::Null);
    let throttled = audit_events(&app, &admin, "registration_throttled").await;
    assert_eq!(throttled.len(), 1, "{throttled:#?}");
    assert_eq!(throttled[0]["ip"], FLOODER);
    assert!(throttled[0]["details"]["retry_after_seconds"].is_u64());
    assert_eq!(
        metric(&app, r#"gatehouse_logins_total{result="throttled"}"#).await,
        3.0
    );
    assert_eq!(
        metric(&app, r#"gatehouse_registrations_total{result="throttled"}"#).await,
        2.0
    );
    assert_eq!(
        metric(&app, r#"gatehouse_registrations_total{result="created"}"#).await,
        1.0
    );
}

/// Two nodes of one deployment: one PostgreSQL database and, with
/// `redis`, one Redis key prefix; each node with the budgets of
/// `every_budget_spans_the_nodes`. The guards outlive the nodes.
async fn two_nodes(redis: bool) -> (TestApp, TestApp, PgDatabase, Option<RedisPrefix>) {
    let pg = PgDatabase::create().await;
    let prefix = if redis {
        Some(RedisPrefix::create().await)
    } else {
        None
    };
    let shared = |c: &mut Config| {
        c.database_url = gatehouse::config::DatabaseUrl::Postgres(pg.url().into());
        if let Some(p) = &prefix {
            c.redis_url = Some(REDIS_URL.to_owned().into());
            c.redis_key_prefix = p.prefix.clone();
        }
        c.issuer = Some("http://gatehouse.test".into());
        trusting_the_proxy(c);
        c.login_max_failures = 2;
        c.login_max_failures_per_ip = 4;
        c.login_max_failures_per_account = 4;
        c.registration_max_per_ip = 2;
    };
    let a = TestApp::spawn_with(shared).await;
    let b = TestApp::spawn_with(shared).await;
    (a, b, pg, prefix)
}

/// Attempts spread over two nodes meet each budget as if on one.
async fn every_budget_spans_the_nodes(a: &TestApp, b: &TestApp) {
    // Per IP: a spray alternating between the nodes.
    for (i, node) in [a, b, a, b].into_iter().enumerate() {
        let res = login_via_proxy(node, SPRAYER, &unique_email(), WRONG).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    for node in [a, b] {
        let res = login_via_proxy(node, SPRAYER, &unique_email(), WRONG).await;
        assert_throttled(res).await;
    }
    // Per account: two addresses on each node.
    let victim = a.create_user().await;
    for (node, ip) in [(a, "198.51.100.1"), (b, "198.51.100.2")] {
        for _ in 0..2 {
            let res = login_via_proxy(node, ip, &victim.email, WRONG).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{ip}");
        }
    }
    for (node, ip) in [(a, "198.51.100.3"), (b, "198.51.100.4")] {
        let res = login_via_proxy(node, ip, &victim.email, &victim.password).await;
        assert_throttled(res).await;
    }
    // Registration: one sign-up on each node spends the budget of two.
    for node in [a, b] {
        let res = register_via_proxy(node, FLOODER, &unique_email(), PASSWORD).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    for node in [a, b] {
        let res = register_via_proxy(node, FLOODER, &unique_email(), PASSWORD).await;
        assert_throttled(res).await;
    }
}

#[tokio::test]
async fn nodes_on_postgres_share_every_budget() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (a, b, _pg, _redis) = two_nodes(false).await;
    every_budget_spans_the_nodes(&a, &b).await;
}

#[tokio::test]
async fn nodes_on_redis_share_every_budget() {
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (a, b, _pg, _redis) = two_nodes(true).await;
    every_budget_spans_the_nodes(&a, &b).await;
}
