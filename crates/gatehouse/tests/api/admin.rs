//! Authorization, black-box: the admin API (`/v1/admin/*`), `POST
//! /v1/authorize`, and the `user disable` / `user list` commands against a
//! running server's database (API.md, "Authorization" and "Command line").

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse::config::Registration;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::ChildGuard;

const FORM: &str = "application/x-www-form-urlencoded";

/// Longest any child process may take to exit.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

/// An admin (role `admin` holding `gatehouse:admin`), logged in on a fresh
/// cookie client.
async fn admin(app: &TestApp) -> (TestUser, Client) {
    let user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    let res = app.login(&client, &user).await;
    assert_eq!(res.status(), StatusCode::OK);
    (user, client)
}

/// A user registered through the public API, and their id.
async fn registered(app: &TestApp) -> (TestUser, String) {
    let user = TestUser {
        email: unique_email(),
        password: PASSWORD.to_owned(),
    };
    let res = app.register(&user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    let id = body["user"]["id"].as_str().expect("user id").to_owned();
    (user, id)
}

/// A request on `client`, with a JSON body when one is given.
async fn call(
    app: &TestApp,
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let mut req = client.request(method, app.url(path));
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request")
}

/// A request with `Authorization: Bearer` and no cookie.
fn bearer(app: &TestApp, method: Method, path: &str, token: &str) -> RequestBuilder {
    app.bare_client()
        .request(method, app.url(path))
        .header(AUTHORIZATION, format!("Bearer {token}"))
}

/// Asserts a 200 JSON response and returns its body.
async fn ok_json(res: Response) -> Value {
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).expect("json")
}

/// `GET /v1/me` on a cookie client, which must succeed.
async fn me(app: &TestApp, client: &Client) -> Value {
    ok_json(app.get_me(client).await).await
}

/// The caller's effective permissions, from `GET /v1/me`.
async fn permissions(app: &TestApp, client: &Client) -> Value {
    me(app, client).await["permissions"].clone()
}

/// `POST /v1/authorize` on a cookie client; the `allowed` answer.
async fn allowed(app: &TestApp, client: &Client, permission: &str) -> bool {
    let res = call(
        app,
        client,
        Method::POST,
        "/v1/authorize",
        Some(&json!({ "permission": permission })),
    )
    .await;
    ok_json(res).await["allowed"]
        .as_bool()
        .expect("allowed is a bool")
}

/// A form body from pairs, percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `POST /v1/token` with form parameters.
async fn token_form(app: &TestApp, pairs: &[(&str, &str)]) -> Response {
    app.bare_client()
        .post(app.url("/v1/token"))
        .header(CONTENT_TYPE, FORM)
        .body(form(pairs))
        .send()
        .await
        .expect("request")
}

/// The password grant for `user`.
async fn password_grant(app: &TestApp, user: &TestUser) -> Response {
    token_form(
        app,
        &[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
        ],
    )
    .await
}

/// The refresh grant for `refresh_token`.
async fn refresh(app: &TestApp, refresh_token: &str) -> Response {
    token_form(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// An access and refresh token pair.
struct Pair {
    access: String,
    refresh: String,
}

/// A password grant for `user` that must succeed.
async fn grant(app: &TestApp, user: &TestUser) -> Pair {
    let body = ok_json(password_grant(app, user).await).await;
    Pair {
        access: body["access_token"].as_str().expect("access").to_owned(),
        refresh: body["refresh_token"].as_str().expect("refresh").to_owned(),
    }
}

/// Asserts an RFC 6749 §5.2 error with the given code.
async fn assert_oauth_error(res: Response, code: &str) {
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], code, "{body}");
}

/// `GET /v1/me` with a bearer token.
async fn me_bearer(app: &TestApp, token: &str) -> Response {
    bearer(app, Method::GET, "/v1/me", token)
        .send()
        .await
        .expect("request")
}

/// Asserts a 401 that names the presented token as the reason.
async fn assert_invalid_token(res: Response) {
    let challenge = res
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
}

/// Every admin endpoint, each with a body that would succeed for an admin,
/// aimed at `id`.
fn admin_endpoints(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/v1/admin/users".into(), None),
        (
            Method::POST,
            "/v1/admin/users".into(),
            Some(json!({ "email": unique_email(), "password": PASSWORD, "roles": ["admin"] })),
        ),
        (Method::GET, format!("/v1/admin/users/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/admin/users/{id}"),
            Some(json!({ "disabled": true })),
        ),
        (Method::DELETE, format!("/v1/admin/users/{id}"), None),
        (
            Method::PUT,
            format!("/v1/admin/users/{id}/roles"),
            Some(json!({ "roles": ["admin"] })),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/users/{id}/sessions"),
            None,
        ),
        (Method::GET, "/v1/admin/roles".into(), None),
        (
            Method::PUT,
            "/v1/admin/roles/editor".into(),
            Some(json!({ "permissions": ["docs:read"] })),
        ),
        (Method::DELETE, "/v1/admin/roles/admin".into(), None),
    ]
}

/// The emails of a page of `GET /v1/admin/users`.
fn emails(page: &Value) -> Vec<String> {
    page["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u["email"].as_str().expect("email").to_owned())
        .collect()
}

/// Asserts that `user` can log in with their password.
async fn assert_can_log_in(app: &TestApp, user: &TestUser) {
    let res = app.login(&app.client(), user).await;
    assert_eq!(res.status(), StatusCode::OK, "{} cannot log in", user.email);
}

/// `ALTER TABLE role_permissions` away under the running app, so every
/// permission check fails in the store.
async fn break_permission_store(app: &TestApp) {
    let db = app.sql().await;
    sqlx::query("ALTER TABLE role_permissions RENAME TO rp_gone")
        .execute(&db)
        .await
        .expect("rename");
    db.close().await;
}

// ------------------------------------------------------------ the binary

/// What a finished command left behind.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> JoinHandle<String> {
    let mut pipe = pipe.expect("piped stream");
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `gatehouse ARGS` on the app's database, with an empty environment
/// but `PATH`, within [`DEADLINE`], off the async runtime so the app keeps
/// serving meanwhile.
async fn gatehouse(app: &TestApp, args: &[&str]) -> Finished {
    let db = format!("sqlite://{}", app.db_path.display());
    let dir = app.db_path.parent().expect("db dir").to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_blocking(&dir, &db, &args))
        .await
        .expect("the runner thread")
}

fn run_blocking(dir: &Path, db: &str, args: &[String]) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.current_dir(dir)
        .env_clear()
        .env("GATEHOUSE_DATABASE_URL", db)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = ChildGuard(cmd.spawn().expect("spawning gatehouse"));
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("polling the child") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not exit within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

// ------------------------------------- 1. 401 and 403, and nothing changes

#[tokio::test]
async fn every_admin_endpoint_is_401_without_credentials() {
    let app = TestApp::spawn().await;
    let (_, target) = registered(&app).await;
    for (method, path, body) in admin_endpoints(&target) {
        let res = call(
            &app,
            &app.bare_client(),
            method.clone(),
            &path,
            body.as_ref(),
        )
        .await;
        let challenge = res
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
        assert!(
            !challenge.contains("error="),
            "{method} {path}: no token was presented: {challenge}"
        );
    }
}

#[tokio::test]
async fn every_admin_endpoint_is_403_for_a_cookie_user_without_admin() {
    let app = TestApp::spawn().await;
    let (_, target) = registered(&app).await;
    let (_, client) = app.logged_in().await;
    for (method, path, body) in admin_endpoints(&target) {
        let res = call(&app, &client, method.clone(), &path, body.as_ref()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn every_admin_endpoint_is_403_for_a_bearer_user_without_admin() {
    let app = TestApp::spawn().await;
    let (_, target) = registered(&app).await;
    // A role that holds permissions, but not gatehouse:admin.
    let user = app
        .create_user_with_role("support", &["tickets:read", "gatehouse:read"])
        .await;
    let pair = grant(&app, &user).await;
    for (method, path, body) in admin_endpoints(&target) {
        let mut req = bearer(&app, method.clone(), &path, &pair.access);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_problem(res, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn every_admin_endpoint_is_401_invalid_token_for_a_forged_bearer_token() {
    let app = TestApp::spawn().await;
    let (_, target) = registered(&app).await;
    for (method, path, body) in admin_endpoints(&target) {
        let mut req = bearer(&app, method.clone(), &path, "eyJhbGciOiJub25lIn0.e30.");
        if let Some(body) = &body {
            req = req.json(body);
        }
        assert_invalid_token(req.send().await.expect("request")).await;
    }
}

#[tokio::test]
async fn non_admin_patch_disabled_leaves_the_target_able_to_log_in() {
    let app = TestApp::spawn().await;
    let (target, target_id) = registered(&app).await;
    let target_client = app.client();
    assert_eq!(
        app.login(&target_client, &target).await.status(),
        StatusCode::OK
    );
    let (_, client) = app.logged_in().await;
    let res = call(
        &app,
        &client,
        Method::PATCH,
        &format!("/v1/admin/users/{target_id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    assert_eq!(app.get_me(&target_client).await.status(), StatusCode::OK);
    assert_can_log_in(&app, &target).await;
    let (_, admin) = admin(&app).await;
    let user = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{target_id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(user["user"]["disabled"], false);
}

#[tokio::test]
async fn non_admin_put_roles_on_themselves_grants_nothing() {
    let app = TestApp::spawn().await;
    // The admin role exists (the admin holds it).
    let _ = admin(&app).await;
    let (_, client) = app.logged_in().await;
    let my_id = me(&app, &client).await["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = call(
        &app,
        &client,
        Method::PUT,
        &format!("/v1/admin/users/{my_id}/roles"),
        Some(&json!({ "roles": ["admin"] })),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let after = me(&app, &client).await;
    assert_eq!(after["user"]["roles"], json!([]), "{after}");
    assert_eq!(after["permissions"], json!([]), "{after}");
    assert!(!allowed(&app, &client, "gatehouse:admin").await);
    let res = call(&app, &client, Method::GET, "/v1/admin/users", None).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn non_admin_delete_user_and_end_sessions_leave_the_target_signed_in() {
    let app = TestApp::spawn().await;
    let (target, target_id) = registered(&app).await;
    let target_client = app.client();
    assert_eq!(
        app.login(&target_client, &target).await.status(),
        StatusCode::OK
    );
    let (_, client) = app.logged_in().await;
    for path in [
        format!("/v1/admin/users/{target_id}/sessions"),
        format!("/v1/admin/users/{target_id}"),
    ] {
        let res = call(&app, &client, Method::DELETE, &path, None).await;
        assert_problem(res, StatusCode::FORBIDDEN).await;
        assert_eq!(
            app.get_me(&target_client).await.status(),
            StatusCode::OK,
            "after a refused DELETE {path}"
        );
    }
    assert_can_log_in(&app, &target).await;
}

#[tokio::test]
async fn non_admin_role_writes_change_no_role() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let before = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    let (_, client) = app.logged_in().await;
    let res = call(
        &app,
        &client,
        Method::PUT,
        "/v1/admin/roles/admin",
        Some(&json!({ "permissions": ["gatehouse:admin", "x:y"] })),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = call(
        &app,
        &client,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": ["docs:read"] })),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = call(&app, &client, Method::DELETE, "/v1/admin/roles/admin", None).await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let after = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(after, before);
    assert_eq!(
        after["roles"],
        json!([{ "name": "admin", "permissions": ["gatehouse:admin"] }])
    );
}

#[tokio::test]
async fn non_admin_create_user_creates_nobody() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let email = unique_email();
    let res = call(
        &app,
        &client,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD })),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = app.login_with(&app.client(), &email, PASSWORD).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    // The email is still free.
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn unauthenticated_admin_writes_change_nothing() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let (target, target_id) = registered(&app).await;
    let anonymous = app.bare_client();
    for (method, path, body) in admin_endpoints(&target_id) {
        let res = call(&app, &anonymous, method.clone(), &path, body.as_ref()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let user = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{target_id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(user["user"]["disabled"], false, "{user}");
    assert_eq!(user["user"]["roles"], json!([]), "{user}");
    assert_can_log_in(&app, &target).await;
    let list = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users", None).await).await;
    assert_eq!(emails(&list), vec![admin_user.email, target.email]);
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(
        roles["roles"],
        json!([{ "name": "admin", "permissions": ["gatehouse:admin"] }])
    );
}

// ------------------------------------------------- 2. cookie and bearer

#[tokio::test]
async fn admin_api_accepts_an_admin_session_cookie() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let list = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users", None).await).await;
    assert_eq!(emails(&list), vec![admin_user.email]);
    assert_eq!(list["next_cursor"], Value::Null);
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": unique_email(), "password": PASSWORD })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn admin_api_accepts_an_admin_bearer_token() {
    let app = TestApp::spawn().await;
    let admin_user = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let pair = grant(&app, &admin_user).await;
    let list = ok_json(
        bearer(&app, Method::GET, "/v1/admin/users", &pair.access)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(emails(&list), vec![admin_user.email]);
    let res = bearer(&app, Method::PUT, "/v1/admin/roles/editor", &pair.access)
        .json(&json!({ "permissions": ["docs:read"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = bearer(&app, Method::POST, "/v1/admin/users", &pair.access)
        .json(&json!({ "email": unique_email(), "password": PASSWORD, "roles": ["editor"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
}

// ------------------------------------------------------- 3. pagination

#[tokio::test]
async fn list_users_pages_through_every_user_once_in_creation_order() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let mut expected = vec![admin_user.email.clone()];
    for _ in 0..7 {
        expected.push(registered(&app).await.0.email);
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/admin/users?limit=3".to_owned();
    loop {
        let page = ok_json(call(&app, &admin, Method::GET, &path, None).await).await;
        let batch = emails(&page);
        sizes.push(batch.len());
        seen.extend(batch);
        match &page["next_cursor"] {
            Value::Null => break,
            Value::String(c) => {
                let c: String = url::form_urlencoded::byte_serialize(c.as_bytes()).collect();
                path = format!("/v1/admin/users?limit=3&cursor={c}");
            }
            other => panic!("next_cursor is neither null nor a string: {other}"),
        }
        assert!(sizes.len() < 10, "the cursors never end: {sizes:?}");
    }
    assert_eq!(sizes, vec![3, 3, 2]);
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn list_users_page_that_ends_at_the_last_user_has_a_null_cursor() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    registered(&app).await;
    registered(&app).await;
    registered(&app).await;
    let first =
        ok_json(call(&app, &admin, Method::GET, "/v1/admin/users?limit=2", None).await).await;
    assert_eq!(emails(&first).len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page exists");
    let second = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users?limit=2&cursor={cursor}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(emails(&second).len(), 2);
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
}

#[tokio::test]
async fn list_users_accepts_limits_1_and_200() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let (other, _) = registered(&app).await;
    let one = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users?limit=1", None).await).await;
    assert_eq!(emails(&one), vec![admin_user.email.clone()]);
    assert!(one["next_cursor"].is_string(), "{one}");
    let all =
        ok_json(call(&app, &admin, Method::GET, "/v1/admin/users?limit=200", None).await).await;
    assert_eq!(emails(&all), vec![admin_user.email, other.email]);
    assert_eq!(all["next_cursor"], Value::Null);
}

#[tokio::test]
async fn list_users_refuses_a_limit_out_of_range_or_not_a_number() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for limit in ["0", "201", "abc", "-1", "", "3.5", "99999999999999999999"] {
        let res = call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users?limit={limit}"),
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "limit={limit:?}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn list_users_refuses_an_unknown_query_parameter() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for query in ["offset=3", "limit=3&page=2", "email=a%40example.com"] {
        let res = call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users?{query}"),
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn list_users_refuses_a_forged_cursor() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    registered(&app).await;
    for cursor in [
        "abc",
        "' OR 1=1 --",
        "AAAA",
        "!!",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let c: String = url::form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
        let res = call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users?cursor={c}"),
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "cursor={cursor:?}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

// ------------------------------------------------ 4. POST /v1/admin/users

#[tokio::test]
async fn admin_create_user_with_roles_is_201_and_grants_them() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/support",
        Some(&json!({ "permissions": ["tickets:write", "tickets:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let email = unique_email();
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD, "roles": ["support"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    let user = &body["user"];
    assert_eq!(user["email"], email.as_str(), "{body}");
    assert_eq!(user["roles"], json!(["support"]), "{body}");
    assert_eq!(user["disabled"], false, "{body}");
    assert!(
        user["id"].is_string() && user["created_at"].is_string(),
        "{body}"
    );
    let client = app.client();
    assert_eq!(
        app.login_with(&client, &email, PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        permissions(&app, &client).await,
        json!(["tickets:read", "tickets:write"])
    );
}

#[tokio::test]
async fn admin_create_user_works_while_registration_is_closed() {
    let app = TestApp::spawn_with(|c| c.registration = Registration::Closed).await;
    let (_, admin) = admin(&app).await;
    let email = unique_email();
    assert_problem(app.register(&email, PASSWORD).await, StatusCode::FORBIDDEN).await;
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD, "roles": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        app.login_with(&app.client(), &email, PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_create_user_with_unknown_role_is_422_and_creates_nobody() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let email = unique_email();
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD, "roles": ["admin", "nosuchrole"] })),
    )
    .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "roles", "{body}");
    let res = app.login_with(&app.client(), &email, PASSWORD).await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED,
        "the email is still free"
    );
}

#[tokio::test]
async fn admin_create_user_with_an_invalid_role_name_is_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for role in ["bad role", "", "ünïcode"] {
        let res = call(
            &app,
            &admin,
            Method::POST,
            "/v1/admin/users",
            Some(&json!({ "email": unique_email(), "password": PASSWORD, "roles": [role] })),
        )
        .await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "roles", "{role:?}: {body}");
    }
}

#[tokio::test]
async fn admin_create_user_with_a_repeated_role_grants_it_once() {
    // PUT /v1/admin/users/{id}/roles accepts ["support", "support"]; the
    // same list on creation must not be refused as an unknown role.
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/support",
        Some(&json!({ "permissions": ["tickets:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": unique_email(), "password": PASSWORD, "roles": ["support", "support"] })),
    )
    .await;
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["user"]["roles"], json!(["support"]), "{body}");
}

#[tokio::test]
async fn admin_create_user_with_a_weak_password_is_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for password in ["password", "short", &"x".repeat(129)] {
        let email = unique_email();
        let res = call(
            &app,
            &admin,
            Method::POST,
            "/v1/admin/users",
            Some(&json!({ "email": email, "password": password })),
        )
        .await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "password", "{body}");
        let res = app.login_with(&app.client(), &email, password).await;
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn admin_create_user_with_a_taken_email_is_409() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (existing, _) = registered(&app).await;
    for email in [
        existing.email.clone(),
        format!(" {} ", existing.email.to_uppercase()),
    ] {
        let res = call(
            &app,
            &admin,
            Method::POST,
            "/v1/admin/users",
            Some(&json!({ "email": email, "password": "another-long-pass-99" })),
        )
        .await;
        assert_problem(res, StatusCode::CONFLICT).await;
    }
    // The existing account keeps its password.
    assert_can_log_in(&app, &existing).await;
}

#[tokio::test]
async fn admin_create_user_with_an_unknown_field_is_400_and_creates_nobody() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let email = unique_email();
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD, "disabled": true })),
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let list = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users", None).await).await;
    assert!(!emails(&list).contains(&email), "{list}");
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/v1/admin/users",
        Some(&json!({ "email": email, "password": PASSWORD })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED, "the email is still free");
}

// --------------------------------------------- 5. GET /v1/admin/users/{id}

#[tokio::test]
async fn admin_get_user_returns_the_user() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let body = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{id}"),
            None,
        )
        .await,
    )
    .await;
    let u = &body["user"];
    assert_eq!(u["id"], id.as_str(), "{body}");
    assert_eq!(u["email"], user.email.as_str(), "{body}");
    assert_eq!(u["roles"], json!([]), "{body}");
    assert_eq!(u["disabled"], false, "{body}");
    assert_eq!(u["email_verified"], false, "{body}");
    let created = u["created_at"].as_str().expect("created_at");
    assert!(created.ends_with('Z'), "RFC 3339 in UTC: {created}");
    let keys: HashSet<&str> = u
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "email",
            "roles",
            "created_at",
            "disabled",
            "email_verified"
        ]),
        "no password hash or other internals: {body}"
    );
}

#[tokio::test]
async fn admin_get_user_with_an_unknown_or_malformed_id_is_404() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid", "1", "%27%20OR%201%3D1%20--"] {
        let res = call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{id}"),
            None,
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{id}");
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn admin_writes_on_an_unknown_user_are_404() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let id = uuid::Uuid::now_v7();
    let cases = [
        (
            Method::PATCH,
            format!("/v1/admin/users/{id}"),
            Some(json!({ "disabled": true })),
        ),
        (Method::DELETE, format!("/v1/admin/users/{id}"), None),
        (
            Method::PUT,
            format!("/v1/admin/users/{id}/roles"),
            Some(json!({ "roles": ["admin"] })),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/users/{id}/sessions"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/admin/users/not-a-uuid".to_owned(),
            Some(json!({ "disabled": true })),
        ),
    ];
    for (method, path, body) in cases {
        let res = call(&app, &admin, method.clone(), &path, body.as_ref()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
}

// -------------------------------------------------- 6. PATCH: disabling

#[tokio::test]
async fn admin_patch_disabled_true_returns_the_disabled_user() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let body = ok_json(
        call(
            &app,
            &admin,
            Method::PATCH,
            &format!("/v1/admin/users/{id}"),
            Some(&json!({ "disabled": true })),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["disabled"], true, "{body}");
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["user"]["email"], user.email.as_str());
    let again = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(again["user"]["disabled"], true, "{again}");
}

#[tokio::test]
async fn disabling_a_user_ends_their_cookie_session_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
    let res = call(
        &app,
        &client,
        Method::POST,
        "/v1/authorize",
        Some(&json!({ "permission": "x:y" })),
    )
    .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn disabling_a_user_refuses_their_access_token_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let pair = grant(&app, &user).await;
    assert_eq!(me_bearer(&app, &pair.access).await.status(), StatusCode::OK);
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
    let res = bearer(&app, Method::POST, "/v1/authorize", &pair.access)
        .json(&json!({ "permission": "x:y" }))
        .send()
        .await
        .expect("request");
    assert_invalid_token(res).await;
}

#[tokio::test]
async fn disabling_a_user_spends_their_refresh_token() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let pair = grant(&app, &user).await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_oauth_error(refresh(&app, &pair.refresh).await, "invalid_grant").await;
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let disabled = assert_problem(
        app.login(&app.client(), &user).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The same answer as a wrong password: nothing tells the account apart.
    let wrong = assert_problem(
        app.login_with(&app.client(), &user.email, "not the right password")
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(disabled, wrong);
    assert_oauth_error(password_grant(&app, &user).await, "invalid_grant").await;
}

#[tokio::test]
async fn re_enabling_a_user_lets_them_log_in_again() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}");
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &path,
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(
        app.login(&app.client(), &user).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let body = ok_json(
        call(
            &app,
            &admin,
            Method::PATCH,
            &path,
            Some(&json!({ "disabled": false })),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["disabled"], false, "{body}");
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_patch_with_an_unknown_field_or_wrong_type_is_400_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}");
    for body in [
        json!({ "disabled": true, "roles": ["admin"] }),
        json!({ "disabled": true, "email": "x@example.com" }),
        json!({ "disabled": "true" }),
        json!({ "disabled": 1 }),
        json!({ "disabled": null }),
    ] {
        let res = call(&app, &admin, Method::PATCH, &path, Some(&body)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let now = ok_json(call(&app, &admin, Method::GET, &path, None).await).await;
    assert_eq!(now["user"]["disabled"], false, "{now}");
    assert_eq!(now["user"]["roles"], json!([]), "{now}");
    assert_can_log_in(&app, &user).await;
}

#[tokio::test]
async fn admin_patch_with_a_json_array_body_is_400_and_changes_nothing() {
    // API.md, Conventions: a body of the wrong type is 400. An array is not
    // the `{"disabled"}` object, even if its one element is a bool.
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}");
    let res = call(&app, &admin, Method::PATCH, &path, Some(&json!([true]))).await;
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let now = ok_json(call(&app, &admin, Method::GET, &path, None).await).await;
    assert_eq!(now["user"]["disabled"], false, "{now}");
    assert_can_log_in(&app, &user).await;
}

#[tokio::test]
async fn admin_patch_without_the_disabled_field_is_400() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (_, id) = registered(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({})),
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST).await;
}

// ---------------------------------------------------------- 7. DELETE

#[tokio::test]
async fn admin_delete_user_is_204_then_the_user_is_404() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}");
    let res = call(&app, &admin, Method::DELETE, &path, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.expect("body").is_empty());
    assert_problem(
        call(&app, &admin, Method::GET, &path, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let list = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users", None).await).await;
    assert_eq!(emails(&list), vec![admin_user.email]);
    assert_problem(
        app.login(&app.client(), &user).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn deleting_a_user_refuses_their_session_and_token_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let pair = grant(&app, &user).await;
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{id}"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
    assert_oauth_error(refresh(&app, &pair.refresh).await, "invalid_grant").await;
}

#[tokio::test]
async fn admin_delete_user_twice_is_404() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (_, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}");
    let first = call(&app, &admin, Method::DELETE, &path, None).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = call(&app, &admin, Method::DELETE, &path, None).await;
    assert_problem(second, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_deleted_users_email_can_register_again() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{id}"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.register(&user.email, "a-new-life-passphrase").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_ne!(body["user"]["id"], id.as_str(), "a new account, a new id");
    assert_eq!(body["user"]["roles"], json!([]));
    assert_eq!(
        app.login_with(&app.client(), &user.email, "a-new-life-passphrase")
            .await
            .status(),
        StatusCode::OK
    );
}

// ------------------------------------------------------ 8. PUT roles

#[tokio::test]
async fn admin_put_roles_returns_the_user_with_the_new_roles() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for role in ["support", "billing"] {
        let res = call(
            &app,
            &admin,
            Method::PUT,
            &format!("/v1/admin/roles/{role}"),
            Some(&json!({ "permissions": [format!("{role}:read")] })),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let (_, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}/roles");
    let body = ok_json(
        call(
            &app,
            &admin,
            Method::PUT,
            &path,
            Some(&json!({ "roles": ["support", "billing"] })),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(
        body["user"]["roles"],
        json!(["billing", "support"]),
        "{body}"
    );
    // PUT replaces: the list is the whole set.
    let body = ok_json(
        call(
            &app,
            &admin,
            Method::PUT,
            &path,
            Some(&json!({ "roles": ["support"] })),
        )
        .await,
    )
    .await;
    assert_eq!(body["user"]["roles"], json!(["support"]), "{body}");
}

#[tokio::test]
async fn a_role_change_reaches_the_users_cookie_session_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/support",
        Some(&json!({ "permissions": ["tickets:read", "tickets:write"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (user, id) = registered(&app).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    assert_eq!(permissions(&app, &client).await, json!([]));
    assert!(!allowed(&app, &client, "tickets:read").await);

    let path = format!("/v1/admin/users/{id}/roles");
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": ["support"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let now = me(&app, &client).await;
    assert_eq!(
        now["permissions"],
        json!(["tickets:read", "tickets:write"]),
        "{now}"
    );
    assert_eq!(now["user"]["roles"], json!(["support"]), "{now}");
    assert!(allowed(&app, &client, "tickets:read").await);
    assert!(!allowed(&app, &client, "tickets:delete").await);

    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(permissions(&app, &client).await, json!([]));
    assert!(!allowed(&app, &client, "tickets:read").await);
}

#[tokio::test]
async fn admin_put_an_unknown_role_is_422_and_leaves_roles_unchanged() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/support",
        Some(&json!({ "permissions": ["tickets:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (user, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}/roles");
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": ["support"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);

    // The unknown role comes last, after a valid one: nothing is half-applied.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": ["admin", "nosuchrole"] })),
    )
    .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "roles", "{body}");
    let now = ok_json(
        call(
            &app,
            &admin,
            Method::GET,
            &format!("/v1/admin/users/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(now["user"]["roles"], json!(["support"]), "{now}");
    assert_eq!(permissions(&app, &client).await, json!(["tickets:read"]));
}

#[tokio::test]
async fn admin_put_an_invalid_role_name_is_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (_, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}/roles");
    for role in ["bad role", "", "x".repeat(65).as_str(), "admin;drop"] {
        let res = call(
            &app,
            &admin,
            Method::PUT,
            &path,
            Some(&json!({ "roles": [role] })),
        )
        .await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "roles", "{role:?}: {body}");
    }
}

#[tokio::test]
async fn admin_put_roles_with_an_unknown_field_or_wrong_type_is_400() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (_, id) = registered(&app).await;
    let path = format!("/v1/admin/users/{id}/roles");
    for body in [
        json!({ "roles": ["admin"], "permissions": ["gatehouse:admin"] }),
        json!({ "roles": "admin" }),
        json!({}),
    ] {
        let res = call(&app, &admin, Method::PUT, &path, Some(&body)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

// ---------------------------------- 9. DELETE /v1/admin/users/{id}/sessions

#[tokio::test]
async fn ending_a_users_sessions_ends_every_session_and_token_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let laptop = app.client();
    let phone = app.client();
    assert_eq!(app.login(&laptop, &user).await.status(), StatusCode::OK);
    assert_eq!(app.login(&phone, &user).await.status(), StatusCode::OK);
    let pair = grant(&app, &user).await;
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{id}/sessions"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_me(&laptop).await, StatusCode::UNAUTHORIZED).await;
    assert_problem(app.get_me(&phone).await, StatusCode::UNAUTHORIZED).await;
    assert_invalid_token(me_bearer(&app, &pair.access).await).await;
    assert_oauth_error(refresh(&app, &pair.refresh).await, "invalid_grant").await;
    // A forced logout is not a ban: the user can sign in again.
    assert_can_log_in(&app, &user).await;
}

#[tokio::test]
async fn ending_a_users_sessions_leaves_the_admins_own_session() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let (user, id) = registered(&app).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let other = app.client();
    assert_eq!(
        app.login(&other, &app.create_user().await).await.status(),
        StatusCode::OK
    );
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{id}/sessions"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_me(&admin).await.status(), StatusCode::OK);
    assert_eq!(
        app.get_me(&other).await.status(),
        StatusCode::OK,
        "a bystander's session"
    );
    let res = call(&app, &admin, Method::GET, "/v1/admin/users", None).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn ending_the_admins_own_sessions_ends_the_admins_session_too() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let my_id = me(&app, &admin).await["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{my_id}/sessions"),
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_me(&admin).await, StatusCode::UNAUTHORIZED).await;
}

// ---------------------------------------------------------- 10. roles

#[tokio::test]
async fn admin_put_role_is_200_and_the_list_shows_sorted_permissions() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": ["docs:write", "docs:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    let editor = roles["roles"]
        .as_array()
        .expect("roles array")
        .iter()
        .find(|r| r["name"] == "editor")
        .unwrap_or_else(|| panic!("editor is listed: {roles}"));
    assert_eq!(editor["permissions"], json!(["docs:read", "docs:write"]));
    let names: Vec<&str> = roles["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["admin", "editor"]);
}

#[tokio::test]
async fn admin_put_role_again_replaces_its_permissions() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for perms in [json!(["docs:write", "docs:read"]), json!(["docs:read"])] {
        let res = call(
            &app,
            &admin,
            Method::PUT,
            "/v1/admin/roles/editor",
            Some(&json!({ "permissions": perms })),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(
        roles["roles"],
        json!([
            { "name": "admin", "permissions": ["gatehouse:admin"] },
            { "name": "editor", "permissions": ["docs:read"] },
        ])
    );
}

#[tokio::test]
async fn a_role_permission_change_reaches_holders_cookie_sessions_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let holder = app.create_user_with_role("editor", &["docs:read"]).await;
    let client = app.client();
    assert_eq!(app.login(&client, &holder).await.status(), StatusCode::OK);
    assert_eq!(permissions(&app, &client).await, json!(["docs:read"]));
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": ["docs:write", "docs:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        permissions(&app, &client).await,
        json!(["docs:read", "docs:write"])
    );
    assert!(allowed(&app, &client, "docs:write").await);
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(permissions(&app, &client).await, json!([]));
    assert!(!allowed(&app, &client, "docs:read").await);
}

/// What a bearer caller holds, by `GET /v1/me` and `POST /v1/authorize`
/// with the token: the permissions, and whether `probe` is allowed.
async fn bearer_view(app: &TestApp, access: &str, probe: &str) -> (Value, bool) {
    let me = ok_json(
        bearer(app, Method::GET, "/v1/me", access)
            .send()
            .await
            .expect("GET /v1/me"),
    )
    .await;
    let answer = ok_json(
        bearer(app, Method::POST, "/v1/authorize", access)
            .json(&json!({ "permission": probe }))
            .send()
            .await
            .expect("POST /v1/authorize"),
    )
    .await;
    let allowed = answer["allowed"].as_bool().expect("allowed");
    (me["permissions"].clone(), allowed)
}

#[tokio::test]
async fn role_changes_reach_bearer_callers_at_once_although_the_node_caches_them() {
    // The bearer path answers from what it read of the session, user and
    // permissions moments ago; every change made through this node must
    // retire those reads at once (docs/api.md: gatehouse's own decisions
    // read current permissions).
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let holder = app.create_user_with_role("editor", &["docs:read"]).await;
    let access = grant(&app, &holder).await.access;
    let id = ok_json(
        bearer(&app, Method::GET, "/v1/me", &access)
            .send()
            .await
            .expect("me"),
    )
    .await["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        bearer_view(&app, &access, "docs:write").await,
        (json!(["docs:read"]), false)
    );

    // The role's permissions change.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": ["docs:read", "docs:write"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        bearer_view(&app, &access, "docs:write").await,
        (json!(["docs:read", "docs:write"]), true)
    );

    // The user's roles change.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &format!("/v1/admin/users/{id}/roles"),
        Some(&json!({ "roles": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        bearer_view(&app, &access, "docs:read").await,
        (json!([]), false)
    );
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &format!("/v1/admin/users/{id}/roles"),
        Some(&json!({ "roles": ["editor"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(bearer_view(&app, &access, "docs:read").await.1);

    // The role goes.
    let res = call(&app, &admin, Method::DELETE, "/v1/admin/roles/editor", None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        bearer_view(&app, &access, "docs:read").await,
        (json!([]), false)
    );

    // A bearer administrator demoted is refused the admin API at once (by
    // a role of their own: the cookie administrator remains one).
    let admin_user = app
        .create_user_with_role("deputy", &["gatehouse:admin"])
        .await;
    let admin_access = grant(&app, &admin_user).await.access;
    let listed = bearer(&app, Method::GET, "/v1/admin/users?limit=1", &admin_access)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), StatusCode::OK);
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/deputy",
        Some(&json!({ "permissions": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed = bearer(&app, Method::GET, "/v1/admin/users?limit=1", &admin_access)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn deleting_a_role_takes_its_permissions_from_holders_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let holder = app
        .create_user_with_role("editor", &["docs:read", "docs:write"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &holder).await.status(), StatusCode::OK);
    assert!(allowed(&app, &client, "docs:write").await);
    let res = call(&app, &admin, Method::DELETE, "/v1/admin/roles/editor", None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let now = me(&app, &client).await;
    assert_eq!(now["permissions"], json!([]), "{now}");
    assert_eq!(now["user"]["roles"], json!([]), "{now}");
    assert!(!allowed(&app, &client, "docs:write").await);
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(
        roles["roles"],
        json!([{ "name": "admin", "permissions": ["gatehouse:admin"] }])
    );
}

#[tokio::test]
async fn admin_delete_an_unknown_role_is_404() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for name in ["nosuchrole", "bad%20name"] {
        let res = call(
            &app,
            &admin,
            Method::DELETE,
            &format!("/v1/admin/roles/{name}"),
            None,
        )
        .await;
        assert_problem(res, StatusCode::NOT_FOUND).await;
    }
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/once",
        Some(&json!({ "permissions": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let first = call(&app, &admin, Method::DELETE, "/v1/admin/roles/once", None).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = call(&app, &admin, Method::DELETE, "/v1/admin/roles/once", None).await;
    assert_problem(second, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn admin_put_role_with_an_invalid_permission_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/editor",
        Some(&json!({ "permissions": ["docs:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let before = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    for bad in ["docs write", "", "docs:\u{e9}crire", &"p".repeat(129)] {
        for role in ["editor", "newrole"] {
            let res = call(
                &app,
                &admin,
                Method::PUT,
                &format!("/v1/admin/roles/{role}"),
                Some(&json!({ "permissions": ["docs:write", bad] })),
            )
            .await;
            let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
            assert_eq!(body["errors"][0]["field"], "permissions", "{bad:?}: {body}");
        }
    }
    let after = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn admin_put_role_with_an_invalid_name_is_422() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for name in ["bad%20name", "r%C3%B4le", &"r".repeat(65)] {
        let res = call(
            &app,
            &admin,
            Method::PUT,
            &format!("/v1/admin/roles/{name}"),
            Some(&json!({ "permissions": ["docs:read"] })),
        )
        .await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn admin_put_role_with_an_unknown_field_is_400_and_creates_no_role() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    for body in [
        json!({ "permissions": ["docs:read"], "holders": ["someone"] }),
        json!({ "permissions": "docs:read" }),
        json!({}),
    ] {
        let res = call(
            &app,
            &admin,
            Method::PUT,
            "/v1/admin/roles/editor",
            Some(&body),
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(
        roles["roles"],
        json!([{ "name": "admin", "permissions": ["gatehouse:admin"] }])
    );
}

// ----------------------------------------------------- 11. /v1/authorize

#[tokio::test]
async fn authorize_answers_for_a_cookie_caller() {
    let app = TestApp::spawn().await;
    let user = app.create_user_with_role("reader", &["x:y"]).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let res = call(
        &app,
        &client,
        Method::POST,
        "/v1/authorize",
        Some(&json!({ "permission": "x:y" })),
    )
    .await;
    assert_eq!(ok_json(res).await, json!({ "allowed": true }));
    let res = call(
        &app,
        &client,
        Method::POST,
        "/v1/authorize",
        Some(&json!({ "permission": "x:z" })),
    )
    .await;
    assert_eq!(ok_json(res).await, json!({ "allowed": false }));
    // No wildcard or prefix semantics beyond exact match.
    assert!(!allowed(&app, &client, "x:*").await);
    assert!(!allowed(&app, &client, "x").await);
}

#[tokio::test]
async fn authorize_answers_for_a_bearer_caller() {
    let app = TestApp::spawn().await;
    let user = app.create_user_with_role("reader", &["x:y"]).await;
    let pair = grant(&app, &user).await;
    for (permission, expected) in [("x:y", true), ("x:z", false), ("gatehouse:admin", false)] {
        let res = bearer(&app, Method::POST, "/v1/authorize", &pair.access)
            .json(&json!({ "permission": permission }))
            .send()
            .await
            .expect("request");
        assert_eq!(
            ok_json(res).await,
            json!({ "allowed": expected }),
            "{permission}"
        );
    }
}

#[tokio::test]
async fn authorize_without_credentials_is_401() {
    let app = TestApp::spawn().await;
    let res = call(
        &app,
        &app.bare_client(),
        Method::POST,
        "/v1/authorize",
        Some(&json!({ "permission": "x:y" })),
    )
    .await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn authorize_an_invalid_permission_is_422() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    for permission in ["x y", "", "x:\u{e9}", &"p".repeat(129)] {
        let res = call(
            &app,
            &client,
            Method::POST,
            "/v1/authorize",
            Some(&json!({ "permission": permission })),
        )
        .await;
        let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["errors"][0]["field"], "permission", "{body}");
    }
}

#[tokio::test]
async fn authorize_with_an_unknown_field_or_wrong_type_is_400() {
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    for body in [
        json!({ "permission": "x:y", "user": "someone-else" }),
        json!({ "permission": ["x:y"] }),
        json!({}),
    ] {
        let res = call(&app, &client, Method::POST, "/v1/authorize", Some(&body)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(res, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn authorize_with_a_cookie_from_a_foreign_origin_is_403() {
    let app = TestApp::spawn().await;
    let user = app.create_user_with_role("reader", &["x:y"]).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let res = client
        .post(app.url("/v1/authorize"))
        .header(ORIGIN, "https://evil.example")
        .json(&json!({ "permission": "x:y" }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::FORBIDDEN).await;
    let res = client
        .post(app.url("/v1/authorize"))
        .header(ORIGIN, app.origin())
        .json(&json!({ "permission": "x:y" }))
        .send()
        .await
        .expect("request");
    assert_eq!(ok_json(res).await, json!({ "allowed": true }));
}

// --------------------------------------------- 12. store failure is 503

#[tokio::test]
async fn admin_request_is_503_when_permissions_cannot_be_read() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let pair = grant(&app, &admin_user).await;
    break_permission_store(&app).await;
    let res = call(&app, &admin, Method::GET, "/v1/admin/users", None).await;
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    let res = bearer(&app, Method::GET, "/v1/admin/roles", &pair.access)
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn authorize_is_503_when_permissions_cannot_be_read() {
    let app = TestApp::spawn().await;
    let user = app.create_user_with_role("reader", &["x:y"]).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let pair = grant(&app, &user).await;
    break_permission_store(&app).await;
    for permission in ["x:y", "x:z"] {
        let res = call(
            &app,
            &client,
            Method::POST,
            "/v1/authorize",
            Some(&json!({ "permission": permission })),
        )
        .await;
        assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
        let res = bearer(&app, Method::POST, "/v1/authorize", &pair.access)
            .json(&json!({ "permission": permission }))
            .send()
            .await
            .expect("request");
        assert_problem(res, StatusCode::SERVICE_UNAVAILABLE).await;
    }
}

// ------------------------------- 13. no self-service roles outside admin

#[tokio::test]
async fn public_registration_with_roles_is_400_and_creates_nobody() {
    let app = TestApp::spawn().await;
    let (_, admin) = admin(&app).await;
    let email = unique_email();
    let res = app
        .bare_client()
        .post(app.url("/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD, "roles": ["admin"] }))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let list = ok_json(call(&app, &admin, Method::GET, "/v1/admin/users", None).await).await;
    assert!(!emails(&list).contains(&email), "{list}");
}

#[tokio::test]
async fn me_refuses_patch_and_put_with_405() {
    let app = TestApp::spawn().await;
    let _ = admin(&app).await;
    let (_, client) = app.logged_in().await;
    let body = json!({ "roles": ["admin"], "permissions": ["gatehouse:admin"] });
    for method in [Method::PATCH, Method::PUT] {
        let res = call(&app, &client, method.clone(), "/v1/me", Some(&body)).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    let now = me(&app, &client).await;
    assert_eq!(now["user"]["roles"], json!([]), "{now}");
    assert_eq!(now["permissions"], json!([]), "{now}");
}

#[tokio::test]
async fn me_405_names_the_allowed_methods() {
    // RFC 9110 §15.5.6: a 405 response MUST carry an Allow header.
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let res = call(&app, &client, Method::PATCH, "/v1/me", Some(&json!({}))).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = res
        .headers()
        .get(reqwest::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
}

// ----------------------------------------------------------- 14. the CLI

#[tokio::test]
async fn cli_user_disable_refuses_the_session_at_once_and_the_token_within_3s() {
    let app = TestApp::spawn().await;
    let (user, _) = registered(&app).await;
    let client = app.client();
    assert_eq!(app.login(&client, &user).await.status(), StatusCode::OK);
    let pair = grant(&app, &user).await;
    let bystander = app.client();
    assert_eq!(
        app.login(&bystander, &app.create_user().await)
            .await
            .status(),
        StatusCode::OK
    );

    // A different case and surrounding spaces name the same account.
    let email_arg = format!(" {} ", user.email.to_uppercase());
    let out = gatehouse(&app, &["user", "disable", "--email", &email_arg]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let done = Instant::now();

    assert_problem(app.get_me(&client).await, StatusCode::UNAUTHORIZED).await;
    loop {
        let res = me_bearer(&app, &pair.access).await;
        if res.status() == StatusCode::UNAUTHORIZED {
            assert_invalid_token(res).await;
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            done.elapsed() < Duration::from_secs(3),
            "the access token still works 3 s after `user disable`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_problem(
        app.login(&app.client(), &user).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(app.get_me(&bystander).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cli_user_disable_of_an_unknown_email_exits_1_with_one_line() {
    let app = TestApp::spawn().await;
    let (user, _) = registered(&app).await;
    let out = gatehouse(&app, &["user", "disable", "--email", "nobody@example.com"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    assert!(
        !line.trim().is_empty() && !line.contains('\n'),
        "stderr must be exactly one line: {:?}",
        out.stderr
    );
    assert!(line.contains("nobody@example.com"), "{line:?}");
    assert_can_log_in(&app, &user).await;
}

#[tokio::test]
async fn cli_user_list_prints_every_user_with_their_state() {
    let app = TestApp::spawn().await;
    let (admin_user, admin) = admin(&app).await;
    let (active, _) = registered(&app).await;
    let (disabled, disabled_id) = registered(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{disabled_id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let out = gatehouse(&app, &["user", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for (email, state) in [
        (&admin_user.email, "active"),
        (&active.email, "active"),
        (&disabled.email, "disabled"),
    ] {
        let lines: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == email))
            .collect();
        assert_eq!(lines.len(), 1, "{email} once in:\n{}", out.stdout);
        assert!(
            lines[0].split_whitespace().any(|w| w == state),
            "{email} is {state}: {:?}",
            lines[0]
        );
    }
}

// ------------------------------------------------------------ the last admin

/// Generates, for each scenario over a fresh app, a test on SQLite and one
/// on PostgreSQL (several threads: the concurrent scenarios race for real).
macro_rules! on_sqlite_and_postgres {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)+) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            $scenario(TestApp::spawn().await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let _slot = PG_SLOTS.acquire().await.expect("the semaphore is never closed");
            $scenario(TestApp::spawn_on_postgres(|_| {}).await).await;
        }
    )+};
}

on_sqlite_and_postgres! {
    the_last_admin_cannot_take_their_own_roles
        => sqlite_the_last_admin_cannot_take_their_own_roles,
           postgres_the_last_admin_cannot_take_their_own_roles;
    the_last_admin_cannot_disable_themselves
        => sqlite_the_last_admin_cannot_disable_themselves,
           postgres_the_last_admin_cannot_disable_themselves;
    the_last_admin_cannot_delete_themselves
        => sqlite_the_last_admin_cannot_delete_themselves,
           postgres_the_last_admin_cannot_delete_themselves;
    the_last_admin_role_cannot_lose_gatehouse_admin
        => sqlite_the_last_admin_role_cannot_lose_gatehouse_admin,
           postgres_the_last_admin_role_cannot_lose_gatehouse_admin;
    the_last_admin_role_cannot_be_deleted
        => sqlite_the_last_admin_role_cannot_be_deleted,
           postgres_the_last_admin_role_cannot_be_deleted;
    one_of_two_admins_can_be_demoted_disabled_and_deleted
        => sqlite_one_of_two_admins_can_be_demoted_disabled_and_deleted,
           postgres_one_of_two_admins_can_be_demoted_disabled_and_deleted;
    an_admin_role_can_go_while_another_grants_gatehouse_admin
        => sqlite_an_admin_role_can_go_while_another_grants_gatehouse_admin,
           postgres_an_admin_role_can_go_while_another_grants_gatehouse_admin;
    two_admins_demoting_each_other_at_once_leave_one
        => sqlite_two_admins_demoting_each_other_at_once_leave_one,
           postgres_two_admins_demoting_each_other_at_once_leave_one;
}

/// The id of the user behind a cookie client.
async fn my_id(app: &TestApp, client: &Client) -> String {
    me(app, client).await["user"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Asserts the 409 of a change that would leave no enabled administrator.
async fn assert_last_admin(res: Response) {
    let body = assert_problem(res, StatusCode::CONFLICT).await;
    assert_eq!(body["type"], "urn:gatehouse:problem:conflict", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("gatehouse:admin")),
        "{body}"
    );
}

/// Asserts that the cookie client may still use the admin API.
async fn assert_still_admin(app: &TestApp, client: &Client) {
    let res = call(app, client, Method::GET, "/v1/admin/users?limit=1", None).await;
    assert_eq!(res.status(), StatusCode::OK, "still an administrator");
}

/// The enabled users holding the `admin` role, by email.
async fn enabled_admins(app: &TestApp, client: &Client) -> Vec<String> {
    let page =
        ok_json(call(app, client, Method::GET, "/v1/admin/users?limit=200", None).await).await;
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter(|u| u["disabled"] == false && u["roles"] == json!(["admin"]))
        .map(|u| u["email"].as_str().expect("email").to_owned())
        .collect()
}

async fn the_last_admin_cannot_take_their_own_roles(app: TestApp) {
    let (_, admin) = admin(&app).await;
    let id = my_id(&app, &admin).await;
    let path = format!("/v1/admin/users/{id}/roles");
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": [] })),
    )
    .await;
    assert_last_admin(res).await;
    assert_eq!(me(&app, &admin).await["user"]["roles"], json!(["admin"]));
    // Another role beside it is no admin either.
    app.create_user_with_role("editor", &["docs:read"]).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": ["editor"] })),
    )
    .await;
    assert_last_admin(res).await;
    assert_still_admin(&app, &admin).await;
    // A change that keeps the permission is no problem.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        &path,
        Some(&json!({ "roles": ["admin", "editor"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn the_last_admin_cannot_disable_themselves(app: TestApp) {
    let (_, admin) = admin(&app).await;
    let id = my_id(&app, &admin).await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/v1/admin/users/{id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_last_admin(res).await;
    assert_eq!(me(&app, &admin).await["user"]["disabled"], false);
    assert_still_admin(&app, &admin).await;
}

async fn the_last_admin_cannot_delete_themselves(app: TestApp) {
    let (user, admin) = admin(&app).await;
    let id = my_id(&app, &admin).await;
    let res = call(
        &app,
        &admin,
        Method::DELETE,
        &format!("/v1/admin/users/{id}"),
        None,
    )
    .await;
    assert_last_admin(res).await;
    // Refused whole: not disabled, no session ended.
    assert_eq!(me(&app, &admin).await["user"]["disabled"], false);
    assert_still_admin(&app, &admin).await;
    assert_can_log_in(&app, &user).await;
}

async fn the_last_admin_role_cannot_lose_gatehouse_admin(app: TestApp) {
    let (_, admin) = admin(&app).await;
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/admin",
        Some(&json!({ "permissions": ["docs:read"] })),
    )
    .await;
    assert_last_admin(res).await;
    assert_still_admin(&app, &admin).await;
    let roles = ok_json(call(&app, &admin, Method::GET, "/v1/admin/roles", None).await).await;
    assert_eq!(
        roles["roles"],
        json!([{ "name": "admin", "permissions": ["gatehouse:admin"] }])
    );
    // Adding to it is no problem.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/admin",
        Some(&json!({ "permissions": ["gatehouse:admin", "docs:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

async fn the_last_admin_role_cannot_be_deleted(app: TestApp) {
    let (_, admin) = admin(&app).await;
    let res = call(&app, &admin, Method::DELETE, "/v1/admin/roles/admin", None).await;
    assert_last_admin(res).await;
    assert_still_admin(&app, &admin).await;
    assert_eq!(me(&app, &admin).await["user"]["roles"], json!(["admin"]));
}

async fn one_of_two_admins_can_be_demoted_disabled_and_deleted(app: TestApp) {
    let (_, first) = admin(&app).await;
    let (_, second) = admin(&app).await;
    let second_id = my_id(&app, &second).await;
    let user_path = format!("/v1/admin/users/{second_id}");

    // Demoted: the other admin remains.
    let res = call(
        &app,
        &first,
        Method::PUT,
        &format!("{user_path}/roles"),
        Some(&json!({ "roles": [] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(&app, &second, Method::GET, "/v1/admin/users", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Now the first is the last one.
    let first_id = my_id(&app, &first).await;
    let res = call(
        &app,
        &first,
        Method::PUT,
        &format!("/v1/admin/users/{first_id}/roles"),
        Some(&json!({ "roles": [] })),
    )
    .await;
    assert_last_admin(res).await;

    // Promoted again, then disabled: a disabled admin is no admin.
    let res = call(
        &app,
        &first,
        Method::PUT,
        &format!("{user_path}/roles"),
        Some(&json!({ "roles": ["admin"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(
        &app,
        &first,
        Method::PATCH,
        &user_path,
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(
        &app,
        &first,
        Method::PATCH,
        &format!("/v1/admin/users/{first_id}"),
        Some(&json!({ "disabled": true })),
    )
    .await;
    assert_last_admin(res).await;

    // Enabled again, then deleted.
    let res = call(
        &app,
        &first,
        Method::PATCH,
        &user_path,
        Some(&json!({ "disabled": false })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(&app, &first, Method::DELETE, &user_path, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = call(
        &app,
        &first,
        Method::DELETE,
        &format!("/v1/admin/users/{first_id}"),
        None,
    )
    .await;
    assert_last_admin(res).await;
    assert_eq!(enabled_admins(&app, &first).await.len(), 1);
}

async fn an_admin_role_can_go_while_another_grants_gatehouse_admin(app: TestApp) {
    let (_, admin) = admin(&app).await;
    let root = app
        .create_user_with_role("root", &["gatehouse:admin", "docs:read"])
        .await;
    let root_client = app.client();
    assert_eq!(
        app.login(&root_client, &root).await.status(),
        StatusCode::OK
    );

    // `root` still grants gatehouse:admin to its holder.
    let res = call(
        &app,
        &admin,
        Method::PUT,
        "/v1/admin/roles/admin",
        Some(&json!({ "permissions": ["docs:read"] })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = call(&app, &admin, Method::GET, "/v1/admin/users", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Now `root` is the last role that does.
    let res = call(
        &app,
        &root_client,
        Method::PUT,
        "/v1/admin/roles/root",
        Some(&json!({ "permissions": ["docs:read"] })),
    )
    .await;
    assert_last_admin(res).await;
    let res = call(
        &app,
        &root_client,
        Method::DELETE,
        "/v1/admin/roles/root",
        None,
    )
    .await;
    assert_last_admin(res).await;
    // Deleting the role that no longer grants it is no problem.
    let res = call(
        &app,
        &root_client,
        Method::DELETE,
        "/v1/admin/roles/admin",
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_still_admin(&app, &root_client).await;
}

/// Two administrators each try to take the other's rights at the same
/// moment, by roles, by disabling and by deleting, round after round: one
/// must win and one must be refused (409, or 401/403 when the winner's
/// change reached the loser first), never both win.
async fn two_admins_demoting_each_other_at_once_leave_one(app: TestApp) {
    let (mut survivor_user, mut survivor) = admin(&app).await;
    for round in 0..9 {
        let (newcomer_user, newcomer) = admin(&app).await;
        let ids = [my_id(&app, &survivor).await, my_id(&app, &newcomer).await];
        let (method, suffix, body) = match round % 3 {
            0 => (Method::PUT, "/roles", Some(json!({ "roles": [] }))),
            1 => (Method::PATCH, "", Some(json!({ "disabled": true }))),
            _ => (Method::DELETE, "", None),
        };
        // Each aims at the other.
        let at_newcomer = format!("/v1/admin/users/{}{suffix}", ids[1]);
        let at_survivor = format!("/v1/admin/users/{}{suffix}", ids[0]);
        let (by_survivor, by_newcomer) = tokio::join!(
            call(&app, &survivor, method.clone(), &at_newcomer, body.as_ref()),
            call(&app, &newcomer, method.clone(), &at_survivor, body.as_ref()),
        );
        let won = |s: StatusCode| s.is_success();
        let (a, b) = (by_survivor.status(), by_newcomer.status());
        assert!(
            won(a) != won(b),
            "round {round} ({method}): exactly one may win, got {a} and {b}"
        );
        for status in [a, b].into_iter().filter(|s| !won(*s)) {
            assert!(
                [
                    StatusCode::CONFLICT,
                    StatusCode::FORBIDDEN,
                    StatusCode::UNAUTHORIZED
                ]
                .contains(&status),
                "round {round} ({method}): the loser is refused, got {status}"
            );
        }
        if won(b) {
            (survivor_user, survivor) = (newcomer_user, newcomer);
        }
        assert_eq!(
            enabled_admins(&app, &survivor).await,
            vec![survivor_user.email.clone()],
            "round {round} ({method})"
        );
    }
}

#[tokio::test]
async fn the_command_line_is_not_held_to_the_last_admin_rule() {
    // The operator holding the configuration is the recovery path: what
    // they do is theirs to decide (docs/api.md).
    let app = TestApp::spawn().await;
    let (user, admin) = admin(&app).await;
    let out = gatehouse(&app, &["role", "set", "admin", "docs:read"]).await;
    assert!(out.status.success(), "{out:?}");
    let res = call(&app, &admin, Method::GET, "/v1/admin/users", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let out = gatehouse(&app, &["user", "disable", "--email", &user.email]).await;
    assert!(out.status.success(), "{out:?}");
    // And it brings an administrator back.
    let out = gatehouse(&app, &["role", "set", "admin", "gatehouse:admin"]).await;
    assert!(out.status.success(), "{out:?}");
    let rescuer = app
        .create_user_with_role("admin", &["gatehouse:admin"])
        .await;
    let client = app.client();
    assert_eq!(app.login(&client, &rescuer).await.status(), StatusCode::OK);
    assert_still_admin(&app, &client).await;
}
