//! The nginx setup of docs/integrations.md, end to end: the documented
//! ```nginx block, taken verbatim from the page with only its addresses
//! substituted, run by a real nginx in front of gatehouse (`TestApp`) and a
//! small app that echoes the identity headers it receives.
//!
//! nginx must be installed: `bash scripts/test.sh` installs it when missing
//! (or `apt-get install nginx`). Without it these tests fail; they never
//! skip, so a green run always means the documented block works.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use gatehouse::config::{AccessRule, RulePolicy};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Longest nginx may take to start, and any request to answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// The addresses the documented block uses, which the test replaces.
const DOC_GATEHOUSE: &str = "127.0.0.1:8080";
const DOC_APP: &str = "127.0.0.1:3000";
const DOC_LISTEN: &str = "listen 8000;";

// ------------------------------------------------------ the documented block

fn integrations_md() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/integrations.md"
    ))
}

/// The one ```nginx block of docs/integrations.md.
fn documented_block() -> String {
    let path = integrations_md();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_end() == "```nginx" => current = Some(Vec::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => {
                blocks.push(current.take().unwrap_or_default().join("\n"));
            }
            Some(lines) => lines.push(line),
        }
    }
    assert!(current.is_none(), "an unterminated ```nginx block");
    assert_eq!(
        blocks.len(),
        1,
        "docs/integrations.md must hold exactly one ```nginx block"
    );
    let block = blocks.remove(0);
    for needle in [DOC_GATEHOUSE, DOC_APP, DOC_LISTEN] {
        assert!(
            block.contains(needle),
            "the documented block no longer contains {needle:?}; the test substitutes it"
        );
    }
    block
}

/// The "Trying it on one machine" configuration of docs/integrations.md
/// (the ```toml block marked "local development only"), with nginx's
/// documented address replaced by `nginx`'s, read as gatehouse reads it.
fn documented_local_config(nginx: &str) -> gatehouse::Config {
    let text = std::fs::read_to_string(integrations_md()).expect("reading integrations.md");
    let block = text
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("local development only"))
        .expect("integrations.md has a ```toml block for local development");
    assert!(
        block.contains("127.0.0.1:8000"),
        "the local block names the proxy's address"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(&file, block.replace("127.0.0.1:8000", nginx)).expect("writing the block");
    gatehouse::Config::from_sources(Some(&file), std::iter::empty())
        .unwrap_or_else(|e| panic!("the documented local configuration: {e}"))
}

// ------------------------------------------------------------- the app

/// One request the app received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
}

/// The app behind nginx: answers every path with the identity headers it
/// received, and records every request.
struct EchoApp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoApp {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the app");
        let addr = listener.local_addr().expect("app address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(echo)
            .with_state(Arc::clone(&seen));
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("the app serves");
        });
        Self { addr, seen }
    }

    /// Every request the app saw whose path starts with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn echo(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let body = json!({
        "method": method.as_str(),
        "path": uri.to_string(),
        "x-auth-request-user": all("x-auth-request-user"),
        "x-auth-request-email": all("x-auth-request-email"),
        "x-auth-request-roles": all("x-auth-request-roles"),
    });
    seen.lock().expect("lock").push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        headers,
    });
    axum::Json(body)
}

// ------------------------------------------------------------- nginx

/// The nginx binary: `nginx` on `PATH`, else `/usr/sbin/nginx`.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed (not on PATH, no /usr/sbin/nginx); these tests need \
                 it: `bash scripts/test.sh` installs it, or run `apt-get install nginx`"
            )
        })
}

/// A port nobody listened on a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running nginx serving the documented block; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// nginx with the documented block, pointed at `gatehouse` and `app`.
    /// Retries with another port if the free one was taken meanwhile.
    fn start(gatehouse: SocketAddr, app: SocketAddr) -> Self {
        let binary = nginx_binary();
        let block = documented_block();
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let server = block
                .replace(DOC_GATEHOUSE, &gatehouse.to_string())
                .replace(DOC_APP, &app.to_string())
                .replace(DOC_LISTEN, &format!("listen 127.0.0.1:{port};"));
            match Self::try_start(&binary, &server, port) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// nginx with the documented block on `port` (chosen beforehand, so
    /// that gatehouse's `issuer` can name it).
    fn start_on(gatehouse: SocketAddr, app: SocketAddr, port: u16) -> Self {
        let server = documented_block()
            .replace(DOC_GATEHOUSE, &gatehouse.to_string())
            .replace(DOC_APP, &app.to_string())
            .replace(DOC_LISTEN, &format!("listen 127.0.0.1:{port};"));
        Self::try_start(&nginx_binary(), &server, port)
            .unwrap_or_else(|e| panic!("nginx did not start: {e}"))
    }

    fn try_start(binary: &Path, server: &str, port: u16) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log notice;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log off;\n\
             client_body_temp_path {d}/client_body_temp;\n\
             proxy_temp_path {d}/proxy_temp;\n\
             fastcgi_temp_path {d}/fastcgi_temp;\n\
             uwsgi_temp_path {d}/uwsgi_temp;\n\
             scgi_temp_path {d}/scgi_temp;\n\
             {server}\n\
             }}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, &conf).expect("writing nginx.conf");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        let mut nginx = Self { child, port, dir };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = nginx.child.try_wait().expect("polling nginx") {
                return Err(format!(
                    "nginx exited with {status}; error log:\n{}\nconfiguration:\n{conf}",
                    nginx.error_log()
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "nginx did not listen on {port} within {DEADLINE:?}; error log:\n{}",
                    nginx.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A request with the target exactly as given (reqwest would resolve
    /// `..` and `%2e%2e` before sending); returns the status and body.
    async fn raw_get(&self, target: &str) -> (u16, String) {
        self.raw_request(target.as_bytes(), "").await
    }

    /// [`Nginx::raw_get`] with a target of any bytes and extra header
    /// lines (each ending in CRLF).
    async fn raw_request(&self, target: &[u8], headers: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let shown = String::from_utf8_lossy(target);
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .expect("connecting");
            let mut request = b"GET ".to_vec();
            request.extend_from_slice(target);
            request.extend_from_slice(
                format!(
                    " HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Connection: close\r\n\r\n",
                    self.port
                )
                .as_bytes(),
            );
            stream.write_all(&request).await.expect("sending");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("reading");
            response
        };
        let response = tokio::time::timeout(DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| panic!("GET {shown} through nginx: no answer in {DEADLINE:?}"));
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

// ------------------------------------------------------------- scenario

/// The permission the `/admin/` rule demands.
const SITE_ADMIN: &str = "site:admin";

/// gatehouse, the app and nginx in front of both.
struct Stack {
    app: TestApp,
    echo: EchoApp,
    nginx: Nginx,
}

async fn stack() -> Stack {
    let app = TestApp::spawn_with(|c: &mut gatehouse::Config| {
        c.rules = vec![
            AccessRule {
                path: "/public/".into(),
                methods: vec!["GET".into(), "HEAD".into()],
                policy: RulePolicy::Public,
                mfa: false,
            },
            AccessRule {
                path: "/admin/".into(),
                methods: Vec::new(),
                policy: RulePolicy::Permission(SITE_ADMIN.into()),
                mfa: false,
            },
        ];
    })
    .await;
    let echo = EchoApp::start().await;
    let nginx = Nginx::start(app.addr, echo.addr);
    Stack { app, echo, nginx }
}

/// A browser-like client: a cookie jar, no redirects, no `Origin` header.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// `GET path` through nginx; returns the status and the body as JSON (or
/// `Null` when it is not, such as nginx's own error pages).
async fn get(client: &Client, nginx: &Nginx, path: &str) -> (StatusCode, Value) {
    let res = client
        .get(nginx.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} through nginx: {e}"));
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Logs `user` in through nginx on `client`; returns the session cookie as
/// a `Cookie` header value, for replaying after logout.
async fn login_through(client: &Client, nginx: &Nginx, app: &TestApp, user: &TestUser) -> String {
    let res = client
        .post(nginx.url("/v1/login"))
        .json(&json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("POST /v1/login through nginx");
    assert_eq!(res.status(), StatusCode::OK, "login through nginx");
    let name = app.cookie_name();
    let value = session_cookie_value(&res, name).expect("nginx passes Set-Cookie through");
    format!("{name}={value}")
}

/// The caller's id from `GET /v1/me` through nginx.
async fn my_id(client: &Client, nginx: &Nginx) -> String {
    let (status, body) = get(client, nginx, "/v1/me").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["user"]["id"].as_str().expect("user.id").to_owned()
}

/// What the app echoed for one identity header.
fn echoed<'a>(body: &'a Value, header: &str) -> Vec<&'a str> {
    body[header]
        .as_array()
        .unwrap_or_else(|| panic!("the app's answer, with {header}: {body}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[tokio::test]
async fn the_documented_nginx_block_protects_an_app_end_to_end() {
    let Stack { app, echo, nginx } = stack().await;

    // Anonymous: 401 with gatehouse's challenge; the app never sees it.
    let anon = browser();
    let res = anon.get(nginx.url("/hello")).send().await.expect("GET");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="gatehouse""#),
        "nginx passes gatehouse's challenge on"
    );
    assert!(
        echo.seen("/hello").is_empty(),
        "the app saw a refused request"
    );

    // A public path passes without credentials, and a client's own identity
    // headers do not reach the app.
    let res = anon
        .get(nginx.url("/public/page"))
        .header("X-Auth-Request-User", "forged")
        .header("X-Auth-Request-Email", "forged@example.com")
        .header("X-Auth-Request-Roles", "admin")
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("the app's json");
    for h in [
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-roles",
    ] {
        assert!(echoed(&body, h).is_empty(), "{h} reached the app: {body}");
    }

    // Log in through nginx (same origin as the app; no Origin header).
    let user = app.create_user().await;
    let client = browser();
    let cookie = login_through(&client, &nginx, &app, &user).await;
    let id = my_id(&client, &nginx).await;
    let (status, body) = get(&client, &nginx, "/hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "x-auth-request-user"), [id.as_str()]);
    assert_eq!(echoed(&body, "x-auth-request-email"), [user.email.as_str()]);
    assert_eq!(body["path"], "/hello");

    // A logged-in client forging its identity: the app sees the real one,
    // once.
    let res = client
        .get(nginx.url("/hello"))
        .header("X-Auth-Request-User", "forged")
        .header("X-Auth-Request-Email", "forged@example.com")
        .header("X-Auth-Request-Roles", "admin")
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("the app's json");
    assert_eq!(echoed(&body, "x-auth-request-user"), [id.as_str()]);
    assert_eq!(echoed(&body, "x-auth-request-email"), [user.email.as_str()]);
    let roles = echoed(&body, "x-auth-request-roles");
    assert!(roles.iter().all(|r| r.is_empty()), "roles: {roles:?}");

    // A user without site:admin: 403 on /admin/, and the app never sees it.
    let (status, _) = get(&client, &nginx, "/admin/x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(echo.seen("/admin/").is_empty(), "the app saw /admin/x");

    // A holder of site:admin passes, with their roles.
    let holder = app
        .create_user_with_role("site-admins", &[SITE_ADMIN])
        .await;
    let holder_client = browser();
    login_through(&holder_client, &nginx, &app, &holder).await;
    let (status, body) = get(&holder_client, &nginx, "/admin/x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echoed(&body, "x-auth-request-roles"), ["site-admins"]);
    assert_eq!(
        echoed(&body, "x-auth-request-email"),
        [holder.email.as_str()]
    );

    // A bearer token works through nginx as well.
    let token = password_grant(&app, &user).await;
    let res = reqwest::Client::new()
        .get(nginx.url("/hello"))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("the app's json");
    assert_eq!(echoed(&body, "x-auth-request-user"), [id.as_str()]);

    // Logout through nginx: refused at once, the jar's cookie and a replay.
    let res = client
        .post(nginx.url("/v1/logout"))
        .send()
        .await
        .expect("POST /v1/logout through nginx");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&client, &nginx, "/hello").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let res = reqwest::Client::new()
        .get(nginx.url("/hello"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the old cookie");

    // Every request the app saw under /admin/ or /hello was vouched for.
    for seen in echo.seen("/") {
        if seen.path.starts_with("/public/") {
            continue;
        }
        assert!(
            seen.headers.get("x-auth-request-user").is_some(),
            "the app saw {} {} without an identity",
            seen.method,
            seen.path
        );
    }
}

/// A password-grant access token for `user`, straight from gatehouse.
async fn password_grant(app: &TestApp, user: &TestUser) -> String {
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
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// nginx passes the app the request target as the client sent it, while
/// gatehouse judges the normalised path: a target that climbs out of
/// `/admin/` into `/public/` must not reach the app, and one that climbs
/// into `/admin/` must be judged as `/admin/`.
#[tokio::test]
async fn the_documented_nginx_block_lets_no_path_trick_through() {
    let Stack {
        app: _app,
        echo,
        nginx,
    } = stack().await;
    for target in [
        "/admin/../public/x",
        "/admin/%2e%2e/public/x",
        "/admin/%2E%2E/public/x",
        "/admin/..%2fpublic/x",
        "/admin%2f..%2fpublic/x",
        "/admin/./../public/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/..%2fadmin/x",
        "//admin/x",
        "/admin%2fx",
        "/a%5c..%5cadmin/x",
        "/public/..;/admin/x",
        "/public/%252e%252e/admin/x",
        "/admin;x/../public/x",
        "/admin./../public/x",
    ] {
        let (status, body) = nginx.raw_get(target).await;
        assert!(
            matches!(status, 400 | 401 | 403),
            "anonymous GET {target} through nginx: {status} {body}"
        );
    }
    assert!(
        echo.seen("/").is_empty(),
        "the app saw: {:?}",
        echo.seen("/").iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    // Dots inside names and in the query are not tricks.
    let (status, body) = nginx.raw_get("/public/.well-known/a..b?next=/x/../y").await;
    assert_eq!(status, 200, "{body}");
}

/// The outside attack's critical hole, through the documented block: nginx
/// copies a request line's raw bytes (`é`, 0xFF) into `X-Original-URI`, and
/// a client adds Traefik's `X-Forwarded-Uri` naming a public path. The
/// block clears Traefik's headers and gatehouse judges the raw bytes, so
/// the request is refused (401 anonymous, 403 for a user without the
/// permission; never a 500, never the app).
#[tokio::test]
async fn the_documented_nginx_block_refuses_raw_bytes_with_a_planted_header() {
    let Stack { app, echo, nginx } = stack().await;
    let user = app.create_user().await;
    let cookie = login_through(&browser(), &nginx, &app, &user).await;
    let planted = "X-Forwarded-Uri: /public/x\r\nX-Forwarded-Method: GET\r\n";
    for target in [
        &b"/admin/secret?\xc3\xa9"[..],
        b"/admin/secret\xc3\xa9",
        b"/admin/\xff",
        b"/admin/\x80x",
    ] {
        let shown = String::from_utf8_lossy(target);
        for extra in ["", planted] {
            let (status, body) = nginx.raw_request(target, extra).await;
            assert_eq!(status, 401, "anonymous GET {shown} with {extra:?}: {body}");
            let with_cookie = format!("{extra}Cookie: {cookie}\r\n");
            let (status, body) = nginx.raw_request(target, &with_cookie).await;
            assert_eq!(
                status, 403,
                "a user without site:admin, GET {shown} with {extra:?}: {body}"
            );
        }
    }
    // Case is not a way round a rule either (the guard cannot see it).
    let (status, body) = nginx
        .raw_request(b"/ADMIN/x", &format!("Cookie: {cookie}\r\n"))
        .await;
    assert_eq!(
        status, 403,
        "a user without site:admin, GET /ADMIN/x: {body}"
    );
    assert!(
        echo.seen("/").is_empty(),
        "the app saw: {:?}",
        echo.seen("/").iter().map(|s| &s.path).collect::<Vec<_>>()
    );
}

/// The documented block in front of gatehouse run with the documented
/// local configuration, whose issuer is nginx's own origin (`site`).
struct LocalStack {
    app: TestApp,
    echo: EchoApp,
    nginx: Nginx,
    site: String,
}

async fn local_stack() -> LocalStack {
    let port = free_port();
    let origin = format!("127.0.0.1:{port}");
    let local = documented_local_config(&origin);
    assert!(!local.cookie_secure, "the local configuration's cookie");
    let app = TestApp::spawn_with(move |c: &mut gatehouse::Config| {
        c.issuer = local.issuer.clone();
        c.cookie_secure = local.cookie_secure;
    })
    .await;
    let echo = EchoApp::start().await;
    let nginx = Nginx::start_on(app.addr, echo.addr, port);
    LocalStack {
        app,
        echo,
        nginx,
        site: format!("http://{origin}"),
    }
}

/// A browser: a cookie jar, no automatic redirects, and what browsers send
/// on a navigation (`Accept: text/html…`).
fn navigator() -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
    );
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location in {res:?}"))
        .to_owned()
}

/// The documented block with the documented local configuration: a browser
/// asking for a protected page is sent to gatehouse's sign-in page with
/// where it was going percent-encoded, signs in there with a form post
/// from the site's origin (the CSRF check passes because the issuer is the
/// proxy's origin), and comes back to exactly that URI; the account page,
/// sign-out and the stylesheet work through nginx; API clients keep the
/// 401; a refused POST is never replayed at gatehouse's login.
#[tokio::test]
async fn the_documented_nginx_block_signs_browsers_in_on_the_hosted_pages() {
    let LocalStack {
        app,
        echo,
        nginx,
        site,
    } = local_stack().await;
    let user = app.create_user().await;

    // Where the browser was going: a query with `&`, an escaped space and
    // a non-ASCII escape, which an unencoded `$request_uri` would break.
    let wanted = "/orders/42?view=full&q=a%20b&name=%C3%A9";
    let browser = navigator();
    let res = browser.get(nginx.url(wanted)).send().await.expect("GET");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{res:?}");
    let to_login = location(&res);
    assert_eq!(
        to_login,
        format!(
            "/login?return_to={}",
            url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect::<String>()
        )
    );
    assert!(
        echo.seen("/orders").is_empty(),
        "the app saw a refused request"
    );

    // The sign-in page and its stylesheet, through nginx.
    let res = browser
        .get(nginx.url(&to_login))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.expect("the page");
    assert!(page.contains(r#"action="/login""#), "{page}");
    let hidden = format!(
        r#"name="return_to" value="{}""#,
        wanted.replace('&', "&amp;")
    );
    assert!(page.contains(&hidden), "the page carries {hidden}: {page}");
    let css = browser
        .get(nginx.url("/assets/gatehouse.css"))
        .send()
        .await
        .expect("GET the stylesheet");
    assert_eq!(css.status(), StatusCode::OK);
    assert!(
        css.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/css")),
        "{css:?}"
    );

    // Signing in: a form post from the site's own origin, as the page's.
    let form = [
        ("email", user.email.as_str()),
        ("password", user.password.as_str()),
        ("return_to", wanted),
    ];
    let res = browser
        .post(nginx.url("/login"))
        .header(reqwest::header::ORIGIN, &site)
        .form(&form)
        .send()
        .await
        .expect("POST /login");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{res:?}");
    assert_eq!(location(&res), wanted, "back where the browser was going");
    let res = browser.get(nginx.url(wanted)).send().await.expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("the app's json");
    assert_eq!(body["path"], wanted, "the app got the URI as asked");
    assert_eq!(echoed(&body, "x-auth-request-email"), [user.email.as_str()]);

    // The account page through nginx.
    let res = browser
        .get(nginx.url("/account"))
        .send()
        .await
        .expect("GET /account");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.expect("page").contains(&user.email));

    // The same sign-in from another origin is refused: the issuer is the
    // proxy's origin.
    let res = navigator()
        .post(nginx.url("/login"))
        .header(reqwest::header::ORIGIN, "http://evil.example")
        .form(&form)
        .send()
        .await
        .expect("POST /login");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // An API client (no text/html in Accept) keeps the 401 and the
    // challenge; one with a bad token is told the token is invalid.
    let res = reqwest::Client::new()
        .get(nginx.url(wanted))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="gatehouse""#)
    );
    let res = reqwest::Client::new()
        .get(nginx.url(wanted))
        .header(AUTHORIZATION, "Bearer not.a.token")
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="gatehouse", error="invalid_token""#)
    );

    // Signing out through nginx, then the page is refused again.
    let res = browser
        .post(nginx.url("/logout"))
        .header(reqwest::header::ORIGIN, &site)
        .form(&[] as &[(&str, &str)])
        .send()
        .await
        .expect("POST /logout");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{res:?}");
    let res = browser.get(nginx.url(wanted)).send().await.expect("GET");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), to_login);

    // A refused POST to the app (a form whose session ended) goes to the
    // sign-in page as a GET: gatehouse's form login never sees its body.
    let res = browser
        .post(nginx.url("/orders/42"))
        .header(reqwest::header::ORIGIN, &site)
        .form(&[
            ("email", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{res:?}");
    assert_eq!(location(&res), "/login?return_to=%2Forders%2F42");
    assert!(
        res.headers().get(reqwest::header::SET_COOKIE).is_none(),
        "a refused POST signed the browser in"
    );
    let res = browser
        .get(nginx.url("/account"))
        .send()
        .await
        .expect("GET /account");
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "still signed out");
    assert!(echo.seen("/orders/42").iter().all(|s| s.method == "GET"));
}

/// A real browser through the documented block: headless Chromium asks for
/// a protected page, is sent to gatehouse's sign-in page, signs in there
/// and lands on that page as the app answers it
/// (`tests/browser/nginx.mjs`; `bash scripts/test.sh` installs node's
/// packages and Chromium).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_through_the_documented_nginx_block() {
    crate::browser::require_tools();
    let LocalStack {
        app,
        echo: _echo,
        nginx,
        site,
    } = local_stack().await;
    let user = app.create_user().await;
    let artifacts = crate::browser::artifact_dir();
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let dir = artifacts.display().to_string();
        crate::browser::run_script(
            "nginx.mjs",
            &[&site, "/orders/7?view=full&q=a%20b", &user.email, &dir],
            &[("PASSWORD", &user.password)],
            &artifacts.join("nginx.log"),
        )
    })
    .await
    .expect("the browser's thread");
    println!("{output}");
    assert!(ok, "the browser sign-in through nginx failed:\n{output}");
    assert!(output.contains("nginx journey: done"), "{output}");
    drop(nginx);
}
