//! Memory per live session at a million sessions. Creates SESSIONS live
//! sessions in each store through the path a login takes
//! (`Sessions::start`: a fresh secret, its SHA-256, the record with the
//! client's user agent and IP, `SessionStore::insert_session`) and reports
//! what they occupy there; then what a gatehouse node keeps in its own
//! memory per session (session cache and revocation set entries), measured
//! on the real binary. Results go to docs/benchmarks.md.
//!
//! - SQLite: the growth of a temporary database file, WAL included (after a
//!   checkpoint, so every page is counted once).
//! - PostgreSQL: `pg_total_relation_size('sessions')` (heap, TOAST and every
//!   index) in a fresh database, dropped at the end.
//! - Redis: the growth of `used_memory` (`INFO memory`) under a fresh key
//!   prefix as long as the default one: every key a session writes (its
//!   record, the secret index, the user's index and the two sweeping
//!   indexes) and the keyspace's own tables. The keys are deleted at the end.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on
//! 127.0.0.1:6379, as the test suite does, and, for the node's own memory,
//! the release binary next to this example. Run:
//!
//! ```sh
//! cargo build --release --locked -p gatehouse
//! cargo run --release -p gatehouse --example session_memory -- [SESSIONS] [STORE...]
//! ```
//!
//! (1,000,000 sessions and every store by default; STORE is `sqlite`,
//! `postgres` or `redis`). Accounts hold four sessions each; they are
//! created first and not counted.

use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{StreamExt as _, TryStreamExt as _};
use gatehouse::Config;
use gatehouse::auth::audit::{Actor, Ending};
use gatehouse::auth::types::{Email, Password, SessionId, UserId};
use gatehouse::auth::{ClientMeta, Hasher, Services};
use gatehouse::config::DatabaseUrl;
use gatehouse::store::cache::CAPACITY;
use gatehouse::store::{NewUser, UserRecord, UserStore};
use sqlx::Connection as _;
use time::OffsetDateTime;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const PG_HOW_TO_START: &str = "start it with `pg_ctlcluster 15 main start` (as root) or \
     `bash scripts/test.sh`; it must trust user postgres on 127.0.0.1";
const REDIS_HOW_TO_START: &str = "start it with `redis-server --daemonize yes --bind 127.0.0.1 \
     --port 6379 --save \"\" --appendonly no` or `bash scripts/test.sh`";

const DEFAULT_SESSIONS: usize = 1_000_000;

/// A few devices per account.
const SESSIONS_PER_USER: usize = 4;

/// What a desktop browser sends (111 bytes); the record keeps it.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// 198.18.0.0/15 (RFC 2544's benchmarking block): client addresses of 10
/// to 14 characters, as public IPv4 addresses are.
const CLIENT_NET: u32 = 0xC612_0000;

const PASSWORD: &str = "correct horse battery staple";
const ISSUER: &str = "http://gatehouse.bench";

/// Sessions authenticated through a node before its memory is first read:
/// connections, pools and buffers reach their working size.
const WARM_UP: usize = 1_000;

/// Sessions ended while the node's revocation set is watched.
const REVOKED: usize = 100_000;

fn main() -> anyhow::Result<()> {
    let (sessions, stores) = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(sessions, &stores))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
    Redis,
}

impl Store {
    const ALL: [Self; 3] = [Self::Sqlite, Self::Postgres, Self::Redis];

    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
            Self::Redis => "Redis",
        }
    }
}

/// `[SESSIONS] [STORE...]`.
fn parse_args() -> anyhow::Result<(usize, Vec<Store>)> {
    let mut sessions = DEFAULT_SESSIONS;
    let mut stores = Vec::new();
    for (i, arg) in std::env::args().skip(1).enumerate() {
        let digits: String = arg.chars().filter(|c| !matches!(c, '_' | ',')).collect();
        if i == 0
            && let Ok(n) = digits.parse::<usize>()
        {
            anyhow::ensure!(
                n >= 3 * SESSIONS_PER_USER,
                "SESSIONS: at least {}",
                3 * SESSIONS_PER_USER
            );
            sessions = n;
            continue;
        }
        let store = match arg.to_ascii_lowercase().as_str() {
            "sqlite" => Store::Sqlite,
            "postgres" | "postgresql" | "pg" => Store::Postgres,
            "redis" => Store::Redis,
            _ => anyhow::bail!(
                "usage: session_memory [SESSIONS] [sqlite|postgres|redis]...; got {arg:?}"
            ),
        };
        if !stores.contains(&store) {
            stores.push(store);
        }
    }
    if stores.is_empty() {
        stores = Store::ALL.to_vec();
    }
    Ok((sessions, stores))
}

/// One store's figures.
struct Row {
    store: Store,
    sessions: usize,
    bytes: u64,
    took: Duration,
    counted: &'static str,
    /// Where the bytes went.
    notes: Vec<String>,
}

/// One measurement of the node's memory.
struct NodeStep {
    what: &'static str,
    entries: usize,
    before: Rss,
    after: Rss,
    bound: String,
}

/// A process's resident memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Rss {
    /// `RssAnon`: the heap and stacks, what the steps grow.
    anon_kib: u64,
    /// `VmRSS`: with the mapped binary and libraries.
    total_kib: u64,
}

async fn run(sessions: usize, stores: &[Store]) -> anyhow::Result<()> {
    // Every service is checked before any work: a store that is down fails
    // the run, it is never skipped.
    let needs_pg = stores.iter().any(|s| *s != Store::Sqlite);
    if needs_pg {
        check_postgres().await?;
    }
    let binary = if stores.contains(&Store::Redis) {
        check_redis().await?;
        Some(server_binary()?)
    } else {
        None
    };
    let mut rows = Vec::new();
    if stores.contains(&Store::Sqlite) {
        rows.push(sqlite(sessions).await?);
    }
    let mut node = Vec::new();
    if needs_pg {
        // One database holds the accounts for both shared shapes (with
        // Redis, users stay in PostgreSQL).
        let pg = PgDatabase::create().await?;
        let measured = async {
            let stores_pg =
                gatehouse::store::open_sql(&DatabaseUrl::Postgres(pg.url().into())).await?;
            let users = create_users(stores_pg.users.as_ref(), sessions, 16).await?;
            drop(stores_pg);
            if stores.contains(&Store::Postgres) {
                rows.push(postgres(&pg, &users, sessions).await?);
            }
            if let Some(binary) = &binary {
                let (row, steps) = redis(&pg, &users, sessions, binary).await?;
                rows.push(row);
                node = steps;
            }
            anyhow::Ok(())
        }
        .await;
        let dropped = pg.drop_now().await;
        measured?;
        dropped?;
    }
    print_report(sessions, &rows, &node);
    Ok(())
}

fn print_report(sessions: usize, rows: &[Row], node: &[NodeStep]) {
    println!(
        "\n{} live sessions per store, {SESSIONS_PER_USER} per account; each as a browser \
         login writes it (user agent of {} bytes, IPv4 address).\n",
        thousands(sessions as u64),
        USER_AGENT.len()
    );
    println!("| store | sessions | bytes/session | total MB | time to create | counted |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} s ({}/s) | {} |",
            r.store.name(),
            thousands(r.sessions as u64),
            thousands(r.bytes / r.sessions as u64),
            r.bytes as f64 / 1e6,
            r.took.as_secs_f64(),
            thousands((r.sessions as f64 / r.took.as_secs_f64()) as u64),
            r.counted
        );
    }
    for r in rows {
        for note in &r.notes {
            println!("\n{}: {note}", r.store.name());
        }
    }
    if node.is_empty() {
        return;
    }
    println!(
        "\nWhat one node keeps in its own memory (`gatehouse serve`, PostgreSQL + Redis, the \
         sessions above in Redis): anonymous RSS of the process around each step.\n"
    );
    println!(
        "| step | entries | RssAnon before | RssAnon after | growth/entry (bytes) | VmRSS after | \
         bound |"
    );
    println!("|---|---|---|---|---|---|---|");
    for s in node {
        let delta = s.after.anon_kib as i64 - s.before.anon_kib as i64;
        let per = if s.entries == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}", delta as f64 * 1024.0 / s.entries as f64)
        };
        println!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {per} | {:.1} MiB | {} |",
            s.what,
            thousands(s.entries as u64),
            s.before.anon_kib as f64 / 1024.0,
            s.after.anon_kib as f64 / 1024.0,
            s.after.total_kib as f64 / 1024.0,
            s.bound
        );
    }
}

// ---------------------------------------------------------------------------
// Accounts and sessions
// ---------------------------------------------------------------------------

/// `sessions / SESSIONS_PER_USER` accounts, through the store (one real
/// argon2id hash, shared: nobody logs in with these).
async fn create_users(
    users: &dyn UserStore,
    sessions: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<UserRecord>> {
    let count = sessions.div_ceil(SESSIONS_PER_USER);
    let started = Instant::now();
    let hash = Hasher::new(1, 1)?
        .hash(Password::new(PASSWORD.to_owned()))
        .await
        .context("hashing the accounts' password")?;
    let created: Vec<UserRecord> = futures_util::stream::iter(0..count)
        .map(|i| {
            let password_hash = hash.clone();
            async move {
                let email = Email::parse(&format!("member{i}@bench.example"))
                    .map_err(|m| anyhow::anyhow!("email {m}"))?;
                users
                    .create_user(NewUser {
                        id: UserId::new(),
                        email,
                        password_hash,
                        created_at: OffsetDateTime::now_utc(),
                        roles: Vec::new(),
                    })
                    .await
                    .context("creating an account")
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    eprintln!(
        "session_memory: {} accounts in {:.1} s",
        thousands(count as u64),
        started.elapsed().as_secs_f64()
    );
    Ok(created)
}

/// A created session, as far as the node measurements need it.
struct Kept {
    user: UserId,
    id: SessionId,
    hash: [u8; 32],
    cookie: String,
}

struct Created {
    took: Duration,
    /// The first `keep` sessions created.
    kept: Vec<Kept>,
}

/// `n` sessions through `Sessions::start`, round-robin over the
/// accounts, `concurrency` at a time.
async fn create_sessions(
    label: &str,
    auth: &Services,
    users: &[UserRecord],
    n: usize,
    keep: usize,
    concurrency: usize,
) -> anyhow::Result<Created> {
    let started = Instant::now();
    let mut kept = Vec::with_capacity(keep.min(n));
    let mut stream = futures_util::stream::iter(0..n)
        .map(|i| {
            let user = &users[i % users.len()];
            let client = ClientMeta {
                ip: Some(IpAddr::V4(Ipv4Addr::from(
                    CLIENT_NET | (i as u32 & 0x1_ffff),
                ))),
                user_agent: Some(USER_AGENT.to_owned()),
            };
            async move {
                let new = auth
                    .sessions
                    .start(user, &client, gatehouse::model::amr::Amr::PASSWORD)
                    .await
                    .context("creating a session")?;
                anyhow::Ok(Kept {
                    user: new.record.user_id,
                    id: new.record.id,
                    hash: new.record.secret_hash.0,
                    cookie: new.secret.encode(),
                })
            }
        })
        .buffer_unordered(concurrency);
    let mut done = 0usize;
    while let Some(session) = stream.next().await {
        let session = session?;
        if kept.len() < keep {
            kept.push(session);
        }
        done += 1;
        if done.is_multiple_of(100_000) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "session_memory: {label}: {} sessions, {:.0} s, {}/s",
                thousands(done as u64),
                secs,
                thousands((done as f64 / secs) as u64)
            );
        }
    }
    Ok(Created {
        took: started.elapsed(),
        kept,
    })
}

/// An application on `database_url` (and Redis under `prefix`), built but
/// not serving: its `Services` are what a node's login handler calls.
async fn build_auth(database_url: DatabaseUrl, prefix: Option<&str>) -> anyhow::Result<Services> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url,
        redis_url: prefix.map(|_| REDIS_URL.into()),
        redis_key_prefix: prefix.unwrap_or("gatehouse:").to_owned(),
        issuer: Some(ISSUER.to_owned()),
        cookie_secure: false,
        ..Config::default()
    };
    Ok(gatehouse::Application::build(config).await?.services())
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

async fn sqlite(n: usize) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let path = dir.path().join("sessions.db");
    let url = format!("sqlite://{}", path.display());
    let database_url = DatabaseUrl::Sqlite(url.clone());
    let stores = gatehouse::store::open_sql(&database_url).await?;
    let users = create_users(stores.users.as_ref(), n, 8).await?;
    drop(stores);
    let auth = build_auth(database_url, None).await?;
    let before = sqlite_bytes(&url, &path).await?;
    let created = create_sessions("SQLite", &auth, &users, n, 0, 8).await?;
    let wal_left = file_len(&wal_path(&path))?;
    let as_left = file_len(&path)? + wal_left;
    let after = sqlite_bytes(&url, &path).await?;
    let mut con = sqlite_connection(&url).await?;
    // dbstat: the pages of the sessions table and of each of its indexes.
    let pages: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.name, SUM(d.pgsize) FROM dbstat AS d JOIN sqlite_schema AS s \
         ON s.name = d.name WHERE s.tbl_name = 'sessions' GROUP BY s.name ORDER BY 2 DESC",
    )
    .fetch_all(&mut con)
    .await
    .context("reading dbstat")?;
    con.close().await?;
    let per = |bytes: i64| bytes as f64 / n as f64;
    let parts: Vec<String> = pages
        .iter()
        .map(|(name, bytes)| format!("{name} {:.0}", per(*bytes)))
        .collect();
    Ok(Row {
        store: Store::Sqlite,
        sessions: n,
        bytes: after.saturating_sub(before),
        took: created.took,
        counted: "growth of the database file + WAL, after a checkpoint",
        notes: vec![format!(
            "bytes/session by b-tree (dbstat): {}. Before the checkpoint the WAL held \
             {:.1} MB (file + WAL then {:.0} bytes/session)",
            parts.join(", "),
            wal_left as f64 / 1e6,
            as_left.saturating_sub(before) as f64 / n as f64
        )],
    })
}

async fn sqlite_connection(url: &str) -> anyhow::Result<sqlx::SqliteConnection> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    Ok(sqlx::SqliteConnection::connect_with(&options).await?)
}

/// The file and its WAL, after moving every page into the file.
async fn sqlite_bytes(url: &str, path: &Path) -> anyhow::Result<u64> {
    let mut con = sqlite_connection(url).await?;
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut con)
        .await
        .context("checkpointing the WAL")?;
    con.close().await?;
    anyhow::ensure!(busy == 0, "the WAL checkpoint could not finish");
    Ok(file_len(path)? + file_len(&wal_path(path))?)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading the size of {}", path.display())),
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// A database of this run's own.
struct PgDatabase {
    name: String,
}

impl PgDatabase {
    async fn create() -> anyhow::Result<Self> {
        let name = format!("gh_bench_mem_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        admin.close().await?;
        Ok(Self { name })
    }

    fn url(&self) -> String {
        format!("{PG_SERVER}/{}", self.name)
    }

    /// FORCE ends the connections pools still hold.
    async fn drop_now(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        admin.close().await?;
        Ok(())
    }
}

async fn check_postgres() -> anyhow::Result<()> {
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::PgConnection::connect(PG_ADMIN),
    );
    match connect.await {
        Ok(Ok(con)) => Ok(con.close().await?),
        Ok(Err(e)) => {
            anyhow::bail!("PostgreSQL is not reachable at {PG_ADMIN} ({e}); {PG_HOW_TO_START}")
        }
        Err(_) => {
            anyhow::bail!("PostgreSQL at {PG_ADMIN} did not answer within 5 s; {PG_HOW_TO_START}")
        }
    }
}

async fn postgres(pg: &PgDatabase, users: &[UserRecord], n: usize) -> anyhow::Result<Row> {
    let auth = build_auth(DatabaseUrl::Postgres(pg.url().into()), None).await?;
    let mut con = sqlx::PgConnection::connect(&pg.url()).await?;
    let size = "SELECT pg_total_relation_size('sessions'), pg_relation_size('sessions'), \
                pg_indexes_size('sessions')";
    let (before, _, _): (i64, i64, i64) = sqlx::query_as(size).fetch_one(&mut con).await?;
    let created = create_sessions("PostgreSQL", &auth, users, n, 0, 32).await?;
    // What autovacuum would leave: visibility and free-space maps in place.
    sqlx::raw_sql("VACUUM (ANALYZE) sessions")
        .execute(&mut con)
        .await?;
    let (after, heap, indexes): (i64, i64, i64) = sqlx::query_as(size).fetch_one(&mut con).await?;
    let by_index: Vec<(String, i64)> = sqlx::query_as(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index \
         WHERE indrelid = 'sessions'::regclass ORDER BY 2 DESC",
    )
    .fetch_all(&mut con)
    .await?;
    con.close().await?;
    let per = |bytes: i64| bytes as f64 / n as f64;
    let parts: Vec<String> = by_index
        .iter()
        .map(|(name, bytes)| format!("{name} {:.0}", per(*bytes)))
        .collect();
    Ok(Row {
        store: Store::Postgres,
        sessions: n,
        bytes: u64::try_from(after - before).unwrap_or(0),
        took: created.took,
        counted: "pg_total_relation_size('sessions'): heap, TOAST, indexes",
        notes: vec![format!(
            "bytes/session: heap {:.0}, indexes {:.0} ({}), the rest maps and TOAST",
            per(heap),
            per(indexes),
            parts.join(", ")
        )],
    })
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

async fn check_redis() -> anyhow::Result<()> {
    let client = redis::Client::open(REDIS_URL)?;
    let ping = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    match tokio::time::timeout(Duration::from_secs(5), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            anyhow::bail!("Redis is not reachable at {REDIS_URL} ({e}); {REDIS_HOW_TO_START}")
        }
        Err(_) => {
            anyhow::bail!("Redis at {REDIS_URL} did not answer within 5 s; {REDIS_HOW_TO_START}")
        }
    }
}

async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(con).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory without used_memory")
}

async fn memory_usage(
    con: &mut redis::aio::MultiplexedConnection,
    key: &[u8],
) -> anyhow::Result<u64> {
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(1000)
        .query_async(con)
        .await?;
    bytes.context("MEMORY USAGE of a missing key")
}

fn key(prefix: &str, kind: &str, id: &[u8]) -> Vec<u8> {
    [prefix.as_bytes(), kind.as_bytes(), id].concat()
}

/// Deletes every key under `prefix`.
async fn delete_keys(
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> anyhow::Result<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(con)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(con)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn redis(
    pg: &PgDatabase,
    users: &[UserRecord],
    n: usize,
    binary: &Path,
) -> anyhow::Result<(Row, Vec<NodeStep>)> {
    // As long as the default `gatehouse:`, so key names weigh what they
    // weigh in production; the end of a v7 UUID is random.
    let random = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("gh{}:", &random[random.len() - 7..]);
    let mut con = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let measured = redis_measured(pg, users, n, binary, &prefix, &mut con).await;
    let deleted = delete_keys(&mut con, &prefix).await;
    eprintln!(
        "session_memory: Redis: {} keys under {prefix} deleted",
        deleted.as_ref().map_or(0, |d| *d)
    );
    let measured = measured?;
    deleted?;
    Ok(measured)
}

async fn redis_measured(
    pg: &PgDatabase,
    users: &[UserRecord],
    n: usize,
    binary: &Path,
    prefix: &str,
    con: &mut redis::aio::MultiplexedConnection,
) -> anyhow::Result<(Row, Vec<NodeStep>)> {
    let plan = NodePlan::for_sessions(n);
    let auth = build_auth(DatabaseUrl::Postgres(pg.url().into()), Some(prefix)).await?;
    let before = used_memory(con).await?;
    let created = create_sessions("Redis", &auth, users, n, plan.kept(), 64).await?;
    // Redis grows its keyspace tables by rehashing incrementally.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(con).await?;

    // Each key's share, from a sample: what MEMORY USAGE sees (value, key
    // name, entry) leaves out the keyspace's bucket arrays and the expiry
    // table, which the growth of used_memory includes.
    let sample = &created.kept[..created.kept.len().min(1_000)];
    let (mut record, mut secret, mut per_user) = (0, 0, 0.0);
    for k in sample {
        record += memory_usage(con, &key(prefix, "s:", k.id.to_string().as_bytes())).await?;
        secret += memory_usage(con, &key(prefix, "sh:", &k.hash)).await?;
        let user_key = key(prefix, "u:", k.user.to_string().as_bytes());
        let members: u64 = redis::cmd("ZCARD")
            .arg(&user_key)
            .query_async(&mut *con)
            .await?;
        per_user += memory_usage(con, &user_key).await? as f64 / members.max(1) as f64;
    }
    let each = |sum: f64| sum / sample.len() as f64;
    let sweeping = (memory_usage(con, &key(prefix, "exp", b"")).await?
        + memory_usage(con, &key(prefix, "seen", b"")).await?) as f64
        / n as f64;
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key(prefix, "s:", sample[0].id.to_string().as_bytes()))
        .query_async(&mut *con)
        .await?;
    let keys_sum = each(record as f64) + each(secret as f64) + each(per_user) + sweeping;
    let bytes = after.saturating_sub(before);
    let row = Row {
        store: Store::Redis,
        sessions: n,
        bytes,
        took: created.took,
        counted: "growth of used_memory (INFO memory)",
        notes: vec![format!(
            "bytes/session by key (MEMORY USAGE, {} sampled): record `s:` hash {:.0} \
             (encoding {encoding}), secret index `sh:` {:.0}, share of the user's `u:` index {:.0}, share of the `exp` and \
             `seen` indexes {:.0}; {:.0} in all; the other {:.0} are the keyspace's and the \
             expiry table's own arrays and entries (they grow by doubling, so this share steps \
             with the count of keys)",
            sample.len(),
            each(record as f64),
            each(secret as f64),
            each(per_user),
            sweeping,
            keys_sum,
            bytes as f64 / n as f64 - keys_sum
        )],
    };
    let steps = node_memory(binary, pg, prefix, &auth, &created.kept, &plan).await?;
    Ok((row, steps))
}

// ---------------------------------------------------------------------------
// The node's own memory
// ---------------------------------------------------------------------------

/// How many sessions each step of the node measurement uses.
struct NodePlan {
    warm: usize,
    fill: usize,
    overflow: usize,
    revoke: usize,
}

impl NodePlan {
    fn for_sessions(n: usize) -> Self {
        let fill = CAPACITY.min(n / 3);
        Self {
            warm: WARM_UP.min(fill / 4),
            fill,
            overflow: fill,
            revoke: REVOKED.min(n - 2 * fill),
        }
    }

    fn kept(&self) -> usize {
        self.fill + self.overflow + self.revoke
    }
}

/// A `gatehouse serve` process; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release binary next to this example (`target/release/gatehouse`).
fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("gatehouse"))
        .context("locating the target directory")?;
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: the node's memory is measured on the real server; build it with \
         `cargo build --release --locked -p gatehouse`",
        binary.display()
    );
    Ok(binary)
}

impl Node {
    async fn start(binary: &Path, pg: &PgDatabase, prefix: &str) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg("serve").env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child = cmd
            .envs([
                ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
                ("GATEHOUSE_DATABASE_URL", pg.url().as_str()),
                ("GATEHOUSE_REDIS_URL", REDIS_URL),
                ("GATEHOUSE_REDIS_KEY_PREFIX", prefix),
                ("GATEHOUSE_COOKIE_SECURE", "false"),
                ("GATEHOUSE_ISSUER", ISSUER),
                ("RUST_LOG", "warn"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the first line, then keeps the pipe drained.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut node = Self {
            child,
            base: String::new(),
        };
        let line = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("the node printed nothing within 10 s")??
            .context("the node exited before listening")??;
        node.base = line
            .strip_prefix("listening on ")
            .with_context(|| format!("the node's first line: {line:?}"))?
            .to_owned();
        Ok(node)
    }

    fn rss(&self) -> anyhow::Result<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{name} in /proc/PID/status"))
        };
        Ok(Rss {
            anon_kib: field("RssAnon:")?,
            total_kib: field("VmRSS:")?,
        })
    }

    /// Waits until the node is ready and follows the revocation feed.
    async fn following(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(res) = http.get(format!("{}/readyz", self.base)).send().await {
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                if body["checks"]["revocation_feed"] == "connected" {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the node did not follow the revocation feed within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's `gatehouse_revoked_sessions` gauge.
    async fn revoked(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find(|l| l.starts_with("gatehouse_revoked_sessions"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .context("gatehouse_revoked_sessions in /metrics")
    }

    /// `GET /v1/verify` with each session's cookie, 16 at a time; every
    /// answer must be 200.
    async fn authenticate(&self, http: &reqwest::Client, sessions: &[Kept]) -> anyhow::Result<()> {
        let url = format!("{}/v1/verify", self.base);
        futures_util::stream::iter(sessions)
            .map(|k| {
                let req = http
                    .get(&url)
                    .header("cookie", format!("gatehouse={}", k.cookie))
                    .header("x-original-method", "GET")
                    .header("x-original-uri", "/app");
                async move {
                    let status = req.send().await?.status();
                    anyhow::ensure!(
                        status.is_success(),
                        "GET /v1/verify with a cookie: {status}"
                    );
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await
    }
}

/// RSS of a fresh node around each step: sessions authenticated into its
/// cache up to its capacity, past it, then sessions ended elsewhere
/// reaching its revocation set through the feed.
async fn node_memory(
    binary: &Path,
    pg: &PgDatabase,
    prefix: &str,
    auth: &Services,
    kept: &[Kept],
    plan: &NodePlan,
) -> anyhow::Result<Vec<NodeStep>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .timeout(Duration::from_secs(30))
        .build()?;
    let node = Node::start(binary, pg, prefix).await?;
    node.following(&http).await?;
    let settle = || tokio::time::sleep(Duration::from_secs(1));
    settle().await;
    let idle = node.rss()?;
    let mut steps = Vec::new();

    let (warm, rest) = kept[..plan.fill].split_at(plan.warm);
    node.authenticate(&http, warm).await?;
    settle().await;
    let warmed = node.rss()?;
    steps.push(NodeStep {
        what: "start, then a warm-up of distinct session cookies",
        entries: 0,
        before: idle,
        after: warmed,
        bound: format!(
            "{} sessions: pools and buffers",
            thousands(plan.warm as u64)
        ),
    });
    node.authenticate(&http, rest).await?;
    settle().await;
    let filled = node.rss()?;
    steps.push(NodeStep {
        what: "session cache filled (GET /v1/verify, one cookie each)",
        entries: rest.len(),
        before: warmed,
        after: filled,
        bound: format!(
            "{} entries (`session_cache::CAPACITY`, by id and by secret hash)",
            thousands(CAPACITY as u64)
        ),
    });
    node.authenticate(&http, &kept[plan.fill..plan.fill + plan.overflow])
        .await?;
    settle().await;
    let overflowed = node.rss()?;
    steps.push(NodeStep {
        what: "as many more sessions (the cache evicts)",
        entries: plan.overflow,
        before: filled,
        after: overflowed,
        bound: "flat: the cache is full".to_owned(),
    });

    // Ended through another `Auth` on the same stores, as by a logout on
    // another node: this node learns of them through the feed only.
    let ended = &kept[plan.fill + plan.overflow..plan.kept()];
    futures_util::stream::iter(ended)
        .map(|k| async move {
            let ended = auth
                .sessions
                .end(k.user, k.id, Actor::User(k.user), Ending::Logout)
                .await?;
            anyhow::ensure!(ended, "a session to end was not found");
            anyhow::Ok(())
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let started = Instant::now();
    while node.revoked(&http).await? < ended.len() as u64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the node's revocation set did not reach {} entries within 60 s",
            ended.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settle().await;
    let revoked = node.rss()?;
    steps.push(NodeStep {
        what: "sessions ended on another node (revocation set, via the feed)",
        entries: ended.len(),
        before: overflowed,
        after: revoked,
        bound: "none: every session ended in the last access_token_ttl + jwt_leeway \
                (5 min 30 s by default), pruned each minute"
            .to_owned(),
    });
    // Whether the memory settles once the endings stop (it kept growing
    // while nodes re-read every revocation in force every 2 s with Redis).
    tokio::time::sleep(Duration::from_secs(10)).await;
    steps.push(NodeStep {
        what: "10 s later, no requests",
        entries: 0,
        before: revoked,
        after: node.rss()?,
        bound: "–".to_owned(),
    });
    Ok(steps)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
