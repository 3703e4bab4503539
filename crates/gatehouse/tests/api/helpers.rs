//! `TestApp`: the real application on port 0 with its own SQLite file, and
//! typed helpers for the requests every test makes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse::Config;
use gatehouse::auth::accounts::Registrar;
use gatehouse::auth::types::{Permission, RoleName};
use gatehouse::config::DatabaseUrl;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::sync::{Semaphore, oneshot};

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running gatehouse with a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub db_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    /// The domain service of the running app.
    pub auth: gatehouse::auth::Services,
    /// The PostgreSQL database and Redis prefix of an app spawned on them;
    /// dropped last.
    _pg: Option<PgDatabase>,
    _redis: Option<RedisPrefix>,
}

/// An account that exists on a `TestApp`.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub email: String,
    pub password: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique email for this test process.
pub fn unique_email() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("user{n}-{}@example.com", uuid::Uuid::now_v7().simple())
}

impl TestApp {
    /// The app with test defaults: port 0, plain-HTTP cookies.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The app on a fresh PostgreSQL database, with test defaults changed
    /// by `configure`.
    pub async fn spawn_on_postgres(configure: impl FnOnce(&mut Config)) -> Self {
        let pg = PgDatabase::create().await;
        let url = pg.url();
        let mut app = Self::spawn_with(|c| {
            c.database_url = DatabaseUrl::Postgres(url.into());
            configure(c);
        })
        .await;
        app._pg = Some(pg);
        app
    }

    /// The app on a fresh PostgreSQL database with sessions in Redis under
    /// a fresh key prefix, with test defaults changed by `configure`.
    pub async fn spawn_on_redis(configure: impl FnOnce(&mut Config)) -> Self {
        let pg = PgDatabase::create().await;
        let redis = RedisPrefix::create().await;
        let (url, prefix) = (pg.url(), redis.prefix.clone());
        let mut app = Self::spawn_with(|c| {
            c.database_url = DatabaseUrl::Postgres(url.into());
            c.redis_url = Some(REDIS_URL.to_owned().into());
            c.redis_key_prefix = prefix;
            configure(c);
        })
        .await;
        app._pg = Some(pg);
        app._redis = Some(redis);
        app
    }

    /// The app with test defaults changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(Arc::new(gatehouse::clock::SystemClock), configure).await
    }

    /// A clock the test moves, starting at the real now (so cookies' and
    /// tokens' dates look sane), for [`TestApp::spawn_on`].
    pub fn manual_clock() -> Arc<gatehouse::clock::ManualClock> {
        use gatehouse::clock::Clock as _;
        Arc::new(gatehouse::clock::ManualClock::new(
            gatehouse::clock::SystemClock.now(),
        ))
    }

    /// A server whose "now" is `clock` (a `ManualClock` the test moves
    /// instead of sleeping), configured by `configure`.
    pub async fn spawn_on(
        clock: Arc<dyn gatehouse::clock::Clock>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("gatehouse.db");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: DatabaseUrl::Sqlite(format!("sqlite://{}", db_path.display())),
            cookie_secure: false,
            ..Config::default()
        };
        configure(&mut config);
        let app = gatehouse::Application::build_on(config.clone(), clock)
            .await
            .expect("the app builds");
        let addr = app.local_addr();
        let auth = app.services();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            app.run_until(async {
                let _ = rx.await;
            })
            .await
            .expect("the app serves");
        });
        Self {
            addr,
            config,
            db_path,
            shutdown: Some(tx),
            auth,
            _dir: dir,
            _pg: None,
            _redis: None,
        }
    }

    /// `path` on this server (`https://` when it serves TLS itself).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// The origin browsers would send for pages of this server.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.config.scheme(), self.addr)
    }

    /// The name of the session cookie under this configuration.
    pub fn cookie_name(&self) -> &'static str {
        if self.config.cookie_secure {
            "__Host-gatehouse"
        } else {
            "gatehouse"
        }
    }

    /// A client with its own cookie jar, like one browser.
    pub fn client(&self) -> Client {
        Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// A client without a cookie jar, for hand-made cookie headers.
    pub fn bare_client(&self) -> Client {
        Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    pub async fn register(&self, email: &str, password: &str) -> Response {
        self.bare_client()
            .post(self.url("/v1/users"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("request")
    }

    /// Registers a fresh account through the API.
    pub async fn create_user(&self) -> TestUser {
        let user = TestUser {
            email: unique_email(),
            password: PASSWORD.to_owned(),
        };
        let res = self.register(&user.email, &user.password).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap_or_default()
        );
        user
    }

    /// Creates a role and a user holding it, through the same domain
    /// functions the CLI uses.
    pub async fn create_user_with_role(&self, role: &str, permissions: &[&str]) -> TestUser {
        let auth = gatehouse::app::build_services(&self.config, 1, self.origin())
            .await
            .expect("auth");
        let role = RoleName::parse(role).expect("role");
        let perms: Vec<Permission> = permissions
            .iter()
            .map(|p| Permission::parse(p).expect("permission"))
            .collect();
        auth.admin
            .set_role(&role, &perms, gatehouse::auth::audit::Actor::Cli)
            .await
            .expect("role set");
        let user = TestUser {
            email: unique_email(),
            password: PASSWORD.to_owned(),
        };
        auth.accounts
            .register(
                &user.email,
                user.password.clone(),
                vec![role],
                Registrar::Operator,
            )
            .await
            .expect("user created");
        user
    }

    pub async fn login(&self, client: &Client, user: &TestUser) -> Response {
        self.login_with(client, &user.email, &user.password).await
    }

    pub async fn login_with(&self, client: &Client, email: &str, password: &str) -> Response {
        client
            .post(self.url("/v1/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("request")
    }

    /// A fresh user, logged in on a fresh client.
    pub async fn logged_in(&self) -> (TestUser, Client) {
        let user = self.create_user().await;
        let client = self.client();
        let res = self.login(&client, &user).await;
        assert_eq!(res.status(), StatusCode::OK);
        (user, client)
    }

    pub async fn get_me(&self, client: &Client) -> Response {
        client
            .get(self.url("/v1/me"))
            .send()
            .await
            .expect("request")
    }

    pub async fn sessions(&self, client: &Client) -> Vec<Value> {
        let res = client
            .get(self.url("/v1/sessions"))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        body["sessions"].as_array().expect("sessions array").clone()
    }

    /// Runs one SQL statement on the app's database (to stage states the API
    /// cannot reach yet, or to inspect what was stored).
    pub async fn sql(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!("sqlite://{}", self.db_path.display()))
            .await
            .expect("db")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of the session cookie in a response's `Set-Cookie`.
pub fn session_cookie_value(res: &Response, name: &str) -> Option<String> {
    set_cookie_header(res, name).and_then(|h| {
        h.split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
    })
}

/// The whole `Set-Cookie` header for the named cookie.
pub fn set_cookie_header(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(String::from)
}

/// Asserts a problem document with the given status, and returns it.
pub async fn assert_problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    let ct = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    if status == StatusCode::UNAUTHORIZED {
        let challenge = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .expect("every 401 carries WWW-Authenticate");
        assert!(
            challenge.starts_with(r#"Bearer realm="gatehouse""#),
            "{challenge}"
        );
    }
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    body
}

// ---------------------------------------------------------------------------
// PostgreSQL: a database of its own per test
// ---------------------------------------------------------------------------

/// The server `postgres_*` tests create their databases on.
pub const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// The maintenance database, for `CREATE DATABASE` and `DROP DATABASE`.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const PG_HOW_TO_START: &str = "the PostgreSQL tests need it: start it with \
     `pg_ctlcluster 15 main start` (as root), or run the suite with `bash scripts/test.sh`";

/// PostgreSQL tests holding a database at once: each backend opens its own
/// pool, and the server's default `max_connections` is 100 in all.
pub static PG_SLOTS: Semaphore = Semaphore::const_new(6);

pub async fn pg_admin() -> sqlx::PgConnection {
    let connect = sqlx::PgConnection::connect(PG_ADMIN_URL);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            panic!("PostgreSQL is not reachable at {PG_ADMIN_URL} ({e}); {PG_HOW_TO_START}")
        }
        Err(_) => {
            panic!("PostgreSQL at {PG_ADMIN_URL} did not answer within 10 s; {PG_HOW_TO_START}")
        }
    }
}

/// A database of its own for one test; dropped (best effort) with the guard.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    /// The URL of this database.
    pub fn url(&self) -> String {
        format!("{PG_SERVER}/{}", self.name)
    }

    pub async fn create() -> Self {
        let name = format!("gh_t_{}", uuid::Uuid::now_v7().simple());
        let mut admin = pg_admin().await;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        Self { name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // The test's runtime cannot block on itself (and may be unwinding from
        // a failed assertion), so the drop runs on a thread and runtime of its
        // own. The stores were dropped first; FORCE ends whatever connections
        // their pools still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL)
                    .await
                    .map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(&sql)
                    .execute(&mut admin)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: leaving a test database behind: {e}"),
            Err(_) => {
                eprintln!("warning: leaving a test database behind: the dropping thread panicked")
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Redis: a key prefix of its own per test
// ---------------------------------------------------------------------------

/// The Redis server `redis_*` tests use (no auth, database 0).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

const REDIS_HOW_TO_START: &str = "the Redis tests need it: start it with \
     `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`, \
     or run the suite with `bash scripts/test.sh`";

/// A key prefix of its own for one test (`gh_t_<uuid>:`); every key under it
/// is deleted (best effort) with the guard.
pub struct RedisPrefix {
    pub prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix, after checking that Redis answers (panicking with how
    /// to start it when it does not: these tests fail, never skip).
    pub async fn create() -> Self {
        let client = redis::Client::open(REDIS_URL).expect("a valid Redis URL");
        let connect = client.get_multiplexed_async_connection();
        let mut con = match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(con)) => con,
            Ok(Err(e)) => {
                panic!("Redis is not reachable at {REDIS_URL} ({e}); {REDIS_HOW_TO_START}")
            }
            Err(_) => {
                panic!("Redis at {REDIS_URL} did not answer within 5 s; {REDIS_HOW_TO_START}")
            }
        };
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| {
                panic!("Redis at {REDIS_URL} refused PING ({e}); {REDIS_HOW_TO_START}")
            });
        assert_eq!(pong, "PONG");
        Self {
            prefix: format!("gh_t_{}:", uuid::Uuid::now_v7().simple()),
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        // Blocking I/O, so on a thread of its own rather than the test's
        // runtime (which may be unwinding from a failed assertion).
        let deleted = std::thread::spawn(move || {
            let client = redis::Client::open(REDIS_URL).map_err(|e| e.to_string())?;
            let mut con = client.get_connection().map_err(|e| e.to_string())?;
            let keys: Vec<Vec<u8>> = redis::Commands::scan_match::<_, Vec<u8>>(&mut con, &pattern)
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL")
                    .arg(chunk)
                    .query::<i64>(&mut con)
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: leaving test keys behind in Redis: {e}"),
            Err(_) => eprintln!("warning: leaving test keys behind in Redis: the thread panicked"),
        }
    }
}

/// A password grant that must succeed: (access token, refresh token).
pub async fn token_pair(app: &TestApp, user: &TestUser) -> (String, String) {
    let res = app
        .bare_client()
        .post(app.url("/v1/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", user.email.as_str()),
            ("password", user.password.as_str()),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

/// Waits until the app's revocation feed is connected (its cache answers
/// only then).
pub async fn following(app: &TestApp) {
    let feed = app.auth.revocations.feed().expect("sessions in Redis");
    let started = std::time::Instant::now();
    while !feed.is_connected() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the revocation feed did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
