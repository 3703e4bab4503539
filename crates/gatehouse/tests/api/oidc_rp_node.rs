//! Interoperability with a strict relying party (docs/api.md, "OpenID
//! Connect provider"): npm's openid-client (panva's OpenID-certified client,
//! pinned in tests/browser/package.json), run by
//! `tests/browser/rp_openid_client.mjs`, signs a user in at gatehouse as a
//! Node web app would. openid-client talks HTTPS only, so gatehouse serves
//! TLS itself with a certificate of a test CA that node trusts through
//! `NODE_EXTRA_CA_CERTS`, never through an "insecure" switch. The journey:
//! discovery, the code flow with PKCE, `state`, `nonce` and RFC 9207 `iss`
//! through the hosted login (and consent) page, both client
//! authentications, ID tokens signed with RS256, EdDSA and ES256 and checked
//! against the JWKS, UserInfo, refresh, introspection, revocation and
//! RP-initiated logout, and what openid-client refuses along the way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::auth::accounts::Registrar;
use gatehouse::auth::audit::Actor;
use gatehouse::auth::clients::ClientSpec;
use gatehouse::config::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

use crate::helpers::{PASSWORD, TestApp, TestUser, following, unique_email};
use crate::process::{ChildGuard, drain, wait_for_exit};

const HOW_TO_INSTALL: &str = "the Node relying-party test needs Node.js 20 or later and the npm \
     packages of crates/gatehouse/tests/browser: run the suite with `bash scripts/test.sh`, or \
     `npm ci` in crates/gatehouse/tests/browser";

/// Never fetched: the relying party reads the answers from the `Location`.
const REDIRECT_URI: &str = "https://app.example.com/callback";
const POST_LOGOUT_REDIRECT_URI: &str = "https://app.example.com/signed-out";

/// Longest a whole sign-in journey may take (password hashing in a debug
/// build on a busy machine included).
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// The lines the relying party prints for the steps every run passes.
const STEPS: &[&str] = &[
    "ok discovery",
    "ok authorization_url",
    "ok login_redirect",
    "ok login",
    "ok authorization_response",
    "ok state_tampered_rejected",
    "ok iss_tampered_rejected",
    "ok id_token",
    "ok id_token_wrong_nonce_rejected",
    "ok code_replay_refused",
    "ok id_token_bad_signature_rejected",
    "ok userinfo",
    "ok userinfo_other_subject_rejected",
    "ok refresh",
    "ok introspection",
    "ok introspection_inactive",
    "ok revocation",
    "ok sign_in_again",
    "ok logout_unregistered_uri_refused",
    "ok logout",
    "ok userinfo_refused_after_logout",
    "ok all",
];

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {HOW_TO_INSTALL}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fails, saying how to install them, unless node 20 or later and the
/// openid-client that package.json pins are there.
fn require_node_and_openid_client() {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running node: {e}; {HOW_TO_INSTALL}"));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        out.status.success() && major >= 20,
        "node {version:?} is not Node.js 20 or later; {HOW_TO_INSTALL}"
    );
    let pinned = json_file(&browser_dir().join("package.json"))["dependencies"]["openid-client"]
        .as_str()
        .expect("package.json pins openid-client")
        .to_owned();
    let installed =
        json_file(&browser_dir().join("node_modules/openid-client/package.json"))["version"]
            .as_str()
            .expect("a version")
            .to_owned();
    assert_eq!(
        installed, pinned,
        "node_modules has openid-client {installed}, package.json pins {pinned}; {HOW_TO_INSTALL}"
    );
}

/// A test CA and a server certificate it signed for 127.0.0.1 and
/// localhost, as PEM files in a directory of their own.
struct TestCa {
    ca_file: PathBuf,
    server: TlsFiles,
    _dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("the CA certificate");

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server certificate parameters");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("the server certificate");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("writing a PEM file");
            path
        };
        let ca_file = write("ca.pem", &ca.pem());
        let server = TlsFiles {
            cert: write("cert.pem", &cert.pem()),
            key: write("key.pem", &key.serialize_pem()),
        };
        Self {
            ca_file,
            server,
            _dir: dir,
        }
    }

    /// What makes an app serve HTTPS with this CA's certificate (and its
    /// cookies `Secure`, with the `__Host-` name).
    fn configure(&self) -> impl FnOnce(&mut gatehouse::Config) + use<> {
        let files = self.server.clone();
        move |c| {
            c.tls = Some(files);
            c.cookie_secure = true;
        }
    }
}

/// An account made through the domain: the helpers' HTTP clients do not
/// trust the test CA.
async fn create_user(app: &TestApp) -> TestUser {
    let user = TestUser {
        email: unique_email(),
        password: PASSWORD.to_owned(),
    };
    app.auth
        .accounts
        .register(
            &user.email,
            user.password.clone(),
            Vec::new(),
            Registrar::Operator,
        )
        .await
        .expect("account created");
    user
}

/// One relying party: how it authenticates and how its ID tokens are
/// signed.
struct Rp {
    first_party: bool,
    auth_method: &'static str,
    id_token_alg: &'static str,
}

/// A confidential client with the code and refresh grants, registered
/// through the domain (the admin API has its own tests): its id and secret.
async fn register(app: &TestApp, rp: &Rp) -> (String, String) {
    let spec = ClientSpec {
        name: "openid-client relying party".to_owned(),
        kind: "confidential".to_owned(),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        post_logout_redirect_uris: Some(vec![POST_LOGOUT_REDIRECT_URI.to_owned()]),
        first_party: Some(rp.first_party),
        id_token_signed_response_alg: Some(rp.id_token_alg.to_owned()),
        ..Default::default()
    };
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

/// Runs one relying party's journey for `user` and asserts that it passed
/// every step.
async fn sign_in_with_openid_client(app: &TestApp, ca: &TestCa, user: &TestUser, rp: Rp) {
    let (client_id, client_secret) = register(app, &rp).await;
    let issuer = app.auth.provider.issuer().to_owned();
    assert!(issuer.starts_with("https://"), "issuer {issuer}");
    let mut cmd = Command::new("node");
    cmd.arg("rp_openid_client.mjs")
        .current_dir(browser_dir())
        .env("NODE_EXTRA_CA_CERTS", &ca.ca_file)
        .env("ISSUER", &issuer)
        .env("CLIENT_ID", &client_id)
        .env("CLIENT_SECRET", &client_secret)
        .env("REDIRECT_URI", REDIRECT_URI)
        .env("POST_LOGOUT_REDIRECT_URI", POST_LOGOUT_REDIRECT_URI)
        .env("EMAIL", &user.email)
        .env("PASSWORD", &user.password)
        .env("FIRST_PARTY", if rp.first_party { "1" } else { "0" })
        .env("AUTH_METHOD", rp.auth_method)
        .env("ID_TOKEN_ALG", rp.id_token_alg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The script talks to the server on this runtime: wait off its thread.
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning node rp_openid_client.mjs: {e}; {HOW_TO_INSTALL}")
        }));
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
    .expect("the relying party's thread");
    let report = format!(
        "openid-client relying party (first_party: {}, {}, {}) {status:?}\n--- stdout\n{stdout}\
         --- stderr\n{stderr}",
        rp.first_party, rp.auth_method, rp.id_token_alg
    );
    assert!(status.is_some(), "ran past {RUN_DEADLINE:?}: {report}");
    assert!(status.is_some_and(|s| s.success()), "{report}");
    let token_step = format!("ok token {}", rp.auth_method);
    for step in STEPS.iter().copied().chain([token_step.as_str()]) {
        assert!(stdout.lines().any(|l| l == step), "no `{step}`: {report}");
    }
    let consent_shown = stdout.lines().any(|l| l == "ok consent");
    assert_eq!(
        consent_shown, !rp.first_party,
        "the consent page is for third-party clients only: {report}"
    );
}

/// A first-party client with `client_secret_basic` and RS256 ID tokens, a
/// third-party one through the consent page with `client_secret_post` and
/// EdDSA, and a first-party one with ES256, for one user.
async fn openid_client_signs_users_in(app: &TestApp, ca: &TestCa) {
    let user = create_user(app).await;
    let runs = [
        Rp {
            first_party: true,
            auth_method: "client_secret_basic",
            id_token_alg: "RS256",
        },
        Rp {
            first_party: false,
            auth_method: "client_secret_post",
            id_token_alg: "EdDSA",
        },
        Rp {
            first_party: true,
            auth_method: "client_secret_basic",
            id_token_alg: "ES256",
        },
    ];
    for rp in runs {
        sign_in_with_openid_client(app, ca, &user, rp).await;
    }
}

#[tokio::test]
async fn an_openid_client_relying_party_signs_users_in_over_https_on_sqlite() {
    require_node_and_openid_client();
    let ca = TestCa::new();
    let app = TestApp::spawn_with(ca.configure()).await;
    openid_client_signs_users_in(&app, &ca).await;
}

#[tokio::test]
async fn an_openid_client_relying_party_signs_users_in_over_https_on_postgres_and_redis() {
    require_node_and_openid_client();
    let ca = TestCa::new();
    let app = TestApp::spawn_on_redis(ca.configure()).await;
    following(&app).await;
    openid_client_signs_users_in(&app, &ca).await;
}
