//! Forgeries and garbage: `alg: none`, keys from the header, algorithm
//! confusion, and thousands of random or mutated tokens, none of which may
//! pass or panic.

use std::time::Duration;

use gatehouse_verify::{Algorithm, Verifier, VerifyError};
use serde_json::json;

use crate::common::{self, ManualClock, Mock, T0, TestKey, b64};

async fn verifier_with(keys: &[&TestKey]) -> (Mock, Verifier, ManualClock) {
    let mock = Mock::start().await;
    mock.serve_keys(keys);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    verifier.refresh_keys().await.expect("keys");
    (mock, verifier, clock)
}

#[tokio::test]
async fn unsecured_tokens_are_refused_in_every_spelling() {
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let (mock, verifier, clock) = verifier_with(&[&key]).await;
    let payload = b64(common::claims(&mock.base, clock.secs()).to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "kid": "k1", "typ": "at+jwt"}).to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.{}", b64("x")),
        ] {
            let verdict = verifier.verify(&token).await;
            assert!(
                matches!(
                    verdict,
                    Err(VerifyError::WrongAlgorithm | VerifyError::Malformed)
                ),
                "{alg}: {verdict:?}"
            );
        }
        let header = b64(json!({"alg": alg, "kid": "k1", "typ": "at+jwt"}).to_string());
        assert_eq!(
            verifier.verify(&format!("{header}.{payload}.")).await,
            Err(VerifyError::WrongAlgorithm)
        );
    }
}

#[tokio::test]
async fn a_key_carried_in_the_header_is_never_used() {
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let (mock, verifier, clock) = verifier_with(&[&key]).await;
    let attacker = TestKey::generate(Algorithm::EdDSA, "k1");
    let claims = common::claims(&mock.base, clock.secs());
    for param in ["jwk", "jku", "x5u", "x5c"] {
        let mut header = attacker.header();
        header[param] = match param {
            "jwk" => attacker.jwk.clone(),
            "x5c" => json!(["MIIB"]),
            _ => json!("https://attacker.example/jwks.json"),
        };
        assert_eq!(
            verifier.verify(&attacker.sign(&header, &claims)).await,
            Err(VerifyError::ForbiddenHeader),
            "{param}"
        );
    }
    // The attacker's key under the real kid, without any header trick.
    assert_eq!(
        verifier.verify(&attacker.mint(&claims)).await,
        Err(VerifyError::BadSignature)
    );
}

#[tokio::test]
async fn a_public_key_used_as_an_hmac_secret_is_refused() {
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let mock = Mock::start().await;
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    // Even a verifier that also accepts HS256 binds the kid to its EdDSA key.
    let verifier = mock
        .builder(&clock)
        .hs256_secret([9u8; 32])
        .build()
        .expect("verifier");
    verifier.refresh_keys().await.expect("keys");
    let x = key.jwk["x"].as_str().expect("x");
    let forger = TestKey::hs256(x.as_bytes()).renamed("k1");
    let claims = common::claims(&mock.base, clock.secs());
    assert_eq!(
        verifier.verify(&forger.mint(&claims)).await,
        Err(VerifyError::WrongAlgorithm)
    );
    // And a verifier for EdDSA alone refuses the algorithm outright.
    let ed_only = mock
        .builder(&clock)
        .algorithms(&[Algorithm::EdDSA])
        .build()
        .expect("verifier");
    assert_eq!(
        ed_only.verify(&forger.mint(&claims)).await,
        Err(VerifyError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn tampering_with_any_part_breaks_the_signature() {
    let key = TestKey::generate(Algorithm::ES256, "k1");
    let (mock, verifier, clock) = verifier_with(&[&key]).await;
    let mut claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);
    verifier.verify(&token).await.expect("valid");
    let parts: Vec<&str> = token.split('.').collect();
    // Promote the user: same header and signature, new payload.
    claims["scope"] = json!("gatehouse:admin");
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_eq!(
        verifier.verify(&forged).await,
        Err(VerifyError::BadSignature)
    );
    // Header kid swap keeps the signature but changes the signed bytes.
    let header = b64(r#"{"kid":"k1","alg":"ES256","typ":"at+jwt"}"#);
    assert_ne!(header, parts[0]);
    let reordered = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        verifier.verify(&reordered).await,
        Err(VerifyError::BadSignature)
    );
    // A padded signature is not base64url-no-pad.
    assert_eq!(
        verifier.verify(&format!("{token}=")).await,
        Err(VerifyError::BadSignature)
    );
}

/// xorshift64*: deterministic noise, so a failure reproduces.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("u64")).expect("usize")
    }
}

#[tokio::test]
async fn random_and_mutated_tokens_are_refused_without_panic() {
    let keys = [
        TestKey::generate(Algorithm::EdDSA, "ed"),
        TestKey::generate(Algorithm::ES256, "es"),
        TestKey::generate(Algorithm::RS256, "rs"),
    ];
    let (mock, verifier, clock) = verifier_with(&keys.iter().collect::<Vec<_>>()).await;
    let claims = common::claims(&mock.base, clock.secs());
    let valid: Vec<String> = keys.iter().map(|k| k.mint(&claims)).collect();
    for t in &valid {
        verifier.verify(t).await.expect("valid");
    }
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
    let mut refused = 0;
    for round in 0..3000 {
        let candidate = match round % 4 {
            // Random text over the token alphabet and some more.
            0 => {
                let len = noise.below(400);
                (0..len)
                    .map(|_| char::from(alphabet[noise.below(alphabet.len())]))
                    .collect::<String>()
            }
            // A valid token with one byte changed.
            1 => {
                let mut t = valid[noise.below(valid.len())].clone().into_bytes();
                let i = noise.below(t.len());
                t[i] = alphabet[noise.below(alphabet.len())];
                String::from_utf8(t).expect("ascii")
            }
            // A valid token cut short or extended.
            2 => {
                let t = &valid[noise.below(valid.len())];
                if noise.next().is_multiple_of(2) {
                    t[..noise.below(t.len())].to_owned()
                } else {
                    format!("{t}{}", char::from(alphabet[noise.below(alphabet.len())]))
                }
            }
            // Parts of different valid tokens spliced together.
            _ => {
                let pick = |n: &mut Noise| valid[n.below(valid.len())].clone();
                let (a, b, c) = (pick(&mut noise), pick(&mut noise), pick(&mut noise));
                let part = |t: &str, i: usize| t.split('.').nth(i).unwrap_or_default().to_owned();
                format!("{}.{}.{}", part(&a, 0), part(&b, 1), part(&c, 2))
            }
        };
        if valid.contains(&candidate) {
            continue;
        }
        let verdict = verifier.verify(&candidate).await;
        assert!(verdict.is_err(), "accepted a mangled token: {candidate}");
        refused += 1;
    }
    assert!(refused > 2500);
    // Oversized garbage and non-ASCII.
    for t in [
        "é.é.é".to_owned(),
        "\0.\0.\0".to_owned(),
        "a".repeat(100_000),
    ] {
        assert!(verifier.verify(&t).await.is_err());
    }
    // Made-up kids among the noise cost at most one fetch per interval.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(mock.fetches() <= 2, "fetches: {}", mock.fetches());
}
