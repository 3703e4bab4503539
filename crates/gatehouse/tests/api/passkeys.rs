//! Passkeys with an authenticator nobody here wrote: headless Chromium's
//! WebAuthn stack and its DevTools virtual authenticator
//! (`tests/browser/passkeys.mjs`), against a gatehouse whose relying party
//! is `localhost`. Registration, password + passkey, passwordless, and the
//! attacks (replay, wrong challenge, malformed credentials, a clone); then
//! what a relying party id that is an IP address, a ceremony finished on
//! another node and the admin reset do.

use std::net::TcpListener;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{artifact_dir, require_tools, run_script};
use crate::helpers::{PASSWORD, TestApp, assert_problem, unique_email};

/// A server at `http://localhost:PORT` (the relying party id `localhost`,
/// derived from the issuer), with `configure` applied.
async fn on_localhost(configure: impl FnOnce(&mut gatehouse::Config)) -> TestApp {
    // The issuer names the port, so it is chosen before the server binds.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    TestApp::spawn_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.issuer = Some(format!("http://localhost:{port}"));
        configure(c);
    })
    .await
}

/// Runs `passkeys.mjs` for `email` on `app` (finishing one ceremony on
/// `other` too, when given): its findings.
async fn run_passkeys(app: &TestApp, email: &str, other: Option<&TestApp>) -> Value {
    require_tools();
    let base = format!("http://localhost:{}", app.addr.port());
    let other = other.map(|o| format!("http://localhost:{}", o.addr.port()));
    let dir = artifact_dir();
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let log = dir.join(format!("passkeys-{}.log", app.addr.port()));
    let email = email.to_owned();
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let mut args = vec![base.as_str(), email.as_str(), PASSWORD];
        args.extend(other.as_deref());
        run_script("passkeys.mjs", &args, &[], &log)
    })
    .await
    .expect("the script's thread");
    assert!(ok, "the passkey script failed:\n{output}");
    let line = output
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no findings:\n{output}"));
    serde_json::from_str(line).expect("findings are JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_register_sign_in_as_a_second_factor_and_passwordless_in_chromium() {
    let app = on_localhost(|_| {}).await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let f = run_passkeys(&app, &email, None).await;

    // The options as the contract asks: relying party from configuration,
    // discoverable credential, user verification required.
    let reg = &f["registration_options"];
    assert_eq!(reg["rp"]["id"], "localhost", "{reg}");
    assert_eq!(
        reg["authenticatorSelection"]["residentKey"], "required",
        "{reg}"
    );
    assert_eq!(
        reg["authenticatorSelection"]["userVerification"], "required",
        "{reg}"
    );
    assert_eq!(f["register"]["status"], 201, "{f}");
    assert_eq!(f["register"]["json"]["passkey"]["name"], "Laptop");
    let codes = f["register"]["json"]["recovery_codes"]
        .as_array()
        .expect("recovery codes with the first factor");
    assert_eq!(codes.len(), 10);
    assert_eq!(
        f["register_replayed"], 400,
        "a spent registration challenge"
    );
    let mfa = &f["mfa_after_registration"];
    assert_eq!(mfa["totp"], false);
    assert_eq!(mfa["recovery_codes_left"], 10);
    assert_eq!(mfa["passkeys"].as_array().map(Vec::len), Some(1), "{mfa}");

    // Password + passkey.
    assert_eq!(f["password_step"]["mfa_required"], true, "{f}");
    assert_eq!(
        f["password_step"]["methods"],
        json!(["passkey", "recovery_code"])
    );
    assert_eq!(f["second_factor_options"]["userVerification"], "required");
    assert_eq!(
        f["second_factor_options"]["allowCredentials"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(f["second_factor"]["status"], 200, "{f}");
    assert_eq!(f["second_factor"]["amr"], json!(["pwd", "hwk", "mfa"]));
    assert_eq!(f["me_after_second_factor"], json!(["pwd", "hwk", "mfa"]));

    // Passwordless.
    assert_eq!(f["passwordless_options"]["userVerification"], "required");
    assert_eq!(f["passwordless"]["status"], 200, "{f}");
    assert_eq!(f["passwordless"]["amr"], json!(["hwk", "user", "mfa"]));
    assert_eq!(f["passwordless"]["email"], email.as_str());

    // The attacks.
    assert_eq!(f["passwordless_replayed"], 401, "a replayed assertion");
    assert_eq!(
        f["passwordless_wrong_challenge"], 401,
        "another ceremony's assertion"
    );
    for status in f["passwordless_malformed"].as_array().expect("statuses") {
        let status = status.as_u64().expect("a status");
        assert!(
            status == 400 || status == 401,
            "malformed credential: {status}"
        );
    }
    assert!(
        f["counter_before_clone"].as_u64().expect("a counter") > 1,
        "{f}"
    );
    assert_eq!(
        f["clone"], 401,
        "a cloned credential (counter reset) is refused"
    );

    // The clone is in the trail; the passkey's use is recorded.
    let events: Vec<(String,)> = sqlx::query_as("SELECT type FROM audit_events ORDER BY id")
        .fetch_all(&app.sql().await)
        .await
        .expect("audit");
    let types: Vec<&str> = events.iter().map(|(t,)| t.as_str()).collect();
    assert!(types.contains(&"passkey_counter_regression"), "{types:?}");
    assert!(types.contains(&"mfa_enrolled"), "{types:?}");
    let used: (Option<i64>, i64) = sqlx::query_as("SELECT last_used_at, sign_count FROM passkeys")
        .fetch_one(&app.sql().await)
        .await
        .expect("the passkey");
    assert!(used.0.is_some() && used.1 > 1, "{used:?}");
}

/// A ceremony begun on one node and finished on another: the ceremony's
/// state lives in the shared database.
async fn a_ceremony_begun_on_one_node_finishes_on_another(redis: bool) {
    // Two nodes: two PostgreSQL pools.
    let _slots = crate::helpers::PG_SLOTS
        .acquire_many(2)
        .await
        .expect("the semaphore is never closed");
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (pa, pb) = (free(), free());
    let origins = vec![
        format!("http://localhost:{pa}"),
        format!("http://localhost:{pb}"),
    ];
    let configure = |port: u16| {
        let origins = origins.clone();
        move |c: &mut gatehouse::Config| {
            c.listen = format!("127.0.0.1:{port}").parse().expect("addr");
            c.issuer = Some(format!("http://localhost:{port}"));
            c.rp_id = Some("localhost".into());
            c.webauthn_origins = origins;
        }
    };
    let a = if redis {
        TestApp::spawn_on_redis(configure(pa)).await
    } else {
        TestApp::spawn_on_postgres(configure(pa)).await
    };
    let shared = a.config.clone();
    let b = TestApp::spawn_with(|c| {
        configure(pb)(c);
        c.database_url = shared.database_url.clone();
        c.redis_url = shared.redis_url.clone();
        c.redis_key_prefix = shared.redis_key_prefix.clone();
    })
    .await;
    let email = unique_email();
    assert_eq!(
        a.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let f = run_passkeys(&a, &email, Some(&b)).await;
    assert_eq!(f["second_factor"]["status"], 200, "{f}");
    assert_eq!(f["other_node"]["status"], 200, "{f}");
    assert_eq!(f["other_node"]["amr"], json!(["hwk", "user", "mfa"]));
    assert_eq!(f["clone"], 401, "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_passkey_ceremony_begun_on_one_node_finishes_on_another() {
    a_ceremony_begun_on_one_node_finishes_on_another(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_passkey_ceremony_begun_on_one_node_finishes_on_another() {
    a_ceremony_begun_on_one_node_finishes_on_another(true).await;
}

#[tokio::test]
async fn with_an_ip_address_as_relying_party_the_passkey_endpoints_are_404() {
    // The test default: the issuer is http://127.0.0.1:PORT.
    let app = TestApp::spawn().await;
    let (_, client) = app.logged_in().await;
    let res = client
        .post(app.url("/v1/me/passkeys/options"))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::NOT_FOUND).await;
    let res = app
        .bare_client()
        .post(app.url("/v1/login/passkey/options"))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn hostile_passkey_requests_get_a_clear_4xx() {
    let app = on_localhost(|_| {}).await;
    let client = app.bare_client();
    let options: Value = client
        .post(app.url("/v1/login/passkey/options"))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let challenge = options["challenge_id"].as_str().expect("id");
    assert!(options["publicKey"]["challenge"].is_string());
    for (body, status) in [
        (
            json!({ "challenge_id": challenge }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "challenge_id": challenge, "credential": 7 }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "challenge_id": "' OR 1=1 --", "credential": {
                "id": "AA", "rawId": "AA", "type": "public-key",
                "response": { "clientDataJSON": "AA", "authenticatorData": "AA", "signature": "AA" }
            }}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({ "challenge_id": challenge, "credential": {
                "id": "AA", "rawId": "AA", "type": "public-key",
                "response": { "clientDataJSON": "AA", "authenticatorData": "AA", "signature": "AA" }
            }}),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let res = client
            .post(app.url("/v1/login/passkey"))
            .json(&body)
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), status, "{body}");
    }
    // The challenge was spent by the failed attempt that named it.
    let res = client
        .post(app.url("/v1/login/mfa/passkey-options"))
        .json(&json!({ "mfa_token": "A".repeat(43) }))
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    let (_, signed_in) = app.logged_in().await;
    let res = signed_in
        .post(app.url("/v1/me/passkeys"))
        .json(
            &json!({ "challenge_id": uuid::Uuid::new_v4(), "name": "x", "credential": {
                "id": "AA", "rawId": "AA", "type": "public-key",
                "response": { "clientDataJSON": "AA", "attestationObject": "AA" }
            }}),
        )
        .send()
        .await
        .expect("req");
    assert_problem(res, StatusCode::BAD_REQUEST).await;
    let res = signed_in
        .delete(app.url(&format!("/v1/me/passkeys/{}", uuid::Uuid::now_v7())))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = signed_in
        .delete(app.url("/v1/me/passkeys/not-a-uuid"))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// The screenshots the passkey journey must leave behind.
const JOURNEY_SCREENSHOTS: &[&str] = &[
    "p1-account",
    "p2-passkey-added",
    "p3-account-with-a-passkey",
    "p4-second-step",
    "p5-signed-in-with-password-and-passkey",
    "p6-login-offers-a-passkey",
    "p7-signed-in-with-a-passkey",
    "p8-passkey-removed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosted_pages_add_a_passkey_and_sign_in_with_it_in_chromium() {
    require_tools();
    let app = on_localhost(|_| {}).await;
    let email = unique_email();
    assert_eq!(
        app.register(&email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let artifacts = artifact_dir().join("passkeys");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let started = std::time::SystemTime::now();
    let base = format!("http://localhost:{}", app.addr.port());
    let dir = artifacts.display().to_string();
    let log = artifacts.join("journey.log");
    let (ok, output) = tokio::task::spawn_blocking(move || {
        run_script(
            "passkey_journey.mjs",
            &[&base, &dir, &email, PASSWORD],
            &[],
            &log,
        )
    })
    .await
    .expect("the journey's thread");
    println!("{output}");
    assert!(ok, "the passkey journey failed:\n{output}");
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
    }
}

#[tokio::test]
async fn anonymous_ceremonies_are_bounded_per_client_network() {
    let app = on_localhost(|c| {
        c.login_max_failures = 3;
        c.login_max_failures_per_ip = 3;
    })
    .await;
    let client = app.bare_client();
    let begin = || client.post(app.url("/v1/login/passkey/options")).send();
    for _ in 0..3 {
        assert_eq!(begin().await.expect("req").status(), StatusCode::OK);
    }
    // Each is a row until it expires: a fourth unfinished one is refused.
    let res = begin().await.expect("req");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    let rows: (i64,) = sqlx::query_as("SELECT count(*) FROM webauthn_ceremonies")
        .fetch_one(&app.sql().await)
        .await
        .expect("count");
    assert_eq!(rows.0, 3, "the refused one stored nothing");
}

/// A relying party that cannot work stops the server at start-up, naming
/// the key: an IP address (WebAuthn forbids it), a malformed id, an origin
/// outside the relying party id.
#[test]
fn a_relying_party_that_cannot_work_stops_the_server_naming_the_key() {
    use crate::process::{assert_fails_with_one_line, gatehouse, run};
    let dir = tempfile::tempdir().expect("tempdir");
    for (env, key) in [
        (vec![("GATEHOUSE_RP_ID", "127.0.0.1")], "rp_id"),
        (vec![("GATEHOUSE_RP_ID", "https://example.com")], "rp_id"),
        (
            vec![
                ("GATEHOUSE_ISSUER", "https://auth.example.com"),
                ("GATEHOUSE_RP_ID", "example.org"),
            ],
            "rp_id",
        ),
        (
            vec![("GATEHOUSE_WEBAUTHN_ORIGINS", "not an origin")],
            "webauthn_origins",
        ),
    ] {
        let mut cmd = gatehouse(dir.path());
        cmd.arg("serve").env("GATEHOUSE_LISTEN", "127.0.0.1:0");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd, "");
        let line = assert_fails_with_one_line(&out);
        assert!(line.contains(key), "{env:?}: {line:?}");
    }
}
