-- The revocation feed for resource servers (GET /v1/revocations), and the
-- credentials they follow it with.
-- Never edit this file once released: add a new migration instead.

-- Every revocation recorded gets the next number of one sequence, assigned
-- in the transaction that records it, so readers see numbers in commit
-- order and a cursor (the last number a reader has seen) never skips one.
-- `epoch` names the sequence; a reader whose cursor names another epoch
-- (or a number beyond `last_seq`) starts over.
CREATE TABLE revocation_feed (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    epoch    TEXT    NOT NULL,
    last_seq INTEGER NOT NULL CHECK (last_seq >= 0)
) STRICT;

INSERT INTO revocation_feed (id, epoch, last_seq) VALUES (1, lower(hex(randomblob(8))), 0);

-- Revocations recorded before this migration keep 0: a reader without a
-- cursor gets them, one with a cursor has seen them.
ALTER TABLE revoked_sessions ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;

CREATE INDEX revoked_sessions_by_seq ON revoked_sessions (seq);

-- Resource servers: services that verify tokens themselves and follow the
-- revocation feed. Only the SHA-256 of their key is kept.
CREATE TABLE resource_servers (
    id         TEXT    PRIMARY KEY NOT NULL,     -- UUID v7
    name       TEXT    NOT NULL UNIQUE,
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;
