-- The OpenID Provider's flow: client sessions, authorization codes and
-- consents. The same tables as migrations/sqlite, in PostgreSQL's types.
-- Never edit this file once released: add a new migration instead.

-- A client session: the session an authorization code starts for one
-- client, inside the user's browser session (`parent_id`). Ending the
-- browser session ends it (the domain does, so every ending is recorded as
-- a revocation). `scopes` are the granted scopes, space-separated. All
-- three are NULL together on every other session.
ALTER TABLE sessions ADD COLUMN client_id uuid;
ALTER TABLE sessions ADD COLUMN parent_id uuid;
ALTER TABLE sessions ADD COLUMN scopes text;

-- Authorization codes (RFC 6749 §4.1): only the SHA-256 of the code is
-- kept. Spent by a conditional UPDATE, so a code is exchanged once; the row
-- stays until `expires_at` plus ten minutes, so that a replay can still end
-- the session the code started (`session_id`, chosen when it is spent);
-- `replayed` marks a code presented again, which its first exchange checks
-- after starting its session (a replay may come before the session exists).
CREATE TABLE authorization_codes (
    code_hash      bytea       PRIMARY KEY CHECK (length(code_hash) = 32),
    client_id      uuid        NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_id      uuid        NOT NULL,
    redirect_uri   text        NOT NULL,
    scopes         text        NOT NULL,
    nonce          text,
    code_challenge text,
    auth_time      timestamptz NOT NULL,
    amr            text        NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    spent_at       timestamptz,
    session_id     uuid,
    replayed       boolean     NOT NULL DEFAULT false
);

CREATE INDEX authorization_codes_by_expiry ON authorization_codes (expires_at);

CREATE TABLE consents (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  uuid        NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    scopes     text        NOT NULL,
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- The client sessions each client holds (one row per code exchange), so
-- that deleting a client can end them on every backend.
CREATE TABLE client_grants (
    session_id uuid        PRIMARY KEY,
    client_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);

CREATE INDEX client_grants_by_client ON client_grants (client_id);
CREATE INDEX client_grants_by_expiry ON client_grants (expires_at);
