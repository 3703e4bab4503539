//! Who is calling, and forward authentication (`GET /v1/verify`) as one
//! decision: the access rules, the credential and the permissions are
//! judged in one call down into the domain ([`Gate::decide`]) and one
//! answer back, in the order that keeps every answer the same as before:
//! rules first (a public or closed path never looks at credentials), then
//! the caller, then the permissions.

use std::sync::Arc;

use super::bearer::Bearer;
use super::claims::{Holder, TokenError, VerifiedToken};
use super::clients::Clients;
use super::cookies::Cookies;
use super::rules::{Access, BadPath, access_for};
use super::sessions::Authenticated;
use crate::config::AccessRule;
use crate::model::types::{ClientId, CredentialId, SessionSecret};
use crate::store::{ClientRecord, UserStore};

/// The credential a request carries, as the HTTP layer read it.
#[derive(Debug)]
pub enum Presented<'a> {
    Nothing,
    /// The token of an `Authorization: Bearer` header.
    Bearer(&'a str),
    /// The session cookie's secret.
    Cookie(SessionSecret),
    /// A credential that cannot be read; refused, but only where a caller
    /// is needed.
    Unreadable(Unreadable),
}

/// Why a credential cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Two `Authorization` headers: which one a proxy on the way used is
    /// anybody's guess, so neither is (RFC 6750 §3.1).
    TwoAuthorizations,
    /// An `Authorization` header that is not a bearer token.
    NotBearer,
    /// A session cookie that is malformed, or given twice.
    BadCookie,
}

/// A recognised caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub auth: Arc<Authenticated>,
    /// Whether by an access token (else by the session cookie).
    pub bearer: bool,
    /// The effective permissions when they were read with the session (the
    /// bearer path reads them together); `None` until asked for.
    pub permissions: Option<Arc<[String]>>,
}

/// A client calling on its own behalf, by a `client_credentials` token.
#[derive(Debug, Clone)]
pub struct ClientCaller {
    /// The client as last read (fresh for `session_cache_ttl` at most).
    pub client: ClientRecord,
    /// The token's claims: its `scope` holds the permissions it was given.
    pub token: Arc<VerifiedToken>,
}

impl ClientCaller {
    /// Whether the token grants every one of `needed`.
    fn grants(&self, needed: &[String]) -> bool {
        let scope = &self.token.claims.scope;
        needed
            .iter()
            .all(|p| scope.split(' ').any(|granted| granted == p))
    }
}

/// What a credential proved.
#[derive(Debug)]
pub enum Identified {
    Caller(Caller),
    /// A client's own token (`client_credentials`): no user, no session.
    Client(ClientCaller),
    /// No credential, or a session cookie that names no live session.
    Nobody,
    /// A bearer token refused, and why (for the log).
    TokenRefused(TokenError),
    Unreadable(Unreadable),
}

/// The decision on one forwarded request.
#[derive(Debug)]
pub enum Decision {
    /// A public path: allowed, whoever calls.
    Public,
    /// A `deny` rule closes the path.
    Closed,
    /// The path needs a caller and the credential names none.
    Refused(Identified),
    /// The path needs a second factor and the caller's session proved none
    /// (RFC 9470 `insufficient_user_authentication`); a client's own token
    /// (`None`) never proves one.
    NeedsSecondFactor(Option<Caller>),
    /// The caller lacks some of the permissions the path needs.
    Lacks {
        caller: Caller,
        needed: Vec<String>,
    },
    Allowed(Caller),
    /// A client's own token lacks some of the permissions the path needs.
    ClientLacks {
        needed: Vec<String>,
    },
    /// A client's own token carries every permission the path needs.
    ClientAllowed(ClientCaller),
}

/// Why no decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("the original URI's path is malformed")]
    BadPath,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<BadPath> for DecideError {
    fn from(_: BadPath) -> Self {
        Self::BadPath
    }
}

/// Who is calling, and whether they may: the one entry point of every
/// authenticated request and of `GET /v1/verify`.
pub struct Gate {
    bearer: Arc<Bearer>,
    cookies: Arc<Cookies>,
    users: Arc<dyn UserStore>,
    clients: Arc<Clients>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(
        bearer: Arc<Bearer>,
        cookies: Arc<Cookies>,
        users: Arc<dyn UserStore>,
        clients: Arc<Clients>,
    ) -> Self {
        Self {
            bearer,
            cookies,
            users,
            clients,
        }
    }

    /// The user's effective permissions, in one store round trip.
    ///
    /// # Errors
    /// Store failures (callers answer 503: never allow, never deny).
    pub async fn permissions_of(
        &self,
        user_id: crate::model::types::UserId,
    ) -> anyhow::Result<Vec<String>> {
        self.users.permissions_of(user_id).await
    }

    /// Who presented `credential`: a bearer token is verified (signature,
    /// claims, revocation) and its session and user read; a session cookie
    /// is recognised. Either from the principal cache when fresh.
    ///
    /// # Errors
    /// Store failures (503: never allow, never deny).
    pub async fn identify(&self, credential: Presented<'_>) -> anyhow::Result<Identified> {
        match credential {
            Presented::Nothing => Ok(Identified::Nobody),
            Presented::Unreadable(why) => Ok(Identified::Unreadable(why)),
            Presented::Bearer(token) => {
                let verified = match self.bearer.verify_access_token(token) {
                    Ok(v) => v,
                    Err(e) => return Ok(Identified::TokenRefused(e)),
                };
                if let Holder::Client {
                    client_id,
                    credential,
                } = verified.holder
                {
                    return self.identify_client(verified, client_id, credential).await;
                }
                // A token whose session or user is gone is a token of an
                // ended session.
                Ok(match self.bearer.authenticate_token(&verified).await? {
                    Some(p) => Identified::Caller(Caller {
                        auth: p.auth.clone(),
                        bearer: true,
                        permissions: p.permissions.clone(),
                    }),
                    None => Identified::TokenRefused(TokenError::Revoked),
                })
            }
            Presented::Cookie(secret) => Ok(match self.cookies.authenticate(&secret).await? {
                Some(p) => Identified::Caller(Caller {
                    auth: p.auth.clone(),
                    bearer: false,
                    permissions: p.permissions.clone(),
                }),
                None => Identified::Nobody,
            }),
        }
    }

    /// A client's own token, verified and not revoked on this node: it
    /// speaks for the client while the client exists, its secret is still
    /// the one the token was obtained with, and it may still use the grant
    /// (read fresh, or from the client cache within `session_cache_ttl`:
    /// without Redis, another node's rotation reaches this one through
    /// this read, as another node's logout does through the session's).
    async fn identify_client(
        &self,
        token: Arc<VerifiedToken>,
        client_id: ClientId,
        credential: CredentialId,
    ) -> anyhow::Result<Identified> {
        self.bearer.decisions_allowed()?;
        Ok(match self.clients.honouring(client_id, credential).await? {
            Some(client) => Identified::Client(ClientCaller { client, token }),
            None => Identified::TokenRefused(TokenError::Revoked),
        })
    }

    /// Judges a forwarded request: the access rules over every reading of
    /// its original methods and URIs ([`access_for`]), then, where the path
    /// needs a caller, `credential`, then the permissions the path names.
    ///
    /// # Errors
    /// [`DecideError::BadPath`] for a path that cannot be judged (control
    /// bytes, backslashes, a malformed escape); store failures.
    pub async fn decide(
        &self,
        rules: &[AccessRule],
        methods: &[&str],
        uris: &[&[u8]],
        credential: Presented<'_>,
    ) -> Result<Decision, DecideError> {
        let (needed, mfa) = match access_for(rules, methods, uris)? {
            Access::Public => return Ok(Decision::Public),
            Access::Deny => return Ok(Decision::Closed),
            Access::Authenticated { permissions, mfa } => (permissions, mfa),
        };
        let caller = match self.identify(credential).await? {
            Identified::Caller(caller) => caller,
            // A client proves no user, let alone a second factor; its
            // permissions are the ones its token carries.
            Identified::Client(_) if mfa => {
                return Ok(Decision::NeedsSecondFactor(None));
            }
            Identified::Client(client) if client.grants(&needed) => {
                return Ok(Decision::ClientAllowed(client));
            }
            Identified::Client(_) => return Ok(Decision::ClientLacks { needed }),
            refused => return Ok(Decision::Refused(refused)),
        };
        if mfa && !caller.auth.session.amr.is_multi_factor() {
            return Ok(Decision::NeedsSecondFactor(Some(caller)));
        }
        if !needed.is_empty() {
            let held = match &caller.permissions {
                Some(held) => held.clone(),
                None => self.permissions_of(caller.auth.user.id).await?.into(),
            };
            if !needed.iter().all(|p| held.contains(p)) {
                return Ok(Decision::Lacks { caller, needed });
            }
        }
        Ok(Decision::Allowed(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::RulePolicy;

    fn rule(path: &str, policy: RulePolicy) -> AccessRule {
        AccessRule {
            path: path.into(),
            methods: Vec::new(),
            policy,
            mfa: false,
        }
    }

    /// The order the answers rely on: a public or closed path never looks
    /// at the credential (not even one that cannot be read); a path that
    /// needs a caller refuses what names none; then the permissions.
    #[tokio::test]
    async fn rules_first_then_the_caller_then_the_permissions() {
        let clock = Arc::new(SystemClock);
        let (auth, _dir) = crate::auth::test_support::services(clock, |_| {}).await;
        let rules = [
            rule("/public/", RulePolicy::Public),
            rule("/closed/", RulePolicy::Deny),
            rule("/admin/", RulePolicy::Permission("reports:read".into())),
        ];
        let decide = |uri: &'static str, credential: Presented<'static>| {
            let (auth, rules) = (&auth, &rules);
            async move {
                auth.gate
                    .decide(rules, &["GET"], &[uri.as_bytes()], credential)
                    .await
                    .expect("a decision")
            }
        };
        let unreadable = || Presented::Unreadable(Unreadable::TwoAuthorizations);
        assert!(matches!(
            decide("/public/x", unreadable()).await,
            Decision::Public
        ));
        assert!(matches!(
            decide("/closed/x", unreadable()).await,
            Decision::Closed
        ));
        assert!(matches!(
            decide("/app", unreadable()).await,
            Decision::Refused(Identified::Unreadable(Unreadable::TwoAuthorizations))
        ));
        assert!(matches!(
            decide("/app", Presented::Nothing).await,
            Decision::Refused(Identified::Nobody)
        ));
        assert!(matches!(
            decide("/app", Presented::Bearer("not.a.token")).await,
            Decision::Refused(Identified::TokenRefused(TokenError::Malformed))
        ));
        assert!(matches!(
            auth.gate
                .decide(&rules, &["GET"], &[b"/app/\x00"], Presented::Nothing)
                .await,
            Err(DecideError::BadPath)
        ));
        // A signed-in user: allowed where a session is enough, short of a
        // permission where one is named.
        auth.accounts
            .register(
                "a@example.com",
                "a long passphrase".into(),
                vec![],
                crate::auth::accounts::Registrar::Operator,
            )
            .await
            .expect("register");
        let (_, session) = auth
            .accounts
            .login(
                "a@example.com",
                crate::model::types::Password::new("a long passphrase".into()),
                &crate::auth::ClientMeta::default(),
            )
            .await
            .expect("login");
        let cookie = || Presented::Cookie(session.secret.clone());
        assert!(matches!(
            auth.gate
                .decide(&rules, &["GET"], &[b"/app"], cookie())
                .await,
            Ok(Decision::Allowed(Caller { bearer: false, .. }))
        ));
        match auth
            .gate
            .decide(&rules, &["GET"], &[b"/admin/x"], cookie())
            .await
        {
            Ok(Decision::Lacks { needed, .. }) => assert_eq!(needed, ["reports:read"]),
            other => panic!("{other:?}"),
        }
    }
}
