//! Second factors: TOTP (RFC 6238: SHA-1, 6 digits, 30 s, one step either
//! side of now) and recovery codes; their enrolment and removal; and the
//! second step of a login, which a right password for a user with a factor
//! leads to instead of a session.
//!
//! Every "use once" is the store's (`MfaStore`): a TOTP step is accepted
//! by moving the credential's `last_step` forward in one conditional
//! update, a recovery code by deleting its row, an `mfa_token` by deleting
//! its pending login. Wrong codes count in the same budgets as wrong
//! passwords (`auth::throttle`), under the user's email, and each pending
//! login dies after `login_max_failures` of them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use totp_rs::Totp;

use super::audit::{Actor, Audit, EventType};
use super::keys::KeyManager;
use super::sessions::{Authenticated, NewSession, Sessions};
use super::throttle::{Refused, Throttle};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::amr::Amr;
use crate::model::client::ClientMeta;
use crate::model::types::{Email, MfaToken, SecretHash, UserId};
use crate::store::{
    FactorSummary, MfaStore, PendingLogin, TotpLogin, TotpRecord, UserRecord, UserStore,
};

/// How long a login waits for its second step.
pub const MFA_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// Recovery codes in a set.
pub const RECOVERY_CODES: usize = 10;

/// Bytes of a TOTP key (160 bits, RFC 4226 §4's recommendation).
const TOTP_KEY_LEN: usize = 20;

/// The TOTP step, in seconds.
const STEP: u64 = 30;

/// Crockford's base32 alphabet: no I, L, O or U to misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Characters of a recovery code (5 bits each: 60 bits), written in groups
/// of four with dashes.
const CODE_CHARS: usize = 12;

/// A second-step method, as `methods` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Totp,
    Passkey,
    RecoveryCode,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
            Self::RecoveryCode => "recovery_code",
        }
    }
}

/// A login that awaits its second step.
#[derive(Debug)]
pub struct Challenge {
    /// Shown to the client once; only its hash is stored.
    pub mfa_token: MfaToken,
    pub methods: Vec<Method>,
    pub expires_in: Duration,
}

/// What a second step presents.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A TOTP code or a recovery code, told apart by their shapes (six
    /// digits are a TOTP code).
    Code(&'a str),
    /// A TOTP code (the token endpoint's `otp`).
    Totp(&'a str),
    /// A recovery code (the token endpoint's `recovery_code`).
    RecoveryCode(&'a str),
    /// A passkey assertion answering the ceremony `challenge_id`.
    Passkey {
        challenge_id: &'a str,
        credential: &'a webauthn_rs::prelude::PublicKeyCredential,
    },
}

/// Why a second step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The `mfa_token` is unknown, expired, spent, or dead after too many
    /// wrong codes; or its user is gone or disabled.
    #[error("the mfa_token is invalid or expired")]
    InvalidToken,
    #[error("the code is wrong")]
    WrongCode,
    #[error("too many failed attempts")]
    Throttled { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<Refused> for StepError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled { retry_after } => Self::Throttled { retry_after },
            Refused::Store(e) => Self::Store(e),
        }
    }
}

/// Why a change to the caller's factors was refused.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    /// TOTP is active already (enrolling again needs removing it first).
    #[error("TOTP is enrolled already")]
    AlreadyEnrolled,
    /// No TOTP credential (pending, for a confirmation; active, otherwise).
    #[error("no TOTP credential")]
    NotEnrolled,
    #[error("the code is wrong")]
    WrongCode,
    /// The password re-proved for an enrolment is wrong.
    #[error("the password is wrong")]
    WrongPassword,
    #[error("too many failed attempts")]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<Refused> for FactorError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled { retry_after } => Self::Throttled { retry_after },
            Refused::Store(e) => Self::Store(e),
        }
    }
}

/// A TOTP credential just enrolled, pending until a code confirms it. Its
/// `Debug` hides the key (both fields carry it).
pub struct TotpEnrolment {
    /// The key in base32 (RFC 4648, unpadded), for typing in.
    pub secret: String,
    /// `otpauth://totp/…`, for the QR code.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrolment([redacted])")
    }
}

/// Second factors and the second step of a login.
pub struct SecondFactors {
    pub(super) store: Arc<dyn MfaStore>,
    pub(super) users: Arc<dyn UserStore>,
    pub(super) throttle: Arc<Throttle>,
    pub(super) sessions: Arc<Sessions>,
    keys: Arc<KeyManager>,
    pub(super) audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    pub(super) clock: Arc<dyn Clock>,
    /// The `issuer` of `otpauth://` URIs: the host of gatehouse's issuer.
    label: String,
    /// Wrong codes that end a pending login (`login_max_failures`).
    pub(super) max_failures: u32,
    /// The WebAuthn relying party; `None` while passkeys are off.
    pub(super) webauthn: Option<webauthn_rs::Webauthn>,
    /// Whether a passwordless login needs a verified address, and the
    /// verification mail it sends when it lacks one.
    pub(super) mail: Arc<super::mail::Mail>,
}

impl std::fmt::Debug for SecondFactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactors")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl SecondFactors {
    #[allow(clippy::too_many_arguments)] // the wiring, done once in `Services::new`
    pub fn new(
        store: Arc<dyn MfaStore>,
        users: Arc<dyn UserStore>,
        throttle: Arc<Throttle>,
        sessions: Arc<Sessions>,
        keys: Arc<KeyManager>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        issuer: &str,
        max_failures: u32,
        webauthn: Option<webauthn_rs::Webauthn>,
        mail: Arc<super::mail::Mail>,
    ) -> Self {
        Self {
            store,
            users,
            throttle,
            sessions,
            keys,
            audit,
            metrics,
            clock,
            label: otpauth_label(issuer),
            max_failures,
            webauthn,
            mail,
        }
    }

    /// The user's factors.
    ///
    /// # Errors
    /// Store failures.
    pub async fn status(&self, user: UserId) -> anyhow::Result<FactorSummary> {
        self.store.factors(user).await
    }

    /// The second-step methods the user has; empty when they have no
    /// second factor (a password is then enough).
    ///
    /// # Errors
    /// Store failures.
    pub async fn methods_of(&self, user: UserId) -> anyhow::Result<Vec<Method>> {
        let f = self.store.factors(user).await?;
        let mut methods = Vec::new();
        if f.totp {
            methods.push(Method::Totp);
        }
        if f.passkeys > 0 {
            methods.push(Method::Passkey);
        }
        if !methods.is_empty() && f.recovery_codes_left > 0 {
            methods.push(Method::RecoveryCode);
        }
        Ok(methods)
    }

    /// Opens the second step of a login whose first step proved `amr`.
    ///
    /// # Errors
    /// When the OS RNG or the store fails.
    pub(crate) async fn challenge(
        &self,
        user: &UserRecord,
        amr: Amr,
        methods: Vec<Method>,
    ) -> anyhow::Result<Challenge> {
        let token = MfaToken::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let now = self.clock.now();
        self.store
            .insert_pending_login(
                &token.hash(),
                &PendingLogin {
                    user_id: user.id,
                    amr,
                    created_at: now,
                    expires_at: now + MFA_TOKEN_TTL,
                    failures: 0,
                },
            )
            .await?;
        Ok(Challenge {
            mfa_token: token,
            methods,
            expires_in: MFA_TOKEN_TTL,
        })
    }

    /// Completes a login with its second step: on the right code, spends
    /// the `mfa_token` and starts the session.
    ///
    /// Each attempt counts in the login budgets of the user's email and the
    /// client's address before the code is checked; a wrong code stays
    /// counted, and the pending login dies after `login_max_failures` of
    /// them; only a completed login resets the (account, IP) count.
    ///
    /// # Errors
    /// See [`StepError`].
    pub async fn complete_login(
        &self,
        mfa_token: &str,
        proof: Proof<'_>,
        client: &ClientMeta,
    ) -> Result<(UserRecord, NewSession), StepError> {
        let (hash, pending) = self
            .live_pending_login(mfa_token)
            .await?
            .ok_or(StepError::InvalidToken)?;
        // Two reads at once: the second step is on every MFA login's path.
        let (user, totp) = tokio::try_join!(
            self.users.user_by_id(pending.user_id),
            self.store.totp(pending.user_id)
        )?;
        let user = user
            .filter(|u| !u.disabled)
            .ok_or(StepError::InvalidToken)?;
        // Counted before anything else is judged: past the budget, a guess
        // is refused (429) whatever it is.
        let email = Email::parse(&user.email).ok();
        let admitted = self
            .throttle
            .admit_password_attempt(&user.email, email.as_ref(), client.ip)
            .await?;
        if pending.failures >= self.max_failures {
            return Err(StepError::InvalidToken);
        }
        let method = proof_method(proof);
        let outcome = match proof {
            Proof::Passkey {
                challenge_id,
                credential,
            } => {
                let proved = self
                    .second_factor_assertion(&user, &hash, challenge_id, credential, client)
                    .await;
                self.spend_login_if(&hash, proved).await
            }
            // The step and the pending login are spent in one transaction.
            Proof::Code(code) | Proof::Totp(code) if method == Method::Totp => match totp
                .as_ref()
                .map_or(Ok(None), |record| self.step_of(user.id, record, code))
            {
                Ok(Some(step)) => self.store.finish_totp_login(&hash, user.id, step).await,
                Ok(None) => Ok(TotpLogin::StepUsed),
                Err(e) => Err(e),
            },
            Proof::Code(code) | Proof::Totp(code) | Proof::RecoveryCode(code) => {
                let proved = self.spend_recovery_code(&user, code, client).await;
                self.spend_login_if(&hash, proved).await
            }
        };
        match outcome {
            Ok(TotpLogin::Done) => {}
            Ok(TotpLogin::StepUsed) => {
                self.pending_failed(&hash, &user, proof, client.ip).await?;
                return Err(StepError::WrongCode);
            }
            // Of two completions racing with right codes, one starts a
            // session.
            Ok(TotpLogin::LoginGone) => {
                self.throttle.attempt_passed(admitted).await?;
                return Err(StepError::InvalidToken);
            }
            Err(e) => {
                self.throttle.attempt_unchecked(admitted).await;
                return Err(StepError::Store(e));
            }
        }
        self.throttle.attempt_matched(admitted).await?;
        // A recovery code is a one-time password too (RFC 8176 `otp`).
        let amr = match method {
            Method::Totp | Method::RecoveryCode => pending.amr.with_otp(),
            Method::Passkey => pending.amr.with_key(),
        };
        let session = self.sessions.start(&user, client, amr).await?;
        self.login_succeeded(&user, &session, amr, client).await;
        Ok((user, session))
    }

    /// Spends the pending login when the second step `proved` right (a
    /// recovery code or a passkey, each already spent on its own).
    async fn spend_login_if(
        &self,
        hash: &SecretHash,
        proved: anyhow::Result<bool>,
    ) -> anyhow::Result<TotpLogin> {
        if !proved? {
            return Ok(TotpLogin::StepUsed);
        }
        Ok(if self.store.take_pending_login(hash).await? {
            TotpLogin::Done
        } else {
            TotpLogin::LoginGone
        })
    }

    /// The pending login `mfa_token` names, while it lives: its hash and
    /// record.
    ///
    /// # Errors
    /// Store failures.
    pub(super) async fn live_pending_login(
        &self,
        mfa_token: &str,
    ) -> anyhow::Result<Option<(SecretHash, PendingLogin)>> {
        let Some(token) = MfaToken::parse(mfa_token) else {
            return Ok(None);
        };
        let hash = token.hash();
        let now = self.clock.now();
        Ok(self
            .store
            .pending_login(&hash)
            .await?
            .filter(|p| now < p.expires_at)
            .map(|p| (hash, p)))
    }

    /// Counts and records a completed login, however it was proved.
    pub(super) async fn login_succeeded(
        &self,
        user: &UserRecord,
        session: &NewSession,
        amr: Amr,
        client: &ClientMeta,
    ) {
        self.metrics.logins_succeeded.increment(1);
        let mut event = self
            .audit
            .event(EventType::LoginSucceeded, Actor::User(user.id))
            .user(user.id)
            .session(session.record.id)
            .ip(client.ip)
            .detail("amr", amr.values().collect::<Vec<_>>());
        if let Some(ua) = &client.user_agent {
            event = event.detail("user_agent", ua.as_str());
        }
        self.audit.record_one(event).await;
    }

    /// A wrong code against a pending login: counted in the login, audited.
    async fn pending_failed(
        &self,
        hash: &SecretHash,
        user: &UserRecord,
        proof: Proof<'_>,
        ip: Option<IpAddr>,
    ) -> anyhow::Result<()> {
        self.store.pending_login_failed(hash).await?;
        self.metrics.logins_failed.increment(1);
        let event = self
            .audit
            .event(EventType::MfaFailed, Actor::Anonymous)
            .user(user.id)
            .ip(ip)
            .detail("method", proof_method(proof).as_str())
            .detail("during", "login");
        self.audit.record_one(event).await;
        Ok(())
    }

    /// Spends one of the user's recovery codes, as typed; `false` when it
    /// is none of their unused codes.
    async fn spend_recovery_code(
        &self,
        user: &UserRecord,
        code: &str,
        client: &ClientMeta,
    ) -> anyhow::Result<bool> {
        let Some(hash) = recovery_code_hash(user.id, code) else {
            return Ok(false);
        };
        if !self.store.spend_recovery_code(user.id, &hash).await? {
            return Ok(false);
        }
        let left = self.store.factors(user.id).await?.recovery_codes_left;
        let event = self
            .audit
            .event(EventType::RecoveryCodeUsed, Actor::User(user.id))
            .user(user.id)
            .ip(client.ip)
            .detail("codes_left", left);
        let event = match &client.user_agent {
            Some(ua) => event.detail("user_agent", ua.as_str()),
            None => event,
        };
        self.audit.record_one(event).await;
        Ok(true)
    }

    /// The step of a right TOTP code of the user's active credential, when
    /// it is later than the last accepted one (now, or one either side).
    async fn totp_step(&self, user: UserId, code: &str) -> anyhow::Result<Option<i64>> {
        match self.store.totp(user).await? {
            Some(record) => self.step_of(user, &record, code),
            None => Ok(None),
        }
    }

    /// [`Self::totp_step`] on a credential already read.
    fn step_of(
        &self,
        user: UserId,
        record: &TotpRecord,
        code: &str,
    ) -> anyhow::Result<Option<i64>> {
        if record.confirmed_at.is_none() {
            return Ok(None);
        }
        Ok(self
            .matching_step(user, record, code)?
            .filter(|step| *step > record.last_step))
    }

    /// Accepts a TOTP code of the user's active credential once: the step
    /// it matches must be later than the last accepted one, and the store
    /// moves it forward atomically.
    async fn spend_totp(&self, user: UserId, code: &str) -> anyhow::Result<bool> {
        match self.totp_step(user, code).await? {
            Some(step) => self.store.spend_totp_step(user, step).await,
            None => Ok(false),
        }
    }

    /// The step (now or one either side) whose code `code` is.
    fn matching_step(
        &self,
        user: UserId,
        record: &TotpRecord,
        code: &str,
    ) -> anyhow::Result<Option<i64>> {
        if !is_totp_code(code) {
            return Ok(None);
        }
        let key = self
            .keys
            .open_secret(&totp_aad(user), &record.secret, record.encrypted)?;
        let totp = totp_for(key, None)?;
        let now = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0);
        Ok(totp
            .check(code, now)
            .map(|step| i64::try_from(step).unwrap_or(i64::MAX)))
    }

    /// Starts a TOTP enrolment (the caller re-proved their password): a new
    /// key, pending until confirmed, replacing a pending one.
    ///
    /// # Errors
    /// [`FactorError::AlreadyEnrolled`] when TOTP is active.
    pub async fn begin_totp(&self, user: &UserRecord) -> Result<TotpEnrolment, FactorError> {
        let mut key = vec![0u8; TOTP_KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let enrolment = self.enrolment(key.clone(), &user.email)?;
        let (secret, encrypted) = self.keys.seal_secret(&totp_aad(user.id), &key)?;
        let stored = self
            .store
            .put_pending_totp(
                user.id,
                &TotpRecord {
                    secret,
                    encrypted,
                    created_at: self.clock.now(),
                    confirmed_at: None,
                    last_step: 0,
                },
            )
            .await?;
        if !stored {
            return Err(FactorError::AlreadyEnrolled);
        }
        Ok(enrolment)
    }

    /// The caller's pending TOTP enrolment, shown again (the account page
    /// after a wrong confirmation code); `None` without one.
    ///
    /// # Errors
    /// Store failures, or a sealed key that cannot be opened.
    pub async fn pending_totp(&self, user: &UserRecord) -> anyhow::Result<Option<TotpEnrolment>> {
        let Some(record) = self.store.totp(user.id).await? else {
            return Ok(None);
        };
        if record.confirmed_at.is_some() {
            return Ok(None);
        }
        let key = self
            .keys
            .open_secret(&totp_aad(user.id), &record.secret, record.encrypted)?;
        Ok(Some(self.enrolment(key, &user.email)?))
    }

    /// The key as an app takes it: base32, and the `otpauth://` URI.
    fn enrolment(&self, key: Vec<u8>, email: &str) -> anyhow::Result<TotpEnrolment> {
        let totp = totp_for(key.clone(), Some((&self.label, email)))?;
        let otpauth_uri = totp
            .to_url()
            .map_err(|e| anyhow::anyhow!("writing an otpauth URI: {e}"))?;
        Ok(TotpEnrolment {
            secret: totp_rs::Secret::from(key).to_base32(),
            otpauth_uri,
        })
    }

    /// Activates the pending TOTP credential with a code from it. When it
    /// is the user's first factor, a set of recovery codes is issued and
    /// returned (shown once).
    ///
    /// # Errors
    /// [`FactorError::NotEnrolled`] without a pending credential,
    /// [`FactorError::WrongCode`], throttling and store failures.
    pub async fn confirm_totp(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientMeta,
    ) -> Result<Option<Vec<String>>, FactorError> {
        let user = &who.user;
        let record = match self.store.totp(user.id).await? {
            Some(r) if r.confirmed_at.is_none() => r,
            Some(_) => return Err(FactorError::AlreadyEnrolled),
            None => return Err(FactorError::NotEnrolled),
        };
        let admitted = self.admit_code(user, client.ip).await?;
        let step = match self.matching_step(user.id, &record, code) {
            Ok(step) => step,
            Err(e) => {
                self.throttle.attempt_unchecked(admitted).await;
                return Err(e.into());
            }
        };
        let had_codes = self.store.factors(user.id).await?.recovery_codes_left > 0;
        let confirmed = match step {
            Some(step) => {
                self.store
                    .confirm_totp(user.id, &record.secret, step, self.clock.now())
                    .await?
            }
            None => false,
        };
        if !confirmed {
            self.code_failed(who, Method::Totp, client.ip).await;
            return Err(FactorError::WrongCode);
        }
        self.throttle.attempt_passed(admitted).await?;
        let event = self
            .audit
            .event(EventType::MfaEnrolled, Actor::User(user.id))
            .user(user.id)
            .session(who.session.id)
            .ip(client.ip)
            .detail("method", "totp");
        self.audit.record_one(event).await;
        if had_codes {
            return Ok(None);
        }
        Ok(Some(self.issue_recovery_codes(user.id).await?))
    }

    /// Removes the caller's TOTP credential, on a current code of it; with
    /// it go the recovery codes when no other factor is left.
    ///
    /// # Errors
    /// [`FactorError::NotEnrolled`], [`FactorError::WrongCode`], throttling
    /// and store failures.
    pub async fn remove_totp(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientMeta,
    ) -> Result<(), FactorError> {
        let user = &who.user;
        if !self.store.factors(user.id).await?.totp {
            return Err(FactorError::NotEnrolled);
        }
        self.proven_by_totp(who, code, client).await?;
        if self.store.delete_totp(user.id).await? {
            let event = self
                .audit
                .event(EventType::MfaRemoved, Actor::User(user.id))
                .user(user.id)
                .session(who.session.id)
                .ip(client.ip)
                .detail("method", "totp");
            self.audit.record_one(event).await;
        }
        Ok(())
    }

    /// A new set of recovery codes for the caller, on a current TOTP code,
    /// or without one from a session that proved a passkey (a recovery code
    /// is not enough: it must not buy new factors); the old set is void.
    ///
    /// # Errors
    /// [`FactorError::NotEnrolled`] without a factor,
    /// [`FactorError::WrongCode`], throttling and store failures.
    pub async fn regenerate_recovery_codes(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientMeta,
    ) -> Result<Vec<String>, FactorError> {
        let user = &who.user;
        let factors = self.store.factors(user.id).await?;
        if !factors.totp && factors.passkeys == 0 {
            return Err(FactorError::NotEnrolled);
        }
        let by_passkey = code.is_empty() && factors.passkeys > 0 && who.session.amr.proved_a_key();
        if !by_passkey {
            self.proven_by_totp(who, code, client).await?;
        }
        let codes = self.issue_recovery_codes(user.id).await?;
        let event = self
            .audit
            .event(EventType::RecoveryCodesRegenerated, Actor::User(user.id))
            .user(user.id)
            .session(who.session.id)
            .ip(client.ip);
        self.audit.record_one(event).await;
        Ok(codes)
    }

    /// Removes every factor and recovery code of a user, and their logins
    /// waiting for a second step (an administrator's or the CLI's reset,
    /// for a user who lost theirs): the password alone signs them in again.
    /// `None` when there is no such user; else whether anything was removed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn reset(&self, user: UserId, actor: Actor) -> anyhow::Result<Option<bool>> {
        if self.users.user_by_id(user).await?.is_none() {
            return Ok(None);
        }
        let removed = self.store.reset_mfa(user).await?;
        if removed {
            let event = self.audit.event(EventType::MfaReset, actor).user(user);
            self.audit.record_one(event).await;
        }
        Ok(Some(removed))
    }

    /// Seals the TOTP keys stored unsealed, once a `key_encryption_key` is
    /// configured (at start-up, as the signing keys are); nothing without
    /// one.
    ///
    /// # Errors
    /// Store failures, or a failing cipher.
    pub async fn seal_plaintext_keys(&self) -> anyhow::Result<()> {
        if !self.keys.seals() {
            return Ok(());
        }
        for (user, plain) in self.store.unsealed_totp().await? {
            let (sealed, _) = self.keys.seal_secret(&totp_aad(user), &plain)?;
            if self.store.seal_totp(user, &plain, &sealed).await? {
                tracing::info!(%user, "TOTP key sealed with key_encryption_key");
            }
        }
        Ok(())
    }

    /// Deletes pending logins past their expiry (the sweeper's).
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_expired(&self) -> anyhow::Result<u64> {
        self.store.delete_expired_mfa(self.clock.now()).await
    }

    /// A right, unused TOTP code of the caller's, spent; throttled like a
    /// password.
    async fn proven_by_totp(
        &self,
        who: &Authenticated,
        code: &str,
        client: &ClientMeta,
    ) -> Result<(), FactorError> {
        let admitted = self.admit_code(&who.user, client.ip).await?;
        match self.spend_totp(who.user.id, code).await {
            Ok(true) => {
                self.throttle.attempt_passed(admitted).await?;
                Ok(())
            }
            Ok(false) => {
                self.code_failed(who, Method::Totp, client.ip).await;
                Err(FactorError::WrongCode)
            }
            Err(e) => {
                self.throttle.attempt_unchecked(admitted).await;
                Err(e.into())
            }
        }
    }

    /// Counts a code check of a signed-in user's in their login budgets.
    async fn admit_code(
        &self,
        user: &UserRecord,
        ip: Option<IpAddr>,
    ) -> Result<super::throttle::Admitted, Refused> {
        let email = Email::parse(&user.email).ok();
        self.throttle
            .admit_password_attempt(&user.email, email.as_ref(), ip)
            .await
    }

    async fn code_failed(&self, who: &Authenticated, method: Method, ip: Option<IpAddr>) {
        let event = self
            .audit
            .event(EventType::MfaFailed, Actor::User(who.user.id))
            .user(who.user.id)
            .session(who.session.id)
            .ip(ip)
            .detail("method", method.as_str())
            .detail("during", "account");
        self.audit.record_one(event).await;
    }

    /// A fresh set of recovery codes, stored hashed (the old set void).
    pub(super) async fn issue_recovery_codes(&self, user: UserId) -> anyhow::Result<Vec<String>> {
        let mut codes = Vec::with_capacity(RECOVERY_CODES);
        let mut hashes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            let code = new_recovery_code()?;
            hashes.push(
                recovery_code_hash(user, &code)
                    .ok_or_else(|| anyhow::anyhow!("a generated recovery code does not parse"))?,
            );
            codes.push(code);
        }
        self.store
            .replace_recovery_codes(user, &hashes, self.clock.now())
            .await?;
        Ok(codes)
    }
}

/// Whether `code` has a TOTP code's shape: six digits.
fn is_totp_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The method a proof claims to be.
fn proof_method(proof: Proof<'_>) -> Method {
    match proof {
        Proof::Passkey { .. } => Method::Passkey,
        Proof::Totp(_) => Method::Totp,
        Proof::RecoveryCode(_) => Method::RecoveryCode,
        Proof::Code(c) if is_totp_code(c) => Method::Totp,
        Proof::Code(_) => Method::RecoveryCode,
    }
}

/// The associated data a user's TOTP key is sealed with.
fn totp_aad(user: UserId) -> Vec<u8> {
    format!("totp:{user}").into_bytes()
}

/// The RFC 6238 parameters every authenticator app reads: SHA-1, 6 digits,
/// 30 s, one step of skew; `who` (issuer, account) for an `otpauth://` URI.
fn totp_for(key: Vec<u8>, who: Option<(&str, &str)>) -> anyhow::Result<Totp> {
    let mut builder = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(STEP)
        .with_skew(1)
        .with_secret(key);
    if let Some((issuer, account)) = who {
        // ':' separates the two in the URI's label; neither may hold one.
        builder = builder
            .with_issuer(Some(issuer.replace(':', "")))
            .with_account_name(account.replace(':', ""));
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("building a TOTP: {e}"))
}

/// The issuer of `otpauth://` URIs: the issuer URL's host, else
/// `gatehouse`.
fn otpauth_label(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gatehouse".to_owned())
}

/// A new recovery code: 60 random bits as 12 base32 characters in groups of
/// four (`abcd-efgh-jkmn`).
fn new_recovery_code() -> anyhow::Result<String> {
    let mut bytes = [0u8; CODE_CHARS];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
    let mut code = String::with_capacity(CODE_CHARS + 2);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        code.push(char::from(CODE_ALPHABET[usize::from(b & 31)]));
    }
    Ok(code)
}

/// The stored hash of a recovery code as typed (case, dashes and spaces
/// ignored; Crockford's look-alikes read as what they look like), bound to
/// its user; `None` for anything that is no recovery code.
fn recovery_code_hash(user: UserId, typed: &str) -> Option<SecretHash> {
    if typed.len() > 64 {
        return None;
    }
    let mut normal = Vec::with_capacity(CODE_CHARS);
    for c in typed.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) {
            return None;
        }
        normal.push(c as u8);
    }
    if normal.len() != CODE_CHARS {
        return None;
    }
    let mut h = Sha256::new();
    h.update(b"gatehouse recovery code\0");
    h.update(user.0.as_bytes());
    h.update(&normal);
    Some(SecretHash(h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_carry_sixty_bits_and_read_back_forgivingly() {
        let user = UserId::new();
        let code = new_recovery_code().expect("code");
        assert_eq!(code.len(), 14, "{code}");
        assert_eq!(code.matches('-').count(), 2, "{code}");
        let stored = recovery_code_hash(user, &code).expect("parses");
        let typed = code.to_uppercase().replace('-', " ");
        assert_eq!(recovery_code_hash(user, &typed), Some(stored));
        // Another user's code of the same text is another hash.
        assert_ne!(recovery_code_hash(UserId::new(), &code), Some(stored));
        for bad in [
            "",
            "abcd",
            "abcd-efgh-jkmn-p",
            "abcd-efgh-jkm!",
            "ünic-ode0-0000",
        ] {
            assert_eq!(recovery_code_hash(user, bad), None, "{bad}");
        }
        // Two codes alike would be a broken generator.
        let a = new_recovery_code().expect("a");
        let b = new_recovery_code().expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn six_digits_are_a_totp_code_and_anything_else_a_recovery_code() {
        assert_eq!(proof_method(Proof::Code("123456")), Method::Totp);
        assert_eq!(
            proof_method(Proof::Code("abcd-efgh-jkmn")),
            Method::RecoveryCode
        );
        assert_eq!(proof_method(Proof::Code("12345")), Method::RecoveryCode);
        assert_eq!(
            proof_method(Proof::RecoveryCode("123456")),
            Method::RecoveryCode
        );
    }

    #[test]
    fn the_otpauth_issuer_is_the_issuers_host() {
        assert_eq!(
            otpauth_label("https://auth.example.com"),
            "auth.example.com"
        );
        assert_eq!(otpauth_label("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(otpauth_label("not a url"), "gatehouse");
    }
}
