//! Signing keys (the `KeyStore`) on PostgreSQL and on SQLite.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;

use super::ms;
use crate::clock::{from_millis, to_millis};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyPurpose, KeyStore, StoredKey};

const SIGNING_KEYS: &str = "SELECT kid, purpose, alg, private_key, encrypted, public_jwk, created_at, retire_at \
     FROM signing_keys ORDER BY created_at, kid";

const SET_PRIVATE_KEY: &str =
    "UPDATE signing_keys SET private_key = $1, encrypted = $2 WHERE kid = $3";

const CURRENT_KEY_OF_ALG: &str = "SELECT 1 FROM signing_keys \
     WHERE retire_at IS NULL AND purpose = $1 AND alg = $2 LIMIT 1";

/// One access key signs, whatever its algorithm: a new one retires them all.
const RETIRE_CURRENT_ACCESS_KEYS: &str = "UPDATE signing_keys SET retire_at = $1 \
     WHERE retire_at IS NULL AND purpose = 'access'";

/// ID-token keys sign side by side, one per algorithm (a client chooses its
/// algorithm): a new one retires only its algorithm's.
const RETIRE_CURRENT_ID_TOKEN_KEYS: &str = "UPDATE signing_keys SET retire_at = $1 \
     WHERE retire_at IS NULL AND purpose = 'id_token' AND alg = $2";

const INSERT_KEY: &str = "INSERT INTO signing_keys \
     (kid, purpose, alg, private_key, encrypted, public_jwk, created_at, retire_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)";

/// The statement that retires the current keys a new key of `purpose`
/// supersedes: `$1` the instant, and for ID-token keys `$2` the algorithm.
fn retire_current_keys(purpose: KeyPurpose) -> &'static str {
    match purpose {
        KeyPurpose::Access => RETIRE_CURRENT_ACCESS_KEYS,
        KeyPurpose::IdToken => RETIRE_CURRENT_ID_TOKEN_KEYS,
    }
}

fn purpose(stored: &str) -> Result<KeyPurpose, sqlx::Error> {
    KeyPurpose::parse(stored).map_err(|e| sqlx::Error::Decode(e.into()))
}

#[async_trait]
impl KeyStore for PgStore {
    async fn signing_keys(&self) -> anyhow::Result<Vec<StoredKey>> {
        let rows = sqlx::query(SIGNING_KEYS)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading signing keys")?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    purpose: purpose(row.try_get("purpose")?)?,
                    alg: row.try_get("alg")?,
                    private_key: row.try_get("private_key")?,
                    encrypted: row.try_get("encrypted")?,
                    public_jwk: row.try_get("public_jwk")?,
                    created_at: row.try_get("created_at")?,
                    retire_at: row.try_get("retire_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding a signing key")
    }

    async fn add_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.insert_key(key, retire_others_at, false)
            .await
            .map(|_| ())
    }

    async fn add_first_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        self.insert_key(key, retire_others_at, true).await
    }

    async fn set_private_key(
        &self,
        kid: &str,
        private_key: &[u8],
        encrypted: bool,
    ) -> anyhow::Result<()> {
        sqlx::query(SET_PRIVATE_KEY)
            .bind(private_key)
            .bind(encrypted)
            .bind(kid)
            .execute(&mut *self.conn().await?)
            .await
            .context("re-sealing a signing key")?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> anyhow::Result<Vec<StoredKey>> {
        let rows = sqlx::query(SIGNING_KEYS)
            .fetch_all(&self.pool)
            .await
            .context("reading signing keys")?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    purpose: purpose(row.try_get("purpose")?)?,
                    alg: row.try_get("alg")?,
                    private_key: row.try_get("private_key")?,
                    encrypted: row.try_get::<i64, _>("encrypted")? != 0,
                    public_jwk: row.try_get("public_jwk")?,
                    created_at: from_millis(row.try_get("created_at")?),
                    retire_at: row.try_get::<Option<i64>, _>("retire_at")?.map(from_millis),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("reading signing keys")
    }

    async fn add_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        self.insert_key(key, retire_others_at, false)
            .await
            .map(|_| ())
    }

    async fn add_first_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
    ) -> anyhow::Result<bool> {
        self.insert_key(key, retire_others_at, true).await
    }

    async fn set_private_key(
        &self,
        kid: &str,
        private_key: &[u8],
        encrypted: bool,
    ) -> anyhow::Result<()> {
        sqlx::query(SET_PRIVATE_KEY)
            .bind(private_key)
            .bind(i64::from(encrypted))
            .bind(kid)
            .execute(&self.pool)
            .await
            .context("re-sealing a signing key")?;
        Ok(())
    }
}

impl PgStore {
    /// Makes `key` a current key, retiring those it supersedes (see
    /// [`KeyStore`]); with `only_first`, only when no current key of its
    /// purpose and algorithm exists. Returns whether it was added.
    async fn insert_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
        only_first: bool,
    ) -> anyhow::Result<bool> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        // Nodes may rotate, or start on an empty store, at the same moment:
        // serialise them (readers are not blocked), so the second sees the
        // first's key instead of both becoming current.
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .context("locking the signing keys")?;
        if only_first {
            let current: Option<i32> = sqlx::query_scalar(CURRENT_KEY_OF_ALG)
                .bind(key.purpose.as_str())
                .bind(&key.alg)
                .fetch_optional(&mut *tx)
                .await
                .context("reading the current signing key")?;
            if current.is_some() {
                return Ok(false);
            }
        }
        let retire = sqlx::query(retire_current_keys(key.purpose)).bind(ms(retire_others_at));
        let retire = match key.purpose {
            KeyPurpose::Access => retire,
            KeyPurpose::IdToken => retire.bind(&key.alg),
        };
        retire
            .execute(&mut *tx)
            .await
            .context("retiring the current signing key")?;
        sqlx::query(INSERT_KEY)
            .bind(&key.kid)
            .bind(key.purpose.as_str())
            .bind(&key.alg)
            .bind(&key.private_key)
            .bind(key.encrypted)
            .bind(&key.public_jwk)
            .bind(ms(key.created_at))
            .execute(&mut *tx)
            .await
            .context("storing a signing key")?;
        tx.commit().await.context("committing a signing key")?;
        Ok(true)
    }
}

impl SqliteStore {
    /// Makes `key` a current key, retiring those it supersedes (see
    /// [`KeyStore`]); with `only_first`, only when no current key of its
    /// purpose and algorithm exists. Returns whether it was added.
    /// `BEGIN IMMEDIATE` takes the write lock first, so two processes on
    /// one file cannot both find no key.
    async fn insert_key(
        &self,
        key: &StoredKey,
        retire_others_at: OffsetDateTime,
        only_first: bool,
    ) -> anyhow::Result<bool> {
        let mut con = self
            .pool
            .acquire()
            .await
            .context("acquiring a connection")?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *con)
            .await
            .context("starting a transaction")?;
        let result = async {
            if only_first {
                let current: Option<i64> = sqlx::query_scalar(CURRENT_KEY_OF_ALG)
                    .bind(key.purpose.as_str())
                    .bind(&key.alg)
                    .fetch_optional(&mut *con)
                    .await
                    .context("reading the current signing key")?;
                if current.is_some() {
                    return Ok(false);
                }
            }
            let retire =
                sqlx::query(retire_current_keys(key.purpose)).bind(to_millis(retire_others_at));
            let retire = match key.purpose {
                KeyPurpose::Access => retire,
                KeyPurpose::IdToken => retire.bind(&key.alg),
            };
            retire
                .execute(&mut *con)
                .await
                .context("retiring the current signing key")?;
            sqlx::query(INSERT_KEY)
                .bind(&key.kid)
                .bind(key.purpose.as_str())
                .bind(&key.alg)
                .bind(&key.private_key)
                .bind(i64::from(key.encrypted))
                .bind(&key.public_jwk)
                .bind(to_millis(key.created_at))
                .execute(&mut *con)
                .await
                .context("storing a signing key")?;
            Ok::<_, anyhow::Error>(true)
        }
        .await;
        let end = if matches!(result, Ok(true)) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        sqlx::query(end)
            .execute(&mut *con)
            .await
            .context("ending the key transaction")?;
        result
    }
}

#[cfg(test)]
mod tests {
    //! The PostgreSQL side, against a real server (see
    //! `store::postgres::testing`); the contract suite in `tests/api` runs
    //! both.

    use std::time::Duration;

    use super::*;
    use crate::store::postgres::testing::{Scratch, T0};

    #[tokio::test]
    async fn add_key_retires_the_current_one() {
        let db = Scratch::new().await;
        let s = &db.store;
        let key = |kid: &str, at: OffsetDateTime| StoredKey {
            kid: kid.into(),
            purpose: KeyPurpose::Access,
            alg: "EdDSA".into(),
            private_key: vec![1, 2, 3],
            encrypted: false,
            public_jwk: "{}".into(),
            created_at: at,
            retire_at: None,
        };
        let t1 = T0 + Duration::from_secs(10);
        s.add_key(&key("k1", T0), T0).await.expect("add");
        s.add_key(&key("k2", t1), t1 + Duration::from_secs(300))
            .await
            .expect("add");
        s.set_private_key("k1", &[9; 40], true)
            .await
            .expect("reseal");
        let keys = s.signing_keys().await.expect("read");
        assert_eq!(
            keys,
            [
                StoredKey {
                    private_key: vec![9; 40],
                    encrypted: true,
                    retire_at: Some(t1 + Duration::from_secs(300)),
                    ..key("k1", T0)
                },
                key("k2", t1)
            ]
        );
    }
}
