-- A refresh rotation in one statement: spending a token names its
-- successor's hash, and this trigger stores the successor inside the same
-- statement's transaction. Through the async driver each statement is a
-- round trip to the connection's thread; the rotation took four (BEGIN,
-- UPDATE, INSERT, COMMIT) and now takes one. PostgreSQL does the same with
-- one statement of its own (a data-modifying WITH).
ALTER TABLE refresh_tokens ADD COLUMN successor_hash BLOB;

CREATE TRIGGER refresh_tokens_successor
AFTER UPDATE OF spent_at ON refresh_tokens
WHEN NEW.successor_hash IS NOT NULL AND OLD.spent_at IS NULL
BEGIN
    INSERT INTO refresh_tokens (token_hash, session_id, created_at)
    VALUES (NEW.successor_hash, NEW.session_id, NEW.spent_at);
END;
