//! Signing keys (API.md "Tokens", `jwt_alg`, `jwt_hs256_secret`,
//! `signing_key_file`, `key_encryption_key`) and the key and token commands
//! (API.md "Command line"): the real binary as a child process with an empty
//! environment, and the in-process app for the algorithm variants.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse::config::{DatabaseUrl, JwtAlg, SecretBytes};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{TestApp, TestUser};
use crate::process::{
    ChildGuard, DEADLINE, Finished, assert_fails_with_one_line, drain, gatehouse, new_database,
};

/// Runs `cmd` to completion with an empty stdin, within [`DEADLINE`].
fn run(cmd: &mut Command) -> Finished {
    crate::process::run(cmd, "")
}

/// How soon a running server must use a key rotated by the CLI.
const ROTATION_REACHES_SERVER: Duration = Duration::from_secs(5);

/// Long, not in the bundled list of common passwords.
const PASSWORD: &str = "tangerine-ladder-41-quietly";

// ---------------------------------------------------------------------------
// Running the binary (after cli.rs)
// ---------------------------------------------------------------------------

/// `sqlite://<absolute path>` of a database file in `dir`.
fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("keys.db").display())
}

/// The binary on the database at `url`.
fn on_db(dir: &Path, url: &str) -> Command {
    let mut cmd = gatehouse(dir);
    cmd.env("GATEHOUSE_DATABASE_URL", url);
    cmd
}

/// `gatehouse serve` on a free port, plain-HTTP cookies, database at `url`.
fn serve_cmd(dir: &Path, url: &str) -> Command {
    let mut cmd = on_db(dir, url);
    cmd.arg("serve")
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_COOKIE_SECURE", "false");
    cmd
}

/// Runs `cmd` and expects exit code 0.
fn run_ok(cmd: &mut Command) -> Finished {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{cmd:?}: {out:?}");
    out
}

/// A running `gatehouse serve`; killed when dropped.
struct Server {
    _child: ChildGuard,
    addr: SocketAddr,
}

impl Server {
    fn start(cmd: &mut Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().expect("spawning gatehouse serve"));
        let stdout = child.0.stdout.take().expect("piped stdout");
        let stderr = drain(child.0.stderr.take());
        let (lines, first) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
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
            _child: child,
            addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A client with a bounded wait and no cookie jar.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("building the HTTP client")
}

// ---------------------------------------------------------------------------
// HTTP against any base URL
// ---------------------------------------------------------------------------

async fn register(base: &str, email: &str) {
    let res = client()
        .post(format!("{base}/v1/users"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("POST /v1/users");
    assert_eq!(res.status(), StatusCode::CREATED, "registering {email}");
}

/// The password grant; returns the access token.
async fn password_grant(base: &str, email: &str, password: &str) -> String {
    let res = client()
        .post(format!("{base}/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST /v1/token");
    assert_eq!(res.status(), StatusCode::OK, "password grant");
    let body: Value = res.json().await.expect("token JSON");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn grant_for(app: &TestApp, user: &TestUser) -> String {
    password_grant(&app.origin(), &user.email, &user.password).await
}

/// `GET /v1/me` with the bearer token; returns the status.
async fn me_status(base: &str, token: &str) -> StatusCode {
    client()
        .get(format!("{base}/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /v1/me")
        .status()
}

async fn jwks(base: &str) -> Vec<Value> {
    let body: Value = client()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("JWKS JSON");
    body["keys"].as_array().expect("keys array").clone()
}

fn kids(keys: &[Value]) -> Vec<String> {
    keys.iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// Tokens and keys
// ---------------------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn header(token: &str) -> Value {
    segment(token, 0)
}

fn claims(token: &str) -> Value {
    segment(token, 1)
}

fn kid_of(token: &str) -> String {
    header(token)["kid"].as_str().expect("kid").to_owned()
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK.
fn thumbprint(jwk: &Value) -> String {
    let members: &[&str] = match jwk["kty"].as_str().expect("kty") {
        "OKP" => &["crv", "kty", "x"],
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        other => panic!("unexpected kty {other}"),
    };
    let body: Vec<String> = members
        .iter()
        .map(|m| format!("\"{m}\":{}", jwk[*m]))
        .collect();
    b64(Sha256::digest(format!("{{{}}}", body.join(",")).as_bytes()))
}

/// A base64url string of 43 characters: a SHA-256 thumbprint.
fn looks_like_thumbprint(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Verifies `token` with jsonwebtoken against `key`: signature, `iss`,
/// `aud`, `exp`.
fn verify_with(token: &str, key: &DecodingKey, alg: Algorithm, issuer: &str) -> Value {
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[issuer]);
    jsonwebtoken::decode::<Value>(token, key, &v)
        .unwrap_or_else(|e| panic!("{alg:?} token does not verify: {e}"))
        .claims
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("OS RNG");
    bytes
}

fn new_ed25519() -> (Ed25519KeyPair, String) {
    let pair = Ed25519KeyPair::generate().expect("Ed25519 key");
    let der = AsDer::<Pkcs8V1Der<'static>>::as_der(&pair)
        .expect("PKCS#8")
        .as_ref()
        .to_vec();
    (pair, pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

/// `(private_key, encrypted)` of every stored signing key.
async fn stored_keys(url: &str) -> Vec<(Vec<u8>, i64)> {
    let pool = sqlx::SqlitePool::connect(url).await.expect("db");
    let rows = sqlx::query_as::<_, (Vec<u8>, i64)>(
        "SELECT private_key, encrypted FROM signing_keys ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .expect("reading signing_keys");
    pool.close().await;
    rows
}

fn is_pkcs8_ed25519(bytes: &[u8]) -> bool {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).is_ok()
}

/// One row of `keys list`.
#[derive(Debug)]
struct KeyRow {
    kid: String,
    alg: String,
    at_rest: String,
    state: String,
}

fn key_rows(stdout: &str) -> Vec<KeyRow> {
    let mut lines = stdout.lines();
    let head = lines.next().expect("a header line");
    assert!(head.starts_with("KID"), "{stdout}");
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert!(words.len() >= 5, "{l:?}");
            KeyRow {
                kid: words[0].to_owned(),
                alg: words[1].to_owned(),
                at_rest: words[3].to_owned(),
                state: words[4..].join(" "),
            }
        })
        .collect()
}

/// The kid that `keys rotate` announced.
fn rotated_kid(out: &Finished) -> String {
    let kid = out
        .stdout
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(looks_like_thumbprint(&kid), "{out:?}");
    kid
}

// ---------------------------------------------------------------------------
// keys list / keys rotate
// ---------------------------------------------------------------------------

#[test]
fn keys_list_creates_the_first_key_and_rotate_supersedes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(dir.path());
    new_database(&dir.path().join("keys.db"));

    let out = run_ok(on_db(dir.path(), &url).args(["keys", "list"]));
    let rows = key_rows(&out.stdout);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let first = &rows[0];
    assert!(looks_like_thumbprint(&first.kid), "{first:?}");
    assert_eq!(first.alg, "EdDSA", "{first:?}");
    assert_eq!(first.state, "signing", "{first:?}");
    assert_eq!(first.at_rest, "plain", "{first:?}");
    assert!(dir.path().join("keys.db").is_file());

    // Listing again neither adds nor changes a key.
    let again = key_rows(&run_ok(on_db(dir.path(), &url).args(["keys", "list"])).stdout);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].kid, first.kid);

    let before = OffsetDateTime::now_utc();
    let rotated = run_ok(on_db(dir.path(), &url).args(["keys", "rotate"]));
    let new_kid = rotated_kid(&rotated);
    assert_ne!(new_kid, first.kid);

    let out = run_ok(on_db(dir.path(), &url).args(["keys", "list"]));
    let rows = key_rows(&out.stdout);
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    let new = rows.iter().find(|r| r.kid == new_kid).expect("the new key");
    assert_eq!(new.state, "signing", "{}", out.stdout);
    assert_eq!(new.alg, "EdDSA");
    let old = rows
        .iter()
        .find(|r| r.kid == first.kid)
        .expect("the old key");
    let until = old
        .state
        .strip_prefix("published until ")
        .unwrap_or_else(|| panic!("old key state: {:?}", old.state));
    let until = OffsetDateTime::parse(until, &Rfc3339).expect("RFC 3339 time");
    // Published for a token lifetime plus leeway (5m + 30s by default).
    assert!(until > before, "{until} is not in the future");
    assert!(
        until <= before + Duration::from_secs(3600),
        "{until}: published far longer than any token lives"
    );
}

#[tokio::test]
async fn rotation_reaches_a_running_server_and_old_tokens_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(dir.path());
    let server = Server::start(&mut serve_cmd(dir.path(), &url));
    let base = server.url("");
    let email = "rotation@example.com";
    register(&base, email).await;

    let t1 = password_grant(&base, email, PASSWORD).await;
    let k1 = kid_of(&t1);
    assert_eq!(kids(&jwks(&base).await), vec![k1.clone()]);

    let k2 = rotated_kid(&run_ok(on_db(dir.path(), &url).args(["keys", "rotate"])));
    assert_ne!(k1, k2);

    // The server notices the rotation on its own, within the bound.
    let deadline = Instant::now() + ROTATION_REACHES_SERVER;
    loop {
        if kids(&jwks(&base).await).contains(&k2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not publish {k2} within {ROTATION_REACHES_SERVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t2 = password_grant(&base, email, PASSWORD).await;
    assert_eq!(kid_of(&t2), k2, "new tokens are signed by the new key");
    let mut published = kids(&jwks(&base).await);
    published.sort();
    let mut expected = vec![k1.clone(), k2.clone()];
    expected.sort();
    assert_eq!(published, expected, "both keys are published");
    assert_eq!(me_status(&base, &t1).await, StatusCode::OK, "old-key token");
    assert_eq!(me_status(&base, &t2).await, StatusCode::OK, "new-key token");

    // Once the old key's publication ends, it leaves the JWKS and its
    // tokens stop verifying (staged in the database: no waiting 5m30s).
    let pool = sqlx::SqlitePool::connect(&url).await.expect("db");
    let past = (OffsetDateTime::now_utc().unix_timestamp() - 1) * 1000;
    sqlx::query("UPDATE signing_keys SET retire_at = ? WHERE kid = ?")
        .bind(past)
        .bind(&k1)
        .execute(&pool)
        .await
        .expect("retiring the old key");
    pool.close().await;
    let deadline = Instant::now() + ROTATION_REACHES_SERVER;
    loop {
        if !kids(&jwks(&base).await).contains(&k1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still publishes retired {k1}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        me_status(&base, &t1).await,
        StatusCode::UNAUTHORIZED,
        "token of a retired key"
    );
    assert_eq!(me_status(&base, &t2).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// token decode
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_decode_prints_header_claims_and_a_valid_signature() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let token = grant_for(&app, &user).await;
    let url = format!("sqlite://{}", app.db_path.display());
    let dir = tempfile::tempdir().expect("tempdir");

    let out = run_ok(
        on_db(dir.path(), &url)
            .args(["token", "decode"])
            .arg(&token),
    );
    let c = claims(&token);
    let kid = kid_of(&token);
    assert!(
        out.stdout.contains(&format!("\"kid\": \"{kid}\"")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"alg\": \"EdDSA\""), "{}", out.stdout);
    let sid = c["sid"].as_str().expect("sid");
    assert!(
        out.stdout.contains(&format!("\"sid\": \"{sid}\"")),
        "{}",
        out.stdout
    );
    let exp = OffsetDateTime::from_unix_timestamp(c["exp"].as_i64().expect("exp"))
        .expect("exp")
        .format(&Rfc3339)
        .expect("format");
    let exp_line = out
        .stdout
        .lines()
        .find(|l| l.contains("exp (UTC)"))
        .unwrap_or_else(|| panic!("no exp (UTC) line: {}", out.stdout));
    assert!(exp_line.contains(&exp), "{exp_line:?} vs {exp}");
    let verdict = out
        .stdout
        .lines()
        .find(|l| l.to_lowercase().contains("signature"))
        .unwrap_or_else(|| panic!("no verdict: {}", out.stdout));
    assert!(
        verdict.contains("valid") && !verdict.to_lowercase().contains("invalid"),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn token_decode_says_invalid_for_a_tampered_or_foreign_token() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let token = grant_for(&app, &user).await;
    let url = format!("sqlite://{}", app.db_path.display());
    let dir = tempfile::tempdir().expect("tempdir");

    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).expect("signature");
    sig[0] ^= 1;
    parts[2] = b64(&sig);
    let flipped = parts.join(".");
    let mut c = claims(&token);
    c["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let resubbed = format!("{}.{}.{}", parts[0], b64(c.to_string()), parts[2]);
    let other = TestApp::spawn().await;
    let stranger = other.create_user().await;
    let foreign = grant_for(&other, &stranger).await;
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"at+jwt"}"#), parts[1]);

    for (what, t) in [
        ("signature bit flipped", &flipped),
        ("sub changed", &resubbed),
        ("another deployment's token", &foreign),
        ("alg none", &none),
    ] {
        let out = run(on_db(dir.path(), &url).args(["token", "decode"]).arg(t));
        assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
        assert!(out.stdout.contains("header:"), "{what}: {}", out.stdout);
        assert!(out.stdout.contains("claims:"), "{what}: {}", out.stdout);
        let verdict = out
            .stdout
            .lines()
            .find(|l| l.to_lowercase().contains("signature"))
            .unwrap_or_else(|| panic!("{what}: no verdict: {}", out.stdout));
        assert!(verdict.contains("INVALID"), "{what}: {verdict:?}");
    }
}

#[test]
fn token_decode_of_a_malformed_token_exits_1_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(dir.path());
    let h = b64(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#);
    let p = b64(r#"{"sub":"x"}"#);
    let cases = [
        ("one part", "abc".to_owned()),
        ("two parts", "a.b".to_owned()),
        ("four parts", format!("{h}.{p}.c2ln.c2ln")),
        ("not base64", "!!!.@@@.###".to_owned()),
        ("header not base64", format!("*.{p}.c2ln")),
        ("payload not JSON", format!("{h}.{}.c2ln", b64("not json"))),
        ("payload a JSON array", format!("{h}.{}.c2ln", b64("[1]"))),
        ("header not JSON", format!("{}.{p}.c2ln", b64("{"))),
    ];
    for (what, token) in &cases {
        let out = run(on_db(dir.path(), &url).args(["token", "decode"]).arg(token));
        assert_fails_with_one_line(&out);
        assert!(out.stdout.is_empty(), "{what}: {out:?}");
    }
}

// ---------------------------------------------------------------------------
// key_encryption_key
// ---------------------------------------------------------------------------

#[tokio::test]
async fn key_encryption_key_seals_keys_and_only_that_key_opens_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(dir.path());
    new_database(&dir.path().join("keys.db"));
    let kek = STANDARD.encode(random_bytes(32));
    let other_kek = STANDARD.encode(random_bytes(32));

    let out = run_ok(
        on_db(dir.path(), &url)
            .env("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek)
            .args(["keys", "list"]),
    );
    let rows = key_rows(&out.stdout);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0].at_rest, "encrypted", "{}", out.stdout);
    let stored = stored_keys(&url).await;
    assert_eq!(stored.len(), 1);
    let (private_key, encrypted) = &stored[0];
    assert_eq!(*encrypted, 1);
    assert!(
        !is_pkcs8_ed25519(private_key),
        "the stored private key is a usable PKCS#8 key"
    );
    // AES-256-GCM: 12-byte nonce and 16-byte tag around a 48-byte PKCS#8.
    assert!(private_key.len() >= 48 + 12 + 16, "{}", private_key.len());

    // With the right key the server starts and signs with the sealed key.
    {
        let server =
            Server::start(serve_cmd(dir.path(), &url).env("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek));
        let base = server.url("");
        register(&base, "sealed@example.com").await;
        let token = password_grant(&base, "sealed@example.com", PASSWORD).await;
        assert_eq!(kid_of(&token), rows[0].kid);
        assert_eq!(me_status(&base, &token).await, StatusCode::OK);
    }

    // Another key, or none: start-up fails, naming the setting.
    for (what, kek) in [("another key", Some(&other_kek)), ("no key", None)] {
        let mut cmd = serve_cmd(dir.path(), &url);
        if let Some(k) = kek {
            cmd.env("GATEHOUSE_KEY_ENCRYPTION_KEY", k);
        }
        let out = run(&mut cmd);
        let line = assert_fails_with_one_line(&out);
        assert!(line.contains("key_encryption_key"), "{what}: {line:?}");
        assert!(
            !out.stdout.contains("listening"),
            "{what}: never announced a listener: {out:?}"
        );
        let mut cmd = on_db(dir.path(), &url);
        if let Some(k) = kek {
            cmd.env("GATEHOUSE_KEY_ENCRYPTION_KEY", k);
        }
        let out = run(cmd.args(["keys", "rotate"]));
        let line = assert_fails_with_one_line(&out);
        assert!(line.contains("key_encryption_key"), "{what}: {line:?}");
    }
    // Nothing was changed by the refusals.
    let after = stored_keys(&url).await;
    assert_eq!(after, stored);
}

#[tokio::test]
async fn plaintext_keys_are_sealed_when_a_key_encryption_key_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let url = format!("sqlite://{}", db.display());
    let issuer = "http://gatehouse.test".to_owned();

    let plain = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Sqlite(url.clone());
        c.issuer = Some(issuer.clone());
    })
    .await;
    let user = plain.create_user().await;
    let before = grant_for(&plain, &user).await;
    assert_eq!(claims(&before)["iss"], issuer.as_str());
    let stored = stored_keys(&url).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, 0, "no key_encryption_key: stored plain");
    assert!(is_pkcs8_ed25519(&stored[0].0), "plain PKCS#8");
    drop(plain);

    let kek = SecretBytes::new(random_bytes(32));
    let sealed = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Sqlite(url.clone());
        c.issuer = Some(issuer.clone());
        c.key_encryption_key = Some(kek);
    })
    .await;
    let stored = stored_keys(&url).await;
    assert_eq!(stored.len(), 1, "sealing keeps the key");
    assert_eq!(stored[0].1, 1, "sealed at start-up");
    assert!(!is_pkcs8_ed25519(&stored[0].0), "no longer plain PKCS#8");

    let base = sealed.origin();
    assert_eq!(
        me_status(&base, &before).await,
        StatusCode::OK,
        "a token issued before sealing still verifies"
    );
    let after = grant_for(&sealed, &user).await;
    assert_eq!(kid_of(&after), kid_of(&before), "the same key signs");
    assert_eq!(me_status(&base, &after).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// jwt_alg
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_asymmetric_jwt_alg_issues_tokens_its_jwks_verifies() {
    let cases = [
        (JwtAlg::EdDsa, "EdDSA", "OKP", Algorithm::EdDSA),
        (JwtAlg::Es256, "ES256", "EC", Algorithm::ES256),
        (JwtAlg::Rs256, "RS256", "RSA", Algorithm::RS256),
    ];
    for (alg, name, kty, jwt_alg) in cases {
        let app = TestApp::spawn_with(|c| c.jwt_alg = alg).await;
        let user = app.create_user().await;
        let token = grant_for(&app, &user).await;
        let h = header(&token);
        assert_eq!(h["alg"], name, "{h}");
        assert_eq!(h["typ"], "at+jwt", "{h}");

        let keys = jwks(&app.origin()).await;
        assert_eq!(keys.len(), 1, "{name}: {keys:?}");
        let jwk = &keys[0];
        assert_eq!(jwk["kty"], kty, "{name}: {jwk}");
        assert_eq!(jwk["alg"], name, "{name}: {jwk}");
        assert_eq!(jwk["use"], "sig", "{name}: {jwk}");
        assert_eq!(jwk["kid"], h["kid"], "{name}: {jwk}");
        assert_eq!(
            jwk["kid"].as_str(),
            Some(thumbprint(jwk).as_str()),
            "{name}: kid is the RFC 7638 thumbprint"
        );
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{name}: JWKS leaks {private}");
        }
        let parsed: Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
        let key = DecodingKey::from_jwk(&parsed).expect("decoding key");
        let verified = verify_with(&token, &key, jwt_alg, &app.origin());
        assert_eq!(verified["sub"], claims(&token)["sub"]);
        assert_eq!(
            me_status(&app.origin(), &token).await,
            StatusCode::OK,
            "{name}"
        );
    }
}

#[tokio::test]
async fn hs256_issues_working_tokens_and_publishes_no_keys() {
    let secret = random_bytes(32);
    let app = TestApp::spawn_with(|c| {
        c.jwt_alg = JwtAlg::Hs256;
        c.jwt_hs256_secret = Some(SecretBytes::new(secret.clone()));
    })
    .await;
    let user = app.create_user().await;
    let token = grant_for(&app, &user).await;
    assert_eq!(header(&token)["alg"], "HS256");
    assert_eq!(header(&token)["typ"], "at+jwt");

    // The MAC is HMAC-SHA256 under the configured secret.
    let (input, sig) = token.rsplit_once('.').expect("compact JWS");
    let mac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("signature");
    aws_lc_rs::hmac::verify(&mac, input.as_bytes(), &sig).expect("HMAC under the secret");
    verify_with(
        &token,
        &DecodingKey::from_secret(&secret),
        Algorithm::HS256,
        &app.origin(),
    );

    assert_eq!(me_status(&app.origin(), &token).await, StatusCode::OK);
    assert!(jwks(&app.origin()).await.is_empty(), "no keys published");
    let pool = app.sql().await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM signing_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 0, "no key generated for HS256");

    // The same token under another secret is refused.
    let other = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &random_bytes(32));
    let forged = format!(
        "{input}.{}",
        b64(aws_lc_rs::hmac::sign(&other, input.as_bytes()).as_ref())
    );
    assert_eq!(
        me_status(&app.origin(), &forged).await,
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------
// signing_key_file
// ---------------------------------------------------------------------------

#[tokio::test]
async fn signing_key_file_signs_tokens_and_refuses_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pair, pem_text) = new_ed25519();
    let key_file: PathBuf = dir.path().join("signing.pem");
    std::fs::write(&key_file, pem_text).expect("writing the key file");
    let app = TestApp::spawn_with(|c| c.signing_key_file = Some(key_file.clone())).await;
    let user = app.create_user().await;
    let token = grant_for(&app, &user).await;

    // Verified by the file's own public key, not by what the server says.
    let x = pair.public_key().as_ref().to_vec();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&x);
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    let key = DecodingKey::from_ed_pem(public_pem.as_bytes()).expect("public key");
    verify_with(&token, &key, Algorithm::EdDSA, &app.origin());
    let kid = thumbprint(&json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&x) }));
    assert_eq!(kid_of(&token), kid);
    let keys = jwks(&app.origin()).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["x"], b64(&x));
    assert_eq!(keys[0]["kid"], kid.as_str());

    let url = format!("sqlite://{}", app.db_path.display());
    let work = tempfile::tempdir().expect("tempdir");
    let file = key_file.display().to_string();
    let out = run(on_db(work.path(), &url)
        .env("GATEHOUSE_SIGNING_KEY_FILE", &file)
        .args(["keys", "rotate"]));
    let line = assert_fails_with_one_line(&out);
    assert!(line.contains("signing_key_file"), "{line:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    let out = run_ok(
        on_db(work.path(), &url)
            .env("GATEHOUSE_SIGNING_KEY_FILE", &file)
            .args(["keys", "list"]),
    );
    let rows = key_rows(&out.stdout);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0].kid, kid);
    assert_eq!(rows[0].state, "signing");

    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM signing_keys")
        .fetch_one(&app.sql().await)
        .await
        .expect("count");
    assert_eq!(n, 0, "a file-keyed deployment generates no database keys");
    let later = grant_for(&app, &user).await;
    assert_eq!(kid_of(&later), kid, "still the file's key");
    assert_eq!(me_status(&app.origin(), &later).await, StatusCode::OK);
}
