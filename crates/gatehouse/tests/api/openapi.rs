//! `GET /openapi.json`: the document is served as OpenAPI 3.1, is
//! well-formed (every `$ref` resolves, every operation complete), describes
//! exactly the routes the server answers, and survives schemathesis against
//! a fresh server (no 500, no answer outside the document).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use crate::helpers::*;

/// The schemathesis release the suite is run with (`scripts/test.sh`
/// installs it).
const SCHEMATHESIS: &str = "4.32.5";

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation of the API, as `METHOD path`: API.md's endpoints and
/// docs/api.md's additions (admin audit, resource servers and OpenID clients,
/// the revocation feed, the hosted pages, second factors). Adding a route means adding it
/// here, on purpose.
const OPERATIONS: &[&str] = &[
    "GET /.well-known/jwks.json",
    "GET /.well-known/openid-configuration",
    "GET /account",
    "POST /account/applications/{client_id}/remove",
    "POST /account/email-verification",
    "POST /account/mfa/recovery-codes",
    "POST /account/mfa/totp",
    "POST /account/mfa/totp/confirm",
    "POST /account/mfa/totp/remove",
    "POST /account/passkeys/{id}/remove",
    "POST /account/password",
    "POST /account/sessions/end-others",
    "POST /account/sessions/{id}/end",
    "GET /assets/gatehouse.css",
    "GET /assets/passkeys.js",
    "GET /forgot-password",
    "POST /forgot-password",
    "GET /healthz",
    "GET /login",
    "POST /login",
    "POST /login/mfa",
    "POST /logout",
    "GET /metrics",
    "GET /oauth2/authorize",
    "POST /oauth2/authorize",
    "POST /oauth2/consent",
    "POST /oauth2/introspect",
    "GET /oauth2/logout",
    "POST /oauth2/logout",
    "POST /oauth2/logout/confirm",
    "POST /oauth2/revoke",
    "GET /oauth2/userinfo",
    "POST /oauth2/userinfo",
    "GET /openapi.json",
    "GET /readyz",
    "GET /register",
    "POST /register",
    "GET /reset-password",
    "POST /reset-password",
    "GET /v1/admin/audit",
    "GET /v1/admin/clients",
    "POST /v1/admin/clients",
    "DELETE /v1/admin/clients/{client_id}",
    "GET /v1/admin/clients/{client_id}",
    "PATCH /v1/admin/clients/{client_id}",
    "POST /v1/admin/clients/{client_id}/secret",
    "GET /v1/admin/resource-servers",
    "POST /v1/admin/resource-servers",
    "DELETE /v1/admin/resource-servers/{id}",
    "GET /v1/admin/roles",
    "DELETE /v1/admin/roles/{name}",
    "PUT /v1/admin/roles/{name}",
    "GET /v1/admin/users",
    "POST /v1/admin/users",
    "DELETE /v1/admin/users/{id}",
    "GET /v1/admin/users/{id}",
    "PATCH /v1/admin/users/{id}",
    "DELETE /v1/admin/users/{id}/mfa",
    "PUT /v1/admin/users/{id}/roles",
    "DELETE /v1/admin/users/{id}/sessions",
    "POST /v1/authorize",
    "POST /v1/email/verify",
    "POST /v1/login",
    "POST /v1/login/mfa",
    "POST /v1/login/mfa/passkey-options",
    "POST /v1/login/passkey",
    "POST /v1/login/passkey/options",
    "POST /v1/logout",
    "GET /v1/me",
    "POST /v1/me/email/verification",
    "GET /v1/me/mfa",
    "POST /v1/me/mfa/recovery-codes",
    "DELETE /v1/me/mfa/totp",
    "POST /v1/me/mfa/totp",
    "POST /v1/me/mfa/totp/confirm",
    "POST /v1/me/passkeys",
    "POST /v1/me/passkeys/options",
    "DELETE /v1/me/passkeys/{id}",
    "POST /v1/me/password",
    "POST /v1/password-reset",
    "POST /v1/password-reset/confirm",
    "GET /v1/revocations",
    "POST /v1/session/token",
    "DELETE /v1/sessions",
    "GET /v1/sessions",
    "DELETE /v1/sessions/{id}",
    "POST /v1/token",
    "POST /v1/users",
    "GET /v1/verify",
    "GET /verify-email",
    "POST /verify-email",
];

/// The app's `/openapi.json`, checked to be served as JSON.
pub(crate) async fn document(app: &TestApp) -> Value {
    let res = app
        .bare_client()
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    res.json().await.expect("a JSON document")
}

/// `METHOD path` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_openapi_3_1_of_this_version() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "gatehouse");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    // The server does not know its public URL: no absolute servers.
    if let Some(servers) = doc.get("servers") {
        for s in servers.as_array().expect("servers") {
            let url = s["url"].as_str().expect("url");
            assert!(url.starts_with('/'), "absolute server URL {url}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
    assert_eq!(schemes["sessionCookie"]["type"], "apiKey");
    assert_eq!(schemes["sessionCookie"]["in"], "cookie");
    // The name this server uses: tests run with cookie_secure = false.
    assert_eq!(schemes["sessionCookie"]["name"], app.cookie_name());
    assert_eq!(app.cookie_name(), "gatehouse");
    assert_eq!(schemes["metricsToken"]["scheme"], "bearer");
    assert_eq!(schemes["resourceServerKey"]["scheme"], "bearer");
    // The token endpoint's body is documented as the RFC 6749 form alone
    // (JSON is accepted too, and named in the description): a required body
    // with two media types generates a Python client that does not import
    // (docs/api.md, "The OpenAPI document": "A Python client").
    let body = &doc["paths"]["/v1/token"]["post"]["requestBody"];
    assert_eq!(body["required"], true);
    let media: Vec<&String> = body["content"]
        .as_object()
        .expect("content")
        .keys()
        .collect();
    assert_eq!(media, ["application/x-www-form-urlencoded"]);
    // Form parameters have no null (and the JSON form refuses one).
    let params = &doc["components"]["schemas"]["TokenRequest"]["properties"];
    for name in ["grant_type", "username", "password", "refresh_token"] {
        assert_eq!(params[name]["type"], "string", "{name}");
    }
    let unauthorized = &doc["components"]["responses"]["Unauthorized"];
    // Required, so schemathesis checks every 401 carries the challenge.
    assert_eq!(
        unauthorized["headers"]["WWW-Authenticate"]["required"],
        true
    );
    assert!(unauthorized["content"]["application/problem+json"].is_object());
    assert_eq!(
        doc["components"]["responses"]["Throttled"]["headers"]["Retry-After"]["required"],
        true
    );
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics["text/plain"].is_object());
}

/// Every `$ref` in `value`, with where it was found.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.clone(), r));
                    }
                } else {
                    refs(v, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The structural checks a client generator relies on; OpenAPI 3.1 parsers
/// in Rust only read 3.0, so they are made here with serde_json.
fn problems_of(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut found = Vec::new();
    refs(doc, String::new(), &mut found);
    for (at, r) in found {
        let target = r.strip_prefix('#').and_then(|pointer| doc.pointer(pointer));
        if target.is_none() {
            problems.push(format!("{at}: $ref {r} does not resolve"));
        }
    }
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let schemes = doc["components"]["securitySchemes"].as_object();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let params: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let name = format!("{} {path}", method.to_uppercase());
            match op["operationId"].as_str() {
                Some(id) => {
                    if let Some(other) = ids.insert(id.to_owned(), name.clone()) {
                        problems.push(format!("{name}: operationId {id} is also {other}'s"));
                    }
                }
                None => problems.push(format!("{name}: no operationId")),
            }
            let responses = op["responses"].as_object();
            if responses.is_none_or(|r| r.is_empty()) {
                problems.push(format!("{name}: no responses"));
            }
            for code in responses.into_iter().flatten().map(|(c, _)| c) {
                if !(code.len() == 3 && code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)))
                {
                    problems.push(format!("{name}: response code {code}"));
                }
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            if declared != params {
                problems.push(format!(
                    "{name}: path parameters {declared:?}, template {params:?}"
                ));
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    if !schemes.is_some_and(|s| s.contains_key(scheme)) {
                        problems.push(format!("{name}: unknown security scheme {scheme}"));
                    }
                }
            }
        }
    }
    problems
}

#[tokio::test]
async fn every_ref_resolves_and_every_operation_is_complete() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let problems = problems_of(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The checks bite: a dangling reference and a missing id are found.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["operationId"] = Value::Null;
    broken["components"]["schemas"]
        .as_object_mut()
        .expect("schemas")
        .remove("User");
    let found = problems_of(&broken).join("\n");
    assert!(found.contains("GET /healthz: no operationId"), "{found}");
    assert!(
        found.contains("#/components/schemas/User does not resolve"),
        "{found}"
    );
}

#[tokio::test]
async fn the_document_lists_exactly_the_api_operations() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let documented = operations(&doc);
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| (*s).to_owned()).collect();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "undocumented: {missing:?}; documented but not in OPERATIONS: {extra:?}"
    );
}

/// A concrete path for a template: a fresh UUID for every parameter.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                uuid::Uuid::now_v7().to_string()
            } else {
                s.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Each documented operation reaches a route of the same pattern and method:
/// the metrics label every answer with the route the router matched (or
/// `unmatched`), so after one request per operation each one must appear
/// under its own path template, and nothing may be unmatched or 405.
#[tokio::test]
async fn every_documented_operation_is_routed_under_its_own_pattern() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let client = app.bare_client();
    for op in operations(&doc) {
        let (method, path) = op.split_once(' ').expect("METHOD path");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let res = client
            .request(method, app.url(&concrete(path)))
            .send()
            .await
            .expect("request");
        assert_ne!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{op}");
    }
    let text = client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(
        !text.contains(r#"route="unmatched""#),
        "a documented path is not routed:\n{text}"
    );
    for op in operations(&doc) {
        let (method, path) = op.split_once(' ').expect("METHOD path");
        let label = format!(r#"gatehouse_http_requests_total{{method="{method}",route="{path}","#);
        assert!(text.contains(&label), "{op} was not routed as {path}");
    }
}

/// The `.route(`-style calls in the HTTP layer's source that are not in the
/// document, as `METHOD path` (or the call itself when it cannot be read).
/// Routes are meant to be registered with utoipa-axum's `routes!`, which
/// documents them by construction; a plain axum registration slipping in
/// (`.route("/x", get(h))`, `.nest`, `.route_service`) is what this finds.
fn undocumented_routes(source: &str, documented: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
        for (at, _) in source.match_indices(call) {
            let args = &source[at + call.len()..];
            let end = args.find(')').map_or(args.len(), |e| e + 1);
            let snippet = args[..end].trim().to_owned();
            let path = args
                .trim_start()
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .map(|(p, _)| p);
            let Some(path) = path else {
                out.push(format!("{call}{snippet}"));
                continue;
            };
            let window = &args[..args.find("\n\n").unwrap_or(args.len()).min(400)];
            let mut methods: Vec<&str> = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| window.contains(&format!("{m}(")) || window.contains(&format!(".{m}(")))
                .collect();
            if window.contains("any(") || methods.is_empty() {
                methods = vec!["get"];
            }
            for m in methods {
                let op = format!("{} {path}", m.to_uppercase());
                if !documented.contains(&op) {
                    out.push(op);
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn no_route_is_registered_outside_the_document() {
    let app = TestApp::spawn().await;
    let documented = operations(&document(&app).await);
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"),
        &mut files,
    );
    assert!(files.len() > 5, "the HTTP layer's sources were not found");
    let mut undocumented = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("source");
        for op in undocumented_routes(&source, &documented) {
            undocumented.push(format!("{}: {op}", file.display()));
        }
    }
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (register them with utoipa-axum's \
         routes! and a #[utoipa::path]):\n{}",
        undocumented.join("\n")
    );
    // The scan finds what it is for.
    let planted = r#"Router::new().route("/v1/new", get(a).post(b)).route("/healthz", get(h))"#;
    assert_eq!(
        undocumented_routes(planted, &documented),
        ["GET /v1/new", "POST /v1/new"]
    );
}

/// Operations that can take the admin's own rights away (its role, its
/// account, its sessions); they run after the others, so that a right
/// schemathesis happens to revoke does not leave the rest of the API tested
/// only for its 403.
const DESTRUCTIVE: &[&str] = &[
    "deleteRole",
    "putRole",
    "deleteUser",
    "patchUser",
    "setUserRoles",
];

/// schemathesis against a fresh server: every operation with generated
/// valid and invalid input, with the credentials its security scheme names
/// (`schemathesis_hooks.py`), checking that nothing answers 500 and that
/// every answer (status, content type, headers, body) is one the document
/// declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let version = Command::new("schemathesis").arg("--version").output();
    let installed = version.as_ref().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)
    });
    assert!(
        installed,
        "schemathesis {SCHEMATHESIS} is required: `pip install schemathesis=={SCHEMATHESIS}` \
         (or run `bash scripts/test.sh`, which installs it); found: {version:?}"
    );
    let app = TestApp::spawn_with(|c| {
        // schemathesis logs in with made-up passwords and the hooks log the
        // admin in again after every 401, all from one address; throttling
        // is tested elsewhere.
        c.login_max_failures = 1000;
        c.login_max_failures_per_ip = 1_000_000;
        c.registration_max_per_ip = 1_000_000;
    })
    .await;
    let admin = app
        .create_user_with_role("st-admin", &["gatehouse:admin"])
        .await;
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", admin.email.as_str()),
            ("password", admin.password.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let token: Value = res.json().await.expect("token");
    let bearer = token["access_token"].as_str().expect("access_token");
    let res = app
        .bare_client()
        .post(app.url("/v1/admin/resource-servers"))
        .bearer_auth(bearer)
        .json(&serde_json::json!({ "name": "schemathesis" }))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.expect("resource server");
    let rs_key = created["key"].as_str().expect("key").to_owned();

    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |filter: &[&str]| {
        let started = Instant::now();
        let mut cmd = Command::new("schemathesis");
        cmd.current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", &hooks)
            .env("GATEHOUSE_ST_BASE", app.url(""))
            .env("GATEHOUSE_ST_EMAIL", &admin.email)
            .env("GATEHOUSE_ST_PASSWORD", &admin.password)
            .env("GATEHOUSE_ST_COOKIE", app.cookie_name())
            .env("GATEHOUSE_ST_RS_KEY", &rs_key)
            .args(["run", &app.url("/openapi.json")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_headers_conformance,response_schema_conformance",
                "--max-examples",
                "15",
                "--seed",
                "20261202",
                // One worker: concurrent workers are threads, and CPython
                // 3.11's parser is not thread-safe when Hypothesis describes
                // its filters ("AST constructor recursion depth mismatch").
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                // Lets the hosted pages' form posts past their CSRF rule, so
                // their handlers are exercised too.
                "--header",
                "Sec-Fetch-Site: same-origin",
            ])
            .args(filter);
        let out = cmd.output().expect("schemathesis runs");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Shown with --nocapture, and with the failure otherwise.
        eprintln!(
            "schemathesis {filter:?}: {} in {:.0?}\n{text}",
            out.status,
            started.elapsed()
        );
        (out.status.success(), text)
    };
    let destructive = DESTRUCTIVE.join("|");
    let pattern = format!("^({destructive})$");
    let (ok, text) = run(&["--exclude-operation-id-regex", &pattern]);
    assert!(ok, "schemathesis failed:\n{text}");
    let (ok, text) = run(&["--include-operation-id-regex", &pattern]);
    assert!(
        ok,
        "schemathesis failed on the destructive operations:\n{text}"
    );
}
