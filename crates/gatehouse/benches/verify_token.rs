//! The server's bearer-token check (`Bearer::verify_access_token`) for a token
//! it has verified before (the cache of verified tokens: no signature
//! check) and the full check a new token pays (`validate_access_token`:
//! header, signature, claims, revocation), per algorithm. The services run on
//! a temporary SQLite file; nothing measured there touches it.
//!
//! Then the whole bearer path a request pays before its handler runs
//! (`verify_access_token` + `authenticate_token`: token, revocation set,
//! session, user and permissions), answered by the principal cache and,
//! with it turned off (`session_cache_ttl = 0s`), by SQLite reads.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::auth::accounts::Registrar;
use gatehouse::auth::tokens::{TokenSettings, validate_access_token};
use gatehouse::auth::{ClientMeta, Services};
use gatehouse::config::{Config, DatabaseUrl, JwtAlg};

const ISSUER: &str = "https://auth.bench.test";

/// The services, with one user and one session, and an access token of it.
fn auth_with_token(
    rt: &tokio::runtime::Runtime,
    alg: JwtAlg,
) -> (Services, String, tempfile::TempDir) {
    auth_with_token_cached(rt, alg, Duration::from_secs(10))
}

fn auth_with_token_cached(
    rt: &tokio::runtime::Runtime,
    alg: JwtAlg,
    session_cache_ttl: Duration,
) -> (Services, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        database_url: DatabaseUrl::Sqlite(format!(
            "sqlite://{}",
            dir.path().join("b.db").display()
        )),
        jwt_alg: alg,
        session_cache_ttl,
        ..Config::default()
    };
    if alg == JwtAlg::Hs256 {
        config.jwt_hs256_secret = Some(gatehouse::config::SecretBytes::new(vec![7; 32]));
    }
    rt.block_on(async {
        let auth = gatehouse::app::build_services(&config, 1, ISSUER.to_owned())
            .await
            .expect("auth");
        let user = auth
            .accounts
            .register(
                "bench@example.com",
                "a long bench passphrase".into(),
                vec![],
                Registrar::Operator,
            )
            .await
            .expect("user");
        let session = auth
            .sessions
            .start(
                &user,
                &ClientMeta::default(),
                gatehouse::model::amr::Amr::PASSWORD,
            )
            .await
            .expect("session");
        let token = auth
            .tokens
            .issue_access_token(&user, &session.record)
            .await
            .expect("token")
            .token;
        (auth, token, dir)
    })
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, alg) in [
        ("EdDSA", JwtAlg::EdDsa),
        ("ES256", JwtAlg::Es256),
        ("RS256", JwtAlg::Rs256),
        ("HS256", JwtAlg::Hs256),
    ] {
        let (auth, token, _dir) = auth_with_token(&rt, alg);
        auth.bearer.verify_access_token(&token).expect("valid");
        c.bench_function(&format!("{name}: a token verified before (cache)"), |b| {
            b.iter(|| {
                auth.bearer
                    .verify_access_token(black_box(&token))
                    .expect("valid")
            });
        });
        let settings = TokenSettings {
            issuer: ISSUER.to_owned(),
            audience: ISSUER.to_owned(),
            access_token_ttl: Duration::from_secs(300),
            leeway: Duration::from_secs(30),
            refresh_reuse_grace: Duration::ZERO,
        };
        let ring = auth.keys.ring();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        c.bench_function(&format!("{name}: a new token (full check)"), |b| {
            b.iter(|| {
                validate_access_token(black_box(&token), &ring, &settings, now, |_| false)
                    .expect("valid")
            });
        });
    }
}

fn bearer_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, ttl) in [
        ("principal cache", Duration::from_secs(10)),
        ("SQLite reads", Duration::ZERO),
    ] {
        let (auth, token, _dir) = auth_with_token_cached(&rt, JwtAlg::EdDsa, ttl);
        let once = || async {
            let verified = auth
                .bearer
                .verify_access_token(black_box(&token))
                .expect("valid");
            auth.bearer
                .authenticate_token(&verified)
                .await
                .expect("store")
                .expect("live")
        };
        rt.block_on(once());
        c.bench_function(&format!("EdDSA bearer path, repeated token: {name}"), |b| {
            b.iter(|| rt.block_on(once()));
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = verify, bearer_path
}
criterion_main!(benches);
