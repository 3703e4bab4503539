//! The audit trail's vocabulary: what happened (`EventType`), who did it
//! (`Actor`), why a session ended (`Ending`), an event as stored
//! (`AuditEvent`) and how the trail is read (`AuditQuery`, `AuditPage`).
//! Recording and reading them is the domain's (`auth::audit`).
//!
//! An event never carries a secret: no password, session secret, refresh
//! token, access token or key material; for a failed login with an unknown
//! email not even the email (users type passwords into the email field).

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::types::{SessionId, UserId};

/// Most events one page may hold.
pub const MAX_PAGE: u32 = 200;

/// What happened. The names are the `type` of the API and of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    LoginSucceeded,
    LoginFailed,
    /// The first refused attempt of a throttled window of a login budget
    /// (`details.limit`: `account_ip`, `ip` or `account`); the refusals
    /// after it are counted in metrics, not stored one by one.
    LoginThrottled,
    /// The caller ended its own current session (`POST /v1/logout`).
    Logout,
    /// A session ended for any other reason (`details.reason`).
    SessionEnded,
    RefreshReuseDetected,
    PasswordChanged,
    UserCreated,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    UserRolesChanged,
    RoleChanged,
    RoleDeleted,
    KeyRotated,
    ResourceServerCreated,
    ResourceServerDeleted,
    /// The first refused registration of a client network's throttled
    /// window, as `LoginThrottled`.
    RegistrationThrottled,
    /// A second factor became active (`details.method`: `totp`).
    MfaEnrolled,
    /// The user removed a second factor (`details.method`).
    MfaRemoved,
    /// A wrong second-step code (`details.method`: `totp`, `recovery_code`;
    /// `details.during`: `login` or `account`).
    MfaFailed,
    /// A recovery code was spent (`details.codes_left`).
    RecoveryCodeUsed,
    /// A new set of recovery codes replaced the old one.
    RecoveryCodesRegenerated,
    /// An administrator or the CLI removed every factor of the user.
    MfaReset,
    /// A passkey's signature counter went backwards: a cloned
    /// authenticator; the assertion was refused.
    PasskeyCounterRegression,
    /// A password-reset link was asked for a known, enabled account (the
    /// mail is in the outbox).
    PasswordResetRequested,
    /// The user's address was verified (`details.by`: `link` or `admin`),
    /// or marked unverified by an administrator (`details.verified`).
    EmailVerificationChanged,
    /// An OpenID client was registered (`details.client_id`, `name`,
    /// `type`, `redirect_uris`, `grant_types`, `roles`).
    ClientCreated,
    /// An OpenID client's registration changed (`details.client_id`;
    /// `changes`: each field changed, with its new value).
    ClientChanged,
    /// An OpenID client was deleted (`details.client_id`, `name`).
    ClientDeleted,
    /// A confidential client's secret was replaced (`details.client_id`);
    /// the tokens obtained with the old one are revoked.
    ClientSecretRotated,
    /// A user allowed a client the scopes of `details.scopes`
    /// (`details.client_id`) on the consent page.
    ConsentGiven,
    /// A user withdrew a client's consent (`details.client_id`); the
    /// client's sessions of the user ended with it.
    ConsentRevoked,
    /// An authorization code was presented again (`details.client_id`);
    /// the client session its first exchange started was ended.
    CodeReplayed,
}

impl EventType {
    pub const ALL: [Self; 34] = [
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::Logout,
        Self::SessionEnded,
        Self::RefreshReuseDetected,
        Self::PasswordChanged,
        Self::UserCreated,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::UserDeleted,
        Self::UserRolesChanged,
        Self::RoleChanged,
        Self::RoleDeleted,
        Self::KeyRotated,
        Self::ResourceServerCreated,
        Self::ResourceServerDeleted,
        Self::RegistrationThrottled,
        Self::MfaEnrolled,
        Self::MfaRemoved,
        Self::MfaFailed,
        Self::RecoveryCodeUsed,
        Self::RecoveryCodesRegenerated,
        Self::MfaReset,
        Self::PasskeyCounterRegression,
        Self::PasswordResetRequested,
        Self::EmailVerificationChanged,
        Self::ClientCreated,
        Self::ClientChanged,
        Self::ClientDeleted,
        Self::ClientSecretRotated,
        Self::ConsentGiven,
        Self::ConsentRevoked,
        Self::CodeReplayed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::Logout => "logout",
            Self::SessionEnded => "session_ended",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::PasswordChanged => "password_changed",
            Self::UserCreated => "user_created",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::UserDeleted => "user_deleted",
            Self::UserRolesChanged => "user_roles_changed",
            Self::RoleChanged => "role_changed",
            Self::RoleDeleted => "role_deleted",
            Self::KeyRotated => "key_rotated",
            Self::ResourceServerCreated => "resource_server_created",
            Self::ResourceServerDeleted => "resource_server_deleted",
            Self::RegistrationThrottled => "registration_throttled",
            Self::MfaEnrolled => "mfa_enrolled",
            Self::MfaRemoved => "mfa_removed",
            Self::MfaFailed => "mfa_failed",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            Self::MfaReset => "mfa_reset",
            Self::PasskeyCounterRegression => "passkey_counter_regression",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::EmailVerificationChanged => "email_verification_changed",
            Self::ClientCreated => "client_created",
            Self::ClientChanged => "client_changed",
            Self::ClientDeleted => "client_deleted",
            Self::ClientSecretRotated => "client_secret_rotated",
            Self::ConsentGiven => "consent_given",
            Self::ConsentRevoked => "consent_revoked",
            Self::CodeReplayed => "code_replayed",
        }
    }

    /// The type named `s`, if there is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in user: the subject themselves, or an administrator.
    User(UserId),
    /// The command line, run by whoever holds the configuration.
    Cli,
    /// Gatehouse itself: expiry, theft detection, start-up.
    System,
    /// Someone not (yet) identified: a login attempt.
    Anonymous,
}

impl Actor {
    /// The stored and shown kind, and the user id when there is one.
    pub fn parts(self) -> (&'static str, Option<UserId>) {
        match self {
            Self::User(id) => ("user", Some(id)),
            Self::Cli => ("cli", None),
            Self::System => ("system", None),
            Self::Anonymous => ("anonymous", None),
        }
    }

    /// The actor stored as `kind` and `id`; `None` for an unknown kind.
    pub fn from_parts(kind: &str, id: Option<UserId>) -> Option<Self> {
        match (kind, id) {
            ("user", Some(id)) => Some(Self::User(id)),
            ("cli", None) => Some(Self::Cli),
            ("system", None) => Some(Self::System),
            ("anonymous", None) => Some(Self::Anonymous),
            _ => None,
        }
    }
}

/// Why a session ended, as `details.reason` of `session_ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `POST /v1/logout` (recorded as `logout`).
    Logout,
    /// The user ended it from their list of sessions.
    EndedByUser,
    /// The user signed out everywhere else.
    SignedOutElsewhere,
    /// The user changed their password.
    PasswordChanged,
    /// The password was reset through a mailed link.
    PasswordReset,
    /// An administrator ended the user's sessions.
    EndedByAdmin,
    UserDisabled,
    UserDeleted,
    /// A spent refresh token of the session was presented again.
    RefreshReuse,
    /// Idle or absolute expiry, found on use.
    Expired,
    /// A new session of the user went past `max_sessions_per_user`, and
    /// this was their oldest.
    SessionLimit,
    /// A client session whose browser session ended.
    BrowserSessionEnded,
    /// A client session whose authorization code was presented again.
    CodeReplayed,
    /// A client session whose consent the user withdrew.
    ConsentRevoked,
    /// A client session whose client revoked one of its tokens (RFC 7009).
    TokenRevoked,
    /// A client session whose client was deleted.
    ClientDeleted,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::EndedByUser => "ended_by_user",
            Self::SignedOutElsewhere => "signed_out_elsewhere",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::EndedByAdmin => "ended_by_admin",
            Self::UserDisabled => "user_disabled",
            Self::UserDeleted => "user_deleted",
            Self::RefreshReuse => "refresh_reuse",
            Self::Expired => "expired",
            Self::SessionLimit => "session_limit",
            Self::BrowserSessionEnded => "browser_session_ended",
            Self::CodeReplayed => "code_replayed",
            Self::ConsentRevoked => "consent_revoked",
            Self::TokenRevoked => "token_revoked",
            Self::ClientDeleted => "client_deleted",
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// UUID v7: time-ordered, the order of the trail and its cursor.
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub kind: EventType,
    /// The account the event concerns, when there is one.
    pub user_id: Option<UserId>,
    pub actor: Actor,
    pub session_id: Option<SessionId>,
    /// The client's IP, for events caused by a request.
    pub ip: Option<String>,
    /// A JSON object with the event's particulars; never a secret.
    pub details: Value,
}

impl AuditEvent {
    /// An event of `kind` by `actor`, now; fill in the rest with the
    /// builder methods.
    pub fn new(kind: EventType, actor: Actor, at: OffsetDateTime) -> Self {
        Self {
            id: Uuid::now_v7(),
            at,
            kind,
            user_id: None,
            actor,
            session_id: None,
            ip: None,
            details: Value::Object(serde_json::Map::new()),
        }
    }

    #[must_use]
    pub fn user(mut self, id: UserId) -> Self {
        self.user_id = Some(id);
        self
    }

    #[must_use]
    pub fn session(mut self, id: SessionId) -> Self {
        self.session_id = Some(id);
        self
    }

    #[must_use]
    pub fn ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip.map(|ip| ip.to_string());
        self
    }

    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

/// What to read from the trail: newest first, optionally one user's or one
/// type's, strictly older than `before`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditQuery {
    pub user: Option<UserId>,
    pub kind: Option<EventType>,
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// One page of the trail and the cursor of the next, if any.
#[derive(Debug)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}
