//! The claims of a verified access token and the permissions they carry.

use serde::{Deserialize, Deserializer, Serialize};

use gatehouse_token_rules::{Amr, UniqueObject};

/// The claims of an access token that passed every check (RFC 9068 §2.2 plus
/// gatehouse's `sid` or `credential_id`, `scope` and `roles`).
///
/// A token speaks for a user (`sid` present: the user's session) or, from
/// the `client_credentials` grant, for a client on its own behalf (no
/// `sid`; `sub` and `client_id` are the client's id, `credential_id` the
/// secret it was obtained with): see [`Claims::is_client`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer: the configured one, exactly.
    pub iss: String,
    /// The user id, or for a client's own token the client id (a UUID in
    /// canonical lower-case form).
    pub sub: String,
    /// The audiences; a token with a single string `aud` gives one element.
    #[serde(deserialize_with = "audience")]
    pub aud: Vec<String>,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, in seconds since the Unix epoch.
    pub iat: i64,
    /// Not-before, in seconds since the Unix epoch, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The token's unique id.
    pub jti: String,
    /// The session id (a UUID in canonical lower-case form): the session whose
    /// ending revokes this token. `None` on a client's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// On a client's own token (`client_credentials`): the id of the client
    /// secret it was obtained with, whose rotation revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// The OpenID client the token was issued to (RFC 9068 §2.2), when one
    /// was: on a client's own token, and on tokens a client got for a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user's permissions, space-separated (RFC 6749 §3.3).
    pub scope: String,
    /// The user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the user proved who they are when the session began (RFC 8176:
    /// `["pwd"]`, `["pwd", "otp", "mfa"]`, ...); `["pwd"]` for tokens of
    /// servers that did not record it.
    #[serde(default = "password_only")]
    pub amr: Amr,
}

fn password_only() -> Amr {
    Amr::PASSWORD
}

impl Claims {
    /// Whether the token is a client's own (`client_credentials`): it speaks
    /// for no user, and `sub` is the client id.
    #[must_use]
    pub fn is_client(&self) -> bool {
        self.credential_id.is_some()
    }

    /// Whether the user proved a second factor (`amr` holds `mfa`): what a
    /// resource server checks before a sensitive action (step-up).
    #[must_use]
    pub fn is_multi_factor(&self) -> bool {
        self.amr.is_multi_factor()
    }

    /// The permissions of the token: the space-separated entries of `scope`.
    pub fn permissions(&self) -> impl Iterator<Item = &str> {
        // RFC 6749 §3.3: scope tokens are separated by single spaces; empty
        // entries (doubled spaces) name nothing.
        self.scope.split(' ').filter(|p| !p.is_empty())
    }

    /// Whether the token grants `permission`, compared exactly (no prefixes,
    /// no wildcards: `gatehouse:admin` grants only itself).
    #[must_use]
    pub fn has_permission(&self, permission: &str) -> bool {
        !permission.is_empty() && self.permissions().any(|p| p == permission)
    }
}

/// `aud` as gatehouse's server parses it: one string or an array of strings
/// (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(crate) fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(all) => all.iter().any(|a| a == aud),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(a) => vec![a],
            Self::Many(all) => all,
        }
    }
}

fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Audience::deserialize(d).map(Audience::into_vec)
}

/// The claims set exactly as the server deserialises it: same fields, same
/// types, same defaults, so the same payloads parse (and the same fail with
/// `malformed`: a float `exp`, a missing `jti` or `iat`, a `null` `roles`, a
/// member name given twice at any depth, a non-object). Read as a map, never
/// as a sequence (a struct would also take a JSON array of the claims in
/// order). serde's derive refuses a known claim given twice; every other
/// member is collected into `_others`, which refuses a name given twice, at
/// any depth (RFC 7519 §4). gatehouse's tokens carry no other member, so the
/// collection costs nothing on the hot path.
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    pub(crate) aud: Audience,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    #[serde(default)]
    pub(crate) nbf: Option<i64>,
    pub(crate) jti: String,
    #[serde(default)]
    pub(crate) sid: Option<String>,
    #[serde(default)]
    pub(crate) credential_id: Option<String>,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    pub(crate) scope: String,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default = "password_only")]
    pub(crate) amr: Amr,
    #[serde(flatten)]
    _others: UniqueObject,
}

impl RawClaims {
    pub(crate) fn into_claims(self) -> Claims {
        Claims {
            iss: self.iss,
            sub: self.sub,
            aud: self.aud.into_vec(),
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            jti: self.jti,
            sid: self.sid,
            credential_id: self.credential_id,
            client_id: self.client_id,
            scope: self.scope,
            roles: self.roles,
            amr: self.amr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_scope(scope: &str) -> Claims {
        Claims {
            iss: "i".into(),
            sub: "s".into(),
            aud: vec!["i".into()],
            exp: 0,
            iat: 0,
            nbf: None,
            jti: "j".into(),
            sid: Some("s".into()),
            credential_id: None,
            client_id: None,
            scope: scope.into(),
            amr: Amr::PASSWORD,
            roles: vec![],
        }
    }

    #[test]
    fn permissions_are_the_space_separated_scope_entries() {
        let c = with_scope("orders:read  orders:write ");
        assert_eq!(
            c.permissions().collect::<Vec<_>>(),
            ["orders:read", "orders:write"]
        );
        assert!(c.has_permission("orders:write"));
        assert!(!c.has_permission("orders"));
        assert!(!c.has_permission("orders:read orders:write"));
        assert!(!c.has_permission(""));
        assert!(!with_scope("").has_permission("orders:read"));
    }

    #[test]
    fn claims_accept_a_string_or_an_array_audience() {
        let one: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"s","aud":"a","exp":1,"iat":0,"jti":"j","sid":"s","scope":""}"#,
        )
        .expect("one");
        assert_eq!(one.aud, ["a"]);
        assert!(one.roles.is_empty());
        let many: Claims = serde_json::from_str(
            r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":1,"iat":0,"jti":"j","sid":"s","scope":"","roles":["r"]}"#,
        )
        .expect("many");
        assert_eq!(many.aud, ["a", "b"]);
    }

    #[test]
    fn raw_claims_refuse_what_the_server_refuses() {
        let ok =
            r#"{"iss":"i","sub":"s","aud":"a","exp":1,"iat":0,"jti":"j","sid":"s","scope":""}"#;
        assert!(serde_json::from_str::<RawClaims>(ok).is_ok());
        for bad in [
            r#"{"iss":"i","sub":"s","aud":"a","exp":1.0,"iat":0,"jti":"j","sid":"s","scope":""}"#,
            r#"{"iss":"i","sub":"s","aud":"a","exp":1,"iat":0,"sid":"s","scope":""}"#,
            r#"{"iss":"i","sub":"s","aud":"a","exp":1,"iat":0,"jti":"j","sid":"s","scope":"","roles":null}"#,
            r#"{"iss":"i","sub":"s","aud":"a","exp":1,"exp":2,"iat":0,"jti":"j","sid":"s","scope":""}"#,
            r#"{"iss":"i","sub":"s","aud":7,"exp":1,"iat":0,"jti":"j","sid":"s","scope":""}"#,
            r#"{"iss":"i","sub":"s","aud":[7],"exp":1,"iat":0,"jti":"j","sid":"s","scope":""}"#,
            r#"{"iss":"i","sub":"s","aud":"a","exp":9223372036854775808,"iat":0,"jti":"j","sid":"s","scope":""}"#,
            r#"["iss"]"#,
            r#""a string""#,
            "42",
        ] {
            assert!(serde_json::from_str::<RawClaims>(bad).is_err(), "{bad}");
        }
    }
}
