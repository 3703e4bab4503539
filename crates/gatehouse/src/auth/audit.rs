//! The audit trail: security events (logins, logouts, ended sessions,
//! refresh-token reuse, password and role changes, disabled users, key
//! rotations), each emitted as a structured `tracing` event (target
//! `gatehouse::audit`) and stored for `GET /v1/admin/audit`. The vocabulary
//! lives in `model::audit`, which the stores share.

pub use crate::model::audit::*;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::model::cursor::{PageError, decode_cursor, encode_cursor};
use crate::model::types::UserId;
use crate::store::AuditStore;

use super::notices::Notices;

/// Writes the event to the log, where operators' collectors pick it up.
fn log(e: &AuditEvent) {
    let (actor, actor_id) = e.actor.parts();
    let user_id = e.user_id.map(|u| u.to_string());
    let session_id = e.session_id.map(|s| s.to_string());
    let actor_id = actor_id.map(|u| u.to_string());
    let details = e.details.to_string();
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "gatehouse::audit",
                event = e.kind.as_str(),
                event_id = %e.id,
                user_id = user_id.as_deref(),
                actor,
                actor_id = actor_id.as_deref(),
                session_id = session_id.as_deref(),
                ip = e.ip.as_deref(),
                details = %details,
                "audit"
            )
        };
    }
    match e.kind {
        EventType::RefreshReuseDetected
        | EventType::LoginThrottled
        | EventType::RegistrationThrottled => emit!(warn),
        _ => emit!(info),
    }
}

/// The audit trail: every service records through it; the admin API reads
/// it.
pub struct Audit {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// How long events are kept; `None` keeps them forever.
    retention: Option<Duration>,
    /// With mail on: the security notices events call for, written with
    /// them.
    notices: Option<Notices>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Audit {
    pub fn new(
        store: Arc<dyn AuditStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        retention: Option<Duration>,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            retention,
            notices: None,
        }
    }

    /// This trail, writing security notices with the events that call for
    /// them.
    #[must_use]
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Records events: logged at once, then stored. A store failure is
    /// logged (with the events, which the log line already carries) and
    /// counted, and does not undo or refuse what already happened.
    pub async fn record(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        for e in &events {
            log(e);
        }
        let mails = match &self.notices {
            Some(notices) => notices.for_events(&events).await,
            None => Vec::new(),
        };
        if let Err(err) = self.store.append(&events, &mails).await {
            self.metrics
                .audit_write_failures
                .increment(events.len() as u64);
            tracing::error!(
                target: "gatehouse::audit",
                error = format!("{err:#}"),
                count = events.len(),
                "storing audit events failed; they are in this log only"
            );
            if !mails.is_empty() {
                self.metrics.mails_failed.increment(mails.len() as u64);
                tracing::error!(
                    target: "gatehouse::mail",
                    count = mails.len(),
                    "the security notices of these events were not written"
                );
            }
            return;
        }
        if let (false, Some(notices)) = (mails.is_empty(), &self.notices) {
            self.metrics.mails_queued.increment(mails.len() as u64);
            notices.wake.notify_one();
        }
    }

    /// Records one event.
    pub async fn record_one(&self, event: AuditEvent) {
        self.record(vec![event]).await;
    }

    /// An event of `kind` by `actor`, stamped with this service's clock.
    pub fn event(&self, kind: EventType, actor: Actor) -> AuditEvent {
        AuditEvent::new(kind, actor, self.clock.now())
    }

    /// A page of the trail, newest first.
    ///
    /// # Errors
    /// [`PageError::BadCursor`] for a cursor we did not issue;
    /// [`PageError::Store`] for store failures.
    pub async fn events(
        &self,
        user: Option<UserId>,
        kind: Option<EventType>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage, PageError> {
        let before = cursor.map(decode_cursor).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        // One more than asked tells whether a next page exists.
        let mut events = self
            .store
            .audit_events(&AuditQuery {
                user,
                kind,
                before,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = if events.len() > limit as usize {
            events.truncate(limit as usize);
            events.last().map(|e| encode_cursor(e.id))
        } else {
            None
        };
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    /// Deletes events older than the retention period; run periodically.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep(&self) -> anyhow::Result<u64> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let cutoff = self.clock.now() - retention;
        self.store.delete_audit_events_before(cutoff).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_by_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        for bad in ["", "LOGIN_FAILED", "login", "' OR 1=1 --"] {
            assert_eq!(EventType::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn actors_round_trip_and_mismatched_parts_are_refused() {
        let id = UserId::new();
        for a in [Actor::User(id), Actor::Cli, Actor::System, Actor::Anonymous] {
            let (kind, uid) = a.parts();
            assert_eq!(Actor::from_parts(kind, uid), Some(a));
        }
        assert_eq!(Actor::from_parts("user", None), None);
        assert_eq!(Actor::from_parts("cli", Some(id)), None);
        assert_eq!(Actor::from_parts("root", None), None);
    }
}
