//! The command line, black-box: the real `gatehouse` binary as a child
//! process, each test in its own temporary working directory with no
//! inherited `GATEHOUSE_*` configuration (API.md, "Configuration" and
//! "Command line").

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::process::*;
use serde_json::{Value, json};

/// Long, not in the bundled list of common passwords.
const PASSWORD: &str = "tangerine-ladder-41-quietly";

/// `gatehouse serve` on a free port, with a cookie that plain HTTP carries.
pub(crate) fn serve_cmd(dir: &Path) -> Command {
    let mut cmd = gatehouse(dir);
    cmd.arg("serve")
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_COOKIE_SECURE", "false");
    cmd
}

/// Asserts a usage error: exit code 2 and something said on stderr.
fn assert_usage_error(out: &Finished) {
    assert_eq!(out.status.code(), Some(2), "exit code: {out:?}");
    assert!(
        !out.stderr.trim().is_empty(),
        "usage errors explain themselves: {out:?}"
    );
}

/// `gatehouse user create --email EMAIL --password-stdin [--role R]...`.
fn create_user(dir: &Path, email: &str, password: &str, roles: &[&str]) -> Finished {
    let mut cmd = gatehouse(dir);
    cmd.args(["user", "create", "--email", email, "--password-stdin"]);
    for role in roles {
        cmd.args(["--role", role]);
    }
    run(&mut cmd, &format!("{password}\n"))
}

/// `gatehouse role set NAME PERM...`.
fn set_role(dir: &Path, name: &str, permissions: &[&str]) -> Finished {
    run(
        gatehouse(dir).args(["role", "set", name]).args(permissions),
        "",
    )
}

/// A running server; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: ChildGuard,
    /// The whole first stdout line.
    first_line: String,
    pub(crate) addr: SocketAddr,
    /// Everything it wrote to stderr, once it has exited.
    stderr: std::thread::JoinHandle<String>,
}

impl Server {
    /// Starts `cmd` and reads the bound address from its first stdout line,
    /// within [`DEADLINE`].
    pub(crate) fn start(cmd: &mut Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().expect("spawning gatehouse serve"));
        let stdout = child.0.stdout.take().expect("piped stdout");
        let stderr = drain(child.0.stderr.take());
        let (lines, first) = mpsc::channel();
        // Keeps draining stdout after the first line so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once nobody listens, keep draining anyway.
                let _ = lines.send(line);
            }
        });
        let first_line = match first.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.0.kill();
                let status = child.0.wait();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "no first stdout line from {cmd:?} ({e}); status {status:?}; stderr:\n{stderr}"
                );
            }
        };
        let addr = first_line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("first stdout line: {first_line:?}"));
        Self {
            child,
            first_line,
            addr,
            stderr,
        }
    }

    /// Waits up to `within` for the server to exit by itself (after a
    /// signal); kills it if it does not. Its status (`None`: it had to be
    /// killed) and everything it wrote to stderr.
    pub(crate) fn wait(mut self, within: Duration) -> (Option<std::process::ExitStatus>, String) {
        let status = wait_for_exit(&mut self.child.0, within);
        if status.is_none() {
            let _ = self.child.0.kill();
            let _ = self.child.0.wait();
        }
        (status, self.stderr.join().expect("stderr reader"))
    }

    /// Kills the server and returns what it wrote to stderr.
    pub(crate) fn stop(mut self) -> String {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.stderr.join().expect("stderr reader")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `signal` (a name such as `TERM`) with the system's `kill`.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.0.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    /// Logs in with a fresh cookie jar; returns the client and the status.
    async fn login(&self, email: &str, password: &str) -> (reqwest::Client, StatusCode) {
        let client = client();
        let status = client
            .post(self.url("/v1/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("POST /v1/login")
            .status();
        (client, status)
    }

    /// `GET /v1/me` with the client's cookie; must answer 200.
    async fn me(&self, client: &reqwest::Client) -> Value {
        let response = client
            .get(self.url("/v1/me"))
            .send()
            .await
            .expect("GET /v1/me");
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/me");
        response.json().await.expect("JSON from /v1/me")
    }
}

/// A client with its own cookie jar and a bounded wait.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(DEADLINE)
        .build()
        .expect("building the HTTP client")
}

/// Starts `serve`, checks it answers, sends `signal`, and expects a clean
/// exit (status 0) within [`DEADLINE`].
async fn assert_signal_stops_gracefully(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&mut serve_cmd(dir.path()));
    // A kept-alive idle connection must not hold the shutdown up.
    let client = client();
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK);

    server.signal(signal);

    let Some(status) = wait_for_exit(&mut server.child.0, DEADLINE) else {
        panic!("SIG{signal}: gatehouse still running after {DEADLINE:?}");
    };
    assert_eq!(status.code(), Some(0), "SIG{signal}: exit status {status}");
    assert!(
        std::net::TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(),
        "SIG{signal}: {} still accepts connections after exit",
        server.addr
    );
    drop(client);
}

/// Writes `text` to `name` in `dir`.
fn write_file(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("writing a file");
}

/// Starts the server from `args` (which carry `--config`) with no
/// `GATEHOUSE_*` variable at all, and expects the file's `registration =
/// "closed"` to refuse self-registration.
async fn assert_closed_registration_file_honoured(args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(
        dir.path(),
        "gatehouse.toml",
        "listen = \"127.0.0.1:0\"\nregistration = \"closed\"\n",
    );
    let server = Server::start(gatehouse(dir.path()).args(args));
    assert_eq!(
        server.addr.ip().to_string(),
        "127.0.0.1",
        "{}",
        server.first_line
    );
    assert_ne!(server.addr.port(), 0);
    let response = client()
        .post(server.url("/v1/users"))
        .json(&json!({ "email": "newcomer@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{args:?}");
}

#[tokio::test]
async fn serve_prints_bound_address_first_and_creates_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!dir.path().join("gatehouse.db").exists());

    let server = Server::start(
        gatehouse(dir.path())
            .arg("serve")
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
    );

    assert_ne!(server.addr.port(), 0, "{}", server.first_line);
    assert_eq!(
        server.first_line,
        format!("listening on http://127.0.0.1:{}", server.addr.port())
    );
    let client = client();
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        dir.path().join("gatehouse.db").is_file(),
        "the default sqlite://gatehouse.db is created in the working directory"
    );
    let ready = client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_with_status_0() {
    assert_signal_stops_gracefully("TERM").await;
}

#[tokio::test]
async fn sigint_stops_the_server_gracefully_with_status_0() {
    assert_signal_stops_gracefully("INT").await;
}

#[test]
fn bad_environment_value_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every command reads the same configuration.
    let commands: [&[&str]; 2] = [&["serve"], &["role", "set", "support", "tickets:read"]];
    for args in commands {
        let out = run(
            gatehouse(dir.path())
                .args(args)
                .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
                .env("GATEHOUSE_LOGIN_WINDOW", "soon"),
            "",
        );
        let line = assert_fails_with_one_line(&out);
        assert!(line.contains("login_window"), "{args:?}: {line:?}");
    }
    assert!(
        !dir.path().join("gatehouse.db").exists(),
        "a bad configuration stops the process before it opens the database"
    );
}

#[test]
fn bad_file_value_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "gatehouse.toml", "jwt_leeway = \"45s\"\n");
    let out = run(
        gatehouse(dir.path())
            .args(["--config", "gatehouse.toml", "serve"])
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("jwt_leeway"), "{line:?}");
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[test]
fn unknown_file_key_exits_1_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "gatehouse.toml", "lisen = \"127.0.0.1:0\"\n");
    let out = run(
        gatehouse(dir.path())
            .args(["serve", "--config", "gatehouse.toml"])
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("lisen"), "{line:?}");
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[test]
fn missing_config_file_exits_1_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        gatehouse(dir.path())
            .args(["--config", "no-such-file.toml", "serve"])
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("no-such-file.toml"), "{line:?}");
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[tokio::test]
async fn config_option_before_the_subcommand_is_honoured() {
    assert_closed_registration_file_honoured(&["--config", "gatehouse.toml", "serve"]).await;
}

#[tokio::test]
async fn config_option_after_the_subcommand_is_honoured() {
    assert_closed_registration_file_honoured(&["serve", "--config", "gatehouse.toml"]).await;
}

#[test]
fn config_option_applies_to_admin_commands_in_any_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("admin.db"));
    write_file(
        dir.path(),
        "gatehouse.toml",
        "database_url = \"sqlite://admin.db\"\n",
    );

    let role = run(
        gatehouse(dir.path()).args([
            "role",
            "set",
            "--config",
            "gatehouse.toml",
            "support",
            "tickets:read",
        ]),
        "",
    );
    assert!(role.status.success(), "{role:?}");
    // The role is found only if both commands open the file's database.
    let user = run(
        gatehouse(dir.path()).args([
            "user",
            "--config",
            "gatehouse.toml",
            "create",
            "--email",
            "alice@example.com",
            "--password-stdin",
            "--role",
            "support",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert!(user.status.success(), "{user:?}");
    assert!(dir.path().join("admin.db").is_file());
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[test]
fn no_subcommand_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_usage_error(&run(&mut gatehouse(dir.path()), ""));
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_usage_error(&run(gatehouse(dir.path()).arg("frobnicate"), ""));
    assert!(!dir.path().join("gatehouse.db").exists());
}

#[test]
fn user_create_without_password_stdin_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        gatehouse(dir.path()).args(["user", "create", "--email", "alice@example.com"]),
        &format!("{PASSWORD}\n"),
    );
    assert_usage_error(&out);
    assert!(
        !dir.path().join("gatehouse.db").exists(),
        "no user was created"
    );
}

#[tokio::test]
async fn user_create_reads_password_from_stdin_and_the_user_can_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("users.db");
    new_database(&db);
    let database_url = format!("sqlite://{}", db.display());

    let out = run(
        gatehouse(dir.path())
            .args([
                "user",
                "create",
                "--email",
                " Alice@Example.COM ",
                "--password-stdin",
            ])
            .env("GATEHOUSE_DATABASE_URL", &database_url),
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("alice@example.com"), "{out:?}");
    assert!(db.is_file());
    assert!(
        !dir.path().join("gatehouse.db").exists(),
        "GATEHOUSE_DATABASE_URL is honoured"
    );

    let server = Server::start(serve_cmd(dir.path()).env("GATEHOUSE_DATABASE_URL", &database_url));
    let (client, status) = server.login("alice@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let me = server.me(&client).await;
    assert_eq!(me["user"]["email"], "alice@example.com");
}

/// `--email-verified`: under `email_verification = "required"` the user
/// the operator vouched for signs in at once; one created without it is
/// refused until verified.
#[tokio::test]
async fn user_create_email_verified_lets_a_required_verification_server_sign_them_in() {
    let sink = crate::mail_sink::MailSink::start(crate::mail_sink::SinkTls::Plain).await;
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let out = run(
        gatehouse(dir.path()).args([
            "user",
            "create",
            "--email",
            "vouched@example.com",
            "--password-stdin",
            "--email-verified",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = create_user(dir.path(), "unvouched@example.com", PASSWORD, &[]);
    assert!(out.status.success(), "{out:?}");
    let server = Server::start(
        serve_cmd(dir.path())
            .env("GATEHOUSE_SMTP_URL", sink.smtp_url())
            .env("GATEHOUSE_EMAIL_VERIFICATION", "required"),
    );
    let (client, status) = server.login("vouched@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.me(&client).await["user"]["email_verified"], true);
    let (_, status) = server.login("unvouched@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    sink.wait_for_mail_to("unvouched@example.com", Duration::from_secs(20))
        .await;
}

#[test]
fn user_create_refuses_an_email_taken_in_another_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let first = create_user(dir.path(), "alice@example.com", PASSWORD, &[]);
    assert!(first.status.success(), "{first:?}");

    let again = create_user(dir.path(), "ALICE@Example.com", "another-long-pass-99", &[]);
    assert_fails_with_one_line(&again);
}

#[test]
fn user_create_refuses_a_weak_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let out = create_user(dir.path(), "alice@example.com", "password", &[]);
    assert_fails_with_one_line(&out);
    // Nothing was stored: the email is still free.
    let retry = create_user(dir.path(), "alice@example.com", PASSWORD, &[]);
    assert!(retry.status.success(), "{retry:?}");
}

#[test]
fn user_create_refuses_an_empty_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    for stdin in ["", "\n"] {
        let out = run(
            gatehouse(dir.path()).args([
                "user",
                "create",
                "--email",
                "alice@example.com",
                "--password-stdin",
            ]),
            stdin,
        );
        assert_fails_with_one_line(&out);
    }
    let retry = create_user(dir.path(), "alice@example.com", PASSWORD, &[]);
    assert!(retry.status.success(), "no user was created: {retry:?}");
}

#[tokio::test]
async fn role_set_then_user_create_with_role_grants_its_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let role = set_role(dir.path(), "support", &["tickets:read", "tickets:write"]);
    assert!(role.status.success(), "{role:?}");
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    assert!(user.status.success(), "{user:?}");

    let server = Server::start(&mut serve_cmd(dir.path()));
    let (client, status) = server.login("agent@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let me = server.me(&client).await;
    assert_eq!(me["user"]["roles"], json!(["support"]), "{me}");
    assert_eq!(
        me["permissions"],
        json!(["tickets:read", "tickets:write"]),
        "{me}"
    );
}

#[test]
fn user_create_with_unknown_role_exits_1_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let out = create_user(dir.path(), "agent@example.com", PASSWORD, &["nosuchrole"]);
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("nosuchrole"), "{line:?}");
    // The refusal is whole: no user without the role was left behind.
    let retry = create_user(dir.path(), "agent@example.com", PASSWORD, &[]);
    assert!(retry.status.success(), "{retry:?}");
}

#[tokio::test]
async fn role_set_again_replaces_the_permissions() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let role = set_role(dir.path(), "support", &["tickets:read", "tickets:write"]);
    assert!(role.status.success(), "{role:?}");
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    assert!(user.status.success(), "{user:?}");
    let server = Server::start(&mut serve_cmd(dir.path()));
    let (before, status) = server.login("agent@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.me(&before).await["permissions"],
        json!(["tickets:read", "tickets:write"])
    );

    // Run against the live server's database, as an operator would.
    let role = set_role(dir.path(), "support", &["kb:read"]);
    assert!(role.status.success(), "{role:?}");

    let (after, status) = server.login("agent@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let me = server.me(&after).await;
    assert_eq!(me["permissions"], json!(["kb:read"]), "{me}");
    assert_eq!(me["user"]["roles"], json!(["support"]), "{me}");
    // A session signed in before the change gets the new permissions too,
    // once the server reads the database again: at most a second after its
    // last read for that session (docs/api.md, "How fresh an answer is").
    let changed = std::time::Instant::now();
    while server.me(&before).await["permissions"] != json!(["kb:read"]) {
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the earlier session still has the old permissions 3 s after `role set`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn role_set_reaches_a_live_servers_cookie_callers_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let role = set_role(dir.path(), "support", &["tickets:read"]);
    assert!(role.status.success(), "{role:?}");
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    assert!(user.status.success(), "{user:?}");
    let server = Server::start(&mut serve_cmd(dir.path()));
    let (client, status) = server.login("agent@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    // The server now holds what it read for this session (the principal
    // cache the cookie path shares with the bearer path).
    assert_eq!(
        server.me(&client).await["permissions"],
        json!(["tickets:read"])
    );

    let role = set_role(dir.path(), "support", &["kb:read"]);
    assert!(role.status.success(), "{role:?}");
    let changed = std::time::Instant::now();
    while server.me(&client).await["permissions"] != json!(["kb:read"]) {
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the cookie caller still has the old permissions 3 s after `role set`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn role_set_reaches_a_live_servers_bearer_callers_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let role = set_role(dir.path(), "support", &["tickets:read"]);
    assert!(role.status.success(), "{role:?}");
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    assert!(user.status.success(), "{user:?}");
    let server = Server::start(&mut serve_cmd(dir.path()));
    let http = client();
    let pair: Value = http
        .post(server.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "agent@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("POST /v1/token")
        .json()
        .await
        .expect("token JSON");
    let access = pair["access_token"].as_str().expect("access_token");
    let permissions = || async {
        let res = http
            .get(server.url("/v1/me"))
            .bearer_auth(access)
            .send()
            .await
            .expect("GET /v1/me");
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.expect("JSON")["permissions"].clone()
    };
    // The server now holds what it read for this session (the bearer
    // path's cache of principals).
    assert_eq!(permissions().await, json!(["tickets:read"]));

    // Another process changes the role: the server learns it only by reading
    // the database again, at most a second after its last read.
    let role = set_role(dir.path(), "support", &["kb:read"]);
    assert!(role.status.success(), "{role:?}");
    let changed = std::time::Instant::now();
    loop {
        if permissions().await == json!(["kb:read"]) {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "the bearer caller still has the old permissions 3 s after `role set`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn role_set_refuses_an_invalid_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let out = set_role(dir.path(), "support", &["tickets:read", "tickets write"]);
    assert_fails_with_one_line(&out);
    // The role was not created with the valid half of its permissions.
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    let line = assert_fails_with_one_line(&user);
    assert!(line.contains("support"), "{line:?}");
}

#[test]
fn serve_fails_closed_naming_redis_url_when_redis_cannot_be_reached() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1: nothing listens there.
    let out = run(
        serve_cmd(dir.path()).env("GATEHOUSE_REDIS_URL", "redis://127.0.0.1:1/"),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("redis_url"), "{line:?}");
    assert!(out.stdout.is_empty(), "never announced a listener: {out:?}");
}

#[test]
fn serve_fails_closed_naming_database_url_when_postgres_cannot_be_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A database that does not exist, with a password that must not leak.
    let out = run(
        serve_cmd(dir.path()).env(
            "GATEHOUSE_DATABASE_URL",
            "postgres://postgres:s3cr3t-pw@127.0.0.1:5432/gh_no_such_database",
        ),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("database_url"), "{line:?}");
    assert!(
        !line.contains("s3cr3t-pw"),
        "the password is never printed: {line:?}"
    );
    assert!(out.stdout.is_empty(), "never announced a listener: {out:?}");
}

#[test]
fn serve_fails_fast_naming_database_url_and_the_cause_when_postgres_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1: nothing listens there.
    let started = std::time::Instant::now();
    let out = run(
        serve_cmd(dir.path()).env(
            "GATEHOUSE_DATABASE_URL",
            "postgres://postgres:s3cr3t-pw@127.0.0.1:1/gatehouse",
        ),
        "",
    );
    let took = started.elapsed();
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("database_url"), "{line:?}");
    assert!(
        line.to_lowercase().contains("connection refused"),
        "names the cause: {line:?}"
    );
    assert!(!line.contains("s3cr3t-pw"), "{line:?}");
    // Not after the pool's 5 s acquire timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}: {line:?}");
}

/// A self-signed certificate for 127.0.0.1 and its PKCS#8 key, written to
/// `cert.pem` and `key.pem` in `dir`; returns the certificate's PEM.
fn write_self_signed(dir: &Path) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    write_file(dir, "cert.pem", &made.cert.pem());
    write_file(dir, "key.pem", &made.signing_key.serialize_pem());
    made.cert.pem()
}

#[tokio::test]
async fn serve_with_tls_keeps_the_contracts_first_line_and_serves_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = write_self_signed(dir.path());
    write_file(
        dir.path(),
        "gatehouse.toml",
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );

    let server = Server::start(
        gatehouse(dir.path())
            .args(["serve", "--config", "gatehouse.toml"])
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0"),
    );

    assert_eq!(
        server.first_line,
        format!("listening on http://127.0.0.1:{}", server.addr.port()),
        "API.md fixes the first line's words, whatever the port speaks"
    );
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.as_bytes()).expect("PEM")])
        .timeout(DEADLINE)
        .build()
        .expect("client");
    let health = client
        .get(format!("https://{}/healthz", server.addr))
        .send()
        .await
        .expect("GET /healthz over HTTPS");
    assert_eq!(health.status(), StatusCode::OK);
}

#[test]
fn serve_with_a_key_that_is_not_the_certificates_exits_1_naming_tls_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_self_signed(dir.path());
    let other = rcgen::KeyPair::generate().expect("key pair");
    write_file(dir.path(), "other.pem", &other.serialize_pem());

    let out = run(
        serve_cmd(dir.path())
            .env("GATEHOUSE_TLS_CERT", "cert.pem")
            .env("GATEHOUSE_TLS_KEY", "other.pem"),
        "",
    );

    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("tls_key"), "{line:?}");
    assert!(out.stdout.is_empty(), "never announced a listener: {out:?}");
    assert!(!dir.path().join("gatehouse.db").exists());
}

/// `gatehouse resource-server create NAME`: the key on a line of its own.
fn create_resource_server(dir: &Path, name: &str) -> (String, String) {
    let out = run(gatehouse(dir).args(["resource-server", "create", name]), "");
    assert!(out.status.success(), "{out:?}");
    let mut lines = out.stdout.lines();
    let first = lines.next().expect("a first line");
    let id = first
        .strip_prefix("created resource server ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let key = lines.next().expect("the key line").to_owned();
    assert!(key.starts_with("ghrs_") && key.len() == 48, "{key:?}");
    (id, key)
}

#[tokio::test]
async fn resource_server_commands_create_list_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let (id, key) = create_resource_server(dir.path(), "orders-api");
    let out = run(gatehouse(dir.path()).args(["resource-server", "list"]), "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("orders-api"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains(&key[5..]),
        "the key is shown once: {out:?}"
    );

    let server = Server::start(&mut serve_cmd(dir.path()));
    let res = client()
        .get(server.url("/v1/revocations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET /v1/revocations");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the key the CLI printed works"
    );

    let taken = run(
        gatehouse(dir.path()).args(["resource-server", "create", "orders-api"]),
        "",
    );
    assert!(assert_fails_with_one_line(&taken).contains("orders-api"));
    let bad = run(
        gatehouse(dir.path()).args(["resource-server", "create", "two words"]),
        "",
    );
    assert_fails_with_one_line(&bad);

    let out = run(
        gatehouse(dir.path()).args(["resource-server", "delete", &id]),
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let res = client()
        .get(server.url("/v1/revocations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET /v1/revocations");
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "a deleted key is refused"
    );
    let again = run(
        gatehouse(dir.path()).args(["resource-server", "delete", &id]),
        "",
    );
    assert_fails_with_one_line(&again);
}

#[tokio::test]
async fn sigterm_ends_a_waiting_feed_request_and_stops_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let (_, key) = create_resource_server(dir.path(), "poller");
    let mut server = Server::start(&mut serve_cmd(dir.path()));
    let url = server.url("/v1/revocations?wait=30");
    let waiting = tokio::spawn(async move {
        client()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the feed request waits");

    let signalled = std::time::Instant::now();
    server.signal("TERM");
    let Some(status) = wait_for_exit(&mut server.child.0, Duration::from_secs(5)) else {
        panic!("a waiting feed request held the shutdown up for 5 s");
    };
    assert_eq!(status.code(), Some(0));
    let answer = waiting.await.expect("the task");
    assert_eq!(
        answer.ok(),
        Some(StatusCode::OK),
        "the waiting request is answered (empty), not cut off"
    );
    eprintln!(
        "SIGTERM with a waiting feed request: exited after {:?}",
        signalled.elapsed()
    );
}

// ------------------------------------------------------------ the database file

/// The permission bits of `path`, in octal.
fn mode_of(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

/// `gatehouse.db` in `dir` and, of its `-wal` and `-shm`, those that exist.
fn database_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![dir.join("gatehouse.db")];
    files.extend(
        ["gatehouse.db-wal", "gatehouse.db-shm"]
            .map(|name| dir.join(name))
            .into_iter()
            .filter(|p| p.exists()),
    );
    files
}

#[tokio::test]
async fn serve_creates_the_database_and_its_wal_and_shm_for_the_owner_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&mut serve_cmd(dir.path()));
    // A write, so that the write-ahead log and its index exist.
    let res = client()
        .post(server.url("/v1/users"))
        .json(&json!({ "email": "alice@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(res.status(), StatusCode::CREATED);
    let files = database_files(dir.path());
    assert_eq!(files.len(), 3, "the database in WAL mode: {files:?}");
    for file in &files {
        assert_eq!(mode_of(file), "600", "{}", file.display());
    }
    let stderr = server.stop();
    assert!(!stderr.contains("chmod"), "nothing to warn about: {stderr}");
}

/// The files in `dir`, by name.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn admin_commands_refuse_to_create_a_database_and_serve_creates_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Run in the wrong directory without --config: the default
    // ./gatehouse.db does not exist, so there is nothing to administer.
    for args in [
        &["keys", "list"][..],
        &["keys", "rotate"],
        &["role", "set", "support", "tickets:read"],
        &["user", "list"],
        &["resource-server", "list"],
    ] {
        let out = run(gatehouse(dir.path()).args(args), "");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let reason = out.stderr.trim_end();
        assert!(
            reason.starts_with("gatehouse: no database at ")
                && reason.contains("database_url = sqlite://gatehouse.db")
                && reason.contains("--config")
                && !reason.contains('\n'),
            "{args:?}: one line naming the URL and --config: {reason:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(names_in(dir.path()).is_empty(), "{args:?} created a file");
    }
    let out = run(
        gatehouse(dir.path()).args([
            "user",
            "create",
            "--email",
            "a@example.com",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        names_in(dir.path()).is_empty(),
        "user create created a file"
    );

    // A configuration file that names a database nobody created.
    write_file(
        dir.path(),
        "gatehouse.toml",
        "database_url = \"sqlite://elsewhere.db\"\n",
    );
    let out = run(
        gatehouse(dir.path()).args(["--config", "gatehouse.toml", "user", "list"]),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("database_url = sqlite://elsewhere.db")
            && out.stderr.contains("--config gatehouse.toml"),
        "{out:?}"
    );
    assert_eq!(names_in(dir.path()), ["gatehouse.toml"]);

    // `serve` creates it (for the owner alone), then the commands work.
    let server = Server::start(&mut serve_cmd(dir.path()));
    server.stop();
    for file in database_files(dir.path()) {
        assert_eq!(mode_of(&file), "600", "{}", file.display());
    }
    let role = set_role(dir.path(), "support", &["tickets:read"]);
    assert!(role.status.success(), "{role:?}");
    assert!(!role.stderr.contains("chmod"), "{role:?}");
}

/// Asserts that `stderr` warns about `file` being open to others, with its
/// mode and the command that fixes it.
fn assert_warns_about(stderr: &str, file: &Path) {
    let shown = file.display().to_string();
    let line = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&format!("chmod 600 {shown}")))
        .unwrap_or_else(|| panic!("no warning naming `chmod 600 {shown}` in:\n{stderr}"));
    assert!(line.contains("0644"), "the mode is named: {line}");
}

#[tokio::test]
async fn an_existing_database_open_to_others_is_warned_about_and_left_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    new_database(&dir.path().join("gatehouse.db"));
    let db = dir.path().join("gatehouse.db");
    let role = set_role(dir.path(), "support", &["tickets:read"]);
    assert!(role.status.success(), "{role:?}");
    let user = create_user(dir.path(), "agent@example.com", PASSWORD, &["support"]);
    assert!(user.status.success(), "{user:?}");
    // As an older gatehouse, or a copy with the usual umask, left it.
    for file in database_files(dir.path()) {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    }

    // Every command warns, and does its work.
    let listed = run(gatehouse(dir.path()).args(["user", "list"]), "");
    assert!(listed.status.success(), "{listed:?}");
    assert!(listed.stdout.contains("agent@example.com"), "{listed:?}");
    assert_warns_about(&listed.stderr, &db);

    let server = Server::start(&mut serve_cmd(dir.path()));
    let (_, status) = server.login("agent@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the server serves");
    let stderr = server.stop();
    assert_warns_about(&stderr, &db);
    // SQLite gives the write-ahead log the database file's mode.
    assert_warns_about(&stderr, &dir.path().join("gatehouse.db-wal"));
    // The operator's file keeps the mode they gave it (docs/operations.md).
    assert_eq!(mode_of(&db), "644");
}
