//! Second factors and pending logins (the `MfaStore`) on PostgreSQL and on
//! SQLite. Every "use once" is one conditional statement: the row count
//! says who won.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::{ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::amr::Amr;
use crate::model::types::{SecretHash, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{FactorSummary, MfaStore, PendingLogin, TotpLogin, TotpRecord};

const FACTORS: &str = "SELECT \
     (SELECT count(*) FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
         AS totp, \
     (SELECT count(*) FROM recovery_codes WHERE user_id = $1) AS codes";

const TOTP: &str = "SELECT secret, encrypted, created_at, confirmed_at, last_step \
     FROM totp_credentials WHERE user_id = $1";

/// Inserts, or replaces a pending credential; a confirmed one is left alone
/// (no row changes).
const PUT_PENDING_TOTP: &str = "INSERT INTO totp_credentials \
     (user_id, secret, encrypted, created_at, confirmed_at, last_step) \
     VALUES ($1, $2, $3, $4, NULL, 0) \
     ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
         encrypted = excluded.encrypted, created_at = excluded.created_at, last_step = 0 \
     WHERE totp_credentials.confirmed_at IS NULL";

const CONFIRM_TOTP: &str = "UPDATE totp_credentials SET confirmed_at = $1, last_step = $2 \
     WHERE user_id = $3 AND confirmed_at IS NULL AND secret = $4";

/// RFC 6238 §5.2: a step is accepted once, and never one before the last.
const SPEND_TOTP_STEP: &str = "UPDATE totp_credentials SET last_step = $1 \
     WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_step < $1";

const DELETE_TOTP: &str = "DELETE FROM totp_credentials WHERE user_id = $1";

/// Recovery codes are kept only while a factor is.
const DELETE_ORPHAN_CODES: &str = "DELETE FROM recovery_codes WHERE user_id = $1 \
     AND NOT EXISTS (SELECT 1 FROM totp_credentials \
         WHERE user_id = $1 AND confirmed_at IS NOT NULL)";

const DELETE_CODES: &str = "DELETE FROM recovery_codes WHERE user_id = $1";

const INSERT_CODE: &str =
    "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)";

const SPEND_CODE: &str = "DELETE FROM recovery_codes WHERE user_id = $1 AND code_hash = $2";

const DELETE_PENDING_OF: &str = "DELETE FROM pending_logins WHERE user_id = $1";

const INSERT_PENDING: &str = "INSERT INTO pending_logins \
     (token_hash, user_id, amr, created_at, expires_at, failures) \
     VALUES ($1, $2, $3, $4, $5, 0)";

const PENDING: &str = "SELECT user_id, amr, created_at, expires_at, failures \
     FROM pending_logins WHERE token_hash = $1";

const PENDING_FAILED: &str = "UPDATE pending_logins SET failures = failures + 1 \
     WHERE token_hash = $1 RETURNING failures";

const TAKE_PENDING: &str = "DELETE FROM pending_logins WHERE token_hash = $1";

const UNSEALED_TOTP: &str =
    "SELECT user_id, secret FROM totp_credentials WHERE encrypted = $1 ORDER BY user_id";

const SEAL_TOTP: &str = "UPDATE totp_credentials SET secret = $1, encrypted = $2 \
     WHERE user_id = $3 AND secret = $4 AND encrypted = $5";

const SWEEP_PENDING: &str = "DELETE FROM pending_logins WHERE expires_at <= $1";

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn amr_from(text: &str) -> anyhow::Result<Amr> {
    Amr::parse_text(text).map_err(|e| anyhow::anyhow!("a stored pending login's amr: {e}"))
}

#[async_trait]
impl MfaStore for PgStore {
    async fn factors(&self, user: UserId) -> anyhow::Result<FactorSummary> {
        let (totp, codes): (i64, i64) = sqlx::query_as(FACTORS)
            .bind(user.0)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("reading a user's second factors")?;
        Ok(FactorSummary {
            totp: totp > 0,
            recovery_codes_left: count(codes),
        })
    }

    async fn totp(&self, user: UserId) -> anyhow::Result<Option<TotpRecord>> {
        let Some(row) = sqlx::query(TOTP)
            .bind(user.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a TOTP credential")?
        else {
            return Ok(None);
        };
        let decode = || -> Result<TotpRecord, sqlx::Error> {
            Ok(TotpRecord {
                secret: row.try_get("secret")?,
                encrypted: row.try_get("encrypted")?,
                created_at: row.try_get("created_at")?,
                confirmed_at: row.try_get("confirmed_at")?,
                last_step: row.try_get("last_step")?,
            })
        };
        Ok(Some(decode().context("decoding a TOTP credential")?))
    }

    async fn put_pending_totp(&self, user: UserId, record: &TotpRecord) -> anyhow::Result<bool> {
        let done = sqlx::query(PUT_PENDING_TOTP)
            .bind(user.0)
            .bind(&record.secret)
            .bind(record.encrypted)
            .bind(ms(record.created_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing a pending TOTP credential")?;
        Ok(done.rows_affected() == 1)
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        secret: &[u8],
        step: i64,
        at: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(CONFIRM_TOTP)
            .bind(ms(at))
            .bind(step)
            .bind(user.0)
            .bind(secret)
            .execute(&mut *self.conn().await?)
            .await
            .context("confirming a TOTP credential")?;
        Ok(done.rows_affected() == 1)
    }

    async fn spend_totp_step(&self, user: UserId, step: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(SPEND_TOTP_STEP)
            .bind(step)
            .bind(user.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("accepting a TOTP code")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: UserId) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let deleted = sqlx::query(DELETE_TOTP)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("deleting a TOTP credential")?
            .rows_affected();
        sqlx::query(DELETE_ORPHAN_CODES)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        tx.commit().await.context("committing a TOTP removal")?;
        Ok(deleted > 0)
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[SecretHash],
        at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        sqlx::query(DELETE_CODES)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        for hash in hashes {
            sqlx::query(INSERT_CODE)
                .bind(user.0)
                .bind(&hash.0[..])
                .bind(ms(at))
                .execute(&mut *tx)
                .await
                .context("storing a recovery code")?;
        }
        tx.commit().await.context("committing recovery codes")?;
        Ok(())
    }

    async fn spend_recovery_code(&self, user: UserId, hash: &SecretHash) -> anyhow::Result<bool> {
        let done = sqlx::query(SPEND_CODE)
            .bind(user.0)
            .bind(&hash.0[..])
            .execute(&mut *self.conn().await?)
            .await
            .context("using a recovery code")?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_mfa(&self, user: UserId) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let mut removed = 0;
        for statement in [DELETE_TOTP, DELETE_CODES] {
            removed += sqlx::query(statement)
                .bind(user.0)
                .execute(&mut *tx)
                .await
                .context("removing second factors")?
                .rows_affected();
        }
        sqlx::query(DELETE_PENDING_OF)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("removing pending logins")?;
        tx.commit()
            .await
            .context("committing a second-factor reset")?;
        Ok(removed > 0)
    }

    async fn insert_pending_login(
        &self,
        hash: &SecretHash,
        login: &PendingLogin,
    ) -> anyhow::Result<()> {
        sqlx::query(INSERT_PENDING)
            .bind(&hash.0[..])
            .bind(login.user_id.0)
            .bind(login.amr.to_text())
            .bind(ms(login.created_at))
            .bind(ms(login.expires_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing a pending login")?;
        Ok(())
    }

    async fn pending_login(&self, hash: &SecretHash) -> anyhow::Result<Option<PendingLogin>> {
        let Some(row) = sqlx::query(PENDING)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a pending login")?
        else {
            return Ok(None);
        };
        let amr: String = row.try_get("amr").context("decoding a pending login")?;
        let failures: i32 = row
            .try_get("failures")
            .context("decoding a pending login")?;
        Ok(Some(PendingLogin {
            user_id: UserId(row.try_get("user_id").context("decoding a pending login")?),
            amr: amr_from(&amr)?,
            created_at: row
                .try_get("created_at")
                .context("decoding a pending login")?,
            expires_at: row
                .try_get("expires_at")
                .context("decoding a pending login")?,
            failures: count(i64::from(failures)),
        }))
    }

    async fn pending_login_failed(&self, hash: &SecretHash) -> anyhow::Result<Option<u32>> {
        let n: Option<i32> = sqlx::query_scalar(PENDING_FAILED)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("counting a wrong code")?;
        Ok(n.map(|n| count(i64::from(n))))
    }

    async fn finish_totp_login(
        &self,
        hash: &SecretHash,
        user: UserId,
        step: i64,
    ) -> anyhow::Result<TotpLogin> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let stepped = sqlx::query(SPEND_TOTP_STEP)
            .bind(step)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("accepting a TOTP code")?
            .rows_affected();
        if stepped != 1 {
            return Ok(TotpLogin::StepUsed);
        }
        let taken = sqlx::query(TAKE_PENDING)
            .bind(&hash.0[..])
            .execute(&mut *tx)
            .await
            .context("spending a pending login")?
            .rows_affected();
        if taken != 1 {
            return Ok(TotpLogin::LoginGone);
        }
        tx.commit().await.context("committing a second step")?;
        Ok(TotpLogin::Done)
    }

    async fn take_pending_login(&self, hash: &SecretHash) -> anyhow::Result<bool> {
        let done = sqlx::query(TAKE_PENDING)
            .bind(&hash.0[..])
            .execute(&mut *self.conn().await?)
            .await
            .context("spending a pending login")?;
        Ok(done.rows_affected() == 1)
    }

    async fn unsealed_totp(&self) -> anyhow::Result<Vec<(UserId, Vec<u8>)>> {
        let rows: Vec<(uuid::Uuid, Vec<u8>)> = sqlx::query_as(UNSEALED_TOTP)
            .bind(false)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading unsealed TOTP keys")?;
        Ok(rows.into_iter().map(|(u, k)| (UserId(u), k)).collect())
    }

    async fn seal_totp(&self, user: UserId, plain: &[u8], sealed: &[u8]) -> anyhow::Result<bool> {
        let done = sqlx::query(SEAL_TOTP)
            .bind(sealed)
            .bind(true)
            .bind(user.0)
            .bind(plain)
            .bind(false)
            .execute(&mut *self.conn().await?)
            .await
            .context("sealing a TOTP key")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_expired_mfa(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let done = sqlx::query(SWEEP_PENDING)
            .bind(ms(now))
            .execute(&mut *self.conn().await?)
            .await
            .context("sweeping pending logins")?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn factors(&self, user: UserId) -> anyhow::Result<FactorSummary> {
        let (totp, codes): (i64, i64) = sqlx::query_as(FACTORS)
            .bind(user.0.to_string())
            .fetch_one(&self.pool)
            .await
            .context("reading a user's second factors")?;
        Ok(FactorSummary {
            totp: totp > 0,
            recovery_codes_left: count(codes),
        })
    }

    async fn totp(&self, user: UserId) -> anyhow::Result<Option<TotpRecord>> {
        let Some(row) = sqlx::query(TOTP)
            .bind(user.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a TOTP credential")?
        else {
            return Ok(None);
        };
        let decode = || -> Result<TotpRecord, sqlx::Error> {
            let confirmed_at: Option<i64> = row.try_get("confirmed_at")?;
            Ok(TotpRecord {
                secret: row.try_get("secret")?,
                encrypted: row.try_get::<i64, _>("encrypted")? != 0,
                created_at: from_millis(row.try_get("created_at")?),
                confirmed_at: confirmed_at.map(from_millis),
                last_step: row.try_get("last_step")?,
            })
        };
        Ok(Some(decode().context("decoding a TOTP credential")?))
    }

    async fn put_pending_totp(&self, user: UserId, record: &TotpRecord) -> anyhow::Result<bool> {
        let done = sqlx::query(PUT_PENDING_TOTP)
            .bind(user.0.to_string())
            .bind(&record.secret)
            .bind(i64::from(record.encrypted))
            .bind(to_millis(record.created_at))
            .execute(&self.pool)
            .await
            .context("storing a pending TOTP credential")?;
        Ok(done.rows_affected() == 1)
    }

    async fn confirm_totp(
        &self,
        user: UserId,
        secret: &[u8],
        step: i64,
        at: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let done = sqlx::query(CONFIRM_TOTP)
            .bind(to_millis(at))
            .bind(step)
            .bind(user.0.to_string())
            .bind(secret)
            .execute(&self.pool)
            .await
            .context("confirming a TOTP credential")?;
        Ok(done.rows_affected() == 1)
    }

    async fn spend_totp_step(&self, user: UserId, step: i64) -> anyhow::Result<bool> {
        let done = sqlx::query(SPEND_TOTP_STEP)
            .bind(step)
            .bind(user.0.to_string())
            .execute(&self.pool)
            .await
            .context("accepting a TOTP code")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_totp(&self, user: UserId) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let deleted = sqlx::query(DELETE_TOTP)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("deleting a TOTP credential")?
            .rows_affected();
        sqlx::query(DELETE_ORPHAN_CODES)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        tx.commit().await.context("committing a TOTP removal")?;
        Ok(deleted > 0)
    }

    async fn replace_recovery_codes(
        &self,
        user: UserId,
        hashes: &[SecretHash],
        at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        sqlx::query(DELETE_CODES)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        for hash in hashes {
            sqlx::query(INSERT_CODE)
                .bind(user.0.to_string())
                .bind(&hash.0[..])
                .bind(to_millis(at))
                .execute(&mut *tx)
                .await
                .context("storing a recovery code")?;
        }
        tx.commit().await.context("committing recovery codes")?;
        Ok(())
    }

    async fn spend_recovery_code(&self, user: UserId, hash: &SecretHash) -> anyhow::Result<bool> {
        let done = sqlx::query(SPEND_CODE)
            .bind(user.0.to_string())
            .bind(&hash.0[..])
            .execute(&self.pool)
            .await
            .context("using a recovery code")?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_mfa(&self, user: UserId) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let mut removed = 0;
        for statement in [DELETE_TOTP, DELETE_CODES] {
            removed += sqlx::query(statement)
                .bind(user.0.to_string())
                .execute(&mut *tx)
                .await
                .context("removing second factors")?
                .rows_affected();
        }
        sqlx::query(DELETE_PENDING_OF)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("removing pending logins")?;
        tx.commit()
            .await
            .context("committing a second-factor reset")?;
        Ok(removed > 0)
    }

    async fn insert_pending_login(
        &self,
        hash: &SecretHash,
        login: &PendingLogin,
    ) -> anyhow::Result<()> {
        sqlx::query(INSERT_PENDING)
            .bind(&hash.0[..])
            .bind(login.user_id.0.to_string())
            .bind(login.amr.to_text())
            .bind(to_millis(login.created_at))
            .bind(to_millis(login.expires_at))
            .execute(&self.pool)
            .await
            .context("storing a pending login")?;
        Ok(())
    }

    async fn pending_login(&self, hash: &SecretHash) -> anyhow::Result<Option<PendingLogin>> {
        let Some(row) = sqlx::query(PENDING)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading a pending login")?
        else {
            return Ok(None);
        };
        let amr: String = row.try_get("amr").context("decoding a pending login")?;
        let failures: i64 = row
            .try_get("failures")
            .context("decoding a pending login")?;
        Ok(Some(PendingLogin {
            user_id: UserId(parse_uuid(
                row.try_get("user_id").context("decoding a pending login")?,
            )?),
            amr: amr_from(&amr)?,
            created_at: from_millis(
                row.try_get("created_at")
                    .context("decoding a pending login")?,
            ),
            expires_at: from_millis(
                row.try_get("expires_at")
                    .context("decoding a pending login")?,
            ),
            failures: count(failures),
        }))
    }

    async fn pending_login_failed(&self, hash: &SecretHash) -> anyhow::Result<Option<u32>> {
        let n: Option<i64> = sqlx::query_scalar(PENDING_FAILED)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("counting a wrong code")?;
        Ok(n.map(count))
    }

    async fn finish_totp_login(
        &self,
        hash: &SecretHash,
        user: UserId,
        step: i64,
    ) -> anyhow::Result<TotpLogin> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let stepped = sqlx::query(SPEND_TOTP_STEP)
            .bind(step)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("accepting a TOTP code")?
            .rows_affected();
        if stepped != 1 {
            return Ok(TotpLogin::StepUsed);
        }
        let taken = sqlx::query(TAKE_PENDING)
            .bind(&hash.0[..])
            .execute(&mut *tx)
            .await
            .context("spending a pending login")?
            .rows_affected();
        if taken != 1 {
            return Ok(TotpLogin::LoginGone);
        }
        tx.commit().await.context("committing a second step")?;
        Ok(TotpLogin::Done)
    }

    async fn take_pending_login(&self, hash: &SecretHash) -> anyhow::Result<bool> {
        let done = sqlx::query(TAKE_PENDING)
            .bind(&hash.0[..])
            .execute(&self.pool)
            .await
            .context("spending a pending login")?;
        Ok(done.rows_affected() == 1)
    }

    async fn unsealed_totp(&self) -> anyhow::Result<Vec<(UserId, Vec<u8>)>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(UNSEALED_TOTP)
            .bind(0_i64)
            .fetch_all(&self.pool)
            .await
            .context("reading unsealed TOTP keys")?;
        rows.into_iter()
            .map(|(u, k)| Ok((UserId(parse_uuid(u)?), k)))
            .collect()
    }

    async fn seal_totp(&self, user: UserId, plain: &[u8], sealed: &[u8]) -> anyhow::Result<bool> {
        let done = sqlx::query(SEAL_TOTP)
            .bind(sealed)
            .bind(1_i64)
            .bind(user.0.to_string())
            .bind(plain)
            .bind(0_i64)
            .execute(&self.pool)
            .await
            .context("sealing a TOTP key")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_expired_mfa(&self, now: OffsetDateTime) -> anyhow::Result<u64> {
        let done = sqlx::query(SWEEP_PENDING)
            .bind(to_millis(now))
            .execute(&self.pool)
            .await
            .context("sweeping pending logins")?;
        Ok(done.rows_affected())
    }
}
