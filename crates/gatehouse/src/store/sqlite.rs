//! The embedded store: users, roles and sessions in one SQLite file, via
//! sqlx, with migrations applied at open. Here, opening the file and keeping
//! its connections sound; the statements, by aggregate, are in `store/sql/`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row, SqliteConnection, SqliteExecutor, SqlitePool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AdminChange, AdminChangeError, CreateUserError, NewUser, RolesError, UserRecord, UserStore,
};
use crate::clock::{from_millis, to_millis};
use crate::model::types::{Email, Permission, RoleName, UserId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A SQLite database holding users, roles and sessions.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `sqlite://PATH`, creating the file if missing (readable and
    /// writable by its owner alone), and applies the migrations. Warns when
    /// the file, its `-wal` or its `-shm` is open to group or others.
    ///
    /// # Errors
    /// When the file cannot be created or opened, or a migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "database_url: not a valid sqlite:// URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let mode = url_mode(url);
        let file = (mode.as_deref() != Some("memory")).then(|| options.get_filename().to_owned());
        if let Some(file) = &file
            && mode.as_deref() != Some("ro")
        {
            files::create_private(file)
                .with_context(|| format!("database_url: cannot create {}", file.display()))?;
        }
        let writable = mode.as_deref() != Some("ro");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if writable {
                        refuse_read_only(conn).await?;
                    }
                    Ok(())
                })
            })
            .after_release(|conn, _| Box::pin(release_unless_in_transaction(conn)))
            .connect_with(options)
            .await
            .with_context(|| format!("database_url: cannot open {url}"))?;
        quick_check(&pool, url).await?;
        MIGRATOR
            .run(&pool)
            .await
            .context("applying the SQLite migrations")?;
        // After the open, so the `-wal` and `-shm` it made are judged too.
        if let Some(file) = &file {
            files::warn_if_exposed(file);
        }
        Ok(Self { pool })
    }

    /// The underlying pool, for tests that inspect what was stored.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

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
            .map(user_from_row)
            .transpose()
    }
}

/// Refuses a connection that cannot write. SQLite opens a file it may not
/// write (permissions, `chattr +i`, a read-only mount) read-only, silently,
/// and such a connection stays read-only after the file is writable again:
/// pooled, it would refuse every write it is given for as long as it lives.
/// Refused here, the acquire that opened it fails (503) and the next one
/// opens a new connection. Taking the write lock and letting it go costs
/// one write of the header's `user_version`, to the value it has, in a
/// transaction rolled back, per connection opened (the pool keeps them).
/// A write it must be: in WAL mode `BEGIN IMMEDIATE` succeeds on a
/// read-only connection.
async fn refuse_read_only(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let wrote = async {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(&format!("PRAGMA user_version = {version}"))
            .execute(&mut *conn)
            .await
    }
    .await;
    let rolled_back = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    wrote?;
    rolled_back?;
    Ok(())
}

/// Refuses a damaged file before anything reads or writes it: SQLite finds
/// damage only in the pages a query happens to touch, so a node would
/// otherwise serve, and answer ready, with garbage in pages it reads later.
/// `PRAGMA quick_check` reads every page once (O(size): about a second for
/// 1 GB), so it runs at start-up only.
async fn quick_check(pool: &SqlitePool, url: &str) -> anyhow::Result<()> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(pool)
        .await
        .with_context(|| format!("database_url: {url} is corrupt: PRAGMA quick_check failed"))?;
    match problems.first() {
        Some(first) if first == "ok" => Ok(()),
        Some(first) => anyhow::bail!(
            "database_url: {url} is corrupt (PRAGMA quick_check found {} problem(s), \
             the first: {first}); restore it from a backup",
            problems.len()
        ),
        None => anyhow::bail!("database_url: {url}: PRAGMA quick_check answered nothing"),
    }
}

/// Whether a connection going back to the pool may be used again: not when
/// sqlx still counts it inside a transaction.
///
/// A COMMIT that fails (SQLITE_FULL on a full disk, SQLITE_IOERR) may be
/// followed by SQLite rolling the transaction back on its own; sqlx's own
/// ROLLBACK then fails, its count of open transactions stays at one, and the
/// connection's next `begin()` opens a SAVEPOINT instead of a transaction.
/// Reused, such a connection acknowledges "commits" that stay invisible to
/// every other connection and vanish when it closes: acknowledged writes
/// lost. Closing it instead costs one reconnection after a failure.
async fn release_unless_in_transaction(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A transaction dropped without a commit queues its ROLLBACK on the
    // connection's worker; a statement sent now runs after it, so the count
    // read afterwards is the settled one.
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    if conn.is_in_transaction() {
        tracing::warn!("closing a database connection left inside a failed transaction");
        return Ok(false);
    }
    Ok(true)
}

/// The `mode` parameter of a `sqlite://` URL (`ro`, `rw`, `rwc`, `memory`).
fn url_mode(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.into_owned())
}

/// The database file's permissions. It holds the password hashes and,
/// without `key_encryption_key`, the private signing keys: anyone who can
/// read it can mint tokens, so it is for the service's user alone.
mod files {
    use std::path::Path;

    /// The database file and the two SQLite keeps beside it in WAL mode.
    #[cfg(unix)]
    const SUFFIXES: [&str; 3] = ["", "-wal", "-shm"];

    /// Creates `path`, empty, with mode 0600 (less if the umask says so),
    /// unless it exists. `O_CREAT | O_EXCL` with the mode: no moment in
    /// which the file is open to others, and no symbolic link followed.
    /// SQLite takes an empty file for an empty database, and creates the
    /// `-wal`, `-shm` and `-journal` files with exactly the database file's
    /// mode (`robust_open` in its Unix VFS, whatever the umask), so they
    /// are private too. The umask is not touched: it is the whole process's,
    /// and other threads create files meanwhile.
    ///
    /// # Errors
    /// When the file does not exist and cannot be created (such as a
    /// missing directory: gatehouse does not create directories).
    #[cfg(unix)]
    pub(super) fn create_private(path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Warns, once per file, when the database file or its `-wal` or `-shm`
    /// grants group or others any access, with the command that fixes it.
    /// An existing file's mode is the operator's: it is reported, never
    /// changed (docs/operations.md).
    #[cfg(unix)]
    pub(super) fn warn_if_exposed(db: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in SUFFIXES {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            // Absolute, so the command works wherever it is run.
            let path = std::path::absolute(&name).unwrap_or_else(|_| name.into());
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = %format_args!("{mode:04o}"),
                    "the database file is open to other users (it holds password hashes and \
                     signing keys; gatehouse leaves an existing file's mode alone): run \
                     `chmod 600 {}`",
                    path.display()
                );
            }
        }
    }

    #[cfg(not(unix))]
    pub(super) fn create_private(_: &Path) -> std::io::Result<()> {
        Ok(())
    }

    #[cfg(not(unix))]
    pub(super) fn warn_if_exposed(_: &Path) {}
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<UserRecord> {
    let roles: Option<String> = row.get("roles");
    let mut roles: Vec<String> = roles
        .unwrap_or_default()
        .split(LIST_SEPARATOR)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    roles.sort();
    Ok(UserRecord {
        id: UserId(parse_uuid(row.get("id"))?),
        email: row.get("email"),
        password_hash: row.get("password_hash"),
        created_at: from_millis(row.get("created_at")),
        disabled: row.get::<i64, _>("disabled") != 0,
        roles,
    })
}

fn parse_uuid(s: String) -> anyhow::Result<Uuid> {
    Uuid::try_parse(&s).with_context(|| format!("a stored id is not a UUID: {s:?}"))
}

/// What lists folded into one column are joined with: the unit separator,
/// which no role name or permission can hold.
const LIST_SEPARATOR: char = '\u{1f}';

/// A user with their roles in one row.
macro_rules! user_select {
    ($where:literal) => {
        concat!(
            "SELECT id, email, password_hash, created_at, disabled, ",
            "(SELECT group_concat(role, char(31)) FROM user_roles WHERE user_id = users.id) AS roles ",
            "FROM users ",
            $where
        )
    };
}

const USER_BY_EMAIL: &str = user_select!("WHERE email = ?");
const USER_BY_ID: &str = user_select!("WHERE id = ?");
const USERS_AFTER: &str = user_select!("WHERE id > ? ORDER BY id LIMIT ?");

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, CreateUserError> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at, disabled) VALUES (?, ?, ?, ?, 0)",
        )
        .bind(user.id.0.to_string())
        .bind(user.email.as_str())
        .bind(&user.password_hash)
        .bind(to_millis(user.created_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && e.message().contains("users.email") =>
            {
                return Err(CreateUserError::EmailTaken);
            }
            Err(e) => return Err(anyhow::Error::new(e).context("inserting a user").into()),
        }
        // Each role once, in the order given, so an unknown one is named as
        // the caller listed it.
        let mut roles: Vec<&RoleName> = Vec::with_capacity(user.roles.len());
        for role in &user.roles {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        for role in roles {
            // Insert only an existing role, so an unknown one is reported by
            // name instead of as a bare foreign-key failure.
            let done = sqlx::query(
                "INSERT OR IGNORE INTO user_roles (user_id, role) SELECT ?, name FROM roles WHERE name = ?",
            )
            .bind(user.id.0.to_string())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .context("assigning a role")?;
            if done.rows_affected() == 0 {
                return Err(CreateUserError::UnknownRole(role.as_str().to_owned()));
            }
        }
        tx.commit().await.context("committing a new user")?;
        let mut roles: Vec<String> = user.roles.iter().map(|r| r.as_str().to_owned()).collect();
        roles.sort();
        roles.dedup();
        Ok(UserRecord {
            id: user.id,
            email: user.email.as_str().to_owned(),
            password_hash: user.password_hash,
            created_at: from_millis(to_millis(user.created_at)),
            disabled: false,
            roles,
        })
    }

    async fn user_by_email(&self, email: &Email) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(USER_BY_EMAIL, email.as_str().to_owned())
            .await
    }

    async fn user_by_id(&self, id: UserId) -> anyhow::Result<Option<UserRecord>> {
        self.user_where(USER_BY_ID, id.0.to_string()).await
    }

    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await
            .context("updating a password hash")?;
        Ok(done.rows_affected() == 1)
    }

    async fn permissions_of(&self, id: UserId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT rp.permission FROM user_roles ur \
             JOIN role_permissions rp ON rp.role = ur.role \
             WHERE ur.user_id = ? ORDER BY rp.permission",
        )
        .bind(id.0.to_string())
        .fetch_all(&self.pool)
        .await
        .context("reading a user's permissions")
    }

    async fn put_role(&self, name: &RoleName, permissions: &[String]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        put_role_on(&mut tx, name, permissions).await?;
        tx.commit().await.context("committing a role")?;
        Ok(())
    }

    async fn list_users(
        &self,
        after: Option<UserId>,
        limit: u32,
    ) -> anyhow::Result<Vec<UserRecord>> {
        // UUID v7 text sorts by creation time, so the id is the cursor.
        sqlx::query(USERS_AFTER)
            .bind(after.map(|a| a.0.to_string()).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .context("listing users")?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_disabled(&self, id: UserId, disabled: bool) -> anyhow::Result<bool> {
        set_disabled_on(&self.pool, id, disabled).await
    }

    async fn delete_user(&self, id: UserId) -> anyhow::Result<bool> {
        delete_user_on(&self.pool, id).await
    }

    async fn set_roles(&self, id: UserId, roles: &[RoleName]) -> Result<bool, RolesError> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        if !set_roles_on(&mut tx, id, roles).await? {
            return Ok(false);
        }
        tx.commit().await.context("committing a user's roles")?;
        Ok(true)
    }

    async fn roles(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT name, (SELECT group_concat(permission, char(31)) FROM role_permissions WHERE role = roles.name) \
             FROM roles ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .context("listing roles")?;
        Ok(rows
            .into_iter()
            .map(|(name, perms)| {
                let mut perms: Vec<String> = perms
                    .unwrap_or_default()
                    .split(LIST_SEPARATOR)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
                perms.sort();
                (name, perms)
            })
            .collect())
    }

    async fn delete_role(&self, name: &RoleName) -> anyhow::Result<bool> {
        delete_role_on(&self.pool, name).await
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
             WHERE u.disabled = 0 AND rp.permission = ?)",
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
            .execute(&self.pool)
            .await
            .context("pinging SQLite")?;
        // And write: a full disk or a read-only file answers every read
        // while refusing every write. The count makes every probe change
        // the row: SQLite writes nothing for an unchanged one.
        sqlx::query(
            "INSERT INTO readiness_probe (id, probed_at, probes) VALUES (1, ?, 1) \
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

/// Sets a user's disabled flag; `false` when there is no such user.
async fn set_disabled_on(
    db: impl SqliteExecutor<'_>,
    id: UserId,
    disabled: bool,
) -> anyhow::Result<bool> {
    let done = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
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
    let done = sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id.0.to_string())
        .execute(db)
        .await
        .context("deleting a user")?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a role and its assignments; `false` when there was none.
async fn delete_role_on(db: impl SqliteExecutor<'_>, name: &RoleName) -> anyhow::Result<bool> {
    let done = sqlx::query("DELETE FROM roles WHERE name = ?")
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
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?")
        .bind(id.0.to_string())
        .fetch_optional(&mut *con)
        .await
        .context("reading a user")?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = ?")
        .bind(id.0.to_string())
        .execute(&mut *con)
        .await
        .context("clearing a user's roles")?;
    for role in roles {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO user_roles (user_id, role) SELECT ?, name FROM roles WHERE name = ?",
        )
        .bind(id.0.to_string())
        .bind(role.as_str())
        .execute(&mut *con)
        .await
        .context("assigning a role")?;
        if done.rows_affected() == 0 {
            let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM roles WHERE name = ?")
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
    sqlx::query("INSERT OR IGNORE INTO roles (name) VALUES (?)")
        .bind(name.as_str())
        .execute(&mut *con)
        .await
        .context("creating a role")?;
    sqlx::query("DELETE FROM role_permissions WHERE role = ?")
        .bind(name.as_str())
        .execute(&mut *con)
        .await
        .context("clearing a role's permissions")?;
    for p in permissions {
        sqlx::query("INSERT OR IGNORE INTO role_permissions (role, permission) VALUES (?, ?)")
            .bind(name.as_str())
            .bind(p)
            .execute(&mut *con)
            .await
            .context("granting a permission")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_mode_is_read_from_the_query() {
        assert_eq!(url_mode("sqlite://g.db"), None);
        assert_eq!(url_mode("sqlite://g.db?mode=ro").as_deref(), Some("ro"));
        assert_eq!(
            url_mode("sqlite://g.db?cache=shared&mode=memory").as_deref(),
            Some("memory")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let mode = |p: &std::path::Path| {
            std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
        };
        let new = dir.path().join("new.db");
        files::create_private(&new).expect("created");
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        files::create_private(&old).expect("left alone");
        assert_eq!(mode(&old), 0o644);
        let missing = dir.path().join("no-such-dir").join("g.db");
        assert!(files::create_private(&missing).is_err());
    }
}
