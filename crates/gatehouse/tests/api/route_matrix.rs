//! Matrices over every operation the OpenAPI document lists, so a route
//! added later is covered without anyone remembering it:
//! - CSRF: every cookie-authenticated write from a foreign `Origin` is 403
//!   (and the same request from the issuer's origin is not refused for it);
//! - the admin API: every operation is 401 without credentials and 403 for
//!   a signed-in user without `gatehouse:admin`, by cookie and by token;
//! - hostile bodies: every operation that takes a JSON or form body answers
//!   malformed, mistyped, oversized and SQL-looking bodies with a 4xx (the
//!   hosted pages may also redirect back to their form), never a 5xx, and
//!   the server goes on serving.

use reqwest::header::{CONTENT_TYPE, ORIGIN};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

const EVIL: &str = "https://evil.example";

/// One operation of the document.
struct Operation {
    method: Method,
    /// The path with every `{param}` filled with something well-formed.
    path: String,
    /// The document's path, for messages.
    template: String,
    tags: Vec<String>,
    /// The security schemes any of its requirements names.
    schemes: Vec<String>,
    /// `application/json` or `application/x-www-form-urlencoded`, if it
    /// takes a body.
    body: Option<String>,
    /// Its query parameters' names.
    query: Vec<String>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    fn writes(&self) -> bool {
        matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
    }

    fn takes_cookie(&self) -> bool {
        self.schemes.iter().any(|s| s == "sessionCookie")
    }
}

/// A well-formed value for a path parameter: an id for `{id}` and
/// `{client_id}`, a role name for `{name}`.
fn fill(template: &str) -> String {
    template
        .replace("{id}", "0193e5a0-0000-7000-8000-000000000001")
        .replace("{client_id}", "0193e5a0-0000-7000-8000-000000000001")
        .replace("{name}", "no-such-role")
}

/// Every operation of the app's `/openapi.json`.
async fn operations(app: &TestApp) -> Vec<Operation> {
    let doc = crate::openapi::document(app).await;
    let mut ops = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let schemes = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .flat_map(|req| req.keys().cloned())
                .collect();
            let body = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.keys().next().cloned());
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            ops.push(Operation {
                method,
                path: fill(template),
                template: template.clone(),
                tags: op["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
                schemes,
                body,
                query,
            });
        }
    }
    assert!(
        ops.len() > 20,
        "the document lists {} operations",
        ops.len()
    );
    ops
}

/// A request for `op` with a body of the right kind that parses.
fn request(app: &TestApp, client: &reqwest::Client, op: &Operation) -> RequestBuilder {
    let req = client.request(op.method.clone(), app.url(&op.path));
    match op.body.as_deref() {
        Some("application/json") => req.json(&json!({})),
        Some(other) => req.header(CONTENT_TYPE, other).body(""),
        None => req,
    }
}

/// Whether the answer is a CSRF refusal: the API's problem document, or
/// the hosted pages' "Refused" page.
async fn is_csrf_refusal(res: reqwest::Response) -> bool {
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    status == StatusCode::FORBIDDEN
        && (body.contains("Cross-origin request refused")
            || body.contains("This form was sent from another site"))
}

/// An admin account.
async fn admin(app: &TestApp) -> TestUser {
    app.create_user_with_role("matrix-admin", &["gatehouse:admin"])
        .await
}

/// A fresh session of `admin` on a client of its own: an operation may end
/// the session it rides on (logout, a password change), and the next one
/// must still carry a live cookie.
async fn signed_in(app: &TestApp, admin: &TestUser) -> reqwest::Client {
    let client = app.client();
    let res = app.login(&client, admin).await;
    assert_eq!(res.status(), StatusCode::OK, "the admin logs in");
    client
}

#[tokio::test]
async fn every_cookie_authenticated_write_from_a_foreign_origin_is_403() {
    let app = TestApp::spawn().await;
    let account = admin(&app).await;
    let mut checked = Vec::new();
    for op in operations(&app).await {
        if !op.writes() || !op.takes_cookie() {
            continue;
        }
        let admin = signed_in(&app, &account).await;
        let res = request(&app, &admin, &op)
            .header(ORIGIN, EVIL)
            .send()
            .await
            .expect("request");
        assert!(
            is_csrf_refusal(res).await,
            "{} with the cookie from {EVIL} must be refused as cross-origin",
            op.name()
        );
        // Refused before anything happened: the session lives on.
        assert_eq!(
            app.get_me(&admin).await.status(),
            StatusCode::OK,
            "{} from {EVIL} ended the session",
            op.name()
        );
        // The control: from the issuer's origin the guard lets it through
        // (whatever the handler then answers).
        let res = request(&app, &admin, &op)
            .header(ORIGIN, app.origin())
            .send()
            .await
            .expect("request");
        assert!(
            !is_csrf_refusal(res).await,
            "{} from the issuer's own origin is refused as cross-origin",
            op.name()
        );
        checked.push(op.name());
    }
    eprintln!("CSRF matrix: {} operations: {checked:?}", checked.len());
    for must in [
        "DELETE /v1/sessions/{id}",
        "POST /v1/logout",
        "POST /v1/me/password",
        "POST /v1/admin/resource-servers",
    ] {
        assert!(checked.iter().any(|c| c == must), "{must} was not checked");
    }
}

#[tokio::test]
async fn every_admin_operation_is_401_anonymous_and_403_without_the_permission() {
    let app = TestApp::spawn().await;
    let (user, cookie_client) = app.logged_in().await;
    let (token, _) = token_pair(&app, &user).await;
    let mut checked = 0;
    for op in operations(&app).await {
        if !op.tags.iter().any(|t| t == "admin") {
            continue;
        }
        let res = request(&app, &app.bare_client(), &op)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{} without credentials",
            op.name()
        );
        let res = request(&app, &cookie_client, &op)
            .header(ORIGIN, app.origin())
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{} by a user's cookie",
            op.name()
        );
        let res = request(&app, &app.bare_client(), &op)
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{} by a user's access token",
            op.name()
        );
        checked += 1;
    }
    eprintln!("admin matrix: {checked} operations");
    assert!(checked >= 10, "only {checked} admin operations found");
}

/// Bodies no endpoint may answer with a 5xx: broken, mistyped, hostile.
fn hostile_bodies(content_type: &str) -> Vec<(&'static str, Vec<u8>)> {
    let sql = "' OR 1=1; DROP TABLE users; --";
    let mut bodies = vec![
        ("empty", Vec::new()),
        ("NUL bytes", vec![0; 64]),
        ("bytes that are not UTF-8", vec![0xff, 0xfe, 0x80, 0x81]),
        ("2 MiB", vec![b'a'; 2 * 1024 * 1024]),
    ];
    if content_type == "application/json" {
        let typed = |v: Value| v.to_string().into_bytes();
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        bodies.extend([
            ("truncated JSON", b"{\"email\": \"a@".to_vec()),
            ("a JSON array", typed(json!([1, 2, 3]))),
            ("a JSON string", typed(json!("text"))),
            ("JSON nested 10,000 deep", deep.into_bytes()),
            (
                "every field a number",
                typed(json!({
                    "email": 1, "password": 2, "name": 3, "roles": 4, "disabled": 5,
                    "permissions": 6, "current_password": 7, "new_password": 8,
                })),
            ),
            (
                "every field SQL",
                typed(json!({
                    "email": sql, "password": sql, "name": sql, "roles": [sql],
                    "permissions": [sql], "current_password": sql, "new_password": sql,
                })),
            ),
            (
                "every field null",
                typed(json!({
                    "email": null, "password": null, "name": null, "roles": null,
                    "disabled": null, "permissions": null,
                })),
            ),
        ]);
    } else {
        bodies.extend([
            (
                "a form of SQL",
                format!("grant_type={sql}&username={sql}").into_bytes(),
            ),
            (
                "a form with % escapes broken",
                b"grant_type=%zz&%=%".to_vec(),
            ),
            (
                "a form with every field twice",
                b"a=1&a=2&grant_type=password&grant_type=password".to_vec(),
            ),
        ]);
    }
    bodies
}

#[tokio::test]
async fn every_body_taking_operation_answers_hostile_bodies_with_a_4xx() {
    let app = TestApp::spawn().await;
    let account = admin(&app).await;
    let mut checked = Vec::new();
    for op in operations(&app).await {
        let Some(content_type) = op.body.clone() else {
            continue;
        };
        for (what, body) in hostile_bodies(&content_type) {
            let admin = signed_in(&app, &account).await;
            let res = admin
                .request(op.method.clone(), app.url(&op.path))
                .header(ORIGIN, app.origin())
                .header(CONTENT_TYPE, &content_type)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{} with {what}: {e}", op.name()));
            let status = res.status();
            let page = op.tags.iter().any(|t| t == "pages");
            // Every parameter of RP-initiated logout is optional (OpenID
            // Connect RP-Initiated Logout 1.0 §2): a form of none, or of
            // unknown ones, is the bare request, which asks the signed-in
            // visitor to confirm (and ends nothing).
            if op.name() == "POST /oauth2/logout"
                && matches!(what, "empty" | "a form of SQL")
                && status == StatusCode::OK
            {
                let html = res.text().await.unwrap_or_default();
                assert!(html.contains("Sign out of gatehouse?"), "{what}: {html}");
                continue;
            }
            assert!(
                status.is_client_error() || (page && status.is_redirection()),
                "{} with {what}: {status} {}",
                op.name(),
                res.text().await.unwrap_or_default()
            );
        }
        checked.push(op.name());
    }
    eprintln!(
        "hostile-body matrix: {} operations: {checked:?}",
        checked.len()
    );
    assert!(
        checked.len() >= 10,
        "only {} operations take a body",
        checked.len()
    );
    // Still serving: the admin signs in and is recognised.
    let admin = signed_in(&app, &account).await;
    assert_eq!(app.get_me(&admin).await.status(), StatusCode::OK);
}

/// A well-formed value for a query parameter, so that only the rule under
/// test can refuse the request.
fn query_value(name: &str) -> &'static str {
    match name {
        "scope" => "others",
        "limit" => "5",
        "wait" => "0",
        "user" => "0193e5a0-0000-7000-8000-000000000001",
        "type" => "login_failed",
        _ => "x",
    }
}

/// Every API operation that reads a query string reads it strictly: an
/// unknown parameter is 400, and so is a parameter given twice (each
/// declared one in turn), with the well-formed query accepted as the
/// control.
#[tokio::test]
async fn every_query_taking_api_operation_refuses_unknown_and_repeated_parameters() {
    let app = TestApp::spawn().await;
    let account = admin(&app).await;
    let admin = signed_in(&app, &account).await;
    let created: Value = admin
        .post(app.url("/v1/admin/resource-servers"))
        .json(&json!({ "name": "matrix" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let key = created["key"].as_str().expect("a key").to_owned();
    let mut checked = Vec::new();
    for op in operations(&app).await {
        if op.query.is_empty() || !op.template.starts_with("/v1/") {
            continue;
        }
        let send = |query: String| {
            let req = admin
                .request(op.method.clone(), app.url(&format!("{}?{query}", op.path)))
                .header(ORIGIN, app.origin());
            let req = if op.schemes.iter().any(|s| s == "resourceServerKey") {
                req.bearer_auth(&key)
            } else {
                req
            };
            async move { req.send().await.expect("request") }
        };
        let good: Vec<String> = op
            .query
            .iter()
            .filter(|name| name.as_str() != "since" && name.as_str() != "cursor")
            .map(|name| format!("{name}={}", query_value(name)))
            .collect();
        let res = send(good.join("&")).await;
        let status = res.status();
        assert!(
            status.is_success(),
            "{} with {good:?}: {status} {}",
            op.name(),
            res.text().await.unwrap_or_default()
        );
        let mut unknown = good.clone();
        unknown.push("no_such_parameter=1".into());
        let res = send(unknown.join("&")).await;
        assert_eq!(
            res.status(),
            StatusCode::BAD_REQUEST,
            "{} with an unknown parameter",
            op.name()
        );
        for name in &op.query {
            let twice = format!("{name}={v}&{name}={v}", v = query_value(name));
            let res = send(twice).await;
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{} with {name} twice: {body}",
                op.name()
            );
            assert!(body.contains("given twice"), "{body}");
        }
        checked.push(op.name());
    }
    eprintln!("query matrix: {checked:?}");
    for must in [
        "GET /v1/admin/users",
        "GET /v1/admin/audit",
        "GET /v1/revocations",
        "DELETE /v1/sessions",
    ] {
        assert!(checked.iter().any(|c| c == must), "{must} was not checked");
    }
}
