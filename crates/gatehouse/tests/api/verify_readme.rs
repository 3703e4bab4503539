//! `crates/gatehouse-verify/README.md`'s quick start, followed against the
//! real binary on its defaults: `gatehouse serve` with only the port (free,
//! rather than 8080) and the SQLite file (in a temporary directory) set. A
//! user registers and takes a token with the password grant; the verifier
//! the README's builder chain makes, read from the README at test time and
//! performed call by call, accepts it, and the README's layers let it
//! through to the permission check. A tampered token is refused and logged
//! with its reason, as "Why a token was refused" shows, under the
//! `RUST_LOG` it gives. (The README's Rust blocks compile as doctests of
//! gatehouse-verify; its Cargo lines and log format are also checked there,
//! in `tests/it/readme.rs`.)

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use gatehouse_verify::axum::{RequirePermission, VerifyLayer};
use gatehouse_verify::{Verifier, VerifierBuilder, VerifyError};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tracing_subscriber::EnvFilter;

use crate::cli::Server;
use crate::process::gatehouse;

const EMAIL: &str = "reader@example.com";
const PASSWORD: &str = "tangerine-ladder-41-quietly";

fn readme() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gatehouse-verify/README.md"),
    )
    .expect("reading crates/gatehouse-verify/README.md")
}

/// The one fenced block of `lang` in the section under `## {heading}`.
fn block(readme: &str, heading: &str, lang: &str) -> String {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("the README has the section {heading:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line) {
            (None, fence) if fence.strip_prefix("```").is_some_and(|l| l == lang) => {
                current = Some(String::new());
            }
            (Some(_), "```") => found.extend(current.take()),
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(found.len(), 1, "one {lang} block under {heading:?}");
    found.remove(0)
}

/// A string literal at the start of `s` (no escapes: the README's are
/// URLs), and what follows it.
fn literal(s: &str) -> (String, &str) {
    let rest = s
        .trim_start()
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("a string literal argument: {s:?}"));
    let end = rest.find('"').expect("the literal's end");
    assert!(!rest[..end].contains('\\'), "no escapes: {s:?}");
    (rest[..end].to_owned(), &rest[end + 1..])
}

/// The quick start's `Verifier::builder("...")` chain up to `.build()`:
/// the issuer and each call with its string argument, in order.
fn builder_chain(code: &str) -> (String, Vec<(String, String)>) {
    let start = code
        .find("Verifier::builder(")
        .expect("the quick start calls Verifier::builder");
    let chain = &code[start + "Verifier::builder(".len()..];
    let end = chain.find(".build()").expect("the chain ends in .build()");
    let (issuer, mut rest) = literal(&chain[..end]);
    rest = rest
        .trim_start()
        .strip_prefix(')')
        .expect("builder(issuer)");
    let mut calls = Vec::new();
    while !rest.trim().is_empty() {
        let call = rest.trim_start().strip_prefix('.').expect("a .method(..)");
        let (method, args) = call.split_once('(').expect("a call");
        let (arg, after) = literal(args);
        rest = after.trim_start().strip_prefix(')').expect("one argument");
        calls.push((method.trim().to_owned(), arg));
    }
    (issuer, calls)
}

/// Performs the chain's calls on `builder`.
fn perform(mut builder: VerifierBuilder, calls: &[(String, String)]) -> VerifierBuilder {
    for (method, arg) in calls {
        builder = match method.as_str() {
            "audience" => builder.audience(arg),
            "jwks_url" => builder.jwks_url(arg),
            other => panic!(
                "the README's builder chain calls .{other}(..), which this test does not perform yet; add it to `perform`"
            ),
        };
    }
    builder
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The token with one character in the middle of its signature changed.
fn tampered(token: &str) -> String {
    let (_, signature) = token.rsplit_once('.').expect("a JWS");
    let at = token.len() - signature.len() / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

/// The status the README's layers (`VerifyLayer` outside
/// `RequirePermission::new("orders:read")`) answer `token` with.
async fn through_the_layers(verifier: &Verifier, token: &str) -> (StatusCode, String) {
    let app = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .route_layer(RequirePermission::new("orders:read"))
        .route_layer(VerifyLayer::new(verifier.clone()));
    let request = Request::builder()
        .uri("/orders")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status(), challenge)
}

#[tokio::test]
async fn the_verify_readme_quick_start_accepts_a_default_gatehouses_tokens() {
    let readme = readme();
    let code = block(&readme, "Protect a route in a few lines", "rust,no_run");
    let (issuer, calls) = builder_chain(&code);
    // The README's issuer is that of a gatehouse on its defaults.
    let default_origin = format!("http://{}", gatehouse::Config::default().listen);
    assert_eq!(
        issuer, default_origin,
        "the quick start's issuer is a default gatehouse's"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        gatehouse(dir.path())
            .arg("serve")
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
            .env(
                "GATEHOUSE_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("gatehouse.db").display()),
            ),
    );
    // The same server, on the port it was given rather than 8080.
    let here = format!("http://{}", server.addr);
    let calls: Vec<(String, String)> = calls
        .into_iter()
        .map(|(m, arg)| (m, arg.replace(&default_origin, &here)))
        .collect();

    let client = reqwest::Client::new();
    let res = client
        .post(server.url("/v1/users"))
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    let user: Value = res.json().await.expect("json");
    let user_id = user["user"]["id"]
        .as_str()
        .expect("the user's id")
        .to_owned();
    let res = client
        .post(server.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", EMAIL),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("POST /v1/token");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let pair: Value = res.json().await.expect("json");
    let token = pair["access_token"].as_str().expect("access_token");

    // The README's chain, performed: it accepts the token.
    let verifier = perform(Verifier::builder(here.as_str()), &calls)
        .build()
        .expect("the README's verifier builds");
    match verifier.verify(token).await {
        Ok(claims) => assert_eq!(claims.sub, user_id),
        Err(e) => panic!(
            "the README's verifier ({calls:?} after Verifier::builder({issuer:?})) refuses a default gatehouse's token: {}",
            e.code()
        ),
    }
    // Through the README's layers: verified, then 403 (a registered user
    // holds no role, as the README says), not 401.
    let (status, challenge) = through_the_layers(&verifier, token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{challenge}");
    assert!(
        challenge.contains(r#"error="insufficient_scope", scope="orders:read""#),
        "{challenge}"
    );

    // A tampered token: 401, and the reason in the log as the README shows
    // it, under the RUST_LOG it gives.
    let logging = block(&readme, "Why a token was refused", "sh");
    let filter = logging
        .split_whitespace()
        .find_map(|w| w.strip_prefix("RUST_LOG="))
        .expect("the README gives RUST_LOG");
    let shown = block(&readme, "Why a token was refused", "text");
    let (_timestamp, shown) = shown.trim().split_once(' ').expect("a log line");
    let forged = tampered(token);
    let log = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let (verdict, (status, challenge)) = {
        // A current-thread runtime: the verifier's events fire on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);
        (
            verifier.verify(&forged).await,
            through_the_layers(&verifier, &forged).await,
        )
    };
    assert_eq!(verdict.map(|c| c.sub), Err(VerifyError::BadSignature));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    let text = String::from_utf8(log.0.lock().expect("lock").clone()).expect("utf-8");
    let refusals: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.trim_start()))
        .filter(|l| l.contains("access token refused"))
        .collect();
    // Once by `verify`, once by the layer.
    assert_eq!(refusals, [shown.trim(), shown.trim()], "{text}");
    let (_, signature) = forged.rsplit_once('.').expect("a JWS");
    assert!(!text.contains(signature), "{text}");

    // What the README warns against: an audience gatehouse was not given.
    let stray = Verifier::builder(here.as_str())
        .audience("https://api.example.com")
        .build()
        .expect("builds");
    assert_eq!(
        stray.verify(token).await.map(|c| c.sub),
        Err(VerifyError::WrongAudience)
    );
    server.stop();
}
