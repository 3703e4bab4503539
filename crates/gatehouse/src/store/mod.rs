//! The storage seam: narrow traits for what the domain needs, each with its
//! contract, and the backends that implement them. The backend is chosen once,
//! at start-up, from the configuration.

pub mod cache;
pub mod health;
pub mod memory;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::config::{Config, DatabaseUrl, SecretUrl};
use crate::model::amr::Amr;
use crate::model::audit::{AuditEvent, AuditQuery};
use crate::model::mail::{ClaimedMail, OutboxMail, OutboxStats, TokenPurpose};
use crate::model::oidc::{ClientType, GrantType, IdTokenAlg};
use crate::model::types::{
    ClientId, CredentialId, Email, PasskeyId, ResourceServerId, RoleName, SecretHash, SessionId,
    UserId,
};
use crate::revocation::Revocations;

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    pub email: String,
    /// PHC string of the password hash.
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub disabled: bool,
    /// The user proved they read mail at `email` (a verification link, or
    /// an administrator said so).
    pub email_verified: bool,
    /// Sorted role names.
    pub roles: Vec<String>,
}

/// An account to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub roles: Vec<RoleName>,
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("the email address is taken")]
    EmailTaken,
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Why roles could not be assigned.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A change to users or roles that can take `gatehouse:admin` from
/// someone, as [`UserStore::change_keeping_an_admin`] applies it; each does
/// what the `UserStore` method of its name does.
#[derive(Debug, Clone, Copy)]
pub enum AdminChange<'a> {
    SetRoles(UserId, &'a [RoleName]),
    /// `set_disabled(id, true)`.
    Disable(UserId),
    DeleteUser(UserId),
    PutRole(&'a RoleName, &'a [String]),
    DeleteRole(&'a RoleName),
}

/// Why a change to users or roles was not made.
#[derive(Debug, thiserror::Error)]
pub enum AdminChangeError {
    /// It would have left no enabled user holding `gatehouse:admin`.
    #[error("the change would leave no enabled user holding gatehouse:admin")]
    LastAdmin,
    /// A role to assign does not exist (role assignments only).
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<RolesError> for AdminChangeError {
    fn from(e: RolesError) -> Self {
        match e {
            RolesError::UnknownRole(r) => Self::UnknownRole(r),
            RolesError::Store(e) => Self::Store(e),
        }
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub secret_hash: SecretHash,
    pub created_at: OffsetDateTime,
    /// The last recorded use; written at most every `touch_interval`.
    pub last_seen_at: OffsetDateTime,
    /// The absolute expiry.
    pub expires_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// How the user proved who they are when it started.
    pub amr: Amr,
    /// Set on a client session: the session an authorization code started
    /// for an OpenID client, inside the user's browser session.
    pub link: Option<SessionLink>,
}

/// What ties a client session to its client and its browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLink {
    pub client_id: ClientId,
    /// The browser session the user signed in with; ending it ends this.
    pub parent_id: SessionId,
    /// The granted scopes, space-separated.
    pub scopes: String,
}

/// Users, roles and permissions.
///
/// Contract: emails are looked up in their normalised form; "not found" is
/// `Ok(None)` (or `Ok(false)`), never an error; every `Err` is a store
/// failure that the HTTP layer answers with 503.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates an account with its roles, atomically: either all of it
    /// exists afterwards or none. Uniqueness of the email is enforced by the
    /// store (no check-then-insert race).
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, CreateUserError>;

    async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRecord>>;

    async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<UserRecord>>;

    /// Replaces the password hash; `false` when the user does not exist.
    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> anyhow::Result<bool>;

    /// The user's effective permissions (the union over their roles),
    /// sorted and without duplicates, in one round trip.
    async fn permissions_of(&self, id: UserId) -> anyhow::Result<Vec<String>>;

    /// The user and their effective permissions as [`Self::permissions_of`]
    /// gives them; the SQL stores read both in one round trip.
    async fn user_with_permissions(
        &self,
        id: UserId,
    ) -> anyhow::Result<Option<(UserRecord, Vec<String>)>> {
        let Some(user) = self.user_by_id(id).await? else {
            return Ok(None);
        };
        let permissions = self.permissions_of(id).await?;
        Ok(Some((user, permissions)))
    }

    /// Creates the role or replaces its permissions, atomically.
    async fn put_role(&self, name: &RoleName, permissions: &[String]) -> anyhow::Result<()>;

    /// Up to `limit` users with ids after `after`, in id (creation) order.
    async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> anyhow::Result<Vec<UserRecord>>;

    /// Sets the disabled flag; `false` when the user does not exist.
    async fn set_disabled(&self, id: UserId, disabled: bool) -> anyhow::Result<bool>;

    /// Deletes the user with their role assignments (and, where sessions
    /// share the database, their sessions); `false` when there was none.
    async fn delete_user(&self, id: UserId) -> anyhow::Result<bool>;

    /// Replaces the user's roles, atomically; `Ok(false)` when the user does
    /// not exist, an error naming the first unknown role.
    async fn set_roles(&self, id: UserId, roles: &[RoleName]) -> Result<bool, RolesError>;

    /// Every role with its sorted permissions, by name.
    async fn roles(&self) -> anyhow::Result<Vec<(String, Vec<String>)>>;

    /// Deletes a role (and its assignments); `false` when there was none.
    async fn delete_role(&self, name: &RoleName) -> anyhow::Result<bool>;

    /// Makes `change` only if, afterwards, at least one enabled user still
    /// holds the permission `gatehouse:admin` (through a role); otherwise
    /// changes nothing and answers [`AdminChangeError::LastAdmin`]. `false`
    /// when the user or role does not exist (never for `PutRole`).
    ///
    /// The change and the check are one transaction, serialised with every
    /// other call of this method on the same database, from any process or
    /// node: of two changes that would each leave an administrator but
    /// together none (two administrators demoting each other at once), the
    /// second is refused. The plain methods above are not held to this.
    async fn change_keeping_an_admin(
        &self,
        change: AdminChange<'_>,
    ) -> Result<bool, AdminChangeError>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// A stored refresh token (only its hash is known to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub session_id: SessionId,
    pub created_at: OffsetDateTime,
    /// When it was exchanged for its successor; `None` while unspent.
    pub spent_at: Option<OffsetDateTime>,
    /// The successor's secret, sealed under a key derived from this token.
    pub successor_sealed: Option<Vec<u8>>,
}

/// A refresh token as a grant reads it ([`SessionStore::refresh_with_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRead {
    pub refresh: RefreshRecord,
    pub session: SessionRecord,
    /// The session's user and their effective permissions (as
    /// [`UserStore::user_with_permissions`] gives them), where this store
    /// holds users; `None` where it does not (Redis): the caller reads them
    /// from the user store.
    pub user: Option<(UserRecord, Vec<String>)>,
}

/// One entry of the revocation log: a session whose tokens are refused
/// until `until`, numbered `seq` in the log's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRevocation {
    pub session_id: SessionId,
    pub until: OffsetDateTime,
    pub seq: u64,
}

/// A read of the revocation log (what `GET /v1/revocations` serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationLog {
    /// Names the numbering; it changes when the numbering starts over (a
    /// Redis that lost its data), and then old cursors mean nothing.
    pub epoch: String,
    /// The highest number assigned so far.
    pub last_seq: u64,
    /// Every entry in force numbered after the reader's cursor and up to
    /// `upto` is in `entries`: `upto` is `last_seq` unless the read stopped
    /// at its limit.
    pub upto: u64,
    /// In ascending `seq`.
    pub entries: Vec<LoggedRevocation>,
}

/// Builds a [`RevocationLog`] from SQL rows `(session id, until, seq)` read
/// with `seq <= last_seq` and `LIMIT limit`, in ascending `seq`.
pub(crate) fn log_from_rows<I, T>(
    epoch: String,
    last_seq: i64,
    limit: u32,
    rows: Vec<(I, T, i64)>,
    id: impl Fn(I) -> anyhow::Result<SessionId>,
    until: impl Fn(T) -> OffsetDateTime,
) -> anyhow::Result<RevocationLog> {
    let last_seq = u64::try_from(last_seq).unwrap_or(0);
    let full = rows.len() >= limit as usize;
    let entries = rows
        .into_iter()
        .map(|(i, t, seq)| {
            Ok(LoggedRevocation {
                session_id: id(i)?,
                until: until(t),
                seq: u64::try_from(seq).unwrap_or(0),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A full page may have stopped short of `last_seq`.
    let upto = match entries.last() {
        Some(last) if full => last.seq,
        _ => last_seq,
    };
    Ok(RevocationLog {
        epoch,
        last_seq,
        upto,
        entries,
    })
}

/// Server-side sessions, their refresh tokens, and the record of ended
/// sessions whose access tokens must be refused.
///
/// Contract: a session ends by being deleted, and every method that ends
/// sessions records them as revoked until `revoke_until` in the same atomic
/// step, so no crash can end a session yet leave its tokens accepted. The
/// store does not judge expiry (the domain does, with its clock) but
/// `delete_expired` sweeps what the domain calls expired. Lookups are by the
/// SHA-256 of secrets only. Deleting a session deletes its refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn insert_session(&self, session: &SessionRecord) -> anyhow::Result<()>;

    /// Answers when this store is reachable. Stores that share a database
    /// with the `UserStore` answer through its `ping`.
    async fn reachable(&self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>>;

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>>;

    /// Tells every other node that users or roles changed, so that they
    /// retire the principals they cached at once (Redis: a message on the
    /// revocation channel). A no-op where no other node listens.
    async fn announce_principals_changed(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Records a use; never moves `last_seen_at` backwards; a no-op for an
    /// unknown id.
    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// How many stored sessions have an absolute expiry after `now` (of
    /// every user): what the live-sessions gauge shows. Sessions idle past
    /// their timeout count until the sweeper deletes them.
    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64>;

    /// Every stored session of the user, oldest first.
    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>>;

    /// Ends one session if, and only if, it belongs to `user_id`; `false`
    /// when there was no such session of that user.
    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool>;

    /// Records a client credential as revoked until `revoke_until`, as an
    /// ended session is (same records, same log, same announcement), so
    /// the tokens obtained with it are refused wherever ended sessions'
    /// are. Keeps a later record.
    async fn revoke_credential(
        &self,
        id: CredentialId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Ends every session of the user except `keep`; returns the ended ids.
    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>>;

    /// Deletes sessions past their absolute expiry or idle for `idle`,
    /// revocation records whose `revoke_until` has passed, and (where the
    /// store also counts login attempts) closed attempt windows. Returns the
    /// number of sessions deleted. A revocation recorded twice keeps the
    /// later `revoke_until`.
    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64>;

    /// Revocation records still in force at `now`.
    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>>;

    /// The revocation log after `after` (from the start when `None`): the
    /// records in force at `now` (`until > now`) whose number is greater,
    /// in ascending number, at most `limit` of them.
    ///
    /// Contract: every revocation recorded gets the next number of the
    /// log's sequence in the same atomic step that records it, and numbers
    /// become visible in order, so a reader that passes back the `upto` it
    /// was given never misses a record (re-revoking a session renumbers its
    /// record). A record numbered `<= upto` that the reader has not been
    /// given is one no longer in force.
    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog>;

    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>>;

    /// A refresh token and its session, when both exist: what a refresh
    /// grant reads. The SQL stores, which hold users too, read the
    /// session's user and their effective permissions with them, all in one
    /// round trip; the others leave `user` to the user store.
    async fn refresh_with_session(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRead>> {
        let Some(refresh) = self.refresh_by_hash(hash).await? else {
            return Ok(None);
        };
        Ok(self
            .session_by_id(refresh.session_id)
            .await?
            .map(|session| RefreshRead {
                refresh,
                session,
                user: None,
            }))
    }

    /// Spends `old` and stores its successor (created at `spent_at`),
    /// atomically, only if `old` is still unspent and belongs to
    /// `session_id` (compare-and-swap): of many concurrent calls for one
    /// token, exactly one gets `true`.
    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool>;
}

/// A user's TOTP credential as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The raw key, or its AES-256-GCM seal when `encrypted`.
    pub secret: Vec<u8>,
    pub encrypted: bool,
    pub created_at: OffsetDateTime,
    /// `None` while pending: enrolled but never confirmed by a code.
    pub confirmed_at: Option<OffsetDateTime>,
    /// The highest time step whose code was accepted.
    pub last_step: i64,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("encrypted", &self.encrypted)
            .field("created_at", &self.created_at)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

/// A login waiting for its second step (only the hash of its `mfa_token`
/// is known to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub user_id: UserId,
    /// What the first step proved.
    pub amr: Amr,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Wrong codes presented with it so far.
    pub failures: u32,
}

/// What [`MfaStore::finish_totp_login`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpLogin {
    /// The step is spent and so is the pending login.
    Done,
    /// The step was not later than the last accepted one (or there is no
    /// confirmed credential): nothing changed.
    StepUsed,
    /// The pending login was spent or deleted meanwhile: nothing changed.
    LoginGone,
}

/// What second factors a user has, read in one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FactorSummary {
    /// A confirmed TOTP credential.
    pub totp: bool,
    pub passkeys: u32,
    pub recovery_codes_left: u32,
}

/// A passkey as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    pub id: PasskeyId,
    pub user_id: UserId,
    pub credential_id: Vec<u8>,
    pub name: String,
    /// The credential as webauthn-rs keeps it (JSON).
    pub passkey: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// What a WebAuthn ceremony was begun for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyKind {
    Register,
    SecondFactor,
    Passwordless,
}

impl CeremonyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SecondFactor => "second_factor",
            Self::Passwordless => "passwordless",
        }
    }

    /// The kind stored as `s`.
    ///
    /// # Errors
    /// A name no kind has.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "register" => Self::Register,
            "second_factor" => Self::SecondFactor,
            "passwordless" => Self::Passwordless,
            other => anyhow::bail!("a stored ceremony's kind is unknown: {other:?}"),
        })
    }
}

/// A WebAuthn ceremony begun and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    pub id: uuid::Uuid,
    pub kind: CeremonyKind,
    /// The user (registration and second factor; none for passwordless).
    pub user_id: Option<UserId>,
    /// The login a second-factor ceremony belongs to.
    pub mfa_token_hash: Option<SecretHash>,
    /// webauthn-rs's state, JSON.
    pub state: String,
    pub expires_at: OffsetDateTime,
}

/// Second factors and the logins waiting for one.
///
/// Contract: every "use once" is decided by the store in one conditional
/// statement (no read-then-write), so that of concurrent uses of one TOTP
/// step, one recovery code or one `mfa_token`, on any number of nodes,
/// exactly one succeeds. Lookups are by the SHA-256 of secrets only; the
/// store does not judge expiry except in `delete_expired_mfa`. "Not found"
/// is `Ok(None)` or `Ok(false)`; every `Err` is a store failure.
#[async_trait]
pub trait MfaStore: Send + Sync + 'static {
    /// The user's confirmed factors and unused recovery codes.
    async fn factors(&self, user: UserId) -> anyhow::Result<FactorSummary>;

    /// The user's TOTP credential, pending or confirmed.
    async fn totp(&self, user: UserId) -> anyhow::Result<Option<TotpRecord>>;

    /// Stores a pending TOTP credential, replacing a pending one; `false`
    /// (and nothing changed) when the user has a confirmed one.
    async fn put_pending_totp(&self, user: UserId, record: &TotpRecord) -> anyhow::Result<bool>;

    /// Confirms the pending credential whose stored secret is `secret`, with
    /// `step` as its last accepted step; `false` when there is no such
    /// pending credential (confirmed meanwhile, or replaced).
    async fn confirm_totp(
        &self,
        user: UserId,
        secret: &[u8],
        step: i64,
        at: OffsetDateTime,
    ) -> anyhow::Result<bool>;

    /// Accepts `step` of the confirmed credential: moves `last_step` to it
    /// only if it is later than the stored one; `false` otherwise (a code
    /// used before, or no confirmed credential).
    async fn spend_totp_step(&self, user: UserId, step: i64) -> anyhow::Result<bool>;

    /// Deletes the user's TOTP credential and, in the same transaction,
    /// their recovery codes when no other factor is left; `false` when there
    /// was none.
    async fn delete_totp(&self, user: UserId) -> anyhow::Result<bool>;

    /// Replaces the user's recovery codes with `hashes`, atomically.
    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[SecretHash],
        at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Uses one recovery code (deletes it); `false` when the user has no
    /// such unused code.
    async fn spend_recovery_code(&self, user: UserId, hash: &SecretHash) -> anyhow::Result<bool>;

    /// Deletes every factor and recovery code of the user, and their
    /// pending logins, atomically; `false` when there was nothing.
    async fn reset_mfa(&self, user: UserId) -> anyhow::Result<bool>;

    async fn insert_pending_login(
        &self,
        hash: &SecretHash,
        login: &PendingLogin,
    ) -> anyhow::Result<()>;

    async fn pending_login(&self, hash: &SecretHash) -> anyhow::Result<Option<PendingLogin>>;

    /// Counts one wrong code against the pending login, atomically; the
    /// count afterwards, `None` when there is no such pending login.
    async fn pending_login_failed(&self, hash: &SecretHash) -> anyhow::Result<Option<u32>>;

    /// The user's passkeys, oldest first.
    async fn passkeys_of(&self, user: UserId) -> anyhow::Result<Vec<PasskeyRecord>>;

    /// The passkey with this credential id, whoever's it is.
    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> anyhow::Result<Option<PasskeyRecord>>;

    /// Stores a new passkey; `false` (nothing stored) when its credential
    /// id is registered already, to anyone.
    async fn insert_passkey(&self, passkey: &PasskeyRecord) -> anyhow::Result<bool>;

    /// Records a use of a passkey: its new credential JSON, counter and
    /// backup state, only if its stored counter is still `seen_count`
    /// (compare-and-swap: of two uses racing with one counter, one wins).
    async fn record_passkey_use(
        &self,
        passkey: &PasskeyRecord,
        seen_count: u32,
    ) -> anyhow::Result<bool>;

    /// Deletes one of the user's passkeys and, in the same transaction,
    /// their recovery codes when no factor is left; `false` when the user
    /// has no such passkey.
    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> anyhow::Result<bool>;

    async fn insert_ceremony(&self, ceremony: &Ceremony) -> anyhow::Result<()>;

    /// Spends a ceremony (deletes it and returns it); `None` when it was
    /// spent already or never existed: of concurrent calls, one gets it.
    async fn take_ceremony(&self, id: uuid::Uuid) -> anyhow::Result<Option<Ceremony>>;

    /// Completes a pending login with a TOTP code of `step`, in one
    /// transaction: the credential's step moves forward (as
    /// `spend_totp_step`) and the pending login is spent (as
    /// `take_pending_login`), both or neither.
    async fn finish_totp_login(
        &self,
        hash: &SecretHash,
        user: UserId,
        step: i64,
    ) -> anyhow::Result<TotpLogin>;

    /// Spends the pending login (deletes it); `false` when it was spent or
    /// deleted already: of concurrent calls, one gets `true`.
    async fn take_pending_login(&self, hash: &SecretHash) -> anyhow::Result<bool>;

    /// The users whose TOTP key is stored unsealed, with it (to seal them
    /// once a `key_encryption_key` is configured).
    async fn unsealed_totp(&self) -> anyhow::Result<Vec<(UserId, Vec<u8>)>>;

    /// Replaces an unsealed TOTP key `plain` by its seal, only if it is
    /// still stored as it was read; `false` otherwise.
    async fn seal_totp(&self, user: UserId, plain: &[u8], sealed: &[u8]) -> anyhow::Result<bool>;

    /// Deletes pending logins and ceremonies whose `expires_at` is not
    /// after `now`; returns how many pending logins.
    async fn delete_expired_mfa(&self, now: OffsetDateTime) -> anyhow::Result<u64>;
}

/// A stored resource server (only the hash of its key is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceServerRecord {
    pub id: ResourceServerId,
    pub name: String,
    pub key_hash: SecretHash,
    pub created_at: OffsetDateTime,
}

/// Why a resource server could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateResourceServerError {
    #[error("the name is taken")]
    NameTaken,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The audit trail.
///
/// Contract: `append` stores every event of the slice or none (one
/// transaction); ids are unique (UUID v7, time-ordered). `audit_events`
/// returns at most `limit` events, newest first (by id, descending), only
/// those of `user` and `kind` when given, and only ids strictly below
/// `before` when given: a page never repeats or skips an event however many
/// are appended meanwhile. Every `Err` is a store failure.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Stores the events, and the notices they cause in the outbox, in one
    /// transaction.
    async fn append(&self, events: &[AuditEvent], mails: &[OutboxMail]) -> anyhow::Result<()>;

    async fn audit_events(&self, query: &AuditQuery) -> anyhow::Result<Vec<AuditEvent>>;

    /// Deletes the events recorded before `cutoff`; returns how many.
    async fn delete_audit_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64>;
}

/// A mailed link's token as stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTokenRecord {
    pub hash: SecretHash,
    pub purpose: TokenPurpose,
    pub user_id: UserId,
    /// The SHA-256 of the user's email and password hash at issue.
    pub binding: SecretHash,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Whether a sign-in came from a device known for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSeen {
    /// The user's first recorded device.
    First,
    Known,
    /// Not seen before, while others were.
    New,
}

/// Mail: the tokens of mailed links, the outbox, verified addresses and
/// the devices users signed in from. Always the SQL database: a mail is
/// written in the transaction that causes it, and every node's sender
/// claims from the one outbox.
///
/// Contract: a token is spent at most once (a conditional DELETE), and
/// only together with what it does; `claim_mails` gives each due mail to
/// one caller until its lease passes (concurrent callers on any node get
/// disjoint mails); a sent mail is deleted. The store does not judge
/// expiry or bindings (the domain does), except that a token past
/// `expires_at` at the given `now` is never spent.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Stores a token and the mail that carries its link, atomically.
    async fn issue_mail_token(
        &self,
        token: &MailTokenRecord,
        mail: &OutboxMail,
    ) -> anyhow::Result<()>;

    async fn mail_token(&self, hash: &SecretHash) -> anyhow::Result<Option<MailTokenRecord>>;

    /// When the user's newest token for `purpose` was issued.
    async fn last_mail_token_at(
        &self,
        user: UserId,
        purpose: TokenPurpose,
    ) -> anyhow::Result<Option<OffsetDateTime>>;

    /// Spends a password-reset token and sets the new password hash, in one
    /// transaction: only while the token is unspent and unexpired at `now`
    /// and the user's password hash is still `old_hash`. The user's other
    /// reset tokens go too. Whether it was done.
    async fn reset_password(
        &self,
        hash: &SecretHash,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool>;

    /// Spends a verification token and marks the user's address verified,
    /// in one transaction: only while the token is unspent and unexpired at
    /// `now` and the user's email is still `email`. Whether it was done.
    async fn verify_email(
        &self,
        hash: &SecretHash,
        user: UserId,
        email: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool>;

    /// Sets whether the user's address is verified; false for an unknown
    /// user.
    async fn set_email_verified(&self, user: UserId, verified: bool) -> anyhow::Result<bool>;

    /// Writes mails to the outbox, atomically.
    async fn enqueue_mails(&self, mails: &[OutboxMail]) -> anyhow::Result<()>;

    /// Claims up to `limit` mails due at `now` (not given up on, not held
    /// by another lease), counting an attempt on each and holding them
    /// until `lease_until`.
    async fn claim_mails(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<Vec<ClaimedMail>>;

    /// Deletes a sent mail.
    async fn mail_sent(&self, id: uuid::Uuid) -> anyhow::Result<()>;

    /// Records a failed attempt: the mail is due again at `retry_at`, or,
    /// with `None`, given up on at `now` (its bodies erased).
    async fn mail_failed(
        &self,
        id: uuid::Uuid,
        error: &str,
        retry_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> anyhow::Result<()>;

    async fn outbox_stats(&self) -> anyhow::Result<OutboxStats>;

    /// Deletes tokens expired at `now`, mails given up on before
    /// `failed_before`, and devices last seen before `devices_before`;
    /// returns how many rows went.
    async fn sweep_mail(
        &self,
        now: OffsetDateTime,
        failed_before: OffsetDateTime,
        devices_before: OffsetDateTime,
    ) -> anyhow::Result<u64>;

    /// Records a sign-in from the device `fingerprint` at `now`.
    async fn remember_device(
        &self,
        user: UserId,
        fingerprint: &SecretHash,
        now: OffsetDateTime,
    ) -> anyhow::Result<DeviceSeen>;
}

/// Resource servers: the services that follow the revocation feed.
///
/// Contract: names are unique (enforced by the store, no check-then-insert);
/// lookups are by the SHA-256 of a key only; "not found" is `Ok(None)` or
/// `Ok(false)`; every `Err` is a store failure.
#[async_trait]
pub trait ResourceServerStore: Send + Sync + 'static {
    async fn create_resource_server(
        &self,
        rs: &ResourceServerRecord,
    ) -> Result<(), CreateResourceServerError>;

    /// Every resource server, by name.
    async fn resource_servers(&self) -> anyhow::Result<Vec<ResourceServerRecord>>;

    async fn resource_server_by_key(
        &self,
        hash: &SecretHash,
    ) -> anyhow::Result<Option<ResourceServerRecord>>;

    /// `false` when there was none.
    async fn delete_resource_server(&self, id: ResourceServerId) -> anyhow::Result<bool>;
}

/// A stored OpenID client (only the SHA-256 of a confidential client's
/// secret is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub name: String,
    pub kind: ClientType,
    /// `Some` exactly for a confidential client.
    pub secret_hash: Option<SecretHash>,
    /// In the order given, without duplicates.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub first_party: bool,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    /// Role names, sorted, without duplicates.
    pub roles: Vec<String>,
    pub id_token_alg: IdTokenAlg,
    pub created_at: OffsetDateTime,
    /// How many times the client was changed: `update_client` writes only
    /// over the revision it was given.
    pub revision: u64,
}

impl ClientRecord {
    /// The credential of a confidential client's current secret.
    pub fn credential(&self) -> Option<crate::model::types::CredentialId> {
        self.secret_hash
            .as_ref()
            .map(crate::model::types::CredentialId::of)
    }

    /// Whether a `client_credentials` token obtained with `credential`
    /// still speaks for this client: the secret it was obtained with is
    /// the current one, and the client may still use the grant.
    pub fn honours(&self, credential: crate::model::types::CredentialId) -> bool {
        self.credential() == Some(credential)
            && self
                .grant_types
                .contains(&crate::model::oidc::GrantType::ClientCredentials)
    }
}

/// What a deleted client was, as it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedClient {
    pub name: String,
    pub secret_hash: Option<SecretHash>,
}

/// Why a client could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ClientWriteError {
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What [`ClientStore::update_client`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientUpdate {
    Updated,
    /// The client changed since it was read (its revision moved): nothing
    /// was written.
    Stale,
    /// There is no such client.
    Missing,
}

/// OpenID clients: the registry the authorization flows will read.
///
/// Contract: a client's roles are assigned in the transaction that writes
/// its row, and only roles that exist (an unknown one is an error naming
/// it, and nothing is written); deleting a role removes it from every
/// client. `update_client` replaces everything but the id, type and
/// creation instant (a new secret hash rotates the secret), only while the stored revision is the
/// record's (compare-and-swap), and moves the revision on. "Not found" is
/// `Ok(None)` or [`ClientUpdate::Missing`]; every other `Err` is a store
/// failure.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    async fn create_client(&self, client: &ClientRecord) -> Result<(), ClientWriteError>;

    /// Every client, oldest first.
    async fn clients(&self) -> anyhow::Result<Vec<ClientRecord>>;

    async fn client(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>>;

    async fn update_client(&self, client: &ClientRecord) -> Result<ClientUpdate, ClientWriteError>;

    /// Deletes the client; what it was, `None` when there was none.
    async fn delete_client(&self, id: ClientId) -> anyhow::Result<Option<DeletedClient>>;

    /// The permissions of the client's roles, sorted, without duplicates
    /// (none for an unknown client).
    async fn client_permissions(&self, id: ClientId) -> anyhow::Result<Vec<String>>;
}

/// What a signing key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// Access tokens (`typ: at+jwt`): verified by gatehouse and by
    /// resource servers.
    Access,
    /// OpenID Connect ID tokens, for relying parties; never accepted as
    /// an access token.
    IdToken,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::IdToken => "id_token",
        }
    }

    /// The purpose stored as `s`.
    ///
    /// # Errors
    /// A name no purpose has (never read as a default: a key of unknown
    /// purpose must not sign or verify anything).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "access" => Self::Access,
            "id_token" => Self::IdToken,
            other => anyhow::bail!("a stored signing key's purpose is unknown: {other:?}"),
        })
    }
}

/// An authorization code as stored (only the SHA-256 of the code itself
/// is known to the store): what the authorization request asked and what
/// the browser session proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub client_id: ClientId,
    pub user_id: UserId,
    /// The browser session the user approved the request in.
    pub parent_id: SessionId,
    pub redirect_uri: String,
    /// The granted scopes, space-separated.
    pub scopes: String,
    pub nonce: Option<String>,
    /// The PKCE S256 challenge, when the request sent one.
    pub code_challenge: Option<String>,
    /// When the user authenticated (the browser session's start).
    pub auth_time: OffsetDateTime,
    pub amr: Amr,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What [`GrantStore::spend_code`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSpend {
    /// Spent now, for the session id given.
    Spent(AuthorizationCode),
    /// Spent before: the code, and the client session its exchange started.
    Replayed {
        code: AuthorizationCode,
        session_id: Option<SessionId>,
    },
    /// No such code, or expired unspent.
    Unknown,
}

/// A user's consent to a client: the scopes allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub client_id: ClientId,
    /// Space-separated.
    pub scopes: String,
    pub granted_at: OffsetDateTime,
}

/// The OpenID Provider's flow state: authorization codes and consents.
///
/// Contract: `spend_code` is a compare-and-swap: of concurrent calls for one
/// code, at most one gets `Spent`, and only while `now < expires_at`; the
/// others see `Replayed` with the session id the winner recorded (recorded
/// in the same atomic step), and mark the code replayed. Spent codes stay
/// readable until swept.
/// `put_consent` replaces a user's consent to the client.
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    async fn insert_code(&self, hash: &SecretHash, code: &AuthorizationCode) -> anyhow::Result<()>;

    async fn spend_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
        session_id: SessionId,
    ) -> anyhow::Result<CodeSpend>;

    /// Whether the code was presented again after it was spent (every
    /// `Replayed` answer marks it, in the same statement that reads it).
    async fn code_replayed(&self, hash: &SecretHash) -> anyhow::Result<bool>;

    /// Deletes codes that expired before `before`, and client grants whose
    /// session expired before it; returns how many rows.
    async fn delete_codes_expired_before(&self, before: OffsetDateTime) -> anyhow::Result<u64>;

    /// Records that `session` is a client session of `client` for `user`,
    /// until `expires_at` (its absolute expiry).
    async fn record_grant(
        &self,
        session: SessionId,
        client: ClientId,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// The client sessions recorded for `client`, with their users, and
    /// forgets them.
    async fn take_grants_of(&self, client: ClientId) -> anyhow::Result<Vec<(UserId, SessionId)>>;

    async fn consent(&self, user: UserId, client: ClientId) -> anyhow::Result<Option<Consent>>;

    async fn put_consent(
        &self,
        user: UserId,
        client: ClientId,
        scopes: &str,
        at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// The user's consents, oldest first.
    async fn consents_of(&self, user: UserId) -> anyhow::Result<Vec<Consent>>;

    /// `false` when there was none.
    async fn delete_consent(&self, user: UserId, client: ClientId) -> anyhow::Result<bool>;
}

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub purpose: KeyPurpose,
    pub alg: String,
    /// PKCS#8 DER, or its AES-256-GCM seal when `encrypted`.
    pub private_key: Vec<u8>,
    pub encrypted: bool,
    pub public_jwk: String,
    pub created_at: OffsetDateTime,
    pub retire_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("alg", &self.alg)
            .field("encrypted", &self.encrypted)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// Signing keys, each of a purpose ([`KeyPurpose`]).
///
/// Contract: a key with no `retire_at` is current. At most one access key
/// is current, whatever its algorithm; at most one ID-token key is current
/// per algorithm. `add_key` makes the new key current and schedules the
/// current keys of its purpose to retire at `retire_others_at` (for an
/// access key every current access key, of any algorithm; for an ID-token
/// key only the current ID-token key of its algorithm), atomically, also
/// against a concurrent `add_key` on another node; keys of the other
/// purpose are never touched. `set_private_key` on an unknown kid does
/// nothing. A stored purpose the code does not know is an error, never a
/// default.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every stored key, oldest first.
    async fn signing_keys(&self) -> anyhow::Result<Vec<StoredKey>>;

    async fn add_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<()>;

    /// Like `add_key`, but only when no current key of the new key's
    /// purpose and algorithm exists, decided atomically with the insert:
    /// of several nodes starting on an empty store at once, one key wins
    /// and the others get `false` (and use it).
    async fn add_first_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<bool>;

    /// Replaces a key's stored private part (to encrypt it at rest).
    async fn set_private_key(
        &self,
        kid: &str,
        private_key: &[u8],
        encrypted: bool,
    ) -> anyhow::Result<()>;
}

/// One counted password attempt: how many the key's window holds now
/// (this one included) and when the window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub count: u32,
    pub window_left: Duration,
}

/// Counters of attempts in fixed windows, by key: password attempts per
/// (account, client IP), per client network and per account, and
/// registration attempts per client network (the domain builds the keys).
///
/// Contract: a fixed window opens at the first attempt of a key (or the
/// first after the previous window closed) and lasts `window`; `hit` counts
/// one attempt atomically and returns the count including it, so that of
/// many concurrent attempts on many nodes each sees a distinct count. A
/// success calls `reset` (or `forgive`, where only failures should count).
/// A backend that cannot answer returns `Err`, and the caller refuses the
/// attempt (fail closed).
#[async_trait]
pub trait FailureCounter: Send + Sync + 'static {
    /// Counts one attempt in the key's window.
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        now: OffsetDateTime,
    ) -> anyhow::Result<Attempt>;

    /// Forgets the key's attempts (after a successful login).
    async fn reset(&self, key: &str) -> anyhow::Result<()>;

    /// Takes one attempt back from the key's window, atomically, when that
    /// window is open at `now` and holds one (an attempt counted before it
    /// turned out not to be a failure); otherwise does nothing. The window
    /// keeps its close; one left without attempts is forgotten, as by
    /// `reset`. An attempt counted just before a window closed may be taken
    /// from the next one: an error of one, in the client's favour.
    async fn forgive(&self, key: &str, now: OffsetDateTime) -> anyhow::Result<()>;
}

/// The stores the domain runs on, chosen from the configuration, with what
/// the deployment shape decides beside them: the node's revocations (with
/// Redis, fed and proven by the revocation feed), the caches, and where the
/// feed comes from. The domain has one code path whatever is chosen here.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    /// With Redis, a [`cache::CachingSessionStore`] in front of it.
    pub sessions: Arc<dyn SessionStore>,
    pub keys: Arc<dyn KeyStore>,
    pub failures: Arc<dyn FailureCounter>,
    pub resource_servers: Arc<dyn ResourceServerStore>,
    /// Always the SQL database: the OpenID client registry.
    pub clients: Arc<dyn ClientStore>,
    /// Always the SQL database: authorization codes and consents.
    pub grants: Arc<dyn GrantStore>,
    /// Always the SQL database: factors are durable, and pending logins are
    /// shared by every node through it.
    pub mfa: Arc<dyn MfaStore>,
    /// Always the SQL database, also with Redis: the trail is kept durably.
    pub audit: Arc<dyn AuditStore>,
    /// Always the SQL database: mailed tokens and the outbox.
    pub mail: Arc<dyn MailStore>,
    /// The sessions this node knows ended (empty until the domain loads
    /// them), shared with the caches and the feed.
    pub revocations: Arc<Revocations>,
    /// How long the bearer path may answer from what it read of a session,
    /// its user and their permissions (zero: never).
    pub principal_cache_ttl: Duration,
    /// The session cache, when there is one (for its counters).
    pub session_cache: Option<Arc<cache::CachingSessionStore>>,
    /// Where the revocation feed comes from, when sessions are in Redis.
    pub feed: Option<FeedSource>,
    /// The SQL database, when it is PostgreSQL (for [`Stores::start_up`]).
    pub postgres: Option<Arc<postgres::PgStore>>,
}

impl Stores {
    /// Begins the node's start-up, until the returned value is dropped:
    /// PostgreSQL operations wait for a connection up to the pool's acquire
    /// timeout rather than failing fast ([`postgres::PgStore::start_up`]).
    /// `None` on SQLite, which has nothing to wait for.
    pub fn start_up(&self) -> Option<postgres::StartUp> {
        self.postgres.as_ref().map(|pg| pg.start_up())
    }
}

/// The Redis connection and channel the revocation feed follows.
#[derive(Debug, Clone)]
pub struct FeedSource {
    pub url: SecretUrl,
    pub channel: String,
}

/// Opens (creating and migrating where needed) the stores the configuration
/// names: the SQL database; with `redis_url`, sessions, refresh tokens,
/// revocations and attempt counters in Redis behind the session cache, with
/// the revocation feed; the principal cache where every ending of a session
/// reaches this node at once.
///
/// # Errors
/// When the database or Redis cannot be opened or migrated.
pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Stores> {
    let mut stores = open_sql(&config.database_url).await?;
    if let Some(url) = &config.redis_url {
        // Sessions, refresh tokens, revocations and attempt counters move to
        // Redis, shared by every node; users, roles and keys stay in SQL.
        let redis = Arc::new(
            redis::RedisStore::open(url.expose(), &config.redis_key_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("redis_url: {e:#}"))?,
        );
        let revocations = Arc::new(Revocations::fed(
            config.revocation_max_staleness,
            config.revocation_fail_mode,
            std::time::Instant::now(),
        ));
        let cached = Arc::new(cache::CachingSessionStore::new(
            redis.clone(),
            revocations.clone(),
            clock,
            config.session_cache_ttl,
            config.access_token_ttl,
            config.session_idle_timeout,
        ));
        stores.sessions = cached.clone();
        stores.session_cache = Some(cached);
        stores.failures = redis;
        stores.revocations = revocations;
        stores.feed = Some(FeedSource {
            url: url.clone(),
            channel: redis::revocation_channel(&config.redis_key_prefix),
        });
    }
    // Where every ending of a session reaches this node at once (through
    // Redis's feed, or because one server owns the SQLite file), the
    // bearer path may answer from its reads of the last second. Nodes that
    // share PostgreSQL alone learn of one another's endings only from the
    // store, so they read it on every request.
    if config.redis_url.is_some() || matches!(config.database_url, DatabaseUrl::Sqlite(_)) {
        stores.principal_cache_ttl = config.session_cache_ttl;
    }
    Ok(stores)
}

/// The SQL database's stores alone (the command line's, and the base of
/// every deployment).
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open_sql(database_url: &DatabaseUrl) -> anyhow::Result<Stores> {
    match database_url {
        DatabaseUrl::Sqlite(url) => {
            let db = Arc::new(sqlite::SqliteStore::open(url).await?);
            Ok(sql_stores(
                db,
                Arc::new(memory::MemoryFailureCounter::default()),
            ))
        }
        DatabaseUrl::Postgres(url) => {
            // Many nodes share this database, so the attempt counters live
            // in it too: a per-process counter would let each node grant its
            // own allowance of guesses.
            let db = Arc::new(postgres::PgStore::open(url.expose()).await?);
            Ok(Stores {
                postgres: Some(db.clone()),
                ..sql_stores(db.clone(), db)
            })
        }
    }
}

/// One SQL database as every store but (maybe) the attempt counters.
fn sql_stores<T>(db: Arc<T>, failures: Arc<dyn FailureCounter>) -> Stores
where
    T: UserStore
        + SessionStore
        + KeyStore
        + ResourceServerStore
        + ClientStore
        + GrantStore
        + AuditStore
        + MfaStore
        + MailStore,
{
    Stores {
        users: db.clone(),
        sessions: db.clone(),
        keys: db.clone(),
        failures,
        resource_servers: db.clone(),
        clients: db.clone(),
        grants: db.clone(),
        mfa: db.clone(),
        mail: db.clone(),
        audit: db,
        revocations: Arc::new(Revocations::local()),
        principal_cache_ttl: Duration::ZERO,
        session_cache: None,
        feed: None,
        postgres: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_purposes_round_trip_and_an_unknown_one_is_an_error() {
        for p in [KeyPurpose::Access, KeyPurpose::IdToken] {
            assert_eq!(KeyPurpose::parse(p.as_str()).expect("known"), p);
        }
        for unknown in ["", "Access", "id-token", "refresh"] {
            assert!(KeyPurpose::parse(unknown).is_err(), "{unknown:?}");
        }
    }
}
