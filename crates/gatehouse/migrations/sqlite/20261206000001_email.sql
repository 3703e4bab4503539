-- Email: verified addresses, mailed tokens, the outbox, known devices.
-- Never edit this file once released: add a new migration instead.

-- Accounts created before this migration have not proved their address.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0
    CHECK (email_verified IN (0, 1));

-- The tokens of mailed links (password reset, address verification): only
-- their SHA-256, with what they are for, whose, and the SHA-256 of the
-- user's email and password hash at issue (changing either voids them).
CREATE TABLE mail_tokens (
    hash       BLOB    PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    purpose    TEXT    NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    binding    BLOB    NOT NULL CHECK (length(binding) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX mail_tokens_by_user ON mail_tokens (user_id, purpose, created_at);
CREATE INDEX mail_tokens_by_expiry ON mail_tokens (expires_at);

-- Mails to send, written with what causes them; a node claims a mail (the
-- lease `claimed_until`) before sending it and deletes it once sent. A mail
-- given up on keeps its row, without its bodies, until swept.
CREATE TABLE outbox (
    id              TEXT    PRIMARY KEY NOT NULL,   -- UUID v7
    kind            TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until   INTEGER,
    last_error      TEXT,
    failed_at       INTEGER
) STRICT;

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE failed_at IS NULL;

-- The devices (user agent and client network, hashed) a user signed in
-- from: a sign-in from another one sends a notice.
CREATE TABLE known_devices (
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint   BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, fingerprint)
) STRICT, WITHOUT ROWID;
