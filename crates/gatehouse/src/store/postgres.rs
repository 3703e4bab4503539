//! The shared store of a multi-node deployment: users, roles, sessions,
//! refresh tokens, signing keys, revocations and password attempt counters in
//! one PostgreSQL database, via sqlx, with migrations applied at open. Here,
//! connecting and the pool's health; the statements, by aggregate, are in
//! `store/sql/`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;

use super::health::Health;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
/// within [`ACQUIRE_WITHIN`] from a pool that is not busy; except during
/// the node's start-up ([`PgStore::start_up`]), whose operations wait up
/// to the pool's acquire timeout.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    health: Arc<Health>,
    /// How many [`StartUp`]s of this store live.
    starting: Arc<AtomicUsize>,
}

/// The node's start-up, as far as PostgreSQL is concerned: while one lives,
/// the store's operations wait for a connection up to the pool's acquire
/// timeout (5 s) instead of [`ACQUIRE_WITHIN`], and a failure stops the
/// start-up without marking PostgreSQL down. Dropping it ends the start-up.
#[derive(Debug)]
#[must_use = "the start-up ends when this is dropped"]
pub struct StartUp(Arc<AtomicUsize>);

impl Drop for StartUp {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
            starting: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Begins the node's start-up (its first keys, the revocations in
    /// force), which lasts until the returned value is dropped: nothing is
    /// served meanwhile.
    ///
    /// A request must fail fast when PostgreSQL is down, and 500 ms is
    /// plenty for a new connection to a healthy server; but the start-up
    /// has nobody waiting on it, it runs on a pool that has hardly begun
    /// (its first operation opens a connection of its own: the one the
    /// migrations used is still going back to the pool), and on a loaded
    /// machine opening one can take longer than that (seen in a CI run of
    /// the whole suite on 2 cores). A PostgreSQL that is down still
    /// stops the start-up, in at most the pool's acquire timeout.
    pub fn start_up(&self) -> StartUp {
        self.starting.fetch_add(1, Ordering::AcqRel);
        StartUp(Arc::clone(&self.starting))
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
    /// PostgreSQL unreachable), or during the start-up within the pool's
    /// acquire timeout.
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
        if self.starting.load(Ordering::Acquire) > 0 {
            // The pool's acquire timeout bounds the wait (see `start_up`).
            return get.await.map_err(|e| match e {
                sqlx::Error::PoolTimedOut => anyhow::anyhow!(
                    "PostgreSQL is unreachable: no connection within {CONNECT_TIMEOUT:?} at \
                     start-up (is it running, and answering at database_url?)"
                ),
                e => anyhow::anyhow!("PostgreSQL is unreachable at start-up: {e}"),
            });
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
            amr: crate::model::amr::Amr::PASSWORD,
            link: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use tokio::net::{TcpListener, TcpStream};

    use super::testing::{Scratch, T0, admin_pool};
    use super::*;
    use crate::store::FailureCounter as _;

    /// A TCP proxy in front of the test server that holds each connection
    /// it accepts for `delay` before passing it on (for ever with `None`):
    /// a server slow to open connections, or one that opens none.
    struct SlowProxy {
        addr: std::net::SocketAddr,
        delay: Arc<Mutex<Option<Duration>>>,
        accept: tokio::task::AbortHandle,
    }

    impl SlowProxy {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let delay = Arc::new(Mutex::new(Some(Duration::ZERO)));
            let set = Arc::clone(&delay);
            let accept = tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let delay = *set.lock().expect("delay");
                    tokio::spawn(async move {
                        match delay {
                            Some(delay) => tokio::time::sleep(delay).await,
                            None => std::future::pending().await,
                        }
                        if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
            .abort_handle();
            Self {
                addr,
                delay,
                accept,
            }
        }

        /// Connections accepted from now on wait `delay` (for ever: `None`).
        fn delay(&self, delay: Option<Duration>) {
            *self.delay.lock().expect("delay") = delay;
        }
    }

    impl Drop for SlowProxy {
        fn drop(&mut self) {
            self.accept.abort();
        }
    }

    /// The scratch database through `proxy`, with every connection its
    /// pool holds taken out (returned with it): the next operation opens a
    /// connection of its own, through the proxy's delay.
    async fn through(proxy: &SlowProxy, db: &Scratch) -> (PgStore, Vec<PoolConnection<Postgres>>) {
        let store = PgStore::open(&format!("postgres://postgres@{}/{}", proxy.addr, db.name))
            .await
            .expect("open through the proxy");
        let mut taken = Vec::new();
        while taken.len() < store.pool.size() as usize {
            taken.push(store.pool.acquire().await.expect("a connection"));
        }
        (store, taken)
    }

    #[tokio::test]
    async fn the_start_up_waits_for_a_slow_connection_and_a_request_does_not() {
        let db = Scratch::new().await;
        let proxy = SlowProxy::start().await;
        let (store, _taken) = through(&proxy, &db).await;
        // Three times the bound: however late this thread runs, the
        // connection cannot arrive within it.
        proxy.delay(Some(ACQUIRE_WITHIN * 3));

        let start_up = store.start_up();
        let started = Instant::now();
        let slow = store.conn().await.expect("the start-up waits");
        assert!(started.elapsed() >= ACQUIRE_WITHIN * 3);
        drop(start_up);

        let started = Instant::now();
        let err = store.conn().await.expect_err("a request does not wait");
        assert!(
            started.elapsed() < ACQUIRE_WITHIN * 3,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            format!("{err:#}"),
            "PostgreSQL is unreachable: no connection within 500ms"
        );
        assert!(store.down_since().is_some());
        drop(slow);
    }

    #[tokio::test]
    async fn a_postgresql_that_opens_no_connection_stops_the_start_up_naming_it() {
        let db = Scratch::new().await;
        let proxy = SlowProxy::start().await;
        let (store, _taken) = through(&proxy, &db).await;
        proxy.delay(None);

        let _start_up = store.start_up();
        let started = Instant::now();
        let err = store.begin().await.expect_err("no connection");
        // Bounded by the pool's acquire timeout, not waiting for ever.
        assert!(
            started.elapsed() < CONNECT_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            format!("{err:#}"),
            "PostgreSQL is unreachable: no connection within 5s at start-up (is it running, \
             and answering at database_url?)"
        );
        // The start-up fails with it; nothing was marked down.
        assert!(store.down_since().is_none());
    }

    #[tokio::test]
    async fn store_open_wires_every_seam_to_postgres() {
        let db = Scratch::new().await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
        let stores = crate::store::open_sql(&crate::config::DatabaseUrl::Postgres(url.into()))
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
