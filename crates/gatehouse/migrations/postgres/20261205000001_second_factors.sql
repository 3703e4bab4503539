-- Second factors: TOTP, recovery codes, and the logins waiting for their
-- second step; how each session's user proved who they are. The same
-- tables as migrations/sqlite, in PostgreSQL's own types.
-- Never edit this file once released: add a new migration instead.

-- RFC 8176 method references, space-separated ("pwd", "pwd otp mfa", ...).
-- Sessions started before this migration were password logins.
ALTER TABLE sessions ADD COLUMN amr text NOT NULL DEFAULT 'pwd';

-- At most one TOTP credential per user. The secret is the raw key, or, when
-- `encrypted`, its AES-256-GCM seal under the key_encryption_key with
-- "totp:{user id}" as associated data. Pending until a code confirms it.
-- `last_step` is the highest 30-second step whose code was accepted: a
-- code is accepted only for a later step, by a conditional UPDATE, so one
-- code is never accepted twice (RFC 6238 §5.2).
CREATE TABLE totp_credentials (
    user_id      uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret       bytea       NOT NULL,
    encrypted    boolean     NOT NULL,
    created_at   timestamptz NOT NULL,
    confirmed_at timestamptz,
    last_step    bigint      NOT NULL DEFAULT 0
);

-- Unused recovery codes: only the SHA-256 of each; a code is used by
-- deleting its row.
CREATE TABLE recovery_codes (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL CHECK (octet_length(code_hash) = 32),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- Logins whose password was right and whose second step is awaited: only
-- the SHA-256 of the mfa_token. Spent by deleting the row.
CREATE TABLE pending_logins (
    token_hash bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amr        text        NOT NULL,            -- what the first step proved
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    failures   integer     NOT NULL DEFAULT 0   -- wrong codes so far
);

CREATE INDEX pending_logins_by_expiry ON pending_logins (expires_at);
