//! Verification of a valid token, per algorithm, with an empty revocation set
//! and with 10,000 ended sessions. Keys are preloaded: no I/O is measured, and
//! the hot path never awaits, so the future is polled once.

#[path = "../tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_verify::{Algorithm, Claims, Verifier, VerifyError};

use common::TestKey;

const ISSUER: &str = "https://auth.bench.test";

/// Runs a verification that must complete without waiting.
fn verify_now(verifier: &Verifier, token: &str) -> Result<Claims, VerifyError> {
    let mut future = pin!(verifier.verify(token));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(verdict) => verdict,
        Poll::Pending => panic!("the hot path awaited"),
    }
}

fn setup(alg: Algorithm, revoked: usize) -> (Verifier, String) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(common::T0);
    let secret = [0x42u8; 32];
    let key = match alg {
        Algorithm::HS256 => TestKey::hs256(&secret),
        other => TestKey::generate(other, "bench-key"),
    };
    let mut builder = Verifier::builder(ISSUER)
        .algorithms(&[alg])
        .clock(Arc::new(move || now));
    if alg == Algorithm::HS256 {
        builder = builder.hs256_secret(secret);
    }
    let verifier = builder.build().expect("verifier");
    if alg != Algorithm::HS256 {
        let n = verifier
            .preload_jwks(common::jwks(&[&key]).to_string().as_bytes())
            .expect("jwks");
        assert_eq!(n, 1);
    }
    let sids: Vec<String> = (0..revoked)
        .map(|i| format!("0190f2a4-7c1e-7a3b-9c4d-{i:012x}"))
        .collect();
    let until = now + Duration::from_secs(600);
    assert_eq!(
        verifier.preload_revocations(sids.iter().map(|s| (s.as_str(), until))),
        revoked
    );
    let token = key.mint(&common::claims(
        ISSUER,
        i64::try_from(common::T0).expect("i64"),
    ));
    verify_now(&verifier, &token).expect("a valid token");
    (verifier, token)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for alg in [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        for (label, revoked) in [("no_revocations", 0), ("10k_revocations", 10_000)] {
            let (verifier, token) = setup(alg, revoked);
            group.bench_function(format!("{alg}/{label}"), |b| {
                b.iter(|| verify_now(black_box(&verifier), black_box(&token)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
