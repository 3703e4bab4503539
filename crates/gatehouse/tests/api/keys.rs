//! Signing keys (API.md "Tokens", `jwt_alg`, `jwt_hs256_secret`,
//! `signing_key_file`, `key_encryption_key`, the ID-token keys of
//! docs/tokens.md) and the key and token commands (API.md "Command line"):
//! the real binary as a child process with an empty environment, and the
//! in-process app for the algorithm variants.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
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

/// Every published key is public (no private member), `use: sig`, names
/// what it signs (`gatehouse_purpose`), of an algorithm gatehouse signs with
/// and its key type, with its RFC 7638 thumbprint as a `kid` of its own.
fn assert_published_keys_are_public_and_thumbprinted(keys: &[Value]) {
    for jwk in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            assert!(jwk.get(private).is_none(), "JWKS leaks {private}: {jwk}");
        }
        assert_eq!(jwk["use"], "sig", "{jwk}");
        let purpose = jwk["gatehouse_purpose"].as_str();
        assert!(
            matches!(purpose, Some("access" | "id_token")),
            "each key names what it signs: {jwk}"
        );
        let (kty, crv) = match jwk["alg"].as_str().expect("alg") {
            "EdDSA" => ("OKP", Some("Ed25519")),
            "ES256" => ("EC", Some("P-256")),
            "RS256" => ("RSA", None),
            other => panic!("published alg {other}: {jwk}"),
        };
        assert_eq!(jwk["kty"], kty, "{jwk}");
        assert_eq!(jwk["crv"].as_str(), crv, "{jwk}");
        assert_eq!(jwk["kid"].as_str(), Some(thumbprint(jwk).as_str()), "{jwk}");
    }
    let distinct: BTreeSet<String> = kids(keys).into_iter().collect();
    assert_eq!(distinct.len(), keys.len(), "kids are distinct: {keys:?}");
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

/// A stored signing key's row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRow {
    private_key: Vec<u8>,
    encrypted: i64,
    purpose: String,
    alg: String,
}

/// Every stored signing key, oldest first.
async fn stored_keys(url: &str) -> Vec<StoredRow> {
    let pool = sqlx::SqlitePool::connect(url).await.expect("db");
    let rows = sqlx::query_as::<_, (Vec<u8>, i64, String, String)>(
        "SELECT private_key, encrypted, purpose, alg FROM signing_keys ORDER BY created_at, kid",
    )
    .fetch_all(&pool)
    .await
    .expect("reading signing_keys");
    pool.close().await;
    rows.into_iter()
        .map(|(private_key, encrypted, purpose, alg)| StoredRow {
            private_key,
            encrypted,
            purpose,
            alg,
        })
        .collect()
}

/// The stored keys of `purpose`.
fn of_purpose<'a>(rows: &'a [StoredRow], purpose: &str) -> Vec<&'a StoredRow> {
    rows.iter().filter(|r| r.purpose == purpose).collect()
}

fn is_pkcs8_ed25519(bytes: &[u8]) -> bool {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes).is_ok()
}

/// Whether `bytes` is a usable PKCS#8 private key of any algorithm gatehouse
/// generates (Ed25519, P-256, RSA).
fn is_pkcs8(bytes: &[u8]) -> bool {
    is_pkcs8_ed25519(bytes)
        || EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes).is_ok()
        || RsaKeyPair::from_pkcs8(bytes).is_ok()
}

/// The JOSE algorithms of the ID-token keys, one key of each current, in
/// the order `sort` puts them (byte order).
const ID_TOKEN_ALGS: [&str; 3] = ["ES256", "EdDSA", "RS256"];

/// One row of `keys list`.
#[derive(Debug)]
struct KeyRow {
    kid: String,
    purpose: String,
    alg: String,
    at_rest: String,
    state: String,
}

fn key_rows(stdout: &str) -> Vec<KeyRow> {
    let mut lines = stdout.lines();
    let head = lines.next().expect("a header line");
    assert!(head.starts_with("KID"), "{stdout}");
    assert_eq!(
        head.split_whitespace().nth(1),
        Some("PURPOSE"),
        "the second column is the purpose: {stdout}"
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert!(words.len() >= 6, "{l:?}");
            KeyRow {
                kid: words[0].to_owned(),
                purpose: words[1].to_owned(),
                alg: words[2].to_owned(),
                at_rest: words[4].to_owned(),
                state: words[5..].join(" "),
            }
        })
        .collect()
}

/// The rows of `purpose` (`access` or `id_token`).
fn rows_of<'a>(rows: &'a [KeyRow], purpose: &str) -> Vec<&'a KeyRow> {
    rows.iter().filter(|r| r.purpose == purpose).collect()
}

/// The kids of the `keys list` rows of `purpose`, sorted.
fn kids_of(rows: &[KeyRow], purpose: &str) -> Vec<String> {
    let mut kids: Vec<String> = rows_of(rows, purpose)
        .into_iter()
        .map(|r| r.kid.clone())
        .collect();
    kids.sort();
    kids
}

/// Asserts that `rows` hold exactly one current ID-token key of each
/// algorithm, and returns their kids by algorithm.
fn current_id_token_keys(rows: &[KeyRow]) -> Vec<(String, String)> {
    let mut current: Vec<(String, String)> = rows_of(rows, "id_token")
        .into_iter()
        .filter(|r| r.state == "signing")
        .map(|r| (r.alg.clone(), r.kid.clone()))
        .collect();
    current.sort();
    let algs: Vec<&str> = current.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        algs, ID_TOKEN_ALGS,
        "one current ID-token key each: {rows:?}"
    );
    current
}

/// The kids that `keys rotate --id-tokens` announced, by algorithm.
fn rotated_id_token_kids(out: &Finished) -> Vec<(String, String)> {
    let mut rotated: Vec<(String, String)> = out
        .stdout
        .lines()
        .map(|l| {
            let rest = l
                .strip_prefix("new ID-token signing key ")
                .unwrap_or_else(|| panic!("{out:?}"));
            let (alg, kid) = rest.split_once(' ').unwrap_or_else(|| panic!("{out:?}"));
            assert!(looks_like_thumbprint(kid), "{out:?}");
            (alg.to_owned(), kid.to_owned())
        })
        .collect();
    rotated.sort();
    let algs: Vec<&str> = rotated.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(algs, ID_TOKEN_ALGS, "{out:?}");
    rotated
}

/// Polls `base`'s JWKS until it holds every kid of `wanted`.
async fn wait_until_published(base: &str, wanted: &[String]) {
    let deadline = Instant::now() + ROTATION_REACHES_SERVER;
    loop {
        let published = kids(&jwks(base).await);
        if wanted.iter().all(|k| published.contains(k)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not publish {wanted:?} within {ROTATION_REACHES_SERVER:?}: {published:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
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
    // The access-token key and an ID-token key of each algorithm.
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    let access = rows_of(&rows, "access");
    assert_eq!(access.len(), 1, "{}", out.stdout);
    let first = access[0];
    assert!(looks_like_thumbprint(&first.kid), "{first:?}");
    assert_eq!(first.alg, "EdDSA", "{first:?}");
    assert_eq!(first.state, "signing", "{first:?}");
    assert_eq!(first.at_rest, "plain", "{first:?}");
    let id_tokens = current_id_token_keys(&rows);
    for r in &rows {
        assert!(looks_like_thumbprint(&r.kid), "{r:?}");
        assert_eq!(r.at_rest, "plain", "{r:?}");
    }
    assert_eq!(
        rows.iter().map(|r| &r.kid).collect::<BTreeSet<_>>().len(),
        4,
        "distinct kids: {}",
        out.stdout
    );
    assert!(dir.path().join("keys.db").is_file());

    // Listing again neither adds nor changes a key.
    let again = key_rows(&run_ok(on_db(dir.path(), &url).args(["keys", "list"])).stdout);
    assert_eq!(again.len(), 4);
    assert_eq!(kids_of(&again, "access"), std::slice::from_ref(&first.kid));
    assert_eq!(current_id_token_keys(&again), id_tokens);

    let before = OffsetDateTime::now_utc();
    let rotated = run_ok(on_db(dir.path(), &url).args(["keys", "rotate"]));
    let new_kid = rotated_kid(&rotated);
    assert_ne!(new_kid, first.kid);

    let out = run_ok(on_db(dir.path(), &url).args(["keys", "list"]));
    let rows = key_rows(&out.stdout);
    assert_eq!(rows.len(), 5, "{}", out.stdout);
    // Rotating the access-token key leaves the ID-token keys signing.
    assert_eq!(current_id_token_keys(&rows), id_tokens);
    assert_eq!(rows_of(&rows, "id_token").len(), 3, "{}", out.stdout);
    let new = rows.iter().find(|r| r.kid == new_kid).expect("the new key");
    assert_eq!(new.state, "signing", "{}", out.stdout);
    assert_eq!(new.purpose, "access");
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
    let listed = key_rows(&run_ok(on_db(dir.path(), &url).args(["keys", "list"])).stdout);
    assert_eq!(kids_of(&listed, "access"), std::slice::from_ref(&k1));
    let id_tokens = kids_of(&listed, "id_token");
    assert_eq!(id_tokens.len(), 3, "{listed:?}");
    let mut expected = id_tokens.clone();
    expected.push(k1.clone());
    assert_eq!(sorted(kids(&jwks(&base).await)), sorted(expected));

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
    let mut expected = id_tokens.clone();
    expected.extend([k1.clone(), k2.clone()]);
    assert_eq!(
        sorted(kids(&jwks(&base).await)),
        sorted(expected),
        "both access-token keys are published, beside the ID-token keys"
    );
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
    let mut expected = id_tokens;
    expected.push(k2);
    assert_eq!(sorted(kids(&jwks(&base).await)), sorted(expected));
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
    let verdict = verdict_of(&out.stdout);
    assert!(
        verdict.contains("valid") && !verdict.to_lowercase().contains("invalid"),
        "{verdict:?}"
    );
    assert!(
        verdict.contains(&format!(
            "an access token, signed by this server's EdDSA access-token key {kid}"
        )),
        "{verdict:?}"
    );
}

/// The line of `token decode`'s output that judges the signature.
fn verdict_of(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.to_lowercase().contains("signature"))
        .unwrap_or_else(|| panic!("no verdict: {stdout}"))
}

#[tokio::test]
async fn token_decode_names_an_id_token_and_the_id_token_key_that_signed_it() {
    let app = TestApp::spawn().await;
    let url = format!("sqlite://{}", app.db_path.display());
    let dir = tempfile::tempdir().expect("tempdir");
    for alg in ID_TOKEN_ALGS {
        let (id_token, _) = crate::oidc::id_token_of(&app, alg).await;

        let out = run_ok(
            on_db(dir.path(), &url)
                .args(["token", "decode"])
                .arg(&id_token),
        );

        assert!(out.stdout.contains("\"typ\": \"JWT\""), "{}", out.stdout);
        let verdict = verdict_of(&out.stdout);
        let kid = kid_of(&id_token);
        assert_eq!(
            verdict,
            format!(
                "signature: valid (an ID token, signed by this server's {alg} ID-token key {kid})"
            ),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn token_decode_refuses_an_id_token_under_another_algorithm_none_or_an_unknown_kid() {
    let app = TestApp::spawn().await;
    let url = format!("sqlite://{}", app.db_path.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let (id_token, _) = crate::oidc::id_token_of(&app, "RS256").await;
    let kid = kid_of(&id_token);
    let parts: Vec<&str> = id_token.split('.').collect();
    let with_header = |h: Value| format!("{}.{}.{}", b64(h.to_string()), parts[1], parts[2]);
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    sig[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string()),
        parts[1]
    );
    // An ID token typed as an access token, truly signed by the ID-token key:
    // nothing gatehouse ever issues.
    let ring = app.auth.keys.ring();
    let signer = ring
        .id_token_signer(gatehouse::model::oidc::IdTokenAlg::Rs256)
        .expect("the RS256 ID-token key");
    let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(signer.kid.clone());
    let typed_access = jsonwebtoken::encode(&h, &claims(&id_token), &signer.key).expect("sign");
    let cases = [
        (
            "signature bit flipped",
            flipped,
            format!("ID-token key {kid}: the signature does not verify"),
        ),
        ("alg none", none, "alg none".to_owned()),
        (
            "ES256 under the RS256 key",
            with_header(json!({"alg": "ES256", "typ": "JWT", "kid": kid})),
            "the token's algorithm is not the key's (RS256)".to_owned(),
        ),
        (
            "HS256 under the RS256 key",
            with_header(json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
            "the token's algorithm is not the key's (RS256)".to_owned(),
        ),
        (
            "a key from the header",
            with_header(
                json!({"alg": "RS256", "typ": "JWT", "kid": kid, "jku": "https://evil.example/jwks"}),
            ),
            "forbidden parameter".to_owned(),
        ),
        (
            "an unknown kid",
            with_header(json!({"alg": "RS256", "typ": "JWT", "kid": "not-one-of-ours"})),
            "the kid not-one-of-ours is none of this server's keys".to_owned(),
        ),
        (
            "no kid",
            with_header(json!({"alg": "RS256", "typ": "JWT"})),
            "no kid".to_owned(),
        ),
        (
            "typed at+jwt",
            typed_access,
            "typed as an access token".to_owned(),
        ),
    ];

    for (what, token, reason) in &cases {
        let out = run(on_db(dir.path(), &url).args(["token", "decode"]).arg(token));

        assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
        let verdict = verdict_of(&out.stdout);
        assert!(
            verdict.starts_with("signature: INVALID ("),
            "{what}: {verdict:?}"
        );
        assert!(verdict.contains(reason.as_str()), "{what}: {verdict:?}");
    }
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
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    for r in &rows {
        assert_eq!(r.at_rest, "encrypted", "{}", out.stdout);
    }
    let access = rows_of(&rows, "access");
    assert_eq!(access.len(), 1, "{}", out.stdout);
    let stored = stored_keys(&url).await;
    assert_eq!(stored.len(), 4);
    for row in &stored {
        assert_eq!(row.encrypted, 1, "{row:?}");
        assert!(
            !is_pkcs8(&row.private_key),
            "the stored private key is a usable PKCS#8 key: {row:?}"
        );
        // AES-256-GCM: 12-byte nonce and 16-byte tag around a PKCS#8 of at
        // least 48 bytes (Ed25519's).
        assert!(row.private_key.len() >= 48 + 12 + 16, "{row:?}");
    }

    // With the right key the server starts and signs with the sealed key.
    {
        let server =
            Server::start(serve_cmd(dir.path(), &url).env("GATEHOUSE_KEY_ENCRYPTION_KEY", &kek));
        let base = server.url("");
        register(&base, "sealed@example.com").await;
        let token = password_grant(&base, "sealed@example.com", PASSWORD).await;
        assert_eq!(kid_of(&token), access[0].kid);
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
    assert_eq!(
        stored.len(),
        4,
        "the access-token key and three ID-token keys"
    );
    let access = of_purpose(&stored, "access");
    assert_eq!(access.len(), 1, "{stored:?}");
    assert!(is_pkcs8_ed25519(&access[0].private_key), "plain PKCS#8");
    for row in &stored {
        assert_eq!(row.encrypted, 0, "no key_encryption_key: stored plain");
        assert!(is_pkcs8(&row.private_key), "plain PKCS#8: {row:?}");
    }
    drop(plain);

    let kek = SecretBytes::new(random_bytes(32));
    let sealed = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Sqlite(url.clone());
        c.issuer = Some(issuer.clone());
        c.key_encryption_key = Some(kek);
    })
    .await;
    let resealed = stored_keys(&url).await;
    assert_eq!(resealed.len(), 4, "sealing keeps the keys");
    for (row, before) in resealed.iter().zip(&stored) {
        assert_eq!((&row.purpose, &row.alg), (&before.purpose, &before.alg));
        assert_eq!(row.encrypted, 1, "sealed at start-up: {row:?}");
        assert!(
            !is_pkcs8(&row.private_key),
            "no longer plain PKCS#8: {row:?}"
        );
    }

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
        // The access-token key, and an ID-token key of each algorithm.
        assert_eq!(keys.len(), 4, "{name}: {keys:?}");
        assert_published_keys_are_public_and_thumbprinted(&keys);
        let access: Vec<&Value> = keys.iter().filter(|k| k["kid"] == h["kid"]).collect();
        assert_eq!(access.len(), 1, "{name}: {keys:?}");
        let jwk = access[0];
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
async fn hs256_issues_working_tokens_and_publishes_only_the_id_token_keys() {
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
    // Nothing of the secret: exactly the three ID-token keys.
    let keys = jwks(&app.origin()).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_published_keys_are_public_and_thumbprinted(&keys);
    let algs: BTreeSet<&str> = keys.iter().filter_map(|k| k["alg"].as_str()).collect();
    assert_eq!(algs, BTreeSet::from(ID_TOKEN_ALGS), "{keys:?}");
    assert!(
        !kids(&keys).contains(&kid_of(&token)),
        "the secret's kid is published"
    );
    let url = format!("sqlite://{}", app.db_path.display());
    let stored = stored_keys(&url).await;
    assert!(
        of_purpose(&stored, "access").is_empty(),
        "no access-token key generated for HS256: {stored:?}"
    );
    let id_algs: BTreeSet<&str> = of_purpose(&stored, "id_token")
        .iter()
        .map(|r| r.alg.as_str())
        .collect();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(id_algs, BTreeSet::from(ID_TOKEN_ALGS));

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
    // The file's key and an ID-token key of each algorithm.
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_published_keys_are_public_and_thumbprinted(&keys);
    let file_key: Vec<&Value> = keys.iter().filter(|k| k["kid"] == kid.as_str()).collect();
    assert_eq!(file_key.len(), 1, "{keys:?}");
    assert_eq!(file_key[0]["x"], b64(&x));

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
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    let access = rows_of(&rows, "access");
    assert_eq!(access.len(), 1, "{}", out.stdout);
    assert_eq!(access[0].kid, kid);
    assert_eq!(access[0].state, "signing");
    current_id_token_keys(&rows);

    let stored = stored_keys(&url).await;
    assert!(
        of_purpose(&stored, "access").is_empty(),
        "a file-keyed deployment generates no database access-token keys: {stored:?}"
    );
    assert_eq!(of_purpose(&stored, "id_token").len(), 3, "{stored:?}");
    let later = grant_for(&app, &user).await;
    assert_eq!(kid_of(&later), kid, "still the file's key");
    assert_eq!(me_status(&app.origin(), &later).await, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// ID-token keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_fresh_server_publishes_the_access_key_and_an_id_token_key_of_each_algorithm() {
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let token = grant_for(&app, &user).await;

    let keys = jwks(&app.origin()).await;

    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_published_keys_are_public_and_thumbprinted(&keys);
    let access = kid_of(&token);
    let (signs_access, id_tokens): (Vec<&Value>, Vec<&Value>) =
        keys.iter().partition(|k| k["kid"] == access.as_str());
    assert_eq!(signs_access.len(), 1, "the access-token key: {keys:?}");
    assert_eq!(signs_access[0]["alg"], "EdDSA");
    assert_eq!(signs_access[0]["gatehouse_purpose"], "access");
    for jwk in &id_tokens {
        assert_eq!(jwk["gatehouse_purpose"], "id_token", "{jwk}");
    }
    let mut algs: Vec<&str> = id_tokens.iter().filter_map(|k| k["alg"].as_str()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ID_TOKEN_ALGS, "{keys:?}");
    // RSA keys of 2048 bits (RFC 7518 §3.3: at least 2048) and exponent 65537.
    let rsa = id_tokens
        .iter()
        .find(|k| k["alg"] == "RS256")
        .expect("RS256");
    let n = URL_SAFE_NO_PAD
        .decode(rsa["n"].as_str().expect("n"))
        .expect("base64url");
    assert_eq!(n.len(), 256, "{rsa}");
    assert_eq!(rsa["e"], "AQAB", "{rsa}");
}

#[tokio::test]
async fn gatehouse_verify_never_takes_an_id_token_key_of_jwt_alg_for_an_access_token_key() {
    use gatehouse::model::oidc::IdTokenAlg;
    use gatehouse_verify::{Algorithm as VerifyAlg, Verifier, VerifyError};
    let cases = [
        (JwtAlg::EdDsa, VerifyAlg::EdDSA, IdTokenAlg::EdDsa),
        (JwtAlg::Es256, VerifyAlg::ES256, IdTokenAlg::Es256),
        (JwtAlg::Rs256, VerifyAlg::RS256, IdTokenAlg::Rs256),
    ];
    for (alg, verify_alg, id_alg) in cases {
        let app = TestApp::spawn_with(|c| c.jwt_alg = alg).await;
        let user = app.create_user().await;
        let token = grant_for(&app, &user).await;
        let verifier = Verifier::builder(app.origin())
            .algorithms(&[verify_alg])
            .build()
            .expect("verifier");
        // The access token's own claims, typed at+jwt, signed by the
        // ID-token key of jwt_alg: only the key is wrong.
        let ring = app.auth.keys.ring();
        let signer = ring.id_token_signer(id_alg).expect("an ID-token key");
        let mut h = jsonwebtoken::Header::new(gatehouse::auth::keys::algorithm(alg));
        h.typ = Some("at+jwt".into());
        h.kid = Some(signer.kid.clone());
        let forged = jsonwebtoken::encode(&h, &claims(&token), &signer.key).expect("sign");

        let refused = verifier.verify(&forged).await;

        assert_eq!(refused, Err(VerifyError::UnknownKey), "{alg:?}");
        verifier
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: the access token: {e}"));
        assert_eq!(
            me_status(&app.origin(), &forged).await,
            StatusCode::UNAUTHORIZED,
            "{alg:?}: the server refuses it too"
        );
    }
}

#[tokio::test]
async fn keys_rotate_id_tokens_adds_id_token_keys_and_the_old_ones_stay_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = database_url(dir.path());
    let server = Server::start(&mut serve_cmd(dir.path(), &url));
    let base = server.url("");
    let email = "id-rotation@example.com";
    register(&base, email).await;
    let before = key_rows(&run_ok(on_db(dir.path(), &url).args(["keys", "list"])).stdout);
    let old_ids = current_id_token_keys(&before);
    let access = kids_of(&before, "access");
    let published_before = sorted(kids(&jwks(&base).await));

    let out = run_ok(on_db(dir.path(), &url).args(["keys", "rotate", "--id-tokens"]));

    let new_ids = rotated_id_token_kids(&out);
    for ((alg, old), (_, new)) in old_ids.iter().zip(&new_ids) {
        assert_ne!(old, new, "{alg}");
    }
    let new_kids: Vec<String> = new_ids.iter().map(|(_, k)| k.clone()).collect();
    wait_until_published(&base, &new_kids).await;
    let mut expected = published_before.clone();
    expected.extend(new_kids);
    assert_eq!(
        sorted(kids(&jwks(&base).await)),
        sorted(expected),
        "the old keys stay published beside the new ones"
    );
    let after = key_rows(&run_ok(on_db(dir.path(), &url).args(["keys", "list"])).stdout);
    assert_eq!(current_id_token_keys(&after), new_ids);
    for (alg, old) in &old_ids {
        let row = after.iter().find(|r| &r.kid == old).expect("the old key");
        assert!(row.state.starts_with("published until "), "{alg}: {row:?}");
    }
    // The access-token key is untouched, and still signs.
    assert_eq!(kids_of(&after, "access"), access);
    let access_rows = rows_of(&after, "access");
    assert_eq!(access_rows[0].state, "signing");
    let token = password_grant(&base, email, PASSWORD).await;
    assert_eq!([kid_of(&token)], access.as_slice());
}

#[tokio::test]
async fn keys_rotate_id_tokens_works_with_a_key_file_and_with_a_shared_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, pem_text) = new_ed25519();
    let key_file = dir.path().join("signing.pem");
    std::fs::write(&key_file, pem_text).expect("writing the key file");
    let secret = STANDARD.encode(random_bytes(32));
    let file = key_file.display().to_string();
    let sources: [(&str, Vec<(&str, &str)>); 2] = [
        (
            "signing_key_file",
            vec![("GATEHOUSE_SIGNING_KEY_FILE", &file)],
        ),
        (
            "jwt_hs256_secret",
            vec![
                ("GATEHOUSE_JWT_ALG", "HS256"),
                ("GATEHOUSE_JWT_HS256_SECRET", &secret),
            ],
        ),
    ];
    for (what, env) in sources {
        let db = dir.path().join(format!("{what}.db"));
        new_database(&db);
        let url = format!("sqlite://{}", db.display());
        let cmd = || {
            let mut cmd = on_db(dir.path(), &url);
            cmd.envs(env.iter().copied());
            cmd
        };
        let before = key_rows(&run_ok(cmd().args(["keys", "list"])).stdout);
        let old_ids = current_id_token_keys(&before);
        let access = kids_of(&before, "access");
        assert_eq!(access.len(), 1, "{what}: {before:?}");

        let out = run_ok(cmd().args(["keys", "rotate", "--id-tokens"]));

        let new_ids = rotated_id_token_kids(&out);
        let after = key_rows(&run_ok(cmd().args(["keys", "list"])).stdout);
        assert_eq!(current_id_token_keys(&after), new_ids, "{what}");
        assert_eq!(rows_of(&after, "id_token").len(), 6, "{what}: {after:?}");
        assert!(
            old_ids.iter().all(|old| !new_ids.contains(old)),
            "{what}: {old_ids:?} {new_ids:?}"
        );
        assert_eq!(kids_of(&after, "access"), access, "{what}");
        // The access-token key of a file or a secret is still not rotated.
        let refused = run(cmd().args(["keys", "rotate"]));
        let line = assert_fails_with_one_line(&refused);
        assert!(line.contains(what), "{what}: {line:?}");
        let stored = stored_keys(&url).await;
        assert!(
            of_purpose(&stored, "access").is_empty(),
            "{what}: {stored:?}"
        );
    }
}

#[tokio::test]
async fn id_token_private_keys_are_sealed_with_the_key_encryption_key() {
    let kek = SecretBytes::new(random_bytes(32));
    let app = TestApp::spawn_with(|c| c.key_encryption_key = Some(kek)).await;
    let url = format!("sqlite://{}", app.db_path.display());

    let stored = stored_keys(&url).await;

    let id_tokens = of_purpose(&stored, "id_token");
    assert_eq!(id_tokens.len(), 3, "{stored:?}");
    let algs: BTreeSet<&str> = id_tokens.iter().map(|r| r.alg.as_str()).collect();
    assert_eq!(algs, BTreeSet::from(ID_TOKEN_ALGS));
    for row in id_tokens {
        assert_eq!(row.encrypted, 1, "{row:?}");
        assert!(
            !is_pkcs8(&row.private_key),
            "a usable PKCS#8 key is stored: {row:?}"
        );
        // A 12-byte nonce and a 16-byte tag around the PKCS#8 key.
        assert!(row.private_key.len() >= 48 + 12 + 16, "{row:?}");
    }
}

/// The kid and PKCS#8 PEM of the current EdDSA key of `purpose`.
async fn current_ed25519_key(url: &str, purpose: &str) -> (String, String) {
    let pool = sqlx::SqlitePool::connect(url).await.expect("db");
    let (kid, der): (String, Vec<u8>) = sqlx::query_as(
        "SELECT kid, private_key FROM signing_keys \
         WHERE purpose = ? AND alg = 'EdDSA' AND retire_at IS NULL AND encrypted = 0",
    )
    .bind(purpose)
    .fetch_one(&pool)
    .await
    .expect("the current EdDSA key");
    pool.close().await;
    (kid, pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

#[tokio::test]
async fn an_access_token_signed_with_an_id_token_key_is_refused() {
    // EdDSA access tokens, and an EdDSA ID-token key: same algorithm.
    let app = TestApp::spawn().await;
    let user = app.create_user().await;
    let genuine = grant_for(&app, &user).await;
    let url = format!("sqlite://{}", app.db_path.display());
    let sign = |kid: &str, pem: &str| {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(kid.to_owned());
        let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, &claims(&genuine), &key).expect("sign")
    };

    // The same claims and header under the access-token key pass, so only
    // the key differs.
    let (access_kid, access_pem) = current_ed25519_key(&url, "access").await;
    assert_eq!(access_kid, kid_of(&genuine));
    let control = sign(&access_kid, &access_pem);
    assert_eq!(me_status(&app.origin(), &control).await, StatusCode::OK);
    let (id_kid, id_pem) = current_ed25519_key(&url, "id_token").await;
    let forged = sign(&id_kid, &id_pem);

    assert_eq!(
        me_status(&app.origin(), &forged).await,
        StatusCode::UNAUTHORIZED
    );
    // Nor under the access-token key's kid.
    let relabelled = sign(&access_kid, &id_pem);
    assert_eq!(
        me_status(&app.origin(), &relabelled).await,
        StatusCode::UNAUTHORIZED
    );
}
