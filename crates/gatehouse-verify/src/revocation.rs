//! Ended sessions: the in-memory set `verify` consults (step 16), and the
//! background task that keeps it in step with gatehouse's revocation feed
//! (`GET {issuer}/v1/revocations`, a long poll with an opaque cursor).
//!
//! The set maps a session id to the instant after which none of its tokens
//! can be valid any more; it is the union of every answer (an entry's
//! `until` is the latest seen) and forgets entries once `until` (plus the
//! leeway, since tokens are accepted that much past `exp`) has passed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::net;
use crate::token::parse_uuid;
use crate::verifier::{Clock, unix_secs};

/// Largest feed answer accepted (a full resync of many ended sessions).
const MAX_FEED_BYTES: usize = 16 * 1024 * 1024;

/// Backoff after a failed poll: 1 s doubling to 30 s.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Answers with nothing new that come back faster than this are paced to it,
/// so a server that ignores `wait` cannot turn the long poll into a busy loop.
const MIN_EMPTY_POLL: Duration = Duration::from_secs(1);

/// Forget passed entries at most this often.
const PRUNE_EVERY: i64 = 10;

/// How the revocation feed is doing, as [`Verifier::revocation_status`]
/// reports it.
///
/// [`Verifier::revocation_status`]: crate::Verifier::revocation_status
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationStatus {
    /// Whether the last poll succeeded (and the feed is being followed now).
    pub connected: bool,
    /// When the last answer arrived (an answer with no entries counts), by
    /// the verifier's clock; `None` before the first.
    pub last_sync: Option<SystemTime>,
    /// How many ended sessions are remembered.
    pub entries: usize,
}

/// The set of ended sessions, shared by `verify` and the feed task.
#[derive(Debug)]
pub(crate) struct Revocations {
    /// Session id → Unix second until which its tokens are refused.
    ended: RwLock<HashMap<u128, i64>>,
    connected: AtomicBool,
    /// Milliseconds since the epoch of the last answer; `i64::MIN` for never.
    last_sync_ms: AtomicI64,
    /// Whole seconds tokens are accepted past `exp`.
    leeway: i64,
}

impl Revocations {
    pub(crate) fn new(leeway: i64) -> Self {
        Self {
            ended: RwLock::new(HashMap::new()),
            connected: AtomicBool::new(false),
            last_sync_ms: AtomicI64::new(i64::MIN),
            leeway,
        }
    }

    /// Whether the session has ended.
    pub(crate) fn is_revoked(&self, sid: u128) -> bool {
        self.ended
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&sid)
    }

    /// Adds ended sessions, keeping the latest `until` of each.
    pub(crate) fn insert(&self, entries: impl IntoIterator<Item = (u128, i64)>) {
        let mut ended = self.ended.write().unwrap_or_else(PoisonError::into_inner);
        for (sid, until) in entries {
            let e = ended.entry(sid).or_insert(until);
            *e = (*e).max(until);
        }
    }

    /// Forgets sessions none of whose tokens can still be accepted.
    pub(crate) fn prune(&self, now: i64) {
        let leeway = self.leeway;
        self.ended
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| until.saturating_add(leeway) > now);
    }

    pub(crate) fn len(&self) -> usize {
        self.ended
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn mark_synced(&self, now: SystemTime) {
        self.last_sync_ms.store(unix_millis(now), Ordering::Release);
        self.connected.store(true, Ordering::Release);
    }

    fn mark_disconnected(&self) -> bool {
        self.connected.swap(false, Ordering::AcqRel)
    }

    fn last_sync(&self) -> Option<SystemTime> {
        let ms = self.last_sync_ms.load(Ordering::Acquire);
        (ms != i64::MIN).then(|| from_unix_millis(ms))
    }

    /// Whether no answer arrived within `bound` of `now` (or ever). A clock
    /// that went back before the last answer counts as fresh.
    pub(crate) fn is_stale(&self, now: SystemTime, bound: Duration) -> bool {
        match self.last_sync() {
            None => true,
            Some(last) => now.duration_since(last).is_ok_and(|age| age > bound),
        }
    }

    pub(crate) fn status(&self) -> RevocationStatus {
        RevocationStatus {
            connected: self.connected.load(Ordering::Acquire),
            last_sync: self.last_sync(),
            entries: self.len(),
        }
    }
}

fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // Before 1970: nonsense for a sync time; the epoch stands in.
        Err(_) => 0,
    }
}

fn from_unix_millis(ms: i64) -> SystemTime {
    let ms = u64::try_from(ms).unwrap_or(0);
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The resource-server key, kept out of every `Debug` and log line.
#[derive(Clone)]
pub(crate) struct FeedKey(pub(crate) String);

impl fmt::Debug for FeedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the feed task needs.
pub(crate) struct Feed {
    pub(crate) client: reqwest::Client,
    /// `{issuer}/v1/revocations`, without query.
    pub(crate) url: reqwest::Url,
    /// `Bearer <key>`, marked sensitive so HTTP tooling does not print it.
    pub(crate) authorization: http::HeaderValue,
    /// The `wait` of each long poll, in seconds.
    pub(crate) wait: u64,
    pub(crate) clock: Clock,
}

/// One feed answer (the contract's 200 body).
#[derive(Deserialize)]
struct Answer {
    revocations: Vec<serde_json::Value>,
    cursor: String,
}

#[derive(Deserialize)]
struct Entry {
    sid: String,
    until: serde_json::Value,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("requesting the revocation feed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the revocation feed refused the resource-server key (401)")]
    Unauthorized,
    #[error("the revocation feed refused the cursor or wait (400); starting over")]
    BadRequest,
    #[error("the revocation feed answered {0}")]
    Status(http::StatusCode),
    #[error(transparent)]
    Body(#[from] net::BodyError),
    #[error("the revocation feed's answer is not a revocations object with a cursor")]
    NotAnAnswer,
}

/// Follows the feed until the task is aborted (when the last `Verifier`
/// clone is dropped).
pub(crate) async fn run(feed: Feed, set: Arc<Revocations>) {
    let mut cursor: Option<String> = None;
    let mut backoff = BACKOFF_START;
    let mut last_prune = i64::MIN;
    loop {
        let started = tokio::time::Instant::now();
        // Without a cursor, or after a failure, ask for an immediate answer:
        // gatehouse would otherwise hold even the first request for `wait`
        // seconds, and the verifier would count as out of step meanwhile.
        // Long-poll only once in step.
        let wait = if cursor.is_some() && set.connected.load(Ordering::Acquire) {
            feed.wait
        } else {
            0
        };
        match poll(&feed, cursor.as_deref(), wait).await {
            Ok(answer) => {
                let now = (feed.clock)();
                let now_secs = unix_secs(now);
                let empty = answer.revocations.is_empty();
                apply(&set, &answer.revocations, now_secs);
                cursor = Some(answer.cursor);
                if !set.connected.load(Ordering::Acquire) {
                    tracing::info!(entries = set.len(), "revocation feed synchronised");
                }
                set.mark_synced(now);
                backoff = BACKOFF_START;
                if now_secs.saturating_sub(last_prune) >= PRUNE_EVERY {
                    set.prune(now_secs);
                    last_prune = now_secs;
                }
                // A non-empty answer may be a full page (the server sends at
                // most 1,000 entries): ask again at once.
                if empty && wait > 0 {
                    tokio::time::sleep_until(started + MIN_EMPTY_POLL).await;
                }
                continue;
            }
            Err(e) => {
                if matches!(e, PollError::BadRequest) {
                    // The contract: a 400 means the cursor is no good; ask
                    // for everything in force again.
                    cursor = None;
                }
                if set.mark_disconnected() {
                    tracing::warn!(error = %e, "revocation feed lost; verifying against the last known revocations");
                } else {
                    tracing::debug!(error = %e, "revocation feed still unreachable");
                }
            }
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
    }
}

/// One long poll.
async fn poll(feed: &Feed, cursor: Option<&str>, wait: u64) -> Result<Answer, PollError> {
    let mut url = feed.url.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(cursor) = cursor {
            query.append_pair("since", cursor);
        }
        query.append_pair("wait", &wait.to_string());
    }
    let response = feed
        .client
        .get(url)
        .header(http::header::AUTHORIZATION, feed.authorization.clone())
        .header(http::header::ACCEPT, "application/json")
        // The server may hold the request for `wait` seconds; the client's
        // own total timeout would cut every long poll short.
        .timeout(Duration::from_secs(wait) + net::REQUEST_TIMEOUT)
        .send()
        .await?;
    match response.status() {
        http::StatusCode::OK => {}
        http::StatusCode::UNAUTHORIZED => return Err(PollError::Unauthorized),
        http::StatusCode::BAD_REQUEST => return Err(PollError::BadRequest),
        other => return Err(PollError::Status(other)),
    }
    let body = net::read_limited(response, MAX_FEED_BYTES).await?;
    serde_json::from_slice(&body).map_err(|_| PollError::NotAnAnswer)
}

/// Applies an answer's entries; returns how many were applied. An entry
/// whose `sid` is not a UUID names nothing and is skipped; one whose `until`
/// cannot be read is kept for good (fail closed: the session has ended, and
/// for how long its tokens live is unknown).
fn apply(set: &Revocations, entries: &[serde_json::Value], now: i64) -> usize {
    let mut parsed = Vec::with_capacity(entries.len());
    let mut skipped = 0usize;
    for value in entries {
        let Ok(entry) = Entry::deserialize(value) else {
            skipped += 1;
            continue;
        };
        let Some(sid) = parse_uuid(&entry.sid, true) else {
            skipped += 1;
            continue;
        };
        let until = entry
            .until
            .as_str()
            .and_then(parse_rfc3339)
            .unwrap_or(i64::MAX);
        if until.saturating_add(set.leeway) > now {
            parsed.push((sid, until));
        }
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "revocation feed entries without a session id skipped"
        );
    }
    let n = parsed.len();
    set.insert(parsed);
    n
}

/// An RFC 3339 instant as Unix seconds, rounded up (a refusal lasts at
/// least until the instant named).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(
        t.unix_timestamp()
            .saturating_add(i64::from(t.nanosecond() > 0)),
    )
}

/// Up to a quarter more than `d`, so many verifiers that lost the feed
/// together do not come back in lockstep.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // RandomState is seeded from the OS per instance: enough for jitter,
    // without a random-number crate.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let quarter_ms = u64::try_from(d.as_millis() / 4).unwrap_or(0).max(1);
    d + Duration::from_millis(noise % quarter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u128 = 0xa;
    const B: u128 = 0xb;

    #[test]
    fn entries_are_a_union_keeping_the_latest_until() {
        let set = Revocations::new(30);
        set.insert([(A, 100), (B, 50)]);
        set.insert([(A, 80), (B, 70)]);
        assert!(set.is_revoked(A) && set.is_revoked(B));
        // A's until stays 100: pruning at 101 + leeway keeps it until 130.
        set.prune(129);
        assert!(set.is_revoked(A));
        assert!(!set.is_revoked(B), "B's until 70 + 30 passed");
        set.prune(130);
        assert!(!set.is_revoked(A));
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn answers_apply_valid_entries_and_fail_closed_on_unreadable_times() {
        let set = Revocations::new(0);
        let entries: Vec<serde_json::Value> = serde_json::from_str(
            r#"[
                {"sid": "0190f2a4-7c1e-7a3b-9c4d-aaaaaaaaaaaa", "until": "2030-01-01T00:00:00Z"},
                {"sid": "0190F2A4-7C1E-7A3B-9C4D-BBBBBBBBBBBB", "until": "2030-01-01T00:00:00.5+00:00"},
                {"sid": "0190f2a4-7c1e-7a3b-9c4d-cccccccccccc", "until": "yesterday-ish"},
                {"sid": "0190f2a4-7c1e-7a3b-9c4d-dddddddddddd", "until": "2000-01-01T00:00:00Z"},
                {"sid": "not-a-uuid", "until": "2030-01-01T00:00:00Z"},
                {"until": "2030-01-01T00:00:00Z"},
                "junk"
            ]"#,
        )
        .expect("json");
        let applied = apply(&set, &entries, 1_700_000_000);
        assert_eq!(applied, 3);
        assert!(set.is_revoked(0x0190f2a4_7c1e_7a3b_9c4d_aaaaaaaaaaaa));
        assert!(set.is_revoked(0x0190f2a4_7c1e_7a3b_9c4d_bbbbbbbbbbbb));
        assert!(set.is_revoked(0x0190f2a4_7c1e_7a3b_9c4d_cccccccccccc));
        assert!(
            !set.is_revoked(0x0190f2a4_7c1e_7a3b_9c4d_dddddddddddd),
            "already passed"
        );
        set.prune(i64::MAX - 1);
        assert!(
            set.is_revoked(0x0190f2a4_7c1e_7a3b_9c4d_cccccccccccc),
            "an unreadable until is kept"
        );
    }

    #[test]
    fn rfc3339_instants_round_up() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10.001Z"), Some(11));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:10+01:00"), Some(10));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:10"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn staleness_counts_from_the_last_answer() {
        let set = Revocations::new(0);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(set.is_stale(t0, Duration::from_secs(60)), "never synced");
        set.mark_synced(t0);
        assert!(!set.is_stale(t0 + Duration::from_secs(60), Duration::from_secs(60)));
        assert!(set.is_stale(t0 + Duration::from_secs(61), Duration::from_secs(60)));
        assert!(!set.is_stale(t0 - Duration::from_secs(5), Duration::from_secs(60)));
        assert_eq!(set.status().last_sync, Some(t0));
        assert!(set.status().connected);
        assert!(set.mark_disconnected());
        assert!(!set.status().connected);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(4));
            assert!(j >= Duration::from_secs(4) && j < Duration::from_secs(5));
        }
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        assert_eq!(format!("{:?}", FeedKey("ghrs_secret".into())), "[redacted]");
    }
}
