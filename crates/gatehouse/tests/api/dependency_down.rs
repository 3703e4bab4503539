//! A store that is down costs a request nothing: the node that knows it is
//! down answers at once (503, or the bearer path's store-free answer) and
//! reconnects in the background (DESIGN.md, "fail closed, and fast").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse::config::{DatabaseUrl, RevocationFailMode};
use reqwest::{Client, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::{PgDatabase, TestApp, following, token_pair};
use crate::redis_server::{Persistence, RedisServer};

/// Sequential bearer `/v1/verify` calls, all 200; how long they took.
async fn verify_run(app: &TestApp, http: &Client, token: &str, n: u32) -> Duration {
    verify_run_expecting(app, http, token, n, StatusCode::OK).await
}

/// Sequential bearer `/v1/verify` calls, each answered `want`.
async fn verify_run_expecting(
    app: &TestApp,
    http: &Client,
    token: &str,
    n: u32,
    want: StatusCode,
) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        let res = http
            .get(app.url("/v1/verify"))
            .bearer_auth(token)
            .header("X-Original-URI", "/app/page")
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), want, "request {i}");
    }
    started.elapsed()
}

/// `revocation_fail_mode = "stale"` keeps verifying bearer tokens while
/// Redis is down, at the speed of a store-free check.
#[tokio::test]
async fn bearer_verification_keeps_its_speed_while_redis_is_down() {
    const N: u32 = 300;
    let mut redis = RedisServer::start(Persistence::None);
    let pg = PgDatabase::create().await;
    let (pg_url, redis_url) = (pg.url(), redis.url());
    let app = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Postgres(pg_url.into());
        c.redis_url = Some(redis_url.into());
        c.revocation_fail_mode = RevocationFailMode::Stale;
    })
    .await;
    following(&app).await;
    let user = app.create_user().await;
    let (token, _) = token_pair(&app, &user).await;
    let http = app.bare_client();
    verify_run(&app, &http, &token, 20).await;
    let up = verify_run(&app, &http, &token, N).await;

    redis.kill();
    // The first calls find Redis gone (each within the command timeout).
    verify_run(&app, &http, &token, 5).await;
    let down = verify_run(&app, &http, &token, N).await;
    let ratio = down.as_secs_f64() / up.as_secs_f64();
    eprintln!("{N} bearer verifications: Redis up {up:?}, Redis down {down:?} ({ratio:.2}x)");
    assert!(
        ratio < 5.0,
        "with Redis down bearer verification is {ratio:.1} times slower ({down:?} against {up:?})"
    );

    // Back by itself: a login (which needs Redis) succeeds again.
    redis.restart();
    let started = Instant::now();
    loop {
        let res = app.login(&app.client(), &user).await;
        if res.status().is_success() {
            break;
        }
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node did not reconnect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);
    drop(pg);
}

/// `revocation_fail_mode = "closed"` (the default): once Redis has been
/// silent for `revocation_max_staleness`, bearer requests answer 503, and
/// at once: no request waits on the dead Redis.
#[tokio::test]
async fn past_the_staleness_bound_closed_mode_answers_bearer_requests_503_at_once() {
    const N: u32 = 300;
    const STALENESS: Duration = Duration::from_secs(1);
    let mut redis = RedisServer::start(Persistence::AppendOnly);
    let pg = PgDatabase::create().await;
    let (pg_url, redis_url) = (pg.url(), redis.url());
    let app = TestApp::spawn_with(|c| {
        c.database_url = DatabaseUrl::Postgres(pg_url.into());
        c.redis_url = Some(redis_url.into());
        c.revocation_max_staleness = STALENESS;
    })
    .await;
    following(&app).await;
    let user = app.create_user().await;
    let (token, _) = token_pair(&app, &user).await;
    let http = app.bare_client();
    verify_run(&app, &http, &token, 20).await;
    let up = verify_run(&app, &http, &token, N).await;

    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(STALENESS + Duration::from_millis(200)).await;
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    verify_run_expecting(&app, &http, &token, 5, unavailable).await;
    let down = verify_run_expecting(&app, &http, &token, N, unavailable).await;
    let ratio = down.as_secs_f64() / up.as_secs_f64();
    eprintln!(
        "{N} bearer verifications: Redis up {up:?} (200), Redis down past the staleness bound {down:?} (503, {ratio:.2}x)"
    );
    assert!(
        ratio < 5.0,
        "with Redis down a 503 takes {ratio:.1} times a 200 ({down:?} against {up:?})"
    );

    redis.restart();
    let started = Instant::now();
    loop {
        let res = http
            .get(app.url("/v1/verify"))
            .bearer_auth(&token)
            .header("X-Original-URI", "/app/page")
            .send()
            .await
            .expect("request");
        if res.status() == StatusCode::OK {
            break;
        }
        assert_eq!(res.status(), unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node did not follow the feed again within 10 s of Redis's restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "Redis down {:?}; bearer verification back {:?} after the restart",
        started - killed,
        started.elapsed()
    );
    drop(app);
    drop(pg);
}

/// A TCP proxy of the test's own in front of the shared PostgreSQL, which
/// the test can cut and restore. Cut, it closes every connection it carried
/// and holds new ones open without a byte of answer, as the kernel does for
/// a server that is stopped (SIGSTOP) or hung: what made every request wait
/// out the pool's 5 s acquire timeout. It can also hold each new connection
/// a while before passing it on: a server slow to open connections, as a
/// loaded machine's is.
struct PgProxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: AbortHandle,
}

impl PgProxy {
    async fn start() -> Self {
        Self::start_slow(Duration::ZERO).await
    }

    /// A proxy that passes each new connection on after `delay`.
    async fn start_slow(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::<AbortHandle>::new()));
        let held = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (c, l, h) = (Arc::clone(&cut), Arc::clone(&links), Arc::clone(&held));
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    h.lock().expect("held").push(inbound);
                    continue;
                }
                let link = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().expect("links").push(link.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            cut,
            links,
            held,
            accept,
        }
    }

    fn url(&self, db: &PgDatabase) -> String {
        format!("postgres://postgres@{}/{}", self.addr, db.name)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.held.lock().expect("held").clear();
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
        self.restore();
    }
}

#[tokio::test]
async fn with_postgresql_hung_requests_answer_503_at_once_and_the_node_recovers_by_itself() {
    const REQUESTS: usize = 20;
    let pg = PgDatabase::create().await;
    let proxy = PgProxy::start().await;
    let url = proxy.url(&pg);
    let app = TestApp::spawn_with(|c| c.database_url = DatabaseUrl::Postgres(url.into())).await;
    let (_, client) = app.logged_in().await;
    assert_eq!(app.get_me(&client).await.status(), StatusCode::OK);

    proxy.cut();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..REQUESTS {
        let t = Instant::now();
        let res = app.get_me(&client).await;
        let took = t.elapsed();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "request {i}");
        // The pool's acquire timeout is 5 s; the answer must not wait for it.
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
        slowest = slowest.max(took);
    }
    let all = started.elapsed();
    eprintln!(
        "PostgreSQL hung: {REQUESTS} requests answered 503 in {all:?}, the slowest in {slowest:?}"
    );

    proxy.restore();
    let back = Instant::now();
    loop {
        let status = app.get_me(&client).await.status();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the node did not reconnect to PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "PostgreSQL restored: serving again after {:?}",
        back.elapsed()
    );
    drop(app);
    drop(proxy);
    drop(pg);
}

/// A PostgreSQL slow to open connections (a loaded machine: a whole CI run
/// on 2 cores) slows the start-up but does not stop it: the start-up's
/// work (the first signing keys, the revocations in force) waits for its
/// connections up to the pool's acquire timeout, not the 500 ms a request
/// waits before it finds PostgreSQL unreachable.
#[tokio::test]
async fn a_postgresql_slow_to_open_connections_slows_the_start_up_but_does_not_stop_it() {
    let pg = PgDatabase::create().await;
    let proxy = PgProxy::start_slow(Duration::from_millis(800)).await;
    let url = proxy.url(&pg);
    let started = Instant::now();
    let app = TestApp::spawn_with(|c| c.database_url = DatabaseUrl::Postgres(url.into())).await;
    eprintln!(
        "started through a proxy that opens connections in 800 ms, in {:?}",
        started.elapsed()
    );
    // Served from the keys the start-up made, without PostgreSQL.
    let jwks: serde_json::Value = app
        .bare_client()
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert!(
        jwks["keys"].as_array().is_some_and(|k| k.len() >= 4),
        "the first signing keys: {jwks}"
    );
    drop(app);
    drop(proxy);
    drop(pg);
}
