//! What an operator runs: `gatehouse config check`, the example
//! configuration, JSON logs and request ids (docs/reference/, docs/production.md).

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::{Server, serve_cmd};
use crate::helpers::PASSWORD;
use crate::process::*;

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a file");
    path
}

/// `config check` on `dir` with `file`: exits 0; its lines as key → value
/// (`None` for a key it says is unset).
fn checked(
    dir: &Path,
    file: &str,
    env: &[(&str, &str)],
) -> (String, BTreeMap<String, Option<String>>) {
    let mut cmd = gatehouse(dir);
    cmd.args(["config", "check", "--config", file]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, "");
    assert!(out.status.success(), "{out:?}");
    let mut keys = BTreeMap::new();
    for line in out.stdout.lines().skip(1) {
        let entry = if let Some(unset) = line.strip_prefix("# ") {
            let key = unset
                .strip_suffix(" is unset")
                .unwrap_or_else(|| panic!("a comment that is not `KEY is unset`: {line:?}"));
            (key.to_owned(), None)
        } else {
            let (key, value) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
            (key.to_owned(), Some(value.to_owned()))
        };
        assert!(
            keys.insert(entry.0.clone(), entry.1).is_none(),
            "{line:?} twice"
        );
    }
    (out.stdout, keys)
}

#[test]
fn config_check_prints_every_key_once_with_secrets_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = "c2VjcmV0LWtleS1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=";
    let metrics = "metrics-token-that-is-long-enough-0123456789";
    write(
        dir.path(),
        "gatehouse.toml",
        &format!(
            "database_url = \"postgres://gatehouse:db-pass-word@db.internal/gatehouse\"\n\
             redis_url = \"redis://:redis-pass-word@cache.internal:6379/\"\n\
             key_encryption_key = \"{kek}\"\n\
             issuer = \"https://auth.example.com\"\n\
             session_idle_timeout = \"12h\"\n\
             trusted_proxies = [\"10.0.0.0/8\"]\n\
             [[rules]]\n\
             path = \"/admin/\"\n\
             permission = \"site:admin\"\n"
        ),
    );
    let (stdout, keys) = checked(
        dir.path(),
        "gatehouse.toml",
        &[
            ("GATEHOUSE_METRICS_TOKEN", metrics),
            ("GATEHOUSE_LOGIN_WINDOW", "20m"),
        ],
    );
    let expected: Vec<&str> = gatehouse::config::keys().map(|(k, _)| k).collect();
    let printed: Vec<&str> = keys.keys().map(String::as_str).collect();
    let mut sorted = expected.clone();
    sorted.sort_unstable();
    assert_eq!(printed, sorted, "every key once:\n{stdout}");
    for secret in [kek, metrics, "db-pass-word", "redis-pass-word"] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    let value = |k: &str| keys[k].as_deref().unwrap_or_else(|| panic!("{k} unset"));
    assert_eq!(value("key_encryption_key"), "\"(hidden)\"");
    assert_eq!(value("metrics_token"), "\"(hidden)\"");
    assert_eq!(
        value("database_url"),
        "\"postgres://gatehouse:***@db.internal/gatehouse\""
    );
    assert_eq!(value("redis_url"), "\"redis://:***@cache.internal:6379/\"");
    // The file's values, the environment's over the defaults, the defaults.
    assert_eq!(value("issuer"), "\"https://auth.example.com\"");
    assert_eq!(value("session_idle_timeout"), "\"12h\"");
    assert_eq!(value("login_window"), "\"20m\"");
    assert_eq!(value("listen"), "\"127.0.0.1:8080\"");
    assert_eq!(value("access_token_ttl"), "\"5m\"");
    assert_eq!(value("login_max_failures_per_ip"), "50");
    assert_eq!(value("trusted_proxies"), "[\"10.0.0.0/8\"]");
    assert_eq!(
        value("rules"),
        "[{ path = \"/admin/\", permission = \"site:admin\" }]"
    );
    assert_eq!(keys["tls_cert"], None);
    assert_eq!(keys["audience"], None);
    // Nothing was opened or created.
    let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(names.len(), 1, "config check created files: {names:?}");
}

#[test]
fn config_check_output_is_a_configuration_that_checks_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "first.toml",
        "listen = \"0.0.0.0:9000\"\n\
         registration = \"closed\"\n\
         allowed_origins = [\"https://app.example.com\"]\n\
         audit_retention = \"0s\"\n\
         log_format = \"json\"\n\
         [[rules]]\n\
         path = \"/public/\"\n\
         methods = [\"GET\", \"HEAD\"]\n\
         policy = \"public\"\n\
         [[rules]]\n\
         path = \"/\"\n\
         policy = \"authenticated\"\n",
    );
    let (first, _) = checked(dir.path(), "first.toml", &[]);
    // Without secrets, what it prints is a configuration file: fed back,
    // it yields the same effective configuration.
    write(dir.path(), "second.toml", &first);
    let (second, _) = checked(dir.path(), "second.toml", &[]);
    let body = |out: &str| out.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&first), body(&second));
    assert!(first.contains("log_format = \"json\""), "{first}");
}

#[test]
fn config_check_exits_1_naming_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "gatehouse.toml",
        "session_idle_timeout = \"soon\"\n",
    );
    let out = run(
        gatehouse(dir.path()).args(["config", "check", "--config", "gatehouse.toml"]),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("session_idle_timeout"), "{line}");
    assert!(out.stdout.is_empty(), "{out:?}");
    // A certificate and key that do not belong together, as at start-up.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a cert");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a cert");
    write(dir.path(), "cert.pem", &cert.cert.pem());
    write(dir.path(), "key.pem", &other.signing_key.serialize_pem());
    write(
        dir.path(),
        "tls.toml",
        "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    );
    let out = run(
        gatehouse(dir.path()).args(["config", "check", "--config", "tls.toml"]),
        "",
    );
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("tls_key"), "{line}");
}

/// The example configuration: every key, each commented out with its
/// default (or, for a key unset by default, an example), and a server
/// starts with it, as shipped and with every default uncommented.
#[tokio::test]
async fn the_example_configuration_names_every_key_and_serves() {
    let text = std::fs::read_to_string(repo().join("gatehouse.example.toml"))
        .expect("gatehouse.example.toml at the repository's root");
    for (key, _) in gatehouse::config::keys() {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "gatehouse.example.toml lacks `# {key} = ...`"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "empty.toml", "");
    let (_, defaults) = checked(dir.path(), "empty.toml", &[]);
    // Each default it shows is the default `config check` reports; those
    // lines, uncommented, make the configuration to serve with.
    let mut uncommented = String::new();
    for line in text.lines() {
        let Some(setting) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, value)) = setting.split_once(" = ") else {
            continue;
        };
        if let Some(Some(default)) = defaults.get(key) {
            assert_eq!(value, default, "gatehouse.example.toml's default of {key}");
            uncommented.push_str(setting);
            uncommented.push('\n');
        }
    }
    let shown = defaults.values().filter(|v| v.is_some()).count();
    assert_eq!(
        uncommented.lines().count(),
        shown,
        "every key with a default shows it once:\n{uncommented}"
    );
    std::fs::copy(
        repo().join("gatehouse.example.toml"),
        dir.path().join("shipped.toml"),
    )
    .expect("copying the example");
    write(dir.path(), "defaults.toml", &uncommented);
    for file in ["shipped.toml", "defaults.toml"] {
        // The environment's listen (port 0) wins over the file's.
        let server = Server::start(serve_cmd(dir.path()).args(["--config", file]));
        let ready = reqwest::get(server.url("/readyz"))
            .await
            .expect("GET /readyz");
        assert_eq!(ready.status(), StatusCode::OK, "{file}");
        server.stop();
    }
}

/// One JSON object a line, each line of a request carrying its id (the
/// `X-Request-Id` answered), route pattern, method and the user once known;
/// the access line has status and latency; no secret anywhere.
#[tokio::test]
async fn json_logs_carry_the_request_id_route_user_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        serve_cmd(dir.path())
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,gatehouse::access=debug"),
    );
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(DEADLINE)
        .build()
        .expect("client");
    let email = "json-logs@example.com";
    let res = http
        .post(server.url("/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(res.status(), StatusCode::CREATED);
    let user_id = res.json::<Value>().await.expect("json")["user"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let res = http
        .post(server.url("/v1/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/login");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("a session cookie");
    let me = http
        .get(server.url("/v1/me"))
        .send()
        .await
        .expect("GET /v1/me");
    assert_eq!(me.status(), StatusCode::OK);
    let id = me
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-Id")
        .to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    let again = http
        .get(server.url("/v1/me"))
        .send()
        .await
        .expect("GET /v1/me");
    let second = again.headers().get("x-request-id").expect("X-Request-Id");
    assert_ne!(
        second.to_str().ok(),
        Some(id.as_str()),
        "one id per request"
    );
    let missing = http
        .get(server.url("/nowhere"))
        .send()
        .await
        .expect("GET /nowhere");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing.headers().contains_key("x-request-id"),
        "on errors too"
    );
    let stderr = server.stop();

    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let access = lines
        .iter()
        .find(|l| l["target"] == "gatehouse::access" && l["span"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no access line of request {id}:\n{stderr}"));
    assert_eq!(access["span"]["route"], "/v1/me", "{access}");
    assert_eq!(access["span"]["method"], "GET", "{access}");
    assert_eq!(access["span"]["user"], user_id.as_str(), "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert!(access["latency_us"].is_u64(), "{access}");
    let unmatched = lines
        .iter()
        .find(|l| l["target"] == "gatehouse::access" && l["status"] == 404)
        .unwrap_or_else(|| panic!("no access line of the 404:\n{stderr}"));
    assert_eq!(unmatched["span"]["route"], "unmatched", "{unmatched}");
    for secret in [PASSWORD, cookie.as_str()] {
        assert!(!stderr.contains(secret), "a secret in the log:\n{stderr}");
    }
}
