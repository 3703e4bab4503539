//! Email (API.md "Email"): password reset, address verification, security
//! notices, sent from the outbox to a real SMTP server nobody here wrote
//! (aiosmtpd, `mail_sink.rs`), on SQLite, PostgreSQL and PostgreSQL +
//! Redis.

use std::time::Duration;

use gatehouse::config::{Config, EmailVerification, SecretUrl};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, PG_SLOTS, TestApp, TestUser, assert_problem, token_pair, unique_email,
};
use crate::mail_sink::{Mail, MailSink, SinkTls};

/// Long enough for a mail to cross the outbox, the sender and SMTP on a
/// busy 2-core machine.
const MAIL_WAIT: Duration = Duration::from_secs(20);

/// How long a test waits to be sure a mail did not come.
const NO_MAIL_WAIT: Duration = Duration::from_millis(2500);

const NEW_PASSWORD: &str = "a brand new passphrase 42";

/// Mail through `sink`, sent as `gatehouse@example.test`, links on
/// `https://auth.example.test`.
fn mail_to(sink: &MailSink) -> impl FnOnce(&mut Config) + use<> {
    let url = sink.smtp_url();
    move |c: &mut Config| {
        c.smtp_url = Some(SecretUrl::new(url));
        c.email_from = Some("Example Auth <gatehouse@example.test>".into());
        c.public_url = Some("https://auth.example.test".into());
    }
}

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.bare_client()
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn request_reset(app: &TestApp, email: &str) -> reqwest::Response {
    post(app, "/v1/password-reset", json!({ "email": email })).await
}

/// The mails to `to` received so far.
fn mails_to(sink: &MailSink, to: &str) -> Vec<Mail> {
    sink.mails()
        .into_iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == to))
        .collect()
}

/// The reset mails to `user` received so far.
fn resets_of(sink: &MailSink, user: &TestUser) -> Vec<Mail> {
    mails_to(sink, &user.email)
        .into_iter()
        .filter(|m| m.subject == "Reset your password")
        .collect()
}

/// Asks for a reset of `user` and returns the token of the mailed link.
async fn reset_token(app: &TestApp, sink: &MailSink, user: &TestUser) -> String {
    let before = resets_of(sink, user).len();
    let res = request_reset(app, &user.email).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let mails = resets_of(sink, user);
        if mails.len() > before {
            let mail = mails.last().expect("a mail");
            return mail.token("/reset-password").expect("a reset link");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reset mail for {} within {MAIL_WAIT:?}; the sink has {:?}",
            user.email,
            sink.mails().iter().map(|m| &m.subject).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn confirm(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/v1/password-reset/confirm",
        json!({ "token": token, "new_password": password }),
    )
    .await
}

async fn login_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.login_with(&app.client(), email, password)
        .await
        .status()
}

/// The whole reset: the mail's link, the new password, every session and
/// token of the user ended, the token spent once.
async fn a_reset_link_sets_a_new_password_and_ends_every_session(app: TestApp, sink: MailSink) {
    let (user, browser) = app.logged_in().await;
    let (access, refresh) = token_pair(&app, &user).await;
    let token = reset_token(&app, &sink, &user).await;
    let mail = mails_to(&sink, &user.email)
        .into_iter()
        .rfind(|m| m.subject == "Reset your password")
        .expect("the mail");
    // Built on public_url, sent from email_from, text and HTML.
    let link = mail.link("/reset-password").expect("link");
    assert_eq!(
        link.origin().ascii_serialization(),
        "https://auth.example.test"
    );
    assert_eq!(mail.mail_from, "gatehouse@example.test");
    assert!(mail.from.contains("Example Auth"), "{}", mail.from);
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(html.contains(&token), "{html}");
    assert_eq!(token.len(), 43);

    let res = confirm(&app, &token, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Every session and token of the user is refused at once.
    assert_eq!(
        app.get_me(&browser).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = app
        .bare_client()
        .get(app.url("/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The old password is gone, the new one works.
    assert_eq!(
        login_status(&app, &user.email, &user.password).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status(&app, &user.email, NEW_PASSWORD).await,
        StatusCode::OK
    );
    // The token was spent.
    let res = confirm(&app, &token, "yet another passphrase 7").await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mail-token");
    // A notice says so, and proving the mailbox verified the address.
    wait_for_subject(&sink, &user.email, "Your password was changed").await;
    let me = app
        .login_with(&app.client(), &user.email, NEW_PASSWORD)
        .await;
    let body: Value = me.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], true, "{body}");
}

/// Waits for a mail to `to` with `subject`.
async fn wait_for_subject(sink: &MailSink, to: &str, subject: &str) -> Mail {
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        if let Some(m) = mails_to(sink, to)
            .into_iter()
            .find(|m| m.subject == subject)
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail {subject:?} to {to}; the sink has {:?}",
            sink.mails()
                .iter()
                .map(|m| (&m.rcpt_tos, &m.subject))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_sqlite_a_reset_link_sets_a_new_password_and_ends_every_session() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(mail_to(&sink)).await;
    a_reset_link_sets_a_new_password_and_ends_every_session(app, sink).await;
}

#[tokio::test]
async fn on_postgres_a_reset_link_sets_a_new_password_and_ends_every_session() {
    let _slot = PG_SLOTS.acquire().await.expect("never closed");
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_on_postgres(mail_to(&sink)).await;
    a_reset_link_sets_a_new_password_and_ends_every_session(app, sink).await;
}

#[tokio::test]
async fn on_redis_a_reset_link_sets_a_new_password_and_ends_every_session() {
    let _slot = PG_SLOTS.acquire().await.expect("never closed");
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_on_redis(mail_to(&sink)).await;
    a_reset_link_sets_a_new_password_and_ends_every_session(app, sink).await;
}

#[tokio::test]
async fn known_and_unknown_addresses_get_the_same_answer_and_only_a_known_one_a_mail() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(mail_to(&sink)).await;
    let user = app.create_user().await;
    // Registration sent a verification mail; wait for it so counts are
    // settled.
    wait_for_subject(&sink, &user.email, "Confirm your email address").await;
    let stranger = unique_email();
    let known = request_reset(&app, &user.email).await;
    let unknown = request_reset(&app, &stranger).await;
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    let strip = |h: &reqwest::header::HeaderMap| {
        let mut v: Vec<(String, String)> = h
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(known.headers()), strip(unknown.headers()));
    let (a, b) = (
        known.bytes().await.expect("body"),
        unknown.bytes().await.expect("body"),
    );
    assert_eq!(a, b);
    // Differently cased and padded, the known address is still known.
    let res = request_reset(&app, &format!("  {}  ", user.email.to_uppercase())).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    wait_for_subject(&sink, &user.email, "Reset your password").await;
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert!(mails_to(&sink, &stranger).is_empty());
    assert_eq!(
        mails_to(&sink, &user.email)
            .iter()
            .filter(|m| m.subject == "Reset your password")
            .count(),
        2
    );
}

#[tokio::test]
async fn links_are_built_on_public_url_whatever_the_host_headers_say() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        // Even a trusted proxy's forwarded host does not move links.
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let user = app.create_user().await;
    let res = app
        .bare_client()
        .post(app.url("/v1/password-reset"))
        .header("host", "evil.test")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "host=evil.test")
        .json(&json!({ "email": user.email }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mail = wait_for_subject(&sink, &user.email, "Reset your password").await;
    assert!(!mail.raw.contains("evil.test"), "{}", mail.raw);
    let link = mail.link("/reset-password").expect("link");
    assert_eq!(link.host_str(), Some("auth.example.test"));
}

#[tokio::test]
async fn expired_used_and_voided_tokens_are_refused_and_a_weak_password_spends_nothing() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        mail_to(&sink)(c);
        c.password_reset_ttl = Duration::from_secs(600);
    })
    .await;
    let user = app.create_user().await;

    // A weak password is refused before the token is spent.
    let token = reset_token(&app, &sink, &user).await;
    let res = confirm(&app, &token, "short").await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "new_password");
    let res = confirm(&app, &token, &user.email).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Past password_reset_ttl it is refused.
    clock.advance(Duration::from_secs(601));
    let res = confirm(&app, &token, NEW_PASSWORD).await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:invalid-mail-token");

    // Issued before a password change: void.
    let token = reset_token(&app, &sink, &user).await;
    let browser = app.client();
    assert_eq!(app.login(&browser, &user).await.status(), StatusCode::OK);
    let res = browser
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": user.password, "new_password": "changed meanwhile 1" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = confirm(&app, &token, NEW_PASSWORD).await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        login_status(&app, &user.email, "changed meanwhile 1").await,
        StatusCode::OK
    );

    // A verification token is no reset token, and garbage is refused alike.
    let moved = TestUser {
        email: user.email.clone(),
        password: "changed meanwhile 1".into(),
    };
    let token = reset_token(&app, &sink, &moved).await;
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    for bad in [
        "",
        "x",
        "' OR 1=1 --",
        &"A".repeat(43),
        &"A".repeat(44),
        &token[..42],
    ] {
        let res = confirm(&app, bad, NEW_PASSWORD).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    // Two confirmations at once: exactly one wins.
    let (a, b) = tokio::join!(
        confirm(&app, &token, NEW_PASSWORD),
        confirm(&app, &token, "the other passphrase 9"),
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::NO_CONTENT, StatusCode::BAD_REQUEST]);
}

#[tokio::test]
async fn reset_requests_are_throttled_per_address_and_per_client_network() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.login_max_failures = 3;
        c.login_max_failures_per_ip = 6;
    })
    .await;
    let victim = unique_email();
    for _ in 0..3 {
        assert_eq!(
            request_reset(&app, &victim).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let res = request_reset(&app, &victim).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Other addresses from the same network: 6 in all (the refused one
    // counted too), then refused.
    for _ in 0..2 {
        assert_eq!(
            request_reset(&app, &unique_email()).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let res = request_reset(&app, &unique_email()).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS).await;
    let metrics = app
        .bare_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"gatehouse_password_resets_total{result="throttled"} 2"#),
        "{metrics}"
    );
}

fn required(sink: &MailSink) -> impl FnOnce(&mut Config) + use<> {
    let mail = mail_to(sink);
    move |c: &mut Config| {
        mail(c);
        c.email_verification = EmailVerification::Required;
    }
}

#[tokio::test]
async fn on_sqlite_required_verification_refuses_login_until_the_link_is_followed() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(required(&sink)).await;
    required_verification_refuses_login_until_the_link_is_followed(app, sink).await;
}

#[tokio::test]
async fn on_postgres_required_verification_refuses_login_until_the_link_is_followed() {
    let _slot = PG_SLOTS.acquire().await.expect("never closed");
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_on_postgres(required(&sink)).await;
    required_verification_refuses_login_until_the_link_is_followed(app, sink).await;
}

#[tokio::test]
async fn on_redis_required_verification_refuses_login_until_the_link_is_followed() {
    let _slot = PG_SLOTS.acquire().await.expect("never closed");
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_on_redis(required(&sink)).await;
    required_verification_refuses_login_until_the_link_is_followed(app, sink).await;
}

async fn required_verification_refuses_login_until_the_link_is_followed(
    app: TestApp,
    sink: MailSink,
) {
    let user = app.create_user().await;
    let first = wait_for_subject(&sink, &user.email, "Confirm your email address").await;
    // The right password: 403 email-not-verified (a wrong one stays 401).
    let res = app.login(&app.client(), &user).await;
    assert!(res.headers().get("set-cookie").is_none());
    let problem = assert_problem(res, StatusCode::FORBIDDEN).await;
    assert_eq!(problem["type"], "urn:gatehouse:problem:email-not-verified");
    assert_eq!(
        login_status(&app, &user.email, "not the password at all").await,
        StatusCode::UNAUTHORIZED
    );
    // The token endpoint says so in its own terms.
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "email_not_verified");
    // Logins within 5 minutes of the registration's mail send no more.
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert_eq!(mails_to(&sink, &user.email).len(), 1);
    // A GET of the link verifies nothing; the POST does.
    let token = first.token("/verify-email").expect("link");
    let res = app
        .bare_client()
        .get(app.url(&format!("/verify-email?token={token}")))
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success() || res.status() == StatusCode::NOT_FOUND);
    assert_eq!(
        login_status(&app, &user.email, &user.password).await,
        StatusCode::FORBIDDEN
    );
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.login(&app.client(), &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], true);
    // Spent.
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_login_of_an_unverified_user_sends_at_most_one_mail_per_five_minutes() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let clock = TestApp::manual_clock();
    let app = TestApp::spawn_on(clock.clone(), |c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Required;
    })
    .await;
    let user = app.create_user().await;
    wait_for_subject(&sink, &user.email, "Confirm your email address").await;
    clock.advance(Duration::from_secs(301));
    for _ in 0..3 {
        assert_eq!(
            login_status(&app, &user.email, &user.password).await,
            StatusCode::FORBIDDEN
        );
    }
    let mails = sink.wait_for_mails(2, MAIL_WAIT).await;
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert_eq!(mails_to(&sink, &user.email).len(), 2, "{mails:?}");
    // The older link still works (its address and password are unchanged).
    let token = mails_to(&sink, &user.email)[0]
        .token("/verify-email")
        .expect("link");
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_user_asks_for_a_verification_mail_and_an_admin_marks_an_address_verified() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
    })
    .await;
    // `off`: no mail on registration.
    let (user, browser) = app.logged_in().await;
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert!(mails_to(&sink, &user.email).is_empty());
    let res = browser
        .post(app.url("/v1/me/email/verification"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let mail = wait_for_subject(&sink, &user.email, "Confirm your email address").await;
    // A second ask within a minute sends nothing.
    let res = browser
        .post(app.url("/v1/me/email/verification"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let res = app
        .bare_client()
        .post(app.url("/v1/me/email/verification"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let token = mail.token("/verify-email").expect("link");
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let me: Value = app.get_me(&browser).await.json().await.expect("json");
    assert_eq!(me["user"]["email_verified"], true, "{me}");

    // An administrator marks another user's address, and unmarks it.
    let admin = app
        .create_user_with_role("mail-admins", &["gatehouse:admin"])
        .await;
    let admin_client = app.client();
    assert_eq!(
        app.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let other = app.create_user().await;
    let users: Value = admin_client
        .get(app.url("/v1/admin/users?limit=200"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let id = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == other.email.as_str())
        .expect("the user")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patch = |body: Value| {
        admin_client
            .patch(app.url(&format!("/v1/admin/users/{id}")))
            .json(&body)
            .send()
    };
    let res = patch(json!({ "email_verified": true }))
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], true);
    assert_eq!(body["user"]["disabled"], false);
    let res = patch(json!({})).await.expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = patch(json!({ "email_verified": "yes" }))
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = patch(json!({ "email_verified": false, "disabled": false }))
        .await
        .expect("request");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["user"]["email_verified"], false);
    let audit: Value = admin_client
        .get(app.url("/v1/admin/audit?type=email_verification_changed"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(
        audit["events"].as_array().expect("events").len(),
        3,
        "{audit}"
    );
}

#[tokio::test]
async fn without_smtp_url_the_email_endpoints_are_not_found_and_nothing_is_sent() {
    let app = TestApp::spawn().await;
    let (user, browser) = app.logged_in().await;
    let res = request_reset(&app, &user.email).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let token = "A".repeat(43);
    let res = confirm(&app, &token, NEW_PASSWORD).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = post(&app, "/v1/email/verify", json!({ "token": token })).await;
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = browser
        .post(app.url("/v1/me/email/verification"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let pool = app.sql().await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn hostile_input_on_the_email_endpoints_gets_a_clear_4xx() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(mail_to(&sink)).await;
    let c = app.bare_client();
    for path in [
        "/v1/password-reset",
        "/v1/password-reset/confirm",
        "/v1/email/verify",
    ] {
        for (body, status) in [
            ("{", StatusCode::BAD_REQUEST),
            ("[]", StatusCode::BAD_REQUEST),
            (r#"{"email": 7, "token": 7}"#, StatusCode::BAD_REQUEST),
            (
                r#"{"email": "a@b.c", "token": "x", "extra": 1}"#,
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let res = c
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), status, "{path} {body}");
        }
        let res = c
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(format!(r#"{{"email": "{}"}}"#, "a".repeat(70_000)))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let res = c
            .post(app.url(path))
            .header("content-type", "text/plain")
            .body("email=a@b.c")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
    }
    for email in [
        "not an address",
        "' OR 1=1 --",
        "a@b.c'); DROP TABLE users; --",
        "",
        &format!("{}@example.com", "x".repeat(300)),
    ] {
        let res = request_reset(&app, email).await;
        let status = res.status();
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::ACCEPTED,
            "{email:?}: {status}"
        );
    }
    // Nothing was lost: the users table answers and a user can still log in.
    let user = app.create_user().await;
    assert_eq!(
        login_status(&app, &user.email, PASSWORD).await,
        StatusCode::OK
    );
}

/// The SMTP server is down for a while: the request is answered at once,
/// the mail is retried, and arrives once the server is back, exactly once.
#[tokio::test]
async fn smtp_down_for_a_while_then_back_the_mail_arrives_once() {
    let mut sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
    })
    .await;
    let user = app.create_user().await;
    sink.stop().await;
    let started = std::time::Instant::now();
    let res = request_reset(&app, &user.email).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Attempts fail meanwhile (1 s, 2 s, ... apart), counted as retried.
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let metrics = app
            .bare_client()
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let retried = metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"gatehouse_mails_total{result="retried"} "#))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if retried >= 2 {
            assert!(
                metrics.contains("gatehouse_mail_outbox_pending 1"),
                "{metrics}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sink.restart().await;
    wait_for_subject(&sink, &user.email, "Reset your password").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(mails_to(&sink, &user.email).len(), 1);
    let pool = app.sql().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "a sent mail leaves the outbox");
}

#[tokio::test]
async fn starttls_and_smtps_with_credentials_against_a_test_certificate() {
    for (tls, auth) in [
        (SinkTls::StartTls, false),
        (SinkTls::StartTls, true),
        (SinkTls::Implicit, true),
    ] {
        let sink = if auth {
            MailSink::start_with_auth(tls, "mailer", "p@ss word").await
        } else {
            MailSink::start(tls).await
        };
        let ca = sink.ca_file().expect("a CA").to_owned();
        let app = TestApp::spawn_with(|c| {
            mail_to(&sink)(c);
            c.smtp_ca_file = Some(ca);
        })
        .await;
        let user = app.create_user().await;
        let mail = wait_for_subject(&sink, &user.email, "Confirm your email address").await;
        assert!(mail.tls, "{tls:?}: the mail crossed in clear");
        assert_eq!(
            mail.auth_user.as_deref(),
            auth.then_some("mailer"),
            "{tls:?}"
        );
    }
    // Without the CA the certificate is refused: nothing is sent.
    let sink = MailSink::start(SinkTls::Implicit).await;
    let app = TestApp::spawn_with(mail_to(&sink)).await;
    let user = app.create_user().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(mails_to(&sink, &user.email).is_empty());
}

#[tokio::test]
async fn notices_tell_of_a_new_device_a_password_change_and_a_recovery_code() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
    })
    .await;
    let user = app.create_user().await;
    let login_as = |ua: &'static str| {
        let c = reqwest::Client::builder()
            .user_agent(ua)
            .cookie_store(true)
            .build()
            .expect("client");
        let (url, email) = (app.url("/v1/login"), user.email.clone());
        async move {
            let res = c
                .post(url)
                .json(&json!({ "email": email, "password": PASSWORD }))
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), StatusCode::OK);
            c
        }
    };
    // The first device is remembered quietly, as is a known one.
    let phone = login_as("Phone/1.0").await;
    login_as("Phone/1.0").await;
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert!(mails_to(&sink, &user.email).is_empty());
    // Another device: a notice with when, from where and what.
    login_as("Laptop/2.0").await;
    let notice = wait_for_subject(&sink, &user.email, "New sign-in to your account").await;
    assert!(notice.text.contains("Laptop/2.0"), "{}", notice.text);
    assert!(notice.text.contains("127.0.0.1"), "{}", notice.text);
    assert!(
        notice
            .text
            .contains("https://auth.example.test/forgot-password"),
        "{}",
        notice.text
    );
    // A password change.
    let res = phone
        .post(app.url("/v1/me/password"))
        .json(&json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let notice = wait_for_subject(&sink, &user.email, "Your password was changed").await;
    assert!(notice.text.contains("Phone/1.0"), "{}", notice.text);
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert_eq!(mails_to(&sink, &user.email).len(), 2);
    // The audit trail and the outbox agree: every notice went out.
    let pool = app.sql().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

/// Three nodes on one PostgreSQL, one SMTP server: every mail is sent by
/// exactly one node.
#[tokio::test]
async fn on_three_nodes_each_mail_is_sent_once() {
    let _slots = PG_SLOTS.acquire_many(3).await.expect("never closed");
    let sink = MailSink::start(SinkTls::Plain).await;
    let a = TestApp::spawn_on_postgres(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
    })
    .await;
    let others = [
        TestApp::spawn_with(|c| *c = a.config.clone()).await,
        TestApp::spawn_with(|c| *c = a.config.clone()).await,
    ];
    let nodes = [&a, &others[0], &others[1]];
    let users: Vec<TestUser> =
        futures_util::future::join_all((0..6).map(|_| a.create_user())).await;
    // Every node is asked for every user's reset at once.
    let requests = users.iter().flat_map(|u| {
        nodes.iter().map(move |n| {
            let (url, email) = (n.url("/v1/password-reset"), u.email.clone());
            async move {
                reqwest::Client::new()
                    .post(url)
                    .json(&json!({ "email": email }))
                    .send()
                    .await
                    .expect("request")
                    .status()
            }
        })
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mails = sink.wait_for_mails(18, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = sink.mails();
    assert_eq!(all.len(), 18, "{mails:?}");
    let mut ids: Vec<&str> = all
        .iter()
        .map(|m| m.header("message-id").expect("a Message-ID"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 18, "a mail was sent twice");
}

#[tokio::test]
async fn notices_tell_of_a_second_factor_added_a_recovery_code_used_and_an_admin_reset() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
    })
    .await;
    let (user, browser) = app.logged_in().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (_uri, codes) = crate::mfa::enrol(&app, &browser, &user, now).await;
    let added = wait_for_subject(
        &sink,
        &user.email,
        "A sign-in method was added to your account",
    )
    .await;
    assert!(
        added.text.contains("an authenticator app (TOTP)"),
        "{}",
        added.text
    );
    assert!(added.text.contains("127.0.0.1"), "{}", added.text);
    // A recovery code as the second step.
    let client = reqwest::Client::builder()
        .user_agent("Recovery/3.0 <b>bold</b>")
        .cookie_store(true)
        .build()
        .expect("client");
    let token = crate::mfa::first_step(&app, &client, &user).await;
    let res = crate::mfa::second_step(&app, &client, &token, &codes[0]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let used = wait_for_subject(&sink, &user.email, "A recovery code was used to sign in").await;
    assert!(used.text.contains("9 codes are left"), "{}", used.text);
    assert!(
        used.text.contains("Recovery/3.0 <b>bold</b>"),
        "{}",
        used.text
    );
    // The HTML part escapes what the client chose.
    let html = used.html.as_deref().expect("HTML");
    assert!(html.contains("&lt;b&gt;bold&lt;"), "{html}");
    assert!(!html.contains("<b>bold</b>"), "{html}");
    // An administrator removes every factor: the user is told.
    let admin = app
        .create_user_with_role("mfa-admins", &["gatehouse:admin"])
        .await;
    let admin_client = app.client();
    assert_eq!(
        app.login(&admin_client, &admin).await.status(),
        StatusCode::OK
    );
    let id = app
        .get_me(&browser)
        .await
        .json::<Value>()
        .await
        .expect("json")["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = admin_client
        .delete(app.url(&format!("/v1/admin/users/{id}/mfa")))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let removed = wait_for_subject(
        &sink,
        &user.email,
        "A sign-in method was removed from your account",
    )
    .await;
    assert!(
        removed
            .text
            .contains("An administrator removed every second factor"),
        "{}",
        removed.text
    );
}

#[tokio::test]
async fn a_broken_template_override_stops_the_start_up_and_a_good_one_is_used() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("password_reset.subject.txt"),
        "Acme: choose a new password",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("password_reset.txt"),
        "Hello {{ email }}, go to {{ link }} within {{ expires_in }}.\n",
    )
    .expect("write");
    let templates = dir.path().to_owned();
    let app = TestApp::spawn_with(|c| {
        mail_to(&sink)(c);
        c.email_verification = EmailVerification::Off;
        c.email_templates = Some(templates);
    })
    .await;
    let user = app.create_user().await;
    assert_eq!(
        request_reset(&app, &user.email).await.status(),
        StatusCode::ACCEPTED
    );
    let mail = wait_for_subject(&sink, &user.email, "Acme: choose a new password").await;
    assert!(
        mail.text.starts_with(&format!("Hello {}", user.email)),
        "{}",
        mail.text
    );
    assert!(mail.token("/reset-password").is_some());
    assert!(mail.text.contains("within 30 minutes"), "{}", mail.text);

    std::fs::write(dir.path().join("password_reset.txt"), "{{ linkk }}").expect("write");
    let mut config = app.config.clone();
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let err = match gatehouse::Application::build(config).await {
        Ok(_) => panic!("a template with an unknown value must stop the start-up"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("password_reset.txt"), "{err}");
}
