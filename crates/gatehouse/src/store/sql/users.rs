//! Users, roles and permissions (the `UserStore`) on PostgreSQL and on
//! SQLite.

use std::collections::HashSet;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, PgExecutor, Row, SqliteConnection, SqliteExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{USERS_EMAIL, ms, parse_uuid, violates};
use crate::clock::{from_millis, to_millis};
use crate::model::types::{Email, Permission, RoleName, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    AdminChange, AdminChangeError, CreateUserError, NewUser, RolesError, UserRecord, UserStore,
};

/// A user with their roles in one row: on PostgreSQL as an array whose
/// roles sort byte-wise (the column is `COLLATE "C"`), as Rust sorts
/// strings; on SQLite folded into one text (sorted when read).
macro_rules! user_select {
    (postgres, $where:literal) => {
        user_select!(
            "array(SELECT role FROM user_roles WHERE user_id = users.id ORDER BY role)",
            $where
        )
    };
    (sqlite, $where:literal) => {
        user_select!(
            "(SELECT group_concat(role, char(31)) FROM user_roles WHERE user_id = users.id)",
            $where
        )
    };
    ($roles:literal, $where:literal) => {
        concat!(
            "SELECT id, email, password_hash, created_at, disabled, email_verified, ",
            $roles,
            " AS roles FROM users ",
            $where
        )
    };
}

const PG_USER_BY_EMAIL: &str = user_select!(postgres, "WHERE email = $1");
const PG_USER_BY_ID: &str = user_select!(postgres, "WHERE id = $1");
const PG_USERS_FIRST: &str = user_select!(postgres, "ORDER BY id LIMIT $1");
const PG_USERS_AFTER: &str = user_select!(postgres, "WHERE id > $1 ORDER BY id LIMIT $2");

const SQLITE_USER_BY_EMAIL: &str = user_select!(sqlite, "WHERE email = $1");
const SQLITE_USER_BY_ID: &str = user_select!(sqlite, "WHERE id = $1");
const SQLITE_USERS_AFTER: &str = user_select!(sqlite, "WHERE id > $1 ORDER BY id LIMIT $2");

const SET_PASSWORD_HASH: &str = "UPDATE users SET password_hash = $1 WHERE id = $2";

/// A user with their roles and effective permissions in one row, each list
/// as `user_select!` gives the roles (PostgreSQL orders the permissions as
/// `PERMISSIONS_OF` does; SQLite's are sorted when read, as its `ORDER BY`
/// would, byte-wise).
const PG_USER_WITH_PERMISSIONS: &str = concat!(
    "SELECT id, email, password_hash, created_at, disabled, email_verified, ",
    "array(SELECT role FROM user_roles WHERE user_id = users.id ORDER BY role) AS roles, ",
    "array(SELECT DISTINCT rp.permission FROM user_roles ur ",
    "JOIN role_permissions rp ON rp.role = ur.role ",
    "WHERE ur.user_id = users.id ORDER BY rp.permission) AS permissions ",
    "FROM users WHERE id = $1"
);
const SQLITE_USER_WITH_PERMISSIONS: &str = concat!(
    "SELECT id, email, password_hash, created_at, disabled, email_verified, ",
    "(SELECT group_concat(role, char(31)) FROM user_roles WHERE user_id = users.id) AS roles, ",
    "(SELECT group_concat(permission, char(31)) FROM (SELECT DISTINCT rp.permission ",
    "FROM user_roles ur JOIN role_permissions rp ON rp.role = ur.role ",
    "WHERE ur.user_id = users.id)) AS permissions ",
    "FROM users WHERE id = $1"
);

const PERMISSIONS_OF: &str = "SELECT DISTINCT rp.permission FROM user_roles ur \
     JOIN role_permissions rp ON rp.role = ur.role \
     WHERE ur.user_id = $1 ORDER BY rp.permission";

const SET_DISABLED: &str = "UPDATE users SET disabled = $1 WHERE id = $2";

const DELETE_USER: &str = "DELETE FROM users WHERE id = $1";

const DELETE_ROLE: &str = "DELETE FROM roles WHERE name = $1";

const CLEAR_USER_ROLES: &str = "DELETE FROM user_roles WHERE user_id = $1";

const CLEAR_ROLE_PERMISSIONS: &str = "DELETE FROM role_permissions WHERE role = $1";

/// Touches the schema, not just the connection: a database that lost its
/// tables is as unusable as one that does not answer.
const PING: &str = "SELECT 1 FROM users LIMIT 1";

/// The advisory lock of [`UserStore::change_keeping_an_admin`] on
/// PostgreSQL: the two-key form ("gate", 1), whose key space is apart from
/// the one-key form's that sqlx's migration lock uses.
const ADMIN_LOCK: (i32, i32) = (0x6761_7465, 1);

/// What lists folded into one column are joined with on SQLite: the unit
/// separator, which no role name or permission can hold.
const LIST_SEPARATOR: char = '\u{1f}';

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, CreateUserError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, disabled) \
             VALUES ($1, $2, $3, $4, false)",
        )
        .bind(user.id.0)
        .bind(user.email.as_str())
        .bind(&user.password_hash)
        .bind(ms(user.created_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if violates(&e, &USERS_EMAIL) => return Err(CreateUserError::EmailTaken),
            Err(e) => return Err(anyhow::Error::new(e).context("inserting a user").into()),
        }
        let roles = distinct_roles(&user.roles);
        if let Some(unknown) = Self::assign_roles(&mut tx, user.id, &roles).await? {
            // Dropping the transaction rolls the user back.
            return Err(CreateUserError::UnknownRole(unknown));
        }
        tx.commit().await.context("committing a new user")?;
        Ok(created_user(user))
    }

    async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRecord>> {
        sqlx::query(PG_USER_BY_EMAIL)
            .bind(email.as_str())
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a user")?
            .as_ref()
            .map(pg_user_from_row)
            .transpose()
    }

    async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(PG_USER_BY_ID, id.0).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_PASSWORD_HASH)
            .bind(password_hash)
            .bind(id.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("updating a password hash")?;
        Ok(done.rows_affected() == 1)
    }

    async fn permissions_of(&self, id: UserId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(PERMISSIONS_OF)
            .bind(id.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading a user's permissions")
    }

    async fn user_with_permissions(
        &self,
        id: UserId,
    ) -> anyhow::Result<Option<(UserRecord, Vec<String>)>> {
        let Some(row) = sqlx::query(PG_USER_WITH_PERMISSIONS)
            .bind(id.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a user")?
        else {
            return Ok(None);
        };
        let user = pg_user_from_row(&row)?;
        let permissions = row
            .try_get("permissions")
            .context("decoding a user's permissions")?;
        Ok(Some((user, permissions)))
    }

    async fn put_role(&self, name: &RoleName, permissions: &[String]) -> anyhow::Result<()> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        Self::put_role_on(&mut tx, name, permissions).await?;
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
            Some(after) => sqlx::query(PG_USERS_AFTER).bind(after.0),
            None => sqlx::query(PG_USERS_FIRST),
        };
        query
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing users")?
            .iter()
            .map(pg_user_from_row)
            .collect()
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> anyhow::Result<bool> {
        Self::set_disabled_on(&mut *self.conn().await?, id, disabled).await
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<bool> {
        Self::delete_user_on(&mut *self.conn().await?, id).await
    }

    async fn set_roles(&self, id: UserId, roles: &[RoleName]) -> Result<bool, RolesError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        if !Self::set_roles_on(&mut tx, id, roles).await? {
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
        Self::delete_role_on(&mut *self.conn().await?, name).await
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
            AdminChange::SetRoles(id, roles) => Self::set_roles_on(&mut tx, id, roles).await?,
            AdminChange::Disable(id) => Self::set_disabled_on(&mut *tx, id, true).await?,
            AdminChange::DeleteUser(id) => Self::delete_user_on(&mut *tx, id).await?,
            AdminChange::PutRole(name, permissions) => {
                Self::put_role_on(&mut tx, name, permissions).await?;
                true
            }
            AdminChange::DeleteRole(name) => Self::delete_role_on(&mut *tx, name).await?,
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
        sqlx::query(PING)
            .execute(&mut *self.conn().await?)
            .await
            .context("pinging PostgreSQL")?;
        Ok(())
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, CreateUserError> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, disabled) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(user.id.0.to_string())
        .bind(user.email.as_str())
        .bind(&user.password_hash)
        .bind(to_millis(user.created_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if violates(&e, &USERS_EMAIL) => return Err(CreateUserError::EmailTaken),
            Err(e) => return Err(anyhow::Error::new(e).context("inserting a user").into()),
        }
        for role in distinct_roles(&user.roles) {
            // Insert only an existing role, so an unknown one is reported by
            // name instead of as a bare foreign-key failure.
            let done = sqlx::query(
                "INSERT OR IGNORE INTO user_roles (user_id, role) \
                 SELECT $1, name FROM roles WHERE name = $2",
            )
            .bind(user.id.0.to_string())
            .bind(role)
            .execute(&mut *tx)
            .await
            .context("assigning a role")?;
            if done.rows_affected() == 0 {
                return Err(CreateUserError::UnknownRole(role.to_owned()));
            }
        }
        tx.commit().await.context("committing a new user")?;
        Ok(created_user(user))
    }

    async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(SQLITE_USER_BY_EMAIL, email.as_str().to_owned())
            .await
    }

    async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(SQLITE_USER_BY_ID, id.0.to_string()).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_PASSWORD_HASH)
            .bind(password_hash)
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await
            .context("updating a password hash")?;
        Ok(done.rows_affected() == 1)
    }

    async fn permissions_of(&self, id: UserId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(PERMISSIONS_OF)
            .bind(id.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("reading a user's permissions")
    }

    async fn user_with_permissions(
        &self,
        id: UserId,
    ) -> anyhow::Result<Option<(UserRecord, Vec<String>)>> {
        let Some(row) = sqlx::query(SQLITE_USER_WITH_PERMISSIONS)
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a user")?
        else {
            return Ok(None);
        };
        let user = sqlite_user_from_row(&row)?;
        let permissions = split_list(row.try_get("permissions")?);
        Ok(Some((user, permissions)))
    }

    async fn put_role(&self, name: &RoleName, permissions: &[String]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        Self::put_role_on(&mut tx, name, permissions).await?;
        tx.commit().await.context("committing a role")?;
        Ok(())
    }

    async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> anyhow::Result<Vec<UserRecord>> {
        // UUID v7 text sorts by creation time, so the id is the cursor.
        sqlx::query(SQLITE_USERS_AFTER)
            .bind(after.map(|a| a.0.to_string()).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .context("listing users")?
            .iter()
            .map(sqlite_user_from_row)
            .collect()
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> anyhow::Result<bool> {
        Self::set_disabled_on(&self.pool, id, disabled).await
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<bool> {
        Self::delete_user_on(&self.pool, id).await
    }

    async fn set_roles(&self, id: UserId, roles: &[RoleName]) -> Result<bool, RolesError> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        if !Self::set_roles_on(&mut tx, id, roles).await? {
            return Ok(false);
        }
        tx.commit().await.context("committing a user's roles")?;
        Ok(true)
    }

    async fn roles(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT name, (SELECT group_concat(permission, char(31)) FROM role_permissions \
                           WHERE role = roles.name) \
             FROM roles ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .context("listing roles")?;
        Ok(rows
            .into_iter()
            .map(|(name, perms)| (name, split_list(perms)))
            .collect())
    }

    async fn delete_role(&self, name: &RoleName) -> anyhow::Result<bool> {
        Self::delete_role_on(&self.pool, name).await
    }

    async fn change_keeping_an_admin(
        &self,
        change: AdminChange<'_>,
    ) -> Result<bool, AdminChangeError> {
        // BEGIN IMMEDIATE takes the database's one write lock before the
        // first read: such changes, from every process on the file, run one
        // after the other, and no writer can change what the check reads
        // before the commit. (A deferred transaction would only take it at
        // its first write, and fail with SQLITE_BUSY if another writer had
        // committed since its first read.)
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("starting a transaction")?;
        let done = match change {
            AdminChange::SetRoles(id, roles) => Self::set_roles_on(&mut tx, id, roles).await?,
            AdminChange::Disable(id) => Self::set_disabled_on(&mut *tx, id, true).await?,
            AdminChange::DeleteUser(id) => Self::delete_user_on(&mut *tx, id).await?,
            AdminChange::PutRole(name, permissions) => {
                Self::put_role_on(&mut tx, name, permissions).await?;
                true
            }
            AdminChange::DeleteRole(name) => Self::delete_role_on(&mut *tx, name).await?,
        };
        // Returning drops the transaction, which rolls it back.
        if !done {
            return Ok(false);
        }
        let admin_remains: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users u \
             JOIN user_roles ur ON ur.user_id = u.id \
             JOIN role_permissions rp ON rp.role = ur.role \
             WHERE u.disabled = 0 AND rp.permission = $1)",
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
        sqlx::query(PING)
            .execute(&self.pool)
            .await
            .context("pinging SQLite")?;
        // And write: a full disk or a read-only file answers every read
        // while refusing every write. The count makes every probe change
        // the row: SQLite writes nothing for an unchanged one.
        sqlx::query(
            "INSERT INTO readiness_probe (id, probed_at, probes) VALUES (1, $1, 1) \
             ON CONFLICT (id) DO UPDATE \
             SET probed_at = excluded.probed_at, probes = readiness_probe.probes + 1",
        )
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .execute(&self.pool)
        .await
        .context("writing to SQLite")?;
        Ok(())
    }
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

/// The record of a user just created as `user` asks.
fn created_user(user: NewUser) -> UserRecord {
    let mut roles: Vec<String> = distinct_roles(&user.roles)
        .into_iter()
        .map(str::to_owned)
        .collect();
    roles.sort();
    UserRecord {
        id: user.id,
        email: user.email.as_str().to_owned(),
        password_hash: user.password_hash,
        created_at: ms(user.created_at),
        disabled: false,
        email_verified: false,
        roles,
    }
}

fn pg_user_from_row(row: &PgRow) -> anyhow::Result<UserRecord> {
    let decode = || -> Result<UserRecord, sqlx::Error> {
        Ok(UserRecord {
            id: UserId(row.try_get("id")?),
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
            created_at: row.try_get("created_at")?,
            disabled: row.try_get("disabled")?,
            email_verified: row.try_get("email_verified")?,
            roles: row.try_get("roles")?,
        })
    };
    decode().context("decoding a user")
}

fn sqlite_user_from_row(row: &SqliteRow) -> anyhow::Result<UserRecord> {
    Ok(UserRecord {
        id: UserId(parse_uuid(row.try_get("id")?)?),
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        created_at: from_millis(row.try_get("created_at")?),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        roles: split_list(row.try_get("roles")?),
    })
}

/// A list SQLite folded into one column, sorted.
pub(super) fn split_list(list: Option<String>) -> Vec<String> {
    let mut items: Vec<String> = list
        .unwrap_or_default()
        .split(LIST_SEPARATOR)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    items.sort();
    items
}

impl PgStore {
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
            .map(pg_user_from_row)
            .transpose()
    }

    /// Assigns the (distinct) roles that exist, inside the caller's
    /// transaction; the first of `roles` that does not exist, if any.
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

    /// Sets a user's disabled flag; `false` when there is no such user.
    async fn set_disabled_on(
        db: impl PgExecutor<'_>,
        id: UserId,
        disabled: bool,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_DISABLED)
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
        let done = sqlx::query(DELETE_USER)
            .bind(id.0)
            .execute(db)
            .await
            .context("deleting a user")?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a role and its assignments; `false` when there was none.
    async fn delete_role_on(db: impl PgExecutor<'_>, name: &RoleName) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_ROLE)
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
        sqlx::query(CLEAR_USER_ROLES)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .context("clearing a user's roles")?;
        if let Some(unknown) = Self::assign_roles(tx, id, &distinct_roles(roles)).await? {
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
        sqlx::query(CLEAR_ROLE_PERMISSIONS)
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
}

impl SqliteStore {
    async fn user_where(
        &self,
        sql: &'static str,
        value: String,
    ) -> anyhow::Result<Option<UserRecord>> {
        sqlx::query(sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .context("reading a user")?
            .as_ref()
            .map(sqlite_user_from_row)
            .transpose()
    }

    /// Sets a user's disabled flag; `false` when there is no such user.
    async fn set_disabled_on(
        db: impl SqliteExecutor<'_>,
        id: UserId,
        disabled: bool,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_DISABLED)
            .bind(i64::from(disabled))
            .bind(id.0.to_string())
            .execute(db)
            .await
            .context("disabling a user")?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a user (their roles and sessions go with them, by cascade);
    /// `false` when there was none.
    async fn delete_user_on(db: impl SqliteExecutor<'_>, id: UserId) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_USER)
            .bind(id.0.to_string())
            .execute(db)
            .await
            .context("deleting a user")?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a role and its assignments; `false` when there was none.
    async fn delete_role_on(db: impl SqliteExecutor<'_>, name: &RoleName) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_ROLE)
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
        con: &mut SqliteConnection,
        id: UserId,
        roles: &[RoleName],
    ) -> Result<bool, RolesError> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
            .bind(id.0.to_string())
            .fetch_optional(&mut *con)
            .await
            .context("reading a user")?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(CLEAR_USER_ROLES)
            .bind(id.0.to_string())
            .execute(&mut *con)
            .await
            .context("clearing a user's roles")?;
        for role in roles {
            let done = sqlx::query(
                "INSERT OR IGNORE INTO user_roles (user_id, role) \
                 SELECT $1, name FROM roles WHERE name = $2",
            )
            .bind(id.0.to_string())
            .bind(role.as_str())
            .execute(&mut *con)
            .await
            .context("assigning a role")?;
            if done.rows_affected() == 0 {
                let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM roles WHERE name = $1")
                    .bind(role.as_str())
                    .fetch_optional(&mut *con)
                    .await
                    .context("reading a role")?;
                if known.is_none() {
                    return Err(RolesError::UnknownRole(role.as_str().to_owned()));
                }
            }
        }
        Ok(true)
    }

    /// Creates a role or replaces its permissions, inside the caller's
    /// transaction.
    async fn put_role_on(
        con: &mut SqliteConnection,
        name: &RoleName,
        permissions: &[String],
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT OR IGNORE INTO roles (name) VALUES ($1)")
            .bind(name.as_str())
            .execute(&mut *con)
            .await
            .context("creating a role")?;
        sqlx::query(CLEAR_ROLE_PERMISSIONS)
            .bind(name.as_str())
            .execute(&mut *con)
            .await
            .context("clearing a role's permissions")?;
        for p in permissions {
            sqlx::query(
                "INSERT OR IGNORE INTO role_permissions (role, permission) VALUES ($1, $2)",
            )
            .bind(name.as_str())
            .bind(p)
            .execute(&mut *con)
            .await
            .context("granting a permission")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL side, against a real server (see
    //! `store::postgres::testing`); the contract suite in `tests/api` runs
    //! both.

    use time::macros::datetime;

    use super::*;
    use crate::store::postgres::testing::{Scratch, new_user, role};

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
}
