//! The shared store of a multi-node deployment: users, roles, sessions,
//! refresh tokens, signing keys, revocations and password attempt counters in
//! one PostgreSQL database, via sqlx, with migrations applied at open. Here,
//! connecting and the pool's health; the statements, by aggregate, are in
//! `store/sql/`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection as _, PgConnection, PgExecutor, PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::health::Health;
use super::{
    AdminChange, AdminChangeError, CreateUserError, NewUser, RefreshRecord, RevocationLog,
    RolesError, SessionRecord, SessionStore, UserRecord, UserStore, log_from_rows,
};
use crate::clock::{from_millis, to_millis};
use crate::model::types::{Email, Permission, RoleName, SecretHash, SessionId, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The unique constraint on `users.email` (named in the migration).
const EMAIL_CONSTRAINT: &str = "users_email_key";

/// Most connections one node's pool holds.
const MAX_CONNECTIONS: u32 = 16;

/// Longest an operation waits for a connection from a pool that is not
/// busy: long enough for a new connection to a healthy server (a few ms),
/// short enough that nobody waits out the pool's acquire timeout on a
/// server that refuses or does not answer. A pool whose every connection
/// is at work is busy, not broken: its callers wait for the pool as before.
pub const ACQUIRE_WITHIN: Duration = Duration::from_millis(500);

/// Longest wait for a connection, at start-up and from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database shared by every node.
///
/// Every operation first asks the store's [`Health`]: while PostgreSQL is
/// known unreachable it fails at once, and a background probe reconnects.
/// It is found unreachable by an operation that cannot get a connection
/// within [`ACQUIRE_WITHIN`] from a pool that is not busy.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    health: Arc<Health>,
}

impl PgStore {
    /// Connects to `postgres://...` and applies the migrations (under
    /// sqlx's advisory lock, so nodes starting together migrate once).
    ///
    /// # Errors
    /// When the URL is malformed, the server does not answer or refuses the
    /// connection, or a migration fails. The messages never contain the
    /// URL's password.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let shown = redacted_url(url);
        let secrets = url_secrets(url);
        let scrubbed = |e: sqlx::Error| anyhow::anyhow!("{}", scrub(&e.to_string(), &secrets));
        let options = PgConnectOptions::from_str(url)
            .map_err(scrubbed)
            .with_context(|| format!("database_url: not a valid postgres:// URL: {shown}"))?;
        // One connection first, outside the pool: the pool retries until
        // its acquire timeout and then reports only "pool timed out", while
        // this says why at once (refused, unknown host, authentication).
        let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
            .and_then(|connected| connected.map_err(scrubbed))
            .with_context(|| format!("database_url: cannot open {shown}"))?;
        first
            .close()
            .await
            .map_err(scrubbed)
            .with_context(|| format!("database_url: cannot open {shown}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(scrubbed)
            .with_context(|| format!("database_url: cannot open {shown}"))?;
        MIGRATOR
            .run(&pool)
            .await
            .context("applying the PostgreSQL migrations")?;
        Ok(Self {
            pool,
            health: Health::new("postgresql"),
        })
    }

    /// When this node found PostgreSQL unreachable, while it is.
    pub fn down_since(&self) -> Option<OffsetDateTime> {
        self.health.down_since()
    }

    /// A connection for one operation.
    ///
    /// # Errors
    /// At once while PostgreSQL is known unreachable; when none comes
    /// within [`ACQUIRE_WITHIN`] from a pool that is not busy (which marks
    /// PostgreSQL unreachable).
    pub(super) async fn conn(&self) -> anyhow::Result<PoolConnection<Postgres>> {
        self.guarded(self.pool.acquire()).await
    }

    /// A transaction, under the same rules as [`PgStore::conn`].
    pub(super) async fn begin(&self) -> anyhow::Result<Transaction<'static, Postgres>> {
        self.guarded(self.pool.begin()).await
    }

    async fn guarded<T>(
        &self,
        get: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> anyhow::Result<T> {
        if let Some(since) = self.health.down_since() {
            anyhow::bail!("PostgreSQL is unreachable (since {since}; a probe is reconnecting)");
        }
        tokio::pin!(get);
        let failed = match tokio::time::timeout(ACQUIRE_WITHIN, &mut get).await {
            Ok(Ok(got)) => return Ok(got),
            Ok(Err(e)) => e.to_string(),
            Err(_) if self.pool.num_idle() == 0 && self.pool.size() >= MAX_CONNECTIONS => {
                // Every connection is at work: the server answers, the pool
                // is busy; wait for it as before (its acquire timeout).
                return get.await.context("getting a PostgreSQL connection");
            }
            Err(_) => format!("no connection within {ACQUIRE_WITHIN:?}"),
        };
        let pool = self.pool.clone();
        self.health.mark_down(&failed, move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
        anyhow::bail!("PostgreSQL is unreachable: {failed}")
    }

    /// The underlying pool, for tests that inspect what was stored.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn user_where(
        &self,
        sql: &'static str,
        value: Uuid,
    ) -> anyhow::Result<Option<UserRecord>> {
        sqlx::query(sql)
            .bind(value)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a user")?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }
}

/// The URL as it may be shown: without its password (in the userinfo or as
/// a `password` query parameter).
fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(unparsable URL)".to_owned();
    };
    if parsed.password().is_some() && parsed.set_password(None).is_err() {
        return "(URL withheld)".to_owned();
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "password")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if parsed.query().is_some() {
        if pairs.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    parsed.to_string()
}

/// Every spelling of the URL's password, to scrub from error messages that
/// sqlx or the server might compose from it.
fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(p) = parsed.password() {
            secrets.push(p.to_owned());
            if let Ok(decoded) = percent_decode(p) {
                secrets.push(decoded);
            }
        }
        secrets.extend(
            parsed
                .query_pairs()
                .filter(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned()),
        );
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is removed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

fn scrub(message: &str, secrets: &[String]) -> String {
    secrets.iter().fold(message.to_owned(), |m, s| {
        m.replace(s.as_str(), "[redacted]")
    })
}

/// An instant at the precision both stores keep (milliseconds, UTC), so a
/// value reads back from PostgreSQL exactly as it does from SQLite.
fn ms(t: OffsetDateTime) -> OffsetDateTime {
    from_millis(to_millis(t))
}

fn hash_from(bytes: Vec<u8>, what: &str) -> anyhow::Result<SecretHash> {
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored {what} hash is not 32 bytes"))?;
    Ok(SecretHash(hash))
}

/// Role names once each, in the order given (so "the first unknown role" is
/// the first the caller named).
fn distinct_roles(roles: &[RoleName]) -> Vec<&str> {
    let mut seen = HashSet::new();
    roles
        .iter()
        .map(RoleName::as_str)
        .filter(|r| seen.insert(*r))
        .collect()
}

fn user_from_row(row: &PgRow) -> anyhow::Result<UserRecord> {
    let decode = || -> Result<UserRecord, sqlx::Error> {
        Ok(UserRecord {
            id: UserId(row.try_get("id")?),
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
            created_at: row.try_get("created_at")?,
            disabled: row.try_get("disabled")?,
            roles: row.try_get("roles")?,
        })
    };
    decode().context("decoding a user")
}

fn session_from_row(row: &PgRow) -> anyhow::Result<SessionRecord> {
    let hash: Vec<u8> = row.try_get("secret_hash").context("decoding a session")?;
    let secret_hash = hash_from(hash, "session")?;
    let decode = || -> Result<SessionRecord, sqlx::Error> {
        Ok(SessionRecord {
            id: SessionId(row.try_get("id")?),
            user_id: UserId(row.try_get("user_id")?),
            secret_hash,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            user_agent: row.try_get("user_agent")?,
            ip: row.try_get("ip")?,
        })
    };
    decode().context("decoding a session")
}

/// A user with their roles in one row; roles sort byte-wise (the column is
/// `COLLATE "C"`), as Rust sorts strings.
macro_rules! user_select {
    ($where:literal) => {
        concat!(
            "SELECT id, email, password_hash, created_at, disabled, ",
            "array(SELECT role FROM user_roles WHERE user_id = users.id ORDER BY role) AS roles ",
            "FROM users ",
            $where
        )
    };
}

const USER_BY_EMAIL: &str = user_select!("WHERE email = $1");
const USER_BY_ID: &str = user_select!("WHERE id = $1");
const USERS_FIRST: &str = user_select!("ORDER BY id LIMIT $1");
const USERS_AFTER: &str = user_select!("WHERE id > $1 ORDER BY id LIMIT $2");

const SESSION_COLUMNS: &str =
    "id, secret_hash, user_id, created_at, last_seen_at, expires_at, user_agent, ip";

/// Assigns the (distinct) roles that exist, inside the caller's transaction;
/// the first of `roles` that does not exist, if any.
async fn assign_roles(
    tx: &mut PgConnection,
    user_id: UserId,
    roles: &[&str],
) -> anyhow::Result<Option<String>> {
    if roles.is_empty() {
        return Ok(None);
    }
    // Insert only existing roles, so an unknown one is reported by name
    // instead of as a bare foreign-key failure.
    let assigned: Vec<String> = sqlx::query_scalar(
        "INSERT INTO user_roles (user_id, role) SELECT $1, name FROM roles WHERE name = ANY($2) \
         RETURNING role",
    )
    .bind(user_id.0)
    .bind(roles)
    .fetch_all(&mut *tx)
    .await
    .context("assigning roles")?;
    Ok(roles
        .iter()
        .find(|r| !assigned.iter().any(|a| a == *r))
        .map(|r| (*r).to_owned()))
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, CreateUserError> {
        let created_at = ms(user.created_at);
        let mut tx = self.begin().await.context("starting a transaction")?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, disabled) \
             VALUES ($1, $2, $3, $4, false)",
        )
        .bind(user.id.0)
        .bind(user.email.as_str())
        .bind(&user.password_hash)
        .bind(created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // STYLE.md: the constraint decides, after the insert.
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && e.constraint() == Some(EMAIL_CONSTRAINT) =>
            {
                return Err(CreateUserError::EmailTaken);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("inserting a user").into()),
        }
        let roles = distinct_roles(&user.roles);
        if let Some(unknown) = assign_roles(&mut tx, user.id, &roles).await? {
            // Dropping the transaction rolls the user back.
            return Err(CreateUserError::UnknownRole(unknown));
        }
        tx.commit().await.context("committing a new user")?;
        let mut roles: Vec<String> = roles.into_iter().map(str::to_owned).collect();
        roles.sort();
        Ok(UserRecord {
            id: user.id,
            email: user.email.as_str().to_owned(),
            password_hash: user.password_hash,
            created_at,
            disabled: false,
            roles,
        })
    }

    async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRecord>> {
        sqlx::query(USER_BY_EMAIL)
            .bind(email.as_str())
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a user")?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(USER_BY_ID, id.0).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("updating a password hash")?;
        Ok(done.rows_affected() == 1)
    }

    async fn permissions_of(&self, id: UserId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT rp.permission FROM user_roles ur \
             JOIN role_permissions rp ON rp.role = ur.role \
             WHERE ur.user_id = $1 ORDER BY rp.permission",
        )
        .bind(id.0)
        .fetch_all(&mut *self.conn().await?)
        .await
        .context("reading a user's permissions")
    }

    async fn put_role(&self, name: &RoleName, permissions: &[String]) -> anyhow::Result<()> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        put_role_on(&mut tx, name, permissions).await?;
        tx.commit().await.context("committing a role")?;
        Ok(())
    }

    async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> anyhow::Result<Vec<UserRecord>> {
        // UUID v7 compares (as uuid, byte-wise) by creation time, so the id
        // is the cursor.
        let query = match after {
            Some(after) => sqlx::query(USERS_AFTER).bind(after.0),
            None => sqlx::query(USERS_FIRST),
        };
        query
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing users")?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> anyhow::Result<bool> {
        set_disabled_on(&mut *self.conn().await?, id, disabled).await
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<bool> {
        delete_user_on(&mut *self.conn().await?, id).await
    }

    async fn set_roles(&self, id: UserId, roles: &[RoleName]) -> Result<bool, RolesError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        if !set_roles_on(&mut tx, id, roles).await? {
            return Ok(false);
        }
        tx.commit().await.context("committing a user's roles")?;
        Ok(true)
    }

    async fn roles(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        sqlx::query_as(
            "SELECT name, array(SELECT permission FROM role_permissions \
                                WHERE role = roles.name ORDER BY permission) \
             FROM roles ORDER BY name",
        )
        .fetch_all(&mut *self.conn().await?)
        .await
        .context("listing roles")
    }

    async fn delete_role(&self, name: &RoleName) -> anyhow::Result<bool> {
        delete_role_on(&mut *self.conn().await?, name).await
    }

    async fn change_keeping_an_admin(
        &self,
        change: AdminChange<'_>,
    ) -> Result<bool, AdminChangeError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        // One lock, held to the end of the transaction, taken by every such
        // change on every node: they run one after the other. Each statement
        // after it reads a snapshot taken once the lock was granted (READ
        // COMMITTED), so the check sees what every earlier holder committed,
        // and of two administrators demoting each other the second finds
        // none left. (A SERIALIZABLE transaction would catch the same write
        // skew, but as a failure to retry.)
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ADMIN_LOCK.0)
            .bind(ADMIN_LOCK.1)
            .execute(&mut *tx)
            .await
            .context("waiting for the administrators' lock")?;
        let done = match change {
            AdminChange::SetRoles(id, roles) => set_roles_on(&mut tx, id, roles).await?,
            AdminChange::Disable(id) => set_disabled_on(&mut *tx, id, true).await?,
            AdminChange::DeleteUser(id) => delete_user_on(&mut *tx, id).await?,
            AdminChange::PutRole(name, permissions) => {
                put_role_on(&mut tx, name, permissions).await?;
                true
            }
            AdminChange::DeleteRole(name) => delete_role_on(&mut *tx, name).await?,
        };
        // Returning drops the transaction, which rolls it back.
        if !done {
            return Ok(false);
        }
        let admin_remains: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users u \
             JOIN user_roles ur ON ur.user_id = u.id \
             JOIN role_permissions rp ON rp.role = ur.role \
             WHERE NOT u.disabled AND rp.permission = $1)",
        )
        .bind(Permission::ADMIN)
        .fetch_one(&mut *tx)
        .await
        .context("looking for an administrator")?;
        if !admin_remains {
            return Err(AdminChangeError::LastAdmin);
        }
        tx.commit().await.context("committing a change")?;
        Ok(true)
    }

    async fn ping(&self) -> anyhow::Result<()> {
        // Touch the schema, not just the connection: a database that lost
        // its tables is as unusable as one that does not answer.
        sqlx::query("SELECT 1 FROM users LIMIT 1")
            .execute(&mut *self.conn().await?)
            .await
            .context("pinging PostgreSQL")?;
        Ok(())
    }
}

/// The advisory lock of [`UserStore::change_keeping_an_admin`]: the
/// two-key form ("gate", 1), whose key space is apart from the one-key
/// form's that sqlx's migration lock uses.
const ADMIN_LOCK: (i32, i32) = (0x6761_7465, 1);

/// Sets a user's disabled flag; `false` when there is no such user.
async fn set_disabled_on(
    db: impl PgExecutor<'_>,
    id: UserId,
    disabled: bool,
) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
        .bind(disabled)
        .bind(id.0)
        .execute(db)
        .await
        .context("disabling a user")?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a user (their roles and sessions go with them, by cascade);
/// `false` when there was none.
async fn delete_user_on(db: impl PgExecutor<'_>, id: UserId) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id.0)
        .execute(db)
        .await
        .context("deleting a user")?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a role and its assignments; `false` when there was none.
async fn delete_role_on(db: impl PgExecutor<'_>, name: &RoleName) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM roles WHERE name = $1")
        .bind(name.as_str())
        .execute(db)
        .await
        .context("deleting a role")?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a user's roles inside the caller's transaction; `false` when
/// there is no such user, an error naming the first unknown role (the
/// caller then rolls back).
async fn set_roles_on(
    tx: &mut PgConnection,
    id: UserId,
    roles: &[RoleName],
) -> Result<bool, RolesError> {
    // The row lock serialises concurrent replacements of one user's
    // roles, which would otherwise end as their union.
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .context("reading a user")?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .context("clearing a user's roles")?;
    if let Some(unknown) = assign_roles(tx, id, &distinct_roles(roles)).await? {
        return Err(RolesError::UnknownRole(unknown));
    }
    Ok(true)
}

/// Creates a role or replaces its permissions, inside the caller's
/// transaction.
async fn put_role_on(
    tx: &mut PgConnection,
    name: &RoleName,
    permissions: &[String],
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO roles (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await
        .context("creating a role")?;
    // Two concurrent replacements of one role must not merge: the row
    // lock makes the second wait for the first, then replace it. (NO KEY
    // UPDATE does not block the key-share locks of role assignments.)
    sqlx::query("SELECT 1 FROM roles WHERE name = $1 FOR NO KEY UPDATE")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await
        .context("locking a role")?;
    sqlx::query("DELETE FROM role_permissions WHERE role = $1")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await
        .context("clearing a role's permissions")?;
    sqlx::query(
        "INSERT INTO role_permissions (role, permission) \
         SELECT $1, p FROM unnest($2::text[]) AS p ON CONFLICT DO NOTHING",
    )
    .bind(name.as_str())
    .bind(permissions)
    .execute(&mut *tx)
    .await
    .context("granting permissions")?;
    Ok(())
}

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session(&self, s: &SessionRecord) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, secret_hash, user_id, created_at, last_seen_at, expires_at, user_agent, ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(s.id.0)
        .bind(&s.secret_hash.0[..])
        .bind(s.user_id.0)
        .bind(ms(s.created_at))
        .bind(ms(s.last_seen_at))
        .bind(ms(s.expires_at))
        .bind(&s.user_agent)
        .bind(&s.ip)
        .execute(&mut *self.conn().await?)
        .await
        .context("inserting a session")?;
        Ok(())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = $1");
        sqlx::query(&sql)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a session")?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        sqlx::query(&sql)
            .bind(id.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a session")?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        // GREATEST: a slow request must not move the record backwards.
        sqlx::query("UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE id = $2")
            .bind(ms(last_seen_at))
            .bind(id.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("recording a session's use")?;
        Ok(())
    }

    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM sessions WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("counting sessions")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at, id"
        );
        sqlx::query(&sql)
            .bind(user_id.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing a user's sessions")?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_id = $2")
            .bind(id.0)
            .bind(user_id.0)
            .execute(&mut *tx)
            .await
            .context("ending a session")?;
        let ended = done.rows_affected() == 1;
        if ended {
            revoke(&mut tx, &[id.0], revoke_until).await?;
        }
        tx.commit().await.context("committing a session's end")?;
        Ok(ended)
    }

    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2 RETURNING id",
        )
        .bind(user_id.0)
        .bind(keep.map(|k| k.0))
        .fetch_all(&mut *tx)
        .await
        .context("ending a user's sessions")?;
        revoke(&mut tx, &ids, revoke_until).await?;
        tx.commit().await.context("committing the sessions' end")?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64> {
        let now = ms(now);
        // An idle timeout reaching before any representable instant idles
        // nothing out (NULL compares false).
        let idle_cutoff = time::Duration::try_from(idle)
            .ok()
            .and_then(|idle| now.checked_sub(idle))
            .filter(|t| t.year() >= 1);
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(idle_cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping expired sessions")?;
        sqlx::query("DELETE FROM revoked_sessions WHERE revoked_until <= $1")
            .bind(now)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping old revocations")?;
        sqlx::query("DELETE FROM login_attempts WHERE closes_at <= $1")
            .bind(now)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping closed login attempt windows")?;
        Ok(done.rows_affected())
    }

    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>> {
        let rows: Vec<(Uuid, OffsetDateTime)> = sqlx::query_as(
            "SELECT session_id, revoked_until FROM revoked_sessions WHERE revoked_until > $1",
        )
        .bind(ms(now))
        .fetch_all(&mut *self.conn().await?)
        .await
        .context("reading revocations")?;
        Ok(rows
            .into_iter()
            .map(|(id, until)| (SessionId(id), until))
            .collect())
    }

    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog> {
        // The head first: every number up to `last_seq` was committed
        // before this read, so the second read sees all of them.
        let (epoch, last_seq): (String, i64) =
            sqlx::query_as("SELECT epoch, last_seq FROM revocation_feed WHERE id = 1")
                .fetch_one(&mut *self.conn().await?)
                .await
                .context("reading the revocation log's head")?;
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let rows: Vec<(Uuid, OffsetDateTime, i64)> = sqlx::query_as(
            "SELECT session_id, revoked_until, seq FROM revoked_sessions \
             WHERE seq > $1 AND seq <= $2 AND revoked_until > $3 ORDER BY seq LIMIT $4",
        )
        .bind(after)
        .bind(last_seq)
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *self.conn().await?)
        .await
        .context("reading the revocation log")?;
        log_from_rows(epoch, last_seq, limit, rows, |id| Ok(SessionId(id)), |t| t)
    }

    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&hash.0[..])
        .bind(session_id.0)
        .bind(ms(created_at))
        .execute(&mut *self.conn().await?)
        .await
        .context("inserting a refresh token")?;
        Ok(())
    }

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>> {
        let row: Option<(
            Uuid,
            OffsetDateTime,
            Option<OffsetDateTime>,
            Option<Vec<u8>>,
        )> = sqlx::query_as(
            "SELECT session_id, created_at, spent_at, successor_sealed \
                 FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&mut *self.conn().await?)
        .await
        .context("reading a refresh token")?;
        Ok(row.map(
            |(session_id, created_at, spent_at, successor_sealed)| RefreshRecord {
                session_id: SessionId(session_id),
                created_at,
                spent_at,
                successor_sealed,
            },
        ))
    }

    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool> {
        let spent_at = ms(spent_at);
        let mut tx = self.begin().await.context("starting a transaction")?;
        // Lock the session before the token: the successor's foreign-key
        // check needs this lock anyway, and taking it after the token's row
        // lock would deadlock with a concurrent logout, whose cascade locks
        // the session first and the tokens second. A session already gone
        // has no tokens left to spend.
        let live: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM sessions WHERE id = $1 FOR KEY SHARE")
                .bind(session_id.0)
                .fetch_optional(&mut *tx)
                .await
                .context("locking a session")?;
        if live.is_none() {
            return Ok(false);
        }
        // The compare-and-swap: only an unspent token is spent; a concurrent
        // rotation waits on the row lock, then finds it spent.
        let done = sqlx::query(
            "UPDATE refresh_tokens SET spent_at = $1, successor_sealed = $2 \
             WHERE token_hash = $3 AND spent_at IS NULL AND session_id = $4",
        )
        .bind(spent_at)
        .bind(successor_sealed)
        .bind(&old.0[..])
        .bind(session_id.0)
        .execute(&mut *tx)
        .await
        .context("spending a refresh token")?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&successor.0[..])
        .bind(session_id.0)
        .bind(spent_at)
        .execute(&mut *tx)
        .await
        .context("inserting the successor refresh token")?;
        tx.commit().await.context("committing a refresh rotation")?;
        Ok(true)
    }
}

/// Records ended sessions as revoked, inside the caller's transaction,
/// keeping the later `revoked_until` of a session revoked twice.
async fn revoke(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    ids: &[Uuid],
    until: OffsetDateTime,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // Takes the next numbers of the log; the row lock this update holds
    // until commit orders the transactions that number revocations.
    let n = i64::try_from(ids.len()).context("too many revocations at once")?;
    let last: i64 = sqlx::query_scalar(
        "UPDATE revocation_feed SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq",
    )
    .bind(n)
    .fetch_one(&mut **tx)
    .await
    .context("numbering revocations")?;
    sqlx::query(
        "INSERT INTO revoked_sessions (session_id, revoked_until, seq) \
         SELECT t.id, $2, $3 + t.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS t (id, ord) \
         ON CONFLICT (session_id) DO UPDATE \
         SET revoked_until = GREATEST(revoked_sessions.revoked_until, excluded.revoked_until), \
             seq = excluded.seq",
    )
    .bind(ids)
    .bind(ms(until))
    .bind(last - n)
    .execute(&mut **tx)
    .await
    .context("recording revocations")?;
    Ok(())
}

#[cfg(test)]
pub(super) mod testing {
    //! What the PostgreSQL tests (here and in `store/sql/`) stand on. They
    //! run against a real PostgreSQL on 127.0.0.1:5432 (trust auth, user
    //! `postgres`), each test in a database of its own that it drops at the
    //! end, even when it fails.

    use std::time::Duration;

    use sqlx::PgPool;
    use sqlx::postgres::PgPoolOptions;
    use time::OffsetDateTime;
    use time::macros::datetime;
    use uuid::Uuid;

    use super::PgStore;
    use crate::model::types::{Email, RoleName, SessionId, SessionSecret, UserId};
    use crate::store::{NewUser, SessionRecord};

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A database of the test's own, dropped when this value is.
    pub struct Scratch {
        pub store: PgStore,
        pub name: String,
    }

    impl Scratch {
        pub async fn new() -> Self {
            let admin = admin_pool().await;
            let name = format!("gh_unit_{}", Uuid::now_v7().simple());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create a scratch database");
            admin.close().await;
            let store = PgStore::open(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
                .await
                .expect("open the scratch database");
            Self { store, name }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let name = self.name.clone();
            // Drop runs inside the test's runtime, which cannot block on
            // itself: drop the database from a thread with its own. The
            // store's pool is not closed first (its connections belong to the
            // blocked runtime); FORCE ends them.
            let dropped = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(async move {
                        let admin = admin_pool().await;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&admin)
                            .await
                            .map(drop)
                    })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop the scratch database {}", self.name);
            }
        }
    }

    pub async fn admin_pool() -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(ADMIN_URL)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {ADMIN_URL} ({e}). The PostgreSQL store \
                     tests need it: start it with `pg_ctlcluster 15 main start` (or run \
                     scripts/test.sh, which starts or installs it)"
                )
            })
    }

    pub const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

    pub fn role(s: &str) -> RoleName {
        RoleName::parse(s).expect("role name")
    }

    pub fn new_user(email: &str, roles: &[&str]) -> NewUser {
        NewUser {
            id: UserId::new(),
            email: Email::parse(email).expect("email"),
            password_hash: "$argon2id$fake".into(),
            created_at: T0,
            roles: roles.iter().map(|r| role(r)).collect(),
        }
    }

    pub fn session(user_id: UserId, created_at: OffsetDateTime) -> SessionRecord {
        SessionRecord {
            id: SessionId::new(),
            user_id,
            secret_hash: SessionSecret::generate().expect("rng").hash(),
            created_at,
            last_seen_at: created_at,
            expires_at: created_at + Duration::from_secs(3600),
            user_agent: Some("test".into()),
            ip: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use time::macros::datetime;

    use super::testing::{Scratch, T0, admin_pool, new_user, role, session};
    use super::*;
    use crate::model::types::SessionSecret;
    use crate::store::FailureCounter as _;

    #[tokio::test]
    async fn users_roles_and_permissions() {
        let db = Scratch::new().await;
        let s = &db.store;
        s.ping().await.expect("ping");
        // Byte order, as SQLite and Rust sort: "B" before "a".
        s.put_role(
            &role("a"),
            &["x:read".into(), "X:write".into(), "x:read".into()],
        )
        .await
        .expect("put a");
        s.put_role(&role("B"), &["x:read".into(), "b:do".into()])
            .await
            .expect("put B");

        let mut nu = new_user(" Ann@Example.com ", &["a", "B", "a"]);
        nu.created_at = datetime!(2026-01-01 0:00:00.123456789 UTC);
        let created = s.create_user(nu.clone()).await.expect("create");
        assert_eq!(created.roles, ["B", "a"]);
        assert_eq!(created.email, "ann@example.com");
        assert_eq!(created.created_at, datetime!(2026-01-01 0:00:00.123 UTC));
        let read = s.user_by_id(nu.id).await.expect("by id").expect("found");
        assert_eq!(read, created);
        let by_email = s
            .user_by_email(&Email::parse("ANN@example.com").expect("email"))
            .await
            .expect("by email");
        assert_eq!(by_email, Some(created.clone()));
        assert_eq!(
            s.permissions_of(nu.id).await.expect("perms"),
            ["X:write", "b:do", "x:read"]
        );

        let taken = s.create_user(new_user("ann@example.com", &[])).await;
        assert!(
            matches!(taken, Err(CreateUserError::EmailTaken)),
            "{taken:?}"
        );
        let unknown = new_user("bob@example.com", &["a", "nope", "zzz"]);
        let err = s.create_user(unknown.clone()).await;
        assert!(
            matches!(&err, Err(CreateUserError::UnknownRole(r)) if r == "nope"),
            "{err:?}"
        );
        assert_eq!(
            s.user_by_id(unknown.id).await.expect("read"),
            None,
            "rolled back"
        );

        assert!(s.set_password_hash(nu.id, "$new").await.expect("set"));
        assert!(
            !s.set_password_hash(UserId::new(), "$new")
                .await
                .expect("set")
        );
        assert!(s.set_disabled(nu.id, true).await.expect("disable"));
        assert!(!s.set_disabled(UserId::new(), true).await.expect("disable"));
        let read = s.user_by_id(nu.id).await.expect("read").expect("found");
        assert!(read.disabled);
        assert_eq!(read.password_hash, "$new");

        let err = s.set_roles(nu.id, &[role("B"), role("ghost")]).await;
        assert!(
            matches!(&err, Err(RolesError::UnknownRole(r)) if r == "ghost"),
            "{err:?}"
        );
        assert_eq!(read.roles, ["B", "a"], "unchanged after the failure");
        assert!(
            s.set_roles(nu.id, &[role("B"), role("B")])
                .await
                .expect("set")
        );
        assert!(!s.set_roles(UserId::new(), &[]).await.expect("set"));
        let read = s.user_by_id(nu.id).await.expect("read").expect("found");
        assert_eq!(read.roles, ["B"]);
        assert_eq!(
            s.permissions_of(nu.id).await.expect("perms"),
            ["b:do", "x:read"]
        );

        assert_eq!(
            s.roles().await.expect("roles"),
            [
                ("B".to_owned(), vec!["b:do".to_owned(), "x:read".to_owned()]),
                (
                    "a".to_owned(),
                    vec!["X:write".to_owned(), "x:read".to_owned()]
                ),
            ]
        );
        s.put_role(&role("a"), &[]).await.expect("replace");
        assert!(s.delete_role(&role("B")).await.expect("delete"));
        assert!(!s.delete_role(&role("B")).await.expect("delete"));
        assert_eq!(s.roles().await.expect("roles"), [("a".to_owned(), vec![])]);
        let read = s.user_by_id(nu.id).await.expect("read").expect("found");
        assert!(read.roles.is_empty(), "assignment went with the role");

        assert!(s.delete_user(nu.id).await.expect("delete"));
        assert!(!s.delete_user(nu.id).await.expect("delete"));
        assert_eq!(s.user_by_id(nu.id).await.expect("read"), None);
    }

    #[tokio::test]
    async fn list_users_pages_in_creation_order() {
        let db = Scratch::new().await;
        let s = &db.store;
        let mut ids = Vec::new();
        for i in 0..5 {
            let u = new_user(&format!("u{i}@example.com"), &[]);
            ids.push(u.id);
            s.create_user(u).await.expect("create");
        }
        let first = s.list_users(None, 2).await.expect("list");
        assert_eq!(first.iter().map(|u| u.id).collect::<Vec<_>>(), ids[..2]);
        let rest = s.list_users(Some(ids[1]), 10).await.expect("list");
        assert_eq!(rest.iter().map(|u| u.id).collect::<Vec<_>>(), ids[2..]);
        assert!(
            s.list_users(Some(ids[4]), 10)
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn sessions_end_with_their_revocation() {
        let db = Scratch::new().await;
        let s = &db.store;
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let a = session(uid, T0);
        let b = session(uid, T0 + Duration::from_secs(1));
        let c = session(uid, T0 + Duration::from_secs(2));
        for x in [&b, &a, &c] {
            s.insert_session(x).await.expect("insert");
        }
        assert_eq!(
            s.session_by_secret(&a.secret_hash).await.expect("read"),
            Some(a.clone())
        );
        assert_eq!(s.session_by_id(b.id).await.expect("read"), Some(b.clone()));
        assert_eq!(s.session_by_id(SessionId::new()).await.expect("read"), None);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            [a.clone(), b.clone(), c.clone()]
        );

        let later = T0 + Duration::from_secs(60);
        s.touch_session(a.id, later).await.expect("touch");
        s.touch_session(a.id, T0).await.expect("never backwards");
        s.touch_session(SessionId::new(), later)
            .await
            .expect("unknown is a no-op");
        let read = s.session_by_id(a.id).await.expect("read").expect("found");
        assert_eq!(read.last_seen_at, later);

        let until = T0 + Duration::from_secs(600);
        assert!(
            !s.delete_session(a.id, UserId::new(), until)
                .await
                .expect("other user's")
        );
        assert!(s.delete_session(a.id, uid, until).await.expect("end"));
        assert!(!s.delete_session(a.id, uid, until).await.expect("again"));
        let ended = s
            .delete_sessions_of(uid, Some(c.id), until)
            .await
            .expect("end all");
        assert_eq!(ended, [b.id]);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            std::slice::from_ref(&c)
        );
        // A second revocation keeps the later instant.
        s.insert_session(&a).await.expect("reinsert");
        let ended = s
            .delete_sessions_of(uid, None, T0 + Duration::from_secs(1))
            .await
            .expect("end");
        assert_eq!(ended.len(), 2);
        let mut revs = s.revocations(T0).await.expect("revocations");
        revs.sort();
        let mut want = vec![
            (a.id, until),
            (b.id, until),
            (c.id, T0 + Duration::from_secs(1)),
        ];
        want.sort();
        assert_eq!(revs, want);
        assert_eq!(s.revocations(until).await.expect("revocations"), []);
    }

    #[tokio::test]
    async fn delete_expired_sweeps_sessions_revocations_and_windows() {
        let db = Scratch::new().await;
        let s = &db.store;
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let fresh = session(uid, T0 + Duration::from_secs(3000));
        let idle = session(uid, T0 + Duration::from_secs(100));
        let mut expired = session(uid, T0 + Duration::from_secs(3000));
        expired.expires_at = T0 + Duration::from_secs(3100);
        for x in [&fresh, &idle, &expired] {
            s.insert_session(x).await.expect("insert");
        }
        let victim = session(uid, T0);
        s.insert_session(&victim).await.expect("insert");
        s.delete_session(victim.id, uid, T0 + Duration::from_secs(3200))
            .await
            .expect("end");
        s.hit("k", Duration::from_secs(60), T0).await.expect("hit");
        let now = T0 + Duration::from_secs(3200);
        let swept = s
            .delete_expired(now, Duration::from_secs(600))
            .await
            .expect("sweep");
        assert_eq!(swept, 2);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            std::slice::from_ref(&fresh)
        );
        assert_eq!(s.revocations(T0).await.expect("revocations"), []);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
            .fetch_one(s.pool())
            .await
            .expect("count");
        assert_eq!(left, 0);
        // An idle timeout too long to subtract idles nothing out.
        assert_eq!(
            s.delete_expired(now, Duration::MAX).await.expect("sweep"),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refresh_tokens_rotate_exactly_once() {
        let db = Scratch::new().await;
        let s = Arc::new(db.store.clone());
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let sess = session(uid, T0);
        s.insert_session(&sess).await.expect("insert");
        let old = SessionSecret::generate().expect("rng").hash();
        s.insert_refresh(&old, sess.id, T0).await.expect("insert");
        assert_eq!(
            s.refresh_by_hash(&old).await.expect("read"),
            Some(RefreshRecord {
                session_id: sess.id,
                created_at: T0,
                spent_at: None,
                successor_sealed: None
            })
        );
        assert!(
            !s.rotate_refresh(
                &old,
                T0,
                &SessionSecret::generate().expect("rng").hash(),
                b"x",
                SessionId::new()
            )
            .await
            .expect("other session")
        );
        let now = T0 + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let next = SessionSecret::generate().expect("rng").hash();
                s.rotate_refresh(&old, now, &next, &[i], sess.id)
                    .await
                    .expect("rotate")
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.expect("join"));
        }
        assert_eq!(won, 1);
        let spent = s.refresh_by_hash(&old).await.expect("read").expect("found");
        assert_eq!(spent.spent_at, Some(now));
        assert_eq!(spent.successor_sealed.map(|v| v.len()), Some(1));
        // Ending the session takes its tokens with it.
        assert!(s.delete_session(sess.id, uid, now).await.expect("end"));
        assert_eq!(s.refresh_by_hash(&old).await.expect("read"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotation_racing_a_logout_neither_fails_nor_deadlocks() {
        let db = Scratch::new().await;
        let s = Arc::new(db.store.clone());
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        for _ in 0..50 {
            let sess = session(uid, T0);
            s.insert_session(&sess).await.expect("insert");
            let old = SessionSecret::generate().expect("rng").hash();
            s.insert_refresh(&old, sess.id, T0).await.expect("insert");
            let next = SessionSecret::generate().expect("rng").hash();
            let (rotated, ended) = tokio::join!(
                tokio::spawn({
                    let s = s.clone();
                    async move { s.rotate_refresh(&old, T0, &next, b"x", sess.id).await }
                }),
                tokio::spawn({
                    let s = s.clone();
                    async move { s.delete_session(sess.id, uid, T0).await }
                }),
            );
            rotated.expect("join").expect("rotate");
            assert!(ended.expect("join").expect("end"));
            assert_eq!(s.refresh_by_hash(&next).await.expect("read"), None);
        }
    }

    #[tokio::test]
    async fn store_open_wires_every_seam_to_postgres() {
        let db = Scratch::new().await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
        let stores = crate::store::open(&crate::config::DatabaseUrl::Postgres(url.into()))
            .await
            .expect("open");
        stores.users.ping().await.expect("ping");
        stores
            .failures
            .hit("k", Duration::from_secs(60), T0)
            .await
            .expect("hit");
        // The counter is the shared table, not a per-process map.
        assert_eq!(
            db.store
                .hit("k", Duration::from_secs(60), T0)
                .await
                .expect("hit")
                .count,
            2
        );
        assert!(stores.keys.signing_keys().await.expect("keys").is_empty());
        assert!(
            stores
                .sessions
                .revocations(T0)
                .await
                .expect("revocations")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn open_errors_never_show_the_password() {
        // Make sure the server is up, so the failure below is the database's.
        admin_pool().await.close().await;
        for url in [
            "postgres://postgres:hunter2%21secret@127.0.0.1:5432/gh_no_such_database",
            "postgres://postgres@127.0.0.1:5432/gh_no_such_database?password=hunter2!secret",
        ] {
            let err = PgStore::open(url).await.expect_err("no such database");
            let msg = format!("{err:#} {err:?}");
            assert!(msg.contains("database_url: cannot open postgres://postgres@127.0.0.1:5432/gh_no_such_database"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        assert_eq!(
            redacted_url("postgres://u:p%40ss@h/db?sslmode=require&password=x"),
            "postgres://u@h/db?sslmode=require"
        );
    }
}
