//! Forward authentication, black-box: `GET /v1/verify` as nginx
//! `auth_request` and Traefik `ForwardAuth` call it (API.md, "Forward
//! authentication (reverse proxies)" and Conventions): rule matching, the
//! identity headers, path normalisation against bypass tricks, malformed
//! input, revocation, credential precedence, and `[[rules]]` read from a
//! TOML file by the real binary.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gatehouse::config::{AccessRule, RulePolicy};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::ChildGuard;

// ---------------------------------------------------------------- helpers

/// Which reverse proxy's headers carry the original request.
#[derive(Debug, Clone, Copy)]
enum Proxy {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`.
    Nginx,
    /// Traefik `ForwardAuth`: `X-Forwarded-Method`, `X-Forwarded-Uri`.
    Traefik,
}

const PROXIES: [Proxy; 2] = [Proxy::Nginx, Proxy::Traefik];

impl Proxy {
    fn headers(self) -> (&'static str, &'static str) {
        match self {
            Self::Nginx => ("X-Original-Method", "X-Original-URI"),
            Self::Traefik => ("X-Forwarded-Method", "X-Forwarded-Uri"),
        }
    }
}

/// The permission the `/admin/` rule demands.
const SITE_ADMIN: &str = "site:admin";

fn rule(path: &str, methods: &[&str], policy: RulePolicy) -> AccessRule {
    AccessRule {
        path: path.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        policy,
        mfa: false,
    }
}

/// `/public/` open to GET and HEAD, `/admin/` behind `site:admin`,
/// `/closed/` denied; everything else authenticated (the default).
fn standard_rules() -> Vec<AccessRule> {
    vec![
        rule("/public/", &["GET", "HEAD"], RulePolicy::Public),
        rule("/admin/", &[], RulePolicy::Permission(SITE_ADMIN.into())),
        rule("/closed/", &[], RulePolicy::Deny),
    ]
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(|c: &mut gatehouse::Config| c.rules = standard_rules()).await
}

/// A `GET /v1/verify` as `proxy` sends it for the original `method` and
/// `uri`, on `client` (whose cookie jar, if any, rides along).
fn verify_on(
    app: &TestApp,
    client: &Client,
    proxy: Proxy,
    method: &str,
    uri: &str,
) -> RequestBuilder {
    let (m, u) = proxy.headers();
    client
        .get(app.url("/v1/verify"))
        .header(m, method)
        .header(u, uri)
}

/// An anonymous `GET /v1/verify`.
fn verify(app: &TestApp, proxy: Proxy, method: &str, uri: &str) -> RequestBuilder {
    verify_on(app, &app.bare_client(), proxy, method, uri)
}

async fn send(rb: RequestBuilder) -> Response {
    rb.send().await.expect("GET /v1/verify")
}

/// A header of a response as a string, if present.
fn header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// Asserts the 401 problem with exactly the bare challenge (no token was
/// presented, so no `error=`).
async fn assert_anonymous_401(res: Response, what: &str) {
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(
        header(&res, "www-authenticate").as_deref(),
        Some(r#"Bearer realm="gatehouse""#),
        "{what}"
    );
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

/// Asserts a 200 without identity headers (a public path).
fn assert_public_200(res: &Response, what: &str) {
    assert_eq!(res.status(), StatusCode::OK, "{what}");
    assert_eq!(header(res, "x-auth-request-user"), None, "{what}");
}

/// The caller's user id, from `GET /v1/me`.
async fn my_id(app: &TestApp, client: &Client) -> String {
    let res = app.get_me(client).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["user"]["id"].as_str().expect("user.id").to_owned()
}

/// A password-grant access token for `user` (see tokens.rs).
async fn access_token(app: &TestApp, user: &TestUser) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "password")
        .append_pair("username", &user.email)
        .append_pair("password", &user.password);
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await
        .expect("POST /v1/token");
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A client without a cookie jar that sends `Authorization: Bearer TOKEN`.
fn bearer_client(token: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A logged-in client for `user`.
async fn login_client(app: &TestApp, user: &TestUser) -> Client {
    let client = app.client();
    let res = app.login(&client, user).await;
    assert_eq!(res.status(), StatusCode::OK);
    client
}

/// A logged-in holder of `gatehouse:admin` (the admin API), and of
/// `site:admin` too, so that a 403 on `/closed/` cannot be blamed on a
/// missing permission.
async fn admin_client(app: &TestApp) -> Client {
    let admin = app
        .create_user_with_role("verify-admin", &["gatehouse:admin", SITE_ADMIN])
        .await;
    login_client(app, &admin).await
}

/// A send that must answer `want`, with the body in the failure message.
async fn expect_status(rb: RequestBuilder, want: StatusCode) -> Value {
    let res = rb.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(status, want, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

// ---------------------------------------------------- rules and identity

#[tokio::test]
async fn anonymous_on_protected_paths_is_401_with_the_bearer_challenge() {
    let app = spawn().await;
    for proxy in PROXIES {
        for uri in ["/app/page", "/", "/admin/x", "/admin", "/publicity"] {
            let res = send(verify(&app, proxy, "GET", uri)).await;
            assert_anonymous_401(res, &format!("{proxy:?} GET {uri}")).await;
        }
    }
}

#[tokio::test]
async fn public_paths_are_200_without_credentials() {
    let app = spawn().await;
    for proxy in PROXIES {
        for (method, uri) in [
            ("GET", "/public/"),
            // A rule for /public/ covers /public too.
            ("GET", "/public"),
            ("GET", "/public/a/b.css"),
            ("HEAD", "/public/x"),
            ("get", "/public/x"),
        ] {
            let res = send(verify(&app, proxy, method, uri)).await;
            assert_public_200(&res, &format!("{proxy:?} {method} {uri}"));
        }
    }
}

#[tokio::test]
async fn deny_is_403_for_everyone_even_an_admin() {
    let app = spawn().await;
    let admin = admin_client(&app).await;
    // The admin really is one: the same cookie passes /admin/.
    let res = send(verify_on(&app, &admin, Proxy::Nginx, "GET", "/admin/x")).await;
    assert_eq!(res.status(), StatusCode::OK);
    for proxy in PROXIES {
        for method in ["GET", "POST", "DELETE"] {
            let res = send(verify(&app, proxy, method, "/closed/x")).await;
            assert_problem(res, StatusCode::FORBIDDEN).await;
            let res = send(verify_on(&app, &admin, proxy, method, "/closed/x")).await;
            assert_eq!(
                header(&res, "x-auth-request-user"),
                None,
                "a 403 names nobody"
            );
            assert_problem(res, StatusCode::FORBIDDEN).await;
        }
    }
}

/// A user holding the roles `support` and `editor` (created through the
/// admin API), logged in on the returned client.
async fn user_with_two_roles(app: &TestApp) -> (TestUser, Client) {
    let admin = admin_client(app).await;
    for (role, perm) in [("editor", "articles:write"), ("support", "tickets:read")] {
        expect_status(
            admin
                .put(app.url(&format!("/v1/admin/roles/{role}")))
                .json(&json!({ "permissions": [perm] })),
            StatusCode::OK,
        )
        .await;
    }
    let (user, client) = app.logged_in().await;
    let id = my_id(app, &client).await;
    expect_status(
        admin
            .put(app.url(&format!("/v1/admin/users/{id}/roles")))
            .json(&json!({ "roles": ["support", "editor"] })),
        StatusCode::OK,
    )
    .await;
    (user, client)
}

fn assert_identity(res: &Response, id: &str, email: &str, roles: &str, what: &str) {
    assert_eq!(res.status(), StatusCode::OK, "{what}");
    assert_eq!(
        header(res, "x-auth-request-user").as_deref(),
        Some(id),
        "{what}"
    );
    assert_eq!(
        header(res, "x-auth-request-email").as_deref(),
        Some(email),
        "{what}"
    );
    assert_eq!(
        header(res, "x-auth-request-roles").as_deref(),
        Some(roles),
        "{what}"
    );
}

#[tokio::test]
async fn a_cookie_user_passes_with_identity_headers() {
    let app = spawn().await;
    let (user, client) = user_with_two_roles(&app).await;
    let id = my_id(&app, &client).await;
    for proxy in PROXIES {
        for (method, uri) in [("GET", "/app/page"), ("POST", "/app/form"), ("GET", "/")] {
            let res = send(verify_on(&app, &client, proxy, method, uri)).await;
            assert_identity(
                &res,
                &id,
                &user.email,
                "editor,support",
                &format!("{proxy:?} {method} {uri}"),
            );
        }
    }
}

#[tokio::test]
async fn a_bearer_user_passes_with_identity_headers() {
    let app = spawn().await;
    let (user, client) = user_with_two_roles(&app).await;
    let id = my_id(&app, &client).await;
    // The token is granted after the role change, so it carries both.
    let bearer = bearer_client(&access_token(&app, &user).await);
    for proxy in PROXIES {
        let res = send(verify_on(&app, &bearer, proxy, "GET", "/app/page")).await;
        assert_identity(
            &res,
            &id,
            &user.email,
            "editor,support",
            &format!("{proxy:?}"),
        );
    }
}

#[tokio::test]
async fn a_user_without_roles_gets_an_empty_or_absent_roles_header() {
    let app = spawn().await;
    let (user, client) = app.logged_in().await;
    let res = send(verify_on(&app, &client, Proxy::Nginx, "GET", "/app")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "x-auth-request-email").as_deref(),
        Some(user.email.as_str())
    );
    let roles = header(&res, "x-auth-request-roles").unwrap_or_default();
    assert_eq!(roles, "", "no roles, no names");
}

#[tokio::test]
async fn a_permission_rule_admits_only_holders_of_the_permission() {
    let app = spawn().await;
    let (plain, plain_client) = app.logged_in().await;
    let holder = app
        .create_user_with_role("site-admins", &[SITE_ADMIN])
        .await;
    let holder_client = login_client(&app, &holder).await;
    let holder_id = my_id(&app, &holder_client).await;
    let plain_bearer = bearer_client(&access_token(&app, &plain).await);
    let holder_bearer = bearer_client(&access_token(&app, &holder).await);
    for proxy in PROXIES {
        for client in [&plain_client, &plain_bearer] {
            let res = send(verify_on(&app, client, proxy, "GET", "/admin/x")).await;
            assert_eq!(header(&res, "x-auth-request-user"), None);
            assert_problem(res, StatusCode::FORBIDDEN).await;
        }
        for client in [&holder_client, &holder_bearer] {
            let res = send(verify_on(&app, client, proxy, "GET", "/admin/x")).await;
            assert_identity(
                &res,
                &holder_id,
                &holder.email,
                "site-admins",
                &format!("{proxy:?}"),
            );
        }
    }
}

#[tokio::test]
async fn taking_the_permission_away_reaches_the_session_at_once() {
    let app = spawn().await;
    let admin = admin_client(&app).await;
    let holder = app
        .create_user_with_role("site-admins", &[SITE_ADMIN])
        .await;
    let client = login_client(&app, &holder).await;
    let id = my_id(&app, &client).await;
    let res = send(verify_on(&app, &client, Proxy::Nginx, "GET", "/admin/x")).await;
    assert_eq!(res.status(), StatusCode::OK);
    expect_status(
        admin
            .put(app.url(&format!("/v1/admin/users/{id}/roles")))
            .json(&json!({ "roles": [] })),
        StatusCode::OK,
    )
    .await;
    let res = send(verify_on(&app, &client, Proxy::Nginx, "GET", "/admin/x")).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn methods_outside_a_rule_fall_through_to_the_default() {
    let app = spawn().await;
    let (_, client) = app.logged_in().await;
    for proxy in PROXIES {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let what = format!("{proxy:?} {method} /public/x");
            let res = send(verify(&app, proxy, method, "/public/x")).await;
            assert_anonymous_401(res, &what).await;
            // The default is "authenticated": a user passes.
            let res = send(verify_on(&app, &client, proxy, method, "/public/x")).await;
            assert_eq!(res.status(), StatusCode::OK, "{what}");
            assert!(header(&res, "x-auth-request-user").is_some(), "{what}");
        }
    }
}

#[tokio::test]
async fn query_strings_and_fragments_are_ignored_for_matching() {
    let app = spawn().await;
    for proxy in PROXIES {
        for uri in [
            "/public/x?next=/admin/",
            "/public/x?a=1&b=%2e%2e",
            "/public/?",
            "/public/x#/admin/",
        ] {
            let res = send(verify(&app, proxy, "GET", uri)).await;
            assert_public_200(&res, &format!("{proxy:?} GET {uri}"));
        }
        for uri in [
            "/admin/x?/public/",
            "/app?path=/public/x",
            "/closed/x?/public/",
        ] {
            let res = send(verify(&app, proxy, "GET", uri)).await;
            let what = format!("{proxy:?} GET {uri}");
            assert_ne!(res.status(), StatusCode::OK, "{what}");
            assert!(
                res.status() == StatusCode::UNAUTHORIZED || res.status() == StatusCode::FORBIDDEN,
                "{what}: {}",
                res.status()
            );
        }
    }
}

// ------------------------------------------------------------ path tricks

/// Original URIs that reach `/admin/x` through a public prefix.
const INTO_ADMIN: [&str; 9] = [
    "/public/../admin/x",
    "/public/%2e%2e/admin/x",
    "/public/%2E%2E/admin/x",
    "//admin/x",
    "/public/..%2fadmin/x",
    "/public/..%2Fadmin/x",
    "/public/./../admin/x",
    "/public//../../admin/x",
    "/./admin/x",
];

#[tokio::test]
async fn traversal_and_encoding_tricks_are_judged_as_the_admin_path() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    for proxy in PROXIES {
        for uri in INTO_ADMIN {
            let what = format!("{proxy:?} GET {uri}");
            let res = send(verify(&app, proxy, "GET", uri)).await;
            assert_anonymous_401(res, &what).await;
            let res = send(verify_on(&app, &user, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
            assert_problem(res, StatusCode::FORBIDDEN).await;
        }
        for uri in [
            "/public/../closed/x",
            "//closed/x",
            "/public/%2e%2e/closed/",
        ] {
            let res = send(verify_on(&app, &user, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{proxy:?} GET {uri}");
        }
    }
}

/// The other direction: a URI that starts inside a protected prefix and
/// climbs out of it into a public one. nginx (`proxy_pass` without a URI)
/// and Traefik pass the request target to the upstream as the client sent
/// it, and an upstream that does not resolve dot segments itself (axum's
/// router, for one: `/admin/{*rest}` matches `/admin/../public/x`) serves it
/// from the protected prefix. So a verdict of "public" here opens the
/// protected path to anyone: gatehouse must not answer 200 to an anonymous
/// caller for any of these.
#[tokio::test]
async fn climbing_out_of_a_protected_prefix_never_makes_it_public() {
    let app = spawn().await;
    let mut opened = Vec::new();
    for proxy in PROXIES {
        for uri in [
            "/admin/../public/x",
            "/admin/%2e%2e/public/x",
            "/admin/..%2fpublic/x",
            "/admin%2f..%2fpublic/x",
            "/closed/../public/x",
        ] {
            let res = send(verify(&app, proxy, "GET", uri)).await;
            if res.status() == StatusCode::OK {
                opened.push(format!("{proxy:?} GET {uri}"));
            }
        }
    }
    assert!(
        opened.is_empty(),
        "anonymous 200 for paths an upstream serves from /admin/ or /closed/: {opened:#?}"
    );
}

#[tokio::test]
async fn malformed_original_uris_are_400_problems() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    for proxy in PROXIES {
        for uri in [
            "/a%zz",
            "/a%",
            "/a%0",
            "/a%00",
            "/public/%00",
            "/a%0d%0aX-Injected:%20y",
            "/a%0a",
            "/a%09",
            "/a%7f",
            "/public/%2500",
            "public/x",
            "",
            "*",
            "http://evil.example/public/x",
            "/a\\..\\admin",
        ] {
            let what = format!("{proxy:?} GET {uri:?}");
            let res = send(verify(&app, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
            assert_problem(res, StatusCode::BAD_REQUEST).await;
            // Credentials make no difference to a URI that cannot be judged.
            let res = send(verify_on(&app, &user, proxy, "GET", uri)).await;
            assert_eq!(
                res.status(),
                StatusCode::BAD_REQUEST,
                "{what} with a cookie"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_original_uri_is_400() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    let bare = app.bare_client();
    for (client, label) in [(&bare, "anonymous"), (&user, "with a cookie")] {
        let res = send(client.get(app.url("/v1/verify"))).await;
        assert_problem(res, StatusCode::BAD_REQUEST).await;
        for method_header in ["X-Original-Method", "X-Forwarded-Method"] {
            let res = send(
                client
                    .get(app.url("/v1/verify"))
                    .header(method_header, "GET"),
            )
            .await;
            assert_eq!(
                res.status(),
                StatusCode::BAD_REQUEST,
                "{label}, only {method_header}"
            );
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
}

/// Behind Traefik, the client's own headers reach `/v1/verify` (ForwardAuth
/// copies every request header unless `authRequestHeaders` says
/// otherwise), and Traefik sets only `X-Forwarded-*`. A client that adds an
/// nginx-style `X-Original-URI` naming a public path must not get a
/// protected path judged by it.
#[tokio::test]
async fn a_client_sent_nginx_header_cannot_override_traefiks() {
    let app = spawn().await;
    let mut opened = Vec::new();
    for (traefik_method, traefik_uri, planted, value) in [
        ("GET", "/admin/secret", "X-Original-URI", "/public/x"),
        ("POST", "/public/x", "X-Original-Method", "GET"),
    ] {
        let res = send(
            app.bare_client()
                .get(app.url("/v1/verify"))
                .header("X-Forwarded-Method", traefik_method)
                .header("X-Forwarded-Uri", traefik_uri)
                .header(planted, value),
        )
        .await;
        if res.status() == StatusCode::OK {
            opened.push(format!(
                "Traefik asked about {traefik_method} {traefik_uri}; \
                 the client's {planted}: {value} answered it with 200"
            ));
        }
    }
    assert!(opened.is_empty(), "{opened:#?}");
}

// ------------------------------------------------- unreadable header bytes

/// An original-URI header whose value holds raw bytes (what nginx's
/// `$request_uri` carries for a request line with `é` or 0xFF in it).
fn raw_uri_header(value: &[u8]) -> reqwest::header::HeaderValue {
    reqwest::header::HeaderValue::from_bytes(value).expect("obs-text is a valid header value")
}

/// The critical hole of the outside attack: a URI header that is not
/// UTF-8 was dropped, so the other family's header, planted by the client,
/// was the only path judged. Every pairing, both ways round: never a 200
/// for an anonymous caller, never a 200 for a user without the permission,
/// never a pass through a `deny`.
#[tokio::test]
async fn an_unreadable_original_uri_is_judged_not_dropped() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    let anonymous = app.bare_client();
    for (real, planted) in [
        (("X-Original-Method", "X-Original-URI"), "X-Forwarded-Uri"),
        (("X-Forwarded-Method", "X-Forwarded-Uri"), "X-Original-URI"),
    ] {
        for (uri, want_user) in [
            (&b"/admin/secret?\xc3\xa9"[..], StatusCode::FORBIDDEN),
            (b"/admin/\xff", StatusCode::FORBIDDEN),
            (b"/admin/caf\xc3\xa9", StatusCode::FORBIDDEN),
            (b"/closed/\xff", StatusCode::FORBIDDEN),
            (b"/app/\x80", StatusCode::OK),
        ] {
            let what = format!(
                "{real:?} {:?} with {planted}: /public/x",
                String::from_utf8_lossy(uri)
            );
            let ask = |client: &Client| {
                client
                    .get(app.url("/v1/verify"))
                    .header(real.0, "GET")
                    .header(real.1, raw_uri_header(uri))
                    .header(planted, "/public/x")
            };
            let res = send(ask(&anonymous)).await;
            if uri.starts_with(b"/closed/") {
                assert_eq!(res.status(), StatusCode::FORBIDDEN, "anonymous, {what}");
            } else {
                assert_anonymous_401(res, &format!("anonymous, {what}")).await;
            }
            let res = send(ask(&user)).await;
            assert_eq!(res.status(), want_user, "a user without site:admin, {what}");
        }
    }
}

/// Every byte from 0x80 to 0xFF, raw in the URI header of each family,
/// under every kind of rule: judged by the rule its prefix falls under.
#[tokio::test]
async fn raw_bytes_above_ascii_are_judged_under_every_policy() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    let anonymous = app.bare_client();
    let mut wrong = Vec::new();
    for proxy in PROXIES {
        let (m, u) = proxy.headers();
        for byte in 0x80u8..=0xff {
            for (prefix, want_anonymous, want_user) in [
                ("/public/", StatusCode::OK, StatusCode::OK),
                ("/admin/", StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN),
                ("/closed/", StatusCode::FORBIDDEN, StatusCode::FORBIDDEN),
                ("/app/", StatusCode::UNAUTHORIZED, StatusCode::OK),
            ] {
                let mut uri = prefix.as_bytes().to_vec();
                uri.extend_from_slice(&[b'x', byte, b'y']);
                for (client, want) in [(&anonymous, want_anonymous), (&user, want_user)] {
                    let res = send(
                        client
                            .get(app.url("/v1/verify"))
                            .header(m, "GET")
                            .header(u, raw_uri_header(&uri)),
                    )
                    .await;
                    if res.status() != want {
                        wrong.push(format!(
                            "{proxy:?} {prefix}x\\x{byte:02x}y: {} (want {want})",
                            res.status()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {wrong:#?}",
        wrong.len()
    );
}

/// Control bytes (NUL, CR, LF, tab, DEL), literal or encoded, cannot be
/// judged: 400, with credentials or without, never a 500; the Unicode
/// line breaks (NEL, LS) are ordinary characters and judged.
#[tokio::test]
async fn control_bytes_in_original_uris_are_400_and_unicode_breaks_are_judged() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    for proxy in PROXIES {
        let (m, u) = proxy.headers();
        for uri in [
            &b"/admin/\t/x"[..],
            b"/public/a\tb",
            b"/public/%00/x",
            b"/public/%0d%0a/x",
            b"/public/%0b",
            b"/public/%0c",
            b"/public/%1b",
            b"/public/%7f",
            b"/public/%250d",
        ] {
            for client in [&app.bare_client(), &user] {
                let res = send(
                    client
                        .get(app.url("/v1/verify"))
                        .header(m, "GET")
                        .header(u, raw_uri_header(uri)),
                )
                .await;
                assert_problem(res, StatusCode::BAD_REQUEST).await;
            }
        }
        for uri in [
            &b"/admin/\x85"[..],
            b"/admin/%c2%85",
            b"/admin/%e2%80%a8",
            b"/admin/\xe2\x80\xa8",
        ] {
            let res = send(
                user.get(app.url("/v1/verify"))
                    .header(m, "GET")
                    .header(u, raw_uri_header(uri)),
            )
            .await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{proxy:?} {uri:?}");
        }
    }
}

/// A method header that is not a method token (raw bytes, spaces, empty)
/// did not come from a proxy: 400, not "no method".
#[tokio::test]
async fn an_unreadable_original_method_is_400() {
    let app = spawn().await;
    for proxy in PROXIES {
        let (m, u) = proxy.headers();
        for method in [&b"G\xc3\x89T"[..], b"\xff", b"GET POST", b""] {
            let res = send(
                app.bare_client()
                    .get(app.url("/v1/verify"))
                    .header(m, raw_uri_header(method))
                    .header(u, "/public/x"),
            )
            .await;
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
}

/// Readings that lenient upstreams make of a path: `;` parameters
/// (Tomcat, Jetty), case (case-insensitive routers), trailing dots
/// (Windows), double encoding. Each is judged by the strictest rule.
#[tokio::test]
async fn path_parameters_case_trailing_dots_and_double_encoding_are_judged_strictly() {
    let app = spawn().await;
    let (_, user) = app.logged_in().await;
    let admin = admin_client(&app).await;
    for proxy in PROXIES {
        for uri in [
            "/public/..;/admin/x",
            "/public/..;jsessionid=1/admin/x",
            "/admin;x/y",
            "/ADMIN/x",
            "/Admin/x",
            "/admin./x",
            "/admin%2e/x",
            "/admin%20/x",
            "/public/%252e%252e/admin/x",
            "/public/%252e%252e%252fadmin/x",
            "/public/%25252e%25252e/admin/x",
            "/public/x#/../../admin/y",
        ] {
            let what = format!("{proxy:?} GET {uri}");
            let res = send(verify(&app, proxy, "GET", uri)).await;
            assert_anonymous_401(res, &what).await;
            let res = send(verify_on(&app, &user, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
            let res = send(verify_on(&app, &admin, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::OK, "an admin, {what}");
        }
        for uri in [
            "/CLOSED/x",
            "/closed;a/x",
            "/closed./x",
            "/public/%252e%252e/closed/",
        ] {
            let res = send(verify_on(&app, &admin, proxy, "GET", uri)).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{proxy:?} GET {uri}");
        }
    }
}

/// RFC 6750 §3.1: a bearer caller without the permission a path or the
/// admin API needs gets 403 with `error="insufficient_scope"` and the
/// scope that would do; a cookie caller gets the plain 403.
#[tokio::test]
async fn a_bearer_caller_lacking_a_permission_is_told_insufficient_scope() {
    let app = spawn().await;
    let (plain, cookie) = app.logged_in().await;
    let bearer = bearer_client(&access_token(&app, &plain).await);
    for proxy in PROXIES {
        let res = send(verify_on(&app, &bearer, proxy, "GET", "/admin/x")).await;
        assert_eq!(
            header(&res, "www-authenticate").as_deref(),
            Some(r#"Bearer realm="gatehouse", error="insufficient_scope", scope="site:admin""#),
            "{proxy:?}"
        );
        assert_problem(res, StatusCode::FORBIDDEN).await;
        let res = send(verify_on(&app, &cookie, proxy, "GET", "/admin/x")).await;
        assert_eq!(header(&res, "www-authenticate"), None, "{proxy:?}, cookie");
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
    let res = send(bearer.get(app.url("/v1/admin/users"))).await;
    assert_eq!(
        header(&res, "www-authenticate").as_deref(),
        Some(r#"Bearer realm="gatehouse", error="insufficient_scope", scope="gatehouse:admin""#)
    );
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = send(cookie.get(app.url("/v1/admin/users"))).await;
    assert_eq!(header(&res, "www-authenticate"), None);
    assert_problem(res, StatusCode::FORBIDDEN).await;
}

/// Two `Authorization` headers: which one counts would depend on who reads
/// them, so the request is refused (RFC 6750 §3.1 `invalid_request`), even
/// when both carry the same valid token; on the API and on `/v1/verify`.
#[tokio::test]
async fn two_authorization_headers_are_400_invalid_request() {
    let app = spawn().await;
    let (user, _) = app.logged_in().await;
    let token = access_token(&app, &user).await;
    let good = format!("Bearer {token}");
    for (first, second) in [
        (good.as_str(), good.as_str()),
        (good.as_str(), "Bearer forged"),
        ("Bearer forged", good.as_str()),
        (good.as_str(), "Basic dXNlcjpwdw=="),
    ] {
        for path in ["/v1/me", "/v1/verify"] {
            let res = send(
                app.bare_client()
                    .get(app.url(path))
                    .header("X-Original-URI", "/app/x")
                    .header("X-Original-Method", "GET")
                    .header(AUTHORIZATION, first)
                    .header(AUTHORIZATION, second),
            )
            .await;
            assert_eq!(
                header(&res, "www-authenticate").as_deref(),
                Some(r#"Bearer realm="gatehouse", error="invalid_request""#),
                "{path}"
            );
            assert_problem(res, StatusCode::BAD_REQUEST).await;
        }
    }
    // One header still works.
    let res = send(bearer_client(&token).get(app.url("/v1/me"))).await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// A `Cookie` header that is not UTF-8 (a UTF-8 cookie another app on the
/// site set, sent as raw bytes) is read, not skipped: the session in it is
/// recognised, and the CSRF check sees it too.
#[tokio::test]
async fn a_cookie_header_with_raw_bytes_is_read_not_skipped() {
    let app = spawn().await;
    let (user, _) = app.logged_in().await;
    let pair = login_cookie(&app, &user).await;
    let name = app.cookie_name();
    let secret = pair
        .strip_prefix(&format!("{name}="))
        .expect("name=value")
        .to_owned();
    let with_bytes = |prefix: &[u8]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(pair.as_bytes());
        raw_uri_header(&v)
    };
    let res = send(
        app.bare_client()
            .get(app.url("/v1/me"))
            .header(COOKIE, with_bytes(b"theme=caf\xc3\xa9; ")),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the session beside a UTF-8 cookie"
    );
    // A foreign-origin write carrying that header is a cookie write: 403,
    // and the session lives on.
    let res = send(
        app.bare_client()
            .post(app.url("/v1/logout"))
            .header("Origin", "https://evil.example")
            .header(COOKIE, with_bytes(b"x=\xff; ")),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = send(
        app.bare_client()
            .get(app.url("/v1/me"))
            .header(COOKIE, pair.as_str()),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the session survived the forged logout"
    );
    // Our cookie with a byte replaced is refused, never taken as absent.
    let mut forged = format!("{name}=").into_bytes();
    forged.extend_from_slice(&secret.as_bytes()[..42]);
    forged.push(0xff);
    let res = send(
        app.bare_client()
            .get(app.url("/v1/me"))
            .header(COOKIE, raw_uri_header(&forged)),
    )
    .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ------------------------------------------------------------- revocation

/// Logs `user` in on a jar-less client; returns the `Cookie` header value.
async fn login_cookie(app: &TestApp, user: &TestUser) -> String {
    let res = app.login(&app.bare_client(), user).await;
    assert_eq!(res.status(), StatusCode::OK);
    let name = app.cookie_name();
    let value = session_cookie_value(&res, name).expect("a session cookie");
    format!("{name}={value}")
}

#[tokio::test]
async fn after_logout_the_cookie_and_the_token_are_refused_at_once() {
    let app = spawn().await;
    let user = app.create_user().await;
    let cookie = login_cookie(&app, &user).await;
    for proxy in PROXIES {
        let res = send(verify(&app, proxy, "GET", "/app").header(COOKIE, &cookie)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app
        .bare_client()
        .post(app.url("/v1/logout"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for proxy in PROXIES {
        let res = send(verify(&app, proxy, "GET", "/app").header(COOKIE, &cookie)).await;
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }

    // A bearer token dies with its session too.
    let bearer = bearer_client(&access_token(&app, &user).await);
    let res = send(verify_on(&app, &bearer, Proxy::Traefik, "GET", "/app")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = bearer
        .post(app.url("/v1/logout"))
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for proxy in PROXIES {
        let res = send(verify_on(&app, &bearer, proxy, "GET", "/app")).await;
        let challenge = header(&res, "www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn disabling_the_user_refuses_their_cookie_and_token_at_once() {
    let app = spawn().await;
    let admin = admin_client(&app).await;
    let (user, client) = app.logged_in().await;
    let id = my_id(&app, &client).await;
    let bearer = bearer_client(&access_token(&app, &user).await);
    for c in [&client, &bearer] {
        let res = send(verify_on(&app, c, Proxy::Nginx, "GET", "/app")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    expect_status(
        admin
            .patch(app.url(&format!("/v1/admin/users/{id}")))
            .json(&json!({ "disabled": true })),
        StatusCode::OK,
    )
    .await;
    for proxy in PROXIES {
        for c in [&client, &bearer] {
            let res = send(verify_on(&app, c, proxy, "GET", "/app")).await;
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
        }
    }
}

#[tokio::test]
async fn ending_the_session_refuses_its_cookie_and_token_at_once() {
    let app = spawn().await;
    let (user, client) = app.logged_in().await;
    let bearer = bearer_client(&access_token(&app, &user).await);
    for c in [&client, &bearer] {
        let res = send(verify_on(&app, c, Proxy::Traefik, "GET", "/app")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // A second browser of the same user ends every other session.
    let other = login_client(&app, &user).await;
    expect_status(
        other.delete(app.url("/v1/sessions?scope=others")),
        StatusCode::NO_CONTENT,
    )
    .await;
    for proxy in PROXIES {
        for c in [&client, &bearer] {
            let res = send(verify_on(&app, c, proxy, "GET", "/app")).await;
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
        }
        let res = send(verify_on(&app, &other, proxy, "GET", "/app")).await;
        assert_eq!(res.status(), StatusCode::OK, "the current session lives on");
    }

    // And an admin ending every session of the user.
    let admin = admin_client(&app).await;
    let id = my_id(&app, &other).await;
    expect_status(
        admin.delete(app.url(&format!("/v1/admin/users/{id}/sessions"))),
        StatusCode::NO_CONTENT,
    )
    .await;
    let res = send(verify_on(&app, &other, Proxy::Nginx, "GET", "/app")).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

// ---------------------------------------------------- credential handling

#[tokio::test]
async fn an_invalid_bearer_token_beats_a_valid_cookie() {
    let app = spawn().await;
    let (_, client) = app.logged_in().await;
    for proxy in PROXIES {
        for token in ["not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "a.b.c"] {
            let res = send(
                verify_on(&app, &client, proxy, "GET", "/app")
                    .header(AUTHORIZATION, format!("Bearer {token}")),
            )
            .await;
            let challenge = header(&res, "www-authenticate").unwrap_or_default();
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{proxy:?} {token}: {challenge}"
            );
            assert_eq!(header(&res, "x-auth-request-user"), None);
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
        }
        // The cookie alone still works: the 401 was the token's.
        let res = send(verify_on(&app, &client, proxy, "GET", "/app")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_forged_or_malformed_cookie_is_401() {
    let app = spawn().await;
    let name = app.cookie_name();
    for proxy in PROXIES {
        for value in [
            // Well-formed (43 base64url characters) but never issued.
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA",
            // Malformed.
            "forged",
            "",
        ] {
            let res =
                send(verify(&app, proxy, "GET", "/app").header(COOKIE, format!("{name}={value}")))
                    .await;
            let what = format!("{proxy:?} cookie {value:?}");
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
            assert_eq!(header(&res, "x-auth-request-user"), None, "{what}");
            assert_problem(res, StatusCode::UNAUTHORIZED).await;
        }
    }
}

// ------------------------------------------ rules from a TOML file, e2e

/// Longest the real binary may take to start.
const DEADLINE: Duration = Duration::from_secs(10);

/// `gatehouse --config FILE serve` on port 0 with an empty environment but
/// `PATH`; returns the child and its bound address.
fn serve_with_config(dir: &Path, config: &Path) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_COOKIE_SECURE", "false")
        .env(
            "GATEHOUSE_DATABASE_URL",
            format!("sqlite://{}", dir.join("g.db").display()),
        )
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawning gatehouse serve"));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let first = match rx.recv_timeout(DEADLINE) {
        Ok(line) => line,
        Err(e) => {
            drop(child);
            panic!(
                "no first stdout line from gatehouse ({e}); stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
    };
    let addr = first
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("first stdout line: {first:?}"));
    (child, addr)
}

#[tokio::test]
async fn rules_from_a_toml_file_work_end_to_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        r#"
[[rules]]
path = "/public/"          # prefix of the original path (query string ignored)
methods = ["GET", "HEAD"]  # optional; every method when absent
policy = "public"          # "public" | "authenticated" | "deny"

[[rules]]
path = "/admin/"
permission = "site:admin"  # implies authenticated; 403 when the caller lacks it
"#,
    )
    .expect("writing the config");
    let (_child, addr) = serve_with_config(dir.path(), &config);
    let base = format!("http://{addr}");
    let client = Client::builder()
        .cookie_store(true)
        .timeout(DEADLINE)
        .build()
        .expect("client");
    let verify = |method: &str, uri: &str| {
        client
            .get(format!("{base}/v1/verify"))
            .header("X-Original-Method", method)
            .header("X-Original-URI", uri)
    };

    // Anonymous: public path open, methods honoured, the rest protected.
    let res = verify("GET", "/public/index.html?x=1")
        .send()
        .await
        .expect("verify");
    assert_eq!(res.status(), StatusCode::OK);
    let res = verify("HEAD", "/public/a").send().await.expect("verify");
    assert_eq!(res.status(), StatusCode::OK);
    let res = verify("POST", "/public/a").send().await.expect("verify");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = verify("GET", "/admin/x").send().await.expect("verify");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let res = verify("GET", "/app").send().await.expect("verify");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;

    // A registered user: the default lets them in, the permission rule not.
    let email = unique_email();
    let res = client
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = client
        .post(format!("{base}/v1/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let res = verify("GET", "/app").send().await.expect("verify");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("x-auth-request-email")
            .and_then(|v| v.to_str().ok()),
        Some(email.as_str())
    );
    let res = verify("GET", "/admin/x").send().await.expect("verify");
    assert_problem(res, StatusCode::FORBIDDEN).await;
}
