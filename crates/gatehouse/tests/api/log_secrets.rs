//! No secret reaches the log, even at trace level: the real binary with
//! `RUST_LOG=trace` (every dependency's trace and debug lines too: hyper,
//! sqlx, redis) through a journey that handles every kind of secret
//! gatehouse sees: passwords (right, wrong and changed), a session cookie,
//! access and refresh tokens, a resource server's key, the metrics token,
//! and the password in `database_url`.

use std::path::Path;

use reqwest::header::{AUTHORIZATION, COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::cli::{Server, serve_cmd};
use crate::helpers::{PG_SLOTS, PgDatabase, REDIS_URL, RedisPrefix, session_cookie_value};
use crate::process::{gatehouse, run};

const PASSWORD: &str = "log-secret-first-passphrase";
const NEW_PASSWORD: &str = "log-secret-second-passphrase";
const WRONG_PASSWORD: &str = "log-secret-wrong-passphrase";
const ADMIN_PASSWORD: &str = "log-secret-admin-passphrase";
const METRICS_TOKEN: &str = "log-secret-metrics-token-0123456789";

/// Every secret the journey handled, named for the failure message.
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, what: &'static str, value: &str) {
        assert!(value.len() >= 16, "{what} is too short to search for");
        self.0.push((what, value.to_owned()));
        // A JWT's signature alone is as secret as the token.
        if let Some(signature) = value.rsplit('.').next().filter(|s| s.len() >= 16)
            && signature != value
        {
            self.0.push((what, signature.to_owned()));
        }
    }

    fn assert_absent_from(&self, log: &str) {
        assert!(
            log.lines().count() > 50,
            "trace logging did not happen ({} lines): the test would prove nothing",
            log.lines().count()
        );
        for (what, secret) in &self.0 {
            if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
                panic!("{what} appears in the log:\n{line}");
            }
        }
    }
}

/// Runs the journey against the server at `base`; returns what it handled.
async fn journey(base: &str, origin: &str, dir: &Path, env: &[(&str, String)]) -> Secrets {
    let mut secrets = Secrets(Vec::new());
    for (what, value) in [
        ("the password", PASSWORD),
        ("the new password", NEW_PASSWORD),
        ("a wrong password", WRONG_PASSWORD),
        ("the admin's password", ADMIN_PASSWORD),
        ("the metrics token", METRICS_TOKEN),
    ] {
        secrets.add(what, value);
    }
    let http = Client::new();
    let email = "log-secrets@example.com";

    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = http
        .post(format!("{base}/v1/login"))
        .json(&json!({ "email": email, "password": WRONG_PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http
        .post(format!("{base}/v1/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie_value(&res, "gatehouse").expect("a session cookie");
    secrets.add("the session cookie", &cookie);
    let cookie = format!("gatehouse={cookie}");

    let res = http
        .get(format!("{base}/v1/me"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), StatusCode::OK);
    let res = http
        .post(format!("{base}/v1/session/token"))
        .header(COOKIE, &cookie)
        .header("Origin", origin)
        .send()
        .await
        .expect("session token");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    secrets.add(
        "a session's access token",
        body["access_token"].as_str().expect("access_token"),
    );

    let grant = |params: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{base}/v1/token");
        async move {
            let res = http.post(url).form(&params).send().await.expect("token");
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.expect("json")
        }
    };
    let pair = grant(vec![
        ("grant_type", "password".into()),
        ("username", email.into()),
        ("password", PASSWORD.into()),
    ])
    .await;
    let refresh = pair["refresh_token"].as_str().expect("refresh").to_owned();
    secrets.add(
        "an access token",
        pair["access_token"].as_str().expect("access"),
    );
    secrets.add("a refresh token", &refresh);
    let pair = grant(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh),
    ])
    .await;
    let access = pair["access_token"].as_str().expect("access").to_owned();
    secrets.add("a rotated access token", &access);
    secrets.add(
        "a rotated refresh token",
        pair["refresh_token"].as_str().expect("refresh"),
    );
    let res = http
        .get(format!("{base}/v1/verify"))
        .bearer_auth(&access)
        .header("X-Original-URI", "/app")
        .send()
        .await
        .expect("verify");
    assert_eq!(res.status(), StatusCode::OK);

    let res = http
        .post(format!("{base}/v1/me/password"))
        .header(COOKIE, &cookie)
        .json(&json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }))
        .send()
        .await
        .expect("change password");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // An admin, created by the CLI, makes a resource server and its key.
    let mut cmd = gatehouse(dir);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).args([
        "role",
        "set",
        "admin",
        "gatehouse:admin",
    ]);
    let out = run(&mut cmd, "");
    assert!(out.status.success(), "role set: {out:?}");
    let mut cmd = gatehouse(dir);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["user", "create", "--email", "log-admin@example.com"])
        .args(["--password-stdin", "--role", "admin"]);
    let out = run(&mut cmd, &format!("{ADMIN_PASSWORD}\n"));
    assert!(out.status.success(), "user create: {out:?}");
    let res = http
        .post(format!("{base}/v1/login"))
        .json(&json!({ "email": "log-admin@example.com", "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect("admin login");
    assert_eq!(res.status(), StatusCode::OK);
    let admin = format!(
        "gatehouse={}",
        session_cookie_value(&res, "gatehouse").expect("a session cookie")
    );
    let res = http
        .post(format!("{base}/v1/admin/resource-servers"))
        .header(COOKIE, &admin)
        .json(&json!({ "name": "log-secrets" }))
        .send()
        .await
        .expect("resource server");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    let key = body["key"].as_str().expect("key").to_owned();
    secrets.add("a resource server's key", &key);
    let res = http
        .get(format!("{base}/v1/revocations"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("revocations");
    assert_eq!(res.status(), StatusCode::OK);

    let res = http
        .get(format!("{base}/metrics"))
        .header(AUTHORIZATION, format!("Bearer {METRICS_TOKEN}"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), StatusCode::OK);
    // The password change ended every other session (the grants' too).
    let res = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http
        .post(format!("{base}/v1/logout"))
        .header(COOKIE, &cookie)
        .header("Origin", origin)
        .send()
        .await
        .expect("logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    secrets
}

/// The server with `env` at `RUST_LOG=trace`; the journey; its log.
async fn journey_in_the_log(env: Vec<(&str, String)>) -> (Secrets, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = serve_cmd(dir.path());
    cmd.env("RUST_LOG", "trace")
        .env("GATEHOUSE_METRICS_TOKEN", METRICS_TOKEN)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let server = Server::start(&mut cmd);
    let base = format!("http://{}", server.addr);
    let origin = env
        .iter()
        .find(|(k, _)| *k == "GATEHOUSE_ISSUER")
        .map_or_else(|| base.clone(), |(_, v)| v.clone());
    let secrets = journey(&base, &origin, dir.path(), &env).await;
    (secrets, server.stop())
}

#[tokio::test]
async fn sqlite_no_secret_reaches_a_trace_log() {
    let (secrets, log) = journey_in_the_log(Vec::new()).await;
    eprintln!(
        "SQLite journey: {} log lines at trace level",
        log.lines().count()
    );
    secrets.assert_absent_from(&log);
}

#[tokio::test]
async fn postgres_and_redis_no_secret_reaches_a_trace_log() {
    const PG_PASSWORD: &str = "log-secret-in-database-url";
    let _slot = PG_SLOTS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let pg = PgDatabase::create().await;
    let redis = RedisPrefix::create().await;
    // The test server trusts every password, so one in the URL is accepted
    // and sent: exactly what must not be logged.
    let url = format!(
        "postgres://postgres:{PG_PASSWORD}@127.0.0.1:5432/{}",
        pg.name
    );
    let env = vec![
        ("GATEHOUSE_DATABASE_URL", url),
        ("GATEHOUSE_REDIS_URL", REDIS_URL.to_owned()),
        ("GATEHOUSE_REDIS_KEY_PREFIX", redis.prefix.clone()),
        ("GATEHOUSE_ISSUER", "http://gatehouse.test".to_owned()),
    ];
    let (mut secrets, log) = journey_in_the_log(env).await;
    secrets.add("the password in database_url", PG_PASSWORD);
    eprintln!(
        "PostgreSQL + Redis journey: {} log lines at trace level",
        log.lines().count()
    );
    secrets.assert_absent_from(&log);
}

/// Mail at trace level: the SMTP password (in `smtp_url`), the reset
/// link's token and the new password set with it stay out of the log,
/// while the mail crosses STARTTLS with AUTH to a real SMTP server.
#[tokio::test]
async fn mail_no_secret_reaches_a_trace_log() {
    use crate::mail_sink::{MailSink, SinkTls};
    const SMTP_PASSWORD: &str = "log-secret-smtp-password";
    const RESET_PASSWORD: &str = "log-secret-reset-passphrase";
    let sink = MailSink::start_with_auth(SinkTls::StartTls, "mailer", SMTP_PASSWORD).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = serve_cmd(dir.path());
    cmd.env("RUST_LOG", "trace")
        .env("GATEHOUSE_SMTP_URL", sink.smtp_url())
        .env(
            "GATEHOUSE_SMTP_CA_FILE",
            sink.ca_file().expect("a CA").as_os_str(),
        )
        .env("GATEHOUSE_EMAIL_FROM", "gatehouse@example.test");
    let server = Server::start(&mut cmd);
    let base = format!("http://{}", server.addr);
    let http = Client::new();
    let email = "log-secrets-mail@example.com";
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    let verification = sink
        .wait_for_mail_to(email, std::time::Duration::from_secs(20))
        .await;
    assert!(verification.tls && verification.auth_user.as_deref() == Some("mailer"));
    let res = http
        .post(format!("{base}/v1/password-reset"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("reset");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let token = loop {
        if let Some(t) = sink.mails().iter().find_map(|m| m.token("/reset-password")) {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reset mail");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let res = http
        .post(format!("{base}/v1/password-reset/confirm"))
        .json(&json!({ "token": token, "new_password": RESET_PASSWORD }))
        .send()
        .await
        .expect("confirm");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let verify = verification.token("/verify-email").expect("link");
    let res = http
        .post(format!("{base}/v1/email/verify"))
        .json(&json!({ "token": verify }))
        .send()
        .await
        .expect("verify");
    // The reset changed the password: the verification link is void.
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let log = server.stop();
    let mut secrets = Secrets(Vec::new());
    secrets.add("the password", PASSWORD);
    secrets.add("the SMTP password", SMTP_PASSWORD);
    secrets.add("a reset token", &token);
    secrets.add("a verification token", &verify);
    secrets.add("the password set by a reset", RESET_PASSWORD);
    eprintln!(
        "mail journey: {} log lines at trace level",
        log.lines().count()
    );
    secrets.assert_absent_from(&log);
}
