//! The revocation feed against a mock feed: entries reach `verify`, the
//! cursor goes back, a 400 starts over, the staleness bound fails closed,
//! the task ends with the last verifier, and the key stays secret.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_verify::{Algorithm, Verifier, VerifyError};

use crate::common::{self, FEED_KEY, ManualClock, Mock, SID, T0, TestKey};

const FAR_UNTIL: &str = "2099-01-01T00:00:00Z";

async fn setup() -> (Mock, TestKey, ManualClock) {
    let mock = Mock::start().await;
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    mock.serve_keys(&[&key]);
    (mock, key, ManualClock::at(T0))
}

async fn connected(verifier: &Verifier) {
    common::eventually("the feed to connect", || {
        verifier
            .revocation_status()
            .is_some_and(|s| s.connected && s.last_sync.is_some())
    })
    .await;
}

#[tokio::test]
async fn ended_sessions_arrive_through_the_feed_and_are_refused() {
    let (mock, key, clock) = setup().await;
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .build()
        .expect("verifier");
    connected(&verifier).await;
    let claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);
    verifier.verify(&token).await.expect("live session");

    mock.revoke(SID, FAR_UNTIL);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match verifier.verify(&token).await {
            Err(VerifyError::Revoked) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected revoked, got {other:?}"),
        }
    }
    let status = verifier.revocation_status().expect("feed");
    assert!(status.connected);
    assert_eq!(status.entries, 1);
    let mut other = claims.clone();
    other["sid"] = common::OTHER_SID.into();
    verifier
        .verify(&key.mint(&other))
        .await
        .expect("other sessions are unaffected");
    let requests = mock.feed_requests();
    assert!(requests[0].authorized, "the key is sent as a bearer token");
    assert_eq!(
        requests[0].since, None,
        "the first poll asks for everything in force"
    );
    assert_eq!(
        requests[0].wait.as_deref(),
        Some("0"),
        "and for an answer at once"
    );
    assert_eq!(requests[1].since.as_deref(), Some("c0"));
    assert_eq!(
        requests[1].wait.as_deref(),
        Some("25"),
        "then it long-polls"
    );
}

#[tokio::test]
async fn a_verifier_without_a_feed_has_no_status() {
    let (mock, _, clock) = setup().await;
    let verifier = mock.builder(&clock).build().expect("verifier");
    assert_eq!(verifier.revocation_status(), None);
}

#[tokio::test]
async fn the_cursor_of_each_answer_is_passed_back() {
    let (mock, _, clock) = setup().await;
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .build()
        .expect("verifier");
    connected(&verifier).await;
    mock.revoke(SID, FAR_UNTIL);
    common::eventually("the first entry", || {
        verifier.revocation_status().is_some_and(|s| s.entries == 1)
    })
    .await;
    mock.revoke(common::OTHER_SID, FAR_UNTIL);
    common::eventually("the second entry", || {
        verifier.revocation_status().is_some_and(|s| s.entries == 2)
    })
    .await;
    common::eventually("the poll after it", || mock.feed_requests().len() >= 3).await;

    let since: Vec<Option<String>> = mock.feed_requests().into_iter().map(|r| r.since).collect();
    assert_eq!(since[0], None);
    assert_eq!(since[1].as_deref(), Some("c0"), "{since:?}");
    assert_eq!(since[2].as_deref(), Some("c1"), "{since:?}");
    assert!(
        since[3..].iter().all(|s| s.as_deref() == Some("c2")),
        "{since:?}"
    );
}

#[tokio::test]
async fn a_bad_request_drops_the_cursor_and_starts_over() {
    let (mock, key, clock) = setup().await;
    mock.revoke(SID, FAR_UNTIL);
    mock.reject_cursor("c1");
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .build()
        .expect("verifier");
    common::eventually("a restart after the 400", || {
        let since: Vec<_> = mock.feed_requests().into_iter().map(|r| r.since).collect();
        since.len() >= 3 && since[1].as_deref() == Some("c1") && since[2].is_none()
    })
    .await;
    // The union survives the restart: the session is still refused.
    let token = key.mint(&common::claims(&mock.base, clock.secs()));
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Revoked));
}

#[tokio::test]
async fn a_stale_feed_fails_closed_under_a_staleness_bound() {
    let (mock, key, clock) = setup().await;
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .revocation_max_staleness(Duration::from_secs(2))
        .build()
        .expect("verifier");
    // Five minutes, as gatehouse issues them: longer than the clock moves.
    let claims = common::claims(&mock.base, clock.secs());
    let token = key.mint(&claims);
    connected(&verifier).await;
    verifier.verify(&token).await.expect("fresh feed");
    common::eventually("a long poll", || mock.feed_requests().len() >= 2).await;
    assert_eq!(
        mock.feed_requests()[1].wait.as_deref(),
        Some("1"),
        "wait is at most half the bound"
    );

    mock.set_feed_down(true);
    common::eventually("the feed to notice the outage", || {
        verifier.revocation_status().is_some_and(|s| !s.connected)
    })
    .await;
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        verifier.verify(&token).await,
        Err(VerifyError::RevocationsStale)
    );
    assert!(VerifyError::RevocationsStale.is_unavailable());
    let bad = key.mint(&{
        let mut c = claims.clone();
        c["iss"] = "someone else".into();
        c
    });
    assert_eq!(
        verifier.verify(&bad).await,
        Err(VerifyError::WrongIssuer),
        "a bad token is still judged bad"
    );

    mock.set_feed_down(false);
    connected(&verifier).await;
    verifier.verify(&token).await.expect("caught up");
}

#[tokio::test]
async fn a_feed_that_never_synchronised_is_stale() {
    let key = TestKey::generate(Algorithm::EdDSA, "k1");
    let clock = ManualClock::at(T0);
    let issuer = common::closed_port_url().await;
    let verifier = Verifier::builder(&issuer)
        .clock(clock.clock())
        .revocation_feed(FEED_KEY)
        .revocation_max_staleness(Duration::from_secs(60))
        .build()
        .expect("verifier");
    verifier
        .preload_jwks(common::jwks(&[&key]).to_string().as_bytes())
        .expect("keys");
    assert_eq!(
        verifier
            .verify(&key.mint(&common::claims(&issuer, clock.secs())))
            .await,
        Err(VerifyError::RevocationsStale)
    );
    let status = verifier.revocation_status().expect("feed");
    assert!(!status.connected);
    assert_eq!(status.last_sync, None);
}

#[tokio::test]
async fn without_a_bound_a_lost_feed_keeps_the_last_known_set() {
    let (mock, key, clock) = setup().await;
    mock.revoke(SID, FAR_UNTIL);
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .build()
        .expect("verifier");
    common::eventually("the entry", || {
        verifier.revocation_status().is_some_and(|s| s.entries == 1)
    })
    .await;
    mock.set_feed_down(true);
    common::eventually("the outage", || {
        verifier.revocation_status().is_some_and(|s| !s.connected)
    })
    .await;
    clock.advance(Duration::from_secs(120));
    let mut claims = common::claims(&mock.base, clock.secs());
    assert_eq!(
        verifier.verify(&key.mint(&claims)).await,
        Err(VerifyError::Revoked)
    );
    claims["sid"] = common::OTHER_SID.into();
    verifier
        .verify(&key.mint(&claims))
        .await
        .expect("accepted against the last known set");
}

#[tokio::test]
async fn passed_entries_are_not_kept() {
    let (mock, key, clock) = setup().await;
    mock.revoke(SID, "2020-01-01T00:00:00Z");
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .build()
        .expect("verifier");
    connected(&verifier).await;
    assert_eq!(verifier.revocation_status().map(|s| s.entries), Some(0));
    verifier
        .verify(&key.mint(&common::claims(&mock.base, clock.secs())))
        .await
        .expect("an entry whose until has passed refuses nothing");
}

#[tokio::test]
async fn the_feed_task_stops_with_the_last_verifier() {
    let (mock, _, clock) = setup().await;
    let verifier = mock
        .builder(&clock)
        .revocation_feed(FEED_KEY)
        .revocation_max_staleness(Duration::from_secs(2))
        .build()
        .expect("verifier");
    let clone = verifier.clone();
    drop(verifier);
    common::eventually("polls from the remaining clone", || {
        mock.feed_requests().len() >= 2
    })
    .await;
    drop(clone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_drop = mock.feed_requests().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        mock.feed_requests().len(),
        after_drop,
        "no polls after the drop"
    );
}

/// A subscriber that writes every event and span field to a buffer.
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut out = self.0.lock().expect("lock");
        span.record(&mut Fields(&mut out));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut out = self.0.lock().expect("lock");
        values.record(&mut Fields(&mut out));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut out = self.0.lock().expect("lock");
        let _ = write!(out, "\n{}:", event.metadata().target());
        event.record(&mut Fields(&mut out));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_feed_key_never_appears_in_logs_or_debug_output() {
    let logs = Arc::new(Mutex::new(String::new()));
    let _guard = tracing::subscriber::set_default(Capture(Arc::clone(&logs)));
    // One thread: every task, and so every event, runs under the subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mock, key, clock) = setup().await;
        let builder = mock
            .builder(&clock)
            .revocation_feed(FEED_KEY)
            .hs256_secret(b"an hs256 secret of thirty-two b!".to_vec());
        assert!(!format!("{builder:?}").contains(FEED_KEY));
        assert!(!format!("{builder:?}").contains("thirty-two"));
        let verifier = builder.build().expect("verifier");
        assert!(!format!("{verifier:?}").contains(FEED_KEY));
        connected(&verifier).await;
        verifier
            .verify(&key.mint(&common::claims(&mock.base, clock.secs())))
            .await
            .expect("valid");
        // An outage and a refused key produce warnings.
        mock.set_feed_down(true);
        common::eventually("the outage", || {
            verifier.revocation_status().is_some_and(|s| !s.connected)
        })
        .await;
        let wrong_key = mock
            .builder(&clock)
            .revocation_feed("ghrs_wrong-key-9f8e7d")
            .build()
            .expect("verifier");
        common::eventually("the 401", || {
            mock.feed_requests().iter().any(|r| !r.authorized)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(wrong_key);
    });
    let logs = logs.lock().expect("lock").clone();
    assert!(
        logs.contains("revocation feed"),
        "the test saw the feed's logs: {logs}"
    );
    assert!(!logs.contains(FEED_KEY), "{logs}");
    assert!(!logs.contains("wrong-key-9f8e7d"), "{logs}");
}
