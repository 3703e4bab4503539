-- Password attempt counters shared by every node (the FailureCounter of the
-- PostgreSQL store). One fixed window per key, (account, client IP): it opens
-- at the first attempt, or the first after the previous one closed, and
-- counts attempts until `closes_at`. Counting is one upsert, so concurrent
-- attempts on many nodes each see a distinct count.
-- Never edit this file once released: add a new migration instead.
CREATE TABLE login_attempts (
    key       text        PRIMARY KEY,
    count     integer     NOT NULL CHECK (count > 0),
    closes_at timestamptz NOT NULL
);

-- For the periodic sweep of closed windows.
CREATE INDEX login_attempts_by_close ON login_attempts (closes_at);
