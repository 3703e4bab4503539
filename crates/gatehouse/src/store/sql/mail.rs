//! Mail (the `MailStore`) on PostgreSQL and on SQLite: the tokens of mailed
//! links, the outbox, verified addresses and known devices.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{hash_from, ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::mail::{ClaimedMail, MailKind, OutboxMail, OutboxStats, TokenPurpose};
use crate::model::types::{SecretHash, UserId};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DeviceSeen, MailStore, MailTokenRecord};

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

const INSERT_MAIL: &str = "INSERT INTO outbox \
     (id, kind, recipient, subject, text_body, html_body, created_at, attempts, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)";

const INSERT_TOKEN: &str = "INSERT INTO mail_tokens \
     (hash, purpose, user_id, binding, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";

const TOKEN_BY_HASH: &str = "SELECT hash, purpose, user_id, binding, created_at, expires_at \
     FROM mail_tokens WHERE hash = $1";

const LAST_TOKEN_AT: &str =
    "SELECT max(created_at) FROM mail_tokens WHERE user_id = $1 AND purpose = $2";

/// Spends a token of `purpose` for the user, unexpired at `now`.
const SPEND_TOKEN: &str = "DELETE FROM mail_tokens \
     WHERE hash = $1 AND user_id = $2 AND purpose = $3 AND expires_at > $4";

const DELETE_TOKENS_OF: &str = "DELETE FROM mail_tokens WHERE user_id = $1 AND purpose = $2";

/// Proving the mailbox (the link came by mail) verifies the address too.
const SET_PASSWORD_IF: &str = "UPDATE users SET password_hash = $1, email_verified = TRUE \
     WHERE id = $2 AND password_hash = $3";

const MAIL_SENT: &str = "DELETE FROM outbox WHERE id = $1";

const MAIL_RETRY: &str = "UPDATE outbox \
     SET claimed_until = NULL, next_attempt_at = $2, last_error = $3 WHERE id = $1";

const MAIL_GIVEN_UP: &str = "UPDATE outbox SET claimed_until = NULL, failed_at = $2, \
     last_error = $3, text_body = NULL, html_body = NULL WHERE id = $1";

const SWEEP_TOKENS: &str = "DELETE FROM mail_tokens WHERE expires_at <= $1";
const SWEEP_FAILED: &str = "DELETE FROM outbox WHERE failed_at < $1";
const SWEEP_DEVICES: &str = "DELETE FROM known_devices WHERE last_seen_at < $1";

/// Whether the device is new is what the insert itself says (a row
/// written or not), never a comparison of instants.
const INSERT_DEVICE: &str = "INSERT INTO known_devices \
     (user_id, fingerprint, first_seen_at, last_seen_at) VALUES ($1, $2, $3, $3) \
     ON CONFLICT (user_id, fingerprint) DO NOTHING";

const TOUCH_DEVICE: &str =
    "UPDATE known_devices SET last_seen_at = $3 WHERE user_id = $1 AND fingerprint = $2";

const OTHER_DEVICES: &str =
    "SELECT count(*) FROM known_devices WHERE user_id = $1 AND fingerprint <> $2";

const STATS: &str = "SELECT \
     coalesce(sum(CASE WHEN failed_at IS NULL THEN 1 ELSE 0 END), 0) AS pending, \
     coalesce(sum(CASE WHEN failed_at IS NULL THEN 0 ELSE 1 END), 0) AS failed, \
     min(CASE WHEN failed_at IS NULL THEN created_at END) AS oldest FROM outbox";

/// The rows are picked once, in a CTE: as `WHERE id IN (subquery)` the
/// planner may run the subquery again for every row it scans (a small
/// table without statistics), each run skipping the rows already locked
/// and claiming more than `LIMIT`.
const PG_CLAIM: &str = "WITH picked AS (SELECT id FROM outbox \
         WHERE failed_at IS NULL AND next_attempt_at <= $1 \
           AND (claimed_until IS NULL OR claimed_until <= $1) \
         ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
     UPDATE outbox o SET claimed_until = $2, attempts = o.attempts + 1 \
     FROM picked WHERE o.id = picked.id \
     RETURNING o.id, o.kind, o.recipient, o.subject, o.text_body, o.html_body, \
         o.created_at, o.attempts";

/// SQLite has one writer at a time: the statement is the claim.
const SQLITE_CLAIM: &str = "UPDATE outbox SET claimed_until = $2, attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM outbox \
         WHERE failed_at IS NULL AND next_attempt_at <= $1 \
           AND (claimed_until IS NULL OR claimed_until <= $1) \
         ORDER BY next_attempt_at, id LIMIT $3) \
     RETURNING id, kind, recipient, subject, text_body, html_body, created_at, attempts";

const SET_VERIFIED: &str = "UPDATE users SET email_verified = $1 WHERE id = $2";
const SET_VERIFIED_IF: &str = "UPDATE users SET email_verified = $1 WHERE id = $2 AND email = $3";

/// The insert of one outbox mail, bound, on PostgreSQL (shared with the
/// audit trail, whose notices go with their events).
pub(super) fn pg_insert_mail(m: &OutboxMail) -> PgQuery<'_> {
    sqlx::query(INSERT_MAIL)
        .bind(m.id)
        .bind(m.kind.as_str())
        .bind(&m.to)
        .bind(&m.subject)
        .bind(&m.text)
        .bind(&m.html)
        .bind(ms(m.created_at))
}

/// The insert of one outbox mail, bound, on SQLite.
pub(super) fn sqlite_insert_mail(m: &OutboxMail) -> SqliteQuery<'_> {
    sqlx::query(INSERT_MAIL)
        .bind(m.id.to_string())
        .bind(m.kind.as_str())
        .bind(&m.to)
        .bind(&m.subject)
        .bind(&m.text)
        .bind(&m.html)
        .bind(to_millis(m.created_at))
}

fn kind(s: &str) -> anyhow::Result<MailKind> {
    MailKind::parse(s).with_context(|| format!("a stored mail kind is unknown: {s:?}"))
}

fn purpose(s: &str) -> anyhow::Result<TokenPurpose> {
    TokenPurpose::parse(s).with_context(|| format!("a stored token purpose is unknown: {s:?}"))
}

/// A claimed mail's row; its bodies are there (only a mail given up on
/// loses them, and such a mail is never claimed).
struct ClaimedRow {
    id: Uuid,
    kind: String,
    to: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
    created_at: OffsetDateTime,
    attempts: i64,
}

impl ClaimedRow {
    fn into_claimed(self) -> anyhow::Result<ClaimedMail> {
        Ok(ClaimedMail {
            mail: OutboxMail {
                id: self.id,
                kind: kind(&self.kind)?,
                to: self.to,
                subject: self.subject,
                text: self.text.context("a claimed mail has no text body")?,
                html: self.html.context("a claimed mail has no HTML body")?,
                created_at: self.created_at,
            },
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
        })
    }
}

/// Spends the user's unexpired token of `purpose` inside `tx`; whether it
/// was there to spend. What the token is for runs in the same transaction.
async fn pg_spend(
    tx: &mut sqlx::PgConnection,
    hash: &SecretHash,
    user: UserId,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> anyhow::Result<bool> {
    let spent = sqlx::query(SPEND_TOKEN)
        .bind(&hash.0[..])
        .bind(user.0)
        .bind(purpose.as_str())
        .bind(ms(now))
        .execute(tx)
        .await
        .context("spending a mail token")?
        .rows_affected();
    Ok(spent == 1)
}

/// [`pg_spend`] on SQLite.
async fn sqlite_spend(
    tx: &mut sqlx::SqliteConnection,
    hash: &SecretHash,
    user: UserId,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> anyhow::Result<bool> {
    let spent = sqlx::query(SPEND_TOKEN)
        .bind(&hash.0[..])
        .bind(user.0.to_string())
        .bind(purpose.as_str())
        .bind(to_millis(now))
        .execute(tx)
        .await
        .context("spending a mail token")?
        .rows_affected();
    Ok(spent == 1)
}

#[async_trait]
impl MailStore for PgStore {
    async fn issue_mail_token(
        &self,
        token: &MailTokenRecord,
        mail: &OutboxMail,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        sqlx::query(INSERT_TOKEN)
            .bind(&token.hash.0[..])
            .bind(token.purpose.as_str())
            .bind(token.user_id.0)
            .bind(&token.binding.0[..])
            .bind(ms(token.created_at))
            .bind(ms(token.expires_at))
            .execute(&mut *tx)
            .await
            .context("storing a mail token")?;
        pg_insert_mail(mail)
            .execute(&mut *tx)
            .await
            .context("writing a mail to the outbox")?;
        tx.commit().await.context("committing a mail token")
    }

    async fn mail_token(&self, hash: &SecretHash) -> anyhow::Result<Option<MailTokenRecord>> {
        let Some(row) = sqlx::query(TOKEN_BY_HASH)
            .bind(&hash.0[..])
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a mail token")?
        else {
            return Ok(None);
        };
        let decode = |e| anyhow::Error::new(e).context("decoding a mail token");
        Ok(Some(MailTokenRecord {
            hash: hash_from(row.try_get("hash").map_err(decode)?, "mail token")?,
            purpose: purpose(row.try_get("purpose").map_err(decode)?)?,
            user_id: UserId(row.try_get("user_id").map_err(decode)?),
            binding: hash_from(row.try_get("binding").map_err(decode)?, "binding")?,
            created_at: row.try_get("created_at").map_err(decode)?,
            expires_at: row.try_get("expires_at").map_err(decode)?,
        }))
    }

    async fn last_mail_token_at(
        &self,
        user: UserId,
        purpose: TokenPurpose,
    ) -> anyhow::Result<Option<OffsetDateTime>> {
        sqlx::query_scalar(LAST_TOKEN_AT)
            .bind(user.0)
            .bind(purpose.as_str())
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("reading a user's last mail token")
    }

    async fn reset_password(
        &self,
        hash: &SecretHash,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        if !pg_spend(&mut tx, hash, user, TokenPurpose::PasswordReset, now).await? {
            return Ok(false);
        }
        let set = sqlx::query(SET_PASSWORD_IF)
            .bind(new_hash)
            .bind(user.0)
            .bind(old_hash)
            .execute(&mut *tx)
            .await
            .context("setting a password")?
            .rows_affected();
        if set != 1 {
            // The password changed since the token was checked: the token
            // is void anyway (the rollback keeps it, unspendable).
            return Ok(false);
        }
        sqlx::query(DELETE_TOKENS_OF)
            .bind(user.0)
            .bind(TokenPurpose::PasswordReset.as_str())
            .execute(&mut *tx)
            .await
            .context("voiding reset tokens")?;
        tx.commit().await.context("committing a password reset")?;
        Ok(true)
    }

    async fn verify_email(
        &self,
        hash: &SecretHash,
        user: UserId,
        email: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        if !pg_spend(&mut tx, hash, user, TokenPurpose::EmailVerification, now).await? {
            return Ok(false);
        }
        let set = sqlx::query(SET_VERIFIED_IF)
            .bind(true)
            .bind(user.0)
            .bind(email)
            .execute(&mut *tx)
            .await
            .context("marking an address verified")?
            .rows_affected();
        if set != 1 {
            return Ok(false);
        }
        tx.commit().await.context("committing a verification")?;
        Ok(true)
    }

    async fn set_email_verified(&self, user: UserId, verified: bool) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_VERIFIED)
            .bind(verified)
            .bind(user.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("setting email_verified")?;
        Ok(done.rows_affected() == 1)
    }

    async fn enqueue_mails(&self, mails: &[OutboxMail]) -> anyhow::Result<()> {
        if let [m] = mails {
            pg_insert_mail(m)
                .execute(&mut *self.conn().await?)
                .await
                .context("writing a mail to the outbox")?;
            return Ok(());
        }
        let mut tx = self.begin().await.context("starting a transaction")?;
        for m in mails {
            pg_insert_mail(m)
                .execute(&mut *tx)
                .await
                .context("writing a mail to the outbox")?;
        }
        tx.commit().await.context("committing mails")
    }

    async fn claim_mails(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<Vec<ClaimedMail>> {
        let rows = sqlx::query(PG_CLAIM)
            .bind(ms(now))
            .bind(ms(lease_until))
            .bind(i64::from(limit))
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("claiming mails")?;
        rows.iter()
            .map(|row| {
                let decode = |e| anyhow::Error::new(e).context("decoding a mail");
                ClaimedRow {
                    id: row.try_get("id").map_err(decode)?,
                    kind: row.try_get("kind").map_err(decode)?,
                    to: row.try_get("recipient").map_err(decode)?,
                    subject: row.try_get("subject").map_err(decode)?,
                    text: row.try_get("text_body").map_err(decode)?,
                    html: row.try_get("html_body").map_err(decode)?,
                    created_at: row.try_get("created_at").map_err(decode)?,
                    attempts: i64::from(row.try_get::<i32, _>("attempts").map_err(decode)?),
                }
                .into_claimed()
            })
            .collect()
    }

    async fn mail_sent(&self, id: Uuid) -> anyhow::Result<()> {
        sqlx::query(MAIL_SENT)
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await
            .context("deleting a sent mail")?;
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: Uuid,
        error: &str,
        retry_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let q = match retry_at {
            Some(at) => sqlx::query(MAIL_RETRY).bind(id).bind(ms(at)),
            None => sqlx::query(MAIL_GIVEN_UP).bind(id).bind(ms(now)),
        };
        q.bind(error)
            .execute(&mut *self.conn().await?)
            .await
            .context("recording a failed mail")?;
        Ok(())
    }

    async fn outbox_stats(&self) -> anyhow::Result<OutboxStats> {
        let row = sqlx::query(STATS)
            .fetch_one(&mut *self.conn().await?)
            .await
            .context("reading the outbox's state")?;
        let decode = |e| anyhow::Error::new(e).context("decoding the outbox's state");
        Ok(OutboxStats {
            pending: u64::try_from(row.try_get::<i64, _>("pending").map_err(decode)?)?,
            failed: u64::try_from(row.try_get::<i64, _>("failed").map_err(decode)?)?,
            oldest_pending: row.try_get("oldest").map_err(decode)?,
        })
    }

    async fn sweep_mail(
        &self,
        now: OffsetDateTime,
        failed_before: OffsetDateTime,
        devices_before: OffsetDateTime,
    ) -> anyhow::Result<u64> {
        let mut conn = self.conn().await?;
        let mut n = 0;
        for (sql, at) in [
            (SWEEP_TOKENS, now),
            (SWEEP_FAILED, failed_before),
            (SWEEP_DEVICES, devices_before),
        ] {
            n += sqlx::query(sql)
                .bind(ms(at))
                .execute(&mut *conn)
                .await
                .context("sweeping mail tokens, mails and devices")?
                .rows_affected();
        }
        Ok(n)
    }

    async fn remember_device(
        &self,
        user: UserId,
        fingerprint: &SecretHash,
        now: OffsetDateTime,
    ) -> anyhow::Result<DeviceSeen> {
        let mut conn = self.conn().await?;
        let inserted = sqlx::query(INSERT_DEVICE)
            .bind(user.0)
            .bind(&fingerprint.0[..])
            .bind(ms(now))
            .execute(&mut *conn)
            .await
            .context("recording a device")?
            .rows_affected()
            == 1;
        if !inserted {
            sqlx::query(TOUCH_DEVICE)
                .bind(user.0)
                .bind(&fingerprint.0[..])
                .bind(ms(now))
                .execute(&mut *conn)
                .await
                .context("recording a device")?;
            return Ok(DeviceSeen::Known);
        }
        let others: i64 = sqlx::query_scalar(OTHER_DEVICES)
            .bind(user.0)
            .bind(&fingerprint.0[..])
            .fetch_one(&mut *conn)
            .await
            .context("reading known devices")?;
        Ok(seen(others))
    }
}

/// A device just recorded: the user's first, or new beside `others`.
fn seen(others: i64) -> DeviceSeen {
    if others == 0 {
        DeviceSeen::First
    } else {
        DeviceSeen::New
    }
}

#[async_trait]
impl MailStore for SqliteStore {
    async fn issue_mail_token(
        &self,
        token: &MailTokenRecord,
        mail: &OutboxMail,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        sqlx::query(INSERT_TOKEN)
            .bind(&token.hash.0[..])
            .bind(token.purpose.as_str())
            .bind(token.user_id.0.to_string())
            .bind(&token.binding.0[..])
            .bind(to_millis(token.created_at))
            .bind(to_millis(token.expires_at))
            .execute(&mut *tx)
            .await
            .context("storing a mail token")?;
        sqlite_insert_mail(mail)
            .execute(&mut *tx)
            .await
            .context("writing a mail to the outbox")?;
        tx.commit().await.context("committing a mail token")
    }

    async fn mail_token(&self, hash: &SecretHash) -> anyhow::Result<Option<MailTokenRecord>> {
        let Some(row) = sqlx::query(TOKEN_BY_HASH)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("reading a mail token")?
        else {
            return Ok(None);
        };
        let decode = |e| anyhow::Error::new(e).context("decoding a mail token");
        Ok(Some(MailTokenRecord {
            hash: hash_from(row.try_get("hash").map_err(decode)?, "mail token")?,
            purpose: purpose(row.try_get("purpose").map_err(decode)?)?,
            user_id: UserId(parse_uuid(row.try_get("user_id").map_err(decode)?)?),
            binding: hash_from(row.try_get("binding").map_err(decode)?, "binding")?,
            created_at: from_millis(row.try_get("created_at").map_err(decode)?),
            expires_at: from_millis(row.try_get("expires_at").map_err(decode)?),
        }))
    }

    async fn last_mail_token_at(
        &self,
        user: UserId,
        purpose: TokenPurpose,
    ) -> anyhow::Result<Option<OffsetDateTime>> {
        let at: Option<i64> = sqlx::query_scalar(LAST_TOKEN_AT)
            .bind(user.0.to_string())
            .bind(purpose.as_str())
            .fetch_one(&self.pool)
            .await
            .context("reading a user's last mail token")?;
        Ok(at.map(from_millis))
    }

    async fn reset_password(
        &self,
        hash: &SecretHash,
        user: UserId,
        old_hash: &str,
        new_hash: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        if !sqlite_spend(&mut tx, hash, user, TokenPurpose::PasswordReset, now).await? {
            return Ok(false);
        }
        let set = sqlx::query(SET_PASSWORD_IF)
            .bind(new_hash)
            .bind(user.0.to_string())
            .bind(old_hash)
            .execute(&mut *tx)
            .await
            .context("setting a password")?
            .rows_affected();
        if set != 1 {
            return Ok(false);
        }
        sqlx::query(DELETE_TOKENS_OF)
            .bind(user.0.to_string())
            .bind(TokenPurpose::PasswordReset.as_str())
            .execute(&mut *tx)
            .await
            .context("voiding reset tokens")?;
        tx.commit().await.context("committing a password reset")?;
        Ok(true)
    }

    async fn verify_email(
        &self,
        hash: &SecretHash,
        user: UserId,
        email: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        if !sqlite_spend(&mut tx, hash, user, TokenPurpose::EmailVerification, now).await? {
            return Ok(false);
        }
        let set = sqlx::query(SET_VERIFIED_IF)
            .bind(1_i64)
            .bind(user.0.to_string())
            .bind(email)
            .execute(&mut *tx)
            .await
            .context("marking an address verified")?
            .rows_affected();
        if set != 1 {
            return Ok(false);
        }
        tx.commit().await.context("committing a verification")?;
        Ok(true)
    }

    async fn set_email_verified(&self, user: UserId, verified: bool) -> anyhow::Result<bool> {
        let done = sqlx::query(SET_VERIFIED)
            .bind(i64::from(verified))
            .bind(user.0.to_string())
            .execute(&self.pool)
            .await
            .context("setting email_verified")?;
        Ok(done.rows_affected() == 1)
    }

    async fn enqueue_mails(&self, mails: &[OutboxMail]) -> anyhow::Result<()> {
        if let [m] = mails {
            sqlite_insert_mail(m)
                .execute(&self.pool)
                .await
                .context("writing a mail to the outbox")?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        for m in mails {
            sqlite_insert_mail(m)
                .execute(&mut *tx)
                .await
                .context("writing a mail to the outbox")?;
        }
        tx.commit().await.context("committing mails")
    }

    async fn claim_mails(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> anyhow::Result<Vec<ClaimedMail>> {
        let rows = sqlx::query(SQLITE_CLAIM)
            .bind(to_millis(now))
            .bind(to_millis(lease_until))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .context("claiming mails")?;
        rows.iter()
            .map(|row| {
                let decode = |e| anyhow::Error::new(e).context("decoding a mail");
                ClaimedRow {
                    id: parse_uuid(row.try_get("id").map_err(decode)?)?,
                    kind: row.try_get("kind").map_err(decode)?,
                    to: row.try_get("recipient").map_err(decode)?,
                    subject: row.try_get("subject").map_err(decode)?,
                    text: row.try_get("text_body").map_err(decode)?,
                    html: row.try_get("html_body").map_err(decode)?,
                    created_at: from_millis(row.try_get("created_at").map_err(decode)?),
                    attempts: row.try_get("attempts").map_err(decode)?,
                }
                .into_claimed()
            })
            .collect()
    }

    async fn mail_sent(&self, id: Uuid) -> anyhow::Result<()> {
        sqlx::query(MAIL_SENT)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .context("deleting a sent mail")?;
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: Uuid,
        error: &str,
        retry_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let q = match retry_at {
            Some(at) => sqlx::query(MAIL_RETRY)
                .bind(id.to_string())
                .bind(to_millis(at)),
            None => sqlx::query(MAIL_GIVEN_UP)
                .bind(id.to_string())
                .bind(to_millis(now)),
        };
        q.bind(error)
            .execute(&self.pool)
            .await
            .context("recording a failed mail")?;
        Ok(())
    }

    async fn outbox_stats(&self) -> anyhow::Result<OutboxStats> {
        let row = sqlx::query(STATS)
            .fetch_one(&self.pool)
            .await
            .context("reading the outbox's state")?;
        let decode = |e| anyhow::Error::new(e).context("decoding the outbox's state");
        let oldest: Option<i64> = row.try_get("oldest").map_err(decode)?;
        Ok(OutboxStats {
            pending: u64::try_from(row.try_get::<i64, _>("pending").map_err(decode)?)?,
            failed: u64::try_from(row.try_get::<i64, _>("failed").map_err(decode)?)?,
            oldest_pending: oldest.map(from_millis),
        })
    }

    async fn sweep_mail(
        &self,
        now: OffsetDateTime,
        failed_before: OffsetDateTime,
        devices_before: OffsetDateTime,
    ) -> anyhow::Result<u64> {
        let mut n = 0;
        for (sql, at) in [
            (SWEEP_TOKENS, now),
            (SWEEP_FAILED, failed_before),
            (SWEEP_DEVICES, devices_before),
        ] {
            n += sqlx::query(sql)
                .bind(to_millis(at))
                .execute(&self.pool)
                .await
                .context("sweeping mail tokens, mails and devices")?
                .rows_affected();
        }
        Ok(n)
    }

    async fn remember_device(
        &self,
        user: UserId,
        fingerprint: &SecretHash,
        now: OffsetDateTime,
    ) -> anyhow::Result<DeviceSeen> {
        let inserted = sqlx::query(INSERT_DEVICE)
            .bind(user.0.to_string())
            .bind(&fingerprint.0[..])
            .bind(to_millis(now))
            .execute(&self.pool)
            .await
            .context("recording a device")?
            .rows_affected()
            == 1;
        if !inserted {
            sqlx::query(TOUCH_DEVICE)
                .bind(user.0.to_string())
                .bind(&fingerprint.0[..])
                .bind(to_millis(now))
                .execute(&self.pool)
                .await
                .context("recording a device")?;
            return Ok(DeviceSeen::Known);
        }
        let others: i64 = sqlx::query_scalar(OTHER_DEVICES)
            .bind(user.0.to_string())
            .bind(&fingerprint.0[..])
            .fetch_one(&self.pool)
            .await
            .context("reading known devices")?;
        Ok(seen(others))
    }
}
