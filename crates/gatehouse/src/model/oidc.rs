//! The vocabulary of the OpenID client registry: a client's type, the
//! grant types and scopes it may be registered for, and the algorithms its
//! ID tokens may be signed with. Shared by the domain (`auth::clients`) and
//! the stores, which keep each as its name.

/// RFC 6749 §2.1: whether the client can keep a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientType {
    /// A server-side application: it gets a secret.
    Confidential,
    /// A browser or native application: no secret (it would not stay one).
    Public,
}

impl ClientType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confidential => "confidential",
            Self::Public => "public",
        }
    }

    /// The type named `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "confidential" => Some(Self::Confidential),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// A grant a client may be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// Confidential clients only: tokens of the client itself, carrying
    /// its `roles`' permissions.
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [Self; 3] = [
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::ClientCredentials,
    ];

    /// What a client is registered for when the admin does not say.
    pub const DEFAULT: [Self; 2] = [Self::AuthorizationCode, Self::RefreshToken];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }

    /// The grant type named `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// The scopes a client may be registered for (OpenID Connect Core §5.4 and
/// §11).
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A client's ID-token signing algorithm (`id_token_signed_response_alg`,
/// OpenID Connect Dynamic Client Registration §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdTokenAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl IdTokenAlg {
    pub const ALL: [Self; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    /// OpenID Connect's default (Core §15.1: RS256 must be supported).
    pub const DEFAULT: Self = Self::Rs256;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named `s` (case-sensitive, as JOSE names are).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()), Some(g));
        }
        for a in IdTokenAlg::ALL {
            assert_eq!(IdTokenAlg::parse(a.as_str()), Some(a));
        }
        for t in [ClientType::Confidential, ClientType::Public] {
            assert_eq!(ClientType::parse(t.as_str()), Some(t));
        }
        assert_eq!(IdTokenAlg::parse("rs256"), None);
        assert_eq!(IdTokenAlg::parse("HS256"), None);
        assert_eq!(GrantType::parse("password"), None);
        assert_eq!(ClientType::parse("Public"), None);
    }
}
