//! The shared test vectors: `testdata/access-tokens.json`, written from the
//! server side, holds tokens and the verdict gatehouse gives each; this
//! library must give exactly the same. The runner is also checked against a
//! vectors file generated here, so that it demonstrably catches a mismatch.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_verify::{Algorithm, Claims, Verifier, VerifyError};
use serde::Deserialize;
use serde_json::{Value, json};

use common::{Mock, TestKey, b64};

/// The file the server side writes.
const SHARED_VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/access-tokens.json"
);

#[derive(Debug, Deserialize)]
struct Vectors {
    issuer: String,
    audience: String,
    now: u64,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
    /// The server's `access_token_ttl`: with the leeway, the longest
    /// lifetime the server accepts, so this library's `max_token_lifetime`.
    #[serde(default = "default_ttl")]
    access_token_ttl_secs: u64,
    #[serde(default)]
    revoked_sids: Vec<String>,
    jwks: Value,
    #[serde(default)]
    hs256_secret: Option<String>,
    cases: Vec<Case>,
}

fn default_leeway() -> u64 {
    30
}

fn default_ttl() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    alg: String,
    token: String,
    expect: String,
    #[serde(default)]
    claims: Option<Value>,
}

/// Checks every case of a vectors file; returns how many passed, or every
/// mismatch.
async fn run_vectors(path: &Path) -> Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read the test vectors at {}: {e}. The shared file \
             testdata/access-tokens.json is written from the server side; this test \
             fails until it exists.",
            path.display()
        )
    });
    let vectors: Vectors = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a vectors file: {e}", path.display()));
    if vectors.cases.is_empty() {
        return Err(vec!["the vectors file has no cases".into()]);
    }
    let mock = Mock::start().await;
    mock.serve_jwks(&vectors.jwks);
    let jwks_url = format!("{}/.well-known/jwks.json", mock.base);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(vectors.now);
    let revoked_until = now + Duration::from_secs(24 * 60 * 60);
    let hs256_secret = vectors.hs256_secret.as_deref().map(|s| {
        STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("hs256_secret is not standard base64: {e}"))
    });

    let mut failures = Vec::new();
    for case in &vectors.cases {
        let Some(alg) = Algorithm::from_name(&case.alg) else {
            failures.push(format!("{}: unknown alg {:?}", case.name, case.alg));
            continue;
        };
        let mut builder = Verifier::builder(&vectors.issuer)
            .audience(&vectors.audience)
            .leeway(Duration::from_secs(vectors.leeway_secs))
            .max_token_lifetime(Duration::from_secs(
                vectors.access_token_ttl_secs + vectors.leeway_secs,
            ))
            .algorithms(&[alg])
            .jwks_url(&jwks_url)
            .clock(std::sync::Arc::new(move || now));
        if alg == Algorithm::HS256 {
            let Some(secret) = &hs256_secret else {
                failures.push(format!("{}: an HS256 case but no hs256_secret", case.name));
                continue;
            };
            builder = builder.hs256_secret(secret.clone());
        }
        let verifier = match builder.build() {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: cannot build a verifier: {e}", case.name));
                continue;
            }
        };
        let preloaded = verifier.preload_revocations(
            vectors
                .revoked_sids
                .iter()
                .map(|s| (s.as_str(), revoked_until)),
        );
        assert_eq!(
            preloaded,
            vectors.revoked_sids.len(),
            "revoked_sids must be UUIDs"
        );

        let verdict = verifier.verify(&case.token).await;
        let got = match &verdict {
            Ok(_) => "valid",
            Err(e) => e.code(),
        };
        if case.expect != "valid" && VerifyError::from_code(&case.expect).is_none() {
            failures.push(format!(
                "{}: unknown expectation {:?}",
                case.name, case.expect
            ));
            continue;
        }
        if got != case.expect {
            failures.push(format!(
                "{} ({}): expected {}, got {got}",
                case.name, case.alg, case.expect
            ));
            continue;
        }
        if let (Ok(claims), Some(expected)) = (&verdict, &case.claims) {
            match serde_json::from_value::<Claims>(expected.clone()) {
                Ok(expected) if &expected == claims => {}
                Ok(expected) => failures.push(format!(
                    "{}: claims differ: expected {expected:?}, got {claims:?}",
                    case.name
                )),
                Err(e) => failures.push(format!("{}: expected claims unreadable: {e}", case.name)),
            }
        }
    }
    if failures.is_empty() {
        Ok(vectors.cases.len())
    } else {
        Err(failures)
    }
}

#[tokio::test]
async fn the_shared_vectors_give_the_servers_verdicts() {
    let path = PathBuf::from(SHARED_VECTORS);
    assert!(
        path.exists(),
        "the shared test vectors {} do not exist yet: they are written from the server \
         side (testdata/access-tokens.json). This test fails, never skips, until they do.",
        path.display()
    );
    match run_vectors(&path).await {
        Ok(n) => println!("{n} shared vectors agree with the server"),
        Err(failures) => panic!(
            "{} shared vectors disagree:\n{}",
            failures.len(),
            failures.join("\n")
        ),
    }
}

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "https://api.example";
const NOW: i64 = 1_800_000_000;
const REVOKED: &str = "0190f2a4-7c1e-7a3b-9c4d-dededededede";

fn base_claims() -> Value {
    let mut c = common::claims(ISSUER, NOW);
    c["aud"] = json!([AUDIENCE, "https://other.example"]);
    c
}

/// A vectors file covering every verdict for every algorithm.
fn generated_vectors() -> Value {
    let secret = [0x42u8; 32];
    let keys = [
        TestKey::generate(Algorithm::EdDSA, "ed-1"),
        TestKey::generate(Algorithm::ES256, "es-1"),
        TestKey::generate(Algorithm::RS256, "rs-1"),
        TestKey::hs256(&secret),
    ];
    let jwks = common::jwks(&keys[..3].iter().collect::<Vec<_>>());
    let mut cases = Vec::new();
    for key in &keys {
        let alg = key.alg.as_str();
        let mut case = |name: &str, token: String, expect: &str, claims: Option<&Value>| {
            let mut c = json!({"name": format!("{alg} {name}"), "alg": alg, "token": token, "expect": expect});
            if let Some(claims) = claims {
                c["claims"] = claims.clone();
            }
            cases.push(c);
        };
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut c = base_claims();
            f(&mut c);
            key.mint(&c)
        };
        let valid = key.mint(&base_claims());
        case("valid", valid.clone(), "valid", Some(&base_claims()));
        case(
            "valid inside the leeway",
            edit(&|c| c["exp"] = json!(NOW - 29)),
            "valid",
            None,
        );
        case(
            "expired",
            edit(&|c| c["exp"] = json!(NOW - 30)),
            "expired",
            None,
        );
        case(
            "not yet valid",
            edit(&|c| c["nbf"] = json!(NOW + 31)),
            "not_yet_valid",
            None,
        );
        case(
            "issued in the future",
            edit(&|c| c["iat"] = json!(NOW + 31)),
            "issued_in_future",
            None,
        );
        case(
            "wrong issuer",
            edit(&|c| c["iss"] = json!("https://evil.example")),
            "wrong_issuer",
            None,
        );
        case(
            "wrong audience",
            edit(&|c| c["aud"] = json!(ISSUER)),
            "wrong_audience",
            None,
        );
        case(
            "revoked",
            edit(&|c| c["sid"] = json!(REVOKED)),
            "revoked",
            None,
        );
        case(
            "upper-case sid",
            edit(&|c| c["sid"] = json!(common::SID.to_uppercase())),
            "malformed",
            None,
        );
        case(
            "float exp",
            edit(&|c| c["exp"] = json!(1.8e9)),
            "malformed",
            None,
        );
        case(
            "unknown kid",
            key.renamed("nobody").mint(&base_claims()),
            "unknown_key",
            None,
        );
        let mut wrong_typ = key.header();
        wrong_typ["typ"] = json!("JWT");
        case(
            "typ JWT",
            key.sign(&wrong_typ, &base_claims()),
            "wrong_type",
            None,
        );
        let mut with_jwk = key.header();
        with_jwk["jwk"] = json!({});
        case(
            "jwk in header",
            key.sign(&with_jwk, &base_claims()),
            "forbidden_header",
            None,
        );
        let (message, _) = valid.rsplit_once('.').expect("three parts");
        case(
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none","kid":"x","typ":"at+jwt"}"#),
                message.split_once('.').expect("parts").1
            ),
            "wrong_algorithm",
            None,
        );
        case(
            "another key's signature",
            key.impostor().mint(&base_claims()),
            "bad_signature",
            None,
        );
        case("empty signature", format!("{message}."), "malformed", None);
        case(
            "too large",
            format!("{message}.{}", "A".repeat(8200)),
            "too_large",
            None,
        );
        case("two parts", message.to_owned(), "malformed", None);
    }
    json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
        "leeway_secs": 30,
        "revoked_sids": [REVOKED],
        "jwks": jwks,
        "hs256_secret": STANDARD.encode(secret),
        "cases": cases,
    })
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-verify-vectors-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_runner_passes_generated_vectors_and_catches_a_mismatch() {
    let dir = TempDir::new();
    let path = dir.0.join("access-tokens.json");
    let mut vectors = generated_vectors();
    std::fs::write(&path, vectors.to_string()).expect("write");
    let n = match run_vectors(&path).await {
        Ok(n) => n,
        Err(failures) => panic!("generated vectors disagree:\n{}", failures.join("\n")),
    };
    assert_eq!(n, 4 * 18);

    // One wrong verdict and one wrong claim: the runner must report both.
    vectors["cases"][0]["claims"]["scope"] = json!("gatehouse:admin");
    vectors["cases"][2]["expect"] = json!("valid");
    std::fs::write(&path, vectors.to_string()).expect("write");
    let failures = run_vectors(&path).await.expect_err("mismatches are caught");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("EdDSA valid: claims differ"),
        "{failures:?}"
    );
    assert!(failures[1].contains("EdDSA expired"), "{failures:?}");
}
