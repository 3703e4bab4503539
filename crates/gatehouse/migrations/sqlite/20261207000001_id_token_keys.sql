-- ID-token signing keys (OpenID Connect) beside the access-token keys.
-- Never edit this file once released: add a new migration instead.

-- What a key signs: access tokens (every key stored before this migration)
-- or ID tokens. Access-token verification only ever uses `access` keys.
ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'access'
    CHECK (purpose IN ('access', 'id_token'));

-- The KeyStore contract, kept by the database too: at most one current key
-- (no retire_at) signs access tokens, whatever its algorithm, and at most
-- one per algorithm signs ID tokens (a client chooses its algorithm).
CREATE UNIQUE INDEX signing_keys_one_current_access ON signing_keys (purpose)
    WHERE retire_at IS NULL AND purpose = 'access';
CREATE UNIQUE INDEX signing_keys_one_current_id_token ON signing_keys (alg)
    WHERE retire_at IS NULL AND purpose = 'id_token';
