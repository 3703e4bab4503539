//! OpenID clients (the `ClientStore`) on PostgreSQL and on SQLite: lists
//! are `text[]` on PostgreSQL and JSON arrays on SQLite; roles are rows of
//! `client_roles`, whose foreign key takes a deleted role from every client.

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, Row, SqliteConnection};

use super::{hash_from, ms, parse_uuid};
use crate::clock::{from_millis, to_millis};
use crate::model::oidc::{ClientType, GrantType, IdTokenAlg};
use crate::model::types::ClientId;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{ClientRecord, ClientStore, ClientUpdate, ClientWriteError, DeletedClient};

const INSERT_CLIENT: &str = "INSERT INTO clients (client_id, name, type, secret_hash, \
     redirect_uris, post_logout_redirect_uris, first_party, grant_types, scopes, \
     id_token_signed_response_alg, created_at, revision) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0)";

/// Everything mutable, only over the revision read (compare-and-swap).
/// The parameters appear in their order (SQLite numbers `$N` by first
/// appearance).
const UPDATE_CLIENT: &str = "UPDATE clients SET name = $1, redirect_uris = $2, \
     post_logout_redirect_uris = $3, first_party = $4, grant_types = $5, scopes = $6, \
     id_token_signed_response_alg = $7, secret_hash = $8, revision = revision + 1 \
     WHERE client_id = $9 AND revision = $10";

/// The permissions of a client's roles (its `client_credentials` tokens').
const CLIENT_PERMISSIONS: &str = "SELECT DISTINCT rp.permission FROM client_roles cr \
     JOIN role_permissions rp ON rp.role = cr.role \
     WHERE cr.client_id = $1 ORDER BY rp.permission";

const CLIENT_EXISTS: &str = "SELECT 1 FROM clients WHERE client_id = $1";

const CLEAR_CLIENT_ROLES: &str = "DELETE FROM client_roles WHERE client_id = $1";

const DELETE_CLIENT: &str = "DELETE FROM clients WHERE client_id = $1 RETURNING name, secret_hash";

/// A client with its roles in one row: on PostgreSQL an array whose roles
/// sort byte-wise (the column is `COLLATE "C"`); on SQLite folded into one
/// text (sorted when read).
macro_rules! client_select {
    (postgres, $where:literal) => {
        client_select!(
            "array(SELECT role FROM client_roles r WHERE r.client_id = clients.client_id \
             ORDER BY role)",
            $where
        )
    };
    (sqlite, $where:literal) => {
        client_select!(
            "(SELECT group_concat(role, char(31)) FROM client_roles r \
             WHERE r.client_id = clients.client_id)",
            $where
        )
    };
    ($roles:literal, $where:literal) => {
        concat!(
            "SELECT client_id, name, type, secret_hash, redirect_uris, \
             post_logout_redirect_uris, first_party, grant_types, scopes, \
             id_token_signed_response_alg, created_at, revision, ",
            $roles,
            " AS roles FROM clients ",
            $where
        )
    };
}

const PG_CLIENTS: &str = client_select!(postgres, "ORDER BY client_id");
const PG_CLIENT: &str = client_select!(postgres, "WHERE client_id = $1");
const SQLITE_CLIENTS: &str = client_select!(sqlite, "ORDER BY client_id");
const SQLITE_CLIENT: &str = client_select!(sqlite, "WHERE client_id = $1");

/// What lists folded into one column are joined with on SQLite: the unit
/// separator, which no role name can hold.
const LIST_SEPARATOR: char = '\u{1f}';

#[async_trait]
impl ClientStore for PgStore {
    async fn create_client(&self, c: &ClientRecord) -> Result<(), ClientWriteError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        sqlx::query(INSERT_CLIENT)
            .bind(c.id.0)
            .bind(&c.name)
            .bind(c.kind.as_str())
            .bind(c.secret_hash.map(|h| h.0.to_vec()))
            .bind(&c.redirect_uris)
            .bind(&c.post_logout_redirect_uris)
            .bind(c.first_party)
            .bind(grant_names(&c.grant_types))
            .bind(&c.scopes)
            .bind(c.id_token_alg.as_str())
            .bind(ms(c.created_at))
            .execute(&mut *tx)
            .await
            .context("inserting a client")?;
        pg_assign_roles(&mut tx, c).await?;
        tx.commit().await.context("committing a new client")?;
        Ok(())
    }

    async fn clients(&self) -> anyhow::Result<Vec<ClientRecord>> {
        sqlx::query(PG_CLIENTS)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("listing clients")?
            .iter()
            .map(pg_client_from_row)
            .collect()
    }

    async fn client(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        sqlx::query(PG_CLIENT)
            .bind(id.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("reading a client")?
            .as_ref()
            .map(pg_client_from_row)
            .transpose()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<ClientUpdate, ClientWriteError> {
        let mut tx = self.begin().await.context("starting a transaction")?;
        let done = sqlx::query(UPDATE_CLIENT)
            .bind(&c.name)
            .bind(&c.redirect_uris)
            .bind(&c.post_logout_redirect_uris)
            .bind(c.first_party)
            .bind(grant_names(&c.grant_types))
            .bind(&c.scopes)
            .bind(c.id_token_alg.as_str())
            .bind(c.secret_hash.map(|h| h.0.to_vec()))
            .bind(c.id.0)
            .bind(revision(c)?)
            .execute(&mut *tx)
            .await
            .context("updating a client")?;
        if done.rows_affected() == 0 {
            let exists: Option<i32> = sqlx::query_scalar(CLIENT_EXISTS)
                .bind(c.id.0)
                .fetch_optional(&mut *tx)
                .await
                .context("reading a client")?;
            return Ok(if exists.is_some() {
                ClientUpdate::Stale
            } else {
                ClientUpdate::Missing
            });
        }
        sqlx::query(CLEAR_CLIENT_ROLES)
            .bind(c.id.0)
            .execute(&mut *tx)
            .await
            .context("clearing a client's roles")?;
        pg_assign_roles(&mut tx, c).await?;
        tx.commit().await.context("committing a client's change")?;
        Ok(ClientUpdate::Updated)
    }

    async fn delete_client(&self, id: ClientId) -> anyhow::Result<Option<DeletedClient>> {
        sqlx::query_as::<_, (String, Option<Vec<u8>>)>(DELETE_CLIENT)
            .bind(id.0)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .context("deleting a client")?
            .map(deleted)
            .transpose()
    }

    async fn client_permissions(&self, id: ClientId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(CLIENT_PERMISSIONS)
            .bind(id.0)
            .fetch_all(&mut *self.conn().await?)
            .await
            .context("reading a client's permissions")
    }
}

/// Assigns the client's roles that exist, inside the caller's transaction;
/// an error naming the first that does not (the caller's transaction then
/// rolls back when dropped).
async fn pg_assign_roles(tx: &mut PgConnection, c: &ClientRecord) -> Result<(), ClientWriteError> {
    if c.roles.is_empty() {
        return Ok(());
    }
    // Only existing roles are inserted, so an unknown one is reported by
    // name instead of as a bare foreign-key failure.
    let assigned: Vec<String> = sqlx::query_scalar(
        "INSERT INTO client_roles (client_id, role) \
         SELECT $1, name FROM roles WHERE name = ANY($2) RETURNING role",
    )
    .bind(c.id.0)
    .bind(&c.roles)
    .fetch_all(&mut *tx)
    .await
    .context("assigning a client's roles")?;
    match c.roles.iter().find(|r| !assigned.contains(r)) {
        Some(unknown) => Err(ClientWriteError::UnknownRole(unknown.clone())),
        None => Ok(()),
    }
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn create_client(&self, c: &ClientRecord) -> Result<(), ClientWriteError> {
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        sqlx::query(INSERT_CLIENT)
            .bind(c.id.0.to_string())
            .bind(&c.name)
            .bind(c.kind.as_str())
            .bind(c.secret_hash.map(|h| h.0.to_vec()))
            .bind(json_list(&c.redirect_uris)?)
            .bind(json_list(&c.post_logout_redirect_uris)?)
            .bind(c.first_party)
            .bind(json_list(&grant_names(&c.grant_types))?)
            .bind(json_list(&c.scopes)?)
            .bind(c.id_token_alg.as_str())
            .bind(to_millis(c.created_at))
            .execute(&mut *tx)
            .await
            .context("inserting a client")?;
        sqlite_assign_roles(&mut tx, c).await?;
        tx.commit().await.context("committing a new client")?;
        Ok(())
    }

    async fn clients(&self) -> anyhow::Result<Vec<ClientRecord>> {
        sqlx::query(SQLITE_CLIENTS)
            .fetch_all(&self.pool)
            .await
            .context("listing clients")?
            .iter()
            .map(sqlite_client_from_row)
            .collect()
    }

    async fn client(&self, id: ClientId) -> anyhow::Result<Option<ClientRecord>> {
        sqlx::query(SQLITE_CLIENT)
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a client")?
            .as_ref()
            .map(sqlite_client_from_row)
            .transpose()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<ClientUpdate, ClientWriteError> {
        // The UPDATE comes first, so the transaction holds the write lock
        // from its first statement.
        let mut tx = self.pool.begin().await.context("starting a transaction")?;
        let done = sqlx::query(UPDATE_CLIENT)
            .bind(&c.name)
            .bind(json_list(&c.redirect_uris)?)
            .bind(json_list(&c.post_logout_redirect_uris)?)
            .bind(c.first_party)
            .bind(json_list(&grant_names(&c.grant_types))?)
            .bind(json_list(&c.scopes)?)
            .bind(c.id_token_alg.as_str())
            .bind(c.secret_hash.map(|h| h.0.to_vec()))
            .bind(c.id.0.to_string())
            .bind(revision(c)?)
            .execute(&mut *tx)
            .await
            .context("updating a client")?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar(CLIENT_EXISTS)
                .bind(c.id.0.to_string())
                .fetch_optional(&mut *tx)
                .await
                .context("reading a client")?;
            return Ok(if exists.is_some() {
                ClientUpdate::Stale
            } else {
                ClientUpdate::Missing
            });
        }
        sqlx::query(CLEAR_CLIENT_ROLES)
            .bind(c.id.0.to_string())
            .execute(&mut *tx)
            .await
            .context("clearing a client's roles")?;
        sqlite_assign_roles(&mut tx, c).await?;
        tx.commit().await.context("committing a client's change")?;
        Ok(ClientUpdate::Updated)
    }

    async fn delete_client(&self, id: ClientId) -> anyhow::Result<Option<DeletedClient>> {
        sqlx::query_as::<_, (String, Option<Vec<u8>>)>(DELETE_CLIENT)
            .bind(id.0.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("deleting a client")?
            .map(deleted)
            .transpose()
    }

    async fn client_permissions(&self, id: ClientId) -> anyhow::Result<Vec<String>> {
        sqlx::query_scalar(CLIENT_PERMISSIONS)
            .bind(id.0.to_string())
            .fetch_all(&self.pool)
            .await
            .context("reading a client's permissions")
    }
}

/// A deleted client's row as `DELETE … RETURNING` gave it.
fn deleted((name, hash): (String, Option<Vec<u8>>)) -> anyhow::Result<DeletedClient> {
    Ok(DeletedClient {
        name,
        secret_hash: hash.map(|h| hash_from(h, "client secret")).transpose()?,
    })
}

/// As [`pg_assign_roles`], one role at a time.
async fn sqlite_assign_roles(
    con: &mut SqliteConnection,
    c: &ClientRecord,
) -> Result<(), ClientWriteError> {
    for role in &c.roles {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO client_roles (client_id, role) \
             SELECT $1, name FROM roles WHERE name = $2",
        )
        .bind(c.id.0.to_string())
        .bind(role)
        .execute(&mut *con)
        .await
        .context("assigning a client's role")?;
        if done.rows_affected() == 0 {
            return Err(ClientWriteError::UnknownRole(role.clone()));
        }
    }
    Ok(())
}

fn grant_names(grants: &[GrantType]) -> Vec<String> {
    grants.iter().map(|g| g.as_str().to_owned()).collect()
}

fn revision(c: &ClientRecord) -> anyhow::Result<i64> {
    i64::try_from(c.revision).context("a client's revision is out of range")
}

/// A list as SQLite stores it: a JSON array of strings.
fn json_list(items: &[String]) -> anyhow::Result<String> {
    serde_json::to_string(items).context("encoding a list")
}

fn parse_json_list(text: &str, what: &str) -> anyhow::Result<Vec<String>> {
    serde_json::from_str(text).with_context(|| format!("a client's stored {what} is not a list"))
}

/// The parts both dialects decode alike, from the names they store.
#[allow(clippy::too_many_arguments)] // one row's columns
fn client_from_parts(
    id: uuid::Uuid,
    name: String,
    kind: &str,
    secret_hash: Option<Vec<u8>>,
    lists: [Vec<String>; 4],
    first_party: bool,
    alg: &str,
    created_at: time::OffsetDateTime,
    revision: i64,
    roles: Vec<String>,
) -> anyhow::Result<ClientRecord> {
    let [
        redirect_uris,
        post_logout_redirect_uris,
        grant_types,
        scopes,
    ] = lists;
    Ok(ClientRecord {
        id: ClientId(id),
        name,
        kind: ClientType::parse(kind)
            .with_context(|| format!("a stored client's type is unknown: {kind:?}"))?,
        secret_hash: secret_hash
            .map(|h| hash_from(h, "client secret"))
            .transpose()?,
        redirect_uris,
        post_logout_redirect_uris,
        first_party,
        grant_types: grant_types
            .iter()
            .map(|g| {
                GrantType::parse(g)
                    .with_context(|| format!("a stored client's grant type is unknown: {g:?}"))
            })
            .collect::<anyhow::Result<_>>()?,
        scopes,
        roles,
        id_token_alg: IdTokenAlg::parse(alg)
            .with_context(|| format!("a stored client's algorithm is unknown: {alg:?}"))?,
        created_at,
        revision: u64::try_from(revision).unwrap_or(0),
    })
}

fn pg_client_from_row(row: &PgRow) -> anyhow::Result<ClientRecord> {
    let kind: String = row.try_get("type")?;
    let alg: String = row.try_get("id_token_signed_response_alg")?;
    client_from_parts(
        row.try_get("client_id")?,
        row.try_get("name")?,
        &kind,
        row.try_get("secret_hash")?,
        [
            row.try_get("redirect_uris")?,
            row.try_get("post_logout_redirect_uris")?,
            row.try_get("grant_types")?,
            row.try_get("scopes")?,
        ],
        row.try_get("first_party")?,
        &alg,
        row.try_get("created_at")?,
        row.try_get("revision")?,
        row.try_get("roles")?,
    )
    .context("decoding a client")
}

fn sqlite_client_from_row(row: &SqliteRow) -> anyhow::Result<ClientRecord> {
    let kind: String = row.try_get("type")?;
    let alg: String = row.try_get("id_token_signed_response_alg")?;
    let list = |column: &str| -> anyhow::Result<Vec<String>> {
        parse_json_list(&row.try_get::<String, _>(column)?, column)
    };
    let mut roles: Vec<String> = row
        .try_get::<Option<String>, _>("roles")?
        .unwrap_or_default()
        .split(LIST_SEPARATOR)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    roles.sort();
    client_from_parts(
        parse_uuid(row.try_get("client_id")?)?,
        row.try_get("name")?,
        &kind,
        row.try_get("secret_hash")?,
        [
            list("redirect_uris")?,
            list("post_logout_redirect_uris")?,
            list("grant_types")?,
            list("scopes")?,
        ],
        row.try_get::<i64, _>("first_party")? != 0,
        &alg,
        from_millis(row.try_get("created_at")?),
        row.try_get("revision")?,
        roles,
    )
    .context("decoding a client")
}
