-- The audit trail: security events, queryable by GET /v1/admin/audit.
-- Never edit this file once released: add a new migration instead.

-- No secret is ever stored here (no password, session secret, token or key
-- material). `details` is a JSON object of the event's particulars.
-- Rows outlive the users and sessions they name, so there are no foreign
-- keys: the trail of a deleted user stays readable.
CREATE TABLE audit_events (
    id         uuid        PRIMARY KEY,        -- UUID v7: time-ordered
    at         timestamptz NOT NULL,
    type       text        NOT NULL,
    user_id    uuid,                           -- the account concerned
    actor      text        NOT NULL,           -- user, cli, system, anonymous
    actor_id   uuid,                           -- with actor = user
    session_id uuid,
    ip         text,
    details    jsonb       NOT NULL DEFAULT '{}'::jsonb
);

-- Pages are read newest first, whole or by user or by type.
CREATE INDEX audit_events_by_user ON audit_events (user_id, id);
CREATE INDEX audit_events_by_type ON audit_events (type, id);
CREATE INDEX audit_events_by_time ON audit_events (at);
