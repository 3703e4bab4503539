//! The shared access-token vectors (`testdata/access-tokens.json`, written
//! by `cargo run --example make_token_vectors`): every case must get exactly
//! its verdict from the server's rules. `gatehouse-verify` runs the same
//! file, so the server and the library for resource servers agree on every
//! token.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse::auth::keys::KeyRing;
use gatehouse::auth::tokens::{TokenSettings, validate_access_token};
use gatehouse::auth::types::SessionId;
use gatehouse::config::{JwtAlg, SecretBytes};
use jsonwebtoken::jwk::Jwk;
use serde_json::Value;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/access-tokens.json"
);

fn alg(name: &str) -> JwtAlg {
    match name {
        "EdDSA" => JwtAlg::EdDsa,
        "ES256" => JwtAlg::Es256,
        "RS256" => JwtAlg::Rs256,
        "HS256" => JwtAlg::Hs256,
        other => panic!("a vector names an unknown algorithm {other:?}"),
    }
}

#[test]
fn every_shared_vector_gets_its_verdict_from_the_server() {
    let text = std::fs::read_to_string(VECTORS).unwrap_or_else(|e| {
        panic!("{VECTORS}: {e}; regenerate it with `cargo run --example make_token_vectors`")
    });
    let doc: Value = serde_json::from_str(&text).expect("the vectors are JSON");
    let jwks: Vec<Jwk> =
        serde_json::from_value(doc["jwks"]["keys"].clone()).expect("the vectors' JWKS");
    let secret = SecretBytes::new(
        STANDARD
            .decode(doc["hs256_secret"].as_str().expect("hs256_secret"))
            .expect("base64"),
    );
    let settings = TokenSettings {
        issuer: doc["issuer"].as_str().expect("issuer").to_owned(),
        audience: doc["audience"].as_str().expect("audience").to_owned(),
        access_token_ttl: Duration::from_secs(
            doc["access_token_ttl_secs"]
                .as_u64()
                .expect("access_token_ttl_secs"),
        ),
        leeway: Duration::from_secs(doc["leeway_secs"].as_u64().expect("leeway_secs")),
        refresh_reuse_grace: Duration::ZERO,
    };
    let now = doc["now"].as_i64().expect("now");
    let revoked: Vec<SessionId> = doc["revoked_sids"]
        .as_array()
        .expect("revoked_sids")
        .iter()
        .map(|s| SessionId::parse(s.as_str().expect("a sid")).expect("a UUID"))
        .collect();
    let cases = doc["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 100,
        "the vectors lost cases: {}",
        cases.len()
    );

    let mut wrong = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let ring = KeyRing::for_verification(
            alg(case["alg"].as_str().expect("alg")),
            &jwks,
            Some(&secret),
        )
        .expect("a ring");
        let token = case["token"].as_str().expect("token");
        let expect = case["expect"].as_str().expect("expect");
        let got = validate_access_token(token, &ring, &settings, now, |sid| revoked.contains(&sid));
        match (&got, expect) {
            (Ok(v), "valid") => {
                let want = &case["claims"];
                let roles: Vec<String> = want["roles"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .map(|x| x.as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let same = v.claims.sub == want["sub"]
                    && v.claims.sid.as_deref() == want["sid"].as_str()
                    && v.claims.credential_id.as_deref() == want["credential_id"].as_str()
                    && v.claims.client_id.as_deref() == want["client_id"].as_str()
                    && v.claims.jti == want["jti"]
                    && v.claims.scope == want["scope"]
                    && v.claims.exp == want["exp"]
                    && v.claims.iat == want["iat"]
                    && v.claims.roles == roles;
                if !same {
                    wrong.push(format!(
                        "{name}: valid, but the claims read back differ: {:?}",
                        v.claims
                    ));
                }
            }
            (Err(e), code) if e.code() == code => {}
            _ => wrong.push(format!(
                "{name}: expected {expect}, got {}",
                got.as_ref().map_or_else(|e| e.code(), |_| "valid")
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} vectors disagree:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
