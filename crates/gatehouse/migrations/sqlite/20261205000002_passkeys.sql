-- Passkeys (WebAuthn credentials) and the ceremonies in flight.
-- Instants are INTEGER milliseconds since the Unix epoch, UTC.
-- Never edit this file once released: add a new migration instead.

-- A user's passkeys. `passkey` is the credential as webauthn-rs keeps it
-- (JSON: the public key, the counter, the backup flags), rewritten after
-- each use; `sign_count` is its counter, compared and set in the same
-- conditional UPDATE so that a regressed counter (a cloned authenticator)
-- is never written back.
CREATE TABLE passkeys (
    id              TEXT    PRIMARY KEY NOT NULL,                -- UUID v7
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   BLOB    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    passkey         TEXT    NOT NULL,
    sign_count      INTEGER NOT NULL,
    backup_eligible INTEGER NOT NULL CHECK (backup_eligible IN (0, 1)),
    backup_state    INTEGER NOT NULL CHECK (backup_state IN (0, 1)),
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER
) STRICT;

CREATE INDEX passkeys_by_user ON passkeys (user_id);

-- A WebAuthn ceremony begun and not yet finished: single use (spent by
-- deleting its row), 5 minutes. `state` is webauthn-rs's state (JSON, the
-- challenge among it); `mfa_token_hash` ties a second-factor ceremony to
-- its login.
CREATE TABLE webauthn_ceremonies (
    id             TEXT    PRIMARY KEY NOT NULL,                 -- UUID v4
    kind           TEXT    NOT NULL CHECK (kind IN ('register', 'second_factor', 'passwordless')),
    user_id        TEXT    REFERENCES users (id) ON DELETE CASCADE,
    mfa_token_hash BLOB,
    state          TEXT    NOT NULL,
    expires_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
