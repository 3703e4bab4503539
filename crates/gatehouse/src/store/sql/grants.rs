//! Authorization codes and consents (the `GrantStore`) on PostgreSQL and on
//! SQLite. A code is spent by one conditional `UPDATE … RETURNING`, which
//! records the client session it starts in the same statement.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::amr::Amr;
use crate::model::types::{ClientId, SecretHash, SessionId, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{AuthorizationCode, CodeSpend, Consent, GrantStore};

const CODE_COLUMNS: &str = "client_id, user_id, parent_id, redirect_uri, scopes, nonce, \
     code_challenge, auth_time, amr, created_at, expires_at";

const INSERT_CODE: &str = "INSERT INTO authorization_codes (code_hash, client_id, user_id, \
     parent_id, redirect_uri, scopes, nonce, code_challenge, auth_time, amr, created_at, \
     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

fn spend_code_sql() -> String {
    format!(
        "UPDATE authorization_codes SET spent_at = $1, session_id = $2 \
         WHERE code_hash = $3 AND spent_at IS NULL AND expires_at > $1 \
         RETURNING {CODE_COLUMNS}"
    )
}

/// A spent code presented again: marked, and read with its session.
fn mark_replayed_sql(truth: &str) -> String {
    format!(
        "UPDATE authorization_codes SET replayed = {truth} \
         WHERE code_hash = $1 AND spent_at IS NOT NULL \
         RETURNING {CODE_COLUMNS}, session_id"
    )
}

const CODE_REPLAYED: &str = "SELECT replayed FROM authorization_codes WHERE code_hash = $1";

const DELETE_EXPIRED_CODES: &str = "DELETE FROM authorization_codes WHERE expires_at < $1";

const DELETE_EXPIRED_GRANTS: &str = "DELETE FROM client_grants WHERE expires_at < $1";

const RECORD_GRANT: &str = "INSERT INTO client_grants (session_id, client_id, user_id, expires_at) VALUES ($1, $2, $3, $4)";

const TAKE_GRANTS: &str =
    "DELETE FROM client_grants WHERE client_id = $1 RETURNING user_id, session_id";

const CONSENT: &str =
    "SELECT client_id, scopes, granted_at FROM consents WHERE user_id = $1 AND client_id = $2";

const PUT_CONSENT: &str = "INSERT INTO consents (user_id, client_id, scopes, granted_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (user_id, client_id) DO UPDATE SET scopes = excluded.scopes, \
     granted_at = excluded.granted_at";

const CONSENTS_OF: &str = "SELECT client_id, scopes, granted_at FROM consents \
     WHERE user_id = $1 ORDER BY granted_at, client_id";

const DELETE_CONSENT: &str = "DELETE FROM consents WHERE user_id = $1 AND client_id = $2";

fn amr_from(text: &str) -> anyhow::Result<Amr> {
    Amr::parse_text(text).map_err(|e| anyhow::anyhow!("a stored code's amr: {e}"))
}

fn pg_code(row: &PgRow) -> anyhow::Result<AuthorizationCode> {
    let amr: String = row.try_get("amr")?;
    Ok(AuthorizationCode {
        client_id: ClientId(row.try_get("client_id")?),
        user_id: UserId(row.try_get("user_id")?),
        parent_id: SessionId(row.try_get("parent_id")?),
        redirect_uri: row.try_get("redirect_uri")?,
        scopes: row.try_get("scopes")?,
        nonce: row.try_get("nonce")?,
        code_challenge: row.try_get("code_challenge")?,
        auth_time: row.try_get("auth_time")?,
        amr: amr_from(&amr)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn sqlite_code(row: &SqliteRow) -> anyhow::Result<AuthorizationCode> {
    let amr: String = row.try_get("amr")?;
    Ok(AuthorizationCode {
        client_id: ClientId(parse_uuid(row.try_get("client_id")?)?),
        user_id: UserId(parse_uuid(row.try_get("user_id")?)?),
        parent_id: SessionId(parse_uuid(row.try_get("parent_id")?)?),
        redirect_uri: row.try_get("redirect_uri")?,
        scopes: row.try_get("scopes")?,
        nonce: row.try_get("nonce")?,
        code_challenge: row.try_get("code_challenge")?,
        auth_time: from_millis(row.try_get("auth_time")?),
        amr: amr_from(&amr)?,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: from_millis(row.try_get("expires_at")?),
    })
}

#[async_trait]
impl GrantStore for PgStore {
    async fn insert_code(&self, hash: &SecretHash, code: &AuthorizationCode) -> anyhow::Result<()> {
        sqlx::query(INSERT_CODE)
            .bind(&hash.0[..])
            .bind(code.client_id.0)
            .bind(code.user_id.0)
            .bind(code.parent_id.0)
            .bind(&code.redirect_uri)
            .bind(&code.scopes)
            .bind(&code.nonce)
            .bind(&code.code_challenge)
            .bind(ms(code.auth_time))
            .bind(code.amr.to_text())
            .bind(ms(code.created_at))
            .bind(ms(code.expires_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing an authorization code")?;
        Ok(())
    }

    async fn spend_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
        session_id: SessionId,
    ) -> anyhow::Result<CodeSpend> {
        let mut con = self.conn().await?;
        let spent = sqlx::query(&spend_code_sql())
            .bind(ms(now))
            .bind(session_id.0)
            .bind(&hash.0[..])
            .fetch_optional(&mut *con)
            .await
            .context("spending an authorization code")?;
        if let Some(row) = spent {
            return Ok(CodeSpend::Spent(pg_code(&row)?));
        }
        let Some(row) = sqlx::query(&mark_replayed_sql("true"))
            .bind(&hash.0[..])
            .fetch_optional(&mut *con)
            .await
            .context("marking an authorization code replayed")?
        else {
            return Ok(CodeSpend::Unknown);
        };
        let session_id: Option<Uuid> = row.try_get("session_id")?;
        Ok(CodeSpend::Replayed {
            code: pg_code(&row)?,
            session_id: session_id.map(SessionId),
        })
    }

    async fn code_replayed(&self, hash: &SecretHash) -> anyhow::Result<bool> {
        let replayed: Option<bool> = sqlx::query_scalar(CODE_REPLAYED)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading an authorization code")?;
        Ok(replayed.unwrap_or(false))
    }

    async fn delete_codes_expired_before(&self, before: OffsetDateTime) -> anyhow::Result<u64> {
        let mut con = self.conn().await?;
        let codes = sqlx::query(DELETE_EXPIRED_CODES)
            .bind(ms(before))
            .execute(&mut *con)
            .await
            .context("deleting expired authorization codes")?;
        let grants = sqlx::query(DELETE_EXPIRED_GRANTS)
            .bind(ms(before))
            .execute(&mut *con)
            .await
            .context("deleting expired client grants")?;
        Ok(codes.rows_affected() + grants.rows_affected())
    }

    async fn record_grant(
        &self,
        session: SessionId,
        client: ClientId,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(RECORD_GRANT)
            .bind(session.0)
            .bind(client.0)
            .bind(user.0)
            .bind(ms(expires_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("recording a client grant")?;
        Ok(())
    }

    async fn take_grants_of(&self, client: ClientId) -> anyhow::Result<Vec<(UserId, SessionId)>> {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(TAKE_GRANTS)
            .bind(client.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("taking a client's grants")?;
        Ok(rows
            .into_iter()
            .map(|(u, s)| (UserId(u), SessionId(s)))
            .collect())
    }

    async fn consent(&self, user: UserId, client: ClientId) -> anyhow::Result<Option<Consent>> {
        let row = sqlx::query(CONSENT)
            .bind(user.0)
            .bind(client.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a consent")?;
        row.map(|row| {
            Ok(Consent {
                client_id: ClientId(row.try_get("client_id")?),
                scopes: row.try_get("scopes")?,
                granted_at: row.try_get("granted_at")?,
            })
        })
        .transpose()
    }

    async fn put_consent(
        &self,
        user: UserId,
        client: ClientId,
        scopes: &str,
        at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(PUT_CONSENT)
            .bind(user.0)
            .bind(client.0)
            .bind(scopes)
            .bind(ms(at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing a consent")?;
        Ok(())
    }

    async fn consents_of(&self, user: UserId) -> anyhow::Result<Vec<Consent>> {
        let rows = sqlx::query(CONSENTS_OF)
            .bind(user.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading consents")?;
        rows.iter()
            .map(|row| {
                Ok(Consent {
                    client_id: ClientId(row.try_get("client_id")?),
                    scopes: row.try_get("scopes")?,
                    granted_at: row.try_get("granted_at")?,
                })
            })
            .collect()
    }

    async fn delete_consent(&self, user: UserId, client: ClientId) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_CONSENT)
            .bind(user.0)
            .bind(client.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("deleting a consent")?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn insert_code(&self, hash: &SecretHash, code: &AuthorizationCode) -> anyhow::Result<()> {
        sqlx::query(INSERT_CODE)
            .bind(&hash.0[..])
            .bind(code.client_id.0.to_string())
            .bind(code.user_id.0.to_string())
            .bind(code.parent_id.0.to_string())
            .bind(&code.redirect_uri)
            .bind(&code.scopes)
            .bind(&code.nonce)
            .bind(&code.code_challenge)
            .bind(to_millis(code.auth_time))
            .bind(code.amr.to_text())
            .bind(to_millis(code.created_at))
            .bind(to_millis(code.expires_at))
            .execute(&self.pool)
            .await
            .context("storing an authorization code")?;
        Ok(())
    }

    async fn spend_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
        session_id: SessionId,
    ) -> anyhow::Result<CodeSpend> {
        let spent = sqlx::query(&spend_code_sql())
            .bind(to_millis(now))
            .bind(session_id.0.to_string())
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("spending an authorization code")?;
        if let Some(row) = spent {
            return Ok(CodeSpend::Spent(sqlite_code(&row)?));
        }
        let Some(row) = sqlx::query(&mark_replayed_sql("1"))
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("marking an authorization code replayed")?
        else {
            return Ok(CodeSpend::Unknown);
        };
        let session_id: Option<String> = row.try_get("session_id")?;
        Ok(CodeSpend::Replayed {
            code: sqlite_code(&row)?,
            session_id: session_id.map(parse_uuid).transpose()?.map(SessionId),
        })
    }

    async fn code_replayed(&self, hash: &SecretHash) -> anyhow::Result<bool> {
        let replayed: Option<i64> = sqlx::query_scalar(CODE_REPLAYED)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading an authorization code")?;
        Ok(replayed == Some(1))
    }

    async fn delete_codes_expired_before(&self, before: OffsetDateTime) -> anyhow::Result<u64> {
        let codes = sqlx::query(DELETE_EXPIRED_CODES)
            .bind(to_millis(before))
            .execute(&self.pool)
            .await
            .context("deleting expired authorization codes")?;
        let grants = sqlx::query(DELETE_EXPIRED_GRANTS)
            .bind(to_millis(before))
            .execute(&self.pool)
            .await
            .context("deleting expired client grants")?;
        Ok(codes.rows_affected() + grants.rows_affected())
    }

    async fn record_grant(
        &self,
        session: SessionId,
        client: ClientId,
        user: UserId,
        expires_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(RECORD_GRANT)
            .bind(session.0.to_string())
            .bind(client.0.to_string())
            .bind(user.0.to_string())
            .bind(to_millis(expires_at))
            .execute(&self.pool)
            .await
            .context("recording a client grant")?;
        Ok(())
    }

    async fn take_grants_of(&self, client: ClientId) -> anyhow::Result<Vec<(UserId, SessionId)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(TAKE_GRANTS)
            .bind(client.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("taking a client's grants")?;
        rows.into_iter()
            .map(|(u, s)| Ok((UserId(parse_uuid(u)?), SessionId(parse_uuid(s)?))))
            .collect()
    }

    async fn consent(&self, user: UserId, client: ClientId) -> anyhow::Result<Option<Consent>> {
        let row = sqlx::query(CONSENT)
            .bind(user.0.to_string())
            .bind(client.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a consent")?;
        row.map(|row| sqlite_consent(&row)).transpose()
    }

    async fn put_consent(
        &self,
        user: UserId,
        client: ClientId,
        scopes: &str,
        at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        sqlx::query(PUT_CONSENT)
            .bind(user.0.to_string())
            .bind(client.0.to_string())
            .bind(scopes)
            .bind(to_millis(at))
            .execute(&self.pool)
            .await
            .context("storing a consent")?;
        Ok(())
    }

    async fn consents_of(&self, user: UserId) -> anyhow::Result<Vec<Consent>> {
        let rows = sqlx::query(CONSENTS_OF)
            .bind(user.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("reading consents")?;
        rows.iter().map(sqlite_consent).collect()
    }

    async fn delete_consent(&self, user: UserId, client: ClientId) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_CONSENT)
            .bind(user.0.to_string())
            .bind(client.0.to_string())
            .execute(&self.pool)
            .await
            .context("deleting a consent")?;
        Ok(done.rows_affected() > 0)
    }
}

fn sqlite_consent(row: &SqliteRow) -> anyhow::Result<Consent> {
    Ok(Consent {
        client_id: ClientId(parse_uuid(row.try_get("client_id")?)?),
        scopes: row.try_get("scopes")?,
        granted_at: from_millis(row.try_get("granted_at")?),
    })
}
