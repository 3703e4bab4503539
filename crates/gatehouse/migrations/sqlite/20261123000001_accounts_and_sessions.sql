-- Accounts, roles and server-side sessions for the embedded (SQLite) store.
-- Instants are INTEGER milliseconds since the Unix epoch, UTC.
-- Never edit this file once released: add a new migration instead.

-- One row per account. `email` is stored normalised (trimmed, lower-cased),
-- so the UNIQUE constraint is the case-insensitive uniqueness check.
CREATE TABLE users (
    id            TEXT    PRIMARY KEY NOT NULL,   -- UUID v7
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,               -- PHC string, argon2id
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
) STRICT;

-- Roles are named sets of permissions.
CREATE TABLE roles (
    name TEXT PRIMARY KEY NOT NULL
) STRICT;

CREATE TABLE role_permissions (
    role       TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    permission TEXT NOT NULL,
    PRIMARY KEY (role, permission)
) STRICT, WITHOUT ROWID;

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (user_id, role)
) STRICT, WITHOUT ROWID;

-- Live sessions. Only the SHA-256 of the cookie secret is kept; `id` is the
-- public handle shown in session lists. A session ends by deleting its row.
CREATE TABLE sessions (
    id           TEXT    PRIMARY KEY NOT NULL,    -- UUID v7
    secret_hash  BLOB    NOT NULL UNIQUE,         -- SHA-256 of the cookie secret
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,                -- written lazily, see auth::sessions
    expires_at   INTEGER NOT NULL,                -- absolute expiry
    user_agent   TEXT,
    ip           TEXT
) STRICT;

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);
