//! The OpenID Provider (OIDC Core 1.0, authorization code flow): judging an
//! authorization request, issuing and exchanging codes, authenticating
//! clients, ID tokens and UserInfo claims, consents.
//!
//! The bridge to the rest of gatehouse is the client session: exchanging a
//! code starts a session for the client inside the user's browser session
//! (`Sessions::start_client_session`). Its access tokens carry its id as
//! `sid`, so every way a session ends (sign-out, the device list, a
//! disabled user, a password reset, the browser session ending) refuses
//! the client's tokens at once on every node, through the same revocations
//! as any other token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use sha2::{Digest as _, Sha256, Sha512};
use subtle::ConstantTimeEq as _;
use url::Url;

use super::audit::{Actor, Audit, Ending, EventType};
use super::bearer::Bearer;
use super::claims::Holder;
use super::keys::KeyManager;
use super::sessions::{Authenticated, Sessions};
use super::tokens::{GrantError, IssuedAccess, Tokens};
use crate::clock::Clock;
use crate::model::amr::Amr;
use crate::model::client::ClientMeta;
use crate::model::oidc::{ClientType, GrantType, IdTokenAlg};
use crate::model::types::{AuthCode, ClientId, ClientSecret, RefreshSecret, SessionId};
use crate::store::{
    AuthorizationCode, ClientRecord, CodeSpend, Consent, GrantStore, SessionLink, SessionRecord,
    SessionStore, UserRecord, UserStore,
};

/// The scopes gatehouse knows, in the order granted scopes are written.
pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// How long an authorization code may be exchanged.
pub const CODE_TTL: Duration = Duration::from_secs(60);

/// How long a spent code is remembered after its expiry, so that a replay
/// can still end what it issued.
pub const CODE_KEPT: Duration = Duration::from_secs(600);

/// Longest `state`, `nonce` and `login_hint` taken (they come back in
/// redirects and tokens).
const MAX_PARAM: usize = 512;

/// The parameter that carries "the user signed in again after this
/// instant" from a forced login back to the authorization endpoint (it
/// replaces `prompt=login` and `max_age`, which would otherwise send the
/// user to the login page forever).
pub const LOGIN_AFTER: &str = "gh_login_after";

/// `prompt` (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// An authorization request judged good: the client and redirect URI are
/// genuine and every parameter is acceptable.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: ClientRecord,
    pub redirect_uri: String,
    pub state: Option<String>,
    /// Granted scopes, in the order of [`SCOPES`].
    pub scopes: Vec<&'static str>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
    /// Unix seconds: the user must have signed in at or after this.
    pub login_after: Option<i64>,
}

impl AuthorizationRequest {
    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }
}

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or the redirect URI cannot be trusted: said on a page,
    /// never sent anywhere (RFC 6749 §4.1.2.1).
    Page(&'static str),
    /// Sent back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

/// What the authorization endpoint does next with a good request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the browser to the login page; `force` shows it even to a
    /// signed-in visitor.
    Login { force: bool },
    /// Ask the user to allow the client these scopes.
    Consent,
    /// Issue the code.
    Issue,
}

/// A code grant's result.
#[derive(Debug)]
pub struct CodeGrant {
    pub access: IssuedAccess,
    pub id_token: Option<String>,
    pub refresh: Option<RefreshSecret>,
}

/// Client credentials as presented to the token endpoint.
#[derive(Debug, Default)]
pub struct PresentedClient<'a> {
    /// From `Authorization: Basic` (RFC 6749 §2.3.1), decoded.
    pub basic: Option<(String, String)>,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
}

/// Why a client could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// 401 `invalid_client`; `basic` when the client tried HTTP Basic (the
    /// answer then carries its challenge, RFC 6749 §5.2).
    #[error("client authentication failed")]
    Failed { basic: bool },
    /// Two ways at once (RFC 6749 §2.3).
    #[error("more than one client authentication method")]
    TwoMethods,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The OpenID Provider.
pub struct Provider {
    bearer: Arc<Bearer>,
    clients: Arc<super::clients::Clients>,
    grants: Arc<dyn GrantStore>,
    sessions: Arc<Sessions>,
    session_store: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    tokens: Arc<Tokens>,
    keys: Arc<KeyManager>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").finish_non_exhaustive()
    }
}

impl Provider {
    #[allow(clippy::too_many_arguments)] // the wiring, done once in `Services::new`
    pub fn new(
        bearer: Arc<Bearer>,
        clients: Arc<super::clients::Clients>,
        grants: Arc<dyn GrantStore>,
        sessions: Arc<Sessions>,
        session_store: Arc<dyn SessionStore>,
        users: Arc<dyn UserStore>,
        tokens: Arc<Tokens>,
        keys: Arc<KeyManager>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            bearer,
            clients,
            grants,
            sessions,
            session_store,
            users,
            tokens,
            keys,
            audit,
            clock,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.tokens.settings().issuer
    }

    /// A client, from the node's cache of recent reads (see
    /// [`super::clients::ClientCache`]) or the store.
    async fn client(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        self.clients.current(id).await
    }

    /// Judges an authorization request's parameters (each at most once:
    /// `params` holds `None` for one given twice). The client and redirect
    /// URI are checked first; only then do errors go to the redirect URI.
    ///
    /// # Errors
    /// [`AuthorizeError`]; a store failure is `Err(Err(_))`.
    pub async fn check_request(
        &self,
        params: &HashMap<String, Option<String>>,
    ) -> Result<Result<AuthorizationRequest, AuthorizeError>, anyhow::Error> {
        let get = |name: &str| params.get(name).cloned().flatten();
        let twice = |name: &str| matches!(params.get(name), Some(None));
        let page = |why| Ok(Err(AuthorizeError::Page(why)));
        if twice("client_id") || twice("redirect_uri") {
            return page("The request names its client or redirect URI more than once.");
        }
        let Some(client_id) = get("client_id") else {
            return page("The request names no client (client_id).");
        };
        let Some(client_id) = ClientId::parse(&client_id) else {
            return page("The request names an unknown client.");
        };
        let Some(client) = self.client(client_id).await? else {
            return page("The request names an unknown client.");
        };
        let Some(redirect_uri) = get("redirect_uri") else {
            return page("The request has no redirect_uri.");
        };
        if !client
            .redirect_uris
            .iter()
            .any(|r| redirect_uri_matches(r, &redirect_uri))
        {
            return page("The redirect_uri is not one registered for this client.");
        }
        // From here on the client and the redirect URI are genuine: errors
        // go back to the client, with `state` when it came once.
        let state = get("state").filter(|s| !s.is_empty());
        let fail = |error, description| {
            Ok(Err(AuthorizeError::Redirect {
                redirect_uri: redirect_uri.clone(),
                state: state.clone(),
                error,
                description,
            }))
        };
        if state.as_ref().is_some_and(|s| s.len() > MAX_PARAM) {
            return fail("invalid_request", "state is too long.");
        }
        if params.values().any(Option::is_none) {
            return fail("invalid_request", "A parameter was sent more than once.");
        }
        if get("request").is_some() {
            return fail(
                "request_not_supported",
                "Request objects are not supported.",
            );
        }
        if get("request_uri").is_some() {
            return fail(
                "request_uri_not_supported",
                "Request objects are not supported.",
            );
        }
        match get("response_type").as_deref() {
            Some("code") => {}
            None => return fail("invalid_request", "response_type is missing."),
            Some(_) => {
                return fail(
                    "unsupported_response_type",
                    "Only response_type=code is supported.",
                );
            }
        }
        if get("response_mode").is_some_and(|m| m != "query") {
            return fail("invalid_request", "Only response_mode=query is supported.");
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return fail(
                "unauthorized_client",
                "This client may not use the authorization code flow.",
            );
        }
        let scopes = match granted_scopes(get("scope").as_deref().unwrap_or(""), &client) {
            Ok(s) => s,
            Err(description) => return fail("invalid_scope", description),
        };
        let code_challenge = match (
            get("code_challenge"),
            get("code_challenge_method").as_deref(),
        ) {
            (None, None) if client.kind == ClientType::Public => {
                return fail(
                    "invalid_request",
                    "A public client must send a PKCE code_challenge (S256).",
                );
            }
            (None, None) => None,
            (None, Some(_)) => {
                return fail(
                    "invalid_request",
                    "code_challenge_method without code_challenge.",
                );
            }
            (Some(c), Some("S256")) if is_s256_challenge(&c) => Some(c),
            (Some(_), Some("S256")) => {
                return fail(
                    "invalid_request",
                    "code_challenge must be 43 base64url characters (S256).",
                );
            }
            // A missing method means `plain` (RFC 7636 §4.3): refused.
            (Some(_), _) => {
                return fail(
                    "invalid_request",
                    "Only code_challenge_method=S256 is supported.",
                );
            }
        };
        let nonce = get("nonce").filter(|n| !n.is_empty());
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_PARAM) {
            return fail("invalid_request", "nonce is too long.");
        }
        let mut prompt = Prompt::default();
        for value in get("prompt").unwrap_or_default().split(' ') {
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                // Unknown values (select_account) ask for nothing we do.
                _ => {}
            }
        }
        if prompt.none && (prompt.login || prompt.consent) {
            return fail(
                "invalid_request",
                "prompt=none cannot be combined with other values.",
            );
        }
        let max_age = match get("max_age") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return fail("invalid_request", "max_age must be a number of seconds.");
                }
            },
        };
        let login_hint = get("login_hint").filter(|h| !h.is_empty() && h.len() <= MAX_PARAM);
        let login_after = get(LOGIN_AFTER).and_then(|v| v.parse::<i64>().ok());
        Ok(Ok(AuthorizationRequest {
            client,
            redirect_uri,
            state,
            scopes,
            nonce,
            code_challenge,
            prompt,
            max_age,
            login_hint,
            login_after,
        }))
    }

    /// What comes next for a good request, given the visitor's session.
    ///
    /// # Errors
    /// Store failures.
    pub async fn next(
        &self,
        req: &AuthorizationRequest,
        visitor: Option<&Authenticated>,
    ) -> anyhow::Result<Next> {
        let Some(visitor) = visitor else {
            return Ok(Next::Login { force: false });
        };
        let auth_time = visitor.session.created_at.unix_timestamp();
        if let Some(after) = req.login_after {
            if auth_time < after {
                return Ok(Next::Login { force: true });
            }
        } else {
            if req.prompt.login {
                return Ok(Next::Login { force: true });
            }
            if let Some(max_age) = req.max_age {
                let age = self.clock.now().unix_timestamp() - auth_time;
                if age > i64::try_from(max_age).unwrap_or(i64::MAX) {
                    return Ok(Next::Login { force: true });
                }
            }
        }
        if req.client.first_party {
            return Ok(Next::Issue);
        }
        if req.prompt.consent {
            return Ok(Next::Consent);
        }
        let consent = self.grants.consent(visitor.user.id, req.client.id).await?;
        let covered = consent.is_some_and(|c| {
            let given: Vec<&str> = c.scopes.split(' ').collect();
            req.scopes.iter().all(|s| given.contains(s))
        });
        Ok(if covered { Next::Issue } else { Next::Consent })
    }

    /// Records the user's consent to the request's scopes (added to what
    /// they allowed the client before).
    ///
    /// # Errors
    /// Store failures.
    pub async fn give_consent(
        &self,
        req: &AuthorizationRequest,
        visitor: &Authenticated,
    ) -> anyhow::Result<()> {
        let before = self.grants.consent(visitor.user.id, req.client.id).await?;
        let mut scopes: Vec<&str> = before
            .as_ref()
            .map(|c| c.scopes.split(' ').collect())
            .unwrap_or_default();
        scopes.extend(req.scopes.iter().copied());
        let scopes: Vec<&str> = SCOPES.into_iter().filter(|s| scopes.contains(s)).collect();
        let scopes = scopes.join(" ");
        self.grants
            .put_consent(visitor.user.id, req.client.id, &scopes, self.clock.now())
            .await?;
        let event = self
            .audit
            .event(EventType::ConsentGiven, Actor::User(visitor.user.id))
            .user(visitor.user.id)
            .session(visitor.session.id)
            .detail("client_id", req.client.id.to_string())
            .detail("scopes", scopes);
        self.audit.record_one(event).await;
        Ok(())
    }

    /// The user's consents with their clients (a consent whose client is
    /// gone is not listed: it went with it).
    ///
    /// # Errors
    /// Store failures.
    pub async fn consents(
        &self,
        user: &UserRecord,
    ) -> anyhow::Result<Vec<(Consent, ClientRecord)>> {
        let mut out = Vec::new();
        for consent in self.grants.consents_of(user.id).await? {
            if let Some(client) = self.clients.client(consent.client_id).await? {
                out.push((consent, client));
            }
        }
        Ok(out)
    }

    /// Withdraws the user's consent to a client and ends the client's
    /// sessions of the user. `false` when there was no consent.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke_consent(
        &self,
        visitor: &Authenticated,
        client: ClientId,
    ) -> anyhow::Result<bool> {
        let user = visitor.user.id;
        let had = self.grants.delete_consent(user, client).await?;
        for s in self.sessions.client_sessions(user).await? {
            if s.link.as_ref().is_some_and(|l| l.client_id == client) {
                self.sessions
                    .end(user, s.id, Actor::User(user), Ending::ConsentRevoked)
                    .await?;
            }
        }
        if had {
            let event = self
                .audit
                .event(EventType::ConsentRevoked, Actor::User(user))
                .user(user)
                .session(visitor.session.id)
                .detail("client_id", client.to_string());
            self.audit.record_one(event).await;
        }
        Ok(had)
    }

    /// Issues a code for the request, approved in the visitor's browser
    /// session; returns the code to send to the redirect URI.
    ///
    /// # Errors
    /// When the OS RNG or the store fails.
    pub async fn issue_code(
        &self,
        req: &AuthorizationRequest,
        visitor: &Authenticated,
    ) -> anyhow::Result<AuthCode> {
        let code = AuthCode::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let now = self.clock.now();
        let record = AuthorizationCode {
            client_id: req.client.id,
            user_id: visitor.user.id,
            parent_id: visitor.session.id,
            redirect_uri: req.redirect_uri.clone(),
            scopes: req.scope(),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time: visitor.session.created_at,
            amr: visitor.session.amr,
            created_at: now,
            expires_at: now + CODE_TTL,
        };
        self.grants.insert_code(&code.hash(), &record).await?;
        Ok(code)
    }

    /// Authenticates the client of a token request: HTTP Basic or the
    /// body's `client_id` and `client_secret` (never both), or a public
    /// client's bare `client_id`. `Ok(None)` when the request names no
    /// client, or one that is not registered (the `password` and
    /// `refresh_token` grants ignore those, as before clients existed).
    ///
    /// # Errors
    /// [`ClientAuthError`].
    pub async fn authenticate_client(
        &self,
        presented: &PresentedClient<'_>,
    ) -> Result<Option<ClientRecord>, ClientAuthError> {
        let basic = presented.basic.is_some();
        let (id, secret) = match (&presented.basic, presented.client_secret) {
            (Some(_), Some(_)) => return Err(ClientAuthError::TwoMethods),
            (Some((id, secret)), None) => {
                if presented.client_id.is_some_and(|c| c != id) {
                    return Err(ClientAuthError::TwoMethods);
                }
                (Some(id.as_str()), Some(secret.as_str()))
            }
            (None, secret) => (presented.client_id, secret),
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let Some(client_id) = ClientId::parse(id) else {
            return if secret.is_some() {
                Err(ClientAuthError::Failed { basic })
            } else {
                Ok(None)
            };
        };
        let Some(client) = self.client(client_id).await? else {
            return if secret.is_some() {
                Err(ClientAuthError::Failed { basic })
            } else {
                Ok(None)
            };
        };
        match (client.kind, secret, &client.secret_hash) {
            (ClientType::Public, None, _) => Ok(Some(client)),
            (ClientType::Confidential, Some(secret), Some(stored)) => {
                let presented = ClientSecret::parse_secret(secret)
                    .ok_or(ClientAuthError::Failed { basic })?
                    .hash();
                if bool::from(presented.0.ct_eq(&stored.0)) {
                    return Ok(Some(client));
                }
                // The node's copy may predate a rotation made elsewhere:
                // the store decides before a well-formed secret is refused.
                match self.clients.reread(client_id).await? {
                    Some(fresh)
                        if fresh
                            .secret_hash
                            .is_some_and(|h| bool::from(presented.0.ct_eq(&h.0))) =>
                    {
                        Ok(Some(fresh))
                    }
                    _ => Err(ClientAuthError::Failed { basic }),
                }
            }
            _ => Err(ClientAuthError::Failed { basic }),
        }
    }

    /// The `authorization_code` grant for an authenticated client.
    ///
    /// # Errors
    /// [`GrantError::InvalidGrant`] for a code that is unknown, expired,
    /// spent (whose first exchange's session then ends), another client's,
    /// for another redirect URI, or whose PKCE check fails; store failures.
    pub async fn exchange_code(
        &self,
        client: &ClientRecord,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
        meta: &ClientMeta,
    ) -> Result<CodeGrant, GrantError> {
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(GrantError::UnauthorizedClient);
        }
        let code = AuthCode::parse(code).ok_or(GrantError::InvalidGrant)?;
        let now = self.clock.now();
        let session_id = SessionId::new();
        let record = match self
            .grants
            .spend_code(&code.hash(), now, session_id)
            .await?
        {
            CodeSpend::Spent(record) => record,
            CodeSpend::Unknown => return Err(GrantError::InvalidGrant),
            CodeSpend::Replayed { code, session_id } => {
                self.code_replayed(&code, session_id).await?;
                return Err(GrantError::InvalidGrant);
            }
        };
        if record.client_id != client.id {
            return Err(GrantError::InvalidGrant);
        }
        // RFC 6749 §4.1.3: the same redirect URI as the request's.
        if redirect_uri != Some(record.redirect_uri.as_str()) {
            return Err(GrantError::InvalidGrant);
        }
        match (&record.code_challenge, verifier) {
            (Some(challenge), Some(verifier)) if pkce_s256_matches(challenge, verifier) => {}
            (None, None) => {}
            // A verifier for a request without a challenge is a downgrade
            // (RFC 9700 §4.8.2); a missing or wrong one fails.
            _ => return Err(GrantError::InvalidGrant),
        }
        let Some(parent) = self.session_store.session_by_id(record.parent_id).await? else {
            return Err(GrantError::InvalidGrant);
        };
        if parent.user_id != record.user_id || !self.sessions.is_live(&parent, now) {
            return Err(GrantError::InvalidGrant);
        }
        let user = self
            .users
            .user_by_id(record.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(GrantError::InvalidGrant)?;
        let link = SessionLink {
            client_id: client.id,
            parent_id: parent.id,
            scopes: record.scopes.clone(),
        };
        // Recorded first: a client deleted meanwhile finds it (or, being
        // gone, fails this exchange), so no session of it is left behind.
        self.grants
            .record_grant(session_id, client.id, user.id, parent.expires_at)
            .await?;
        let session = self
            .sessions
            .start_client_session(session_id, &parent, link, meta)
            .await?;
        if self.clients.client(client.id).await?.is_none() {
            self.sessions
                .end(user.id, session.id, Actor::System, Ending::ClientDeleted)
                .await?;
            return Err(GrantError::InvalidGrant);
        }
        // The parent may have ended while the child was being written, or
        // the code been replayed before the child existed (the replay's
        // ending found nothing to end): the child must not outlive either.
        let ending = if self.grants.code_replayed(&code.hash()).await? {
            Some(Ending::CodeReplayed)
        } else if self.session_store.session_by_id(parent.id).await?.is_none() {
            Some(Ending::BrowserSessionEnded)
        } else {
            None
        };
        if let Some(why) = ending {
            self.sessions
                .end(user.id, session.id, Actor::System, why)
                .await?;
            return Err(GrantError::InvalidGrant);
        }
        let access = self.tokens.issue_access_token(&user, &session).await?;
        let scopes: Vec<&str> = record.scopes.split(' ').collect();
        let refresh = if scopes.contains(&"offline_access")
            && client.grant_types.contains(&GrantType::RefreshToken)
        {
            match self.tokens.first_refresh(&session).await {
                Ok(refresh) => Some(refresh),
                // A replay of the code ended the session meanwhile (its
                // refresh token has no session to belong to): refused.
                Err(_)
                    if self
                        .session_store
                        .session_by_id(session.id)
                        .await?
                        .is_none() =>
                {
                    return Err(GrantError::InvalidGrant);
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let id_token = if scopes.contains(&"openid") {
            Some(self.id_token(client, &user, &record, &access.token)?)
        } else {
            None
        };
        Ok(CodeGrant {
            access,
            id_token,
            refresh,
        })
    }

    /// A spent code came back: the client session its first exchange
    /// started ends (RFC 6749 §4.1.2), and the replay is recorded.
    async fn code_replayed(
        &self,
        code: &AuthorizationCode,
        session_id: Option<SessionId>,
    ) -> anyhow::Result<()> {
        let mut event = self
            .audit
            .event(EventType::CodeReplayed, Actor::Anonymous)
            .user(code.user_id)
            .detail("client_id", code.client_id.to_string());
        if let Some(sid) = session_id {
            event = event.session(sid);
        }
        self.audit.record_one(event).await;
        if let Some(sid) = session_id {
            self.sessions
                .end(code.user_id, sid, Actor::System, Ending::CodeReplayed)
                .await?;
        }
        Ok(())
    }

    /// Signs the ID token of a code grant with the client's algorithm.
    fn id_token(
        &self,
        client: &ClientRecord,
        user: &UserRecord,
        code: &AuthorizationCode,
        access_token: &str,
    ) -> anyhow::Result<String> {
        let ring = self.keys.ring();
        let alg = client.id_token_alg;
        let signer = ring
            .id_token_signer(alg)
            .ok_or_else(|| anyhow::anyhow!("no {} ID-token key is available", alg.as_str()))?;
        let now = self.clock.now();
        let scopes: Vec<&str> = code.scopes.split(' ').collect();
        let claims = IdTokenClaims {
            iss: &self.tokens.settings().issuer,
            sub: user.id.to_string(),
            aud: client.id.to_string(),
            exp: (now + self.tokens.settings().access_token_ttl).unix_timestamp(),
            iat: now.unix_timestamp(),
            auth_time: code.auth_time.unix_timestamp(),
            nonce: code.nonce.as_deref(),
            at_hash: token_hash(alg, access_token),
            amr: code.amr,
            sid: code.parent_id.to_string(),
            profile: user_claims(user, &scopes),
        };
        let mut header = Header::new(jose_algorithm(alg));
        header.typ = Some("JWT".to_owned());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|e| anyhow::anyhow!("signing an ID token: {e}"))
    }

    /// The UserInfo claims for a client session's user (OIDC Core §5.3):
    /// `None` when the session was not granted `openid`.
    pub fn userinfo(&self, user: &UserRecord, session: &SessionRecord) -> Option<UserClaims> {
        let link = session.link.as_ref()?;
        let scopes: Vec<&str> = link.scopes.split(' ').collect();
        if !scopes.contains(&"openid") {
            return None;
        }
        Some(UserClaims {
            sub: user.id.to_string(),
            profile: user_claims(user, &scopes),
        })
    }

    /// Revokes a token for the client that holds it (RFC 7009): an access
    /// or refresh token of one of the client's sessions ends that session,
    /// so its other tokens go too (§2.1). A token that is unknown, expired
    /// or malformed is nothing to revoke (§2.2: still a success).
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke(&self, client: &ClientRecord, token: &str) -> anyhow::Result<Revoked> {
        // A client's own token has no session to end: its secret's rotation
        // revokes it (with every other token obtained with that secret).
        if let Some(Holder::Client { client_id, .. }) = token
            .contains('.')
            .then(|| self.bearer.verify_access_token(token).ok())
            .flatten()
            .map(|v| v.holder)
        {
            return Ok(if client_id == client.id {
                Revoked::Unsupported
            } else {
                Revoked::NotThisClients
            });
        }
        let Some((user, session, owner)) = self.token_session(token).await? else {
            return Ok(Revoked::Nothing);
        };
        if owner != Some(client.id) {
            return Ok(Revoked::NotThisClients);
        }
        self.sessions
            .end(user, session, Actor::System, Ending::TokenRevoked)
            .await?;
        Ok(Revoked::Ended)
    }

    /// The session a token belongs to, with its user and the client it was
    /// issued to: an access token that verifies (expired ones excepted), or
    /// a refresh token the store knows. `None` for anything else.
    async fn token_session(
        &self,
        token: &str,
    ) -> anyhow::Result<Option<(crate::model::types::UserId, SessionId, Option<ClientId>)>> {
        if token.contains('.') {
            return Ok(self.bearer.verify_access_token(token).ok().and_then(|v| {
                let client = v.claims.client_id.as_deref().and_then(ClientId::parse);
                let (user, session) = v.user_session()?;
                Some((user, session, client))
            }));
        }
        let Some(refresh) = RefreshSecret::parse(token) else {
            return Ok(None);
        };
        let Some(record) = self.session_store.refresh_by_hash(&refresh.hash()).await? else {
            return Ok(None);
        };
        let Some(session) = self.session_store.session_by_id(record.session_id).await? else {
            return Ok(None);
        };
        let client = session.link.as_ref().map(|l| l.client_id);
        Ok(Some((session.user_id, session.id, client)))
    }

    /// What a token is (RFC 7662): active only for an access token that
    /// verifies and whose session and user are live, or an unspent refresh
    /// token of a live session issued to the asking client. An ID token (it
    /// verifies with no access-token key), a refresh token of another
    /// client, and a token of an ended session are inactive.
    ///
    /// # Errors
    /// Store failures (an unknown answer is never "inactive").
    pub async fn introspect(
        &self,
        asking: Option<ClientId>,
        token: &str,
    ) -> anyhow::Result<Introspection> {
        if token.contains('.') {
            let Ok(verified) = self.bearer.verify_access_token(token) else {
                return Ok(Introspection::inactive());
            };
            let username = match verified.holder {
                Holder::User { .. } => match self.bearer.authenticate_token(&verified).await? {
                    Some(principal) => Some(principal.auth.user.email.clone()),
                    None => return Ok(Introspection::inactive()),
                },
                // Live while the client exists with the secret the token
                // was obtained with (as `Gate::identify` judges it).
                Holder::Client {
                    client_id,
                    credential,
                } => {
                    self.bearer.decisions_allowed()?;
                    if self
                        .clients
                        .honouring(client_id, credential)
                        .await?
                        .is_none()
                    {
                        return Ok(Introspection::inactive());
                    }
                    None
                }
            };
            let c = &verified.claims;
            return Ok(Introspection {
                active: true,
                token_type: Some("Bearer"),
                scope: Some(c.scope.clone()),
                client_id: c.client_id.clone(),
                username,
                sub: Some(c.sub.clone()),
                aud: Some(c.aud.clone()),
                iss: Some(c.iss.clone()),
                exp: Some(c.exp),
                iat: Some(c.iat),
                jti: Some(c.jti.clone()),
                sid: c.sid.clone(),
            });
        }
        let Some(refresh) = RefreshSecret::parse(token) else {
            return Ok(Introspection::inactive());
        };
        let Some(record) = self.session_store.refresh_by_hash(&refresh.hash()).await? else {
            return Ok(Introspection::inactive());
        };
        let Some(session) = self.session_store.session_by_id(record.session_id).await? else {
            return Ok(Introspection::inactive());
        };
        let now = self.clock.now();
        let Some(link) = session.link.as_ref() else {
            return Ok(Introspection::inactive());
        };
        if record.spent_at.is_some()
            || asking != Some(link.client_id)
            || !self.sessions.is_live(&session, now)
        {
            return Ok(Introspection::inactive());
        }
        let Some(user) = self
            .users
            .user_by_id(session.user_id)
            .await?
            .filter(|u| !u.disabled)
        else {
            return Ok(Introspection::inactive());
        };
        Ok(Introspection {
            active: true,
            token_type: Some("refresh_token"),
            scope: Some(link.scopes.clone()),
            client_id: Some(link.client_id.to_string()),
            username: Some(user.email),
            sub: Some(user.id.to_string()),
            aud: None,
            iss: Some(self.tokens.settings().issuer.clone()),
            exp: Some(session.expires_at.unix_timestamp()),
            iat: Some(record.created_at.unix_timestamp()),
            jti: None,
            sid: Some(session.id.to_string()),
        })
    }

    /// Judges an RP-initiated logout request (OpenID Connect RP-Initiated
    /// Logout 1.0 §2): the `id_token_hint` must be an ID token gatehouse
    /// signed (expired ones too) for the client named by `client_id`, if
    /// both are given; `post_logout_redirect_uri` must be registered for
    /// that client, so needs one of them.
    ///
    /// # Errors
    /// Store failures; `Ok(Err(why))` for a request to refuse on a page.
    pub async fn check_logout(
        &self,
        id_token_hint: Option<&str>,
        client_id: Option<&str>,
        post_logout_redirect_uri: Option<&str>,
    ) -> anyhow::Result<Result<LogoutRequest, &'static str>> {
        let hinted = match id_token_hint {
            None => None,
            Some(hint) => match self.read_id_token_hint(hint) {
                Some(h) => Some(h),
                None => return Ok(Err("The id_token_hint is not an ID token from here.")),
            },
        };
        let named = match client_id {
            None => None,
            Some(id) => match ClientId::parse(id) {
                Some(id) => Some(id),
                None => return Ok(Err("The client_id names no client.")),
            },
        };
        let client_id = match (&hinted, named) {
            (Some(h), Some(n)) if h.client != n => {
                return Ok(Err("The id_token_hint was issued to another client."));
            }
            (Some(h), _) => Some(h.client),
            (None, n) => n,
        };
        let client = match client_id {
            None => None,
            Some(id) => match self.clients.client(id).await? {
                Some(c) => Some(c),
                None => return Ok(Err("The client_id names no client.")),
            },
        };
        if let Some(uri) = post_logout_redirect_uri {
            let registered = client.as_ref().is_some_and(|c| {
                c.post_logout_redirect_uris
                    .iter()
                    .any(|r| redirect_uri_matches(r, uri))
            });
            if !registered {
                return Ok(Err(
                    "The post_logout_redirect_uri is not one registered for this client.",
                ));
            }
        }
        Ok(Ok(LogoutRequest {
            client,
            post_logout_redirect_uri: post_logout_redirect_uri.map(str::to_owned),
            hinted: hinted.map(|h| (h.user, h.session)),
        }))
    }

    /// The client, user and browser session of an ID token this server
    /// signed (its expiry is not judged: a hint may be old).
    fn read_id_token_hint(&self, token: &str) -> Option<Hint> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let ring = self.keys.ring();
        let (alg, key) = ring.id_token_verifier(header.kid.as_deref()?)?;
        if header.alg != jose_algorithm(alg) {
            return None;
        }
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.tokens.settings().issuer]);
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        #[derive(serde::Deserialize)]
        struct HintClaims {
            sub: String,
            aud: String,
            sid: String,
        }
        let claims = jsonwebtoken::decode::<HintClaims>(token, key, &validation)
            .ok()?
            .claims;
        Some(Hint {
            client: ClientId::parse(&claims.aud)?,
            user: crate::model::types::UserId::parse(&claims.sub)?,
            session: SessionId::parse(&claims.sid)?,
        })
    }

    /// Ends the browser session of a logout: the hinted one (when it is
    /// still the user's), else the visitor's. Returns whether one ended.
    ///
    /// # Errors
    /// Store failures.
    pub async fn logout(
        &self,
        req: &LogoutRequest,
        visitor: Option<&Authenticated>,
    ) -> anyhow::Result<bool> {
        let target = match (req.hinted, visitor) {
            (Some((user, session)), _) => Some((user, session)),
            (None, Some(v)) => Some((v.user.id, v.session.id)),
            (None, None) => None,
        };
        let Some((user, session)) = target else {
            return Ok(false);
        };
        self.sessions
            .end(user, session, Actor::User(user), Ending::Logout)
            .await
    }

    /// Deletes a client: the tokens obtained with its secret
    /// (`client_credentials`) are refused, then every client session it
    /// holds ends, so its users' tokens are refused at once too. `false`
    /// when there was none.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_client(&self, id: ClientId, actor: Actor) -> anyhow::Result<bool> {
        // The tokens of its secret are refused before it goes (a failure
        // midway leaves them refused), and those of the secret it had as it
        // went, should a rotation have raced this.
        let Some(before) = self.clients.client(id).await? else {
            return Ok(false);
        };
        let retired = before.credential();
        if let Some(credential) = retired {
            self.sessions.retire_credential(credential).await?;
        }
        let Some(gone) = self.clients.delete(id, actor).await? else {
            return Ok(false);
        };
        if let Some(credential) = gone.filter(|c| Some(*c) != retired) {
            self.sessions.retire_credential(credential).await?;
        }
        for (user, session) in self.grants.take_grants_of(id).await? {
            self.sessions
                .end(user, session, actor, Ending::ClientDeleted)
                .await?;
        }
        Ok(true)
    }

    /// Gives a confidential client a new secret; the tokens obtained with
    /// the old one are refused at once (see `Clients::rotate_secret`).
    ///
    /// # Errors
    /// As `Clients::rotate_secret`.
    pub async fn rotate_secret(
        &self,
        id: ClientId,
        actor: Actor,
    ) -> Result<ClientSecret, super::clients::ClientFailure> {
        self.clients.rotate_secret(id, &self.sessions, actor).await
    }

    /// The `client_credentials` grant (RFC 6749 §4.4) for an authenticated
    /// client: a token of the client itself with its roles' permissions,
    /// or with the subset `scope` asks for.
    ///
    /// # Errors
    /// [`GrantError::UnauthorizedClient`] for a client not registered for
    /// the grant (public clients never are); [`GrantError::InvalidScope`]
    /// for a scope naming a permission the client lacks;
    /// [`GrantError::RetiredSecret`] when the secret it authenticated with
    /// was retired meanwhile (a rotation on another node, seen here before
    /// this node's copy of the client caught up); store failures.
    pub async fn client_credentials(
        &self,
        client: &ClientRecord,
        scope: Option<&str>,
    ) -> Result<IssuedAccess, GrantError> {
        if client.kind != ClientType::Confidential
            || !client.grant_types.contains(&GrantType::ClientCredentials)
        {
            return Err(GrantError::UnauthorizedClient);
        }
        let credential = client.credential().ok_or(GrantError::UnauthorizedClient)?;
        if self.sessions.is_retired(credential) {
            self.clients.forget(client.id);
            return Err(GrantError::RetiredSecret);
        }
        let held = self.clients.permissions(client.id).await?;
        let permissions = match scope {
            None => held,
            Some(asked) => {
                let asked: Vec<String> = asked
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                if asked.iter().any(|p| !held.contains(p)) {
                    return Err(GrantError::InvalidScope);
                }
                let mut asked = asked;
                asked.sort();
                asked.dedup();
                asked
            }
        };
        Ok(self
            .tokens
            .issue_client_token(client, credential, &permissions)?)
    }

    /// Deletes codes no replay can matter for any more.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_codes(&self) -> anyhow::Result<u64> {
        self.grants
            .delete_codes_expired_before(self.clock.now() - CODE_KEPT)
            .await
    }
}

/// What [`Provider::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token's session ended.
    Ended,
    /// Nothing to revoke: unknown, expired or malformed.
    Nothing,
    /// The token was issued to another client (or to none): refused.
    NotThisClients,
    /// A client's own token (`client_credentials`): rotating the client's
    /// secret revokes those (RFC 7009 §2.2.1 `unsupported_token_type`).
    Unsupported,
}

/// An RFC 7662 answer.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<super::claims::Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Introspection {
    /// `{"active": false}` and nothing else (RFC 7662 §2.2).
    pub fn inactive() -> Self {
        Self::default()
    }
}

/// An RP-initiated logout request judged good.
#[derive(Debug, Clone)]
pub struct LogoutRequest {
    /// The client, named by the hint or `client_id`.
    pub client: Option<ClientRecord>,
    /// Registered for `client`.
    pub post_logout_redirect_uri: Option<String>,
    /// The user and browser session of a valid `id_token_hint`.
    pub hinted: Option<(crate::model::types::UserId, SessionId)>,
}

struct Hint {
    client: ClientId,
    user: crate::model::types::UserId,
    session: SessionId,
}

/// The claims the `profile` and `email` scopes add.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScopeClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// What UserInfo answers.
#[derive(Debug, Clone, Serialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(flatten)]
    pub profile: ScopeClaims,
}

fn user_claims(user: &UserRecord, scopes: &[&str]) -> ScopeClaims {
    let mut claims = ScopeClaims::default();
    if scopes.contains(&"email") {
        claims.email = Some(user.email.clone());
        claims.email_verified = Some(user.email_verified);
    }
    if scopes.contains(&"profile") {
        claims.preferred_username = Some(user.email.clone());
        claims.roles = Some(user.roles.clone());
    }
    claims
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    amr: Amr,
    sid: String,
    #[serde(flatten)]
    profile: ScopeClaims,
}

/// The JOSE algorithm of an ID-token algorithm.
pub fn jose_algorithm(alg: IdTokenAlg) -> Algorithm {
    match alg {
        IdTokenAlg::Rs256 => Algorithm::RS256,
        IdTokenAlg::Es256 => Algorithm::ES256,
        IdTokenAlg::EdDsa => Algorithm::EdDSA,
    }
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the access
/// token, with the hash of the ID token's algorithm (SHA-512 for Ed25519,
/// as the OpenID Foundation's certified libraries do).
pub fn token_hash(alg: IdTokenAlg, token: &str) -> String {
    match alg {
        IdTokenAlg::Rs256 | IdTokenAlg::Es256 => {
            let digest = Sha256::digest(token.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest[..16])
        }
        IdTokenAlg::EdDsa => {
            let digest = Sha512::digest(token.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest[..32])
        }
    }
}

/// The scopes granted for a request's `scope`: the known ones the client
/// may use, in the order of [`SCOPES`]. Unknown values are ignored (OIDC
/// Core §3.1.2.1); `offline_access` is dropped, not refused, for a client
/// without refresh tokens (apps ask for it routinely).
///
/// # Errors
/// A known scope the client may not use.
pub fn granted_scopes(
    requested: &str,
    client: &ClientRecord,
) -> Result<Vec<&'static str>, &'static str> {
    let asked: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    let mut granted = Vec::new();
    for scope in SCOPES {
        if !asked.contains(&scope) {
            continue;
        }
        let allowed = client.scopes.iter().any(|s| s == scope);
        if scope == "offline_access" {
            if allowed && client.grant_types.contains(&GrantType::RefreshToken) {
                granted.push(scope);
            }
            continue;
        }
        if !allowed {
            return Err("The request asks for a scope this client may not use.");
        }
        granted.push(scope);
    }
    Ok(granted)
}

/// Whether `requested` is the registered redirect URI: equal, byte for
/// byte, except that the port of a registered `http://127.0.0.1` or
/// `http://[::1]` URI may differ (RFC 8252 §7.3: native apps listen on a
/// port the OS picks).
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(mut reg), Ok(mut req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // Only a URI already in normal form can match (what is compared is
    // what the browser will be sent to).
    if req.as_str() != requested || reg.scheme() != "http" || req.scheme() != "http" {
        return false;
    }
    let loopback = matches!(reg.host_str(), Some("127.0.0.1" | "[::1]"));
    if !loopback || reg.host_str() != req.host_str() {
        return false;
    }
    if reg.set_port(None).is_err() || req.set_port(None).is_err() {
        return false;
    }
    reg == req
}

/// A PKCE S256 challenge's shape: the base64url SHA-256 of the verifier.
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.6: `BASE64URL(SHA256(verifier)) == challenge`, for a
/// verifier of 43 to 128 unreserved characters.
pub fn pkce_s256_matches(challenge: &str, verifier: &str) -> bool {
    let shape_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !shape_ok {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// The client id and secret of an `Authorization: Basic` value (RFC 6749
/// §2.3.1: each form-urlencoded, then joined by `:` and base64-encoded);
/// `None` for another scheme or a malformed value.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> Option<String> {
        let plus_as_space = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(challenge, verifier));
        assert!(!pkce_s256_matches(
            challenge,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK"
        ));
        assert!(!pkce_s256_matches(challenge, "short"));
        assert!(!pkce_s256_matches(verifier, verifier), "plain is no S256");
        assert!(is_s256_challenge(challenge));
        assert!(!is_s256_challenge(verifier.trim_end_matches('k')));
    }

    #[test]
    fn at_hash_matches_oidc_core_example() {
        // OIDC Core Appendix A.3's access token and at_hash (RS256).
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(
            token_hash(IdTokenAlg::Rs256, token),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn redirect_uris_match_exactly_but_for_a_loopback_port() {
        let m = redirect_uri_matches;
        assert!(m("https://app.example/cb", "https://app.example/cb"));
        assert!(!m("https://app.example/cb", "https://app.example/cb/"));
        assert!(!m("https://app.example/cb", "https://app.example/cb?x=1"));
        assert!(!m("https://app.example/cb", "https://APP.example/cb"));
        assert!(!m("https://app.example/cb", "https://app.example:443/cb"));
        assert!(!m(
            "https://app.example:8443/cb",
            "https://app.example:9443/cb"
        ));
        assert!(m("http://127.0.0.1/cb", "http://127.0.0.1:53121/cb"));
        assert!(m("http://127.0.0.1:8000/cb", "http://127.0.0.1:53121/cb"));
        assert!(m("http://[::1]/cb", "http://[::1]:53121/cb"));
        assert!(!m("http://127.0.0.1/cb", "http://127.0.0.1:53121/other"));
        assert!(!m("http://127.0.0.1/cb", "http://[::1]:53121/cb"));
        assert!(!m("http://localhost/cb", "http://localhost:53121/cb"));
        assert!(!m("http://127.0.0.1/cb", "http://127.0.0.1:53121/cb?x"));
        assert!(!m("http://127.0.0.1/cb", "http://127.0.0.1:053121/cb"));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let value = format!("Basic {}", STANDARD.encode("my%3Aid:s%2Bc+ret"));
        assert_eq!(
            basic_credentials(&value),
            Some(("my:id".to_owned(), "s+c ret".to_owned()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(
            basic_credentials(&format!("Basic {}", STANDARD.encode("nocolon"))),
            None
        );
    }
}
