//! Resource servers (the `ResourceServerStore`) on PostgreSQL and on
//! SQLite.

use anyhow::Context as _;
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{RESOURCE_SERVERS_NAME, hash_from, ms, parse_uuid, violates};
use crate::clock::{from_millis, to_millis};
use crate::model::types::{ResourceServerId, SecretHash};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{CreateResourceServerError, ResourceServerRecord, ResourceServerStore};

const INSERT_RESOURCE_SERVER: &str =
    "INSERT INTO resource_servers (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)";

const RESOURCE_SERVERS: &str =
    "SELECT id, name, key_hash, created_at FROM resource_servers ORDER BY name";

const RESOURCE_SERVER_BY_KEY: &str =
    "SELECT id, name, key_hash, created_at FROM resource_servers WHERE key_hash = $1";

const DELETE_RESOURCE_SERVER: &str = "DELETE FROM resource_servers WHERE id = $1";

#[async_trait]
impl ResourceServerStore for PgStore {
    async fn create_resource_server(
        &self,
        rs: &ResourceServerRecord,
    ) -> Result<(), CreateResourceServerError> {
        let inserted = sqlx::query(INSERT_RESOURCE_SERVER)
            .bind(rs.id.0)
            .bind(&rs.name)
            .bind(&rs.key_hash.0[..])
            .bind(ms(rs.created_at))
            .execute(&mut *self.conn().await?)
            .await;
        created_resource_server(inserted)
    }

    async fn resource_servers(&self) -> anyhow::Result<Vec<ResourceServerRecord>> {
        let rows: Vec<(Uuid, String, Vec<u8>, OffsetDateTime)> = sqlx::query_as(RESOURCE_SERVERS)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing resource servers")?;
        rows.into_iter().map(resource_server_from_row).collect()
    }

    async fn resource_server_by_key(
        &self,
        hash: &SecretHash,
    ) -> anyhow::Result<Option<ResourceServerRecord>> {
        let row: Option<(Uuid, String, Vec<u8>, OffsetDateTime)> =
            sqlx::query_as(RESOURCE_SERVER_BY_KEY)
                .bind(&hash.0[..])
                .fetch_optional(&mut *self.conn().await?)
                .await
                .context("looking a resource server up")?;
        row.map(resource_server_from_row).transpose()
    }

    async fn delete_resource_server(&self, id: ResourceServerId) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_RESOURCE_SERVER)
            .bind(id.0)
            .execute(&mut *self.conn().await?)
            .await
            .context("deleting a resource server")?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl ResourceServerStore for SqliteStore {
    async fn create_resource_server(
        &self,
        rs: &ResourceServerRecord,
    ) -> Result<(), CreateResourceServerError> {
        let inserted = sqlx::query(INSERT_RESOURCE_SERVER)
            .bind(rs.id.0.to_string())
            .bind(&rs.name)
            .bind(&rs.key_hash.0[..])
            .bind(to_millis(rs.created_at))
            .execute(&self.pool)
            .await;
        created_resource_server(inserted)
    }

    async fn resource_servers(&self) -> anyhow::Result<Vec<ResourceServerRecord>> {
        let rows: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(RESOURCE_SERVERS)
            .fetch_all(&self.pool)
            .await
            .context("listing resource servers")?;
        rows.into_iter()
            .map(sqlite_resource_server_from_row)
            .collect()
    }

    async fn resource_server_by_key(
        &self,
        hash: &SecretHash,
    ) -> anyhow::Result<Option<ResourceServerRecord>> {
        let row: Option<(String, String, Vec<u8>, i64)> = sqlx::query_as(RESOURCE_SERVER_BY_KEY)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .context("looking a resource server up")?;
        row.map(sqlite_resource_server_from_row).transpose()
    }

    async fn delete_resource_server(&self, id: ResourceServerId) -> anyhow::Result<bool> {
        let done = sqlx::query(DELETE_RESOURCE_SERVER)
            .bind(id.0.to_string())
            .execute(&self.pool)
            .await
            .context("deleting a resource server")?;
        Ok(done.rows_affected() == 1)
    }
}

/// What an insert of a resource server answered, as the trait answers it.
fn created_resource_server<T>(
    inserted: Result<T, sqlx::Error>,
) -> Result<(), CreateResourceServerError> {
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if violates(&e, &RESOURCE_SERVERS_NAME) => Err(CreateResourceServerError::NameTaken),
        Err(e) => Err(anyhow::Error::new(e)
            .context("inserting a resource server")
            .into()),
    }
}

/// A row as PostgreSQL types it (SQLite's, once its id and instant are
/// decoded).
fn resource_server_from_row(
    (id, name, hash, created_at): (Uuid, String, Vec<u8>, OffsetDateTime),
) -> anyhow::Result<ResourceServerRecord> {
    Ok(ResourceServerRecord {
        id: ResourceServerId(id),
        name,
        key_hash: hash_from(hash, "key")?,
        created_at,
    })
}

fn sqlite_resource_server_from_row(
    (id, name, hash, created_at): (String, String, Vec<u8>, i64),
) -> anyhow::Result<ResourceServerRecord> {
    resource_server_from_row((parse_uuid(id)?, name, hash, from_millis(created_at)))
}
