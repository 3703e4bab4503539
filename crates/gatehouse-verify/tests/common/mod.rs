//! Helpers shared by the integration tests: signing keys the tests control,
//! token minting, a manual clock, and a mock gatehouse (JWKS and revocation
//! feed) on 127.0.0.1:0 that counts and records what it is asked.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse_verify::{Algorithm, Verifier, VerifierBuilder};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::{Value, json};

/// The subject and session of the default claims.
pub const SUB: &str = "0190f2a4-7c1e-7a3b-9c4d-1e2f3a4b5c6d";
pub const SID: &str = "0190f2a4-7c1e-7a3b-9c4d-aaaaaaaaaaaa";
pub const OTHER_SID: &str = "0190f2a4-7c1e-7a3b-9c4d-bbbbbbbbbbbb";
/// The resource-server key the mock feed accepts.
pub const FEED_KEY: &str = "ghrs_test-key-5b1d0c9e7a";
/// A fixed start for manual clocks (2027-01-15).
pub const T0: u64 = 1_800_000_000;

pub fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
    }
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// A PKCS#8 private key of an asymmetric algorithm, freshly generated.
fn generate_der(alg: Algorithm) -> Vec<u8> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    match alg {
        Algorithm::EdDSA => {
            let k = Ed25519KeyPair::generate().expect("ed25519");
            AsDer::<Pkcs8V1Der<'static>>::as_der(&k)
                .expect("der")
                .as_ref()
                .to_vec()
        }
        Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("p256")
            .to_pkcs8v1()
            .expect("der")
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => {
            let k =
                aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
            AsDer::<Pkcs8V1Der<'static>>::as_der(&k)
                .expect("der")
                .as_ref()
                .to_vec()
        }
        Algorithm::HS256 => unreachable!("HS256 keys are secrets, not generated pairs"),
    }
}

/// RSA key generation is slow in debug builds: a few keys serve every test.
fn cached_rsa_der(slot: usize) -> Vec<u8> {
    static KEYS: OnceLock<Mutex<Vec<Vec<u8>>>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| Mutex::new(Vec::new()));
    let mut keys = keys.lock().expect("lock");
    while keys.len() <= slot {
        keys.push(generate_der(Algorithm::RS256));
    }
    keys[slot].clone()
}

/// A signing key the test controls.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public JWK as gatehouse publishes it (`kid`, `alg`, `use`).
    pub jwk: Value,
}

impl TestKey {
    /// A new key pair (RSA: one of a few cached pairs, by `kid` hash).
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let der = match alg {
            Algorithm::RS256 => cached_rsa_der(kid.len() % 3),
            other => generate_der(other),
        };
        Self::from_der(alg, kid, &der)
    }

    fn from_der(alg: Algorithm, kid: &str, der: &[u8]) -> Self {
        let pem = pem(der);
        let encoding = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::HS256 => unreachable!(),
        }
        .expect("encoding key");
        let jwk = Jwk::from_encoding_key(&encoding, jwt_alg(alg)).expect("jwk");
        let mut jwk = serde_json::to_value(jwk).expect("jwk json");
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// A different key pair of the same algorithm under the same kid (an
    /// impostor's key).
    pub fn impostor(&self) -> Self {
        match self.alg {
            Algorithm::RS256 => Self::from_der(Algorithm::RS256, &self.kid, &cached_rsa_der(3)),
            Algorithm::HS256 => {
                Self::hs256(b"an impostor's thirty-two byte secret").renamed(&self.kid)
            }
            other => Self::generate(other, &self.kid),
        }
    }

    /// gatehouse's HS256 key for `secret`, under the kid it derives.
    pub fn hs256(secret: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            alg: Algorithm::HS256,
            kid: format!("hs256-{hex}"),
            encoding: EncodingKey::from_secret(secret),
            jwk: Value::Null,
        }
    }

    /// The same key under another kid (and JWK kid).
    pub fn renamed(&self, kid: &str) -> Self {
        let mut jwk = self.jwk.clone();
        if jwk.is_object() {
            jwk["kid"] = kid.into();
        }
        Self {
            alg: self.alg,
            kid: kid.to_owned(),
            encoding: self.encoding.clone(),
            jwk,
        }
    }

    /// A compact JWS of exactly this header and payload JSON, signed with
    /// this key under `alg`.
    pub fn sign_raw(&self, header: &str, payload: &str, alg: Algorithm) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, jwt_alg(alg))
            .expect("sign");
        format!("{message}.{sig}")
    }

    /// A token with this header and these claims.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string(), self.alg)
    }

    /// The standard header of a gatehouse access token under this key.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": "at+jwt"})
    }

    /// A gatehouse access token with these claims.
    pub fn mint(&self, claims: &Value) -> String {
        self.sign(&self.header(), claims)
    }
}

/// A JWKS of these keys.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// Valid claims of `issuer` (also the audience) at `now`, for five minutes.
pub fn claims(issuer: &str, now: i64) -> Value {
    json!({
        "iss": issuer,
        "sub": SUB,
        "aud": issuer,
        "exp": now + 300,
        "iat": now,
        "jti": "0190f2a4-7c1e-7a3b-9c4d-000000000001",
        "sid": SID,
        "scope": "orders:read profile:read",
        "roles": ["clerk"],
    })
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(unix_secs: u64) -> Self {
        Self(Arc::new(AtomicU64::new(unix_secs * 1000)))
    }

    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }

    pub fn secs(&self) -> i64 {
        i64::try_from(self.0.load(Ordering::SeqCst) / 1000).expect("i64")
    }

    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(u64::try_from(d.as_millis()).expect("u64"), Ordering::SeqCst);
    }

    pub fn clock(&self) -> Arc<dyn Fn() -> SystemTime + Send + Sync> {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

/// What the mock answers on the JWKS endpoint.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub cache_control: Option<String>,
}

/// One request the mock feed saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedRequest {
    pub since: Option<String>,
    pub wait: Option<String>,
    pub authorized: bool,
}

/// The mock feed's data: entries are numbered; cursor `cN` means "the
/// first N entries seen".
#[derive(Debug, Default)]
pub struct FeedState {
    pub entries: Vec<(String, String)>,
    pub down: bool,
    /// A cursor answered with 400 (once it has been seen, the client must
    /// start over without `since`).
    pub reject_cursor: Option<String>,
    pub requests: Vec<FeedRequest>,
}

pub struct MockState {
    jwks: Mutex<Reply>,
    jwks_fetches: AtomicUsize,
    jwks_delay_ms: AtomicU64,
    feed: Mutex<FeedState>,
    feed_changed: tokio::sync::Notify,
}

/// A mock gatehouse on 127.0.0.1:0.
pub struct Mock {
    /// `http://127.0.0.1:PORT`: use as the issuer.
    pub base: String,
    pub state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Mock {
    pub async fn start() -> Self {
        let state = Arc::new(MockState {
            jwks: Mutex::new(Reply {
                status: 200,
                body: br#"{"keys":[]}"#.to_vec(),
                cache_control: Some("public, max-age=300".into()),
            }),
            jwks_fetches: AtomicUsize::new(0),
            jwks_delay_ms: AtomicU64::new(0),
            feed: Mutex::new(FeedState::default()),
            feed_changed: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks_handler))
            .route("/v1/revocations", get(feed_handler))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            base: format!("http://{addr}"),
            state,
            server,
        }
    }

    /// A builder for this mock as issuer, on the test's clock.
    pub fn builder(&self, clock: &ManualClock) -> VerifierBuilder {
        Verifier::builder(&self.base).clock(clock.clock())
    }

    pub fn serve_keys(&self, keys: &[&TestKey]) {
        self.serve_jwks(&jwks(keys));
    }

    pub fn serve_jwks(&self, jwks: &Value) {
        self.state.jwks.lock().expect("lock").body = jwks.to_string().into_bytes();
        self.state.jwks.lock().expect("lock").status = 200;
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.state.jwks.lock().expect("lock") = reply;
    }

    pub fn set_status(&self, status: u16) {
        self.state.jwks.lock().expect("lock").status = status;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state.jwks.lock().expect("lock").cache_control = value.map(str::to_owned);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .jwks_delay_ms
            .store(u64::try_from(d.as_millis()).expect("ms"), Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Ends a session on the mock feed.
    pub fn revoke(&self, sid: &str, until: &str) {
        self.state
            .feed
            .lock()
            .expect("lock")
            .entries
            .push((sid.to_owned(), until.to_owned()));
        self.state.feed_changed.notify_waiters();
    }

    pub fn set_feed_down(&self, down: bool) {
        self.state.feed.lock().expect("lock").down = down;
        self.state.feed_changed.notify_waiters();
    }

    pub fn reject_cursor(&self, cursor: &str) {
        self.state.feed.lock().expect("lock").reject_cursor = Some(cursor.to_owned());
    }

    pub fn feed_requests(&self) -> Vec<FeedRequest> {
        self.state.feed.lock().expect("lock").requests.clone()
    }
}

async fn jwks_handler(State(state): State<Arc<MockState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let reply = state.jwks.lock().expect("lock").clone();
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    if let Some(cc) = reply.cache_control {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&cc).expect("cache-control"),
        );
    }
    response
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

fn feed_answer(entries: &[(String, String)], from: usize) -> Response {
    let revocations: Vec<Value> = entries[from..]
        .iter()
        .map(|(sid, until)| json!({"sid": sid, "until": until}))
        .collect();
    let body = json!({"revocations": revocations, "cursor": format!("c{}", entries.len())});
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

async fn feed_handler(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let since = query_param(&req, "since");
    let wait = query_param(&req, "wait");
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {FEED_KEY}").as_bytes());
    let from = {
        let mut feed = state.feed.lock().expect("lock");
        feed.requests.push(FeedRequest {
            since: since.clone(),
            wait: wait.clone(),
            authorized,
        });
        if !authorized {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Bearer realm="gatehouse""#)],
                "",
            )
                .into_response();
        }
        if feed.down {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        if since.is_some() && since == feed.reject_cursor {
            return StatusCode::BAD_REQUEST.into_response();
        }
        match &since {
            None => 0,
            Some(c) => match c.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if n <= feed.entries.len() => n,
                _ => return StatusCode::BAD_REQUEST.into_response(),
            },
        }
    };
    // Like gatehouse: held for `wait` whenever there is nothing to send,
    // with or without a cursor.
    let wait = wait
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(0)
        .min(30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let changed = state.feed_changed.notified();
        {
            let feed = state.feed.lock().expect("lock");
            if feed.down {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            if feed.entries.len() > from || tokio::time::Instant::now() >= deadline {
                return feed_answer(&feed.entries, from);
            }
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

/// A URL on which nothing listens.
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// Waits (up to 15 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
