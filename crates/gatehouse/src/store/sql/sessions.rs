//! Sessions, their refresh tokens and the revocation log (the
//! `SessionStore`) on PostgreSQL and on SQLite.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Row, Sqlite, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::users::split_list;
use super::{hash_from, ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::amr::Amr;
use crate::model::types::{ClientId, CredentialId, SecretHash, SessionId, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    RefreshRead, RefreshRecord, RevocationLog, SessionLink, SessionRecord, SessionStore,
    UserRecord, log_from_rows,
};

/// A session's columns, in the order both row mappings read them by name.
macro_rules! session_select {
    ($where:literal) => {
        concat!(
            "SELECT id, secret_hash, user_id, created_at, last_seen_at, expires_at, user_agent, ip, amr, ",
            "client_id, parent_id, scopes ",
            "FROM sessions ",
            $where
        )
    };
}

const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, secret_hash, user_id, created_at, last_seen_at, expires_at, user_agent, ip, amr, \
      client_id, parent_id, scopes) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SESSION_BY_SECRET: &str = session_select!("WHERE secret_hash = $1");

const SESSION_BY_ID: &str = session_select!("WHERE id = $1");

const SESSIONS_OF: &str = session_select!("WHERE user_id = $1 ORDER BY created_at, id");

const COUNT_SESSIONS: &str = "SELECT count(*) FROM sessions WHERE expires_at > $1";

const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id = $1 AND user_id = $2";

const SWEEP_REVOCATIONS: &str = "DELETE FROM revoked_sessions WHERE revoked_until <= $1";

const REVOCATIONS: &str =
    "SELECT session_id, revoked_until FROM revoked_sessions WHERE revoked_until > $1";

const REVOCATION_LOG_HEAD: &str = "SELECT epoch, last_seq FROM revocation_feed WHERE id = 1";

const REVOCATION_LOG: &str = "SELECT session_id, revoked_until, seq FROM revoked_sessions \
     WHERE seq > $1 AND seq <= $2 AND revoked_until > $3 ORDER BY seq LIMIT $4";

const INSERT_REFRESH: &str =
    "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";

const REFRESH_BY_HASH: &str = "SELECT session_id, created_at, spent_at, successor_sealed \
     FROM refresh_tokens WHERE token_hash = $1";

/// A refresh token's columns beside its session's (named as `session_select!`
/// names them, for the session's row mapping) and its user's with their
/// roles and effective permissions (as `users.rs` reads them: PostgreSQL
/// arrays in order, SQLite lists joined by U+001F and sorted when read).
macro_rules! refresh_read {
    ($roles:literal, $permissions:literal) => {
        concat!(
            "SELECT s.id, s.secret_hash, s.user_id, s.created_at, s.last_seen_at, s.expires_at, ",
            "s.user_agent, s.ip, s.amr, s.client_id, s.parent_id, s.scopes, ",
            "r.created_at AS refresh_created_at, r.spent_at AS refresh_spent_at, ",
            "r.successor_sealed AS refresh_successor_sealed, ",
            "u.email AS user_email, u.password_hash AS user_password_hash, ",
            "u.created_at AS user_created_at, u.disabled AS user_disabled, ",
            "u.email_verified AS user_email_verified, ",
            $roles,
            " AS user_roles, ",
            $permissions,
            " AS user_permissions ",
            "FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id ",
            "JOIN users u ON u.id = s.user_id WHERE r.token_hash = $1"
        )
    };
}

const PG_REFRESH_READ: &str = refresh_read!(
    "array(SELECT role FROM user_roles WHERE user_id = u.id ORDER BY role)",
    "array(SELECT DISTINCT rp.permission FROM user_roles ur \
     JOIN role_permissions rp ON rp.role = ur.role WHERE ur.user_id = u.id ORDER BY rp.permission)"
);

const SQLITE_REFRESH_READ: &str = refresh_read!(
    "(SELECT group_concat(role, char(31)) FROM user_roles WHERE user_id = u.id)",
    "(SELECT group_concat(permission, char(31)) FROM (SELECT DISTINCT rp.permission \
     FROM user_roles ur JOIN role_permissions rp ON rp.role = ur.role WHERE ur.user_id = u.id))"
);

/// The rotation on PostgreSQL in one statement: the session is locked
/// first (`live`: the successor's foreign-key check needs this lock anyway,
/// and taking it after the token's row lock would deadlock with a
/// concurrent logout, whose cascade locks the session first and the tokens
/// second; the subquery runs before the update locks any token row); then
/// the compare-and-swap (only an unspent token of a live session is spent:
/// a concurrent rotation waits on the row lock, then finds it spent); then
/// the successor, inserted only for the row spent. One row inserted is a
/// rotation done.
const PG_ROTATE_REFRESH: &str = "WITH live AS \
     (SELECT id FROM sessions WHERE id = $4 FOR KEY SHARE), \
     spent AS (UPDATE refresh_tokens SET spent_at = $1, successor_sealed = $2 \
     WHERE token_hash = $3 AND spent_at IS NULL AND session_id = (SELECT id FROM live) \
     RETURNING session_id) \
     INSERT INTO refresh_tokens (token_hash, session_id, created_at) \
     SELECT $5, session_id, $1 FROM spent";

/// The rotation on SQLite in one statement: the compare-and-swap (only an
/// unspent token is spent), naming the successor, which the trigger
/// `refresh_tokens_successor` (migration `20261208000001`) inserts.
const SQLITE_ROTATE_REFRESH: &str = "UPDATE refresh_tokens \
     SET spent_at = $1, successor_sealed = $2, successor_hash = $5 \
     WHERE token_hash = $3 AND spent_at IS NULL AND session_id = $4";

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session(&self, s: &SessionRecord) -> anyhow::Result<()> {
        sqlx::query(INSERT_SESSION)
            .bind(s.id.0)
            .bind(&s.secret_hash.0[..])
            .bind(s.user_id.0)
            .bind(ms(s.created_at))
            .bind(ms(s.last_seen_at))
            .bind(ms(s.expires_at))
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.amr.to_text())
            .bind(s.link.as_ref().map(|l| l.client_id.0))
            .bind(s.link.as_ref().map(|l| l.parent_id.0))
            .bind(s.link.as_ref().map(|l| l.scopes.clone()))
            .execute(&mut *self.conn().await?)
            .await
            .context("inserting a session")?;
        Ok(())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>> {
        sqlx::query(SESSION_BY_SECRET)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a session")?
            .as_ref()
            .map(pg_session_from_row)
            .transpose()
    }

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>> {
        sqlx::query(SESSION_BY_ID)
            .bind(id.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a session")?
            .as_ref()
            .map(pg_session_from_row)
            .transpose()
    }

    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        // GREATEST: a slow request must not move the record backwards.
        sqlx::query("UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) WHERE id = $2")
            .bind(ms(last_seen_at))
            .bind(id.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("recording a session's use")?;
        Ok(())
    }

    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as(COUNT_SESSIONS)
            .bind(now)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("counting sessions")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        sqlx::query(SESSIONS_OF)
            .bind(user_id.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing a user's sessions")?
            .iter()
            .map(pg_session_from_row)
            .collect()
    }

    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let done = sqlx::query(DELETE_SESSION)
            .bind(id.0)
            .bind(user_id.0)
            .execute(&mut *tx)
            .await
            .context("ending a session")?;
        let ended = done.rows_affected() == 1;
        if ended {
            Self::revoke(&mut tx, &[id.0], revoke_until).await?;
        }
        tx.commit().await.context("committing a session's end")?;
        Ok(ended)
    }

    async fn revoke_credential(
        &self,
        id: CredentialId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        Self::revoke(&mut tx, &[id.0], revoke_until).await?;
        tx.commit().await.context("committing a revocation")
    }

    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2 RETURNING id",
        )
        .bind(user_id.0)
        .bind(keep.map(|k| k.0))
        .fetch_all(&mut *tx)
        .await
        .context("ending a user's sessions")?;
        Self::revoke(&mut tx, &ids, revoke_until).await?;
        tx.commit().await.context("committing the sessions' end")?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64> {
        let now = ms(now);
        // An idle timeout reaching before any representable instant idles
        // nothing out (NULL compares false).
        let idle_cutoff = time::Duration::try_from(idle)
            .ok()
            .and_then(|idle| now.checked_sub(idle))
            .filter(|t| t.year() >= 1);
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(idle_cutoff)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping expired sessions")?;
        sqlx::query(SWEEP_REVOCATIONS)
            .bind(now)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping old revocations")?;
        // The attempt counters share this database (see `throttle.rs`).
        sqlx::query("DELETE FROM login_attempts WHERE closes_at <= $1")
            .bind(now)
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping closed login attempt windows")?;
        Ok(done.rows_affected())
    }

    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>> {
        let rows: Vec<(Uuid, OffsetDateTime)> = sqlx::query_as(REVOCATIONS)
            .bind(ms(now))
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading revocations")?;
        Ok(rows
            .into_iter()
            .map(|(id, until)| (SessionId(id), until))
            .collect())
    }

    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog> {
        // The head first: every number up to `last_seq` was committed
        // before this read, so the second read sees all of them.
        let (epoch, last_seq): (String, i64) = sqlx::query_as(REVOCATION_LOG_HEAD)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("reading the revocation log's head")?;
        let rows: Vec<(Uuid, OffsetDateTime, i64)> = sqlx::query_as(REVOCATION_LOG)
            .bind(log_cursor(after))
            .bind(last_seq)
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading the revocation log")?;
        log_from_rows(epoch, last_seq, limit, rows, |id| Ok(SessionId(id)), |t| t)
    }

    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(INSERT_REFRESH)
            .bind(&hash.0[..])
            .bind(session_id.0)
            .bind(ms(created_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("inserting a refresh token")?;
        Ok(())
    }

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>> {
        let row: Option<(
            Uuid,
            OffsetDateTime,
            Option<OffsetDateTime>,
            Option<Vec<u8>>,
        )> = sqlx::query_as(REFRESH_BY_HASH)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a refresh token")?;
        Ok(row.map(
            |(session_id, created_at, spent_at, successor_sealed)| RefreshRecord {
                session_id: SessionId(session_id),
                created_at,
                spent_at,
                successor_sealed,
            },
        ))
    }

    async fn refresh_with_session(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRead>> {
        let Some(row) = sqlx::query(PG_REFRESH_READ)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a refresh token, its session and its user")?
        else {
            return Ok(None);
        };
        let session = pg_session_from_row(&row)?;
        let decode = || -> Result<RefreshRead, sqlx::Error> {
            let refresh = RefreshRecord {
                session_id: session.id,
                created_at: row.try_get("refresh_created_at")?,
                spent_at: row.try_get("refresh_spent_at")?,
                successor_sealed: row.try_get("refresh_successor_sealed")?,
            };
            let user = UserRecord {
                id: session.user_id,
                email: row.try_get("user_email")?,
                password_hash: row.try_get("user_password_hash")?,
                created_at: row.try_get("user_created_at")?,
                disabled: row.try_get("user_disabled")?,
                email_verified: row.try_get("user_email_verified")?,
                roles: row.try_get("user_roles")?,
            };
            let permissions = row.try_get("user_permissions")?;
            Ok(RefreshRead {
                refresh,
                session: session.clone(),
                user: Some((user, permissions)),
            })
        };
        decode()
            .context("decoding a refresh token and its user")
            .map(Some)
    }

    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool> {
        // One statement, one round trip, its own transaction.
        let done = sqlx::query(PG_ROTATE_REFRESH)
            .bind(ms(spent_at))
            .bind(successor_sealed)
            .bind(&old.0[..])
            .bind(session_id.0)
            .bind(&successor.0[..])
            .execute(&mut *self.conn().await?)
            .await
            .context("rotating a refresh token")?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, s: &SessionRecord) -> anyhow::Result<()> {
        sqlx::query(INSERT_SESSION)
            .bind(s.id.0.to_string())
            .bind(&s.secret_hash.0[..])
            .bind(s.user_id.0.to_string())
            .bind(to_millis(s.created_at))
            .bind(to_millis(s.last_seen_at))
            .bind(to_millis(s.expires_at))
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.amr.to_text())
            .bind(s.link.as_ref().map(|l| l.client_id.0.to_string()))
            .bind(s.link.as_ref().map(|l| l.parent_id.0.to_string()))
            .bind(s.link.as_ref().map(|l| l.scopes.clone()))
            .execute(&self.pool)
            .await
            .context("inserting a session")?;
        Ok(())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> anyhow::Result<Option<SessionRecord>> {
        sqlx::query(SESSION_BY_SECRET)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading a session")?
            .as_ref()
            .map(sqlite_session_from_row)
            .transpose()
    }

    async fn session_by_id(&self, id: SessionId) -> anyhow::Result<Option<SessionRecord>> {
        sqlx::query(SESSION_BY_ID)
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a session")?
            .as_ref()
            .map(sqlite_session_from_row)
            .transpose()
    }

    async fn touch_session(
        &self,
        id: SessionId,
        last_seen_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        // MAX, SQLite's GREATEST: a slow request must not move the record
        // backwards.
        sqlx::query("UPDATE sessions SET last_seen_at = MAX(last_seen_at, $1) WHERE id = $2")
            .bind(to_millis(last_seen_at))
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await
            .context("recording a session's use")?;
        Ok(())
    }

    async fn count_sessions(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let (n,): (i64,) = sqlx::query_as(COUNT_SESSIONS)
            .bind(to_millis(now))
            .fetch_one(&self.pool)
            .await
            .context("counting sessions")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn sessions_of(&self, user_id: UserId) -> anyhow::Result<Vec<SessionRecord>> {
        sqlx::query(SESSIONS_OF)
            .bind(user_id.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("listing a user's sessions")?
            .iter()
            .map(sqlite_session_from_row)
            .collect()
    }

    async fn delete_session(
        &self,
        id: SessionId,
        user_id: UserId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let done = sqlx::query(DELETE_SESSION)
            .bind(id.0.to_string())
            .bind(user_id.0.to_string())
            .execute(&mut *tx)
            .await
            .context("ending a session")?;
        let ended = done.rows_affected() == 1;
        if ended {
            Self::revoke(&mut tx, &[id], revoke_until).await?;
        }
        tx.commit().await.context("committing a session's end")?;
        Ok(ended)
    }

    async fn revoke_credential(
        &self,
        id: CredentialId,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        Self::revoke(&mut tx, &[id.revocation_key()], revoke_until).await?;
        tx.commit().await.context("committing a revocation")
    }

    async fn delete_sessions_of(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
        revoke_until: OffsetDateTime,
    ) -> anyhow::Result<Vec<SessionId>> {
        // No session has the empty id: without `keep`, every one goes.
        let keep = keep.map(|k| k.0.to_string()).unwrap_or_default();
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let ids: Vec<String> =
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id")
                .bind(user_id.0.to_string())
                .bind(keep)
                .fetch_all(&mut *tx)
                .await
                .context("ending a user's sessions")?;
        let ids = ids
            .into_iter()
            .map(|s| parse_uuid(s).map(SessionId))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::revoke(&mut tx, &ids, revoke_until).await?;
        tx.commit().await.context("committing the sessions' end")?;
        Ok(ids)
    }

    async fn delete_expired(&self, now: OffsetDateTime, idle: Duration) -> anyhow::Result<u64> {
        let now_ms = to_millis(now);
        let idle_ms = i64::try_from(idle.as_millis()).unwrap_or(i64::MAX);
        let done =
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $1 - $2")
                .bind(now_ms)
                .bind(idle_ms)
                .execute(&self.pool)
                .await
                .context("sweeping expired sessions")?;
        sqlx::query(SWEEP_REVOCATIONS)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .context("sweeping old revocations")?;
        Ok(done.rows_affected())
    }

    async fn revocations(
        &self,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<(SessionId, OffsetDateTime)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(REVOCATIONS)
            .bind(to_millis(now))
            .fetch_all(&self.pool)
            .await
            .context("reading revocations")?;
        rows.into_iter()
            .map(|(id, until)| Ok((SessionId(parse_uuid(id)?), from_millis(until))))
            .collect()
    }

    async fn revocation_log(
        &self,
        after: Option<u64>,
        now: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<RevocationLog> {
        // One read transaction: the log's head and its entries from the same
        // snapshot.
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let (epoch, last_seq): (String, i64) = sqlx::query_as(REVOCATION_LOG_HEAD)
            .fetch_one(&mut *tx)
            .await
            .context("reading the revocation log's head")?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(REVOCATION_LOG)
            .bind(log_cursor(after))
            .bind(last_seq)
            .bind(to_millis(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .context("reading the revocation log")?;
        tx.commit().await.context("ending a read")?;
        log_from_rows(
            epoch,
            last_seq,
            limit,
            rows,
            |id| Ok(SessionId(parse_uuid(id)?)),
            from_millis,
        )
    }

    async fn insert_refresh(
        &self,
        hash: &SecretHash,
        session_id: SessionId,
        created_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(INSERT_REFRESH)
            .bind(&hash.0[..])
            .bind(session_id.0.to_string())
            .bind(to_millis(created_at))
            .execute(&self.pool)
            .await
            .context("inserting a refresh token")?;
        Ok(())
    }

    async fn refresh_by_hash(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRecord>> {
        let row = sqlx::query(REFRESH_BY_HASH)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading a refresh token")?;
        row.map(|row| {
            Ok(RefreshRecord {
                session_id: SessionId(parse_uuid(row.try_get("session_id")?)?),
                created_at: from_millis(row.try_get("created_at")?),
                spent_at: row.try_get::<Option<i64>, _>("spent_at")?.map(from_millis),
                successor_sealed: row.try_get("successor_sealed")?,
            })
        })
        .transpose()
    }

    async fn refresh_with_session(&self, hash: &SecretHash) -> anyhow::Result<Option<RefreshRead>> {
        let Some(row) = sqlx::query(SQLITE_REFRESH_READ)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading a refresh token, its session and its user")?
        else {
            return Ok(None);
        };
        let session = sqlite_session_from_row(&row)?;
        let refresh = RefreshRecord {
            session_id: session.id,
            created_at: from_millis(row.try_get("refresh_created_at")?),
            spent_at: row
                .try_get::<Option<i64>, _>("refresh_spent_at")?
                .map(from_millis),
            successor_sealed: row.try_get("refresh_successor_sealed")?,
        };
        let user = UserRecord {
            id: session.user_id,
            email: row.try_get("user_email")?,
            password_hash: row.try_get("user_password_hash")?,
            created_at: from_millis(row.try_get("user_created_at")?),
            disabled: row.try_get::<i64, _>("user_disabled")? != 0,
            email_verified: row.try_get::<i64, _>("user_email_verified")? != 0,
            roles: split_list(row.try_get("user_roles")?),
        };
        let permissions = split_list(row.try_get("user_permissions")?);
        Ok(Some(RefreshRead {
            refresh,
            session,
            user: Some((user, permissions)),
        }))
    }

    async fn rotate_refresh(
        &self,
        old: &SecretHash,
        spent_at: OffsetDateTime,
        successor: &SecretHash,
        successor_sealed: &[u8],
        session_id: SessionId,
    ) -> anyhow::Result<bool> {
        // One statement, one round trip: the successor is stored by the
        // trigger `refresh_tokens_successor`, in the statement's own
        // transaction (the rows a trigger writes are not counted here).
        let done = sqlx::query(SQLITE_ROTATE_REFRESH)
            .bind(to_millis(spent_at))
            .bind(successor_sealed)
            .bind(&old.0[..])
            .bind(session_id.0.to_string())
            .bind(&successor.0[..])
            .execute(&self.pool)
            .await
            .context("rotating a refresh token")?;
        Ok(done.rows_affected() == 1)
    }
}

/// A reader's cursor as the log's `seq` column compares it: before every
/// number when there is none.
fn log_cursor(after: Option<u64>) -> i64 {
    after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX))
}

fn pg_session_from_row(row: &PgRow) -> anyhow::Result<SessionRecord> {
    let hash: Vec<u8> = row.try_get("secret_hash").context("decoding a session")?;
    let secret_hash = hash_from(hash, "session")?;
    let decode = || -> Result<SessionRecord, sqlx::Error> {
        Ok(SessionRecord {
            id: SessionId(row.try_get("id")?),
            user_id: UserId(row.try_get("user_id")?),
            secret_hash,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            expires_at: row.try_get("expires_at")?,
            user_agent: row.try_get("user_agent")?,
            ip: row.try_get("ip")?,
            amr: amr_from(row.try_get("amr")?).map_err(|e| sqlx::Error::Decode(e.into()))?,
            link: None,
        })
    };
    let mut session = decode().context("decoding a session")?;
    let link: (Option<Uuid>, Option<Uuid>, Option<String>) = (
        row.try_get("client_id")?,
        row.try_get("parent_id")?,
        row.try_get("scopes")?,
    );
    session.link = link_from(link.0, link.1, link.2)?;
    Ok(session)
}

fn sqlite_session_from_row(row: &SqliteRow) -> anyhow::Result<SessionRecord> {
    let secret_hash = hash_from(row.try_get("secret_hash")?, "session")?;
    Ok(SessionRecord {
        id: SessionId(parse_uuid(row.try_get("id")?)?),
        user_id: UserId(parse_uuid(row.try_get("user_id")?)?),
        secret_hash,
        created_at: from_millis(row.try_get("created_at")?),
        last_seen_at: from_millis(row.try_get("last_seen_at")?),
        expires_at: from_millis(row.try_get("expires_at")?),
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
        amr: amr_from(row.try_get("amr")?)?,
        link: link_from(
            row.try_get::<Option<String>, _>("client_id")?
                .map(parse_uuid)
                .transpose()?,
            row.try_get::<Option<String>, _>("parent_id")?
                .map(parse_uuid)
                .transpose()?,
            row.try_get("scopes")?,
        )?,
    })
}

/// A client session's link from its three columns: all set or none; any
/// other mix is a damaged row, never a browser session.
fn link_from(
    client_id: Option<Uuid>,
    parent_id: Option<Uuid>,
    scopes: Option<String>,
) -> anyhow::Result<Option<SessionLink>> {
    match (client_id, parent_id, scopes) {
        (None, None, None) => Ok(None),
        (Some(c), Some(p), Some(scopes)) => Ok(Some(SessionLink {
            client_id: ClientId(c),
            parent_id: SessionId(p),
            scopes,
        })),
        _ => anyhow::bail!("a stored session has part of a client link"),
    }
}

/// A stored `amr` column.
fn amr_from(text: String) -> anyhow::Result<Amr> {
    Amr::parse_text(&text).map_err(|e| anyhow::anyhow!("a stored session's amr: {e}"))
}

impl PgStore {
    /// Records ended sessions as revoked, inside the caller's transaction,
    /// keeping the later `revoked_until` of a session revoked twice.
    async fn revoke(
        tx: &mut Transaction<'_, Postgres>,
        ids: &[Uuid],
        until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        // Takes the next numbers of the log; the row lock this update holds
        // until commit orders the transactions that number revocations.
        let n = i64::try_from(ids.len()).context("too many revocations at once")?;
        let last: i64 = sqlx::query_scalar(
            "UPDATE revocation_feed SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq",
        )
        .bind(n)
        .fetch_one(&mut **tx)
        .await
        .context("numbering revocations")?;
        sqlx::query(
            "INSERT INTO revoked_sessions (session_id, revoked_until, seq) \
             SELECT t.id, $2, $3 + t.ord FROM unnest($1::uuid[]) WITH ORDINALITY AS t (id, ord) \
             ON CONFLICT (session_id) DO UPDATE \
             SET revoked_until = GREATEST(revoked_sessions.revoked_until, excluded.revoked_until), \
                 seq = excluded.seq",
        )
        .bind(ids)
        .bind(ms(until))
        .bind(last - n)
        .execute(&mut **tx)
        .await
        .context("recording revocations")?;
        Ok(())
    }
}

impl SqliteStore {
    /// Records ended sessions as revoked, each with the next number of the
    /// revocation log, inside the caller's transaction, keeping the later
    /// `revoked_until` of a session revoked twice.
    async fn revoke(
        tx: &mut Transaction<'_, Sqlite>,
        ids: &[SessionId],
        until: OffsetDateTime,
    ) -> anyhow::Result<()> {
        for id in ids {
            let seq: i64 = sqlx::query_scalar(
                "UPDATE revocation_feed SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq",
            )
            .fetch_one(&mut **tx)
            .await
            .context("numbering a revocation")?;
            sqlx::query(
                "INSERT INTO revoked_sessions (session_id, revoked_until, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (session_id) DO UPDATE SET \
                 revoked_until = MAX(revoked_until, excluded.revoked_until), seq = excluded.seq",
            )
            .bind(id.0.to_string())
            .bind(to_millis(until))
            .bind(seq)
            .execute(&mut **tx)
            .await
            .context("recording a revocation")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL side, against a real server (see
    //! `store::postgres::testing`); the contract suite in `tests/api` runs
    //! both.

    use std::sync::Arc;

    use super::*;
    use crate::model::types::SessionSecret;
    use crate::store::postgres::testing::{Scratch, T0, new_user, session};
    use crate::store::{FailureCounter as _, UserStore as _};

    #[tokio::test]
    async fn sessions_end_with_their_revocation() {
        let db = Scratch::new().await;
        let s = &db.store;
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let a = session(uid, T0);
        let b = session(uid, T0 + Duration::from_secs(1));
        let c = session(uid, T0 + Duration::from_secs(2));
        for x in [&b, &a, &c] {
            s.insert_session(x).await.expect("insert");
        }
        assert_eq!(
            s.session_by_secret(&a.secret_hash).await.expect("read"),
            Some(a.clone())
        );
        assert_eq!(s.session_by_id(b.id).await.expect("read"), Some(b.clone()));
        assert_eq!(s.session_by_id(SessionId::new()).await.expect("read"), None);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            [a.clone(), b.clone(), c.clone()]
        );

        let later = T0 + Duration::from_secs(60);
        s.touch_session(a.id, later).await.expect("touch");
        s.touch_session(a.id, T0).await.expect("never backwards");
        s.touch_session(SessionId::new(), later)
            .await
            .expect("unknown is a no-op");
        let read = s.session_by_id(a.id).await.expect("read").expect("found");
        assert_eq!(read.last_seen_at, later);

        let until = T0 + Duration::from_secs(600);
        assert!(
            !s.delete_session(a.id, UserId::new(), until)
                .await
                .expect("other user's")
        );
        assert!(s.delete_session(a.id, uid, until).await.expect("end"));
        assert!(!s.delete_session(a.id, uid, until).await.expect("again"));
        let ended = s
            .delete_sessions_of(uid, Some(c.id), until)
            .await
            .expect("end all");
        assert_eq!(ended, [b.id]);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            std::slice::from_ref(&c)
        );
        // A second revocation keeps the later instant.
        s.insert_session(&a).await.expect("reinsert");
        let ended = s
            .delete_sessions_of(uid, None, T0 + Duration::from_secs(1))
            .await
            .expect("end");
        assert_eq!(ended.len(), 2);
        let mut revs = s.revocations(T0).await.expect("revocations");
        revs.sort();
        let mut want = vec![
            (a.id, until),
            (b.id, until),
            (c.id, T0 + Duration::from_secs(1)),
        ];
        want.sort();
        assert_eq!(revs, want);
        assert_eq!(s.revocations(until).await.expect("revocations"), []);
    }

    #[tokio::test]
    async fn delete_expired_sweeps_sessions_revocations_and_windows() {
        let db = Scratch::new().await;
        let s = &db.store;
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let fresh = session(uid, T0 + Duration::from_secs(3000));
        let idle = session(uid, T0 + Duration::from_secs(100));
        let mut expired = session(uid, T0 + Duration::from_secs(3000));
        expired.expires_at = T0 + Duration::from_secs(3100);
        for x in [&fresh, &idle, &expired] {
            s.insert_session(x).await.expect("insert");
        }
        let victim = session(uid, T0);
        s.insert_session(&victim).await.expect("insert");
        s.delete_session(victim.id, uid, T0 + Duration::from_secs(3200))
            .await
            .expect("end");
        s.hit("k", Duration::from_secs(60), T0).await.expect("hit");
        let now = T0 + Duration::from_secs(3200);
        let swept = s
            .delete_expired(now, Duration::from_secs(600))
            .await
            .expect("sweep");
        assert_eq!(swept, 2);
        assert_eq!(
            s.sessions_of(uid).await.expect("list"),
            std::slice::from_ref(&fresh)
        );
        assert_eq!(s.revocations(T0).await.expect("revocations"), []);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
            .fetch_one(s.pool())
            .await
            .expect("count");
        assert_eq!(left, 0);
        // An idle timeout too long to subtract idles nothing out.
        assert_eq!(
            s.delete_expired(now, Duration::MAX).await.expect("sweep"),
            0
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn refresh_tokens_rotate_exactly_once() {
        let db = Scratch::new().await;
        let s = Arc::new(db.store.clone());
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        let sess = session(uid, T0);
        s.insert_session(&sess).await.expect("insert");
        let old = SessionSecret::generate().expect("rng").hash();
        s.insert_refresh(&old, sess.id, T0).await.expect("insert");
        assert_eq!(
            s.refresh_by_hash(&old).await.expect("read"),
            Some(RefreshRecord {
                session_id: sess.id,
                created_at: T0,
                spent_at: None,
                successor_sealed: None
            })
        );
        assert!(
            !s.rotate_refresh(
                &old,
                T0,
                &SessionSecret::generate().expect("rng").hash(),
                b"x",
                SessionId::new()
            )
            .await
            .expect("other session")
        );
        let now = T0 + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let next = SessionSecret::generate().expect("rng").hash();
                s.rotate_refresh(&old, now, &next, &[i], sess.id)
                    .await
                    .expect("rotate")
            }));
        }
        let mut won = 0;
        for t in tasks {
            won += usize::from(t.await.expect("join"));
        }
        assert_eq!(won, 1);
        let spent = s.refresh_by_hash(&old).await.expect("read").expect("found");
        assert_eq!(spent.spent_at, Some(now));
        assert_eq!(spent.successor_sealed.map(|v| v.len()), Some(1));
        // Ending the session takes its tokens with it.
        assert!(s.delete_session(sess.id, uid, now).await.expect("end"));
        assert_eq!(s.refresh_by_hash(&old).await.expect("read"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rotation_racing_a_logout_neither_fails_nor_deadlocks() {
        let db = Scratch::new().await;
        let s = Arc::new(db.store.clone());
        let user = new_user("ann@example.com", &[]);
        let uid = user.id;
        s.create_user(user).await.expect("create");
        for _ in 0..50 {
            let sess = session(uid, T0);
            s.insert_session(&sess).await.expect("insert");
            let old = SessionSecret::generate().expect("rng").hash();
            s.insert_refresh(&old, sess.id, T0).await.expect("insert");
            let next = SessionSecret::generate().expect("rng").hash();
            let (rotated, ended) = tokio::join!(
                tokio::spawn({
                    let s = s.clone();
                    async move { s.rotate_refresh(&old, T0, &next, b"x", sess.id).await }
                }),
                tokio::spawn({
                    let s = s.clone();
                    async move { s.delete_session(sess.id, uid, T0).await }
                }),
            );
            rotated.expect("join").expect("rotate");
            assert!(ended.expect("join").expect("end"));
            assert_eq!(s.refresh_by_hash(&next).await.expect("read"), None);
        }
    }
}
