//! Mailed links: password reset and address verification.
//!
//! A link carries a token: 32 bytes from the OS RNG, of which the store
//! keeps only the SHA-256, with its purpose, its user, its expiry and a
//! binding (the SHA-256 of the user's email and password hash at issue):
//! a changed email or password voids every token issued before. A token is
//! spent once, in the transaction that does what it is for. The token and
//! the mail that carries it are written in one transaction; the outbox's
//! sender (`mail::Sender`) sends it off the request path.
//!
//! `POST /v1/password-reset` answers the same, in the same time, for known
//! and unknown addresses: the request is counted (per address and per
//! client network) and answered; the lookup and the mail happen after the
//! answer, on a task of their own.

use std::sync::Arc;
use std::time::Duration;

use minijinja::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, Semaphore};

use super::audit::{Actor, Audit, Ending, EventType};
use super::notices::{Links, base_values};
use super::password::{HashError, Hasher, validate_new_password};
use super::principals::Principals;
use super::sessions::Sessions;
use super::throttle::{Refused, Throttle};
use crate::clock::Clock;
use crate::config::EmailVerification;
use crate::mail::Templates;
use crate::metrics::Metrics;
use crate::model::client::{ClientMeta, FieldError};
use crate::model::mail::{MailKind, OutboxMail, TokenPurpose};
use crate::model::types::{Email, MailToken, Password, SecretHash, UserId};
use crate::store::{MailStore, MailTokenRecord, UserRecord, UserStore};

/// Reset requests whose lookup and mail may wait at once; past this,
/// requests are answered 503 (whatever the address).
const PENDING_REQUESTS: usize = 256;

/// At most one verification mail per user within this, when a login of an
/// unverified user asks for one (`email_verification = "required"`).
pub const LOGIN_VERIFICATION_GAP: Duration = Duration::from_secs(300);

/// At most one verification mail per user within this, when the user asks.
pub const REQUESTED_VERIFICATION_GAP: Duration = Duration::from_secs(60);

/// How long a mail given up on is kept (without its bodies).
pub const FAILED_MAIL_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a device not signed in from is remembered.
pub const DEVICE_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the mail flows are configured with.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub verification: EmailVerification,
    pub reset_ttl: Duration,
    pub verification_ttl: Duration,
    /// `public_url`, else the issuer.
    pub public_url: String,
}

/// Why a mail flow was refused.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// No `smtp_url`: the email endpoints do not exist (404).
    #[error("mail is not configured")]
    Off,
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("too many requests")]
    Throttled { retry_after: Duration },
    /// Unknown, spent, expired, voided or of another purpose: one answer.
    #[error("the link is invalid, used or expired")]
    InvalidToken,
    #[error("too busy")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<Refused> for MailError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled { retry_after } => Self::Throttled { retry_after },
            Refused::Store(e) => Self::Store(e),
        }
    }
}

impl From<HashError> for MailError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// The SHA-256 that ties a token to what the user's email and password
/// were when it was issued.
fn binding(purpose: TokenPurpose, user: &UserRecord) -> SecretHash {
    let mut h = Sha256::new();
    h.update(b"gatehouse mail token\0");
    h.update(purpose.as_str().as_bytes());
    h.update(b"\0");
    h.update(user.email.as_bytes());
    h.update(b"\0");
    h.update(user.password_hash.as_bytes());
    SecretHash(h.finalize().into())
}

/// A duration as mails say it: "30 minutes", "48 hours", "2 days".
fn spoken(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s >= 2 * 86_400 && s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s >= 3600 && s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s >= 60 && s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Password reset and address verification.
pub struct Mail {
    store: Arc<dyn MailStore>,
    users: Arc<dyn UserStore>,
    hasher: Arc<Hasher>,
    throttle: Arc<Throttle>,
    sessions: Arc<Sessions>,
    principals: Arc<Principals>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// The mails' templates: present exactly when mail is configured
    /// (`smtp_url`); without them every flow answers [`MailError::Off`].
    templates: Option<Arc<Templates>>,
    links: Links,
    settings: MailSettings,
    wake: Arc<Notify>,
    pending: Arc<Semaphore>,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Mail {
    #[allow(clippy::too_many_arguments)] // the wiring, done once in `Services::new`
    pub fn new(
        store: Arc<dyn MailStore>,
        users: Arc<dyn UserStore>,
        hasher: Arc<Hasher>,
        throttle: Arc<Throttle>,
        sessions: Arc<Sessions>,
        principals: Arc<Principals>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        templates: Option<Arc<Templates>>,
        settings: MailSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            links: Links::new(&settings.public_url),
            store,
            users,
            hasher,
            throttle,
            sessions,
            principals,
            audit,
            metrics,
            clock,
            templates,
            settings,
            wake,
            pending: Arc::new(Semaphore::new(PENDING_REQUESTS)),
        }
    }

    /// Whether mail is configured (`smtp_url`).
    pub fn enabled(&self) -> bool {
        self.templates.is_some()
    }

    /// Whether unverified users are refused at login.
    pub fn verification_required(&self) -> bool {
        self.enabled() && self.settings.verification == EmailVerification::Required
    }

    /// What wakes this node's sender when a mail is written.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The outbox (for the sender).
    pub fn outbox(&self) -> Arc<dyn MailStore> {
        self.store.clone()
    }

    fn templates(&self) -> Result<&Templates, MailError> {
        self.templates.as_deref().ok_or(MailError::Off)
    }

    /// Asks for a password-reset link for `email`. The answer is the same
    /// for known and unknown addresses and takes the same time: the
    /// request is counted (per address and per client network), then
    /// answered; the account is looked up, and the token and its mail
    /// written, on a task of its own.
    ///
    /// # Errors
    /// [`MailError::Off`], [`MailError::Invalid`] (not an address),
    /// [`MailError::Throttled`], [`MailError::Busy`] (too many waiting).
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        client: &ClientMeta,
    ) -> Result<(), MailError> {
        self.templates()?;
        let email = Email::parse(email)
            .map_err(|m| MailError::Invalid(vec![FieldError::new("email", m)]))?;
        if let Err(e) = self.throttle.admit_mail_request(&email, client.ip).await {
            if matches!(e, Refused::Throttled { .. }) {
                self.metrics.password_resets_throttled.increment(1);
            }
            return Err(e.into());
        }
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| MailError::Busy)?;
        self.metrics.password_resets_requested.increment(1);
        let this = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = this.issue_password_reset(&email, &client).await {
                tracing::error!(
                    target: "gatehouse::mail",
                    error = format!("{e:#}"),
                    "a password-reset mail could not be written; the user may ask again"
                );
            }
        });
        Ok(())
    }

    async fn issue_password_reset(&self, email: &Email, client: &ClientMeta) -> anyhow::Result<()> {
        let Some(user) = self.users.user_by_email(email).await? else {
            return Ok(());
        };
        if user.disabled {
            return Ok(());
        }
        self.issue(&user, TokenPurpose::PasswordReset, client)
            .await?;
        let event = self
            .audit
            .event(EventType::PasswordResetRequested, Actor::Anonymous)
            .user(user.id)
            .ip(client.ip);
        self.audit.record_one(event).await;
        Ok(())
    }

    /// Writes a token of `purpose` for `user` and the mail with its link,
    /// in one transaction, and wakes the sender.
    async fn issue(
        &self,
        user: &UserRecord,
        purpose: TokenPurpose,
        client: &ClientMeta,
    ) -> anyhow::Result<()> {
        let Ok(templates) = self.templates() else {
            return Ok(());
        };
        let now = self.clock.now();
        let (kind, path, ttl) = match purpose {
            TokenPurpose::PasswordReset => (
                MailKind::PasswordReset,
                "/reset-password",
                self.settings.reset_ttl,
            ),
            TokenPurpose::EmailVerification => (
                MailKind::EmailVerification,
                "/verify-email",
                self.settings.verification_ttl,
            ),
        };
        let token = MailToken::generate()?;
        let link = self.links.with_token(path, &token.encode());
        let ip = client.ip.map(|ip| ip.to_string());
        let mut values = base_values(
            &self.links,
            user,
            now,
            ip.as_deref(),
            client.user_agent.as_deref(),
        );
        values.push(("link", Value::from(link)));
        values.push(("expires_in", Value::from(spoken(ttl))));
        let rendered = templates.render(
            kind,
            &Value::from(
                values
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        )?;
        let record = MailTokenRecord {
            hash: token.hash(),
            purpose,
            user_id: user.id,
            binding: binding(purpose, user),
            created_at: now,
            expires_at: now + ttl,
        };
        let mail = OutboxMail {
            id: uuid::Uuid::now_v7(),
            kind,
            to: user.email.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            created_at: now,
        };
        self.store.issue_mail_token(&record, &mail).await?;
        self.metrics.mails_queued.increment(1);
        self.wake.notify_one();
        Ok(())
    }

    /// The unspent, unexpired token `token` names for `purpose`, with its
    /// user, when the user's email and password are still those it was
    /// issued for.
    async fn redeemable(
        &self,
        token: &str,
        purpose: TokenPurpose,
    ) -> Result<(SecretHash, UserRecord), MailError> {
        self.templates()?;
        let token = MailToken::parse(token).ok_or(MailError::InvalidToken)?;
        let hash = token.hash();
        let now = self.clock.now();
        let record = self
            .store
            .mail_token(&hash)
            .await?
            .filter(|r| r.purpose == purpose && now < r.expires_at)
            .ok_or(MailError::InvalidToken)?;
        let user = self
            .users
            .user_by_id(record.user_id)
            .await?
            .filter(|u| !u.disabled && binding(purpose, u) == record.binding)
            .ok_or(MailError::InvalidToken)?;
        Ok((hash, user))
    }

    /// Sets a new password with a reset link's token, and ends every
    /// session of the user (their access and refresh tokens with them).
    /// Proving the mailbox also verifies the address. A weak password is
    /// refused before the token is spent.
    ///
    /// # Errors
    /// [`MailError::InvalidToken`], [`MailError::Invalid`] (the policy),
    /// [`MailError::Busy`] (the hashing queue), store failures.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: String,
        client: &ClientMeta,
    ) -> Result<UserRecord, MailError> {
        let (hash, user) = self.redeemable(token, TokenPurpose::PasswordReset).await?;
        let email = Email::parse(&user.email).ok();
        if let Some(e) = validate_new_password("new_password", &new_password, email.as_ref()) {
            return Err(MailError::Invalid(vec![e]));
        }
        let new_hash = self.hasher.hash(Password::new(new_password)).await?;
        // Every session ends before the password changes, so a store that
        // fails between the two leaves the old password and no session
        // (the link still works), never a new password beside live
        // sessions; and again after, for any begun in between.
        let end_all = || {
            self.sessions
                .end_all_of(user.id, None, Actor::User(user.id), Ending::PasswordReset)
        };
        end_all().await?;
        let done = self
            .store
            .reset_password(
                &hash,
                user.id,
                &user.password_hash,
                &new_hash,
                self.clock.now(),
            )
            .await?;
        if !done {
            return Err(MailError::InvalidToken);
        }
        self.principals.changed().await;
        self.metrics.password_resets_completed.increment(1);
        let mut event = self
            .audit
            .event(EventType::PasswordChanged, Actor::User(user.id))
            .user(user.id)
            .ip(client.ip)
            .detail("how", "reset");
        if let Some(ua) = &client.user_agent {
            event = event.detail("user_agent", ua.as_str());
        }
        let mut events = vec![event];
        if !user.email_verified {
            events.push(
                self.audit
                    .event(EventType::EmailVerificationChanged, Actor::User(user.id))
                    .user(user.id)
                    .ip(client.ip)
                    .detail("verified", true)
                    .detail("by", "reset"),
            );
        }
        self.audit.record(events).await;
        end_all().await?;
        Ok(user)
    }

    /// Marks the address verified with a verification link's token.
    ///
    /// # Errors
    /// [`MailError::InvalidToken`], store failures.
    pub async fn verify_email(
        &self,
        token: &str,
        client: &ClientMeta,
    ) -> Result<UserRecord, MailError> {
        let (hash, user) = self
            .redeemable(token, TokenPurpose::EmailVerification)
            .await?;
        let done = self
            .store
            .verify_email(&hash, user.id, &user.email, self.clock.now())
            .await?;
        if !done {
            return Err(MailError::InvalidToken);
        }
        self.principals.changed().await;
        let event = self
            .audit
            .event(EventType::EmailVerificationChanged, Actor::User(user.id))
            .user(user.id)
            .ip(client.ip)
            .detail("verified", true)
            .detail("by", "link");
        self.audit.record_one(event).await;
        Ok(user)
    }

    /// Sends `user` a verification link, unless their address is verified
    /// or one was issued within `gap`; whether one was written.
    ///
    /// # Errors
    /// [`MailError::Off`], store failures.
    pub async fn send_verification(
        &self,
        user: &UserRecord,
        gap: Duration,
        client: &ClientMeta,
    ) -> Result<bool, MailError> {
        self.templates()?;
        if user.email_verified {
            return Ok(false);
        }
        let now = self.clock.now();
        let last = self
            .store
            .last_mail_token_at(user.id, TokenPurpose::EmailVerification)
            .await?;
        if last.is_some_and(|at| now < at + gap) {
            return Ok(false);
        }
        self.issue(user, TokenPurpose::EmailVerification, client)
            .await?;
        Ok(true)
    }

    /// After a public registration: the verification mail, unless
    /// `email_verification = "off"`. A failure is logged: the account
    /// exists, and the user can ask again.
    pub async fn registered(&self, user: &UserRecord, client: &ClientMeta) {
        if !self.enabled() || self.settings.verification == EmailVerification::Off {
            return;
        }
        if let Err(e) = self
            .send_verification(user, REQUESTED_VERIFICATION_GAP, client)
            .await
        {
            tracing::error!(
                target: "gatehouse::mail",
                user_id = %user.id,
                error = format!("{e:#}"),
                "the verification mail of a new account could not be written"
            );
        }
    }

    /// An administrator (or the CLI) says whether the user's address is
    /// verified; false for an unknown user.
    ///
    /// # Errors
    /// Store failures.
    pub async fn set_verified(
        &self,
        user: UserId,
        verified: bool,
        actor: Actor,
    ) -> anyhow::Result<bool> {
        if !self.store.set_email_verified(user, verified).await? {
            return Ok(false);
        }
        self.principals.changed().await;
        let event = self
            .audit
            .event(EventType::EmailVerificationChanged, actor)
            .user(user)
            .detail("verified", verified)
            .detail(
                "by",
                if matches!(actor, Actor::Cli) {
                    "operator"
                } else {
                    "admin"
                },
            );
        self.audit.record_one(event).await;
        Ok(true)
    }

    /// Deletes expired tokens, mails given up on a week ago, and devices
    /// not seen for a year; run periodically.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep(&self) -> anyhow::Result<u64> {
        let now = self.clock.now();
        self.store
            .sweep_mail(now, now - FAILED_MAIL_RETENTION, now - DEVICE_RETENTION)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_spoken_in_their_largest_whole_unit() {
        assert_eq!(spoken(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(spoken(Duration::from_secs(48 * 3600)), "2 days");
        assert_eq!(spoken(Duration::from_secs(3600)), "1 hour");
        assert_eq!(spoken(Duration::from_secs(90)), "90 seconds");
        assert_eq!(spoken(Duration::from_secs(1)), "1 second");
    }
}
