//! Revocation fan-out: every node follows the Redis channel on which ended
//! sessions are published, so an access token of a session ended on any
//! node is refused by every node's store-free check within moments.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;

use crate::auth::Auth;
use crate::auth::types::SessionId;
use crate::clock::from_millis;
use crate::config::RevocationFailMode;

/// How long to wait before reconnecting after the feed is lost.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Longest a (re)connection may take, subscription and reload included.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);

/// Follows the revocation channel for ever, reconnecting after a loss. Each
/// (re)connection subscribes first and then reloads every revocation in
/// force from the store, so a message missed while disconnected can never
/// leave a revoked token accepted; only then may the session cache answer
/// again (emptied, for the same reason).
pub async fn follow_revocations(auth: Arc<Auth>, url: String, channel: String) {
    loop {
        let e = follow_once(&auth, &url, &channel).await;
        if auth.feed_lost() {
            let cookies = match auth.shared_sessions().map(|s| s.fail_mode()) {
                Some(RevocationFailMode::Stale) => {
                    "cookie sessions this node read recently are accepted from its cache (revocation_fail_mode = stale), others answer 503"
                }
                _ => "cookie sessions answer 503 (revocation_fail_mode = closed)",
            };
            tracing::warn!(
                error = format!("{e:#}"),
                "degraded: revocation feed lost; verifying tokens against the revocations last known; {cookies} until Redis is back"
            );
        } else {
            tracing::debug!(
                error = format!("{e:#}"),
                "revocation feed still unavailable"
            );
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// One connection's life; returns why it ended.
async fn follow_once(auth: &Auth, url: &str, channel: &str) -> anyhow::Error {
    match listen(auth, url, channel).await {
        Ok(()) => anyhow::anyhow!("the revocation feed closed"),
        Err(e) => e,
    }
}

async fn listen(auth: &Auth, url: &str, channel: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("parsing redis_url")?;
    let connect = async {
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("connecting to Redis for the revocation feed")?;
        pubsub
            .subscribe(channel)
            .await
            .context("subscribing to the revocation channel")?;
        auth.reload_revocations()
            .await
            .context("reloading revocations after (re)connecting")?;
        anyhow::Ok(pubsub)
    };
    let mut pubsub = tokio::time::timeout(CONNECT_WITHIN, connect)
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within {CONNECT_WITHIN:?}"))??;
    auth.feed_connected();
    tracing::info!("revocation feed connected");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: String = match message.get_payload() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable revocation message");
                continue;
            }
        };
        match parse(&payload) {
            Some((sid, until)) => auth.ended_elsewhere(sid, until),
            None => tracing::warn!("malformed revocation message ignored"),
        }
    }
    Ok(())
}

/// `"{session id} {revoked until, ms since the epoch}"`.
fn parse(payload: &str) -> Option<(SessionId, time::OffsetDateTime)> {
    let (sid, until) = payload.split_once(' ')?;
    Some((SessionId::parse(sid)?, from_millis(until.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_garbage_is_refused() {
        let sid = SessionId::new();
        let (got, until) = parse(&format!("{sid} 1795445768000")).expect("parses");
        assert_eq!(got, sid);
        assert_eq!(until.unix_timestamp(), 1_795_445_768);
        for bad in [
            "",
            "x",
            "not-a-uuid 1",
            &format!("{sid}"),
            &format!("{sid} soon"),
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
