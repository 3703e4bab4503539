//! Resource servers and the revocation feed they follow: the services that
//! verify access tokens themselves (with `gatehouse-verify`) learn of ended
//! sessions from `GET /v1/revocations`, a long poll over the store's
//! numbered revocation log.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::audit::{Actor, Audit, EventType};
use crate::clock::Clock;
use crate::model::client::FieldError;
use crate::model::types::{ResourceServerId, ResourceServerName, ResourceServerSecret, SessionId};
use crate::revocation::Revocations;
use crate::store::{
    CreateResourceServerError, ResourceServerRecord, ResourceServerStore, RevocationLog,
    SessionStore,
};

/// Most revocations one answer carries; a client that gets this many asks
/// again at once.
pub const FEED_PAGE: u32 = 1000;

/// Longest a feed request may wait for news.
pub const MAX_FEED_WAIT: Duration = Duration::from_secs(30);

/// A resource server just created, with its key, which exists nowhere else.
#[derive(Debug)]
pub struct NewResourceServer {
    pub record: ResourceServerRecord,
    pub key: ResourceServerSecret,
}

/// Why a resource server could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateResourceServerFailure {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the name is taken")]
    NameTaken,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Where a reader of the feed stands: the numbering it read (`epoch`) and
/// the last number it has seen. Opaque to clients: `EPOCH.SEQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    epoch: String,
    seq: u64,
}

/// A cursor that this server did not issue.
#[derive(Debug, thiserror::Error)]
#[error("the cursor is not one this server issued")]
pub struct BadFeedCursor;

impl FeedCursor {
    /// Parses `EPOCH.SEQ` (the epoch: at most 64 lower-case letters and
    /// digits, possibly none).
    ///
    /// # Errors
    /// [`BadFeedCursor`] for anything else.
    pub fn parse(s: &str) -> Result<Self, BadFeedCursor> {
        let (epoch, seq) = s.rsplit_once('.').ok_or(BadFeedCursor)?;
        let plain = epoch.len() <= 64
            && epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        // Digits only: `u64::from_str` would also take a leading `+`.
        if !plain || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadFeedCursor);
        }
        Ok(Self {
            epoch: epoch.to_owned(),
            seq: seq.parse().map_err(|_| BadFeedCursor)?,
        })
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", self.epoch, self.seq)
    }
}

/// One answer of the feed: sessions whose tokens are refused until the
/// instant given, and where to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    pub revocations: Vec<(SessionId, OffsetDateTime)>,
    pub cursor: FeedCursor,
}

/// Resource servers and the revocation feed they read.
pub struct Feed {
    resource_servers: Arc<dyn ResourceServerStore>,
    sessions: Arc<dyn SessionStore>,
    revocations: Arc<Revocations>,
    audit: Arc<Audit>,
    clock: Arc<dyn Clock>,
    /// Turns true when the server shuts down, ending the long polls.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    pub fn new(
        resource_servers: Arc<dyn ResourceServerStore>,
        sessions: Arc<dyn SessionStore>,
        revocations: Arc<Revocations>,
        audit: Arc<Audit>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            resource_servers,
            sessions,
            revocations,
            audit,
            clock,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Creates a resource server with a fresh key.
    ///
    /// # Errors
    /// See [`CreateResourceServerFailure`].
    pub async fn create_resource_server(
        &self,
        name: &str,
        actor: Actor,
    ) -> Result<NewResourceServer, CreateResourceServerFailure> {
        let name = ResourceServerName::parse(name)
            .map_err(|m| CreateResourceServerFailure::Invalid(vec![FieldError::new("name", m)]))?;
        let key =
            ResourceServerSecret::generate().map_err(|e| anyhow::anyhow!("OS RNG failed: {e}"))?;
        let record = ResourceServerRecord {
            id: ResourceServerId::new(),
            name: name.as_str().to_owned(),
            key_hash: key.hash(),
            created_at: self.clock.now(),
        };
        match self.resource_servers.create_resource_server(&record).await {
            Ok(()) => {}
            Err(CreateResourceServerError::NameTaken) => {
                return Err(CreateResourceServerFailure::NameTaken);
            }
            Err(CreateResourceServerError::Store(e)) => return Err(e.into()),
        }
        let event = self
            .audit
            .event(EventType::ResourceServerCreated, actor)
            .detail("resource_server_id", record.id.to_string())
            .detail("name", record.name.as_str());
        self.audit.record_one(event).await;
        Ok(NewResourceServer { record, key })
    }

    /// Every resource server, by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn resource_servers(&self) -> anyhow::Result<Vec<ResourceServerRecord>> {
        self.resource_servers.resource_servers().await
    }

    /// Deletes a resource server: its key stops working at once.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_resource_server(
        &self,
        id: ResourceServerId,
        actor: Actor,
    ) -> anyhow::Result<bool> {
        let deleted = self.resource_servers.delete_resource_server(id).await?;
        if deleted {
            let event = self
                .audit
                .event(EventType::ResourceServerDeleted, actor)
                .detail("resource_server_id", id.to_string());
            self.audit.record_one(event).await;
        }
        Ok(deleted)
    }

    /// The resource server a key belongs to, if any.
    ///
    /// # Errors
    /// Store failures (callers answer 503, not 401).
    pub async fn authenticate_resource_server(
        &self,
        key: &ResourceServerSecret,
    ) -> anyhow::Result<Option<ResourceServerRecord>> {
        let hash = key.hash();
        let found = self.resource_servers.resource_server_by_key(&hash).await?;
        // Compared again in constant time, as for sessions.
        Ok(found.filter(|rs| bool::from(rs.key_hash.0.ct_eq(&hash.0))))
    }

    /// The revocations after `cursor` (all in force without one), waiting
    /// up to `wait` (at most [`MAX_FEED_WAIT`]) for one when there are none;
    /// an answer may be empty. A cursor of another numbering (the log
    /// started over) or from beyond the log's end (an old backup restored)
    /// is answered as if absent: the reader gets everything in force again,
    /// which is safe because readers keep the union.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revocation_feed(
        &self,
        cursor: Option<&FeedCursor>,
        wait: Duration,
    ) -> anyhow::Result<FeedPage> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_FEED_WAIT);
        let mut stopping = self.stopping.subscribe();
        loop {
            // Registered before the read, so an ending recorded between the
            // read and the wait still wakes it.
            let changed = self.revocations.set().changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let page = self.read_feed(cursor).await?;
            let stop = *stopping.borrow_and_update();
            if !page.revocations.is_empty() || stop {
                return Ok(page);
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => return Ok(page),
                _ = stopping.changed() => return Ok(page),
            }
        }
    }

    async fn read_feed(&self, cursor: Option<&FeedCursor>) -> anyhow::Result<FeedPage> {
        let now = self.clock.now();
        let sessions = &self.sessions;
        let mut log = sessions
            .revocation_log(cursor.map(|c| c.seq), now, FEED_PAGE)
            .await?;
        if let Some(c) = cursor
            && !continues(c, &log)
        {
            log = sessions.revocation_log(None, now, FEED_PAGE).await?;
        }
        Ok(FeedPage {
            revocations: log
                .entries
                .iter()
                .map(|e| (e.session_id, e.until))
                .collect(),
            cursor: FeedCursor {
                epoch: log.epoch,
                seq: log.upto,
            },
        })
    }

    /// Wakes every feed request that is waiting, for a graceful shutdown.
    pub fn stop_waiting(&self) {
        self.stopping.send_replace(true);
    }
}

/// Whether a cursor reads on in this log (same numbering, not beyond it).
fn continues(cursor: &FeedCursor, log: &RevocationLog) -> bool {
    cursor.epoch == log.epoch && cursor.seq <= log.last_seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = FeedCursor::parse("3f2a9c01d4e5b6a7.42").expect("a cursor");
        assert_eq!(c.encode(), "3f2a9c01d4e5b6a7.42");
        assert_eq!(FeedCursor::parse(".0").expect("empty epoch").seq, 0);
        for bad in [
            "",
            "42",
            "abc.",
            "abc.+1",
            "abc.-1",
            "ABC.1",
            "a b.1",
            "abc.18446744073709551616",
            &format!("{}.1", "a".repeat(65)),
            "abc.1' OR '1'='1",
        ] {
            assert!(FeedCursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
