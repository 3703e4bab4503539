-- The OpenID Provider's flow: client sessions, authorization codes and
-- consents. Instants are INTEGER milliseconds since the Unix epoch, UTC.
-- Never edit this file once released: add a new migration instead.

-- A client session: the session an authorization code starts for one
-- client, inside the user's browser session (`parent_id`). Its access and
-- refresh tokens are that client's; ending the browser session ends it
-- (the domain does, so every ending is recorded as a revocation). `scopes`
-- are the granted scopes, space-separated. All three are NULL together on
-- every other session.
ALTER TABLE sessions ADD COLUMN client_id TEXT;
ALTER TABLE sessions ADD COLUMN parent_id TEXT;
ALTER TABLE sessions ADD COLUMN scopes TEXT;

-- Authorization codes (RFC 6749 §4.1): only the SHA-256 of the code is
-- kept. Spent by a conditional UPDATE, so a code is exchanged once; the row
-- stays until `expires_at` plus ten minutes, so that a replay can still end
-- the session the code started (`session_id`, chosen when it is spent);
-- `replayed` marks a code presented again, which its first exchange checks
-- after starting its session (a replay may come before the session exists).
CREATE TABLE authorization_codes (
    code_hash      BLOB    PRIMARY KEY NOT NULL CHECK (length(code_hash) = 32),
    client_id      TEXT    NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    user_id        TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_id      TEXT    NOT NULL,               -- the browser session
    redirect_uri   TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,                           -- S256 only
    auth_time      INTEGER NOT NULL,
    amr            TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    spent_at       INTEGER,
    session_id     TEXT,                           -- the client session of its exchange
    replayed       INTEGER NOT NULL DEFAULT 0 CHECK (replayed IN (0, 1))
) STRICT;

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);

-- Consents: the scopes a user allowed a (not first-party) client, so the
-- consent page is shown once per user, client and scope set.
CREATE TABLE consents (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT    NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scopes     TEXT    NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) STRICT;

-- The client sessions each client holds (one row per code exchange), so
-- that deleting a client can end them on every backend (with Redis the
-- sessions themselves are not in this database). Swept after `expires_at`.
CREATE TABLE client_grants (
    session_id TEXT    PRIMARY KEY NOT NULL,
    client_id  TEXT    NOT NULL,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX client_grants_by_client ON client_grants (client_id);
CREATE INDEX client_grants_by_expiry ON client_grants (expires_at);
