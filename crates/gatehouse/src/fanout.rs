//! Revocation fan-out: every node follows the Redis channel on which ended
//! sessions are published, so an access token of a session ended on any
//! node is refused by every node's store-free check within moments.
//!
//! A subscription can die silently (a black-holed path drops packets and
//! resets nothing), so the feed proves itself: a heartbeat (PING) on the
//! subscriber's own connection every fifth of `revocation_max_staleness`
//! (at most every second). Redis answers it only after every message it
//! queued to that connection before, so each answer proves that every
//! ending published before the PING was sent has been applied
//! ([`crate::revocation::FeedStatus`]). A subscription that answers no heartbeat
//! within `revocation_max_staleness` is dropped and made anew; meanwhile
//! the node behaves as `revocation_fail_mode` says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;

use crate::auth::Sessions;
use crate::config::RevocationFailMode;
use crate::revocation::{FeedStatus, Revocations};
use crate::store::FeedSource;

/// How long to wait before reconnecting after the feed is lost.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Longest a (re)connection may take, subscription and reload included.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Most time between two heartbeats.
const HEARTBEAT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// How often the node looks whether its proof has run out (for the log).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Follows the revocation channel for ever, reconnecting after a loss. Each
/// (re)connection subscribes first and then reloads every revocation in
/// force from the store, so a message missed while disconnected can never
/// leave a revoked token accepted; only then may the caches answer again
/// (emptied, for the same reason).
pub async fn follow_revocations(
    sessions: Arc<Sessions>,
    revocations: Arc<Revocations>,
    source: FeedSource,
) {
    let (Some(feed), Some(mode)) = (revocations.feed(), revocations.fail_mode()) else {
        return;
    };
    let follow = async {
        loop {
            let e = listen(
                &sessions,
                &revocations,
                feed,
                source.url.expose(),
                &source.channel,
            )
            .await
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the revocation feed closed"));
            if revocations.feed_lost() {
                tracing::warn!(
                    error = format!("{e:#}"),
                    max_staleness = ?feed.max_staleness(),
                    "revocation feed lost: reconnecting; caches answer nothing meanwhile, and past revocation_max_staleness without a heartbeat answered {}",
                    degraded_behaviour(mode)
                );
            } else {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "revocation feed still unavailable"
                );
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    };
    tokio::join!(follow, watch(feed, mode));
}

/// What a node does once its proof has run out.
fn degraded_behaviour(mode: RevocationFailMode) -> &'static str {
    match mode {
        RevocationFailMode::Closed => {
            "every request with a session cookie or an access token answers 503 (revocation_fail_mode = closed)"
        }
        RevocationFailMode::Stale => {
            "access tokens are verified against the revocations known and cookies may be accepted from the cache; a logout made on another node meanwhile may be missed (revocation_fail_mode = stale)"
        }
    }
}

/// Logs when the node becomes degraded (its proof ran out) and when it
/// recovers, once each.
async fn watch(feed: &FeedStatus, mode: RevocationFailMode) {
    let mut degraded = false;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match (degraded, feed.is_proven()) {
            (false, false) => {
                degraded = true;
                let age = feed.proof_age().unwrap_or_default();
                tracing::warn!(
                    silent_for = ?age,
                    max_staleness = ?feed.max_staleness(),
                    "degraded: this node cannot prove it knows every revocation; {}, until the feed is back and reloaded",
                    degraded_behaviour(mode)
                );
            }
            (true, true) => {
                degraded = false;
                tracing::info!("revocation feed proven again: no longer degraded");
            }
            _ => {}
        }
    }
}

/// One subscription's life; returns why it ended.
async fn listen(
    sessions: &Sessions,
    revocations: &Revocations,
    feed: &FeedStatus,
    url: &str,
    channel: &str,
) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("parsing redis_url")?;
    let connect = async {
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("connecting to Redis for the revocation feed")?;
        // Whatever is published after this reaches the subscription; what
        // was published before, the reload finds in the store.
        let proof = Instant::now();
        pubsub
            .subscribe(channel)
            .await
            .context("subscribing to the revocation channel")?;
        sessions
            .reload_revocations()
            .await
            .context("reloading revocations after (re)connecting")?;
        anyhow::Ok((pubsub, proof))
    };
    let (pubsub, proof) = tokio::time::timeout(CONNECT_WITHIN, connect)
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within {CONNECT_WITHIN:?}"))??;
    revocations.feed_connected(proof);
    tracing::info!("revocation feed connected");
    let (sink, mut messages) = pubsub.split();
    let (answered, mut heartbeats) = mpsc::channel(4);
    let every = (feed.max_staleness() / 5).min(HEARTBEAT_AT_MOST_EVERY);
    let beating = tokio::spawn(heartbeat(sink, every, feed.max_staleness(), answered));
    let _stop = AbortOnDrop(beating.abort_handle());
    loop {
        tokio::select! {
            biased;
            message = messages.next() => match message {
                Some(message) => apply(revocations, &message),
                None => return Ok(()),
            },
            sent = heartbeats.recv() => {
                let Some(sent) = sent else {
                    return Err(match beating.await {
                        Ok(Err(e)) => e,
                        _ => anyhow::anyhow!("the heartbeat stopped"),
                    });
                };
                // Redis sent every message before the answer, and the
                // connection's reader has queued them already: apply them
                // first, then record what the answer proves.
                while let Some(Some(message)) = messages.next().now_or_never() {
                    apply(revocations, &message);
                }
                feed.prove(sent);
            }
            () = tokio::time::sleep_until(feed.proven_until().into()) => {
                return Err(anyhow::anyhow!(
                    "no heartbeat answered within revocation_max_staleness ({:?})",
                    feed.max_staleness()
                ));
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends a PING on the subscriber's connection every `every` and reports
/// the sending instant of each one answered; ends when one is refused or
/// unanswered within `within`.
async fn heartbeat(
    mut sink: redis::aio::PubSubSink,
    every: Duration,
    within: Duration,
    answered: mpsc::Sender<Instant>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        tokio::time::timeout(within, sink.ping::<redis::Value>())
            .await
            .map_err(|_| anyhow::anyhow!("a heartbeat was not answered within {within:?}"))?
            .context("a heartbeat failed")?;
        if answered.send(sent).await.is_err() {
            return Ok(());
        }
    }
}

/// Applies one message of the revocation channel.
fn apply(revocations: &Revocations, message: &redis::Msg) {
    let payload: String = match message.get_payload() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable revocation message");
            return;
        }
    };
    if payload == crate::store::redis::PRINCIPALS_CHANGED {
        revocations.principals_changed();
        return;
    }
    match crate::store::redis::parse_revocation(&payload) {
        Some((sid, until)) => revocations.insert([(sid, until)]),
        None => tracing::warn!("malformed revocation message ignored"),
    }
}
