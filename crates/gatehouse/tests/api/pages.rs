//! The hosted pages over real HTTP, as a browser would use them: status
//! codes, redirects, cookies, CSRF refusals, open-redirect attempts,
//! escaping, and hostile form bodies.

use reqwest::header::{CONTENT_TYPE, LOCATION, ORIGIN, USER_AGENT};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

use gatehouse::config::Registration;

use crate::helpers::*;

const EVIL: &str = "https://evil.example";

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

async fn get(app: &TestApp, client: &Client, path: &str) -> Response {
    client.get(app.url(path)).send().await.expect("request")
}

fn location(res: &Response) -> String {
    res.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn header<'a>(res: &'a Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Asserts the headers every page answer carries, and returns the body.
async fn page_body(res: Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status);
    assert_page_headers(&res);
    assert!(
        header(&res, "content-type").starts_with("text/html; charset=utf-8"),
        "{}",
        header(&res, "content-type")
    );
    res.text().await.expect("body")
}

fn assert_page_headers(res: &Response) {
    let csp = header(res, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    // One script, from this origin, which talks to this origin only: no
    // inline script, no eval, nothing elsewhere.
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(res, "x-frame-options"), "DENY");
    assert_eq!(header(res, "referrer-policy"), "same-origin");
    assert_eq!(header(res, "x-content-type-options"), "nosniff");
    assert_eq!(header(res, "cache-control"), "no-store");
}

/// Logs in through the login form; returns the answer (303 on success).
async fn page_login(app: &TestApp, client: &Client, user: &TestUser) -> Response {
    post_form(
        app,
        client,
        "/login",
        &[("email", &user.email), ("password", &user.password)],
    )
    .await
}

/// The text of the login form's one error message.
fn login_error(body: &str) -> &str {
    let start = body.find(r#"id="login-error""#).expect("an error message");
    let rest = &body[start..];
    let open = rest.find('>').expect("tag end") + 1;
    let close = rest.find("</p>").expect("close");
    &rest[open..close]
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_login_page_is_an_accessible_form_with_strict_headers() {
    let app = TestApp::spawn().await;
    let res = get(&app, &app.client(), "/login").await;
    let body = page_body(res, StatusCode::OK).await;
    for needle in [
        "<!DOCTYPE html>",
        r#"<html lang="en">"#,
        "<h1>Sign in</h1>",
        r#"<label for="email">"#,
        r#"<label for="password">"#,
        r#"autocomplete="email""#,
        r#"autocomplete="current-password""#,
        r#"<form method="post" action="/login""#,
        r#"href="/assets/gatehouse.css""#,
        r#"href="/register""#,
    ] {
        assert!(body.contains(needle), "{needle} missing from {body}");
    }
    // Passkeys are off (the relying party id would be 127.0.0.1): no
    // JavaScript at all.
    assert!(!body.contains("<script"), "no JavaScript at all");
    // The default target is not carried.
    assert!(!body.contains("return_to"), "{body}");
}

#[tokio::test]
async fn the_stylesheet_is_served_as_css_with_a_focus_style() {
    let app = TestApp::spawn().await;
    let res = get(&app, &app.client(), "/assets/gatehouse.css").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "text/css; charset=utf-8");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    let css = res.text().await.expect("css");
    assert!(css.contains(":focus-visible"));
}

#[tokio::test]
async fn the_csp_lets_a_login_redirect_to_allowed_origins() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let res = get(&app, &app.client(), "/login").await;
    let csp = header(&res, "content-security-policy").to_owned();
    assert!(
        csp.contains("form-action 'self'") && csp.contains("https://app.example.com"),
        "{csp}"
    );
}

// ---------------------------------------------------------------------------
// Login and logout
// ---------------------------------------------------------------------------

#[tokio::test]
async fn logging_in_sets_the_session_cookie_and_redirects_to_the_account_page() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();

    let res = page_login(&app, &client, &user).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_page_headers(&res);
    assert_eq!(location(&res), "/account");
    let cookie = set_cookie_header(&res, app.cookie_name()).expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");

    let body = page_body(get(&app, &client, "/account").await, StatusCode::OK).await;
    assert!(body.contains(&user.email));
    // The same cookie works on the JSON API: one session, two faces.
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_secure_cookies_the_page_login_uses_the_host_prefix() {
    let app = TestApp::spawn_with(|c| c.cookie_secure = true).await;
    let user = app.create_user().await;
    let res = page_login(&app, &app.bare_client(), &user).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie_header(&res, "__Host-gatehouse").expect("a __Host- cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("Path=/") && !cookie.contains("Domain"),
        "{cookie}"
    );
}

#[tokio::test]
async fn failed_logins_read_alike_for_unknown_email_wrong_password_and_disabled_user() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let disabled = app.create_user().await;
    let record = app
        .auth
        .admin
        .user_by_email(&disabled.email)
        .await
        .expect("store")
        .expect("user");
    app.auth
        .admin
        .set_disabled(record.id, true, gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("disabled");

    let mut messages = Vec::new();
    for (email, password) in [
        (unique_email(), PASSWORD.to_owned()),
        (user.email.clone(), "not the password at all".to_owned()),
        (disabled.email.clone(), disabled.password.clone()),
    ] {
        let client = app.client();
        let res = post_form(
            &app,
            &client,
            "/login",
            &[("email", &email), ("password", &password)],
        )
        .await;
        assert!(set_cookie_header(&res, app.cookie_name()).is_none());
        assert!(
            header(&res, "www-authenticate").starts_with(r#"Bearer realm="gatehouse""#),
            "every 401 carries a challenge"
        );
        let body = page_body(res, StatusCode::UNAUTHORIZED).await;
        // The email is kept for a retry; the password never comes back.
        assert!(body.contains(&format!(r#"value="{email}""#)), "{body}");
        assert!(!body.contains(&password));
        assert!(body.contains(r#"aria-describedby="login-error""#), "{body}");
        messages.push(login_error(&body).to_owned());
    }
    assert_eq!(messages[0], "The email or password is incorrect.");
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:?}");
}

#[tokio::test]
async fn a_throttled_login_form_is_429_with_retry_after_and_a_message() {
    let app = TestApp::spawn_with(|c| c.login_max_failures = 2).await;
    let user = app.create_user().await;
    let client = app.client();
    let wrong = [
        ("email", user.email.as_str()),
        ("password", "wrong password!"),
    ];
    for _ in 0..2 {
        let res = post_form(&app, &client, "/login", &wrong).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = page_login(&app, &client, &user).await;
    let retry: u64 = header(&res, "retry-after").parse().expect("Retry-After");
    assert!(retry >= 1);
    let body = page_body(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(login_error(&body).starts_with("Too many attempts. Try again in"));
}

#[tokio::test]
async fn the_login_page_sends_a_signed_in_visitor_on() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    page_login(&app, &client, &user).await;

    let res = get(&app, &client, "/login?return_to=/elsewhere").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/elsewhere");
}

#[tokio::test]
async fn logging_out_ends_the_session_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    page_login(&app, &client, &user).await;

    let res = post_form(&app, &client, "/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?notice=signed-out");
    let cookie = set_cookie_header(&res, app.cookie_name()).expect("a removal cookie");
    assert!(cookie.contains("Max-Age=0"), "{cookie}");

    let res = get(&app, &client, "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?return_to=/account");
    let body = page_body(
        get(&app, &client, "/login?notice=signed-out").await,
        StatusCode::OK,
    )
    .await;
    assert!(body.contains("You are signed out."));
}

#[tokio::test]
async fn logging_out_ends_the_session_server_side_not_just_the_cookie() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let res = page_login(&app, &app.bare_client(), &user).await;
    let secret = session_cookie_value(&res, app.cookie_name()).expect("cookie");
    let cookie = format!("{}={secret}", app.cookie_name());

    let res = app
        .bare_client()
        .post(app.url("/logout"))
        .header(ORIGIN, app.origin())
        .header("cookie", &cookie)
        .form(&[] as &[(&str, &str)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // A copy of the cookie kept elsewhere no longer works.
    let res = app
        .bare_client()
        .get(app.url("/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------
// return_to: no open redirects
// ---------------------------------------------------------------------------

#[tokio::test]
async fn allowed_return_to_targets_are_followed_after_login() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let user = app.create_user().await;
    let own = format!("{}/account", app.origin());
    for (target, expected) in [
        ("/account/elsewhere?x=1", "/account/elsewhere?x=1"),
        (
            "https://app.example.com/after",
            "https://app.example.com/after",
        ),
        (own.as_str(), own.as_str()),
    ] {
        let res = post_form(
            &app,
            &app.client(),
            "/login",
            &[
                ("email", &user.email),
                ("password", &user.password),
                ("return_to", target),
            ],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), expected, "{target}");
    }
}

/// What an attacker would put in `return_to`.
const HOSTILE_TARGETS: &[&str] = &[
    "//evil.example",
    "//evil.example/account",
    "///evil.example",
    "https://evil.example",
    "https://evil.example/account",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "https://app.example.com.evil.com",
    "https://app.example.com@evil.com/",
    "http://app.example.com/",
    "%2F%2Fevil.example",
    "%2f%2fevil.example",
    "/%2F%2Fevil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "\t//evil.example",
    "/.//evil.example",
    "/a/..//evil.example",
    "https:evil.example",
    "evil.example",
];

#[tokio::test]
async fn open_redirect_attempts_after_login_land_on_the_account_page() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let user = app.create_user().await;
    for target in HOSTILE_TARGETS {
        let res = post_form(
            &app,
            &app.client(),
            "/login",
            &[
                ("email", &user.email),
                ("password", &user.password),
                ("return_to", target),
            ],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{target:?}");
        let loc = location(&res);
        // `/%2F%2Fevil.example` is a path on this server, and harmless.
        assert!(
            loc == "/account" || (*target == "/%2F%2Fevil.example" && loc == *target),
            "{target:?} redirected to {loc:?}"
        );
    }
}

#[tokio::test]
async fn open_redirect_attempts_are_not_carried_by_the_login_page() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let signed_in = app.client();
    page_login(&app, &signed_in, &user).await;
    for target in HOSTILE_TARGETS {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", target)
            .finish();
        let path = format!("/login?{query}");
        // The form does not carry it in its hidden field...
        let body = page_body(get(&app, &app.client(), &path).await, StatusCode::OK).await;
        if *target != "/%2F%2Fevil.example" {
            assert!(!body.contains("evil"), "{target:?} carried: {body}");
        }
        // ...and a signed-in visitor is not sent there.
        let res = get(&app, &signed_in, &path).await;
        let loc = location(&res);
        assert!(
            loc == "/account" || (*target == "/%2F%2Fevil.example" && loc == *target),
            "{target:?} redirected to {loc:?}"
        );
    }
}

#[tokio::test]
async fn the_login_form_carries_return_to_in_a_hidden_field() {
    let app = TestApp::spawn().await;
    let body = page_body(
        get(
            &app,
            &app.client(),
            "/login?return_to=%2Fafter%3Fa%3D1%26b%3D2",
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        body.contains(r#"<input type="hidden" name="return_to" value="/after?a=1&amp;b=2">"#),
        "{body}"
    );
    // The link to registration carries it on too.
    assert!(
        body.contains(r#"href="/register?return_to=%2Fafter%3Fa%3D1%26b%3D2""#),
        "{body}"
    );
}

// ---------------------------------------------------------------------------
// The account page
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_account_page_redirects_to_login_without_a_session() {
    let app = TestApp::spawn().await;
    let res = get(&app, &app.client(), "/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_page_headers(&res);
    assert_eq!(location(&res), "/login?return_to=/account");
    assert!(set_cookie_header(&res, app.cookie_name()).is_none());
}

#[tokio::test]
async fn a_forged_or_ended_cookie_is_sent_to_login_and_cleared() {
    let app = TestApp::spawn().await;
    for cookie in [
        format!("{}=forged", app.cookie_name()),
        format!("{}={}", app.cookie_name(), "A".repeat(43)),
    ] {
        let res = app
            .bare_client()
            .get(app.url("/account"))
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/login?return_to=/account");
        let removal = set_cookie_header(&res, app.cookie_name()).expect("cleared");
        assert!(removal.contains("Max-Age=0"), "{removal}");
    }
}

#[tokio::test]
async fn the_account_page_lists_every_device_and_marks_this_one() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let laptop = app.client();
    let res = laptop
        .post(app.url("/login"))
        .header(ORIGIN, app.origin())
        .header(USER_AGENT, "LaptopBrowser/1.0")
        .form(&[("email", &user.email), ("password", &user.password)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let phone = app.client();
    let res = phone
        .post(app.url("/v1/login"))
        .header(USER_AGENT, "PhoneApp/2.0")
        .json(&serde_json::json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);

    let body = page_body(get(&app, &laptop, "/account").await, StatusCode::OK).await;
    assert_eq!(body.matches(r#"<li class="session"#).count(), 2, "{body}");
    assert_eq!(body.matches("(this device)").count(), 1);
    let this = body.find("LaptopBrowser/1.0").expect("laptop listed");
    let other = body.find("PhoneApp/2.0").expect("phone listed");
    assert!(this < other, "this device comes first");
    assert!(body.contains("127.0.0.1"));
    assert!(body.contains("<time datetime="));
    assert!(body.contains(r#"action="/account/sessions/end-others""#));
    assert!(body.contains(r#"autocomplete="new-password""#));
}

#[tokio::test]
async fn user_agents_are_html_escaped_on_the_account_page() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    let hostile = r#"<script>alert("ua")</script><img src=x onerror=alert(1)>"#;
    let res = client
        .post(app.url("/login"))
        .header(ORIGIN, app.origin())
        .header(USER_AGENT, hostile)
        .form(&[("email", &user.email), ("password", &user.password)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let body = page_body(get(&app, &client, "/account").await, StatusCode::OK).await;
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(!body.contains("<img src=x"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(&quot;ua&quot;)&lt;/script&gt;"),
        "{body}"
    );
}

#[tokio::test]
async fn emails_typed_into_forms_come_back_escaped() {
    let app = TestApp::spawn().await;
    let hostile = r#""><script>alert(1)</script>"#;
    let res = post_form(
        &app,
        &app.client(),
        "/login",
        &[("email", hostile), ("password", "whatever it is")],
    )
    .await;
    let body = page_body(res, StatusCode::UNAUTHORIZED).await;
    assert!(!body.contains("<script>alert(1)"), "{body}");
    assert!(
        body.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );

    let res = post_form(
        &app,
        &app.client(),
        "/register",
        &[("email", hostile), ("password", PASSWORD)],
    )
    .await;
    let body = page_body(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(!body.contains("<script>alert(1)"), "{body}");
}

#[tokio::test]
async fn ending_another_device_from_the_page_signs_it_out() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let laptop = app.client();
    page_login(&app, &laptop, &user).await;
    let phone = app.client();
    assert_eq!(app.login(&phone, &user).await.status(), StatusCode::OK);
    let sessions = app.sessions(&laptop).await;
    let phone_id = sessions
        .iter()
        .find(|s| s["current"] == Value::Bool(false))
        .and_then(|s| s["id"].as_str())
        .expect("the phone's session")
        .to_owned();

    let res = post_form(
        &app,
        &laptop,
        &format!("/account/sessions/{phone_id}/end"),
        &[],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account?notice=session-ended");

    assert_eq!(app.get_me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.sessions(&laptop).await.len(), 1);
    let body = page_body(
        get(&app, &laptop, "/account?notice=session-ended").await,
        StatusCode::OK,
    )
    .await;
    assert!(body.contains("That device was signed out."));
    assert!(!body.contains(&phone_id));
}

#[tokio::test]
async fn ending_this_device_from_the_page_signs_the_browser_out() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    page_login(&app, &client, &user).await;
    let me: Value = app.get_me(&client).await.json().await.expect("json");
    let id = me["session"]["id"].as_str().expect("id").to_owned();

    let res = post_form(&app, &client, &format!("/account/sessions/{id}/end"), &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?notice=signed-out");
    assert!(set_cookie_header(&res, app.cookie_name()).is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(app.get_me(&client).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_users_session_or_a_bad_id_is_404_and_nothing_ends() {
    let app = TestApp::spawn().await;
    let (_, victim) = app.logged_in().await;
    let me: Value = app.get_me(&victim).await.json().await.expect("json");
    let victims_id = me["session"]["id"].as_str().expect("id").to_owned();
    let user = app.create_user().await;
    let attacker = app.client();
    page_login(&app, &attacker, &user).await;

    for id in [
        victims_id.as_str(),
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "1%27%20OR%20%271%27%3D%271",
    ] {
        let res = post_form(&app, &attacker, &format!("/account/sessions/{id}/end"), &[]).await;
        page_body(res, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(app.get_me(&victim).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn signing_out_everywhere_else_keeps_only_this_device() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let laptop = app.client();
    page_login(&app, &laptop, &user).await;
    let others = [app.client(), app.client()];
    for c in &others {
        assert_eq!(app.login(c, &user).await.status(), StatusCode::OK);
    }

    let res = post_form(&app, &laptop, "/account/sessions/end-others", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account?notice=others-ended");

    for c in &others {
        assert_eq!(app.get_me(c).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.get_me(&laptop).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn account_posts_without_a_session_go_to_login_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, victim) = app.logged_in().await;
    for path in ["/account/sessions/end-others", "/account/password"] {
        let res = post_form(
            &app,
            &app.client(),
            path,
            &[("current_password", PASSWORD), ("new_password", "x")],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&res), "/login?return_to=/account");
    }
    assert_eq!(app.get_me(&victim).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn changing_the_password_from_the_page_ends_the_other_sessions() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let laptop = app.client();
    page_login(&app, &laptop, &user).await;
    let phone = app.client();
    assert_eq!(app.login(&phone, &user).await.status(), StatusCode::OK);
    let new_password = "a brand new passphrase";

    let res = post_form(
        &app,
        &laptop,
        "/account/password",
        &[
            ("username", &user.email),
            ("current_password", &user.password),
            ("new_password", new_password),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account?notice=password-changed");

    assert_eq!(app.get_me(&laptop).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&phone).await.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .login_with(&app.client(), &user.email, new_password)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_is_shown_on_its_field() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    page_login(&app, &client, &user).await;

    let res = post_form(
        &app,
        &client,
        "/account/password",
        &[
            ("current_password", "not my password"),
            ("new_password", "a brand new passphrase"),
        ],
    )
    .await;
    let body = page_body(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        body.contains(
            r#"<p class="error" id="current_password-error">The current password is incorrect.</p>"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"aria-describedby="current_password-error" aria-invalid="true""#),
        "{body}"
    );

    let res = post_form(
        &app,
        &client,
        "/account/password",
        &[
            ("current_password", &user.password),
            ("new_password", "short"),
        ],
    )
    .await;
    let body = page_body(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body.contains("The new password must be at least 8 characters."),
        "{body}"
    );
    assert!(
        body.contains(r#"aria-describedby="new_password-hint new_password-error""#),
        "{body}"
    );
    // Nothing changed.
    let res = app.login(&app.client(), &user).await;
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn registering_through_the_page_creates_the_account_and_sends_to_login() {
    let app = TestApp::spawn().await;
    let body = page_body(get(&app, &app.client(), "/register").await, StatusCode::OK).await;
    assert!(body.contains(r#"autocomplete="new-password""#));
    assert!(body.contains(r#"aria-describedby="password-hint""#));

    let email = unique_email();
    let res = post_form(
        &app,
        &app.client(),
        "/register",
        &[("email", &email), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?notice=registered");
    assert!(
        set_cookie_header(&res, app.cookie_name()).is_none(),
        "registering does not log in"
    );

    let res = app.login_with(&app.client(), &email, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn registration_shows_policy_errors_and_a_taken_email_on_their_fields() {
    let app = TestApp::spawn().await;
    let res = post_form(
        &app,
        &app.client(),
        "/register",
        &[("email", "not an email"), ("password", "password")],
    )
    .await;
    let body = page_body(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body.contains(r#"id="email-error">Email is not an email address.</p>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"id="password-error">Password is too common"#),
        "{body}"
    );
    assert!(body.contains(r#"value="not an email""#));

    let user = app.create_user().await;
    let res = post_form(
        &app,
        &app.client(),
        "/register",
        &[("email", &user.email), ("password", PASSWORD)],
    )
    .await;
    let body = page_body(res, StatusCode::CONFLICT).await;
    assert!(body.contains(r#"aria-describedby="email-error""#), "{body}");
}

#[tokio::test]
async fn registration_pages_are_404_while_registration_is_closed() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Closed).await;
    page_body(
        get(&app, &app.client(), "/register").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let email = unique_email();
    let res = post_form(
        &app,
        &app.client(),
        "/register",
        &[("email", &email), ("password", PASSWORD)],
    )
    .await;
    page_body(res, StatusCode::NOT_FOUND).await;
    assert!(
        app.auth
            .admin
            .user_by_email(&email)
            .await
            .expect("store")
            .is_none()
    );
    // The login page does not offer it either.
    let body = page_body(get(&app, &app.client(), "/login").await, StatusCode::OK).await;
    assert!(!body.contains("/register"));
}

// ---------------------------------------------------------------------------
// CSRF
// ---------------------------------------------------------------------------

#[tokio::test]
async fn form_posts_from_a_foreign_origin_are_403_cookie_or_not() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    page_login(&app, &client, &user).await;
    let new_email = unique_email();

    for (path, fields) in [
        (
            "/login",
            vec![("email", user.email.as_str()), ("password", PASSWORD)],
        ),
        (
            "/register",
            vec![("email", new_email.as_str()), ("password", PASSWORD)],
        ),
        ("/logout", vec![]),
        ("/account/sessions/end-others", vec![]),
        (
            "/account/password",
            vec![
                ("current_password", PASSWORD),
                ("new_password", "an attacker's passphrase"),
            ],
        ),
    ] {
        for origin in [EVIL, "null", "http://127.0.0.1:1"] {
            // With the cookie (the victim's browser) and without (login CSRF).
            for c in [&client, &app.bare_client()] {
                let res = c
                    .post(app.url(path))
                    .header(ORIGIN, origin)
                    .form(&fields)
                    .send()
                    .await
                    .expect("request");
                assert!(set_cookie_header(&res, app.cookie_name()).is_none());
                let body = page_body(res, StatusCode::FORBIDDEN).await;
                assert!(body.contains("another site"), "{path} from {origin}");
            }
        }
    }
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    assert!(
        app.auth
            .admin
            .user_by_email(&new_email)
            .await
            .expect("store")
            .is_none()
    );
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn form_posts_without_origin_need_same_origin_fetch_metadata() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let fields = [("email", user.email.as_str()), ("password", PASSWORD)];
    let post = |site: Option<&'static str>| {
        let mut req = app.bare_client().post(app.url("/login")).form(&fields);
        if let Some(s) = site {
            req = req.header("sec-fetch-site", s);
        }
        req.send()
    };
    for site in [None, Some("cross-site"), Some("same-site"), Some("none")] {
        let res = post(site).await.expect("request");
        page_body(res, StatusCode::FORBIDDEN).await;
    }
    let res = post(Some("same-origin")).await.expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie_value(&res, app.cookie_name()).is_some());
}

#[tokio::test]
async fn form_posts_from_an_allowed_origin_are_accepted() {
    let app =
        TestApp::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let user = app.create_user().await;
    let res = app
        .client()
        .post(app.url("/login"))
        .header(ORIGIN, "https://app.example.com")
        .form(&[("email", &user.email), ("password", &user.password)])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_json_api_keeps_its_own_csrf_rule() {
    // No Origin at all is still fine for API clients (curl, servers).
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let res = client
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

// ---------------------------------------------------------------------------
// Hostile form bodies
// ---------------------------------------------------------------------------

async fn raw_post(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> Response {
    app.bare_client()
        .post(app.url(path))
        .header(ORIGIN, app.origin())
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn hostile_form_bodies_are_4xx_pages_never_500() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let login = |extra: &str| {
        format!(
            "email={}&password={}{extra}",
            urlencode(&user.email),
            urlencode(&user.password)
        )
        .into_bytes()
    };
    let huge = format!("email=a&password={}", "a".repeat(70 * 1024)).into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        ("/login", FORM, huge, StatusCode::PAYLOAD_TOO_LARGE),
        (
            "/login",
            "application/json",
            br#"{"email":"a","password":"b"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/login",
            "multipart/form-data; boundary=x",
            login(""),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/login",
            "text/plain",
            login(""),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/login",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            login(""),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "/login",
            FORM,
            b"email=a&password=%FF%FE".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/login",
            FORM,
            b"email=\xff&password=x".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/login",
            FORM,
            login("&password=other"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/login",
            FORM,
            login("&email=other%40example.com"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/login",
            FORM,
            login("&return_to=%2Fa&return_to=%2F%2Fevil.example"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/login",
            FORM,
            login("&remember_me=1"),
            StatusCode::BAD_REQUEST,
        ),
        ("/login", FORM, b"email=a".to_vec(), StatusCode::BAD_REQUEST),
        ("/login", FORM, Vec::new(), StatusCode::BAD_REQUEST),
        (
            "/login",
            FORM,
            b"&&&===&%".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/register",
            FORM,
            format!(
                "email={}&password={}&roles=admin",
                urlencode(&unique_email()),
                urlencode(PASSWORD)
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/logout",
            FORM,
            b"everywhere=1".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, ct, body, status) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let res = raw_post(&app, path, ct, body).await;
        assert_eq!(res.status(), status, "{path} {ct} {shown}");
        assert!(set_cookie_header(&res, app.cookie_name()).is_none());
        page_body(res, status).await;
    }
    // None of it logged in, and the account still works.
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn sql_looking_input_is_just_a_wrong_login() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    for (email, password) in [
        ("' OR '1'='1", "' OR '1'='1"),
        (&format!("{}' --", user.email) as &str, "x"),
        (user.email.as_str(), "'; DROP TABLE users; --"),
        ("admin@example.com\"; DELETE FROM sessions; --", "\\\"%00"),
    ] {
        let res = post_form(
            &app,
            &app.client(),
            "/login",
            &[("email", email), ("password", password)],
        )
        .await;
        let body = page_body(res, StatusCode::UNAUTHORIZED).await;
        assert_eq!(login_error(&body), "The email or password is incorrect.");
    }
    assert_eq!(
        app.login(&app.client(), &user).await.status(),
        StatusCode::OK
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
