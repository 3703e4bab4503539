//! HTTPS served by gatehouse itself (`tls_cert`/`tls_key`): the real app on
//! port 0 with a self-signed certificate made by the test, and clients that
//! trust it, trust something else, or do not speak TLS at all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::Config;
use gatehouse::config::{DatabaseUrl, TlsFiles};
use reqwest::{Certificate, Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::helpers::{PASSWORD, TestApp, TestUser, set_cookie_header, unique_email};

/// A self-signed certificate for 127.0.0.1 and localhost, and its key, as
/// PEM files in a directory of their own.
struct TestCert {
    cert_pem: String,
    files: TlsFiles,
    _dir: tempfile::TempDir,
}

impl TestCert {
    /// An ECDSA P-256 certificate with its PKCS#8 key (rcgen's default).
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("self-signed certificate");
        Self::with(made.cert.pem(), made.signing_key.serialize_pem())
    }

    /// A certificate for `key_pair`, with the key written as `key_pem`.
    fn for_key(key_pair: &rcgen::KeyPair, key_pem: String) -> Self {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("certificate parameters");
        let cert = params.self_signed(key_pair).expect("self-signed");
        Self::with(cert.pem(), key_pem)
    }

    fn with(cert_pem: String, key_pem: String) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = write(dir.path(), "cert.pem", &cert_pem);
        let key = write(dir.path(), "key.pem", &key_pem);
        Self {
            cert_pem,
            files: TlsFiles { cert, key },
            _dir: dir,
        }
    }

    /// A client with its own cookie jar that trusts this certificate only.
    fn client(&self) -> Client {
        Client::builder()
            .cookie_store(true)
            .tls_certs_only([Certificate::from_pem(self.cert_pem.as_bytes()).expect("PEM")])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a PEM file");
    path
}

/// The app serving HTTPS with `cert`, secure cookies (the default).
async fn spawn_tls(cert: &TestCert) -> TestApp {
    let files = cert.files.clone();
    TestApp::spawn_with(move |c| {
        c.tls = Some(files);
        c.cookie_secure = true;
    })
    .await
}

/// Registers a fresh account over `client` (the helpers' own clients do not
/// trust the test certificate).
async fn create_user(app: &TestApp, client: &Client) -> TestUser {
    let user = TestUser {
        email: unique_email(),
        password: PASSWORD.to_owned(),
    };
    let res = client
        .post(app.url("/v1/users"))
        .json(&json!({ "email": user.email, "password": user.password }))
        .send()
        .await
        .expect("POST /v1/users over HTTPS");
    assert_eq!(res.status(), StatusCode::CREATED);
    user
}

/// The claims of a compact JWS, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// A configuration as the tests use, on a fresh SQLite file in `dir`.
fn config_in(dir: &Path, tls: TlsFiles) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.join("gatehouse.db").display()
        )),
        tls: Some(tls),
        ..Config::default()
    }
}

/// Builds the app with `tls` and returns the one-line error it must fail
/// with; the database must not have been created.
async fn build_error(tls: TlsFiles) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let built = gatehouse::Application::build(config_in(dir.path(), tls)).await;
    let Err(e) = built else {
        panic!("the app must not build");
    };
    assert!(
        !dir.path().join("gatehouse.db").exists(),
        "a bad TLS file stops start-up before the database is opened"
    );
    let line = format!("{e:#}");
    assert!(!line.contains('\n'), "one line: {line:?}");
    line
}

#[tokio::test]
async fn login_over_https_sets_a_secure_host_cookie_that_authenticates() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;
    let client = cert.client();
    let user = create_user(&app, &client).await;

    let res = app.login(&client, &user).await;

    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie_header(&res, "__Host-gatehouse").expect("the __Host- cookie");
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
    let me = app.get_me(&client).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["email"], user.email.as_str());
    // The socket peer reached the handler through the TLS listener.
    assert_eq!(me["session"]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn the_default_issuer_and_allowed_origin_are_https() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;
    let client = cert.client();
    let origin = format!("https://127.0.0.1:{}", app.addr.port());
    let user = create_user(&app, &client).await;

    let res = client
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("POST /v1/token");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    let claims = claims(body["access_token"].as_str().expect("access token"));
    assert_eq!(claims["iss"], origin.as_str());
    assert_eq!(claims["aud"], origin.as_str());

    let jwks = client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("GET jwks");
    assert_eq!(jwks.status(), StatusCode::OK);

    // The CSRF check allows the https origin, and not the http one.
    app.login(&client, &user).await;
    let refused = client
        .post(app.url("/v1/logout"))
        .header("origin", format!("http://127.0.0.1:{}", app.addr.port()))
        .send()
        .await
        .expect("POST /v1/logout");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let allowed = client
        .post(app.url("/v1/logout"))
        .header("origin", origin)
        .send()
        .await
        .expect("POST /v1/logout");
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer_in_clear() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;

    let mut tcp = TcpStream::connect(app.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer in clear: {:?}",
        String::from_utf8_lossy(&answer)
    );

    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;
    // Trusts another self-signed certificate, for the same names.
    let stranger = TestCert::new().client();

    let refused = stranger.get(app.url("/healthz")).send().await;

    let err = refused.expect_err("an untrusted certificate is refused");
    assert!(err.is_connect(), "{err:?}");
    let trusted = cert.client().get(app.url("/healthz")).send().await;
    assert_eq!(trusted.expect("served").status(), StatusCode::OK);
}

#[tokio::test]
async fn silent_connections_do_not_hold_up_other_clients() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;
    // Connected, never a ClientHello; and one that stops half-way through
    // a TLS record header.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    let mut partial = TcpStream::connect(app.addr).await.expect("connect");
    partial.write_all(&[0x16, 0x03, 0x01]).await.expect("write");

    let started = Instant::now();
    let res = cert.client().get(app.url("/healthz")).send().await;

    assert_eq!(res.expect("served").status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn a_connection_that_never_handshakes_is_closed_after_the_timeout() {
    let cert = TestCert::new();
    let app = spawn_tls(&cert).await;
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");

    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;

    let closed_after = started.elapsed();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closes it: {read:?}"
    );
    assert!(
        closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}, the handshake timeout is 10 s"
    );
}

#[tokio::test]
async fn shutdown_over_https_answers_a_waiting_request_and_returns() {
    let cert = TestCert::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = gatehouse::Application::build(config_in(dir.path(), cert.files.clone()))
        .await
        .expect("the app builds");
    let url = format!("{}/v1/revocations?wait=30", app.base_url());
    let key = app
        .services()
        .feed
        .create_resource_server("poller", gatehouse::auth::audit::Actor::Cli)
        .await
        .expect("created")
        .key
        .key();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = cert.client();
    let waiting = tokio::spawn(async move { client.get(url).bearer_auth(key).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the feed request waits");

    let _ = stop.send(());

    let served = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run_until returns within 5 s")
        .expect("the task");
    assert!(served.is_ok(), "{served:?}");
    let answer = waiting.await.expect("the task").expect("answered");
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn rsa_pkcs1_and_ec_sec1_keys_are_accepted() {
    for (alg, label) in [
        (&rcgen::PKCS_RSA_SHA256, "RSA PRIVATE KEY"),
        (&rcgen::PKCS_ECDSA_P256_SHA256, "EC PRIVATE KEY"),
    ] {
        let key_pair = rcgen::KeyPair::generate_for(alg).expect("key pair");
        // PKCS#1 and SEC1 are the inner key of the PKCS#8 document.
        let inner = pkcs8_inner_key(&key_pair.serialize_der());
        let key_pem = pem::encode(&pem::Pem::new(label, inner));
        let cert = TestCert::for_key(&key_pair, key_pem);
        let app = spawn_tls(&cert).await;

        let res = cert.client().get(app.url("/healthz")).send().await;

        assert_eq!(res.expect(label).status(), StatusCode::OK, "{label}");
    }
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (RFC 5208):
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, ... }.
fn pkcs8_inner_key(der: &[u8]) -> Vec<u8> {
    /// One DER element at the start of `der`: (tag, contents, rest).
    fn element(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, header) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = der[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + count)
            }
        };
        (tag, &der[header..header + len], &der[header + len..])
    }
    let (tag, info, _) = element(der);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (_, _, rest) = element(info); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key.to_vec()
}

#[tokio::test]
async fn a_cert_file_without_a_certificate_stops_start_up_naming_tls_cert() {
    let good = TestCert::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let broken = write(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    // A valid PEM block whose contents are not a certificate.
    let not_x509 = write(
        dir.path(),
        "not-x509.pem",
        &pem::encode(&pem::Pem::new("CERTIFICATE", b"hello".to_vec())),
    );

    for cert in [garbage, broken, not_x509, good.files.key.clone()] {
        let line = build_error(TlsFiles {
            cert: cert.clone(),
            key: good.files.key.clone(),
        })
        .await;
        assert!(line.contains("tls_cert: "), "{cert:?}: {line}");
    }
}

#[tokio::test]
async fn a_key_file_without_a_usable_key_stops_start_up_naming_tls_key() {
    let good = TestCert::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = write(dir.path(), "garbage.pem", "not a key\n");
    let not_a_key = write(
        dir.path(),
        "not-a-key.pem",
        &pem::encode(&pem::Pem::new("PRIVATE KEY", b"hello".to_vec())),
    );

    for key in [garbage, not_a_key, good.files.cert.clone()] {
        let line = build_error(TlsFiles {
            cert: good.files.cert.clone(),
            key: key.clone(),
        })
        .await;
        assert!(line.contains("tls_key: "), "{key:?}: {line}");
    }
}

#[tokio::test]
async fn a_key_of_another_certificate_stops_start_up_naming_tls_key() {
    let good = TestCert::new();
    let other = TestCert::new();

    let line = build_error(TlsFiles {
        cert: good.files.cert.clone(),
        key: other.files.key.clone(),
    })
    .await;

    assert!(line.contains("tls_key: "), "{line}");
    assert!(line.contains("not the private key"), "{line}");
}

#[tokio::test]
async fn the_bound_url_says_https() {
    let cert = TestCert::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = gatehouse::Application::build(config_in(dir.path(), cert.files.clone()))
        .await
        .expect("the app builds");
    let addr: SocketAddr = app.local_addr();

    assert_eq!(app.base_url(), format!("https://{addr}"));
}
