//! Second factors and pending logins (the `MfaStore`) on PostgreSQL and on
//! SQLite. Every "use once" is one conditional statement: the row count
//! says who won.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::{hash_from, ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::amr::Amr;
use crate::model::types::{PasskeyId, SecretHash, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    Ceremony, CeremonyKind, FactorSummary, MfaStore, PasskeyRecord, PendingLogin, TotpLogin,
    TotpRecord,
};

const FACTORS: &str = "SELECT \
     (SELECT count(*) FROM totp_credentials WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
         AS totp, \
     (SELECT count(*) FROM passkeys WHERE user_id = $1) AS passkeys, \
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
         WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)";

/// A passkey's columns, in the order both row mappings read them by name.
macro_rules! passkey_select {
    ($where:literal) => {
        concat!(
            "SELECT id, user_id, credential_id, name, passkey, sign_count, ",
            "backup_eligible, backup_state, created_at, last_used_at FROM passkeys ",
            $where
        )
    };
}

const PASSKEYS_OF: &str = passkey_select!("WHERE user_id = $1 ORDER BY created_at, id");

const PASSKEY_BY_CREDENTIAL: &str = passkey_select!("WHERE credential_id = $1");

const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, credential_id, name, passkey, \
     sign_count, backup_eligible, backup_state, created_at, last_used_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) ON CONFLICT (credential_id) DO NOTHING";

/// The compare-and-swap of a passkey's counter.
const RECORD_PASSKEY_USE: &str = "UPDATE passkeys SET passkey = $1, sign_count = $2, \
     backup_eligible = $3, backup_state = $4, last_used_at = $5 \
     WHERE id = $6 AND sign_count = $7";

const DELETE_PASSKEY: &str = "DELETE FROM passkeys WHERE id = $1 AND user_id = $2";

const DELETE_PASSKEYS_OF: &str = "DELETE FROM passkeys WHERE user_id = $1";

const INSERT_CEREMONY: &str = "INSERT INTO webauthn_ceremonies \
     (id, kind, user_id, mfa_token_hash, state, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

const TAKE_CEREMONY: &str = "DELETE FROM webauthn_ceremonies WHERE id = $1 \
     RETURNING id, kind, user_id, mfa_token_hash, state, expires_at";

const SWEEP_CEREMONIES: &str = "DELETE FROM webauthn_ceremonies WHERE expires_at <= $1";

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
        let (totp, passkeys, codes): (i64, i64, i64) = sqlx::query_as(FACTORS)
            .bind(user.0)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("reading a user's second factors")?;
        Ok(FactorSummary {
            totp: totp > 0,
            passkeys: count(passkeys),
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
        for statement in [DELETE_TOTP, DELETE_PASSKEYS_OF, DELETE_CODES] {
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

    async fn passkeys_of(&self, user: UserId) -> anyhow::Result<Vec<PasskeyRecord>> {
        let rows = sqlx::query(PASSKEYS_OF)
            .bind(user.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading a user's passkeys")?;
        rows.iter().map(pg_passkey).collect()
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> anyhow::Result<Option<PasskeyRecord>> {
        sqlx::query(PASSKEY_BY_CREDENTIAL)
            .bind(credential_id)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a passkey")?
            .as_ref()
            .map(pg_passkey)
            .transpose()
    }

    async fn insert_passkey(&self, p: &PasskeyRecord) -> anyhow::Result<bool> {
        let done = sqlx::query(INSERT_PASSKEY)
            .bind(p.id.0)
            .bind(p.user_id.0)
            .bind(&p.credential_id)
            .bind(&p.name)
            .bind(&p.passkey)
            .bind(i64::from(p.sign_count))
            .bind(p.backup_eligible)
            .bind(p.backup_state)
            .bind(ms(p.created_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing a passkey")?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_passkey_use(&self, p: &PasskeyRecord, seen_count: u32) -> anyhow::Result<bool> {
        let done = sqlx::query(RECORD_PASSKEY_USE)
            .bind(&p.passkey)
            .bind(i64::from(p.sign_count))
            .bind(p.backup_eligible)
            .bind(p.backup_state)
            .bind(p.last_used_at.map(ms))
            .bind(p.id.0)
            .bind(i64::from(seen_count))
            .execute(&mut *self.conn().await?)
            .await
            .context("recording a passkey's use")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let deleted = sqlx::query(DELETE_PASSKEY)
            .bind(id.0)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("deleting a passkey")?
            .rows_affected();
        sqlx::query(DELETE_ORPHAN_CODES)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        tx.commit().await.context("committing a passkey removal")?;
        Ok(deleted > 0)
    }

    async fn insert_ceremony(&self, c: &Ceremony) -> anyhow::Result<()> {
        sqlx::query(INSERT_CEREMONY)
            .bind(c.id)
            .bind(c.kind.as_str())
            .bind(c.user_id.map(|u| u.0))
            .bind(c.mfa_token_hash.map(|h| h.0.to_vec()))
            .bind(&c.state)
            .bind(ms(c.expires_at))
            .execute(&mut *self.conn().await?)
            .await
            .context("storing a WebAuthn ceremony")?;
        Ok(())
    }

    async fn take_ceremony(&self, id: uuid::Uuid) -> anyhow::Result<Option<Ceremony>> {
        let Some(row) = sqlx::query(TAKE_CEREMONY)
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("spending a WebAuthn ceremony")?
        else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind").context("decoding a ceremony")?;
        let hash: Option<Vec<u8>> = row
            .try_get("mfa_token_hash")
            .context("decoding a ceremony")?;
        let user: Option<uuid::Uuid> = row.try_get("user_id").context("decoding a ceremony")?;
        Ok(Some(Ceremony {
            id: row.try_get("id").context("decoding a ceremony")?,
            kind: CeremonyKind::parse(&kind)?,
            user_id: user.map(UserId),
            mfa_token_hash: hash.map(|h| hash_from(h, "mfa_token")).transpose()?,
            state: row.try_get("state").context("decoding a ceremony")?,
            expires_at: row.try_get("expires_at").context("decoding a ceremony")?,
        }))
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
        let mut conn = self.conn().await?;
        sqlx::query(SWEEP_CEREMONIES)
            .bind(ms(now))
            .execute(&mut *conn)
            .await
            .context("sweeping WebAuthn ceremonies")?;
        let done = sqlx::query(SWEEP_PENDING)
            .bind(ms(now))
            .execute(&mut *conn)
            .await
            .context("sweeping pending logins")?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn factors(&self, user: UserId) -> anyhow::Result<FactorSummary> {
        let (totp, passkeys, codes): (i64, i64, i64) = sqlx::query_as(FACTORS)
            .bind(user.0.to_string())
            .fetch_one(&self.pool)
            .await
            .context("reading a user's second factors")?;
        Ok(FactorSummary {
            totp: totp > 0,
            passkeys: count(passkeys),
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
        for statement in [DELETE_TOTP, DELETE_PASSKEYS_OF, DELETE_CODES] {
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

    async fn passkeys_of(&self, user: UserId) -> anyhow::Result<Vec<PasskeyRecord>> {
        let rows = sqlx::query(PASSKEYS_OF)
            .bind(user.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("reading a user's passkeys")?;
        rows.iter().map(sqlite_passkey).collect()
    }

    async fn passkey_by_credential(
        &self,
        credential_id: &[u8],
    ) -> anyhow::Result<Option<PasskeyRecord>> {
        sqlx::query(PASSKEY_BY_CREDENTIAL)
            .bind(credential_id)
            .fetch_optional(&self.pool)
            .await
            .context("reading a passkey")?
            .as_ref()
            .map(sqlite_passkey)
            .transpose()
    }

    async fn insert_passkey(&self, p: &PasskeyRecord) -> anyhow::Result<bool> {
        let done = sqlx::query(INSERT_PASSKEY)
            .bind(p.id.0.to_string())
            .bind(p.user_id.0.to_string())
            .bind(&p.credential_id)
            .bind(&p.name)
            .bind(&p.passkey)
            .bind(i64::from(p.sign_count))
            .bind(i64::from(p.backup_eligible))
            .bind(i64::from(p.backup_state))
            .bind(to_millis(p.created_at))
            .execute(&self.pool)
            .await
            .context("storing a passkey")?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_passkey_use(&self, p: &PasskeyRecord, seen_count: u32) -> anyhow::Result<bool> {
        let done = sqlx::query(RECORD_PASSKEY_USE)
            .bind(&p.passkey)
            .bind(i64::from(p.sign_count))
            .bind(i64::from(p.backup_eligible))
            .bind(i64::from(p.backup_state))
            .bind(p.last_used_at.map(to_millis))
            .bind(p.id.0.to_string())
            .bind(i64::from(seen_count))
            .execute(&self.pool)
            .await
            .context("recording a passkey's use")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(&self, user: UserId, id: PasskeyId) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let deleted = sqlx::query(DELETE_PASSKEY)
            .bind(id.0.to_string())
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("deleting a passkey")?
            .rows_affected();
        sqlx::query(DELETE_ORPHAN_CODES)
            .bind(user.0.to_string())
            .execute(&mut *tx)
            .await
            .context("deleting recovery codes")?;
        tx.commit().await.context("committing a passkey removal")?;
        Ok(deleted > 0)
    }

    async fn insert_ceremony(&self, c: &Ceremony) -> anyhow::Result<()> {
        sqlx::query(INSERT_CEREMONY)
            .bind(c.id.to_string())
            .bind(c.kind.as_str())
            .bind(c.user_id.map(|u| u.0.to_string()))
            .bind(c.mfa_token_hash.map(|h| h.0.to_vec()))
            .bind(&c.state)
            .bind(to_millis(c.expires_at))
            .execute(&self.pool)
            .await
            .context("storing a WebAuthn ceremony")?;
        Ok(())
    }

    async fn take_ceremony(&self, id: uuid::Uuid) -> anyhow::Result<Option<Ceremony>> {
        let Some(row) = sqlx::query(TAKE_CEREMONY)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("spending a WebAuthn ceremony")?
        else {
            return Ok(None);
        };
        let kind: String = row.try_get("kind").context("decoding a ceremony")?;
        let hash: Option<Vec<u8>> = row
            .try_get("mfa_token_hash")
            .context("decoding a ceremony")?;
        let user: Option<String> = row.try_get("user_id").context("decoding a ceremony")?;
        Ok(Some(Ceremony {
            id: parse_uuid(row.try_get("id").context("decoding a ceremony")?)?,
            kind: CeremonyKind::parse(&kind)?,
            user_id: user.map(parse_uuid).transpose()?.map(UserId),
            mfa_token_hash: hash.map(|h| hash_from(h, "mfa_token")).transpose()?,
            state: row.try_get("state").context("decoding a ceremony")?,
            expires_at: from_millis(row.try_get("expires_at").context("decoding a ceremony")?),
        }))
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
        sqlx::query(SWEEP_CEREMONIES)
            .bind(to_millis(now))
            .execute(&self.pool)
            .await
            .context("sweeping WebAuthn ceremonies")?;
        let done = sqlx::query(SWEEP_PENDING)
            .bind(to_millis(now))
            .execute(&self.pool)
            .await
            .context("sweeping pending logins")?;
        Ok(done.rows_affected())
    }
}

fn pg_passkey(row: &sqlx::postgres::PgRow) -> anyhow::Result<PasskeyRecord> {
    let decode = || -> Result<PasskeyRecord, sqlx::Error> {
        let count: i64 = row.try_get("sign_count")?;
        Ok(PasskeyRecord {
            id: PasskeyId(row.try_get("id")?),
            user_id: UserId(row.try_get("user_id")?),
            credential_id: row.try_get("credential_id")?,
            name: row.try_get("name")?,
            passkey: row.try_get("passkey")?,
            sign_count: u32::try_from(count).map_err(|e| sqlx::Error::Decode(e.into()))?,
            backup_eligible: row.try_get("backup_eligible")?,
            backup_state: row.try_get("backup_state")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    };
    decode().context("decoding a passkey")
}

fn sqlite_passkey(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<PasskeyRecord> {
    let count: i64 = row.try_get("sign_count").context("decoding a passkey")?;
    let used: Option<i64> = row.try_get("last_used_at").context("decoding a passkey")?;
    Ok(PasskeyRecord {
        id: PasskeyId(parse_uuid(
            row.try_get("id").context("decoding a passkey")?,
        )?),
        user_id: UserId(parse_uuid(
            row.try_get("user_id").context("decoding a passkey")?,
        )?),
        credential_id: row.try_get("credential_id").context("decoding a passkey")?,
        name: row.try_get("name").context("decoding a passkey")?,
        passkey: row.try_get("passkey").context("decoding a passkey")?,
        sign_count: u32::try_from(count).context("a stored passkey's counter")?,
        backup_eligible: row
            .try_get::<i64, _>("backup_eligible")
            .context("decoding a passkey")?
            != 0,
        backup_state: row
            .try_get::<i64, _>("backup_state")
            .context("decoding a passkey")?
            != 0,
        created_at: from_millis(row.try_get("created_at").context("decoding a passkey")?),
        last_used_at: used.map(from_millis),
    })
}
