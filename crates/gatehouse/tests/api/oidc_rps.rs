//! Interoperability with real relying parties (docs/api.md, "OpenID Connect
//! provider"): PyPI's authlib (pinned by scripts/test.sh), run by
//! `rp_authlib.py`, signs a user in at gatehouse as a Python web app would:
//! discovery, the code flow with PKCE, `state` and `nonce` through the
//! hosted login page (and the consent page of a third-party client), both
//! client authentications, the ID token verified by authlib against the
//! JWKS, UserInfo, refresh, and signing out ending the client's tokens; on
//! every backend. And authlib as a service on its own behalf
//! (`service_authlib.py`): the client credentials grant, its token checked
//! against the JWKS, introspection, and a secret rotation refusing the old
//! secret and its token.

use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::auth::audit::Actor;
use gatehouse::auth::clients::ClientSpec;

use crate::helpers::{TestApp, TestUser, following};
use crate::process::{ChildGuard, drain, wait_for_exit};

/// Keep in step with AUTHLIB_VERSION in scripts/test.sh.
const AUTHLIB: &str = "1.9.10";

const HOW_TO_INSTALL: &str = "the relying-party tests run PyPI's authlib with python3: \
     install it with `pip install authlib==1.9.10`, or run the suite with `bash scripts/test.sh`";

/// The relying party, next to this file.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/rp_authlib.py");

/// Never fetched: the relying party reads the code from the `Location`.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// Longest a whole sign-in journey may take (password hashing in a debug
/// build on a busy machine included).
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The lines the relying party prints for the steps every run passes.
const STEPS: &[&str] = &[
    "ok discovery",
    "ok jwks",
    "ok authorization_url",
    "ok login_redirect",
    "ok login",
    "ok authorization_response",
    "ok state_mismatch_rejected",
    "ok id_token",
    "ok id_token_tampered_signature_rejected",
    "ok id_token_tampered_payload_rejected",
    "ok id_token_wrong_nonce_rejected",
    "ok id_token_wrong_audience_rejected",
    "ok id_token_expired_rejected",
    "ok userinfo",
    "ok refresh",
    "ok id_token_other_access_token_rejected",
    "ok userinfo_after_refresh",
    "ok logout",
    "ok userinfo_refused_after_logout",
    "ok refresh_refused_after_logout",
    "ok all",
];

/// Fails, saying how to install it, unless python3 has the pinned authlib.
fn require_authlib() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata, authlib; print(importlib.metadata.version('authlib'))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running python3: {e}; {HOW_TO_INSTALL}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python3 cannot import authlib ({}); {HOW_TO_INSTALL}",
        stderr.trim().lines().last().unwrap_or("")
    );
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        version, AUTHLIB,
        "python3 has authlib {version}, not the pinned {AUTHLIB}; {HOW_TO_INSTALL}"
    );
}

/// A confidential client with the code and refresh grants, registered
/// through the domain (the admin API has its own tests): its id and secret.
async fn register(app: &TestApp, first_party: bool) -> (String, String) {
    register_spec(
        app,
        ClientSpec {
            name: "authlib relying party".to_owned(),
            kind: "confidential".to_owned(),
            redirect_uris: vec![REDIRECT_URI.to_owned()],
            first_party: Some(first_party),
            ..Default::default()
        },
    )
    .await
}

/// A confidential client as `spec` says: its id and secret.
async fn register_spec(app: &TestApp, spec: ClientSpec) -> (String, String) {
    let new = app
        .auth
        .clients
        .create(spec, Actor::Cli)
        .await
        .expect("client registered");
    (
        new.record.id.to_string(),
        new.secret.expect("a confidential client's secret").secret(),
    )
}

/// Runs a script to its end (killed past [`RUN_DEADLINE`]): its exit status
/// (`None` when killed), stdout and stderr.
async fn run(mut cmd: Command) -> (Option<std::process::ExitStatus>, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The script talks to the server on this runtime: wait off its thread.
    tokio::task::spawn_blocking(move || {
        let mut child = ChildGuard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning python3: {e}; {HOW_TO_INSTALL}")),
        );
        let stdout = drain(child.0.stdout.take());
        let stderr = drain(child.0.stderr.take());
        let status = wait_for_exit(&mut child.0, RUN_DEADLINE);
        // Dropping the guard kills a script that overran the deadline.
        drop(child);
        (
            status,
            stdout.join().expect("stdout"),
            stderr.join().expect("stderr"),
        )
    })
    .await
    .expect("the script's thread")
}

/// Runs one relying party's journey for `user` and asserts that it passed
/// every step.
async fn sign_in_with_authlib(
    app: &TestApp,
    user: &TestUser,
    first_party: bool,
    auth_method: &'static str,
) {
    let (client_id, client_secret) = register(app, first_party).await;
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .env("ISSUER", app.auth.provider.issuer())
        .env("CLIENT_ID", &client_id)
        .env("CLIENT_SECRET", &client_secret)
        .env("REDIRECT_URI", REDIRECT_URI)
        .env("EMAIL", &user.email)
        .env("PASSWORD", &user.password)
        .env("FIRST_PARTY", if first_party { "1" } else { "0" })
        .env("AUTH_METHOD", auth_method);
    let (status, stdout, stderr) = run(cmd).await;
    let report = format!(
        "authlib relying party (first_party: {first_party}, {auth_method}) \
         {status:?}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    );
    assert!(status.is_some(), "ran past {RUN_DEADLINE:?}: {report}");
    assert!(status.is_some_and(|s| s.success()), "{report}");
    let token_step = format!("ok token {auth_method}");
    for step in STEPS.iter().copied().chain([token_step.as_str()]) {
        assert!(stdout.lines().any(|l| l == step), "no `{step}`: {report}");
    }
    let consent_shown = stdout.lines().any(|l| l == "ok consent");
    assert_eq!(
        consent_shown, !first_party,
        "the consent page is for third-party clients only: {report}"
    );
}

/// A first-party client with `client_secret_basic`, then a third-party one
/// through the consent page with `client_secret_post`, for one user.
async fn authlib_signs_users_in(app: &TestApp) {
    require_authlib();
    let user = app.create_user().await;
    sign_in_with_authlib(app, &user, true, "client_secret_basic").await;
    sign_in_with_authlib(app, &user, false, "client_secret_post").await;
}

#[tokio::test]
async fn an_authlib_relying_party_signs_users_in_on_sqlite() {
    authlib_signs_users_in(&TestApp::spawn().await).await;
}

#[tokio::test]
async fn an_authlib_relying_party_signs_users_in_on_postgres() {
    authlib_signs_users_in(&TestApp::spawn_on_postgres(|_| {}).await).await;
}

#[tokio::test]
async fn an_authlib_relying_party_signs_users_in_on_postgres_and_redis() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    following(&app).await;
    authlib_signs_users_in(&app).await;
}

/// The service, next to this file.
const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/service_authlib.py");

/// One phase of the authlib service (`service_authlib.py`), asserting that
/// it printed every step of `steps`: its stdout.
async fn service_phase(app: &TestApp, env: &[(&str, &str)], steps: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(SERVICE).env("ISSUER", app.auth.provider.issuer());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (status, stdout, stderr) = run(cmd).await;
    let report = format!("authlib service {status:?}\n--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(status.is_some_and(|s| s.success()), "{report}");
    for step in steps.iter().chain(&["all"]) {
        let line = format!("ok {step}");
        assert!(stdout.lines().any(|l| l == line), "no `{line}`: {report}");
    }
    stdout
}

/// authlib as a service on its own behalf: the client credentials grant
/// with either client authentication, the token checked as a resource
/// server would against the JWKS, a narrower and a wider scope, RFC 7662
/// introspection; then the secret rotated through the admin's domain call,
/// and the old secret and its token refused while the new one works.
async fn authlib_service(app: &TestApp, auth_method: &str) {
    require_authlib();
    let permissions: Vec<gatehouse::auth::types::Permission> = ["reports:read", "reports:write"]
        .iter()
        .map(|p| gatehouse::auth::types::Permission::parse(p).expect("a permission"))
        .collect();
    app.auth
        .admin
        .set_role(
            &gatehouse::auth::types::RoleName::parse("reports").expect("a role name"),
            &permissions,
            Actor::Cli,
        )
        .await
        .expect("the role");
    let (id, secret) = register_spec(
        app,
        ClientSpec {
            name: "authlib service".to_owned(),
            kind: "confidential".to_owned(),
            grant_types: Some(vec!["client_credentials".to_owned()]),
            roles: Some(vec!["reports".to_owned()]),
            ..Default::default()
        },
    )
    .await;
    let stdout = service_phase(
        app,
        &[
            ("CLIENT_ID", &id),
            ("CLIENT_SECRET", &secret),
            ("AUTH_METHOD", auth_method),
            ("PHASE", "grant"),
        ],
        &[
            "discovery",
            "grant",
            "token_verified",
            "narrowed_scope",
            "wider_scope_refused",
            "introspection_active",
        ],
    )
    .await;
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("the token printed")
        .to_owned();
    let rotated = app
        .auth
        .provider
        .rotate_secret(
            gatehouse::auth::types::ClientId::parse(&id).expect("an id"),
            Actor::Cli,
        )
        .await
        .expect("rotated")
        .secret();
    service_phase(
        app,
        &[
            ("CLIENT_ID", &id),
            ("CLIENT_SECRET", &rotated),
            ("OLD_SECRET", &secret),
            ("OLD_TOKEN", &token),
            ("AUTH_METHOD", auth_method),
            ("PHASE", "rotated"),
        ],
        &[
            "discovery",
            "old_secret_refused",
            "old_token_inactive",
            "new_secret_grant",
        ],
    )
    .await;
}

#[tokio::test]
async fn an_authlib_service_uses_client_credentials_on_sqlite() {
    authlib_service(&TestApp::spawn().await, "client_secret_basic").await;
}

#[tokio::test]
async fn an_authlib_service_uses_client_credentials_on_postgres_and_redis() {
    let app = TestApp::spawn_on_redis(|_| {}).await;
    following(&app).await;
    authlib_service(&app, "client_secret_post").await;
}
