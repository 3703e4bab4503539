-- The revocation feed for resource servers (GET /v1/revocations), and the
-- credentials they follow it with.
-- Never edit this file once released: add a new migration instead.

-- Every revocation recorded gets the next number of one sequence, taken by
-- updating this single row in the transaction that records it: the row
-- lock orders those transactions, so numbers become visible in commit order
-- and a reader's cursor (the last number it has seen) never skips one (a
-- SEQUENCE would not guarantee that). `epoch` names the sequence; a reader
-- whose cursor names another epoch (or a number beyond `last_seq`, as after
-- restoring an old backup) starts over.
CREATE TABLE revocation_feed (
    id       integer PRIMARY KEY CHECK (id = 1),
    epoch    text    NOT NULL,
    last_seq bigint  NOT NULL CHECK (last_seq >= 0)
);

INSERT INTO revocation_feed (id, epoch, last_seq)
VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16), 0);

-- Revocations recorded before this migration keep 0: a reader without a
-- cursor gets them, one with a cursor has seen them.
ALTER TABLE revoked_sessions ADD COLUMN seq bigint NOT NULL DEFAULT 0;

CREATE INDEX revoked_sessions_by_seq ON revoked_sessions (seq);

-- Resource servers: services that verify tokens themselves and follow the
-- revocation feed. Only the SHA-256 of their key is kept.
CREATE TABLE resource_servers (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    key_hash   bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    CONSTRAINT resource_servers_name_unique UNIQUE (name)
);
