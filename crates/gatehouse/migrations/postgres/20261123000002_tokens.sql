-- Signing keys, refresh tokens and session revocations (the token half).
-- Instants are timestamptz, written with millisecond precision.
-- Never edit this file once released: add a new migration instead.

-- Keys that sign access tokens. `kid` is the key's RFC 7638 thumbprint.
-- The private key is PKCS#8 DER, or, when `encrypted`, AES-256-GCM
-- (12-byte nonce || ciphertext || tag) under the configured
-- key_encryption_key with the kid as associated data.
CREATE TABLE signing_keys (
    kid         text COLLATE "C" PRIMARY KEY,
    alg         text        NOT NULL,               -- EdDSA | ES256 | RS256
    private_key bytea       NOT NULL,
    encrypted   boolean     NOT NULL DEFAULT false,
    public_jwk  text        NOT NULL,               -- JSON, as published
    created_at  timestamptz NOT NULL,
    retire_at   timestamptz                         -- NULL: current; else leaves the JWKS then
);

-- Refresh tokens: only their SHA-256 is kept. A token is spent once; its
-- successor's secret is kept sealed under a key derived from the spent
-- token, so that a retry within the grace window can be given the same
-- successor by whoever holds the spent token, and by no one else.
CREATE TABLE refresh_tokens (
    token_hash       bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    session_id       uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL,
    spent_at         timestamptz,
    successor_sealed bytea
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Sessions that were ended (not merely expired) while access tokens issued
-- for them may still be unexpired; loaded into memory at start-up and
-- re-read periodically by every node.
CREATE TABLE revoked_sessions (
    session_id    uuid        PRIMARY KEY,
    revoked_until timestamptz NOT NULL              -- no token of the session outlives this
);
