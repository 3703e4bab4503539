//! The two SQL backends' statements and row mapping, one file per aggregate
//! with both dialects side by side: `users.rs` (users and roles),
//! `sessions.rs` (sessions, refresh tokens, revocations), `keys.rs`,
//! `audit.rs`, `clients.rs` (the OpenID client registry), `mfa.rs` (second factors and pending logins), `mail.rs` (mailed
//! tokens, the outbox, known devices),
//! `resource_servers.rs` and `throttle.rs` (PostgreSQL's attempt counters); here, what they share. Connecting and opening stay in
//! `store/postgres.rs` and `store/sqlite.rs`.
//!
//! A statement whose text is the same in both dialects is written once, as a
//! `const` both use: sqlx binds `$1`-style parameters on SQLite as on
//! PostgreSQL. Where the dialects differ, each keeps its own statement.
//! What differs throughout is the binding: PostgreSQL stores `uuid`,
//! `timestamptz` and `boolean`, SQLite the UUID's text, milliseconds since
//! the epoch and 0/1.

mod audit;
mod clients;
mod grants;
mod keys;
mod mail;
mod mfa;
mod resource_servers;
mod sessions;
mod throttle;
mod users;

use anyhow::Context as _;
use sqlx::error::ErrorKind;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::{from_millis, to_millis};
use crate::model::types::SecretHash;

/// An instant at the precision both stores keep (milliseconds, UTC), so a
/// value reads back from PostgreSQL exactly as it does from SQLite.
fn ms(t: OffsetDateTime) -> OffsetDateTime {
    from_millis(to_millis(t))
}

/// A stored SHA-256 (of a `what`: session, key...).
fn hash_from(bytes: Vec<u8>, what: &str) -> anyhow::Result<SecretHash> {
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored {what} hash is not 32 bytes"))?;
    Ok(SecretHash(hash))
}

/// An id as SQLite stores it (the UUID's text).
fn parse_uuid(s: String) -> anyhow::Result<Uuid> {
    Uuid::try_parse(&s).with_context(|| format!("a stored id is not a UUID: {s:?}"))
}

/// A unique key of the schema, as each dialect names it when an insert
/// violates it: PostgreSQL by the constraint's name (given in its
/// migration), SQLite by its columns alone ("UNIQUE constraint failed:
/// users.email"), whatever the constraint is called.
struct UniqueKey {
    constraint: &'static str,
    columns: &'static str,
}

/// `users.email`.
const USERS_EMAIL: UniqueKey = UniqueKey {
    constraint: "users_email_key",
    columns: "users.email",
};

/// `resource_servers.name`.
const RESOURCE_SERVERS_NAME: UniqueKey = UniqueKey {
    constraint: "resource_servers_name_unique",
    columns: "resource_servers.name",
};

/// Whether the statement failed because a row with the same `key` exists.
/// STYLE.md: the constraint decides, after the insert (no check-then-insert).
fn violates(e: &sqlx::Error, key: &UniqueKey) -> bool {
    let sqlx::Error::Database(e) = e else {
        return false;
    };
    if e.kind() != ErrorKind::UniqueViolation {
        return false;
    }
    match e.constraint() {
        Some(constraint) => constraint == key.constraint,
        None => e
            .message()
            .strip_prefix("UNIQUE constraint failed: ")
            .is_some_and(|columns| columns == key.columns),
    }
}
