//! Accounts: registration, password change, roles and permissions.

use std::net::IpAddr;

use super::audit::{Actor, Ending, EventType};
use super::password::check_policy;
use super::sessions::{Authenticated, LoginError};
use super::types::{Email, Password, Permission, RoleName, UserId};
use super::{Auth, ClientMeta, FieldError, HashError};
use crate::config::Registration;
use crate::store::{AdminChange, AdminChangeError, CreateUserError, NewUser, UserRecord};

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

fn validate_new_password(
    field: &'static str,
    password: &str,
    email: Option<&Email>,
) -> Option<FieldError> {
    if let Err(m) = check_policy(password) {
        return Some(FieldError::new(field, m));
    }
    if email.is_some_and(|e| password.trim().eq_ignore_ascii_case(e.as_str())) {
        return Some(FieldError::new(field, "must not be your email address"));
    }
    None
}

impl Auth {
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
            if self.policy.registration == Registration::Closed {
                return Err(RegisterError::Closed);
            }
            self.admit_registration(ip).await?;
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
            .stores
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
            .event(EventType::UserCreated, actor)
            .user(user.id)
            .detail("roles", user.roles.clone());
        if let Some(ip) = public_ip {
            self.metrics.registrations_created.increment(1);
            event = event.ip(ip);
        }
        self.record_one(event).await;
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
        }
        let hash = self
            .hasher
            .hash(Password::new(new))
            .await
            .map_err(|e| match e {
                HashError::Busy => ChangePasswordError::Busy,
                HashError::Internal(e) => ChangePasswordError::Store(e),
            })?;
        self.stores
            .users
            .set_password_hash(who.user.id, &hash)
            .await?;
        self.principals_changed();
        let event = self
            .event(EventType::PasswordChanged, Actor::User(who.user.id))
            .user(who.user.id)
            .session(who.session.id)
            .ip(client.ip);
        self.record_one(event).await;
        self.end_sessions_of(
            who.user.id,
            Some(who.session.id),
            Actor::User(who.user.id),
            Ending::PasswordChanged,
        )
        .await?;
        Ok(())
    }

    /// Creates a role or replaces its permissions. A signed-in
    /// administrator (the admin API) may not leave no enabled user holding
    /// `gatehouse:admin`; the command line may.
    ///
    /// # Errors
    /// [`AdminChangeError::LastAdmin`]; store failures.
    pub async fn set_role(
        &self,
        name: &RoleName,
        permissions: &[Permission],
        actor: Actor,
    ) -> Result<(), AdminChangeError> {
        let mut perms: Vec<String> = permissions.iter().map(|p| p.as_str().to_owned()).collect();
        perms.sort();
        perms.dedup();
        let users = &self.stores.users;
        if super::admin::keeps_an_admin(actor) {
            users
                .change_keeping_an_admin(AdminChange::PutRole(name, &perms))
                .await?;
        } else {
            users.put_role(name, &perms).await?;
        }
        self.principals_changed();
        let event = self
            .event(EventType::RoleChanged, actor)
            .detail("role", name.as_str())
            .detail("permissions", perms);
        self.record_one(event).await;
        Ok(())
    }

    /// The user's effective permissions, in one store round trip.
    ///
    /// # Errors
    /// Store failures (callers answer 503: never allow, never deny).
    pub async fn permissions_of(&self, user_id: UserId) -> anyhow::Result<Vec<String>> {
        self.stores.users.permissions_of(user_id).await
    }
}
