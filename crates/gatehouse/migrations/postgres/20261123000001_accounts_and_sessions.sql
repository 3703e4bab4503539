-- Accounts, roles and server-side sessions for the shared (PostgreSQL) store.
-- The same tables as migrations/sqlite, in PostgreSQL's own types: ids are
-- uuid, instants timestamptz (written with millisecond precision, like the
-- SQLite store), flags boolean, secret hashes bytea.
-- Never edit this file once released: add a new migration instead.

-- Names and permissions compare and sort byte-wise (COLLATE "C"), as SQLite's
-- BINARY collation does, so both stores list them in the same order whatever
-- the database's locale.

-- One row per account. `email` is stored normalised (trimmed, lower-cased),
-- so the UNIQUE constraint is the case-insensitive uniqueness check; the
-- store maps a violation of users_email_key to "email taken".
CREATE TABLE users (
    id            uuid        PRIMARY KEY,          -- UUID v7
    email         text        NOT NULL CONSTRAINT users_email_key UNIQUE,
    password_hash text        NOT NULL,             -- PHC string, argon2id
    created_at    timestamptz NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false
);

-- Roles are named sets of permissions.
CREATE TABLE roles (
    name text COLLATE "C" PRIMARY KEY
);

CREATE TABLE role_permissions (
    role       text COLLATE "C" NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    permission text COLLATE "C" NOT NULL,
    PRIMARY KEY (role, permission)
);

CREATE TABLE user_roles (
    user_id uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text COLLATE "C" NOT NULL REFERENCES roles (name) ON DELETE CASCADE ON UPDATE CASCADE,
    PRIMARY KEY (user_id, role)
);

-- Live sessions. Only the SHA-256 of the cookie secret is kept; `id` is the
-- public handle shown in session lists. A session ends by deleting its row.
CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,           -- UUID v7
    secret_hash  bytea       NOT NULL UNIQUE        -- SHA-256 of the cookie secret
                             CHECK (octet_length(secret_hash) = 32),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,              -- written lazily, see auth::sessions
    expires_at   timestamptz NOT NULL,              -- absolute expiry
    user_agent   text,
    ip           text
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE INDEX sessions_by_last_seen ON sessions (last_seen_at);
