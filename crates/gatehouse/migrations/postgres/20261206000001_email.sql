-- Email: verified addresses, mailed tokens, the outbox, known devices.
-- Never edit this file once released: add a new migration instead.

-- Accounts created before this migration have not proved their address.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- The tokens of mailed links (password reset, address verification): only
-- their SHA-256, with what they are for, whose, and the SHA-256 of the
-- user's email and password hash at issue (changing either voids them).
CREATE TABLE mail_tokens (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    purpose    text        NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    binding    bytea       NOT NULL CHECK (length(binding) = 32),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX mail_tokens_by_user ON mail_tokens (user_id, purpose, created_at);
CREATE INDEX mail_tokens_by_expiry ON mail_tokens (expires_at);

-- Mails to send, written with what causes them; a node claims a mail (the
-- lease `claimed_until`, taken with SKIP LOCKED) before sending it and
-- deletes it once sent. A mail given up on keeps its row, without its
-- bodies, until swept.
CREATE TABLE outbox (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    text_body       text,
    html_body       text,
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claimed_until   timestamptz,
    last_error      text,
    failed_at       timestamptz
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE failed_at IS NULL;

-- The devices (user agent and client network, hashed) a user signed in
-- from: a sign-in from another one sends a notice.
CREATE TABLE known_devices (
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint   bytea       NOT NULL CHECK (length(fingerprint) = 32),
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, fingerprint)
);
