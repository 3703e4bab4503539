//! Writes `testdata/access-tokens.json`: access tokens, valid and hostile,
//! each with the verdict gatehouse's rules give it, for both the server's
//! tests and `gatehouse-verify`'s, so the two validators cannot drift apart.
//!
//! Keys are generated afresh on every run and only their public halves (and
//! the HS256 test secret) are written; the private keys are thrown away.
//!
//! ```sh
//! cargo run --example make_token_vectors
//! ```
//!
//! A verdict here is what the rules say, not what the code does: after
//! regenerating, `cargo test --test api vectors` must pass unchanged.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse::auth::keys::generate_signing_key;
use gatehouse::config::JwtAlg;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const ISSUER: &str = "https://auth.vectors.test";
const AUDIENCE: &str = "https://api.vectors.test";
/// 2027-01-15T08:00:00Z: every time claim is relative to it.
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;
/// The server's `access_token_ttl` (its default): with [`LEEWAY`], the
/// longest `exp - iat` accepted.
const TTL: i64 = 300;
const SUB: &str = "0190f3a0-7c2e-7d41-9a3b-5e6f7a8b9c0d";
const SID: &str = "0190f3a1-1111-7222-8333-944455556666";
const REVOKED_SID: &str = "0190f3a1-dead-7bee-8fac-0123456789ab";
/// A client, and the credentials (secrets) of its own tokens: one live, one
/// revoked (its secret rotated).
const CLIENT: &str = "0190f3a3-c11e-7e47-8aaa-0123456789ab";
const CREDENTIAL: &str = "5f0c2a9e-3b1d-8c4e-9f00-112233445566";
const REVOKED_CREDENTIAL: &str = "5f0c2a9e-dead-8bee-9fac-0123456789ab";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The claims of a token gatehouse would issue at [`NOW`].
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": SUB,
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "iat": NOW - 10,
        "jti": "0190f3a2-2222-7333-8444-955566667777",
        "sid": SID,
        "scope": "orders:read orders:write",
        "roles": ["support"],
    })
}

/// A signing key and how tokens name it.
struct Signer {
    alg: Algorithm,
    name: &'static str,
    kid: String,
    key: EncodingKey,
}

impl Signer {
    fn header(&self) -> Value {
        json!({ "alg": self.name, "kid": self.kid, "typ": "at+jwt" })
    }

    /// A compact JWS over exactly these header and payload bytes.
    fn sign_raw(&self, header: &[u8], payload: &[u8]) -> anyhow::Result<String> {
        let message = format!("{}.{}", b64(header), b64(payload));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.alg)
            .context("signing")?;
        Ok(format!("{message}.{signature}"))
    }

    fn sign(&self, header: &Value, claims: &Value) -> anyhow::Result<String> {
        self.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    fn token(&self, claims: &Value) -> anyhow::Result<String> {
        self.sign(&self.header(), claims)
    }
}

struct Cases(Vec<Value>);

impl Cases {
    fn add(&mut self, name: &str, alg: &str, token: String, expect: &str) {
        self.0
            .push(json!({ "name": name, "alg": alg, "token": token, "expect": expect }));
    }

    fn valid(&mut self, name: &str, alg: &str, token: String, claims: &Value) {
        self.0.push(json!({
            "name": name, "alg": alg, "token": token, "expect": "valid", "claims": claims,
        }));
    }
}

fn with(mut base: Value, changes: &[(&str, Value)]) -> Value {
    for (k, v) in changes {
        base[*k] = v.clone();
    }
    base
}

fn without(mut base: Value, key: &str) -> Value {
    if let Some(map) = base.as_object_mut() {
        map.remove(key);
    }
    base
}

fn generated(
    alg: JwtAlg,
    algorithm: Algorithm,
    name: &'static str,
) -> anyhow::Result<(Signer, Value)> {
    let (key, jwk) = generate_signing_key(alg)?;
    let kid = jwk.common.key_id.clone().context("a kid")?;
    Ok((
        Signer {
            alg: algorithm,
            name,
            kid,
            key,
        },
        serde_json::to_value(&jwk)?,
    ))
}

fn main() -> anyhow::Result<()> {
    let (eddsa, eddsa_jwk) = generated(JwtAlg::EdDsa, Algorithm::EdDSA, "EdDSA")?;
    let (es256, es256_jwk) = generated(JwtAlg::Es256, Algorithm::ES256, "ES256")?;
    let (rs256, rs256_jwk) = generated(JwtAlg::Rs256, Algorithm::RS256, "RS256")?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    // gatehouse names its HS256 key by the secret's digest.
    let digest = Sha256::digest(secret);
    let hs_kid = format!(
        "hs256-{}",
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let hs256 = Signer {
        alg: Algorithm::HS256,
        name: "HS256",
        kid: hs_kid,
        key: EncodingKey::from_secret(&secret),
    };
    let mut cases = Cases(Vec::new());
    let c = claims();

    // Per algorithm: valid, another key under the same kid, a tampered
    // payload, a revoked session.
    for (signer, other) in [
        (
            &eddsa,
            generated(JwtAlg::EdDsa, Algorithm::EdDSA, "EdDSA")?.0,
        ),
        (
            &es256,
            generated(JwtAlg::Es256, Algorithm::ES256, "ES256")?.0,
        ),
        (
            &rs256,
            generated(JwtAlg::Rs256, Algorithm::RS256, "RS256")?.0,
        ),
        (
            &hs256,
            Signer {
                alg: Algorithm::HS256,
                name: "HS256",
                kid: hs256.kid.clone(),
                key: EncodingKey::from_secret(b"another secret of thirty-two bytes!"),
            },
        ),
    ] {
        let alg = signer.name;
        let lower = alg.to_ascii_lowercase();
        cases.valid(&format!("{lower}_valid"), alg, signer.token(&c)?, &c);
        let forged = Signer {
            kid: signer.kid.clone(),
            ..other
        };
        cases.add(
            &format!("{lower}_signed_by_another_key_under_our_kid"),
            alg,
            forged.token(&c)?,
            "bad_signature",
        );
        let token = signer.token(&c)?;
        let mut parts: Vec<&str> = token.split('.').collect();
        let more = b64(with(c.clone(), &[("scope", json!("gatehouse:admin"))])
            .to_string()
            .as_bytes());
        parts[1] = &more;
        cases.add(
            &format!("{lower}_payload_changed_after_signing"),
            alg,
            parts.join("."),
            "bad_signature",
        );
        cases.add(
            &format!("{lower}_revoked_session"),
            alg,
            signer.token(&with(c.clone(), &[("sid", json!(REVOKED_SID))]))?,
            "revoked",
        );
    }

    let ed = |claims: &Value| eddsa.token(claims);
    let header = eddsa.header();

    // Claims that are still valid.
    for (name, claims) in [
        (
            "valid_aud_array",
            with(
                c.clone(),
                &[("aud", json!(["https://other.test", AUDIENCE]))],
            ),
        ),
        (
            "valid_exp_inside_the_leeway",
            with(c.clone(), &[("exp", json!(NOW - LEEWAY + 1))]),
        ),
        (
            "valid_nbf_at_the_leeway",
            with(c.clone(), &[("nbf", json!(NOW + LEEWAY))]),
        ),
        (
            "valid_iat_at_the_leeway",
            with(c.clone(), &[("iat", json!(NOW + LEEWAY))]),
        ),
        ("valid_without_roles", without(c.clone(), "roles")),
        (
            "valid_with_unknown_claims",
            with(c.clone(), &[("foo", json!({"bar": [1, 2]}))]),
        ),
        (
            "valid_with_empty_scope",
            with(c.clone(), &[("scope", json!(""))]),
        ),
        (
            "valid_with_amr_of_a_second_factor",
            with(c.clone(), &[("amr", json!(["pwd", "otp", "mfa"]))]),
        ),
        (
            "valid_with_amr_of_a_passkey",
            with(c.clone(), &[("amr", json!(["hwk", "user", "mfa"]))]),
        ),
    ] {
        cases.valid(name, "EdDSA", ed(&claims)?, &claims);
    }
    for (name, typ) in [
        ("valid_typ_with_media_prefix", "application/at+jwt"),
        ("valid_typ_upper_case", "AT+JWT"),
    ] {
        let token = eddsa.sign(&with(header.clone(), &[("typ", json!(typ))]), &c)?;
        cases.valid(name, "EdDSA", token, &c);
    }

    // Time.
    for (name, claims, expect) in [
        (
            "expired_at_the_leeway",
            with(c.clone(), &[("exp", json!(NOW - LEEWAY))]),
            "expired",
        ),
        (
            "expired_an_hour_ago",
            with(c.clone(), &[("exp", json!(NOW - 3600))]),
            "expired",
        ),
        (
            "not_yet_valid_past_the_leeway",
            with(c.clone(), &[("nbf", json!(NOW + LEEWAY + 1))]),
            "not_yet_valid",
        ),
        (
            "issued_in_the_future_past_the_leeway",
            with(c.clone(), &[("iat", json!(NOW + LEEWAY + 1))]),
            "issued_in_future",
        ),
        (
            "exp_at_i64_min",
            with(c.clone(), &[("exp", json!(i64::MIN))]),
            "expired",
        ),
        (
            "nbf_at_i64_max",
            with(c.clone(), &[("nbf", json!(i64::MAX))]),
            "not_yet_valid",
        ),
    ] {
        cases.add(name, "EdDSA", ed(&claims)?, expect);
    }

    // Lifetime: exp - iat at most the ttl plus the leeway, whoever signed.
    let iat = c["iat"].as_i64().context("iat")?;
    let at_the_cap = with(c.clone(), &[("exp", json!(iat + TTL + LEEWAY))]);
    cases.valid(
        "valid_lifetime_at_the_cap",
        "EdDSA",
        ed(&at_the_cap)?,
        &at_the_cap,
    );
    for (name, claims) in [
        (
            "lifetime_one_second_over_the_cap",
            with(c.clone(), &[("exp", json!(iat + TTL + LEEWAY + 1))]),
        ),
        (
            "lifetime_of_thirty_days",
            with(c.clone(), &[("exp", json!(iat + 30 * 86_400))]),
        ),
        (
            "lifetime_of_thirty_days_issued_in_the_past",
            with(
                c.clone(),
                &[("iat", json!(NOW - 30 * 86_400)), ("exp", json!(NOW + 60))],
            ),
        ),
        (
            "iat_at_i64_min",
            with(c.clone(), &[("iat", json!(i64::MIN))]),
        ),
        (
            "exp_at_i64_max",
            with(c.clone(), &[("exp", json!(i64::MAX))]),
        ),
    ] {
        cases.add(name, "EdDSA", ed(&claims)?, "lifetime_too_long");
    }
    // Every signer's 30-day token, signed with its real key.
    for signer in [&es256, &rs256, &hs256] {
        cases.add(
            &format!(
                "{}_lifetime_of_thirty_days",
                signer.name.to_ascii_lowercase()
            ),
            signer.name,
            signer.token(&with(c.clone(), &[("exp", json!(iat + 30 * 86_400))]))?,
            "lifetime_too_long",
        );
    }

    // Issuer and audience.
    for (name, claims, expect) in [
        (
            "wrong_issuer",
            with(c.clone(), &[("iss", json!("https://evil.test"))]),
            "wrong_issuer",
        ),
        (
            "issuer_with_trailing_slash",
            with(c.clone(), &[("iss", json!(format!("{ISSUER}/")))]),
            "wrong_issuer",
        ),
        (
            "issuer_in_another_case",
            with(c.clone(), &[("iss", json!(ISSUER.to_uppercase()))]),
            "wrong_issuer",
        ),
        (
            "wrong_audience",
            with(c.clone(), &[("aud", json!("https://other.test"))]),
            "wrong_audience",
        ),
        (
            "audience_array_without_ours",
            with(
                c.clone(),
                &[("aud", json!(["https://a.test", "https://b.test"]))],
            ),
            "wrong_audience",
        ),
        (
            "empty_audience_array",
            with(c.clone(), &[("aud", json!([]))]),
            "wrong_audience",
        ),
    ] {
        cases.add(name, "EdDSA", ed(&claims)?, expect);
    }

    // A client's own token (client_credentials): no sid; sub = client_id;
    // the credential revoked like a session.
    let client = {
        let mut c = without(c.clone(), "sid");
        c = with(
            c,
            &[
                ("sub", json!(CLIENT)),
                ("client_id", json!(CLIENT)),
                ("credential_id", json!(CREDENTIAL)),
                ("aud", json!([CLIENT, AUDIENCE])),
                ("roles", json!(["reports"])),
                ("amr", json!(["pwd"])),
            ],
        );
        c
    };
    cases.valid("client_token_valid", "EdDSA", ed(&client)?, &client);
    for (name, claims, expect) in [
        (
            "client_token_revoked_credential",
            with(
                client.clone(),
                &[("credential_id", json!(REVOKED_CREDENTIAL))],
            ),
            "revoked",
        ),
        (
            "client_token_with_a_sid_too",
            with(client.clone(), &[("sid", json!(SID))]),
            "malformed",
        ),
        (
            "client_token_sub_not_its_client_id",
            with(client.clone(), &[("sub", json!(SUB))]),
            "malformed",
        ),
        (
            "client_token_without_client_id",
            without(client.clone(), "client_id"),
            "malformed",
        ),
        (
            "client_token_credential_not_a_uuid",
            with(client.clone(), &[("credential_id", json!("secret-1"))]),
            "malformed",
        ),
        (
            "client_token_credential_upper_case",
            with(
                client.clone(),
                &[("credential_id", json!(CREDENTIAL.to_uppercase()))],
            ),
            "malformed",
        ),
        (
            "client_token_credential_a_number",
            with(client.clone(), &[("credential_id", json!(7))]),
            "malformed",
        ),
        (
            "user_token_naming_a_revoked_credential_as_its_sid",
            with(c.clone(), &[("sid", json!(REVOKED_CREDENTIAL))]),
            "revoked",
        ),
    ] {
        cases.add(name, "EdDSA", ed(&claims)?, expect);
    }

    // Claims of the wrong shape (signed: only the shape is wrong).
    for (name, claims) in [
        ("missing_sid", without(c.clone(), "sid")),
        ("missing_jti", without(c.clone(), "jti")),
        // Without iat the lifetime cannot be judged (and we always send it).
        ("missing_iat", without(c.clone(), "iat")),
        ("missing_scope", without(c.clone(), "scope")),
        ("missing_exp", without(c.clone(), "exp")),
        (
            "exp_as_a_float",
            with(c.clone(), &[("exp", json!(1_800_000_300.5))]),
        ),
        (
            "exp_as_a_string",
            with(c.clone(), &[("exp", json!("1800000300"))]),
        ),
        ("aud_as_a_number", with(c.clone(), &[("aud", json!(7))])),
        (
            "roles_as_a_string",
            with(c.clone(), &[("roles", json!("support"))]),
        ),
        (
            "sub_upper_case",
            with(c.clone(), &[("sub", json!(SUB.to_uppercase()))]),
        ),
        (
            "sub_braced",
            with(c.clone(), &[("sub", json!(format!("{{{SUB}}}")))]),
        ),
        (
            "sub_without_hyphens",
            with(c.clone(), &[("sub", json!(SUB.replace('-', "")))]),
        ),
        (
            "sid_not_a_uuid",
            with(c.clone(), &[("sid", json!("session-1"))]),
        ),
        ("sid_sql", with(c.clone(), &[("sid", json!("' OR '1'='1"))])),
        // `amr` holds RFC 8176 values gatehouse records, each once.
        (
            "amr_naming_an_unknown_method",
            with(c.clone(), &[("amr", json!(["pwd", "sms"]))]),
        ),
        ("amr_as_a_string", with(c.clone(), &[("amr", json!("pwd"))])),
        (
            "amr_with_a_method_twice",
            with(c.clone(), &[("amr", json!(["pwd", "pwd"]))]),
        ),
    ] {
        cases.add(name, "EdDSA", ed(&claims)?, "malformed");
    }
    // Every claim, in the order of a struct's fields, as a JSON array: a
    // struct parser that also takes sequences would read it as claims.
    let in_order = json!([
        c["iss"], c["sub"], c["aud"], c["exp"], c["iat"], null, c["jti"], c["sid"], c["scope"],
        c["roles"]
    ]);
    for (name, payload) in [
        ("payload_not_json", b"not json at all".to_vec()),
        ("payload_a_json_array", br#"["iss","sub"]"#.to_vec()),
        (
            "payload_a_json_array_of_the_claims_in_order",
            in_order.to_string().into_bytes(),
        ),
        ("payload_a_json_string", br#""claims""#.to_vec()),
        ("payload_empty", Vec::new()),
    ] {
        let token = eddsa.sign_raw(header.to_string().as_bytes(), &payload)?;
        cases.add(name, "EdDSA", token, "malformed");
    }

    // The header: algorithm.
    let valid = ed(&c)?;
    let parts: Vec<&str> = valid.split('.').collect();
    let (payload_b64, signature) = (parts[1], parts[2]);
    let with_header =
        |h: &Value, sig: &str| format!("{}.{payload_b64}.{sig}", b64(h.to_string().as_bytes()));
    for spelling in ["none", "None", "NONE", "nOnE"] {
        let h = with(header.clone(), &[("alg", json!(spelling))]);
        cases.add(
            &format!("alg_{spelling}_unsigned"),
            "EdDSA",
            with_header(&h, ""),
            "wrong_algorithm",
        );
        cases.add(
            &format!("alg_{spelling}_with_the_real_signature"),
            "EdDSA",
            with_header(&h, signature),
            "wrong_algorithm",
        );
    }
    for (name, alg) in [
        ("alg_missing", Value::Null),
        ("alg_lower_case", json!("eddsa")),
        ("alg_rfc9864_name", json!("Ed25519")),
        ("alg_a_number", json!(1)),
        ("alg_an_array", json!(["EdDSA"])),
    ] {
        let h = if alg.is_null() {
            without(header.clone(), "alg")
        } else {
            with(header.clone(), &[("alg", alg)])
        };
        cases.add(name, "EdDSA", with_header(&h, signature), "wrong_algorithm");
    }
    // HS256 keyed with the server's public key (the algorithm-confusion
    // attack), presented to an EdDSA verifier.
    let public_x = eddsa_jwk["x"].as_str().context("x")?;
    for (name, secret) in [
        (
            "hs256_keyed_with_the_public_key_bytes",
            URL_SAFE_NO_PAD.decode(public_x)?,
        ),
        (
            "hs256_keyed_with_the_public_jwk",
            eddsa_jwk.to_string().into_bytes(),
        ),
    ] {
        let confused = Signer {
            alg: Algorithm::HS256,
            name: "HS256",
            kid: eddsa.kid.clone(),
            key: EncodingKey::from_secret(&secret),
        };
        cases.add(name, "EdDSA", confused.token(&c)?, "wrong_algorithm");
    }
    cases.add(
        "es256_token_to_an_eddsa_verifier",
        "EdDSA",
        es256.token(&c)?,
        "wrong_algorithm",
    );
    cases.add(
        "eddsa_token_to_an_rs256_verifier",
        "RS256",
        eddsa.token(&c)?,
        "wrong_algorithm",
    );
    cases.add(
        "eddsa_token_to_an_hs256_verifier",
        "HS256",
        eddsa.token(&c)?,
        "wrong_algorithm",
    );

    // The header: type.
    for (name, typ) in [
        ("typ_missing", Value::Null),
        ("typ_jwt", json!("JWT")),
        ("typ_a_number", json!(1)),
        ("typ_id_token", json!("id_token+jwt")),
    ] {
        let h = if typ.is_null() {
            without(header.clone(), "typ")
        } else {
            with(header.clone(), &[("typ", typ)])
        };
        cases.add(name, "EdDSA", eddsa.sign(&h, &c)?, "wrong_type");
    }

    // The header: key.
    for (name, kid) in [
        ("kid_missing", Value::Null),
        ("kid_unknown", json!("no-such-key")),
        ("kid_a_path", json!("../../../../dev/null")),
        (
            "kid_sql",
            json!("x' UNION SELECT private_key FROM signing_keys --"),
        ),
        ("kid_a_number", json!(1)),
        ("kid_of_an_es256_key", json!(es256.kid)),
    ] {
        let h = if kid.is_null() {
            without(header.clone(), "kid")
        } else {
            with(header.clone(), &[("kid", kid)])
        };
        cases.add(name, "EdDSA", eddsa.sign(&h, &c)?, "unknown_key");
    }
    // Parameters that would take a key or a rule from the token itself.
    let (attacker, attacker_jwk) = generated(JwtAlg::EdDsa, Algorithm::EdDSA, "EdDSA")?;
    for (name, extra) in [
        ("embedded_jwk", json!({ "jwk": attacker_jwk })),
        ("jku", json!({ "jku": "https://evil.test/jwks.json" })),
        ("x5u", json!({ "x5u": "https://evil.test/cert.pem" })),
        ("x5c", json!({ "x5c": ["MIIB"] })),
        ("x5t", json!({ "x5t": "abc" })),
        ("x5t_s256", json!({ "x5t#S256": "abc" })),
        ("crit", json!({ "crit": ["exp"] })),
        ("zip", json!({ "zip": "DEF" })),
        ("enc", json!({ "enc": "A256GCM" })),
        ("b64_false", json!({ "b64": false })),
    ] {
        let mut h = attacker.header();
        if let (Some(h), Some(extra)) = (h.as_object_mut(), extra.as_object()) {
            h.extend(extra.clone());
        }
        cases.add(
            &format!("forbidden_header_{name}"),
            "EdDSA",
            attacker.sign(&h, &c)?,
            "forbidden_header",
        );
    }
    // A member name given twice (RFC 7515 §4, RFC 7519 §4): refused, never
    // resolved to the first or the last, at any depth. Signed with our key:
    // only the duplicate is wrong. serde_json::Value cannot hold a
    // duplicate, so these are written as text.
    let kid = &eddsa.kid;
    let payload = c.to_string();
    for (name, header) in [
        (
            "header_duplicate_alg",
            format!(r#"{{"alg":"HS256","alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "header_duplicate_alg_none_last",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","alg":"none"}}"#),
        ),
        (
            "header_duplicate_kid",
            format!(r#"{{"alg":"EdDSA","kid":"no-such-key","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "header_duplicate_kid_same_value",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","kid":"{kid}"}}"#),
        ),
        (
            "header_duplicate_typ",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"JWT","typ":"at+jwt"}}"#),
        ),
        (
            "header_duplicate_alg_spelt_with_an_escape",
            format!(r#"{{"alg":"HS256","\u0061lg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "header_duplicate_in_a_nested_object",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","x-ext":{{"a":1,"a":2}}}}"#),
        ),
        (
            "header_duplicate_in_an_object_in_an_array",
            format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt","x-ext":[{{"a":1,"a":1}}]}}"#),
        ),
    ] {
        let token = eddsa.sign_raw(header.as_bytes(), payload.as_bytes())?;
        cases.add(name, "EdDSA", token, "malformed");
    }
    let body = payload.strip_prefix('{').context("claims are an object")?;
    for (name, first) in [
        ("payload_duplicate_sid", format!(r#""sid":"{REVOKED_SID}""#)),
        (
            "payload_duplicate_exp",
            format!(r#""exp":{}"#, NOW + 30 * 86_400),
        ),
        (
            "payload_duplicate_scope",
            r#""scope":"gatehouse:admin""#.to_owned(),
        ),
        (
            "payload_duplicate_unknown_claim",
            r#""x-ext":1,"x-ext":2"#.to_owned(),
        ),
        (
            "payload_duplicate_in_a_nested_object",
            r#""x-ext":{"a":1,"a":2}"#.to_owned(),
        ),
        (
            "payload_duplicate_deep_in_arrays",
            r#""x-ext":[{"a":[{"b":1,"b":1}]}]"#.to_owned(),
        ),
    ] {
        let token = eddsa.sign_raw(
            header.to_string().as_bytes(),
            format!("{{{first},{body}").as_bytes(),
        )?;
        cases.add(name, "EdDSA", token, "malformed");
    }
    // The same name in sibling objects is no duplicate.
    let siblings = with(
        c.clone(),
        &[(
            "x-ext",
            json!({"a": {"n": 1}, "b": {"n": 1}, "c": [{"n": 1}, {"n": 1}]}),
        )],
    );
    cases.valid(
        "valid_same_name_in_sibling_objects",
        "EdDSA",
        eddsa.sign(
            &with(header.clone(), &[("x-ext", json!([{"n": 1}, {"n": 1}]))]),
            &siblings,
        )?,
        &siblings,
    );

    // The attacker's key under our kid is just a bad signature.
    cases.add(
        "attacker_key_under_our_kid",
        "EdDSA",
        Signer {
            kid: eddsa.kid.clone(),
            ..attacker
        }
        .token(&c)?,
        "bad_signature",
    );

    // The envelope.
    let h64 = b64(header.to_string().as_bytes());
    let padded = format!("{}=", &h64);
    for (name, token, expect) in [
        ("empty", String::new(), "malformed"),
        ("two_parts", format!("{h64}.{payload_b64}"), "malformed"),
        ("four_parts", format!("{valid}.{signature}"), "malformed"),
        (
            "header_not_base64",
            format!("eyJ!@#.{payload_b64}.{signature}"),
            "malformed",
        ),
        (
            "header_padded",
            format!("{padded}.{payload_b64}.{signature}"),
            "malformed",
        ),
        (
            "header_not_json",
            format!("{}.{payload_b64}.{signature}", b64(b"alg=EdDSA")),
            "malformed",
        ),
        (
            "header_a_json_array",
            format!("{}.{payload_b64}.{signature}", b64(br#"["EdDSA"]"#)),
            "malformed",
        ),
        ("leading_space", format!(" {valid}"), "malformed"),
        (
            "empty_signature",
            format!("{h64}.{payload_b64}."),
            "malformed",
        ),
        (
            "signature_not_base64",
            format!("{h64}.{payload_b64}.!!!!"),
            "bad_signature",
        ),
        (
            "signature_of_another_token",
            format!(
                "{h64}.{payload_b64}.{}",
                ed(&with(c.clone(), &[("jti", json!("x"))]))?
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
            ),
            "bad_signature",
        ),
        (
            "payload_not_base64",
            format!("{h64}.%%%%.{signature}"),
            "bad_signature",
        ),
    ] {
        cases.add(name, "EdDSA", token, expect);
    }
    let big = ed(&with(
        c.clone(),
        &[("padding", json!("x".repeat(8 * 1024)))],
    ))?;
    cases.add("larger_than_8_kib", "EdDSA", big, "too_large");

    let doc = json!({
        "description": "gatehouse access tokens, valid and hostile, with the verdict of gatehouse's rules (see docs/tokens.md); revoked_sids lists the ended sessions and revoked client credentials, as the revocation feed does. Written by `cargo run --example make_token_vectors`; checked by crates/gatehouse/tests/api/token_vectors.rs and crates/gatehouse-verify/tests/vectors.rs (with access_token_ttl_secs + leeway_secs as gatehouse-verify's max_token_lifetime). Keys are test keys made for this file; their private halves were discarded.",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
        "leeway_secs": LEEWAY,
        "access_token_ttl_secs": TTL,
        "revoked_sids": [REVOKED_SID, REVOKED_CREDENTIAL],
        "jwks": { "keys": [eddsa_jwk, es256_jwk, rs256_jwk] },
        "hs256_secret": STANDARD.encode(secret),
        "cases": cases.0,
    });
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/access-tokens.json"
    );
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata"))?;
    std::fs::write(path, format!("{}\n", serde_json::to_string_pretty(&doc)?))
        .with_context(|| format!("writing {path}"))?;
    println!(
        "wrote {} cases to testdata/access-tokens.json",
        doc["cases"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}
