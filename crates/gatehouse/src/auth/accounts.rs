//! Accounts: registration, password login, password change, and the
//! permissions a user holds.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::audit::{Actor, Audit, Ending, EventType};
use super::mail::{LOGIN_VERIFICATION_GAP, Mail};
use super::mfa::{Challenge, FactorError, SecondFactors, TotpEnrolment};
use super::password::validate_new_password;
use super::password::{HashError, Hasher};
use super::principals::Principals;
use super::sessions::{Authenticated, NewSession, Sessions};
use super::throttle::{Admitted, Refused, Throttle};
use crate::clock::Clock;
use crate::config::Registration;
use crate::metrics::Metrics;
use crate::model::amr::Amr;
use crate::model::client::{ClientMeta, FieldError};
use crate::model::types::{Email, Password, RoleName, UserId};
use crate::store::{CreateUserError, NewUser, UserRecord, UserStore};

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown email, wrong password or disabled account: deliberately one
    /// case, so the answer tells an attacker nothing.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A login budget is spent: this account from this client, this
    /// client's network, or this account (`auth::throttle`).
    #[error("too many failed logins")]
    Throttled { retry_after: Duration },
    #[error("the password hashing queue is full")]
    Busy,
    /// The password was right and the user has a second factor: no session
    /// yet; the login goes on with the challenge's second step
    /// (`SecondFactors::complete_login`).
    #[error("a second factor is required")]
    SecondFactorRequired(Challenge),
    /// The password was right, but `email_verification = "required"` and
    /// the address is not verified; a fresh verification mail is on its
    /// way (at most one per 5 minutes).
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<HashError> for LoginError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("registration is closed")]
    Closed,
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the email address is taken")]
    EmailTaken,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// The client network's registration budget is spent.
    #[error("too many registrations")]
    Throttled { retry_after: std::time::Duration },
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<Refused> for RegisterError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled { retry_after } => Self::Throttled { retry_after },
            Refused::Store(e) => Self::Store(e),
        }
    }
}

impl From<Refused> for LoginError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Throttled { retry_after } => Self::Throttled { retry_after },
            Refused::Store(e) => Self::Store(e),
        }
    }
}

impl From<HashError> for RegisterError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Busy,
            HashError::Internal(e) => Self::Store(e),
        }
    }
}

/// Why a password change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("too many failed attempts")]
    Throttled { retry_after: std::time::Duration },
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the password hashing queue is full")]
    Busy,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Who is creating an account: the public registration endpoint obeys the
/// `registration` setting and the client network's registration budget; an
/// operator (the CLI, or code embedding the server) or an administrator
/// does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrar {
    /// Anyone, through `POST /v1/users` or the hosted page, from `ip`.
    Public {
        ip: Option<IpAddr>,
    },
    Operator,
    /// An administrator through the admin API.
    Admin(UserId),
}

/// Accounts and password login.
pub struct Accounts {
    users: Arc<dyn UserStore>,
    hasher: Arc<Hasher>,
    throttle: Arc<Throttle>,
    sessions: Arc<Sessions>,
    factors: Arc<SecondFactors>,
    principals: Arc<Principals>,
    mail: Arc<Mail>,
    audit: Arc<Audit>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    registration: Registration,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    #[allow(clippy::too_many_arguments)] // the wiring, done once in `Services::new`
    pub fn new(
        users: Arc<dyn UserStore>,
        hasher: Arc<Hasher>,
        throttle: Arc<Throttle>,
        sessions: Arc<Sessions>,
        factors: Arc<SecondFactors>,
        principals: Arc<Principals>,
        mail: Arc<Mail>,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        registration: Registration,
    ) -> Self {
        Self {
            users,
            hasher,
            throttle,
            sessions,
            factors,
            principals,
            mail,
            audit,
            metrics,
            clock,
            registration,
        }
    }

    /// Whether anyone may register (`registration = "open"`).
    pub fn registration_open(&self) -> bool {
        self.registration == Registration::Open
    }

    /// Creates an account after checking the email, the password policy and
    /// (for public registration) that registration is open and the client
    /// network's budget not spent: every public attempt counts, before
    /// anything is judged, looked up or hashed.
    ///
    /// # Errors
    /// See [`RegisterError`].
    pub async fn register(
        &self,
        email: &str,
        password: String,
        roles: Vec<RoleName>,
        registrar: Registrar,
    ) -> Result<UserRecord, RegisterError> {
        let public_ip = match registrar {
            Registrar::Public { ip } => Some(ip),
            Registrar::Operator | Registrar::Admin(_) => None,
        };
        if let Some(ip) = public_ip {
            if self.registration == Registration::Closed {
                return Err(RegisterError::Closed);
            }
            self.throttle.admit_registration(ip).await?;
        }
        let mut errors = Vec::new();
        let email = Email::parse(email)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok();
        errors.extend(validate_new_password("password", &password, email.as_ref()));
        let Some(email) = email.filter(|_| errors.is_empty()) else {
            return Err(RegisterError::Invalid(errors));
        };
        let password_hash = self.hasher.hash(Password::new(password)).await?;
        let user = self
            .users
            .create_user(NewUser {
                id: UserId::new(),
                email,
                password_hash,
                created_at: self.clock.now(),
                roles,
            })
            .await
            .map_err(|e| match e {
                CreateUserError::EmailTaken => {
                    if public_ip.is_some() {
                        self.metrics.registrations_taken.increment(1);
                    }
                    RegisterError::EmailTaken
                }
                CreateUserError::UnknownRole(r) => RegisterError::UnknownRole(r),
                CreateUserError::Store(e) => RegisterError::Store(e),
            })?;
        let actor = match registrar {
            Registrar::Public { .. } => Actor::User(user.id),
            Registrar::Operator => Actor::Cli,
            Registrar::Admin(admin) => Actor::User(admin),
        };
        let mut event = self
            .audit
            .event(EventType::UserCreated, actor)
            .user(user.id)
            .detail("roles", user.roles.clone());
        if let Some(ip) = public_ip {
            self.metrics.registrations_created.increment(1);
            event = event.ip(ip);
        }
        self.audit.record_one(event).await;
        if let Some(ip) = public_ip {
            let client = ClientMeta {
                ip,
                user_agent: None,
            };
            self.mail.registered(&user, &client).await;
        }
        Ok(user)
    }

    /// Changes the caller's password after re-checking the current one, and
    /// ends every other session of the user (OWASP ASVS 3.3.3): whoever
    /// else held one may have held the old password too.
    ///
    /// Wrong current passwords count towards every login budget (the
    /// (account, client IP) pair's, the client network's and the
    /// account's), so a stolen session cannot be used to guess the password
    /// at leisure.
    ///
    /// # Errors
    /// See [`ChangePasswordError`].
    pub async fn change_password(
        &self,
        who: &Authenticated,
        current: Password,
        new: String,
        client: &ClientMeta,
    ) -> Result<(), ChangePasswordError> {
        let email = Email::parse(&who.user.email).ok();
        if let Some(e) = validate_new_password("new_password", &new, email.as_ref()) {
            return Err(ChangePasswordError::Invalid(vec![e]));
        }
        match self
            .check_password(&who.user.email, current, client.ip)
            .await
        {
            Ok(user) if user.id == who.user.id => {}
            Ok(_) | Err(LoginError::InvalidCredentials) => {
                return Err(ChangePasswordError::WrongPassword);
            }
            Err(LoginError::Throttled { retry_after }) => {
                return Err(ChangePasswordError::Throttled { retry_after });
            }
            Err(LoginError::Busy) => return Err(ChangePasswordError::Busy),
            Err(LoginError::Store(e)) => return Err(ChangePasswordError::Store(e)),
            // `check_password` never asks for a second factor or a
            // verified address.
            Err(LoginError::SecondFactorRequired(_) | LoginError::EmailNotVerified) => {
                return Err(ChangePasswordError::Store(anyhow::anyhow!(
                    "a password check asked for a second factor"
                )));
            }
        }
        let hash = self
            .hasher
            .hash(Password::new(new))
            .await
            .map_err(|e| match e {
                HashError::Busy => ChangePasswordError::Busy,
                HashError::Internal(e) => ChangePasswordError::Store(e),
            })?;
        self.users.set_password_hash(who.user.id, &hash).await?;
        self.principals.changed().await;
        let mut event = self
            .audit
            .event(EventType::PasswordChanged, Actor::User(who.user.id))
            .user(who.user.id)
            .session(who.session.id)
            .ip(client.ip)
            .detail("how", "change");
        if let Some(ua) = &client.user_agent {
            event = event.detail("user_agent", ua.as_str());
        }
        self.audit.record_one(event).await;
        self.sessions
            .end_all_of(
                who.user.id,
                Some(who.session.id),
                Actor::User(who.user.id),
                Ending::PasswordChanged,
            )
            .await?;
        Ok(())
    }

    /// Starts a TOTP enrolment for the caller after re-checking their
    /// password (a stolen session alone cannot add a factor to lock the
    /// owner out with); wrong passwords count like a login's.
    ///
    /// # Errors
    /// See [`FactorError`].
    pub async fn begin_totp(
        &self,
        who: &Authenticated,
        password: Password,
        client: &ClientMeta,
    ) -> Result<TotpEnrolment, FactorError> {
        match self
            .check_password(&who.user.email, password, client.ip)
            .await
        {
            Ok(user) if user.id == who.user.id => {}
            Ok(_)
            | Err(
                LoginError::InvalidCredentials
                | LoginError::SecondFactorRequired(_)
                | LoginError::EmailNotVerified,
            ) => {
                return Err(FactorError::WrongPassword);
            }
            Err(LoginError::Throttled { retry_after }) => {
                return Err(FactorError::Throttled { retry_after });
            }
            Err(LoginError::Busy) => return Err(FactorError::Busy),
            Err(LoginError::Store(e)) => return Err(FactorError::Store(e)),
        }
        self.factors.begin_totp(&who.user).await
    }

    /// The user's effective permissions, in one store round trip.
    ///
    /// # Errors
    /// Store failures (callers answer 503: never allow, never deny).
    pub async fn permissions_of(&self, user_id: UserId) -> anyhow::Result<Vec<String>> {
        self.users.permissions_of(user_id).await
    }

    /// Checks a password for an email and, when it matches an enabled
    /// account without a second factor, creates a new session (never
    /// reusing one: no fixation). For a user with a second factor the
    /// login stops at [`LoginError::SecondFactorRequired`]: no session, a
    /// challenge for the second step instead, and the right password
    /// resets no failure count (only a completed login does).
    ///
    /// Throttling is per (account, client IP): once `login_max_failures`
    /// attempts without a success fall within `login_window`, every further
    /// attempt is refused, even with the right password, until the window
    /// closes; the client network's and the account's failure budgets apply
    /// too (`auth::throttle`). Unknown accounts are counted and hashed like
    /// known ones.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        client: &ClientMeta,
    ) -> Result<(UserRecord, NewSession), LoginError> {
        let (user, admitted) = self
            .check_password_admitted(email, password, client.ip)
            .await?;
        if self.mail.verification_required() && !user.email_verified {
            // The right password: no failure, but no session either.
            self.throttle.attempt_passed(admitted).await?;
            self.verification_needed(&user, client).await;
            return Err(LoginError::EmailNotVerified);
        }
        let methods = match self.factors.methods_of(user.id).await {
            Ok(methods) => methods,
            Err(e) => {
                self.throttle.attempt_unchecked(admitted).await;
                return Err(LoginError::Store(e));
            }
        };
        if !methods.is_empty() {
            self.throttle.attempt_passed(admitted).await?;
            let challenge = self
                .factors
                .challenge(&user, Amr::PASSWORD, methods)
                .await?;
            return Err(LoginError::SecondFactorRequired(challenge));
        }
        self.throttle.attempt_matched(admitted).await?;
        let session = self.sessions.start(&user, client, Amr::PASSWORD).await?;
        self.factors
            .login_succeeded(&user, &session, Amr::PASSWORD, client)
            .await;
        Ok((user, session))
    }

    /// A login of `user` was refused for an unverified address: a fresh
    /// verification mail, at most one per 5 minutes (a failure is logged;
    /// the refusal stands).
    pub(crate) async fn verification_needed(&self, user: &UserRecord, client: &ClientMeta) {
        if let Err(e) = self
            .mail
            .send_verification(user, LOGIN_VERIFICATION_GAP, client)
            .await
        {
            tracing::error!(
                target: "gatehouse::mail",
                user_id = %user.id,
                error = format!("{e:#}"),
                "a verification mail could not be written"
            );
        }
    }

    /// The throttled password check shared by every password login path.
    ///
    /// # Errors
    /// See [`LoginError`].
    pub async fn check_password(
        &self,
        email: &str,
        password: Password,
        ip: Option<std::net::IpAddr>,
    ) -> Result<UserRecord, LoginError> {
        let (user, admitted) = self.check_password_admitted(email, password, ip).await?;
        self.throttle.attempt_matched(admitted).await?;
        Ok(user)
    }

    /// [`Self::check_password`], leaving the matched attempt for the caller
    /// to settle with the throttle (a login may go on to a second step).
    async fn check_password_admitted(
        &self,
        email: &str,
        password: Password,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(UserRecord, Admitted), LoginError> {
        let parsed = Email::parse(email).ok();
        // Unparseable emails still get a key of their own (bounded length),
        // so malformed guesses are throttled too.
        let normalised = parsed.as_ref().map_or_else(
            || {
                email
                    .trim()
                    .to_lowercase()
                    .chars()
                    .take(254)
                    .collect::<String>()
            },
            |e| e.as_str().to_owned(),
        );
        // Count the attempt before checking the password, not after: checked
        // afterwards, a burst of concurrent guesses would all pass the gate
        // before the first failure was recorded.
        let admitted = self
            .throttle
            .admit_password_attempt(&normalised, parsed.as_ref(), ip)
            .await?;
        let (user, matched) = match self.verify_password(parsed.as_ref(), password).await {
            Ok(checked) => checked,
            Err(e) => {
                self.throttle.attempt_unchecked(admitted).await;
                return Err(e);
            }
        };
        match user {
            Some(user) if matched && !user.disabled => Ok((user, admitted)),
            user => {
                self.metrics.logins_failed.increment(1);
                // The account when it exists, never the email typed: people
                // type passwords into the email field.
                let mut event = self
                    .audit
                    .event(EventType::LoginFailed, Actor::Anonymous)
                    .ip(ip);
                if let Some(user) = user {
                    let reason = if user.disabled && matched {
                        "user_disabled"
                    } else {
                        "wrong_password"
                    };
                    event = event.user(user.id).detail("reason", reason);
                } else {
                    event = event.detail("reason", "unknown_account");
                }
                self.audit.record_one(event).await;
                Err(LoginError::InvalidCredentials)
            }
        }
    }

    /// The account of `email`, if any, and whether `password` is its
    /// password (an unknown account is verified against a dummy hash, so it
    /// costs the same).
    async fn verify_password(
        &self,
        email: Option<&Email>,
        password: Password,
    ) -> Result<(Option<UserRecord>, bool), LoginError> {
        let user = match email {
            Some(e) => self.users.user_by_email(e).await?,
            None => None,
        };
        let matched = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        Ok((user, matched))
    }
}
