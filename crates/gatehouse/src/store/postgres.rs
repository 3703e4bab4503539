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
    AdminChange, AdminChangeError, CreateUserError, NewUser, RolesError, UserRecord, UserStore,
};
use crate::clock::{from_millis, to_millis};
use crate::model::types::{Email, Permission, RoleName, UserId};

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
    use std::time::Duration;

    use time::macros::datetime;

    use super::testing::{Scratch, T0, admin_pool, new_user, role};

    use super::*;
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
