//! The validation rules of an access token, as pure functions: the header
//! (steps 1–5), the signature (step 7) and the claims (steps 8–15), each in
//! the order gatehouse's server applies them so both give the same verdict.
//! Key lookup (step 6) and revocation (step 16) live with their state in
//! `keys` and `revocation`.

use std::fmt;

use jsonwebtoken::DecodingKey;

use crate::claims::{Claims, RawClaims};
use crate::error::VerifyError;

pub(crate) use gatehouse_token_rules::parse_uuid;

/// A signature algorithm gatehouse signs access tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037), gatehouse's default.
    EdDSA,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// HMAC with SHA-256 under a shared secret; never taken from a JWKS.
    HS256,
}

impl Algorithm {
    /// The JOSE name, as in a token header's `alg` (RFC 7518 §3.1).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    /// The algorithm of a JOSE name, compared exactly (case-sensitive, as
    /// RFC 7515 §4.1.1 makes `alg` values): `none`, `NONE` and `hs256` are
    /// nothing.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the header checks leave for the key lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedHeader {
    pub(crate) alg: Algorithm,
    /// `None` when `kid` is absent or not a string: no key can match it.
    pub(crate) kid: Option<String>,
}

/// Steps 1–5: size, shape (a JSON object header, no member name twice at
/// any depth), forbidden parameters, algorithm (one of `accepted`), type:
/// the shared rules ([`gatehouse_token_rules::check_header`]).
///
/// # Errors
/// `TooLarge`, `Malformed`, `ForbiddenHeader`, `WrongAlgorithm` or
/// `WrongType`, whichever rule breaks first.
pub(crate) fn check_header(
    token: &str,
    accepted: &[Algorithm],
) -> Result<CheckedHeader, VerifyError> {
    let header = gatehouse_token_rules::check_header(token, |name| {
        Algorithm::from_name(name).filter(|a| accepted.contains(a))
    })?;
    Ok(CheckedHeader {
        alg: header.alg,
        kid: header.kid,
    })
}

/// Step 7: the signature over `header.payload` under one key and one
/// algorithm; returns the decoded payload
/// ([`gatehouse_token_rules::verify_jws`]).
///
/// # Errors
/// `Malformed` or `BadSignature`, as the shared rule says.
pub(crate) fn verify_signature(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
) -> Result<Vec<u8>, VerifyError> {
    Ok(gatehouse_token_rules::verify_jws(token, alg.jwt(), key)?)
}

/// What the claims are judged against.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    /// Whole seconds, as the server counts its leeway.
    pub(crate) leeway: i64,
    /// The longest `exp - iat` accepted, in whole seconds: the server's
    /// `access_token_ttl` plus its leeway.
    pub(crate) max_lifetime: i64,
}

/// Steps 8–15: the claims set's types, issuer, audience, times, lifetime,
/// and the holder: canonical `sub` and `sid`, or on a client's own token
/// `sub` = `client_id` and a canonical `credential_id`. Returns the claims
/// and the id the revocation feed names the token's grant by (its session,
/// or its client credential).
///
/// # Errors
/// `Malformed`, `WrongIssuer`, `WrongAudience`, `Expired`, `NotYetValid`,
/// `IssuedInFuture` or `LifetimeTooLong`, whichever rule breaks first.
pub(crate) fn check_claims(
    payload: &[u8],
    rules: &ClaimRules,
    now: i64,
) -> Result<(Claims, u128), VerifyError> {
    // Only a JSON object with the claims' types and no member name twice
    // parses: arrays, strings, numbers, floats where integers belong, are
    // refused here.
    let raw: RawClaims = serde_json::from_slice(payload).map_err(|_| VerifyError::Malformed)?;
    if raw.iss != rules.issuer {
        return Err(VerifyError::WrongIssuer);
    }
    if !raw.aud.contains(&rules.audience) {
        return Err(VerifyError::WrongAudience);
    }
    gatehouse_token_rules::check_times(raw.exp, raw.nbf, raw.iat, now, rules.leeway)?;
    gatehouse_token_rules::check_lifetime(raw.exp, raw.iat, rules.max_lifetime)?;
    // Canonical forms only: gatehouse issues hyphenated lower-case UUIDs, and
    // one spelling per id keeps the revocation lookup exact. A user's token
    // has a `sid`; a client's own has a `credential_id` instead, and `sub`
    // equal to its `client_id`; never both, never neither.
    let revocation_key = match (&raw.sid, &raw.credential_id) {
        (Some(sid), None) => parse_uuid(sid, false),
        (None, Some(credential)) if raw.client_id.as_ref() == Some(&raw.sub) => {
            parse_uuid(credential, false)
        }
        _ => None,
    };
    let (Some(_), Some(key)) = (parse_uuid(&raw.sub, false), revocation_key) else {
        return Err(VerifyError::Malformed);
    };
    Ok((raw.into_claims(), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use gatehouse_token_rules::{FORBIDDEN_HEADER, MAX_TOKEN_LEN};

    const ALL: &[Algorithm] = &[
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ];

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token_with_header(header: &str) -> String {
        format!("{}.{}.sig", b64(header), b64("{}"))
    }

    fn header_verdict(header: &str) -> Result<CheckedHeader, VerifyError> {
        check_header(&token_with_header(header), ALL)
    }

    #[test]
    fn a_good_header_yields_its_alg_and_kid() {
        assert_eq!(
            header_verdict(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#),
            Ok(CheckedHeader {
                alg: Algorithm::EdDSA,
                kid: Some("k1".into())
            })
        );
        assert_eq!(
            header_verdict(r#"{"alg":"ES256","kid":7,"typ":"Application/AT+JWT"}"#),
            Ok(CheckedHeader {
                alg: Algorithm::ES256,
                kid: None
            })
        );
    }

    #[test]
    fn size_is_judged_before_anything_else() {
        let big = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(check_header(&big, ALL), Err(VerifyError::TooLarge));
        let header = b64(r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt"}"#);
        let exact = format!("{header}.{}.", "a".repeat(MAX_TOKEN_LEN - header.len() - 2));
        assert_eq!(exact.len(), MAX_TOKEN_LEN);
        assert!(check_header(&exact, ALL).is_ok());
    }

    #[test]
    fn anything_but_three_parts_with_a_json_object_header_is_malformed() {
        let h = b64(r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt"}"#);
        for t in [
            String::new(),
            "abc".into(),
            format!("{h}.x"),
            format!("{h}.x.y.z"),
            format!("{h}.x.y.z.w"),
            format!("{h}=.x.y"),
            format!("{h}+.x.y"),
            format!("{}.x.y", b64("[1]")),
            format!("{}.x.y", b64("\"alg\"")),
            format!("{}.x.y", b64("{\"alg\":")),
            format!("{}.x.y", b64("null")),
            ".x.y".into(),
            // Non-zero trailing bits: not canonical base64url.
            "eyJ.x.y".into(),
        ] {
            assert_eq!(check_header(&t, ALL), Err(VerifyError::Malformed), "{t}");
        }
    }

    #[test]
    fn key_and_rule_parameters_in_the_header_are_forbidden() {
        for p in FORBIDDEN_HEADER {
            let h = format!(r#"{{"alg":"EdDSA","kid":"k","typ":"at+jwt","{p}":null}}"#);
            assert_eq!(header_verdict(&h), Err(VerifyError::ForbiddenHeader), "{p}");
        }
        // Checked before the algorithm: a "none" token with a jwk is refused
        // as forbidden, as the server does.
        assert_eq!(
            header_verdict(r#"{"alg":"none","jwk":{}}"#),
            Err(VerifyError::ForbiddenHeader)
        );
    }

    #[test]
    fn only_a_configured_algorithm_spelt_exactly_passes() {
        for alg in [
            r#""none""#,
            r#""None""#,
            r#""NONE""#,
            r#""nOnE""#,
            r#""eddsa""#,
            r#""hs256""#,
            r#""HS384""#,
            r#""Ed25519""#,
            r#""PS256""#,
            r#"null"#,
            r#"["EdDSA"]"#,
            r#"1"#,
        ] {
            let h = format!(r#"{{"alg":{alg},"kid":"k","typ":"at+jwt"}}"#);
            assert_eq!(
                header_verdict(&h),
                Err(VerifyError::WrongAlgorithm),
                "{alg}"
            );
        }
        assert_eq!(
            header_verdict(r#"{"kid":"k","typ":"at+jwt"}"#),
            Err(VerifyError::WrongAlgorithm)
        );
        let h = token_with_header(r#"{"alg":"HS256","kid":"k","typ":"at+jwt"}"#);
        assert_eq!(
            check_header(&h, &[Algorithm::EdDSA]),
            Err(VerifyError::WrongAlgorithm)
        );
    }

    #[test]
    fn only_the_access_token_type_passes() {
        for typ in [
            r#""JWT""#,
            r#""jwt""#,
            r#""at+jwt ""#,
            r#""application/jwt""#,
            r#""""#,
            "null",
            "1",
        ] {
            let h = format!(r#"{{"alg":"EdDSA","kid":"k","typ":{typ}}}"#);
            assert_eq!(header_verdict(&h), Err(VerifyError::WrongType), "{typ}");
        }
        assert_eq!(
            header_verdict(r#"{"alg":"EdDSA","kid":"k"}"#),
            Err(VerifyError::WrongType)
        );
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "APPLICATION/At+Jwt",
        ] {
            let h = format!(r#"{{"alg":"EdDSA","kid":"k","typ":"{typ}"}}"#);
            assert!(header_verdict(&h).is_ok(), "{typ}");
        }
    }

    #[test]
    fn an_empty_signature_is_malformed_and_an_undecodable_one_bad() {
        let key = DecodingKey::from_secret(&[7; 32]);
        let h = b64(r#"{"alg":"HS256","kid":"k","typ":"at+jwt"}"#);
        let p = b64("{}");
        assert_eq!(
            verify_signature(&format!("{h}.{p}."), Algorithm::HS256, &key),
            Err(VerifyError::Malformed)
        );
        for t in [
            format!("{h}.{p}.!!"),
            format!("{h}.{p}.AAAA"),
            format!("{h}.{p}.AAAA="),
        ] {
            assert_eq!(
                verify_signature(&t, Algorithm::HS256, &key),
                Err(VerifyError::BadSignature),
                "{t}"
            );
        }
    }

    #[test]
    fn a_signed_but_undecodable_payload_is_malformed() {
        let secret = [7u8; 32];
        let message = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), "a=b");
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
            jsonwebtoken::Algorithm::HS256,
        )
        .expect("sign");
        let key = DecodingKey::from_secret(&secret);
        assert_eq!(
            verify_signature(&format!("{message}.{sig}"), Algorithm::HS256, &key),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn a_key_of_another_family_never_verifies() {
        // HS256 keyed with an Ed25519 public key's bytes: the classic
        // algorithm-confusion forgery (RFC 8725 §2.1).
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let ed = DecodingKey::from_ed_components(x).expect("ed key");
        let message = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64("{}"));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(x).expect("x")),
            jsonwebtoken::Algorithm::HS256,
        )
        .expect("sign");
        assert_eq!(
            verify_signature(&format!("{message}.{sig}"), Algorithm::HS256, &ed),
            Err(VerifyError::BadSignature)
        );
    }

    const SUB: &str = "0190f2a4-7c1e-7a3b-9c4d-1e2f3a4b5c6d";
    const SID: &str = "0190f2a4-7c1e-7a3b-9c4d-aaaaaaaaaaaa";

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://auth.example".into(),
            audience: "https://api.example".into(),
            leeway: 30,
            max_lifetime: 330,
        }
    }

    fn payload(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v = serde_json::json!({
            "iss": "https://auth.example",
            "sub": SUB,
            "aud": "https://api.example",
            "exp": 1_000_300,
            "iat": 1_000_000,
            "jti": "j",
            "sid": SID,
            "scope": "orders:read",
            "roles": ["clerk"],
        });
        edit(&mut v);
        serde_json::to_vec(&v).expect("json")
    }

    fn claims_verdict(
        edit: impl FnOnce(&mut serde_json::Value),
        now: i64,
    ) -> Result<Claims, VerifyError> {
        check_claims(&payload(edit), &rules(), now).map(|(c, _)| c)
    }

    #[test]
    fn good_claims_pass_and_come_back_whole() {
        let (c, sid) = check_claims(&payload(|_| {}), &rules(), 1_000_000).expect("valid");
        assert_eq!(c.aud, ["https://api.example"]);
        assert_eq!(c.roles, ["clerk"]);
        assert_eq!(sid, 0x0190f2a4_7c1e_7a3b_9c4d_aaaaaaaaaaaa);
        let c = claims_verdict(
            |v| v["aud"] = serde_json::json!(["x", "https://api.example"]),
            1_000_000,
        )
        .expect("array aud");
        assert_eq!(c.aud.len(), 2);
    }

    #[test]
    fn issuer_and_audience_must_match_exactly() {
        assert_eq!(
            claims_verdict(|v| v["iss"] = "https://auth.example/".into(), 1_000_000),
            Err(VerifyError::WrongIssuer)
        );
        assert_eq!(
            claims_verdict(|v| v["aud"] = "https://API.example".into(), 1_000_000),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            claims_verdict(|v| v["aud"] = serde_json::json!([]), 1_000_000),
            Err(VerifyError::WrongAudience)
        );
        // Issuer before audience, as the server orders them.
        assert_eq!(
            claims_verdict(
                |v| {
                    v["iss"] = "x".into();
                    v["aud"] = "y".into();
                },
                1_000_000
            ),
            Err(VerifyError::WrongIssuer)
        );
    }

    #[test]
    fn expiry_counts_the_leeway_and_is_exclusive() {
        assert!(claims_verdict(|_| {}, 1_000_329).is_ok());
        assert_eq!(claims_verdict(|_| {}, 1_000_330), Err(VerifyError::Expired));
        assert_eq!(
            claims_verdict(|v| v["exp"] = i64::MIN.into(), 0),
            Err(VerifyError::Expired)
        );
        // Saturating: exp = i64::MAX never overflows into the past (it is
        // refused for its lifetime instead).
        assert_eq!(
            claims_verdict(|v| v["exp"] = i64::MAX.into(), 1_000_000),
            Err(VerifyError::LifetimeTooLong)
        );
    }

    #[test]
    fn a_lifetime_over_the_maximum_is_refused_and_one_at_it_accepted() {
        assert!(claims_verdict(|v| v["exp"] = 1_000_330.into(), 1_000_000).is_ok());
        assert_eq!(
            claims_verdict(|v| v["exp"] = 1_000_331.into(), 1_000_000),
            Err(VerifyError::LifetimeTooLong)
        );
        assert_eq!(
            claims_verdict(|v| v["exp"] = (1_000_000 + 30 * 86_400).into(), 1_000_000),
            Err(VerifyError::LifetimeTooLong)
        );
        // Saturating: iat = i64::MIN is no overflow into a short lifetime.
        assert_eq!(
            claims_verdict(|v| v["iat"] = i64::MIN.into(), 1_000_000),
            Err(VerifyError::LifetimeTooLong)
        );
        // Judged after the times, as the server orders them.
        assert_eq!(
            claims_verdict(
                |v| v["exp"] = (1_000_000 + 30 * 86_400).into(),
                3_000_000_000
            ),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn a_header_member_given_twice_is_malformed_at_any_depth() {
        for h in [
            r#"{"alg":"HS256","alg":"EdDSA","kid":"k","typ":"at+jwt"}"#,
            r#"{"alg":"EdDSA","kid":"x","kid":"k","typ":"at+jwt"}"#,
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","typ":"at+jwt"}"#,
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","x":{"a":1,"a":2}}"#,
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","x":[{"a":1,"a":1}]}"#,
        ] {
            assert_eq!(header_verdict(h), Err(VerifyError::Malformed), "{h}");
        }
        assert!(
            header_verdict(r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","x":{"a":1},"y":{"a":1}}"#)
                .is_ok()
        );
    }

    #[test]
    fn a_claim_given_twice_is_malformed_at_any_depth() {
        let good = String::from_utf8(payload(|_| {})).expect("utf-8");
        let body = good.strip_prefix('{').expect("an object");
        for first in [
            r#""exp":1000300"#,
            r#""sid":"0190f2a4-7c1e-7a3b-9c4d-bbbbbbbbbbbb""#,
            r#""nbf":null,"nbf":null"#,
            r#""x":1,"x":1"#,
            r#""x":{"y":1,"y":2}"#,
            r#""x":[{"y":[{"z":1,"z":1}]}]"#,
        ] {
            let twice = format!("{{{first},{body}");
            assert_eq!(
                check_claims(twice.as_bytes(), &rules(), 1_000_000).map(|(c, _)| c),
                Err(VerifyError::Malformed),
                "{twice}"
            );
        }
        let unique = format!(r#"{{"x":{{"y":1}},"z":[{{"y":1}},{{"y":1}}],{body}"#);
        assert!(check_claims(unique.as_bytes(), &rules(), 1_000_000).is_ok());
    }

    #[test]
    fn not_before_and_issued_at_count_the_leeway() {
        assert!(claims_verdict(|v| v["nbf"] = 1_000_030.into(), 1_000_000).is_ok());
        assert_eq!(
            claims_verdict(|v| v["nbf"] = 1_000_031.into(), 1_000_000),
            Err(VerifyError::NotYetValid)
        );
        assert!(claims_verdict(|v| v["nbf"] = serde_json::Value::Null, 1_000_000).is_ok());
        assert!(claims_verdict(|v| v["iat"] = 1_000_030.into(), 1_000_000).is_ok());
        assert_eq!(
            claims_verdict(|v| v["iat"] = 1_000_031.into(), 1_000_000),
            Err(VerifyError::IssuedInFuture)
        );
        // Expiry before not-before before issued-at.
        assert_eq!(
            claims_verdict(
                |v| {
                    v["nbf"] = 9_000_000.into();
                    v["iat"] = 9_000_000.into();
                },
                1_000_000
            ),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn wrong_types_and_non_canonical_ids_are_malformed() {
        for edit in [
            (|v: &mut serde_json::Value| v["exp"] = serde_json::json!(1_000_300.0))
                as fn(&mut serde_json::Value),
            |v| v["exp"] = "1000300".into(),
            |v| v["nbf"] = "0".into(),
            |v| v["roles"] = serde_json::Value::Null,
            |v| v["scope"] = serde_json::json!(["a"]),
            |v| {
                v.as_object_mut().map(|o| o.remove("jti"));
            },
            |v| {
                v.as_object_mut().map(|o| o.remove("iat"));
            },
            |v| v["sub"] = SUB.to_uppercase().into(),
            |v| v["sub"] = SUB.replace('-', "").into(),
            |v| v["sid"] = format!("{{{SID}}}").into(),
            |v| v["sid"] = format!("urn:uuid:{SID}").into(),
            |v| v["sid"] = "not a uuid".into(),
        ] {
            assert_eq!(claims_verdict(edit, 1_000_000), Err(VerifyError::Malformed));
        }
        assert_eq!(
            check_claims(b"[]", &rules(), 0).map(|(c, _)| c),
            Err(VerifyError::Malformed)
        );
        // Every claim, in the struct's order, as an array: still no object.
        let in_order = format!(
            r#"["https://auth.example","{SUB}","https://api.example",1000300,1000000,null,"j","{SID}","orders:read",["clerk"]]"#
        );
        assert_eq!(
            check_claims(in_order.as_bytes(), &rules(), 1_000_000).map(|(c, _)| c),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn uuids_parse_in_hyphenated_form_only() {
        assert_eq!(
            parse_uuid("00000000-0000-0000-0000-000000000000", false),
            Some(0)
        );
        assert_eq!(
            parse_uuid("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", true),
            Some(u128::MAX)
        );
        assert_eq!(
            parse_uuid("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", false),
            None
        );
        assert_eq!(
            parse_uuid("0000000-00000-0000-0000-000000000000", false),
            None
        );
        assert_eq!(
            parse_uuid("00000000-0000-0000-0000-00000000000g", false),
            None
        );
        assert_eq!(
            parse_uuid("00000000-0000-0000-0000-0000000000000", false),
            None
        );
        assert_eq!(
            parse_uuid("é0000000-0000-0000-0000-00000000000", false),
            None
        );
    }
}
