-- Signing keys, refresh tokens and session revocations (the token half).
-- Instants are INTEGER milliseconds since the Unix epoch, UTC.

-- Keys that sign access tokens. `kid` is the key's RFC 7638 thumbprint.
-- The private key is PKCS#8 DER, or, when `encrypted` = 1, AES-256-GCM
-- (12-byte nonce || ciphertext || tag) under the configured
-- key_encryption_key with the kid as associated data.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY NOT NULL,
    alg         TEXT    NOT NULL,                 -- EdDSA | ES256 | RS256
    private_key BLOB    NOT NULL,
    encrypted   INTEGER NOT NULL DEFAULT 0 CHECK (encrypted IN (0, 1)),
    public_jwk  TEXT    NOT NULL,                 -- JSON, as published
    created_at  INTEGER NOT NULL,
    retire_at   INTEGER                           -- NULL: current; else leaves the JWKS then
) STRICT;

-- Refresh tokens: only their SHA-256 is kept. A token is spent once; its
-- successor's secret is kept sealed under a key derived from the spent
-- token, so that a retry within the grace window can be given the same
-- successor by whoever holds the spent token, and by no one else.
CREATE TABLE refresh_tokens (
    token_hash       BLOB    PRIMARY KEY NOT NULL,
    session_id       TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL,
    spent_at         INTEGER,
    successor_sealed BLOB
) STRICT;

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Sessions that were ended (not merely expired) while access tokens issued
-- for them may still be unexpired; loaded into memory at start-up.
CREATE TABLE revoked_sessions (
    session_id    TEXT    PRIMARY KEY NOT NULL,
    revoked_until INTEGER NOT NULL                -- no token of the session outlives this
) STRICT;
