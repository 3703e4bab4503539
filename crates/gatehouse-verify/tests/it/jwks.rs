//! The key cache against a mock JWKS: lazy fetch, max-age, unknown kids,
//! single flight, rotation, outages, and hostile key sets.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_verify::{Algorithm, VerifyError};
use serde_json::json;

use crate::common::{self, ManualClock, Mock, Reply, T0, TestKey};

#[tokio::test]
async fn keys_are_fetched_on_first_use_and_a_valid_token_verifies() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    assert_eq!(mock.fetches(), 0, "build does no I/O");

    let claims = verifier
        .verify(&key.mint(&common::claims(&mock.base, clock.secs())))
        .await
        .expect("valid token");

    assert_eq!(mock.fetches(), 1);
    assert_eq!(claims.sub, common::SUB);
    assert_eq!(claims.sid.as_deref(), Some(common::SID));
    assert_eq!(claims.aud, std::slice::from_ref(&mock.base));
    assert_eq!(claims.roles, ["clerk"]);
    assert!(claims.has_permission("orders:read"));
    assert!(!claims.has_permission("orders:write"));
}

#[tokio::test]
async fn every_asymmetric_algorithm_verifies_its_own_tokens() {
    let mock = Mock::start().await;
    let keys = [
        TestKey::generate(Algorithm::EdDSA, "ed"),
        TestKey::generate(Algorithm::ES256, "es"),
        TestKey::generate(Algorithm::RS256, "rs"),
    ];
    mock.serve_keys(&keys.iter().collect::<Vec<_>>());
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    for key in &keys {
        let token = key.mint(&common::claims(&mock.base, clock.secs()));
        if let Err(e) = verifier.verify(&token).await {
            panic!("{}: {e}", key.alg);
        }
    }
    assert_eq!(mock.fetches(), 1);
}

#[tokio::test]
async fn max_age_is_honoured_then_the_keys_are_refetched() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    mock.set_cache_control(Some("public, max-age=60"));
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    // Five minutes, as gatehouse issues them: longer than the clock moves.
    let claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);
    verifier.verify(&token).await.expect("first");
    assert_eq!(mock.fetches(), 1);

    clock.advance(Duration::from_secs(59));
    verifier.verify(&token).await.expect("still fresh");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.fetches(), 1, "no refetch before max-age");

    clock.advance(Duration::from_secs(2));
    verifier
        .verify(&token)
        .await
        .expect("stale keys keep verifying while the refetch runs");
    common::eventually("the refetch after max-age", || mock.fetches() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    verifier.verify(&token).await.expect("fresh again");
    assert_eq!(
        mock.fetches(),
        2,
        "one refetch, then fresh for another max-age"
    );
}

#[tokio::test]
async fn no_store_keys_are_refetched_after_ten_seconds() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    mock.set_cache_control(Some("no-store"));
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let token = key.mint(&common::claims(&mock.base, clock.secs()));
    verifier.verify(&token).await.expect("first");
    clock.advance(Duration::from_secs(9));
    verifier.verify(&token).await.expect("fresh");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.fetches(), 1);
    clock.advance(Duration::from_secs(2));
    verifier.verify(&token).await.expect("stale");
    common::eventually("the refetch after 10 s", || mock.fetches() == 2).await;
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refetch_and_picks_up_a_rotation() {
    let mock = Mock::start().await;
    let old = TestKey::generate(Algorithm::EdDSA, "old");
    let new = TestKey::generate(Algorithm::EdDSA, "new");
    mock.serve_keys(&[&old]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    verifier
        .verify(&old.mint(&common::claims(&mock.base, clock.secs())))
        .await
        .expect("old key");
    assert_eq!(mock.fetches(), 1);

    // gatehouse rotates: the new key signs, the old one is retired.
    mock.serve_keys(&[&new]);
    clock.advance(Duration::from_secs(11));
    let claims = common::claims(&mock.base, clock.secs());
    verifier
        .verify(&new.mint(&claims))
        .await
        .expect("the new kid verifies after one refetch");
    assert_eq!(mock.fetches(), 2);
    assert_eq!(
        verifier.verify(&old.mint(&claims)).await,
        Err(VerifyError::UnknownKey),
        "the retired key is gone"
    );
    assert_eq!(mock.fetches(), 2, "within the refetch interval");
}

#[tokio::test]
async fn a_second_unknown_kid_within_the_refetch_interval_fetches_nothing() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    let verifier = mock
        .builder(&clock)
        .refetch_interval(Duration::from_secs(30))
        .build()
        .expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());
    verifier.verify(&key.mint(&claims)).await.expect("valid");
    clock.advance(Duration::from_secs(31));

    let stranger = key.renamed("made-up-1");
    assert_eq!(
        verifier.verify(&stranger.mint(&claims)).await,
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(mock.fetches(), 2, "the first unknown kid refetches");
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        verifier
            .verify(&key.renamed("made-up-2").mint(&claims))
            .await,
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(mock.fetches(), 2, "the second one, 29 s later, does not");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        verifier
            .verify(&key.renamed("made-up-3").mint(&claims))
            .await,
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(mock.fetches(), 3, "after the interval it may again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_kid_verifications_shares_one_fetch() {
    let mock = Mock::start().await;
    let old = TestKey::generate(Algorithm::EdDSA, "old");
    let new = TestKey::generate(Algorithm::EdDSA, "new");
    mock.serve_keys(&[&old]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    verifier.refresh_keys().await.expect("initial keys");
    assert_eq!(mock.fetches(), 1);

    mock.serve_keys(&[&old, &new]);
    mock.set_delay(Duration::from_millis(300));
    clock.advance(Duration::from_secs(11));
    let token = Arc::new(new.mint(&common::claims(&mock.base, clock.secs())));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let verifier = verifier.clone();
            let token = Arc::clone(&token);
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("the new kid verifies");
    }
    assert_eq!(mock.fetches(), 2, "50 verifications, one fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_kids_costs_one_fetch() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    mock.set_delay(Duration::from_millis(200));
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let verifier = verifier.clone();
            let token = key.renamed(&format!("forged-{i}")).mint(&claims);
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Err(VerifyError::UnknownKey));
    }
    assert_eq!(mock.fetches(), 1);
}

#[tokio::test]
async fn cached_keys_keep_verifying_while_gatehouse_is_down() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::ES256, "k1");
    mock.serve_keys(&[&key]);
    mock.set_cache_control(Some("max-age=10"));
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    // Five minutes, as gatehouse issues them: longer than the clock moves.
    let claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);
    verifier.verify(&token).await.expect("up");

    mock.set_status(503);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(30));
        verifier
            .verify(&token)
            .await
            .expect("cached keys verify while down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mock.fetches() >= 2, "refetches were attempted");
    assert_eq!(
        verifier.refresh_keys().await,
        Err(VerifyError::KeysUnavailable),
        "an explicit refresh reports the outage"
    );
    verifier.verify(&token).await.expect("and the keys stay");
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        verifier.verify(&key.renamed("other").mint(&claims)).await,
        Err(VerifyError::UnknownKey),
        "with cached keys, an unknown kid is unknown, not unavailable"
    );
}

#[tokio::test]
async fn without_keys_an_unreachable_gatehouse_means_keys_unavailable() {
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let clock = ManualClock::at(T0);
    let issuer = common::closed_port_url().await;
    let verifier = gatehouse_verify::Verifier::builder(&issuer)
        .clock(clock.clock())
        .build()
        .expect("verifier");
    let token = key.mint(&common::claims(&issuer, clock.secs()));
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::KeysUnavailable)
    );
    assert!(VerifyError::KeysUnavailable.is_unavailable());
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::KeysUnavailable),
        "rate-limited, still unavailable"
    );
    assert_eq!(
        verifier.refresh_keys().await,
        Err(VerifyError::KeysUnavailable)
    );

    let mock = Mock::start().await;
    mock.set_status(500);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let token = key.mint(&common::claims(&mock.base, clock.secs()));
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::KeysUnavailable)
    );
    // gatehouse comes back: after the interval the keys arrive.
    mock.serve_keys(&[&key]);
    clock.advance(Duration::from_secs(11));
    verifier.verify(&token).await.expect("recovered");
}

#[tokio::test]
async fn refresh_keys_fetches_now_and_spares_the_first_request() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    verifier.refresh_keys().await.expect("refresh");
    verifier
        .refresh_keys()
        .await
        .expect("refresh ignores the interval");
    assert_eq!(mock.fetches(), 2);
    verifier
        .verify(&key.mint(&common::claims(&mock.base, clock.secs())))
        .await
        .expect("valid");
    assert_eq!(mock.fetches(), 2);
}

#[tokio::test]
async fn a_hostile_jwks_is_refused_without_panic() {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let clock = ManualClock::at(T0);
    let claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);

    // Over 256 KiB, even if it is a valid JWKS.
    let mut padded = common::jwks(&[&key]);
    padded["padding"] = json!("x".repeat(300 * 1024));
    let bodies: Vec<Vec<u8>> = vec![
        padded.to_string().into_bytes(),
        b"<html>not json</html>".to_vec(),
        br#"{"keys": "none"}"#.to_vec(),
        br#"[{"kty":"OKP"}]"#.to_vec(),
        vec![0xff; 1000],
    ];
    for body in bodies {
        mock.set_reply(Reply {
            status: 200,
            body,
            cache_control: None,
        });
        let verifier = mock.builder(&clock).build().expect("verifier");
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::KeysUnavailable)
        );
    }

    // Keys of the wrong kind under the token's kid are ignored, one by one.
    let mut as_hmac = json!({"kty": "oct", "k": common::b64(b"0123456789abcdef0123456789abcdef"), "kid": "k1", "alg": "HS256"});
    let mut wrong_curve = key.jwk.clone();
    wrong_curve["alg"] = json!("ES256");
    let mut no_alg = key.jwk.clone();
    no_alg.as_object_mut().map(|o| o.remove("alg"));
    let mut for_encryption = key.jwk.clone();
    for_encryption["use"] = json!("enc");
    for jwk in [
        &mut as_hmac,
        &mut wrong_curve,
        &mut no_alg,
        &mut for_encryption,
    ] {
        mock.serve_jwks(&json!({ "keys": [jwk.clone()] }));
        let verifier = mock.builder(&clock).build().expect("verifier");
        assert_eq!(
            verifier.verify(&token).await,
            Err(VerifyError::UnknownKey),
            "{jwk}"
        );
    }
}

#[tokio::test]
async fn a_key_only_verifies_under_its_own_algorithm() {
    let mock = Mock::start().await;
    let es = TestKey::generate(Algorithm::ES256, "es");
    mock.serve_keys(&[&es]);
    let clock = ManualClock::at(T0);
    let verifier = mock.builder(&clock).build().expect("verifier");
    let claims = common::claims(&mock.base, clock.secs()).to_string();
    // The header says EdDSA but names the ES256 key.
    let ed = TestKey::generate(Algorithm::EdDSA, "es");
    let token = ed.sign_raw(
        r#"{"alg":"EdDSA","kid":"es","typ":"at+jwt"}"#,
        &claims,
        Algorithm::EdDSA,
    );
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::WrongAlgorithm)
    );
    // A verifier for EdDSA only never even loads the ES256 key.
    let only_ed = mock
        .builder(&clock)
        .algorithms(&[Algorithm::EdDSA])
        .build()
        .expect("verifier");
    assert_eq!(only_ed.verify(&token).await, Err(VerifyError::UnknownKey));
    let es_token = es.mint(&common::claims(&mock.base, clock.secs()));
    assert_eq!(
        only_ed.verify(&es_token).await,
        Err(VerifyError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn an_id_token_key_never_verifies_an_access_token_even_of_the_accepted_algorithm() {
    let mock = Mock::start().await;
    // gatehouse with jwt_alg = EdDSA publishes its access-token key and,
    // beside it, an EdDSA ID-token key, each naming what it signs.
    let mut access = TestKey::generate(Algorithm::EdDSA, "access");
    access.jwk["gatehouse_purpose"] = "access".into();
    let mut id_token = TestKey::generate(Algorithm::EdDSA, "id-token");
    id_token.jwk["gatehouse_purpose"] = "id_token".into();
    // A key of a gatehouse older than the member names nothing.
    let unmarked = TestKey::generate(Algorithm::EdDSA, "unmarked");
    mock.serve_keys(&[&access, &id_token, &unmarked]);
    let clock = ManualClock::at(T0);
    let verifier = mock
        .builder(&clock)
        .algorithms(&[Algorithm::EdDSA])
        .build()
        .expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());

    // Typed at+jwt, for this audience and issuer: only the key is wrong.
    let forged = id_token.mint(&claims);

    assert_eq!(verifier.verify(&forged).await, Err(VerifyError::UnknownKey));
    verifier
        .verify(&access.mint(&claims))
        .await
        .expect("the access-token key verifies");
    verifier
        .verify(&unmarked.mint(&claims))
        .await
        .expect("an unmarked key is taken as before");
}

#[tokio::test]
async fn hs256_accepts_only_the_derived_kid_and_fetches_nothing() {
    let mock = Mock::start().await;
    let secret = [0x5au8; 32];
    let hs = TestKey::hs256(&secret);
    let clock = ManualClock::at(T0);
    let verifier = mock
        .builder(&clock)
        .algorithms(&[Algorithm::HS256])
        .hs256_secret(secret)
        .build()
        .expect("verifier");
    let claims = common::claims(&mock.base, clock.secs());
    verifier.verify(&hs.mint(&claims)).await.expect("HS256");
    assert_eq!(
        verifier
            .verify(&hs.renamed("hs256-0000000000000000").mint(&claims))
            .await,
        Err(VerifyError::UnknownKey)
    );
    let other_secret = TestKey::hs256(&[0x5bu8; 32]).renamed(&hs.kid);
    assert_eq!(
        verifier.verify(&other_secret.mint(&claims)).await,
        Err(VerifyError::BadSignature)
    );
    verifier.refresh_keys().await.expect("nothing to fetch");
    assert_eq!(mock.fetches(), 0, "HS256 has no JWKS");
}

#[tokio::test]
async fn a_chunked_jwks_is_cut_off_at_the_size_limit() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A server that streams 64 MiB without Content-Length; the client must
    // stop at 256 KiB (what the kernel buffers meanwhile is far below 32 MiB).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                for _ in 0..1024 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    counter.fetch_add(64 * 1024, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let issuer = format!("http://{addr}");
    let clock = ManualClock::at(T0);
    let verifier = gatehouse_verify::Verifier::builder(&issuer)
        .clock(clock.clock())
        .build()
        .expect("verifier");
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    assert_eq!(
        verifier
            .verify(&key.mint(&common::claims(&issuer, clock.secs())))
            .await,
        Err(VerifyError::KeysUnavailable)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        sent.load(std::sync::atomic::Ordering::SeqCst) < 32 * 1024 * 1024,
        "the client stopped reading early"
    );
    server.abort();
}
