//! Forged, tampered and misdirected access tokens (API.md "Tokens"; RFC 8725,
//! JSON Web Token Best Current Practices).
//!
//! The app signs with a `signing_key_file` the test generates, so the test
//! holds the server's private key and can mint tokens with chosen claims.
//! The first test shows that a token minted with that key and the server's
//! own claims IS accepted; every refusal below therefore tests the one thing
//! the variant changes. Every refusal must be a 401 whose challenge carries
//! `error="invalid_token"` (RFC 6750 §3.1), and afterwards the legitimate
//! token must still work.

use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse::Config;
use gatehouse::config::JwtAlg;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{TestApp, TestUser, assert_problem};

// ---------------------------------------------------------------------------
// Keys and JWS by hand
// ---------------------------------------------------------------------------

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|e| panic!("{segment:?} is not base64url: {e}"))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A private key the test holds: Ed25519 or P-256.
enum Key {
    Ed(Ed25519KeyPair),
    Es { pair: EcdsaKeyPair, pkcs8: Vec<u8> },
}

impl Key {
    fn ed25519() -> Self {
        Self::Ed(Ed25519KeyPair::generate().expect("Ed25519 key"))
    }

    fn p256() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8").as_ref().to_vec();
        Self::Es { pair, pkcs8 }
    }

    fn pkcs8(&self) -> Vec<u8> {
        match self {
            Self::Ed(pair) => AsDer::<Pkcs8V1Der<'static>>::as_der(pair)
                .expect("PKCS#8")
                .as_ref()
                .to_vec(),
            Self::Es { pkcs8, .. } => pkcs8.clone(),
        }
    }

    fn pkcs8_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8()))
    }

    /// The JWS signature of `signing_input` (ES256: fixed-width R || S).
    fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed(pair) => pair.sign(signing_input).as_ref().to_vec(),
            Self::Es { pair, .. } => pair
                .sign(&SystemRandom::new(), signing_input)
                .expect("ECDSA signature")
                .as_ref()
                .to_vec(),
        }
    }

    fn public_bytes(&self) -> Vec<u8> {
        match self {
            Self::Ed(pair) => pair.public_key().as_ref().to_vec(),
            Self::Es { pair, .. } => pair.public_key().as_ref().to_vec(),
        }
    }

    /// The public JWK (RFC 7517 / RFC 8037), without `kid`.
    fn public_jwk(&self) -> Value {
        let public = self.public_bytes();
        match self {
            Self::Ed(_) => json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&public) }),
            Self::Es { .. } => {
                // Uncompressed point: 0x04 || x || y.
                assert_eq!(public.len(), 65);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64(&public[1..33]),
                    "y": b64(&public[33..]),
                })
            }
        }
    }

    /// The RFC 7638 SHA-256 thumbprint: what the server uses as `kid`.
    fn thumbprint(&self) -> String {
        let jwk = self.public_jwk();
        let s = |k: &str| jwk[k].as_str().expect("jwk member").to_owned();
        let members = match self {
            Self::Ed(_) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, s("x")),
            Self::Es { .. } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                s("x"),
                s("y")
            ),
        };
        b64(Sha256::digest(members.as_bytes()))
    }
}

/// A compact JWS of `header` and `claims`, signed by `key`.
fn mint(key: &Key, header: &Value, claims: &Value) -> String {
    mint_raw(key, &b64(header.to_string()), &b64(claims.to_string()))
}

/// A compact JWS of already-encoded segments, signed by `key`.
fn mint_raw(key: &Key, header_b64: &str, payload_b64: &str) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(sig))
}

/// An HS256 JWS, signed by hand with `secret` as the HMAC key.
fn mint_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// The three segments of a compact JWS.
fn split3(token: &str) -> (&str, &str, &str) {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) => (h, p, s),
        _ => panic!("not a compact JWS: {token:?}"),
    }
}

fn decode_json(segment: &str) -> Value {
    serde_json::from_slice(&unb64(segment)).expect("JSON segment")
}

/// Flips `mask` in byte `index` (negative: from the end) of `bytes`.
fn flip(mut bytes: Vec<u8>, index: isize, mask: u8) -> Vec<u8> {
    let i = if index < 0 {
        bytes.len() - index.unsigned_abs()
    } else {
        index.unsigned_abs()
    };
    bytes[i] ^= mask;
    bytes
}

// ---------------------------------------------------------------------------
// The app and its requests
// ---------------------------------------------------------------------------

/// `POST /v1/token` with the password grant; returns the access token.
async fn password_grant(app: &TestApp, user: &TestUser) -> String {
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
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

/// `GET /v1/me` with `Authorization: Bearer <token>` and nothing else.
async fn me_with(app: &TestApp, token: &str) -> Response {
    app.bare_client()
        .get(app.url("/v1/me"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("GET /v1/me")
}

/// The token is refused: 401, `error="invalid_token"`, a problem document.
async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let res = me_with(app, token).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401 for {token:.200}"
    );
    let challenge = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
}

/// The token is accepted on `/v1/me` as the session `sid` of user `sub`.
async fn assert_accepted(app: &TestApp, token: &str, claims: &Value, what: &str) {
    let res = me_with(app, token).await;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    let body: Value = serde_json::from_str(&body).expect("JSON from /v1/me");
    assert_eq!(body["user"]["id"], claims["sub"], "{what}: {body}");
    assert_eq!(body["session"]["id"], claims["sid"], "{what}: {body}");
}

/// An app signing with a key the test holds, a user, and a token the app
/// issued to that user.
struct Minting {
    app: TestApp,
    key: Key,
    /// The server's `kid`: the key's RFC 7638 thumbprint.
    kid: String,
    /// The key exactly as `/.well-known/jwks.json` publishes it.
    published_jwk: Value,
    user: TestUser,
    /// A token the server issued (password grant).
    token: String,
    header: Value,
    claims: Value,
    _key_dir: tempfile::TempDir,
}

impl Minting {
    /// Ed25519 (the default `jwt_alg`).
    async fn start() -> Self {
        Self::start_with(Key::ed25519(), |_| {}).await
    }

    async fn start_with(key: Key, configure: impl FnOnce(&mut Config)) -> Self {
        let key_dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = key_dir.path().join("signing.pem");
        std::fs::write(&path, key.pkcs8_pem()).expect("writing the key file");
        let es = matches!(key, Key::Es { .. });
        let app = TestApp::spawn_with(|c| {
            c.signing_key_file = Some(path);
            if es {
                c.jwt_alg = JwtAlg::Es256;
            }
            configure(c);
        })
        .await;
        let kid = key.thumbprint();
        let jwks: Value = app
            .bare_client()
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("GET jwks")
            .json()
            .await
            .expect("JWKS JSON");
        let keys = jwks["keys"].as_array().expect("keys array");
        // The file's key, and the ID-token keys (one of each algorithm),
        // which never verify an access token.
        assert_eq!(keys.len(), 4, "{jwks}");
        let (ours, id_tokens): (Vec<&Value>, Vec<&Value>) =
            keys.iter().partition(|k| k["kid"] == kid.as_str());
        assert_eq!(ours.len(), 1, "kid is the RFC 7638 thumbprint: {jwks}");
        let published_jwk = ours[0].clone();
        let mut id_algs: Vec<&str> = id_tokens.iter().filter_map(|k| k["alg"].as_str()).collect();
        id_algs.sort_unstable();
        assert_eq!(id_algs, ["ES256", "EdDSA", "RS256"], "{jwks}");

        let user = app.create_user().await;
        let token = password_grant(&app, &user).await;
        let (h, p, _) = split3(&token);
        let header = decode_json(h);
        let claims = decode_json(p);
        assert_eq!(header["kid"], kid, "{header}");
        assert_eq!(header["typ"], "at+jwt", "{header}");
        Self {
            app,
            key,
            kid,
            published_jwk,
            user,
            token,
            header,
            claims,
            _key_dir: key_dir,
        }
    }

    /// The server's header with `f` applied.
    fn header_with(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut h = self.header.clone();
        f(h.as_object_mut().expect("header object"));
        h
    }

    /// The server's claims with `f` applied.
    fn claims_with(&self, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
        let mut c = self.claims.clone();
        f(c.as_object_mut().expect("claims object"));
        c
    }

    /// Signed with the server's key, the server's header, these claims.
    fn mint_claims(&self, claims: &Value) -> String {
        mint(&self.key, &self.header, claims)
    }

    async fn refused(&self, token: &str, what: &str) {
        assert_refused(&self.app, token, what).await;
    }

    /// Nothing a refusal did broke the legitimate token.
    async fn legit_still_works(&self) {
        assert_accepted(&self.app, &self.token, &self.claims, "the legitimate token").await;
    }
}

// ---------------------------------------------------------------------------
// Positive controls
// ---------------------------------------------------------------------------

#[tokio::test]
async fn minted_token_with_the_servers_claims_is_accepted() {
    let m = Minting::start().await;
    assert_accepted(&m.app, &m.token, &m.claims, "the issued token").await;

    let minted = mint(&m.key, &m.header, &m.claims);
    assert_accepted(&m.app, &minted, &m.claims, "re-signed server claims").await;

    // Chosen claims work too: a fresh jti and times, an extra claim.
    let t = now();
    let chosen = m.claims_with(|c| {
        c.insert("jti".into(), json!(uuid::Uuid::now_v7().to_string()));
        c.insert("iat".into(), json!(t));
        c.insert("exp".into(), json!(t + 60));
        c.insert("nbf".into(), json!(t));
        c.insert("note".into(), json!("x".repeat(1500)));
    });
    assert_accepted(
        &m.app,
        &m.mint_claims(&chosen),
        &chosen,
        "chosen claims (about 2 KB)",
    )
    .await;
    // RFC 9068 §4: "application/at+jwt" is the same type.
    let header = m.header_with(|h| {
        h.insert("typ".into(), json!("application/at+jwt"));
    });
    assert_accepted(
        &m.app,
        &mint(&m.key, &header, &m.claims),
        &m.claims,
        "typ application/at+jwt",
    )
    .await;
}

#[tokio::test]
async fn expiry_ten_seconds_ago_is_accepted_within_the_default_leeway() {
    let m = Minting::start().await;
    assert_eq!(m.app.config.jwt_leeway, Duration::from_secs(30));
    let t = now();
    let claims = m.claims_with(|c| {
        c.insert("iat".into(), json!(t - 70));
        c.insert("exp".into(), json!(t - 10));
    });
    assert_accepted(
        &m.app,
        &m.mint_claims(&claims),
        &claims,
        "exp 10 s ago, leeway 30 s",
    )
    .await;
    // And iat/nbf 10 s ahead (a signer's clock running fast).
    let claims = m.claims_with(|c| {
        c.insert("iat".into(), json!(t + 10));
        c.insert("nbf".into(), json!(t + 10));
        c.insert("exp".into(), json!(t + 100));
    });
    assert_accepted(
        &m.app,
        &m.mint_claims(&claims),
        &claims,
        "iat and nbf 10 s ahead, leeway 30 s",
    )
    .await;
}

#[tokio::test]
async fn zero_leeway_refuses_expiry_ten_seconds_ago() {
    let m = Minting::start_with(Key::ed25519(), |c| c.jwt_leeway = Duration::ZERO).await;
    // Control on this app: a current token passes.
    m.legit_still_works().await;
    let t = now();
    let claims = m.claims_with(|c| {
        c.insert("iat".into(), json!(t - 70));
        c.insert("exp".into(), json!(t - 10));
    });
    m.refused(&m.mint_claims(&claims), "exp 10 s ago, leeway 0")
        .await;
    let claims = m.claims_with(|c| {
        c.insert("nbf".into(), json!(t + 10));
    });
    m.refused(&m.mint_claims(&claims), "nbf 10 s ahead, leeway 0")
        .await;
    let claims = m.claims_with(|c| {
        c.insert("iat".into(), json!(t + 10));
    });
    m.refused(&m.mint_claims(&claims), "iat 10 s ahead, leeway 0")
        .await;
    m.legit_still_works().await;
}

// ---------------------------------------------------------------------------
// Algorithm attacks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_any_case_and_missing_alg_are_refused() {
    let m = Minting::start().await;
    let (_, payload, original_sig) = split3(&m.token);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = m.header_with(|h| {
            h.insert("alg".into(), json!(alg));
        });
        let h = b64(header.to_string());
        m.refused(
            &format!("{h}.{payload}."),
            &format!("alg {alg}, empty signature"),
        )
        .await;
        m.refused(
            &format!("{h}.{payload}.{original_sig}"),
            &format!("alg {alg}, the original signature"),
        )
        .await;
        // Signed by the server's own key over this very header.
        m.refused(
            &mint_raw(&m.key, &h, payload),
            &format!("alg {alg}, signed by the server key"),
        )
        .await;
    }
    // RFC 7515 §A.5, with the server's claims: no kid either.
    let unsecured = b64(r#"{"alg":"none"}"#);
    m.refused(&format!("{unsecured}.{payload}."), "bare alg none")
        .await;

    let no_alg = m.header_with(|h| {
        h.remove("alg");
    });
    m.refused(&mint(&m.key, &no_alg, &m.claims), "header without alg")
        .await;
    let null_alg = m.header_with(|h| {
        h.insert("alg".into(), Value::Null);
    });
    m.refused(&mint(&m.key, &null_alg, &m.claims), "alg null")
        .await;
    // RFC 9864's fully specified name is not the configured "EdDSA".
    let ed25519 = m.header_with(|h| {
        h.insert("alg".into(), json!("Ed25519"));
    });
    m.refused(&mint(&m.key, &ed25519, &m.claims), "alg Ed25519")
        .await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn hs256_keyed_with_the_servers_public_key_is_refused() {
    let m = Minting::start().await;
    let x = m.key.public_bytes();
    assert_eq!(x.len(), 32);
    // SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): fixed prefix || x.
    let mut spki = hex_bytes("302a300506032b6570032100");
    spki.extend_from_slice(&x);
    let pem_lf = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let pem_crlf = pem_lf.replace('\n', "\r\n");
    let pem_bare = pem_lf.trim_end().to_owned();
    let jwk_json = m.published_jwk.to_string();
    let jwks_json = json!({ "keys": [m.published_jwk.clone()] }).to_string();
    let secrets: [(&str, Vec<u8>); 8] = [
        ("raw x", x.clone()),
        (
            "base64url x",
            m.published_jwk["x"]
                .as_str()
                .expect("x")
                .as_bytes()
                .to_vec(),
        ),
        ("SPKI DER", spki.clone()),
        ("SPKI PEM (LF)", pem_lf.into_bytes()),
        ("SPKI PEM (CRLF)", pem_crlf.into_bytes()),
        ("SPKI PEM (no final newline)", pem_bare.into_bytes()),
        ("published JWK JSON", jwk_json.into_bytes()),
        ("JWKS JSON", jwks_json.into_bytes()),
    ];
    for (form, secret) in &secrets {
        for kid in [Some(m.kid.as_str()), None] {
            let header = m.header_with(|h| {
                h.insert("alg".into(), json!("HS256"));
                match kid {
                    Some(k) => h.insert("kid".into(), json!(k)),
                    None => h.remove("kid"),
                };
            });
            m.refused(
                &mint_hs256(secret, &header, &m.claims),
                &format!("HS256 keyed with the public key as {form}, kid {kid:?}"),
            )
            .await;
        }
    }
    m.legit_still_works().await;
}

#[tokio::test]
async fn es256_signature_of_zeros_is_refused_and_a_real_one_accepted() {
    let m = Minting::start_with(Key::p256(), |_| {}).await;
    assert_eq!(m.header["alg"], "ES256", "{}", m.header);
    assert_eq!(m.published_jwk["kty"], "EC", "{}", m.published_jwk);
    // Positive control: minted with the same P-256 key, accepted.
    assert_accepted(
        &m.app,
        &mint(&m.key, &m.header, &m.claims),
        &m.claims,
        "ES256 minted with the server key",
    )
    .await;

    let (h, p, _) = split3(&m.token);
    // CVE-2022-21449 ("psychic signatures"): r = s = 0.
    m.refused(&format!("{h}.{p}.{}", b64([0u8; 64])), "ES256 r = s = 0")
        .await;
    // r = s = n, the group order (also 0 mod n).
    let n = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let mut rs = n.clone();
    rs.extend_from_slice(&n);
    m.refused(&format!("{h}.{p}.{}", b64(&rs)), "ES256 r = s = n")
        .await;
    m.refused(
        &format!("{h}.{p}.{}", b64([0u8; 32])),
        "ES256 32 zero bytes",
    )
    .await;
    // A genuine signature in DER (ASN.1) form instead of R || S (RFC 7518 §3.4).
    let Key::Es { pkcs8, .. } = &m.key else {
        unreachable!("P-256 key")
    };
    let asn1 = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).expect("key");
    let der_sig = asn1
        .sign(&SystemRandom::new(), format!("{h}.{p}").as_bytes())
        .expect("sign");
    m.refused(
        &format!("{h}.{p}.{}", b64(der_sig.as_ref())),
        "ES256 signature in DER form",
    )
    .await;
    // An EdDSA token, even with the server's kid, on an ES256 server.
    let ed = Key::ed25519();
    let header = m.header_with(|h| {
        h.insert("alg".into(), json!("EdDSA"));
    });
    m.refused(&mint(&ed, &header, &m.claims), "EdDSA on an ES256 server")
        .await;
    m.legit_still_works().await;
}

// ---------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stripped_swapped_or_bit_flipped_tokens_are_refused() {
    let m = Minting::start().await;
    let (h, p, s) = split3(&m.token);
    m.refused(&format!("{h}.{p}."), "stripped signature").await;
    m.refused(&format!("{h}.{p}"), "signature and its dot stripped")
        .await;

    // The signature of another genuine token of the same user and key.
    let other = password_grant(&m.app, &m.user).await;
    let (_, _, other_sig) = split3(&other);
    assert_ne!(other_sig, s);
    m.refused(&format!("{h}.{p}.{other_sig}"), "another token's signature")
        .await;

    let sig = unb64(s);
    for (index, mask) in [(0, 0x01), (31, 0x80), (32, 0x01), (-1, 0x01), (-1, 0x80)] {
        let flipped = b64(flip(sig.clone(), index, mask));
        m.refused(
            &format!("{h}.{p}.{flipped}"),
            &format!("signature byte {index} ^ {mask:#x}"),
        )
        .await;
    }
    m.refused(
        &format!("{h}.{p}.{}", b64(&sig[..63])),
        "signature one byte short",
    )
    .await;
    let mut long = sig.clone();
    long.push(0);
    m.refused(
        &format!("{h}.{p}.{}", b64(&long)),
        "signature one byte long",
    )
    .await;

    // Payload: another subject under the original signature...
    let claims = m.claims_with(|c| {
        c.insert("sub".into(), json!(uuid::Uuid::now_v7().to_string()));
    });
    m.refused(
        &format!("{h}.{}.{s}", b64(claims.to_string())),
        "changed sub, original signature",
    )
    .await;
    // ...and one bit of the jti flipped in the original bytes.
    let payload = unb64(p);
    let jti = m.claims["jti"].as_str().expect("jti");
    let at = find(&payload, jti.as_bytes()).expect("jti in the payload") + jti.len() - 1;
    let flipped = flip(payload, isize::try_from(at).expect("index"), 0x01);
    m.refused(&format!("{h}.{}.{s}", b64(flipped)), "payload bit flipped")
        .await;

    // Header: "at+jwt" -> "At+jwt" passes the (case-insensitive) typ check,
    // so only the signature can catch it.
    let header = unb64(h);
    let at = find(&header, b"at+jwt").expect("typ in the header");
    let flipped = flip(header, isize::try_from(at).expect("index"), 0x20);
    m.refused(&format!("{}.{p}.{s}", b64(flipped)), "header bit flipped")
        .await;
    m.legit_still_works().await;
}

// ---------------------------------------------------------------------------
// Keys from the token itself, and kids
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_named_by_the_token_header_are_never_used() {
    let m = Minting::start().await;
    let attacker = Key::ed25519();
    let attacker_kid = attacker.thumbprint();
    let mut attacker_jwk = attacker.public_jwk();
    attacker_jwk["kid"] = json!(attacker_kid);
    let mut spki = hex_bytes("302a300506032b6570032100");
    spki.extend_from_slice(&attacker.public_bytes());
    let embeds: [(&str, Value); 4] = [
        ("jwk", attacker_jwk.clone()),
        (
            "jku",
            json!("https://attacker.example/.well-known/jwks.json"),
        ),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!([STANDARD.encode(&spki)])),
    ];
    for (param, value) in &embeds {
        for (kid_name, kid) in [("attacker", &attacker_kid), ("server", &m.kid)] {
            let header = m.header_with(|h| {
                h.insert((*param).into(), value.clone());
                h.insert("kid".into(), json!(kid));
            });
            m.refused(
                &mint(&attacker, &header, &m.claims),
                &format!("{param} header, {kid_name} kid, signed by the attacker"),
            )
            .await;
        }
        let header = m.header_with(|h| {
            h.insert((*param).into(), value.clone());
            h.remove("kid");
        });
        m.refused(
            &mint(&attacker, &header, &m.claims),
            &format!("{param} header, no kid, signed by the attacker"),
        )
        .await;
    }
    m.legit_still_works().await;
}

#[tokio::test]
async fn critical_and_key_carrying_headers_are_refused_even_when_genuinely_signed() {
    let m = Minting::start().await;
    // RFC 7515 §4.1.11: a crit extension the recipient does not understand
    // MUST make the JWS invalid.
    let crit = m.header_with(|h| {
        h.insert("crit".into(), json!(["x-gatehouse-test"]));
        h.insert("x-gatehouse-test".into(), json!(true));
    });
    m.refused(&mint(&m.key, &crit, &m.claims), "unknown crit extension")
        .await;
    // RFC 7797: b64=false changes what is signed.
    let b64_false = m.header_with(|h| {
        h.insert("b64".into(), json!(false));
        h.insert("crit".into(), json!(["b64"]));
    });
    m.refused(&mint(&m.key, &b64_false, &m.claims), "b64 false")
        .await;
    // The server's own public key embedded, signature by the server key:
    // gatehouse refuses any token that names a key (RFC 8725 §3.10).
    let mut own = m.published_jwk.clone();
    own.as_object_mut().expect("jwk").remove("kid");
    let header = m.header_with(|h| {
        h.insert("jwk".into(), own);
    });
    m.refused(
        &mint(&m.key, &header, &m.claims),
        "server's own jwk embedded",
    )
    .await;
    let header = m.header_with(|h| {
        h.insert(
            "jku".into(),
            json!(format!("{}/.well-known/jwks.json", m.app.origin())),
        );
    });
    m.refused(
        &mint(&m.key, &header, &m.claims),
        "jku pointing at the server",
    )
    .await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn unknown_path_like_and_missing_kids_are_refused() {
    let m = Minting::start().await;
    let unknown = Key::ed25519().thumbprint();
    let kids: [(&str, Value); 11] = [
        ("unknown thumbprint", json!(unknown)),
        ("path traversal", json!("../../../../etc/passwd")),
        ("absolute path", json!("/dev/null")),
        ("SQL injection", json!("' OR '1'='1")),
        ("empty", json!("")),
        ("server kid with a suffix", json!(format!("{}x", m.kid))),
        ("server kid in upper case", json!(m.kid.to_uppercase())),
        ("server kid with a NUL", json!(format!("{}\u{0}", m.kid))),
        ("a number", json!(1)),
        ("an array", json!([m.kid.clone()])),
        ("null", Value::Null),
    ];
    for (what, kid) in &kids {
        let header = m.header_with(|h| {
            h.insert("kid".into(), kid.clone());
        });
        // Signed by the server's key: only the kid is wrong.
        m.refused(&mint(&m.key, &header, &m.claims), &format!("kid {what}"))
            .await;
    }
    let header = m.header_with(|h| {
        h.remove("kid");
    });
    m.refused(&mint(&m.key, &header, &m.claims), "no kid").await;
    m.legit_still_works().await;
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_of_another_deployment_is_refused() {
    let m = Minting::start().await;
    let other = TestApp::spawn().await;
    let stranger = other.create_user().await;
    let foreign = password_grant(&other, &stranger).await;
    let (_, p, _) = split3(&foreign);
    let foreign_claims = decode_json(p);
    // Control: it is a good token where it was issued.
    assert_accepted(&other, &foreign, &foreign_claims, "at home").await;
    m.refused(&foreign, "another deployment's token").await;

    // A second deployment sharing the very same key file: known kid, good
    // signature, but another issuer and audience, and sessions this one
    // never saw.
    let twin_dir = tempfile::tempdir().expect("tempdir");
    let twin_key = twin_dir.path().join("signing.pem");
    std::fs::write(&twin_key, m.key.pkcs8_pem()).expect("key file");
    let twin = TestApp::spawn_with(|c| c.signing_key_file = Some(twin_key)).await;
    let twin_user = twin.create_user().await;
    let twin_token = password_grant(&twin, &twin_user).await;
    assert_eq!(decode_json(split3(&twin_token).0)["kid"], m.kid);
    m.refused(&twin_token, "same key, another deployment").await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn wrong_issuer_audience_or_type_is_refused() {
    let m = Minting::start().await;
    let origin = m.app.origin();
    assert_eq!(m.claims["iss"], origin.as_str());
    let issuers = [
        json!(format!("{origin}/")),
        json!("https://attacker.example"),
        json!(origin.to_uppercase()),
        json!(""),
        json!([origin.clone()]),
        Value::Null,
    ];
    for iss in issuers {
        let claims = m.claims_with(|c| {
            c.insert("iss".into(), iss.clone());
        });
        m.refused(&m.mint_claims(&claims), &format!("iss {iss}"))
            .await;
    }
    let audiences = [
        json!("https://api.attacker.example"),
        json!(format!("{origin}/")),
        json!(["https://api.attacker.example"]),
        json!([]),
        json!(""),
        Value::Null,
    ];
    for aud in audiences {
        let claims = m.claims_with(|c| {
            c.insert("aud".into(), aud.clone());
        });
        m.refused(&m.mint_claims(&claims), &format!("aud {aud}"))
            .await;
    }
    for typ in [json!("JWT"), json!("jwt"), json!("at+jwt "), Value::Null] {
        let header = m.header_with(|h| {
            h.insert("typ".into(), typ.clone());
        });
        m.refused(&mint(&m.key, &header, &m.claims), &format!("typ {typ}"))
            .await;
    }
    let header = m.header_with(|h| {
        h.remove("typ");
    });
    m.refused(&mint(&m.key, &header, &m.claims), "typ missing")
        .await;
    // Every claim the profile requires (RFC 9068 §2.2) must be there.
    for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "sid"] {
        let claims = m.claims_with(|c| {
            c.remove(claim);
        });
        m.refused(&m.mint_claims(&claims), &format!("{claim} missing"))
            .await;
    }
    m.legit_still_works().await;
}

#[tokio::test]
async fn times_beyond_the_leeway_are_refused() {
    let m = Minting::start().await;
    let t = now();
    let cases: [(&str, &[(&str, Value)]); 7] = [
        (
            "exp 60 s ago",
            &[("exp", json!(t - 60)), ("iat", json!(t - 120))],
        ),
        (
            "exp 31 s ago",
            &[("exp", json!(t - 31)), ("iat", json!(t - 120))],
        ),
        ("exp 0", &[("exp", json!(0)), ("iat", json!(0))]),
        ("nbf 60 s ahead", &[("nbf", json!(t + 60))]),
        ("iat 60 s ahead", &[("iat", json!(t + 60))]),
        ("exp as a string", &[("exp", json!((t + 60).to_string()))]),
        ("exp as a float", &[("exp", json!(1e300))]),
    ];
    for (what, changes) in cases {
        let claims = m.claims_with(|c| {
            for (k, v) in changes {
                c.insert((*k).to_owned(), v.clone());
            }
        });
        m.refused(&m.mint_claims(&claims), what).await;
    }
    m.legit_still_works().await;
}

/// `exp - iat` longer than `access_token_ttl` plus the leeway: a token the
/// server would never issue, whoever signed it (API.md, "Tokens").
#[tokio::test]
async fn a_lifetime_over_the_ttl_plus_leeway_is_refused_even_when_signed_with_the_server_key() {
    let m = Minting::start().await;
    let cap = i64::try_from((m.app.config.access_token_ttl + m.app.config.jwt_leeway).as_secs())
        .expect("seconds");
    assert_eq!(cap, 330, "the defaults: 5 min and 30 s");
    let t = now();
    let lasting = |iat: i64, exp: i64| {
        m.claims_with(|c| {
            c.insert("jti".into(), json!(uuid::Uuid::now_v7().to_string()));
            c.insert("iat".into(), json!(iat));
            c.insert("exp".into(), json!(exp));
        })
    };
    // Control: exactly at the cap is accepted.
    let at_cap = lasting(t - 10, t - 10 + cap);
    assert_accepted(
        &m.app,
        &m.mint_claims(&at_cap),
        &at_cap,
        "lifetime at the cap",
    )
    .await;
    for (what, claims) in [
        ("30 days from now", lasting(t, t + 30 * 86_400)),
        (
            "issued 30 days ago, 60 s left",
            lasting(t - 30 * 86_400, t + 60),
        ),
        ("one second over the cap", lasting(t - 10, t - 10 + cap + 1)),
        ("iat at i64::MIN", lasting(i64::MIN, t + 60)),
    ] {
        m.refused(&m.mint_claims(&claims), &format!("lifetime {what}"))
            .await;
    }
    m.legit_still_works().await;
}

#[tokio::test]
async fn the_lifetime_cap_follows_the_configured_ttl() {
    let m = Minting::start_with(Key::ed25519(), |c| {
        c.access_token_ttl = Duration::from_secs(2 * 3600);
        c.jwt_leeway = Duration::from_secs(5);
    })
    .await;
    let lifetime = m.claims["exp"].as_i64().expect("exp") - m.claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 2 * 3600, "issued under the configured ttl");
    let t = now();
    let lasting = |secs: i64| {
        m.claims_with(|c| {
            c.insert("iat".into(), json!(t));
            c.insert("exp".into(), json!(t + secs));
        })
    };
    let two_hours = lasting(2 * 3600 + 5);
    assert_accepted(
        &m.app,
        &m.mint_claims(&two_hours),
        &two_hours,
        "ttl + leeway",
    )
    .await;
    m.refused(&m.mint_claims(&lasting(2 * 3600 + 6)), "ttl + leeway + 1 s")
        .await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn ended_session_or_another_users_subject_is_refused() {
    let m = Minting::start().await;

    // A second session of the same user: its minted token works, then the
    // session ends and both its issued and minted tokens stop working.
    let second = password_grant(&m.app, &m.user).await;
    let second_claims = decode_json(split3(&second).1);
    assert_ne!(second_claims["sid"], m.claims["sid"]);
    let minted = m.mint_claims(&second_claims);
    assert_accepted(&m.app, &minted, &second_claims, "second session").await;
    let res = m
        .app
        .bare_client()
        .post(m.app.url("/v1/logout"))
        .header("Authorization", format!("Bearer {second}"))
        .send()
        .await
        .expect("POST /v1/logout");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    m.refused(&second, "issued token of an ended session").await;
    m.refused(&minted, "minted token of an ended session").await;
    let mut fresh = second_claims.clone();
    fresh["jti"] = json!(uuid::Uuid::now_v7().to_string());
    fresh["iat"] = json!(now());
    m.refused(
        &m.mint_claims(&fresh),
        "freshly minted token of an ended session",
    )
    .await;
    let unknown_sid = m.claims_with(|c| {
        c.insert("sid".into(), json!(uuid::Uuid::now_v7().to_string()));
    });
    m.refused(&m.mint_claims(&unknown_sid), "unknown sid").await;

    // Another user's subject with this user's live session, and the reverse.
    let bob = m.app.create_user().await;
    let bob_token = password_grant(&m.app, &bob).await;
    let bob_claims = decode_json(split3(&bob_token).1);
    let swapped = m.claims_with(|c| {
        c.insert("sub".into(), bob_claims["sub"].clone());
    });
    m.refused(&m.mint_claims(&swapped), "another user's sub, our sid")
        .await;
    let swapped = m.claims_with(|c| {
        c.insert("sid".into(), bob_claims["sid"].clone());
    });
    m.refused(&m.mint_claims(&swapped), "our sub, another user's sid")
        .await;
    for (what, sub) in [("not a UUID", json!("admin")), ("a number", json!(1))] {
        let claims = m.claims_with(|c| {
            c.insert("sub".into(), sub.clone());
        });
        m.refused(&m.mint_claims(&claims), &format!("sub {what}"))
            .await;
    }
    m.legit_still_works().await;
    assert_accepted(&m.app, &bob_token, &bob_claims, "bob's own token").await;
}

// ---------------------------------------------------------------------------
// Size and shape
// ---------------------------------------------------------------------------

/// RFC 7515 §4 and RFC 7519 §4: a parser must refuse duplicate member names
/// or keep the last; a verifier that keeps the last one and another that
/// keeps the first read different tokens. gatehouse refuses them, at any
/// depth, even under a genuine signature. `serde_json::Value` cannot hold a
/// duplicate, so these segments are written as text.
#[tokio::test]
async fn duplicate_header_members_are_refused_even_when_signed_with_the_server_key() {
    let m = Minting::start().await;
    let kid = &m.kid;
    let p = b64(m.claims.to_string());
    // Control: the server's header written as text, signed by its key.
    let plain = format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#);
    assert_accepted(
        &m.app,
        &mint_raw(&m.key, &b64(&plain), &p),
        &m.claims,
        "the header as text",
    )
    .await;
    for (what, header) in [
        (
            "alg twice, the last one right",
            format!(r#"{{"alg":"HS256","alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "alg twice, the first one right",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","alg":"none"}}"#),
        ),
        (
            "kid twice, the last one ours",
            format!(r#"{{"alg":"EdDSA","kid":"attacker","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "kid twice, the same value",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","kid":"{kid}"}}"#),
        ),
        (
            "alg twice, once spelt with an escape",
            format!(r#"{{"alg":"HS256","\u0061lg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "a duplicate inside a nested object",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","x-ext":{{"a":1,"a":2}}}}"#),
        ),
    ] {
        m.refused(
            &mint_raw(&m.key, &b64(&header), &p),
            &format!("header: {what}"),
        )
        .await;
    }
    m.legit_still_works().await;
}

#[tokio::test]
async fn duplicate_claims_are_refused_at_any_depth_even_when_signed_with_the_server_key() {
    let m = Minting::start().await;
    let h = b64(m.header.to_string());
    let claims = m.claims.to_string();
    let body = claims.strip_prefix('{').expect("claims are an object");
    let bob = m.app.create_user().await;
    let bob_claims = decode_json(split3(&password_grant(&m.app, &bob).await).1);
    for (what, first) in [
        ("sub twice", format!(r#""sub":{}"#, bob_claims["sub"])),
        ("exp twice", format!(r#""exp":{}"#, now() + 30 * 86_400)),
        (
            "an unknown claim twice",
            r#""x-ext":1,"x-ext":2"#.to_owned(),
        ),
        (
            "a duplicate inside a nested object",
            r#""x-ext":{"a":1,"a":2}"#.to_owned(),
        ),
        (
            "a duplicate inside an array's object",
            r#""x-ext":[{"a":[{"b":1,"b":1}]}]"#.to_owned(),
        ),
    ] {
        let payload = b64(format!("{{{first},{body}"));
        m.refused(&mint_raw(&m.key, &h, &payload), &format!("claims: {what}"))
            .await;
    }
    // The same name in sibling objects is no duplicate.
    let siblings = m.claims_with(|c| {
        c.insert(
            "x-ext".into(),
            json!({"a": {"n": 1}, "b": [{"n": 1}, {"n": 1}]}),
        );
    });
    assert_accepted(
        &m.app,
        &m.mint_claims(&siblings),
        &siblings,
        "sibling objects",
    )
    .await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn oversized_token_is_a_401_not_413_or_500() {
    let m = Minting::start().await;
    let claims = m.claims_with(|c| {
        c.insert("pad".into(), json!("x".repeat(54 * 1024)));
    });
    let token = m.mint_claims(&claims);
    assert!(token.len() > 70 * 1024, "{}", token.len());
    assert!(token.len() < 80 * 1024, "{}", token.len());
    m.refused(&token, "70 KB token").await;
    m.legit_still_works().await;
}

#[tokio::test]
async fn segments_that_are_not_json_objects_are_refused() {
    let m = Minting::start().await;
    let h = b64(m.header.to_string());
    let p = b64(m.claims.to_string());
    // Validly signed by the server key, payload not a claims object.
    for payload in ["[]", r#""x""#, "1", "null", "true", "{", "", "{}"] {
        m.refused(
            &mint_raw(&m.key, &h, &b64(payload)),
            &format!("payload {payload:?}"),
        )
        .await;
    }
    // Header not a JSON object (signed over it all the same).
    for header in ["[]", r#""x""#, "1", "null", "{", ""] {
        m.refused(
            &mint_raw(&m.key, &b64(header), &p),
            &format!("header {header:?}"),
        )
        .await;
    }
    let (sh, sp, ss) = split3(&m.token);
    let shapes = [
        ("header not base64", format!("!!!.{sp}.{ss}")),
        ("payload not base64", format!("{sh}.*{sp}.{ss}")),
        ("signature not base64", format!("{sh}.{sp}.{ss}*")),
        (
            "payload in standard base64 with padding",
            format!("{sh}.{}.{ss}", STANDARD.encode(m.claims.to_string())),
        ),
        ("two parts", format!("{sh}.{sp}")),
        ("four parts", format!("{sh}.{sp}.{ss}.{ss}")),
        (
            "five parts (JWE-shaped)",
            format!("{sh}.{sp}.{ss}.{ss}.{ss}"),
        ),
        ("one part", sh.to_owned()),
        ("dots only", "..".to_owned()),
        ("empty segments", format!("..{ss}")),
        ("whitespace inside", format!("{sh}. {sp}.{ss}")),
    ];
    for (what, token) in &shapes {
        m.refused(token, what).await;
    }
    m.legit_still_works().await;
}

/// An `Authorization: Bearer` header without a token presents no token, so
/// RFC 6750 §3.1 wants no error code in the challenge; but it is still a
/// 401, and a valid session cookie alongside does not rescue the request.
#[tokio::test]
async fn empty_or_bad_bearer_token_is_a_401_even_with_a_valid_cookie() {
    let m = Minting::start().await;
    let res = me_with(&m.app, "").await;
    assert_problem(res, StatusCode::UNAUTHORIZED).await;

    let (_, browser) = m.app.logged_in().await;
    assert_eq!(m.app.get_me(&browser).await.status(), StatusCode::OK);
    for value in ["Bearer ", "Bearer", "Bearer    "] {
        let res = browser
            .get(m.app.url("/v1/me"))
            .header("Authorization", value)
            .send()
            .await
            .expect("GET /v1/me");
        assert_problem(res, StatusCode::UNAUTHORIZED).await;
    }
    let (h, p, _) = split3(&m.token);
    let res = browser
        .get(m.app.url("/v1/me"))
        .header("Authorization", format!("Bearer {h}.{p}."))
        .send()
        .await
        .expect("GET /v1/me");
    let challenge = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_problem(res, StatusCode::UNAUTHORIZED).await;
    m.legit_still_works().await;
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
