//! An application signing a user in and out through gatehouse, in headless
//! Chromium (docs/api.md, "OpenID Connect provider"):
//! `tests/browser/rp_journey.mjs` runs its own small relying party on
//! loopback (PKCE, `state`, `iss`, the ID token checked against the JWKS,
//! UserInfo) and drives the browser through "Sign in with gatehouse", the
//! login and consent pages, a second sign-in that asks nothing, the app on
//! `/account`, and RP-initiated logout. Fails, never skips, when node,
//! playwright-core or Chromium is missing (browser.rs says how to install).

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use gatehouse::auth::audit::Actor;
use gatehouse::auth::clients::ClientSpec;

use crate::browser::{artifact_dir, require_tools, run_script};
use crate::helpers::TestApp;

const APP_NAME: &str = "Loopback Notes";

/// The steps the journey must report, in order.
const STEPS: &[&str] = &[
    "ok discovery",
    "ok app home",
    "ok gatehouse login page",
    "ok consent page names the app and its origin",
    "ok signed in to the app",
    "ok consent remembered",
    "ok account lists the app",
    "ok signed out through gatehouse",
    "ok gatehouse session ended",
    "ok access tokens refused by UserInfo",
];

/// The screenshots the journey must leave behind.
const SCREENSHOTS: &[&str] = &[
    "o1-app-home",
    "o2-gatehouse-login",
    "o3-consent",
    "o4-signed-in",
    "o5-signed-in-again",
    "o6-account-applications",
    "o7-signed-out",
    "o8-login-after-sign-out",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_signs_a_user_in_and_out_through_gatehouse_in_chromium() {
    require_tools();
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    // The app learns its port only once it listens: the port of a loopback
    // redirect URI may vary (RFC 8252 §7.3), post-logout ones' too.
    let spec = ClientSpec {
        name: APP_NAME.to_owned(),
        kind: "confidential".to_owned(),
        redirect_uris: vec!["http://127.0.0.1/callback".to_owned()],
        post_logout_redirect_uris: Some(vec!["http://127.0.0.1/bye".to_owned()]),
        first_party: Some(false),
        ..Default::default()
    };
    let client = app
        .auth
        .clients
        .create(spec, Actor::Cli)
        .await
        .expect("client registered");
    let client_id = client.record.id.to_string();
    let secret = client
        .secret
        .map(|s| s.secret())
        .expect("a confidential client's secret");

    let artifacts = artifact_dir().join("oidc-rp");
    // Screenshots of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let started = SystemTime::now();
    let envs: Vec<(&'static str, String)> = vec![
        ("ISSUER", app.auth.provider.issuer().to_owned()),
        ("CLIENT_ID", client_id),
        ("CLIENT_SECRET", secret),
        ("APP_NAME", APP_NAME.to_owned()),
        ("EMAIL", user.email.clone()),
        ("PASSWORD", user.password.clone()),
        ("ARTIFACTS", artifacts.display().to_string()),
    ];
    let log = artifacts.join("journey.log");
    let (ok, output) = tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_script("rp_journey.mjs", &[], &envs, &log)
    })
    .await
    .expect("the journey's thread");
    println!("{output}");
    assert!(ok, "the relying-party journey failed:\n{output}");

    let reported: Vec<&str> = output.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(reported, STEPS, "the journey's steps:\n{output}");
    for name in SCREENSHOTS {
        assert_fresh_png(&artifacts.join(format!("{name}.png")), started);
    }

    // Seen from the audit trail: one login and one consent for two
    // sign-ins; the app's logout ended the browser session and, with it,
    // the client session of each sign-in.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT type, details FROM audit_events ORDER BY id")
            .fetch_all(&app.sql().await)
            .await
            .expect("audit events");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (kind, details) in &rows {
        let key = match kind.as_str() {
            "session_ended" => {
                let details: serde_json::Value = serde_json::from_str(details).expect("json");
                format!(
                    "session_ended:{}",
                    details["reason"].as_str().unwrap_or("?")
                )
            }
            _ => kind.clone(),
        };
        *counts.entry(key).or_default() += 1;
    }
    for (kind, n) in [
        ("login_succeeded", 1),
        ("consent_given", 1),
        ("logout", 1),
        ("session_ended:browser_session_ended", 2),
    ] {
        assert_eq!(
            counts.get(kind).copied().unwrap_or(0),
            n,
            "{kind}: {rows:?}"
        );
    }
}

/// A PNG written by this run, not nearly empty.
fn assert_fresh_png(path: &Path, started: SystemTime) {
    let meta = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{} was not written ({e})", path.display()));
    assert!(meta.len() > 1000, "{} is nearly empty", path.display());
    assert!(
        meta.modified().is_ok_and(|m| m >= started),
        "{} is from an earlier run",
        path.display()
    );
    let png = std::fs::read(path).expect("read screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
}
