//! Domain newtypes: parsed once at the edge, trusted everywhere after.
//! Secrets have a `Debug` that prints `[redacted]`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Longest email address accepted (RFC 5321 §4.5.3.1.3 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// A trimmed, lower-cased email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Normalises (trims, lower-cases) and checks the shape of an address.
    ///
    /// The check is deliberately structural (one `@`, a non-empty local part,
    /// a dotted domain, no spaces or control characters): deliverability is
    /// for a confirmation mail to prove, not for a regex.
    ///
    /// An address is shown to admins, in audit trails and in mails, so it
    /// must read as what it is. The local part is printable ASCII (RFC 5321
    /// without SMTPUTF8): no invisible, bidirectional or look-alike
    /// characters can hide in it. An internationalised domain is accepted
    /// and stored in its ASCII form (IDNA/UTS #46: `bücher.example` is
    /// `xn--bcher-kva.example`), the form that shows a look-alike for what
    /// it is; a domain that does not map to letters, digits and hyphens is
    /// refused.
    ///
    /// # Errors
    /// A message fit for a validation problem's `errors[].message`.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > MAX_EMAIL_LEN * 4 {
            return Err("must be at most 254 characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("is not an email address");
        };
        if !local.is_ascii() {
            return Err("must have an ASCII local part (before the @)");
        }
        let domain = if domain.is_ascii() {
            domain.to_owned()
        } else {
            match url::Host::parse(domain) {
                Ok(url::Host::Domain(ascii)) => ascii,
                _ => return Err("is not an email address"),
            }
        };
        let bad_char =
            |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"@".contains(c);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if local.is_empty()
            || local.len() > 64
            || domain.len() < 3
            || !domain.contains('.')
            || !domain.split('.').all(label_ok)
            || local.chars().any(bad_char)
        {
            return Err("is not an email address");
        }
        let s = format!("{local}@{domain}");
        if s.len() > MAX_EMAIL_LEN {
            return Err("must be at most 254 characters");
        }
        Ok(Self(s))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plaintext password on its way to the hasher; never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a candidate password without judging it (for login, where the
    /// policy of the day must not lock out older passwords).
    pub fn new(raw: String) -> Self {
        Self(raw)
    }

    /// The plaintext.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// The SHA-256 of a secret: what the store keeps and looks up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

/// Length of an encoded 32-byte secret (unpadded base64url).
pub const SECRET_LEN: usize = 43;

/// Kept for callers that speak of the cookie.
pub const SESSION_SECRET_LEN: usize = SECRET_LEN;

macro_rules! opaque_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name([u8; 32]);

        impl $name {
            /// A fresh secret from the operating system's RNG.
            ///
            /// # Errors
            /// When the OS RNG fails; callers must not fall back to anything
            /// weaker.
            pub fn generate() -> Result<Self, getrandom::Error> {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)?;
                Ok(Self(bytes))
            }

            /// Parses the encoded form; anything but 43 base64url characters
            /// that decode to 32 bytes is refused.
            pub fn parse(encoded: &str) -> Option<Self> {
                if encoded.len() != SECRET_LEN {
                    return None;
                }
                let mut bytes = [0u8; 32];
                match URL_SAFE_NO_PAD.decode_slice(encoded, &mut bytes) {
                    Ok(32) => Some(Self(bytes)),
                    _ => None,
                }
            }

            /// The form shown to the client, once.
            pub fn encode(&self) -> String {
                URL_SAFE_NO_PAD.encode(self.0)
            }

            /// The SHA-256 under which the store knows this secret.
            pub fn hash(&self) -> SecretHash {
                SecretHash(Sha256::digest(self.0).into())
            }

            /// The raw bytes (to derive keys from).
            pub fn expose(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

opaque_secret!(
    /// The session secret carried by the cookie: 32 bytes from the OS RNG,
    /// shown to the client once as 43 characters of unpadded base64url.
    SessionSecret
);
opaque_secret!(
    /// A refresh token: 32 bytes from the OS RNG, bound to one session.
    RefreshSecret
);

opaque_secret!(
    /// A login's `mfa_token`: 32 bytes from the OS RNG naming a login whose
    /// password was right and whose second step is awaited.
    MfaToken
);

opaque_secret!(
    /// The token of a mailed link (password reset, address verification):
    /// 32 bytes from the OS RNG; the store keeps only its SHA-256.
    MailToken
);

opaque_secret!(
    /// A resource server's key for the revocation feed: 32 bytes from the
    /// OS RNG, shown once as `ghrs_` and 43 characters of base64url.
    ResourceServerSecret
);

impl ResourceServerSecret {
    /// What every key starts with, so that secret scanners and people can
    /// tell it from a token.
    pub const PREFIX: &'static str = "ghrs_";

    /// Parses a key as shown (`ghrs_…`); anything else is refused.
    pub fn parse_key(key: &str) -> Option<Self> {
        key.strip_prefix(Self::PREFIX).and_then(Self::parse)
    }

    /// The key as shown to the admin who created it, once.
    pub fn key(&self) -> String {
        format!("{}{}", Self::PREFIX, self.encode())
    }
}

opaque_secret!(
    /// An authorization code (RFC 6749 §4.1.2): 32 bytes from the OS RNG,
    /// single use, short-lived; the store keeps only its SHA-256.
    AuthCode
);

opaque_secret!(
    /// An OpenID client's secret: 32 bytes from the OS RNG, shown once as
    /// `ghcs_` and 43 characters of base64url; the store keeps only its
    /// SHA-256 (it is random, so a slow hash would add nothing).
    ClientSecret
);

impl ClientSecret {
    /// What every client secret starts with, so that secret scanners and
    /// people can tell it from a resource server's key or a token.
    pub const PREFIX: &'static str = "ghcs_";

    /// Parses a secret as shown (`ghcs_…`); anything else is refused.
    pub fn parse_secret(secret: &str) -> Option<Self> {
        secret.strip_prefix(Self::PREFIX).and_then(Self::parse)
    }

    /// The secret as shown to the admin who created the client, once.
    pub fn secret(&self) -> String {
        format!("{}{}", Self::PREFIX, self.encode())
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the textual form; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::try_parse(s).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A user's id.
    UserId
);
uuid_id!(
    /// A session's public handle (not its secret).
    SessionId
);
uuid_id!(
    /// A resource server's id.
    ResourceServerId
);
uuid_id!(
    /// A passkey's id (not its WebAuthn credential id).
    PasskeyId
);
uuid_id!(
    /// An OpenID client's `client_id` (public, not a credential: RFC 6749
    /// §2.2).
    ClientId
);

/// The id of a confidential client's current secret: what the client's
/// `client_credentials` tokens carry as `credential_id`, and what rotating
/// the secret or deleting the client revokes. A name for the secret,
/// derived from its hash (a one-way function of a one-way function of 256
/// random bits: it tells nothing of the secret), so a new secret is a new
/// credential without anything else to store.
///
/// Revoked, recorded and followed like a session's id (one revocation set,
/// the stores' revocation records, the revocation feed): both are UUIDs, a
/// credential's of version 8, so the two can never name each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialId(pub Uuid);

impl CredentialId {
    /// The credential of the secret whose SHA-256 is `hash`.
    pub fn of(hash: &SecretHash) -> Self {
        let digest = Sha256::new()
            .chain_update(b"gatehouse client credential\0")
            .chain_update(hash.0)
            .finalize();
        let mut bytes = [0_u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// Parses the textual form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Uuid::try_parse(s).ok().map(Self)
    }

    /// The key the revocation set, the stores and the feed know it by.
    pub fn revocation_key(self) -> SessionId {
        SessionId(self.0)
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn check_token(kind: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("a {kind} must be 1 to {max} characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.:*/".contains(&b))
    {
        return Err(format!(
            "a {kind} may hold only letters, digits and _ - . : * /"
        ));
    }
    Ok(())
}

/// A resource server's name, such as `orders-api`: unique, for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ResourceServerName(String);

impl ResourceServerName {
    /// # Errors
    /// When the name is empty, longer than 64 or has other characters than
    /// letters, digits and `_ - . : * /`.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token("resource server name", s, 64)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role's name, such as `admin` or `support-staff`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoleName(String);

impl RoleName {
    /// # Errors
    /// When the name is empty, longer than 64 or has other characters than
    /// letters, digits and `_ - . : * /`.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token("role name", s, 64)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A permission string such as `orders:read` or `gatehouse:admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Permission(String);

impl Permission {
    /// The permission that grants the admin API.
    pub const ADMIN: &'static str = "gatehouse:admin";

    /// # Errors
    /// When the permission is empty, longer than 128 or has other
    /// characters than letters, digits and `_ - . : * /`.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_token("permission", s, 128)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").expect("ok").as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@example..com",
            "a@@example.com",
            "a@.example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn emails_that_cannot_be_shown_safely_are_refused_or_normalised() {
        for bad in [
            "ad\u{200b}a@example.com",     // zero-width space
            "ada\u{202e}moc.elpmaxe@x.io", // right-to-left override
            "\u{0430}da@example.com",      // Cyrillic a
            "ada\u{00ad}@example.com",     // soft hyphen
            "ada@exa\u{202e}mple.com",
            "ada@exa_mple.com",
            "ada@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        // Internationalised domains are kept in their ASCII form, where a
        // look-alike shows as what it is.
        assert_eq!(
            Email::parse("ada@B\u{fc}cher.example")
                .expect("idn")
                .as_str(),
            "ada@xn--bcher-kva.example"
        );
        assert!(
            Email::parse("ada@\u{0435}xample.com")
                .expect("idn")
                .as_str()
                .starts_with("ada@xn--")
        );
        // Characters IDNA ignores (zero-width space, soft hyphen) vanish
        // from a domain: what is stored is what anyone sees.
        assert_eq!(
            Email::parse("ada@exa\u{200b}mple.com")
                .expect("ignored")
                .as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn session_secret_round_trips_and_rejects_forgeries() {
        let s = SessionSecret::generate().expect("rng");
        let enc = s.encode();
        assert_eq!(enc.len(), SESSION_SECRET_LEN);
        let back = SessionSecret::parse(&enc).expect("parse");
        assert_eq!(back.hash(), s.hash());
        assert!(SessionSecret::parse(&enc[..42]).is_none());
        assert!(SessionSecret::parse(&format!("{enc}A")).is_none());
        assert!(SessionSecret::parse(&"!".repeat(43)).is_none());
        assert!(SessionSecret::parse("' OR 1=1 --").is_none());
        assert_eq!(format!("{s:?}"), "SessionSecret([redacted])");
        assert_eq!(
            format!("{:?}", Password::new("hunter22".into())),
            "Password([redacted])"
        );
    }

    #[test]
    fn client_secrets_are_prefixed_and_parse_back() {
        let s = ClientSecret::generate().expect("rng");
        let shown = s.secret();
        assert!(shown.starts_with("ghcs_") && shown.len() == 5 + SECRET_LEN);
        let back = ClientSecret::parse_secret(&shown).expect("parses");
        assert_eq!(back.hash(), s.hash());
        assert!(
            ClientSecret::parse_secret(&shown[5..]).is_none(),
            "no prefix"
        );
        assert!(ClientSecret::parse_secret(&format!("ghrs_{}", &shown[5..])).is_none());
        assert_eq!(format!("{s:?}"), "ClientSecret([redacted])");
    }

    proptest! {
        #[test]
        fn session_secret_parse_never_panics(s in "\\PC{0,64}") {
            let _ = SessionSecret::parse(&s);
        }

        #[test]
        fn email_parse_never_panics(s in "\\PC{0,80}") {
            let _ = Email::parse(&s);
        }

        /// Every address of the plain shape parses (the assertion is
        /// reached on every case), and parsing what it gives back changes
        /// nothing.
        #[test]
        fn plain_emails_parse_and_parsing_is_idempotent(
            local in "[A-Za-z0-9]{1,20}",
            domain in "[A-Za-z0-9]{1,15}\\.[A-Za-z]{2,6}",
        ) {
            let e = Email::parse(&format!("{local}@{domain}")).expect("a plain address parses");
            prop_assert_eq!(Email::parse(e.as_str()).expect("idempotent"), e);
        }

        /// Its alphabet, 1 to 128 characters, parses (on every case); a
        /// space anywhere never does.
        #[test]
        fn permission_parse_accepts_exactly_its_alphabet(
            good in "[A-Za-z0-9_.:*/-]{1,128}",
            before in "\\PC{0,20}",
            after in "\\PC{0,20}",
        ) {
            let p = Permission::parse(&good).expect("its alphabet parses");
            prop_assert_eq!(p.as_str(), good.as_str());
            let spaced = format!("{before} {after}");
            prop_assert!(Permission::parse(&spaced).is_err(), "{:?}", spaced);
        }
    }
}
