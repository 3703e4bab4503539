//! The embedded store: users, roles and sessions in one SQLite file, via
//! sqlx, with migrations applied at open. Here, opening the file and keeping
//! its connections sound; the statements, by aggregate, are in `store/sql/`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection, SqlitePool};

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
/// The file a `sqlite://` URL names, or `None` for an in-memory database.
///
/// # Errors
/// When the URL cannot be parsed as a SQLite URL.
pub fn database_file(url: &str) -> anyhow::Result<Option<std::path::PathBuf>> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| "database_url: not a valid sqlite:// URL")?;
    Ok((url_mode(url).as_deref() != Some("memory")).then(|| options.get_filename().to_owned()))
}

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
