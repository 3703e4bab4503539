//! Issuing access tokens, and the grants of the token endpoint: the
//! `password` grant and its MFA second step, and rotating refresh tokens with reuse detection. The
//! design is written down in `docs/tokens.md`.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::{Accounts, LoginError};
use super::audit::{Actor, Audit, Ending, EventType};
use super::keys;
use super::keys::KeyManager;
use super::mfa::{Challenge, Proof, SecondFactors, StepError};
use super::password::HashError;
use super::sessions::{NewSession, Sessions};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::amr::Amr;
use crate::model::client::ClientMeta;
use crate::model::types::{ClientId, CredentialId, Password, RefreshSecret};
use crate::store::{ClientRecord, SessionRecord, SessionStore, UserRecord, UserStore};

pub use super::claims::*;

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedAccess {
    pub token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// What a token grant returns.
#[derive(Debug)]
pub struct TokenPair {
    pub access: IssuedAccess,
    pub refresh: RefreshSecret,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Wrong credentials, or an unknown, spent or ended refresh token.
    #[error("invalid grant")]
    InvalidGrant,
    #[error("too many failed attempts")]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full")]
    Busy,
    /// The password was right and the user has a second factor: the client
    /// goes on with the challenge's `mfa_token`
    /// (`urn:gatehouse:grant-type:mfa`).
    #[error("a second factor is required")]
    MfaRequired(Challenge),
    /// The client may not use this grant type.
    #[error("unauthorized client")]
    UnauthorizedClient,
    /// The scope asks for a permission the client does not hold.
    #[error("invalid scope")]
    InvalidScope,
    /// The client authenticated with a secret that was rotated meanwhile.
    #[error("the client's secret was rotated")]
    RetiredSecret,
    /// The `mfa_token` of an MFA grant is unknown, expired or spent.
    #[error("invalid mfa_token")]
    InvalidMfaToken,
    /// The password was right; the address must be verified first
    /// (`email_verification = "required"`).
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<LoginError> for GrantError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => Self::InvalidGrant,
            LoginError::Throttled { retry_after } => Self::Throttled { retry_after },
            LoginError::Busy => Self::Busy,
            LoginError::SecondFactorRequired(challenge) => Self::MfaRequired(challenge),
            LoginError::EmailNotVerified => Self::EmailNotVerified,
            LoginError::Store(e) => Self::Store(e),
        }
    }
}

impl From<StepError> for GrantError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::InvalidToken => Self::InvalidMfaToken,
            StepError::WrongCode => Self::InvalidGrant,
            StepError::Throttled { retry_after } => Self::Throttled { retry_after },
            StepError::Store(e) => Self::Store(e),
        }
    }
}

impl From<HashError> for GrantError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// Signs access tokens and runs the token endpoint's grants.
pub struct Tokens {
    keys: Arc<KeyManager>,
    settings: TokenSettings,
    accounts: Arc<Accounts>,
    factors: Arc<SecondFactors>,
    sessions: Arc<Sessions>,
    /// Refresh tokens live with the sessions.
    store: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    #[allow(clippy::too_many_arguments)] // the wiring, done once in `Services::new`
    pub fn new(
        keys: Arc<KeyManager>,
        settings: TokenSettings,
        accounts: Arc<Accounts>,
        factors: Arc<SecondFactors>,
        sessions: Arc<Sessions>,
        store: Arc<dyn SessionStore>,
        users: Arc<dyn UserStore>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            keys,
            settings,
            accounts,
            factors,
            sessions,
            store,
            users,
            audit,
            metrics,
            clock,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs an access token for a live session, carrying the user's
    /// current roles and permissions. Its expiry never passes the session's:
    /// neither its absolute expiry nor the idle expiry as of now.
    ///
    /// # Errors
    /// When the store fails or no signing key is available.
    pub async fn issue_access_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
    ) -> anyhow::Result<IssuedAccess> {
        let permissions = self.accounts.permissions_of(user.id).await?;
        self.access_token_with(user, session, &permissions)
    }

    /// [`Self::issue_access_token`] with the user's effective permissions
    /// read already (with the user, in the same round trip).
    fn access_token_with(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
        permissions: &[String],
    ) -> anyhow::Result<IssuedAccess> {
        // A client session's token names its client and is meant for it
        // too; its scope starts with the OpenID scopes granted.
        let (aud, client_id, scope) = match &session.link {
            None => (
                Audience::One(self.settings.audience.clone()),
                None,
                permissions.join(" "),
            ),
            Some(link) => {
                let client_id = link.client_id.to_string();
                let mut scope = link.scopes.clone();
                for p in permissions {
                    scope.push(' ');
                    scope.push_str(p);
                }
                (
                    Audience::Many(vec![client_id.clone(), self.settings.audience.clone()]),
                    Some(client_id),
                    scope,
                )
            }
        };
        let now = self.clock.now();
        let exp = (now + self.settings.access_token_ttl)
            .min(session.expires_at)
            .min(now + self.sessions.limits().idle_timeout);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: user.id.to_string(),
            aud,
            exp: exp.unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: None,
            jti: Uuid::now_v7().to_string(),
            sid: Some(session.id.to_string()),
            credential_id: None,
            scope,
            roles: user.roles.clone(),
            amr: session.amr,
            client_id,
        };
        self.sign(claims)
    }

    /// Signs a client's own access token (`client_credentials`): `sub` and
    /// `client_id` are the client, `aud` the client and the configured
    /// audience, no `sid` but the `credential_id` of the secret it
    /// authenticated with, `scope` the `permissions` given, `roles` the
    /// client's; `amr` `pwd` (a shared secret). It lives
    /// `access_token_ttl`.
    ///
    /// # Errors
    /// When no signing key is available.
    pub fn issue_client_token(
        &self,
        client: &ClientRecord,
        credential: CredentialId,
        permissions: &[String],
    ) -> anyhow::Result<IssuedAccess> {
        let now = self.clock.now();
        let client_id = client.id.to_string();
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: client_id.clone(),
            aud: Audience::Many(vec![client_id.clone(), self.settings.audience.clone()]),
            exp: (now + self.settings.access_token_ttl).unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: None,
            jti: Uuid::now_v7().to_string(),
            sid: None,
            credential_id: Some(credential.to_string()),
            scope: permissions.join(" "),
            roles: client.roles.clone(),
            amr: Amr::PASSWORD,
            client_id: Some(client_id),
        };
        self.sign(claims)
    }

    /// Signs claims with the current access-token key.
    fn sign(&self, claims: AccessClaims) -> anyhow::Result<IssuedAccess> {
        let ring = self.keys.ring();
        let signer = ring
            .signer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no signing key is available"))?;
        let mut header = Header::new(keys::algorithm(ring.alg));
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))?;
        let expires_in = u64::try_from(claims.exp - claims.iat).unwrap_or(0);
        Ok(IssuedAccess {
            token,
            expires_in,
            scope: claims.scope,
        })
    }

    /// The `password` grant: a password login (throttled with `/v1/login`,
    /// one counter) that starts a new session and returns its first token
    /// pair.
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn password_grant(
        &self,
        email: &str,
        password: Password,
        client: &ClientMeta,
    ) -> Result<TokenPair, GrantError> {
        let (user, new) = self.accounts.login(email, password, client).await?;
        self.first_pair(&user, &new).await
    }

    /// The MFA grant (`urn:gatehouse:grant-type:mfa`): the second step of a
    /// password grant that answered `mfa_required`, with its `mfa_token`
    /// and a TOTP or recovery code; throttled with the login's second step,
    /// one counter.
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn mfa_grant(
        &self,
        mfa_token: &str,
        proof: Proof<'_>,
        client: &ClientMeta,
    ) -> Result<TokenPair, GrantError> {
        let (user, new) = self
            .factors
            .complete_login(mfa_token, proof, client)
            .await?;
        self.first_pair(&user, &new).await
    }

    /// The first refresh token of a client session just started.
    ///
    /// # Errors
    /// When the OS RNG or the store fails.
    pub async fn first_refresh(&self, session: &SessionRecord) -> anyhow::Result<RefreshSecret> {
        let refresh =
            RefreshSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        self.store
            .insert_refresh(&refresh.hash(), session.id, session.created_at)
            .await?;
        Ok(refresh)
    }

    /// The first token pair of a session just started by a grant.
    async fn first_pair(
        &self,
        user: &UserRecord,
        new: &NewSession,
    ) -> Result<TokenPair, GrantError> {
        let refresh =
            RefreshSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        self.store
            .insert_refresh(&refresh.hash(), new.record.id, new.record.created_at)
            .await?;
        let access = self.issue_access_token(user, &new.record).await?;
        self.metrics.tokens_password_grant.increment(1);
        Ok(TokenPair { access, refresh })
    }

    /// The `refresh_token` grant: spends the presented token and returns a
    /// new pair, by a compare-and-swap in the store so that of concurrent
    /// uses at most one mints a successor.
    ///
    /// A token presented again after it was spent is theft (RFC 9700
    /// §4.14.2): the whole session ends, its successor with it. A client
    /// session's token is refused unless `client` is its client. Within
    /// `refresh_reuse_grace` of the spend, the same successor is returned
    /// instead (a client that lost the response may retry).
    ///
    /// # Errors
    /// See [`GrantError`].
    pub async fn refresh_grant(
        &self,
        presented: &str,
        client: Option<ClientId>,
    ) -> Result<TokenPair, GrantError> {
        let presented = RefreshSecret::parse(presented).ok_or(GrantError::InvalidGrant)?;
        let hash = presented.hash();
        let store = &self.store;
        // The token, its session, and (on the SQL stores, in the same
        // round trip) the user with their permissions.
        let read = store
            .refresh_with_session(&hash)
            .await?
            .ok_or(GrantError::InvalidGrant)?;
        let (record, session) = (read.refresh, read.session);
        // A client session's refresh token is its client's alone (RFC 6749
        // §6): only that client, authenticated, may use it.
        if let Some(link) = &session.link
            && client != Some(link.client_id)
        {
            return Err(GrantError::InvalidGrant);
        }
        let now = self.clock.now();
        if !self.sessions.is_live(&session, now) {
            return Err(GrantError::InvalidGrant);
        }
        let user = match read.user {
            Some(found) => Some(found),
            None => self.users.user_with_permissions(session.user_id).await?,
        };
        let (user, permissions) = user
            .filter(|(u, _)| !u.disabled)
            .ok_or(GrantError::InvalidGrant)?;

        let successor = if record.spent_at.is_none() {
            let successor =
                RefreshSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
            let sealed = keys::seal(
                &successor_key(&presented)?,
                b"refresh-successor",
                successor.expose(),
            )?;
            if store
                .rotate_refresh(&hash, now, &successor.hash(), &sealed, session.id)
                .await?
            {
                Some(successor)
            } else {
                None
            }
        } else {
            None
        };
        let successor = match successor {
            Some(s) => s,
            // Spent before, or just now by a concurrent request.
            None => {
                self.spent_token_presented(&presented, &session, now)
                    .await?
            }
        };
        // A grant is a use of the session, recorded like a cookie's: the
        // write only when the stored use is older than the touch interval.
        // Otherwise the token's idle bound stays the stored one, at most
        // that interval earlier than now's.
        let mut session = session;
        if self.sessions.use_due(&session, now) {
            store.touch_session(session.id, now).await?;
            session.last_seen_at = now;
        }
        let access = self.access_token_with(&user, &session, &permissions)?;
        self.metrics.tokens_refresh_grant.increment(1);
        Ok(TokenPair {
            access,
            refresh: successor,
        })
    }

    /// A spent refresh token came back: inside the grace window, the same
    /// successor; outside, the session ends.
    async fn spent_token_presented(
        &self,
        presented: &RefreshSecret,
        session: &SessionRecord,
        now: OffsetDateTime,
    ) -> Result<RefreshSecret, GrantError> {
        let record = self
            .store
            .refresh_by_hash(&presented.hash())
            .await?
            .ok_or(GrantError::InvalidGrant)?;
        let grace = self.settings.refresh_reuse_grace;
        if let (Some(spent_at), Some(sealed)) = (record.spent_at, &record.successor_sealed)
            && !grace.is_zero()
            && now < spent_at + grace
        {
            let bytes = keys::open(&successor_key(presented)?, b"refresh-successor", sealed)?;
            let successor =
                RefreshSecret::parse(&URL_SAFE_NO_PAD.encode(&bytes)).ok_or_else(|| {
                    GrantError::Store(anyhow::anyhow!("a sealed successor is not 32 bytes"))
                })?;
            // A retry gets the successor only while the successor itself is
            // unspent: once the chain has moved on, an old token is reuse.
            let successor_unspent = self
                .store
                .refresh_by_hash(&successor.hash())
                .await?
                .is_some_and(|r| r.spent_at.is_none());
            if successor_unspent {
                return Ok(successor);
            }
        }
        self.metrics.refresh_reuse_detected.increment(1);
        let event = self
            .audit
            .event(EventType::RefreshReuseDetected, Actor::System)
            .user(session.user_id)
            .session(session.id);
        self.audit.record_one(event).await;
        self.sessions
            .end(
                session.user_id,
                session.id,
                Actor::System,
                Ending::RefreshReuse,
            )
            .await?;
        Err(GrantError::InvalidGrant)
    }

    /// An access token for the cookie's session (`POST /v1/session/token`).
    ///
    /// # Errors
    /// When the store fails or no signing key is available.
    pub async fn session_token(
        &self,
        user: &UserRecord,
        session: &SessionRecord,
    ) -> anyhow::Result<IssuedAccess> {
        let access = self.issue_access_token(user, session).await?;
        self.metrics.tokens_session.increment(1);
        Ok(access)
    }
}

/// The key that seals a token's successor: derived from the token itself,
/// so only a holder of the spent token can recover the successor.
fn successor_key(token: &RefreshSecret) -> anyhow::Result<LessSafeKey> {
    let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, token.expose());
    let derived = aws_lc_rs::hmac::sign(&mac_key, b"gatehouse refresh successor v1");
    let key = UnboundKey::new(&AES_256_GCM, derived.as_ref())
        .map_err(|_| anyhow::anyhow!("deriving the successor key"))?;
    Ok(LessSafeKey::new(key))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::Value;
    use time::macros::datetime;

    use super::*;
    use crate::auth::Services;
    use crate::auth::sessions::NewSession;
    use crate::auth::test_support;
    use crate::clock::ManualClock;
    use crate::config::JwtAlg;
    use crate::model::types::{SessionId, UserId};
    use jsonwebtoken::DecodingKey;

    /// A published JOSE test vector (`tests/vectors`: RFC 7515 and RFC 8037
    /// appendix examples).
    fn vector(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the test vector {} ({e})", path.display()));
        serde_json::from_str(&text).expect("vector JSON")
    }

    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str().unwrap_or_else(|| panic!("{k}"))
    }

    fn flip_last_signature_char(token: &str) -> String {
        let mut t = token.to_owned();
        let last = t.pop().expect("char");
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    }

    #[test]
    fn rfc7515_a1_hs256_example_verifies_with_its_key() {
        let v = vector("rfc7515_a1_hs256.json");
        let key = URL_SAFE_NO_PAD.decode(s(&v["jwk"], "k")).expect("k");
        let key = DecodingKey::from_secret(&key);
        let payload = verify_jws(s(&v, "compact"), JwtAlg::Hs256, &key).expect("valid signature");
        assert_eq!(payload, s(&v, "payload_utf8").as_bytes());
        let forged = flip_last_signature_char(s(&v, "compact"));
        assert_eq!(
            verify_jws(&forged, JwtAlg::Hs256, &key),
            Err(TokenError::BadSignature)
        );
        // The example is expired: the claims layer refuses it as a token of ours.
        let claims: Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(claims["exp"], 1_300_819_380);
    }

    #[test]
    fn rfc8037_a4_ed25519_example_verifies_with_its_key() {
        let v = vector("rfc8037_a4_ed25519.json");
        let key = DecodingKey::from_ed_components(s(&v["jwk_public"], "x")).expect("x");
        let payload = verify_jws(s(&v, "compact"), JwtAlg::EdDsa, &key).expect("valid signature");
        assert_eq!(payload, b"Example of Ed25519 signing");
        let forged = flip_last_signature_char(s(&v, "compact"));
        assert_eq!(
            verify_jws(&forged, JwtAlg::EdDsa, &key),
            Err(TokenError::BadSignature)
        );
        // Not a claims set: the claims layer cannot parse it.
        assert!(serde_json::from_slice::<AccessClaims>(&payload).is_err());
    }

    #[test]
    fn rfc7515_a2_rs256_and_a3_es256_examples_verify_with_their_keys() {
        let v = vector("rfc7515_a2_rs256.json");
        let key =
            DecodingKey::from_rsa_components(s(&v["jwk_public"], "n"), s(&v["jwk_public"], "e"))
                .expect("rsa");
        verify_jws(s(&v, "compact"), JwtAlg::Rs256, &key).expect("RS256 example");
        let v = vector("rfc7515_a3_es256.json");
        let key =
            DecodingKey::from_ec_components(s(&v["jwk_public"], "x"), s(&v["jwk_public"], "y"))
                .expect("ec");
        verify_jws(s(&v, "compact"), JwtAlg::Es256, &key).expect("ES256 example");
    }

    #[test]
    fn a_key_of_another_family_never_verifies() {
        // HS256 keyed with the bytes of an Ed25519 public key: the classic
        // algorithm-confusion forgery must fail at the signature layer too.
        let v = vector("rfc8037_a4_ed25519.json");
        let ed = DecodingKey::from_ed_components(s(&v["jwk_public"], "x")).expect("x");
        let hs = vector("rfc7515_a1_hs256.json");
        assert_eq!(
            verify_jws(s(&hs, "compact"), JwtAlg::Hs256, &ed),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_jws(s(&v, "compact"), JwtAlg::Hs256, &ed),
            Err(TokenError::BadSignature)
        );
    }

    #[tokio::test]
    async fn rfc7515_a5_unsecured_example_is_refused() {
        let v = vector("rfc7515_a5_unsecured_none.json");
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock, |_| {}).await;
        assert_eq!(
            auth.bearer.verify_access_token(s(&v, "compact")).err(),
            Some(TokenError::WrongAlgorithm)
        );
        let key = DecodingKey::from_secret(b"any key at all");
        assert_eq!(
            verify_jws(s(&v, "compact"), JwtAlg::Hs256, &key),
            Err(TokenError::Malformed)
        );
    }

    /// Another access token for the same session.
    async fn session_with_token_of(
        auth: &Services,
        new: &NewSession,
    ) -> (UserRecord, IssuedAccess) {
        let user = auth
            .admin
            .user(new.record.user_id)
            .await
            .expect("read")
            .expect("user");
        let access = auth
            .tokens
            .issue_access_token(&user, &new.record)
            .await
            .expect("token");
        (user, access)
    }

    async fn session_with_token(auth: &Services) -> (NewSession, IssuedAccess) {
        let user = auth
            .accounts
            .register(
                "t@example.com",
                "a long passphrase".into(),
                vec![],
                super::super::accounts::Registrar::Operator,
            )
            .await
            .expect("user");
        let new = auth
            .sessions
            .start(
                &user,
                &ClientMeta::default(),
                crate::model::amr::Amr::PASSWORD,
            )
            .await
            .expect("session");
        let access = auth
            .tokens
            .issue_access_token(&user, &new.record)
            .await
            .expect("token");
        (new, access)
    }

    #[tokio::test]
    async fn expiry_is_judged_by_the_injected_clock_with_the_leeway() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock.clone(), |c| {
            c.access_token_ttl = Duration::from_secs(300);
            c.jwt_leeway = Duration::from_secs(30);
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 300);
        auth.bearer
            .verify_access_token(&access.token)
            .expect("fresh token");
        // From here on the token is answered from the cache of verified
        // tokens, whose hits are judged by the same clock.
        assert_eq!(auth.bearer.verified().len(), 1);
        clock.advance(Duration::from_secs(329));
        auth.bearer
            .verify_access_token(&access.token)
            .expect("inside the leeway");
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            auth.bearer.verify_access_token(&access.token).err(),
            Some(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn only_the_exact_verified_bytes_hit_the_cache() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock, |_| {}).await;
        let (_, access) = session_with_token(&auth).await;
        let first = auth
            .bearer
            .verify_access_token(&access.token)
            .expect("fresh");
        let again = auth
            .bearer
            .verify_access_token(&access.token)
            .expect("cached");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second answer is the cached one"
        );
        // The same claims under a forged signature, and the token with its
        // signature cut off: neither rides on the cached verdict.
        let (message, signature) = access.token.rsplit_once('.').expect("three parts");
        let mut forged = signature.as_bytes().to_vec();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{message}.{}", String::from_utf8(forged).expect("ascii"));
        assert_eq!(
            auth.bearer.verify_access_token(&forged).err(),
            Some(TokenError::BadSignature)
        );
        assert_eq!(
            auth.bearer
                .verify_access_token(&format!("{message}."))
                .err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            auth.bearer.verified().len(),
            1,
            "refused tokens are not cached"
        );
    }

    #[tokio::test]
    async fn refused_tokens_never_enter_the_cache() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock.clone(), |c| {
            c.access_token_ttl = Duration::from_secs(60);
            c.jwt_leeway = Duration::ZERO;
        })
        .await;
        let (new, access) = session_with_token(&auth).await;
        clock.advance(Duration::from_secs(61));
        assert_eq!(
            auth.bearer.verify_access_token(&access.token).err(),
            Some(TokenError::Expired)
        );
        assert!(auth.bearer.verified().is_empty());
        let (_, live) = session_with_token_of(&auth, &new).await;
        auth.sessions
            .end(
                new.record.user_id,
                new.record.id,
                Actor::System,
                Ending::EndedByAdmin,
            )
            .await
            .expect("end");
        assert_eq!(
            auth.bearer.verify_access_token(&live.token).err(),
            Some(TokenError::Revoked)
        );
        assert!(auth.bearer.verified().is_empty());
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let cache = super::super::verified::VerifiedTokens::with_capacity(64 * 1024);
        let verified = Arc::new(VerifiedToken {
            claims: AccessClaims {
                iss: "i".into(),
                sub: "s".into(),
                aud: Audience::One("a".into()),
                exp: 0,
                iat: 0,
                nbf: None,
                jti: "j".into(),
                sid: Some("s".into()),
                credential_id: None,
                scope: String::new(),
                roles: Vec::new(),
                amr: crate::model::amr::Amr::PASSWORD,
                client_id: None,
            },
            holder: super::super::claims::Holder::User {
                user_id: UserId::new(),
                session_id: SessionId::new(),
            },
        });
        for i in 0..5_000 {
            let token = format!("{i:0>600}");
            cache.insert(&token, "kid".into(), verified.clone());
        }
        assert!(cache.weight() <= 64 * 1024, "{}", cache.weight());
        assert!(!cache.is_empty());
        assert!(cache.len() < 5_000);
    }

    #[tokio::test]
    async fn a_token_from_the_future_is_refused() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) =
            test_support::services(clock.clone(), |c| c.jwt_leeway = Duration::ZERO).await;
        let (_, access) = session_with_token(&auth).await;
        // Verifying "before" it was issued, with the same keys: the clock
        // went back an hour.
        let earlier = Arc::new(ManualClock::new(datetime!(2025-12-31 23:00 UTC)));
        let database = dir.path().join("t.db");
        let (other, _dir2) = test_support::services(earlier, |c| {
            c.database_url =
                crate::config::DatabaseUrl::Sqlite(format!("sqlite://{}", database.display()));
        })
        .await;
        assert_eq!(
            other.bearer.verify_access_token(&access.token).err(),
            Some(TokenError::IssuedInFuture)
        );
    }

    #[tokio::test]
    async fn ending_the_session_revokes_its_token_without_a_store_read() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock, |_| {}).await;
        let (new, access) = session_with_token(&auth).await;
        auth.bearer
            .verify_access_token(&access.token)
            .expect("live");
        auth.sessions
            .end(
                new.record.user_id,
                new.record.id,
                Actor::System,
                Ending::EndedByAdmin,
            )
            .await
            .expect("end");
        assert_eq!(
            auth.bearer.verify_access_token(&access.token).err(),
            Some(TokenError::Revoked)
        );
        assert_eq!(auth.revocations.set().len(), 1);
    }

    #[tokio::test]
    async fn revocations_survive_a_restart() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, dir) = test_support::services(clock.clone(), |_| {}).await;
        let (new, _) = session_with_token(&auth).await;
        auth.sessions
            .end(
                new.record.user_id,
                new.record.id,
                Actor::System,
                Ending::EndedByAdmin,
            )
            .await
            .expect("end");
        let reopened = crate::store::open_sql(&crate::config::DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        )))
        .await
        .expect("store");
        let loaded = reopened
            .sessions
            .revocations(clock.now())
            .await
            .expect("read");
        assert_eq!(
            loaded.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![new.record.id]
        );
    }

    fn settings(ttl: Duration, leeway: Duration) -> TokenSettings {
        TokenSettings {
            issuer: "i".into(),
            audience: "a".into(),
            access_token_ttl: ttl,
            leeway,
            refresh_reuse_grace: Duration::ZERO,
        }
    }

    fn claims_lasting(iat: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: Audience::One("a".into()),
            exp,
            iat,
            nbf: None,
            jti: "j".into(),
            sid: Some("s".into()),
            credential_id: None,
            scope: String::new(),
            roles: Vec::new(),
            amr: crate::model::amr::Amr::PASSWORD,
            client_id: None,
        }
    }

    #[test]
    fn the_lifetime_is_capped_at_the_ttl_rounded_up_plus_the_leeway() {
        let five_min = settings(Duration::from_secs(300), Duration::from_secs(30));
        assert_eq!(check_lifetime(&claims_lasting(0, 330), &five_min), Ok(()));
        assert_eq!(
            check_lifetime(&claims_lasting(0, 331), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            check_lifetime(&claims_lasting(0, 30 * 86_400), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        // Saturating, both ways: no overflow turns a huge lifetime short.
        assert_eq!(
            check_lifetime(&claims_lasting(i64::MIN, 0), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            check_lifetime(&claims_lasting(-1, i64::MAX), &five_min),
            Err(TokenError::LifetimeTooLong)
        );
        let fraction = settings(Duration::from_millis(1_500), Duration::ZERO);
        assert_eq!(check_lifetime(&claims_lasting(0, 2), &fraction), Ok(()));
        assert_eq!(
            check_lifetime(&claims_lasting(0, 3), &fraction),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[tokio::test]
    async fn a_token_issued_under_a_fractional_ttl_passes_the_lifetime_cap() {
        // iat floors 0.9 s to 0, exp floors 2.4 s to 2: two seconds apart
        // under a ttl of 1.5 s.
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00:00.9 UTC)));
        let (auth, _dir) = test_support::services(clock, |c| {
            c.access_token_ttl = Duration::from_millis(1_500);
            c.jwt_leeway = Duration::ZERO;
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 2);
        auth.bearer
            .verify_access_token(&access.token)
            .expect("a token as issued");
    }

    #[test]
    fn claims_with_a_member_given_twice_at_any_depth_are_refused() {
        let good = serde_json::to_string(&claims_lasting(0, 300)).expect("json");
        assert!(serde_json::from_str::<AccessClaims>(&good).is_ok());
        let body = good.strip_prefix('{').expect("an object");
        for first in [
            r#""exp":86400"#,
            r#""sid":"t""#,
            r#""x":1,"x":2"#,
            r#""x":{"y":1,"y":1}"#,
            r#""x":[{"y":[{"z":1,"z":2}]}]"#,
        ] {
            let twice = format!("{{{first},{body}");
            assert!(
                serde_json::from_str::<AccessClaims>(&twice).is_err(),
                "{twice}"
            );
        }
        let unique = format!(r#"{{"x":{{"y":1}},"z":[{{"y":1}},{{"y":1}}],{body}"#);
        assert!(serde_json::from_str::<AccessClaims>(&unique).is_ok());
        // Every claim in the struct's order, as an array: not an object.
        let in_order = r#"["i","s","a",300,0,null,"j","s","",[]]"#;
        assert!(serde_json::from_str::<AccessClaims>(in_order).is_err());
        let without_iat = good.replace(r#""iat":0,"#, "");
        assert_ne!(without_iat, good);
        assert!(serde_json::from_str::<AccessClaims>(&without_iat).is_err());
    }

    #[tokio::test]
    async fn a_token_never_outlives_its_session() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let (auth, _dir) = test_support::services(clock, |c| {
            c.session_absolute_timeout = Duration::from_secs(120);
        })
        .await;
        let (_, access) = session_with_token(&auth).await;
        assert_eq!(access.expires_in, 120);
    }
}
