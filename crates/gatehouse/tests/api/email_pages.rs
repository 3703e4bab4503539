//! The hosted pages of mailed links (`/forgot-password`, `/reset-password`,
//! `/verify-email`, `/account/email-verification`) over real HTTP, with a
//! real SMTP server as the mailbox (`mail_sink.rs`): the same answer for
//! known and unknown addresses, links that survive mail scanners, a reset
//! that signs every device out, verification, the 404s without mail, CSRF
//! and hostile input; and the whole reset journey in headless Chromium
//! (`tests/browser/reset_journey.mjs`).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, LOCATION, ORIGIN};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use gatehouse::config::{Config, EmailVerification};

use crate::browser::{artifact_dir, require_tools, run_script};
use crate::helpers::{PASSWORD, TestApp, TestUser, unique_email};
use crate::mail_sink::{MailSink, SinkTls};

/// Long enough for a mail to cross the outbox, the sender and SMTP on a
/// busy 2-core machine.
const MAIL_WAIT: Duration = Duration::from_secs(20);

/// How long a test waits to be sure a mail did not come.
const NO_MAIL_WAIT: Duration = Duration::from_millis(2500);

const NEW_PASSWORD: &str = "a brand new passphrase 42";

/// What `POST /forgot-password` shows, whatever the address.
const ACCEPTED: &str =
    "If an account uses this address, a mail with a link to reset its password is on its way.";

const LINK_INVALID: &str = "This link is invalid, was used, or has expired.";

/// A server that mails through `sink`, configured further by `configure`.
async fn with_mail(sink: &MailSink, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = sink.smtp_url();
    TestApp::spawn_with(move |c| {
        c.smtp_url = Some(url.into());
        c.email_from = Some("gatehouse@example.test".into());
        configure(c);
    })
    .await
}

/// A form post as a browser on the app's own pages sends it.
async fn post_form(
    app: &TestApp,
    client: &Client,
    path: &str,
    fields: &[(&str, &str)],
) -> Response {
    client
        .post(app.url(path))
        .header(ORIGIN, app.origin())
        .form(fields)
        .send()
        .await
        .expect("request")
}

async fn get(client: &Client, url: &str) -> Response {
    client.get(url).send().await.expect("request")
}

fn header<'a>(res: &'a Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn location(res: &Response) -> String {
    header(res, LOCATION.as_str()).to_owned()
}

/// Asserts the status and the headers every page carries, with
/// `Referrer-Policy: same-origin`, and returns the body.
async fn page(res: Response, status: StatusCode) -> String {
    page_with(res, status, "same-origin").await
}

/// As [`page`], for the answer to a mailed link's URL (a `GET` of
/// `/reset-password` or `/verify-email`): its token must be in no
/// `Referer`, so `Referrer-Policy: strict-origin`.
async fn link_page(res: Response, status: StatusCode) -> String {
    page_with(res, status, "strict-origin").await
}

async fn page_with(res: Response, status: StatusCode, referrer_policy: &str) -> String {
    let url = res.url().clone();
    assert_eq!(res.status(), status, "{url}");
    assert!(
        header(&res, CONTENT_TYPE.as_str()).starts_with("text/html; charset=utf-8"),
        "{url}: {}",
        header(&res, CONTENT_TYPE.as_str())
    );
    assert_common_headers(&res);
    assert_eq!(header(&res, "referrer-policy"), referrer_policy, "{url}");
    res.text().await.expect("body")
}

fn assert_common_headers(res: &Response) {
    let csp = header(res, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(res, "x-frame-options"), "DENY");
    assert_eq!(header(res, "x-content-type-options"), "nosniff");
    assert_eq!(header(res, "cache-control"), "no-store");
}

/// The `value` of the hidden `token` input in a page.
fn hidden_token(body: &str) -> Option<&str> {
    let at = body.find(r#"name="token" value=""#)? + r#"name="token" value=""#.len();
    let rest = &body[at..];
    Some(&rest[..rest.find('"')?])
}

/// Waits for the first mail to `to` with a link to `path`; `None` after
/// `timeout`.
async fn wait_for_link(
    sink: &MailSink,
    to: &str,
    path: &str,
    timeout: Duration,
) -> Option<url::Url> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = sink
            .mails()
            .into_iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r == to))
            .find_map(|m| m.link(path));
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// As [`wait_for_link`], but a missing mail fails the test.
async fn link_to(sink: &MailSink, to: &str, path: &str) -> url::Url {
    match wait_for_link(sink, to, path, MAIL_WAIT).await {
        Some(link) => link,
        None => panic!(
            "no mail to {to} with a link to {path} within {MAIL_WAIT:?}; the sink has {:?}",
            sink.mails()
                .iter()
                .map(|m| (m.rcpt_tos.clone(), m.subject.clone()))
                .collect::<Vec<_>>()
        ),
    }
}

/// How many mails to `to` carry a link to `path`.
fn links_to(sink: &MailSink, to: &str, path: &str) -> usize {
    sink.mails()
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == to) && m.link(path).is_some())
        .count()
}

/// `GET /v1/me` of `client`: its JSON (200 asserted).
async fn me(app: &TestApp, client: &Client) -> Value {
    let res = app.get_me(client).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

/// A client signed in through the login form.
async fn page_login(app: &TestApp, email: &str, password: &str) -> Client {
    let client = app.client();
    let res = post_form(
        app,
        &client,
        "/login",
        &[("email", email), ("password", password)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap_or_default()
    );
    client
}

/// Asks for a reset link through the form and returns the mailed link.
async fn reset_link(app: &TestApp, sink: &MailSink, user: &TestUser) -> url::Url {
    let res = post_form(
        app,
        &app.client(),
        "/forgot-password",
        &[("email", &user.email)],
    )
    .await;
    let body = page(res, StatusCode::OK).await;
    assert!(body.contains(ACCEPTED), "{body}");
    link_to(sink, &user.email, "/reset-password").await
}

// ---------------------------------------------------------------------------
// Asking for a link
// ---------------------------------------------------------------------------

#[tokio::test]
async fn forgot_password_answers_alike_for_known_and_unknown_addresses() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |_| {}).await;
    let user = app.create_user().await;
    let client = app.client();

    // The login page links to the form.
    let login = page(get(&client, &app.url("/login")).await, StatusCode::OK).await;
    assert!(
        login.contains(r#"<a href="/forgot-password">Forgot your password?</a>"#),
        "{login}"
    );

    let form = page(
        get(&client, &app.url("/forgot-password")).await,
        StatusCode::OK,
    )
    .await;
    for needle in [
        "<h1>Reset your password</h1>",
        r#"<form method="post" action="/forgot-password" novalidate>"#,
        r#"<label for="email">"#,
        r#"name="email" type="email" autocomplete="email""#,
    ] {
        assert!(form.contains(needle), "{needle} missing from {form}");
    }
    assert!(!form.contains("<script"), "{form}");

    let unknown = unique_email();
    let known_res = post_form(&app, &client, "/forgot-password", &[("email", &user.email)]).await;
    let known_status = known_res.status();
    let known_body = page(known_res, StatusCode::OK).await;
    let unknown_res = post_form(&app, &client, "/forgot-password", &[("email", &unknown)]).await;
    let unknown_status = unknown_res.status();
    let unknown_body = page(unknown_res, StatusCode::OK).await;
    assert_eq!(known_status, unknown_status);
    assert_eq!(
        known_body, unknown_body,
        "the page tells the addresses apart"
    );
    assert!(known_body.contains(ACCEPTED), "{known_body}");
    // Not even the address is repeated.
    assert!(!known_body.contains(&user.email), "{known_body}");

    let link = link_to(&sink, &user.email, "/reset-password").await;
    assert_eq!(link.origin().ascii_serialization(), app.origin());
    assert!(
        link.query_pairs()
            .any(|(k, v)| k == "token" && v.len() == 43),
        "{link}"
    );
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert!(
        sink.mails().iter().all(|m| !m.rcpt_tos.contains(&unknown)),
        "an unknown address was mailed"
    );
    assert_eq!(links_to(&sink, &user.email, "/reset-password"), 1);
}

#[tokio::test]
async fn forgot_password_refuses_what_is_no_address_and_is_throttled() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |c| c.login_max_failures = 2).await;
    let client = app.client();

    let res = post_form(
        &app,
        &client,
        "/forgot-password",
        &[("email", "not an <address>")],
    )
    .await;
    let body = page(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body.contains(r#"id="email-error""#), "{body}");
    assert!(body.contains(r#"aria-invalid="true""#), "{body}");
    // The value is kept, escaped.
    assert!(body.contains("value=\"not an &lt;address&gt;\""), "{body}");

    let email = unique_email();
    for _ in 0..2 {
        let res = post_form(&app, &client, "/forgot-password", &[("email", &email)]).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = post_form(&app, &client, "/forgot-password", &[("email", &email)]).await;
    let retry_after: u64 = header(&res, "retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    let body = page(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(body.contains("Too many attempts. Try again in"), "{body}");
    assert!(body.contains(r#"role="alert""#), "{body}");
}

// ---------------------------------------------------------------------------
// The reset link
// ---------------------------------------------------------------------------

#[tokio::test]
async fn opening_the_reset_link_spends_nothing_and_its_token_works_once() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |c| c.email_verification = EmailVerification::Off).await;
    let user = app.create_user().await;
    let link = reset_link(&app, &sink, &user).await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("a token");

    // A mail scanner, a link preview and the user's own clicks.
    let scanner = app.bare_client();
    for _ in 0..3 {
        let body = link_page(get(&scanner, link.as_str()).await, StatusCode::OK).await;
        assert!(body.contains("<h1>Choose a new password</h1>"), "{body}");
        assert!(body.contains(r#"<form method="post" action="/reset-password" novalidate>"#));
        assert!(body.contains(r#"autocomplete="new-password""#), "{body}");
        assert_eq!(hidden_token(&body), Some(token.as_str()));
    }
    for _ in 0..2 {
        let res = scanner.head(link.as_str()).send().await.expect("HEAD");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "referrer-policy"), "strict-origin");
        assert_common_headers(&res);
        assert!(res.text().await.expect("body").is_empty());
    }

    // A weak password: the form again, the token kept and unspent.
    let client = app.client();
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[("token", &token), ("new_password", "short")],
    )
    .await;
    let body = page(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body.contains("The password was not changed"), "{body}");
    assert!(body.contains(r#"id="new_password-error""#), "{body}");
    assert_eq!(hidden_token(&body), Some(token.as_str()));
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[("token", &token), ("new_password", &user.email)],
    )
    .await;
    page(res, StatusCode::UNPROCESSABLE_ENTITY).await;

    // The real thing: 303 to the login page with its notice.
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[("token", &token), ("new_password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?notice=password-reset");
    assert_common_headers(&res);
    let login = page(
        get(&client, &app.url("/login?notice=password-reset")).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        login.contains(r#"<p class="notice" role="status">Your password was changed. Sign in with the new one.</p>"#),
        "{login}"
    );

    // Spent: a second post, and the link itself, lead nowhere.
    let res = post_form(
        &app,
        &client,
        "/reset-password",
        &[
            ("token", &token),
            ("new_password", "yet another passphrase"),
        ],
    )
    .await;
    let body = page(res, StatusCode::BAD_REQUEST).await;
    assert!(body.contains(LINK_INVALID), "{body}");
    assert!(body.contains(r#"href="/forgot-password""#), "{body}");
    assert_eq!(
        app.login_with(&app.client(), &user.email, "yet another passphrase")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The page of a spent link still only renders.
    link_page(get(&scanner, link.as_str()).await, StatusCode::OK).await;
}

#[tokio::test]
async fn a_reset_through_the_pages_signs_every_device_out() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |c| c.email_verification = EmailVerification::Off).await;
    let user = app.create_user().await;
    let (old_api, old_page) = (
        app.client(),
        page_login(&app, &user.email, &user.password).await,
    );
    assert_eq!(app.login(&old_api, &user).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &old_api).await["user"]["email_verified"], false);

    let link = reset_link(&app, &sink, &user).await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1
        .into_owned();
    let res = post_form(
        &app,
        &app.client(),
        "/reset-password",
        &[("token", &token), ("new_password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // Every session ended: the API's and the page's.
    assert_eq!(
        app.get_me(&old_api).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = get(&old_page, &app.url("/account")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
    // The old password is dead, the new one works, and the mailbox is proven.
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.client();
    assert_eq!(
        app.login_with(&fresh, &user.email, NEW_PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(me(&app, &fresh).await["user"]["email_verified"], true);
    let signed_in = page_login(&app, &user.email, NEW_PASSWORD).await;
    let account = page(get(&signed_in, &app.url("/account")).await, StatusCode::OK).await;
    assert!(account.contains(&user.email), "{account}");
    assert!(
        account.contains(r#"<dd id="email-state">Verified</dd>"#),
        "{account}"
    );
    assert!(
        !account.contains("/account/email-verification"),
        "{account}"
    );
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_verification_link_verifies_only_when_its_button_is_pressed() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |_| {}).await;
    let email = unique_email();
    let res = app
        .bare_client()
        .post(app.url("/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
    let link = link_to(&sink, &email, "/verify-email").await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1
        .into_owned();
    let user = TestUser {
        email: email.clone(),
        password: PASSWORD.to_owned(),
    };
    let api = app.client();
    assert_eq!(app.login(&api, &user).await.status(), StatusCode::OK);
    assert_eq!(me(&app, &api).await["user"]["email_verified"], false);

    // The account page says so, and offers a new link.
    let browser = page_login(&app, &email, PASSWORD).await;
    let account = page(get(&browser, &app.url("/account")).await, StatusCode::OK).await;
    assert!(
        account.contains(r#"<dd id="email-state">Not verified</dd>"#),
        "{account}"
    );
    assert!(
        account.contains(r#"<form method="post" action="/account/email-verification">"#),
        "{account}"
    );

    // Opening the link (and HEAD) changes nothing.
    let scanner = app.bare_client();
    for _ in 0..3 {
        let body = link_page(get(&scanner, link.as_str()).await, StatusCode::OK).await;
        assert!(
            body.contains(r#"<form method="post" action="/verify-email">"#),
            "{body}"
        );
        assert!(body.contains("Verify my email address"), "{body}");
        assert_eq!(hidden_token(&body), Some(token.as_str()));
        let res = scanner.head(link.as_str()).send().await.expect("HEAD");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "referrer-policy"), "strict-origin");
    }
    assert_eq!(me(&app, &api).await["user"]["email_verified"], false);

    // The button, from a browser that is not signed in: a page says so.
    let res = post_form(&app, &app.client(), "/verify-email", &[("token", &token)]).await;
    let body = page(res, StatusCode::OK).await;
    assert!(body.contains("Your email address is verified."), "{body}");
    assert!(body.contains(r#"href="/account""#), "{body}");
    assert_eq!(me(&app, &api).await["user"]["email_verified"], true);

    // Spent.
    let res = post_form(&app, &app.client(), "/verify-email", &[("token", &token)]).await;
    let body = page(res, StatusCode::BAD_REQUEST).await;
    assert!(body.contains(LINK_INVALID), "{body}");

    let account = page(get(&browser, &app.url("/account")).await, StatusCode::OK).await;
    assert!(
        account.contains(r#"<dd id="email-state">Verified</dd>"#),
        "{account}"
    );
    assert!(
        !account.contains("/account/email-verification"),
        "{account}"
    );
}

#[tokio::test]
async fn the_account_page_mails_a_verification_link_on_request() {
    let sink = MailSink::start(SinkTls::Plain).await;
    // No mail on registration: the button is the only way to get one.
    let app = with_mail(&sink, |c| c.email_verification = EmailVerification::Off).await;
    let user = app.create_user().await;
    let browser = page_login(&app, &user.email, &user.password).await;

    let res = post_form(&app, &browser, "/account/email-verification", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account?notice=verification-sent");
    let account = page(
        get(&browser, &app.url("/account?notice=verification-sent")).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        account.contains("If your address is not verified yet, a mail with a link is on its way."),
        "{account}"
    );
    let link = link_to(&sink, &user.email, "/verify-email").await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1
        .into_owned();

    // A second press within the minute: the same answer, no second mail.
    let res = post_form(&app, &browser, "/account/email-verification", &[]).await;
    assert_eq!(location(&res), "/account?notice=verification-sent");
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert_eq!(links_to(&sink, &user.email, "/verify-email"), 1);

    // Pressed in the browser that is signed in as that user: back to the
    // account page, which says so.
    let res = post_form(&app, &browser, "/verify-email", &[("token", &token)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account?notice=email-verified");
    let account = page(
        get(&browser, &app.url("/account?notice=email-verified")).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        account.contains("Your email address is verified."),
        "{account}"
    );
    assert!(
        account.contains(r#"<dd id="email-state">Verified</dd>"#),
        "{account}"
    );

    // Without a session the button leads to the login page, and mails nothing.
    let res = post_form(&app, &app.client(), "/account/email-verification", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(location(&res).starts_with("/login"), "{}", location(&res));
}

// ---------------------------------------------------------------------------
// Without mail
// ---------------------------------------------------------------------------

#[tokio::test]
async fn without_smtp_the_mail_pages_do_not_exist() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    for path in [
        "/forgot-password",
        "/reset-password?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "/verify-email?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = get(&client, &app.url(path)).await;
        let body = if path.contains("token=") {
            link_page(res, StatusCode::NOT_FOUND).await
        } else {
            page(res, StatusCode::NOT_FOUND).await
        };
        assert!(body.contains("There is no such page."), "{path}: {body}");
    }
    for (path, fields) in [
        ("/forgot-password", vec![("email", user.email.as_str())]),
        (
            "/reset-password",
            vec![("token", "AAAA"), ("new_password", NEW_PASSWORD)],
        ),
        ("/verify-email", vec![("token", "AAAA")]),
    ] {
        let res = post_form(&app, &client, path, &fields).await;
        page(res, StatusCode::NOT_FOUND).await;
    }
    let login = page(get(&client, &app.url("/login")).await, StatusCode::OK).await;
    assert!(!login.contains("forgot-password"), "{login}");

    let browser = page_login(&app, &user.email, &user.password).await;
    let res = post_form(&app, &browser, "/account/email-verification", &[]).await;
    page(res, StatusCode::NOT_FOUND).await;
    let account = page(get(&browser, &app.url("/account")).await, StatusCode::OK).await;
    assert!(!account.contains("Not verified"), "{account}");
    assert!(
        !account.contains("/account/email-verification"),
        "{account}"
    );
}

// ---------------------------------------------------------------------------
// CSRF and hostile input
// ---------------------------------------------------------------------------

#[tokio::test]
async fn forged_posts_are_refused_and_spend_nothing() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |c| c.email_verification = EmailVerification::Off).await;
    let user = app.create_user().await;
    let link = reset_link(&app, &sink, &user).await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .expect("token")
        .1
        .into_owned();
    let fields = [
        ("token", token.as_str()),
        ("new_password", "an attacker's passphrase"),
    ];

    for (path, fields) in [
        ("/reset-password", &fields[..]),
        ("/verify-email", &fields[..1]),
        ("/forgot-password", &[("email", user.email.as_str())][..]),
    ] {
        for origin in ["https://evil.example", "null"] {
            let res = app
                .client()
                .post(app.url(path))
                .header(ORIGIN, origin)
                .form(fields)
                .send()
                .await
                .expect("request");
            let body = page(res, StatusCode::FORBIDDEN).await;
            assert!(
                body.contains("another site"),
                "{path} from {origin}: {body}"
            );
        }
        // No Origin: only a browser's own `Sec-Fetch-Site: same-origin` passes.
        let res = app
            .client()
            .post(app.url(path))
            .form(fields)
            .send()
            .await
            .expect("request");
        page(res, StatusCode::FORBIDDEN).await;
        let res = app
            .client()
            .post(app.url(path))
            .header("sec-fetch-site", "cross-site")
            .form(fields)
            .send()
            .await
            .expect("request");
        page(res, StatusCode::FORBIDDEN).await;
    }
    tokio::time::sleep(NO_MAIL_WAIT).await;
    assert_eq!(
        links_to(&sink, &user.email, "/reset-password"),
        1,
        "a forged request mailed"
    );

    // The token survived the forgeries.
    let res = app
        .client()
        .post(app.url("/reset-password"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token.as_str()), ("new_password", NEW_PASSWORD)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.login_with(&app.client(), &user.email, NEW_PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn hostile_input_gets_pages_never_a_server_error() {
    let sink = MailSink::start(SinkTls::Plain).await;
    let app = with_mail(&sink, |_| {}).await;
    let client = app.client();

    // 70 KB: past the 64 KiB limit, answered before the handler.
    let big = "a".repeat(70 * 1024);
    for (path, field) in [
        ("/forgot-password", "email"),
        ("/reset-password", "token"),
        ("/verify-email", "token"),
    ] {
        let res = post_form(&app, &client, path, &[(field, &big)]).await;
        let body = page(res, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert!(body.contains("larger than 64 KiB"), "{path}: {body}");
    }

    // Tokens that are no token: the same 400 page as a spent one.
    for token in [
        "garbage",
        "",
        "' OR '1'='1",
        &"A".repeat(43),
        &"%".repeat(100),
        "\u{0}\u{202e}",
    ] {
        let res = post_form(
            &app,
            &client,
            "/reset-password",
            &[("token", token), ("new_password", NEW_PASSWORD)],
        )
        .await;
        let body = page(res, StatusCode::BAD_REQUEST).await;
        assert!(body.contains(LINK_INVALID), "{token:?}: {body}");
        let res = post_form(&app, &client, "/verify-email", &[("token", token)]).await;
        let body = page(res, StatusCode::BAD_REQUEST).await;
        assert!(body.contains(LINK_INVALID), "{token:?}: {body}");
    }
    // A link without a token, or with two, is no link.
    for path in [
        "/reset-password",
        "/reset-password?token=",
        "/verify-email?token=a&token=b",
    ] {
        let body = link_page(get(&client, &app.url(path)).await, StatusCode::BAD_REQUEST).await;
        assert!(body.contains(LINK_INVALID), "{path}: {body}");
    }
    // Whatever a link carries is shown escaped, never run.
    let body = link_page(
        get(
            &client,
            &app.url("/reset-password?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(!body.contains("<script>"), "{body}");
    assert_eq!(
        hidden_token(&body),
        Some("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;")
    );

    // SQL in the address: the page every address gets, or the form again.
    let accepted = page(
        post_form(
            &app,
            &client,
            "/forgot-password",
            &[("email", &unique_email())],
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for email in [
        "' OR '1'='1",
        "x@example.com' OR '1'='1",
        "a@b.example'; DROP TABLE users; --",
        "\" OR 1=1 --@example.com",
        "robert'); DELETE FROM mail_tokens; --@example.com",
        "%' UNION SELECT password_hash FROM users --",
    ] {
        let res = post_form(&app, &client, "/forgot-password", &[("email", email)]).await;
        let status = res.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{email:?}: {status}"
        );
        let body = page(res, status).await;
        if status == StatusCode::OK {
            assert_eq!(body, accepted, "{email:?}");
        }
    }

    // Form rules: unknown, duplicated and missing fields, other media.
    for body in [
        "email=a%40b.example&extra=1",
        "email=a&email=b",
        "",
        "token=x",
    ] {
        let res = client
            .post(app.url("/forgot-password"))
            .header(ORIGIN, app.origin())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("request");
        page(res, StatusCode::BAD_REQUEST).await;
    }
    let res = client
        .post(app.url("/reset-password"))
        .header(ORIGIN, app.origin())
        .json(&json!({ "token": "x", "new_password": NEW_PASSWORD }))
        .send()
        .await
        .expect("request");
    page(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Still serving.
    let user = app.create_user().await;
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------
// In a browser
// ---------------------------------------------------------------------------

/// The screenshots the reset journey must leave behind.
const JOURNEY_SCREENSHOTS: &[&str] = &[
    "r1-forgot-password",
    "r2-link-requested",
    "r3-reset-form",
    "r4-login-after-reset",
    "r5-account",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reset_journey_passes_in_headless_chromium() {
    require_tools();
    let sink = MailSink::start(SinkTls::Plain).await;
    // The `__Host-` cookie, as browser.rs: Chromium keeps it on 127.0.0.1.
    let app = with_mail(&sink, |c| c.cookie_secure = true).await;
    let user = app.create_user().await;

    let artifacts = artifact_dir().join("reset");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    // Where the script waits for the mailed link (it only gets argv).
    let handoff = tempfile::tempdir().expect("temp dir");
    let started = SystemTime::now();
    let log = artifacts.join("journey.log");
    let mut script = {
        let (base, dir, handoff) = (
            app.url(""),
            artifacts.display().to_string(),
            handoff.path().display().to_string(),
        );
        let (email, log) = (user.email.clone(), log.clone());
        tokio::task::spawn_blocking(move || {
            run_script(
                "reset_journey.mjs",
                &[&base, &dir, &handoff, &email, NEW_PASSWORD],
                &[],
                &log,
            )
        })
    };

    // The script asks for the link; the mail comes here; the link goes to
    // the script through a file, written whole (rename).
    let link = tokio::select! {
        link = wait_for_link(&sink, &user.email, "/reset-password", Duration::from_secs(90)) => link,
        done = &mut script => {
            let (ok, output) = done.expect("the journey's thread");
            panic!("the journey ended (ok: {ok}) before its mail came:\n{output}");
        }
    };
    let Some(link) = link else {
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        panic!(
            "no reset mail to {} came; the journey so far:\n{output}",
            user.email
        );
    };
    write_whole(&handoff.path().join("link"), link.as_str());

    let (ok, output) = script.await.expect("the journey's thread");
    println!("{output}");
    assert!(ok, "the reset journey failed:\n{output}");

    for name in JOURNEY_SCREENSHOTS {
        let path = artifacts.join(format!("{name}.png"));
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} was not written ({e})", path.display()));
        assert!(meta.len() > 1000, "{} is nearly empty", path.display());
        assert!(
            meta.modified().is_ok_and(|m| m >= started),
            "{} is from an earlier run",
            path.display()
        );
        let png = std::fs::read(&path).expect("read screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            path.display()
        );
    }

    // What the browser did, seen from the API: one reset mail, the old
    // password dead, the new one alive, the address proven.
    assert_eq!(links_to(&sink, &user.email, "/reset-password"), 1);
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let client = app.client();
    assert_eq!(
        app.login_with(&client, &user.email, NEW_PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(me(&app, &client).await["user"]["email_verified"], true);
}

/// Writes `text` to `path` so that a reader never sees part of it.
fn write_whole(path: &Path, text: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).expect("writing the handoff file");
    std::fs::rename(&partial, path).expect("renaming the handoff file");
}
