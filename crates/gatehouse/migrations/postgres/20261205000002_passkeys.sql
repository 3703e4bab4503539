-- Passkeys (WebAuthn credentials) and the ceremonies in flight. The same
-- tables as migrations/sqlite, in PostgreSQL's own types.
-- Never edit this file once released: add a new migration instead.

-- A user's passkeys. `passkey` is the credential as webauthn-rs keeps it
-- (JSON: the public key, the counter, the backup flags), rewritten after
-- each use; `sign_count` is its counter, compared and set in the same
-- conditional UPDATE so that a regressed counter (a cloned authenticator)
-- is never written back.
CREATE TABLE passkeys (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id   bytea       NOT NULL CONSTRAINT passkeys_credential_id_key UNIQUE,
    name            text        NOT NULL,
    passkey         text        NOT NULL,
    sign_count      bigint      NOT NULL,
    backup_eligible boolean     NOT NULL,
    backup_state    boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    last_used_at    timestamptz
);

CREATE INDEX passkeys_by_user ON passkeys (user_id);

-- A WebAuthn ceremony begun and not yet finished: single use (spent by
-- deleting its row), 5 minutes. `state` is webauthn-rs's state (JSON, the
-- challenge among it); `mfa_token_hash` ties a second-factor ceremony to
-- its login.
CREATE TABLE webauthn_ceremonies (
    id             uuid        PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('register', 'second_factor', 'passwordless')),
    user_id        uuid        REFERENCES users (id) ON DELETE CASCADE,
    mfa_token_hash bytea,
    state          text        NOT NULL,
    expires_at     timestamptz NOT NULL
);

CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
