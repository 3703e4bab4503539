//! Measures what the Redis session cache buys: cookie-authenticated
//! `GET /v1/me` against one node on PostgreSQL + Redis, with the cache
//! (`session_cache_ttl = 10s`, the default) and without it (`0s`), and the
//! cache's hit rate. Results go to docs/benchmarks.md.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on
//! 127.0.0.1:6379, as the test suite does. Run:
//!
//! ```sh
//! cargo run --release --example session_cache_load -- [SECONDS] [SESSIONS] [CONCURRENCY]
//! ```
//!
//! (defaults 10 s, 200 sessions, 32 concurrent clients). The server runs on
//! a runtime of its own with two worker threads; the load generator on
//! another, in the same process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gatehouse::Config;
use gatehouse::config::DatabaseUrl;
use sqlx::Connection as _;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const PASSWORD: &str = "correct horse battery staple";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .map_or(Ok(10), |a| a.parse())
        .context("SECONDS")?;
    let sessions: usize = args
        .next()
        .map_or(Ok(200), |a| a.parse())
        .context("SESSIONS")?;
    let concurrency: usize = args
        .next()
        .map_or(Ok(32), |a| a.parse())
        .context("CONCURRENCY")?;
    println!(
        "GET /v1/me with a session cookie, one node on PostgreSQL + Redis; {sessions} sessions, \
         {concurrency} concurrent clients, {seconds} s per run"
    );
    println!("| session_cache_ttl | requests/s | p50 | p99 | cache hits | hit rate |");
    println!("|---|---|---|---|---|---|");
    for ttl in [Duration::from_secs(10), Duration::ZERO] {
        let r = run(ttl, Duration::from_secs(seconds), sessions, concurrency)?;
        let lookups = r.hits + r.misses;
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} of {} | {:.1} % |",
            humantime::format_duration(ttl),
            r.per_second,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.hits,
            lookups,
            if lookups == 0 {
                0.0
            } else {
                100.0 * r.hits as f64 / lookups as f64
            }
        );
    }
    Ok(())
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    hits: u64,
    misses: u64,
}

fn run(
    ttl: Duration,
    duration: Duration,
    sessions: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let db = format!("gh_bench_{}", uuid::Uuid::now_v7().simple());
    let prefix = format!("{db}:");
    let pattern = format!("{prefix}*");
    client_rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
            .await
            .context("PostgreSQL on 127.0.0.1:5432")?;
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&mut admin)
            .await?;
        anyhow::Ok(())
    })?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: DatabaseUrl::Postgres(format!("{PG_SERVER}/{db}").into()),
        redis_url: Some(REDIS_URL.into()),
        redis_key_prefix: prefix,
        cookie_secure: false,
        session_cache_ttl: ttl,
        ..Config::default()
    };
    let (app, auth) = server_rt.block_on(async {
        let app = gatehouse::Application::build(config).await?;
        let auth = app.services();
        anyhow::Ok((app, auth))
    })?;
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = server_rt.spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let shared = auth
        .session_cache
        .clone()
        .context("sessions are in Redis")?;
    let feed = auth.revocations.clone();

    let figures = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()?;
        // Wait for the revocation feed: the cache answers only then.
        let started = Instant::now();
        while !feed.feed().is_some_and(|f| f.is_connected()) {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(5),
                "the feed did not connect"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut cookies = Vec::with_capacity(sessions);
        for i in 0..sessions {
            // Twenty sessions per account (each login costs a hash).
            let account = serde_json::json!({
                "email": format!("bench{}@example.com", i / 20),
                "password": PASSWORD
            });
            if i % 20 == 0 {
                let res = http
                    .post(format!("{base}/v1/users"))
                    .json(&account)
                    .send()
                    .await?;
                anyhow::ensure!(res.status().is_success(), "register: {}", res.status());
            }
            let login = &account;
            let res = http
                .post(format!("{base}/v1/login"))
                .json(&login)
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "login: {}", res.status());
            let cookie = res
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.split(';').next().filter(|c| c.starts_with("gatehouse=")))
                .context("a session cookie")?
                .to_owned();
            cookies.push(cookie);
        }
        let cookies = Arc::new(cookies);
        let before = shared.stats();
        let deadline = Instant::now() + duration;
        let began = Instant::now();
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let http = http.clone();
            let cookies = cookies.clone();
            let url = format!("{base}/v1/me");
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = w;
                while Instant::now() < deadline {
                    let cookie = &cookies[i % cookies.len()];
                    i += concurrency;
                    let t = Instant::now();
                    let res = http.get(&url).header("cookie", cookie).send().await?;
                    anyhow::ensure!(res.status().is_success(), "GET /v1/me: {}", res.status());
                    let _ = res.bytes().await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for w in workers {
            latencies.extend(w.await??);
        }
        let elapsed = began.elapsed();
        let after = shared.stats();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
        anyhow::Ok(Figures {
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
            hits: after.hits - before.hits,
            misses: after.misses - before.misses,
        })
    });
    let _ = stop.send(());
    let _ = server_rt.block_on(served);
    drop(auth);
    drop(server_rt);
    client_rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN).await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        anyhow::Ok(())
    })?;
    // The run's keys, out of the shared Redis.
    let mut con = redis::Client::open(REDIS_URL)?.get_connection()?;
    let keys: Vec<Vec<u8>> =
        redis::Commands::scan_match::<_, Vec<u8>>(&mut con, &pattern)?.collect::<Result<_, _>>()?;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).query::<i64>(&mut con)?;
    }
    figures
}
