//! The audit trail (the `AuditStore`) on PostgreSQL and on SQLite.

use anyhow::Context as _;
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::mail::{pg_insert_mail, sqlite_insert_mail};
use super::{ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::audit::{Actor, AuditEvent, AuditQuery, EventType};
use crate::model::mail::OutboxMail;
use crate::model::types::{SessionId, UserId};
use crate::store::AuditStore;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;

const DELETE_BEFORE: &str = "DELETE FROM audit_events WHERE at < $1";

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// The insert of one event, bound, on PostgreSQL.
fn pg_insert(e: &AuditEvent) -> PgQuery<'_> {
    let (actor, actor_id) = e.actor.parts();
    sqlx::query(
        "INSERT INTO audit_events (id, at, type, user_id, actor, actor_id, session_id, ip, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
    )
    .bind(e.id)
    .bind(ms(e.at))
    .bind(e.kind.as_str())
    .bind(e.user_id.map(|u| u.0))
    .bind(actor)
    .bind(actor_id.map(|u| u.0))
    .bind(e.session_id.map(|s| s.0))
    .bind(&e.ip)
    .bind(e.details.to_string())
}

/// The insert of one event, bound, on SQLite.
fn sqlite_insert(e: &AuditEvent) -> SqliteQuery<'_> {
    let (actor, actor_id) = e.actor.parts();
    sqlx::query(
        "INSERT INTO audit_events (id, at, type, user_id, actor, actor_id, session_id, ip, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.id.to_string())
    .bind(to_millis(e.at))
    .bind(e.kind.as_str())
    .bind(e.user_id.map(|u| u.0.to_string()))
    .bind(actor)
    .bind(actor_id.map(|u| u.0.to_string()))
    .bind(e.session_id.map(|s| s.0.to_string()))
    .bind(&e.ip)
    .bind(e.details.to_string())
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append(&self, events: &[AuditEvent], mails: &[OutboxMail]) -> anyhow::Result<()> {
        // One event is one statement, atomic on its own: no transaction's
        // two extra round trips on every audited request.
        if let ([e], []) = (events, mails) {
            pg_insert(e)
                .execute(&mut *self.conn().await?)
                .await
                .context("recording an audit event")?;
            return Ok(());
        }
        let mut tx = self.begin().await.context("starting a transaction")?;
        for e in events {
            pg_insert(e)
                .execute(&mut *tx)
                .await
                .context("recording an audit event")?;
        }
        for m in mails {
            pg_insert_mail(m)
                .execute(&mut *tx)
                .await
                .context("writing a notice to the outbox")?;
        }
        tx.commit().await.context("committing audit events")
    }

    async fn audit_events(&self, q: &AuditQuery) -> anyhow::Result<Vec<AuditEvent>> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT id, at, type, user_id, actor, actor_id, session_id, ip, details::text \
             FROM audit_events WHERE true",
        );
        if let Some(user) = q.user {
            sql.push(" AND user_id = ").push_bind(user.0);
        }
        if let Some(kind) = q.kind {
            sql.push(" AND type = ").push_bind(kind.as_str());
        }
        if let Some(before) = q.before {
            sql.push(" AND id < ").push_bind(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows: Vec<AuditRow<Uuid, OffsetDateTime>> = sql
            .build_query_as()
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading audit events")?;
        rows.into_iter()
            .map(|row| audit_event_from_row(row, Ok, |at| at))
            .collect()
    }

    async fn delete_audit_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        let done = sqlx::query(DELETE_BEFORE)
            .bind(cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .context("deleting old audit events")?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, events: &[AuditEvent], mails: &[OutboxMail]) -> anyhow::Result<()> {
        // One event is one statement, atomic on its own: no transaction's
        // two extra round trips through the driver's thread.
        if let ([e], []) = (events, mails) {
            sqlite_insert(e)
                .execute(&self.pool)
                .await
                .context("recording an audit event")?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        for e in events {
            sqlite_insert(e)
                .execute(&mut *tx)
                .await
                .context("recording an audit event")?;
        }
        for m in mails {
            sqlite_insert_mail(m)
                .execute(&mut *tx)
                .await
                .context("writing a notice to the outbox")?;
        }
        tx.commit().await.context("committing audit events")
    }

    async fn audit_events(&self, q: &AuditQuery) -> anyhow::Result<Vec<AuditEvent>> {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT id, at, type, user_id, actor, actor_id, session_id, ip, details \
             FROM audit_events WHERE 1 = 1",
        );
        if let Some(user) = q.user {
            sql.push(" AND user_id = ").push_bind(user.0.to_string());
        }
        if let Some(kind) = q.kind {
            sql.push(" AND type = ").push_bind(kind.as_str());
        }
        if let Some(before) = q.before {
            // Canonical lower-case hyphenated UUIDs sort as their bytes do.
            sql.push(" AND id < ").push_bind(before.to_string());
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows: Vec<AuditRow<String, i64>> = sql
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .context("reading audit events")?;
        rows.into_iter()
            .map(|row| audit_event_from_row(row, parse_uuid, from_millis))
            .collect()
    }

    async fn delete_audit_events_before(&self, cutoff: OffsetDateTime) -> anyhow::Result<u64> {
        let done = sqlx::query(DELETE_BEFORE)
            .bind(to_millis(cutoff))
            .execute(&self.pool)
            .await
            .context("deleting old audit events")?;
        Ok(done.rows_affected())
    }
}

/// An audit event's columns, with ids typed `I` and the instant `T` as the
/// dialect stores them.
type AuditRow<I, T> = (
    I,
    T,
    String,
    Option<I>,
    String,
    Option<I>,
    Option<I>,
    Option<String>,
    String,
);

fn audit_event_from_row<I, T>(
    (id, at, kind, user_id, actor, actor_id, session_id, ip, details): AuditRow<I, T>,
    uuid: impl Fn(I) -> anyhow::Result<Uuid>,
    instant: impl Fn(T) -> OffsetDateTime,
) -> anyhow::Result<AuditEvent> {
    let uid = |i: Option<I>| i.map(&uuid).transpose();
    let kind = EventType::parse(&kind)
        .ok_or_else(|| anyhow::anyhow!("unknown audit event type {kind:?}"))?;
    let actor = Actor::from_parts(&actor, uid(actor_id)?.map(UserId))
        .ok_or_else(|| anyhow::anyhow!("malformed audit actor {actor:?}"))?;
    Ok(AuditEvent {
        id: uuid(id)?,
        at: instant(at),
        kind,
        user_id: uid(user_id)?.map(UserId),
        actor,
        session_id: uid(session_id)?.map(SessionId),
        ip,
        details: serde_json::from_str(&details).context("audit details are not JSON")?,
    })
}
