-- Second factors: TOTP, recovery codes, and the logins waiting for their
-- second step; how each session's user proved who they are.
-- Instants are INTEGER milliseconds since the Unix epoch, UTC.
-- Never edit this file once released: add a new migration instead.

-- RFC 8176 method references, space-separated ("pwd", "pwd otp mfa", ...).
-- Sessions started before this migration were password logins.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';

-- At most one TOTP credential per user. The secret is the raw key, or, when
-- `encrypted` = 1, its AES-256-GCM seal under the key_encryption_key with
-- "totp:{user id}" as associated data. Pending until a code confirms it.
-- `last_step` is the highest 30-second step whose code was accepted: a
-- code is accepted only for a later step, by a conditional UPDATE, so one
-- code is never accepted twice (RFC 6238 §5.2).
CREATE TABLE totp_credentials (
    user_id      TEXT    PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret       BLOB    NOT NULL,
    encrypted    INTEGER NOT NULL CHECK (encrypted IN (0, 1)),
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Unused recovery codes: only the SHA-256 of each; a code is used by
-- deleting its row.
CREATE TABLE recovery_codes (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, code_hash)
) STRICT, WITHOUT ROWID;

-- Logins whose password was right and whose second step is awaited: only
-- the SHA-256 of the mfa_token. Spent by deleting the row.
CREATE TABLE pending_logins (
    token_hash BLOB    PRIMARY KEY NOT NULL,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amr        TEXT    NOT NULL,                -- what the first step proved
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    failures   INTEGER NOT NULL DEFAULT 0       -- wrong codes so far
) STRICT;

CREATE INDEX pending_logins_by_expiry ON pending_logins (expires_at);
