//! How a user proved who they are: RFC 8176 authentication method
//! references (`amr`), as sessions record them and access tokens carry
//! them.
//!
//! A set of the five values gatehouse uses, kept as bits, so that copying
//! one and reading one from a token's claims allocate nothing. Written out
//! always in one order: `pwd`, `otp`, `hwk`, `user`, `mfa`.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of RFC 8176 method references.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Amr(u8);

/// The values, their bits and their order.
const METHODS: [(&str, u8); 5] = [
    ("pwd", 1),
    ("otp", 1 << 1),
    ("hwk", 1 << 2),
    ("user", 1 << 3),
    ("mfa", 1 << 4),
];

const MFA: u8 = 1 << 4;

impl Amr {
    /// A password: `["pwd"]`.
    pub const PASSWORD: Self = Self(1);
    /// A password and a one-time code (TOTP or a recovery code):
    /// `["pwd", "otp", "mfa"]`.
    pub const PASSWORD_OTP: Self = Self(1 | 1 << 1 | MFA);
    /// A password and a security key or passkey: `["pwd", "hwk", "mfa"]`.
    pub const PASSWORD_KEY: Self = Self(1 | 1 << 2 | MFA);
    /// A passkey with user verification alone (passwordless):
    /// `["hwk", "user", "mfa"]`.
    pub const PASSKEY: Self = Self(1 << 2 | 1 << 3 | MFA);

    /// This set with a one-time code proved on top: `otp` and `mfa` added.
    #[must_use]
    pub fn with_otp(self) -> Self {
        Self(self.0 | 1 << 1 | MFA)
    }

    /// This set with a security key or passkey proved on top: `hwk` and
    /// `mfa` added.
    #[must_use]
    pub fn with_key(self) -> Self {
        Self(self.0 | 1 << 2 | MFA)
    }

    /// Whether a security key or passkey was proved (`hwk`).
    pub fn proved_a_key(self) -> bool {
        self.0 & 1 << 2 != 0
    }

    /// Whether the user proved more than one factor (`mfa`).
    pub fn is_multi_factor(self) -> bool {
        self.0 & MFA != 0
    }

    /// The values, in their order.
    pub fn values(self) -> impl Iterator<Item = &'static str> {
        METHODS
            .iter()
            .filter(move |(_, bit)| self.0 & bit != 0)
            .map(|(name, _)| *name)
    }

    /// The values space-separated (how the stores keep them).
    pub fn to_text(self) -> String {
        self.values().collect::<Vec<_>>().join(" ")
    }

    /// The set named by space-separated values.
    ///
    /// # Errors
    /// An unknown value, one given twice, or none at all.
    pub fn parse_text(s: &str) -> Result<Self, String> {
        let mut bits = 0u8;
        for value in s.split(' ') {
            bits = add(bits, value)?;
        }
        if bits == 0 {
            return Err("no authentication method".into());
        }
        Ok(Self(bits))
    }
}

fn add(bits: u8, value: &str) -> Result<u8, String> {
    let bit = METHODS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, bit)| *bit)
        .ok_or_else(|| format!("unknown authentication method {value:?}"))?;
    if bits & bit != 0 {
        return Err(format!("authentication method {value:?} given twice"));
    }
    Ok(bits | bit)
}

impl fmt::Debug for Amr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

impl Serialize for Amr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for value in self.values() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

/// An array of known values, none twice; anything else is refused (a
/// token naming a method gatehouse never records was not issued by it).
impl<'de> Deserialize<'de> for Amr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AmrVisitor;
        impl<'de> Visitor<'de> for AmrVisitor {
            type Value = Amr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of RFC 8176 method references")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Amr, A::Error> {
                let mut bits = 0u8;
                while let Some(Method(bit)) = seq.next_element::<Method>()? {
                    if bits & bit != 0 {
                        return Err(de::Error::custom("an authentication method given twice"));
                    }
                    bits |= bit;
                }
                Ok(Amr(bits))
            }
        }
        d.deserialize_seq(AmrVisitor)
    }
}

/// One value of the array, read as its bit without copying the string.
struct Method(u8);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MethodVisitor;
        impl Visitor<'_> for MethodVisitor {
            type Value = Method;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 8176 method reference")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Method, E> {
                METHODS
                    .iter()
                    .find(|(name, _)| *name == v)
                    .map(|(_, bit)| Method(*bit))
                    .ok_or_else(|| E::custom(format!("unknown authentication method {v:?}")))
            }
        }
        d.deserialize_str(MethodVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_sets_are_written_in_order() {
        for (amr, json) in [
            (Amr::PASSWORD, r#"["pwd"]"#),
            (Amr::PASSWORD_OTP, r#"["pwd","otp","mfa"]"#),
            (Amr::PASSWORD_KEY, r#"["pwd","hwk","mfa"]"#),
            (Amr::PASSKEY, r#"["hwk","user","mfa"]"#),
        ] {
            assert_eq!(serde_json::to_string(&amr).expect("json"), json);
            assert_eq!(serde_json::from_str::<Amr>(json).expect("parse"), amr);
            assert_eq!(Amr::parse_text(&amr.to_text()), Ok(amr));
        }
        assert_eq!(Amr::PASSWORD.with_otp(), Amr::PASSWORD_OTP);
        assert_eq!(Amr::PASSWORD.with_key(), Amr::PASSWORD_KEY);
        assert!(Amr::PASSKEY.proved_a_key() && !Amr::PASSWORD_OTP.proved_a_key());
        assert!(!Amr::PASSWORD.is_multi_factor());
        assert!(Amr::PASSWORD_OTP.is_multi_factor());
        assert!(Amr::PASSKEY.is_multi_factor());
    }

    #[test]
    fn unknown_repeated_and_mistyped_values_are_refused() {
        for bad in [
            r#"["pwd","sms"]"#,
            r#"["pwd","pwd"]"#,
            r#""pwd""#,
            "[1]",
            "{}",
        ] {
            assert!(serde_json::from_str::<Amr>(bad).is_err(), "{bad}");
        }
        for bad in ["", "pwd ", "pwd  otp", "PWD", "pwd pwd", "face"] {
            assert!(Amr::parse_text(bad).is_err(), "{bad:?}");
        }
    }
}
