//! Passkeys (WebAuthn, with `webauthn-rs`): registration, a passkey as the
//! second step of a login, and passwordless login with a discoverable
//! credential and user verification.
//!
//! Every ceremony's state is kept in the store between its two requests
//! (single use, 5 minutes), so any node finishes a ceremony another began.
//! The relying party id and the accepted origins come from the
//! configuration only, never from a request's headers; while the relying
//! party id would be an IP address (which WebAuthn forbids), passkeys are
//! off. A counter that went backwards (a cloned authenticator) is refused,
//! audited, and never written back; 0 and 0 is an authenticator without a
//! counter (synced passkeys).

use std::time::Duration;

use serde_json::Value;
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use super::audit::{Actor, EventType};
use super::mfa::SecondFactors;
use super::sessions::{Authenticated, NewSession};
use crate::model::amr::Amr;
use crate::model::client::ClientMeta;
use crate::model::types::{PasskeyId, SecretHash, UserId};
use crate::store::{Ceremony, CeremonyKind, PasskeyRecord, UserRecord};

/// How long a ceremony may take, between its two requests.
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);

/// Longest passkey name kept.
const MAX_NAME: usize = 64;

/// The relying party, from the configuration (`rp_id`, `webauthn_origins`)
/// or, for what it leaves unset, the issuer; `None` while the relying party
/// id would be an IP address.
///
/// # Errors
/// An origin that is not a URL, or that does not belong to the relying
/// party id (webauthn-rs refuses them; so does every browser).
pub fn relying_party(
    issuer: &str,
    rp_id: Option<&str>,
    origins: &[String],
) -> anyhow::Result<Option<Webauthn>> {
    let issuer_url =
        Url::parse(issuer).map_err(|e| anyhow::anyhow!("issuer {issuer:?} is not a URL: {e}"))?;
    let id = match rp_id {
        Some(id) => id.to_owned(),
        None => match issuer_url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            // WebAuthn forbids an IP address as relying party id.
            _ => return Ok(None),
        },
    };
    let origins: Vec<Url> = if origins.is_empty() {
        vec![issuer_url]
    } else {
        origins
            .iter()
            .map(|o| Url::parse(o).map_err(|e| anyhow::anyhow!("webauthn_origins: {o:?}: {e}")))
            .collect::<anyhow::Result<_>>()?
    };
    let Some((first, others)) = origins.split_first() else {
        anyhow::bail!("webauthn_origins: no origin");
    };
    let mut builder = WebauthnBuilder::new(&id, first)
        .map_err(|e| anyhow::anyhow!("rp_id {id:?} and origin {first} do not go together: {e}"))?;
    for origin in others {
        builder = builder.append_allowed_origin(origin);
    }
    let webauthn = builder
        .rp_name("gatehouse")
        .timeout(CEREMONY_TTL)
        .build()
        .map_err(|e| anyhow::anyhow!("rp_id {id:?}: {e}"))?;
    Ok(Some(webauthn))
}

/// Why a passkey ceremony failed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// Passkeys are off (the relying party id would be an IP address).
    #[error("passkeys are not available")]
    Unavailable,
    /// An unknown, spent, expired or foreign ceremony; a credential that
    /// does not verify; an unknown credential; a disabled user.
    #[error("the passkey ceremony failed")]
    Failed,
    /// A user with a second factor registers a passkey from a session that
    /// proved none.
    #[error("a second factor is required")]
    SecondFactorRequired,
    /// The client network began too many ceremonies it did not finish.
    #[error("too many unfinished ceremonies")]
    Throttled { retry_after: Duration },
    /// A passwordless login of a user whose address is not verified while
    /// `email_verification = "required"` (a verification mail is on its
    /// way, at most one per 5 minutes).
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A ceremony begun: its id and the options for the browser's WebAuthn
/// API (`publicKey`, the JSON form).
#[derive(Debug)]
pub struct Options {
    pub challenge_id: Uuid,
    pub public_key: Value,
}

/// A passkey as the account shows it.
#[derive(Debug, Clone)]
pub struct PasskeyInfo {
    pub id: PasskeyId,
    pub name: String,
    pub created_at: time::OffsetDateTime,
    pub last_used_at: Option<time::OffsetDateTime>,
}

impl From<&PasskeyRecord> for PasskeyInfo {
    fn from(p: &PasskeyRecord) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

impl SecondFactors {
    fn relying(&self) -> Result<&Webauthn, PasskeyError> {
        self.webauthn.as_ref().ok_or(PasskeyError::Unavailable)
    }

    /// Whether passkeys are on.
    pub fn passkeys_enabled(&self) -> bool {
        self.webauthn.is_some()
    }

    /// The user's passkeys, oldest first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn passkeys(&self, user: UserId) -> anyhow::Result<Vec<PasskeyInfo>> {
        Ok(self
            .store
            .passkeys_of(user)
            .await?
            .iter()
            .map(PasskeyInfo::from)
            .collect())
    }

    /// Stores a ceremony begun from `client`'s network, which may hold
    /// `login_max_failures_per_ip` unfinished ones within `login_window`:
    /// each is a row until it is finished or expires, and the passwordless
    /// kind may be begun by anyone. A finished ceremony gives its one back.
    async fn begin(
        &self,
        client: &ClientMeta,
        kind: CeremonyKind,
        user: Option<UserId>,
        mfa_token_hash: Option<SecretHash>,
        state: &impl serde::Serialize,
        public_key: Value,
    ) -> Result<Options, PasskeyError> {
        self.throttle
            .admit_ceremony(client.ip)
            .await
            .map_err(|e| match e {
                super::throttle::Refused::Throttled { retry_after } => {
                    PasskeyError::Throttled { retry_after }
                }
                super::throttle::Refused::Store(e) => PasskeyError::Store(e),
            })?;
        let ceremony = Ceremony {
            id: Uuid::new_v4(),
            kind,
            user_id: user,
            mfa_token_hash,
            state: serde_json::to_string(state).map_err(anyhow::Error::from)?,
            expires_at: self.clock.now() + CEREMONY_TTL,
        };
        self.store.insert_ceremony(&ceremony).await?;
        Ok(Options {
            challenge_id: ceremony.id,
            public_key,
        })
    }

    /// Spends a ceremony of `kind`: `None` when it is unknown, spent,
    /// expired or of another kind.
    async fn take(&self, id: &str, kind: CeremonyKind) -> anyhow::Result<Option<Ceremony>> {
        let Ok(id) = Uuid::try_parse(id) else {
            return Ok(None);
        };
        let now = self.clock.now();
        Ok(self
            .store
            .take_ceremony(id)
            .await?
            .filter(|c| c.kind == kind && now < c.expires_at))
    }

    /// Begins registering a passkey for the caller. A user who has a second
    /// factor already must be signed in with one (a stolen password alone
    /// cannot add a passkey).
    ///
    /// # Errors
    /// See [`PasskeyError`].
    pub async fn begin_registration(
        &self,
        who: &Authenticated,
        client: &ClientMeta,
    ) -> Result<Options, PasskeyError> {
        let webauthn = self.relying()?;
        let user = &who.user;
        let existing = self.store.passkeys_of(user.id).await?;
        let factors = self.store.factors(user.id).await?;
        if (factors.totp || factors.passkeys > 0) && !who.session.amr.is_multi_factor() {
            return Err(PasskeyError::SecondFactorRequired);
        }
        let exclude = existing.iter().map(|p| p.credential_id.clone()).collect();
        let (ccr, state): (CreationChallengeResponse, PasskeyRegistration) = webauthn
            .start_passkey_registration(user.id.0, &user.email, &user.email, Some(exclude))
            .map_err(|e| anyhow::anyhow!("starting a passkey registration: {e}"))?;
        let mut public_key = serde_json::to_value(&ccr.public_key).map_err(anyhow::Error::from)?;
        // Discoverable, so that it can sign in without a password too.
        public_key["authenticatorSelection"]["residentKey"] = Value::from("required");
        public_key["authenticatorSelection"]["requireResidentKey"] = Value::from(true);
        self.begin(
            client,
            CeremonyKind::Register,
            Some(user.id),
            None,
            &state,
            public_key,
        )
        .await
    }

    /// Finishes registering a passkey: the credential must answer the
    /// caller's own, unspent ceremony. Returns the passkey and, when it is
    /// the user's first factor, a set of recovery codes (shown once).
    ///
    /// # Errors
    /// See [`PasskeyError`].
    pub async fn finish_registration(
        &self,
        who: &Authenticated,
        challenge_id: &str,
        name: &str,
        credential: &RegisterPublicKeyCredential,
        client: &ClientMeta,
    ) -> Result<(PasskeyInfo, Option<Vec<String>>), PasskeyError> {
        let webauthn = self.relying()?;
        let user = &who.user;
        let ceremony = self
            .take(challenge_id, CeremonyKind::Register)
            .await?
            .filter(|c| c.user_id == Some(user.id))
            .ok_or(PasskeyError::Failed)?;
        let state: PasskeyRegistration =
            serde_json::from_str(&ceremony.state).map_err(anyhow::Error::from)?;
        let passkey = match webauthn.finish_passkey_registration(credential, &state) {
            Ok(p) => p,
            Err(e) => {
                self.passkey_failed(Some(user.id), "registration", &e, client)
                    .await;
                return Err(PasskeyError::Failed);
            }
        };
        let had_factor = {
            let f = self.store.factors(user.id).await?;
            f.totp || f.passkeys > 0
        };
        let json = serde_json::to_string(&passkey).map_err(anyhow::Error::from)?;
        let (count, eligible, state) = credential_state(&json)?;
        let name = name.trim();
        let name: String = if name.is_empty() {
            "Passkey".to_owned()
        } else {
            name.chars().take(MAX_NAME).collect()
        };
        let record = PasskeyRecord {
            id: PasskeyId::new(),
            user_id: user.id,
            credential_id: passkey.cred_id().to_vec(),
            name,
            passkey: json,
            sign_count: count,
            backup_eligible: eligible,
            backup_state: state,
            created_at: self.clock.now(),
            last_used_at: None,
        };
        // A credential id registered before (to anyone) is refused.
        if !self.store.insert_passkey(&record).await? {
            return Err(PasskeyError::Failed);
        }
        self.throttle.ceremony_finished(client.ip).await;
        let event = self
            .audit
            .event(EventType::MfaEnrolled, Actor::User(user.id))
            .user(user.id)
            .session(who.session.id)
            .ip(client.ip)
            .detail("method", "passkey")
            .detail("passkey_id", record.id.to_string())
            .detail("backup_eligible", eligible);
        self.audit.record_one(event).await;
        let codes = if had_factor {
            None
        } else {
            Some(self.issue_recovery_codes(user.id).await?)
        };
        Ok((PasskeyInfo::from(&record), codes))
    }

    /// Removes one of the caller's passkeys; with the last factor go the
    /// recovery codes. `false` when the caller has no such passkey.
    ///
    /// # Errors
    /// Store failures.
    pub async fn remove_passkey(
        &self,
        who: &Authenticated,
        id: PasskeyId,
        client: &ClientMeta,
    ) -> anyhow::Result<bool> {
        let removed = self.store.delete_passkey(who.user.id, id).await?;
        if removed {
            let event = self
                .audit
                .event(EventType::MfaRemoved, Actor::User(who.user.id))
                .user(who.user.id)
                .session(who.session.id)
                .ip(client.ip)
                .detail("method", "passkey")
                .detail("passkey_id", id.to_string());
            self.audit.record_one(event).await;
        }
        Ok(removed)
    }

    /// Options for a passkey as the second step of the login `mfa_token`
    /// names (its user's passkeys allowed, user verification required).
    ///
    /// # Errors
    /// [`PasskeyError::Failed`] for a dead `mfa_token` or a user without
    /// passkeys.
    pub async fn begin_second_factor(
        &self,
        mfa_token: &str,
        client: &ClientMeta,
    ) -> Result<Options, PasskeyError> {
        let webauthn = self.relying()?;
        let (hash, pending) = self
            .live_pending_login(mfa_token)
            .await?
            .filter(|(_, p)| p.failures < self.max_failures)
            .ok_or(PasskeyError::Failed)?;
        let records = self.store.passkeys_of(pending.user_id).await?;
        if records.is_empty() {
            return Err(PasskeyError::Failed);
        }
        let passkeys = records
            .iter()
            .map(|r| serde_json::from_str::<Passkey>(&r.passkey))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::from)?;
        let (rcr, state): (RequestChallengeResponse, PasskeyAuthentication) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| anyhow::anyhow!("starting a passkey authentication: {e}"))?;
        let public_key = serde_json::to_value(&rcr.public_key).map_err(anyhow::Error::from)?;
        self.begin(
            client,
            CeremonyKind::SecondFactor,
            Some(pending.user_id),
            Some(hash),
            &state,
            public_key,
        )
        .await
    }

    /// Verifies a passkey assertion as the second step of a login: the
    /// ceremony must be this login's. `Ok(true)` when the assertion holds
    /// (its counter recorded), `Ok(false)` when it does not.
    pub(crate) async fn second_factor_assertion(
        &self,
        user: &UserRecord,
        mfa_token_hash: &SecretHash,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        client: &ClientMeta,
    ) -> anyhow::Result<bool> {
        let Some(webauthn) = self.webauthn.as_ref() else {
            return Ok(false);
        };
        let Some(ceremony) = self
            .take(challenge_id, CeremonyKind::SecondFactor)
            .await?
            .filter(|c| {
                c.user_id == Some(user.id) && c.mfa_token_hash.as_ref() == Some(mfa_token_hash)
            })
        else {
            return Ok(false);
        };
        let state: PasskeyAuthentication = serde_json::from_str(&ceremony.state)?;
        let result = match webauthn.finish_passkey_authentication(credential, &state) {
            Ok(r) => r,
            Err(e) => {
                self.passkey_failed(Some(user.id), "second_factor", &e, client)
                    .await;
                return Ok(false);
            }
        };
        let Some(record) = self
            .store
            .passkey_by_credential(result.cred_id().as_ref())
            .await?
            .filter(|r| r.user_id == user.id)
        else {
            return Ok(false);
        };
        let recorded = self.record_use(record, &result).await?;
        if recorded {
            self.throttle.ceremony_finished(client.ip).await;
        }
        Ok(recorded)
    }

    /// Options for a passwordless login: any discoverable credential of
    /// this relying party, user verification required. Each client network
    /// may hold `login_max_failures_per_ip` unfinished ones within
    /// `login_window` (anyone may ask, and each is a row until it expires).
    ///
    /// # Errors
    /// See [`PasskeyError`].
    pub async fn begin_passwordless(&self, client: &ClientMeta) -> Result<Options, PasskeyError> {
        let webauthn = self.relying()?;
        let (rcr, state): (RequestChallengeResponse, DiscoverableAuthentication) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| anyhow::anyhow!("starting a passwordless login: {e}"))?;
        let public_key = serde_json::to_value(&rcr.public_key).map_err(anyhow::Error::from)?;
        self.begin(
            client,
            CeremonyKind::Passwordless,
            None,
            None,
            &state,
            public_key,
        )
        .await
    }

    /// A passwordless login: the assertion of a discoverable credential
    /// with user verification starts a session (`amr` `hwk user mfa`).
    ///
    /// # Errors
    /// [`PasskeyError::Failed`] for a failed ceremony, an unknown
    /// credential, a spent challenge or a disabled user.
    pub async fn finish_passwordless(
        &self,
        challenge_id: &str,
        credential: &PublicKeyCredential,
        client: &ClientMeta,
    ) -> Result<(UserRecord, NewSession), PasskeyError> {
        let webauthn = self.relying()?;
        let ceremony = self
            .take(challenge_id, CeremonyKind::Passwordless)
            .await?
            .ok_or(PasskeyError::Failed)?;
        let state: DiscoverableAuthentication =
            serde_json::from_str(&ceremony.state).map_err(anyhow::Error::from)?;
        let (user_uuid, cred_id) = webauthn
            .identify_discoverable_authentication(credential)
            .map_err(|_| PasskeyError::Failed)?;
        let record = self
            .store
            .passkey_by_credential(cred_id)
            .await?
            .filter(|r| r.user_id.0 == user_uuid)
            .ok_or(PasskeyError::Failed)?;
        let passkey: Passkey =
            serde_json::from_str(&record.passkey).map_err(anyhow::Error::from)?;
        #[allow(deprecated)] // `_v2` takes one credential; this one checks the list given
        let result = webauthn.finish_discoverable_authentication(
            credential,
            state,
            &[DiscoverableKey::from(&passkey)],
        );
        let result = match result {
            Ok(r) if r.user_verified() => r,
            Ok(_) => return Err(PasskeyError::Failed),
            Err(e) => {
                self.passkey_failed(Some(record.user_id), "passwordless", &e, client)
                    .await;
                return Err(PasskeyError::Failed);
            }
        };
        let user = self
            .users
            .user_by_id(record.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(PasskeyError::Failed)?;
        if !self.record_use(record, &result).await? {
            return Err(PasskeyError::Failed);
        }
        if self.mail.verification_required() && !user.email_verified {
            self.throttle.ceremony_finished(client.ip).await;
            if let Err(e) = self
                .mail
                .send_verification(&user, super::mail::LOGIN_VERIFICATION_GAP, client)
                .await
            {
                tracing::error!(
                    target: "gatehouse::mail",
                    user_id = %user.id,
                    error = format!("{e:#}"),
                    "a verification mail could not be written"
                );
            }
            return Err(PasskeyError::EmailNotVerified);
        }
        let session = self.sessions.start(&user, client, Amr::PASSKEY).await?;
        self.throttle.ceremony_finished(client.ip).await;
        self.login_succeeded(&user, &session, Amr::PASSKEY, client)
            .await;
        Ok((user, session))
    }

    /// Writes a use back: the new counter and backup state, only over the
    /// counter read (a concurrent use with the same counter loses).
    async fn record_use(
        &self,
        mut record: PasskeyRecord,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> anyhow::Result<bool> {
        let mut passkey: Passkey = serde_json::from_str(&record.passkey)?;
        passkey.update_credential(result);
        let seen = record.sign_count;
        record.passkey = serde_json::to_string(&passkey)?;
        let (count, eligible, state) = credential_state(&record.passkey)?;
        record.sign_count = count;
        record.backup_eligible = eligible;
        record.backup_state = state;
        record.last_used_at = Some(self.clock.now());
        self.store.record_passkey_use(&record, seen).await
    }

    /// Audits a failed ceremony; a counter that went backwards is a cloned
    /// authenticator and says so.
    async fn passkey_failed(
        &self,
        user: Option<UserId>,
        during: &'static str,
        e: &WebauthnError,
        client: &ClientMeta,
    ) {
        let (kind, reason) = match e {
            WebauthnError::CredentialPossibleCompromise => {
                (EventType::PasskeyCounterRegression, "counter_regression")
            }
            _ => (EventType::MfaFailed, "ceremony_failed"),
        };
        let mut event = self
            .audit
            .event(kind, Actor::Anonymous)
            .ip(client.ip)
            .detail("method", "passkey")
            .detail("during", during)
            .detail("reason", reason);
        if let Some(user) = user {
            event = event.user(user);
        }
        self.audit.record_one(event).await;
    }
}

/// The counter and backup flags of a passkey's stored JSON.
fn credential_state(json: &str) -> anyhow::Result<(u32, bool, bool)> {
    let v: Value = serde_json::from_str(json)?;
    let cred = &v["cred"];
    let count = cred["counter"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| anyhow::anyhow!("a passkey's counter is unreadable"))?;
    let eligible = cred["backup_eligible"]
        .as_bool()
        .ok_or_else(|| anyhow::anyhow!("a passkey's backup flag is unreadable"))?;
    let state = cred["backup_state"]
        .as_bool()
        .ok_or_else(|| anyhow::anyhow!("a passkey's backup state is unreadable"))?;
    Ok((count, eligible, state))
}
